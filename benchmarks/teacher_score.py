"""Score a DAgger teacher on full sticky-action Pong episodes (no student, no torch).

Prints each episode's seed, score and steps, then the mean and the simulated emulator frames per
decision (0 for the ``ram`` teacher, which simulates nothing).

Usage::

    uv run python benchmarks/teacher_score.py --teacher aim --episodes 8 --seed 900
    uv run python benchmarks/teacher_score.py --teacher ram --aim 4 --episodes 4 --seed 900
"""

from __future__ import annotations

import argparse

import numpy as np

from mstpn.host.train.teacher import TEACHERS, RamTeacher, make_teacher
from mstpn.spec.env import make_env
from mstpn.spec.presets import ALE_ACTIONS


def main() -> None:
    """Play the episodes; one line each, then the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", choices=TEACHERS, default="aim")
    ap.add_argument("--aim", type=float, default=0.0, help="the ram teacher's aim (RAM units)")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=900, help="base seed: episode k uses seed + k")
    args = ap.parse_args()
    teacher = RamTeacher(aim=args.aim) if args.teacher == "ram" else make_teacher(args.teacher)
    env = make_env()
    scores, steps_all = [], 0
    for k in range(args.episodes):
        env.reset(seed=args.seed + k)
        teacher.reset(0)
        score, done, steps = 0.0, False, 0
        while not done:
            ale = env.unwrapped.ale
            action = teacher.act(env, 0) if teacher.needs_env else teacher.act(ale.getRAM(), 0)
            _, reward, term, trunc, _ = env.step(ALE_ACTIONS[action])
            score, done, steps = score + reward, term or trunc, steps + 1
        print(f"seed {args.seed + k}: {score:+.0f} in {steps} steps", flush=True)
        scores.append(score)
        steps_all += steps
    frames = getattr(teacher, "frames", 0)
    print(f"{args.teacher}: mean {np.mean(scores):+.2f} over {len(scores)} episodes, "
          f"{frames / steps_all:.1f} simulated frames a decision")


if __name__ == "__main__":
    main()
