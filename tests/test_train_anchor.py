"""A2C anchored to the policy it starts from (``--kl-weight``), and ``--init-ema``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mstpn.host.cli import main  # noqa: E402
from mstpn.host.export import export_checkpoint  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import (  # noqa: E402
    TrainConfig,
    Trainer,
    load_checkpoint,
    policy_kl,
    resume_config,
)

SMALL = ["--envs", "2", "--seq", "8", "--max-episode-steps", "120", "--progress-every", "0",
         "--checkpoint-every", "600", "--encoder-lr-scale", "0"]


def test_policy_kl_is_zero_only_at_the_reference_and_pulls_toward_it() -> None:
    gen = torch.Generator().manual_seed(3)
    ref = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 4
    assert torch.equal(policy_kl(ref, ref.clone()), torch.zeros(64, dtype=torch.float64))
    # a shift of every logit by one constant is the same distribution
    assert torch.allclose(policy_kl(ref, ref + 7.5), torch.zeros(64, dtype=torch.float64))
    student = (ref + torch.randn(64, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    kl = policy_kl(ref, student)
    p, q = torch.softmax(ref, -1), torch.softmax(student.detach(), -1)
    assert torch.allclose(kl.detach(), (p * (p.log() - q.log())).sum(-1))
    assert (kl > 0).all()
    # its gradient is q - p: a small step against it lowers every row's divergence
    kl.sum().backward()
    assert torch.allclose(student.grad, q - p)
    assert (policy_kl(ref, student.detach() - 0.1 * student.grad) < kl.detach()).all()


def test_reverse_kl_is_the_students_divergence_and_lets_it_grow_surer() -> None:
    gen = torch.Generator().manual_seed(8)
    ref = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 4
    assert torch.equal(policy_kl(ref, ref.clone(), reverse=True),
                       torch.zeros(64, dtype=torch.float64))
    student = (ref + torch.randn(64, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    kl = policy_kl(ref, student, reverse=True)
    p, q = torch.softmax(ref, -1), torch.softmax(student.detach(), -1)
    assert torch.allclose(kl.detach(), (q * (q.log() - p.log())).sum(-1))
    assert not torch.allclose(kl.detach(), policy_kl(ref, student.detach()))
    kl.sum().backward()
    assert (policy_kl(ref, student.detach() - 0.1 * student.grad, reverse=True)
            < kl.detach()).all()
    # A reference that hesitates (0.8 / 0.1 / 0.1) and a student sure of its first choice
    # (0.98 / 0.01 / 0.01): the forward KL charges the student for the actions it dropped,
    # the reverse one charges it far less.
    hesitant = torch.tensor([[0.8, 0.1, 0.1]], dtype=torch.float64).log()
    sure = torch.tensor([[0.98, 0.01, 0.01]], dtype=torch.float64).log()
    forward, reverse = policy_kl(hesitant, sure), policy_kl(hesitant, sure, reverse=True)
    assert torch.allclose(forward, torch.tensor([0.8 * np.log(0.8 / 0.98) + 0.2 * np.log(10)],
                                                dtype=torch.float64))
    assert reverse < 0.6 * forward


def test_config_checks_the_anchor_and_init_ema() -> None:
    with pytest.raises(ValueError, match="kl_weight must be a finite number"):
        TrainConfig(out="x", stage="a2c", init="a.pt", kl_weight=-0.5)
    with pytest.raises(ValueError, match="kl_weight must be a finite number"):
        TrainConfig(out="x", stage="a2c", init="a.pt", kl_weight=float("nan"))
    with pytest.raises(ValueError, match="kl_weight is an a2c stage option"):
        TrainConfig(out="x", stage="dagger", init="a.pt", kl_weight=1.0)
    with pytest.raises(ValueError, match="kl_weight needs init"):
        TrainConfig(out="x", stage="a2c", kl_weight=1.0)
    with pytest.raises(ValueError, match="init_ema needs init"):
        TrainConfig(out="x", init_ema=True)
    with pytest.raises(ValueError, match="unknown kl_direction 'backward': 'forward' or "
                                         "'reverse'"):
        TrainConfig(out="x", stage="a2c", init="a.pt", kl_weight=1.0, kl_direction="backward")


def _init_run(tmp_path, ema: bool = True):
    """A saved run whose running average differs from its latest parameters."""
    trainer = Trainer(TrainConfig(out=str(tmp_path / "init"), seed=4))
    with torch.no_grad():
        for name in trainer.ema:
            trainer.ema[name] = trainer.ema[name] + 0.01 * (1 + torch.arange(
                trainer.ema[name].numel(), dtype=torch.float64).reshape(trainer.ema[name].shape)
                % 7)
    trainer.save()
    path = tmp_path / "init" / "latest.pt"
    if not ema:
        ckpt = torch.load(path, weights_only=False)
        ckpt["ema"] = None
        torch.save(ckpt, path)
    return path, load_checkpoint(path)


def test_init_ema_starts_from_the_running_average(tmp_path) -> None:
    path, ckpt = _init_run(tmp_path)
    latest = Trainer(TrainConfig(out=str(tmp_path / "a"), init=str(path)))
    average = Trainer(TrainConfig(out=str(tmp_path / "b"), init=str(path), init_ema=True))
    for name, param in latest.model.named_parameters():
        assert torch.equal(param.detach(), ckpt["model"][name])
    for name, param in average.model.named_parameters():
        assert torch.equal(param.detach(), ckpt["ema"][name])
        assert not torch.equal(param.detach(), ckpt["model"][name]), name
    # the new run's own average starts where it starts
    assert all(torch.equal(average.ema[n], p.detach())
               for n, p in average.model.named_parameters())
    assert average.reference is None

    bare, _ = _init_run(tmp_path / "bare", ema=False)
    with pytest.raises(ValueError, match="holds no running average"):
        Trainer(TrainConfig(out=str(tmp_path / "c"), init=str(bare), init_ema=True))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(TrainConfig(out=str(tmp_path / "d"), stage="a2c", init=str(tmp_path / "no.pt"),
                            kl_weight=1.0))


@pytest.mark.slow
def test_kl_anchor_holds_the_student_near_the_frozen_reference(tmp_path, capsys) -> None:
    path, ckpt = _init_run(tmp_path)
    frames = 4 * 2 * 8 * 24  # 24 updates

    # Over a critic warm-up as long as the run, the policy does not move: the divergence
    # from the reference (the init's average) is exactly zero at every progress line.
    warm = tmp_path / "warm"
    assert main(["train", "--out", str(warm), "--stage", "a2c", "--init", str(path),
                 "--init-ema", "--kl-weight", "1", "--critic-warmup", str(10**9),
                 "--frames", str(frames), "--lr", "3e-3", *SMALL]) == 0
    kls = [r["kl"] for r in read_log(warm / "log.jsonl") if r["kind"] == "progress"]
    assert kls and all(k == 0.0 for k in kls)
    assert " kl 0.0000" in capsys.readouterr().out

    # Learning, the same seed with and without the anchor: the anchored student ends nearer
    # the reference, and the reference itself is never trained.
    ends = {}
    for weight in (0.0, 30.0):
        cfg = TrainConfig(out=str(tmp_path / f"kl-{weight}"), stage="a2c", init=str(path),
                          init_ema=True, kl_weight=weight, frames=frames, envs=2, seq=8,
                          lr=3e-3, encoder_lr_scale=0.0, entropy=0.0, max_episode_steps=120,
                          progress_every=0.0, checkpoint_every=600.0, seed=5)
        trainer = Trainer(cfg)
        trainer.run()
        reference = Trainer(TrainConfig(out=str(tmp_path / "ref"), stage="a2c", init=str(path),
                                        init_ema=True, kl_weight=1.0)).reference
        ends[weight] = _divergence(trainer.model, reference)
        if trainer.reference is not None:
            for name, param in trainer.reference.named_parameters():
                assert torch.equal(param, ckpt["ema"][name]), name
    assert ends[30.0] < ends[0.0], ends

    # --resume rebuilds the reference from the run's init and goes on logging the divergence
    run = tmp_path / "kl-30.0"
    assert main(["train", "--out", str(run), "--resume", "--frames", str(frames + 4 * 2 * 8 * 4)]
                ) == 0
    records = [r for r in read_log(run / "log.jsonl") if r["kind"] == "progress"]
    assert records[-1]["frames"] > frames and records[-1]["kl"] is not None
    assert load_checkpoint(run / "latest.pt")["config"]["kl_weight"] == 30.0

    # The exported image names what made it: the init and the anchor, not the unused teacher.
    meta = export_checkpoint(run / "latest.pt", tmp_path / "a2c.img", ema=True).meta
    assert meta["stage"] == "a2c" and "teacher" not in meta
    assert meta["init"] == str(path) and meta["kl_weight"] == 30.0
    assert meta["kl_direction"] == "forward"


def _divergence(model, reference) -> float:
    """Mean KL(reference || model) over fixed random sparse frames played as one episode."""
    rng = np.random.default_rng(11)
    pixels = model.preset.frame.pixels
    bits = torch.as_tensor((rng.random((40, 4, pixels)) < 0.02).astype(np.float64))
    total = 0.0
    with torch.no_grad():
        s, r = model.initial_state(4), reference.initial_state(4)
        for t in range(len(bits)):
            logits, _, s = model.step(bits[t], s)
            ref_logits, _, r = reference.step(bits[t], r)
            total += float(policy_kl(ref_logits, logits).mean())
    return total / len(bits)


def test_resume_may_change_the_step_sizes_and_refuses_the_rest(tmp_path, capsys) -> None:
    """A resume keeps the run's settings; --lr, --encoder-lr-scale, --kl-weight and --entropy
    may change, are logged and reach the optimiser and the saved settings; any other setting
    given differently is refused before anything runs."""
    path, _ = _init_run(tmp_path)
    run = tmp_path / "run"
    cfg = TrainConfig(out=str(run), stage="a2c", init=str(path), init_ema=True, kl_weight=0.1,
                      frames=64, envs=2, seq=8, lr=1e-4, encoder_lr_scale=0.5, entropy=0.0)
    trainer = Trainer(cfg)
    trainer.counters["frames"] = 64  # the budget is spent: a resume to 64 only checkpoints
    trainer.save()
    before = load_checkpoint(run / "latest.pt")
    log = (run / "log.jsonl").read_bytes()

    # refused, naming the setting, the run's value and the one given; nothing is written
    assert main(["train", "--out", str(run), "--resume", "--batch", "4", "--seq", "8",
                 "--lr", "5e-5"]) == 2
    err = capsys.readouterr().err
    assert "batch (the run's 16, given 4)" in err and "seq" not in err.split("keeps")[1]
    assert "may change only lr, encoder_lr_scale, kl_weight, entropy" in err
    assert main(["train", "--out", str(run), "--resume", "--level-shift", "2"]) == 2
    assert "device" in capsys.readouterr().err
    assert (run / "log.jsonl").read_bytes() == log
    assert load_checkpoint(run / "latest.pt")["counters"] == before["counters"]

    # the same values given again are no change
    same, changes = resume_config(run, {"envs": 2, "lr": 1e-4, "frames": 8})
    assert changes == {} and same.stage == "a2c" and same.kl_weight == 0.1
    assert same.frames == 64  # a smaller budget does not shrink the run's

    assert main(["train", "--out", str(run), "--resume", "--lr", "5e-5", "--kl-weight", "0.05",
                 "--entropy", "0.001", "--envs", "2", "--encoder-lr-scale", "2"]) == 0
    assert ("resumed with lr 0.0001 -> 5e-05, encoder_lr_scale 0.5 -> 2.0, kl_weight 0.1 -> 0.05, "
            "entropy 0.0 -> 0.001") in capsys.readouterr().out
    records = [r for r in read_log(run / "log.jsonl") if r["kind"] == "config"]
    assert records == [{"kind": "config", "frames": 64, "changed": {
        "lr": [1e-4, 5e-5], "encoder_lr_scale": [0.5, 2.0], "kl_weight": [0.1, 0.05],
        "entropy": [0.0, 0.001]}}]
    after = load_checkpoint(run / "latest.pt")
    saved = after["config"]
    assert (saved["lr"], saved["encoder_lr_scale"], saved["kl_weight"], saved["entropy"]) == (
        5e-5, 2.0, 0.05, 0.001)
    # the saved optimiser state came back with the new rates: the encoder's at its new scale,
    # the rest at the new lr
    rates = [group["lr"] for group in after["optimizer"]["param_groups"]]
    assert rates == [5e-5 * 2.0, 5e-5]
    # and the reference stays the run's init
    assert after["config"]["init"] == str(path)


def test_each_resume_changeable_setting_is_a_run_setting_and_an_option(capsys,
                                                                       monkeypatch) -> None:
    """The names a resume may change (kept torch-free for the CLI) are TrainConfig fields, each
    has its option, and the ``--resume`` help names every one."""
    from mstpn.host.cli import build_parser
    from mstpn.host.train.settings import KL_DIRECTIONS, RESUME_CHANGEABLE, STAGES, option_name

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    [resume_help] = [line for line in capsys.readouterr().out.splitlines()
                     if line.strip().startswith("--resume")]
    for name in RESUME_CHANGEABLE:
        assert name in TrainConfig.__dataclass_fields__
        kind = type(TrainConfig.__dataclass_fields__[name].default)
        value = KL_DIRECTIONS[-1] if name == "kl_direction" else kind(2.5)
        args = parser.parse_args(["train", "--out", "x", option_name(name), str(value)])
        assert getattr(args, name) == value
        assert option_name(name) in resume_help
    assert TrainConfig(out="x").stage == STAGES[0]
    with pytest.raises(ValueError, match="'dagger' or 'a2c'"):
        TrainConfig(out="x", stage="ppo")


def test_a_resume_may_turn_the_anchor_around(tmp_path, capsys, monkeypatch) -> None:
    """--kl-direction reverse on a resume is logged and saved, and from then on every KL the
    update takes is the reverse one."""
    import mstpn.host.train.trainer as trainer_module

    calls = []
    real = trainer_module.policy_kl

    def spy(ref_logits, logits, reverse=False):
        calls.append(reverse)
        return real(ref_logits, logits, reverse)

    monkeypatch.setattr(trainer_module, "policy_kl", spy)
    path, _ = _init_run(tmp_path)
    run = tmp_path / "run"
    frames = 4 * 2 * 8 * 4
    assert main(["train", "--out", str(run), "--stage", "a2c", "--init", str(path), "--init-ema",
                 "--kl-weight", "1", "--frames", str(frames), "--lr", "1e-3", *SMALL]) == 0
    assert calls and not any(calls)
    calls.clear()
    assert main(["train", "--out", str(run), "--resume", "--frames", str(2 * frames),
                 "--kl-direction", "reverse"]) == 0
    assert "kl_direction forward -> reverse" in capsys.readouterr().out
    assert len(calls) == 2 * 8 * 4 // 2 and all(calls)  # 4 rollouts of 8 steps
    records = [r for r in read_log(run / "log.jsonl") if r["kind"] == "config"]
    assert records[-1]["changed"] == {"kl_direction": ["forward", "reverse"]}
    assert load_checkpoint(run / "latest.pt")["config"]["kl_direction"] == "reverse"
    meta = export_checkpoint(run / "latest.pt", tmp_path / "reversed.img", ema=True).meta
    assert (meta["kl_weight"], meta["kl_direction"]) == (1.0, "reverse")
    # PPO's replay takes the reverse one too: the rollout's KLs and the replay's
    calls.clear()
    assert main(["train", "--out", str(run), "--resume", "--frames", str(3 * frames),
                 "--ppo-epochs", "1", "--ppo-minibatches", "1"]) == 0
    assert len(calls) == 2 * 2 * 8 * 4 // 2 and all(calls)


def test_a_resume_takes_how_often_to_report_from_its_call(tmp_path) -> None:
    """--progress-every and --checkpoint-every say how a run reports, not what it does: a
    resume may give new ones (not logged as a change) and otherwise keeps the run's."""
    run = tmp_path / "run"
    trainer = Trainer(TrainConfig(out=str(run), stage="a2c", frames=64, envs=2, seq=8,
                                  progress_every=60.0, checkpoint_every=300.0))
    trainer.save()
    kept, changes = resume_config(run, {"frames": 64})
    assert (kept.progress_every, kept.checkpoint_every, changes) == (60.0, 300.0, {})
    given, changes = resume_config(run, {"progress_every": 5.0, "checkpoint_every": 30.0})
    assert (given.progress_every, given.checkpoint_every, changes) == (5.0, 30.0, {})
