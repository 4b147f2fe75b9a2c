"""Offline check of the auxiliary loss (``--aux-weight``): does it teach h what the ball will do?

It fine-tunes a DAgger checkpoint on a saved replay buffer (``buffer-N.npz``), with the DAgger
stage's own update (:class:`mstpn.host.train.trainer.Trainer`; no envs run), and holds out the
buffer's last episodes. Every ``--every`` updates it prints, on the held-out episodes:

- the student's agreement with the teacher's labels, over all steps and while the ball comes
  toward us (:func:`mstpn.host.train.phase.approaching`);
- how well a linear probe (ridge regression, fitted on half of the held-out episodes, scored on
  the other half) reads from h each auxiliary target (:data:`.phase.AUX_TARGETS`): R^2.

Run it once with ``--aux-weight 0`` and once with a weight, from the same checkpoint and seed:
the two rows differ only in the auxiliary loss.

Usage (needs torch)::

    uv run --extra train python benchmarks/aux_check.py runs/pong-dagger-aim-d/latest.pt \\
        runs/pong-dagger-aim-d/buffer-30060.npz --aux-weight 0.5 --updates 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mstpn.host.train.phase import AUX_TARGETS, approaching, aux_targets
from mstpn.host.train.trainer import EpisodeBuffer, TrainConfig, Trainer, load_checkpoint
from mstpn.spec.qformat import ACT


def held_out_arrays(path: Path, episodes: int, steps: int, pixels: int):
    """The buffer file's episodes but the last ``episodes`` of at least ``steps`` steps, and
    those (their first ``steps`` steps) as bits (T, B, pixels) and labels (T, B)."""
    saved = EpisodeBuffer(2**62, np.random.default_rng(0))
    try:
        saved.add_bytes(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: {exc}") from None
    pool = list(saved.episodes)
    long = [i for i, (_, lab) in enumerate(pool) if len(lab) >= steps]
    if len(long) < episodes:
        raise SystemExit(f"{path}: only {len(long)} episodes of {steps} steps or more")
    test = long[-episodes:]
    train = [e for i, e in enumerate(pool) if i not in test]
    bits = np.stack([np.unpackbits(pool[i][0][:steps], axis=1, count=pixels) for i in test],
                    1).astype(np.float64)
    labs = np.stack([pool[i][1][:steps] for i in test], 1)
    return train, bits, labs


def evaluate(model, bits: np.ndarray, labels: np.ndarray, geometry) -> dict:
    """Agreement and the linear probes' R^2 on held-out episodes."""
    steps, batch, _ = bits.shape
    reset = np.zeros((steps, batch), dtype=bool)
    reset[0] = True
    known = np.ones((steps, batch), dtype=bool)
    app = approaching(bits, reset, geometry)
    targets = aux_targets(bits, reset, known, geometry)
    hs = np.zeros((steps, batch, model.preset.hidden))
    acts = np.zeros((steps, batch), dtype=np.int64)
    with torch.no_grad():
        codes = model.codes()
        state = model.initial_state(batch)
        for t in range(steps):
            x = model.encode(torch.as_tensor(bits[t]), codes)
            logits, _, state = model.step(None, state, codes, x=x)
            hs[t], acts[t] = (state[1] * ACT.scale).numpy(), logits.argmax(1).numpy()
    out = {"agree": float((acts == labels).mean()), "agree_approach": float(
        (acts == labels)[app].mean())}
    fit = np.arange(batch) < batch // 2
    for j, name in enumerate(AUX_TARGETS):
        y = targets[..., j]
        ok = ~np.isnan(y)
        a, b = ok & fit[None], ok & ~fit[None]
        xa = np.c_[hs[a], np.ones(a.sum())]
        w = np.linalg.solve(xa.T @ xa + 1e-2 * np.eye(xa.shape[1]), xa.T @ y[a])
        pred = np.c_[hs[b], np.ones(b.sum())] @ w
        out[name] = float(1.0 - ((pred - y[b]) ** 2).mean() / y[b].var())
    return out


def main() -> None:
    """Fine-tune, printing one line every ``--every`` updates."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("buffer", type=Path, help="a buffer-N.npz file written by mstpn train")
    ap.add_argument("--aux-weight", type=float, default=0.5)
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--held-out", type=int, default=6, help="episodes held out (default 6)")
    ap.add_argument("--steps", type=int, default=3000, help="held-out steps per episode")
    ap.add_argument("--lr", type=float, help="default: the checkpoint's")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    saved = load_checkpoint(args.checkpoint)["config"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(**{**saved, "out": tmp, "init": str(args.checkpoint),
                             "init_buffer": False, "aux_weight": args.aux_weight,
                             "seed": args.seed, "lr": args.lr or saved["lr"]})
        trainer = Trainer(cfg)
        geometry = trainer.preset.frame
        train, bits, labels = held_out_arrays(args.buffer, args.held_out, args.steps,
                                              geometry.pixels)
        buffer = EpisodeBuffer(10**9, trainer.rng)
        for packed, lab in train:
            buffer.add(packed, lab)
        start = time.process_time()
        for update in range(args.updates + 1):
            if update % args.every == 0:
                row = evaluate(trainer.model, bits, labels, geometry)
                probes = " ".join(f"{name} {row[name]:.3f}" for name in AUX_TARGETS)
                print(f"aux {args.aux_weight:g} updates {update} agreement {row['agree']:.4f} "
                      f"approach {row['agree_approach']:.4f} | R^2 {probes} | "
                      f"cpu {time.process_time() - start:.0f} s", flush=True)
            if update < args.updates:
                trainer.update_from(buffer)


if __name__ == "__main__":
    main()
