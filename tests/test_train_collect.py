"""DAgger's collectors: the same run in one process or with worker processes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mstpn.host.cli import main  # noqa: E402
from mstpn.host.train.collect import (  # noqa: E402
    Collector,
    CollectorSpec,
    WorkerCollectors,
    _codes_from_wire,
    _codes_to_wire,
    split_envs,
)
from mstpn.host.train.phase import AUX_TARGETS  # noqa: E402
from mstpn.host.train.runlog import read_log  # noqa: E402
from mstpn.host.train.trainer import TrainConfig, load_checkpoint  # noqa: E402

SMALL = ["--envs", "2", "--batch", "4", "--seq", "8", "--burn-in", "4",
         "--label-steps-per-update", "16", "--min-buffer", "64", "--max-episode-steps", "50",
         "--progress-every", "1", "--checkpoint-every", "60", "--teacher", "ram", "--seed", "3"]


def _spec(**kw) -> CollectorSpec:
    base = dict(preset="icebreaker", device={}, seed=1, teacher="ram", env_ids=[0, 1],
                total_envs=2, seed_base=10_000, first_episode=0, rng_seed=[1, 0],
                max_episode_steps=7)
    return CollectorSpec(**{**base, **kw})


def test_codes_cross_the_pipe_inside_the_message() -> None:
    """The student's codes reach a worker as plain arrays, bit for bit: a tensor would travel as
    a shared-memory handle fetched from the trainer, which a SIGTERM can cut off mid-fetch."""
    from multiprocessing.reduction import ForkingPickler

    gen = torch.Generator().manual_seed(5)
    codes = {"w": torch.randint(-128, 128, (64, 40), generator=gen, dtype=torch.int64),
             "lam": torch.randint(0, 256, (64, 128), generator=gen).to(torch.float64)}
    assert b"rebuild_storage" in bytes(ForkingPickler.dumps(codes))  # what the check catches
    wire = _codes_to_wire(codes)
    assert b"rebuild_storage" not in bytes(ForkingPickler.dumps(wire))
    back = _codes_from_wire(wire)
    assert back.keys() == codes.keys()
    for name, code in codes.items():
        assert back[name].dtype == code.dtype and torch.equal(back[name], code)
    assert _codes_to_wire(None) is None and _codes_from_wire(None) is None


def test_split_envs_deals_evenly_and_names_bad_counts() -> None:
    assert split_envs(5, 0) == [[0, 1, 2, 3, 4]]
    assert split_envs(5, 2) == [[0, 2, 4], [1, 3]]
    with pytest.raises(ValueError, match="3 workers for 2 envs"):
        split_envs(2, 3)
    with pytest.raises(ValueError, match="workers must be 0"):
        split_envs(2, -1)
    with pytest.raises(ValueError, match="3 workers for 2 envs"):
        TrainConfig(out="x", envs=2, workers=3)
    assert main(["train", "--out", "unused", "--envs", "2", "--workers", "3"]) == 2


def test_collector_segments_follow_episodes() -> None:
    """Every step comes back once, in order; an episode cut at 7 steps ends its segment."""
    collector = Collector(_spec())
    model = collector.model
    codes = {k: v.detach() for k, v in model.codes().items()}
    got = {0: [], 1: []}
    ended = []
    for _ in range(4):
        for seg in collector.collect(codes, beta=1.0, steps=3):
            assert len(seg.packed) == len(seg.labels) > 0
            got[seg.env].extend(seg.labels.tolist())
            if seg.ended:
                ended.append((seg.env, seg.steps, seg.driver))
    assert len(got[0]) == len(got[1]) == 12
    # 12 steps per env with episodes cut at 7: one ended episode each, driven by the teacher
    assert sorted(ended) == [(0, 7, "teacher"), (1, 7, "teacher")]
    with pytest.raises(RuntimeError, match="no student codes"):
        Collector(_spec()).collect(None, beta=0.0, steps=1)


def test_collector_ends_a_game_at_the_freeze(monkeypatch) -> None:
    """An episode still going at the freeze (moved to frame 20, step 5) ends with that step,
    before the 7-step cut."""
    import mstpn.spec.env as env_module

    monkeypatch.setattr(env_module, "FREEZE_FRAME", 20)
    collector = Collector(_spec())
    codes = {k: v.detach() for k, v in collector.model.codes().items()}
    ended = [(seg.env, seg.steps) for seg in collector.collect(codes, beta=1.0, steps=6)
             if seg.ended]
    assert sorted(ended) == [(0, 5), (1, 5)]


def test_worker_reports_its_failure() -> None:
    with pytest.raises(RuntimeError, match="unknown teacher 'nope'"):
        WorkerCollectors([_spec(teacher="nope")])


@pytest.mark.slow
def test_workers_give_the_same_run(tmp_path) -> None:
    """--workers 1 (a second process collects while the trainer updates) trains the same weights,
    bit for bit, as the single-process run, and logs the same episodes."""
    runs = {}
    for workers in (0, 1):
        out = tmp_path / f"w{workers}"
        assert main(["train", "--out", str(out), "--frames", str(4 * 400), "--workers",
                     str(workers), *SMALL]) == 0
        runs[workers] = out
    a = load_checkpoint(runs[0] / "latest.pt")
    b = load_checkpoint(runs[1] / "latest.pt")
    assert a["counters"]["updates"] > 10
    for key in ("frames", "updates", "episodes", "labels"):
        assert a["counters"][key] == b["counters"][key]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name

    def episodes(run):
        return [(r["score"], r["steps"], r["driver"]) for r in read_log(run / "log.jsonl")
                if r["kind"] == "episode"]

    assert episodes(runs[0]) == episodes(runs[1]) and len(episodes(runs[0])) >= 6


@pytest.mark.slow
def test_resume_restores_the_replay_buffer(tmp_path, capsys) -> None:
    """A checkpoint names its buffer file; --resume refills the buffer from it (finished and
    unfinished episodes), and a damaged file leaves the buffer empty with a message."""
    from mstpn.host.train.trainer import EpisodeBuffer

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--frames", str(4 * 300), *SMALL]) == 0
    ckpt = load_checkpoint(out / "latest.pt")
    files = sorted(p.name for p in out.glob("buffer-*.npz"))
    assert files == [ckpt["buffer"]] == [f"buffer-{ckpt['counters']['updates']}.npz"]
    buffer = EpisodeBuffer(10**6, np.random.default_rng(0))
    # every labelled step so far, finished episodes and unfinished ones alike
    assert buffer.add_bytes((out / files[0]).read_bytes()) == ckpt["counters"]["labels"]
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--frames", str(4 * 400)]) == 0
    restored = f"replay buffer restored, {ckpt['counters']['labels']:,} steps"
    assert restored in capsys.readouterr().out
    second = load_checkpoint(out / "latest.pt")
    assert [p.name for p in out.glob("buffer-*.npz")] == [second["buffer"]] != files

    (out / second["buffer"]).write_bytes(b"not a buffer")
    assert main(["train", "--out", str(out), "--resume", "--frames", str(4 * 450)]) == 0
    assert "the replay buffer starts empty" in capsys.readouterr().err


def test_updates_wait_for_a_window_that_fits(tmp_path) -> None:
    """--min-buffer below envs x seq: no update until some episode holds a whole window (this
    used to sample from an empty pool and crash)."""
    from mstpn.host.train.trainer import EpisodeBuffer

    with pytest.raises(ValueError, match="nothing to sample"):
        EpisodeBuffer(100, np.random.default_rng(0)).sample(2, 4, 8, 3200)
    assert main(["train", "--out", str(tmp_path / "run"), "--teacher", "ram", "--envs", "2",
                 "--seq", "32", "--burn-in", "4", "--batch", "2", "--min-buffer", "16",
                 "--frames", str(4 * 2 * 40), "--progress-every", "60"]) == 0
    counters = load_checkpoint(tmp_path / "run" / "latest.pt")["counters"]
    # chunks of 16 steps per env until the budget of 80 steps is passed: 3 chunks; a window of
    # 32 first fits in an episode of 48 steps, after the third
    assert counters["steps"] == 3 * 16 * 2 and counters["updates"] == 1


@pytest.mark.slow
def test_two_sigterms_still_save(tmp_path) -> None:
    """`timeout` and `pkill -f` each send a SIGTERM: with a worker process running, the trainer
    still stops its worker and saves the checkpoint and the buffer."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mstpn.host.cli", "train", "--out", str(out), "--workers", "1",
         "--frames", "10000000", *SMALL],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the first progress line: the loop and the worker run
            if line.startswith("[dagger]"):
                break
        proc.send_signal(signal.SIGTERM)
        seen = []
        for line in proc.stderr:  # the second arrives while the checkpoint is being written
            seen.append(line)
            if line.startswith("interrupted: saving"):
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
        err = "".join(seen) + err
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: saving the checkpoint" in err
    assert "Traceback" not in err, err
    ckpt = load_checkpoint(out / "latest.pt")
    assert ckpt["counters"]["frames"] > 0 and (out / ckpt["buffer"]).exists()


