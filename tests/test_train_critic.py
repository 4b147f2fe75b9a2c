"""A2C's frame critic (``--critic frames``): what it reads, that it drives the advantages, that
it trains alone in the warm-up, and that it resumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mstpn.host.train.trainer as trainer_module  # noqa: E402
from mstpn.host.cli import main  # noqa: E402
from mstpn.host.train.critic import FrameCritic  # noqa: E402
from mstpn.host.train.model import MSTPN  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import TrainConfig, Trainer, load_checkpoint  # noqa: E402
from mstpn.spec.presets import get_preset  # noqa: E402
from mstpn.spec.qformat import ACT  # noqa: E402

PIXELS, HIDDEN = 3200, 64


def _frames(gen: torch.Generator, batch: int, lit: float = 0.01) -> torch.Tensor:
    return (torch.rand(batch, PIXELS, generator=gen) < lit).to(torch.float64)


def _short_scored_episodes(monkeypatch) -> None:
    """Pong's episodes last thousands of steps and score a point every few hundred: these end
    every 13 steps (env 0) and 7 (env 1), as a truncation, and lose a point every 5 steps."""
    make = trainer_module.make_vector_env

    def make_short(*args, **kwargs):
        envs = make(*args, **kwargs)
        step, count = envs.step, [0]

        def cut(actions):
            obs, reward, term, trunc, info = step(actions)
            count[0] += 1
            trunc = trunc | (count[0] % np.array([13, 7]) == 0)
            reward = reward - (count[0] % 5 == 0)
            return obs, reward, term, trunc, info

        envs.step = cut
        return envs

    monkeypatch.setattr(trainer_module, "make_vector_env", make_short)


def test_constructor_and_input_checks() -> None:
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="pixels must be a whole number >= 1"):
            FrameCritic(bad, HIDDEN)
    with pytest.raises(ValueError, match="width must be a whole number >= 1"):
        FrameCritic(PIXELS, HIDDEN, width=0)
    critic = FrameCritic(PIXELS, HIDDEN)
    frame = torch.zeros(2, PIXELS, dtype=torch.float64)
    with pytest.raises(ValueError, match="frames of 3200 pixels expected"):
        critic(frame, torch.zeros(2, 100, dtype=torch.float64), torch.zeros(2, HIDDEN))


def test_value_is_the_dense_network_and_reads_motion() -> None:
    gen = torch.Generator().manual_seed(11)
    critic = FrameCritic(PIXELS, HIDDEN, width=32, seed=4)
    with torch.no_grad():  # a fresh read-out is zero; give it weights to compare
        critic.out.weight.normal_(generator=gen)
    bits, prev = _frames(gen, 5), _frames(gen, 5)
    h = torch.randint(-128, 128, (5, HIDDEN), generator=gen).to(torch.float64)
    value = critic(bits, prev, h)
    dense = torch.relu(torch.cat([bits, prev], 1) @ critic.frames
                       + critic.from_h(h * ACT.scale))
    assert torch.allclose(value, critic.out(dense).squeeze(-1), rtol=0, atol=1e-12)
    # the same frame after another frame before it is another state
    assert not torch.allclose(value, critic(bits, _frames(gen, 5), h))
    # a frame with no lit pixel is allowed (an empty bag sums to zero)
    empty = torch.zeros(1, PIXELS, dtype=torch.float64)
    assert math.isfinite(critic(empty, empty, h[:1]).item())


def test_h_is_read_detached() -> None:
    gen = torch.Generator().manual_seed(2)
    critic = FrameCritic(PIXELS, HIDDEN, width=16)
    with torch.no_grad():
        critic.out.weight.fill_(1.0)
    h = torch.randn(3, HIDDEN, dtype=torch.float64, requires_grad=True)
    critic(_frames(gen, 3), _frames(gen, 3), h).sum().backward()
    assert h.grad is None
    assert critic.frames.grad is not None and critic.from_h.weight.grad.abs().sum() > 0


def test_config_checks_the_critic() -> None:
    with pytest.raises(ValueError, match="unknown critic 'pixels'"):
        TrainConfig(out="x", stage="a2c", critic="pixels")
    with pytest.raises(ValueError, match="critic 'frames' is an a2c stage option"):
        TrainConfig(out="x", stage="dagger", critic="frames")
    with pytest.raises(ValueError, match="not with ppo_epochs"):
        TrainConfig(out="x", stage="a2c", critic="frames", ppo_epochs=2)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="critic_lr_scale must be a finite number > 0"):
            TrainConfig(out="x", stage="a2c", critic="frames", critic_lr_scale=bad)
    assert TrainConfig(out="x").critic == "h"


def test_frame_critic_drives_the_advantages_and_sees_each_episode_afresh(tmp_path,
                                                                         monkeypatch) -> None:
    """The values the advantages use are the frame critic's; its frame before is the last
    step's frame, or after a reset the new episode's first frame."""
    cfg = TrainConfig(out=str(tmp_path / "r"), stage="a2c", envs=2, seq=8, frames=2 * 8 * 4 * 4,
                      critic="frames", progress_every=0, checkpoint_every=600, seed=3)
    _short_scored_episodes(monkeypatch)
    trainer = Trainer(cfg)
    calls, rolls = [], []
    forward = trainer.frame_critic.forward

    def spy_forward(bits, prev, h):
        value = forward(bits, prev, h)
        calls.append((bits.clone(), prev.clone(), value.detach().clone()))
        return value

    gae = trainer._gae

    def spy_gae(roll, next_value):
        rolls.append((roll, next_value.clone()))
        return gae(roll, next_value)

    monkeypatch.setattr(trainer.frame_critic, "forward", spy_forward)
    monkeypatch.setattr(trainer, "_gae", spy_gae)
    trainer.run()
    assert len(rolls) == 4 and len(calls) == 4 * (8 + 1)
    dones = []
    for r, (roll, next_value) in enumerate(rolls):
        mine = calls[r * 9:(r + 1) * 9]
        for t in range(8):
            assert torch.equal(roll.values[t].detach(), mine[t][2])
        assert torch.equal(next_value, mine[8][2])  # the bootstrap value is the critic's too
        dones += [d.bool() for d in roll.dones]
    steps = [c for i, c in enumerate(calls) if i % 9 != 8]
    resets = 0
    for k in range(1, len(steps)):
        bits, prev, _ = steps[k]
        last = steps[k - 1][0]
        want = torch.where(dones[k - 1][:, None], bits, last)
        assert torch.equal(prev, want), k
        resets += int(dones[k - 1].sum())
    assert resets == 32 // 13 + 32 // 7  # every cut was seen


def test_warm_up_trains_the_critics_only_and_a_resume_keeps_the_frame_critic(tmp_path,
                                                                             monkeypatch) -> None:
    _short_scored_episodes(monkeypatch)
    run = tmp_path / "warm"
    small = ["--envs", "2", "--seq", "8", "--progress-every", "0",
             "--checkpoint-every", "600", "--seed", "5"]
    assert main(["train", "--out", str(run), "--stage", "a2c", "--critic", "frames",
                 "--critic-warmup", str(10**9), "--frames", str(2 * 8 * 4 * 6), *small]) == 0
    first = load_checkpoint(run / "latest.pt")
    # the frame critic learned: its read-out starts at zero, its frame weights from the seed
    fresh = FrameCritic(PIXELS, HIDDEN, seed=5)
    assert first["frame_critic"]["out.weight"].abs().sum() > 0
    assert not torch.allclose(first["frame_critic"]["frames"].double(), fresh.frames, atol=1e-6)
    # of the network, only the h critic's head moved
    torch.manual_seed(5)
    init = MSTPN(get_preset("icebreaker"), seed=5).state_dict()
    moved = {k for k, v in init.items() if not torch.allclose(first["model"][k], v, atol=1e-6)}
    assert moved and all(k.startswith("critic.") for k in moved), moved
    progress = [r for r in read_log(run / "log.jsonl") if r["kind"] == "progress"]
    assert progress and all(math.isfinite(r["value_loss"]) and math.isfinite(r["h_value_loss"])
                            for r in progress)

    # the resume starts from the saved frame critic, goes on, and may not swap the critic
    assert main(["train", "--out", str(run), "--resume", "--critic", "h"]) == 2
    cfg = TrainConfig(**{**first["config"], "frames": 2 * 8 * 4 * 8})
    trainer = Trainer(cfg, resume=True)
    for k, v in trainer.frame_critic.state_dict().items():
        assert torch.equal(v, first["frame_critic"][k].double())
    trainer.run()
    second = load_checkpoint(run / "latest.pt")
    assert second["counters"]["updates"] > first["counters"]["updates"]
