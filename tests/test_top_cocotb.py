"""cocotb tests of the top level's Verilog (Verilator), driving the UART pins with cocotbext-uart.

- ``info_load_readback``: INFO matches the build; LOAD of a full parameter image, READBACK of all
  of it, COMMIT.
- ``step_sequence``: at least 300 STEPs whose actions and logits match the golden model (the
  stand-in's twin when a stand-in engine sits behind the link), then the state (F, h by
  READBACK) and the counters.

The pytest entry point ``test_top_cocotb`` (slow) builds the Verilog and runs these inside the
simulator; the cocotb functions have no ``test_`` prefix so that pytest does not collect them.
Settings (environment): MSTPN_COCOTB_PRESET (default ulx3s-85f), MSTPN_LINK_ENGINE (default
auto: the m-STPN engine), MSTPN_COCOTB_STEPS (default 300).

What it costs, and why it fits CI: cocotb's runner makes every signal of the design public to
VPI (``--public-flat-rw``), which keeps Verilator from optimising the m-STPN engine's logic at
all. Only the five pins need to be public, so the build turns that off again and names the pins
in a Verilator control file (``PINS_VLT``), and compiles at ``OPT_QUICK``. The run time is then
cocotbext-uart's Python, one coroutine step per bit, and the engine's evaluation per cycle
(docs/link.md gives the measured duration).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

BIT_CYCLES = 4
CLOCK_NS = 10


#: Verilator control file: only the top level's pins are public to VPI (what cocotb touches).
PINS_VLT = "`verilator_config\n" + "".join(
    f'public_flat_rw -module "mstpn_top" -var "{pin}"\n'
    for pin in ("clk", "rst", "rx", "tx", "busy"))


def _settings() -> tuple[str, str, int]:
    return (os.environ.get("MSTPN_COCOTB_PRESET", "ulx3s-85f"),
            os.environ.get("MSTPN_LINK_ENGINE", "auto"),
            int(os.environ.get("MSTPN_COCOTB_STEPS", "300")))


# --- inside the simulator -------------------------------------------------------------------------

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles

    class FramedUart:
        """The framed protocol over cocotbext-uart's Source and Sink: ``await request()``."""

        def __init__(self, dut):
            from cocotbext.uart import UartSink, UartSource

            baud = 1e9 / (BIT_CYCLES * CLOCK_NS)
            self.source = UartSource(dut.rx, baud=baud)
            self.sink = UartSink(dut.tx, baud=baud)
            for name in (self.source.log.name, self.sink.log.name):
                logging.getLogger(name).setLevel(logging.WARNING)
            self.seq = 0
            self.rx = bytearray()

        async def request(self, command: int, payload: bytes = b"") -> bytes:
            """Send one request; return the reply's payload (fails on an ERROR reply)."""
            from mstpn.host.link import decode_body, encode_frame
            from mstpn.spec import protocol as P

            seq = self.seq
            self.seq = (self.seq + 1) & 0xFF
            await self.source.write(encode_frame(command, seq, payload))
            while 0 not in self.rx:
                self.rx += await self.sink.read()
            end = self.rx.index(0)
            frame = bytes(self.rx[:end])
            del self.rx[:end + 1]
            rtype, rseq, reply = decode_body(frame)
            assert rseq == seq, f"reply seq {rseq}, sent {seq}"
            assert rtype == command | P.REPLY_FLAG, f"reply {rtype:#x} {reply.hex()}"
            return reply

    async def _start(dut) -> FramedUart:
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.rx.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 4)
        return FramedUart(dut)

    def _image():
        from mstpn.model.image import ParamImage

        preset, _, _ = _settings()
        return ParamImage.random(preset, 21)

    async def _load(link: FramedUart, image, verify: bool) -> None:
        from mstpn.model.memmap import pack_image
        from mstpn.spec import protocol as P

        chunks = pack_image(image)
        for base, data in chunks:
            for off in range(0, len(data), P.MAX_CHUNK):
                await link.request(P.Command.LOAD,
                                   P.LOAD_HEADER.pack(base + off) + data[off:off + P.MAX_CHUNK])
        if verify:
            for base, data in chunks:
                back = bytearray()
                for off in range(0, len(data), P.MAX_CHUNK):
                    n = min(P.MAX_CHUNK, len(data) - off)
                    back += await link.request(P.Command.READBACK,
                                               P.READBACK_REQUEST.pack(base + off, n))
                assert bytes(back) == data, f"READBACK differs in the region at {base:#x}"
        await link.request(P.Command.COMMIT, P.COMMIT.pack(image.content_hash()))

    @cocotb.test()
    async def info_load_readback(dut):
        """INFO, then LOAD of a full image and READBACK of every byte of it."""
        from mstpn.spec import protocol as P
        from mstpn.spec.qformat import format_hash

        link = await _start(dut)
        info = P.Info.unpack(await link.request(P.Command.INFO))
        image = _image()
        assert info.version == P.VERSION and info.preset == image.preset
        assert info.format_hash == format_hash() and info.device == image.device
        assert not info.loaded
        await _load(link, image, verify=True)
        info = P.Info.unpack(await link.request(P.Command.INFO))
        assert info.loaded and info.image_hash == image.content_hash()
        dut._log.info("INFO ok; the image loaded and read back")

    @cocotb.test()
    async def step_sequence(dut):
        """STEPs whose actions and logits match the golden model; then F, h and counters."""
        from mstpn.hdl.standin import standin_step
        from mstpn.model.golden import GoldenModel
        from mstpn.model.memmap import memory_map, unpack_region
        from mstpn.spec import protocol as P

        _, _, steps = _settings()
        link = await _start(dut)     # the design keeps its state: the image is still loaded
        info = P.Info.unpack(await link.request(P.Command.INFO))
        image = _image()
        if not (info.loaded and info.image_hash == image.content_hash()):
            await _load(link, image, verify=False)
        standin = bool(info.flags & P.InfoFlags.STANDIN)
        await link.request(P.Command.RESET_STATE)
        await link.request(P.Command.COUNTERS, b"\x01")
        golden = GoldenModel.from_image(image)
        rng = np.random.default_rng(22)
        nbytes = image.preset.frame.packed_bytes
        for i in range(steps):
            frame = rng.integers(0, 256, nbytes, dtype=np.uint8)
            frame &= rng.integers(0, 256, nbytes, dtype=np.uint8)
            frame &= rng.integers(0, 256, nbytes, dtype=np.uint8)   # sparse, like Pong
            reply = await link.request(P.Command.STEP, bytes([P.StepFlags.LOGITS])
                                       + frame.tobytes())
            logits = [int.from_bytes(reply[1 + 4 * k:5 + 4 * k], "little", signed=True)
                      for k in range(image.preset.actions)]
            if standin:
                want = standin_step(frame.tobytes(), image.preset.actions)
            else:
                out = golden.step(frame[None])
                want = (int(out.action[0]), [int(v) for v in out.logits[0]])
            assert (reply[0], logits) == want, f"step {i}: {(reply[0], logits)} != {want}"
        counters = await link.request(P.Command.COUNTERS)
        values = {name: int.from_bytes(counters[6 * i:6 * i + 6], "little")
                  for i, name in enumerate(P.COUNTER_NAMES)}
        assert values["steps"] == steps
        assert values["macs"] == steps * image.preset.synapses
        if not standin:
            regions = memory_map(image.preset)
            for name, want in (("f", golden.f[0]), ("h", golden.h[0])):
                region = regions[name]
                raw = bytearray()
                for off in range(0, region.nbytes, P.MAX_CHUNK):
                    n = min(P.MAX_CHUNK, region.nbytes - off)
                    raw += await link.request(P.Command.READBACK,
                                              P.READBACK_REQUEST.pack(region.base + off, n))
                assert np.array_equal(unpack_region(region, bytes(raw)), want), name
            for name in P.COUNTER_NAMES:
                assert values[name] == int(golden.counters.as_dict()[name][0]), name
        dut._log.info("%d steps match (%s)", steps, "stand-in" if standin else "golden model")

