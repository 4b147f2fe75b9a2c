"""``mstpn eval`` on the golden model, and the env's frames (no torch needed)."""

from __future__ import annotations

import json

import numpy as np

from mstpn.host.cli import main
from mstpn.host.evaluate import evaluate, run_episodes
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage, expected_shapes
from mstpn.spec.env import make_env, make_vector_env
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
