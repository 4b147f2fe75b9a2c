"""The live view of ``mstpn play``: the game, the score, decisions/s, the link round trip and
the episode's progress, while it plays.

Three views take :class:`~mstpn.host.play.StepInfo` after each step and redraw at most
``fps`` times a second, so drawing never costs the loop more than a few percent:

- :class:`TerminalView` draws the play area in the terminal with half-block characters (two
  pixel rows per text line), sized to the terminal, plus a status block;
- :class:`WindowView` shows the colour frame in a Tk window where a display exists;
- :class:`LineView` prints one progress line every few seconds (stdout is not a terminal).

:func:`make_view` picks one and says why when it has to fall back.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from typing import TextIO

import numpy as np

from ..spec.preprocess import BACKGROUND_GRAY, DEFAULT_GEOMETRY
from ..spec.presets import ALE_ACTIONS
from .play import POINTS_TO_WIN, StepInfo, _half_blocks

__all__ = ["TerminalView", "WindowView", "LineView", "make_view", "NoDisplay"]

_ACTION_NAMES = {0: "NOOP", 2: "UP", 3: "DOWN"}


class NoDisplay(Exception):
    """A window was asked for where there is no display."""


class _Rates:
    """Decisions/s and round-trip times over the last few seconds."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self.times: deque[float] = deque()
        self.latencies: deque[float] = deque()
        self.last_due = 0.0

    def add(self, latency: float) -> None:
        now = time.perf_counter()
        self.times.append(now)
        self.latencies.append(latency)
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
            self.latencies.popleft()

    def due(self, latency: float, period: float) -> bool:
        """Record one decision; True when ``period`` seconds have passed since the last True."""
        self.add(latency)
        now = self.times[-1]
        if now - self.last_due < period:
            return False
        self.last_due = now
        return True

    def rate(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0

    def rtt_ms(self) -> float:
        return float(np.median(self.latencies)) * 1e3 if self.latencies else 0.0


def _progress(info: StepInfo, width: int = 30) -> tuple[str, str]:
    """(bar, words): steps of --max-steps, else the leading side's points of 21."""
    if info.max_steps:
        done = info.step / info.max_steps
        words = f"step {info.step:,}/{info.max_steps:,}"
    else:
        done = max(info.points) / POINTS_TO_WIN
        words = f"step {info.step:,}, first to {POINTS_TO_WIN} points"
    fill = int(round(min(done, 1.0) * width))
    return "[" + "#" * fill + "." * (width - fill) + "]", words


def status_lines(info: StepInfo, rates: _Rates, backend: str) -> list[str]:
    """The status block under the game."""
    bar, words = _progress(info)
    ours, theirs = info.points
    return [
        f"episode {info.episode + 1}/{info.episodes}   agent {ours:2d} : {theirs:2d} opponent"
        f"   action {_ACTION_NAMES.get(ALE_ACTIONS[info.action], info.action):4s}",
        f"{rates.rate():6.1f} decisions/s   round trip {rates.rtt_ms():7.2f} ms ({backend})",
        f"{bar} {words}",
    ]


class TerminalView:
    """The game in the terminal, redrawn in place with ANSI cursor moves."""

    def __init__(self, backend: str, out: TextIO | None = None, fps: float = 10.0):
        self.backend = backend
        self.out = out or sys.stdout
        self.period = 1.0 / fps
        self.rates = _Rates()
        self.drawn = False

    def _picture(self, raw: np.ndarray) -> list[str]:
        cols, lines = shutil.get_terminal_size((80, 24))
        g = DEFAULT_GEOMETRY
        lit = raw[g.top:g.bottom] != BACKGROUND_GRAY          # the play area, 160 x 160
        # OR-pool by the smallest factor that fits (the 2-px ball survives any of them)
        for factor in (2, 4, 8):
            if lit.shape[1] // factor <= cols - 2 and lit.shape[0] // factor // 2 + 5 <= lines:
                break
        h, w = lit.shape[0] // factor, lit.shape[1] // factor
        pooled = lit[:h * factor, :w * factor].reshape(h, factor, w, factor).any(axis=(1, 3))
        rows = _half_blocks(pooled)
        border = "+" + "-" * w + "+"
        return [border] + ["|" + r + "|" for r in rows] + [border]

    def __call__(self, info: StepInfo) -> None:
        if not self.rates.due(info.latency_s, self.period):
            return
        text = self._picture(info.raw) + status_lines(info, self.rates, self.backend)
        # home the cursor, draw, clear to the end of each line: no flicker, no scroll-back spam
        self.out.write(("\x1b[H" if self.drawn else "\x1b[2J\x1b[H")
                       + "\n".join(line + "\x1b[K" for line in text) + "\x1b[J\n")
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        """Leave the last picture on screen and move below it."""
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


class LineView:
    """One progress line every ``every_s`` seconds (for logs and pipes)."""

    def __init__(self, backend: str, out: TextIO | None = None, every_s: float = 5.0):
        self.backend = backend
        self.out = out or sys.stderr
        self.every_s = every_s
        self.rates = _Rates()
        self.last: float | None = None

    def __call__(self, info: StepInfo) -> None:
        self.rates.add(info.latency_s)
        now = time.perf_counter()
        if self.last is None:
            self.last = now
        if now - self.last < self.every_s:
            return
        self.last = now
        self.out.write("  ".join(s.strip() for s in status_lines(info, self.rates,
                                                                  self.backend)) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class WindowView:
    """The game's frame in a Tk window, with the status block as its title and a label.

    Raises
    ------
    NoDisplay
        If there is no display (``$DISPLAY`` unset, or Tk cannot open it) or no Tk.
    """

    def __init__(self, backend: str, fps: float = 15.0, scale: int = 3):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            raise NoDisplay("no display ($DISPLAY is not set)")
        try:
            import tkinter
        except ImportError as exc:
            raise NoDisplay(f"this Python has no Tk ({exc})") from None
        try:
            self.root = tkinter.Tk()
        except tkinter.TclError as exc:
            raise NoDisplay(f"cannot open the display ({exc})") from None
        self.tk = tkinter
        self.root.title("mstpn play")
        self.scale = scale
        self.canvas = tkinter.Label(self.root)
        self.canvas.pack()
        self.label = tkinter.Label(self.root, font=("TkFixedFont", 11), justify="left")
        self.label.pack(anchor="w")
        self.backend = backend
        self.period = 1.0 / fps
        self.rates = _Rates()
        self.photo = None

    def __call__(self, info: StepInfo) -> None:
        if not self.rates.due(info.latency_s, self.period):
            return
        frame = info.extra.get("rgb")
        if frame is None:
            frame = np.repeat(info.raw[..., None], 3, axis=-1)
        frame = np.repeat(np.repeat(frame, self.scale, axis=0), self.scale, axis=1)
        h, w = frame.shape[:2]
        ppm = f"P6 {w} {h} 255 ".encode() + np.ascontiguousarray(frame, np.uint8).tobytes()
        self.photo = self.tk.PhotoImage(data=ppm, format="PPM")
        self.canvas.configure(image=self.photo)
        self.label.configure(text="\n".join(status_lines(info, self.rates, self.backend)))
        self.root.update()

    def close(self) -> None:
        try:
            self.root.destroy()
        except self.tk.TclError:
            pass


def make_view(kind: str, backend: str, say=print):
    """The view for ``--view``: ``"terminal"``, ``"window"`` (falls back to the terminal with a
    note when there is no display), or ``"none"``; a :class:`LineView` when stdout is not a
    terminal."""
    if kind == "none":
        return None
    if kind == "window":
        try:
            return WindowView(backend)
        except NoDisplay as exc:
            say(f"note: no window for the live view: {exc}; using the terminal view")
    if not sys.stdout.isatty():
        return LineView(backend)
    return TerminalView(backend)
