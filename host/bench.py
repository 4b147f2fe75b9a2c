"""Benchmarks that print figures: ``mstpn bench model`` (later: engine, link, play).

Each benchmark returns a list of plain records, so the CLI can print a table or JSON. Rates are
medians over several timed runs, since these machines are shared and noisy.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["bench_model", "format_table", "median_rate"]


def median_rate(run_once, units_per_run: int, seconds: float, repeats: int = 5) -> float:
    """Median units/s over ``repeats`` runs of at least ``seconds / repeats`` seconds each."""
    run_once()  # warm caches (noise tables, BLAS threads)
    rates = []
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while True:
            run_once()
            done += units_per_run
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / repeats:
                break
        rates.append(done / elapsed)
    return statistics.median(rates)


def bench_model(presets: list[str], seconds: float = 1.0, batches=(1, 16)) -> list[dict]:
    """The golden model's steps/s per preset at each batch size, on random frames.

    A step of batch B is B decisions; ``steps_per_s`` counts decisions (episode-steps), so batch
    16 at 100 batched steps/s reports 1,600.
    """
    from ..model.golden import GoldenModel
    from ..model.image import ParamImage
    from ..spec.presets import get_preset

    records = []
    for name in presets:
        preset = get_preset(name)
        image = ParamImage.random(preset, seed=1)
        for batch in batches:
            model = GoldenModel.from_image(image, batch=batch)
            rng = np.random.default_rng(0)
            frames = rng.random((64, batch, preset.frame.rows, preset.frame.cols)) < 0.01
            counter = iter(range(10**12))

            def run_once(model=model, frames=frames, counter=counter):
                model.step(frames[next(counter) % len(frames)])

            rate = median_rate(run_once, batch, seconds)
            records.append({
                "preset": name,
                "batch": batch,
                "synapses": preset.synapses,
                "steps_per_s": round(rate, 1),
                "synaptic_ops_per_s": round(rate * preset.synapses),
            })
    return records


def format_table(records: list[dict]) -> str:
    """Records as an aligned text table (the keys of the first record are the columns)."""
    if not records:
        return "(no records)"
    keys = list(records[0])
    rows = [[f"{r[k]:,}" if isinstance(r[k], int) else str(r[k]) for k in keys] for r in records]
    widths = [max(len(k), *(len(row[i]) for row in rows)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
