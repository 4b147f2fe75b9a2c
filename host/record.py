"""``mstpn play --record FILE``: the game beside the network's plastic state, as .mp4 or .gif.

Each video frame is the colour game frame on the left and, on the right, three panels over a
sliding window of the last :data:`HISTORY` recorded steps::

    h_t        64 neurons x time, diverging colours (-1 blue .. 0 dark .. +1 red)
    ||F_i||_2  each neuron's row norm of the short-term state F over time (sequential colours,
               scaled to the largest norm seen so far in the recording, printed beside it)
    F now      the 64 x 128 matrix of F at this step (inputs x | recurrent h), diverging

F is the *stored* F (the accelerator's memory, one fused update behind the paper's F_t; see
docs/spec.md). It comes from the golden model: the model backend's own, or, on the simulated board
and on a board, the golden model that ``--record`` runs in lockstep (it turns ``--check`` on), whose
logits are compared with the board's at every step and whose F is compared with the board's by
READBACK at the end of each episode. Reading F from the board every step would cost about ten
steps' time per READBACK (8 KiB through the UART), so the recording does not.

Video goes through imageio: .mp4 with the ffmpeg that the ``imageio-ffmpeg`` wheel bundles
(streamed to disk as it plays), .gif through Pillow (held in memory until the end, so a GIF keeps
at most :data:`GIF_MAX_FRAMES` frames at half the size; use .mp4 for a whole game). The file is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..spec.env import real_time_decisions_per_s
from ..spec.qformat import ACT_ONE, SHORT_TERM
from .play import StepInfo

__all__ = ["Recorder", "RecordError", "compose", "HISTORY", "GIF_MAX_FRAMES", "FORMATS"]

#: Steps of history in the h and ||F|| panels.
HISTORY = 160
#: The most frames a GIF keeps (it is held in memory until written).
GIF_MAX_FRAMES = 1500
#: File suffixes that can be recorded.
FORMATS = (".mp4", ".gif")

# colour maps as anchor points, interpolated into 256-entry tables (diverging: blue-dark-red;
# sequential: black-purple-orange-yellow, in the manner of "magma")
_DIVERGING = np.array([[70, 110, 230], [30, 30, 38], [235, 70, 50]], dtype=np.float64)
_SEQUENTIAL = np.array([[5, 5, 20], [90, 25, 120], [220, 80, 60], [252, 250, 160]],
                       dtype=np.float64)
_BG = (18, 18, 24)
_FG = (225, 225, 225)


class RecordError(Exception):
    """The recording cannot be made (an unknown suffix, no ffmpeg, a file that cannot be
    written)."""


def _lut(anchors: np.ndarray) -> np.ndarray:
    """A 256-entry RGB table, interpolated linearly between the anchor colours."""
    pos = np.linspace(0.0, len(anchors) - 1, 256)
    i = np.minimum(pos.astype(int), len(anchors) - 2)
    frac = (pos - i)[:, None]
    return (anchors[i] * (1 - frac) + anchors[i + 1] * frac).astype(np.uint8)


_DIVERGING_LUT = _lut(_DIVERGING)
_SEQUENTIAL_LUT = _lut(_SEQUENTIAL)


def _cmap(values: np.ndarray, lut: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map values in [lo, hi] to RGB uint8 through a 256-entry table."""
    t = (np.asarray(values, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return lut[np.clip(t, 0, 255).astype(np.uint8)]


def _zoom(rgb: np.ndarray, sy: int, sx: int) -> np.ndarray:
    if sy == sx == 1:
        return rgb
    image = Image.fromarray(rgb)
    return np.asarray(image.resize((rgb.shape[1] * sx, rgb.shape[0] * sy), Image.NEAREST))


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    # loading the font costs more than drawing a whole frame: once per size
    return ImageFont.load_default(size=size)


def _text(text: str, size: int) -> Image.Image:
    """A line of text on the background colour."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (max(1, right), max(1, bottom)), _BG)
    ImageDraw.Draw(image).text((0, 0), text, fill=_FG, font=font)
    return image


#: The panels' labels repeat from frame to frame: render each once (FreeType is the slow part).
_label = functools.lru_cache(maxsize=64)(_text)


def compose(game: np.ndarray, h_hist: np.ndarray, norm_hist: np.ndarray, f_now: np.ndarray,
            norm_max: float, title: str, scale: int = 2) -> np.ndarray:
    """One video frame: the game and the three state panels.

    Parameters
    ----------
    game : numpy.ndarray
        (210, 160, 3) uint8 RGB, or (210, 160) grayscale.
    h_hist : numpy.ndarray
        (hidden, HISTORY) h codes, oldest column first (zeros before the first step).
    norm_hist : numpy.ndarray
        (hidden, HISTORY) row norms of F, in F codes.
    f_now : numpy.ndarray
        (hidden, inputs) stored F codes.
    norm_max : float
        The row norm shown at full colour.
    title : str
        One line over the panels (episode, step, score).
    scale : int
        Pixels per game pixel (2 for video, 1 for GIF); the panels follow.

    Returns
    -------
    numpy.ndarray
        (H, W, 3) uint8, H and W multiples of 16 (what video encoders want).
    """
    if game.ndim == 2:
        game = np.repeat(game[..., None], 3, axis=-1)
    game = _zoom(game, scale, scale)
    hidden = h_hist.shape[0]
    sy = max(1, scale)
    sx = max(1, scale)
    h_img = _zoom(_cmap(h_hist, _DIVERGING_LUT, -ACT_ONE, ACT_ONE), sy, sx)
    n_img = _zoom(_cmap(norm_hist, _SEQUENTIAL_LUT, 0.0, max(norm_max, 1.0)), sy, sx)
    f_img = _zoom(_cmap(f_now, _DIVERGING_LUT, SHORT_TERM.lo, SHORT_TERM.hi), sy, sy)
    size = 7 * scale + 2
    line = 8 * scale + 4
    pad = 4 * scale
    right_w = max(h_img.shape[1], f_img.shape[1]) + 2 * pad
    panels_h = line + 3 * (line + hidden * sy) + pad
    height = max(game.shape[0], panels_h)
    width = game.shape[1] + right_w
    height += -height % 16
    width += -width % 16
    canvas = Image.new("RGB", (width, height), _BG)
    canvas.paste(Image.fromarray(game), (0, (height - game.shape[0]) // 2))
    draw = ImageDraw.Draw(canvas)
    x0 = game.shape[1] + pad
    y = 2
    canvas.paste(_text(title, size), (x0, y))
    y += line
    for label, img in (
        (f"h_t, {hidden} neurons x last {h_hist.shape[1]} steps  (-1 .. +1)", h_img),
        (f"||F_i||, row norms of F  (0 .. {norm_max:.0f} codes)", n_img),
        (f"F now, {f_now.shape[0]} x {f_now.shape[1]}  (inputs | h)", f_img),
    ):
        canvas.paste(_label(label, size), (x0, y))
        y += line
        canvas.paste(Image.fromarray(img), (x0, y))
        if img is f_img:    # where the feed-forward inputs end and the recurrent h begins
            split = x0 + (f_now.shape[1] - hidden) * sy
            draw.line([(split, y), (split, y + img.shape[0] - 1)], fill=_FG)
        y += img.shape[0]
    return np.asarray(canvas)


class Recorder:
    """An observer of :func:`mstpn.host.play.play` that writes the recording.

    Parameters
    ----------
    path : str or Path
        ``.mp4`` or ``.gif``.
    every : int, optional
        Record every ``every``-th step (default 1 for .mp4, 2 for .gif).
    fps : float, optional
        Frames per second of the file (default: Atari real time for the recorded steps).
    frameskip : int
        The env's frame skip, for the default fps.

    Raises
    ------
    RecordError
        For an unknown suffix, or .mp4 without the imageio-ffmpeg package.
    """

    def __init__(self, path: str | os.PathLike, every: int | None = None,
                 fps: float | None = None, frameskip: int = 4):
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in FORMATS:
            raise RecordError(f"{self.path}: record to a .mp4 or a .gif, not "
                              f"'{self.path.suffix or '(no suffix)'}'")
        if not self.path.parent.exists():
            raise RecordError(f"{self.path}: folder {self.path.parent} does not exist")
        self.every = every or (1 if self.kind == ".mp4" else 2)
        if self.every < 1:
            raise RecordError(f"--record-every must be at least 1, not {self.every}")
        self.fps = fps or real_time_decisions_per_s(frameskip) / self.every
        self.scale = 2 if self.kind == ".mp4" else 1
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp{self.kind}")
        self.frames: list[Image.Image] = []
        self.writer = None
        self.written = 0
        self.dropped = 0
        if self.kind == ".mp4":
            try:
                import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary for imageio)
            except ImportError:
                raise RecordError("recording .mp4 needs the imageio-ffmpeg package "
                                  "(uv sync); or record a .gif") from None
        self._h = None
        self._norms = None
        self._norm_max = 1.0
        self._episode = -1

    def __call__(self, info: StepInfo) -> None:
        if info.model is None:
            raise RecordError("recording needs the golden model's F (run with --check)")
        f = info.model.f[0].astype(np.float64)
        hidden = f.shape[0]
        if info.episode != self._episode:
            self._episode = info.episode
            self._h = np.zeros((hidden, HISTORY))
            self._norms = np.zeros((hidden, HISTORY))
        # the history advances every step, recorded or not, so its time axis is in steps
        self._h = np.roll(self._h, -1, axis=1)
        self._h[:, -1] = info.model.h[0]
        norms = np.sqrt((f * f).sum(axis=1))
        self._norms = np.roll(self._norms, -1, axis=1)
        self._norms[:, -1] = norms
        self._norm_max = max(self._norm_max, float(norms.max()))
        if (info.step - 1) % self.every:
            return
        ours, theirs = info.points
        title = f"episode {info.episode + 1}  step {info.step:,}  score {ours}:{theirs}"
        game = info.extra.get("rgb")
        frame = compose(info.raw if game is None else game, self._h, self._norms,
                        info.model.f[0], self._norm_max, title, self.scale)
        self._write(frame)

    def _write(self, frame: np.ndarray) -> None:
        if self.kind == ".gif":
            if len(self.frames) >= GIF_MAX_FRAMES:
                self.dropped += 1
                return
            # paletted at once: a quarter of the memory of RGB
            self.frames.append(Image.fromarray(frame).quantize(colors=128))
            self.written += 1
            return
        if self.writer is None:
            import imageio.v2 as imageio

            try:
                self.writer = imageio.get_writer(self.tmp, format="FFMPEG", mode="I",
                                                 fps=self.fps, codec="libx264", quality=7,
                                                 macro_block_size=16)
            except Exception as exc:   # imageio raises plain errors for a missing ffmpeg
                raise RecordError(f"cannot write {self.path}: {exc}") from None
        self.writer.append_data(frame)
        self.written += 1

    def close(self) -> Path | None:
        """Finish the file (atomically: a temporary name renamed); return its path, or None if
        nothing was recorded."""
        try:
            if self.kind == ".gif":
                if not self.frames:
                    return None
                self.frames[0].save(self.tmp, format="GIF", save_all=True,
                                    append_images=self.frames[1:],
                                    duration=int(round(1000 / self.fps)), loop=0)
                self.frames = []
            else:
                if self.writer is None:
                    return None
                self.writer.close()
                self.writer = None
            os.replace(self.tmp, self.path)
            return self.path
        finally:
            if self.tmp.exists():
                self.tmp.unlink()

    def abort(self) -> None:
        """Drop a partial recording."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:   # noqa: BLE001  (the partial file is removed either way)
                pass
            self.writer = None
        self.frames = []
        if self.tmp.exists():
            self.tmp.unlink()

    def describe(self) -> str:
        """A line for the summary."""
        note = (f"; {self.dropped} later frames dropped (a GIF keeps {GIF_MAX_FRAMES}: use .mp4 "
                f"for a whole game)" if self.dropped else "")
        return (f"recorded {self.written:,} frames (every {self.every} step(s), {self.fps:g} "
                f"fps) to {self.path}{note}")
