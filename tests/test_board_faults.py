"""The fault suite: at least 1,000 seeded faults on the line between the host driver and the
simulated board (the real gateware in Verilator). Each fault must be detected or harmless: every
action equals the reference's, no STEP runs twice (the board's step counter equals the host's
count), and the accelerator's state afterwards (READBACK of F and h, the counters) equals the
golden model's (or, with the stand-in engine, the stand-in twin's).

Faults, both directions: a flipped bit, a dropped byte, a dropped frame, a duplicated frame, a
truncated frame, random garbage before a frame, an oversize frame, and a replayed earlier frame
(a wrong sequence number).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import serial

from mstpn.hdl.standin import standin_step
from mstpn.host.link import Link, body_of
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.sim.board import SimBoard
from mstpn.spec import protocol as P

KINDS = ("flip", "drop_byte", "drop", "duplicate", "truncate", "garbage", "oversize", "replay")


class FaultyPort:
    """A pyserial port that damages what passes through it, seeded."""

    def __init__(self, port, seed: int, rate: float):
        self.port = port
        self.rng = np.random.default_rng(seed)
        self.rate = rate
        self.counts = dict.fromkeys(KINDS, 0)
        self.last = {"out": b"", "in": b""}
        self._pending = bytearray()
        self._ready = bytearray()

    @property
    def injected(self) -> int:
        return sum(self.counts.values())

    def _damage(self, direction: str, data: bytes) -> bytes:
        previous = self.last[direction]
        if len(data) > 1 and data.endswith(b"\x00"):
            self.last[direction] = data       # the frame as it was meant, damaged or not
        if not data or self.rng.random() >= self.rate:
            return data
        kind = KINDS[self.rng.integers(0, len(KINDS))]
        self.counts[kind] += 1
        b = bytearray(data)
        if kind == "flip":
            i = self.rng.integers(0, len(b))
            b[i] ^= 1 << self.rng.integers(0, 8)
        elif kind == "drop_byte":
            del b[self.rng.integers(0, len(b))]
        elif kind == "drop":
            b = bytearray()
        elif kind == "duplicate":
            b = b + b
        elif kind == "truncate":
            b = b[: self.rng.integers(0, len(b))]
        elif kind == "garbage":
            b = bytearray(self.rng.integers(0, 256, self.rng.integers(1, 40),
                                            dtype=np.uint8).tobytes()) + b
        elif kind == "oversize":
            from cobs import cobs

            big = body_of(P.Command.LOAD, 0, bytes(P.MAX_PAYLOAD))
            b = bytearray(cobs.encode(big + bytes(50)) + b"\x00") + b
        else:   # the previous frame again (an old sequence number), then this one
            b = bytearray(previous) + b
        return bytes(b)

    # the serial API that Link uses
    @property
    def timeout(self):
        return self.port.timeout

    @timeout.setter
    def timeout(self, value):
        self.port.timeout = value

    @property
    def in_waiting(self) -> int:
        return len(self._ready) or self.port.in_waiting

    def write(self, data: bytes) -> int:
        self.port.write(self._damage("out", bytes(data)))
        return len(data)

    def read(self, n: int = 1) -> bytes:
        """Whole received frames are damaged (or not) as units."""
        if not self._ready:
            self._pending += self.port.read(max(n, 1))
            while (end := self._pending.find(0)) >= 0:
                frame = bytes(self._pending[:end + 1])
                del self._pending[:end + 1]
                self._ready += self._damage("in", frame)
        out = bytes(self._ready[:n])
        del self._ready[:n]
        return out

    def close(self) -> None:
        self.port.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_thousand_faults_against_the_simulated_board():
    preset = "ulx3s-85f"
    image = ParamImage.random(preset, 11)
    rng = np.random.default_rng(12)
    engine = os.environ.get("MSTPN_LINK_ENGINE", "auto")
    with SimBoard(preset, image.device, engine=engine) as board:
        raw = serial.serial_for_url(board.url, timeout=1.0)
        port = FaultyPort(raw, seed=13, rate=0.0)
        link = Link(board.url, port=port, timeout=0.4, step_timeout=0.6, retries=40)
        info = link.info()
        standin = bool(info.flags & P.InfoFlags.STANDIN)
        link.load(image)
        link.reset_state()
        link.counters(clear=True)
        golden = GoldenModel.from_image(image)
        port.rate = 0.35
        steps = 0
        while port.injected < 1000:
            frame = rng.integers(0, 256, image.preset.frame.packed_bytes, dtype=np.uint8)
            frame &= rng.integers(0, 256, frame.size, dtype=np.uint8)   # sparser, like Pong
            reply = link.step(frame.tobytes(), logits=True)
            steps += 1
            if standin:
                assert (reply.action, reply.logits) == standin_step(frame.tobytes())
            else:
                out = golden.step(frame[None])
                assert reply.action == out.action[0], f"step {steps}"
                assert reply.logits == [int(v) for v in out.logits[0]], f"step {steps}"
            if steps % 25 == 0:    # other commands between the steps, also under fire
                assert link.info().loaded
        port.rate = 0.0
        counters = link.counters()
        state = link.read_state(image.preset)
        link.close()
    print(f"{port.injected} faults over {steps} steps: {port.counts}; link {link.stats}")
    assert port.injected >= 1000 and min(port.counts.values()) > 50
    assert link.stats["retries"] > 100
    assert counters["steps"] == steps                      # no STEP ran twice
    assert counters["macs"] == steps * image.preset.synapses
    if not standin:
        assert np.array_equal(state["f"], golden.f[0])
        assert np.array_equal(state["h"], golden.h[0])
        for name in P.COUNTER_NAMES:
            assert counters[name] == int(golden.counters.as_dict()[name][0]), name
