"""The command line: help, info, bench model and vectors, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mstpn.host.cli import main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("play", "info", "bench", "vectors", "image", "train", "eval", "build"):
        assert name in out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "mstpn.host.cli", "info"],
                            capture_output=True, text=True, check=True)
    assert "icebreaker" in result.stdout and "Q-formats" in result.stdout


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {p["preset"] for p in info["presets"]} == {"icebreaker", "ulx3s-85f"}
    assert all(p["synapses"] == 212_992 for p in info["presets"])


def test_bench_model_json_fields(capsys):
    assert main(["bench", "model", "--preset", "ulx3s-85f", "--seconds", "0.2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in records] == [1, 16]
    for record in records:
        assert {"preset", "batch", "synapses", "steps_per_s"} <= set(record)
        assert record["steps_per_s"] > 0 and record["synapses"] == 212_992


def test_vectors_command_writes_a_manifest(tmp_path, capsys):
    assert main(["vectors", "--out", str(tmp_path), "--preset", "icebreaker", "--steps", "5",
                 "--set", "empty", "--set", "all_ones"]) == 0
    manifest = json.loads((tmp_path / "icebreaker" / "manifest.json").read_text())
    assert set(manifest["sets"]) == {"empty", "all_ones"}
    assert "2 sets" in capsys.readouterr().out


def test_image_command_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"not an image at all, clearly")
    assert main(["image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mstpn: error:") and "not an mstpn parameter image" in err
    assert "Traceback" not in err


def test_build_is_registered(capsys):
    # 'build' was a pending entry until the bitstream issue; tests/test_boards.py covers it
    with pytest.raises(SystemExit) as exc:
        main(["build", "--board", "no-such-board"])
    assert exc.value.code == 2
    assert "invalid choice: 'no-such-board'" in capsys.readouterr().err
