"""The energy ledger: an episode's counters turned into joules under three stated models.

The accelerator counts steps, synaptic MACs, F writes and pulses (:mod:`mstpn.spec.counters`);
``mstpn play`` and ``mstpn energy`` hand them to :func:`ledger`, which prices them three ways:

1. **SrTiO3 memristive synapses** (Weilenmann et al., Nature Communications 15, 2024): every
   plastic synapse draws a decay bias for the whole game, and every pulse (an F write that
   changed F) costs one update energy. The paper reports the totals for one game; the game's
   duration and the energy of one pulse are *derived* from them here (:func:`paper_game`).
2. **The A100 GPU figures of the same paper**, per game, scaled linearly to our plastic synapse
   count and our steps.
3. **This FPGA**: the device's power (estimates, see :data:`FPGA_POWER`) over the measured
   cycles per step at the board's clock, and idle between decisions at Atari real time.

Every number carries a kind: ``measured`` (counted by the accelerator or timed by a benchmark),
``paper`` (as the paper reports it), ``design`` (a fact of this design: synapse counts, clock) or
``estimate`` (derived or assumed: each says how). All the constants sit in the block below, each
with its source; docs/energy.md explains the models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..spec.counters import COUNTER_NAMES
from ..spec.env import real_time_decisions_per_s
from ..spec.presets import Preset

__all__ = [
    "Figure", "Line", "Model", "Ledger", "ledger", "paper_game", "memristive_model", "gpu_model",
    "fpga_model", "typical_counters", "check_counters", "KINDS", "PAPER", "ENGINE_CYCLES",
    "FPGA_POWER", "TYPICAL_PULSES_PER_F_WRITE",
]

#: The kinds a number may be, in the order the tables explain them.
KINDS = ("measured", "paper", "design", "estimate")


@dataclass(frozen=True)
class Figure:
    """A constant of the ledger, with its unit, kind and source."""

    value: float
    unit: str
    kind: str
    source: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")


# --- the constants, each with its source ----------------------------------------------------------

_NC = ("Weilenmann et al., Nature Communications 15, 2024 (arXiv 2402.16628), the Pong energy "
       "estimate")

#: The paper's figures for one game of Pong.
PAPER: dict[str, Figure] = {
    "synapses": Figure(169_984, "synapses", "paper", _NC),
    "game_mj": Figure(36.0, "mJ", "paper", _NC),
    "bias_mj": Figure(35.6, "mJ", "paper", _NC + ": the decay bias"),
    "update_mj": Figure(0.4, "mJ", "paper", _NC + ": the update pulses"),
    "bias_v": Figure(0.6, "V", "paper", _NC + ": decay bias voltage"),
    "bias_w": Figure(4.3e-9, "W", "paper", _NC + ": bias power per synapse at G = 0"),
    "gpu_optimum_mj": Figure(3463.9, "mJ", "paper", _NC + ": A100 GPU at its optimum"),
    "gpu_as_written_mj": Figure(34780.5, "mJ", "paper", _NC + ": A100 GPU, the code as written"),
}

#: Cycles per step of the engine, from the frame's last byte to the result, the slowest step
#: seen: ``mstpn bench engine`` (Verilator, plain device model), recorded in docs/engine.md.
ENGINE_CYCLES: dict[str, Figure] = {
    "icebreaker": Figure(33_830, "cycles/step", "measured", "mstpn bench engine (docs/engine.md)"),
    "ulx3s-85f": Figure(3_757, "cycles/step", "measured", "mstpn bench engine (docs/engine.md)"),
}

_NOT_RUN = ("order of magnitude only: no vendor power calculator was run for this design and "
            "no board was measured; replace it with a core-rail measurement when one exists")

#: Core power of each FPGA, by the board's device: (static, active at the board clock).
FPGA_POWER: dict[str, tuple[Figure, Figure]] = {
    "iCE40UP5K-SG48": (
        Figure(0.09e-3, "W", "estimate",
               "Lattice iCE40 UltraPlus data sheet (FPGA-DS-02008): typical standby core current "
               "of 75 uA at VCC 1.2 V"),
        Figure(5e-3, "W", "estimate",
               "the engine's 3,378 of 5,280 LUTs (3,010 since its encoder has 8 lanes), "
               "4 SPRAM, 24 EBR and 7 DSPs (docs/engine-cost.md) at 12 MHz; " + _NOT_RUN),
    ),
    "LFE5U-85F-6BG381C": (
        Figure(0.1, "W", "estimate",
               "Lattice ECP5 family data sheet (FPGA-DS-02012): static core supply current of the "
               "85k-LUT device, of the order of 100 mA at VCC 1.1 V; " + _NOT_RUN),
        Figure(0.15, "W", "estimate",
               "the engine's 6,560 of 83,640 LUTs, 57 EBR and 67 multipliers "
               "(docs/engine-cost.md) at 25 MHz; " + _NOT_RUN),
    ),
}

#: Pulses (potentiation + depression) per F write with the stage-3 agent (docs/model-card.md) on
#: Pong, measured with the golden model over 3 held-out episodes (seeds 50000000-50000002;
#: 23,557 decisions): 79,776,998 potentiation and 79,979,958 depression pulses in 192,978,944 F
#: writes (docs/energy.md). Each episode alone gives 0.8275 to 0.8283. Not remeasured for the
#: later agents.
TYPICAL_PULSES_PER_F_WRITE = Figure(
    (79_776_998 + 79_979_958) / 192_978_944, "pulses/F write", "measured",
    "the stage-3 agent on the golden model, 3 held-out Pong episodes (docs/energy.md)")
#: The share of those pulses that potentiate (the rest depress).
TYPICAL_POTENTIATION_SHARE = Figure(
    79_776_998 / (79_776_998 + 79_979_958), "", "measured", TYPICAL_PULSES_PER_F_WRITE.source)


# --- the ledger's records -------------------------------------------------------------------------


@dataclass
class Line:
    """One number of a model: what it is, its value and unit, its kind, and how it was had."""

    label: str
    value: float
    unit: str
    kind: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")


@dataclass
class Model:
    """One energy model: its source, assumptions, lines and totals (mJ, by label)."""

    key: str
    name: str
    source: str
    assumptions: list[str]
    lines: list[Line]
    totals_mj: dict[str, float]


@dataclass
class Ledger:
    """The energy of one run under every model.

    Attributes
    ----------
    preset : str
    steps : int
        Decisions in the run.
    counters : dict of str to int
        The run's counters (:data:`mstpn.spec.counters.COUNTER_NAMES`).
    counters_kind : str
        ``measured`` when the accelerator counted them, ``estimate`` when made up for a typical
        episode (:func:`typical_counters`).
    decisions_per_s : float
        The rate at which the game asks for decisions; the run's duration follows from it.
    duration_s : float
    models : list of Model
    """

    preset: str
    steps: int
    counters: dict[str, int]
    counters_kind: str
    decisions_per_s: float
    duration_s: float
    models: list[Model] = field(default_factory=list)

    def totals_mj(self) -> dict[str, float]:
        """Every model's totals, flat: ``{"memristive": ..., "gpu_optimum": ..., ...}``."""
        out = {}
        for model in self.models:
            for label, value in model.totals_mj.items():
                out[label] = value
        return out

    def to_dict(self) -> dict:
        """Everything, JSON-able (NaN is not: an unknown number is ``None``)."""
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        return clean({
            "preset": self.preset,
            "steps": self.steps,
            "counters": dict(self.counters),
            "counters_kind": self.counters_kind,
            "decisions_per_s": self.decisions_per_s,
            "duration_s": self.duration_s,
            "totals_mj": self.totals_mj(),
            "models": [asdict(m) for m in self.models],
        })

    def table(self) -> str:
        """The ledger as text: each model with its source, assumptions and labelled numbers."""
        out = [
            f"Energy ledger: preset {self.preset}, {self.steps:,d} decisions "
            f"({self.counters_kind}), {self.duration_s:.1f} s of game at "
            f"{self.decisions_per_s:g} decisions/s",
            "  counters (" + self.counters_kind + "): " + ", ".join(
                f"{name} {self.counters[name]:,d}" for name in COUNTER_NAMES),
        ]
        width = max(len(line.label) for m in self.models for line in m.lines)
        for model in self.models:
            out.append("")
            out.append(f"{model.name}")
            out.append(f"  source: {model.source}")
            for text in model.assumptions:
                out.append(f"  assumes: {text}")
            for line in model.lines:
                out.append(f"  {line.label:<{width}}  {_fmt(line.value):>12} {line.unit:<14} "
                           f"[{line.kind}]" + (f"  {line.note}" if line.note else ""))
        out.append("")
        out.append("Totals: " + ", ".join(
            f"{label} {_fmt(value)} mJ" for label, value in self.totals_mj().items()))
        return "\n".join(out)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    if value == int(value) and abs(value) < 1e12:
        return f"{int(value):,d}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.1f}"
    if magnitude >= 0.01:
        return f"{value:.4g}"
    return f"{value:.3e}"


