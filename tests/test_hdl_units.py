"""Amaranth unit testbenches of the engine's blocks against the spec's arithmetic.

The synapse tile (plastic and static), the neuron unit and the actor head each run in
amaranth.sim on seeded random and edge-case inputs, and their outputs are compared with the golden
model's arithmetic (:mod:`mstpn.model.golden`), written here per synapse as docs/spec.md states it.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from scalar_spec import fused_update

from mstpn.hdl.adder_tree import AdderTree
from mstpn.hdl.head import BIAS_BYTES, ActorHead
from mstpn.hdl.lfsr import Lfsr
from mstpn.hdl.neuron import NeuronUnit
from mstpn.hdl.tile import SynapseTile
from mstpn.model.golden import neuron
from mstpn.spec import qformat as q
from mstpn.spec.device import DeviceModel
from mstpn.spec.noise import lfsr_step, seed_state
from mstpn.spec.presets import PRESETS

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

DEVICES = {
    "plain": DeviceModel(),
    "window_levels": DeviceModel(g_min=-70, g_max=50, level_shift=3),
    "soft_asym": DeviceModel(soft_bound=True, asym_up=25, asym_down=9),
    "all": DeviceModel(g_min=-90, g_max=100, level_shift=2, soft_bound=True, asym_up=19,
                       asym_down=14, noise_bits=q.NOISE_BITS_MAX),
}


def _run(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("seed", [1, 2])
def test_plastic_tile(device, seed):
    dev = DEVICES[device]
    rng = np.random.default_rng(seed)
    lanes, rows, cols = 2, 3, 5
    depth = rows * cols
    if seed == 1:
        w = rng.integers(-128, 128, (depth, lanes))
        lam = rng.integers(0, 256, (depth, lanes))
        gam = rng.integers(-128, 128, (depth, lanes))
        f = rng.integers(-128, 128, (depth, lanes))
    else:  # edge cases: extreme codes everywhere
        w = rng.choice([-128, 127, 0, -1], (depth, lanes))
        lam = rng.choice([0, 255], (depth, lanes))
        gam = rng.choice([-128, 127], (depth, lanes))
        f = rng.choice([-128, 127, 0], (depth, lanes))
    z = rng.choice([-127, 127, 0, 5, -3], (depth, lanes)) if seed == 2 else rng.integers(
        -127, 128, (depth, lanes))
    zp = rng.integers(-127, 128, (depth, lanes))
    hp = rng.integers(-127, 128, rows)
    init = [SynapseTile.pack_plastic(w[a], lam[a], gam[a]) for a in range(depth)]
    dut = SynapseTile("plastic", lanes, depth, cols, dev, lane_base=4, init=init, seed_init=77)
    # reference
    state = [seed_state(77, 4 + k) for k in range(lanes)]
    f_new = np.zeros_like(f)
    for a in range(depth):
        for k in range(lanes):
            r = 0
            if dev.noise_bits:
                for _ in range(dev.noise_bits):
                    state[k] = lfsr_step(state[k])
                r = state[k] & ((1 << dev.noise_bits) - 1)
            f_new[a, k] = fused_update(dev, int(w[a, k]), int(f[a, k]), int(lam[a, k]),
                                       int(gam[a, k]), int(hp[a // cols]), int(zp[a, k]), r)
    g = np.clip(w + q.f_to_g(f_new), dev.g_min, dev.g_max)
    sums = (g * z).reshape(rows, cols * lanes).sum(axis=1)
    pot, dep = int((f_new > f).sum()), int((f_new < f).sum())
    got_sums, counts = [], [0, 0]

    async def bench(ctx):
        # load F through the parameter port (byte 3 of each lane)
        ctx.set(dut.p_en, 1)
        for a in range(depth):
            ctx.set(dut.p_addr, a)
            ctx.set(dut.p_wdata, sum((int(f[a, k]) & 0xFF) << (32 * k + 24) for k in range(lanes)))
            ctx.set(dut.p_we, sum(1 << (4 * k + 3) for k in range(lanes)))
            await ctx.tick()
        ctx.set(dut.p_we, 0)
        ctx.set(dut.p_en, 0)
        for a in range(depth):
            ctx.set(dut.beat.valid, 1)
            ctx.set(dut.beat.payload, {
                "addr": a, "first": a % cols == 0, "last": a % cols == cols - 1,
                "z": [int(v) for v in z[a]], "zp": [int(v) for v in zp[a]],
                "hp": int(hp[a // cols])})
            _, _, valid, value, p, d = await ctx.tick().sample(
                dut.sum.valid, dut.sum.payload, dut.pot, dut.dep)
            if valid:
                got_sums.append(value)
            counts[0] += p
            counts[1] += d
        ctx.set(dut.beat.valid, 0)
        for _ in range(20):
            _, _, valid, value, p, d = await ctx.tick().sample(
                dut.sum.valid, dut.sum.payload, dut.pot, dut.dep)
            if valid:
                got_sums.append(value)
            counts[0] += p
            counts[1] += d
        ctx.set(dut.p_en, 1)
        for a in range(depth):
            ctx.set(dut.p_addr, a)
            await ctx.tick()
            word = ctx.get(dut.p_rdata)
            for k in range(lanes):
                lane = (word >> (32 * k)) & 0xFFFFFFFF
                fields = [(lane >> (8 * b)) & 0xFF for b in range(4)]
                signed = [v - 256 if v > 127 else v for v in fields]
                assert signed[0] == w[a, k] and fields[1] == lam[a, k] and signed[2] == gam[a, k]
                assert signed[3] == f_new[a, k], f"F at word {a} lane {k}"

    _run(dut, bench)
    assert got_sums == sums.tolist()
    assert counts == [pot, dep]


def test_static_tile():
    rng = np.random.default_rng(3)
    lanes, rows, cols = 8, 4, 6
    depth = rows * cols
    w = rng.integers(q.ENC_WEIGHT.lo, q.ENC_WEIGHT.hi + 1, (depth, lanes))
    x = rng.random((depth, lanes)) < 0.5
    x[:cols] = True  # an all-lit row and an all-dark row
    x[cols:2 * cols] = False
    dut = SynapseTile("static", lanes, depth, cols,
                      init=[SynapseTile.pack_static(row) for row in w])
    expected = (w * x).reshape(rows, -1).sum(axis=1).tolist()
    got = []

    async def bench(ctx):
        for a in range(depth):
            ctx.set(dut.beat.valid, 1)
            ctx.set(dut.beat.payload, {"addr": a, "first": a % cols == 0,
                                       "last": a % cols == cols - 1,
                                       "x": int(sum(int(b) << k for k, b in enumerate(x[a])))})
            _, _, valid, value = await ctx.tick().sample(dut.sum.valid, dut.sum.payload)
            if valid:
                got.append(value)
        ctx.set(dut.beat.valid, 0)
        for _ in range(10):
            _, _, valid, value = await ctx.tick().sample(dut.sum.valid, dut.sum.payload)
            if valid:
                got.append(value)

    _run(dut, bench)
    assert got == expected


@pytest.mark.parametrize("layer", [0, 1])
def test_neuron_unit(layer):
    rng = np.random.default_rng(10 + layer)
    bits = 23
    acc = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), 300)
    acc[:6] = [0, -1, 1, (1 << (bits - 1)) - 1, -(1 << (bits - 1)), 4096]
    acc[6:60] = rng.integers(-2000, 2000, 54)  # mostly unsaturated
    gain = rng.integers(0, 256, 300)
    gain[:6] = [0, 255, 1, 255, 255, 128]
    bias = rng.integers(q.BIAS.lo, q.BIAS.hi + 1, 300)
    bias[6:60] = rng.integers(-300, 300, 54)
    shift = (q.ENC_NORM_SHIFT, q.PLASTIC_NORM_SHIFT)[layer]
    expected = neuron(acc, gain, bias, shift).tolist()
    dut = NeuronUnit(bits)
    got = []

    async def bench(ctx):
        for k in range(len(acc) + 8):
            if k < len(acc):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": int(acc[k]), "gain": int(gain[k]),
                                        "bias": int(bias[k]), "layer": layer})
            else:
                ctx.set(dut.i.valid, 0)
            _, _, valid, h = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(h)

    _run(dut, bench)
    assert got == expected


@pytest.mark.parametrize("case", ["random", "ties"])
def test_actor_head(case):
    preset = PRESETS["ulx3s-85f"]
    hidden, actions = preset.hidden, preset.actions
    rng = np.random.default_rng(5)
    steps = []
    if case == "random":
        v = rng.integers(q.HEAD_WEIGHT.lo, q.HEAD_WEIGHT.hi + 1, (actions, hidden))
        c = rng.integers(q.HEAD_BIAS.lo, q.HEAD_BIAS.hi + 1, actions)
        for _ in range(4):
            steps.append(rng.integers(-127, 128, hidden))
        steps.append(np.full(hidden, 127))
        steps.append(np.full(hidden, -127))
    else:  # equal rows: every logit ties, so the lowest index must win
        v = np.tile(rng.integers(-128, 128, hidden), (actions, 1))
        c = np.zeros(actions, dtype=np.int64)
        steps = [rng.integers(-127, 128, hidden), np.zeros(hidden, dtype=np.int64)]
    dut = ActorHead(preset)
    results = []

    async def bench(ctx):
        ctx.set(dut.p_en, 1)
        ctx.set(dut.p_we, 1)
        for k, value in enumerate(v.ravel()):
            ctx.set(dut.p_bias, 0)
            ctx.set(dut.p_addr, k)
            ctx.set(dut.p_wdata, int(value) & 0xFF)
            await ctx.tick()
        for k, value in enumerate(c):
            for b in range(BIAS_BYTES):
                ctx.set(dut.p_bias, 1)
                ctx.set(dut.p_addr, BIAS_BYTES * k + b)
                ctx.set(dut.p_wdata, (int(value) >> (8 * b)) & 0xFF)
                await ctx.tick()
        ctx.set(dut.p_we, 0)
        ctx.set(dut.p_en, 0)
        for h in steps:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for value in h:
                ctx.set(dut.h.valid, 1)
                ctx.set(dut.h.payload, int(value))
                await ctx.tick()
                ctx.set(dut.h.valid, 0)
                await ctx.tick().repeat(actions - 1)
            ctx.set(dut.result.ready, 1)
            (payload,) = await ctx.tick().sample(dut.result.payload).until(dut.result.valid)
            ctx.set(dut.result.ready, 0)
            results.append((payload.action, [int(x) for x in payload.logits]))

    _run(dut, bench)
    for h, (action, logits) in zip(steps, results, strict=True):
        want = (v @ h + c).tolist()
        assert logits == want
        assert action == int(np.argmax(want))


def test_adder_tree_and_lfsr_parameters():
    with pytest.raises(ValueError, match="n must be"):
        AdderTree(0, 8, 8)
    with pytest.raises(ValueError, match="narrower"):
        AdderTree(4, 8, 4)
    with pytest.raises(ValueError, match="noise_bits"):
        Lfsr(0, q.NOISE_BITS_MAX + 1)
    with pytest.raises(ValueError, match="kind"):
        SynapseTile("dynamic", 2, 4, 2)
    with pytest.raises(ValueError, match="whole number of rows"):
        SynapseTile("plastic", 2, 5, 2)
    with pytest.raises(TypeError, match="DeviceModel"):
        SynapseTile("plastic", 2, 4, 2, device="plain")
    with pytest.raises(ValueError, match="acc_bits"):
        NeuronUnit(1)
