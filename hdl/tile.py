"""The synapse tile: one block of synapse memory and its MAC lanes.

A tile holds the synapses of ``lanes`` lanes in its own synchronous-read memories, one word per
address holding every lane's synapse, so each lane reads one synapse's whole state per cycle. The
engine sweeps the word address once per step; the lanes run in lockstep, and the tile sums their
row partial sums with an :class:`~mstpn.hdl.adder_tree.AdderTree`.

*Plastic* tiles (the m-STPN layer) hold W, lambda and gamma in one memory (read-only while the
network runs) and F in a second one (read and written back every cycle: one read port and one
write port, so single-port SPRAM can hold the first and dual-port EBR the second). Each lane
applies the fused update of docs/spec.md section 3.3 (the pending update of the previous step,
applied as this step reads), writes F back, saturates G = W + F to the device window and
multiplies it by z. The device-model options are elaboration parameters: an option that is off
adds no stage and no logic.

*Static* tiles (the encoder) hold 2-bit W only and add W where the pixel is lit: no multiplier.

Cost per plastic lane (plain device model): 4 multipliers (h_p*z_p, gamma*(h_p*z_p), lambda*F,
G*z), one 23-bit and one row-sum adder, ~120 flip-flops of pipeline; + 1 multiplier for
asymmetry, + 1 for soft bounds, + a 32-bit LFSR for noise. Latency from a beat to the tile's row
sum: 9 cycles plus one per option stage plus the lane tree; throughput one synapse per lane per
cycle, with no bubble between rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Cat, Const, Mux, Signal, signed, unsigned
from amaranth.hdl import Elaboratable, Module, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.device import DeviceModel
from ..spec.qformat import (
    ACT,
    ASYM,
    CONDUCTANCE,
    DECAY,
    DECAY_ALIGN,
    ENC_WEIGHT,
    F_TO_G_SHIFT,
    HEBB_FRAC,
    PLASTICITY,
    SHORT_TERM,
    WEIGHT,
)
from .adder_tree import AdderTree
from .lfsr import Lfsr

__all__ = ["SynapseTile", "PLASTIC_FIELDS", "beat_layout", "lane_sum_bits"]

#: The byte fields of one plastic synapse in the tile's logical word, in lane order.
PLASTIC_FIELDS = ("w", "decay", "plasticity", "f")


def beat_layout(kind: str, lanes: int, depth: int) -> data.StructLayout:
    """One column beat: the word address, row flags, and the lanes' inputs."""
    fields: dict = {"addr": range(depth), "first": 1, "last": 1}
    if kind == "static":
        fields["x"] = lanes
    else:
        fields["z"] = data.ArrayLayout(signed(ACT.bits), lanes)
        fields["zp"] = data.ArrayLayout(signed(ACT.bits), lanes)
        fields["hp"] = signed(ACT.bits)
    return data.StructLayout(fields)


def lane_sum_bits(kind: str, row_length: int, g_bound: int = 1 << (CONDUCTANCE.bits - 1)) -> int:
    """Signed bits of one lane's row sum over ``row_length`` columns."""
    if kind == "static":
        peak = (1 << (ENC_WEIGHT.bits - 1)) * row_length
    else:
        peak = g_bound * (1 << (ACT.bits - 1)) * row_length
    return peak.bit_length() + 1


def _clamp(value: Value, lo: int, hi: int) -> Value:
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


def _f_to_g(f: Value) -> Value:
    if F_TO_G_SHIFT == 0:
        return f
    return (f + (1 << (F_TO_G_SHIFT - 1))) >> F_TO_G_SHIFT


