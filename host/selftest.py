"""``mstpn selftest``: a board's smoke test, checked bit for bit against the golden model.

It runs the host's side of the protocol (:class:`~mstpn.host.link.Link`) against a board at a
serial URL, or against the simulated board it starts itself (``--sim``), in five checks:

1. **INFO**: the board answers, speaks this protocol version, runs the m-STPN engine (not the
   stand-in), and has this host's Q-formats.
2. **LOAD**: a parameter image goes up, region by region. By default a seeded random image for
   the board's own preset and device model (:meth:`ParamImage.random`), which exercises every
   parameter; ``--params`` uploads a given one instead.
3. **READBACK**: every region read back equals what was written; COMMIT; INFO then reports the
   image's content hash and the *loaded* flag.
4. **STEP**: ``steps`` decisions (1,000 by default) on preprocessed frames of real Pong (the
   board's actions drive the game; at the end of a game both sides RESET_STATE), or seeded
   synthetic frames. The golden model (:mod:`mstpn.model.golden`) runs the same frames, and the
   action and logits of every step must equal its own; the first difference stops the test.
5. **STATE**: the counters, F and h read back after the last step equal the golden model's.

Each STEP's round trip (request out, reply in, decoded) is timed; the report gives the latency
percentiles and the decisions per second. The board's parameters are overwritten: re-upload
(or re-program a bitstream with a baked image) afterwards.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from ..model.golden import GoldenModel
from ..model.image import ParamImage
from ..model.memmap import memory_map, pack_image
from ..spec import protocol as P
from ..spec.counters import COUNTER_NAMES
from ..spec.presets import ALE_ACTIONS, Preset
from ..spec.qformat import format_hash
from .link import Link, LinkError
from .play import latency_stats

__all__ = ["Check", "SelftestResult", "run_selftest", "PongFrames", "synthetic_frames",
           "DEFAULT_STEPS"]

#: STEPs checked by default (DESIGN.md: "1,000 checked STEPs").
DEFAULT_STEPS = 1000


@dataclass
class Check:
    """One check of the selftest: its name, whether it passed, its time, and what it found."""

    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class SelftestResult:
    """What a selftest found; ``passed`` only if every check passed."""

    url: str
    preset: str | None = None
    frames: str = ""
    steps_requested: int = 0
    steps_checked: int = 0
    steps_timed: int = 0
    checks: list[Check] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    decisions_per_s: float | None = None
    link: dict[str, int] = field(default_factory=dict)
    failure: str | None = None

    @property
    def passed(self) -> bool:
        """Every check ran and passed."""
        return self.failure is None and bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        """JSON-able."""
        record = asdict(self)
        record["passed"] = self.passed
        return record

    def report(self) -> str:
        """The result as text: one line per check, the latency, and PASS or FAIL."""
        lines = [f"selftest of {self.url}" + (f" (preset {self.preset})" if self.preset else "")]
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  {mark} {check.name:<9s} {check.seconds:7.2f} s  {check.detail}")
        if self.latency_ms:
            lat = self.latency_ms
            lines.append(
                f"  STEP round trip: p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
                f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms over "
                f"{self.steps_timed:,d} STEPs; {self.decisions_per_s:,.1f} decisions/s")
        if self.link:
            lines.append(f"  link: {self.link['exchanges']:,d} exchanges, "
                         f"{self.link['retries']} retries, {self.link['bad_frames']} bad frames, "
                         f"{self.link['bytes_out']:,d} bytes out, {self.link['bytes_in']:,d} in")
        lines.append("PASS" if self.passed else f"FAIL: {self.failure}")
        return "\n".join(lines)


class _Failed(Exception):
    """A check failed; the message says how."""


# --- frames ---------------------------------------------------------------------------------------


def synthetic_frames(preset: Preset, seed: int) -> Iterator[bytes]:
    """Seeded random packed frames, about 1 pixel in 8 lit (a busy Pong screen has fewer)."""
    rng = np.random.default_rng(seed)
    n = preset.frame.packed_bytes
    while True:
        bits = rng.integers(0, 256, (3, n), dtype=np.uint8)
        yield (bits[0] & bits[1] & bits[2]).tobytes()


class PongFrames:
    """Preprocessed frames of ALE Pong (:mod:`mstpn.spec.env`), driven by the actions fed back.

    ``next_frame()`` gives the packed frame to step; ``act(action)`` plays the board's action and
    returns True when the game ended (the env is then reset to a new game, seeded ``seed + k``).
    """

    def __init__(self, preset: Preset, seed: int):
        from ..spec.env import make_env
        from ..spec.preprocess import binarize, pack_bits

        self._binarize, self._pack = binarize, pack_bits
        self.preset = preset
        self.seed = seed
        self.games = 0
        self.env = make_env()
        self.obs, _ = self.env.reset(seed=seed)

    def next_frame(self) -> bytes:
        return self._pack(self._binarize(self.obs, self.preset.frame)).tobytes()

    def act(self, action: int) -> bool:
        self.obs, _, term, trunc, _ = self.env.step(ALE_ACTIONS[action])
        if term or trunc:
            self.games += 1
            self.obs, _ = self.env.reset(seed=self.seed + self.games)
            return True
        return False

    def close(self) -> None:
        self.env.close()


# --- the test -------------------------------------------------------------------------------------


def _timed(result: SelftestResult, name: str, fn: Callable[[], str]) -> None:
    start = time.perf_counter()
    try:
        detail = fn()
    except (_Failed, LinkError) as exc:
        result.checks.append(Check(name, False, time.perf_counter() - start, str(exc)))
        raise _Failed(f"{name}: {exc}") from None
    result.checks.append(Check(name, True, time.perf_counter() - start, detail))


def run_selftest(link: Link, steps: int = DEFAULT_STEPS, seed: int = 1,
                 image: ParamImage | None = None, frames: str = "pong",
                 progress: Callable[[str], None] | None = None,
                 preset: str | None = None) -> SelftestResult:
    """Run the selftest over an open link.

    Parameters
    ----------
    link : Link
        The board.
    steps : int
        STEPs to check against the golden model.
    seed : int
        Seeds the random image, the frames (the Pong game or the synthetic ones) and the noise
        LFSRs.
    image : ParamImage, optional
        Upload this instead of a random image for the board's preset and device model.
    frames : {"pong", "synthetic"}
        Real preprocessed Pong frames, or seeded random ones.
    progress : callable, optional
        Called with a short line of text as the test goes on.
    preset : str, optional
        The preset the board must run (INFO fails otherwise).

    Returns
    -------
    SelftestResult
        ``passed`` says whether every check passed; ``failure`` says what failed first.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if frames not in ("pong", "synthetic"):
        raise ValueError(f"frames must be 'pong' or 'synthetic', not {frames!r}")
    say = progress or (lambda _text: None)
    result = SelftestResult(url=link.url, frames=frames, steps_requested=steps)
    state: dict = {}
    try:
        _timed(result, "INFO", lambda: _check_info(link, result, state, image, seed, preset))
        image = state["image"]
        say(f"INFO ok: {result.checks[-1].detail}")
        _timed(result, "LOAD", lambda: _load(link, image, say))
        _timed(result, "READBACK", lambda: _readback(link, image, say))
        _timed(result, "STEP", lambda: _steps(link, image, steps, seed, frames, result, state,
                                              say))
        _timed(result, "STATE", lambda: _final_state(link, image, state))
    except _Failed as exc:
        result.failure = str(exc)
    finally:
        result.link = dict(link.stats)
    return result