@pytest.mark.slow
def test_init_buffer_and_away_weight(tmp_path, capsys) -> None:
    """--init-buffer starts a new run with its init run's replay buffer (the init's file is
    left alone; the new run writes its own); --away-weight changes the updates."""
    with pytest.raises(ValueError, match="away_weight must be in"):
        TrainConfig(out="x", away_weight=1.5)
    with pytest.raises(ValueError, match="init_buffer needs init"):
        TrainConfig(out="x", init_buffer=True)

    first = tmp_path / "first"
    assert main(["train", "--out", str(first), "--frames", str(4 * 300), *SMALL]) == 0
    ckpt = load_checkpoint(first / "latest.pt")
    own = first / ckpt["buffer"]
    size = own.stat().st_size
    capsys.readouterr()
    runs = {}
    for weight in ("1", "0.25"):
        out = tmp_path / f"second-{weight}"
        assert main(["train", "--out", str(out), "--init", str(first / "latest.pt"),
                     "--init-buffer", "--away-weight", weight, "--frames", str(4 * 100),
                     *SMALL]) == 0
        assert f"replay buffer restored, {ckpt['counters']['labels']:,} steps" in (
            capsys.readouterr().out)
        second = load_checkpoint(out / "latest.pt")
        assert second["config"]["away_weight"] == float(weight)
        assert (out / second["buffer"]).exists() and own.stat().st_size == size
        runs[weight] = second["model"]
    assert any(not torch.equal(runs["1"][k], runs["0.25"][k]) for k in runs["1"])

    (first / ckpt["buffer"]).unlink()
    assert main(["train", "--out", str(tmp_path / "third"), "--init", str(first / "latest.pt"),
                 "--init-buffer", *SMALL]) == 2
    assert "which is gone" in capsys.readouterr().err


