"""``mstpn play``: the loop on the golden model, the lockstep check and its divergence report, the
recording, the live view, the JSON summary and the errors; on the simulated board (slow)."""

from __future__ import annotations

import errno
import io
import json

import numpy as np
import pytest
import serial

from mstpn.host.cli import main
from mstpn.host.evaluate import default_agent, run_episodes
from mstpn.host.play import Divergence, ModelBackend, StepInfo, play
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.sim.board import FakeBoard
from mstpn.spec.counters import COUNTER_NAMES
from mstpn.spec.device import DeviceModel


@pytest.fixture(scope="module")
def agent() -> ParamImage:
    return ParamImage.load(default_agent())


def test_play_model_json_matches_eval(tmp_path, capsys, agent):
    out = tmp_path / "out.json"
    steps = 40
    rc = main(["play", "--backend", "model", "--episodes", "3", "--seed", "1",
               "--max-steps", str(steps), "--json", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mean score" in text and "Energy ledger" in text
    record = json.loads(out.read_text())
    assert [e["seed"] for e in record["episodes"]] == [1, 2, 3]
    assert all(e["steps"] == steps and e["truncated"] for e in record["episodes"])
    assert record["mean_score"] == pytest.approx(np.mean([e["score"] for e in
                                                          record["episodes"]]))
    assert record["decisions_per_s"] > 0 and record["steps"] == 3 * steps
    assert record["counters"]["macs"] == 3 * steps * agent.preset.synapses
    assert record["bytes_out"] is None                  # no link on the model backend
    # the same games through mstpn eval's batched loop: same scores, same counters per episode
    model = GoldenModel.from_image(agent, batch=3)
    ref = run_episodes(model, 3, seed=1, max_steps=steps)
    assert [e["score"] for e in record["episodes"]] == [e["score"] for e in ref["episodes"]]
    for k, episode in enumerate(record["episodes"]):
        for name in COUNTER_NAMES:
            assert episode["counters"][name] == int(model.counters.as_dict()[name][k]), name
    assert record["episodes"][0]["counters"]["potentiation"] > 0
    # what mstpn energy reads back from play's JSON
    assert record["energy"]["steps"] == 3 * steps and record["energy"]["totals_mj"]


class _Corrupt(ModelBackend):
    """The golden model with one logit off by one at one step: a backend that diverges."""

    def __init__(self, image, at_step: int):
        super().__init__(image)
        self.at_step = at_step
        self.n = 0

    def begin_episode(self):
        super().begin_episode()
        self.n = 0

    def step(self, frame, logits=False):
        action, values = super().step(frame, logits)
        if self.n == self.at_step:
            values = [values[0] + 1, *values[1:]]
        self.n += 1
        return action, values


def test_divergence_is_reported_with_step_inputs_and_outputs(agent):
    backend = _Corrupt(agent, at_step=7)
    with pytest.raises(Divergence) as caught:
        play(agent, backend, max_steps=50, check=True)
    record = caught.value.record
    assert record["step"] == 7 and record["episode"] == 0
    assert record["backend"]["logits"][0] == record["model"]["logits"][0] + 1
    assert record["backend"]["logits"][1:] == record["model"]["logits"][1:]
    assert len(bytes.fromhex(record["frame_hex"])) == agent.preset.frame.packed_bytes
    report = caught.value.report()
    assert "DIVERGENCE at episode 0, step 7" in report and "lit pixels" in report
    # the same backend without the corruption plays on without complaint
    play(agent, _Corrupt(agent, at_step=10**9), max_steps=20, check=True)


def test_check_against_a_board_that_runs_another_network(tmp_path, capsys):
    """The fake board answers with the stand-in's toy network: --check stops at step 0."""
    port, stop = FakeBoard("icebreaker").serve()
    out = tmp_path / "div.json"
    try:
        rc = main(["play", "--port", f"socket://127.0.0.1:{port}", "--check", "--quiet",
                   "--max-steps", "20", "--json", str(out)])
    finally:
        stop.set()
    assert rc == 1
    err = capsys.readouterr().err
    assert "DIVERGENCE at episode 0, step 0" in err and "backend (port)" in err
    record = json.loads(out.read_text())["divergence"]
    assert record["step"] == 0 and record["backend"] != record["model"]


def _serve(board):
    port, stop = board.serve()
    return f"socket://127.0.0.1:{port}", stop


def test_port_backend_checked_and_recorded_on_a_golden_fake_board(tmp_path, capsys):
    """The whole --port path (INFO, upload, verify, SET_SEED, RESET_STATE, STEPs with logits,
    COUNTERS, READBACK of F and h) against a fake board that runs the golden model; the
    recording takes F from the lockstep model."""
    from fake_boards import GoldenFakeBoard

    url, stop = _serve(GoldenFakeBoard("icebreaker"))
    out = tmp_path / "port.json"
    try:
        rc = main(["play", "--port", url, "--max-steps", "16", "--quiet", "--json", str(out),
                   "--record", str(tmp_path / "port.gif")])
    finally:
        stop.set()
    assert rc == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["backend"] == "port" and record["checked"]      # --record turned --check on
    (episode,) = record["episodes"]
    assert episode["counters"]["steps"] == 16
    assert episode["bytes_out"] >= 16 * 401 and episode["bytes_in"] >= 16 * 13
    assert record["record"]["f_source"] == "golden model in lockstep, checked"
    assert record["record"]["frames"] == 8


@pytest.mark.parametrize("board, what, step", [
    ("WrongActionBoard", "action and logits", 5),
    ("StaleFBoard", "stored F", 12),
])
def test_port_backend_divergence_on_wrong_boards(board, what, step, tmp_path, capsys):
    import fake_boards

    kwargs = {"at": 5} if board == "WrongActionBoard" else {}
    url, stop = _serve(getattr(fake_boards, board)("icebreaker", **kwargs))
    try:
        rc = main(["play", "--port", url, "--check", "--max-steps", "12", "--quiet",
                   "--json", str(tmp_path / "d.json")])
    finally:
        stop.set()
    assert rc == 1
    assert f"DIVERGENCE at episode 0, step {step} ({what} differ)" in capsys.readouterr().err
    assert json.loads((tmp_path / "d.json").read_text())["divergence"]["what"] == what


def test_board_info_that_does_not_match_the_image_is_refused(capsys):
    port, stop = FakeBoard("icebreaker", DeviceModel(level_shift=2)).serve()
    try:
        rc = main(["play", "--port", f"socket://127.0.0.1:{port}", "--quiet"])
    finally:
        stop.set()
    assert rc == 2
    err = capsys.readouterr().err
    assert "INFO does not match" in err and "device model" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--port", "/dev/ttyDOESNOTEXIST0"], "no such port /dev/ttyDOESNOTEXIST0"),
    (["--backend", "port"], "--backend port needs --port"),
    (["--backend", "model", "--port", "loop://"], "cannot go with --backend model"),
    (["--backend", "model", "--episodes", "0"], "--episodes must be at least 1"),
    (["--backend", "model", "--max-steps", "0"], "--max-steps must be at least 1"),
    (["--backend", "model", "--params", "/nonexistent/agent.img"], "no such file"),
    (["--backend", "model", "--record", "x.avi"], "record to a .mp4 or a .gif"),
    (["--backend", "model", "--level-shift", "9"], "level_shift must be in"),
    (["--backend", "model", "--noise-seed", "-1"], "--noise-seed must be a uint32"),
])
def test_bad_inputs_fail_in_one_line(argv, message, capsys):
    assert main(["play", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mstpn: error:") and message in err and "Traceback" not in err


def test_busy_port_is_named(monkeypatch, capsys):
    def busy(url, **kwargs):
        raise serial.SerialException(errno.EBUSY, f"could not open port {url}: busy")

    monkeypatch.setattr(serial, "serial_for_url", busy)
    assert main(["play", "--port", "/dev/ttyUSB1", "--quiet"]) == 2
    assert "port /dev/ttyUSB1 is busy" in capsys.readouterr().err


def test_missing_rom_is_a_clear_error(monkeypatch, capsys):
    import mstpn.host.play as play_module

    def no_rom(**kwargs):
        raise FileNotFoundError("Unable to find game 'pong'")

    monkeypatch.setattr(play_module, "make_env", no_rom)
    assert main(["play", "--backend", "model", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot make ALE/Pong-v5" in err and "pong" in err and "Traceback" not in err


def test_ctrl_c_keeps_the_finished_episodes(monkeypatch, tmp_path, capsys):
    import mstpn.host.play as play_module

    real = play_module.make_env

    def interrupted_at_the_second_game(**kwargs):
        env = real(**kwargs)
        reset, resets = env.reset, []

        def second_reset_interrupts(**kw):
            resets.append(1)
            if len(resets) == 2:
                raise KeyboardInterrupt
            return reset(**kw)

        env.reset = second_reset_interrupts
        return env

    monkeypatch.setattr(play_module, "make_env", interrupted_at_the_second_game)
    out = tmp_path / "cut.json"
    rc = main(["play", "--backend", "model", "--episodes", "3", "--max-steps", "5", "--quiet",
               "--json", str(out)])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["interrupted"] and [e["steps"] for e in record["episodes"]] == [5]


def test_window_view_without_a_display_falls_back(monkeypatch):
    from mstpn.host.play_view import LineView, TerminalView, make_view

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    notes = []
    view = make_view("window", "model", say=notes.append)
    assert isinstance(view, TerminalView | LineView)
    assert notes and "no display" in notes[0] and "terminal view" in notes[0]


def test_terminal_view_draws_the_game_and_the_status(agent):
    from mstpn.host.play_view import TerminalView

    out = io.StringIO()
    view = TerminalView("sim", out=out)
    frames = []
    play(agent, ModelBackend(agent), max_steps=3, observer=lambda i: frames.append(i) or view(i))
    text = out.getvalue()
    assert "\u2588" in text or "\u2580" in text or "\u2584" in text     # paddles drawn
    assert "decisions/s" in text and "round trip" in text and "episode 1/1" in text
    assert isinstance(frames[-1], StepInfo) and frames[-1].step == 3


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_record_writes_the_game_beside_the_plastic_state(tmp_path, capsys, suffix):
    import imageio.v3 as iio

    if suffix == ".mp4":
        pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / f"game{suffix}"
    rc = main(["play", "--backend", "model", "--max-steps", "24", "--record", str(path),
               "--quiet", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    video = iio.imread(path, index=None)
    expected = 24 if suffix == ".mp4" else 12            # a GIF keeps every 2nd step
    assert video.shape[0] == expected
    height, width = video.shape[1:3]
    scale = 2 if suffix == ".mp4" else 1
    assert width > 160 * scale * 1.5 and height >= 210 * scale    # the game and the panel
    panel = video[-1, :, 160 * scale + 8:].astype(int)
    assert panel.std() > 20                            # the heatmaps are not blank
    record = json.loads((tmp_path / "r.json").read_text())["record"]
    assert record["frames"] == expected and record["f_source"] == "golden model"
    assert not list(tmp_path.glob(".*tmp*"))           # no temporary file left behind


def test_bench_play_fields():
    from mstpn.host.play_cli import bench_play

    (record,) = bench_play(["icebreaker"], seconds=0.5, backends=("model",))
    assert record["backend"] == "model" and record["preset"] == "icebreaker"
    assert record["decisions_per_s"] > 0 and record["atari_real_time"] == 15


@pytest.mark.slow
def test_play_300_steps_on_the_simulated_board_checked(tmp_path, capsys):
    """The real gateware in Verilator, checked step by step (logits) and at the end (counters,
    stored F and h by READBACK) against the golden model."""
    out = tmp_path / "sim.json"
    rc = main(["play", "--check", "--max-steps", "300", "--seed", "3", "--quiet",
               "--json", str(out), "--record", str(tmp_path / "sim.gif")])
    err = capsys.readouterr().err
    assert rc == 0, err
    record = json.loads(out.read_text())
    assert record["backend"] == "sim" and record["checked"]
    (episode,) = record["episodes"]
    assert episode["steps"] == 300 and episode["counters"]["steps"] == 300
    assert episode["bytes_out"] >= 300 * 401      # every STEP crossed the link
    assert record["record"]["frames"] == 150 and (tmp_path / "sim.gif").stat().st_size > 0
    print(f"simulated board: {record['decisions_per_s']} decisions/s, "
          f"latency {record['latency']}")
