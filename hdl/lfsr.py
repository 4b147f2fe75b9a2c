"""The per-lane noise source: a 32-bit Galois LFSR, stepped ``noise_bits`` times per synapse.

It sits in each plastic lane of a synapse tile, beside the fused F update (docs/spec.md,
section 5). The ``noise_bits`` steps are unrolled into one XOR network, so a lane draws one
synapse's dither every cycle. The draw is the low ``noise_bits`` bits of the new state.

Cost: 32 flip-flops and an XOR network of about 32 two- to four-input XORs per lane; one cycle
per draw, no latency (the draw is combinational from the state).
"""

from __future__ import annotations

from amaranth import Mux, Signal, unsigned
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec.noise import LFSR_BITS, LFSR_TAPS, lane_salt, seed_state
from ..spec.qformat import NOISE_BITS_MAX

__all__ = ["Lfsr"]


def _step_matrix(steps: int) -> list[int]:
    """Row masks: bit i of the state after ``steps`` steps is the parity of ``row[i] & state``."""
    rows = [1 << i for i in range(LFSR_BITS)]
    for _ in range(steps):
        # one step: new[i] = old[i + 1] ^ (taps[i] & old[0])
        new = []
        for i in range(LFSR_BITS):
            row = rows[i + 1] if i + 1 < LFSR_BITS else 0
            if (LFSR_TAPS >> i) & 1:
                row ^= rows[0]
            new.append(row)
        rows = new
    return rows


class Lfsr(wiring.Component):
    """One lane's LFSR.

    Parameters
    ----------
    lane : int
        The lane's global index: its seed is ``seed ^ lane_salt(lane)`` (0 becomes 1).
    noise_bits : int
        Steps per draw and bits per draw, 1..NOISE_BITS_MAX.
    seed_init : int
        The seed whose state the LFSR holds after a hardware reset.

    Attributes
    ----------
    seed : In(32)
        The seed to load.
    reseed : In(1)
        Load ``seed ^ lane_salt(lane)`` on this cycle (wins over ``advance``).
    advance : In(1)
        Step the state ``noise_bits`` times on this cycle.
    draw : Out(noise_bits)
        The draw that ``advance`` takes on this cycle: the low bits of the next state.

    Raises
    ------
    ValueError
        If ``noise_bits`` or ``lane`` is out of range.
    """

    def __init__(self, lane: int, noise_bits: int, seed_init: int = 1) -> None:
        if not isinstance(lane, int) or lane < 0:
            raise ValueError(f"LFSR lane must be a non-negative integer, not {lane!r}")
        if not isinstance(noise_bits, int) or not 1 <= noise_bits <= NOISE_BITS_MAX:
            raise ValueError(f"noise_bits must be in 1..{NOISE_BITS_MAX}, not {noise_bits!r}")
        self.lane = lane
        self.seed_init = seed_state(seed_init, lane)
        self.noise_bits = noise_bits
        super().__init__({
            "seed": In(LFSR_BITS),
            "reseed": In(1),
            "advance": In(1),
            "draw": Out(unsigned(noise_bits)),
        })

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        salt = lane_salt(self.lane)
        state = Signal(LFSR_BITS, init=self.seed_init)
        rows = _step_matrix(self.noise_bits)
        nxt = Signal(LFSR_BITS)
        for i, row in enumerate(rows):
            taps = [state[b] for b in range(LFSR_BITS) if (row >> b) & 1]
            bit = taps[0]
            for t in taps[1:]:
                bit = bit ^ t
            m.d.comb += nxt[i].eq(bit)
        m.d.comb += self.draw.eq(nxt[: self.noise_bits])
        salted = Signal(LFSR_BITS)
        m.d.comb += salted.eq(self.seed ^ salt)
        with m.If(self.reseed):
            m.d.sync += state.eq(Mux(salted == 0, 1, salted))
        with m.Elif(self.advance):
            m.d.sync += state.eq(nxt)
        return m
