"""The host driver over loop://, a fake board (in-process and over socket://), with timeouts,
retries and injected faults."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from mstpn.hdl.standin import standin_step
from mstpn.host.link import (
    DeviceError,
    FrameError,
    InfoMismatch,
    Link,
    LinkError,
    LinkTimeout,
    decode_body,
    encode_frame,
)
from mstpn.model.image import ParamImage
from mstpn.sim.board import FakeBoard
from mstpn.spec import protocol as P
from mstpn.spec.device import DeviceModel

PRESET = "icebreaker"


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 400), dtype=np.uint8)


def test_frame_codec_roundtrip_and_checks():
    wire = encode_frame(P.Command.STEP, 7, bytes(range(256)) + bytes(10))
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    assert decode_body(wire[:-1]) == (P.Command.STEP, 7, bytes(range(256)) + bytes(10))
    bad = bytearray(wire[:-1])
    bad[5] ^= 1
    with pytest.raises(FrameError):
        decode_body(bytes(bad))
    with pytest.raises(ValueError):
        encode_frame(P.Command.LOAD, 0, bytes(P.MAX_PAYLOAD + 1))


def test_loop_url_times_out_with_a_clear_message():
    # loop:// echoes our own request, which is no reply: every try times out
    link = Link("loop://", timeout=0.05, retries=2)
    with pytest.raises(LinkTimeout, match=r"no reply to INFO \(seq 0\) from loop:// after 3"):
        link.info()
    assert link.stats["retries"] == 2 and link.stats["stale"] >= 3
    link.close()


def test_open_errors_are_clear():
    with pytest.raises(LinkError, match="no such port"):
        Link("/dev/ttyDOESNOTEXIST0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LinkError, match="nothing listens"):
        Link(f"socket://127.0.0.1:{port}")


def test_session_on_fake_board():
    board = FakeBoard(PRESET)
    link = Link("fake", port=board.serial(), timeout=0.2)
    info = link.info()
    assert info.preset.name == PRESET and not info.loaded and info.version == P.VERSION
    with pytest.raises(DeviceError, match="NOT_LOADED"):
        link.step(bytes(400))
    image = ParamImage.random(PRESET, 3)
    assert link.load(image)
    assert link.info().image_hash == image.content_hash()
    assert not link.load(image, force=False)              # already there
    for f in frames(20):
        reply = link.step(f, logits=True, counters=True)
        assert (reply.action, reply.logits) == standin_step(f.tobytes())
    assert reply.counters["steps"] == 20
    assert link.counters(clear=True)["steps"] == 20
    assert link.counters()["steps"] == 0
    link.set_seed(99)
    link.reset_state()
    assert board.seed == 99


def test_image_mismatch_is_refused_before_upload():
    board = FakeBoard(PRESET, DeviceModel(level_shift=2))
    link = Link("fake", port=board.serial(), timeout=0.2)
    with pytest.raises(InfoMismatch, match="device model"):
        link.load(ParamImage.random(PRESET, 3))
    with pytest.raises(InfoMismatch, match="preset"):
        link.load(ParamImage.random("ulx3s-85f", 3, device=DeviceModel(level_shift=2)))
    assert board.mem == bytearray(len(board.mem))


class Faults:
    """Damages the n-th frames in either direction: drop, corrupt, truncate, duplicate."""

    def __init__(self, seed: int, rate: float):
        self.rng = np.random.default_rng(seed)
        self.rate = rate
        self.injected = 0

    def __call__(self, direction: str, data: bytes) -> bytes:
        if not data or self.rng.random() > self.rate:
            return data
        self.injected += 1
        kind = self.rng.integers(0, 5)
        b = bytearray(data)
        if kind == 0:                      # lost
            return b""
        if kind == 1:                      # a flipped bit
            i = self.rng.integers(0, len(b))
            b[i] ^= 1 << self.rng.integers(0, 8)
        elif kind == 2:                    # truncated
            b = b[: self.rng.integers(0, len(b))]
        elif kind == 3:                    # duplicated
            b = b + b
        else:                              # garbage in front
            b = bytearray(self.rng.integers(1, 256, 7, dtype=np.uint8).tobytes()) + b
        return bytes(b)


def test_retries_never_step_twice():
    board = FakeBoard(PRESET)
    faults = Faults(seed=5, rate=0.0)
    link = Link("fake", port=board.serial(faults), timeout=0.02, retries=20)
    link.load(ParamImage.random(PRESET, 4), verify=False)
    faults.rate = 0.3
    fs = frames(60, seed=2)
    for f in fs:
        assert link.step(f).action == standin_step(f.tobytes())[0]
    assert faults.injected > 20 and link.stats["retries"] > 0
    assert board.steps_executed == len(fs)
    assert board.counters["steps"] == len(fs)


def test_socket_url_with_fake_board():
    board = FakeBoard(PRESET)
    port, stop = board.serve()
    try:
        with Link(f"socket://127.0.0.1:{port}", timeout=0.5) as link:
            assert link.info().preset.name == PRESET
            link.write(1000, b"hello")
            assert link.readback(998, 9) == b"\x00\x00hello\x00\x00"
            link.commit(1)
            f = frames(1)[0]
            assert link.step(f).action == standin_step(f.tobytes())[0]
    finally:
        stop.set()


def test_device_error_is_not_retried():
    board = FakeBoard(PRESET)
    link = Link("fake", port=board.serial(), timeout=0.2)
    with pytest.raises(DeviceError, match="BAD_ADDRESS"):
        link.readback(84_600, 100)
    assert link.stats["retries"] == 0


def test_bench_link_theory():
    from mstpn.host.bench_link import RAW_FRAME_BYTES, theoretical_rate, wire_bytes_per_decision
    from mstpn.spec.presets import get_preset

    preset = get_preset(PRESET)
    request, reply = wire_bytes_per_decision(preset)
    assert RAW_FRAME_BYTES == 100_800 and request == 410 and reply == 9
    # at 3 Mbaud: 419 bytes of 10 bits is 1.4 ms, plus ~34,000 engine cycles at 12 MHz
    assert 200 < theoretical_rate(preset, 3_000_000) < 300


@pytest.mark.slow
def test_bench_link_cli(capsys):
    import json

    from mstpn.host.cli import main

    assert main(["bench", "link", "--preset", "ulx3s-85f", "--seconds", "1", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["bytes_per_decision"] == 419 and record["sim_decisions_per_s"] > 1
