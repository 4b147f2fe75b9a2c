"""The ``mstpn`` command line: a thin layer over the host's modules.

Each subcommand parses its arguments and calls a function that knows nothing of the CLI, so the
same work is reachable from Python. Errors a user can act on are raised as :class:`UserError`
and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from .. import __version__

__all__ = ["main", "UserError"]


class UserError(Exception):
    """An error the user can act on: printed as ``mstpn: error: <message>``, exit status 2."""


def _presets() -> list[str]:
    from ..spec.presets import PRESETS

    return sorted(PRESETS)


# --- mstpn info --------------------------------------------------------------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    from ..spec.presets import get_preset
    from ..spec.qformat import format_hash, format_table

    names = [args.preset] if args.preset else _presets()
    if args.json:
        records = []
        for name in names:
            preset = get_preset(name)
            records.append({
                "preset": name,
                "board": preset.board.name,
                "synapses": preset.synapses,
                "roofline_cycles": preset.roofline_cycles,
                "ram_blocks": preset.budget,
                "format_hash": f"{format_hash():08x}",
            })
        print(json.dumps({"version": __version__, "presets": records,
                          "formats": format_table()}, indent=2))
        return 0
    for name in names:
        print(get_preset(name).summary())
    fmt = format_table()["formats"]
    print(f"Q-formats (mstpn.spec.qformat, hash {format_hash():08x}):")
    from ..spec import qformat

    for q in (getattr(qformat, n) for n in qformat.__all__):
        if isinstance(q, qformat.QFormat):
            print(f"  {q.name:9s} {q.describe()}")
    assert fmt
    return 0


# --- mstpn bench -------------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    runners: dict[str, Callable[..., list[dict]]] = {"model": bench.bench_model}
    if args.what == "link":
        from .bench_link import bench_link

        runners["link"] = bench_link
    if args.what == "play":
        from .play_cli import bench_play

        runners["play"] = bench_play
    if args.what == "engine":
        from .bench_engine import bench_engine

        runners["engine"] = bench_engine
    presets = [args.preset] if args.preset else _presets()
    records = runners[args.what](presets=presets, seconds=args.seconds)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(bench.format_table(records))
    return 0


# --- mstpn sim serve ------------------------------------------------------------------------------


def _cmd_sim_serve(args: argparse.Namespace) -> int:
    from ..sim.board import BuildError, serve

    try:
        return serve(args.preset, args.port, engine=args.engine,
                     image_path=str(args.image) if args.image else None, host=args.host)
    except BuildError as exc:
        raise UserError(str(exc)) from None


# --- mstpn vectors -----------------------------------------------------------------------------


def _cmd_vectors(args: argparse.Namespace) -> int:
    from ..model import vectors

    presets = [args.preset] if args.preset else _presets()
    for preset in presets:
        written = vectors.write_vectors(
            args.out, preset, seed=args.seed, steps=args.steps, only=args.set,
            progress=None if args.quiet else print,
        )
        if not args.quiet:
            print(f"{preset}: {len(written)} sets in {args.out / preset}")
    return 0


# --- mstpn image -------------------------------------------------------------------------------


def _cmd_image(args: argparse.Namespace) -> int:
    from ..model.image import ImageError, ParamImage

    try:
        image = ParamImage.load(args.path)
    except (ImageError, OSError) as exc:
        raise UserError(f"{args.path}: {exc}") from None
    print(f"{args.path}: valid mstpn parameter image")
    print(f"  preset {image.preset.name}, {image.preset.synapses:,d} synapses")
    print(f"  device model: {image.device.describe()}; noise seed {image.noise_seed}")
    print(f"  spread: {image.spread or 'none'}")
    print(f"  sha256 {image.checksum}")
    for key, value in sorted(image.meta.items()):
        print(f"  {key}: {value}")
    return 0


def _cmd_pending(issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise UserError(
            f"'mstpn {args.command}' is not built yet: it arrives with the {issue}. "
            "Until then: 'mstpn info', 'mstpn bench model', 'mstpn vectors', 'mstpn image'."
        )

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="mstpn",
        description="Memristive short-term-plasticity synapses on an FPGA, playing Atari Pong.",
    )
    parser.add_argument("--version", action="version", version=f"mstpn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="presets, their budgets and the Q-formats")
    p.add_argument("--preset", choices=_presets())
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    p.add_argument("what", choices=["model", "engine", "link", "play"],
                   help="model: the golden model's steps/s; engine: cycles per step vs the "
                        "roofline and Verilator steps/s; link: bytes and decisions/s of the "
                        "serial link; play: decisions/s of Pong per backend vs Atari real time")
    p.add_argument("--preset", choices=_presets())
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON list of records")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("vectors", help="write conformance vectors from the golden model")
    p.add_argument("--out", type=Path, default=Path("vectors"), help="output folder")
    p.add_argument("--preset", choices=_presets(), help="one preset (default: all)")
    p.add_argument("--seed", type=int, default=2024, help="base seed (default 2024)")
    p.add_argument("--steps", type=int, default=None, help="override every set's step count")
    p.add_argument("--set", action="append", help="only this set (repeatable)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_vectors)

    p = sub.add_parser("image", help="validate and describe a parameter image")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser("sim", help="the simulated board (the top level in Verilator)")
    sim_sub = p.add_subparsers(dest="sim_command", metavar="SIMCOMMAND", required=True)
    q = sim_sub.add_parser("serve", help="serve the simulated board at socket://HOST:PORT")
    q.add_argument("--preset", choices=_presets(), default="icebreaker")
    q.add_argument("--port", type=int, default=4000, help="TCP port (default 4000)")
    q.add_argument("--host", default="127.0.0.1", help="address to listen on")
    q.add_argument("--engine", choices=["auto", "engine", "standin"], default="auto",
                   help="what sits behind the link (default: the m-STPN engine if built)")
    q.add_argument("--image", type=Path, help="a parameter image to bake in")
    q.set_defaults(func=_cmd_sim_serve)

    from .train_cli import add_train_commands

    add_train_commands(sub)

    from ..boards.cli import add_board_commands

    add_board_commands(sub)

    from .energy_cli import add_energy_command

    add_energy_command(sub)

    from .selftest import add_selftest_command

    add_selftest_command(sub)

    from .play_cli import add_play_commands

    add_play_commands(sub)

    for name, what, issue in (
    ):
        p = sub.add_parser(name, help=f"{what} [not built yet]", add_help=True)
        p.set_defaults(func=_cmd_pending(issue), accepts_extra=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mstpn`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"mstpn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mstpn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