def _check_info(link: Link, result: SelftestResult, state: dict, image: ParamImage | None,
                seed: int, expect: str | None) -> str:
    info = link.info()
    if info.version != P.VERSION:
        raise _Failed(f"the board speaks protocol version {info.version}, this host {P.VERSION}")
    try:
        preset = info.preset
    except ValueError as exc:
        raise _Failed(str(exc)) from None
    result.preset = preset.name
    if expect is not None and expect != preset.name:
        raise _Failed(f"the board runs preset {preset.name}, not {expect}")
    if info.flags & P.InfoFlags.STANDIN:
        raise _Failed("the board runs the stand-in engine (a toy network), not the m-STPN: "
                      "its arithmetic cannot match the golden model; rebuild with the engine")
    if info.format_hash != format_hash():
        raise _Failed(f"the board's Q-formats (hash {info.format_hash:08x}) differ from this "
                      f"host's ({format_hash():08x}): rebuild the bitstream")
    if image is None:
        image = ParamImage.random(preset, seed, device=info.device, noise_seed=seed)
    else:
        link.check_image(image, info)
    state["image"] = image
    state["info"] = info
    clock = f"clock {info.clock_hz / 1e6:g} MHz" if info.clock_hz else "no clock reported"
    return (f"protocol {info.version}, preset {preset.name}, device {info.device.describe()}, "
            f"{clock}")