# --- what the paper's figures imply ---------------------------------------------------------------


def paper_game(decisions_per_s: float | None = None) -> dict[str, float]:
    """The paper's game, derived from its figures.

    The bias energy over the bias power of all its synapses gives the game's duration:
    ``T = 35.6 mJ / (169,984 x 4.3 nW)`` = 48.7 s. At ``decisions_per_s`` (Atari real time by
    default: 15 at frameskip 4) that is 731 decisions. If every synapse takes one update pulse per
    decision (the STPN updates every synapse every step), one pulse costs
    ``0.4 mJ / (169,984 x 731)`` = 3.2 pJ.

    Returns
    -------
    dict
        ``duration_s``, ``steps``, ``pulses``, ``pulse_j`` (joules per pulse), ``bias_w`` (per
        synapse) and ``synapse_step_j`` for the two GPU figures (``gpu_optimum_j``,
        ``gpu_as_written_j``: joules per synapse per decision).
    """
    rate = _rate(decisions_per_s)
    synapses = PAPER["synapses"].value
    bias_w = PAPER["bias_w"].value
    duration = PAPER["bias_mj"].value * 1e-3 / (synapses * bias_w)
    steps = duration * rate
    pulses = synapses * steps
    return {
        "duration_s": duration,
        "steps": steps,
        "pulses": pulses,
        "pulse_j": PAPER["update_mj"].value * 1e-3 / pulses,
        "bias_w": bias_w,
        "gpu_optimum_j": PAPER["gpu_optimum_mj"].value * 1e-3 / (synapses * steps),
        "gpu_as_written_j": PAPER["gpu_as_written_mj"].value * 1e-3 / (synapses * steps),
    }


