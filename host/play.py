"""``mstpn play``: Pong played by the accelerator, one decision per emulated step.

The loop of the data path (DESIGN.md, section 2), on the host's side::

    ALE/Pong-v5 (mstpn.spec.env) -> mstpn.spec.preprocess -> 400 packed bytes
      -> backend: the simulated board, a board at a serial URL, or the golden model
      -> action -> env.step(action)

Three backends answer ``step(frame) -> action`` alike: :class:`SimBackend` starts the simulated
board (the top level's Verilog in Verilator, :class:`mstpn.sim.board.SimBoard`) and talks to it
over TCP, :class:`LinkBackend` talks to a board (or anything else) at a pyserial URL through
:class:`mstpn.host.link.Link`, and :class:`ModelBackend` is the bit-exact golden model.

With ``check`` the golden model runs in lockstep beside the backend on the same frames. The
backend is then asked for its logits as well as its action, both are compared at every step,
and the counters, F and h at the end of each episode; the first difference stops the run with a
:class:`Divergence` that names the step, the input and both outputs.

The loop itself knows nothing of terminals or files: it reports each step to an optional
``observer`` (the live view of :mod:`mstpn.host.play_view`, the recorder of
:mod:`mstpn.host.record`) and returns a plain summary dict, which :func:`format_summary` prints.
"""

from __future__ import annotations

import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..model.golden import GoldenModel
from ..model.image import ParamImage
from ..spec.counters import COUNTER_NAMES
from ..spec.env import ENV_ID, FRAMESKIP, STICKY, make_env, past_freeze, real_time_decisions_per_s
from ..spec.preprocess import binarize, pack_bits
from ..spec.presets import ALE_ACTIONS, Preset

__all__ = [
    "PlayError", "Divergence", "StepInfo", "Backend", "ModelBackend", "LinkBackend",
    "SimBackend", "play", "format_summary", "energy_of", "latency_stats",
    "POINTS_TO_WIN",
]

#: A game of Pong ends when one side reaches this many points.
POINTS_TO_WIN = 21
class PlayError(Exception):
    """A problem a user can act on (a missing ROM, a board that does not start)."""


class Divergence(Exception):
    """The backend and the golden model disagree.

    Attributes
    ----------
    record : dict
        ``episode``, ``step`` (0-based within the episode), ``what`` (action, logits, counters,
        F or h), ``backend`` and ``model`` (their outputs), and the input: ``frame_hex`` (the
        packed frame that was sent), ``frame_crc32``, ``lit_pixels``.
    frame : numpy.ndarray or None
        The packed input frame of the diverging step (None for an end-of-episode check).
    """

    def __init__(self, record: dict, frame: np.ndarray | None, preset: Preset):
        self.record = record
        self.frame = frame
        self.preset = preset
        super().__init__(self.report())

    def report(self) -> str:
        """The divergence as text: where, what, both outputs, and the input frame."""
        r = self.record
        lines = [
            f"DIVERGENCE at episode {r['episode']}, step {r['step']} ({r['what']} differ)",
            f"  {'backend (' + r['backend_name'] + '):':17s} {_fmt_value(r['backend'])}",
            f"  {'golden model:':17s} {_fmt_value(r['model'])}",
        ]
        if self.frame is not None:
            lines.append(f"  input: packed frame of {self.frame.size} bytes, crc32 "
                         f"{r['frame_crc32']:08x}, {r['lit_pixels']} lit pixels "
                         f"(hex in the --json record); as the network sees it:")
            from ..spec.preprocess import unpack_bits

            bits = unpack_bits(self.frame, self.preset.frame)
            lines += ["    " + row for row in _half_blocks(bits)]
        return "\n".join(lines)


def _fmt_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _half_blocks(bits: np.ndarray) -> list[str]:
    """A boolean image as text, two pixel rows per line (upper and lower half blocks)."""
    if bits.shape[0] % 2:
        bits = np.vstack([bits, np.zeros((1, bits.shape[1]), dtype=bool)])
    glyph = {(False, False): " ", (True, False): "\u2580", (False, True): "\u2584",
             (True, True): "\u2588"}
    return ["".join(glyph[(bool(a), bool(b))] for a, b in zip(top, low, strict=True))
            for top, low in zip(bits[0::2], bits[1::2], strict=True)]


# --- backends -------------------------------------------------------------------------------


