"""The UART: divisors, loopback at fractional rates, bit-level reception with a clock error,
framing errors."""

from __future__ import annotations

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from mstpn.hdl.uart import MIN_DIVISOR, UART, UARTRx, UARTTx, divisor_for

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_divisors_for_the_boards():
    assert divisor_for(12_000_000, 3_000_000) == 64          # iCEBreaker, 4 cycles a bit
    assert divisor_for(48_000_000, 12_000_000) == 64         # iCEBreaker with a PLL
    assert divisor_for(25_000_000, 3_000_000) == 133         # ULX3S: 8.3125 cycles, 0.2 %
    assert divisor_for(25_000_000, 115_200) == 3472
    with pytest.raises(ValueError, match="at least 4"):
        divisor_for(12_000_000, 12_000_000)                   # needs the PLL
    with pytest.raises(ValueError, match="4095"):
        divisor_for(100_000_000, 1200)
    with pytest.raises(ValueError, match="fifo_depth"):
        UART(fifo_depth=1)
    for bits in (4, 17):
        with pytest.raises(ValueError, match="divisor_bits"):
            UART(divisor_bits=bits)


@pytest.mark.parametrize("divisor, bits", [(MIN_DIVISOR, 16), (133, 16), (200, 16),
                                           (MIN_DIVISOR, 7), (133, 8), (200, 8)])
def test_loopback(divisor, bits):
    """TX into RX through the FIFOs, back to back, at integer and fractional rates, with the
    full divisor width and with the narrowest one the divisor fits (as the top level builds)."""
    m = Module()
    m.submodules.uart = uart = UART(fifo_depth=8, divisor_bits=bits)
    m.d.comb += [uart.rx.eq(uart.tx), uart.divisor.eq(divisor)]
    data = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x3C, 0x7E, 0x13, 0x37])
    got = []

    async def send(ctx):
        for byte in data:
            ctx.set(uart.tx_data.valid, 1)
            ctx.set(uart.tx_data.payload, byte)
            await ctx.tick().until(uart.tx_data.ready)
        ctx.set(uart.tx_data.valid, 0)

    async def receive(ctx):
        ctx.set(uart.rx_data.ready, 1)
        for _ in data:
            (byte,) = await ctx.tick().sample(uart.rx_data.payload).until(uart.rx_data.valid)
            got.append(byte)
        assert not ctx.get(uart.rx_error)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.run()
    assert bytes(got) == data


@pytest.mark.parametrize("error", [-0.03, 0.0, 0.03])
def test_receiver_tolerates_clock_error(error):
    """A sender 3 % fast or slow at 8.3 cycles a bit (the ULX3S at 3 Mbaud) still gets through,
    and a byte with a bad stop bit is flagged and dropped."""
    rx = UARTRx()
    divisor = 133
    period = divisor / 16 * (1 + error)
    data = [0x00, 0xFF, 0xA5, 0x5A, 0x42]
    got = []
    errors = []

    def waveform(byte, stop=1):
        return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]

    async def drive(ctx):
        ctx.set(rx.divisor, divisor)
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(20)
        t = 0.0
        cycle = 0
        for byte, stop in [(b, 1) for b in data] + [(0x99, 0), (0x11, 1)]:
            for bit in waveform(byte, stop) + [1, 1]:
                t += period
                ctx.set(rx.rx, bit)
                while cycle < t:
                    await ctx.tick()
                    cycle += 1
        await ctx.tick().repeat(40)

    async def sink(ctx):
        ctx.set(rx.data.ready, 1)
        while True:
            _, _, valid, byte, framing = await ctx.tick().sample(
                rx.data.valid, rx.data.payload, rx.framing_error)
            if valid:
                got.append(byte)
            if framing:
                errors.append(1)

    sim = Simulator(rx)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert got == data + [0x11]
    assert errors == [1]


def test_transmitter_waveform():
    """8N1, LSB first, idle high, exactly 4 cycles a bit at the minimum divisor."""
    tx = UARTTx()
    samples = []

    async def bench(ctx):
        ctx.set(tx.divisor, MIN_DIVISOR)
        ctx.set(tx.data.valid, 1)
        ctx.set(tx.data.payload, 0xA3)
        await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)
        for _ in range(48):
            await ctx.tick()
            samples.append(ctx.get(tx.tx))

    sim = Simulator(tx)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    start = samples.index(0)
    bits = [samples[start + 4 * i + 2] for i in range(10)]
    assert bits == [0, 1, 1, 0, 0, 0, 1, 0, 1, 1]
    assert all(s == 1 for s in samples[start + 40:])
