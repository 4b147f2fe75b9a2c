"""cocotb tests of the whole engine on its emitted Verilog, in Verilator (slow).

Each test replays conformance vector sets (:mod:`mstpn.model.vectors`) of one preset on one
Verilator build of :class:`mstpn.hdl.engine.Engine` (one build per device model, cached under
build/engine/): every step's h, action, logits and counters and the final F must match the golden
model bit for bit. The testbench is :mod:`mstpn.sim.engine_tb`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mstpn.model.vectors import SETS, write_vectors
from mstpn.sim.engine_runner import ROOT, run_engine_test
from mstpn.spec.presets import get_preset

pytestmark = pytest.mark.slow

#: Plain device model: the random, Pong-like and edge-case sets, steps per set.
PLAIN_SETS = {"random": 160, "pong_like": 60, "saturation": 40, "decay_extremes": 40,
              "negative_gamma": 40, "all_ones": 30, "empty": 30}
#: One build per device-model option, each with its own set.
DEVICE_SETS = {"dev_window": 40, "dev_levels": 40, "dev_soft_bound": 40, "dev_asymmetry": 40,
               "dev_noise": 40, "dev_all": 40}
PRESETS = ("ulx3s-85f", "icebreaker")


def _vectors(preset: str, name: str, steps: int) -> Path:
    root = ROOT / "build" / "vectors" / f"{steps}"
    folder = root / preset / name
    if not (folder / "vectors.npz").exists():
        write_vectors(root, preset, steps=steps, only=[name])
    return folder


def _run(preset: str, names: dict[str, int]) -> None:
    folders = [_vectors(preset, name, steps) for name, steps in names.items()]
    device = load_device(folders[0])
    results = run_engine_test(preset, device, "mstpn.sim.engine_tb",
                              {"MSTPN_VECTOR_DIRS": os.pathsep.join(map(str, folders))},
                              testcase="test_vectors")
    tree = ET.parse(results)
    failures = [f.get("message", "") for f in tree.iter("failure")]
    cases = list(tree.iter("testcase"))
    results.unlink()
    assert cases, "cocotb ran no test"
    assert not failures, failures


def load_device(folder: Path):
    from mstpn.model.image import ParamImage

    return ParamImage.load(folder / "image.img").device


@pytest.mark.parametrize("preset", PRESETS)
def test_engine_plain_vectors(preset):
    assert sum(PLAIN_SETS.values()) >= 200 and get_preset(preset)
    _run(preset, PLAIN_SETS)


#: Every option on the ULX3S build (16 plastic lanes); all options at once on the iCEBreaker's
#: single lane too, so that both tilings' noise streams are checked. Each is one build.
DEVICE_CASES = [("ulx3s-85f", name) for name in DEVICE_SETS] + [("icebreaker", "dev_all")]


@pytest.mark.parametrize(("preset", "name"), DEVICE_CASES, ids=lambda v: v)
def test_engine_device_option(preset, name):
    assert name in SETS
    _run(preset, {name: DEVICE_SETS[name]})
