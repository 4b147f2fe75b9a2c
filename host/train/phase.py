"""Where the ball is going, read from the student's own binary frames (training only).

DAgger's loss may weigh the steps where the ball comes toward our paddle more than the rest
(``--away-weight``): those are the steps whose actions win or lose the point. The replay buffer
holds only the frames and the labels, so the phase is read back from the frames, which makes it
work on any buffer, old ones included.

In a pooled frame (:class:`mstpn.spec.presets.FrameGeometry`, 40 columns of 4 pixels) the two
paddles sit in fixed columns (:data:`mstpn.spec.env.PADDLE_PIXEL_COLUMNS`) and the ball is the
only other lit object. The ball's column is the
mean of the lit columns outside the paddles'. It moves toward us when that column grows from one
step to the next. While the ball overlaps our paddle's column (the moment it is hit or missed) it
cannot be told apart from the paddle; a ball that was last seen coming toward us near our
paddle is counted as still coming for :data:`HIDDEN_STEPS` steps.
"""

from __future__ import annotations

import numpy as np

from ...spec.env import PADDLE_PIXEL_COLUMNS
from ...spec.presets import FrameGeometry

__all__ = ["HIDDEN_STEPS", "ball_columns", "approaching", "loss_weights"]

#: Steps for which a ball hidden in our paddle's column still counts as coming toward us.
HIDDEN_STEPS = 3


def _paddle_columns(geometry: FrameGeometry) -> list[int]:
    return sorted({px // geometry.pool_cols for px in PADDLE_PIXEL_COLUMNS})


def ball_columns(bits: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """The ball's pooled column in each frame, NaN where no ball is seen.

    Parameters
    ----------
    bits : numpy.ndarray
        Binary frames, shape ``(..., pixels)`` (any numeric type, non-zero is lit).
    geometry : FrameGeometry
        The frames' geometry.

    Returns
    -------
    numpy.ndarray
        Shape ``bits.shape[:-1]``, float.
    """
    bits = np.asarray(bits)
    if bits.shape[-1] != geometry.pixels:
        raise ValueError(f"frames of {bits.shape[-1]} pixels, but the geometry has "
                         f"{geometry.pixels}")
    lit = bits.reshape(*bits.shape[:-1], geometry.rows, geometry.cols).any(axis=-2)
    lit[..., _paddle_columns(geometry)] = False
    count = lit.sum(axis=-1)
    cols = np.arange(geometry.cols, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (lit * cols).sum(axis=-1) / count, np.nan)


def approaching(bits: np.ndarray, reset: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Whether the ball comes toward our paddle at each step of a batch of windows.

    Parameters
    ----------
    bits : numpy.ndarray
        Frames of shape ``(steps, batch, pixels)``, in time order.
    reset : numpy.ndarray
        Shape ``(steps, batch)``: true where an episode starts (nothing before it counts).
    geometry : FrameGeometry
        The frames' geometry.

    Returns
    -------
    numpy.ndarray
        Shape ``(steps, batch)``, bool. The first step of a window, and of an episode, is never
        counted as approaching: there is no earlier frame to compare with.
    """
    col = ball_columns(bits, geometry)
    steps = col.shape[0]
    ours = max(_paddle_columns(geometry))
    out = np.zeros(col.shape, dtype=bool)
    last = np.full(col.shape[1:], np.nan)  # the last column seen, per window
    hidden = np.zeros(col.shape[1:], dtype=np.int64)  # steps since it was last seen
    for t in range(steps):
        if t:
            last = np.where(reset[t], np.nan, last)
        seen = ~np.isnan(col[t])
        with np.errstate(invalid="ignore"):
            moving_in = seen & (col[t] > last)
            # Unseen: either the ball is in our paddle's column, or there is no ball.
            near = ~seen & (hidden < HIDDEN_STEPS) & (last >= ours - 3)
        carry = near & (out[t - 1] if t else False)
        out[t] = moving_in | carry
        hidden = np.where(seen, 0, hidden + 1)
        last = np.where(seen, col[t], last)
    return out


def loss_weights(bits: np.ndarray, reset: np.ndarray, valid: np.ndarray, away_weight: float,
                 geometry: FrameGeometry) -> np.ndarray:
    """DAgger's per-step loss weights: 1 where the ball comes toward us, ``away_weight``
    elsewhere, 0 where the step is not trained on (``valid`` false: burn-in, padding).

    Parameters are those of :func:`approaching`, with ``valid`` of shape ``(steps, batch)``.
    """
    weight = np.asarray(valid, dtype=np.float64)
    if away_weight != 1.0:
        weight = weight * np.where(approaching(bits, reset, geometry), 1.0, away_weight)
    return weight
