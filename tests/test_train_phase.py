"""The ball's phase read from the student's frames, and DAgger's approach-weighted loss."""

from __future__ import annotations

import numpy as np
import pytest

from mstpn.host.train.phase import (
    AUX_SCALES,
    AUX_TARGETS,
    HIDDEN_STEPS,
    approaching,
    aux_targets,
    ball_columns,
    ball_rows,
    crossing_rows,
    loss_weights,
    paddle_rows,
)
from mstpn.host.train.teacher import ball_coming
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
        truth.append(prev is not None and bool(ball_coming(bx, prev)))
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


def _path(steps: list[tuple[int, int] | None]) -> np.ndarray:
    """Frames (steps, 1, pixels) of a ball at (column, row) positions, None where unseen."""
    frames = [_frame(None) if p is None else _frame(p[0], p[1]) for p in steps]
    return np.stack(frames)[:, None, :]


def test_ball_and_paddle_rows() -> None:
    bits = _path([(20, 30), None, (OURS, 10)])
    # The ball covers rows 30 and 31; our paddle rows 20..27; a ball in our column is not seen.
    assert ball_rows(bits, GEO)[:, 0].tolist()[0] == 30.5
    assert np.isnan(ball_rows(bits, GEO)[1:, 0]).all()
    assert paddle_rows(bits, GEO)[:2, 0].tolist() == [23.5, 23.5]
    assert paddle_rows(bits, GEO)[2, 0] == pytest.approx((sum(range(20, 28)) + 21) / 10)
    with pytest.raises(ValueError, match="frames of 40 pixels"):
        ball_rows(np.zeros((2, 40)), GEO)


def test_crossing_rows_are_the_last_row_seen_on_the_way_in() -> None:
    # Away (columns falling), then in from column 20, climbing two rows a step, hidden at us.
    path = [(24, 60), (22, 60), (20, 60), (24, 56), (28, 52), (32, 48), (OURS - 1, 44),
            None, None, None, None, None, None]
    bits = _path(path)
    steps = len(path)
    reset = np.zeros((steps, 1), dtype=bool)
    known = np.ones((steps, 1), dtype=bool)
    cross = crossing_rows(bits, reset, known, GEO)[:, 0]
    app = approaching(bits, reset, GEO)[:, 0]
    assert app[3:7].all() and not app[:3].any()
    assert np.isnan(cross[:3]).all()
    assert (cross[app] == 44.5).all() and np.isnan(cross[~app]).all()
    # The run reaches a step not yet played (an unfinished episode): no crossing is known.
    known[9:] = False
    assert np.isnan(crossing_rows(bits, reset, known, GEO)).all()
    # Nor when it reaches the window's end.
    assert np.isnan(crossing_rows(bits[:6], reset[:6], known[:6], GEO)).all()


def test_aux_targets_are_scaled_and_undefined_where_unseen() -> None:
    path = [(20, 60), (24, 56), (28, 52), (OURS - 1, 48), None, None, None, None, None]
    bits = _path(path)
    steps = len(path)
    reset = np.zeros((steps, 1), dtype=bool)
    reset[0] = True
    targets = aux_targets(bits, reset, np.ones((steps, 1), dtype=bool), GEO)[:, 0]
    assert targets.shape == (steps, len(AUX_TARGETS))
    scaled = targets * np.asarray(AUX_SCALES)
    paddle = 23.5
    assert scaled[1].tolist() == [56.5 - paddle, -4.0, 48.5 - paddle, 1.0]
    assert scaled[0, 0] == 60.5 - paddle and np.isnan(scaled[0, 1:3]).all()
    assert scaled[0, 3] == -1.0  # seen, not (yet) coming toward us
    assert np.isnan(scaled[-1]).all()  # no ball, not coming: nothing to predict
