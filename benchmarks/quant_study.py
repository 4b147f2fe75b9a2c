"""Quantisation study: the float m-STPN against the fixed-point golden model over long runs.

It justifies the widths of ``mstpn.spec.qformat``. Each row runs the float network and its
fixed-point image side by side, open loop, on the same real ALE Pong frames (recorded once with a
noisy ball-tracking policy), for several networks and episodes of ``--steps`` steps, and reports:

- ``h MAE``: mean |h_fixed - h_float| over all steps and neurons, in real units (h is in [-1, 1]);
- ``h p99``: its 99th percentile;
- ``agree``: the fraction of steps where both choose the same action;
- ``F MAE``: mean |F_fixed - F_float| in real units;
- ``F sat``: the fraction of stored F codes at the grid's bounds;
- ``G clamp``: the fraction of conductances clamped by the window;
- ``lost``: the fraction of synapse updates where the float F moved by at least 1e-3 but the
  fixed F did not move at all (the update was rounded away).

Rows other than the first coarsen one quantity below its chosen width (zeroing its low bits, so
the golden model runs unchanged) or switch a device option, to show where the error grows.

Random networks stand in until trained agents exist (``--params`` then adds a trained image's
dequantised values as one more network). Usage::

    uv run python benchmarks/quant_study.py [--steps 2000] [--nets 3] [--episodes 4] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.model.reference import FloatModel
from mstpn.spec import qformat as q
from mstpn.spec.device import DeviceModel
from mstpn.spec.env import make_env
from mstpn.spec.preprocess import preprocess
from mstpn.spec.presets import get_preset


def record_frames(episodes: int, steps: int, seed: int) -> np.ndarray:
    """(episodes, steps, bytes) packed frames of real Pong under a noisy tracking policy."""
    env = make_env()
    out = []
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        frames = []
        for _ in range(steps):
            frames.append(preprocess(obs))
            ram = env.unwrapped.ale.getRAM()
            target = int(ram[54]) - 7 if ram[54] else 110
            action = 0
            if rng.random() < 0.3:
                action = int(rng.choice([0, 2, 3]))
            elif ram[51] > target + 4:
                action = 2
            elif ram[51] < target - 4:
                action = 3
            obs, _, term, trunc, _ = env.step(action)
            if term or trunc:
                obs, _ = env.reset()
        out.append(frames)
    return np.array(out, dtype=np.uint8)


def random_float_net(preset, seed: int, plasticity: float) -> dict[str, np.ndarray]:
    """A float network: sparse feature detectors, a recurrence that is not chaotic, and Hebbian
    strengths gamma ~ N(0, plasticity**2)."""
    rng = np.random.default_rng(seed)
    e, p = preset.encoder.outputs, preset.encoder.inputs
    h, n, a = preset.hidden, preset.plastic.inputs, preset.actions
    enc_w = rng.choice([-1, 0, 0, 0, 0, 0, 1], size=(e, p)).astype(np.float64)
    return {
        "enc_w": enc_w,
        "enc_gain": rng.uniform(0.03, 0.08, e),
        "enc_bias": rng.normal(0, 0.2, e),
        "w": rng.normal(0, 0.3, (h, n)),
        "decay": rng.uniform(0.7, 0.99, (h, n)),
        "plasticity": rng.normal(0, plasticity, (h, n)),
        "gain": rng.uniform(0.3, 0.5, h),
        "bias": rng.normal(0, 0.1, h),
        "head_w": rng.normal(0, 0.5, (a, h)),
        "head_bias": np.zeros(a),
    }


def coarsen(image: ParamImage, field: str, bits: int) -> ParamImage:
    """Round a field's codes to ``bits`` significant bits (the golden model runs unchanged)."""
    fmt = {"w": q.WEIGHT, "decay": q.DECAY, "plasticity": q.PLASTICITY}[field]
    drop = fmt.bits - bits
    codes = image.arrays[field].astype(np.int64)
    rounded = ((codes + (1 << (drop - 1))) >> drop) << drop
    return image.with_arrays(**{field: np.clip(rounded, fmt.lo, fmt.hi)})


VARIANTS = {
    "floor: float vs float with W perturbed by 1e-4": {"perturb": 1e-4},
    "chosen: W Q2.6, F Q0.8, lambda UQ0.8, gamma Q1.7, round half up": {},
    "chosen + stochastic rounding (8 noise bits)": {"device": {"noise_bits": 8}},
    "F 7 bits (128 levels)": {"device": {"level_shift": 1}},
    "F 6 bits (64 levels)": {"device": {"level_shift": 2}},
    "F 5 bits (32 levels)": {"device": {"level_shift": 3}},
    "F 5 bits + stochastic rounding": {"device": {"level_shift": 3, "noise_bits": 8}},
    "F 4 bits (16 levels)": {"device": {"level_shift": 4}},
    "W 6 bits": {"coarsen": ("w", 6)},
    "W 4 bits": {"coarsen": ("w", 4)},
    "lambda 6 bits": {"coarsen": ("decay", 6)},
    "lambda 4 bits": {"coarsen": ("decay", 4)},
    "gamma 6 bits": {"coarsen": ("plasticity", 6)},
    "gamma 4 bits": {"coarsen": ("plasticity", 4)},
}


