"""DAgger's data collection: envs, teacher and student, in or out of the trainer's process.

A :class:`Collector` owns some of the run's envs, a teacher and a copy of the student. Each
:meth:`Collector.collect` call steps every env it owns a fixed number of times and returns the
new labelled steps. The trainer never waits for its own updates to collect: it asks for the next
chunk *before* it runs the update on what it has, so chunk ``k + 1`` is collected with the
weights from before update ``k``. That one-update lag is the same whether the collector runs in
the trainer's process (:class:`LocalCollectors`, ``--workers 0``) or in worker processes
(:class:`WorkerCollectors`), so both give the same run bit for bit when the device model draws
no noise (with noise, each worker draws from its own seeded generator and the trainer's process
from torch's global one, so the two differ). With one worker, the learner's
update and the teacher's search overlap on two cores.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from ...spec.device import DeviceModel
from ...spec.env import make_env, past_freeze
from ...spec.preprocess import binarize
from ...spec.presets import ALE_ACTIONS, get_preset
from .model import MSTPN
from .teacher import make_teacher

__all__ = ["CollectorSpec", "Segment", "Collector", "LocalCollectors", "WorkerCollectors",
           "make_collectors", "frame_bits", "EPISODE_SEED_STRIDE"]

#: Reset seeds of consecutive training episodes are this far apart.
EPISODE_SEED_STRIDE = 7919


def frame_bits(frames: np.ndarray, preset) -> np.ndarray:
    """(N, pixels) bool from (N, 210, 160) grayscale frames: what the student sees."""
    return binarize(frames, preset.frame).reshape(len(frames), -1)


@dataclass
class CollectorSpec:
    """What one collector needs to build itself (picklable, for a worker process).

    Parameters
    ----------
    preset, device, seed : str, dict, int
        The run's preset, device model (:meth:`DeviceModel.to_dict`) and seed.
    teacher : str
        The teacher (:data:`.teacher.TEACHERS`).
    env_ids : list of int
        The run's env indices this collector owns.
    total_envs : int
        The run's envs in all.
    seed_base : int
        Env ``i``'s ``k``-th episode from here on resets with seed
        ``seed_base + EPISODE_SEED_STRIDE * (first_episode + k * total_envs + i)``.
    first_episode : int
        The run's episode count when the collectors start (a resumed run draws new seeds).
    rng_seed : list of int
        Seeds the choice of driver (teacher or student) of each episode.
    max_episode_steps : int
        Cut episodes after this many steps (0: never).
    """

    preset: str
    device: dict
    seed: int
    teacher: str
    env_ids: list[int]
    total_envs: int
    seed_base: int
    first_episode: int
    rng_seed: list[int]
    max_episode_steps: int = 0


@dataclass
class Segment:
    """One env's new steps in a chunk, up to the chunk's end or the episode's.

    ``packed`` holds ``np.packbits`` of each step's binary frame, ``labels`` the teacher's
    actions. ``ended`` is set when the episode ended with the segment's last step; ``score``,
    ``steps`` and ``driver`` then describe the whole episode.
    """

    env: int
    packed: np.ndarray
    labels: np.ndarray
    ended: bool = False
    score: float = 0.0
    steps: int = 0
    driver: str = ""


@dataclass
class _Episode:
    driver: str
    packed: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    score: float = 0.0
    steps: int = 0


class Collector:
    """Some of the run's envs, a teacher that labels every step, and the student's copy."""

    def __init__(self, spec: CollectorSpec) -> None:
        if not spec.env_ids:
            raise ValueError("a collector needs at least one env")
        self.spec = spec
        self.preset = get_preset(spec.preset)
        self.model = MSTPN(self.preset, DeviceModel.from_dict(spec.device), seed=spec.seed)
        self.teacher = make_teacher(spec.teacher)
        self.envs = [make_env() for _ in spec.env_ids]
        self.rng = np.random.default_rng(spec.rng_seed)
        self.codes: dict[str, torch.Tensor] | None = None
        self._started = [0] * len(self.envs)
        self._episodes: list[_Episode | None] = [None] * len(self.envs)
        self._obs: list[np.ndarray | None] = [None] * len(self.envs)
        self.state = self.model.initial_state(len(self.envs))

    def _start(self, j: int, beta: float) -> None:
        spec = self.spec
        episode = spec.first_episode + self._started[j] * spec.total_envs + spec.env_ids[j]
        self._started[j] += 1
        obs, _ = self.envs[j].reset(seed=int(spec.seed_base + EPISODE_SEED_STRIDE * episode))
        self._obs[j] = obs
        self.teacher.reset(j)
        driver = "student" if self.rng.random() >= beta else "teacher"
        self._episodes[j] = _Episode(driver)

    def collect(self, codes: dict[str, torch.Tensor] | None, beta: float,
                steps: int) -> list[Segment]:
        """Step every env ``steps`` times; return the new labelled steps.

        Parameters
        ----------
        codes : dict, optional
            The student's codes (:meth:`MSTPN.codes`, detached) to act with from now on; None
            keeps the last ones.
        beta : float
            The share of new episodes the teacher drives.
        steps : int
            Steps per env.
        """
        if codes is not None:
            self.codes = codes
        if self.codes is None:
            raise RuntimeError("the collector has no student codes yet")
        for j, episode in enumerate(self._episodes):
            if episode is None:
                self._start(j, beta)
        segments: list[Segment] = []
        marks = [len(e.labels) for e in self._episodes]
        for _ in range(steps):
            bits = frame_bits(np.stack(self._obs), self.preset)
            with torch.no_grad():
                logits, _, self.state = self.model.step(
                    torch.as_tensor(bits, dtype=torch.float64), self.state, self.codes)
            student = logits.argmax(dim=1).numpy()
            done = np.zeros(len(self.envs), dtype=bool)
            for j, env in enumerate(self.envs):
                ep = self._episodes[j]
                if self.teacher.needs_env:
                    label = self.teacher.act(env, j)
                else:
                    label = self.teacher.act(env.unwrapped.ale.getRAM(), j)
                ep.packed.append(np.packbits(bits[j]))
                ep.labels.append(label)
                action = label if ep.driver == "teacher" else int(student[j])
                obs, reward, term, trunc, _ = env.step(ALE_ACTIONS[action])
                # A game still going at the freeze ends there, without the freeze's spurious
                # reward (mstpn.spec.env.FREEZE_FRAME), as the A2C envs do.
                frozen = not term and past_freeze(env)
                if not frozen:
                    ep.score += float(reward)
                ep.steps += 1
                self._obs[j] = obs
                cut = self.spec.max_episode_steps and ep.steps >= self.spec.max_episode_steps
                if term or trunc or cut or frozen:
                    segments.append(self._segment(j, marks[j], ended=True))
                    done[j] = True
                    self._start(j, beta)
                    marks[j] = 0
            self.state = self.model.reset_state(self.state, torch.as_tensor(done))
        for j in range(len(self.envs)):
            if len(self._episodes[j].labels) > marks[j]:
                segments.append(self._segment(j, marks[j], ended=False))
        return segments

    def _segment(self, j: int, mark: int, ended: bool) -> Segment:
        ep = self._episodes[j]
        return Segment(
            env=self.spec.env_ids[j], packed=np.array(ep.packed[mark:], dtype=np.uint8),
            labels=np.array(ep.labels[mark:], dtype=np.int64), ended=ended, score=ep.score,
            steps=ep.steps, driver=ep.driver)


class LocalCollectors:
    """Collectors in the trainer's process (``--workers 0``)."""

    def __init__(self, specs: list[CollectorSpec]) -> None:
        self.collectors = [Collector(spec) for spec in specs]
        self._pending: tuple | None = None

    def request(self, codes: dict[str, torch.Tensor] | None, beta: float, steps: int) -> None:
        """Ask for the next chunk (collected now, returned by :meth:`receive`)."""
        self._pending = (codes, beta, steps)

    def receive(self) -> list[Segment]:
        """The chunk asked for by the last :meth:`request`."""
        if self._pending is None:
            raise RuntimeError("receive() without request()")
        codes, beta, steps = self._pending
        self._pending = None
        return [s for c in self.collectors for s in c.collect(codes, beta, steps)]

    def close(self) -> None:
        """Nothing to stop."""


