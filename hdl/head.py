"""The actor head: logits = V h + c and their argmax (docs/spec.md, section 3.6).

It takes h one neuron at a time, as the neuron unit produces it, and adds ``V[k][i] * h_i`` into
each logit with one multiplier, so the head's work hides under the plastic layer's rows. When the
last neuron is in, it picks the action: the lowest index among the largest logits. V sits in a
synchronous RAM of ``actions * hidden`` bytes, c in registers; both are reachable by the engine's
parameter port.

Cost: one 8x8 multiplier, one 32-bit adder for the ``actions`` accumulators (a ring that turns
once per product), the bias registers, one RAM block.
Consecutive h beats must be at least ``actions`` cycles apart (the engine checks this at
elaboration). After the last h: 3 cycles to finish the sums, ``actions - 1`` for the argmax, then
the result beat.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Mux, Signal, signed, unsigned
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..model.memmap import element_bits
from ..spec.qformat import ACT, HEAD_BIAS, HEAD_WEIGHT
from .engine_types import step_result_layout

__all__ = ["ActorHead", "BIAS_BYTES"]

#: Bytes of one head bias element in the address map.
BIAS_BYTES = element_bits(HEAD_BIAS) // 8
LOGIT_BITS = 32


class ActorHead(wiring.Component):
    """Logits and argmax, one hidden neuron at a time.

    Parameters
    ----------
    preset : Preset
        Gives ``hidden``, ``actions`` and the result layout.
    weights : sequence of int, optional
        V, row-major (actions, hidden), as memory init.
    biases : sequence of int, optional
        c, one per action, as register init.

    Attributes
    ----------
    start : In(1)
        Begin a step: the neuron count to 0, every logit to its bias.
    h : In(stream.Signature(signed(8), always_ready=True))
        h_i, in order of i, at least ``actions`` cycles apart.
    result : Out(stream.Signature(step_result_layout(preset)))
        The action and the logits, once per step.
    p_en, p_bias, p_addr, p_we, p_wdata, p_rdata
        The parameter port: ``p_bias`` selects the bias bytes (address = BIAS_BYTES * action + byte)
        instead of V (address = action * hidden + i); read data one cycle after the address.

    Raises
    ------
    ValueError
        If the init arrays have the wrong length.
    """

    def __init__(self, preset, weights: Sequence[int] | None = None,
                 biases: Sequence[int] | None = None) -> None:
        self.hidden, self.actions = preset.hidden, preset.actions
        if self.actions < 2:
            raise ValueError(f"the head needs at least 2 actions, not {self.actions}")
        if weights is not None and len(weights) != self.actions * self.hidden:
            raise ValueError(f"head weights: {len(weights)} values, expected "
                             f"{self.actions * self.hidden}")
        if biases is not None and len(biases) != self.actions:
            raise ValueError(f"head biases: {len(biases)} values, expected {self.actions}")
        self.weights = [int(v) & 0xFF for v in weights] if weights is not None else []
        self.biases = [int(v) for v in biases] if biases is not None else [0] * self.actions
        depth = self.actions * self.hidden
        super().__init__({
            "start": In(1),
            "h": In(stream.Signature(signed(ACT.bits), always_ready=True)),
            "result": Out(stream.Signature(step_result_layout(preset))),
            "p_en": In(1),
            "p_bias": In(1),
            "p_addr": In(range(max(depth, BIAS_BYTES * self.actions))),
            "p_we": In(1),
            "p_wdata": In(8),
            "p_rdata": Out(8),
        })

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        hidden, actions = self.hidden, self.actions
        m.submodules.vmem = vmem = Memory(shape=unsigned(HEAD_WEIGHT.bits), depth=actions * hidden,
                                          init=self.weights)
        rd, wr = vmem.read_port(), vmem.write_port()
        bias = [Signal(signed(8 * BIAS_BYTES), init=b, name=f"bias{k}")
                for k, b in enumerate(self.biases)]
        logits = [Signal(signed(LOGIT_BITS), name=f"logit{k}") for k in range(actions)]

        # --- parameter port
        m.d.comb += [wr.addr.eq(self.p_addr), wr.data.eq(self.p_wdata),
                     wr.en.eq(self.p_en & self.p_we & ~self.p_bias)]
        for k in range(actions):
            for b in range(BIAS_BYTES):
                with m.If(self.p_en & self.p_we & self.p_bias
                          & (self.p_addr == BIAS_BYTES * k + b)):
                    m.d.sync += bias[k][8 * b: 8 * b + 8].eq(self.p_wdata)
        bias_byte = Signal(8)
        bias_sel = Signal()
        with m.Switch(self.p_addr):
            for k in range(actions):
                for b in range(BIAS_BYTES):
                    with m.Case(BIAS_BYTES * k + b):
                        m.d.sync += bias_byte.eq(bias[k][8 * b: 8 * b + 8])
        m.d.sync += bias_sel.eq(self.p_bias)
        m.d.comb += self.p_rdata.eq(Mux(bias_sel, bias_byte, rd.data))

        # --- accumulation: issue V[k][i] reads, multiply, add
        row = Signal(range(hidden + 1))
        hreg = Signal(signed(ACT.bits))
        ik = Signal(range(actions))
        iaddr = Signal(range(actions * hidden))
        iact = Signal()
        # The logits form a ring: every product (and every argmax comparison) is taken at
        # logits[0] and the ring turns by one, so that one adder and no multiplexer serve
        # all of them. The products of one h come for k = 0, 1, ... in consecutive cycles
        # and the argmax turns the ring ``actions`` times, so it is back in place whenever
        # the result is read.
        rotate = Signal()
        addend = Signal(signed(2 * ACT.bits))
        with m.If(self.start):
            m.d.sync += row.eq(0)
            m.d.sync += [logits[k].eq(bias[k]) for k in range(actions)]
        with m.Elif(rotate):
            m.d.sync += [logits[k].eq(logits[k + 1]) for k in range(actions - 1)]
            m.d.sync += logits[-1].eq(logits[0] + addend)
        with m.If(self.h.valid):
            m.d.sync += [hreg.eq(self.h.payload), ik.eq(0), iaddr.eq(row), iact.eq(1),
                         row.eq(row + 1)]
        with m.Elif(iact):
            m.d.sync += [ik.eq(ik + 1), iaddr.eq(iaddr + hidden), iact.eq(ik != actions - 1)]
        m.d.comb += rd.addr.eq(Mux(self.p_en, self.p_addr, iaddr))
        v1, h1 = Signal(), Signal.like(hreg)
        m.d.sync += [v1.eq(iact), h1.eq(hreg)]
        prod = Signal(signed(2 * ACT.bits))
        vp = Signal()
        m.d.sync += [prod.eq(rd.data.as_signed() * h1), vp.eq(v1)]
        m.d.comb += addend.eq(Mux(vp, prod, 0))
        with m.If(vp):
            m.d.comb += rotate.eq(1)

        # --- argmax and the result
        best, best_val = Signal(range(actions)), Signal(signed(LOGIT_BITS))
        ak = Signal(range(actions + 1))
        cand = logits[0]   # logit ``ak`` (the ring has turned ``ak`` times)
        m.d.comb += self.result.payload.action.eq(best)
        m.d.comb += [self.result.payload.logits[k].eq(logits[k]) for k in range(actions)]
        with m.FSM():
            with m.State("ACC"):
                with m.If((row == hidden) & ~iact & ~v1 & ~vp & ~self.h.valid & ~self.start):
                    m.d.sync += [best.eq(0), best_val.eq(logits[0]), ak.eq(1)]
                    m.d.comb += rotate.eq(1)
                    m.next = "ARGMAX"
            with m.State("ARGMAX"):
                m.d.comb += rotate.eq(1)
                with m.If(cand > best_val):
                    m.d.sync += [best.eq(ak), best_val.eq(cand)]
                m.d.sync += ak.eq(ak + 1)
                with m.If(ak == actions - 1):
                    m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    m.d.sync += row.eq(0)
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(self.start):
                    m.next = "ACC"
        return m