def _load(link: Link, image: ParamImage, say) -> str:
    chunks = pack_image(image)
    total = sum(len(data) for _, data in chunks)
    done = 0
    for base, data in chunks:
        link.write(base, data)
        done += len(data)
        say(f"LOAD {done:,d}/{total:,d} bytes")
    return f"{len(chunks)} regions, {total:,d} bytes"


def _readback(link: Link, image: ParamImage, say) -> str:
    chunks = pack_image(image)
    regions = {r.base: r.name for r in memory_map(image.preset).values()}
    total = sum(len(data) for _, data in chunks)
    done = 0
    for base, data in chunks:
        back = link.readback(base, len(data))
        if back != data:
            bad = [i for i in range(len(data)) if back[i] != data[i]]
            i = bad[0]
            raise _Failed(
                f"region {regions[base]}: {len(bad):,d} of {len(data):,d} bytes differ, the first "
                f"at 0x{base + i:05x} (wrote 0x{data[i]:02x}, read 0x{back[i]:02x})")
        done += len(data)
        say(f"READBACK {done:,d}/{total:,d} bytes")
    link.commit(image.content_hash())
    info = link.info()
    if not info.loaded or info.image_hash != image.content_hash() & 0xFFFFFFFF:
        raise _Failed(f"after COMMIT INFO reports loaded={info.loaded}, image hash "
                      f"{info.image_hash:08x}; expected {image.content_hash():08x}")
    return f"{total:,d} bytes equal; COMMIT, INFO reports hash {info.image_hash:08x}"


