"""The whole engine in amaranth.sim on tiny presets, against the golden model, step by step.

Each run loads a random image through ``param_write``, reads it back through ``param_read``,
then steps frames with an episode reset and a reseed in the middle, and compares every step's
action, logits, h (read back) and counters, and the stored F, with :class:`GoldenModel`.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from tiny_presets import DEVICES, TINY

from mstpn.hdl.engine import Engine
from mstpn.hdl.engine_types import Control
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage, fields_for
from mstpn.model.vectors import COUNTER_NAMES
from mstpn.sim.engine_amaranth import control, load_image, read_region, step
from mstpn.spec import qformat as q
from mstpn.spec.device import DeviceModel
from mstpn.spec.preprocess import pack_bits
from mstpn.spec.presets import BOARDS, PRESETS, FrameGeometry, Layer, Preset

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

#: No encoder (lit pixels feed the plastic layer), two tiles of two lanes.
TINY_RAW = Preset(
    name="tiny-raw",
    board=BOARDS["icebreaker"],
    frame=FrameGeometry(top=0, bottom=4, width=8, pool_rows=2, pool_cols=2),
    encoder=None,
    plastic=Layer("plastic", 8 + 4, 4, tiles=2, lanes_per_tile=2, ram="EBR"),
)
#: Two encoder tiles, one plastic lane (the icebreaker's shape in miniature).
TINY_WIDE = Preset(
    name="tiny-wide",
    board=BOARDS["icebreaker"],
    frame=FrameGeometry(top=0, bottom=8, width=16, pool_rows=2, pool_cols=2),
    encoder=Layer("static", 32, 4, tiles=2, lanes_per_tile=8, ram="EBR"),
    plastic=Layer("plastic", 4 + 4, 4, tiles=1, lanes_per_tile=1, ram="EBR"),
)



def _replay(preset: Preset, device: DeviceModel, seed: int, steps: int = 8,
            baked: bool = False) -> list[int]:
    rng = np.random.default_rng(seed)
    image = ParamImage.random(preset, seed=seed, device=device, noise_seed=seed + 100)
    shape = image.arrays["w"].shape
    image = image.with_arrays(plasticity=rng.integers(q.PLASTICITY.lo, q.PLASTICITY.hi + 1,
                                                      size=shape))
    frames = pack_bits(rng.random((steps, preset.frame.rows, preset.frame.cols)) < 0.4)
    gold = GoldenModel.from_image(image)
    dut = Engine(preset, device, image=image if baked else None)
    cycles: list[int] = []

    async def bench(ctx):
        if not baked:
            await load_image(ctx, dut, image)
            await control(ctx, dut, Control.SET_SEED, image.noise_seed)
            await control(ctx, dut, Control.RESET_STATE)
        for spec in fields_for(preset):
            got = await read_region(ctx, dut, preset, spec.name)
            assert np.array_equal(got, image.arrays[spec.name]), f"readback of {spec.name}"
        for t in range(steps):
            if t == steps // 2:
                await control(ctx, dut, Control.SET_SEED, 1234)
                gold.set_seed(1234)
                await control(ctx, dut, Control.RESET_STATE)
                gold.reset()
            action, logits, c = await step(ctx, dut, frames[t])
            cycles.append(c)
            out = gold.step(frames[t:t + 1])
            h = await read_region(ctx, dut, preset, "h")
            assert np.array_equal(h, out.h[0]), f"h at step {t}"
            assert logits == out.logits[0].tolist(), f"logits at step {t}"
            assert action == out.action[0]
            assert [ctx.get(dut.counters[n]) for n in COUNTER_NAMES] == [
                int(gold.counters.as_dict()[n][0]) for n in COUNTER_NAMES]
        f = await read_region(ctx, dut, preset, "f")
        assert np.array_equal(f, gold.f[0]), "stored F"
        assert gold.counters.potentiation[0] > 0 and gold.counters.depression[0] > 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return cycles


#: The default suite runs the plain and the all-options device models; the rest are slow.
FAST = ("plain", "all")


@pytest.mark.parametrize("device", [
    name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in DEVICES])
def test_engine_tiny_matches_golden(device):
    cycles = _replay(TINY, DEVICES[device], seed=1)
    assert max(cycles) < TINY.roofline_cycles + 50


@pytest.mark.parametrize("preset", [TINY_RAW, TINY_WIDE], ids=lambda p: p.name)
def test_engine_other_tilings(preset):
    _replay(preset, DEVICES["all"], seed=2)


def test_engine_baked_image():
    _replay(TINY, DEVICES["noise"], seed=3, steps=4, baked=True)


def test_engine_parameters_are_checked():
    with pytest.raises(TypeError, match="Preset"):
        Engine("icebreaker")
    with pytest.raises(TypeError, match="DeviceModel"):
        Engine(TINY, "plain")
    three = Preset(
        name="three-lanes", board=BOARDS["icebreaker"],
        frame=FrameGeometry(top=0, bottom=4, width=8, pool_rows=2, pool_cols=2), encoder=None,
        plastic=Layer("plastic", 8 + 4, 4, tiles=3, lanes_per_tile=1, ram="EBR"))
    with pytest.raises(ValueError, match="power of two"):
        Engine(three)
    with pytest.raises(ValueError, match="preset"):
        Engine(TINY, image=ParamImage.random(PRESETS["icebreaker"], seed=1))
