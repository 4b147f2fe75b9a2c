"""``mstpn train``: DAgger from a privileged teacher, then actor-critic RL, for the m-STPN student.

Stages (each is one ``mstpn train --stage ...`` run; ``--init`` starts a stage from another
run's checkpoint):

``dagger``
    Several single ``ALE/Pong-v5`` envs (:func:`mstpn.spec.env.make_env`) run side by side, in
    the trainer's process or in ``--workers`` processes that collect while it updates
    (:mod:`.collect`). Each
    episode is driven either by the teacher (probability beta, decaying) or by the student acting
    greedily in the fixed-point arithmetic (its argmax is the golden model's action). The teacher
    (:mod:`.teacher`) labels every step of both kinds, so the student learns the teacher's action
    in the states its own mistakes lead to. Labelled episodes go to a replay buffer; each update
    replays ``batch`` windows of ``burn_in + seq`` steps from it (the plastic state is rebuilt over
    the burn-in, then the cross-entropy is back-propagated through ``seq`` steps of F and h).
``a2c``
    ale-py's native vector env (:func:`mstpn.spec.env.make_vector_env`, the same frames) and
    advantage actor-critic: rollouts of ``seq`` steps, truncated BPTT through the plastic state
    carried across rollouts, GAE, an entropy bonus. No teacher: the student can pass it. With
    ``--critic-warmup N`` only the critic head learns during the first N frames. With
    ``--ppo-epochs E``, PPO's clipped update replaces A2C's single step per rollout.

Every stage trains :class:`.model.MSTPN`, the golden model's arithmetic with straight-through
gradients. Checkpoints (``latest.pt`` every ``--checkpoint-every`` seconds and at the end,
``best.pt`` whenever the rolling mean score of the student's last 20 episodes improves) are
written atomically; ``--resume`` continues a killed run from ``latest.pt`` (parameters, optimiser,
counters, wall time and random states; DAgger's replay buffer comes back from the
``buffer-N.npz`` file the checkpoint names, unfinished episodes included; the envs start
afresh). A resume may extend the frame budget and change :data:`.settings.RESUME_CHANGEABLE`
(the learning rate, the encoder's share of it, the anchor's weight and direction, the entropy
bonus, PPO's epochs, clip and minibatches, the policy's temperature, and an A2C run's envs and
their threads), logged as a ``config`` record. ``--torch-device cuda`` runs A2C's network on a
GPU; the envs stay on the CPU. A JSONL
log (``log.jsonl``) and a learning curve (``curve.png``) are written beside them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ...model.atomic import atomic_write_bytes
from ...spec.device import DeviceModel
from ...spec.env import FRAMESKIP, STICKY, make_vector_env
from ...spec.presets import ALE_ACTIONS, get_preset
from ...spec.qformat import ACT
from .collect import CollectorSpec, Segment, frame_bits, make_collectors, split_envs
from .critic import FrameCritic
from .model import MSTPN
from .phase import AUX_TARGETS, aux_targets, loss_weights
from .runlog import JsonlLog, draw_curve
from .settings import (
    A2C,
    CRITICS,
    DAGGER,
    FRAME_CRITIC,
    KL_DIRECTIONS,
    RESUME_CHANGEABLE,
    REVERSE_KL,
    STAGES,
)

__all__ = ["TrainConfig", "Trainer", "train", "resume_config", "load_checkpoint",
           "model_from_checkpoint", "torch_device", "EMA_DECAY"]

#: Settings that say how to run, not what: a resume takes them from its own call.
_CALL_SETTINGS = ("out", "frames", "workers", "torch_threads", "torch_device")
#: How often a run reports and saves: a resume keeps the run's own unless its call gives them.
_REPORT_SETTINGS = ("progress_every", "checkpoint_every")
#: The accepted ``--torch-device`` names.
_TORCH_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoints)."""

    out: str
    stage: str = DAGGER
    frames: int = 2_000_000
    seed: int = 0
    preset: str = "icebreaker"
    device: dict = dataclasses.field(default_factory=dict)
    teacher: str = "search"
    envs: int = 8
    env_threads: int = 1
    lr: float = 1e-3
    encoder_lr_scale: float = 20.0
    batch: int = 16
    seq: int = 32
    burn_in: int = 32
    label_steps_per_update: int = 32
    #: DAgger: the loss weight of steps where the ball is not coming toward us (1: all alike).
    away_weight: float = 1.0
    #: DAgger: the weight of the auxiliary loss (:data:`.phase.AUX_TARGETS` read from h; 0: none).
    aux_weight: float = 0.0
    min_buffer: int = 2_000
    buffer_steps: int = 300_000
    beta: float = 0.5
    beta_min: float = 0.0
    beta_frames: int = 1_000_000
    gamma: float = 0.99
    gae: float = 0.95
    entropy: float = 0.01
    value_coef: float = 0.5
    critic_warmup: int = 0
    #: A2C: what the critic reads, one of :data:`.settings.CRITICS` (``frames``:
    #: :class:`.critic.FrameCritic`, which learns ``critic_lr_scale`` times faster than ``lr``).
    critic: str = CRITICS[0]
    critic_lr_scale: float = 10.0
    grad_clip: float = 1.0
    checkpoint_every: float = 180.0
    progress_every: float = 15.0
    torch_threads: int = 1
    #: Where torch runs the network: ``cpu``, or (A2C) ``cuda`` / ``cuda:N``. How to run, not
    #: what: a resume takes it from its own call.
    torch_device: str = "cpu"
    #: DAgger: worker processes that step the envs and the teacher (0: the trainer's own).
    workers: int = 0
    init: str | None = None
    #: DAgger with ``init``: start with the init run's replay buffer too.
    init_buffer: bool = False
    #: With ``init``: start from the init checkpoint's running average of its parameters (what
    #: ``mstpn export --ema`` exports) instead of its latest ones.
    init_ema: bool = False
    #: A2C: the weight of KL(reference || student) per step, where the reference is the frozen
    #: policy that ``init`` (and ``init_ema``) names; it keeps the student near that policy
    #: (0: none).
    kl_weight: float = 0.0
    #: A2C: which way the anchor's KL runs, one of :data:`.settings.KL_DIRECTIONS`.
    kl_direction: str = KL_DIRECTIONS[0]
    #: A2C: the policy that plays the rollouts and learns is softmax(logits / temperature).
    #: The greedy action, the hardware's argmax, is the same at any temperature; below 1 the
    #: training play comes closer to it (1: the logits as they are). The anchor compares the
    #: untempered logits.
    temperature: float = 1.0
    #: A2C: PPO's clipped update. Each rollout is replayed this many times, in
    #: ``ppo_minibatches`` groups of envs, with one optimiser step per group and the policy
    #: ratio clipped to 1 +- ``ppo_clip`` (0: plain A2C, one step per rollout).
    ppo_epochs: int = 0
    ppo_clip: float = 0.1
    ppo_minibatches: int = 4
    max_episode_steps: int = 0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}: {' or '.join(map(repr, STAGES))}")
        split_envs(self.envs, self.workers)  # raises on a bad count, naming it
        if not 0.0 <= self.away_weight <= 1.0:
            raise ValueError(f"away_weight must be in [0, 1], not {self.away_weight}")
        if not (math.isfinite(self.aux_weight) and self.aux_weight >= 0.0):
            raise ValueError(f"aux_weight must be a finite number >= 0, not {self.aux_weight}")
        if self.aux_weight and self.stage != DAGGER:
            raise ValueError("aux_weight is a dagger stage option")
        if self.init_buffer and not self.init:
            raise ValueError("init_buffer needs init: the run whose replay buffer to start with")
        if self.init_ema and not self.init:
            raise ValueError("init_ema needs init: the checkpoint whose running average to start "
                             "from")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0.0):
            raise ValueError(f"kl_weight must be a finite number >= 0, not {self.kl_weight}")
        if self.kl_weight and self.stage != A2C:
            raise ValueError("kl_weight is an a2c stage option")
        if self.kl_weight and not self.init:
            raise ValueError("kl_weight needs init: the checkpoint whose policy is the reference")
        if self.kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"unknown kl_direction {self.kl_direction!r}: "
                             f"{' or '.join(map(repr, KL_DIRECTIONS))}")
        if not (math.isfinite(self.temperature) and self.temperature > 0.0):
            raise ValueError(f"temperature must be a finite number > 0, not {self.temperature}")
        if self.temperature != 1.0 and self.stage != A2C:
            raise ValueError("temperature is an a2c stage option")
        if not (isinstance(self.ppo_epochs, int) and self.ppo_epochs >= 0):
            raise ValueError(f"ppo_epochs must be a whole number >= 0, not {self.ppo_epochs!r}")
        if self.ppo_epochs and self.stage != A2C:
            raise ValueError("ppo_epochs is an a2c stage option")
        if not (math.isfinite(self.ppo_clip) and 0.0 < self.ppo_clip < 1.0):
            raise ValueError(f"ppo_clip must be in (0, 1), not {self.ppo_clip}")
        if not (isinstance(self.ppo_minibatches, int) and 1 <= self.ppo_minibatches):
            raise ValueError(
                f"ppo_minibatches must be a whole number >= 1, not {self.ppo_minibatches!r}")
        if not _TORCH_DEVICE.fullmatch(self.torch_device):
            raise ValueError(f"unknown torch_device {self.torch_device!r}: cpu, cuda or cuda:N")
        if self.torch_device != "cpu" and self.stage != A2C:
            raise ValueError("torch_device other than cpu is an a2c stage option (DAgger's "
                             "learner and teacher run on the CPU)")
        if self.critic not in CRITICS:
            raise ValueError(f"unknown critic {self.critic!r}: {' or '.join(map(repr, CRITICS))}")
        if self.critic == FRAME_CRITIC and self.stage != A2C:
            raise ValueError("critic 'frames' is an a2c stage option")
        if self.critic == FRAME_CRITIC and self.ppo_epochs:
            raise ValueError("critic 'frames' works with A2C's update only, not with ppo_epochs")
        if not (math.isfinite(self.critic_lr_scale) and self.critic_lr_scale > 0.0):
            raise ValueError(
                f"critic_lr_scale must be a finite number > 0, not {self.critic_lr_scale}")
        if self.ppo_epochs and self.ppo_minibatches > self.envs:
            raise ValueError(f"ppo_minibatches ({self.ppo_minibatches}) splits the envs: it may "
                             f"not exceed envs ({self.envs})")


