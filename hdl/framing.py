"""Framing in gateware: COBS decoding, the receive buffer with its CRC check, and the transmit
buffer with its COBS encoder.

Data path: UART RX -> :class:`CobsDecoder` -> :class:`FrameReceiver` (RX buffer, CRC-16) ->
dispatcher -> TX buffer in :class:`FrameTransmitter` (COBS encoder) -> UART TX.

The frame format, the CRC and the sizes are :mod:`mstpn.spec.protocol`'s. A 0x00 on the line
always ends a frame, so garbage is resynchronised at the next delimiter: whatever came before it
is reported as one bad frame (or ignored if empty).

Cost (estimated, not yet synthesised): the decoder is about 30 LUTs; the receiver holds one body
(``MAX_BODY`` bytes: two 4-Kbit EBRs on iCE40) and a parallel CRC-16 (about 40 LUTs); the
transmitter holds one reply body plus a 64-byte slot for the last STEP reply, and encodes at about
4 cycles per byte (far faster than the UART's 40 or more).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import protocol

__all__ = [
    "decoded_layout", "frame_info_layout", "send_layout", "CobsDecoder", "FrameReceiver",
    "FrameTransmitter", "TX_DEPTH", "STEP_SLOT", "crc16",
]

#: Where the last STEP reply is kept in the TX buffer (after one general reply).
STEP_SLOT = protocol.MAX_BODY
#: Bytes of the TX buffer.
TX_DEPTH = protocol.MAX_BODY + 64


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

        base = Signal(range(TX_DEPTH))
        length = Signal(range(TX_DEPTH + 1))
        pos = Signal(range(TX_DEPTH + 1))
        cnt = Signal(9)      # scanned bytes of the current block
        idx = Signal(9)      # emitted bytes of the current block
        scanning = Signal()
        final_zero = Signal()
        hit_zero = Signal()
        code = Signal(8)
        m.d.comb += rd.addr.eq(base + pos + Mux(scanning, cnt, idx))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.send.ready.eq(1), self.idle.eq(1)]
                with m.If(self.send.valid):
                    m.d.sync += [base.eq(self.send.payload.base),
                                 length.eq(self.send.payload.length),
                                 pos.eq(0), final_zero.eq(1)]
                    m.next = "TOP"
            with m.State("TOP"):
                with m.If(pos == length):
                    with m.If(final_zero):
                        m.d.sync += code.eq(1)
                        m.next = "LAST_CODE"
                    with m.Else():
                        m.next = "DELIM"
                with m.Else():
                    m.d.sync += [cnt.eq(0), scanning.eq(1)]
                    m.next = "SCAN_ADDR"
            with m.State("SCAN_ADDR"):
                with m.If(cnt == 254):
                    m.d.sync += [code.eq(0xFF), hit_zero.eq(0), scanning.eq(0), idx.eq(0)]
                    m.next = "CODE"
                with m.Elif(pos + cnt == length):
                    m.d.sync += [code.eq(cnt + 1), hit_zero.eq(0), scanning.eq(0), idx.eq(0)]
                    m.next = "CODE"
                with m.Else():
                    m.next = "SCAN_DATA"
            with m.State("SCAN_DATA"):
                with m.If(rd.data == 0):
                    m.d.sync += [code.eq(cnt + 1), hit_zero.eq(1), scanning.eq(0), idx.eq(0)]
                    m.next = "CODE"
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
                    m.next = "SCAN_ADDR"
            with m.State("CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(code)]
                with m.If(self.o.ready):
                    m.next = "EMIT_ADDR"
            with m.State("EMIT_ADDR"):
                with m.If(idx == cnt):
                    m.d.sync += [pos.eq(pos + cnt + hit_zero), final_zero.eq(hit_zero)]
                    m.next = "TOP"
                with m.Else():
                    m.next = "EMIT_DATA"
            with m.State("EMIT_DATA"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(rd.data)]
                with m.If(self.o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    m.next = "EMIT_ADDR"
            with m.State("LAST_CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(code)]
                with m.If(self.o.ready):
                    m.next = "DELIM"
            with m.State("DELIM"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(0)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