class _FloatAsFixed:
    """A float model dressed as the golden model: the chaos floor of the comparison."""

    def __init__(self, preset, params, device, batch):
        self.model = FloatModel(preset, params, device, batch=batch)
        self._p = {"w": np.rint(params["w"] / q.CONDUCTANCE.scale)}

    @property
    def f(self):
        return np.rint(self.model.f / q.SHORT_TERM.scale).astype(np.int64)

    def step(self, frames):
        out = self.model.step(frames)
        out.h = out.h / q.ACT.scale
        return out


def compare(preset, float_params, image, frames, perturb: float = 0.0) -> dict[str, float]:
    """Run both models over (episodes, steps) frames; return the error statistics."""
    episodes, steps = frames.shape[:2]
    if perturb:
        rng = np.random.default_rng(0)
        twin = dict(float_params, w=float_params["w"] + rng.normal(0, perturb,
                                                                   float_params["w"].shape))
        fixed = _FloatAsFixed(preset, twin, image.device, episodes)
    else:
        fixed = GoldenModel.from_image(image, batch=episodes)
    real = FloatModel(preset, float_params, image.device, batch=episodes)
    dev = image.device
    h_err, agree, f_err, f_sat, g_clamp, lost = [], [], [], [], [], []
    for t in range(steps):
        f_fixed_before = fixed.f.astype(np.int64)
        f_real_before = real.f.copy()
        out, ref = fixed.step(frames[:, t]), real.step(frames[:, t])
        h_err.append(np.abs(out.h * q.ACT.scale - ref.h).ravel())
        agree.append(np.mean(out.action == ref.action))
        f = fixed.f.astype(np.int64)
        f_err.append(np.mean(np.abs(f * q.SHORT_TERM.scale - real.f)))
        f_sat.append(np.mean((f == dev.f_lo) | (f == dev.f_hi)))
        g = fixed._p["w"] + f
        g_clamp.append(np.mean((g < dev.g_min) | (g > dev.g_max)))
        moved_real = np.abs(real.f - f_real_before) >= 1e-3
        stuck = f == f_fixed_before
        lost.append(np.sum(moved_real & stuck) / max(1, np.sum(moved_real)))
    h_err = np.concatenate(h_err)
    return {
        "h_mae": float(h_err.mean()),
        "h_p99": float(np.percentile(h_err, 99)),
        "agree": float(np.mean(agree)),
        "f_mae": float(np.mean(f_err)),
        "f_sat": float(np.mean(f_sat)),
        "g_clamp": float(np.mean(g_clamp)),
        # the floor's "fixed" side is a float model: lost updates mean nothing there
        "lost": float("nan") if perturb else float(np.mean(lost)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="icebreaker")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--nets", type=int, default=3, help="random networks")
    parser.add_argument("--episodes", type=int, default=4, help="frame sequences per network")
    parser.add_argument("--params", help="a trained image to add as one more network")
    parser.add_argument("--only", action="append", help="run only these variants")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plasticity", type=float, default=0.05,
                        help="standard deviation of the random networks' gamma (default 0.05)")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    started = time.time()
    print(f"recording {args.episodes} x {args.steps} frames of ALE Pong ...", file=sys.stderr)
    frames = record_frames(args.episodes, args.steps, args.seed)
    nets = [(f"random {s}", random_float_net(preset, args.seed + s, args.plasticity))
            for s in range(args.nets)]
    if args.params:
        trained = ParamImage.load(args.params)
        nets.append((f"trained {args.params}", trained.dequantized()))
    variants = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    records = []
    for name, spec in variants.items():
        stats = []
        for _, params in nets:
            device = DeviceModel(**spec.get("device", {}))
            image = ParamImage.from_float(preset, params, device=device)
            if "coarsen" in spec:
                image = coarsen(image, *spec["coarsen"])
            stats.append(compare(preset, params, image, frames, spec.get("perturb", 0.0)))
        row = {"variant": name, **{k: float(np.mean([s[k] for s in stats])) for k in stats[0]}}
        records.append(row)
        print(f"  {name}: agree {row['agree']:.3f}, h MAE {row['h_mae']:.4f} "
              f"({time.time() - started:.0f} s)", file=sys.stderr)
    print(f"\n{args.preset}, {len(nets)} networks (gamma sd {args.plasticity}) x {args.episodes} "
          f"episodes x {args.steps} steps of real ALE Pong frames, open loop\n")
    print("| variant | h MAE | h p99 | action agree | F MAE | F sat | G clamp | lost updates |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        lost = "n/a" if np.isnan(r["lost"]) else f"{100 * r['lost']:.1f}%"
        print(f"| {r['variant']} | {r['h_mae']:.4f} | {r['h_p99']:.3f} | {r['agree']:.3f} | "
              f"{r['f_mae']:.4f} | {100 * r['f_sat']:.2f}% | {100 * r['g_clamp']:.2f}% | "
              f"{lost} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
