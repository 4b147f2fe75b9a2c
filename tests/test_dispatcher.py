"""The dispatcher with framing and the stand-in engine, at the byte-stream level (no UART):
"write these frames, expect these replies"."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from mstpn.hdl.dispatcher import Dispatcher
from mstpn.hdl.framing import CobsDecoder, FrameReceiver, FrameTransmitter
from mstpn.hdl.standin import StandInEngine, standin_step
from mstpn.hdl.top import _connect_engine
from mstpn.host.link import body_of, decode_body, encode_frame
from mstpn.model.memmap import memory_map
from mstpn.spec import protocol as P
from mstpn.spec.device import DeviceModel
from mstpn.spec.presets import get_preset

PRESET = get_preset("icebreaker")
C, E = P.Command, P.Error


class Chain(wiring.Component):
    """Decoder -> receiver -> dispatcher -> transmitter, with the stand-in engine."""

    def __init__(self):
        from amaranth.lib import stream
        from amaranth.lib.wiring import In, Out

        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dec = dec = CobsDecoder()
        m.submodules.rcv = rcv = FrameReceiver()
        m.submodules.tx = tx = FrameTransmitter()
        m.submodules.disp = disp = Dispatcher(PRESET, DeviceModel(), standin=True)
        m.submodules.eng = eng = StandInEngine(PRESET, DeviceModel())
        wiring.connect(m, wiring.flipped(self.i), dec.i)
        wiring.connect(m, dec.o, rcv.i)
        wiring.connect(m, rcv.frame, disp.frame)
        wiring.connect(m, disp.send, tx.send)
        wiring.connect(m, tx.o, wiring.flipped(self.o))
        m.d.comb += [
            disp.rd_data.eq(rcv.rd_data), rcv.rd_addr.eq(disp.rd_addr),
            tx.wr_addr.eq(disp.tx_addr), tx.wr_data.eq(disp.tx_data), tx.wr_en.eq(disp.tx_en),
            disp.tx_idle.eq(tx.idle),
        ]
        _connect_engine(m, disp.engine, eng, PRESET)
        return m


def run(chunks: list[tuple[bytes, int]], max_cycles: int = 20000) -> list[bytes]:
    """Send each chunk of wire bytes, then wait for the given number of new reply frames (each
    returned as its raw COBS bytes)."""
    dut = Chain()
    frames: list[bytes] = []

    finished = []

    async def collect(ctx):
        buf = bytearray()
        ctx.set(dut.o.ready, 1)
        while not finished:
            _, _, valid, byte = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if not valid:
                continue
            if byte == 0:
                frames.append(bytes(buf))
                buf.clear()
            else:
                buf.append(byte)

    async def drive(ctx):
        for data, expect in chunks:
            want = len(frames) + expect
            for byte in data:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, byte)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            for _ in range(max_cycles):
                if len(frames) >= want:
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"no reply after {max_cycles} cycles; got {frames}")
            await ctx.tick().repeat(20)
            assert len(frames) == want, f"expected {want} replies, got {len(frames)}"
        finished.append(True)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(collect)
    sim.run()
    return frames


def req(cmd: int, seq: int, payload: bytes = b"") -> tuple[bytes, int]:
    return encode_frame(cmd, seq, payload), 1


def damaged(body: bytes) -> bytes:
    """A frame whose body has one bit flipped (so the CRC fails), correctly COBS-encoded."""
    from cobs import cobs

    body = bytearray(body)
    body[-3 if len(body) > 6 else 0] ^= 0x10
    return cobs.encode(bytes(body)) + b"\x00"


def ok(raw: bytes, cmd: int, seq: int) -> bytes:
    rtype, rseq, payload = decode_body(raw)
    assert (rtype, rseq) == (cmd | P.REPLY_FLAG, seq), (hex(rtype), rseq, payload)
    return payload


def err(raw: bytes, code: int, seq: int | None = None) -> None:
    rtype, rseq, payload = decode_body(raw)
    assert rtype == P.ERROR_TYPE and payload[0] == code, (hex(rtype), payload)
    if seq is not None:
        assert rseq == seq


def test_info_and_errors():
    r = run([
        req(C.INFO, 1),
        req(0x42, 2),                                     # unknown command
        req(C.INFO, 3, b"x"),                             # INFO takes no payload
        (damaged(body_of(C.INFO, 4, b"")), 1),             # damaged CRC
        req(C.STEP, 5, bytes(1 + PRESET.frame.packed_bytes)),   # before COMMIT
        req(C.READBACK, 6, P.READBACK_REQUEST.pack(84_600, 100)),   # past the end
        req(C.READBACK, 7, P.READBACK_REQUEST.pack(0, 0)),          # zero bytes
        req(C.LOAD, 8, P.LOAD_HEADER.pack(memory_map(PRESET)["h"].base) + b"\x01"),  # into h
        (b"\x00", 0),                                      # empty frame: no reply
        (b"\x13\x37\x99\x00", 1),                          # garbage: BAD_FRAME
    ])
    info = P.Info.unpack(ok(r[0], C.INFO, 1))
    assert info == P.Info.build(PRESET, DeviceModel(), flags=P.InfoFlags.STANDIN,
                                build_id=info.build_id)
    err(r[1], E.UNKNOWN_COMMAND, 2)
    err(r[2], E.BAD_LENGTH, 3)
    err(r[3], E.BAD_CRC, 4)
    err(r[4], E.NOT_LOADED, 5)
    err(r[5], E.BAD_ADDRESS, 6)
    err(r[6], E.BAD_ARGUMENT, 7)
    err(r[7], E.BAD_ADDRESS, 8)
    err(r[8], E.BAD_FRAME)


def test_load_readback_commit_step_and_repeat():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 256, dtype=np.uint8).tobytes()
    frame = rng.integers(0, 256, PRESET.frame.packed_bytes, dtype=np.uint8).tobytes()
    frame2 = bytes(reversed(frame))
    step = encode_frame(C.STEP, 13, bytes([3]) + frame)
    r = run([
        req(C.LOAD, 10, P.LOAD_HEADER.pack(1000) + data),
        req(C.READBACK, 11, P.READBACK_REQUEST.pack(1000, 256)),
        req(C.COMMIT, 12, P.COMMIT.pack(0xDEADBEEF)),
        (step, 1),
        (step, 1),                                         # a retry: the stored reply again
        req(C.STEP, 14, bytes([1]) + frame2),
        req(C.COUNTERS, 15, b"\x01"),                      # read and clear
        req(C.COUNTERS, 16),
        req(C.INFO, 17),
    ], max_cycles=40000)
    assert ok(r[0], C.LOAD, 10) == b""
    assert ok(r[1], C.READBACK, 11) == data
    assert ok(r[2], C.COMMIT, 12) == b""
    action, logits = standin_step(frame)
    reply = ok(r[3], C.STEP, 13)
    assert reply[0] == action
    assert [int.from_bytes(reply[1 + 4 * k:5 + 4 * k], "little", signed=True)
            for k in range(3)] == logits
    counters = [int.from_bytes(reply[13 + 6 * i:19 + 6 * i], "little") for i in range(5)]
    assert counters[:3] == [1, PRESET.synapses, PRESET.hidden * PRESET.plastic.inputs]
    assert r[4] == r[3]                                    # byte for byte, and no second step
    reply2 = ok(r[5], C.STEP, 14)
    assert reply2[0] == standin_step(frame2)[0] and len(reply2) == 13
    c1 = ok(r[6], C.COUNTERS, 15)
    assert int.from_bytes(c1[:6], "little") == 2           # two steps, not three
    assert ok(r[7], C.COUNTERS, 16) == bytes(30)
    info = P.Info.unpack(ok(r[8], C.INFO, 17))
    assert info.loaded and info.image_hash == 0xDEADBEEF


def test_oversize_and_garbage_resync():
    big = body_of(C.LOAD, 20, P.LOAD_HEADER.pack(0) + bytes(300)) + bytes(300)
    from cobs import cobs

    r = run([
        (cobs.encode(big) + b"\x00", 1),
        (b"\xff\x01\x02" + encode_frame(C.INFO, 21), 1),   # garbage glued to a frame
        (b"\x00" + encode_frame(C.INFO, 22), 1),           # garbage, then a clean frame
    ], max_cycles=40000)
    err(r[0], E.OVERSIZE, 20)
    rtype, _, payload = decode_body(r[1])
    assert rtype == P.ERROR_TYPE
    P.Info.unpack(ok(r[2], C.INFO, 22))


@pytest.mark.parametrize("body_len", [0, 1, 253, 254, 255, 508])
def test_transmitter_matches_cobs_package(body_len):
    """Replies of many lengths come out exactly as the cobs package encodes them."""
    rng = np.random.default_rng(body_len)
    data = rng.integers(1, 256, body_len, dtype=np.uint8)
    if body_len > 4:
        data[rng.integers(0, body_len, 3)] = 0
    # LOAD it and read it back: the READBACK reply is a body with this data as its payload
    data = data.tobytes()
    chunks, expect = [], []
    for off in range(0, len(data), 256):
        chunks.append(req(C.LOAD, off // 256, P.LOAD_HEADER.pack(off) + data[off:off + 256]))
    for off in range(0, len(data), 256):
        n = min(256, len(data) - off)
        chunks.append(req(C.READBACK, 100 + off // 256, P.READBACK_REQUEST.pack(off, n)))
        expect.append(encode_frame(C.READBACK | P.REPLY_FLAG, 100 + off // 256,
                                   data[off:off + n])[:-1])
    r = run(chunks, max_cycles=40000) if chunks else []
    assert r[len(r) - len(expect):] == expect


def test_address_bounds_flags_and_loaded():
    """The edges of the address checks (exact for every 32-bit address, not only the map's
    width), each STEP flag combination's reply layout, and which LOADs clear *loaded*."""
    regions = memory_map(PRESET)
    space = max(r.end for r in regions.values())
    h_base, f_base = regions["h"].base, regions["f"].base
    wide = 1 << (space - 1).bit_length()       # the first address past the map's width
    frame = bytes(range(256)) + bytes(PRESET.frame.packed_bytes - 256)
    action = standin_step(frame)[0]
    rb = P.READBACK_REQUEST.pack
    r = run([
        req(C.LOAD, 1, P.LOAD_HEADER.pack(h_base - 1) + b"\x5a"),          # the last byte
        req(C.LOAD, 2, P.LOAD_HEADER.pack(h_base - 1) + b"\x5a\x5a"),      # one past
        req(C.LOAD, 3, P.LOAD_HEADER.pack(wide + 16) + b"\x01"),           # aliases 16
        req(C.LOAD, 4, P.LOAD_HEADER.pack(0xFFFF_FFFF) + b"\x01"),         # wraps in 32 bits
        req(C.READBACK, 5, rb(space - 2, 2)),                              # the last bytes
        req(C.READBACK, 6, rb(space - 2, 3)),
        req(C.READBACK, 7, rb(wide + 16, 1)),
        req(C.READBACK, 8, rb(0xFFFF_FF00, 256)),                          # wraps to 0
        req(C.READBACK, 9, rb(0, 257)),
        req(C.READBACK, 10, rb(h_base - 1, 1)),
        req(C.COMMIT, 11, P.COMMIT.pack(7)),
        req(C.STEP, 12, bytes([2]) + frame),                               # counters only
        req(C.STEP, 13, bytes([0]) + frame),                               # action only
        req(C.STEP, 14, bytes([4]) + frame),                               # unknown flag
        req(C.COUNTERS, 15, b"\x02"),                                      # unknown flag
        req(C.LOAD, 16, P.LOAD_HEADER.pack(f_base) + b"\x00"),             # F: stays loaded
        req(C.STEP, 17, bytes([0]) + frame),
        req(C.LOAD, 18, P.LOAD_HEADER.pack(f_base - 1) + b"\x00"),         # a parameter
        req(C.STEP, 19, bytes([0]) + frame),
        req(C.INFO, 20),
    ], max_cycles=40000)
    assert ok(r[0], C.LOAD, 1) == b""
    err(r[1], E.BAD_ADDRESS, 2)
    err(r[2], E.BAD_ADDRESS, 3)
    err(r[3], E.BAD_ADDRESS, 4)
    assert len(ok(r[4], C.READBACK, 5)) == 2
    err(r[5], E.BAD_ADDRESS, 6)
    err(r[6], E.BAD_ADDRESS, 7)
    err(r[7], E.BAD_ADDRESS, 8)
    err(r[8], E.BAD_ARGUMENT, 9)
    assert ok(r[9], C.READBACK, 10) == b"\x5a"
    assert ok(r[10], C.COMMIT, 11) == b""
    reply = ok(r[11], C.STEP, 12)
    assert len(reply) == 1 + P.counters_bytes() and reply[0] == action
    assert int.from_bytes(reply[1:7], "little") == 1                       # steps
    assert int.from_bytes(reply[7:13], "little") == PRESET.synapses       # MACs
    assert ok(r[12], C.STEP, 13) == bytes([action])
    err(r[13], E.BAD_ARGUMENT, 14)
    err(r[14], E.BAD_ARGUMENT, 15)
    assert ok(r[15], C.LOAD, 16) == b""
    assert ok(r[16], C.STEP, 17) == bytes([action])
    assert ok(r[17], C.LOAD, 18) == b""
    err(r[18], E.NOT_LOADED, 19)
    info = P.Info.unpack(ok(r[19], C.INFO, 20))
    assert not info.loaded and info.image_hash == 7
