"""The energy ledger: the paper's own case, linear scaling, the golden model's counters, bad input,
and ``mstpn energy``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mstpn.host import energy as E
from mstpn.host.cli import main
from mstpn.model.golden import GoldenModel
from mstpn.model.image import ParamImage
from mstpn.spec.counters import COUNTER_NAMES
from mstpn.spec.presets import get_preset

ICE = get_preset("icebreaker")
ULX = get_preset("ulx3s-85f")


def counters_for(preset, steps, pulses=0):
    return {"steps": steps, "macs": steps * preset.synapses,
            "f_writes": steps * preset.plastic.synapses,
            "potentiation": pulses // 2, "depression": pulses - pulses // 2}


def test_paper_figures_are_the_papers():
    assert E.PAPER["synapses"].value == 169_984
    assert (E.PAPER["game_mj"].value, E.PAPER["bias_mj"].value, E.PAPER["update_mj"].value) \
        == (36.0, 35.6, 0.4)
    assert E.PAPER["bias_w"].value == 4.3e-9 and E.PAPER["bias_v"].value == 0.6
    assert (E.PAPER["gpu_optimum_mj"].value, E.PAPER["gpu_as_written_mj"].value) \
        == (3463.9, 34780.5)
    assert all(f.kind == "paper" for f in E.PAPER.values())


def test_derived_game_duration_and_pulse_energy():
    game = E.paper_game()
    # worked by hand: 35.6 mJ / (169,984 x 4.3 nW) = 48.705 s; x 15 decisions/s = 730.57
    assert game["duration_s"] == pytest.approx(0.0356 / (169_984 * 4.3e-9), rel=1e-12)
    assert game["duration_s"] == pytest.approx(48.705, abs=1e-3)
    assert game["steps"] == pytest.approx(730.575, abs=1e-3)
    assert game["pulse_j"] == pytest.approx(3.2210e-12, rel=1e-4)
    # another rate: the same duration, a different count of decisions and pulse energy
    fast = E.paper_game(60)
    assert fast["duration_s"] == game["duration_s"] and fast["steps"] == 4 * game["steps"]
    assert fast["pulse_j"] == pytest.approx(game["pulse_j"] / 4)


def test_the_papers_own_case_reproduces_its_totals():
    game = E.paper_game()
    steps, synapses = game["steps"], 169_984
    mem = E.memristive_model(synapses, steps, round(synapses * steps))
    lines = {line.label: line.value for line in mem.lines}
    assert lines["decay bias"] == pytest.approx(35.6, rel=1e-9)
    assert lines["update pulses"] == pytest.approx(0.4, rel=1e-8)
    assert mem.totals_mj["memristive"] == pytest.approx(36.0, rel=1e-8)
    gpu = E.gpu_model(synapses, steps)
    assert gpu.totals_mj["gpu_optimum"] == pytest.approx(3463.9, rel=1e-12)
    assert gpu.totals_mj["gpu_as_written"] == pytest.approx(34780.5, rel=1e-12)


@pytest.mark.parametrize("preset", [ICE, ULX], ids=lambda p: p.name)
def test_scaling_is_linear_where_it_should_be(preset):
    one = E.ledger(counters_for(preset, 1000, 5000), 1000, preset)
    two = E.ledger(counters_for(preset, 2000, 10000), 2000, preset)
    t1, t2 = one.totals_mj(), two.totals_mj()
    for key in ("memristive", "gpu_optimum", "gpu_as_written", "fpga"):
        assert t2[key] == pytest.approx(2 * t1[key], rel=1e-12), key
    # pulses price only the update line: 1,000 more pulses add 1,000 pulse energies
    more = E.ledger(counters_for(preset, 1000, 6000), 1000, preset).totals_mj()
    assert more["memristive"] - t1["memristive"] == pytest.approx(
        1000 * E.paper_game()["pulse_j"] * 1e3, rel=1e-9)
    assert more["gpu_optimum"] == t1["gpu_optimum"] and more["fpga"] == t1["fpga"]
    # the GPU and the bias scale with the plastic synapses: 8,192 of the paper's 169,984
    bias = next(x.value for x in one.models[0].lines if x.label == "decay bias")
    assert bias == pytest.approx(8192 * 4.3e-9 * (1000 / 15) * 1e3)
    assert t1["gpu_optimum"] == pytest.approx(
        3463.9 * 8192 * 1000 / (169_984 * E.paper_game()["steps"]))


def test_fpga_model_uses_measured_cycles_and_the_clock():
    ledger = E.ledger(counters_for(ICE, 150), 150, ICE)
    fpga = {x.label: x for x in ledger.models[2].lines}
    assert fpga["cycles per step"].value == 33_830 and fpga["cycles per step"].kind == "measured"
    assert fpga["clock"].value == 12.0
    static, active = E.FPGA_POWER[ICE.board.device]
    busy = 150 * 33_830 / 12e6
    assert fpga["engine busy"].value == pytest.approx(busy)
    assert ledger.totals_mj()["fpga"] == pytest.approx(
        (active.value * busy + static.value * (10.0 - busy)) * 1e3)
    # given cycles and clock; an engine slower than the game never idles
    slow = E.ledger(counters_for(ICE, 150), 150, ICE, cycles=2_000_000, clock_hz=1e6)
    fpga = {x.label: x.value for x in slow.models[2].lines}
    assert fpga["idle between decisions"] == 0
    dynamic = (active.value - static.value) / 12
    assert fpga["computing"] == pytest.approx((static.value + dynamic) * 300 * 1e3)
    assert E.ENGINE_CYCLES["ulx3s-85f"].value == 3_757
    # a PLL at twice the clock: the same dynamic energy per cycle, half the static time
    fast = E.ledger(counters_for(ICE, 150), 150, ICE, clock_hz=24e6)
    line = {x.label: x.value for x in fast.models[2].lines}
    assert line["active power"] == pytest.approx((2 * active.value - static.value) * 1e3)
    assert line["computing"] == pytest.approx(
        (static.value * busy / 2 + (active.value - static.value) * busy) * 1e3)


def test_golden_model_counters_go_straight_in():
    image = ParamImage.random("icebreaker", 5)
    model = GoldenModel.from_image(image)
    frames = np.random.default_rng(1).integers(0, 256, (6, 400), dtype=np.uint8)
    for f in frames:
        model.step(f[None] & frames[0][None])
    counters = {k: int(v[0]) for k, v in model.counters.as_dict().items()}
    book = E.ledger(counters, 6, ICE)
    assert book.counters == counters and book.counters["potentiation"] > 0
    json.dumps(book.to_dict())                         # JSON-able
    pulses = next(x.value for x in book.models[0].lines if x.label == "pulses")
    assert pulses == counters["potentiation"] + counters["depression"]


def test_every_number_is_labelled():
    book = E.ledger(E.typical_counters(500, ULX), 500, ULX, counters_kind="estimate")
    record = book.to_dict()
    assert record["counters_kind"] == "estimate"
    for model in record["models"]:
        assert model["source"] and model["assumptions"]
        for line in model["lines"]:
            assert line["kind"] in E.KINDS and math.isfinite(line["value"])
    table = book.table()
    for word in ("[measured]", "[paper]", "[estimate]", "[design]", "source:", "assumes:",
                 "Nature Communications", "ECP5", "A100"):
        assert word in table, word


def test_typical_counters_use_the_measured_pulse_share():
    c = E.typical_counters(1000, ICE)
    assert c["f_writes"] == 8_192_000 and c["macs"] == 1000 * 212_992
    assert (c["potentiation"] + c["depression"]) / c["f_writes"] == pytest.approx(0.8278, abs=1e-4)
    assert set(c) == set(COUNTER_NAMES)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("depression"), "counters lack depression"),
    (lambda c: c.update(potentiation=-1), "potentiation is negative"),
    (lambda c: c.update(macs=1.5), "macs must be an integer"),
    (lambda c: c.update(steps=11), "count 11 steps but the run had 10"),
    (lambda c: c.update(macs=10 * ULX.synapses + 1), "another preset"),
    (lambda c: c.update(potentiation=10 ** 9), "exceed f_writes"),
])
def test_bad_counters_are_named(change, message):
    c = counters_for(ICE, 10, 4)
    change(c)
    with pytest.raises(ValueError, match=message):
        E.ledger(c, 10, ICE)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        E.ledger(counters_for(ICE, 0), 0, ICE)
    with pytest.raises(ValueError, match="cycles per step must be positive"):
        E.ledger(counters_for(ICE, 10), 10, ICE, cycles=0)
    with pytest.raises(ValueError, match="decisions per second"):
        E.ledger(counters_for(ICE, 10), 10, ICE, decisions_per_s=-1)


def test_cli_from_a_play_json(tmp_path, capsys):
    run = tmp_path / "run.json"
    eps = [{"score": -21, "steps": 100, "counters": counters_for(ICE, 100, 400)},
           {"score": -20, "steps": 50, "counters": counters_for(ICE, 50, 100)}]
    run.write_text(json.dumps({"preset": "icebreaker", "episodes": eps}))
    assert main(["energy", "--from", str(run), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == 150 and record["counters"]["potentiation"] == 250
    assert len(record["episodes"]) == 2
    whole = E.ledger(counters_for(ICE, 150, 500), 150, ICE).totals_mj()
    assert record["totals_mj"] == pytest.approx(whole)
    # a top-level counters dict wins over the episodes
    run.write_text(json.dumps({"preset": "ulx3s-85f", "steps": 20,
                               "counters": counters_for(ULX, 20, 7)}))
    assert main(["energy", "--from", str(run)]) == 0
    out = capsys.readouterr().out
    assert "preset ulx3s-85f, 20 decisions (measured)" in out and "Totals:" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["energy"]) == 2
    assert "give either --from FILE" in capsys.readouterr().err
    assert main(["energy", "--from", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"score": 3}))
    assert main(["energy", "--from", str(bad)]) == 2
    assert "holds no counters" in capsys.readouterr().err
    bad.write_text(json.dumps({"preset": "icebreaker", "steps": 5, "counters": {"steps": 5}}))
    assert main(["energy", "--from", str(bad), "--preset", "ulx3s-85f"]) == 2
    assert "is a run of preset icebreaker" in capsys.readouterr().err
    assert main(["energy", "--steps", "900", "--preset", "icebreaker"]) == 0
    assert "(estimate)" in capsys.readouterr().out


def test_cli_reads_what_play_writes(tmp_path, capsys):
    # the field names agreed with 'mstpn play --json': a real play run, on the golden model
    run = tmp_path / "play.json"
    assert main(["play", "--backend", "model", "--episodes", "2", "--max-steps", "15",
                 "--quiet", "--json", str(run)]) == 0
    capsys.readouterr()
    played = json.loads(run.read_text())
    assert main(["energy", "--from", str(run), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == played["steps"] == 30 and record["counters"] == played["counters"]
    assert record["totals_mj"] == pytest.approx(played["energy"]["totals_mj"])
    assert [e["steps"] for e in record["episodes"]] == [15, 15]
