"""The command dispatcher: one checked request frame in, one reply frame out, the engine driven.

Data path: :class:`~mstpn.hdl.framing.FrameReceiver` (RX buffer) -> **dispatcher** -> engine
ports (``docs/engine-interface.md``) and the TX buffer of
:class:`~mstpn.hdl.framing.FrameTransmitter`.

Rules (``docs/protocol.md``):

- Every frame the receiver reports gets exactly one reply. A frame with a framing error, or a
  request that fails any check, gets an ERROR reply and changes nothing: every check runs
  before the first side effect.
- STEP is never executed twice. The dispatcher remembers the sequence number and CRC of the last
  STEP it executed (and forgets them on any request that changes state: LOAD, RESET_STATE,
  SET_SEED, COMMIT, COUNTERS with clear). A STEP equal to it in both is a repeat, and gets the
  stored reply of that STEP again (kept in its own slot of the TX buffer). The host never sends
  a new STEP that would look like a repeat (it skips a sequence number instead).
- STEP before COMMIT (or without a baked-in image) is refused with NOT_LOADED. A LOAD below the
  ``f`` region (into the parameters) clears the loaded flag again.

Cost (estimated, not yet synthesised): one FSM, a 48-bit argument register, the captured step
result and counters (about 350 flip-flops), one CRC-16, about 600 LUTs in all on iCE40. It adds
about 20 cycles per request, plus 2 cycles per byte moved between a buffer and the engine.
"""

from __future__ import annotations

import zlib

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..model.memmap import address_bits, memory_map
from ..spec import protocol
from ..spec.device import DeviceModel
from ..spec.presets import Preset
from .engine_types import (
    COUNTER_BITS,
    Control,
    control_layout,
    counter_layout,
    param_write_layout,
    step_result_layout,
)
from .framing import STEP_SLOT, TX_DEPTH, crc16, frame_info_layout, send_layout

__all__ = ["engine_signature", "Dispatcher", "build_id"]


def engine_signature(preset: Preset) -> wiring.Signature:
    """The engine's signature as ``docs/engine-interface.md`` fixes it (seen from the engine)."""
    abits = address_bits(preset)
    return wiring.Signature({
        "frame": In(stream.Signature(8)),
        "result": Out(stream.Signature(step_result_layout(preset))),
        "param_write": In(stream.Signature(param_write_layout(abits))),
        "param_read": In(stream.Signature(abits)),
        "param_data": Out(stream.Signature(8)),
        "control": In(stream.Signature(control_layout())),
        "busy": Out(1),
        "counters": Out(counter_layout()),
    })


def build_id(preset: Preset, device: DeviceModel, standin: bool) -> int:
    """A 32-bit id of what a build elaborates: protocol, preset, device options, engine kind."""
    text = f"{protocol.VERSION}:{preset.name}:{sorted(device.to_dict().items())}:{standin}"
    return zlib.crc32(text.encode())


