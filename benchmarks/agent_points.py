"""Why an agent loses points: play it on the golden model and read the emulator's RAM.

The agent plays full sticky-action episodes (``mstpn eval``'s protocol) while the RAM is read
beside it, and a heuristic teacher (``RamTeacher``, aim 4: +14.25 on its own) labels every step
in its shadow. Nothing the agent sees changes. Per episode it prints:

- points won and lost, and our returns (the ball turned back at our paddle);
- for each lost point, the miss: our paddle's centre minus the ball's y as the ball reaches our
  paddle's column (RAM units, about pixels; the paddle is 16 tall), and the share of *clear*
  misses (more than 12 away);
- the agreement with the teacher, overall and while the ball comes toward us;
- reversals per 100 steps (UP right after DOWN or the reverse): a jittering paddle.

Usage::

    uv run python benchmarks/agent_points.py --params mstpn/agents/pong.img --episodes 4 \\
        --seed 40000000 [--json]

No torch is needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mstpn.host.evaluate import default_agent
from mstpn.host.train.teacher import RamTeacher, ball_coming
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.spec.env import (
    RAM_BALL_X,
    RAM_BALL_Y,
    RAM_CENTRE_OFFSET,
    RAM_OUR_PADDLE,
    RAM_PADDLE_COLUMN,
    make_env,
)
from mstpn.spec.preprocess import binarize
from mstpn.spec.presets import ALE_ACTIONS

#: A miss farther than this (RAM units) from the paddle's centre was not a near thing.
CLEAR_MISS = 12
_UP, _DOWN = 1, 2


def play(image: ParamImage, episodes: int, seed: int) -> list[np.ndarray]:
    """Play the episodes in lockstep; per episode an array of rows (ball x, ball y, paddle,
    action, teacher's action, reward)."""
    model = GoldenModel.from_image(image, batch=episodes)
    envs = [make_env() for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + k)[0] for k, env in enumerate(envs)])
    teachers = [RamTeacher(aim=4.0) for _ in range(episodes)]
    alive = np.ones(episodes, dtype=bool)
    rows: list[list[tuple[int, ...]]] = [[] for _ in range(episodes)]
    while alive.any():
        out = model.step(binarize(obs))
        for k in np.flatnonzero(alive):
            ram = envs[k].unwrapped.ale.getRAM()
            label = teachers[k].act(ram)
            action = int(out.action[k])
            obs[k], reward, term, trunc, _ = envs[k].step(ALE_ACTIONS[action])
            rows[k].append((int(ram[RAM_BALL_X]), int(ram[RAM_BALL_Y]), int(ram[RAM_OUR_PADDLE]),
                            action, label, int(reward)))
            if term or trunc:
                alive[k] = False
    for env in envs:
        env.close()
    return [np.array(r, dtype=np.int64) for r in rows]


def analyse(log: np.ndarray) -> dict:
    """The figures of one episode's log (see the module's docstring)."""
    bx, by, paddle, action, label, reward = log.T
    prev_x = np.concatenate([[0], bx[:-1]])
    coming = ball_coming(bx, prev_x)
    # The ball turns back near our paddle: x falls after its last change was a rise.
    vx = np.where((bx != 0) & (prev_x != 0), bx - prev_x, 0)
    moved = np.flatnonzero(vx)
    last = np.zeros_like(vx)
    last[moved[1:]] = vx[moved[:-1]]
    turned = (vx < 0) & (last > 0) & (prev_x >= RAM_PADDLE_COLUMN - 16)
    misses = []
    for end in np.flatnonzero(reward < 0):
        # the last step of the final approach at which the ball had not yet passed our column
        j = end
        while j > 0 and not (coming[j] and bx[j] <= RAM_PADDLE_COLUMN):
            j -= 1
        if j > 0:
            misses.append(int(paddle[j] + RAM_CENTRE_OFFSET - by[j]))
    flips = ((action[1:] == _UP) & (action[:-1] == _DOWN)) | (
        (action[1:] == _DOWN) & (action[:-1] == _UP))
    return {
        "score": int(reward.sum()),
        "won": int((reward > 0).sum()),
        "lost": int((reward < 0).sum()),
        "returns": int(turned.sum()),
        "steps": len(log),
        "misses": misses,
        "clear_miss_share": (float(np.mean(np.abs(misses) > CLEAR_MISS)) if misses else None),
        "agreement": float((action == label).mean()),
        "agreement_coming": float((action == label)[coming].mean()) if coming.any() else None,
        "reversals_per_100": float(100 * flips.mean()) if len(flips) else 0.0,
    }


def main() -> None:
    """Play, analyse, print one line per episode and the summary (or a JSON record)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, help="image (default: the shipped agent)")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=40_000_000,
                    help="base seed: episode k uses seed + k")
    ap.add_argument("--json", action="store_true", help="print a JSON record")
    args = ap.parse_args()
    if args.episodes < 1:
        ap.error("--episodes must be at least 1")
    path = args.params or default_agent()
    if not path.exists():
        ap.error(f"{path}: no such image")
    image = ParamImage.load(path)
    results = [analyse(log) for log in play(image, args.episodes, args.seed)]
    misses = [m for r in results for m in r["misses"]]
    summary = {
        "params": str(path),
        "seed": args.seed,
        "mean_score": float(np.mean([r["score"] for r in results])),
        "returns_per_point": float(sum(r["returns"] for r in results)
                                   / max(sum(r["won"] + r["lost"] for r in results), 1)),
        "median_abs_miss": float(np.median(np.abs(misses))) if misses else None,
        "clear_miss_share": float(np.mean(np.abs(misses) > CLEAR_MISS)) if misses else None,
        "agreement": float(np.mean([r["agreement"] for r in results])),
        "agreement_coming": float(np.mean([r["agreement_coming"] for r in results
                                           if r["agreement_coming"] is not None])),
        "reversals_per_100": float(np.mean([r["reversals_per_100"] for r in results])),
        "episodes": [{"seed": args.seed + k, **r} for k, r in enumerate(results)],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{path}: {args.episodes} episodes from seed {args.seed}")
    print(" seed        score won lost returns  steps  |miss| med  clear  agree  coming  rev/100")
    for k, r in enumerate(results):
        med = f"{np.median(np.abs(r['misses'])):10.1f}" if r["misses"] else "       n/a"
        clear = f"{r['clear_miss_share']:6.2f}" if r["misses"] else "   n/a"
        coming = r["agreement_coming"]
        print(f" {args.seed + k:<10d} {r['score']:+5d} {r['won']:3d} {r['lost']:4d} "
              f"{r['returns']:7d} {r['steps']:6d} {med} {clear} {r['agreement']:6.3f} "
              f"{coming if coming is None else f'{coming:6.3f}'} {r['reversals_per_100']:8.1f}")
    s = summary
    clear_share = "n/a" if s["clear_miss_share"] is None else f"{s['clear_miss_share']:.2f}"
    print(f" mean score {s['mean_score']:+.2f}, {s['returns_per_point']:.2f} returns per point, "
          f"median |miss| {s['median_abs_miss']}, clear misses {clear_share}, "
          f"agreement {s['agreement']:.3f} (ball coming {s['agreement_coming']:.3f}), "
          f"{s['reversals_per_100']:.1f} reversals per 100 steps")


if __name__ == "__main__":
    main()
