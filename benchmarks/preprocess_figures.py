"""Figures of Pong frame preprocessing for ``docs/preprocessing.md``.

Plays seeded ALE Pong (no sticky actions, random NOOP/UP/DOWN), picks a few frames where the ball
is on screen (mid-field, near each paddle, at a wall), and writes one PNG per frame to
``docs/figures/``: the raw RGB frame with the crop drawn on it, beside the 80x40 binary input the
board receives (``preprocess`` then ``unpack_bits``), each input pixel drawn as a block with the
same footprint as the 2x4 raw pixels it pools.

Run with ``uv run python benchmarks/preprocess_figures.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ale_py
import gymnasium
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mstpn.spec.preprocess import DEFAULT_GEOMETRY, preprocess, unpack_bits

OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"
SCALE = 3  # screen pixels per raw frame pixel
GAP = 24
LABEL = 18
G = DEFAULT_GEOMETRY

# Ball column = ram[49] - 49, a ball row = ram[54] - 12 (measured; see tests/test_preprocess.py).
Picker = Callable[[int, int], bool]
WANTED: dict[str, Picker] = {
    "midfield": lambda x, y: 70 <= x <= 90 and 80 <= y <= 150,
    "near_our_paddle": lambda x, y: 135 <= x <= 139,
    "near_opponent_paddle": lambda x, y: 20 <= x <= 23,
    "at_a_wall": lambda x, y: y <= G.top + 3 or y >= G.bottom - 3,
}


def find_frames(seed: int = 0, steps: int = 3000) -> dict[str, tuple[np.ndarray, int, int]]:
    """Step seeded Pong until each wanted situation has been seen; return (rgb, x, y) each."""
    gymnasium.register_envs(ale_py)
    env = gymnasium.make("ALE/Pong-v5", obs_type="rgb", repeat_action_probability=0.0)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    found: dict[str, tuple[np.ndarray, int, int]] = {}
    try:
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(int(rng.choice([0, 2, 3])))
            if terminated or truncated:
                env.reset()
                continue
            ram = env.unwrapped.ale.getRAM()
            if ram[49] == 0 or ram[54] == 0:
                continue
            x, y = int(ram[49]) - 49, int(ram[54]) - 12
            for name, wanted in WANTED.items():
                if name not in found and wanted(x, y):
                    found[name] = (obs.copy(), x, y)
            if len(found) == len(WANTED):
                break
    finally:
        env.close()
    return found


def render(rgb: np.ndarray) -> Image.Image:
    """The raw frame with its crop, beside the binary input, as one image."""
    bits = unpack_bits(preprocess(rgb))  # exactly what the board gets
    h, w = rgb.shape[:2]
    raw = Image.fromarray(rgb).resize((w * SCALE, h * SCALE), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(raw)
    draw.rectangle(
        (0, G.top * SCALE - 1, w * SCALE - 1, G.bottom * SCALE), outline=(255, 0, 255), width=2
    )

    # Each input pixel covers pool_rows x pool_cols raw pixels: draw it with that footprint, on a
    # faint grid, aligned with the crop on the left.
    cell_h, cell_w = G.pool_rows * SCALE, G.pool_cols * SCALE
    grid = np.full((G.rows * cell_h, G.cols * cell_w), 40, dtype=np.uint8)
    block = np.kron(bits, np.ones((cell_h, cell_w), dtype=bool))
    grid[block] = 255
    grid[::cell_h, :] = np.where(grid[::cell_h, :] == 255, 200, 70)
    grid[:, ::cell_w] = np.where(grid[:, ::cell_w] == 255, 200, 70)
    binary = Image.fromarray(grid).convert("RGB")

    width = raw.width + GAP + binary.width
    canvas = Image.new("RGB", (width, raw.height + LABEL), (255, 255, 255))
    canvas.paste(raw, (0, LABEL))
    canvas.paste(binary, (raw.width + GAP, LABEL + G.top * SCALE))
    font = ImageFont.load_default()
    text = ImageDraw.Draw(canvas)
    text.text((2, 3), f"ALE RGB 210x160, crop rows {G.top}..{G.bottom - 1}", (0, 0, 0), font)
    text.text(
        (raw.width + GAP + 2, 3),
        f"input {G.rows}x{G.cols}, {G.pool_rows}x{G.pool_cols} max-pool",
        (0, 0, 0),
        font,
    )
    return canvas


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    frames = find_frames()
    missing = sorted(set(WANTED) - set(frames))
    if missing:
        raise SystemExit(f"situations not seen: {', '.join(missing)}")
    for name, (rgb, x, y) in frames.items():
        bits = unpack_bits(preprocess(rgb))
        r, c = (min(max(y, G.top), G.bottom - 1) - G.top) // G.pool_rows, x // G.pool_cols
        ball = bool(bits[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any())
        left = bool(bits[:, 16 // G.pool_cols].any())  # the opponent's paddle, columns 16..19
        right = bool(bits[:, 140 // G.pool_cols].any())  # ours, columns 140..143
        path = OUT / f"preprocess_{name}.png"
        render(rgb).save(path, optimize=True)
        print(
            f"{path.relative_to(OUT.parent.parent)}: ball at x={x} y={y}, lit {int(bits.sum())}, "
            f"ball {'kept' if ball else 'LOST'}, paddles left {left} right {right}, "
            f"{path.stat().st_size / 1024:.1f} KiB"
        )


if __name__ == "__main__":
    main()