def _steps(link: Link, image: ParamImage, steps: int, seed: int, frames: str,
           result: SelftestResult, state: dict, say) -> str:
    preset = image.preset
    golden = GoldenModel.from_image(image, noise_seed=seed)
    link.set_seed(seed)
    link.reset_state()
    link.counters(clear=True)
    state["golden"] = golden
    game = PongFrames(preset, seed) if frames == "pong" else None
    synthetic = synthetic_frames(preset, seed) if game is None else None
    times: list[float] = []
    resets = 0
    every = max(1, steps // 20)
    start = time.perf_counter()
    try:
        for t in range(steps):
            frame = game.next_frame() if game else next(synthetic)
            sent = time.perf_counter()
            reply = link.step(frame, logits=True)
            times.append(time.perf_counter() - sent)
            expect = golden.step(np.frombuffer(frame, dtype=np.uint8)[None])
            want_action = int(expect.action[0])
            want_logits = [int(v) for v in expect.logits[0]]
            result.steps_checked = t
            if reply.action != want_action or reply.logits != want_logits:
                raise _Failed(
                    f"step {t} (since the last reset: {_since(state, t)}) differs from the "
                    f"golden model: board action {reply.action}, logits {reply.logits}; golden "
                    f"action {want_action}, logits {want_logits}; frame CRC-32 "
                    f"{_crc(frame):08x}")
            result.steps_checked = t + 1
            if game and game.act(reply.action):
                link.reset_state()          # a new game: a new episode on both sides
                golden.reset()
                state["last_reset"] = t + 1
                resets += 1
            if (t + 1) % every == 0 or t + 1 == steps:
                lat = latency_stats(times)
                say(f"STEP {t + 1:,d}/{steps:,d} equal to the golden model, "
                    f"p50 {lat['p50_ms']:.2f} ms")
    finally:
        elapsed = time.perf_counter() - start
        result.steps_timed = len(times)
        if times:
            result.latency_ms = latency_stats(times)
            result.decisions_per_s = round(len(times) / elapsed, 2)
        if game:
            game.close()
    state["steps"] = steps
    what = (f"preprocessed Pong frames ({resets} new game{'' if resets == 1 else 's'})"
            if frames == "pong" else "seeded synthetic frames")
    return f"{steps:,d} actions and logits equal to the golden model's, on {what}"


def _since(state: dict, t: int) -> int:
    return t - state.get("last_reset", 0)


def _crc(frame: bytes) -> int:
    import zlib

    return zlib.crc32(frame)


def _final_state(link: Link, image: ParamImage, state: dict) -> str:
    golden: GoldenModel = state["golden"]
    counters = link.counters()
    expect = {name: int(v[0]) for name, v in golden.counters.as_dict().items()}
    bad = [f"{n} {counters[n]:,d} (golden {expect[n]:,d})" for n in COUNTER_NAMES
           if counters[n] != expect[n]]
    if bad:
        raise _Failed("counters differ: " + ", ".join(bad))
    board = link.read_state(image.preset)
    for name, ours in (("f", golden.f[0]), ("h", golden.h[0])):
        theirs = board[name]
        if not np.array_equal(theirs, ours):
            diff = np.argwhere(theirs != ours)
            where = tuple(int(i) for i in diff[0])
            raise _Failed(
                f"{'F' if name == 'f' else 'h'} differs from the golden model's in "
                f"{len(diff):,d} places, first at {where}: board {int(theirs[where])}, golden "
                f"{int(ours[where])}")
    pulses = expect["potentiation"] + expect["depression"]
    return (f"counters equal ({expect['steps']:,d} steps, {pulses:,d} pulses), "
            f"F ({golden.f[0].size:,d}) and h ({golden.h[0].size}) equal")


def _stderr_progress(text: str) -> None:
    """Progress on one line of a terminal, or a line each otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}")
        sys.stderr.flush()
    else:
        print(text, file=sys.stderr, flush=True)


# --- the command line -----------------------------------------------------------------------------


def _cmd_selftest(args) -> int:
    import json

    from .cli import UserError

    say = None if args.quiet else _stderr_progress
    image = None
    if args.params is not None:
        from ..model.image import ImageError

        try:
            image = ParamImage.load(args.params)
        except (ImageError, OSError) as exc:
            raise UserError(f"{args.params}: {exc}") from None
        if args.preset and args.preset != image.preset.name:
            raise UserError(f"{args.params} is an image for preset {image.preset.name}, "
                            f"not {args.preset}")
    board = None
    try:
        if args.sim:
            from ..sim.board import BuildError, SimBoard

            preset = image.preset.name if image else (args.preset or "icebreaker")
            board = SimBoard(preset, image.device if image else None, engine="engine",
                             progress=say or (lambda _m: None))
            try:
                board.start(timeout=600)
            except BuildError as exc:
                raise UserError(str(exc)) from None
            url = board.url
        else:
            url = args.port
        try:
            # the simulated board is slower than a board, and this machine may be busy
            timeout = args.timeout or (10.0 if args.sim else 1.0)
            link = Link(url, baud=args.baud, timeout=timeout, step_timeout=max(timeout, 2.0))
        except LinkError as exc:
            raise UserError(str(exc)) from None
        with link:
            result = run_selftest(link, steps=args.steps, seed=args.seed, image=image,
                                  frames="synthetic" if args.synthetic else "pong",
                                  progress=say, preset=args.preset)
    finally:
        if board is not None:
            board.stop()
    if say and sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.report())
    return 0 if result.passed else 1


def add_selftest_command(sub) -> None:
    """Register ``mstpn selftest`` on the CLI's subparsers."""
    from pathlib import Path

    from ..spec.presets import PRESETS

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            import argparse

            raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
        return value

    p = sub.add_parser(
        "selftest", help="INFO, LOAD, READBACK and checked STEPs against a board",
        description="A board's smoke test: INFO, LOAD of a parameter image, READBACK of every "
                    "region, then STEPs whose actions and logits must equal the golden model's "
                    "bit for bit, then the counters, F and h. Prints STEP round-trip latency "
                    "percentiles. Exit status 0: passed; 1: a check failed; 2: the port could "
                    "not be opened. The board's parameters are overwritten. See "
                    "docs/selftest.md.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="URL",
                       help="the board's serial port or pyserial URL (/dev/ttyUSB1, "
                            "socket://localhost:4000)")
    where.add_argument("--sim", action="store_true",
                       help="start the simulated board (Verilator) and test it")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="the simulated board's preset (default icebreaker); with --port, the "
                        "preset the board must run")
    p.add_argument("--steps", type=positive, default=DEFAULT_STEPS,
                   help=f"STEPs checked against the golden model (default {DEFAULT_STEPS:,d})")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the random image, the frames and the noise (default 1)")
    p.add_argument("--params", type=Path, metavar="IMAGE",
                   help="upload this parameter image instead of a random one")
    p.add_argument("--synthetic", action="store_true",
                   help="seeded random frames instead of preprocessed Pong frames")
    p.add_argument("--baud", type=int, default=3_000_000, help="line rate (default 3000000)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for a reply before retrying (default 1, or 10 with "
                        "--sim)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_selftest)
