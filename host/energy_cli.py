"""``mstpn energy``: the energy ledger of a run's counters, from a play JSON or a typical episode.

The CLI layer over :mod:`mstpn.host.energy`: it reads the counters (``--from`` a JSON file that
``mstpn play --json`` wrote, or ``--steps N`` for a typical episode made from the preset), and
prints the ledger as a table or, with ``--json``, as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_energy_command", "load_run", "energy_report"]


def load_run(path: Path) -> dict:
    """The counters of a run from a JSON file.

    Accepted: a top-level ``counters`` dict with ``steps``, or ``episodes``, a list whose entries
    hold their own ``counters`` and ``steps`` (summed into the run's). ``preset`` is read when
    present. Returns ``{"preset", "counters", "steps", "episodes"}`` (``episodes``: a list of
    ``(steps, counters)``, empty when the file has none).

    Raises
    ------
    ValueError
        If the file is not JSON, or holds no counters, naming what is missing.
    """
    from ..spec.counters import COUNTER_NAMES

    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, not a {type(data).__name__}")
    episodes = []
    for k, ep in enumerate(data.get("episodes") or []):
        if isinstance(ep, dict) and isinstance(ep.get("counters"), dict):
            if "steps" not in ep:
                raise ValueError(f"{path}: episode {k} has counters but no 'steps'")
            episodes.append((ep["steps"], ep["counters"]))
    if isinstance(data.get("counters"), dict):
        counters = data["counters"]
        steps = data.get("steps", counters.get("steps"))
        if steps is None:
            raise ValueError(f"{path}: has 'counters' but no 'steps'")
    elif episodes:
        counters = {name: sum(int(c.get(name, 0)) for _, c in episodes) for name in COUNTER_NAMES}
        missing = {name for _, c in episodes for name in COUNTER_NAMES if name not in c}
        if missing:
            raise ValueError(f"{path}: episode counters lack {', '.join(sorted(missing))}")
        steps = sum(s for s, _ in episodes)
    else:
        raise ValueError(
            f"{path} holds no counters: expected a top-level 'counters' dict with 'steps', or "
            "'episodes' entries with their own (as 'mstpn play --json' writes)")
    return {"preset": data.get("preset"), "counters": counters, "steps": steps,
            "episodes": episodes}


def energy_report(args: argparse.Namespace) -> tuple[dict, str]:
    """The ledger(s) that ``args`` ask for: (JSON record, text)."""
    from ..spec.presets import get_preset
    from .energy import ledger, typical_counters

    options = {"cycles": args.cycles, "clock_hz": args.clock_mhz * 1e6 if args.clock_mhz else None,
               "decisions_per_s": args.decisions_per_s}
    if args.source is not None:
        run = load_run(args.source)
        name = args.preset or run["preset"] or "icebreaker"
        if args.preset and run["preset"] and args.preset != run["preset"]:
            raise ValueError(f"{args.source} is a run of preset {run['preset']}, not {args.preset}")
        preset = get_preset(name)
        book = ledger(run["counters"], run["steps"], preset, **options)
        record = book.to_dict()
        record["source"] = str(args.source)
        text = [book.table()]
        if len(run["episodes"]) > 1:
            record["episodes"] = []
            text.append("\nPer episode (mJ):")
            for k, (steps, counters) in enumerate(run["episodes"]):
                totals = ledger(counters, steps, preset, **options).totals_mj()
                record["episodes"].append({"steps": steps, "totals_mj": totals})
                text.append(f"  episode {k}: {steps:,d} decisions, " + ", ".join(
                    f"{label} {value:,.4g}" for label, value in totals.items()))
        return record, "\n".join(text)
    preset = get_preset(args.preset or "icebreaker")
    counters = typical_counters(args.steps, preset)
    book = ledger(counters, args.steps, preset, counters_kind="estimate", **options)
    return book.to_dict(), book.table()


def _cmd_energy(args: argparse.Namespace) -> int:
    from .cli import UserError

    if (args.source is None) == (args.steps is None):
        raise UserError("give either --from FILE (a run's counters) or --steps N (a typical "
                        "episode)")
    try:
        record, text = energy_report(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(record, indent=2) if args.json else text)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def add_energy_command(sub) -> None:
    """Register ``mstpn energy`` on the CLI's subparsers."""
    from ..spec.presets import PRESETS

    p = sub.add_parser(
        "energy", help="the energy ledger of a run's counters (memristor, GPU, FPGA)",
        description="Turn a run's counters into energy under three stated models: SrTiO3 "
                    "memristive synapses (the paper's bias and pulse energies), the paper's A100 "
                    "GPU figures scaled to this network, and this FPGA (data-sheet power "
                    "estimates over the measured cycles per step). Each number is labelled "
                    "measured, paper, design or estimate. See docs/energy.md.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from", dest="source", type=Path, metavar="FILE",
                     help="a JSON file with the run's counters ('mstpn play --json' output)")
    src.add_argument("--steps", type=_positive_int, metavar="N",
                     help="a typical episode of N decisions, counters made from the preset")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="the preset (default: the file's, else icebreaker)")
    p.add_argument("--cycles", type=_positive_int, metavar="C",
                   help="measured cycles per step (default: 'mstpn bench engine''s figure)")
    p.add_argument("--clock-mhz", type=_positive_float, metavar="F",
                   help="the engine's clock (default: the board's oscillator)")
    p.add_argument("--decisions-per-s", type=_positive_float, metavar="R",
                   help="the game's decision rate, which sets its duration (default: Atari real "
                        "time, 15 at frameskip 4)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_energy)