class Backend:
    """What plays: ``start``, then per episode ``begin_episode`` and ``step``s, then ``close``.

    Attributes
    ----------
    name : str
        How the summary names it (``sim``, ``port``, ``model``).
    describe : str
        One line for the summary: what ran (the URL, the engine).
    """

    name = "backend"
    describe = ""

    def start(self) -> None:
        """Connect and make the image ready to STEP."""

    def begin_episode(self) -> None:
        """Reset F and h; zero the counters."""
        raise NotImplementedError

    def step(self, frame: np.ndarray, logits: bool = False) -> tuple[int, list[int] | None]:
        """One decision from a packed frame: (action, logits if asked)."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """The counters since :meth:`begin_episode`."""
        raise NotImplementedError

    def link_bytes(self) -> tuple[int, int] | None:
        """(bytes out, bytes in) on the link so far; None without a link."""
        return None

    def state(self) -> dict[str, np.ndarray] | None:
        """The stored F and h (costly on a link: a READBACK), or None if not available."""
        return None

    def close(self) -> None:
        """Disconnect (and stop whatever :meth:`start` started)."""


class ModelBackend(Backend):
    """The bit-exact golden model (:class:`~mstpn.model.golden.GoldenModel`), batch 1."""

    name = "model"

    def __init__(self, image: ParamImage):
        self.model = GoldenModel.from_image(image, batch=1)
        self.describe = f"golden model (numpy), {image.preset.name}"

    def begin_episode(self) -> None:
        self.model.reset()
        self.model.counters.clear()

    def step(self, frame: np.ndarray, logits: bool = False) -> tuple[int, list[int] | None]:
        out = self.model.step(frame[None])
        return int(out.action[0]), [int(v) for v in out.logits[0]] if logits else None

    def counters(self) -> dict[str, int]:
        return {k: int(v[0]) for k, v in self.model.counters.as_dict().items()}

    def state(self) -> dict[str, np.ndarray]:
        return {"f": self.model.f[0], "h": self.model.h[0]}


class LinkBackend(Backend):
    """An accelerator behind a :class:`~mstpn.host.link.Link`: a board or the simulated board.

    Parameters
    ----------
    image : ParamImage
        Uploaded at :meth:`start` after INFO is checked against it.
    url : str
        A pyserial URL (ignored when ``link`` is given).
    link : Link, optional
        An open link (tests pass one over a fake board).
    verify : bool
        Read the upload back and compare before COMMIT.
    baud : int
        Line rate of a UART.
    """

    name = "port"

    def __init__(self, image: ParamImage, url: str = "", link=None, verify: bool = True,
                 baud: int = 3_000_000, timeout: float = 2.0):
        self.image = image
        self.url = url
        self.link = link
        self.verify = verify
        self.baud = baud
        self.timeout = timeout
        self.info = None
        self.describe = f"accelerator at {url or 'a given link'}"

    def start(self) -> None:
        from ..spec import protocol as P
        from .link import Link

        if self.link is None:
            self.link = Link(self.url, baud=self.baud, timeout=self.timeout)
        self.info = self.link.check_image(self.image)
        if self.info.flags & P.InfoFlags.STANDIN:
            self.describe += " (stand-in engine, not the m-STPN)"
        self.link.load(self.image, verify=self.verify)
        self.link.set_seed(self.image.noise_seed)

    def begin_episode(self) -> None:
        self.link.reset_state()
        self.link.counters(clear=True)

    def step(self, frame: np.ndarray, logits: bool = False) -> tuple[int, list[int] | None]:
        reply = self.link.step(frame, logits=logits)
        return reply.action, reply.logits

    def counters(self) -> dict[str, int]:
        return self.link.counters()

    def link_bytes(self) -> tuple[int, int]:
        return self.link.stats["bytes_out"], self.link.stats["bytes_in"]

    def state(self) -> dict[str, np.ndarray]:
        return self.link.read_state(self.image.preset)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


class SimBackend(LinkBackend):
    """The simulated board, started for the user and stopped at :meth:`close`.

    The board is built for the image's preset and device model (elaboration parameters, so a
    device option changed by a flag is another build) with the m-STPN engine, and the image is
    uploaded over the link as to a board. The first build of a preset runs Verilator, which takes
    minutes; ``say`` gets a first-run message and then an elapsed-time line while it runs.
    """

    name = "sim"

    def __init__(self, image: ParamImage, verify: bool = False,
                 say: Callable[[str], None] | None = None):
        super().__init__(image, verify=verify, timeout=10.0)
        self.say = say or (lambda _m: None)
        self.board = None
        self.describe = "simulated board"

    def start(self) -> None:
        from ..sim.board import BuildError, SimBoard

        self.board = SimBoard(self.image.preset, self.image.device, engine="engine",
                              progress=self._first_run)
        self._building = False
        failure: list[BaseException] = []

        def run():
            try:
                self.board.start(timeout=120)
            except BaseException as exc:   # noqa: BLE001  (handed to the main thread)
                failure.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        begun = time.monotonic()
        worker.start()
        # on a terminal one line counts the seconds in place; in a log, a line every 30 s
        live = sys.stderr.isatty()
        ticks = 0
        while worker.is_alive():
            worker.join(1.0)
            ticks += 1
            if self._building and (live or ticks % 30 == 0):
                self.say(f"{chr(13) if live else ''}  compiling the simulated board with "
                         f"Verilator: {_clock(time.monotonic() - begun)} elapsed"
                         f"{'' if live else chr(10)}")
        if self._building and live:
            self.say("\n")
        if failure:
            exc = failure[0]
            if isinstance(exc, BuildError):
                raise PlayError(f"the simulated board did not start: {exc}") from None
            raise exc
        self.url = self.board.url
        self.describe = (f"simulated board ({self.image.preset.name}, Verilator) at "
                         f"{self.board.url}")
        super().start()

    def _first_run(self, message: str) -> None:
        self._building = True
        self.say(
            f"First run: building the simulated board for {self.image.preset.name} (the "
            f"accelerator's Verilog in Verilator). This takes a few minutes on one core and is "
            f"done once; later runs start in seconds.\n  {message}\n")

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.board is not None:
                self.board.stop()


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """What the observer hears after each step."""

    episode: int            #: 0-based
    episodes: int
    step: int               #: steps done in this episode
    max_steps: int | None
    raw: np.ndarray         #: the grayscale frame the decision was made on (210x160)
    bits: np.ndarray        #: the binary frame the network saw (rows x cols)
    action: int             #: index into ALE_ACTIONS
    latency_s: float        #: the backend's answer time (the link round trip on a link)
    points: tuple[int, int] #: (ours, theirs) so far
    decisions_per_s: float  #: over the episode so far
    model: GoldenModel | None  #: the golden model in lockstep (its F and h), if any
    extra: dict = field(default_factory=dict)


def latency_stats(latencies: list[float]) -> dict[str, float]:
    """Percentiles of answer times, in milliseconds: p50, p90, p99, max."""
    if not latencies:
        return {}
    ms = np.asarray(latencies) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3)}


def energy_of(counters: dict[str, int], steps: int, preset: Preset) -> dict | None:
    """The energy ledger of these counters (:mod:`mstpn.host.energy`), as a dict with the
    printed table under ``"table"``; None if that module is missing from this install."""
    try:
        from .energy import ledger
    except ImportError:
        return None
    book = ledger(counters, steps, preset)
    return {**book.to_dict(), "table": book.table()}


def _compare(what: str, ours, theirs, episode: int, step: int, backend: Backend,
             frame: np.ndarray | None, preset: Preset) -> None:
    if ours == theirs:
        return
    record = {"episode": episode, "step": step, "what": what, "backend_name": backend.name,
              "backend": ours, "model": theirs}
    if frame is not None:
        record.update(frame_hex=bytes(frame).hex(), frame_crc32=zlib.crc32(bytes(frame)),
                      lit_pixels=int(np.unpackbits(frame).sum()))
    raise Divergence(record, frame, preset)


def play(
    image: ParamImage,
    backend: Backend,
    episodes: int = 1,
    seed: int = 0,
    max_steps: int | None = None,
    sticky: float = STICKY,
    frameskip: int = FRAMESKIP,
    check: bool = False,
    observer: Callable[[StepInfo], None] | None = None,
    render: bool = False,
    episode_done: Callable[[dict], None] | None = None,
) -> dict:
    """Play ``episodes`` games of Pong with ``backend`` choosing the actions.

    Parameters
    ----------
    image : ParamImage
        The agent (the backend has it already; the golden model of ``check`` is built from it).
    backend : Backend
        Started (:meth:`Backend.start`) and closed by the caller.
    episodes : int
        Games; game k is seeded ``seed + k`` (its sticky-action draws too).
    seed : int
    max_steps : int, optional
        Cut each game after this many decisions (its score so far counts; ``truncated`` says so).
    sticky, frameskip
        The env's repeat-action probability and frame skip (:func:`mstpn.spec.env.make_env`).
    check : bool
        Run the golden model in lockstep and stop at the first difference (:class:`Divergence`).
    observer : callable, optional
        Called with a :class:`StepInfo` after every step.
    render : bool
        Ask the env for RGB frames (``StepInfo.extra["rgb"]``), for recordings.
    episode_done : callable, optional
        Called with each episode's record as soon as it ends.

    Returns
    -------
    dict
        ``episodes`` (each ``seed``, ``score``, ``points``, ``steps``, ``truncated``,
        ``frozen``, ``wall_s``, ``decisions_per_s``, ``latency``, ``bytes_out``, ``bytes_in``,
        ``counters``, ``energy``), ``mean_score``, ``steps``, ``decisions_per_s``,
        ``latency``, ``counters``, ``energy``, ``bytes_out``, ``bytes_in`` and the settings.
        ``score`` counts the points played: in a game still going at the freeze
        (:data:`~mstpn.spec.env.FREEZE_FRAME`), the points before it, as ``mstpn eval``'s
        ``game_score``.

    Raises
    ------
    Divergence
        With ``check``, at the first step whose action or logits differ, or at the end of an
        episode whose counters, F or h differ.
    PlayError
        If the env cannot be made (no ROM).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, not {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    preset = image.preset
    try:
        env = make_env(sticky=sticky, frameskip=frameskip,
                       render_mode="rgb_array" if render else None)
    except Exception as exc:   # gymnasium raises several kinds for a missing ROM or env
        raise PlayError(f"cannot make {ENV_ID}: {exc} (ale-py ships the Pong ROM: reinstall "
                        f"it with 'uv sync --reinstall-package ale-py')") from None
    golden = GoldenModel.from_image(image, batch=1) if check else None
    # the plastic state the observer sees: the lockstep model's, or the model backend's own
    shown = golden if golden is not None else getattr(backend, "model", None)
    records = []
    all_latencies: list[float] = []
    total_wall = 0.0
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            backend.begin_episode()
            if check:
                golden.reset()
                golden.counters.clear()
            bytes0 = backend.link_bytes()
            latencies: list[float] = []
            points = [0, 0]
            steps = 0
            truncated = False
            frozen = False
            begun = time.perf_counter()
            while True:
                bits = binarize(obs, preset.frame)
                frame = pack_bits(bits)
                asked = time.perf_counter()
                action, logits = backend.step(frame, logits=check)
                latency = time.perf_counter() - asked
                latencies.append(latency)
                if check:
                    out = golden.step(frame[None])
                    _compare("action and logits", {"action": action, "logits": logits},
                             {"action": int(out.action[0]),
                              "logits": [int(v) for v in out.logits[0]]},
                             k, steps, backend, frame, preset)
                if not 0 <= action < len(ALE_ACTIONS):
                    raise PlayError(f"the backend answered action {action}; the network has "
                                    f"{len(ALE_ACTIONS)} actions")
                obs, reward, term, trunc, _ = env.step(ALE_ACTIONS[action])
                steps += 1
                # Past the freeze (mstpn.spec.env.FREEZE_FRAME) ALE's reward is no point played.
                if not (frozen or term) and past_freeze(env):
                    frozen = True
                if not frozen:
                    points[0] += max(int(reward), 0)
                    points[1] += max(int(-reward), 0)
                if observer is not None:
                    elapsed = time.perf_counter() - begun
                    observer(StepInfo(
                        episode=k, episodes=episodes, step=steps, max_steps=max_steps,
                        raw=obs, bits=bits, action=action, latency_s=latency,
                        points=(points[0], points[1]),
                        decisions_per_s=steps / elapsed if elapsed > 0 else 0.0,
                        model=shown,
                        extra={"rgb": env.render()} if render else {}))
                if term or trunc:
                    break
                if max_steps is not None and steps >= max_steps:
                    truncated = True
                    break
            wall = time.perf_counter() - begun
            total_wall += wall
            bytes1 = backend.link_bytes()      # the STEPs' bytes, before the reads below
            counters = backend.counters()
            if check:
                expect = {n: int(v[0]) for n, v in golden.counters.as_dict().items()}
                _compare("counters", counters, expect, k, steps, backend, None, preset)
                state = backend.state()
                if state is not None:
                    for name, ref in (("f", golden.f[0]), ("h", golden.h[0])):
                        if not np.array_equal(np.asarray(state[name]).ravel(), ref.ravel()):
                            diff = int(np.count_nonzero(
                                np.asarray(state[name]).ravel() != ref.ravel()))
                            _compare(f"stored {name.upper()}",
                                     f"{diff} of {ref.size} entries differ",
                                     "(the reference)", k, steps, backend, None, preset)
            all_latencies += latencies
            record = {
                "seed": seed + k,
                "score": float(points[0] - points[1]),
                "points": {"agent": points[0], "opponent": points[1]},
                "steps": steps,
                "truncated": truncated,
                "frozen": frozen,
                "wall_s": round(wall, 3),
                "decisions_per_s": round(steps / wall, 2) if wall > 0 else None,
                "latency": latency_stats(latencies),
                "bytes_out": None if bytes0 is None else bytes1[0] - bytes0[0],
                "bytes_in": None if bytes0 is None else bytes1[1] - bytes0[1],
                "counters": counters,
                "checked": check,
                "energy": energy_of(counters, steps, preset),
            }
            records.append(record)
            if episode_done is not None:
                episode_done(record)
    finally:
        env.close()
    steps = sum(r["steps"] for r in records)
    totals = {n: sum(r["counters"].get(n, 0) for r in records) for n in COUNTER_NAMES}
    out_bytes = [r["bytes_out"] for r in records]
    in_bytes = [r["bytes_in"] for r in records]
    return {
        "backend": backend.name,
        "ran_on": backend.describe,
        "preset": preset.name,
        "device": image.device.to_dict(),
        "noise_seed": image.noise_seed,
        "env": {"id": ENV_ID, "sticky": sticky, "frameskip": frameskip},
        "seed": seed,
        "max_steps": max_steps,
        "checked": check,
        "episodes": records,
        "mean_score": float(np.mean([r["score"] for r in records])),
        "steps": steps,
        "wall_s": round(total_wall, 3),
        "decisions_per_s": round(steps / total_wall, 2) if total_wall > 0 else None,
        "atari_real_time_decisions_per_s": real_time_decisions_per_s(frameskip),
        "latency": latency_stats(all_latencies),
        "bytes_out": None if None in out_bytes else sum(out_bytes),
        "bytes_in": None if None in in_bytes else sum(in_bytes),
        "counters": totals,
        "energy": energy_of(totals, steps, preset),
    }


# --- the summary table ------------------------------------------------------------------------


def _row(label: str, record: dict) -> list[str]:
    lat = record.get("latency") or {}
    c = record["counters"]
    nbytes = ("-" if record.get("bytes_out") is None
              else f"{record['bytes_out']:,}/{record['bytes_in']:,}")
    dps = record.get("decisions_per_s")
    return [
        label,
        f"{record.get('score', record.get('mean_score', 0)):+.0f}"
        if "score" in record else f"{record['mean_score']:+.2f}",
        f"{record['steps']:,}",
        "-" if dps is None else f"{dps:.1f}",
        "/".join(f"{lat[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")) if lat else "-",
        nbytes,
        f"{c.get('macs', 0):,}",
        f"{c.get('f_writes', 0):,}",
        f"{c.get('potentiation', 0):,}",
        f"{c.get('depression', 0):,}",
    ]


