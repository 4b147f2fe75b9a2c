"""The cycle-to-cycle noise source: one 32-bit Galois LFSR per plastic lane.

Polynomial x^32 + x^22 + x^2 + x + 1 (maximal length), stepped right: the bit shifted out of bit 0
XORs :data:`LFSR_TAPS` into the state. Per synapse a lane steps its LFSR ``noise_bits`` times
(unrolled in the gateware, one synapse per cycle) and draws the low ``noise_bits`` bits of the new
state. A lane's synapses are drawn in processing order: rows ascending, then its columns
``j = lane, lane + lanes, ...`` ascending; one step of the network draws
``hidden * inputs / lanes`` times per lane.

The state is loaded from the seed at SET_SEED and at every episode reset, so an episode's noise
depends only on (seed, preset), never on what ran before.
"""

from __future__ import annotations

__all__ = ["LFSR_TAPS", "LFSR_BITS", "lane_salt", "seed_state", "lfsr_step"]

LFSR_BITS = 32
#: The XOR mask of x^32 + x^22 + x^2 + x + 1 in the right-shifting Galois form.
LFSR_TAPS = 0x80200003
_GOLDEN = 0x9E3779B9


def lane_salt(lane: int) -> int:
    """The constant that separates lane ``lane``'s LFSR from the others for one seed."""
    return (_GOLDEN * (lane + 1)) & 0xFFFFFFFF


def seed_state(seed: int, lane: int) -> int:
    """The LFSR state of ``lane`` after seeding with ``seed`` (never the stuck state 0)."""
    if not 0 <= seed <= 0xFFFFFFFF:
        raise ValueError(f"noise seed must be a 32-bit unsigned integer, not {seed}")
    state = seed ^ lane_salt(lane)
    return state or 1


def lfsr_step(state: int) -> int:
    """One step of the LFSR (the scalar reference for the vectorised model)."""
    return (state >> 1) ^ (LFSR_TAPS if state & 1 else 0)
