"""The training stages' names and the settings a resume may change.

Kept free of torch so that the CLI can build its choices and help text from them on the core
install; :mod:`.trainer` and :mod:`mstpn.host.export` read them from here too.
"""

from __future__ import annotations

__all__ = ["DAGGER", "A2C", "STAGES", "FORWARD_KL", "REVERSE_KL", "KL_DIRECTIONS",
           "H_CRITIC", "FRAME_CRITIC", "CRITICS", "RESUME_CHANGEABLE", "option_name"]

#: Imitation of a teacher (docs/training.md, stage 1).
DAGGER = "dagger"
#: Actor-critic fine-tuning without a teacher (docs/training.md, stage 2).
A2C = "a2c"
#: Every stage, the default first.
STAGES = (DAGGER, A2C)

#: Which way the A2C anchor's KL runs, the default first: ``forward`` is KL(reference ||
#: student), which charges the student for every action the reference would take and so keeps
#: its entropy near the reference's; ``reverse`` is KL(student || reference), which charges it
#: only for what it does itself, so it may grow surer than the reference where the reference
#: hesitates (docs/training.md).
FORWARD_KL, REVERSE_KL = "forward", "reverse"
KL_DIRECTIONS = (FORWARD_KL, REVERSE_KL)

#: What A2C's critic reads, the default first: ``h``, a linear map of the plastic layer's
#: output; ``frames``, a small network over the binary frame, the frame before it and h
#: (:class:`.critic.FrameCritic`). Either is float, training only, and never exported.
H_CRITIC, FRAME_CRITIC = "h", "frames"
CRITICS = (H_CRITIC, FRAME_CRITIC)

#: The settings a resumed run may change: how far each update moves the student, and (A2C)
#: how many envs play and on how many threads, not what the run is (its stage, model, seeds and
#: init stay those it started with). An A2C resume starts its envs afresh, so their number may
#: change, to move a run to a larger machine; a DAgger run keeps its envs (its unfinished
#: episodes are saved per env).
RESUME_CHANGEABLE = (
    "lr", "encoder_lr_scale", "kl_weight", "entropy", "ppo_epochs", "ppo_clip", "ppo_minibatches",
    "kl_direction", "temperature", "critic_lr_scale", "envs", "env_threads")


def option_name(setting: str) -> str:
    """The command-line option of a :class:`~.trainer.TrainConfig` field (``kl_weight`` ->
    ``--kl-weight``)."""
    return "--" + setting.replace("_", "-")
