"""Device-to-device spread baked into a parameter image."""

from __future__ import annotations

import numpy as np
import pytest

from mstpn.model.image import FIELDS_BY_NAME, ParamImage
from mstpn.model.spread import SPREAD_FIELDS, apply_spread
from mstpn.spec.presets import PRESETS
from mstpn.spec.qformat import DECAY, PLASTICITY, WEIGHT

ICE = PRESETS["icebreaker"]


@pytest.fixture(scope="module")
def base() -> ParamImage:
    return ParamImage.random(ICE, seed=21)


def test_reproducible_and_recorded(base: ParamImage) -> None:
    a = apply_spread(base, 0.1, seed=5)
    b = apply_spread(base, 0.1, seed=5)
    assert a == b
    assert a.spread == {"sigma": 0.1, "seed": 5, "fields": ["w", "decay", "plasticity"]}
    assert base.spread is None  # the input is untouched
    for name in SPREAD_FIELDS:
        assert a.arrays[name].dtype == base.arrays[name].dtype
        assert not np.array_equal(a.arrays[name], base.arrays[name])
    for name in set(base.arrays) - set(SPREAD_FIELDS):
        np.testing.assert_array_equal(a.arrays[name], base.arrays[name])
    # the record survives a round trip
    assert ParamImage.from_bytes(a.to_bytes()) == a


def test_other_seed_differs(base: ParamImage) -> None:
    a = apply_spread(base, 0.1, seed=5)
    c = apply_spread(base, 0.1, seed=6)
    for name in SPREAD_FIELDS:
        assert not np.array_equal(a.arrays[name], c.arrays[name])


def test_sigma_zero_is_identity(base: ParamImage) -> None:
    img = apply_spread(base, 0.0, seed=5)
    for name in base.arrays:
        np.testing.assert_array_equal(img.arrays[name], base.arrays[name])
    assert img.spread == {"sigma": 0.0, "seed": 5, "fields": ["w", "decay", "plasticity"]}


def test_selected_fields_draw_independently(base: ParamImage) -> None:
    only_w = apply_spread(base, 0.2, seed=9, fields=("w",))
    only_decay = apply_spread(base, 0.2, seed=9, fields=["decay"])
    both = apply_spread(base, 0.2, seed=9, fields=("decay", "w"))
    assert both.spread["fields"] == ["w", "decay"]  # recorded in draw order
    np.testing.assert_array_equal(only_w.arrays["w"], both.arrays["w"])
    np.testing.assert_array_equal(only_decay.arrays["decay"], both.arrays["decay"])
    np.testing.assert_array_equal(only_w.arrays["decay"], base.arrays["decay"])
    np.testing.assert_array_equal(only_w.arrays["plasticity"], base.arrays["plasticity"])


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_statistics(base: ParamImage, sigma: float) -> None:
    # Large codes, so that rounding adds little: W at 1.0, gamma at 0.5, lambda at 0.5.
    shape = base.arrays["w"].shape
    nominal = {
        "w": WEIGHT.quantize(1.0),
        "plasticity": PLASTICITY.quantize(-0.5),
        "decay": DECAY.quantize(0.5),
    }
    img = base.with_arrays(**{n: np.full(shape, int(v)) for n, v in nominal.items()})
    out = apply_spread(img, sigma, seed=123)
    for name, code in nominal.items():
        rel = out.arrays[name].astype(np.float64) / float(code) - 1.0
        assert abs(rel.mean()) < 4 * sigma / np.sqrt(rel.size) + 0.005, name
        lsb = 1.0 / abs(float(code))
        expected_std = np.sqrt(sigma**2 + lsb**2 / 12)
        assert rel.std() == pytest.approx(expected_std, rel=0.05), name


def test_saturation(base: ParamImage) -> None:
    shape = base.arrays["w"].shape
    img = base.with_arrays(
        w=np.full(shape, WEIGHT.hi), decay=np.full(shape, DECAY.hi),
        plasticity=np.full(shape, PLASTICITY.lo),
    )
    out = apply_spread(img, 0.5, seed=1)
    for name in SPREAD_FIELDS:
        fmt = FIELDS_BY_NAME[name].fmt
        codes = out.arrays[name]
        assert codes.min() >= fmt.lo and codes.max() <= fmt.hi
    # about half the draws push past the top (or bottom) of the format and stick there
    assert 0.4 < (out.arrays["w"] == WEIGHT.hi).mean() < 0.6
    assert 0.4 < (out.arrays["decay"] == DECAY.hi).mean() < 0.6
    assert 0.4 < (out.arrays["plasticity"] == PLASTICITY.lo).mean() < 0.6
    out.validate()


def test_double_application_refused(base: ParamImage) -> None:
    once = apply_spread(base, 0.1, seed=1)
    with pytest.raises(ValueError, match="already has a device-to-device spread"):
        apply_spread(once, 0.1, seed=2)
    with pytest.raises(ValueError, match="already has"):
        apply_spread(ParamImage.from_bytes(once.to_bytes()), 0.0, seed=2)


@pytest.mark.parametrize("sigma", [-0.1, 1.5, float("nan"), float("inf"), "0.1", None, True])
def test_bad_sigma(base: ParamImage, sigma) -> None:
    with pytest.raises(ValueError, match=r"sigma must be a number in \[0, 1\]"):
        apply_spread(base, sigma, seed=1)


def test_bad_seed_and_fields(base: ParamImage) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        apply_spread(base, 0.1, seed=-1)
    with pytest.raises(ValueError, match="spread field 'gain' is not a per-synapse parameter"):
        apply_spread(base, 0.1, seed=1, fields=("w", "gain"))
    with pytest.raises(ValueError, match="repeat"):
        apply_spread(base, 0.1, seed=1, fields=("w", "w"))


def test_sigma_one_is_allowed(base: ParamImage) -> None:
    out = apply_spread(base, 1.0, seed=3)
    out.validate()
    assert out.spread["sigma"] == 1.0