def _rate(decisions_per_s: float | None) -> float:
    rate = real_time_decisions_per_s() if decisions_per_s is None else float(decisions_per_s)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"decisions per second must be a positive number, not {decisions_per_s}")
    return rate


# --- the three models -----------------------------------------------------------------------------


def memristive_model(plastic_synapses: int, steps: float, pulses: int, f_writes: int | None = None,
                     decisions_per_s: float | None = None, static_synapses: int = 0,
                     counters_kind: str = "measured") -> Model:
    """SrTiO3 synapses: decay bias over the game plus one update energy per pulse.

    Parameters
    ----------
    plastic_synapses : int
        Synapses that carry F (and so a decay bias).
    steps : float
        Decisions; the game lasts ``steps / decisions_per_s`` seconds. (A fraction only for the
        paper's own game, :func:`paper_game`.)
    pulses : int
        F writes that changed F (potentiation + depression).
    f_writes : int, optional
        All F writes: priced as pulses too in a note, the paper's own assumption.
    decisions_per_s : float, optional
        Default: Atari real time (:func:`mstpn.spec.env.real_time_decisions_per_s`).
    static_synapses : int
        The static encoder's synapses: named in a note, not priced (see the assumptions).
    counters_kind : str
        The kind of ``pulses`` and ``f_writes``.
    """
    rate = _rate(decisions_per_s)
    game = paper_game(rate)
    duration = steps / rate
    bias_mj = plastic_synapses * game["bias_w"] * duration * 1e3
    update_mj = pulses * game["pulse_j"] * 1e3
    lines = [
        Line("plastic synapses", plastic_synapses, "synapses", "design"),
        Line("bias power per synapse", game["bias_w"] * 1e9, "nW",
             "paper", f"at {PAPER['bias_v'].value:g} V, G = 0"),
        Line("game duration", duration, "s", "estimate",
             f"{_fmt(steps)} decisions at {rate:g}/s"),
        Line("paper's game duration", game["duration_s"], "s", "estimate",
             "35.6 mJ / (169,984 x 4.3 nW)"),
        Line("energy per pulse", game["pulse_j"] * 1e12, "pJ", "estimate",
             f"0.4 mJ / (169,984 synapses x {game['steps']:,.1f} decisions)"),
        Line("pulses", pulses, "pulses", counters_kind, "potentiation + depression"),
        Line("decay bias", bias_mj, "mJ", "estimate"),
        Line("update pulses", update_mj, "mJ", "estimate"),
    ]
    if f_writes is not None:
        lines.append(Line("  if every F write were a pulse", f_writes * game["pulse_j"] * 1e3,
                          "mJ", "estimate", f"{f_writes:,d} F writes; not in the total"))
    total = bias_mj + update_mj
    lines.append(Line("total", total, "mJ", "estimate"))
    assumptions = [
        "every plastic synapse draws the paper's decay bias (4.3 nW) for the whole game, and the "
        "game runs at Atari real time",
        f"the paper's game ran at {rate:g} decisions/s and its 0.4 mJ paid one pulse per synapse "
        "per decision: this gives its duration and the energy of one pulse",
        "a pulse here is an F write that changed F, all pulses cost the same (set or reset)",
        "the paper's 169,984 synapses are its plastic layer (64 x (2,592 + 64)): the static "
        "encoder, like the paper's convolutional front end, is not priced"
        + (f" ({static_synapses:,d} synapses here)" if static_synapses else ""),
    ]
    return Model("memristive", "SrTiO3 memristive synapses", _NC, assumptions, lines,
                 {"memristive": total})


