"""Pong teachers for DAgger: privileged controllers that read the emulator (training only).

The student sees only preprocessed frames; a teacher may read the RAM and clone the emulator's
state, since it exists only while training. The RAM map is :mod:`mstpn.spec.env`'s; it and
the paddle dynamics were measured in ``/work/shared/notes/pong.md``:

- :class:`RamTeacher` moves the paddle toward the ball's predicted crossing of our paddle's
  column, reflected off the walls, with a dead-band and a velocity (lag) term. It needs no
  search and is cheap (about +4 to +6 with sticky actions).
- :class:`SearchTeacher` uses the heuristic, but while the ball comes toward us it clones the
  emulator's state and simulates a few short plans (the heuristic's action, NOOP, UP or DOWN held
  for 1-3 steps, each then followed by NOOP) until the point is decided, keeping the first plan
  that wins the point, or else one that returns the ball; then it restores the state. It scores
  near +19 with sticky actions and costs about 150 emulated frames per decision. Its labels are
  open-loop: a short burst, then NOOP while the plan plays out.
- :class:`AimTeacher` stays closed-loop: it is the heuristic with an aim (the paddle shifted
  along the ball's vertical travel, so the ball meets the paddle's edge), and while the ball
  approaches it picks the aim by simulating the heuristic itself with each of a few aims, from
  the emulator's state *including its random generator* (so the sticky actions to come are
  known), until one wins the point. Every label is the heuristic's tracking action. +19.6 with
  sticky actions (8 episodes, docs/training.md) for about 31 emulated frames per decision.

All three label in the agent's action space (0 NOOP, 1 UP, 2 DOWN;
:data:`mstpn.spec.presets.ACTIONS`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...spec.env import (
    FRAMESKIP,
    RAM_BALL_X,
    RAM_BALL_Y,
    RAM_CENTRE_OFFSET,
    RAM_OUR_PADDLE,
    RAM_PADDLE_COLUMN,
    RAM_Y_BOTTOM,
    RAM_Y_TOP,
)
from ...spec.presets import ALE_ACTIONS

__all__ = ["RamTeacher", "SearchTeacher", "AimTeacher", "make_teacher", "TEACHERS", "NOOP", "UP",
           "DOWN", "ball_coming"]

NOOP, UP, DOWN = 0, 1, 2


class RamTeacher:
    """Track the ball's predicted crossing with a dead-band and a lag correction.

    Parameters
    ----------
    dead_band : float
        No move while the (lag-corrected) paddle is within this many RAM units of the target.
    lead : float
        Weight of the paddle's last move in predicting where it settles.
    aim : float
        While the ball approaches, shift the paddle's target this many RAM units along the ball's
        vertical travel, so that the ball meets the paddle nearer its edge (0: the centre).
    """

    needs_env = False  # act() takes the RAM only

    def __init__(self, dead_band: float = 5.0, lead: float = 1.0, aim: float = 0.0) -> None:
        self.dead_band = dead_band
        self.lead = lead
        self.aim = aim
        self._prev: dict[int, tuple[float, float, float]] = {}

    def reset(self, key: int = 0) -> None:
        """Forget the previous observation of env ``key`` (call at each episode start)."""
        self._prev.pop(key, None)

    def _target(self, ram: np.ndarray, key: int) -> float:
        bx, by, paddle = float(ram[RAM_BALL_X]), float(ram[RAM_BALL_Y]), float(ram[RAM_OUR_PADDLE])
        prev = self._prev.get(key)
        self._prev[key] = (bx, by, paddle)
        if bx == 0 and by == 0:
            return 120.0 + RAM_CENTRE_OFFSET  # no ball: wait in the middle
        if prev is None or (prev[0] == 0 and prev[1] == 0):
            return by
        vx, vy = bx - prev[0], by - prev[1]
        if vx <= 0:
            return 0.5 * (by + 125.0)  # ball leaving: drift toward the centre, following it
        steps = (RAM_PADDLE_COLUMN - bx) / vx
        y = by + vy * max(steps, 0.0)
        span = RAM_Y_BOTTOM - RAM_Y_TOP
        y = (y - RAM_Y_TOP) % (2 * span)  # reflect off the walls
        y = RAM_Y_TOP + (2 * span - y if y > span else y)
        return y

    def act(self, ram: np.ndarray, key: int = 0) -> int:
        """The teacher's action (0 NOOP, 1 UP, 2 DOWN) for the RAM of env ``key``."""
        prev = self._prev.get(key)
        target = self._target(ram, key) - RAM_CENTRE_OFFSET
        if self.aim and _approaching(ram, prev):
            target += self.aim * float(np.sign(float(ram[RAM_BALL_Y]) - prev[1]))
        paddle = float(ram[RAM_OUR_PADDLE])
        velocity = 0.0 if prev is None else paddle - prev[2]
        settled = paddle + self.lead * velocity
        if settled > target + self.dead_band:
            return UP
        if settled < target - self.dead_band:
            return DOWN
        return NOOP


