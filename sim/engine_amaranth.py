"""Drive the engine in amaranth.sim: load an image, step frames, read h and F back.

The async helpers here talk to :class:`mstpn.hdl.engine.Engine` through its ports only, exactly
as the top level's dispatcher does (docs/engine-interface.md); the engine-level Amaranth tests
use them on tiny presets, where a Python simulation is fast enough.
"""

from __future__ import annotations

import numpy as np

from ..hdl.engine_types import Control
from ..model.image import ParamImage
from ..model.memmap import memory_map, pack_image, unpack_region

__all__ = ["put", "get", "load_image", "control", "step", "read_region"]


async def put(ctx, port, payload) -> None:
    """Send one beat on a stream the engine receives."""
    ctx.set(port.valid, 1)
    ctx.set(port.payload, payload)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def get(ctx, port):
    """Receive one beat from a stream the engine sends."""
    ctx.set(port.ready, 1)
    (payload,) = await ctx.tick().sample(port.payload).until(port.valid)
    ctx.set(port.ready, 0)
    return payload


async def load_image(ctx, dut, image: ParamImage) -> None:
    """Write every parameter region of ``image`` through ``param_write``."""
    for base, blob in pack_image(image):
        for k, byte in enumerate(blob):
            await put(ctx, dut.param_write, {"addr": base + k, "data": byte})


async def control(ctx, dut, op: Control, seed: int = 0) -> None:
    """One control operation; waits until the engine is idle again."""
    await put(ctx, dut.control, {"op": op, "seed": seed})
    await ctx.tick().until(~dut.busy)


async def step(ctx, dut, frame: np.ndarray) -> tuple[int, list[int], int]:
    """One step: send the packed frame, return (action, logits, cycles from last byte)."""
    for byte in frame[:-1]:
        await put(ctx, dut.frame, int(byte))
    await put(ctx, dut.frame, int(frame[-1]))
    ctx.set(dut.result.ready, 1)
    cycles = 0
    while True:
        _, _, valid, payload = await ctx.tick().sample(dut.result.valid, dut.result.payload)
        cycles += 1
        if valid:
            break
    ctx.set(dut.result.ready, 0)
    return int(payload.action), [int(v) for v in payload.logits], cycles


async def read_region(ctx, dut, preset, name: str) -> np.ndarray:
    """Read one region of the address map through ``param_read``/``param_data``."""
    region = memory_map(preset)[name]
    data = bytearray()
    for k in range(region.nbytes):
        await put(ctx, dut.param_read, region.base + k)
        data.append(int(await get(ctx, dut.param_data)))
    return unpack_region(region, bytes(data))
