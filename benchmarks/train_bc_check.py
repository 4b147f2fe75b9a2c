"""Offline behaviour-cloning check: does the fixed-point arithmetic slow the student's learning?

It records RAM-teacher-labelled Pong episodes once (the teacher drives, with 20 % random actions
so that the states vary), then trains the student (:class:`mstpn.host.train.model.MSTPN`) on
them with the DAgger stage's update (16 windows of 16 burn-in + 32 BPTT steps, Adam) and reports
the action accuracy and cross-entropy on held-out episodes every 100 updates. ``--mode float``
runs the same network with every rounding, floor and table look-up replaced by its smooth
version (the straight-through functions return their smooth argument), so the two rows differ
only in the arithmetic.

Usage (needs torch)::

    uv run --extra train python benchmarks/train_bc_check.py --mode fixed --lr 1e-3 --updates 400
    uv run --extra train python benchmarks/train_bc_check.py --mode float --lr 1e-3 --updates 400
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import mstpn.host.train.model as student_model
from mstpn.host.train.teacher import RamTeacher
from mstpn.host.train.trainer import EpisodeBuffer
from mstpn.spec.env import make_env
from mstpn.spec.preprocess import binarize
from mstpn.spec.presets import ALE_ACTIONS, get_preset


def record(path: Path, episodes: int, steps: int, preset) -> None:
    """Teacher-labelled episodes (packed frames, labels) to ``path`` (npz)."""
    rng = np.random.default_rng(0)
    env, teacher = make_env(), RamTeacher()
    arrays = {}
    for e in range(episodes):
        obs, _ = env.reset(seed=900_000 + e)
        teacher.reset(0)
        bits, labels = [], []
        for _ in range(steps):
            label = teacher.act(env.unwrapped.ale.getRAM(), 0)
            bits.append(np.packbits(binarize(obs[None], preset.frame).reshape(-1)))
            labels.append(label)
            action = label if rng.random() > 0.2 else int(rng.integers(0, 3))
            obs, _, term, trunc, _ = env.step(ALE_ACTIONS[action])
            if term or trunc:
                break
        arrays[f"b{e}"], arrays[f"l{e}"] = np.array(bits), np.array(labels)
    np.savez(path, **arrays)


def main() -> None:
    """Run the check; print one line per 100 updates."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["fixed", "float"], default="fixed")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--data", type=Path, default=Path("/tmp/mstpn-bc.npz"))
    ap.add_argument("--train-episodes", type=int, default=16)
    ap.add_argument("--test-episodes", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = get_preset("icebreaker")
    pixels = preset.frame.pixels
    total = args.train_episodes + args.test_episodes
    if not args.data.exists():
        record(args.data, total, 1500, preset)
    if args.mode == "float":
        student_model._ste = lambda exact, smooth: smooth
    data = np.load(args.data)
    buffer = EpisodeBuffer(10**7, np.random.default_rng(0))
    for i in range(args.train_episodes):
        buffer.add(data[f"b{i}"], data[f"l{i}"])
    test = [(data[f"b{i}"], data[f"l{i}"]) for i in range(args.train_episodes, total)]
    length = min(len(lab) for _, lab in test)
    test_bits = torch.as_tensor(np.stack(
        [np.unpackbits(b[:length], axis=1, count=pixels) for b, _ in test], 1),
        dtype=torch.float64)
    test_labels = np.stack([lab[:length] for _, lab in test], 1)
    torch.manual_seed(0)
    model = student_model.MSTPN(preset, seed=0)
    opt = torch.optim.Adam(model.param_groups(args.lr))
    burn, seq, batch = 16, 32, 16

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            codes = model.codes()
            state = model.initial_state(len(test))
            xs = model.encode(test_bits.reshape(-1, pixels), codes).reshape(length, len(test), -1)
            hits, ce = 0, 0.0
            for t in range(length):
                logits, _, state = model.step(None, state, codes, x=xs[t])
                hits += int((logits.argmax(1).numpy() == test_labels[t]).sum())
                ce += torch.nn.functional.cross_entropy(
                    logits, torch.as_tensor(test_labels[t]), reduction="sum").item()
        return hits / test_labels.size, ce / test_labels.size

    start = time.process_time()
    for update in range(args.updates + 1):
        if update % 100 == 0:
            acc, ce = evaluate()
            print(f"{args.mode} lr {args.lr:g} updates {update} held-out accuracy {acc:.3f} "
                  f"ce {ce:.3f} cpu {time.process_time() - start:.0f} s", flush=True)
        if update == args.updates:
            break
        bits, labels, reset, valid, _ = buffer.sample(batch, burn, seq, pixels)
        state = model.initial_state(batch)
        with torch.no_grad():
            codes = model.codes()
            xs = model.encode(torch.as_tensor(bits[:burn].reshape(-1, pixels)), codes)
            for k in range(burn):
                state = model.reset_state(state, torch.as_tensor(reset[k]))
                _, _, state = model.step(None, state, codes, x=xs.reshape(burn, batch, -1)[k])
        state = tuple(s.detach() for s in state)
        codes = model.codes()
        xs = model.encode(torch.as_tensor(bits[burn:].reshape(-1, pixels)), codes)
        xs = xs.reshape(seq, batch, -1)
        losses = []
        for k in range(burn, burn + seq):
            state = model.reset_state(state, torch.as_tensor(reset[k]))
            logits, _, state = model.step(None, state, codes, x=xs[k - burn])
            ce = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor(labels[k]), reduction="none")
            losses.append(ce * torch.as_tensor(valid[k], dtype=ce.dtype))
        loss = torch.stack(losses).sum() / max(int(valid.sum()), 1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


if __name__ == "__main__":
    main()
