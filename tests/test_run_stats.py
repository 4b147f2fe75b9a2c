"""benchmarks/run_stats.py: the figures it reads from a training log."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "run_stats.py"
_spec = importlib.util.spec_from_file_location("run_stats", _PATH)
run_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_stats)


def _records() -> list[dict]:
    out = []
    scores = [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0]
    for i, score in enumerate(scores):
        out.append({"kind": "episode", "score": score, "frames": 100 * (i + 1)})
        out.append({"kind": "progress", "frames": 100 * (i + 1) + 50, "fps": 1000.0 + i,
                    "kl": 0.01 * i, "value_loss": 0.002 * (i + 1),
                    "h_value_loss": 0.004 * (i + 1)})
    out.append({"kind": "best", "mean20": 3.0, "frames": 950})
    return out


def test_summary_of_the_records_after_a_frame_count() -> None:
    s = run_stats.summarise(_records(), since=100)  # the first episode is left out
    assert s["frames"] == 950 and s["episodes"] == 8
    assert s["mean"] == pytest.approx(10.0)
    assert s["sd"] == pytest.approx(math.sqrt(sum((x - 10.0) ** 2
                                                  for x in range(3, 18, 2)) / 7))
    assert s["se"] == pytest.approx(s["sd"] / math.sqrt(8))
    assert s["quarters"] == pytest.approx([4.0, 8.0, 12.0, 16.0])
    assert s["fps_median"] == pytest.approx(1004.0)  # the 9 progress lines after frame 100
    assert s["kl_p10_p50_p90"] == pytest.approx([0.0, 0.04, 0.08])
    assert s["value_loss_median"] == pytest.approx(0.010)
    assert s["h_value_loss_median"] == pytest.approx(0.020)
    assert s["value_loss_ratio_median"] == pytest.approx(0.5)


def test_a_log_without_a_frame_critic_or_episodes() -> None:
    records = [{"kind": "progress", "frames": 10, "fps": 5.0, "kl": None, "value_loss": None}]
    s = run_stats.summarise(records)
    assert s == {"frames": 10, "since": 0, "episodes": 0, "fps_median": 5.0}
    with pytest.raises(ValueError, match="since must be >= 0"):
        run_stats.summarise(records, since=-1)


def test_cli_prints_a_record_per_run_and_names_a_missing_log(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    assert run_stats.main([str(run), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["run"] == str(run) and record["episodes"] == 9
    assert run_stats.main([str(run)]) == 0
    assert "9 episodes; mean +9.00" in capsys.readouterr().out
    assert run_stats.main([str(tmp_path / "none")]) == 2
    assert "no training log" in capsys.readouterr().err
