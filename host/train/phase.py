"""Where the ball is going, read from the student's own binary frames (training only).

DAgger's loss may weigh the steps where the ball comes toward our paddle more than the rest
(``--away-weight``): those are the steps whose actions win or lose the point. It may also ask a
training-only head to read from h where the ball is, how fast it climbs and where it will cross
our column (``--aux-weight``, :func:`aux_targets`). The replay buffer holds only the frames and
the labels, so all of this is read back from the frames, which makes it work on any buffer, old
ones included.

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

__all__ = ["HIDDEN_STEPS", "AUX_TARGETS", "AUX_SCALES", "ball_columns", "ball_rows",
           "paddle_rows", "approaching", "crossing_rows", "aux_targets", "loss_weights"]

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
    lit = _image(bits, geometry).any(axis=-2)
    lit[..., _paddle_columns(geometry)] = False
    return _lit_mean(lit)


def _lit_mean(lit: np.ndarray) -> np.ndarray:
    """The mean index of the true entries along the last axis, NaN where there are none."""
    count = lit.sum(axis=-1)
    index = np.arange(lit.shape[-1], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (lit * index).sum(axis=-1) / count, np.nan)


def _image(bits: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.shape[-1] != geometry.pixels:
        raise ValueError(f"frames of {bits.shape[-1]} pixels, but the geometry has "
                         f"{geometry.pixels}")
    return bits.reshape(*bits.shape[:-1], geometry.rows, geometry.cols) != 0


def ball_rows(bits: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """The ball's pooled row in each frame (the mean of its lit rows), NaN where no ball is
    seen; the shapes are those of :func:`ball_columns`."""
    img = _image(bits, geometry).copy()
    img[..., _paddle_columns(geometry)] = False
    return _lit_mean(img.any(axis=-1))


def paddle_rows(bits: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Our paddle's pooled row in each frame (the mean of the lit rows of its column), NaN where
    it is not seen. A ball passing through the column shifts it by a few rows."""
    ours = max(_paddle_columns(geometry))
    return _lit_mean(_image(bits, geometry)[..., ours])


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


def crossing_rows(bits: np.ndarray, reset: np.ndarray, known: np.ndarray,
                  geometry: FrameGeometry) -> np.ndarray:
    """Where the coming ball will cross our paddle's column, at each step it comes toward us.

    The crossing is the ball's row at the last step it is seen in the run of approaching steps
    (:func:`approaching`) that holds the step: the ball's path does not depend on our actions
    until it reaches us, so this is the future the student should predict from the frames so
    far. It needs the frames after a window's last trained step, so the windows are read with a
    look-ahead.

    Parameters
    ----------
    bits, reset : numpy.ndarray
        As for :func:`approaching`, shape ``(steps, batch, ...)``.
    known : numpy.ndarray
        Shape ``(steps, batch)``: false where the episode has not been played that far yet (an
        unfinished episode's future). A run that reaches such a step, or the window's end, has
        no known crossing.
    geometry : FrameGeometry
        The frames' geometry.

    Returns
    -------
    numpy.ndarray
        Shape ``(steps, batch)``, float: the pooled row, NaN where the ball does not come toward
        us or its crossing is not in the window.
    """
    app = approaching(bits, reset, geometry)
    rows = ball_rows(bits, geometry)
    known = np.asarray(known, dtype=bool)
    steps, batch = app.shape
    out = np.full((steps, batch), np.nan)
    for b in range(batch):
        t = 0
        while t < steps:
            if not app[t, b]:
                t += 1
                continue
            end = t
            while end + 1 < steps and app[end + 1, b]:
                end += 1
            # The run ended inside the window, on a step whose successor has been played.
            closed = end + 1 < steps and known[end + 1, b] and known[t:end + 1, b].all()
            seen = np.flatnonzero(~np.isnan(rows[t:end + 1, b]))
            if closed and len(seen):
                out[t:end + 1, b] = rows[t + seen[-1], b]
            t = end + 1
    return out


#: What the auxiliary head predicts from h (``--aux-weight``), in this order.
AUX_TARGETS = ("ball - paddle", "ball row velocity", "crossing - paddle", "approaching")
#: Each target is divided by its scale (pooled rows, rows a step, a sign) before the loss, so
#: that all have a spread near 1 (measured on a replay buffer: 24, 3.3, 14 and 1).
AUX_SCALES = (16.0, 4.0, 16.0, 1.0)


def aux_targets(bits: np.ndarray, reset: np.ndarray, known: np.ndarray,
                geometry: FrameGeometry) -> np.ndarray:
    """The auxiliary head's targets at each step, scaled, NaN where undefined.

    ``ball - paddle``: the ball's row less our paddle's, where both are seen. ``ball row
    velocity``: the ball's row less its row a step before, within an episode. ``crossing -
    paddle``: :func:`crossing_rows` less our paddle's row. ``approaching``: +1 where the ball
    comes toward us, -1 where it is seen and does not.

    Parameters are those of :func:`crossing_rows`; the result has shape
    ``(steps, batch, len(AUX_TARGETS))``.
    """
    reset = np.asarray(reset, dtype=bool)
    rows = ball_rows(bits, geometry)
    paddle = paddle_rows(bits, geometry)
    velocity = np.full(rows.shape, np.nan)
    velocity[1:] = np.where(reset[1:], np.nan, rows[1:] - rows[:-1])
    app = approaching(bits, reset, geometry)
    sign = np.where(np.isnan(rows) & ~app, np.nan, np.where(app, 1.0, -1.0))
    out = np.stack([rows - paddle, velocity,
                    crossing_rows(bits, reset, known, geometry) - paddle, sign], axis=-1)
    return out / np.asarray(AUX_SCALES)


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
