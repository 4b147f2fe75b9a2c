"""The neuron unit: the periphery of both layers (docs/spec.md, section 3.5).

For each row sum ``a`` it computes ``u = ((a * gain + 2**(shift-1)) >> shift) + bias`` (round
half up, the layer's normalisation shift), then ``h = sign(u) * TANH[min(|u|, 511)]`` from a
512-entry table of :func:`mstpn.spec.qformat.tanh_table` in a synchronous ROM. The engine feeds
it the encoder's sums (shift ENC_NORM_SHIFT, the result is x') and the plastic layer's sums (shift
PLASTIC_NORM_SHIFT, the result is h), one layer after the other.

Cost: one ``acc_bits x 8`` multiplier (two iCE40 DSPs for the plastic layer's 22-bit sums), two
adders, a saturating magnitude, one ROM block (512 x 7 bits). Latency 5 cycles; throughput one
neuron per cycle.
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed, unsigned
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.qformat import (
    ACT,
    BIAS,
    ENC_GAIN,
    ENC_NORM_SHIFT,
    GAIN,
    PLASTIC_NORM_SHIFT,
    TANH_INDEX_BITS,
    tanh_table,
)

__all__ = ["NeuronUnit", "neuron_in_layout"]

#: Normalisation shift per layer code: 0 the static encoder, 1 the plastic layer.
SHIFTS = (ENC_NORM_SHIFT, PLASTIC_NORM_SHIFT)
LATENCY = 5


def neuron_in_layout(acc_bits: int) -> data.StructLayout:
    """One row sum with its neuron's gain and bias and its layer (0 static, 1 plastic)."""
    return data.StructLayout({
        "acc": signed(acc_bits),
        "gain": unsigned(max(GAIN.bits, ENC_GAIN.bits)),
        "bias": signed(BIAS.bits),
        "layer": 1,
    })


class NeuronUnit(wiring.Component):
    """Normalise, round, add the bias, look up tanh.

    Parameters
    ----------
    acc_bits : int
        Signed width of the row sums it takes (the wider of the two layers').

    Attributes
    ----------
    i : In(stream.Signature(neuron_in_layout(acc_bits), always_ready=True))
    o : Out(stream.Signature(signed(ACT.bits), always_ready=True))
        One activation per input, :attr:`latency` cycles later, in order.

    Raises
    ------
    ValueError
        If ``acc_bits`` is not an integer in 2..40.
    """

    latency = LATENCY

    def __init__(self, acc_bits: int) -> None:
        if not isinstance(acc_bits, int) or not 2 <= acc_bits <= 40:
            raise ValueError(f"neuron acc_bits must be an integer in 2..40, not {acc_bits!r}")
        self.acc_bits = acc_bits
        super().__init__({
            "i": In(stream.Signature(neuron_in_layout(acc_bits), always_ready=True)),
            "o": Out(stream.Signature(signed(ACT.bits), always_ready=True)),
        })

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        table = [int(v) for v in tanh_table()]
        m.submodules.rom = rom = Memory(shape=unsigned(ACT.bits - 1), depth=len(table),
                                        init=table)
        rd = rom.read_port()
        top = (1 << TANH_INDEX_BITS) - 1
        # S1: inputs registered
        acc = Signal(signed(self.acc_bits))
        gain = Signal(unsigned(max(GAIN.bits, ENC_GAIN.bits)))
        bias = Signal(signed(BIAS.bits))
        layer, v1 = Signal(), Signal()
        m.d.sync += [acc.eq(self.i.payload.acc), gain.eq(self.i.payload.gain),
                     bias.eq(self.i.payload.bias), layer.eq(self.i.payload.layer),
                     v1.eq(self.i.valid)]
        # S2: the product
        prod = Signal(signed(self.acc_bits + len(gain) + 1))
        bias2, layer2, v2 = Signal.like(bias), Signal(), Signal()
        m.d.sync += [prod.eq(acc * gain), bias2.eq(bias), layer2.eq(layer), v2.eq(v1)]
        # S3: u, rounded half up at the layer's shift
        u = Signal(signed(self.acc_bits + len(gain) + 2))
        rounded = [(prod + ((1 << s) >> 1)) >> s for s in SHIFTS]
        v3 = Signal()
        m.d.sync += [u.eq(Mux(layer2, rounded[1], rounded[0]) + bias2), v3.eq(v2)]
        # S4: the table index (saturated |u|), read from the ROM
        mag = Signal(unsigned(len(u)))
        m.d.comb += mag.eq(Mux(u < 0, -u, u))
        neg4, v4 = Signal(), Signal()
        m.d.comb += rd.addr.eq(Mux(mag > top, top, mag[:TANH_INDEX_BITS]))
        m.d.sync += [neg4.eq(u < 0), v4.eq(v3)]
        # S5: the sign applied
        h = Signal(signed(ACT.bits))
        v5 = Signal()
        mag_h = rd.data.as_unsigned()
        m.d.sync += [h.eq(Mux(neg4, -mag_h, mag_h)), v5.eq(v4)]
        m.d.comb += [self.o.payload.eq(h), self.o.valid.eq(v5)]
        return m
