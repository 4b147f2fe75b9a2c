"""Fake boards for fast host tests: :class:`mstpn.sim.board.FakeBoard`'s protocol, with the golden
model behind it instead of the stand-in's toy network, and boards that answer wrongly on purpose.

The protocol (framing, checks, error codes, the STEP repeat rule, LOAD and READBACK of the byte
space) is FakeBoard's own, by inheritance. Only what the engine does differs: COMMIT builds a
:class:`~mstpn.model.golden.GoldenModel` from the parameter bytes in the board's memory, STEP
runs it, RESET_STATE and SET_SEED reach it, and READBACK of the state regions ``f`` and ``h``
reads its state.
"""

from __future__ import annotations

import numpy as np

from mstpn.model.golden import GoldenModel
from mstpn.model.image import fields_for
from mstpn.model.memmap import memory_map, pack_region, unpack_region
from mstpn.sim.board import FakeBoard
from mstpn.spec import protocol as P


class GoldenFakeBoard(FakeBoard):
    """A board whose engine is the golden model, decoded from the bytes the host uploaded."""

    def __init__(self, preset="icebreaker", device=None):
        super().__init__(preset, device)
        self.regions = memory_map(self.preset)
        self.model: GoldenModel | None = None
        self._counter_base = dict.fromkeys(P.COUNTER_NAMES, 0)

    # what a wrong board changes: the step's reply, and its bytes
    def answer(self, action: int, logits: list[int]) -> tuple[int, list[int]]:
        return action, logits

    def _build_model(self) -> None:
        arrays = {f.name: unpack_region(self.regions[f.name],
                                        bytes(self.mem[self.regions[f.name].base:
                                                       self.regions[f.name].end]))
                  for f in fields_for(self.preset)}
        self.model = GoldenModel(self.preset, arrays, self.device, noise_seed=self.seed)

    def _sync_state(self) -> None:
        # the state regions mirror the model, so READBACK (FakeBoard's) reads them
        for name, value in (("f", self.model.f[0]), ("h", self.model.h[0])):
            region = self.regions[name]
            self.mem[region.base:region.end] = pack_region(region, value)

    def _command(self, cmd: int, p: bytes) -> tuple[int, bytes]:
        C = P.Command
        if cmd == C.INFO and not p:
            flags = P.InfoFlags.LOADED if self.loaded else 0
            info = P.Info.build(self.preset, self.device, flags=int(flags),
                                image_hash=self.image_hash)
            return 0, info.pack()
        if cmd == C.STEP and self.loaded and len(p) == 1 + self.preset.frame.packed_bytes \
                and not p[0] & ~3:
            out = self.model.step(np.frombuffer(p[1:], dtype=np.uint8)[None])
            self.steps_executed += 1
            for name, value in self.model.counters.as_dict().items():
                self.counters[name] = int(value[0]) + self._counter_base[name]
            self._sync_state()
            action, logits = self.answer(int(out.action[0]), [int(v) for v in out.logits[0]])
            return 0, self._step_reply(p[0], action, logits)
        err, reply = super()._command(cmd, p)
        if err:
            return err, reply
        if cmd == C.COMMIT:
            self._build_model()
            self._counter_base = dict(self.counters)
            self._sync_state()
        elif cmd == C.RESET_STATE and self.model is not None:
            self.model.reset()
            self._sync_state()
        elif cmd == C.SET_SEED and self.model is not None:
            self.model.set_seed(self.seed)
        elif cmd == C.COUNTERS and p == b"\x01" and self.model is not None:
            self.model.counters.clear()
            self._counter_base = dict.fromkeys(P.COUNTER_NAMES, 0)
        return err, reply


class WrongActionBoard(GoldenFakeBoard):
    """Answers one step (``at``) with the next action instead of the golden model's."""

    def __init__(self, *args, at: int = 500, **kw):
        super().__init__(*args, **kw)
        self.at = at

    def answer(self, action, logits):
        if self.steps_executed == self.at + 1:
            return (action + 1) % self.preset.actions, logits
        return action, logits


class WrongLogitBoard(GoldenFakeBoard):
    """Answers one step with logit 0 off by one (the action still right)."""

    def __init__(self, *args, at: int = 7, **kw):
        super().__init__(*args, **kw)
        self.at = at

    def answer(self, action, logits):
        if self.steps_executed == self.at + 1:
            logits = [logits[0] + 1, *logits[1:]]
        return action, logits


class StuckBitBoard(GoldenFakeBoard):
    """A memory with one stuck-at-0 bit: byte ``addr``, bit ``bit``."""

    def __init__(self, *args, addr: int = 1234, bit: int = 5, **kw):
        super().__init__(*args, **kw)
        self.addr, self.bit = addr, bit

    def feed(self, data: bytes) -> bytes:
        out = super().feed(data)
        self.mem[self.addr] &= ~(1 << self.bit) & 0xFF
        return out


class StaleFBoard(GoldenFakeBoard):
    """Steps right but reports one F value wrong on READBACK (a write-back that failed)."""

    def _sync_state(self) -> None:
        super()._sync_state()
        region = self.regions["f"]
        self.mem[region.base + 3] ^= 0x02