def _codes_to_wire(codes: dict[str, torch.Tensor] | None) -> dict[str, np.ndarray] | None:
    # A torch tensor sent through a Pipe travels as a shared-memory handle that the receiver
    # fetches from a helper thread of the sender: a SIGTERM to the trainer mid-fetch left a
    # ConnectionResetError traceback in the worker. Plain arrays travel inside the message.
    if codes is None:
        return None
    return {name: code.detach().cpu().numpy() for name, code in codes.items()}


def _codes_from_wire(codes: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor] | None:
    if codes is None:
        return None
    return {name: torch.from_numpy(code) for name, code in codes.items()}


def _worker_main(conn, spec: CollectorSpec) -> None:
    # Ctrl-C reaches the whole process group; the trainer decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    # A noisy device model draws from torch's generator, which starts from one fixed seed in
    # every new process: seeded from the spec, each worker draws its own noise.
    torch.manual_seed(int(np.random.SeedSequence(spec.rng_seed).generate_state(1)[0]))
    try:
        collector = Collector(spec)
        conn.send(("ready", None))
        while True:
            message = conn.recv()
            if message is None:
                return
            codes, beta, steps = message
            conn.send(("chunk", collector.collect(_codes_from_wire(codes), beta, steps)))
    except EOFError:
        return
    except BaseException:  # reported to the trainer, which raises it
        conn.send(("error", traceback.format_exc()))