class Dispatcher(wiring.Component):
    """Executes checked request frames against the engine and writes the replies.

    Parameters
    ----------
    preset : Preset
    device : DeviceModel
    baked_hash : int or None
        The content hash of an image baked into the engine's memories: STEP is then allowed
        from reset and INFO reports it.
    standin : bool
        INFO says a stand-in engine sits behind the link.
    clk_hz, divisor : int
        Reported by INFO.

    Raises
    ------
    TypeError
        If ``preset`` or ``device`` has the wrong type.
    """

    def __init__(self, preset: Preset, device: DeviceModel, *, baked_hash: int | None = None,
                 standin: bool = False, clk_hz: int = 0, divisor: int = 0):
        if not isinstance(preset, Preset):
            raise TypeError(f"preset must be a Preset, not {preset!r}")
        if not isinstance(device, DeviceModel):
            raise TypeError(f"device must be a DeviceModel, not {device!r}")
        self.preset = preset
        self.device = device
        self.baked_hash = baked_hash
        regions = memory_map(preset)
        self.space = max(r.end for r in regions.values())
        self.writable_end = regions["h"].base
        self.f_base = regions["f"].base
        flags = protocol.InfoFlags(0)
        if baked_hash is not None:
            flags |= protocol.InfoFlags.BAKED
        if standin:
            flags |= protocol.InfoFlags.STANDIN
        self.info = protocol.Info.build(
            preset, device, flags=int(flags), build_id=build_id(preset, device, standin),
            clock_hz=clk_hz, divisor=divisor,
        )
        super().__init__({
            "frame": In(stream.Signature(frame_info_layout())),
            "rd_addr": Out(range(protocol.MAX_BODY)),
            "rd_data": In(8),
            "tx_addr": Out(range(TX_DEPTH)),
            "tx_data": Out(8),
            "tx_en": Out(1),
            "send": Out(stream.Signature(send_layout())),
            "tx_idle": In(1),
            "engine": In(engine_signature(preset)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, E, C = protocol, protocol.Error, protocol.Command
        preset = self.preset
        eng = self.engine
        info = self.frame.payload
        m.submodules.crc = crc = crc16()

        # --- state that outlives a request --------------------------------------------------
        loaded = Signal(init=self.baked_hash is not None)
        image_hash = Signal(32, init=self.baked_hash or 0)
        last_seq = Signal(8)
        last_crc = Signal(16)
        last_valid = Signal()     # last_seq/last_crc hold a STEP that may be repeated
        step_len = Signal(range(TX_DEPTH + 1))

        # --- per-request registers ------------------------------------------------------------
        k = Signal(range(P.MAX_BODY + 1))
        issued = Signal(range(P.MAX_CHUNK + 1))
        args = Signal(48)
        addr = args[:32]
        err = Signal(8)
        r_type = Signal(8)
        plen = Signal(range(P.MAX_PAYLOAD + 1))
        base = Signal(range(TX_DEPTH))
        kind = Signal(3)
        KIND_EMPTY, KIND_ERROR, KIND_INFO, KIND_STEP, KIND_COUNTERS, KIND_READBACK = range(6)
        rd_base = Signal(range(P.MAX_BODY))
        xfer = Signal(range(P.MAX_PAYLOAD + 1))   # bytes to move to the engine
        step_flags = Signal(8)
        ctrl_op = Signal(2)
        clear_after = Signal()
        rb_active = Signal()
        logit_bits = 32 * preset.actions
        step_vec = Signal(8 + logit_bits + 5 * COUNTER_BITS)
        counters_now = Cat(*(eng.counters[name] for name in P.COUNTER_NAMES))

        m.d.comb += self.rd_addr.eq(rd_base + k)

        # --- checks (combinational, all before any side effect) -------------------------------
        n = info.length
        count = args[32:48]
        frame_bytes = preset.frame.packed_bytes
        check = Signal(8)
        with m.Switch(info.type):
            with m.Case(C.INFO, C.RESET_STATE):
                m.d.comb += check.eq(Mux(n == 0, 0, E.BAD_LENGTH))
            with m.Case(C.LOAD):
                with m.If((n < P.LOAD_HEADER.size + 1) | (n > P.LOAD_HEADER.size + P.MAX_CHUNK)):
                    m.d.comb += check.eq(E.BAD_LENGTH)
                with m.Elif(addr + (n - P.LOAD_HEADER.size) > self.writable_end):
                    m.d.comb += check.eq(E.BAD_ADDRESS)
            with m.Case(C.READBACK):
                with m.If(n != P.READBACK_REQUEST.size):
                    m.d.comb += check.eq(E.BAD_LENGTH)
                with m.Elif((count == 0) | (count > P.MAX_CHUNK)):
                    m.d.comb += check.eq(E.BAD_ARGUMENT)
                with m.Elif(addr + count > self.space):
                    m.d.comb += check.eq(E.BAD_ADDRESS)
            with m.Case(C.STEP):
                with m.If(n != 1 + frame_bytes):
                    m.d.comb += check.eq(E.BAD_LENGTH)
                with m.Elif(args[2:8] != 0):
                    m.d.comb += check.eq(E.BAD_ARGUMENT)
                with m.Elif(~loaded):
                    m.d.comb += check.eq(E.NOT_LOADED)
            with m.Case(C.COUNTERS):
                with m.If(n > 1):
                    m.d.comb += check.eq(E.BAD_LENGTH)
                with m.Elif((n == 1) & (args[1:8] != 0)):
                    m.d.comb += check.eq(E.BAD_ARGUMENT)
            with m.Case(C.SET_SEED, C.COMMIT):
                m.d.comb += check.eq(Mux(n == P.SEED.size, 0, E.BAD_LENGTH))
            with m.Default():
                m.d.comb += check.eq(E.UNKNOWN_COMMAND)
        duplicate = Signal()
        m.d.comb += duplicate.eq(
            (info.type == C.STEP) & last_valid & (info.seq == last_seq)
            & (info.crc == last_crc)
        )

        # --- reply payload bytes --------------------------------------------------------------
        info_rom = Const(int.from_bytes(self.info.pack(), "little"), 8 * P.INFO.size)
        flags_off = P.info_offset("flags")
        hash_off = P.info_offset("image_hash")
        info_byte = Signal(8)
        m.d.comb += info_byte.eq(info_rom.word_select(k[:6], 8))
        with m.If(k == flags_off):
            m.d.comb += info_byte.eq(self.info.flags | loaded)
        for i in range(4):
            with m.If(k == hash_off + i):
                m.d.comb += info_byte.eq(image_hash.word_select(i, 8))
        step_index = Signal(range(len(step_vec) // 8 + 1))
        m.d.comb += step_index.eq(Mux(
            (k == 0) | step_flags[0], k, k + logit_bits // 8))
        pay_byte = Signal(8)
        with m.Switch(kind):
            with m.Case(KIND_ERROR):
                m.d.comb += pay_byte.eq(Mux(k == 0, err, info.type))
            with m.Case(KIND_INFO):
                m.d.comb += pay_byte.eq(info_byte)
            with m.Case(KIND_STEP):
                m.d.comb += pay_byte.eq(step_vec.word_select(step_index, 8))
            with m.Case(KIND_COUNTERS):
                m.d.comb += pay_byte.eq(step_vec[8 + logit_bits:].word_select(k[:5], 8))
            with m.Case(KIND_READBACK):
                m.d.comb += pay_byte.eq(eng.param_data.payload)
        header = Cat(r_type, info.seq, plen, Const(0, 16 - len(plen)))

        def reply(m, kind_value, length, type_value=None, slot=0):
            m.d.sync += [kind.eq(kind_value), plen.eq(length), base.eq(slot), k.eq(0),
                         r_type.eq(info.type | P.REPLY_FLAG if type_value is None
                                   else type_value)]
            m.next = "HDR"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(~self.frame.valid)
                with m.If(self.frame.valid & self.tx_idle):
                    m.d.sync += [k.eq(0), rd_base.eq(P.HEADER_BYTES)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                # the first 6 payload bytes into args (bytes past the payload are don't-care)
                for i in range(1, 7):
                    with m.If(k == i):
                        m.d.sync += args.word_select(i - 1, 8).eq(self.rd_data)
                m.d.sync += k.eq(k + 1)
                with m.If(k == 6):
                    m.d.sync += k.eq(0)
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(info.status != 0):
                    m.d.sync += err.eq(info.status)
                    reply(m, KIND_ERROR, 2, P.ERROR_TYPE)
                with m.Elif(duplicate):
                    m.next = "RESEND"
                with m.Elif(check != 0):
                    m.d.sync += err.eq(check)
                    reply(m, KIND_ERROR, 2, P.ERROR_TYPE)
                with m.Else():
                    with m.If(info.type == C.STEP):
                        m.d.sync += [last_seq.eq(info.seq), last_crc.eq(info.crc),
                                     last_valid.eq(1)]
                    with m.Elif((info.type == C.LOAD) | (info.type == C.RESET_STATE)
                                | (info.type == C.SET_SEED) | (info.type == C.COMMIT)
                                | ((info.type == C.COUNTERS) & (n == 1) & args[0])):
                        m.d.sync += last_valid.eq(0)
                    with m.Switch(info.type):
                        with m.Case(C.INFO):
                            reply(m, KIND_INFO, P.INFO.size)
                        with m.Case(C.LOAD):
                            m.d.sync += [rd_base.eq(P.HEADER_BYTES + P.LOAD_HEADER.size),
                                         xfer.eq(n - P.LOAD_HEADER.size)]
                            m.next = "LOAD_RD"
                        with m.Case(C.READBACK):
                            m.d.sync += [issued.eq(0), rb_active.eq(1)]
                            reply(m, KIND_READBACK, count)
                        with m.Case(C.RESET_STATE):
                            m.d.sync += [ctrl_op.eq(Control.RESET_STATE), clear_after.eq(0)]
                            m.next = "CTRL"
                        with m.Case(C.SET_SEED):
                            m.d.sync += [ctrl_op.eq(Control.SET_SEED), clear_after.eq(0)]
                            m.next = "CTRL"
                        with m.Case(C.COMMIT):
                            m.d.sync += [loaded.eq(1), image_hash.eq(addr)]
                            reply(m, KIND_EMPTY, 0)
                        with m.Case(C.COUNTERS):
                            m.d.sync += step_vec[8 + logit_bits:].eq(counters_now)
                            with m.If((n == 1) & args[0]):
                                m.d.sync += [ctrl_op.eq(Control.CLEAR_COUNTERS),
                                             clear_after.eq(1)]
                                m.next = "CTRL"
                            with m.Else():
                                reply(m, KIND_COUNTERS, P.counters_bytes())
                        with m.Case(C.STEP):
                            m.d.sync += [rd_base.eq(P.HEADER_BYTES + 1), xfer.eq(frame_bytes),
                                         step_flags.eq(args[:8])]
                            m.next = "STEP_RD"
            with m.State("RESEND"):
                m.d.comb += [self.send.valid.eq(1), self.send.payload.base.eq(STEP_SLOT),
                             self.send.payload.length.eq(step_len)]
                with m.If(self.send.ready):
                    m.next = "RELEASE"

            # LOAD: RX buffer -> param_write, one byte per two cycles
            with m.State("LOAD_RD"):
                m.next = "LOAD_WR"
            with m.State("LOAD_WR"):
                m.d.comb += [eng.param_write.valid.eq(1),
                             eng.param_write.payload.addr.eq(addr + k),
                             eng.param_write.payload.data.eq(self.rd_data)]
                with m.If(eng.param_write.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "LOAD_RD"
                    with m.If(k + 1 == xfer):
                        with m.If(addr < self.f_base):
                            m.d.sync += loaded.eq(0)
                        reply(m, KIND_EMPTY, 0)

            with m.State("CTRL"):
                m.d.comb += [eng.control.valid.eq(1), eng.control.payload.op.eq(ctrl_op),
                             eng.control.payload.seed.eq(addr)]
                with m.If(eng.control.ready):
                    with m.If(clear_after):
                        reply(m, KIND_COUNTERS, P.counters_bytes())
                    with m.Else():
                        reply(m, KIND_EMPTY, 0)

            # STEP: RX buffer -> engine frame, then the result, then the counters
            with m.State("STEP_RD"):
                m.next = "STEP_WR"
            with m.State("STEP_WR"):
                m.d.comb += [eng.frame.valid.eq(1), eng.frame.payload.eq(self.rd_data)]
                with m.If(eng.frame.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "STEP_RD"
                    with m.If(k + 1 == xfer):
                        m.next = "STEP_RESULT"
            with m.State("STEP_RESULT"):
                m.d.comb += eng.result.ready.eq(1)
                with m.If(eng.result.valid):
                    m.d.sync += [step_vec[:8].eq(eng.result.payload.action),
                                 step_vec[8:8 + logit_bits].eq(eng.result.payload.logits)]
                    m.next = "STEP_SETTLE"
            with m.State("STEP_SETTLE"):
                m.next = "STEP_COUNTERS"
            with m.State("STEP_COUNTERS"):
                with m.If(~eng.busy):
                    m.d.sync += step_vec[8 + logit_bits:].eq(counters_now)
                    length = (1 + Mux(step_flags[0], logit_bits // 8, 0)
                              + Mux(step_flags[1], P.counters_bytes(), 0))
                    m.d.sync += step_len.eq(length + P.OVERHEAD_BYTES)
                    reply(m, KIND_STEP, length, slot=STEP_SLOT)

            # the reply: header, payload, CRC into the TX buffer, then send it
            with m.State("HDR"):
                m.d.comb += [self.tx_addr.eq(base + k), self.tx_data.eq(header.word_select(k, 8)),
                             self.tx_en.eq(1), crc.valid.eq(1), crc.data.eq(self.tx_data),
                             crc.start.eq(k == 0)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == P.HEADER_BYTES - 1):
                    m.d.sync += k.eq(0)
                    m.next = "PAY_CHECK"
            with m.State("PAY_CHECK"):
                with m.If(k == plen):
                    m.next = "CRC_HI"
                with m.Else():
                    m.next = "PAY"
            with m.State("PAY"):
                write = Signal()
                with m.If(kind == KIND_READBACK):
                    m.d.comb += [eng.param_data.ready.eq(1), write.eq(eng.param_data.valid)]
                with m.Else():
                    m.d.comb += write.eq(1)
                m.d.comb += [self.tx_addr.eq(base + P.HEADER_BYTES + k),
                             self.tx_data.eq(pay_byte), self.tx_en.eq(write),
                             crc.valid.eq(write), crc.data.eq(pay_byte)]
                with m.If(write):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k + 1 == plen):
                        m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [self.tx_addr.eq(base + P.HEADER_BYTES + plen),
                             self.tx_data.eq(crc.crc[8:]), self.tx_en.eq(1)]
                m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [self.tx_addr.eq(base + P.HEADER_BYTES + plen + 1),
                             self.tx_data.eq(crc.crc[:8]), self.tx_en.eq(1)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.send.valid.eq(1), self.send.payload.base.eq(base),
                             self.send.payload.length.eq(plen + P.OVERHEAD_BYTES)]
                with m.If(self.send.ready):
                    m.next = "RELEASE"
            with m.State("RELEASE"):
                m.d.comb += self.frame.ready.eq(1)
                m.d.sync += rb_active.eq(0)
                m.next = "IDLE"

        # READBACK issues its addresses while the reply is written and PAY collects the data
        with m.If(rb_active & (issued != plen)):
            m.d.comb += [eng.param_read.valid.eq(1), eng.param_read.payload.eq(addr + issued)]
            with m.If(eng.param_read.ready):
                m.d.sync += issued.eq(issued + 1)
        return m