def format_summary(summary: dict, episode: dict | None = None) -> str:
    """The summary table: one row per episode (or just ``episode``), a total row, and the energy
    ledger of the total (or of ``episode``)."""
    head = ["episode", "score", "steps", "dec/s", "latency p50/p90/p99 ms", "bytes out/in",
            "MACs", "F writes", "potentiation", "depression"]
    if episode is not None:
        rows = [_row(f"{episode['seed']}", episode)]
    else:
        rows = [_row(f"{r['seed']}", r) for r in summary["episodes"]]
        rows.append(_row("all", summary))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    source = episode if episode is not None else summary
    if episode is not None and episode.get("truncated"):
        lines.append(f"(cut at {episode['steps']:,} steps by --max-steps)")
    if episode is None:
        rate = summary.get("decisions_per_s")
        real = summary["atari_real_time_decisions_per_s"]
        if rate:
            lines.append(f"mean score {summary['mean_score']:+.2f} over "
                         f"{len(summary['episodes'])} episode(s); {rate:.1f} decisions/s "
                         f"end to end, {rate / real:.2f}x Atari real time ({real:g}/s)")
    energy = source.get("energy")
    if energy is None:
        lines.append("energy ledger: not available (mstpn.host.energy is not installed)")
    elif episode is not None:
        # one line per episode; the whole ledger, with sources and assumptions, comes at the end
        totals = ", ".join(f"{name} {value:,.4g} mJ" for name, value in
                           energy["totals_mj"].items())
        lines.append(f"energy of this episode: {totals} (estimates from the measured counters; "
                     f"the ledger follows the last episode)")
    else:
        lines.append("")
        lines.append(energy["table"])
    return "\n".join(lines)


def say_stderr(message: str) -> None:
    """Write a progress message to stderr as is (``\\r`` lines overwrite themselves)."""
    sys.stderr.write(message)
    sys.stderr.flush()
