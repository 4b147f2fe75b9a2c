"""The top level: parameter checks, and INFO through the UART pins in amaranth's simulator."""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

from mstpn.hdl.top import Top
from mstpn.host.link import decode_body, encode_frame
from mstpn.model.image import ParamImage
from mstpn.spec import protocol as P
from mstpn.spec.device import DeviceModel


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_parameters_are_checked():
    with pytest.raises(ValueError, match="unknown preset"):
        Top("nano")
    with pytest.raises(ValueError, match="at least 4"):
        Top("icebreaker", baud=12_000_000, engine="standin")     # 12 MHz: needs the PLL
    assert Top("icebreaker", clk_hz=48_000_000, baud=12_000_000, engine="standin").divisor == 64
    with pytest.raises(ValueError, match="engine must be one of"):
        Top("icebreaker", engine="gpu")
    image = ParamImage.random("icebreaker", 1)
    with pytest.raises(ValueError, match="device model"):
        Top("icebreaker", DeviceModel(level_shift=1), image, engine="standin")
    with pytest.raises(ValueError, match="preset"):
        Top("ulx3s-85f", image=image, engine="standin")


def test_info_through_the_pins():
    """Bit-banged 8N1 at 4 cycles a bit in, the INFO reply bit-sampled out."""
    image = ParamImage.random("icebreaker", 2)
    top = Top("icebreaker", image=image, engine="standin")    # 12 MHz, 3 Mbaud: 4 cycles a bit
    bit = 4
    replies = []

    async def bench(ctx):
        ctx.set(top.rx, 1)
        await ctx.tick().repeat(8)
        for byte in encode_frame(P.Command.INFO, 42):
            for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(top.rx, level)
                await ctx.tick().repeat(bit)
        buf = bytearray()
        for _ in range(200):            # bytes
            await ctx.tick().until(top.tx == 0)
            await ctx.tick().repeat(bit // 2)
            value = 0
            for i in range(8):
                await ctx.tick().repeat(bit)
                value |= ctx.get(top.tx) << i
            await ctx.tick().repeat(bit)
            assert ctx.get(top.tx) == 1, "stop bit"
            if value == 0:
                replies.append(bytes(buf))
                return
            buf.append(value)

    sim = Simulator(top)
    sim.add_clock(1 / 12e6)
    sim.add_testbench(bench)
    sim.run()
    rtype, seq, payload = decode_body(replies[0])
    assert (rtype, seq) == (P.Command.INFO | P.REPLY_FLAG, 42)
    info = P.Info.unpack(payload)
    assert info.loaded and info.flags & P.InfoFlags.BAKED and info.flags & P.InfoFlags.STANDIN
    assert info.image_hash == image.content_hash()
    assert info.clock_hz == 12_000_000 and info.divisor == 64
