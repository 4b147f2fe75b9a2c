"""The ``play`` subcommand of ``mstpn`` and the ``play`` benchmark (``mstpn bench play``),
registered by :mod:`mstpn.host.cli`.

This layer only parses arguments, picks the backend, the view and the recorder, and prints; the
loop is :func:`mstpn.host.play.play`. Errors a user can act on (a missing or busy port, a board
whose INFO does not match the image, a missing ROM, a broken image) leave as
:class:`~mstpn.host.cli.UserError`, one line without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from ..model.atomic import atomic_write_bytes
from ..spec.env import FRAMESKIP, STICKY, real_time_decisions_per_s

__all__ = ["add_play_commands", "bench_play", "load_agent", "write_json"]


def _user_error(message: str) -> Exception:
    from .cli import UserError

    return UserError(message)


def write_json(path: str | os.PathLike, record: dict) -> None:
    """Write ``record`` as JSON atomically: a temporary file in the same folder, synced, renamed."""
    path = Path(path)
    if not path.parent.exists():
        raise _user_error(f"--json {path}: folder {path.parent} does not exist")
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())


def load_agent(params: Path | None, preset: str | None = None, noise_seed: int | None = None):
    """The image to play: ``params`` or the shipped agent, optionally moved to another preset of
    the same network, with the noise seed overridden.

    Raises
    ------
    UserError
        For a missing or invalid image, or a preset whose network differs.
    """
    from ..model.image import ImageError, ParamImage
    from ..spec.presets import get_preset
    from .evaluate import default_agent

    path = Path(params) if params else default_agent()
    if not path.exists():
        if params:
            raise _user_error(f"--params {path}: no such file")
        raise _user_error(f"no shipped agent at {path}: train and export one, or pass "
                          f"--params IMAGE")
    try:
        image = ParamImage.load(path)
    except (ImageError, OSError) as exc:
        raise _user_error(f"{path}: {exc}") from None
    if preset and preset != image.preset.name:
        target = get_preset(preset)
        try:
            image = image.replace(preset=target).validate()
        except (ImageError, ValueError) as exc:
            raise _user_error(f"{path} (for {image.preset.name}) does not fit preset {preset}: "
                              f"{exc}") from None
    if noise_seed is not None:
        if not 0 <= noise_seed < 1 << 32:
            raise _user_error(f"--noise-seed must be a uint32, not {noise_seed}")
        image = image.replace(noise_seed=noise_seed)
    return image, path


def _make_backend(args: argparse.Namespace, image, say):
    from .play import LinkBackend, ModelBackend, SimBackend

    if args.backend == "model":
        return ModelBackend(image)
    if args.backend == "sim":
        return SimBackend(image, say=say)
    return LinkBackend(image, args.port, verify=True, baud=args.baud, timeout=args.timeout)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _cmd_play(args: argparse.Namespace) -> int:
    from .link import InfoMismatch, LinkError
    from .play import Divergence, PlayError, format_summary, play, say_stderr
    from .play_view import make_view

    if args.port and args.backend not in (None, "port"):
        raise _user_error(f"--port selects a board; it cannot go with --backend {args.backend}")
    if args.backend == "port" and not args.port:
        raise _user_error("--backend port needs --port URL (e.g. /dev/ttyUSB1 or "
                          "socket://localhost:4000)")
    args.backend = args.backend or ("port" if args.port else "sim")
    if args.episodes < 1:
        raise _user_error(f"--episodes must be at least 1, not {args.episodes}")
    if args.max_steps is not None and args.max_steps < 1:
        raise _user_error(f"--max-steps must be at least 1, not {args.max_steps}")
    if args.frameskip < 1:
        raise _user_error(f"--frameskip must be at least 1, not {args.frameskip}")
    from .train_cli import image_with_device_args

    image, path = load_agent(args.params, args.preset, noise_seed=args.noise_seed)
    image = image_with_device_args(image, args)

    recorder = None
    if args.record:
        from .record import Recorder, RecordError

        try:
            recorder = Recorder(args.record, every=args.record_every, frameskip=args.frameskip)
        except RecordError as exc:
            raise _user_error(str(exc)) from None
    # a recording on the board takes F from the golden model in lockstep, checked against it
    check = args.check or (recorder is not None and args.backend != "model")

    say = (lambda _m: None) if args.quiet else say_stderr
    view = None if args.quiet else make_view(args.view, args.backend,
                                             say=lambda m: print(m, file=sys.stderr))
    observers = [o for o in (view, recorder) if o is not None]

    def observe(info):
        for o in observers:
            o(info)

    def episode_done(record):
        finished.append(record)
        if view is not None:
            view.close()
        print(f"\nepisode {len(finished)} of {args.episodes} (seed {record['seed']}): "
              f"score {record['score']:+.0f}, {record['steps']:,} steps"
              f"{' (cut by --max-steps)' if record['truncated'] else ''}")
        print(format_summary({}, record))

    finished: list[dict] = []
    backend = _make_backend(args, image, say)
    summary = None
    # a SIGTERM ends play like Ctrl-C, through the finally below, so the board is stopped too
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            backend.start()
        except InfoMismatch as exc:
            raise _user_error(f"the board's INFO does not match {path}: {exc}") from None
        if not args.quiet:
            print(f"playing {path.name} on the {backend.describe}; "
                  f"{'checked against the golden model at every step; ' if check else ''}"
                  f"{args.episodes} episode(s) of Pong, seed {args.seed}", file=sys.stderr)
        summary = play(image, backend, episodes=args.episodes, seed=args.seed,
                       max_steps=args.max_steps,
                       sticky=0.0 if args.no_sticky else STICKY, frameskip=args.frameskip,
                       check=check, observer=observe if observers else None,
                       render=recorder is not None or args.view == "window",
                       episode_done=episode_done)
    except Divergence as exc:
        if view is not None:
            view.close()
        print(exc.report(), file=sys.stderr)
        if args.json:
            write_json(args.json, {"divergence": exc.record, "episodes": finished,
                                   "params": str(path), "backend": args.backend})
        if recorder is not None:
            recorder.abort()
        return 1
    except (LinkError, PlayError) as exc:
        raise _user_error(str(exc)) from None
    except KeyboardInterrupt:
        # the episodes that finished are kept: their summaries were printed, and --json gets them
        if args.json and finished:
            write_json(args.json, {"interrupted": True, "episodes": finished,
                                   "mean_score": sum(r["score"] for r in finished) / len(finished),
                                   "params": str(path), "backend": args.backend})
            print(f"interrupted: the {len(finished)} finished episode(s) written to {args.json}",
                  file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        backend.close()
        if view is not None:
            view.close()
        if recorder is not None and summary is None:
            recorder.abort()
    summary["params"] = str(path)
    if recorder is not None:
        try:
            recorder.close()
        except OSError as exc:
            raise _user_error(f"cannot write {args.record}: {exc}") from None
        summary["record"] = {"path": str(args.record), "frames": recorder.written,
                             "every": recorder.every, "dropped": recorder.dropped,
                             "f_source": "golden model" + (
                                 " in lockstep, checked" if args.backend != "model" else "")}
    print(f"\nall {args.episodes} episode(s) on the {summary['ran_on']}")
    print(format_summary(summary))
    if recorder is not None:
        print(recorder.describe())
    if args.json:
        write_json(args.json, summary)
        print(f"summary written to {args.json}")
    return 0


# --- mstpn bench play -------------------------------------------------------------------------


def bench_play(presets: list[str], seconds: float = 1.0, backends=("model", "sim")) -> list[dict]:
    """Decisions/s of real Pong, end to end (env, preprocessing, backend), per backend and preset.

    Each backend plays the shipped agent for about ``seconds`` (at least 20 steps) of one episode
    (seed 0, sticky actions), after a start-up that is not timed (the simulated board's start
    and upload). Atari real time is 15 decisions/s at frame skip 4.
    """
    from .play import LinkBackend, ModelBackend, SimBackend, play, say_stderr

    records = []
    for name in presets:
        image, _ = load_agent(None, name)
        for kind in backends:
            backend: ModelBackend | LinkBackend = (
                ModelBackend(image) if kind == "model" else SimBackend(image, say=say_stderr))
            try:
                backend.start()
                # a short calibration run sizes the timed run to about the wanted seconds
                warm = play(image, backend, max_steps=10)
                rate = warm["decisions_per_s"] or 1.0
                steps = max(20, int(rate * seconds))
                begun = time.perf_counter()
                run = play(image, backend, max_steps=steps)
                wall = time.perf_counter() - begun
            finally:
                backend.close()
            real = real_time_decisions_per_s(FRAMESKIP)
            records.append({
                "backend": kind,
                "preset": name,
                "decisions_per_s": run["decisions_per_s"],
                "atari_real_time": real,
                "vs_real_time": f"{run['decisions_per_s'] / real:.2f}x",
                "steps": run["steps"],
                "latency_p50_ms": run["latency"]["p50_ms"],
                "wall_s": round(wall, 1),
            })
    return records


def add_play_commands(sub) -> None:
    """Register ``play`` on the CLI's subparsers."""
    from .cli import _presets
    from .train_cli import _device_args

    p = sub.add_parser(
        "play", help="play Pong on the accelerator (simulated board, a board, or the model)",
        description="Play Atari Pong (ALE/Pong-v5) with an m-STPN agent: on the simulated board "
                    "(the accelerator's Verilog in Verilator, started for you; the default), on "
                    "a board (--port URL), or on the bit-exact golden model (--backend model). "
                    "Prints a summary table after each episode: score, decisions/s, latency, "
                    "bytes over the link, the counters and the energy ledger.",
        epilog="examples: mstpn play | mstpn play --backend model --episodes 3 --json out.json | "
               "mstpn play --port /dev/ttyUSB1 --check | mstpn play --record pong.mp4")
    g = p.add_argument_group("what plays")
    g.add_argument("--backend", choices=["sim", "model", "port"],
                   help="sim: the simulated board (default); model: the golden model; port: a "
                        "board at --port")
    g.add_argument("--port", metavar="URL",
                   help="a board at this pyserial URL (/dev/ttyUSB1, socket://HOST:PORT)")
    g.add_argument("--baud", type=int, default=3_000_000, help="UART rate (default 3,000,000)")
    g.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for each reply on --port (default 2)")
    g.add_argument("--check", action="store_true",
                   help="run the golden model in lockstep; stop at the first divergence")
    g.add_argument("--params", type=Path, metavar="IMAGE",
                   help="parameter image (default: the shipped agent, mstpn/agents/pong.img)")
    g.add_argument("--preset", choices=_presets(),
                   help="play the image on another preset of the same network")
    g.add_argument("--noise-seed", type=int, help="LFSR seed (default: the image's)")
    _device_args(p)
    g = p.add_argument_group("the game")
    g.add_argument("--episodes", type=int, default=1, help="games (default 1)")
    g.add_argument("--max-steps", type=int, help="cut each game after this many decisions")
    g.add_argument("--seed", type=int, default=0, help="env seed: game k uses seed + k")
    g.add_argument("--no-sticky", action="store_true",
                   help=f"no sticky actions (default: repeat probability {STICKY})")
    g.add_argument("--frameskip", type=int, default=FRAMESKIP,
                   help=f"emulated frames per decision (default {FRAMESKIP})")
    g = p.add_argument_group("output")
    g.add_argument("--view", choices=["terminal", "window", "none"], default="terminal",
                   help="live view: the terminal (default), a window (where a display exists), "
                        "or none")
    g.add_argument("--quiet", action="store_true", help="no live view and no progress")
    g.add_argument("--json", type=Path, metavar="FILE", help="write the summary as JSON")
    g.add_argument("--record", type=Path, metavar="FILE",
                   help="record the game beside the plastic state (h, F) to .mp4 or .gif")
    g.add_argument("--record-every", type=int, metavar="K",
                   help="record every K-th step (default 1 for .mp4, 2 for .gif)")
    p.set_defaults(func=_cmd_play)
