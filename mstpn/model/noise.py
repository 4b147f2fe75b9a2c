"""Vectorised draws of the per-lane LFSR noise (see :mod:`mstpn.spec.noise` for the definition).

A lane's draws within one step are a fixed linear function, over GF(2), of its state at the start
of the step. So instead of stepping each LFSR synapse by synapse in Python, this module
precomputes, once per (noise_bits, draws per step), the rows of the matrices that map the start
state to every draw's bits, and evaluates them all at once with popcounts. The scalar reference,
:func:`mstpn.spec.noise.lfsr_step`, checks it in the tests.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..spec.noise import LFSR_BITS, LFSR_TAPS, seed_state

__all__ = ["LaneNoise", "step_matrix", "gf2_matmul", "gf2_apply"]

_BIT = np.arange(LFSR_BITS, dtype=np.uint32)


def step_matrix() -> np.ndarray:
    """The LFSR step as 32 row masks: bit i of the next state is parity(row[i] & state)."""
    rows = np.zeros(LFSR_BITS, dtype=np.uint32)
    for i in range(LFSR_BITS):
        row = (1 << (i + 1)) if i + 1 < LFSR_BITS else 0
        if (LFSR_TAPS >> i) & 1:
            row |= 1
        rows[i] = row
    return rows


def gf2_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The matrix of applying ``b`` first, then ``a`` (both as row masks)."""
    sel = ((a[:, None] >> _BIT[None, :]) & 1).astype(bool)
    return np.bitwise_xor.reduce(np.where(sel, b[None, :], np.uint32(0)), axis=1)


def gf2_apply(rows: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Apply a matrix (row masks, last axis 32) to states, broadcasting."""
    bits = np.bitwise_count(rows & state[..., None]) & 1
    return (bits.astype(np.uint32) << _BIT).sum(axis=-1, dtype=np.uint64).astype(np.uint32)


def _power(rows: np.ndarray, n: int) -> np.ndarray:
    result = np.array([1 << i for i in range(LFSR_BITS)], dtype=np.uint32)
    base = rows
    while n:
        if n & 1:
            result = gf2_matmul(base, result)
        base = gf2_matmul(base, base)
        n >>= 1
    return result


@lru_cache(maxsize=8)
def _tables(noise_bits: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """(byte tables (draws, 4, 256) of each draw's value, jump matrix over one step's draws).

    Draw k's value is linear in the start state: the XOR, over the state's four bytes, of
    ``tables[k, byte_index, byte_value]``.
    """
    per_draw = _power(step_matrix(), noise_bits)
    rows = np.empty((draws, noise_bits), dtype=np.uint32)
    acc = per_draw
    for k in range(draws):
        rows[k] = acc[:noise_bits]
        acc = gf2_matmul(per_draw, acc)
    # column[k, b]: the draw's value when only state bit b is set
    state_bits = np.uint32(1) << _BIT
    hit = np.bitwise_count(rows[:, None, :] & state_bits[None, :, None]) & 1
    column = (hit.astype(np.uint32) << np.arange(noise_bits, dtype=np.uint32)).sum(axis=-1)
    values = np.arange(256, dtype=np.uint32)
    tables = np.zeros((draws, 4, 256), dtype=np.uint16)
    for byte in range(4):
        for bit in range(8):
            on = ((values >> bit) & 1).astype(bool)
            tables[:, byte, on] ^= column[:, 8 * byte + bit, None].astype(np.uint16)
    return tables, _power(per_draw, draws)


class LaneNoise:
    """The noise draws of every plastic lane, for a batch of independent episodes.

    Parameters
    ----------
    lanes : int
        Plastic lanes of the preset.
    rows, cols : int
        The plastic layer's neurons and inputs; ``cols`` must be a multiple of ``lanes``.
    noise_bits : int
        Bits per draw (1..15).
    batch : int
        Independent episodes.
    """

    def __init__(self, lanes: int, rows: int, cols: int, noise_bits: int, batch: int) -> None:
        if cols % lanes:
            raise ValueError(f"{lanes} lanes do not divide {cols} columns")
        self.lanes, self.rows, self.cols = lanes, rows, cols
        self.noise_bits = noise_bits
        self.per_row = cols // lanes
        self._tables, self._jump = _tables(noise_bits, rows * self.per_row)
        self.state = np.zeros((batch, lanes), dtype=np.uint32)

    def seed(self, seed: int, which: np.ndarray | None = None) -> None:
        """Load every lane's state from ``seed`` (for the episodes selected by ``which``)."""
        start = np.array([seed_state(seed, lane) for lane in range(self.lanes)], dtype=np.uint32)
        if which is None:
            self.state[:] = start
        else:
            self.state[which] = start

    def draw(self) -> np.ndarray:
        """One step's draws, as (batch, rows, cols) int64, and advance every lane."""
        draws = np.zeros(self.state.shape + (self._tables.shape[0],), dtype=np.uint16)
        for byte in range(4):
            index = (self.state >> np.uint32(8 * byte)) & np.uint32(0xFF)
            draws ^= self._tables[:, byte, :].T[index]
        # draws[b, lane, k] with k = row * per_row + m serves column j = m * lanes + lane.
        batch = self.state.shape[0]
        draws = draws.reshape(batch, self.lanes, self.rows, self.per_row)
        self.state = gf2_apply(self._jump, self.state)
        draws = draws.transpose(0, 2, 3, 1).reshape(batch, self.rows, self.cols)
        return draws.astype(np.int64)
