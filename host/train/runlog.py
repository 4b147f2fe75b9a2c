"""Run bookkeeping for training: atomic checkpoints, the JSONL log and the PNG learning curve.

The learning curve is drawn with Pillow (a core dependency), so the ``train`` extra needs only
torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["JsonlLog", "read_log", "draw_curve"]


class JsonlLog:
    """Append-only JSON-lines log; each record is flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict) -> None:
        """Append one record."""
        self._f.write(json.dumps(record, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()


def read_log(path: Path) -> list[dict]:
    """Every complete record of a JSONL log (a torn last line is skipped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _rolling(values: np.ndarray, k: int) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = values[max(0, i - k + 1) : i + 1].mean()
    return out


def draw_curve(log_path: Path, png_path: Path, title: str = "m-STPN Pong") -> bool:
    """Draw score against frames and against wall time from a run's log; False if no episode.

    Student-driven episodes are drawn as dots with their rolling mean (10 episodes) as a line;
    teacher-driven ones (DAgger) as grey dots.
    """
    from PIL import Image, ImageDraw

    episodes = [r for r in read_log(log_path) if r.get("kind") == "episode"]
    if not episodes:
        return False
    width, height, pad = 1100, 420, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, 8), f"{title}: score per episode (student: blue, rolling mean 10: red; "
              "teacher-driven: grey)", fill="black")
    panels = (("frames", "emulated frames"), ("wall_s", "wall time (s)"))
    pw = (width - 3 * pad) // 2
    for k, (key, label) in enumerate(panels):
        x0, y0, x1, y1 = pad + k * (pw + pad), pad, pad + k * (pw + pad) + pw, height - pad
        draw.rectangle((x0, y0, x1, y1), outline="black")
        xs = np.array([r[key] for r in episodes], dtype=np.float64)
        xmax = max(float(xs.max()), 1.0)

        def px(x: float, y: float, x0=x0, y0=y0, x1=x1, y1=y1, xmax=xmax) -> tuple[float, float]:
            return (x0 + (x1 - x0) * x / xmax, y1 - (y1 - y0) * (y + 21.0) / 42.0)

        for yv in (-21, -10, 0, 10, 21):
            a, b = px(0, yv), px(xmax, yv)
            draw.line((a, b), fill=(220, 220, 220))
            draw.text((x0 - 28, a[1] - 6), f"{yv:+d}", fill="black")
        draw.text((x0, y1 + 6), "0", fill="black")
        draw.text((x1 - 80, y1 + 6), f"{xmax:.3g}", fill="black")
        draw.text(((x0 + x1) // 2 - 40, y1 + 22), label, fill="black")
        student = [r for r in episodes if r.get("driver") == "student"]
        for r in episodes:
            if r.get("driver") != "student":
                cx, cy = px(r[key], r["score"])
                draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(170, 170, 170))
        if student:
            sx = np.array([r[key] for r in student], dtype=np.float64)
            sy = np.array([r["score"] for r in student], dtype=np.float64)
            for x, y in zip(sx, sy, strict=True):
                cx, cy = px(x, y)
                draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(60, 90, 220))
            mean = _rolling(sy, 10)
            pts = [px(x, y) for x, y in zip(sx, mean, strict=True)]
            if len(pts) > 1:
                draw.line(pts, fill=(220, 30, 30), width=2)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, png_path)
    return True
