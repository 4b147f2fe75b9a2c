"""The ball's phase read from the student's frames, and DAgger's approach-weighted loss."""

from __future__ import annotations

import numpy as np
import pytest

from mstpn.host.train.phase import (
    HIDDEN_STEPS,
    approaching,
    ball_columns,
    loss_weights,
)
from mstpn.spec.env import PADDLE_PIXEL_COLUMNS, RAM_BALL_X, make_env
from mstpn.spec.preprocess import DEFAULT_GEOMETRY, binarize

GEO = DEFAULT_GEOMETRY
OURS = PADDLE_PIXEL_COLUMNS[1] // GEO.pool_cols
THEIRS = PADDLE_PIXEL_COLUMNS[0] // GEO.pool_cols


def _frame(ball_col: int | None, ball_row: int = 30) -> np.ndarray:
    """A pooled frame with both paddles and, optionally, the ball (flattened)."""
    img = np.zeros((GEO.rows, GEO.cols), dtype=np.uint8)
    img[20:28, OURS] = 1
    img[50:58, THEIRS] = 1
    if ball_col is not None:
        img[ball_row:ball_row + 2, ball_col] = 1
    return img.reshape(-1)


def _windows(cols: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
    bits = np.stack([_frame(c) for c in cols])[:, None, :]
    return bits, np.zeros(bits.shape[:2], dtype=bool)


def test_ball_columns_skip_the_paddles() -> None:
    cols = ball_columns(np.stack([_frame(None), _frame(20), _frame(OURS)]), GEO)
    assert np.isnan(cols[0]) and cols[1] == 20.0 and np.isnan(cols[2])
    with pytest.raises(ValueError, match="frames of 40 pixels"):
        ball_columns(np.zeros((2, 40)), GEO)


def test_approaching_compares_steps_and_carries_a_hidden_ball_briefly() -> None:
    bits, reset = _windows([10, 12, 14, 13, 11, 11, 12])
    assert approaching(bits, reset, GEO)[:, 0].tolist() == [
        False, True, True, False, False, False, True]
    # The ball reaches our paddle's column and hides there: still coming, for a few steps.
    near = [OURS - 2, OURS - 1] + [None] * (HIDDEN_STEPS + 2)
    bits, reset = _windows(near)
    flags = approaching(bits, reset, GEO)[:, 0].tolist()
    assert flags == [False, True] + [True] * HIDDEN_STEPS + [False, False]
    # A ball that vanishes far from our paddle (a point scored at the other end) is not.
    bits, reset = _windows([10, 12, None, None])
    assert approaching(bits, reset, GEO)[:, 0].tolist() == [False, True, False, False]
    # An episode start breaks the comparison with the frame before it.
    bits, reset = _windows([10, 12, 14, 16])
    reset[2, 0] = True
    assert approaching(bits, reset, GEO)[:, 0].tolist() == [False, True, False, True]


def test_approaching_matches_the_ram_in_a_real_game() -> None:
    """Against the emulator's own ball x (the teachers' test), over 2,000 steps of a game."""
    env = make_env(sticky=0.0)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    frames, truth, prev = [], [], None
    for _ in range(2000):
        frames.append(binarize(obs[None])[0].reshape(-1))
        bx = int(env.unwrapped.ale.getRAM()[RAM_BALL_X])
        truth.append(prev is not None and 0 not in (bx, prev) and bx > prev)
        prev = bx
        obs, *_ = env.step(int(rng.choice([0, 2, 3])))
    env.close()
    bits = np.stack(frames)[:, None, :]
    reset = np.zeros(bits.shape[:2], dtype=bool)
    reset[0] = True
    flags = approaching(bits, reset, GEO)[:, 0]
    truth = np.array(truth)
    assert 0.1 < truth.mean() < 0.5
    # Disagreements: the ball passing our paddle after a miss (RAM x stops at its edge) and
    # the step the ball reappears.
    assert (flags == truth).mean() > 0.97
    assert (flags & truth).sum() / truth.sum() > 0.95


def test_loss_weights() -> None:
    bits, reset = _windows([10, 12, 14, 13])
    valid = np.array([[False], [True], [True], [True]])
    assert loss_weights(bits, reset, valid, 1.0, GEO)[:, 0].tolist() == [0, 1, 1, 1]
    assert loss_weights(bits, reset, valid, 0.25, GEO)[:, 0].tolist() == [0, 1, 1, 0.25]
    assert loss_weights(bits, reset, valid, 0.0, GEO)[:, 0].tolist() == [0, 1, 1, 0]
