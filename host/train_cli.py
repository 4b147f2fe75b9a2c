"""The ``train``, ``export`` and ``eval`` subcommands of ``mstpn`` (registered by
:mod:`mstpn.host.cli`).

``train`` and ``export`` need torch (the ``train`` extra: ``uv run --extra train mstpn ...``);
``eval`` runs on the golden model and needs only the core install.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..spec.env import FREEZE_FRAME
from .train.settings import CRITICS, KL_DIRECTIONS, RESUME_CHANGEABLE, STAGES, option_name
from .train.teacher import TEACHERS

__all__ = ["add_train_commands"]


def _said(settings: tuple[str, ...]) -> str:
    """``a, b and c`` of the settings' options."""
    options = [option_name(name) for name in settings]
    return ", ".join(options[:-1]) + " and " + options[-1] if len(options) > 1 else options[0]


def _user_error(message: str) -> Exception:
    from .cli import UserError

    return UserError(message)


def _device_from_args(args: argparse.Namespace, base: dict | None = None) -> dict:
    """Device options from the command line, over ``base``."""
    opts = dict(base or {})
    if getattr(args, "window", None):
        opts["g_min"], opts["g_max"] = args.window
    if getattr(args, "level_shift", None) is not None:
        opts["level_shift"] = args.level_shift
    if getattr(args, "noise_bits", None) is not None:
        opts["noise_bits"] = args.noise_bits
    if getattr(args, "soft_bound", False):
        opts["soft_bound"] = True
    if getattr(args, "asym", None):
        opts["asym_up"], opts["asym_down"] = args.asym
    return opts


def image_with_device_args(image, args: argparse.Namespace):
    """``image`` with the device options given on the command line (``image`` if none)."""
    from ..spec.device import DeviceModel

    device = _device_from_args(args, image.device.to_dict())
    if device == image.device.to_dict():
        return image
    try:
        return image.replace(device=DeviceModel.from_dict(device))
    except ValueError as exc:
        raise _user_error(str(exc)) from None


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from .train.trainer import TrainConfig, torch_device, train
    except ImportError as exc:
        raise _user_error(
            f"training needs torch: run it as 'uv run --extra train mstpn train ...' ({exc})"
        ) from None
    from ..spec.device import DeviceModel

    device = _device_from_args(args)
    try:
        DeviceModel.from_dict(device)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    fields = {k: v for k, v in fields.items() if v is not None}
    fields["out"] = str(args.out)
    if args.init:
        fields["init"] = str(args.init)
    if args.resume:
        from .train.trainer import resume_config

        if device:
            fields["device"] = device
        try:
            cfg, changes = resume_config(args.out, fields)
        except (FileNotFoundError, ValueError) as exc:
            raise _user_error(str(exc)) from None
    else:
        changes = None
        fields["device"] = device
        try:
            cfg = TrainConfig(**fields)
        except ValueError as exc:
            raise _user_error(str(exc)) from None
        if (Path(args.out) / "latest.pt").exists():
            raise _user_error(f"{args.out} already holds a run: continue it with --resume, or "
                              "choose another --out")
    try:
        torch_device(cfg.torch_device)
    except RuntimeError as exc:
        raise _user_error(str(exc)) from None
    try:
        train(cfg, resume=args.resume, changes=changes)
    except FileNotFoundError as exc:  # an init checkpoint that is gone
        raise _user_error(str(exc)) from None
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    if not Path(args.checkpoint).exists():
        raise _user_error(f"{args.checkpoint}: no such checkpoint")
    try:
        image = export_checkpoint(args.checkpoint, args.output, spread_sigma=args.spread,
                                  spread_seed=args.spread_seed, noise_seed=args.noise_seed,
                                  ema=args.ema)
    except ImportError as exc:
        raise _user_error(str(exc)) from None
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    print(f"{args.output}: {image.preset.name} image, {image.preset.synapses:,d} synapses, "
          f"device {image.device.describe()}, spread {image.spread or 'none'}, "
          f"sha256 {image.checksum[:16]}...")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..model.image import ImageError, ParamImage
    from .evaluate import default_agent, evaluate

    path = Path(args.params) if args.params else default_agent()
    try:
        image = ParamImage.load(path)
    except ImageError as exc:
        if not args.params:
            raise _user_error(
                f"no shipped agent at {path}: train and export one, or pass --params IMAGE"
            ) from None
        raise _user_error(str(exc)) from None
    image = image_with_device_args(image, args)
    if args.spread:
        from ..model.spread import apply_spread

        image = apply_spread(image, args.spread, args.spread_seed)
    progress = None if args.json or args.quiet else (lambda s: print(s, file=sys.stderr))
    record = evaluate(image, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
                      model=args.model, shadow=args.agreement, progress=progress)
    record["params"] = str(path)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"{path} on the {'golden (fixed-point)' if args.model == 'fixed' else 'float'} model, "
          f"{image.device.describe()}")
    for ep in record["episodes"]:
        cut = " (truncated)" if ep["truncated"] else ""
        froze = (f", game froze at {ep['game_score']:+.0f}" if ep["frozen"] else "")
        print(f"  seed {ep['seed']:6d}: score {ep['score']:+5.0f} in {ep['steps']:6d} steps"
              f"{cut}{froze}")
    print(f"mean score {record['mean_score']:+.2f} +- {record['std_score']:.2f} over "
          f"{args.episodes} episodes ({record['wall_s']:.0f} s)")
    if record["frozen_episodes"]:
        print(f"{record['frozen_episodes']} of {args.episodes} games froze at emulated frame "
              f"{FREEZE_FRAME:,}, where ALE pays a spurious reward; the points played before "
              f"it: mean {record['mean_game_score']:+.2f} (docs/model-card.md)")
    if "agreement" in record:
        print(f"action agreement with the {args.agreement} model: {record['agreement']:.4f}")
    return 0