class _Pipe:
    """Named values of one pipeline stage; :meth:`next` registers them into the next stage."""

    def __init__(self, m: Module, prefix: str, values: dict[str, Value]) -> None:
        self.m, self.prefix, self.values, self.stage = m, prefix, dict(values), 0

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def next(self, drop: Sequence[str] = (), **new: Value) -> None:
        self.stage += 1
        merged = {k: v for k, v in self.values.items() if k not in drop}
        merged.update(new)
        out = {}
        for name, value in merged.items():
            value = Value.cast(value)
            reg = Signal(value.shape(), name=f"{self.prefix}{name}_s{self.stage}")
            self.m.d.sync += reg.eq(value)
            out[name] = reg
        self.values = out


class SynapseTile(wiring.Component):
    """A tile of synapse memory with ``lanes`` MAC lanes.

    Parameters
    ----------
    kind : {"static", "plastic"}
        A static tile holds 2-bit W only (the encoder); a plastic tile holds W, F, lambda and
        gamma per synapse and applies the fused update.
    lanes : int
        MAC lanes of this tile.
    depth : int
        Words of the tile's memory (synapses per lane).
    row_length : int
        Columns per lane per row (the beats between two ``first`` flags); bounds the sum widths.
    device : DeviceModel, optional
        Device-model options (plastic tiles only).
    lane_base : int
        Global index of lane 0 (selects each lane's LFSR salt).
    init : sequence of int, optional
        Initial contents of the parameter memory, one int per word in :attr:`word_bits` layout
        (F starts at 0).
    seed_init : int
        The LFSR seed after a hardware reset.
    ram : str, optional
        The RAM kind the parameter memory is meant for (``"SPRAM"`` asks yosys for the iCE40's
        single-port RAM with ``ram_style = "huge"``; the F memory always needs a dual port).

    Attributes
    ----------
    beat : In(stream.Signature(beat_layout(...), always_ready=True))
        One word address per cycle, with the lanes' z / z_p / h_p (plastic) or pixels (static).
    sum : Out(stream.Signature(signed(sum_bits), always_ready=True))
        The tile's sum of one row, after the beat flagged ``last``.
    pot, dep : Out(range(lanes + 1))
        Plastic only: F writes of this cycle that raised / lowered F.
    p_en, p_addr, p_we, p_wdata, p_rdata
        The parameter port: while ``p_en`` is high the memories use ``p_addr``; ``p_we`` has one
        enable per byte of the logical word (``p_wdata``/``p_rdata``), read data arrives one
        cycle after the address. A plastic lane's logical bytes are W, lambda, gamma, F.
    seed, reseed
        Plastic tiles with noise: load every lane's LFSR from ``seed``.

    Raises
    ------
    ValueError, TypeError
        On a bad kind, size, device model or init.
    """

    def __init__(
        self,
        kind: str,
        lanes: int,
        depth: int,
        row_length: int,
        device: DeviceModel | None = None,
        lane_base: int = 0,
        init: Sequence[int] | None = None,
        seed_init: int = 1,
        ram: str | None = None,
    ) -> None:
        if kind not in ("static", "plastic"):
            raise ValueError(f"tile kind must be 'static' or 'plastic', not {kind!r}")
        for name, value in (("lanes", lanes), ("depth", depth), ("row_length", row_length)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"tile {name} must be a positive integer, not {value!r}")
        if depth % row_length:
            raise ValueError(f"tile depth {depth} is not a whole number of rows of {row_length}")
        if kind == "static" and (lanes * ENC_WEIGHT.bits) % 8:
            raise ValueError(
                f"a static tile needs a multiple of {8 // ENC_WEIGHT.bits} lanes (whole bytes "
                f"of weights per word), not {lanes}"
            )
        if device is None:
            device = DeviceModel()
        if not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a DeviceModel, not {type(device).__name__}")
        if init is not None and len(init) != depth:
            raise ValueError(f"tile init has {len(init)} words, expected {depth}")
        self.kind, self.lanes, self.depth, self.row_length = kind, lanes, depth, row_length
        self.device, self.lane_base, self.init, self.seed_init = device, lane_base, init, seed_init
        self.attrs = {"ram_style": "huge"} if ram == "SPRAM" else None
        self.lane_bits = lane_sum_bits(kind, row_length)
        self.sum_bits = self.lane_bits + (lanes - 1).bit_length()
        if kind == "static":
            self.word_bits = lanes * ENC_WEIGHT.bits
        else:
            self.word_bits = lanes * 8 * len(PLASTIC_FIELDS)
        self.word_bytes = self.word_bits // 8
        members = {
            "beat": In(stream.Signature(beat_layout(kind, lanes, depth), always_ready=True)),
            "sum": Out(stream.Signature(signed(self.sum_bits), always_ready=True)),
            "p_en": In(1),
            "p_addr": In(range(depth)),
            "p_we": In(self.word_bytes),
            "p_wdata": In(self.word_bits),
            "p_rdata": Out(self.word_bits),
        }
        if kind == "plastic":
            members["pot"] = Out(range(lanes + 1))
            members["dep"] = Out(range(lanes + 1))
            if device.noise_bits:
                members["seed"] = In(32)
                members["reseed"] = In(1)
        super().__init__(members)

    # --- helpers for the engine and tests ------------------------------------------------------

    @staticmethod
    def pack_plastic(w: Sequence[int], decay: Sequence[int], plasticity: Sequence[int]) -> int:
        """One word of a plastic tile's parameter memory from each lane's W, lambda, gamma."""
        word = 0
        for lane, (a, b, c) in enumerate(zip(w, decay, plasticity, strict=True)):
            lane_word = (int(a) & 0xFF) | ((int(b) & 0xFF) << 8) | ((int(c) & 0xFF) << 16)
            word |= lane_word << (24 * lane)
        return word

    @staticmethod
    def pack_static(w: Sequence[int]) -> int:
        """One word of a static tile's memory from each lane's 2-bit W."""
        mask = (1 << ENC_WEIGHT.bits) - 1
        return sum((int(v) & mask) << (ENC_WEIGHT.bits * k) for k, v in enumerate(w))

    # --- gateware ------------------------------------------------------------------------------

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        m.submodules.tree = tree = AdderTree(self.lanes, self.lane_bits, self.sum_bits)
        m.d.comb += [self.sum.payload.eq(tree.sum), self.sum.valid.eq(tree.valid_out)]
        addr = Signal(range(self.depth))
        m.d.comb += addr.eq(Mux(self.p_en, self.p_addr, self.beat.payload.addr))
        if self.kind == "static":
            self._elaborate_static(m, addr, tree)
        else:
            self._elaborate_plastic(m, addr, tree)
        return m

    def _elaborate_static(self, m: Module, addr: Value, tree: AdderTree) -> None:
        bits = ENC_WEIGHT.bits
        m.submodules.mem = mem = Memory(shape=unsigned(self.word_bits), depth=self.depth,
                                        init=list(self.init or []), attrs=self.attrs)
        rd = mem.read_port()
        wr = mem.write_port(granularity=8)
        m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), wr.data.eq(self.p_wdata),
                     wr.en.eq(Mux(self.p_en, self.p_we, 0)), self.p_rdata.eq(rd.data),
                     rd.en.eq(~wr.en.any())]  # no read while writing: single-port SPRAM
        beat = self.beat.payload
        p = _Pipe(m, "", {"valid": self.beat.valid, "first": beat.first, "last": beat.last,
                          "x": beat.x})
        p.next()  # S1: the word is out of the memory
        for lane in range(self.lanes):
            w = rd.data[bits * lane: bits * (lane + 1)].as_signed()
            acc = Signal(signed(self.lane_bits), name=f"acc{lane}")
            prod = Mux(p["x"][lane], w, 0)
            with m.If(p["valid"]):
                m.d.sync += acc.eq(Mux(p["first"], prod, acc + prod))
            m.d.comb += tree.inputs[lane].eq(acc)
        done = Signal()
        m.d.sync += done.eq(p["valid"] & p["last"])
        m.d.comb += tree.valid_in.eq(done)

    def _elaborate_plastic(self, m: Module, addr: Value, tree: AdderTree) -> None:
        dev, lanes = self.device, self.lanes
        init = list(self.init or [])
        m.submodules.pmem = pmem = Memory(shape=unsigned(24 * lanes), depth=self.depth, init=init,
                                          attrs=self.attrs)
        m.submodules.fmem = fmem = Memory(shape=unsigned(8 * lanes), depth=self.depth, init=[])
        prd, pwr = pmem.read_port(), pmem.write_port(granularity=8)
        frd, fwr = fmem.read_port(), fmem.write_port(granularity=8)
        m.d.comb += [prd.addr.eq(addr), pwr.addr.eq(addr), frd.addr.eq(addr)]
        # the logical parameter word: per lane bytes W, lambda, gamma, F
        pwe, fwe, pwd, fwd, rdata = [], [], [], [], []
        for lane in range(lanes):
            base = 4 * lane
            pwe += [self.p_we[base + k] for k in range(3)]
            fwe.append(self.p_we[base + 3])
            pwd.append(self.p_wdata[32 * lane: 32 * lane + 24])
            fwd.append(self.p_wdata[32 * lane + 24: 32 * lane + 32])
            rdata += [prd.data[24 * lane: 24 * lane + 24], frd.data[8 * lane: 8 * lane + 8]]
        m.d.comb += [pwr.data.eq(Cat(*pwd)), pwr.en.eq(Mux(self.p_en, Cat(*pwe), 0)),
                     self.p_rdata.eq(Cat(*rdata)),
                     prd.en.eq(~pwr.en.any())]  # no read while writing: single-port SPRAM

        beat = self.beat.payload
        p = _Pipe(m, "", {"valid": self.beat.valid, "first": beat.first, "last": beat.last,
                          "addr": beat.addr, "hp": beat.hp,
                          **{f"z{k}": beat.z[k] for k in range(lanes)},
                          **{f"zp{k}": beat.zp[k] for k in range(lanes)}})
        p.next()  # S1: the synapse words are out of the memories
        w = [prd.data[24 * k: 24 * k + 8].as_signed() for k in range(lanes)]
        lam = [prd.data[24 * k + 8: 24 * k + 16] for k in range(lanes)]
        gam = [prd.data[24 * k + 16: 24 * k + 24].as_signed() for k in range(lanes)]
        fold = [frd.data[8 * k: 8 * k + 8].as_signed() for k in range(lanes)]
        assert WEIGHT.bits == SHORT_TERM.bits == DECAY.bits == PLASTICITY.bits == 8
        new: dict[str, Value] = {}
        for k in range(lanes):
            new[f"hz{k}"] = p["hp"] * p[f"zp{k}"]
            new[f"lf{k}"] = lam[k] * fold[k]
            new[f"w{k}"] = w[k]
            new[f"g{k}"] = gam[k]
            new[f"f{k}"] = fold[k]
            if dev.soft_bound:
                new[f"gold{k}"] = _clamp(w[k] + _f_to_g(fold[k]), dev.g_min, dev.g_max)
        p.next(drop=["hp"] + [f"zp{k}" for k in range(lanes)], **new)  # S2
        p.next(drop=[f"g{k}" for k in range(lanes)] + [f"hz{k}" for k in range(lanes)],
               **{f"hebb{k}": p[f"g{k}"] * p[f"hz{k}"] for k in range(lanes)})  # S3
        frac = HEBB_FRAC
        if dev.asymmetry:
            p.next(**{f"hebb{k}": p[f"hebb{k}"] * Mux(p[f"hebb{k}"] >= 0,
                                                     Const(dev.asym_up, ASYM.bits),
                                                     Const(dev.asym_down, ASYM.bits))
                      for k in range(lanes)})
            frac += ASYM.frac
        if dev.soft_bound:
            new = {}
            for k in range(lanes):
                gold = p[f"gold{k}"]
                factor = Mux(p[f"hebb{k}"] >= 0, dev.g_max - gold, gold - dev.g_min)
                new[f"hebb{k}"] = p[f"hebb{k}"] * factor[:9]
            p.next(drop=[f"gold{k}" for k in range(lanes)], **new)
            frac += dev.soft_bound_frac
        shift = frac + dev.level_shift
        align = DECAY_ALIGN + frac - HEBB_FRAC
        new = {}
        for k in range(lanes):
            if dev.noise_bits:
                lfsr = Lfsr(self.lane_base + k, dev.noise_bits, self.seed_init)
                m.submodules[f"lfsr{k}"] = lfsr
                m.d.comb += [lfsr.seed.eq(self.seed), lfsr.reseed.eq(self.reseed),
                             lfsr.advance.eq(p["valid"])]
                rnd = lfsr.draw << (shift - dev.noise_bits)
            else:
                rnd = Const(1 << (shift - 1))
            new[f"acc{k}"] = (p[f"lf{k}"] << align) + p[f"hebb{k}"] + rnd
        p.next(drop=[f"lf{k}" for k in range(lanes)] + [f"hebb{k}" for k in range(lanes)],
               **new)
        qlo, qhi = dev.f_lo >> dev.level_shift, dev.f_hi >> dev.level_shift
        new = {}
        for k in range(lanes):
            q = _clamp(p[f"acc{k}"] >> shift, qlo, qhi)
            new[f"fn{k}"] = (q << dev.level_shift)[:SHORT_TERM.bits].as_signed()
        p.next(drop=[f"acc{k}" for k in range(lanes)], **new)  # F_new registered
        # write F back; G from the new F; count the pulses
        m.d.comb += [fwr.addr.eq(Mux(self.p_en, self.p_addr, p["addr"])),
                     fwr.data.eq(Mux(self.p_en, Cat(*fwd),
                                     Cat(*(p[f"fn{k}"] for k in range(lanes))))),
                     fwr.en.eq(Mux(self.p_en, Cat(*fwe),
                                   Mux(p["valid"], (1 << lanes) - 1, 0)))]
        new = {}
        for k in range(lanes):
            g = _clamp(p[f"w{k}"] + _f_to_g(p[f"fn{k}"]), dev.g_min, dev.g_max)
            new[f"gg{k}"] = g[:CONDUCTANCE.bits].as_signed()
            new[f"up{k}"] = p["valid"] & (p[f"fn{k}"] > p[f"f{k}"])
            new[f"dn{k}"] = p["valid"] & (p[f"fn{k}"] < p[f"f{k}"])
        p.next(drop=[f"w{k}" for k in range(lanes)] + [f"f{k}" for k in range(lanes)]
               + [f"fn{k}" for k in range(lanes)] + ["addr"], **new)
        pot, dep = Signal(range(lanes + 1)), Signal(range(lanes + 1))
        m.d.sync += [pot.eq(sum(p[f"up{k}"] for k in range(lanes))),
                     dep.eq(sum(p[f"dn{k}"] for k in range(lanes)))]
        m.d.comb += [self.pot.eq(pot), self.dep.eq(dep)]
        p.next(drop=[f"up{k}" for k in range(lanes)] + [f"dn{k}" for k in range(lanes)]
               + [f"gg{k}" for k in range(lanes)] + [f"z{k}" for k in range(lanes)],
               **{f"prod{k}": p[f"gg{k}"] * p[f"z{k}"] for k in range(lanes)})
        for k in range(lanes):
            acc = Signal(signed(self.lane_bits), name=f"acc{k}")
            prod = p[f"prod{k}"]
            with m.If(p["valid"]):
                m.d.sync += acc.eq(Mux(p["first"], prod, acc + prod))
            m.d.comb += tree.inputs[k].eq(acc)
        done = Signal()
        m.d.sync += done.eq(p["valid"] & p["last"])
        m.d.comb += tree.valid_in.eq(done)
