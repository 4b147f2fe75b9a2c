"""The simulated board's build helpers and its engine clock gate.

- the Verilator set-up in one place (``mstpn.sim.toolchain``): the PCH flag and optimisation
  flags in ``MAKEFLAGS``, blanks escaped;
- the list of the engine's variables that the harness's gate snapshots;
- the wrapper's ports (the engine's inputs as the harness sees them);
- (slow) the gate against the golden model: with the gate on, 200 STEPs through the simulated
  board on the real engine match the golden model in action, logits, F, h and every counter, and
  the gate did skip the engine for most of the cycles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mstpn.sim.board import ENGINE_SCOPE, engine_variables
from mstpn.sim.toolchain import OPT_QUICK, make_flags, verilator_env


def test_make_flags_carry_the_pch_fix_and_escape_blanks():
    flags = make_flags({"OPT_FAST": "-O2 -march=native"})
    assert flags.split(" ")[0] == "CFG_CXXFLAGS_PCH_I=-include"
    assert "OPT_FAST=-O2\\ -march=native" in flags
    env = verilator_env(OPT_QUICK, base={"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0].endswith("bin") and env["PATH"].endswith("/usr/bin")
    assert "OPT_FAST=-O1" in env["MAKEFLAGS"]
    assert (Path(env["VERILATOR_ROOT"]) / "include" / "verilated.mk").exists()


def test_engine_variables_are_found_in_a_verilated_header():
    header = f"""
    struct alignas(VL_CACHE_LINE_BYTES) Vmstpn_top___024root final : public VerilatedModule {{
        CData/*0:0*/ {ENGINE_SCOPE}___05Fframe___05Fready;
        CData/*7:0*/ {ENGINE_SCOPE}__DOT__fbyte;
        CData/*0:0*/ mstpn_top__DOT__top__DOT__dispatcher__DOT__state;
        VlWide<8>/*239:0*/ {ENGINE_SCOPE}__DOT__counters;
        VlUnpacked<IData/*31:0*/, 3200> {ENGINE_SCOPE}__DOT__etile0__DOT__mem;
        CData/*0:0*/ __VdlySet__{ENGINE_SCOPE}__DOT__ptile0__DOT__fmem__v1;
        void __Vconfigure(bool first);
    }};
    """
    names = engine_variables(header)
    assert names == sorted([
        f"{ENGINE_SCOPE}___05Fframe___05Fready", f"{ENGINE_SCOPE}__DOT__fbyte",
        f"{ENGINE_SCOPE}__DOT__counters", f"{ENGINE_SCOPE}__DOT__etile0__DOT__mem",
        f"__VdlySet__{ENGINE_SCOPE}__DOT__ptile0__DOT__fmem__v1"])


def test_sim_top_exposes_the_engine_inputs():
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import In

    from mstpn.hdl.dispatcher import engine_signature
    from mstpn.hdl.top import Top
    from mstpn.sim.board import _sim_top
    from mstpn.spec.presets import get_preset

    preset = get_preset("icebreaker")
    top = Top(preset, engine="standin")
    wrapper = _sim_top(top)
    # into the engine: valid and payload of its input streams, ready of its output streams
    width = 0
    for member in engine_signature(preset).members.values():
        if member.is_signature:
            payload = Shape.cast(member.signature.members["payload"].shape).width
            width += 1 + payload if member.flow == In else 1
    assert width == (1 + 8) + 1 + (1 + 17 + 8) + (1 + 17) + 1 + (1 + 2 + 32)
    assert len(wrapper.engine_in) == width
    assert {"clk", "clk_engine", "rx", "tx", "busy", "engine_busy"} <= set(
        wrapper.signature.members)
    # not elaborated here (the slow test builds it): keep amaranth from warning about that
    for unused in (wrapper, top, top.engine, top.engine._elaboratable_):
        unused._MustUse__silence = True


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_engine_gate_matches_the_golden_model():
    from mstpn.host.link import Link
    from mstpn.model.golden import GoldenModel
    from mstpn.model.image import ParamImage
    from mstpn.sim.board import SimBoard
    from mstpn.spec import protocol as P

    preset = "ulx3s-85f"
    image = ParamImage.random(preset, 31)
    rng = np.random.default_rng(32)
    golden = GoldenModel.from_image(image)
    board = SimBoard(preset, image.device, engine="engine", gate=True)
    with board, Link(board.url, timeout=10.0) as link:
        assert not link.info().flags & P.InfoFlags.STANDIN
        link.load(image)
        link.reset_state()
        link.counters(clear=True)
        for i in range(200):
            frame = rng.integers(0, 256, image.preset.frame.packed_bytes, dtype=np.uint8)
            frame &= rng.integers(0, 256, frame.size, dtype=np.uint8)
            reply = link.step(frame.tobytes(), logits=True)
            out = golden.step(frame[None])
            assert (reply.action, reply.logits) == (
                int(out.action[0]), [int(v) for v in out.logits[0]]), f"step {i}"
        counters = link.counters()
        state = link.read_state(image.preset)
    assert np.array_equal(state["f"], golden.f[0])
    assert np.array_equal(state["h"], golden.h[0])
    for name in P.COUNTER_NAMES:
        assert counters[name] == int(golden.counters.as_dict()[name][0]), name
    # the gate closed: the engine was clocked in well under half of the cycles
    assert board.stats["cycles"] > 200 * 16_000
    assert board.stats["engine_cycles"] < 0.5 * board.stats["cycles"], board.stats
