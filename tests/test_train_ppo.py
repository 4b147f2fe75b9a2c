"""PPO's clipped update on the A2C stage (``--ppo-epochs``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mstpn.host.cli import main  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import TrainConfig, Trainer, load_checkpoint  # noqa: E402

SMALL = ["--envs", "4", "--seq", "8", "--max-episode-steps", "120", "--progress-every", "0",
         "--checkpoint-every", "600"]


def test_config_checks_the_ppo_settings() -> None:
    with pytest.raises(ValueError, match="ppo_epochs must be a whole number >= 0"):
        TrainConfig(out="x", stage="a2c", ppo_epochs=-1)
    with pytest.raises(ValueError, match="ppo_epochs is an a2c stage option"):
        TrainConfig(out="x", stage="dagger", ppo_epochs=2)
    for clip in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="ppo_clip must be in"):
            TrainConfig(out="x", stage="a2c", ppo_epochs=2, ppo_clip=clip)
    with pytest.raises(ValueError, match="ppo_minibatches must be a whole number >= 1"):
        TrainConfig(out="x", stage="a2c", ppo_epochs=2, ppo_minibatches=0)
    with pytest.raises(ValueError, match=r"ppo_minibatches \(5\) splits the envs"):
        TrainConfig(out="x", stage="a2c", envs=4, ppo_epochs=2, ppo_minibatches=5)
    assert TrainConfig(out="x", stage="a2c").ppo_epochs == 0  # plain A2C by default


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_replay_is_the_rollout_and_the_average_moves_once_per_rollout(tmp_path,
                                                                       temperature) -> None:
    """With a learning rate of 0 nothing moves, so every replayed log-probability must equal
    the rollout's own: the replay starts from the right plastic state, zeroes it where the
    rollout did, and takes the rollout's temperature (``--temperature``). The running average
    steps once per rollout, the optimiser once per group."""
    cfg = TrainConfig(out=str(tmp_path / "r"), stage="a2c", envs=4, seq=8, frames=4 * 8 * 4 * 3,
                      lr=0.0, ppo_epochs=2, ppo_minibatches=2, max_episode_steps=20,
                      progress_every=0, checkpoint_every=600, seed=5, temperature=temperature)
    trainer = Trainer(cfg)
    before = {name: value.clone() for name, value in trainer.ema.items()}
    steps = []
    step = trainer._step
    trainer._step = lambda average=True: (steps.append(average), step(average))
    trainer.run()
    assert steps == [False, False, False, True] * 3  # 3 rollouts x 2 epochs x 2 groups
    assert trainer.counters["updates"] == 12
    stats = trainer.ppo_stats
    assert stats["first_log_ratio"] < 1e-12
    assert stats["clipped"] == 0.0 and abs(stats["drift"]) < 1e-12
    for name, value in trainer.ema.items():  # lr 0: the average stays where it was
        assert torch.equal(value, before[name]), name


def test_ppo_trains_resumes_and_changes_its_settings_on_a_resume(tmp_path, capsys) -> None:
    """A few PPO rollouts move the student (and, by less, its average), with the clip and the
    drift on the progress line; a resume may change the epochs, clip and groups (logged), and
    a plain A2C run may turn into a PPO one the same way."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--stage", "a2c", "--frames", "256", "--lr", "1e-2",
                 "--ppo-epochs", "2", "--ppo-minibatches", "2", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "clipped " in out and "drift " in out
    first = load_checkpoint(run / "latest.pt")
    assert first["counters"]["updates"] == 2 * 2 * 2  # 256 frames = 2 rollouts of 4 x 8 x 4
    fresh = Trainer(TrainConfig(out=str(tmp_path / "fresh"), stage="a2c", seed=0))
    moved = max((first["model"][n] - p.detach()).abs().max().item()
                for n, p in fresh.model.named_parameters())
    assert moved > 1e-3
    averaged = max((first["ema"][n] - p.detach()).abs().max().item()
                   for n, p in fresh.model.named_parameters())
    assert 0.0 < averaged < moved  # the average steps once per rollout, by 1 - EMA_DECAY

    assert main(["train", "--out", str(run), "--resume", "--frames", "512", "--ppo-clip", "0.2",
                 "--ppo-epochs", "1", "--ppo-minibatches", "4"]) == 0
    assert "ppo_epochs 2 -> 1, ppo_clip 0.1 -> 0.2, ppo_minibatches 2 -> 4" in (
        capsys.readouterr().out)
    after = load_checkpoint(run / "latest.pt")
    assert after["counters"]["updates"] == 8 + 2 * 1 * 4
    assert (after["config"]["ppo_epochs"], after["config"]["ppo_clip"]) == (1, 0.2)
    records = [r for r in read_log(run / "log.jsonl") if r["kind"] == "config"]
    assert records[-1]["changed"]["ppo_minibatches"] == [2, 4]

    # a run saved before PPO existed (no ppo_* settings) resumes as PPO
    plain = tmp_path / "plain"
    assert main(["train", "--out", str(plain), "--stage", "a2c", "--frames", "128",
                 *SMALL]) == 0
    ckpt = torch.load(plain / "latest.pt", weights_only=False)
    for name in ("ppo_epochs", "ppo_clip", "ppo_minibatches"):
        del ckpt["config"][name]
    torch.save(ckpt, plain / "latest.pt")
    capsys.readouterr()
    assert main(["train", "--out", str(plain), "--resume", "--frames", "256",
                 "--ppo-epochs", "3"]) == 0
    assert "ppo_epochs 0 -> 3" in capsys.readouterr().out
    assert load_checkpoint(plain / "latest.pt")["counters"]["updates"] == 1 + 3 * 4