def _device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device model (mstpn.spec.device)")
    g.add_argument("--window", type=int, nargs=2, metavar=("G_MIN", "G_MAX"),
                   help="conductance window in G codes")
    g.add_argument("--level-shift", type=int, help="F moves in steps of 2**N codes")
    g.add_argument("--noise-bits", type=int, help="cycle-to-cycle noise: stochastic rounding bits")
    g.add_argument("--soft-bound", action="store_true", help="state-dependent Hebbian steps")
    g.add_argument("--asym", type=int, nargs=2, metavar=("UP", "DOWN"),
                   help="up/down asymmetry factors (16 is 1.0)")


def add_train_commands(sub) -> None:
    """Register ``train``, ``export`` and ``eval`` on the CLI's subparsers."""
    p = sub.add_parser("train", help="train an agent (needs --extra train)",
                       description="Train the m-STPN Pong agent: one stage per run "
                       "(docs/training.md).")
    p.add_argument("--out", type=Path, required=True, help="the run's folder")
    p.add_argument("--stage", choices=STAGES,
                   help=f"{' or '.join(STAGES)} (default {STAGES[0]})")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its own settings: --frames may extend "
                        f"its budget and {_said(RESUME_CHANGEABLE)} may change (logged; "
                        "--envs only on an a2c run); other settings that differ are refused")
    p.add_argument("--init", type=Path, help="start from this checkpoint's parameters")
    p.add_argument("--frames", type=int, help="emulated-frame budget (default 2,000,000)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--preset", help="preset (default icebreaker; both share one network)")
    p.add_argument("--teacher", choices=TEACHERS,
                   help="DAgger teacher: ram, search (the default) or aim (docs/training.md)")
    p.add_argument("--envs", type=int, help="envs side by side (default 8)")
    p.add_argument("--env-threads", type=int, help="ALE threads for a2c (default 1)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--encoder-lr-scale", type=float, metavar="X",
                   help="the 2-bit encoder weights learn X times faster (default 20; 0 freezes)")
    p.add_argument("--batch", type=int, help="sequences per update (default 16)")
    p.add_argument("--seq", type=int, help="BPTT steps (default 32)")
    p.add_argument("--burn-in", type=int, help="DAgger: steps that rebuild the state (32)")
    p.add_argument("--label-steps-per-update", type=int,
                   help="DAgger: new labels per update, rounded up to a whole step of every "
                        "env (default 32)")
    p.add_argument("--away-weight", type=float, metavar="W",
                   help="DAgger: loss weight of the steps where the ball is not coming toward us, "
                        "in [0, 1] (default 1: every step alike)")
    p.add_argument("--aux-weight", type=float, metavar="A",
                   help="DAgger: weight of an auxiliary loss that reads the ball's offset, speed "
                        "and crossing from h (training only; default 0: none; docs/training.md)")
    p.add_argument("--init-buffer", action="store_true", default=None,
                   help="DAgger with --init: start with that run's replay buffer too")
    p.add_argument("--init-ema", action="store_true", default=None,
                   help="with --init: start from its running average of the parameters (what "
                        "'mstpn export --ema' exports) instead of its latest ones")
    p.add_argument("--kl-weight", type=float, metavar="K",
                   help="A2C with --init: weight of KL(init's policy || the student's) per step, "
                        "which keeps the student near the policy it started from (default 0: "
                        "none; docs/training.md)")
    p.add_argument("--kl-direction", choices=KL_DIRECTIONS,
                   help="A2C: 'forward' is the KL above; 'reverse' is KL(the student's policy || "
                        "init's), which lets the student grow surer than init where init "
                        "hesitates (default forward)")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="A2C: the policy plays and learns softmax(logits / T); greedy play, what "
                        "the hardware does, is the same at any T, and T < 1 brings the training "
                        "play closer to it (default 1)")
    p.add_argument("--ppo-epochs", type=int, metavar="E",
                   help="A2C: PPO's clipped update, E passes over each rollout (default 0: "
                        "plain A2C, one step per rollout; docs/training.md)")
    p.add_argument("--ppo-clip", type=float, metavar="C",
                   help="PPO: clip the policy ratio to 1 +- C (default 0.1)")
    p.add_argument("--ppo-minibatches", type=int, metavar="M",
                   help="PPO: each pass splits the envs into M groups, one step each (default 4)")
    p.add_argument("--min-buffer", type=int, help="DAgger: labels before the first update")
    p.add_argument("--beta", type=float, help="DAgger: initial teacher-driven share (0.5)")
    p.add_argument("--beta-frames", type=int, help="DAgger: frames over which beta decays")
    p.add_argument("--entropy", type=float, help="A2C entropy bonus (default 0.01)")
    p.add_argument("--critic-warmup", type=int, metavar="FRAMES",
                   help="A2C: frames during which only the critic learns (default 0)")
    p.add_argument("--critic", choices=CRITICS,
                   help="A2C: what the critic reads: 'h', a linear map of the plastic layer's "
                        "output (the default), or 'frames', a small network over the frame, the "
                        "frame before it and h (training only either way; docs/training.md)")
    p.add_argument("--critic-lr-scale", type=float, metavar="S",
                   help="A2C with --critic frames: that critic learns S times faster than "
                        "--lr (default 10)")
    p.add_argument("--checkpoint-every", type=float, help="seconds between checkpoints (180)")
    p.add_argument("--progress-every", type=float, help="seconds between progress lines (15)")
    p.add_argument("--max-episode-steps", type=int, help="cut training episodes (smoke tests)")
    p.add_argument("--torch-threads", type=int, help="torch threads (default 1)")
    p.add_argument("--torch-device", metavar="DEV",
                   help="A2C: where the network runs, cpu (the default), cuda or cuda:N; the "
                        "envs stay on the CPU. How to run, not what: give it again with --resume")
    p.add_argument("--workers", type=int, metavar="N",
                   help="DAgger: N worker processes step the envs and the teacher while the "
                        "trainer updates (default 0: all in one process; 1 uses a second core). "
                        "The run is the same either way; give it again with --resume")
    _device_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="export a checkpoint to a parameter image")
    p.add_argument("checkpoint", type=Path, help="a .pt checkpoint of mstpn train")
    p.add_argument("-o", "--output", type=Path, required=True, help="the image to write")
    p.add_argument("--spread", type=float, help="device-to-device spread sigma (relative)")
    p.add_argument("--spread-seed", type=int, default=0, help="seed of the spread (default 0)")
    p.add_argument("--noise-seed", type=int, default=1, help="LFSR seed stored in the image")
    p.add_argument("--ema", action="store_true",
                   help="export the running average of the parameters that training keeps "
                        "(docs/training.md) instead of the latest ones")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("eval", help="evaluate an agent on the golden model")
    p.add_argument("--params", type=Path, help="image (default: the shipped agent)")
    p.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    p.add_argument("--seed", type=int, default=0, help="base seed: episode k uses seed + k")
    p.add_argument("--max-steps", type=int, help="cut each episode after this many steps")
    p.add_argument("--model", choices=["fixed", "float"], default="fixed",
                   help="fixed: the golden model (default); float: the image's float twin")
    p.add_argument("--agreement", choices=["fixed", "float"],
                   help="also run this model on the same frames and report action agreement")
    p.add_argument("--spread", type=float, help="apply a device-to-device spread first")
    p.add_argument("--spread-seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON record")
    p.add_argument("--quiet", action="store_true")
    _device_args(p)
    p.set_defaults(func=_cmd_eval)
