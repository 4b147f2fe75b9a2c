"""The A2C stage's policy temperature (``--temperature``); PPO's replay of it is checked in
test_train_ppo.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mstpn.host.cli import main  # noqa: E402
from mstpn.host.export import export_checkpoint  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import TrainConfig, Trainer, load_checkpoint  # noqa: E402

SMALL = ["--envs", "2", "--seq", "8", "--max-episode-steps", "120", "--progress-every", "0",
         "--checkpoint-every", "600"]


def test_config_checks_the_temperature() -> None:
    for bad in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            TrainConfig(out="x", stage="a2c", temperature=bad)
    with pytest.raises(ValueError, match="temperature is an a2c stage option"):
        TrainConfig(out="x", stage="dagger", temperature=0.5)
    assert TrainConfig(out="x").temperature == 1.0  # the logits as they are


def test_the_rollout_samples_and_learns_the_tempered_policy(tmp_path, monkeypatch) -> None:
    """Every action is drawn from softmax(logits / T), and the log-probability the update
    weighs by the advantage is that policy's, where the logits are the student's own."""
    cfg = TrainConfig(out=str(tmp_path / "r"), stage="a2c", envs=2, seq=8, frames=2 * 8 * 4 * 2,
                      temperature=0.25, max_episode_steps=60, progress_every=0,
                      checkpoint_every=600, seed=3)
    trainer = Trainer(cfg)
    raw, dists = [], []
    step = trainer.model.step

    def spy_step(*args):
        logits, value, state = step(*args)
        raw.append(logits.detach().clone())
        return logits, value, state

    real = torch.distributions.Categorical

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            dists.append(self)

    monkeypatch.setattr(trainer.model, "step", spy_step)
    monkeypatch.setattr(torch.distributions, "Categorical", Spy)
    trainer.run()
    # each rollout's 8 sampling steps, then one step for the bootstrap value (no sampling)
    sampled = [logits for i, logits in enumerate(raw) if i % 9 != 8]
    assert len(sampled) == len(dists) == 2 * 8
    sharper = 0
    for logits, dist in zip(sampled, dists, strict=True):
        assert torch.allclose(dist.probs, torch.softmax(logits / 0.25, -1), atol=1e-12)
        # the tempered policy is surer than the logits' own, with the same first choice
        assert torch.equal(dist.probs.argmax(-1), logits.argmax(-1))
        sharper += int((dist.entropy() < real(logits=logits).entropy()).all())
    assert sharper == len(dists)


def test_a_resume_may_change_the_temperature_and_the_image_names_it(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--stage", "a2c", "--frames", "128", *SMALL]) == 0
    meta = export_checkpoint(run / "latest.pt", tmp_path / "plain.img").meta
    assert "temperature" not in meta  # an image of an untempered run says nothing of it
    assert main(["train", "--out", str(run), "--resume", "--frames", "256",
                 "--temperature", "0.5"]) == 0
    assert "temperature 1.0 -> 0.5" in capsys.readouterr().out
    records = [r for r in read_log(run / "log.jsonl") if r["kind"] == "config"]
    assert records[-1]["changed"] == {"temperature": [1.0, 0.5]}
    assert load_checkpoint(run / "latest.pt")["config"]["temperature"] == 0.5
    assert export_checkpoint(run / "latest.pt", tmp_path / "t.img").meta["temperature"] == 0.5
    assert main(["train", "--out", str(tmp_path / "d"), "--stage", "dagger", "--temperature",
                 "0.5", *SMALL]) == 2
    assert "temperature is an a2c stage option" in capsys.readouterr().err