@pytest.mark.slow
def test_aux_weight_trains_a_head_that_resumes(tmp_path, capsys) -> None:
    """--aux-weight adds a training-only head whose loss changes the updates; it is saved in
    the checkpoint, comes back on --resume and stays out of the exported image."""
    with pytest.raises(ValueError, match="aux_weight must be a finite number"):
        TrainConfig(out="x", aux_weight=-1.0)
    with pytest.raises(ValueError, match="aux_weight is a dagger stage option"):
        TrainConfig(out="x", stage="a2c", aux_weight=0.5)
    models = {}
    for weight in ("0", "0.5"):
        out = tmp_path / f"aux-{weight}"
        assert main(["train", "--out", str(out), "--frames", str(4 * 300), "--aux-weight",
                     weight, *SMALL]) == 0
        printed = capsys.readouterr().out
        ckpt = load_checkpoint(out / "latest.pt")
        models[weight] = ckpt["model"]
        if weight == "0":
            assert ckpt["aux_head"] is None and " aux " not in printed
            continue
        assert " aux " in printed
        head = ckpt["aux_head"]
        assert head["weight"].shape == (len(AUX_TARGETS), 64)
        losses = [r["aux_loss"] for r in read_log(out / "log.jsonl") if r["kind"] == "progress"]
        assert losses and all(v is not None and np.isfinite(v) for v in losses)
        assert main(["train", "--out", str(out), "--resume", "--frames", str(4 * 400)]) == 0
        resumed = load_checkpoint(out / "latest.pt")
        assert resumed["counters"]["frames"] > ckpt["counters"]["frames"]
        assert not torch.equal(resumed["aux_head"]["weight"], head["weight"])
        image = tmp_path / "aux.img"
        assert main(["export", str(out / "latest.pt"), "-o", str(image)]) == 0
    assert any(not torch.equal(models["0"][k], models["0.5"][k]) for k in models["0"])


def test_update_from_trains_on_a_given_buffer(tmp_path) -> None:
    """Trainer.update_from: the stage's own update on a buffer built outside the run (no envs),
    as benchmarks/aux_check.py uses it; bad buffers are named."""
    from mstpn.host.train.trainer import EpisodeBuffer, Trainer

    cfg = TrainConfig(out=str(tmp_path / "run"), envs=2, batch=4, seq=8, burn_in=4,
                      teacher="ram", seed=3, aux_weight=0.3)
    trainer = Trainer(cfg)
    pixels = trainer.preset.frame.pixels
    rng = np.random.default_rng(9)
    buffer = EpisodeBuffer(10**6, rng)
    for length in (40, 55):
        bits = rng.random((length, pixels)) < 0.05
        buffer.add(np.packbits(bits, axis=1), rng.integers(0, 3, length))
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    head = [p.detach().clone() for p in trainer.aux_head.parameters()]
    losses = [trainer.update_from(buffer) for _ in range(2)]
    assert all(np.isfinite(losses)) and all(loss > 0 for loss in losses)
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    trained = list(trainer.aux_head.parameters())
    assert any(not torch.equal(a, b.detach()) for a, b in zip(head, trained, strict=True))
    with pytest.raises(ValueError, match="holds no episodes"):
        trainer.update_from(EpisodeBuffer(10, rng))
    with pytest.raises(TypeError, match="needs an EpisodeBuffer"):
        trainer.update_from([])
