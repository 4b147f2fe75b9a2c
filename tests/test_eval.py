"""``mstpn eval`` on the golden model, and the env's frames (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mstpn.host.cli import main
from mstpn.host.evaluate import evaluate, run_episodes
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage, expected_shapes
from mstpn.spec.env import FRAMESKIP, FREEZE_FRAME, MAX_FRAMES, make_env, make_vector_env
from mstpn.spec.presets import get_preset


def _random_image(seed: int = 0) -> ParamImage:
    preset = get_preset("icebreaker")
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in expected_shapes(preset).items():
        params[name] = rng.normal(0, 0.3, shape)
    params["enc_w"] = rng.integers(-2, 2, expected_shapes(preset)["enc_w"]).astype(float)
    params["enc_gain"] = np.full(64, 0.05)
    params["decay"] = rng.uniform(0.5, 0.9, expected_shapes(preset)["decay"])
    params["gain"] = np.full(64, 0.5)
    return ParamImage.from_float(preset, params)


def test_evaluate_short_episodes() -> None:
    record = evaluate(_random_image(), episodes=2, seed=7, max_steps=40)
    assert [ep["seed"] for ep in record["episodes"]] == [7, 8]
    assert all(ep["steps"] == 40 and ep["truncated"] for ep in record["episodes"])
    assert record["mean_score"] == np.mean([ep["score"] for ep in record["episodes"]])


def test_evaluate_is_reproducible_and_shadow_agrees_with_itself() -> None:
    image = _random_image(1)
    a = run_episodes(GoldenModel.from_image(image, batch=2), 2, 3, max_steps=30,
                     shadow=GoldenModel.from_image(image, batch=2))
    b = run_episodes(GoldenModel.from_image(image, batch=2), 2, 3, max_steps=30)
    assert a["agreement"] == 1.0
    assert a["episodes"] == b["episodes"]


def test_eval_cli_json(tmp_path, capsys) -> None:
    path = tmp_path / "agent.img"
    _random_image(2).save(path)
    assert main(["eval", "--params", str(path), "--episodes", "1", "--seed", "5",
                 "--max-steps", "20", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) >= {"mean_score", "episodes"}
    assert record["episodes"][0]["steps"] == 20 and "score" in record["episodes"][0]


def test_eval_cli_missing_image(tmp_path, capsys) -> None:
    assert main(["eval", "--params", str(tmp_path / "none.img"), "--episodes", "1"]) == 2
    assert "no such parameter image" in capsys.readouterr().err


def test_vector_env_frames_match_single_env() -> None:
    """make_vector_env and make_env give the same raw frames (same seed, actions, no sticky)."""
    venv = make_vector_env(1, threads=1, sticky=0.0)
    env = make_env(sticky=0.0)
    obs, _ = venv.reset(seed=3)
    single, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs[0, 0], single)
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = int(rng.choice([0, 2, 3]))
        obs, *_ = venv.step(np.array([a]))
        single, *_ = env.step(a)
        np.testing.assert_array_equal(obs[0, 0], single)
    venv.close()
    env.close()


def test_game_score_stops_at_the_freeze(monkeypatch) -> None:
    """Bookkeeping of a frozen game, with the freeze moved to frame 2,000 (step 500): the game
    score is the return of the first 499 steps, and the steps after it count in ALE's return
    only."""
    import mstpn.spec.env as env_module

    image = _random_image(3)
    before = run_episodes(GoldenModel.from_image(image, batch=2), 2, 11, max_steps=499)
    assert before["frozen_episodes"] == 0
    assert [ep["game_score"] for ep in before["episodes"]] == [
        ep["score"] for ep in before["episodes"]]
    monkeypatch.setattr(env_module, "FREEZE_FRAME", 2000)
    after = run_episodes(GoldenModel.from_image(image, batch=2), 2, 11, max_steps=900)
    assert after["frozen_episodes"] == 2
    for b, a in zip(before["episodes"], after["episodes"], strict=True):
        assert a["frozen"] and a["steps"] > 500
        assert a["game_score"] == b["score"]
    assert after["mean_game_score"] == np.mean([ep["score"] for ep in before["episodes"]])
    # A random agent loses points after the (moved) freeze too: they count in ALE's return.
    assert any(a["score"] != a["game_score"] for a in after["episodes"])


@pytest.mark.slow
def test_a_long_game_freezes_and_its_game_score_is_the_points_played(tmp_path) -> None:
    """A real freeze: stage 14's agent (exported from its committed checkpoint) plays a game
    from seed 40,000,003 that is still going at FREEZE_FRAME. Its game score is the return of
    the steps before the freeze step, ALE's return differs by the spurious reward, and v5's
    frame limit ends the episode. (The shipped agent, stage 15, finishes its games first.)"""
    pytest.importorskip("torch")
    from mstpn.host.export import export_checkpoint

    checkpoint = Path(__file__).resolve().parent.parent / "runs/pong-a2c-gpu-e256t/latest.pt"
    image = export_checkpoint(checkpoint, tmp_path / "stage14.img", ema=True)
    full = run_episodes(GoldenModel.from_image(image, batch=1), 1, 40_000_003)
    ep = full["episodes"][0]
    assert ep["frozen"], "pick a seed whose game lasts past the freeze for this agent"
    assert ep["steps"] == MAX_FRAMES // FRAMESKIP and not ep["truncated"]
    cut = run_episodes(GoldenModel.from_image(image, batch=1), 1, 40_000_003,
                       max_steps=FREEZE_FRAME // FRAMESKIP - 1)
    assert cut["frozen_episodes"] == 0
    assert ep["game_score"] == cut["episodes"][0]["score"]
    assert ep["score"] != ep["game_score"]


def test_training_envs_stop_before_the_freeze(monkeypatch) -> None:
    """make_vector_env truncates at the last step before FREEZE_FRAME (moved to frame 404, step
    101, so that a NOOP game is still going there); with stop_before_freeze=False it does not."""
    import mstpn.spec.env as env_module

    monkeypatch.setattr(env_module, "FREEZE_FRAME", 404)
    for stop, expect in ((True, 100), (False, None)):
        venv = make_vector_env(2, threads=1, stop_before_freeze=stop)
        venv.reset(seed=3)
        ended = None
        for t in range(1, 151):
            _, _, term, trunc, _ = venv.step(np.zeros(2, dtype=np.int64))
            assert not term.any()
            if trunc.any():
                assert trunc.all()
                ended = t
                break
        venv.close()
        assert ended == expect
