"""DAgger's frames/s with and without collector worker processes, measured in one run.

Each trial trains the same short DAgger run (from ``--init``, or a fresh student) with
``--workers 0`` and then with each ``--workers`` count, and times it. The trials alternate, so a
noisy machine slows every setting alike; the summary gives the median frames/s of each setting
and its ratio to ``--workers 0``. Start-up (envs, the worker's spawn) is inside the timing.

Usage::

    uv run --extra train python benchmarks/dagger_speed.py --teacher aim \\
        --init runs/pong-dagger-aim-a/latest.pt --frames 40000 --trials 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

from mstpn.host.train.teacher import TEACHERS
from mstpn.host.train.trainer import TrainConfig, Trainer


def _time_run(out: Path, args: argparse.Namespace, workers: int) -> float:
    cfg = TrainConfig(out=str(out), teacher=args.teacher, frames=args.frames, envs=args.envs,
                      workers=workers, init=args.init, seed=1, beta=0.0, min_buffer=1000,
                      checkpoint_every=1e9, progress_every=1e9)
    trainer = Trainer(cfg)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.run()
    wall = time.perf_counter() - start
    return trainer.counters["frames"] / wall


def main() -> None:
    """Alternate the settings for ``--trials`` rounds; print each trial, then the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", choices=TEACHERS, default="aim")
    ap.add_argument("--init", help="start from this checkpoint (default: a fresh student)")
    ap.add_argument("--frames", type=int, default=40_000, help="emulated frames per trial")
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="worker counts to compare with 0 (default: 1)")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    settings = [0, *[w for w in args.workers if w != 0]]
    fps: dict[int, list[float]] = {w: [] for w in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            for w in settings:
                value = _time_run(Path(tmp) / f"t{trial}-w{w}", args, w)
                fps[w].append(value)
                print(f"trial {trial}: --workers {w}: {value:,.0f} frames/s", flush=True)
    base = statistics.median(fps[0])
    print(f"teacher {args.teacher}, {args.envs} envs, {args.frames:,} frames a trial, "
          f"{args.trials} trials (medians):")
    for w in settings:
        med = statistics.median(fps[w])
        print(f"  --workers {w}: {med:,.0f} frames/s ({med / base:.2f}x)")


if __name__ == "__main__":
    main()
