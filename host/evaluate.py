"""``mstpn eval``: play Pong episodes with an agent on the bit-exact golden model.

N episodes of ``ALE/Pong-v5`` (:func:`mstpn.spec.env.make_env`: grayscale, frameskip 4, sticky
actions 0.25), episode k seeded ``seed + k``, run in lockstep: one batched
:class:`~mstpn.model.golden.GoldenModel` steps all of them at once, and an episode that has ended
simply stops counting. A game still going at :data:`~mstpn.spec.env.FREEZE_FRAME` stops there
(ALE pays a spurious reward and truncates the episode later): each episode reports ALE's return,
the protocol's ``score``, and beside it ``game_score``, the points won less the points lost
before the freeze. Its frames go through :func:`mstpn.spec.preprocess.binarize`, the one
preprocessing. The same loop runs the float twin (:class:`~mstpn.model.reference.FloatModel`) or
any model with the golden model's ``step``/``reset`` interface, and can run a second model in the
shadow of the first, on the same frames, to measure how often their actions agree.

No torch is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..model.golden import GoldenModel
from ..model.image import ParamImage
from ..model.reference import FloatModel
from ..spec.env import make_env, past_freeze
from ..spec.preprocess import binarize
from ..spec.presets import ALE_ACTIONS

__all__ = ["DEFAULT_AGENT", "default_agent", "run_episodes", "evaluate"]

#: The shipped agent, used by ``mstpn eval`` and ``mstpn play`` by default.
DEFAULT_AGENT = Path(__file__).resolve().parent.parent / "mstpn" / "agents" / "pong.img"


def default_agent() -> Path:
    """The shipped agent's image: ``mstpn/agents/pong.img`` of the installed package."""
    import mstpn

    return Path(mstpn.__file__).resolve().parent / "agents" / "pong.img"


def run_episodes(
    model,
    episodes: int,
    seed: int,
    max_steps: int | None = None,
    shadow=None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Play ``episodes`` episodes in lockstep with ``model`` choosing the actions.

    Parameters
    ----------
    model
        A batched model with ``step(frames) -> StepOutput`` and ``reset()``, of batch
        ``episodes`` (a :class:`GoldenModel` or :class:`FloatModel`).
    episodes : int
        Episodes, each in its own env, seeded ``seed + k``.
    seed : int
        The base seed.
    max_steps : int, optional
        Stop each episode after this many steps (its score so far counts; ``truncated`` says so).
    shadow
        Another batched model fed the same frames; its agreement with ``model`` is reported.
    progress : callable, optional
        Called with a line of text about every 1,000 steps.

    Returns
    -------
    dict
        ``mean_score``, ``std_score``, ``episodes`` (each ``seed``, ``score``, ``steps``,
        ``truncated``, ``game_score`` and ``frozen``), ``mean_game_score``, ``frozen_episodes``,
        ``steps``, ``wall_s``, and ``agreement`` when a shadow ran. ``score`` is ALE's return,
        spurious reward included; ``game_score`` counts the points played before the game
        froze (the same as ``score`` in an episode that did not).
    """
    envs = [make_env() for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + k)[0] for k, env in enumerate(envs)])
    model.reset()
    if shadow is not None:
        shadow.reset()
    alive = np.ones(episodes, dtype=bool)
    score = np.zeros(episodes)
    steps = np.zeros(episodes, dtype=np.int64)
    truncated = np.zeros(episodes, dtype=bool)
    game = np.zeros(episodes)
    frozen = np.zeros(episodes, dtype=bool)
    agree = total = 0
    start = time.monotonic()
    t = 0
    while alive.any():
        bits = binarize(obs)
        out = model.step(bits)
        if shadow is not None:
            other = shadow.step(bits)
            agree += int((other.action == out.action)[alive].sum())
            total += int(alive.sum())
        for k in np.flatnonzero(alive):
            o, r, term, trunc, _ = envs[k].step(ALE_ACTIONS[int(out.action[k])])
            obs[k] = o
            score[k] += r
            # The step that reaches the freeze carries ALE's spurious reward; a game that
            # ended by then ended as a game.
            if not (frozen[k] or term) and past_freeze(envs[k]):
                frozen[k] = True
            if not frozen[k]:
                game[k] += r
            steps[k] += 1
            if term or trunc:
                alive[k] = False
            elif max_steps is not None and steps[k] >= max_steps:
                alive[k] = False
                truncated[k] = True
        t += 1
        if progress is not None and t % 1000 == 0:
            progress(f"  step {t}: {int(alive.sum())} of {episodes} episodes still running, "
                     f"scores so far {score.mean():+.2f}")
    for env in envs:
        env.close()
    record = {
        "mean_score": float(score.mean()),
        "std_score": float(score.std()),
        "episodes": [
            {"seed": seed + k, "score": float(score[k]), "steps": int(steps[k]),
             "truncated": bool(truncated[k]), "game_score": float(game[k]),
             "frozen": bool(frozen[k])}
            for k in range(episodes)
        ],
        "mean_game_score": float(game.mean()),
        "frozen_episodes": int(frozen.sum()),
        "steps": int(steps.sum()),
        "wall_s": round(time.monotonic() - start, 1),
    }
    if shadow is not None:
        record["agreement"] = agree / max(total, 1)
    return record


def evaluate(
    image: ParamImage,
    episodes: int = 20,
    seed: int = 0,
    max_steps: int | None = None,
    model: str = "fixed",
    shadow: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate an image: ``model="fixed"`` plays on the golden model, ``"float"`` on the float
    twin of its dequantised values; ``shadow`` (the other kind) measures action agreement.

    Returns the record of :func:`run_episodes`, with ``model`` and the image's description.
    """

    def build(kind: str):
        if kind == "fixed":
            return GoldenModel.from_image(image, batch=episodes)
        if kind == "float":
            return FloatModel.from_image(image, batch=episodes)
        raise ValueError(f"model must be 'fixed' or 'float', not {kind!r}")

    record = run_episodes(build(model), episodes, seed, max_steps,
                          shadow=build(shadow) if shadow else None, progress=progress)
    record["model"] = model
    record["preset"] = image.preset.name
    record["device"] = image.device.to_dict()
    record["spread"] = image.spread
    return record