def ball_coming(x, prev_x):
    """Whether the ball moves toward our paddle, from its RAM x now and a step before.

    An x of 0 means no ball is in play. Scalars give a bool; arrays compare element-wise.
    """
    x, prev_x = np.asarray(x), np.asarray(prev_x)
    return (x != 0) & (prev_x != 0) & (x > prev_x)


def _approaching(ram: np.ndarray, prev: tuple[float, float, float] | None) -> bool:
    """Whether the ball moves toward our paddle (``prev``: the last (x, y, paddle) seen)."""
    return prev is not None and bool(ball_coming(float(ram[RAM_BALL_X]), prev[0]))


def _ball_returned(ram: np.ndarray, prev_x: float) -> bool:
    return ram[RAM_BALL_X] != 0 and float(ram[RAM_BALL_X]) < prev_x


def _play_point(ale, actions, policy: Callable[[int, np.ndarray], int], horizon: int,
                until_return: bool = False) -> tuple[int, int]:
    """Play ``policy(step, ram)`` from the emulator's current state until the point is decided.

    Returns the outcome (+1 point won, 0 ball returned or the point lost after a return, -1
    point lost, -2 undecided within ``horizon`` steps) and the emulated frames spent. With
    ``until_return`` it stops at the return (a cheap check of a committed plan).
    """
    returned = False
    prev_x = float(ale.getRAM()[RAM_BALL_X])
    for t in range(horizon):
        action = policy(t, ale.getRAM())
        reward = 0
        for _ in range(FRAMESKIP):
            reward += ale.act(actions[ALE_ACTIONS[action]])
        if reward > 0:
            return 1, (t + 1) * FRAMESKIP
        if reward < 0:
            return (0 if returned else -1), (t + 1) * FRAMESKIP
        ram = ale.getRAM()
        if not returned and _ball_returned(ram, prev_x):
            returned = True
            if until_return:
                return 0, (t + 1) * FRAMESKIP
        prev_x = float(ram[RAM_BALL_X])
    return (0 if returned else -2), horizon * FRAMESKIP


def _first_winner(ale, state, candidates, outcome: Callable):
    """The first candidate whose ``outcome`` (played from ``state``) wins the point, else the
    first that returns the ball, else None; the emulator is left in ``state``."""
    fallback = None
    try:
        for candidate in candidates:
            score = outcome(candidate)
            ale.restoreState(state)
            if score == 1:
                return candidate
            if score == 0 and fallback is None:
                fallback = candidate
    finally:
        ale.restoreState(state)
    return fallback


class SearchTeacher:
    """The heuristic, with a look-ahead search over short plans while the ball approaches.

    Parameters
    ----------
    horizon : int
        Agent steps simulated per plan (each of :data:`FRAMESKIP` frames).
    """

    needs_env = True  # act() takes the env, to clone its emulator

    PLANS: tuple[tuple[int, ...], ...] = (
        (), (NOOP,), (UP,), (DOWN,), (UP, UP), (DOWN, DOWN), (UP, UP, UP), (DOWN, DOWN, DOWN),
    )

    def __init__(self, horizon: int = 100) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 step, got {horizon}")
        self.horizon = horizon
        self.heuristic = RamTeacher()
        self.frames = 0  # emulated frames spent searching
        self._plan: dict[int, list[int]] = {}

    def reset(self, key: int = 0) -> None:
        """Forget env ``key``'s history and cached plan."""
        self.heuristic.reset(key)
        self._plan.pop(key, None)

    def _rollout(self, ale, actions, plan: list[int], until_return: bool = False) -> int:
        """Play ``plan`` (then NOOPs) from the current state: +1 point won, 0 ball returned (or
        the point lost after a return), -1 point lost, -2 undecided within the horizon. With
        ``until_return`` it stops at the return (a cheap check of a committed plan)."""
        outcome, frames = _play_point(
            ale, actions, lambda t, ram: plan[t] if t < len(plan) else NOOP, self.horizon,
            until_return)
        self.frames += frames
        return outcome

    def _search(self, ale, actions, first: int) -> list[int] | None:
        """The first plan that wins the point, else the first that returns the ball."""
        plans = [list(p) if p else [first] for p in self.PLANS]
        return _first_winner(ale, ale.cloneState(), plans,
                             lambda plan: self._rollout(ale, actions, plan))

    def act(self, env, key: int = 0) -> int:
        """The teacher's action for a gymnasium ``ALE/Pong-v5`` env (its emulator is used and
        restored).

        While the ball approaches, a plan found by a full search is committed to; each step
        checks, cheaply (until the ball is returned), that the rest of the plan still returns
        it, and searches again when it does not.
        """
        ale = env.unwrapped.ale
        actions = env.unwrapped._action_set  # the minimal set, as ALE action codes
        ram = ale.getRAM()
        prev = self.heuristic._prev.get(key)
        first = self.heuristic.act(ram, key)
        if not _approaching(ram, prev):
            self._plan.pop(key, None)
            return first
        plan = self._plan.get(key)
        if plan:
            state = ale.cloneState()
            ok = self._rollout(ale, actions, plan, until_return=True) >= 0
            ale.restoreState(state)
            if not ok:
                plan = None
        if not plan:
            plan = self._search(ale, actions, first)
        if not plan:
            self._plan.pop(key, None)
            return first
        self._plan[key] = plan[1:] if len(plan) > 1 else [NOOP]
        return plan[0]


