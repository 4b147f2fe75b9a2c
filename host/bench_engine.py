"""``mstpn bench engine``: the engine's cycles per step against the memory roofline.

For each preset it builds the engine with the plain device model in Verilator (cached under
build/engine/), runs the cocotb bench of :mod:`mstpn.sim.engine_tb` on synthetic Pong frames, and
reports the cycles from a frame's last byte to the result (the slowest step seen), the roofline
``N_synapses / lanes`` summed over the layers, their ratio, and the steps per second that the
simulation reaches on one core (frame upload through the cocotb driver included).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

__all__ = ["bench_engine"]


def bench_engine(presets: list[str], seconds: float = 1.0) -> list[dict]:
    """Measure each preset's engine in Verilator.

    Parameters
    ----------
    presets : list of str
        Preset names.
    seconds : float
        Wall time of the steps/s measurement per preset (at least 3 steps are run).

    Returns
    -------
    list of dict
        One record per preset: ``preset, synapses, lanes, cycles_per_step, roofline_cycles,
        ratio, sim_steps_per_s``.
    """
    from ..model.vectors import write_vectors
    from ..sim.engine_runner import ROOT, run_engine_test
    from ..spec.device import DeviceModel
    from ..spec.presets import get_preset

    records = []
    for name in presets:
        preset = get_preset(name)
        root = ROOT / "build" / "vectors" / "bench"
        folder = root / name / "pong_like"
        if not (folder / "vectors.npz").exists():
            write_vectors(root, name, steps=50, only=["pong_like"])
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            run_engine_test(name, DeviceModel(), "mstpn.sim.engine_tb", {
                "MSTPN_VECTOR_DIRS": str(folder),
                "MSTPN_BENCH_OUT": str(out),
                "MSTPN_BENCH_SECONDS": str(seconds),
            }, testcase="test_bench", log_file=Path(tmp) / "sim.log").unlink(missing_ok=True)
            result = json.loads(out.read_text())
        cycles = int(result["cycles_per_step"])
        lanes = "+".join(str(layer.lanes) for layer in preset.layers)
        records.append({
            "preset": name,
            "synapses": preset.synapses,
            "lanes": lanes,
            "cycles_per_step": cycles,
            "roofline_cycles": preset.roofline_cycles,
            "ratio": round(cycles / preset.roofline_cycles, 4),
            "sim_steps_per_s": round(float(result["sim_steps_per_s"]), 1),
        })
    return records
