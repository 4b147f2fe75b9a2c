"""Framing in gateware: COBS decoding, the receive buffer with its CRC check, and the transmit
buffer with its COBS encoder.

Data path: UART RX -> :class:`CobsDecoder` -> :class:`FrameReceiver` (RX buffer, CRC-16) ->
dispatcher -> TX buffer in :class:`FrameTransmitter` (COBS encoder) -> UART TX.

The frame format, the CRC and the sizes are :mod:`mstpn.spec.protocol`'s. A 0x00 on the line
always ends a frame, so garbage is resynchronised at the next delimiter: whatever came before it
is reported as one bad frame (or ignored if empty).

Cost (yosys ``synth_ice40``, iCEBreaker build, docs/boards.md): the decoder 47 LUT4s; the
receiver 141 LUT4s and a CRC-16 of 36, holding one body (``MAX_BODY`` bytes: two 4-Kbit EBRs);
the transmitter 153 LUT4s, holding one reply body plus a 64-byte slot for the last STEP reply
(512 bytes: one EBR), and encoding at about 4 cycles per byte (far faster than the UART's 40
or more).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import protocol
from ..spec.presets import PRESETS

__all__ = [
    "decoded_layout", "frame_info_layout", "send_layout", "CobsDecoder", "FrameReceiver",
    "FrameTransmitter", "TX_DEPTH", "STEP_SLOT", "crc16",
]

#: Bytes of the TX buffer: one 4-Kbit EBR on iCE40.
TX_DEPTH = 512
#: Where the last STEP reply is kept in the TX buffer: its last 64 bytes, after one general
#: reply.
STEP_SLOT = TX_DEPTH - 64

# a STEP reply with logits and counters fits its slot, and every other reply the space before it
assert all(protocol.OVERHEAD_BYTES + protocol.step_reply_bytes(
    p, protocol.StepFlags.LOGITS | protocol.StepFlags.COUNTERS) <= TX_DEPTH - STEP_SLOT
           for p in PRESETS.values())
assert protocol.MAX_REPLY_BODY <= STEP_SLOT


def crc16():
    """The CRC-16/CCITT-FALSE processor of :mod:`mstpn.spec.protocol`, one byte per cycle."""
    return catalog.CRC16_CCITT_FALSE(data_width=8).create()


def decoded_layout() -> data.StructLayout:
    """A beat of decoded bytes: a byte, or the end of a frame (``error``: COBS broken)."""
    return data.StructLayout({"data": 8, "end": 1, "error": 1})


def frame_info_layout() -> data.StructLayout:
    """What the receiver says about a complete frame.

    ``status`` is 0 for a good frame, else the :class:`~mstpn.spec.protocol.Error` code; ``crc``
    is the frame's own CRC (its last two bytes), which the dispatcher uses to recognise a repeat.
    """
    return data.StructLayout({
        "status": 8, "type": 8, "seq": 8, "length": 16, "crc": 16,
    })


def send_layout() -> data.StructLayout:
    """A request to send the body at ``base`` of ``length`` bytes from the TX buffer."""
    return data.StructLayout({"base": range(TX_DEPTH), "length": range(TX_DEPTH + 1)})


class CobsDecoder(wiring.Component):
    """COBS decoder: raw bytes from the line in, decoded bytes and frame ends out.

    Each input byte gives at most one output beat: a code byte gives the zero it stands for (if
    any), a data byte itself, and a 0x00 an end beat. The end beat's ``error`` is set if the
    last code byte promised more bytes than came.
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(decoded_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        remaining = Signal(8)   # data bytes left in the current block; 0: the next is a code
        pending_zero = Signal()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            byte = self.i.payload
            with m.If(byte == 0):
                m.d.sync += [
                    self.o.payload.eq(0), self.o.payload.end.eq(1),
                    self.o.payload.error.eq(remaining != 0), self.o.valid.eq(1),
                    remaining.eq(0), pending_zero.eq(0),
                ]
            with m.Elif(remaining == 0):
                m.d.sync += [remaining.eq(byte - 1), pending_zero.eq(byte != 0xFF)]
                with m.If(pending_zero):
                    m.d.sync += [self.o.payload.eq(0), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(0), self.o.payload.data.eq(byte),
                             self.o.valid.eq(1), remaining.eq(remaining - 1)]
        return m


class FrameReceiver(wiring.Component):
    """Collects one decoded frame into the RX buffer and checks it.

    At each frame end (unless the frame is empty) ``frame`` becomes valid with the status and
    the header fields, and stays valid, with the buffer frozen, until the dispatcher takes it.
    The dispatcher reads the buffer through ``rd_addr``/``rd_data`` (one cycle of latency).
    Checks, in order: COBS (BAD_FRAME), size above ``MAX_BODY`` (OVERSIZE), shorter than a
    header and CRC (BAD_LENGTH), CRC (BAD_CRC), length field against the bytes (BAD_LENGTH).
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(decoded_layout())),
            "frame": Out(stream.Signature(frame_info_layout())),
            "rd_addr": In(range(protocol.MAX_BODY)),
            "rd_data": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        E = protocol.Error
        m.submodules.mem = mem = Memory(shape=8, depth=protocol.MAX_BODY, init=[])
        wr = mem.write_port()
        rd = mem.read_port()
        m.submodules.crc = crc = crc16()
        m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data)]

        count = Signal(range(protocol.MAX_BODY + 2))
        info = self.frame.payload
        last2 = Signal(16)

        m.d.comb += self.i.ready.eq(~self.frame.valid)
        with m.If(self.frame.valid & self.frame.ready):
            m.d.sync += [self.frame.valid.eq(0), info.eq(0)]

        with m.If(self.i.valid & self.i.ready):
            beat = self.i.payload
            with m.If(beat.end):
                m.d.sync += count.eq(0)
                with m.If((count != 0) | beat.error):
                    m.d.sync += [self.frame.valid.eq(1), info.crc.eq(last2)]
                    payload_len = count - protocol.OVERHEAD_BYTES
                    with m.If(beat.error):
                        m.d.sync += info.status.eq(E.BAD_FRAME)
                    with m.Elif(count > protocol.MAX_BODY):
                        m.d.sync += info.status.eq(E.OVERSIZE)
                    with m.Elif(count < protocol.OVERHEAD_BYTES):
                        m.d.sync += info.status.eq(E.BAD_LENGTH)
                    with m.Elif(~crc.match_detected):
                        m.d.sync += info.status.eq(E.BAD_CRC)
                    with m.Elif(info.length != payload_len[:16]):
                        m.d.sync += info.status.eq(E.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += info.status.eq(0)
            with m.Else():
                m.d.comb += [crc.valid.eq(1), crc.data.eq(beat.data),
                             crc.start.eq(count == 0)]
                m.d.sync += last2.eq(Cat(beat.data, last2[:8]))
                with m.If(count <= protocol.MAX_BODY):
                    m.d.sync += count.eq(count + 1)
                with m.If(count < protocol.MAX_BODY):
                    m.d.comb += [wr.addr.eq(count), wr.data.eq(beat.data), wr.en.eq(1)]
                with m.Switch(count):
                    with m.Case(0):
                        m.d.sync += info.type.eq(beat.data)
                    with m.Case(1):
                        m.d.sync += info.seq.eq(beat.data)
                    with m.Case(2):
                        m.d.sync += info.length[:8].eq(beat.data)
                    with m.Case(3):
                        m.d.sync += info.length[8:].eq(beat.data)
        return m


class FrameTransmitter(wiring.Component):
    """The TX buffer and the COBS encoder.

    The dispatcher writes a reply body (CRC included) into the buffer through ``wr_*``, then
    asks for it to be sent with a ``send`` beat; ``send`` is ready only while the encoder is idle,
    and ``idle`` says that the last frame has left the encoder. The encoding matches the ``cobs``
    package's byte for byte, followed by one 0x00.
    """

    def __init__(self):
        super().__init__({
            "wr_addr": In(range(TX_DEPTH)),
            "wr_data": In(8),
            "wr_en": In(1),
            "send": In(stream.Signature(send_layout())),
            "o": Out(stream.Signature(8)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=TX_DEPTH, init=[])
        wr = mem.write_port()
        rd = mem.read_port()
        m.d.comb += [wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data), wr.en.eq(self.wr_en)]

        # COBS in place, with pointers only: ``blk`` is where the current block starts, ``rp``
        # the byte read (a scan runs it to the block's end, then the emission from ``blk`` to
        # ``stop``), and ``code`` counts the block's bytes from 1, so it is the code byte
        # itself (255: a full block of 254). No ``base + offset`` adders.
        end = Signal(range(TX_DEPTH + 1))
        blk = Signal(range(TX_DEPTH + 1))
        rp = Signal(range(TX_DEPTH + 1))
        stop = Signal(range(TX_DEPTH + 1))
        final_zero = Signal()
        hit_zero = Signal()
        code = Signal(8)
        m.d.comb += rd.addr.eq(rp)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.send.ready.eq(1), self.idle.eq(1)]
                with m.If(self.send.valid):
                    m.d.sync += [blk.eq(self.send.payload.base),
                                 end.eq(self.send.payload.base + self.send.payload.length),
                                 final_zero.eq(1)]
                    m.next = "TOP"
            with m.State("TOP"):
                with m.If(blk == end):
                    with m.If(final_zero):
                        m.next = "LAST_CODE"
                    with m.Else():
                        m.next = "DELIM"
                with m.Else():
                    m.d.sync += [code.eq(1), hit_zero.eq(0), rp.eq(blk)]
                    m.next = "SCAN_ADDR"
            with m.State("SCAN_ADDR"):
                with m.If((code == 0xFF) | (rp == end)):
                    m.next = "CODE"
                with m.Else():
                    m.next = "SCAN_DATA"
            with m.State("SCAN_DATA"):
                with m.If(rd.data == 0):
                    m.d.sync += hit_zero.eq(1)
                    m.next = "CODE"
                with m.Else():
                    m.d.sync += [code.eq(code + 1), rp.eq(rp + 1)]
                    m.next = "SCAN_ADDR"
            with m.State("CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(code)]
                with m.If(self.o.ready):
                    # the next block starts after the zero that ended this one, if any
                    m.d.sync += [stop.eq(rp), rp.eq(blk), blk.eq(Mux(hit_zero, rp + 1, rp)),
                                 final_zero.eq(hit_zero)]
                    m.next = "EMIT_ADDR"
            with m.State("EMIT_ADDR"):
                with m.If(rp == stop):
                    m.next = "TOP"
                with m.Else():
                    m.next = "EMIT_DATA"
            with m.State("EMIT_DATA"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(rd.data)]
                with m.If(self.o.ready):
                    m.d.sync += rp.eq(rp + 1)
                    m.next = "EMIT_ADDR"
            with m.State("LAST_CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(1)]
                with m.If(self.o.ready):
                    m.next = "DELIM"
            with m.State("DELIM"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(0)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