class AimTeacher:
    """The heuristic with an aim picked by simulation while the ball approaches (closed-loop).

    When the ball starts toward us, the emulator's state is cloned *with its random generator*
    and the heuristic itself is played from it with each aim of :attr:`AIMS` in turn, until the
    point is decided; the first aim that wins the point is kept for the rest of the approach
    (else the first that returns the ball, else the default). Because the generator is
    restored, the simulated sticky actions are the ones the real episode will draw while it
    follows the same actions, so the kept aim's outcome is known. Every label is the
    heuristic's tracking action: the student imitates a feedback law, not a timed burst.

    Parameters
    ----------
    horizon : int
        Agent steps simulated per aim.
    """

    needs_env = True  # act() takes the env, to clone its emulator

    AIMS: tuple[float, ...] = (4.0, 0.0, 8.0, -4.0, 2.0, 6.0)

    def __init__(self, horizon: int = 100) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 step, got {horizon}")
        self.horizon = horizon
        self.heuristic = RamTeacher(aim=self.AIMS[0])
        self.frames = 0  # emulated frames spent simulating
        self._aim: dict[int, float] = {}

    def reset(self, key: int = 0) -> None:
        """Forget env ``key``'s history and its chosen aim."""
        self.heuristic.reset(key)
        self._aim.pop(key, None)

    def _rollout(self, ale, actions, aim: float, key: int) -> int:
        """Play the heuristic with ``aim`` from the current state: +1 point won, 0 ball returned
        (or the point lost after a return), -1 point lost, -2 undecided within the horizon."""
        sim = RamTeacher(self.heuristic.dead_band, self.heuristic.lead, aim)
        if key in self.heuristic._prev:
            sim._prev[0] = self.heuristic._prev[key]
        outcome, frames = _play_point(ale, actions, lambda t, ram: sim.act(ram, 0), self.horizon)
        self.frames += frames
        return outcome

    def _choose(self, ale, actions, key: int) -> float:
        aim = _first_winner(ale, ale.cloneState(include_rng=True), self.AIMS,
                            lambda aim: self._rollout(ale, actions, aim, key))
        return self.AIMS[0] if aim is None else aim

    def act(self, env, key: int = 0) -> int:
        """The teacher's action for a gymnasium ``ALE/Pong-v5`` env (its emulator, random
        generator included, is restored)."""
        ale = env.unwrapped.ale
        ram = ale.getRAM()
        prev = self.heuristic._prev.get(key)
        if not _approaching(ram, prev):
            self._aim.pop(key, None)
            self.heuristic.aim = self.AIMS[0]
        else:
            if key not in self._aim:
                self._aim[key] = self._choose(ale, env.unwrapped._action_set, key)
            self.heuristic.aim = self._aim[key]
        return self.heuristic.act(ram, key)


TEACHERS = ("ram", "search", "aim")


def make_teacher(kind: str) -> RamTeacher | SearchTeacher | AimTeacher:
    """One of :data:`TEACHERS`: ``"ram"``, ``"search"`` or ``"aim"``."""
    if kind == "ram":
        return RamTeacher()
    if kind == "search":
        return SearchTeacher()
    if kind == "aim":
        return AimTeacher()
    raise ValueError(f"unknown teacher {kind!r}: one of {', '.join(TEACHERS)}")
