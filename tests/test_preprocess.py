"""Tests of the one definition of Pong frame preprocessing, :mod:`mstpn.spec.preprocess`."""

from __future__ import annotations

import numpy as np
import pytest

from mstpn.spec.preprocess import (
    BACKGROUND_GRAY,
    BACKGROUND_RGB,
    DEFAULT_GEOMETRY,
    FRAME_HEIGHT,
    binarize,
    pack_bits,
    preprocess,
    unpack_bits,
)
from mstpn.spec.presets import FrameGeometry

G = DEFAULT_GEOMETRY
# Measured in the emulator: the ball's left column is ram[49] - 49 and its 4 rows always include
# row ram[54] - 12. The opponent's (orange) paddle spans columns 16..19, ours (green) 140..143.
LEFT_PADDLE_COLS = slice(16 // G.pool_cols, 20 // G.pool_cols)
RIGHT_PADDLE_COLS = slice(140 // G.pool_cols, 144 // G.pool_cols)


def blank_gray(*batch: int) -> np.ndarray:
    return np.full((*batch, FRAME_HEIGHT, G.width), BACKGROUND_GRAY, dtype=np.uint8)


def blank_rgb(*batch: int) -> np.ndarray:
    return np.broadcast_to(
        np.asarray(BACKGROUND_RGB, dtype=np.uint8), (*batch, FRAME_HEIGHT, G.width, 3)
    ).copy()


# --- geometry and packing ----------------------------------------------------------------------


def test_default_geometry_is_80x40_in_400_bytes():
    assert (G.rows, G.cols, G.pixels, G.packed_bytes) == (80, 40, 3200, 400)
    out = preprocess(blank_gray())
    assert out.shape == (400,) and out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize("geometry", [G, FrameGeometry(pool_rows=32, pool_cols=32)])
def test_pack_unpack_round_trip(geometry):
    rng = np.random.default_rng(1234)
    bits = rng.random((5, 3, geometry.rows, geometry.cols)) < 0.3
    packed = pack_bits(bits)
    assert packed.shape == (5, 3, geometry.packed_bytes) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(packed, geometry), bits)
    # Integer 0/1 input packs the same as bool.
    np.testing.assert_array_equal(pack_bits(bits.astype(np.uint8)), packed)


def test_padding_bits_are_zero_and_checked():
    geometry = FrameGeometry(pool_rows=32, pool_cols=32)  # 5x5 = 25 bits in 4 bytes
    assert geometry.pixels == 25 and geometry.packed_bytes == 4
    packed = pack_bits(np.ones((geometry.rows, geometry.cols), dtype=bool))
    np.testing.assert_array_equal(packed, [0xFF, 0xFF, 0xFF, 0x01])
    packed[-1] |= 0x80
    with pytest.raises(ValueError, match="padding bits"):
        unpack_bits(packed, geometry)


@pytest.mark.parametrize(
    ("row", "col", "byte", "bit"),
    [(0, 0, 0, 0), (0, 7, 0, 7), (0, 8, 1, 0), (3, 5, 15, 5), (1, 0, 5, 0), (79, 39, 399, 7)],
)
def test_bit_order_of_one_lit_pixel(row, col, byte, bit):
    # p = row * 40 + col goes to byte p // 8, bit p % 8 (LSB first).
    assert row * G.cols + col == 8 * byte + bit
    for dy, dx in [(0, 0), (1, 3)]:  # any raw pixel of the pooling window
        frame = blank_gray()
        frame[G.top + G.pool_rows * row + dy, G.pool_cols * col + dx] = 236
        packed = preprocess(frame)
        expected = np.zeros(G.packed_bytes, dtype=np.uint8)
        expected[byte] = 1 << bit
        np.testing.assert_array_equal(packed, expected)
        bits = unpack_bits(packed)
        assert bits[row, col] and bits.sum() == 1


def test_outside_the_play_area_is_ignored():
    frame = blank_gray()
    frame[: G.top] = 236  # score and top wall
    frame[G.bottom :] = 236  # bottom wall
    assert not binarize(frame).any()
    frame[G.top, 0] = 0
    frame[G.bottom - 1, G.width - 1] = 255
    bits = binarize(frame)
    assert bits[0, 0] and bits[-1, -1] and bits.sum() == 2


# --- pooling keeps the ball --------------------------------------------------------------------


def _check_balls(ys: np.ndarray, xs: np.ndarray) -> None:
    """Put a 4-row x 2-column ball at each (top row, left column) pair and check the pooling."""
    frames = blank_gray(len(ys))
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        frames[i, y : y + 4, x : x + 2] = 236
    bits = binarize(frames)
    rows, cols = np.arange(G.rows), np.arange(G.cols)
    row_hit = (rows >= ((ys - G.top) // G.pool_rows)[:, None]) & (
        rows <= ((ys + 3 - G.top) // G.pool_rows)[:, None]
    )
    col_hit = (cols >= (xs // G.pool_cols)[:, None]) & (cols <= ((xs + 1) // G.pool_cols)[:, None])
    expected = row_hit[:, :, None] & col_hit[:, None, :]
    np.testing.assert_array_equal(bits, expected)
    assert bits.reshape(len(ys), -1).sum(axis=1).min() >= 2


def test_max_pool_keeps_a_4x2_ball_everywhere():
    all_ys = np.arange(G.top, G.bottom - 3)  # every top row that keeps the ball in the crop
    all_xs = np.arange(G.width - 1)  # every left column
    # Every row with left columns covering each pooling phase and both edges ...
    some_xs = np.r_[0:9, 76:81, 150:159]
    ys, xs = np.meshgrid(all_ys, some_xs, indexing="ij")
    _check_balls(ys.ravel(), xs.ravel())
    # ... and every column with top rows covering each phase and both edges.
    some_ys = np.r_[G.top : G.top + 5, 110:113, G.bottom - 7 : G.bottom - 3]
    ys, xs = np.meshgrid(some_ys, all_xs, indexing="ij")
    _check_balls(ys.ravel(), xs.ravel())


def test_gray_and_rgb_synthetic_agree():
    rng = np.random.default_rng(7)
    gray, rgb = blank_gray(4), blank_rgb(4)
    mask = rng.random(gray.shape) < 0.01
    gray[mask] = 147
    rgb[mask] = (92, 186, 92)
    # A colour differing from the background in one channel only is lit too.
    rgb[0, 100, 50] = (144, 72, 18)
    gray[0, 100, 50] = 88
    np.testing.assert_array_equal(binarize(gray), binarize(rgb))


def test_batch_dims():
    rng = np.random.default_rng(3)
    frames = blank_gray(2, 3, 4)
    frames[rng.random(frames.shape) < 0.002] = 236
    bits = binarize(frames)
    packed = preprocess(frames)
    assert bits.shape == (2, 3, 4, G.rows, G.cols) and bits.dtype == np.bool_
    assert packed.shape == (2, 3, 4, G.packed_bytes)
    for idx in np.ndindex(2, 3, 4):
        np.testing.assert_array_equal(bits[idx], binarize(frames[idx]))
        np.testing.assert_array_equal(packed[idx], preprocess(frames[idx]))
    # A non-contiguous view works too.
    view = frames[:, ::2]
    np.testing.assert_array_equal(binarize(view), bits[:, ::2])


@pytest.mark.parametrize(
    "geometry",
    [G, FrameGeometry(pool_rows=1, pool_cols=1), FrameGeometry(top=30, bottom=198, pool_rows=4,
                                                             pool_cols=2)],
    ids=["default", "1x1", "4x2"],
)
def test_pooling_is_any_pixel_of_the_window(geometry):
    """The pooling (ORs of strided slices, for speed) against its plain definition, on random
    sparse and dense batches and one frame alone."""
    rng = np.random.default_rng(11)
    for density in (0.002, 0.05, 0.5):
        frames = blank_gray(3, 5)
        lit = rng.random(frames.shape) < density
        frames[lit] = rng.integers(0, 256, int(lit.sum()), dtype=np.uint8)
        area = frames[..., geometry.top : geometry.bottom, :] != BACKGROUND_GRAY
        plain = area.reshape(3, 5, geometry.rows, geometry.pool_rows, geometry.cols,
                             geometry.pool_cols).any(axis=(-3, -1))
        bits = binarize(frames, geometry)
        assert 0 < plain.sum() < plain.size or density == 0.5
        np.testing.assert_array_equal(bits, plain)
        np.testing.assert_array_equal(binarize(frames[1, 2], geometry), plain[1, 2])


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((210, 161), np.uint8),
        np.zeros((160, 160), np.uint8),
        np.zeros((210, 160, 4), np.uint8),
        np.zeros((210,), np.uint8),
        np.zeros((160, 210), np.uint8),
    ],
    ids=["wide", "cropped", "rgba", "1d", "transposed"],
)
def test_bad_frame_shape(frame):
    with pytest.raises(ValueError, match=r"\(\.\.\., 210, 160\).*got shape"):
        binarize(frame)
    with pytest.raises(ValueError, match="got shape"):
        preprocess(frame)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.int64, np.bool_])
@pytest.mark.parametrize("shape", [(210, 160), (210, 160, 3)])
def test_bad_frame_dtype(dtype, shape):
    with pytest.raises(ValueError, match=r"uint8.*got dtype"):
        binarize(np.zeros(shape, dtype=dtype))


def test_bad_packed_and_bits():
    with pytest.raises(ValueError, match=r"\(\.\.\., 400\).*got shape"):
        unpack_bits(np.zeros(399, np.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 400\).*got shape"):
        unpack_bits(np.zeros((400, 2), np.uint8))
    with pytest.raises(ValueError, match="got dtype"):
        unpack_bits(np.zeros(400, np.int32))
    with pytest.raises(ValueError, match="got shape"):
        pack_bits(np.zeros(3200, bool))
    with pytest.raises(ValueError, match="got dtype"):
        pack_bits(np.full((80, 40), 2, np.uint8))
    with pytest.raises(ValueError, match="got dtype"):
        pack_bits(np.zeros((80, 40), np.float32))


# --- real ALE Pong frames ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pong_frames():
    """Lock-stepped grayscale and RGB episodes: (gray, rgb, ram) per step, 300 steps."""
    ale_py = pytest.importorskip("ale_py")
    gymnasium = pytest.importorskip("gymnasium")
    gymnasium.register_envs(ale_py)
    envs = [
        gymnasium.make("ALE/Pong-v5", obs_type=kind, repeat_action_probability=0.0)
        for kind in ("grayscale", "rgb")
    ]
    obs = [env.reset(seed=0)[0] for env in envs]
    rng = np.random.default_rng(0)
    steps = []
    try:
        for _ in range(300):
            action = int(rng.choice([0, 2, 3]))
            obs = [env.step(action)[0] for env in envs]
            rams = [env.unwrapped.ale.getRAM().copy() for env in envs]
            np.testing.assert_array_equal(rams[0], rams[1])  # the two runs stay in step
            steps.append((obs[0], obs[1], rams[0]))
    finally:
        for env in envs:
            env.close()
    return steps


def test_real_frames_background(pong_frames):
    for gray, rgb, _ in pong_frames[::10]:
        assert gray.shape == (210, 160) and rgb.shape == (210, 160, 3)
        bg = gray[G.top : G.bottom] == BACKGROUND_GRAY
        assert bg.mean() > 0.98
        np.testing.assert_array_equal(np.all(rgb[G.top : G.bottom] == BACKGROUND_RGB, axis=-1), bg)


def test_real_frames_gray_equals_rgb(pong_frames):
    gray = np.stack([g for g, _, _ in pong_frames])
    rgb = np.stack([c for _, c, _ in pong_frames])
    np.testing.assert_array_equal(binarize(gray), binarize(rgb))
    np.testing.assert_array_equal(preprocess(gray), preprocess(rgb))


def test_real_frames_ball_and_paddles(pong_frames):
    checked = 0
    for gray, rgb, ram in pong_frames:
        if ram[54] == 0 or ram[49] == 0:  # no ball on screen
            continue
        x, y = int(ram[49]) - 49, int(ram[54]) - 12  # ball's left column; a row it covers
        if not (0 <= x < G.width - 1 and G.top <= y < G.bottom):
            continue
        for frame in (gray, rgb):
            bits = unpack_bits(preprocess(frame))
            r, c = (y - G.top) // G.pool_rows, x // G.pool_cols
            near = bits[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            assert near.any(), f"no lit pixel near the ball at pooled ({r}, {c})"
            assert bits[:, LEFT_PADDLE_COLS].sum() >= 2, "opponent's paddle missing"
            assert bits[:, RIGHT_PADDLE_COLS].sum() >= 2, "our paddle missing"
            if 24 <= x < 136:  # ball away from the paddles: it is the only thing in between
                between = bits[:, 24 // G.pool_cols : 136 // G.pool_cols]
                assert 1 <= between.sum() <= 6 and between[max(r - 1, 0) : r + 2].any()
        checked += 1
    assert checked >= 50, f"only {checked} frames with the ball on screen"
