"""The shared facts: Q-formats, device options and presets validate themselves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mstpn.spec import qformat as q
from mstpn.spec.device import DeviceModel
from mstpn.spec.presets import BOARDS, PRESETS, FrameGeometry, Layer, Preset, get_preset


def test_qformat_ranges_and_rounding():
    assert (q.WEIGHT.lo, q.WEIGHT.hi) == (-128, 127)
    assert (q.DECAY.lo, q.DECAY.hi) == (0, 255)
    assert (q.ENC_WEIGHT.lo, q.ENC_WEIGHT.hi) == (-2, 1)
    # ties round away from zero, and values saturate
    assert q.WEIGHT.quantize(np.array([0.5 / 64, -0.5 / 64, 10.0, -10.0])).tolist() == [
        1, -1, 127, -128]
    assert q.SHORT_TERM.to_real(128 // 2) == 0.25
    with pytest.raises(ValueError, match="bits must be in 1..32"):
        q.QFormat("bad", 0, 0, True)


def test_derived_shifts_follow_the_formats():
    assert q.ENC_NORM_SHIFT == q.ENC_WEIGHT.frac + q.ENC_GAIN.frac - q.ACT.frac
    assert q.PLASTIC_NORM_SHIFT == q.CONDUCTANCE.frac + q.GAIN.frac
    assert q.HEBB_FRAC == q.PLASTICITY.frac + 2 * q.ACT.frac - q.SHORT_TERM.frac
    assert q.DECAY_ALIGN + q.DECAY.frac == q.HEBB_FRAC
    assert q.f_to_g(np.array([1, 2, -2, -3])).tolist() == [0, 1, 0, -1]


def test_format_hash_changes_with_any_format(monkeypatch):
    before = q.format_hash()
    monkeypatch.setattr(q, "_ALL", q._ALL[:-1] + (dataclasses.replace(q.ASYM, frac=3),))
    assert q.format_hash() != before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"g_min": 10, "g_max": 5}, "conductance window"),
        ({"g_min": -200}, "conductance window"),
        ({"level_shift": 7}, "level_shift must be in 0..6"),
        ({"level_shift": 1.5}, "level_shift must be an integer"),
        ({"asym_up": 16}, "both be set"),
        ({"asym_up": 300, "asym_down": 16}, "asym_up must be an integer in 0..255"),
        ({"noise_bits": q.NOISE_BITS_MAX + 1}, "noise_bits must be in"),
        ({"soft_bound": 1}, "soft_bound must be true or false"),
    ],
)
def test_device_model_refuses_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeviceModel(**kwargs)


def test_device_model_derived_values_and_round_trip():
    dev = DeviceModel(g_min=-100, g_max=60, level_shift=3, soft_bound=True, asym_up=20,
                      asym_down=10, noise_bits=5)
    assert dev.levels == 32 and dev.f_hi == 120 and dev.f_lo == -128
    assert dev.soft_bound_frac == 8 and dev.asym_frac == 4
    assert DeviceModel.from_dict(dev.to_dict()) == dev
    with pytest.raises(ValueError, match="unknown device option"):
        DeviceModel.from_dict({"levels": 4})
    assert "32 levels" in dev.describe()


def test_presets_share_one_network_and_fit_their_boards():
    ice, ecp = PRESETS["icebreaker"], PRESETS["ulx3s-85f"]
    assert ice.synapses == ecp.synapses >= 100_000
    assert (ice.hidden, ice.features, ice.actions) == (ecp.hidden, ecp.features, ecp.actions)
    assert ice.budget["SPRAM"] <= 4 and ice.budget["EBR"] <= 30
    assert ecp.budget["EBR"] <= 208
    assert ice.roofline_cycles == 3200 * 64 // 8 + 128 * 64
    assert ice.frame.pixels == 3200 and ice.frame.packed_bytes == 400


def test_preset_that_overflows_names_what_overflowed():
    with pytest.raises(ValueError, match=r"needs 10 SPRAM blocks and the iCE40UP5K-SG48 has 4"):
        Preset(
            name="too-big", board=BOARDS["icebreaker"], frame=FrameGeometry(),
            encoder=Layer("static", 3200, 64, tiles=1, lanes_per_tile=64, ram="SPRAM"),
            plastic=Layer("plastic", 128, 64, tiles=1, lanes_per_tile=1, ram="SPRAM"),
        )


def test_layer_and_preset_validation():
    with pytest.raises(ValueError, match="do not divide"):
        Layer("plastic", 100, 8, tiles=3, lanes_per_tile=1, ram="EBR")
    with pytest.raises(ValueError, match="z = \\[x; h\\]"):
        Preset(name="bad", board=BOARDS["ulx3s-85f"], frame=FrameGeometry(), encoder=None,
               plastic=Layer("plastic", 128, 64, tiles=1, lanes_per_tile=1, ram="EBR"))
    with pytest.raises(ValueError, match="unknown preset 'nope'; known presets: icebreaker"):
        get_preset("nope")
