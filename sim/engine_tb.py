"""cocotb testbenches of the whole engine on its emitted Verilog (Verilator).

``test_vectors`` replays conformance vector sets (:mod:`mstpn.model.vectors`): it loads each
set's image through ``param_write``, applies the set's SET_SEED and RESET_STATE operations,
steps every frame, and checks each step's action, logits, h (read back through ``param_read``,
region ``h``) and counters, and at the end the stored F (region ``f``), bit for bit.
``test_bench`` measures cycles per step and simulated steps per second.

Both read their work from the environment, which the pytest wrappers and
:func:`mstpn.host.bench_engine.bench_engine` set: ``MSTPN_VECTOR_DIRS`` (set folders, separated
by ``os.pathsep``), ``MSTPN_BENCH_OUT`` and ``MSTPN_BENCH_SECONDS``. By hand::

    MSTPN_VECTOR_DIRS=vectors/ulx3s-85f/random python -c \
        "from mstpn.sim.engine_runner import run_engine_test; ..."
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from ..hdl.engine_types import COUNTER_BITS, Control
from ..model.memmap import memory_map, pack_image, unpack_region
from ..model.vectors import COUNTER_NAMES, load_vectors

CLOCK_NS = 10
_DEBUG = bool(os.environ.get("MSTPN_TB_DEBUG"))


class EngineDriver:
    """A tiny driver of the engine's ports: write, read, control, step."""

    def __init__(self, dut, preset) -> None:
        self.dut, self.preset = dut, preset
        self.regions = memory_map(preset)
        self.addr_bits = len(dut.param_read__payload)
        self.actions = preset.actions

    async def start(self) -> None:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        for name in ("frame__valid", "param_write__valid", "param_read__valid", "control__valid",
                     "result__ready", "param_data__ready"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def _put(self, port: str, value: int) -> None:
        valid, ready = getattr(self.dut, f"{port}__valid"), getattr(self.dut, f"{port}__ready")
        # drive in the clock's low phase, where ready (a function of registers only) already
        # holds the value the next rising edge samples
        await FallingEdge(self.dut.clk)
        getattr(self.dut, f"{port}__payload").value = value
        valid.value = 1
        n = 0
        while not ready.value:
            await FallingEdge(self.dut.clk)
            n += 1
            if _DEBUG and n % 1000 == 0:
                self.dut._log.info("waiting for %s.ready; busy %s value %d", port,
                                   self.dut.busy.value, value)
        await RisingEdge(self.dut.clk)
        valid.value = 0

    async def write(self, base: int, blob: bytes) -> None:
        for k, byte in enumerate(blob):
            await self._put("param_write", ((byte & 0xFF) << self.addr_bits) | (base + k))

    async def read(self, base: int, count: int) -> bytes:
        dut = self.dut
        out = bytearray()
        for k in range(count):
            await self._put("param_read", base + k)
            dut.param_data__ready.value = 1
            while True:
                await FallingEdge(dut.clk)
                if dut.param_data__valid.value:
                    out.append(int(dut.param_data__payload.value))
                    break
            await RisingEdge(dut.clk)
            dut.param_data__ready.value = 0
        return bytes(out)

    async def read_region(self, name: str) -> np.ndarray:
        region = self.regions[name]
        return unpack_region(region, await self.read(region.base, region.nbytes))

    async def load(self, image) -> None:
        for base, blob in pack_image(image):
            await self.write(base, blob)

    async def control(self, op: Control, seed: int = 0) -> None:
        await self._put("control", (seed << 2) | int(op))
        n = 0
        while True:
            await FallingEdge(self.dut.clk)
            n += 1
            if _DEBUG and n % 1000 == 0:
                self.dut._log.info("control %s: busy %s ready %s", op, self.dut.busy.value,
                                   self.dut.control__ready.value)
            if not self.dut.busy.value:
                break

    async def step(self, frame: np.ndarray) -> tuple[int, list[int], int]:
        """Send one frame; return (action, logits, cycles from the last byte to the result)."""
        dut = self.dut
        for k, byte in enumerate(frame):
            if _DEBUG and (k % 100 == 0 or k > 395):
                dut._log.info("frame byte %d", k)
            await self._put("frame", int(byte))
        if _DEBUG:
            dut._log.info("frame in; busy %s", dut.busy.value)
        start = cocotb.utils.get_sim_time(unit="ns")
        dut.result__ready.value = 1
        if not dut.result__valid.value:
            await RisingEdge(dut.result__valid)
        await FallingEdge(dut.clk)
        cycles = int((cocotb.utils.get_sim_time(unit="ns") - start) // CLOCK_NS)
        raw = int(dut.result__payload.value)
        await RisingEdge(dut.clk)
        dut.result__ready.value = 0
        action = raw & 3
        logits = []
        for k in range(self.actions):
            v = (raw >> (2 + 32 * k)) & 0xFFFFFFFF
            logits.append(v - (1 << 32) if v >> 31 else v)
        return action, logits, cycles

    def counters(self) -> list[int]:
        raw = int(self.dut.counters.value)
        mask = (1 << COUNTER_BITS) - 1
        return [(raw >> (COUNTER_BITS * k)) & mask for k in range(len(COUNTER_NAMES))]


def _folders() -> list[Path]:
    return [Path(p) for p in os.environ.get("MSTPN_VECTOR_DIRS", "").split(os.pathsep) if p]


@cocotb.test()
async def test_vectors(dut) -> None:
    """Replay conformance vector sets bit for bit: h, action, logits, counters, final F."""
    folders = _folders()
    assert folders, "MSTPN_VECTOR_DIRS names no vector set"
    driver = None
    for folder in folders:
        vset = load_vectors(folder)
        if driver is None:
            driver = EngineDriver(dut, vset.image.preset)
            await driver.start()
        exp = vset.expected
        t0 = time.perf_counter()
        await driver.load(vset.image)
        if _DEBUG:
            dut._log.info("loaded in %.1f s", time.perf_counter() - t0)
        await driver.control(Control.CLEAR_COUNTERS)
        await driver.control(Control.SET_SEED, vset.image.noise_seed)
        for t in range(vset.steps):
            if _DEBUG:
                dut._log.info("step %d", t)
            if vset.seed[t] >= 0:
                await driver.control(Control.SET_SEED, int(vset.seed[t]))
            if vset.reset[t]:
                await driver.control(Control.RESET_STATE)
            action, logits, _ = await driver.step(vset.frames[t])
            h = await driver.read_region("h")
            if _DEBUG:
                dut._log.info("step %d at %.1f s", t, time.perf_counter() - t0)
            where = f"{folder.parent.name}/{vset.name} step {t}"
            assert np.array_equal(h, exp["h"][t]), f"{where}: h {h} != {exp['h'][t]}"
            assert action == int(exp["action"][t]), f"{where}: action {action}"
            assert logits == exp["logits"][t].tolist(), f"{where}: logits {logits}"
            assert driver.counters() == exp["counters"][t].tolist(), f"{where}: counters"
        f = await driver.read_region("f")
        assert np.array_equal(f, exp["final_f"]), f"{vset.name}: final F differs"
        dut._log.info("%s/%s: %d steps bit-exact in %.1f s", folder.parent.name, vset.name,
                      vset.steps, time.perf_counter() - t0)


@cocotb.test()
async def test_bench(dut) -> None:
    """Cycles per step and steps/s of the simulation (frame upload included)."""
    folder = _folders()[0]
    vset = load_vectors(folder)
    driver = EngineDriver(dut, vset.image.preset)
    await driver.start()
    await driver.load(vset.image)
    await driver.control(Control.RESET_STATE)
    seconds = float(os.environ.get("MSTPN_BENCH_SECONDS", "1"))
    cycles = []
    t0 = time.perf_counter()
    steps = 0
    while steps < 3 or time.perf_counter() - t0 < seconds:
        _, _, c = await driver.step(vset.frames[steps % vset.steps])
        cycles.append(c)
        steps += 1
    elapsed = time.perf_counter() - t0
    out = {"cycles_per_step": max(cycles), "cycles_min": min(cycles), "steps": steps,
           "seconds": elapsed, "sim_steps_per_s": steps / elapsed}
    Path(os.environ["MSTPN_BENCH_OUT"]).write_text(json.dumps(out))
