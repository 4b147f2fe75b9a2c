"""A stand-in for the synapse engine, with the engine's exact signature (docs/engine-interface.md).

It sits where :class:`mstpn.hdl.engine.Engine` sits, behind the dispatcher, so the link can be
built and tested without the m-STPN: it has a real parameter memory (the whole address map, so
LOAD and READBACK are real), real counters, and a deterministic toy "network": logit ``k`` is
the sum of the frame bytes at positions ``p`` with ``p % actions == k``, and the action is the
lowest index of the largest logit. :func:`standin_step` is its Python twin.

Cost: the address map in block RAM (about 83 KB: simulation only, it does not fit an iCE40's
EBR) and a few hundred LUTs. A step takes ``frame bytes + LATENCY`` cycles.
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from ..model.image import ParamImage
from ..model.memmap import memory_map, pack_image
from ..spec.device import DeviceModel
from ..spec.presets import Preset
from .dispatcher import engine_signature
from .engine_types import Control

__all__ = ["StandInEngine", "standin_step", "LATENCY"]

#: Cycles from the last frame byte to the result.
LATENCY = 8


def standin_step(frame: bytes, actions: int = 3) -> tuple[int, list[int]]:
    """The stand-in's (action, logits) for one packed frame."""
    raw = np.frombuffer(bytes(frame), dtype=np.uint8).astype(np.int64)
    logits = [int(raw[k::actions].sum()) for k in range(actions)]
    return int(np.argmax(logits)), logits


class StandInEngine(wiring.Component):
    """The stand-in engine.

    Parameters
    ----------
    preset : Preset
    device : DeviceModel
        Unused by the toy network, checked for type.
    image : ParamImage or None
        Baked into the parameter memory as its initial contents.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``image`` is for another preset.
    """

    def __init__(self, preset: Preset, device: DeviceModel, image: ParamImage | None = None):
        if not isinstance(preset, Preset):
            raise TypeError(f"preset must be a Preset, not {preset!r}")
        if not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a DeviceModel, not {device!r}")
        if image is not None:
            if not isinstance(image, ParamImage):
                raise TypeError(f"image must be a ParamImage, not {image!r}")
            if image.preset != preset:
                raise ValueError(
                    f"image is for preset {image.preset.name}, the engine for {preset.name}")
        self.preset = preset
        self.device = device
        self.image = image
        super().__init__(engine_signature(preset))

    def elaborate(self, platform):
        m = Module()
        preset = self.preset
        regions = memory_map(preset)
        space = max(r.end for r in regions.values())
        init = bytearray(space)
        if self.image is not None:
            for base, chunk in pack_image(self.image):
                init[base:base + len(chunk)] = chunk
        m.submodules.mem = mem = Memory(shape=8, depth=space, init=list(init))
        wr = mem.write_port()
        rd = mem.read_port()

        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        # parameter writes and reads (only while idle)
        m.d.comb += [
            self.param_write.ready.eq(~busy),
            wr.addr.eq(self.param_write.payload.addr), wr.data.eq(self.param_write.payload.data),
            wr.en.eq(self.param_write.valid & ~busy),
        ]
        take = Signal()
        m.d.comb += [
            take.eq(self.param_read.valid & ~busy
                    & (~self.param_data.valid | self.param_data.ready)),
            self.param_read.ready.eq(take),
            rd.addr.eq(self.param_read.payload), rd.en.eq(take),
            self.param_data.payload.eq(rd.data),
        ]
        with m.If(take):
            m.d.sync += self.param_data.valid.eq(1)
        with m.Elif(self.param_data.ready):
            m.d.sync += self.param_data.valid.eq(0)

        # control
        seed = Signal(32)
        m.d.comb += self.control.ready.eq(~busy)
        with m.If(self.control.valid & ~busy):
            with m.Switch(self.control.payload.op):
                with m.Case(Control.SET_SEED):
                    m.d.sync += seed.eq(self.control.payload.seed)
                with m.Case(Control.CLEAR_COUNTERS):
                    m.d.sync += self.counters.eq(0)

        # the toy step
        actions = preset.actions
        nbytes = preset.frame.packed_bytes
        sums = [Signal(signed(32), name=f"sum{k}") for k in range(actions)]
        phase = Signal(range(actions))
        count = Signal(range(nbytes + 1))
        wait = Signal(range(LATENCY + 1))
        with m.FSM():
            with m.State("FRAME"):
                m.d.comb += self.frame.ready.eq(1)
                with m.If(self.frame.valid):
                    m.d.sync += [count.eq(count + 1), phase.eq(Mux(phase == actions - 1, 0,
                                                                   phase + 1))]
                    for k in range(actions):
                        with m.If(phase == k):
                            m.d.sync += sums[k].eq(sums[k] + self.frame.payload)
                    with m.If(count == nbytes - 1):
                        m.d.sync += [busy.eq(1), wait.eq(LATENCY)]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "RESULT"
            with m.State("RESULT"):
                best = sums[0]
                action = Signal(2)
                for k in range(1, actions):
                    better = sums[k] > best
                    best = Mux(better, sums[k], best)
                    action_k = Signal(2, name=f"action_{k}")
                    m.d.comb += action_k.eq(Mux(better, k, action))
                    action = action_k
                m.d.comb += [self.result.valid.eq(1), self.result.payload.action.eq(action)]
                for k in range(actions):
                    m.d.comb += self.result.payload.logits[k].eq(sums[k])
                with m.If(self.result.ready):
                    c = self.counters
                    m.d.sync += [
                        c.steps.eq(c.steps + 1), c.macs.eq(c.macs + preset.synapses),
                        c.f_writes.eq(c.f_writes + preset.hidden * preset.plastic.inputs),
                        busy.eq(0), count.eq(0), phase.eq(0),
                    ]
                    m.d.sync += [s.eq(0) for s in sums]
                    m.next = "FRAME"
        return m
