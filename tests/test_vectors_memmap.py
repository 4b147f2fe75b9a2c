"""Conformance vectors and the parameter address map."""

from __future__ import annotations

import numpy as np
import pytest

from mstpn.model import vectors
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.model.memmap import (
    address_bits,
    memory_map,
    pack_image,
    pack_region,
    unpack_region,
)
from mstpn.spec.presets import PRESETS


def test_sets_cover_the_edge_cases_and_each_device_option():
    names = set(vectors.SETS)
    assert {"saturation", "decay_extremes", "negative_gamma", "all_ones", "empty",
            "long_run"} <= names
    assert {"dev_window", "dev_levels", "dev_soft_bound", "dev_asymmetry", "dev_noise"} <= names
    assert vectors.SETS["long_run"][1] >= 2000
    assert all(spec[1] >= 200 for spec in vectors.SETS.values())


@pytest.mark.parametrize("name", ["saturation", "dev_noise", "all_ones"])
def test_written_set_reloads_and_replays_bit_for_bit(tmp_path, name):
    vectors.write_vectors(tmp_path, "ulx3s-85f", seed=3, steps=40, only=[name])
    vset = vectors.load_vectors(tmp_path / "ulx3s-85f" / name)
    assert vset.steps == 40 and vset.reset[0]
    again = vectors.replay(vset)
    for key, value in vset.expected.items():
        assert np.array_equal(value, again[key]), key
    # and a fresh model run step by step gives the same per-step F checksums
    model = GoldenModel.from_image(vset.image)
    for t in range(vset.steps):
        if vset.seed[t] >= 0:
            model.set_seed(int(vset.seed[t]))
        if vset.reset[t]:
            model.reset()
        out = model.step(vset.frames[t:t + 1])
        assert out.action[0] == vset.expected["action"][t]
        assert model.f_checksum()[0] == vset.expected["f_crc"][t]


def test_saturation_set_saturates():
    vset = vectors.make_set(PRESETS["icebreaker"], "saturation", seed=1, steps=60)
    final = vset.expected["final_f"]
    assert (final == -128).any() and (final == 127).any()
    counters = vset.expected["counters"][-1]
    assert counters[3] > 0 and counters[4] > 0  # potentiation and depression pulses


def test_unknown_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown vector set"):
        vectors.write_vectors(tmp_path, "icebreaker", only=["nope"])


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_set_at_full_length(tmp_path, preset):
    written = vectors.write_vectors(tmp_path, preset)
    for name in written:
        vset = vectors.load_vectors(tmp_path / preset / name)
        assert vset.steps == vectors.SETS[name][1]
        assert np.array_equal(vectors.replay(vset)["final_f"], vset.expected["final_f"])


def test_memory_map_regions_are_disjoint_and_round_trip():
    for preset in PRESETS.values():
        regions = list(memory_map(preset).values())
        for a, b in zip(regions, regions[1:], strict=False):
            assert a.end <= b.base and b.base % 4 == 0
        assert max(r.end for r in regions) < 2 ** address_bits(preset)
        image = ParamImage.random(preset, seed=4)
        by_base = {r.base: r for r in regions}
        for base, data in pack_image(image):
            region = by_base[base]
            assert np.array_equal(unpack_region(region, data), image.arrays[region.name])


def test_packing_order_and_sign():
    region = memory_map(PRESETS["icebreaker"])["enc_w"]
    values = np.zeros(region.shape, dtype=np.int64)
    values[0, :4] = [1, -1, -2, 0]
    data = pack_region(region, values)
    assert data[0] == (1 | (3 << 2) | (2 << 4) | (0 << 6))
    bias = memory_map(PRESETS["icebreaker"])["head_bias"]
    data = pack_region(bias, np.array([-2, 1, 0x123456]))
    assert data[:3] == bytes([0xFE, 0xFF, 0xFF]) and data[6:9] == bytes([0x56, 0x34, 0x12])
    with pytest.raises(ValueError, match="shape"):
        pack_region(bias, np.zeros(2))
