"""Training smoke test: every stage for a few hundred steps, resume, export, evaluate.

Slow (about a minute or two on 2 CPU cores) and needs torch (``uv run --extra train``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mstpn.host.cli import main  # noqa: E402
from mstpn.host.export import export_checkpoint  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import load_checkpoint, model_from_checkpoint  # noqa: E402
from mstpn.model.golden import GoldenModel  # noqa: E402
from mstpn.model.image import ParamImage  # noqa: E402

SMALL = ["--envs", "2", "--batch", "4", "--seq", "8", "--burn-in", "4",
         "--label-steps-per-update", "16", "--min-buffer", "64", "--max-episode-steps", "120",
         "--progress-every", "1", "--checkpoint-every", "5"]


def _counters(run) -> dict:
    return load_checkpoint(run / "latest.pt")["counters"]


@pytest.mark.slow
def test_stages_resume_export_eval(tmp_path, capsys) -> None:
    ram = tmp_path / "dagger-ram"
    assert main(["train", "--out", str(ram), "--stage", "dagger", "--teacher", "ram",
                 "--frames", str(4 * 300), *SMALL]) == 0
    first = _counters(ram)
    assert first["frames"] >= 4 * 300 and first["updates"] > 0
    assert (ram / "curve.png").exists() and (ram / "config.json").exists()
    assert any(r["kind"] == "episode" for r in read_log(ram / "log.jsonl"))

    # a second start without --resume is refused; --resume continues and extends the budget
    assert main(["train", "--out", str(ram), "--frames", str(4 * 300), *SMALL]) == 2
    assert main(["train", "--out", str(ram), "--resume", "--frames", str(4 * 500)]) == 0
    second = _counters(ram)
    assert second["frames"] >= 4 * 500 and second["updates"] > first["updates"]
    assert second["wall_s"] > first["wall_s"]

    search = tmp_path / "dagger-search"
    assert main(["train", "--out", str(search), "--stage", "dagger", "--teacher", "search",
                 "--init", str(ram / "latest.pt"), "--frames", str(4 * 200), *SMALL]) == 0
    aim = tmp_path / "dagger-aim"
    assert main(["train", "--out", str(aim), "--stage", "dagger", "--teacher", "aim",
                 "--init", str(search / "latest.pt"), "--frames", str(4 * 200), *SMALL]) == 0
    assert _counters(aim)["updates"] > 0

    # --critic-warmup: over the whole budget only the critic head moves; the policy is untouched
    warm = tmp_path / "a2c-warm"
    assert main(["train", "--out", str(warm), "--stage", "a2c", "--init",
                 str(search / "latest.pt"), "--frames", str(4 * 2 * 8 * 4),
                 "--critic-warmup", str(10**9), *SMALL]) == 0
    before = load_checkpoint(search / "latest.pt")["model"]
    after = load_checkpoint(warm / "latest.pt")["model"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("critic.") for k in moved), moved

    a2c = tmp_path / "a2c"
    assert main(["train", "--out", str(a2c), "--stage", "a2c", "--init",
                 str(search / "latest.pt"), "--frames", str(4 * 2 * 8 * 20),
                 "--encoder-lr-scale", "0", *SMALL]) == 0
    assert _counters(a2c)["updates"] >= 20
    # --encoder-lr-scale 0 freezes the 2-bit encoder; the plastic layer and the head learn
    after = load_checkpoint(a2c / "latest.pt")["model"]
    assert torch.equal(before["enc_w"], after["enc_w"])
    assert not torch.equal(before["w"], after["w"])
    assert not torch.equal(before["head_w"], after["head_w"])

    image_path = tmp_path / "agent.img"
    assert main(["export", str(a2c / "latest.pt"), "-o", str(image_path)]) == 0
    spread_path = tmp_path / "agent-spread.img"
    assert main(["export", str(a2c / "latest.pt"), "-o", str(spread_path), "--spread", "0.1",
                 "--spread-seed", "3"]) == 0
    assert ParamImage.load(spread_path).spread["sigma"] == 0.1
    capsys.readouterr()
    assert main(["eval", "--params", str(image_path), "--episodes", "1", "--seed", "900",
                 "--max-steps", "200", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["episodes"][0]["steps"] == 200


def test_export_matches_student(tmp_path) -> None:
    """A checkpoint's student and its exported image act alike, step for step."""
    from mstpn.host.train.trainer import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(out=str(tmp_path / "run"), seed=4))
    with torch.no_grad():
        trainer.model.plasticity.mul_(6.0)
    trainer.save()
    image = export_checkpoint(tmp_path / "run" / "latest.pt", tmp_path / "a.img")
    assert image.meta["stage"] == "dagger" and image.meta["teacher"] == "search"
    model = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "latest.pt"))
    golden = GoldenModel.from_image(image, batch=2)
    rng = np.random.default_rng(0)
    state = model.initial_state(2)
    with torch.no_grad():
        for _ in range(20):
            bits = rng.random((2, 80, 40)) < 0.02
            logits, _, state = model.step(torch.as_tensor(bits.reshape(2, -1), dtype=torch.float64),
                                          state)
            out = golden.step(bits)
            np.testing.assert_array_equal(logits.argmax(1).numpy(), out.action)
            np.testing.assert_array_equal(state[1].numpy().astype(np.int64), out.h)


def test_running_average_rides_along_and_exports(tmp_path) -> None:
    """The averaged parameters follow each update by 1 - EMA_DECAY, are saved, survive a resume
    and export on request; a checkpoint without them says so."""
    from mstpn.host.train.trainer import EMA_DECAY, TrainConfig, Trainer

    cfg = TrainConfig(out=str(tmp_path / "run"), seed=4)
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    trainer._step()
    for name, param in trainer.model.named_parameters():
        expected = EMA_DECAY * before[name] + (1 - EMA_DECAY) * param.detach()
        torch.testing.assert_close(trainer.ema[name], expected, rtol=0, atol=1e-12)
        assert not torch.equal(param.detach(), before[name])
    trainer.save()
    resumed = Trainer(cfg, resume=True)
    for name, value in trainer.ema.items():
        torch.testing.assert_close(resumed.ema[name], value.float().double(), rtol=0, atol=0)

    latest = export_checkpoint(tmp_path / "run" / "latest.pt", tmp_path / "latest.img")
    averaged = export_checkpoint(tmp_path / "run" / "latest.pt", tmp_path / "ema.img", ema=True)
    assert averaged.meta["weights"] == "running average" and latest.meta["weights"] == "latest"
    assert not np.array_equal(averaged.arrays["w"], latest.arrays["w"])

    ckpt = torch.load(tmp_path / "run" / "latest.pt", weights_only=False)
    ckpt["ema"] = None
    torch.save(ckpt, tmp_path / "old.pt")
    assert main(["export", str(tmp_path / "old.pt"), "-o", str(tmp_path / "x.img"), "--ema"]) == 2
