"""Conformance vectors: seeded (image, frames, expected outputs) sets from the golden model.

``mstpn vectors`` writes them; the Amaranth testbenches, the cocotb tests and the board selftest
replay them. One set is a folder::

    <out>/<preset>/<set>/image.img     the parameter image (mstpn.model.image format)
    <out>/<preset>/<set>/vectors.npz   frames and expected outputs, one row per step
    <out>/<preset>/manifest.json       the sets, what each covers, and the format hash

``vectors.npz`` holds ``frames`` (T, bytes) uint8 packed frames, ``reset`` (T,) bool (an episode
reset comes before this step), ``seed`` (T,) int64 (SET_SEED before this step, or -1), ``x``
(T, features) int8, ``h`` (T, hidden) int8, ``logits`` (T, actions) int32, ``action`` (T,) uint8,
``f_crc`` (T,) uint32 (CRC-32 of the stored F after the step), ``counters`` (T, 5) int64
(steps, macs, f_writes, potentiation, depression after the step, cumulative) and ``final_f``
(hidden, inputs) int8.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec.device import DeviceModel
from ..spec.preprocess import pack_bits
from ..spec.presets import Preset, get_preset
from ..spec.qformat import DECAY, PLASTICITY, WEIGHT, format_hash
from .atomic import atomic_write_bytes
from .golden import COUNTER_NAMES, GoldenModel
from .image import ParamImage

__all__ = ["VectorSet", "SETS", "make_set", "write_vectors", "load_vectors", "replay"]


@dataclass
class VectorSet:
    """One conformance set: the image, the inputs, and what the golden model produced."""

    name: str
    description: str
    image: ParamImage
    frames: np.ndarray
    reset: np.ndarray
    seed: np.ndarray
    expected: dict[str, np.ndarray]

    @property
    def steps(self) -> int:
        """Steps in the set."""
        return len(self.frames)


# --- inputs ------------------------------------------------------------------------------------


def _random_frames(preset: Preset, rng: np.random.Generator, steps: int, density: float):
    return rng.random((steps, preset.frame.rows, preset.frame.cols)) < density


def _pong_frames(preset: Preset, rng: np.random.Generator, steps: int) -> np.ndarray:
    """Synthetic Pong at the input resolution: a bouncing 2x1 ball and two 8x1 paddles."""
    rows, cols = preset.frame.rows, preset.frame.cols
    frames = np.zeros((steps, rows, cols), dtype=bool)
    by, bx = rng.uniform(10, rows - 10), rng.uniform(8, cols - 8)
    vy, vx = rng.choice([-1.5, 1.5]), rng.choice([-0.6, 0.6])
    ours, theirs = rows / 2, rows / 2
    for t in range(steps):
        by, bx = by + vy, bx + vx
        if not 0 <= by <= rows - 2:
            vy, by = -vy, min(max(by, 0), rows - 2)
        if not 4 <= bx <= cols - 5:
            vx, bx = -vx, min(max(bx, 4), cols - 5)
        ours += np.clip(by - ours - 4, -3, 3) + rng.normal(0, 0.5)
        theirs += np.clip(by - theirs - 4, -2, 2)
        for col, top in ((cols - 5, ours), (4, theirs)):
            top = int(np.clip(top, 0, rows - 8))
            frames[t, top:top + 8, col] = True
        frames[t, int(by):int(by) + 2, int(bx)] = True
    return frames


# --- the sets ----------------------------------------------------------------------------------


def _image(preset: Preset, seed: int, device: DeviceModel | None = None, **changes) -> ParamImage:
    image = ParamImage.random(preset, seed=seed, device=device or DeviceModel())
    return image.with_arrays(**changes) if changes else image


def _edge_image(preset: Preset, seed: int, kind: str) -> ParamImage:
    rng = np.random.default_rng(seed + 7)
    image = ParamImage.random(preset, seed=seed)
    shape = image.arrays["w"].shape
    if kind == "saturation":
        return image.with_arrays(
            w=rng.choice([WEIGHT.lo, WEIGHT.hi, -100, 100], size=shape),
            plasticity=rng.choice([PLASTICITY.lo, PLASTICITY.hi], size=shape),
            decay=np.full(shape, DECAY.hi),
        )
    if kind == "decay_extremes":
        return image.with_arrays(decay=rng.choice([DECAY.lo, DECAY.hi], size=shape))
    if kind == "negative_gamma":
        return image.with_arrays(plasticity=rng.integers(PLASTICITY.lo, 0, size=shape))
    raise ValueError(kind)


#: name -> (description, default steps, image factory, frame factory, resets at, seeds at)
SETS: dict[str, tuple] = {
    "random": ("random image, sparse random frames, an episode reset midway", 300,
               lambda p, s: _image(p, s), lambda p, r, n: _random_frames(p, r, n, 0.01), (150,)),
    "pong_like": ("random image, synthetic bouncing ball and paddles", 300,
                  lambda p, s: _image(p, s), lambda p, r, n: _pong_frames(p, r, n), ()),
    "saturation": ("W at the extremes, |gamma| maximal, lambda maximal: F and G saturate", 250,
                   lambda p, s: _edge_image(p, s, "saturation"),
                   lambda p, r, n: _random_frames(p, r, n, 0.05), ()),
    "decay_extremes": ("lambda is 0 or 255/256 per synapse", 250,
                       lambda p, s: _edge_image(p, s, "decay_extremes"),
                       lambda p, r, n: _random_frames(p, r, n, 0.02), ()),
    "negative_gamma": ("every gamma negative (anti-Hebbian)", 250,
                       lambda p, s: _edge_image(p, s, "negative_gamma"),
                       lambda p, r, n: _random_frames(p, r, n, 0.02), ()),
    "all_ones": ("every pixel lit, every step", 200,
                 lambda p, s: _image(p, s), lambda p, r, n: np.ones(
                     (n, p.frame.rows, p.frame.cols), dtype=bool), ()),
    "empty": ("no pixel lit (biases and recurrence only)", 200,
              lambda p, s: _image(p, s), lambda p, r, n: np.zeros(
                  (n, p.frame.rows, p.frame.cols), dtype=bool), ()),
    "long_run": ("2,000 steps of synthetic Pong with resets every 500", 2000,
                 lambda p, s: _image(p, s), lambda p, r, n: _pong_frames(p, r, n),
                 (500, 1000, 1500)),
    "dev_window": ("device: conductance window [-96, 80]", 250,
                   lambda p, s: _image(p, s, DeviceModel(g_min=-96, g_max=80)),
                   lambda p, r, n: _pong_frames(p, r, n), ()),
    "dev_levels": ("device: 32 levels of F", 250,
                   lambda p, s: _image(p, s, DeviceModel(level_shift=3)),
                   lambda p, r, n: _pong_frames(p, r, n), ()),
    "dev_soft_bound": ("device: soft bounds", 250,
                       lambda p, s: _image(p, s, DeviceModel(soft_bound=True)),
                       lambda p, r, n: _pong_frames(p, r, n), ()),
    "dev_asymmetry": ("device: up 24/16, down 10/16", 250,
                      lambda p, s: _image(p, s, DeviceModel(asym_up=24, asym_down=10)),
                      lambda p, r, n: _pong_frames(p, r, n), ()),
    "dev_noise": ("device: 8-bit LFSR noise, reseeded midway and at a reset", 250,
                  lambda p, s: _image(p, s, DeviceModel(noise_bits=8)),
                  lambda p, r, n: _pong_frames(p, r, n), (180,)),
    "dev_all": ("device: every option on at once", 250,
                lambda p, s: _image(p, s, DeviceModel(
                    g_min=-100, g_max=96, level_shift=2, soft_bound=True, asym_up=20,
                    asym_down=12, noise_bits=6)),
                lambda p, r, n: _pong_frames(p, r, n), (125,)),
}


def make_set(preset: Preset, name: str, seed: int, steps: int | None = None) -> VectorSet:
    """Build one set and run the golden model over it."""
    description, default_steps, image_of, frames_of, resets_at = SETS[name]
    steps = steps or default_steps
    index = list(SETS).index(name)
    image = image_of(preset, seed + 1000 * index)
    rng = np.random.default_rng(seed + 1000 * index + 1)
    frames = pack_bits(frames_of(preset, rng, steps))
    reset = np.zeros(steps, dtype=bool)
    reset[[t for t in resets_at if t < steps]] = True
    reset[0] = True
    seeds = np.full(steps, -1, dtype=np.int64)
    if name == "dev_noise":
        seeds[steps // 2] = 0xC0FFEE
    model = GoldenModel.from_image(image)
    expected = run(model, frames, reset, seeds)
    return VectorSet(name, description, image, frames, reset, seeds, expected)


def run(model: GoldenModel, frames: np.ndarray, reset: np.ndarray, seeds: np.ndarray) -> dict:
    """Step a batch-1 model through frames, with resets and reseeds; collect every output."""
    out: dict[str, list] = {k: [] for k in ("x", "h", "logits", "action", "f_crc", "counters")}
    for t in range(len(frames)):
        if seeds[t] >= 0:
            model.set_seed(int(seeds[t]))
        if reset[t]:
            model.reset()
        result = model.step(frames[t:t + 1])
        out["x"].append(result.x[0])
        out["h"].append(result.h[0])
        out["logits"].append(result.logits[0])
        out["action"].append(result.action[0])
        out["f_crc"].append(model.f_checksum()[0])
        out["counters"].append([model.counters.as_dict()[k][0] for k in COUNTER_NAMES])
    return {
        "x": np.array(out["x"], dtype=np.int8),
        "h": np.array(out["h"], dtype=np.int8),
        "logits": np.array(out["logits"], dtype=np.int32),
        "action": np.array(out["action"], dtype=np.uint8),
        "f_crc": np.array(out["f_crc"], dtype=np.uint32),
        "counters": np.array(out["counters"], dtype=np.int64),
        "final_f": model.f[0].copy(),
    }


def replay(vset: VectorSet) -> dict:
    """Run the golden model over a loaded set again (what the tests compare against)."""
    return run(GoldenModel.from_image(vset.image), vset.frames, vset.reset, vset.seed)


def write_vectors(
    out: Path, preset_name: str, seed: int = 2024, steps: int | None = None,
    only: list[str] | None = None, progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Write every set (or those named in ``only``) of one preset under ``out/preset``."""
    preset = get_preset(preset_name)
    names = list(SETS) if not only else only
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise ValueError(f"unknown vector set(s) {unknown}; known: {', '.join(SETS)}")
    root = Path(out) / preset_name
    manifest = {"preset": preset_name, "seed": seed, "format_hash": f"{format_hash():08x}",
                "sets": {}}
    for name in names:
        vset = make_set(preset, name, seed, steps)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        vset.image.save(folder / "image.img")
        arrays = {"frames": vset.frames, "reset": vset.reset, "seed": vset.seed, **vset.expected}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(folder / "vectors.npz", buffer.getvalue())
        manifest["sets"][name] = {
            "description": vset.description,
            "steps": vset.steps,
            "device": vset.image.device.to_dict(),
            "image_sha256": vset.image.checksum,
        }
        if progress:
            progress(f"  {preset_name}/{name}: {vset.steps} steps ({vset.description})")
    root.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(manifest, indent=2).encode()
    atomic_write_bytes(root / "manifest.json", blob)
    return names


def load_vectors(folder: Path) -> VectorSet:
    """Load one set's folder (``<out>/<preset>/<set>``)."""
    folder = Path(folder)
    image = ParamImage.load(folder / "image.img")
    with np.load(folder / "vectors.npz") as data:
        arrays = {k: data[k] for k in data.files}
    frames, reset, seed = arrays.pop("frames"), arrays.pop("reset"), arrays.pop("seed")
    manifest = json.loads((folder.parent / "manifest.json").read_text())
    description = manifest["sets"].get(folder.name, {}).get("description", "")
    return VectorSet(folder.name, description, image, frames, reset, seed, arrays)
