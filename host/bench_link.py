"""``mstpn bench link``: what one decision costs on the serial link, measured and in theory.

Per preset: the bytes a decision puts on the wire (a STEP request with the 400-byte packed frame
and its reply) against the raw 210x160 RGB frame; the decisions per second measured through the
simulated board (the real gateware in Verilator, over TCP: the median, the mean, the board's CPU
time per decision, and the share of cycles in which the engine had to be clocked); and the
decisions per second a board
could reach at 3 and 12 Mbaud, limited by the UART and the engine's cycles, ignoring the USB
latency of the FTDI bridge (which adds about 1 ms per round trip unless its latency timer is
lowered).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ..spec import protocol as P
from ..spec.preprocess import FRAME_HEIGHT
from ..spec.presets import get_preset

__all__ = ["bench_link", "wire_bytes_per_decision", "theoretical_rate", "RAW_FRAME_BYTES"]

#: One raw ALE frame: 210 x 160 RGB.
RAW_FRAME_BYTES = FRAME_HEIGHT * 160 * 3
#: Cycles the engine spends beyond the roofline per step (pipeline drains, head; approximate).
ENGINE_OVERHEAD_CYCLES = 100
#: Cycles the dispatcher spends per step beyond the UART (moving the frame, the reply).
DISPATCH_CYCLES_PER_BYTE = 2


def wire_bytes_per_decision(preset, logits: bool = False) -> tuple[int, int]:
    """(request, reply) bytes on the wire of one STEP, worst case of COBS."""
    request = P.wire_bytes_max(P.OVERHEAD_BYTES + P.step_request_bytes(preset))
    flags = P.StepFlags.LOGITS if logits else 0
    reply = P.wire_bytes_max(P.OVERHEAD_BYTES + P.step_reply_bytes(preset, flags))
    return request, reply


def theoretical_rate(preset, baud: int, clock_hz: int | None = None) -> float:
    """Decisions/s of a board: 10 bits a byte both ways, plus the engine's and dispatcher's
    cycles at ``clock_hz`` (default the board's), with no USB latency."""
    request, reply = wire_bytes_per_decision(preset)
    clock = clock_hz or preset.board.clock_hz
    cycles = (preset.roofline_cycles + ENGINE_OVERHEAD_CYCLES
              + DISPATCH_CYCLES_PER_BYTE * P.step_request_bytes(preset))
    return 1.0 / ((request + reply) * 10 / baud + cycles / clock)


def measure_sim(preset_name: str, seconds: float, engine: str = "auto",
                gate: bool = True) -> dict:
    """Decisions/s through the simulated board (one STEP after another, timed one by one).

    Returns ``rate`` (1 / the median time of a decision), ``mean_rate``, ``cpu_ms`` (the
    board process's CPU time per decision, which load on the machine disturbs less than the
    wall clock), ``engine_share`` (the fraction of the timed steps' clock cycles in which the
    engine was clocked, see :class:`~mstpn.sim.board.SimBoard`'s ``gate``) and ``kind`` (the
    engine's kind).
    """
    from ..model.image import ParamImage
    from ..sim.board import SimBoard
    from .link import Link

    preset = get_preset(preset_name)
    image = ParamImage.random(preset, 0)
    frames = np.random.default_rng(0).integers(
        0, 256, (64, preset.frame.packed_bytes), dtype=np.uint8)
    board = SimBoard(preset, image.device, engine=engine, gate=gate,
                     progress=lambda m: print(m, file=sys.stderr))
    with board:
        with Link(board.url, timeout=10.0) as link:
            info = link.info()
            link.load(image, verify=False)
            link.reset_state()
            link.step(frames[0])
        # a second client for the timed steps: the board reports its cycle counts per client
        with Link(board.url, timeout=10.0) as link:
            times = []
            cpu0 = _cpu_seconds(board.proc.pid)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds or len(times) < 5:
                t = time.perf_counter()
                link.step(frames[len(times) % len(frames)])
                times.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(board.proc.pid) - cpu0
    log = board.stats_log
    share = ((log[-1]["engine_cycles"] - log[0]["engine_cycles"])
             / (log[-1]["cycles"] - log[0]["cycles"])) if len(log) >= 2 else float("nan")
    return {"rate": 1.0 / float(np.median(times)), "mean_rate": len(times) / elapsed,
            "cpu_ms": 1000 * cpu / len(times), "engine_share": share,
            "kind": "stand-in" if info.flags & P.InfoFlags.STANDIN else "m-STPN"}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux; NaN elsewhere)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_link(presets: list[str], seconds: float = 2.0, engine: str = "auto") -> list[dict]:
    """One record per preset (see the module docstring)."""
    records = []
    for name in presets:
        preset = get_preset(name)
        request, reply = wire_bytes_per_decision(preset)
        per_decision = request + reply
        sim = measure_sim(name, seconds, engine)
        records.append({
            "preset": name,
            "engine": sim["kind"],
            "raw_frame_bytes": RAW_FRAME_BYTES,
            "packed_frame_bytes": preset.frame.packed_bytes,
            "bytes_per_decision": per_decision,
            "vs_raw": f"{RAW_FRAME_BYTES / per_decision:.0f}x less",
            "vs_packed": f"{per_decision / preset.frame.packed_bytes:.3f}x",
            "sim_decisions_per_s": round(sim["rate"], 1),
            "sim_mean_decisions_per_s": round(sim["mean_rate"], 1),
            "sim_cpu_ms_per_decision": round(sim["cpu_ms"], 2),
            "sim_engine_clocked": f"{100 * sim['engine_share']:.0f}%",
            "decisions_per_s_3M": round(theoretical_rate(preset, 3_000_000), 1),
            # 12 Mbaud needs at least 4 cycles a bit: a 48 MHz PLL clock on both boards
            "decisions_per_s_12M": round(theoretical_rate(
                preset, 12_000_000, max(preset.board.clock_hz, 48_000_000)), 1),
        })
    return records