class WorkerCollectors:
    """One worker process per collector (``--workers N``); each steps its envs and teacher."""

    def __init__(self, specs: list[CollectorSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns = []
        self._procs = []
        try:
            for spec in specs:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, spec), daemon=True,
                                   name=f"mstpn-collector-{spec.env_ids[0]}")
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for conn in self._conns:
                self._answer(conn, "ready")
        except BaseException:
            self.close()
            raise

    def _answer(self, conn, kind: str):
        try:
            got, payload = conn.recv()
        except EOFError:
            raise RuntimeError("a collector worker process died (out of memory?)") from None
        if got == "error":
            raise RuntimeError(f"a collector worker failed:\n{payload}")
        if got != kind:
            raise RuntimeError(f"a collector worker answered {got!r}, expected {kind!r}")
        return payload

    def request(self, codes: dict[str, torch.Tensor] | None, beta: float, steps: int) -> None:
        """Start the next chunk in every worker."""
        for conn in self._conns:
            conn.send((_codes_to_wire(codes), beta, steps))

    def receive(self) -> list[Segment]:
        """Wait for the chunk of the last :meth:`request`."""
        return [s for conn in self._conns for s in self._answer(conn, "chunk")]

    def close(self) -> None:
        """Stop the workers (a chunk in flight is dropped)."""
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []


def split_envs(envs: int, workers: int) -> list[list[int]]:
    """The run's env indices, dealt to ``max(workers, 1)`` collectors as evenly as possible."""
    if envs < 1:
        raise ValueError(f"envs must be at least 1, not {envs}")
    if workers < 0:
        raise ValueError(f"workers must be 0 (in the trainer's process) or more, not {workers}")
    parts = max(workers, 1)
    if parts > envs:
        raise ValueError(f"{workers} workers for {envs} envs: each worker needs an env")
    return [list(range(envs))[k::parts] for k in range(parts)]


def make_collectors(specs: list[CollectorSpec], workers: int) -> LocalCollectors | WorkerCollectors:
    """:class:`LocalCollectors` for ``workers == 0``, else :class:`WorkerCollectors`."""
    return WorkerCollectors(specs) if workers else LocalCollectors(specs)
