"""Framing blocks alone: the COBS decoder against the cobs package, the CRC against crcmod."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from cobs import cobs

from mstpn.hdl.framing import CobsDecoder, crc16
from mstpn.host.link import crc16 as host_crc16

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def decode_in_gateware(wire: bytes) -> list[tuple[bytes, bool]]:
    """(bytes, error) per frame that the decoder reports."""
    dut = CobsDecoder()
    frames: list[tuple[bytes, bool]] = []

    async def drive(ctx):
        for byte in wire:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(4)

    async def sink(ctx):
        buf = bytearray()
        # apply back-pressure every third cycle
        n = 0
        while True:
            n += 1
            ctx.set(dut.o.ready, n % 3 != 0)
            _, _, valid, ready, beat = await ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                              dut.o.payload)
            if valid and ready:
                if beat.end:
                    frames.append((bytes(buf), bool(beat.error)))
                    buf.clear()
                else:
                    buf.append(beat.data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(sink, background=True)
    sim.run()
    return frames


def test_decoder_matches_cobs_package():
    rng = np.random.default_rng(7)
    bodies = [b"", b"\x00", b"\x00\x00", bytes(range(1, 255)), bytes(range(1, 256)),
              bytes([1] * 254) + b"\x00", bytes([7] * 600)]
    for _ in range(6):
        body = rng.integers(0, 256, rng.integers(1, 400), dtype=np.uint8)
        body[rng.random(body.size) < 0.9] |= 1
        bodies.append(body.tobytes())
    wire = b"".join(cobs.encode(b) + b"\x00" for b in bodies)
    got = decode_in_gateware(wire)
    # the empty body encodes as b"\x01": a frame of zero bytes, reported without error
    assert got == [(b, False) for b in bodies]


def test_decoder_flags_truncated_blocks_and_resynchronises():
    good = cobs.encode(b"\x11\x22\x00\x33") + b"\x00"
    got = decode_in_gateware(b"\x05\x01\x02\x00" + good)   # promises 4 bytes, has 2
    assert got == [(b"\x01\x02", True), (b"\x11\x22\x00\x33", False)]


def test_crc_matches_crcmod():
    proc = crc16()
    rng = np.random.default_rng(3)
    messages = [b"123456789", b"", b"\x00", rng.integers(0, 256, 300, np.uint8).tobytes()]
    results = []

    async def bench(ctx):
        for msg in messages:
            ctx.set(proc.start, 1)
            await ctx.tick()
            ctx.set(proc.start, 0)
            for byte in msg:
                ctx.set(proc.valid, 1)
                ctx.set(proc.data, byte)
                await ctx.tick()
            ctx.set(proc.valid, 0)
            crc = ctx.get(proc.crc)
            results.append(crc)
            # the message followed by its CRC, big-endian, leaves the residue
            for byte in crc.to_bytes(2, "big"):
                ctx.set(proc.valid, 1)
                ctx.set(proc.data, byte)
                await ctx.tick()
            ctx.set(proc.valid, 0)
            assert ctx.get(proc.match_detected)

    sim = Simulator(proc)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert results == [host_crc16(m) for m in messages]
    assert results[0] == 0x29B1
