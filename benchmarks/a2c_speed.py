"""A2C's frames/s for several (torch device, envs, ALE threads) settings, measured in one run.

Each trial resumes a copy of ``--run`` (its parameters, optimiser and anchor; the copy is
thrown away) with one setting for ``--frames`` emulated frames, and times ``Trainer.run``: the
envs' start-up is inside the timing, the checkpoint's loading is not. Without ``--run`` each
trial trains a fresh A2C student (no anchor). The trials alternate, so a noisy machine slows
every setting alike; the summary gives each setting's median frames/s and its ratio to the
first setting.

Usage::

    uv run --extra train python benchmarks/a2c_speed.py --run runs/pong-a2c-t05-e64p \\
        --settings cpu:64:1 cuda:64:4 cuda:256:14 --frames 2000000 --trials 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mstpn.host.train.trainer import TrainConfig, Trainer, load_checkpoint, resume_config


def _setting(text: str) -> tuple[str, int, int]:
    """``DEVICE:ENVS:THREADS`` -> (device, envs, threads)."""
    parts = text.split(":")
    if len(parts) == 4 and parts[0] == "cuda":  # cuda:N:ENVS:THREADS
        parts = [f"cuda:{parts[1]}", parts[2], parts[3]]
    try:
        device, envs, threads = parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give DEVICE:ENVS:THREADS, for example cpu:64:1 or cuda:256:14") from None
    if len(parts) != 3 or envs < 1 or threads < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give DEVICE:ENVS:THREADS, each count >= 1")
    return device, envs, threads


def _time_run(out: Path, args: argparse.Namespace, setting: tuple[str, int, int]) -> float:
    device, envs, threads = setting
    if args.run:
        out.mkdir()
        for name in ("latest.pt", "config.json"):
            shutil.copy(Path(args.run) / name, out / name)
        start = load_checkpoint(out / "latest.pt")["counters"]["frames"]
        cfg, _ = resume_config(out, {"envs": envs, "env_threads": threads,
                                     "torch_device": device, "progress_every": 1e9,
                                     "checkpoint_every": 1e9})
        # a resume keeps the larger of the given and the run's budgets: set it here
        trainer = Trainer(dataclasses.replace(cfg, frames=start + args.frames), resume=True)
    else:
        cfg = TrainConfig(out=str(out), stage="a2c", frames=args.frames, envs=envs,
                          env_threads=threads, torch_device=device, seed=1,
                          progress_every=1e9, checkpoint_every=1e9)
        trainer = Trainer(cfg)
    frames0 = trainer.counters["frames"]
    begin = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.run()
    return (trainer.counters["frames"] - frames0) / (time.perf_counter() - begin)


def main() -> None:
    """Alternate the settings for ``--trials`` rounds; print each trial, then the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="an A2C run folder to resume copies of (default: a fresh "
                                  "student)")
    ap.add_argument("--settings", type=_setting, nargs="+",
                    default=[("cpu", 64, 1)], metavar="DEVICE:ENVS:THREADS",
                    help="settings to compare, the first the baseline (default cpu:64:1)")
    ap.add_argument("--frames", type=int, default=400_000, help="emulated frames per trial")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    if args.run and not (Path(args.run) / "latest.pt").exists():
        ap.error(f"--run {args.run}: no latest.pt there")
    fps: dict[tuple, list[float]] = {s: [] for s in args.settings}
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            for k, s in enumerate(args.settings):
                value = _time_run(Path(tmp) / f"t{trial}-s{k}", args, s)
                fps[s].append(value)
                print(f"trial {trial}: {s[0]}, {s[1]} envs, {s[2]} ALE threads: "
                      f"{value:,.0f} frames/s", flush=True)
    base = statistics.median(fps[args.settings[0]])
    print(f"{args.frames:,} frames a trial, {args.trials} trials, "
          f"{'resuming ' + args.run if args.run else 'a fresh student'}:")
    for s, values in fps.items():
        med = statistics.median(values)
        print(f"  {s[0]:>7} {s[1]:4d} envs {s[2]:3d} threads: median {med:9,.0f} frames/s "
              f"({med / base:.2f}x)")


if __name__ == "__main__":
    main()
