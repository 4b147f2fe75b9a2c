"""8N1 UART with a runtime, fractional baud divisor: the first and last block of the data path.

Host -> FTDI -> ``rx`` pin -> :class:`UARTRx` -> RX FIFO -> framing ... framing -> TX FIFO ->
:class:`UARTTx` -> ``tx`` pin -> FTDI -> host.

The divisor is a runtime input in 12.4 fixed point: the bit period in clock cycles times 16. So
the design runs at whatever clock the board gives (12 MHz on the iCEBreaker, 25 MHz on the
ULX3S, or a PLL's), and a fractional period keeps the rate exact on average: the bit edges land
within one clock cycle of the ideal ones, with no accumulated error. The receiver samples each
bit once, in its middle, after a two-flop synchroniser, so it needs at least 4 cycles per bit:

=================  =========  ======================  ===============================
board clock        baud       divisor (cycles x 16)   note
=================  =========  ======================  ===============================
12 MHz             3 Mbaud    64 (4.0)                iCEBreaker, the minimum
25 MHz             3 Mbaud    133 (8.3125)            ULX3S, 0.2 % fast
48 MHz (PLL)       12 Mbaud   64 (4.0)                iCEBreaker FT2232H: needs the PLL
=================  =========  ======================  ===============================

Cost (yosys ``synth_ice40``, iCEBreaker build with its constant divisor, docs/boards.md): about
30 LUT4s and 20-30 flip-flops per direction, plus 49 LUT4s and one EBR for each 32-byte FIFO.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import cdc, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "DIVISOR_BITS", "MIN_DIVISOR", "MIN_DIVISOR_BITS", "divisor_for", "UARTRx", "UARTTx", "UART",
]

#: Width of the divisor: 12 integer and 4 fraction bits.
DIVISOR_BITS = 16
#: The smallest divisor: 4 cycles per bit.
MIN_DIVISOR = 4 << 4
#: The narrowest divisor that holds one: a top level whose divisor is a constant gives its
#: bit length instead of DIVISOR_BITS.
MIN_DIVISOR_BITS = MIN_DIVISOR.bit_length()


def divisor_for(clk_hz: int, baud: int) -> int:
    """The 12.4 divisor for ``baud`` at ``clk_hz``.

    Raises
    ------
    ValueError
        If the rate needs fewer than 4 cycles per bit or more than 4095, or is off by more
        than 1 %.
    """
    if clk_hz <= 0 or baud <= 0:
        raise ValueError(f"clock ({clk_hz} Hz) and baud ({baud}) must be positive")
    div = round(clk_hz * 16 / baud)
    if div < MIN_DIVISOR:
        raise ValueError(
            f"{baud} baud at {clk_hz} Hz is {clk_hz / baud:.2f} cycles per bit; the UART needs "
            f"at least 4 (use a PLL for a faster clock, or a lower baud)"
        )
    if div >= 1 << DIVISOR_BITS:
        raise ValueError(f"{baud} baud at {clk_hz} Hz needs more than 4095 cycles per bit")
    if abs(clk_hz * 16 / div - baud) / baud > 0.01:
        raise ValueError(f"{baud} baud at {clk_hz} Hz cannot be made within 1 %")
    return div


def _check_divisor_bits(divisor_bits) -> int:
    if (not isinstance(divisor_bits, int)
            or not MIN_DIVISOR_BITS <= divisor_bits <= DIVISOR_BITS):
        raise ValueError(f"divisor_bits must be an integer from {MIN_DIVISOR_BITS} to "
                         f"{DIVISOR_BITS}, not {divisor_bits!r}")
    return divisor_bits


class _Ticker(wiring.Component):
    """Fractional bit timer: ``tick`` every ``divisor``/16 cycles on average from ``load``."""

    def __init__(self, divisor_bits: int = DIVISOR_BITS):
        self.divisor_bits = divisor_bits
        super().__init__({
            "divisor": In(divisor_bits),
            "load": In(1),
            "half": In(1),   # with load: the first tick after half a period
            "tick": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # phase < divisor, so phase + 16 fits one bit more than the divisor (divisor >= 16)
        phase = Signal(self.divisor_bits + 1)
        nxt = Signal(self.divisor_bits + 1)
        # tick does not depend on load (the users ignore it in the cycle they load)
        m.d.comb += [nxt.eq(phase + 16), self.tick.eq(nxt >= self.divisor)]
        with m.If(self.load):
            m.d.sync += phase.eq(0)
            with m.If(self.half):
                m.d.sync += phase.eq(self.divisor >> 1)
        with m.Elif(self.tick):
            m.d.sync += phase.eq(nxt - self.divisor)
        with m.Else():
            m.d.sync += phase.eq(nxt)
        return m


class UARTRx(wiring.Component):
    """8N1 receiver: the ``rx`` pin in, bytes out.

    ``rx`` is synchronised here. A byte with a bad stop bit is dropped and flagged on
    ``framing_error`` (one cycle); the receiver then waits for the line to go idle. ``data``
    has no FIFO: a byte the consumer has not taken when the next one is complete is lost and
    flagged on ``overrun``.
    """

    def __init__(self, divisor_bits: int = DIVISOR_BITS):
        self.divisor_bits = _check_divisor_bits(divisor_bits)
        super().__init__({
            "rx": In(1, init=1),
            "divisor": In(divisor_bits),
            "data": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ticker = ticker = _Ticker(self.divisor_bits)
        m.d.comb += ticker.divisor.eq(self.divisor)
        pin = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, pin, init=1)
        shreg = Signal(8)
        bits = Signal(range(9))

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.comb += [ticker.load.eq(1), ticker.half.eq(1)]
                    m.next = "START"
            with m.State("START"):
                with m.If(ticker.tick):
                    m.d.sync += bits.eq(0)
                    m.next = "IDLE"
                    with m.If(~pin):
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(ticker.tick):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], pin)), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(ticker.tick):
                    with m.If(pin):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: bytes in, the ``tx`` pin out (idle high)."""

    def __init__(self, divisor_bits: int = DIVISOR_BITS):
        self.divisor_bits = _check_divisor_bits(divisor_bits)
        super().__init__({
            "tx": Out(1, init=1),
            "divisor": In(divisor_bits),
            "data": In(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ticker = ticker = _Ticker(self.divisor_bits)
        m.d.comb += ticker.divisor.eq(self.divisor)
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        m.d.sync += self.tx.eq(shreg[0])
        m.d.comb += self.busy.eq(bits != 0)
        with m.If(bits == 0):
            m.d.comb += self.data.ready.eq(1)
            with m.If(self.data.valid):
                m.d.comb += ticker.load.eq(1)
                m.d.sync += [shreg.eq(self.data.payload.shift_left(1) | 0x200), bits.eq(10)]
        with m.Elif(ticker.tick):
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1)]
        return m


class UART(wiring.Component):
    """The receiver and the transmitter with a FIFO each: what the top level instantiates.

    Parameters
    ----------
    fifo_depth : int
        Bytes of each FIFO (at least 2).
    divisor_bits : int
        Width of ``divisor`` (:data:`MIN_DIVISOR_BITS` to :data:`DIVISOR_BITS`). A top level
        whose divisor is a constant gives its bit length: the bit timers are then no wider than
        they need be.

    Attributes
    ----------
    rx, tx : Signal
        The pins (``tx`` idles high).
    divisor : Signal
        12.4 fixed-point cycles per bit, at least :data:`MIN_DIVISOR`.
    rx_data : stream out
        Received bytes.
    tx_data : stream in
        Bytes to send.
    rx_error : Signal
        One cycle per byte lost: a bad stop bit or a full RX FIFO.
    tx_idle : Signal
        Nothing queued and nothing on the line.

    Raises
    ------
    ValueError
        If ``fifo_depth`` is below 2 or ``divisor_bits`` out of range.
    """

    def __init__(self, fifo_depth: int = 16, divisor_bits: int = DIVISOR_BITS):
        if not isinstance(fifo_depth, int) or fifo_depth < 2:
            raise ValueError(f"fifo_depth must be an integer of at least 2, not {fifo_depth!r}")
        self.fifo_depth = fifo_depth
        self.divisor_bits = _check_divisor_bits(divisor_bits)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "divisor": In(divisor_bits),
            "rx_data": Out(stream.Signature(8)),
            "tx_data": In(stream.Signature(8)),
            "rx_error": Out(1),
            "tx_idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self.divisor_bits)
        m.submodules.tx = tx = UARTTx(self.divisor_bits)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.submodules.tx_fifo = tx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.d.comb += [
            rx.rx.eq(self.rx), rx.divisor.eq(self.divisor),
            tx.divisor.eq(self.divisor), self.tx.eq(tx.tx),
            rx_fifo.w_data.eq(rx.data.payload), rx_fifo.w_en.eq(rx.data.valid),
            rx.data.ready.eq(1),
            self.rx_error.eq(rx.framing_error | (rx.data.valid & ~rx_fifo.w_rdy)),
            self.rx_data.payload.eq(rx_fifo.r_data), self.rx_data.valid.eq(rx_fifo.r_rdy),
            rx_fifo.r_en.eq(self.rx_data.ready),
            tx_fifo.w_data.eq(self.tx_data.payload), tx_fifo.w_en.eq(self.tx_data.valid),
            self.tx_data.ready.eq(tx_fifo.w_rdy),
            tx.data.payload.eq(tx_fifo.r_data), tx.data.valid.eq(tx_fifo.r_rdy),
            tx_fifo.r_en.eq(tx.data.ready),
            self.tx_idle.eq(~tx_fifo.r_rdy & ~tx.busy),
        ]
        return m