def gpu_model(plastic_synapses: int, steps: float, decisions_per_s: float | None = None) -> Model:
    """The paper's A100 figures per game, scaled by synapse-decisions.

    ``E = E_paper x (plastic_synapses x steps) / (169,984 x paper's decisions)``: linear in the
    synapses and in the steps, with the paper's decisions per game from :func:`paper_game`.
    """
    rate = _rate(decisions_per_s)
    game = paper_game(rate)
    scale = plastic_synapses * steps / (PAPER["synapses"].value * game["steps"])
    optimum = PAPER["gpu_optimum_mj"].value * scale
    written = PAPER["gpu_as_written_mj"].value * scale
    lines = [
        Line("paper: per game, GPU optimum", PAPER["gpu_optimum_mj"].value, "mJ", "paper"),
        Line("paper: per game, as written", PAPER["gpu_as_written_mj"].value, "mJ", "paper"),
        Line("paper's decisions per game", game["steps"], "decisions", "estimate",
             f"its {game['duration_s']:.1f} s at {rate:g}/s"),
        Line("scale", scale, "x", "estimate",
             f"({plastic_synapses:,d} synapses x {_fmt(steps)}) / (169,984 x "
             f"{game['steps']:,.1f})"),
        Line("GPU at its optimum", optimum, "mJ", "estimate"),
        Line("GPU as written", written, "mJ", "estimate"),
    ]
    assumptions = [
        "GPU energy is linear in synapse-decisions: the paper's per-game figure over its 169,984 "
        "plastic synapses and its decisions per game, times ours",
        "the paper's decisions per game follow from its game duration at the same rate",
    ]
    return Model("gpu", "NVIDIA A100 GPU (the paper's figures, scaled)", _NC, assumptions,
                 lines, {"gpu_optimum": optimum, "gpu_as_written": written})


