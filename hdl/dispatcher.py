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

Cost (measured: yosys ``synth_ice40 -dsp`` of the icebreaker preset's dispatcher alone):
998 LUT4s, 140 carries and 556 flip-flops, of which the step result and counters take 344
flip-flops and about 350 LUT4s as a shift register (loaded in parallel, one byte out per
payload byte). It was 1,317 LUT4s and 315 carries when those 344 bits were read out by a
computed byte index and the address arithmetic was 32 bits wide. It adds about 20 cycles per
request, plus 2 cycles per byte moved between a buffer and the engine.
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
        abits = address_bits(preset)
        m.submodules.crc = crc = crc16()

        # --- state that outlives a request --------------------------------------------------
        loaded = Signal(init=self.baked_hash is not None)
        image_hash = Signal(32, init=self.baked_hash or 0)
        # registers that are always written before they are read need no reset (on iCE40 a
        # reset that overrides a flip-flop's enable costs a LUT per bit)
        last_seq = Signal(8, reset_less=True)
        last_crc = Signal(16, reset_less=True)
        last_valid = Signal()     # last_seq/last_crc hold a STEP that may be repeated
        # the payload length of the STEP reply kept in the TX buffer's STEP slot
        step_plen = Signal(range(P.MAX_PAYLOAD + 1), reset_less=True)

        # --- per-request registers ------------------------------------------------------------
        k = Signal(range(P.MAX_BODY + 1), reset_less=True)
        issued = Signal(range(P.MAX_CHUNK + 1), reset_less=True)
        args = Signal(48, reset_less=True)
        addr = args[:32]
        # LOAD and READBACK step through the map in place: ``ptr`` counts up from the request's
        # address (once the checks have put it inside the map, its high bits are all zero), so
        # no 32-bit ``addr + k`` adder is needed
        ptr = args[:abits]
        err = Signal(8, reset_less=True)
        r_type = Signal(8, reset_less=True)
        plen = Signal(range(P.MAX_PAYLOAD + 1), reset_less=True)
        in_slot = Signal()        # the reply goes to the STEP slot, not to the start
        # the next TX buffer byte to write: one counter instead of ``base + k`` adders
        tx_ptr = Signal(range(TX_DEPTH), reset_less=True)
        kind = Signal(3)
        KIND_EMPTY, KIND_ERROR, KIND_INFO, KIND_STEP, KIND_COUNTERS, KIND_READBACK = range(6)
        rd_base = Signal(range(P.MAX_BODY), reset_less=True)
        xfer = Signal(range(P.MAX_PAYLOAD + 1), reset_less=True)   # bytes to move to the engine
        step_flags = Signal(2, reset_less=True)
        ctrl_op = Signal(2, reset_less=True)
        clear_after = Signal()
        below_f = Signal()        # a LOAD into the parameters: clears *loaded* when done
        rb_active = Signal()
        logit_bits = 32 * preset.actions
        logit_bytes = logit_bits // 8
        # The step result and the counters, as a shift register: loaded in parallel, then one
        # byte out per payload byte written. Byte 0 is the action, then the logits, then the
        # counters (from byte ``logit_bytes + 1``). Shifting replaces a 43-way byte
        # multiplexer driven by a computed index.
        step_vec = Signal(8 + logit_bits + 5 * COUNTER_BITS, reset_less=True)
        counters_at = 8 + logit_bits
        counters_now = Cat(*(eng.counters[name] for name in P.COUNTER_NAMES))
        # each bit is one LUT and one flip-flop with enable: ``next`` picks load or shift, and
        # the enables are computed once (left to yosys, the FSM's conditions were folded
        # into every bit, at two to three LUTs a bit)
        load_result = Signal()
        load_counters = Signal()
        shift = Signal()
        shifted = step_vec[8:]
        with m.If(load_result | shift):
            m.d.sync += step_vec[:counters_at].eq(Mux(
                load_result,
                Cat(eng.result.payload.action, Const(0, 6), eng.result.payload.logits),
                shifted[:counters_at]))
        with m.If(load_counters | shift):
            m.d.sync += step_vec[counters_at:].eq(Mux(
                load_counters, counters_now, shifted[counters_at:]))

        m.d.comb += self.rd_addr.eq(rd_base + k)
        # Stream payloads are driven all the time and only ``valid`` depends on the state:
        # a payload set inside a state is 0 elsewhere, an AND gate on every bit.
        m.d.comb += [
            eng.frame.payload.eq(self.rd_data),
            eng.param_write.payload.addr.eq(ptr), eng.param_write.payload.data.eq(self.rd_data),
            eng.param_read.payload.eq(ptr),
            eng.control.payload.op.eq(ctrl_op), eng.control.payload.seed.eq(addr),
            self.send.payload.base.eq(Mux(in_slot, STEP_SLOT, 0)),
            self.send.payload.length.eq(plen + P.OVERHEAD_BYTES),
            crc.data.eq(self.tx_data),
        ]

        # --- checks (combinational, all before any side effect) -------------------------------
        # a good frame's length is at most MAX_PAYLOAD (the receiver checks it against the
        # body, which is at most MAX_BODY), and the checks only count for good frames
        n = info.length[:(P.MAX_PAYLOAD).bit_length()]
        count = args[32:48]
        frame_bytes = preset.frame.packed_bytes
        # LOAD's and READBACK's range check share one adder of the map's width: an address
        # with any bit set above it is out of range anyway (the map ends below 2**abits and a
        # chunk is at least one byte), so the check stays exact for every 32-bit address.
        # ``n - 4`` and ``count`` are only looked at once their own checks (1..256) passed.
        is_load = info.type == C.LOAD
        chunk = Mux(is_load, n[:9] - P.LOAD_HEADER.size, count[:9])[:9]
        end = Signal(abits + 1)
        m.d.comb += end.eq(ptr + chunk)
        out_of_range = (addr[abits:] != 0) | (end > Mux(is_load, self.writable_end, self.space))
        check = Signal(8)
        with m.Switch(info.type):
            with m.Case(C.INFO, C.RESET_STATE):
                m.d.comb += check.eq(Mux(n == 0, 0, E.BAD_LENGTH))
            with m.Case(C.LOAD):
                with m.If((n < P.LOAD_HEADER.size + 1) | (n > P.LOAD_HEADER.size + P.MAX_CHUNK)):
                    m.d.comb += check.eq(E.BAD_LENGTH)
                with m.Elif(out_of_range):
                    m.d.comb += check.eq(E.BAD_ADDRESS)
            with m.Case(C.READBACK):
                with m.If(n != P.READBACK_REQUEST.size):
                    m.d.comb += check.eq(E.BAD_LENGTH)
                with m.Elif((count == 0) | (count > P.MAX_CHUNK)):
                    m.d.comb += check.eq(E.BAD_ARGUMENT)
                with m.Elif(out_of_range):
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
        # The checks' verdict is registered (state CHECK) and acted on a cycle later (DECIDE):
        # the range check's carry chains and priority logic would otherwise run on into the
        # engine's handshakes and the state flags in the same cycle, the iCEBreaker's critical
        # path. The frame and ``args`` do not change in between.
        check_r = Signal(8, reset_less=True)
        duplicate_r = Signal(reset_less=True)

        # --- reply payload bytes --------------------------------------------------------------
        info_rom = Const(int.from_bytes(self.info.pack(), "little"), 8 * P.INFO.size)
        flags_off = P.info_offset("flags")
        hash_off = P.info_offset("image_hash")
        info_byte = Signal(8)
        m.d.comb += info_byte.eq(info_rom.word_select(k[:6], 8))
        with m.If(k[:6] == flags_off):
            m.d.comb += info_byte.eq(self.info.flags | loaded)
        for i in range(4):
            with m.If(k[:6] == hash_off + i):
                m.d.comb += info_byte.eq(image_hash.word_select(i, 8))
        # STEP reads byte 0 of the shift register; without logits, the counters follow the
        # action from byte ``logit_bytes`` (one shift has moved them down by one byte).
        # COUNTERS reads from where the counters were loaded.
        step_byte = Mux((k == 0) | step_flags[0], step_vec[:8],
                        step_vec.word_select(logit_bytes, 8))
        pay_byte = Signal(8)
        with m.Switch(kind):
            with m.Case(KIND_ERROR):
                m.d.comb += pay_byte.eq(Mux(k[0], info.type, err))
            with m.Case(KIND_INFO):
                m.d.comb += pay_byte.eq(info_byte)
            with m.Case(KIND_STEP):
                m.d.comb += pay_byte.eq(step_byte)
            with m.Case(KIND_COUNTERS):
                m.d.comb += pay_byte.eq(step_vec[counters_at:counters_at + 8])
            with m.Case(KIND_READBACK):
                m.d.comb += pay_byte.eq(eng.param_data.payload)
        header = Cat(r_type, info.seq, plen, Const(0, 16 - len(plen)))
        m.d.comb += self.tx_addr.eq(tx_ptr)

        def reply(m, kind_value, length, type_value=None, slot=False):
            m.d.sync += [kind.eq(kind_value), plen.eq(length), in_slot.eq(slot),
                         tx_ptr.eq(STEP_SLOT if slot else 0), k.eq(0),
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
                # the first 6 payload bytes into args, shifted in from the top: the read has
                # one cycle of latency, so the byte of k == 0 is stale and is shifted out
                # again by the seventh (bytes past the payload are don't-care)
                m.d.sync += [args.eq(Cat(args[8:], self.rd_data)), k.eq(k + 1)]
                with m.If(k == 6):
                    m.d.sync += k.eq(0)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [check_r.eq(check), duplicate_r.eq(duplicate)]
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(info.status != 0):
                    m.d.sync += err.eq(info.status)
                    reply(m, KIND_ERROR, 2, P.ERROR_TYPE)
                with m.Elif(duplicate_r):
                    m.d.sync += [in_slot.eq(1), plen.eq(step_plen)]
                    m.next = "RESEND"
                with m.Elif(check_r != 0):
                    m.d.sync += err.eq(check_r)
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
                            # in range, so addr < writable_end < 2**abits: ptr is the address
                            m.d.sync += [rd_base.eq(P.HEADER_BYTES + P.LOAD_HEADER.size),
                                         xfer.eq(n - P.LOAD_HEADER.size),
                                         below_f.eq(ptr < self.f_base)]
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
                            m.d.comb += load_counters.eq(1)
                            with m.If((n == 1) & args[0]):
                                m.d.sync += [ctrl_op.eq(Control.CLEAR_COUNTERS),
                                             clear_after.eq(1)]
                                m.next = "CTRL"
                            with m.Else():
                                reply(m, KIND_COUNTERS, P.counters_bytes())
                        with m.Case(C.STEP):
                            m.d.sync += [rd_base.eq(P.HEADER_BYTES + 1), xfer.eq(frame_bytes),
                                         step_flags.eq(args[:2])]
                            m.next = "STEP_RD"
            with m.State("RESEND"):
                m.d.comb += self.send.valid.eq(1)
                with m.If(self.send.ready):
                    m.next = "RELEASE"

            # LOAD: RX buffer -> param_write, one byte per two cycles
            with m.State("LOAD_RD"):
                m.next = "LOAD_WR"
            with m.State("LOAD_WR"):
                m.d.comb += eng.param_write.valid.eq(1)
                with m.If(eng.param_write.ready):
                    m.d.sync += [k.eq(k + 1), ptr.eq(ptr + 1)]
                    m.next = "LOAD_RD"
                    with m.If(k + 1 == xfer):
                        with m.If(below_f):
                            m.d.sync += loaded.eq(0)
                        reply(m, KIND_EMPTY, 0)

            with m.State("CTRL"):
                m.d.comb += eng.control.valid.eq(1)
                with m.If(eng.control.ready):
                    with m.If(clear_after):
                        reply(m, KIND_COUNTERS, P.counters_bytes())
                    with m.Else():
                        reply(m, KIND_EMPTY, 0)

            # STEP: RX buffer -> engine frame, then the result, then the counters
            with m.State("STEP_RD"):
                m.next = "STEP_WR"
            with m.State("STEP_WR"):
                m.d.comb += eng.frame.valid.eq(1)
                with m.If(eng.frame.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "STEP_RD"
                    with m.If(k + 1 == xfer):
                        m.next = "STEP_RESULT"
            with m.State("STEP_RESULT"):
                m.d.comb += eng.result.ready.eq(1)
                with m.If(eng.result.valid):
                    m.d.comb += load_result.eq(1)
                    m.next = "STEP_SETTLE"
            with m.State("STEP_SETTLE"):
                m.next = "STEP_COUNTERS"
            with m.State("STEP_COUNTERS"):
                with m.If(~eng.busy):
                    m.d.comb += load_counters.eq(1)
                    length = (1 + Mux(step_flags[0], logit_bytes, 0)
                              + Mux(step_flags[1], P.counters_bytes(), 0))
                    m.d.sync += step_plen.eq(length)
                    reply(m, KIND_STEP, length, slot=True)

            # the reply: header, payload, CRC into the TX buffer, then send it
            with m.State("HDR"):
                m.d.comb += [self.tx_data.eq(header.word_select(k[:2], 8)),
                             self.tx_en.eq(1), crc.valid.eq(1),
                             crc.start.eq(k == 0)]
                m.d.sync += [k.eq(k + 1), tx_ptr.eq(tx_ptr + 1)]
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
                m.d.comb += [self.tx_data.eq(pay_byte), self.tx_en.eq(write),
                             crc.valid.eq(write)]
                with m.If(write):
                    # every payload byte shifts the step register, whatever the reply: it is
                    # loaded afresh before each reply that reads it
                    m.d.sync += [k.eq(k + 1), tx_ptr.eq(tx_ptr + 1)]
                    m.d.comb += shift.eq(1)
                    with m.If(k + 1 == plen):
                        m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [self.tx_data.eq(crc.crc[8:]), self.tx_en.eq(1)]
                m.d.sync += tx_ptr.eq(tx_ptr + 1)
                m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [self.tx_data.eq(crc.crc[:8]), self.tx_en.eq(1)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += self.send.valid.eq(1)
                with m.If(self.send.ready):
                    m.next = "RELEASE"
            with m.State("RELEASE"):
                m.d.comb += self.frame.ready.eq(1)
                m.d.sync += rb_active.eq(0)
                m.next = "IDLE"

        # READBACK issues its addresses while the reply is written and PAY collects the data
        with m.If(rb_active & (issued != plen)):
            m.d.comb += eng.param_read.valid.eq(1)
            with m.If(eng.param_read.ready):
                m.d.sync += [issued.eq(issued + 1), ptr.eq(ptr + 1)]
        return m
