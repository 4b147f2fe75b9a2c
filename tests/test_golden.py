"""The golden model against a scalar transcription of docs/spec.md, bit for bit.

The scalar reference below is written synapse by synapse from the spec's text, with Python
integers and none of the golden model's vectorisation, so the two can only agree if both follow
the spec. It runs on a tiny preset with every device option, on random and edge-case parameters.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scalar_spec import f_to_g, fused_update
from tiny_presets import DEVICES, TINY

from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.model.reference import FloatModel
from mstpn.spec import qformat as q
from mstpn.spec.noise import lfsr_step, seed_state
from mstpn.spec.presets import BOARDS, FrameGeometry, Layer, Preset

TINY_RAW = Preset(
    name="tiny-raw",
    board=BOARDS["icebreaker"],
    frame=FrameGeometry(top=0, bottom=4, width=8, pool_rows=2, pool_cols=2),
    encoder=None,
    plastic=Layer("plastic", 8 + 4, 4, tiles=3, lanes_per_tile=1, ram="EBR"),
)



def _tanh(u: int) -> int:
    table = q.tanh_table()
    mag = int(table[min(abs(u), len(table) - 1)])
    return mag if u >= 0 else -mag


def _neuron(acc: int, gain: int, bias: int, shift: int) -> int:
    u = ((acc * gain + ((1 << shift) >> 1)) >> shift) + bias
    return _tanh(u)


class ScalarReference:
    """docs/spec.md, transcribed one synapse at a time."""

    def __init__(self, preset: Preset, image: ParamImage):
        self.p = {k: v.astype(int).tolist() for k, v in image.arrays.items()}
        self.preset, self.dev = preset, image.device
        self.seed = image.noise_seed
        self.counters = dict(steps=0, macs=0, f_writes=0, potentiation=0, depression=0)
        self.reset()

    def reset(self):
        hidden, inputs = self.preset.hidden, self.preset.plastic.inputs
        self.f = [[0] * inputs for _ in range(hidden)]
        self.h = [0] * hidden
        self.ph, self.pz = [0] * hidden, [0] * inputs
        lanes = self.preset.plastic.lanes
        self.lfsr = [seed_state(self.seed, lane) for lane in range(lanes)]

    def draw(self, lane: int) -> int:
        bits = self.dev.noise_bits
        for _ in range(bits):
            self.lfsr[lane] = lfsr_step(self.lfsr[lane])
        return self.lfsr[lane] & ((1 << bits) - 1)

    def step(self, bits: list[int]):
        p, dev, pre = self.p, self.dev, self.preset
        if pre.encoder:
            x = [_neuron(sum(w * b for w, b in zip(row, bits, strict=True)), g, bb,
                         q.ENC_NORM_SHIFT)
                 for row, g, bb in zip(p["enc_w"], p["enc_gain"], p["enc_bias"], strict=True)]
        else:
            x = [b * q.ACT_ONE for b in bits]
        z = x + self.h
        lanes = pre.plastic.lanes
        new_f = [[0] * len(z) for _ in self.h]
        # lanes process rows in order, each its own columns j = lane, lane + lanes, ...
        order = [(i, j) for i in range(len(self.h)) for j in range(len(z))]
        order.sort(key=lambda ij: (ij[1] % lanes, ij[0], ij[1]))
        for i, j in order:
            f_old, w = self.f[i][j], p["w"][i][j]
            r = self.draw(j % lanes) if dev.noise_bits else 0
            f_new = fused_update(dev, w, f_old, p["decay"][i][j], p["plasticity"][i][j],
                                 self.ph[i], self.pz[j], r)
            new_f[i][j] = f_new
            self.counters["f_writes"] += 1
            self.counters["potentiation"] += f_new > f_old
            self.counters["depression"] += f_new < f_old
        self.f = new_f
        h = []
        for i in range(len(self.h)):
            g = [min(max(p["w"][i][j] + f_to_g(self.f[i][j]), dev.g_min), dev.g_max)
                 for j in range(len(z))]
            acc = sum(gj * zj for gj, zj in zip(g, z, strict=True))
            h.append(_neuron(acc, p["gain"][i], p["bias"][i], q.PLASTIC_NORM_SHIFT))
        logits = [sum(v * hh for v, hh in zip(row, h, strict=True)) + c
                  for row, c in zip(p["head_w"], p["head_bias"], strict=True)]
        self.h, self.ph, self.pz = h, h, z
        self.counters["steps"] += 1
        self.counters["macs"] += pre.synapses
        return x, h, logits, logits.index(max(logits))


def _frames(preset, seed, steps, density=0.3):
    rng = np.random.default_rng(seed)
    return rng.random((steps, preset.frame.rows, preset.frame.cols)) < density


@pytest.mark.parametrize("preset", [TINY, TINY_RAW], ids=lambda p: p.name)
@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("seed", [1, 2])
def test_golden_matches_scalar_reference(preset, device, seed):
    image = ParamImage.random(preset, seed=seed, device=DEVICES[device])
    rng = np.random.default_rng(seed)
    shape = image.arrays["w"].shape
    if seed == 1:  # strong plasticity, so that even the coarsest grid sees updates
        image = image.with_arrays(plasticity=rng.integers(q.PLASTICITY.lo, q.PLASTICITY.hi + 1,
                                                          size=shape))
    else:  # edge case: saturating weights and maximal plasticity
        image = image.with_arrays(
            w=rng.choice([q.WEIGHT.lo, q.WEIGHT.hi, 0], size=shape),
            plasticity=rng.choice([q.PLASTICITY.lo, q.PLASTICITY.hi], size=shape),
            decay=rng.choice([q.DECAY.lo, q.DECAY.hi], size=shape),
        )
    golden = GoldenModel.from_image(image)
    ref = ScalarReference(preset, image)
    frames = _frames(preset, seed, 40)
    for t, frame in enumerate(frames):
        if t == 25:
            golden.reset()
            ref.reset()
        x, h, logits, action = ref.step(frame.reshape(-1).astype(int).tolist())
        out = golden.step(frame[None])
        assert out.x[0].tolist() == x, f"x differs at step {t}"
        assert out.h[0].tolist() == h, f"h differs at step {t}"
        assert out.logits[0].tolist() == logits, f"logits differ at step {t}"
        assert out.action[0] == action
        assert golden.f[0].tolist() == ref.f, f"F differs at step {t}"
    for name, value in ref.counters.items():
        assert golden.counters.as_dict()[name][0] == value, name
    # the run must have exercised the update, not only the zero state
    assert ref.counters["potentiation"] > 0 and ref.counters["depression"] > 0


def test_batch_equals_independent_episodes():
    from mstpn.spec.presets import PRESETS

    preset = PRESETS["ulx3s-85f"]
    image = ParamImage.random(preset, seed=5, device=DEVICES["all"])
    frames = _frames(preset, 9, 12 * 3, density=0.02).reshape(12, 3, preset.frame.rows, -1)
    batched = GoldenModel.from_image(image, batch=3)
    singles = [GoldenModel.from_image(image) for _ in range(3)]
    for t in range(12):
        if t == 6:  # reset only episode 1
            batched.reset(np.array([False, True, False]))
            singles[1].reset()
        out = batched.step(frames[t])
        for b, single in enumerate(singles):
            one = single.step(frames[t, b:b + 1])
            assert np.array_equal(out.h[b], one.h[0])
            assert np.array_equal(batched.f[b], single.f[0])
    assert batched.f_checksum()[2] == zlib.crc32(singles[2].f[0].tobytes())


def test_counters_and_grid():
    image = ParamImage.random(TINY, seed=3, device=DEVICES["levels"])
    model = GoldenModel.from_image(image, batch=2)
    for frame in _frames(TINY, 3, 20).reshape(10, 2, TINY.frame.rows, -1):
        model.step(frame)
        model.check_f_range()
    c = model.counters
    assert list(c.steps) == [10, 10]
    assert list(c.macs) == [10 * TINY.synapses] * 2
    assert list(c.f_writes) == [10 * TINY.plastic.synapses] * 2
    assert np.all(c.potentiation + c.depression <= c.f_writes)
    assert np.all(model.f.astype(int) % 8 == 0)


def test_logical_f_is_pending_update_and_has_no_side_effects():
    image = ParamImage.random(TINY, seed=4, device=DEVICES["noise"])
    model = GoldenModel.from_image(image)
    frames = _frames(TINY, 4, 6)
    for frame in frames[:5]:
        model.step(frame[None])
    stored, counters = model.f.copy(), model.counters.f_writes.copy()
    logical = model.logical_f()
    assert np.array_equal(model.f, stored) and np.array_equal(model.counters.f_writes, counters)
    twin = GoldenModel.from_image(image)
    for frame in frames[:5]:
        twin.step(frame[None])
    twin.step(frames[5][None])
    model.step(frames[5][None])
    assert np.array_equal(model.f, twin.f)
    assert np.array_equal(logical, twin.f)


def test_noise_reseeds_at_reset_and_set_seed():
    image = ParamImage.random(TINY, seed=6, device=DEVICES["noise"])
    frames = _frames(TINY, 6, 10)
    runs = []
    for seed in (11, 11, 12):
        model = GoldenModel.from_image(image, noise_seed=seed)
        model.step(frames[0][None])
        model.reset()
        runs.append([model.step(f[None]).h[0].tolist() + model.f[0].ravel().tolist()
                     for f in frames])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_float_reference_agrees_on_the_first_steps():
    from mstpn.spec.presets import PRESETS

    preset = PRESETS["icebreaker"]
    image = ParamImage.random(preset, seed=8)
    fixed, real = GoldenModel.from_image(image, batch=4), FloatModel.from_image(image, batch=4)
    frames = _frames(preset, 8, 8, 0.01).reshape(2, 4, preset.frame.rows, -1)
    out, ref = fixed.step(frames[0]), real.step(frames[0])
    # one step: only the tanh table and the rounding of u separate them
    assert np.abs(out.x * q.ACT.scale - ref.x).max() < 3 * q.ACT.scale
    assert np.abs(out.h * q.ACT.scale - ref.h).max() < 4 * q.ACT.scale


def test_tanh_table_is_frozen():
    table = q.tanh_table()
    assert table[0] == 0 and table[-1] == q.ACT.hi and np.all(np.diff(table) >= 0)
    # a change of the table is a change of the arithmetic: it must change the format hash too
    assert zlib.crc32(table.astype("<i2").tobytes()) == 0x47AEC028 or pytest.fail(
        f"tanh table changed: crc {zlib.crc32(table.astype('<i2').tobytes()):#010x}"
    )


def test_outputs_do_not_alias_the_state():
    model = GoldenModel.from_image(ParamImage.random(TINY, seed=9))
    out = model.step(_frames(TINY, 9, 1)[0][None])
    kept = out.h.copy()
    model.reset()
    assert np.array_equal(out.h, kept) and np.any(kept)
