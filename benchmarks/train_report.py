"""The trained agent's report for its model card: float vs fixed, agreement, ablations, sweeps.

Given a training checkpoint and its exported image, it plays held-out episodes (seeds far from
any training seed) and writes one JSON record per row, incrementally, so a stopped run keeps the
rows it finished. Rows:

- ``fixed``: the image on the golden model; the torch student (fake-quantised) runs in its
  shadow on the same frames, and their action agreement is reported (it should be 1.0: the
  student trains in the golden arithmetic);
- ``float``: the float twin (:class:`mstpn.model.reference.FloatModel` on the checkpoint's
  unrounded parameters) drives; the golden model runs in its shadow (float-vs-fixed agreement);
- ``ablation F=0`` (gamma = 0, so F stays 0: no plasticity) and ``ablation lambda=0`` (F holds
  only the last Hebbian step), on the golden model;
- device sweeps on the golden model: F levels (``level_shift``), cycle-to-cycle noise
  (``noise_bits``), device-to-device spread (``sigma``).

Usage (needs torch, for the checkpoint)::

    uv run --extra train python benchmarks/train_report.py CHECKPOINT IMAGE --out REPORT.json \\
        [--episodes 20] [--sweep-episodes 10] [--seed 50000000] [--only ROW ...] [--ema]

With ``--ema`` the checkpoint's running average of the parameters is the student (for an image
exported with ``mstpn export --ema``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mstpn.host.evaluate import run_episodes
from mstpn.host.train.trainer import load_checkpoint, model_from_checkpoint
from mstpn.model.atomic import atomic_write_bytes
from mstpn.model.golden import GoldenModel, StepOutput
from mstpn.model.image import ParamImage
from mstpn.model.reference import FloatModel
from mstpn.model.spread import apply_spread
from mstpn.spec.device import DeviceModel


class TorchAgent:
    """The fake-quantised torch student behind the golden model's step/reset interface."""

    def __init__(self, model, batch: int) -> None:
        self.model, self.batch = model, batch
        self.reset()

    def reset(self, which=None) -> None:
        self.state = self.model.initial_state(self.batch)
        with torch.no_grad():
            self.codes = self.model.codes()

    def step(self, bits: np.ndarray) -> StepOutput:
        x = torch.as_tensor(bits.reshape(self.batch, -1), dtype=torch.float64)
        with torch.no_grad():
            logits, _, self.state = self.model.step(x, self.state, self.codes)
        h = self.state[1].numpy()
        return StepOutput(x=None, h=h, logits=logits.numpy(), action=logits.argmax(1).numpy())


def markdown(results: dict) -> str:
    """The report as a markdown table."""
    lines = ["| row | episodes | mean score | sd | min | max | mean steps | game score (frozen) "
             "| agreement |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        scores = [e["score"] for e in r["episodes"]]
        steps = np.mean([e["steps"] for e in r["episodes"]])
        agree = f"{r['agreement']:.4f}" if "agreement" in r else ""
        # Records from before the freeze was known carry no game score.
        game = (f"{r['mean_game_score']:+.2f} ({r['frozen_episodes']})"
                if "mean_game_score" in r else "")
        lines.append(f"| {name} | {len(scores)} | {r['mean_score']:+.2f} | {r['std_score']:.2f} "
                     f"| {min(scores):+.0f} | {max(scores):+.0f} | {steps:.0f} | {game} "
                     f"| {agree} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("image", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--sweep-episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=50_000_000)
    ap.add_argument("--only", nargs="*", help="row names to run (default: all)")
    ap.add_argument("--max-steps", type=int, help="cut episodes (quick checks only)")
    ap.add_argument("--markdown", action="store_true", help="print the table of --out and exit")
    ap.add_argument("--ema", action="store_true",
                    help="the checkpoint's running average is the student (mstpn export --ema)")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return
    torch.set_num_threads(1)

    ckpt = load_checkpoint(args.checkpoint)
    student = model_from_checkpoint(ckpt, ema=args.ema)
    image = ParamImage.load(args.image)
    real = student.real_params()
    n, ns = args.episodes, args.sweep_episodes

    def episodes(model, count: int, seed: int, shadow=None) -> dict:
        return run_episodes(model, count, seed, max_steps=args.max_steps, shadow=shadow)

    def golden(img: ParamImage, batch: int) -> GoldenModel:
        return GoldenModel.from_image(img, batch=batch)

    def with_device(**opts) -> ParamImage:
        return image.replace(device=DeviceModel.from_dict({**image.device.to_dict(), **opts}))

    rows = {
        "fixed": lambda: episodes(golden(image, n), n, args.seed,
                                      shadow=TorchAgent(student, n)),
        "float": lambda: episodes(FloatModel(image.preset, real, image.device, batch=n), n,
                                      args.seed, shadow=golden(image, n)),
        "ablation F=0 (gamma=0)": lambda: episodes(
            golden(image.with_arrays(plasticity=np.zeros_like(image.arrays["plasticity"])), n),
            n, args.seed),
        "ablation lambda=0": lambda: episodes(
            golden(image.with_arrays(decay=np.zeros_like(image.arrays["decay"])), n),
            n, args.seed),
        "levels 64 (level_shift 2)": lambda: episodes(
            golden(with_device(level_shift=2), ns), ns, args.seed),
        "levels 16 (level_shift 4)": lambda: episodes(
            golden(with_device(level_shift=4), ns), ns, args.seed),
        "noise 8 bits": lambda: episodes(
            golden(with_device(noise_bits=8), ns), ns, args.seed),
        "spread sigma 0.05": lambda: episodes(
            golden(apply_spread(image, 0.05, 1), ns), ns, args.seed),
        "spread sigma 0.2": lambda: episodes(
            golden(apply_spread(image, 0.2, 1), ns), ns, args.seed),
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name, run in rows.items():
        if args.only and name not in args.only:
            continue
        start = time.monotonic()
        record = run()
        record["row"] = name
        results[name] = record
        # Atomic, so that a run stopped mid-write keeps the rows it had finished.
        atomic_write_bytes(args.out, json.dumps(results, indent=2).encode())
        agree = f", agreement {record['agreement']:.4f}" if "agreement" in record else ""
        print(f"{name}: mean {record['mean_score']:+.2f} +- {record['std_score']:.2f} over "
              f"{len(record['episodes'])} episodes{agree}, game score "
              f"{record['mean_game_score']:+.2f} ({record['frozen_episodes']} froze) "
              f"({time.monotonic() - start:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