def fpga_model(preset: Preset, steps: int, cycles: int | None = None,
               clock_hz: float | None = None, decisions_per_s: float | None = None) -> Model:
    """This FPGA: active power while the engine computes, static power while it waits.

    The active figure of :data:`FPGA_POWER` holds at the board's oscillator; at another clock its
    dynamic part (active - static) scales with the clock. The engine is busy
    ``steps x cycles / clock_hz`` seconds; for the rest of the game (at ``decisions_per_s``) the
    chip idles at its static power. If the engine is slower than the game, the game waits for it
    and there is no idle time.
    """
    rate = _rate(decisions_per_s)
    device = preset.board.device
    if device not in FPGA_POWER:
        raise ValueError(f"no power figures for {device} (known: {', '.join(FPGA_POWER)})")
    static, active = FPGA_POWER[device]
    if cycles is None:
        if preset.name in ENGINE_CYCLES:
            cycles_kind, cycles_note = "measured", ENGINE_CYCLES[preset.name].source
            cycles = int(ENGINE_CYCLES[preset.name].value)
        else:
            cycles_kind, cycles_note = "estimate", "the roofline: no measurement for this preset"
            cycles = preset.roofline_cycles
    else:
        cycles_kind, cycles_note = "measured", "given"
    if cycles <= 0:
        raise ValueError(f"cycles per step must be positive, not {cycles}")
    clock = float(clock_hz if clock_hz is not None else preset.board.clock_hz)
    if not (math.isfinite(clock) and clock > 0):
        raise ValueError(f"the clock must be a positive frequency in Hz, not {clock_hz}")
    # the active figure holds at the board's oscillator; dynamic power scales with the clock
    # (a fixed energy per cycle), static power does not
    active_w = static.value + (active.value - static.value) * clock / preset.board.clock_hz
    busy = steps * cycles / clock
    duration = max(steps / rate, busy)
    compute_mj = active_w * busy * 1e3
    idle_mj = static.value * (duration - busy) * 1e3
    total = compute_mj + idle_mj
    lines = [
        Line("cycles per step", cycles, "cycles", cycles_kind, cycles_note),
        Line("clock", clock / 1e6, "MHz", "design",
             "given" if clock_hz is not None else f"the {preset.board.name} oscillator"),
        Line("engine busy", busy, "s", "estimate", f"{steps:,d} x cycles / clock"),
        Line("static power", static.value * 1e3, "mW", static.kind),
        Line("active power", active_w * 1e3, "mW", active.kind,
             "" if clock == preset.board.clock_hz else
             f"{active.value * 1e3:g} mW at {preset.board.clock_hz / 1e6:g} MHz, dynamic part "
             "scaled with the clock"),
        Line("computing", compute_mj, "mJ", "estimate", "active power x busy time"),
        Line("idle between decisions", idle_mj, "mJ", "estimate",
             f"static power x the rest of {duration:.1f} s"),
        Line("total", total, "mJ", "estimate"),
        Line("per decision", total / max(steps, 1) * 1e3, "uJ", "estimate"),
    ]
    assumptions = [
        f"{device}: static {static.value * 1e3:g} mW from {static.source}",
        f"{device}: active {active.value * 1e3:g} mW at "
        f"{preset.board.clock_hz / 1e6:g} MHz: {active.source}",
        "at another clock the dynamic part (active - static) scales with the clock: a fixed "
        "energy per cycle",
        "the FPGA core only: no I/O, USB bridge, regulators or host",
    ]
    return Model("fpga", f"This FPGA ({preset.board.name}, {device})",
                 "power: Lattice data sheets and estimates (below); cycles: mstpn bench engine",
                 assumptions, lines, {"fpga": total})


# --- counters -------------------------------------------------------------------------------------


