"""Where A2C's network runs (``--torch-device``), and an A2C run moved to more envs on a resume.

The GPU cases run only where torch sees one (the device machine of docs/training.md, "On a
GPU"); everywhere else they are skipped, and the CPU cases check the rest. The network's
arithmetic on a GPU is checked against the golden model in test_train_model.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mstpn.host.cli import main  # noqa: E402
from mstpn.host.export import export_checkpoint  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import (  # noqa: E402
    TrainConfig,
    Trainer,
    load_checkpoint,
    resume_config,
    torch_device,
)

SMALL = ["--seq", "8", "--max-episode-steps", "120", "--progress-every", "0",
         "--checkpoint-every", "600"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU")


def test_config_checks_the_torch_device() -> None:
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", ""):
        with pytest.raises(ValueError, match="unknown torch_device"):
            TrainConfig(out="x", stage="a2c", torch_device=bad)
    with pytest.raises(ValueError, match="an a2c stage option"):
        TrainConfig(out="x", stage="dagger", torch_device="cuda")
    assert TrainConfig(out="x").torch_device == "cpu"
    assert TrainConfig(out="x", stage="a2c", torch_device="cuda:1").torch_device == "cuda:1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a GPU-less torch")
def test_asking_for_a_gpu_that_is_not_there_is_refused_by_name(tmp_path, capsys) -> None:
    with pytest.raises(RuntimeError, match="--torch-device cuda: this torch"):
        torch_device("cuda")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--stage", "a2c", "--envs", "2", "--frames", "64",
                 "--torch-device", "cuda", *SMALL]) == 2
    assert "--torch-device cuda: this torch" in capsys.readouterr().err
    assert not (run / "latest.pt").exists()  # refused before anything ran
    with pytest.raises(RuntimeError, match="--torch-device cuda: this torch"):
        Trainer(TrainConfig(out=str(tmp_path / "lib"), stage="a2c", torch_device="cuda"))
    assert not (tmp_path / "lib").exists()  # the trainer checks before it makes the folder


def test_an_a2c_resume_may_change_its_envs_and_a_dagger_resume_may_not(tmp_path,
                                                                       capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--stage", "a2c", "--envs", "2", "--frames", "128",
                 *SMALL]) == 0
    before = load_checkpoint(run / "latest.pt")["counters"]["frames"]
    assert main(["train", "--out", str(run), "--resume", "--frames", "512", "--envs", "4",
                 "--env-threads", "2"]) == 0
    assert "envs 2 -> 4, env_threads 1 -> 2" in capsys.readouterr().out
    records = read_log(run / "log.jsonl")
    assert [r["changed"] for r in records if r["kind"] == "config"] == [
        {"envs": [2, 4], "env_threads": [1, 2]}]
    ckpt = load_checkpoint(run / "latest.pt")
    assert ckpt["config"]["envs"] == 4
    # a rollout of 4 envs x 8 steps x 4 frames: the resumed run moved in those strides
    assert (ckpt["counters"]["frames"] - before) % (4 * 8 * 4) == 0
    assert ckpt["counters"]["frames"] > before

    dagger = tmp_path / "dagger"
    assert main(["train", "--out", str(dagger), "--stage", "dagger", "--teacher", "ram",
                 "--envs", "2", "--frames", "400", "--min-buffer", "64", "--batch", "2",
                 "--burn-in", "4", *SMALL]) == 0
    assert main(["train", "--out", str(dagger), "--resume", "--envs", "4"]) == 2
    assert "a dagger run keeps its envs" in capsys.readouterr().err


def test_the_device_is_how_to_run_not_what(tmp_path) -> None:
    """A resume runs where its own call says (the CPU by default), not where the run last ran."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--stage", "a2c", "--envs", "2", "--frames", "64",
                 "--torch-device", "cpu", *SMALL]) == 0
    cfg, changes = resume_config(run, {"frames": 128})
    assert cfg.torch_device == "cpu" and changes == {}
    cfg, changes = resume_config(run, {"frames": 128, "torch_device": "cuda:0"})
    assert cfg.torch_device == "cuda:0" and changes == {}  # not a change of the run


@needs_gpu
def test_a2c_and_ppo_run_on_the_gpu_and_their_checkpoints_load_anywhere(tmp_path) -> None:
    """A CPU run resumed on the GPU with more envs, then as PPO at a learning rate of 0: the
    replay, on the GPU, is the rollout (the first log-ratio is 0 to rounding), and every
    checkpoint holds CPU tensors that the CPU-only export reads."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--stage", "a2c", "--envs", "2", "--frames", "128",
                 *SMALL]) == 0
    assert main(["train", "--out", str(run), "--resume", "--frames", "512", "--envs", "8",
                 "--torch-device", "cuda"]) == 0
    ckpt = load_checkpoint(run / "latest.pt")
    assert ckpt["counters"]["frames"] >= 512
    tensors = [*ckpt["model"].values(), *ckpt["ema"].values()]
    assert all(t.device.type == "cpu" for t in tensors)
    cfg, _ = resume_config(run, {"frames": 512 + 3 * 8 * 8 * 4, "torch_device": "cuda",
                                 "ppo_epochs": 2, "ppo_minibatches": 2, "lr": 0.0})
    trainer = Trainer(cfg, resume=True)
    assert trainer.model.w.device.type == "cuda"
    trainer.run()
    assert trainer.ppo_stats["first_log_ratio"] < 1e-12
    image = export_checkpoint(run / "latest.pt", tmp_path / "gpu.img", ema=True)
    assert image.meta["frames"] == trainer.counters["frames"]