#: Per update, the averaged parameters (``--ema`` of ``mstpn export``) keep this much of their
#: old value: a time constant of 1,000 updates, a few minutes of DAgger. The average only rides
#: along; training uses the latest parameters.
EMA_DECAY = 0.999

#: Steps read after a window's trained steps for the auxiliary targets: an approach across the
#: court takes 20-40 steps.
AUX_LOOKAHEAD = 48


def torch_device(name: str) -> torch.device:
    """The torch device ``name`` (``--torch-device``), checked to be there.

    Raises
    ------
    RuntimeError
        ``name`` is a CUDA device that this torch does not see (a CPU-only build, no GPU, or
        fewer GPUs than its index).
    """
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else "sees no GPU"
            raise RuntimeError(f"--torch-device {name}: this torch ({torch.__version__}) "
                               f"{build}; train on the CPU with --torch-device cpu")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--torch-device {name}: torch sees only "
                               f"{torch.cuda.device_count()} GPU(s)")
    return dev


def policy_kl(ref_logits: torch.Tensor, logits: torch.Tensor,
              reverse: bool = False) -> torch.Tensor:
    """KL(reference || student) of two batches of action logits, one value per row.

    The reference's distribution weighs the student's log-probabilities, so the gradient pulls
    the student toward every action the reference would take (a distillation term). With
    ``reverse``, KL(student || reference): the student's own distribution weighs the gap, so an
    action it no longer takes costs nothing, and it may be surer than the reference.
    """
    ref_logp = torch.log_softmax(ref_logits, dim=-1)
    logp = torch.log_softmax(logits, dim=-1)
    if reverse:
        return (logp.exp() * (logp - ref_logp)).sum(-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


# --- checkpoints ------------------------------------------------------------------------------


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def _shrink(obj):
    """float64 tensors to float32 (checkpoints stay small; they are widened again on load), on
    the CPU wherever the run ran."""
    if isinstance(obj, torch.Tensor):
        return (obj.float() if obj.dtype == torch.float64 else obj).cpu()
    if isinstance(obj, dict):
        return {k: _shrink(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shrink(v) for v in obj]
    return obj


def _widen(obj):
    if isinstance(obj, torch.Tensor):
        return obj.double() if obj.dtype == torch.float32 else obj
    if isinstance(obj, dict):
        return {k: _widen(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_widen(v) for v in obj]
    return obj


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents (``config``, ``model``, ``optimizer``, ``counters``, ...).

    Checkpoints store the float64 tensors as float32; they come back as float64.
    """
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    ckpt["model"] = _widen(ckpt["model"])
    if ckpt.get("optimizer") is not None:
        ckpt["optimizer"] = _widen(ckpt["optimizer"])
    if ckpt.get("ema") is not None:
        ckpt["ema"] = _widen(ckpt["ema"])
    return ckpt


def model_from_checkpoint(ckpt: dict, ema: bool = False) -> MSTPN:
    """The student of a checkpoint; with ``ema``, its parameters' running average
    (:data:`EMA_DECAY`)."""
    cfg = ckpt["config"]
    model = MSTPN(get_preset(cfg["preset"]), DeviceModel.from_dict(cfg["device"]), cfg["seed"])
    model.load_state_dict(ckpt["model"])
    if ema:
        if ckpt.get("ema") is None:
            raise ValueError("this checkpoint holds no averaged parameters (it predates them)")
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(ckpt["ema"][name])
    return model


# --- the replay buffer of labelled episodes ----------------------------------------------------


class Windows(NamedTuple):
    """Replayed windows, time first: ``bits`` (W, B, pixels) and ``labels``, ``reset`` (an
    episode starts), ``valid`` (a trained step) and ``known`` (played already), each (W, B)."""

    bits: np.ndarray
    labels: np.ndarray
    reset: np.ndarray
    valid: np.ndarray
    known: np.ndarray


class EpisodeBuffer:
    """Labelled episodes (packed frames and teacher actions), oldest evicted first."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.episodes: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.steps = 0

    def add(self, packed: np.ndarray, labels: np.ndarray) -> None:
        """Store one episode (or an episode's part): packed frames (L, bytes) as
        ``np.packbits(bits)`` of each step's (pixels,) bits, labels (L,)."""
        if len(labels) == 0:
            return
        self.episodes.append((packed, labels.astype(np.int64)))
        self.steps += len(labels)
        while self.steps > self.capacity and len(self.episodes) > 1:
            old = self.episodes.popleft()
            self.steps -= len(old[1])

    def to_bytes(self, extra=()) -> bytes:
        """The buffer as the bytes of an ``.npz`` file, with ``extra`` (packed, labels) episodes
        (unfinished ones, which are kept as they are) after its own."""
        episodes = [e for e in (*self.episodes, *extra) if len(e[1])]
        out = io.BytesIO()
        np.savez(
            out,
            packed=(np.concatenate([p for p, _ in episodes]) if episodes
                    else np.zeros((0, 0), dtype=np.uint8)),
            labels=(np.concatenate([lab for _, lab in episodes]) if episodes
                    else np.zeros(0, dtype=np.int64)),
            lengths=np.array([len(lab) for _, lab in episodes], dtype=np.int64),
        )
        return out.getvalue()

    def add_bytes(self, data: bytes) -> int:
        """Add the episodes of :meth:`to_bytes`'s output; return the steps added.

        Raises
        ------
        ValueError
            If the data is not such a file or its arrays disagree.
        """
        try:
            with np.load(io.BytesIO(data)) as npz:
                packed, labels, lengths = npz["packed"], npz["labels"], npz["lengths"]
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ValueError(f"not a replay buffer file: {exc}") from None
        if (lengths.ndim != 1 or (lengths < 0).any() or int(lengths.sum()) != len(labels)
                or len(packed) != len(labels)):
            raise ValueError("a replay buffer file whose episode lengths disagree with its steps")
        start = 0
        for n in lengths.tolist():
            self.add(packed[start:start + n], labels[start:start + n])
            start += n
        return int(lengths.sum())

    def sample(self, batch: int, burn_in: int, seq: int, pixels: int, live=(),
               lookahead: int = 0) -> Windows:
        """Windows for one update, each of ``burn_in + seq + lookahead`` steps.

        Each window's ``seq`` trained steps start at a uniformly drawn step; the ``burn_in``
        steps before them rebuild the plastic state (from zero at the episode's start), and the
        ``lookahead`` steps after them are read only to know what comes next (the auxiliary
        targets' crossing). ``live`` episodes are unfinished: their steps not yet played are
        not ``known``.
        """
        pool = list(self.episodes) + list(live)
        if not pool:
            raise ValueError("nothing to sample: the buffer is empty and no live episode is "
                             "long enough")
        finished = len(self.episodes)
        lengths = np.array([len(e[1]) for e in pool], dtype=np.float64)
        probs = lengths / lengths.sum()
        width = burn_in + seq + lookahead
        bits = np.zeros((width, batch, pixels), dtype=np.float64)
        labels = np.zeros((width, batch), dtype=np.int64)
        reset = np.zeros((width, batch), dtype=bool)
        valid = np.zeros((width, batch), dtype=bool)
        known = np.ones((width, batch), dtype=bool)
        for b in range(batch):
            pick = int(self.rng.choice(len(pool), p=probs))
            packed, lab = pool[pick]
            n = len(lab)
            start = int(self.rng.integers(0, max(n - seq, 0) + 1))
            first = start - burn_in
            for k in range(width):
                t = first + k
                if t >= n and pick >= finished:
                    known[k, b] = False
                if t < 0 or t >= n:
                    continue
                if t == 0:
                    reset[k, b] = True
                bits[k, b] = np.unpackbits(packed[t], count=pixels)
                labels[k, b] = lab[t]
                valid[k, b] = burn_in <= k < burn_in + seq
        return Windows(bits, labels, reset, valid, known)


class Rollout(NamedTuple):
    """One A2C rollout, a list per field with one entry per step (each over the envs)."""

    bits: list        # the frames the student saw, uint8 (envs, pixels)
    actions: list     # the sampled actions
    logps: list       # their log-probabilities under the rollout's policy
    entropies: list
    values: list      # the critic's values
    rewards: list
    dones: list       # 1.0 where the episode ended at this step (the state was then zeroed)
    kls: list         # KL(reference || student), with an anchor
    ref_logits: list  # the reference's logits, with an anchor
    h_values: list    # with the frame critic, the h critic's values (it learns beside it)


# --- the trainer ------------------------------------------------------------------------------


class Trainer:
    """One training run (a stage), resumable from its directory."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg = cfg
        #: Where the network runs (``--torch-device``); the envs and the log stay on the CPU.
        #: Checked first, so that a missing GPU leaves no run folder behind.
        self.tdev = torch_device(cfg.torch_device)
        self.dir = Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.torch_threads)
        self.preset = get_preset(cfg.preset)
        self.device = DeviceModel.from_dict(cfg.device)
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = MSTPN(self.preset, self.device, seed=cfg.seed).to(self.tdev)
        groups = self.model.param_groups(cfg.lr, cfg.encoder_lr_scale)
        # The auxiliary head (training only, like the critic) reads h; its loss shapes h.
        self.aux_head: torch.nn.Linear | None = None
        if cfg.aux_weight > 0:
            self.aux_head = torch.nn.Linear(self.preset.hidden, len(AUX_TARGETS),
                                            dtype=torch.float64)
            groups.append({"params": list(self.aux_head.parameters()), "lr": cfg.lr})
        # The frame critic (training only) replaces the h critic's values in the advantages;
        # the h critic goes on learning beside it, so the log compares the two value losses.
        self.frame_critic: FrameCritic | None = None
        if cfg.critic == FRAME_CRITIC:
            self.frame_critic = FrameCritic(self.preset.encoder.inputs, self.preset.hidden,
                                            seed=cfg.seed).to(self.tdev)
            groups.append({"params": list(self.frame_critic.parameters()),
                           "lr": cfg.lr * cfg.critic_lr_scale})
        lrs = [group["lr"] for group in groups]
        self.opt = torch.optim.Adam(groups)
        self.counters = {"frames": 0, "steps": 0, "updates": 0, "episodes": 0, "wall_s": 0.0,
                          "labels": 0}
        self.best = -math.inf
        self.scores: deque[float] = deque(maxlen=20)
        self.env_seed_base = 10_000 * (cfg.seed + 1)
        self.resumed = False
        latest = self.dir / "latest.pt"
        saved_ema = None
        # DAgger's replay buffer and unfinished episodes, saved beside the checkpoint.
        self._buffer: EpisodeBuffer | None = None
        self._live: list | None = None
        self._buffer_file: str | None = None
        if resume:
            if not latest.exists():
                raise FileNotFoundError(f"--resume: no checkpoint {latest}")
            ckpt = load_checkpoint(latest)
            self.model.load_state_dict(ckpt["model"])
            self._load_aux_head(ckpt)
            self._load_frame_critic(ckpt)
            self.opt.load_state_dict(ckpt["optimizer"])
            # The saved state carries the saved rates; a resume may have changed --lr.
            for group, lr in zip(self.opt.param_groups, lrs, strict=True):
                group["lr"] = lr
            self.counters.update(ckpt["counters"])
            self.best = ckpt.get("best", -math.inf)
            self.scores.extend(ckpt.get("scores", []))
            _set_rng_state(ckpt["rng"])
            saved_ema = ckpt.get("ema")
            self._buffer_file = ckpt.get("buffer")
            self.resumed = True
        elif cfg.init:
            init = self._load_init(cfg)
            self.model.load_state_dict(init["model"])
            if cfg.init_ema:
                with torch.no_grad():
                    for name, param in self.model.named_parameters():
                        param.copy_(init["ema"][name])
            self._load_aux_head(init)
            self._load_frame_critic(init)
            if cfg.init_buffer:
                if not init.get("buffer"):
                    raise FileNotFoundError(f"--init-buffer: {cfg.init} names no replay buffer")
                # Absolute, so that it is read from the init run's folder; the first checkpoint
                # writes the buffer into this run's folder under its own name.
                path = (Path(cfg.init).parent / init["buffer"]).resolve()
                if not path.exists():
                    raise FileNotFoundError(
                        f"--init-buffer: {cfg.init} names the replay buffer {path}, which is gone")
                self._buffer_file = str(path)
        # A2C's anchor: the policy it starts from, frozen (rebuilt from init on a resume).
        self.reference: MSTPN | None = None
        if cfg.kl_weight > 0:
            self.reference = model_from_checkpoint(
                self._load_init(cfg), ema=cfg.init_ema).to(self.tdev)
            self.reference.requires_grad_(False)
        # A checkpoint from before the average starts it from its parameters.
        self.ema = {name: (saved_ema[name].to(self.tdev, copy=True) if saved_ema
                           else param.detach().clone())
                    for name, param in self.model.named_parameters()}
        self.rng = np.random.default_rng(
            [cfg.seed, self.counters["updates"], self.counters["episodes"]])
        self.log = JsonlLog(self.dir / "log.jsonl")
        (self.dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        self._t0 = time.monotonic()
        self._wall0 = self.counters["wall_s"]
        self._last_ckpt = time.monotonic()
        self._last_progress = time.monotonic()
        self._frames_at_progress = self.counters["frames"]
        self._loss_sum, self._loss_n = 0.0, 0
        self._aux_sum = 0.0
        self._kl_sum = 0.0
        self._value_sum, self._h_value_sum = 0.0, 0.0
        #: The last PPO update's means over its steps (and the replay's first log-ratio).
        self.ppo_stats: dict[str, float] = {}

    @staticmethod
    def _load_init(cfg: TrainConfig) -> dict:
        """The ``init`` checkpoint, checked for what ``init_ema`` asks of it."""
        if not Path(cfg.init).exists():
            raise FileNotFoundError(f"--init: no checkpoint {cfg.init}")
        init = load_checkpoint(cfg.init)
        if cfg.init_ema and init.get("ema") is None:
            raise ValueError(f"--init-ema: {cfg.init} holds no running average (it predates "
                             "them)")
        return init

    def _load_aux_head(self, ckpt: dict) -> None:
        """The checkpoint's auxiliary head, if both it and this run have one."""
        if self.aux_head is not None and ckpt.get("aux_head") is not None:
            self.aux_head.load_state_dict(ckpt["aux_head"])

    def _load_frame_critic(self, ckpt: dict) -> None:
        """The checkpoint's frame critic, if both it and this run have one."""
        if self.frame_critic is not None and ckpt.get("frame_critic") is not None:
            self.frame_critic.load_state_dict(ckpt["frame_critic"])

    # --- bookkeeping ---------------------------------------------------------------------------

    def wall(self) -> float:
        """Wall time of the run so far, across resumes."""
        return self._wall0 + time.monotonic() - self._t0

    def save(self, name: str = "latest.pt", optimizer: bool = True) -> None:
        """Write a checkpoint atomically (``best.pt`` goes without the optimiser state)."""
        self.counters["wall_s"] = self.wall()
        ckpt = {
            "config": dataclasses.asdict(self.cfg),
            "model": _shrink(self.model.state_dict()),
            "optimizer": _shrink(self.opt.state_dict()) if optimizer else None,
            "ema": _shrink(self.ema),
            "aux_head": self.aux_head.state_dict() if self.aux_head is not None else None,
            "frame_critic": (_shrink(self.frame_critic.state_dict())
                             if self.frame_critic is not None else None),
            "buffer": self._buffer_file if optimizer else None,
            "counters": dict(self.counters),
            "best": self.best,
            "scores": list(self.scores),
            "rng": _rng_state(),
            "time": time.time(),
        }
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        atomic_write_bytes(self.dir / name, buf.getvalue())

    def _step(self, average: bool = True) -> None:
        """The optimiser's step, then (with ``average``) the running average's."""
        self.opt.step()
        self.counters["updates"] += 1
        if not average:
            return
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                self.ema[name].lerp_(param, 1.0 - EMA_DECAY)

    def _episode_done(self, score: float, steps: int, driver: str) -> None:
        self.counters["episodes"] += 1
        self.log.write({
            "kind": "episode", "stage": self.cfg.stage, "driver": driver, "score": score,
            "steps": steps, "frames": self.counters["frames"], "wall_s": round(self.wall(), 1),
            "episode": self.counters["episodes"],
        })
        if driver != "student":
            return
        self.scores.append(score)
        if len(self.scores) >= min(10, self.scores.maxlen):
            mean = float(np.mean(self.scores))
            if mean > self.best:
                self.best = mean
                self.save("best.pt", optimizer=False)
                self.log.write({"kind": "best", "mean20": mean, "frames": self.counters["frames"],
                                "wall_s": round(self.wall(), 1)})

    def _tick(self, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last_progress >= self.cfg.progress_every:
            frames = self.counters["frames"]
            fps = (frames - self._frames_at_progress) / max(now - self._last_progress, 1e-9)
            left = max(self.cfg.frames - frames, 0)
            eta = left / fps if fps > 0 else float("inf")
            score = f"{np.mean(self.scores):+.1f}" if self.scores else "  n/a"
            loss = self._loss_sum / max(self._loss_n, 1)
            aux = self._aux_sum / max(self._loss_n, 1) if self.aux_head is not None else None
            kl = self._kl_sum / max(self._loss_n, 1) if self.reference is not None else None
            a2c = self.cfg.stage == A2C and not self.cfg.ppo_epochs
            value = self._value_sum / max(self._loss_n, 1) if a2c else None
            h_value = (self._h_value_sum / max(self._loss_n, 1)
                       if a2c and self.frame_critic is not None else None)
            print(
                f"[{self.cfg.stage}] frames {frames:,} ({fps:,.0f}/s) "
                f"score(student, last {len(self.scores)}) {score} best {self.best:+.1f} "
                f"loss {loss:.4f} " + (f"aux {aux:.4f} " if aux is not None else "")
                + f"upd {self.counters['updates']} {extra}"
                f"wall {self.wall() / 60:.1f} min ETA {eta / 60:.1f} min",
                flush=True,
            )
            self.log.write({"kind": "progress", "frames": frames, "fps": round(fps, 1),
                            "wall_s": round(self.wall(), 1), "loss": loss, "aux_loss": aux,
                            "kl": kl, "value_loss": value, "h_value_loss": h_value,
                            "updates": self.counters["updates"],
                            "mean20": float(np.mean(self.scores)) if self.scores else None})
            self._last_progress, self._frames_at_progress = now, frames
            self._loss_sum, self._loss_n, self._aux_sum, self._kl_sum = 0.0, 0, 0.0, 0.0
            self._value_sum, self._h_value_sum = 0.0, 0.0
        if now - self._last_ckpt >= self.cfg.checkpoint_every:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Save the replay buffer (DAgger), then ``latest.pt``, and redraw the curve."""
        if self._buffer is not None:
            # A new file, named by the update count, then the checkpoint that names it: a kill
            # between the two leaves the last checkpoint and its buffer file as they were.
            name = f"buffer-{self.counters['updates']}.npz"
            atomic_write_bytes(self.dir / name, self._buffer.to_bytes(self._live_episodes()))
            self._buffer_file = name
        self.save()
        for old in self.dir.glob("buffer-*.npz"):
            if old.name != self._buffer_file:
                old.unlink(missing_ok=True)
        draw_curve(self.dir / "log.jsonl", self.dir / "curve.png",
                   title=f"m-STPN Pong, {self.dir.name}")
        self._last_ckpt = time.monotonic()

    # --- DAgger --------------------------------------------------------------------------------

    def _beta(self) -> float:
        cfg = self.cfg
        frac = min(self.counters["frames"] / max(cfg.beta_frames, 1), 1.0)
        return cfg.beta + (cfg.beta_min - cfg.beta) * frac

    def _dagger_update(self, live) -> float:
        cfg = self.cfg
        lookahead = AUX_LOOKAHEAD if self.aux_head is not None else 0
        bits, labels, reset, valid, known = self._buffer.sample(
            cfg.batch, cfg.burn_in, cfg.seq, self.preset.frame.pixels, live, lookahead)
        weight = loss_weights(bits, reset, valid, cfg.away_weight, self.preset.frame)
        targets = None
        if self.aux_head is not None:
            targets = torch.as_tensor(aux_targets(bits, reset, known, self.preset.frame))
            targets = torch.where(torch.as_tensor(valid)[..., None], targets, torch.nan)
        model = self.model
        state = model.initial_state(cfg.batch)
        batch, pixels = bits.shape[1:]
        with torch.no_grad():
            codes = model.codes()
            xs = model.encode(torch.as_tensor(bits[: cfg.burn_in].reshape(-1, pixels)), codes)
            xs = xs.reshape(cfg.burn_in, batch, -1)
            for k in range(cfg.burn_in):
                state = model.reset_state(state, torch.as_tensor(reset[k]))
                _, _, state = model.step(None, state, codes, x=xs[k])
        state = tuple(s.detach() for s in state)
        codes = model.codes()
        trained = bits[cfg.burn_in : cfg.burn_in + cfg.seq]
        xs = model.encode(torch.as_tensor(trained.reshape(-1, pixels)), codes)
        xs = xs.reshape(cfg.seq, batch, -1)
        losses, hs = [], []
        for k in range(cfg.burn_in, cfg.burn_in + cfg.seq):
            state = model.reset_state(state, torch.as_tensor(reset[k]))
            logits, _, state = model.step(None, state, codes, x=xs[k - cfg.burn_in])
            ce = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor(labels[k]), reduction="none")
            losses.append(ce * torch.as_tensor(weight[k], dtype=ce.dtype))
            hs.append(state[1])
        loss = torch.stack(losses).sum() / max(float(weight.sum()), 1e-9)
        if targets is not None:
            aux = self._aux_loss(torch.stack(hs), targets[cfg.burn_in : cfg.burn_in + cfg.seq])
            self._aux_sum += aux.item()
            loss = loss + cfg.aux_weight * aux
        self.opt.zero_grad()
        loss.backward()
        params = list(model.parameters())
        if self.aux_head is not None:
            params += list(self.aux_head.parameters())
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self._step()
        return loss.item()

    def update_from(self, buffer: EpisodeBuffer) -> float:
        """One DAgger update on windows drawn from ``buffer``, with no envs run; its loss.

        For offline studies (``benchmarks/aux_check.py``): the update, its loss weights, the
        auxiliary head and the optimiser are the stage's own. ``buffer`` becomes the trainer's
        replay buffer, and the next :meth:`checkpoint` saves it.
        """
        if not isinstance(buffer, EpisodeBuffer):
            raise TypeError(f"update_from needs an EpisodeBuffer, not {type(buffer).__name__}")
        if not buffer.episodes:
            raise ValueError("update_from: the buffer holds no episodes")
        self._buffer = buffer
        return self._dagger_update(())

    def _aux_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the auxiliary head over the defined targets.

        ``h`` holds the trained steps' h codes (seq, batch, hidden); ``targets`` their scaled
        targets (seq, batch, len(AUX_TARGETS)), NaN where undefined.
        """
        pred = self.aux_head(h * ACT.scale)
        defined = ~torch.isnan(targets)
        if not defined.any():
            return pred.sum() * 0.0
        return ((pred - torch.nan_to_num(targets)) ** 2)[defined].mean()

    def run_dagger(self) -> None:
        """The DAgger stage, until the frame budget.

        The collectors (:mod:`.collect`) gather the next chunk of labelled steps while the
        update runs on what came before.
        """
        cfg = self.cfg
        specs = [
            CollectorSpec(
                preset=cfg.preset, device=cfg.device, seed=cfg.seed, teacher=cfg.teacher,
                env_ids=ids, total_envs=cfg.envs, seed_base=self.env_seed_base,
                first_episode=self.counters["episodes"],
                rng_seed=[cfg.seed, k, self.counters["episodes"], self.counters["updates"]],
                max_episode_steps=cfg.max_episode_steps)
            for k, ids in enumerate(split_envs(cfg.envs, cfg.workers))
        ]
        # Every env steps this often per chunk; a chunk holds about label_steps_per_update labels.
        steps = max(1, -(-cfg.label_steps_per_update // cfg.envs))
        buffer = EpisodeBuffer(cfg.buffer_steps, self.rng)
        self._buffer, self._live = buffer, [[] for _ in range(cfg.envs)]
        self._restore_buffer()
        collectors = make_collectors(specs, cfg.workers)
        try:
            collectors.request(self._student_codes(), self._beta(), steps)
            updated = False  # since the collectors last had the student's codes
            while self.counters["frames"] < cfg.frames:
                for seg in collectors.receive():
                    self._absorb(seg)
                if self.counters["frames"] < cfg.frames:
                    # Asked for before the update: the chunk is collected while it runs.
                    collectors.request(self._student_codes() if updated else None,
                                       self._beta(), steps)
                    updated = False
                # Live (unfinished) episodes are replayed too, once a window fits in them.
                live = self._live_episodes()
                pool = [(p, lab) for p, lab in live if len(lab) > cfg.seq]
                total = buffer.steps + sum(len(lab) for _, lab in live)
                if total >= cfg.min_buffer and (buffer.episodes or pool):
                    self._loss_sum += self._dagger_update(pool)
                    self._loss_n += 1
                    updated = True
                self._tick(f"beta {self._beta():.2f} buf {total:,} ")
        finally:
            collectors.close()
        self.checkpoint()

    def _restore_buffer(self) -> None:
        """Refill the buffer from the file the resumed checkpoint (or, with ``init_buffer``, the
        init checkpoint) names, if it is there."""
        if not self._buffer_file:
            return
        path = self.dir / self._buffer_file  # an absolute name (--init-buffer) stays as it is
        try:
            steps = self._buffer.add_bytes(path.read_bytes())
            kept = self._buffer.steps
        except (OSError, ValueError) as exc:
            print(f"mstpn train: the replay buffer starts empty: {path}: {exc}", file=sys.stderr,
                  flush=True)
            return
        dropped = f"; the oldest {steps - kept:,} did not fit" if kept < steps else ""
        print(f"mstpn train: replay buffer restored, {kept:,} steps ({path.name}{dropped})",
              flush=True)

    def _student_codes(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {name: code.detach().clone() for name, code in self.model.codes().items()}

    def _merge(self, env: int) -> tuple[np.ndarray, np.ndarray]:
        """An env's live episode so far as one (packed, labels) pair (kept merged)."""
        parts = self._live[env]
        if len(parts) > 1:
            parts[:] = [(np.concatenate([p for p, _ in parts]),
                         np.concatenate([lab for _, lab in parts]))]
        return parts[0]

    def _live_episodes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every env's unfinished episode, as (packed, labels)."""
        return [self._merge(i) for i, parts in enumerate(self._live) if parts]

    def _absorb(self, seg: Segment) -> None:
        """Count a segment's steps; an ended episode goes to the buffer and the log."""
        n = len(seg.labels)
        self.counters["steps"] += n
        self.counters["labels"] += n
        self.counters["frames"] += FRAMESKIP * n
        self._live[seg.env].append((seg.packed, seg.labels))
        if seg.ended:
            self._buffer.add(*self._merge(seg.env))
            self._live[seg.env] = []
            self._episode_done(seg.score, seg.steps, seg.driver)

    # --- A2C -----------------------------------------------------------------------------------

    def run_a2c(self) -> None:
        """Advantage actor-critic with truncated BPTT through the plastic state; with
        ``ppo_epochs``, PPO's clipped update on the same rollouts."""
        cfg = self.cfg
        n = cfg.envs
        ppo = cfg.ppo_epochs > 0
        reverse = cfg.kl_direction == REVERSE_KL
        envs = make_vector_env(n, threads=cfg.env_threads, sticky=STICKY,
                               autoreset_mode="SameStep")
        obs, _ = envs.reset(seed=int(self.env_seed_base + self.counters["episodes"]))
        model, ref, dev = self.model, self.reference, self.tdev
        state = model.initial_state(n)
        if ref is not None:
            # The reference plays along on the same frames with its own plastic state.
            ref_state = ref.initial_state(n)
            with torch.no_grad():
                ref_codes = ref.codes()
        ep_score = np.zeros(n)
        ep_steps = np.zeros(n, dtype=np.int64)
        critic = self.frame_critic
        # The frame critic's frame before; an episode's first frame is its own (no motion).
        prev = torch.as_tensor(frame_bits(obs[:, 0], self.preset)).to(dev).to(torch.float64)
        while self.counters["frames"] < cfg.frames:
            state = tuple(s.detach() for s in state)
            start = state
            roll = Rollout([], [], [], [], [], [], [], [], [], [])
            # PPO replays the rollout under its own gradients; plain A2C back-propagates
            # through this pass.
            with torch.set_grad_enabled(not ppo):
                codes = model.codes()
                for _ in range(cfg.seq):
                    frame = torch.as_tensor(frame_bits(obs[:, 0], self.preset)).to(dev)
                    bits = frame.to(torch.float64)
                    logits, value, state = model.step(bits, state, codes)
                    if critic is not None:
                        roll.h_values.append(value)
                        value = critic(bits, prev, state[1])
                        prev = bits
                    if ref is not None:
                        with torch.no_grad():
                            ref_logits, _, ref_state = ref.step(bits, ref_state, ref_codes)
                        roll.kls.append(policy_kl(ref_logits, logits, reverse))
                        roll.ref_logits.append(ref_logits)
                    dist = torch.distributions.Categorical(logits=logits / cfg.temperature)
                    action = dist.sample()
                    obs, reward, term, trunc, _ = envs.step(
                        np.asarray(ALE_ACTIONS)[action.cpu().numpy()])
                    done = np.logical_or(term, trunc)
                    done_t = torch.as_tensor(done).to(dev)
                    roll.bits.append(frame.to(torch.uint8))
                    roll.actions.append(action)
                    roll.logps.append(dist.log_prob(action))
                    roll.entropies.append(dist.entropy())
                    roll.values.append(value)
                    roll.rewards.append(torch.as_tensor(reward, dtype=torch.float64).to(dev))
                    roll.dones.append(done_t.to(torch.float64))
                    ep_score += reward
                    ep_steps += 1
                    self.counters["frames"] += FRAMESKIP * n
                    self.counters["steps"] += n
                    for i in np.flatnonzero(done):
                        self._episode_done(float(ep_score[i]), int(ep_steps[i]), "student")
                        ep_score[i], ep_steps[i] = 0.0, 0
                    state = model.reset_state(state, done_t)
                    if ref is not None:
                        ref_state = ref.reset_state(ref_state, done_t)
                    if critic is not None and done.any():
                        # After a reset the obs is the new episode's first frame.
                        first = torch.as_tensor(frame_bits(obs[:, 0], self.preset)).to(dev)
                        prev = torch.where(done_t[:, None], first.to(torch.float64), prev)
            with torch.no_grad():
                bits = torch.as_tensor(frame_bits(obs[:, 0], self.preset)).to(dev)
                bits = bits.to(torch.float64)
                _, next_value, next_state = model.step(
                    bits, tuple(s.detach() for s in state), model.codes())
                if critic is not None:
                    next_value = critic(bits, prev, next_state[1])
            adv_t, ret_t = self._gae(roll, next_value)
            adv_n = (adv_t - adv_t.mean()) / (adv_t.std() + 1e-8)
            if ppo:
                extra = self._ppo_update(start, roll, adv_n, ret_t)
            else:
                extra = self._a2c_update(roll, adv_n, ret_t)
            warm = " critic warm-up" if self.counters["frames"] < cfg.critic_warmup else ""
            self._tick(f"{extra}{warm} ")
        self.checkpoint()

    def _gae(self, roll: Rollout, next_value: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generalised advantage estimates and value targets, (seq, envs) each."""
        cfg = self.cfg
        adv, ret = [], []
        gae = torch.zeros_like(next_value)
        nv = next_value
        for t in reversed(range(len(roll.rewards))):
            nonterm = 1.0 - roll.dones[t]
            value = roll.values[t].detach()
            delta = roll.rewards[t] + cfg.gamma * nv * nonterm - value
            gae = delta + cfg.gamma * cfg.gae * nonterm * gae
            adv.append(gae)
            ret.append(gae + value)
            nv = value
        return torch.stack(adv[::-1]), torch.stack(ret[::-1])

    def _a2c_update(self, roll: Rollout, adv_n: torch.Tensor, ret_t: torch.Tensor) -> str:
        """One step down the A2C loss, through the rollout's own graph."""
        cfg = self.cfg
        logp_t, val_t = torch.stack(roll.logps), torch.stack(roll.values)
        ent_t = torch.stack(roll.entropies)
        pg = -(logp_t * adv_n).mean()
        vl = 0.5 * ((val_t - ret_t) ** 2).mean()
        loss = pg + cfg.value_coef * vl - cfg.entropy * ent_t.mean()
        h_vl = None
        if roll.h_values:
            # The h critic's loss on the same targets: the two losses compare the critics.
            h_vl = 0.5 * ((torch.stack(roll.h_values) - ret_t) ** 2).mean()
            loss = loss + cfg.value_coef * h_vl
        kl = torch.stack(roll.kls).mean() if roll.kls else None
        if kl is not None:
            loss = loss + cfg.kl_weight * kl
        self._learn(loss)
        self._kl_sum += kl.item() if kl is not None else 0.0
        self._value_sum += vl.item()
        self._h_value_sum += h_vl.item() if h_vl is not None else 0.0
        anchor = f" kl {kl.item():.4f}" if kl is not None else ""
        h_critic = f" (h critic {h_vl.item():.3f})" if h_vl is not None else ""
        return (f"entropy {ent_t.mean().item():.2f} value loss {vl.item():.3f}{h_critic}"
                f"{anchor}")

    def _ppo_update(self, start: tuple, roll: Rollout, adv_n: torch.Tensor,
                    ret_t: torch.Tensor) -> str:
        """PPO's clipped update: ``ppo_epochs`` passes over the rollout, each in
        ``ppo_minibatches`` groups of envs.

        A group's sequences are replayed from their plastic state at the rollout's start, so
        the gradient flows through ``seq`` steps of F and h as in A2C. The running average
        moves once per rollout, as it does in A2C, so that its time constant in frames stays.
        """
        cfg = self.cfg
        model = self.model
        bits = torch.stack(roll.bits)
        actions = torch.stack(roll.actions)
        dones = torch.stack(roll.dones).bool()
        old_logp = torch.stack(roll.logps)
        ref_logits = torch.stack(roll.ref_logits) if roll.ref_logits else None
        reverse = cfg.kl_direction == REVERSE_KL
        sums = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "value": 0.0, "clipped": 0.0,
                "drift": 0.0}
        n_steps = 0
        for epoch in range(cfg.ppo_epochs):
            groups = np.array_split(self.rng.permutation(cfg.envs), cfg.ppo_minibatches)
            for g, group in enumerate(groups):
                idx = torch.as_tensor(group).to(self.tdev)
                st = tuple(s[idx] for s in start)
                codes = model.codes()
                logps, values, entropies, kls = [], [], [], []
                for t in range(len(roll.bits)):
                    logits, value, st = model.step(bits[t, idx].to(torch.float64), st, codes)
                    logp_all = torch.log_softmax(logits / cfg.temperature, dim=-1)
                    logps.append(logp_all.gather(1, actions[t, idx, None])[:, 0])
                    entropies.append(-(logp_all.exp() * logp_all).sum(-1))
                    values.append(value)
                    if ref_logits is not None:
                        kls.append(policy_kl(ref_logits[t, idx], logits, reverse))
                    st = model.reset_state(st, dones[t, idx])
                logp_t, val_t = torch.stack(logps), torch.stack(values)
                ent_t = torch.stack(entropies)
                adv = adv_n[:, idx]
                log_ratio = logp_t - old_logp[:, idx]
                ratio = torch.exp(log_ratio)
                clipped = torch.clamp(ratio, 1.0 - cfg.ppo_clip, 1.0 + cfg.ppo_clip)
                pg = -torch.minimum(ratio * adv, clipped * adv).mean()
                vl = 0.5 * ((val_t - ret_t[:, idx]) ** 2).mean()
                loss = pg + cfg.value_coef * vl - cfg.entropy * ent_t.mean()
                kl = torch.stack(kls).mean() if kls else None
                if kl is not None:
                    loss = loss + cfg.kl_weight * kl
                last = epoch == cfg.ppo_epochs - 1 and g == len(groups) - 1
                self._learn(loss, average=last, count=False)
                with torch.no_grad():
                    sums["loss"] += loss.item()
                    sums["kl"] += kl.item() if kl is not None else 0.0
                    sums["entropy"] += ent_t.mean().item()
                    sums["value"] += vl.item()
                    sums["clipped"] += ((ratio - 1.0).abs() > cfg.ppo_clip).double().mean().item()
                    # The rollout policy's KL from the updated one, estimated from the samples.
                    sums["drift"] += ((ratio - 1.0) - log_ratio).mean().item()
                    if epoch == 0 and g == 0:
                        # Before any step the replay is the rollout: the ratio is 1.
                        first = log_ratio.abs().max().item()
                n_steps += 1
        mean = {k: v / n_steps for k, v in sums.items()}
        self.ppo_stats = {**mean, "first_log_ratio": first}
        self._loss_sum += mean["loss"]
        self._loss_n += 1
        self._kl_sum += mean["kl"]
        anchor = f" kl {mean['kl']:.4f}" if ref_logits is not None else ""
        return (f"entropy {mean['entropy']:.2f} value loss {mean['value']:.3f}{anchor} "
                f"clipped {mean['clipped']:.3f} drift {mean['drift']:.4f}")

    def _learn(self, loss: torch.Tensor, average: bool = True, count: bool = True) -> None:
        """Back-propagate ``loss`` and take one optimiser step (and, with ``average``, one of
        the running average); with ``count``, add the loss to the progress line's mean."""
        self.opt.zero_grad()
        loss.backward()
        if self.counters["frames"] < self.cfg.critic_warmup:
            # A critic fresh from DAgger is noise; its advantages would undo the policy
            # before they mean anything. Only the critic head learns until it has seen
            # --critic-warmup frames (Adam leaves parameters without a gradient alone).
            critic = {id(p) for p in self.model.critic.parameters()}
            for p in self.model.parameters():
                if id(p) not in critic:
                    p.grad = None
        torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.grad is not None], self.cfg.grad_clip)
        if self.frame_critic is not None:
            # Clipped on its own: a fresh critic's large gradients would otherwise shrink the
            # policy's step.
            torch.nn.utils.clip_grad_norm_(self.frame_critic.parameters(), self.cfg.grad_clip)
        self._step(average)
        if count:
            self._loss_sum += loss.item()
            self._loss_n += 1

    def run(self) -> None:
        """Run the configured stage to its frame budget."""
        how = f"resumed at {self.counters['frames']:,} frames" if self.resumed else "new"
        print(f"mstpn train: stage {self.cfg.stage}, run {self.dir}, {how}"
              f", budget {self.cfg.frames:,} frames, device {self.device.describe()}", flush=True)
        def stop(signum, frame):  # SIGTERM (kill) saves a checkpoint, as Ctrl-C does
            for sig in handlers:
                signal.signal(sig, signal.SIG_IGN)
            raise KeyboardInterrupt

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            signal.signal(signal.SIGTERM, stop)
        try:
            if self.cfg.stage == DAGGER:  # TrainConfig admits only the two
                self.run_dagger()
            else:
                self.run_a2c()
        except KeyboardInterrupt:
            # `timeout` and `pkill -f` can each send a SIGTERM, a user a second Ctrl-C: none
            # may cut the save short.
            for sig in handlers:
                signal.signal(sig, signal.SIG_IGN)
            print("interrupted: saving the checkpoint", file=sys.stderr, flush=True)
            self.checkpoint()
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.log.close()


def resume_config(out: str | Path, given: Mapping[str, Any] | None = None
                  ) -> tuple[TrainConfig, dict[str, list]]:
    """The settings of the run in ``out``, as a resume called with ``given`` runs it.

    The run keeps its own settings. ``given`` holds those the caller set: ``frames`` may extend
    the budget, ``workers``, ``torch_threads`` and ``torch_device`` say how to run (the defaults
    where not given), ``progress_every`` and ``checkpoint_every`` how often it reports and saves
    (the run's own where not given), and those in :data:`.settings.RESUME_CHANGEABLE` may change
    (``envs`` only for an A2C run).

    Returns
    -------
    (TrainConfig, dict)
        The settings, and each changed one as ``[saved, new]``.

    Raises
    ------
    FileNotFoundError
        ``out`` holds no checkpoint.
    ValueError
        ``given`` differs from the run in a setting that may not change on a resume, or makes
        the settings inconsistent.
    """
    given = dict(given or {})
    latest = Path(out) / "latest.pt"
    if not latest.exists():
        raise FileNotFoundError(f"--resume: no checkpoint {latest}")
    # A setting newer than the run's checkpoint takes its default, which the run used.
    saved = {name: f.default for name, f in TrainConfig.__dataclass_fields__.items()
             if f.default is not dataclasses.MISSING}
    saved.update(load_checkpoint(latest)["config"])
    changes: dict[str, list] = {}
    fixed = []
    for name, new in given.items():
        if name in _CALL_SETTINGS + _REPORT_SETTINGS or new == saved.get(name, new):
            continue
        if name == "envs" and saved["stage"] == DAGGER:
            fixed.append(f"envs (the run's {saved[name]!r}, given {new!r}; a dagger run keeps "
                         "its envs)")
        elif name in RESUME_CHANGEABLE:
            changes[name] = [saved[name], new]
        else:
            fixed.append(f"{name} (the run's {saved[name]!r}, given {new!r})")
    if fixed:
        raise ValueError(
            f"--resume: {out} keeps its own {', '.join(fixed)}; a resume may change only "
            f"{', '.join(RESUME_CHANGEABLE)} (start a new run with --init for the rest)")
    call = TrainConfig.__dataclass_fields__
    merged = {**saved, "out": str(out),
              "frames": max(given.get("frames", 0), saved["frames"]),
              "workers": given.get("workers", call["workers"].default),
              "torch_threads": given.get("torch_threads", call["torch_threads"].default),
              "torch_device": given.get("torch_device", call["torch_device"].default),
              **{name: given[name] for name in _REPORT_SETTINGS if name in given}}
    merged.update({name: new for name, (_, new) in changes.items()})
    return TrainConfig(**merged), changes


def train(cfg: TrainConfig, resume: bool = False, changes: dict[str, list] | None = None
          ) -> Path:
    """Run one stage; return the run directory.

    With ``resume``, the run in ``cfg.out`` goes on. ``cfg`` and ``changes`` are then what
    :func:`resume_config` returned; without ``changes``, the run keeps its own settings and
    takes only ``cfg``'s ``frames``, ``workers``, ``torch_threads`` and ``torch_device``. A
    changed setting is
    logged as a ``config`` record.
    """
    if resume and changes is None:
        call = {name: getattr(cfg, name) for name in _CALL_SETTINGS if name != "out"}
        cfg, changes = resume_config(cfg.out, call)
    trainer = Trainer(cfg, resume=resume)
    if resume and changes:
        trainer.log.write({"kind": "config", "frames": trainer.counters["frames"],
                           "changed": changes})
        said = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())
        print(f"mstpn train: resumed with {said}", flush=True)
    trainer.run()
    return Path(cfg.out)