def check_counters(counters: Mapping[str, int], steps: int, preset: Preset) -> dict[str, int]:
    """Validate a run's counters against its steps and preset; return them as plain ints.

    Raises
    ------
    ValueError
        Naming the counter that is missing, negative, not an integer, or inconsistent (a run of
        another preset, or counters that were not cleared at the run's start).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, not {steps!r}")
    missing = [name for name in COUNTER_NAMES if name not in counters]
    if missing:
        raise ValueError(
            f"counters lack {', '.join(missing)} (expected {', '.join(COUNTER_NAMES)})")
    out = {}
    for name in COUNTER_NAMES:
        value = counters[name]
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"counter {name} must be an integer, not {value!r}")
        if value < 0:
            raise ValueError(f"counter {name} is negative ({value})")
        out[name] = int(value)
    if out["steps"] != steps:
        raise ValueError(
            f"the counters count {out['steps']:,d} steps but the run had {steps:,d}: pass the "
            "run's own counters (cleared at its start)")
    plastic = preset.plastic.synapses
    if out["macs"] != steps * preset.synapses:
        raise ValueError(
            f"counter macs is {out['macs']:,d}, but {steps:,d} steps of preset {preset.name} make "
            f"{steps * preset.synapses:,d}: counters of another preset?")
    if out["f_writes"] != steps * plastic:
        raise ValueError(
            f"counter f_writes is {out['f_writes']:,d}, but {steps:,d} steps of preset "
            f"{preset.name} make {steps * plastic:,d}: counters of another preset?")
    if out["potentiation"] + out["depression"] > out["f_writes"]:
        raise ValueError("potentiation + depression exceed f_writes: a pulse is an F write")
    return out


def typical_counters(steps: int, preset: Preset) -> dict[str, int]:
    """Counters of a typical episode of ``steps`` decisions, made from the preset.

    MACs and F writes follow from the geometry; the pulses from the shipped agent's measured
    share of F writes that change F (:data:`TYPICAL_PULSES_PER_F_WRITE`).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, not {steps!r}")
    f_writes = steps * preset.plastic.synapses
    pulses = round(f_writes * TYPICAL_PULSES_PER_F_WRITE.value)
    up = round(pulses * TYPICAL_POTENTIATION_SHARE.value)
    return {"steps": steps, "macs": steps * preset.synapses, "f_writes": f_writes,
            "potentiation": up, "depression": pulses - up}


def ledger(counters: dict[str, int], steps: int, preset: Preset, cycles: int | None = None,
           clock_hz: float | None = None, *, decisions_per_s: float | None = None,
           counters_kind: str = "measured") -> Ledger:
    """The energy ledger of one run.

    Parameters
    ----------
    counters : dict of str to int
        The run's counters, by the names of :data:`mstpn.spec.counters.COUNTER_NAMES`, counted
        from the run's start.
    steps : int
        Decisions in the run (must equal ``counters["steps"]``).
    preset : Preset
        The geometry that ran.
    cycles : int, optional
        Measured cycles per step (default: ``mstpn bench engine``'s figure for the preset).
    clock_hz : float, optional
        The engine's clock (default: the board's oscillator).
    decisions_per_s : float, optional
        The game's rate of decisions, which sets its duration (default: Atari real time, 15/s at
        frameskip 4).
    counters_kind : {"measured", "estimate"}
        Whether the accelerator counted ``counters`` or :func:`typical_counters` made them.

    Returns
    -------
    Ledger

    Raises
    ------
    ValueError
        On missing, negative or inconsistent counters, naming which.
    """
    counters = check_counters(counters, steps, preset)
    rate = _rate(decisions_per_s)
    pulses = counters["potentiation"] + counters["depression"]
    static = preset.encoder.synapses if preset.encoder else 0
    models = [
        memristive_model(preset.plastic.synapses, steps, pulses, counters["f_writes"], rate,
                         static_synapses=static, counters_kind=counters_kind),
        gpu_model(preset.plastic.synapses, steps, rate),
        fpga_model(preset, steps, cycles, clock_hz, rate),
    ]
    return Ledger(preset.name, steps, counters, counters_kind, rate, steps / rate, models)
