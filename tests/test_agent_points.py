"""benchmarks/agent_points.py: the point-by-point reading of a game log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mstpn.spec.env import RAM_CENTRE_OFFSET

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "agent_points.py"
_spec = importlib.util.spec_from_file_location("agent_points", _PATH)
agent_points = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agent_points)

UP, DOWN, NOOP = 1, 2, 0


def _rally(xs, ys, paddle, actions, labels, rewards) -> np.ndarray:
    return np.array(list(zip(xs, ys, paddle, actions, labels, rewards, strict=True)),
                    dtype=np.int64)


def test_a_return_then_a_miss() -> None:
    xs = [150, 170, 186, 186, 182, 150, 120, 150, 180, 200, 205]
    ys = [100] * 8 + [120, 130, 140]
    paddle = [90] * 8 + [80, 80, 80]  # centred on y 97 on the approach, then 33 off
    actions = [UP, DOWN, UP, NOOP, NOOP, DOWN, DOWN, NOOP, UP, UP, UP]
    labels = [UP, UP, UP, NOOP, NOOP, NOOP, DOWN, NOOP, DOWN, DOWN, DOWN]
    rewards = [0] * 10 + [-1]
    r = agent_points.analyse(_rally(xs, ys, paddle, actions, labels, rewards))
    assert r["returns"] == 1 and r["lost"] == 1 and r["won"] == 0 and r["score"] == -1
    # the last approach step before the ball passed our column: x 180, y 120, paddle 80
    assert r["misses"] == [int(80 + RAM_CENTRE_OFFSET - 120)]
    assert r["clear_miss_share"] == 1.0
    assert r["agreement"] == 6 / 11
    # coming: steps 1, 2 (x rising), 7, 8, 9, 10
    assert r["agreement_coming"] == 2 / 6
    # reversals: UP->DOWN (0-1), DOWN->UP (1-2)
    assert r["reversals_per_100"] == 100 * 2 / 10
