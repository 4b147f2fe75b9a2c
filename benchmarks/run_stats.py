"""What a training run's log says: its training episodes, speed, anchor and critics.

Reads each run's ``log.jsonl`` (``mstpn train``) and prints, for the records after
``--since`` frames: the training episodes' mean score with its standard error and its means by
quarter (the episodes in order; a rise or a plateau shows there), the median frames a second
of the progress lines, the anchor's KL (10th, 50th and 90th percentiles), and the median value
loss, with the h critic's beside it where a run trained the frame critic (``--critic
frames``) and their ratio, the two measured on the same rollouts.

Usage::

    uv run python benchmarks/run_stats.py runs/pong-a2c-fcritic-e64a runs/pong-a2c-anchor-e64z \\
        --since 4000000 [--json]

The training episodes are played by the sampled (tempered) policy and, since the fourteenth
session, stop before the freeze; they rank runs of one setting, not the greedy image's game
score (``mstpn eval``). No torch is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from mstpn.host.train.runlog import read_log


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(records: list[dict], since: int = 0) -> dict:
    """Figures of one run's log records after ``since`` frames (see the module's text)."""
    if since < 0:
        raise ValueError(f"since must be >= 0 frames, not {since}")
    frames = max((r["frames"] for r in records if "frames" in r), default=0)
    scores = [r["score"] for r in records if r["kind"] == "episode" and r["frames"] > since]
    progress = [r for r in records if r["kind"] == "progress" and r["frames"] > since]
    out: dict = {"frames": frames, "since": since, "episodes": len(scores)}
    if scores:
        out["mean"] = statistics.fmean(scores)
        if len(scores) > 1:
            out["sd"] = statistics.stdev(scores)
            out["se"] = out["sd"] / math.sqrt(len(scores))
        k = len(scores) // 4
        if k:
            out["quarters"] = [statistics.fmean(scores[i * k:(i + 1) * k]) for i in range(4)]
    if progress:
        out["fps_median"] = statistics.median(r["fps"] for r in progress)
        kls = [r["kl"] for r in progress if r.get("kl") is not None]
        if kls:
            out["kl_p10_p50_p90"] = [_percentile(kls, q) for q in (0.1, 0.5, 0.9)]
        values = [r["value_loss"] for r in progress if r.get("value_loss") is not None]
        if values:
            out["value_loss_median"] = statistics.median(values)
        pairs = [(r["value_loss"], r["h_value_loss"]) for r in progress
                 if r.get("value_loss") is not None and r.get("h_value_loss") is not None]
        if pairs:
            out["h_value_loss_median"] = statistics.median(h for _, h in pairs)
            # Per progress line, then the median: the two losses are of the same rollouts.
            out["value_loss_ratio_median"] = statistics.median(
                v / h for v, h in pairs if h > 0)
    return out


def _line(name: str, s: dict) -> str:
    parts = [f"{name}: {s['frames'] / 1e6:.2f} M frames; since {s['since'] / 1e6:.2f} M: "
             f"{s['episodes']} episodes"]
    if "mean" in s:
        se = f" (se {s['se']:.2f})" if "se" in s else ""
        parts.append(f"mean {s['mean']:+.2f}{se}")
    if "quarters" in s:
        parts.append("by quarter " + ", ".join(f"{q:+.2f}" for q in s["quarters"]))
    if "fps_median" in s:
        parts.append(f"{s['fps_median']:,.0f} frames/s")
    if "kl_p10_p50_p90" in s:
        parts.append("kl " + "/".join(f"{k:.3f}" for k in s["kl_p10_p50_p90"]))
    if "value_loss_median" in s:
        parts.append(f"value loss {s['value_loss_median']:.4f}")
    if "h_value_loss_median" in s:
        parts.append(f"h critic's {s['h_value_loss_median']:.4f} "
                     f"(ratio {s['value_loss_ratio_median']:.3f})")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or their log.jsonl)")
    parser.add_argument("--since", type=int, default=0, metavar="FRAMES",
                        help="only records after this many frames (default 0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON record per run")
    args = parser.parse_args(argv)
    if args.since < 0:
        parser.error(f"--since must be >= 0 frames, not {args.since}")
    for run in args.runs:
        log = run / "log.jsonl" if run.is_dir() else run
        if not log.exists():
            print(f"run_stats: no training log {log}", file=sys.stderr)
            return 2
        stats = summarise(read_log(log), args.since)
        print(json.dumps({"run": str(run), **stats}) if args.json else _line(str(run), stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