except ImportError:   # pragma: no cover - cocotb is a dependency, but keep pytest collection safe
    pass


# --- the pytest entry point -----------------------------------------------------------------------


@pytest.mark.slow
def test_top_cocotb():
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from mstpn.sim.board import board_verilog
    from mstpn.sim.toolchain import OPT_QUICK, use_verilator

    preset, engine, steps = _settings()
    text = board_verilog(preset, engine=engine, bit=BIT_CYCLES, reset_less=False)
    repo = Path(__file__).resolve().parent.parent
    key = hashlib.sha256((text + PINS_VLT).encode()).hexdigest()[:16]
    build_dir = repo / "build" / "cocotb" / key
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / "mstpn_top.v"
    if not source.exists():
        source.write_text(text)
    pins = build_dir / "pins.vlt"
    pins.write_text(PINS_VLT)
    use_verilator(OPT_QUICK)
    assert shutil.which("verilator")
    runner = get_runner("verilator")
    runner.build(
        sources=[source], hdl_toplevel="mstpn_top", build_dir=build_dir, always=False,
        build_args=["--no-public-flat-rw", str(pins), "-O3", "-Wno-fatal", "-Wno-lint",
                    "-Wno-style", "--x-assign", "fast", "--x-initial", "fast"],
    )
    results = runner.test(
        hdl_toplevel="mstpn_top", test_module="test_top_cocotb",
        test_dir=Path(__file__).resolve().parent, build_dir=build_dir,
        extra_env={"MSTPN_COCOTB_PRESET": preset, "MSTPN_LINK_ENGINE": engine,
                   "MSTPN_COCOTB_STEPS": str(steps)},
    )
    tests, failed = get_results(results)
    assert tests == 2 and failed == 0, f"{failed} of {tests} cocotb tests failed ({results})"
