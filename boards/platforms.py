"""The boards: each one's amaranth-boards platform, its PLL, and how the top level meets its pins.

    oscillator pin -> PLL -> domain ``sync`` (target clock) -> :class:`mstpn.hdl.top.Top`
    FTDI UART rx/tx pins <-> Top.rx / Top.tx;  Top.busy -> an LED

A board here is a platform from amaranth-boards (:class:`ICEBreakerPlatform`,
:class:`ULX3S_85F_Platform`) with one change: domain ``sync`` runs from a PLL at the board's target
clock instead of the oscillator, and stays in reset until the PLL has locked (and, on iCE40, until
the block RAMs are readable, about 3 us after configuration). The PLL settings come from small
solvers that follow the rules of the vendors' PLL guides, the same ones ``icepll`` and ``ecppll``
apply; tests/test_boards.py checks them against those tools.

Which preset each board runs is the preset's own business (:mod:`mstpn.spec.presets`): a board
here is named after the preset it carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Const, Module, Signal
from amaranth.hdl import Elaboratable, Instance
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..spec.presets import PRESETS, Preset

__all__ = [
    "Ice40Pll",
    "Ecp5Pll",
    "ice40_pll",
    "ecp5_pll",
    "BoardSpec",
    "BOARD_SPECS",
    "get_board",
    "IcebreakerBoard",
    "Ulx3s85fBoard",
    "BoardTop",
]


# --- PLL solvers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ice40Pll:
    """Settings of an iCE40 SB_PLL40 in simple feedback mode.

    ``f_out = f_in * (divf + 1) / ((divr + 1) * 2**divq)``.
    """

    f_in_hz: int
    divr: int
    divf: int
    divq: int
    filter_range: int

    @property
    def f_pfd_hz(self) -> float:
        """Phase detector frequency."""
        return self.f_in_hz / (self.divr + 1)

    @property
    def f_vco_hz(self) -> float:
        """VCO frequency."""
        return self.f_pfd_hz * (self.divf + 1)

    @property
    def f_out_hz(self) -> float:
        """Output frequency."""
        return self.f_vco_hz / (1 << self.divq)


def ice40_pll(f_in_hz: int, f_out_hz: int) -> Ice40Pll:
    """The SB_PLL40 settings whose output is closest to ``f_out_hz`` (the lowest DIVR first).

    The limits are the iCE40 sysCLOCK PLL guide's: phase detector 10-133 MHz, VCO 533-1066 MHz,
    output 16-275 MHz; DIVR 0..15, DIVF 0..127, DIVQ 1..6.

    Raises
    ------
    ValueError
        If no setting lands within 0.5 % of ``f_out_hz``.
    """
    best: Ice40Pll | None = None
    for divr in range(16):
        f_pfd = f_in_hz / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f_out = f_vco / (1 << divq)
                if not 16e6 <= f_out <= 275e6:
                    continue
                if best is None or abs(f_out - f_out_hz) < abs(best.f_out_hz - f_out_hz):
                    # the loop filter's range follows the phase detector frequency (icepll)
                    filter_range = next(i for i, top in enumerate(
                        (17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), 1) if f_pfd < top)
                    best = Ice40Pll(f_in_hz, divr, divf, divq, filter_range)
    if best is None or abs(best.f_out_hz - f_out_hz) > 0.005 * f_out_hz:
        raise ValueError(f"an iCE40 PLL cannot make {f_out_hz / 1e6:g} MHz from "
                         f"{f_in_hz / 1e6:g} MHz")
    return best


@dataclass(frozen=True)
class Ecp5Pll:
    """Settings of an ECP5 EHXPLLL, output CLKOP fed back to itself.

    ``f_out = f_in * clkfb_div / clki_div`` and ``f_vco = f_out * clkop_div``.
    """

    f_in_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out_hz(self) -> float:
        """Output frequency."""
        return self.f_in_hz * self.clkfb_div / self.clki_div

    @property
    def f_vco_hz(self) -> float:
        """VCO frequency."""
        return self.f_out_hz * self.clkop_div

    @property
    def clkop_cphase(self) -> int:
        """Coarse phase for 0 degrees, as ``ecppll`` writes it."""
        return self.clkop_div // 2 - 1


def ecp5_pll(f_in_hz: int, f_out_hz: int) -> Ecp5Pll:
    """The EHXPLLL settings whose output is closest to ``f_out_hz``, preferring a VCO near
    600 MHz (the middle of its range, as ``ecppll`` does).

    Limits (ECP5 sysCLOCK guide): phase detector 3.125-400 MHz, VCO 400-800 MHz, output
    3.125-400 MHz; CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128.

    Raises
    ------
    ValueError
        If no setting lands within 0.5 % of ``f_out_hz``.
    """
    best: tuple[float, float, Ecp5Pll] | None = None
    for clki_div in range(1, 129):
        if not 3.125e6 <= f_in_hz / clki_div <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_in_hz * clkfb_div / clki_div
            if not 3.125e6 <= f_out <= 400e6:
                continue
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if not 400e6 <= f_vco <= 800e6:
                    continue
                key = (abs(f_out - f_out_hz), abs(f_vco - 600e6))
                if best is None or key < best[:2]:
                    best = (*key, Ecp5Pll(f_in_hz, clki_div, clkfb_div, clkop_div))
    if best is None or best[0] > 0.005 * f_out_hz:
        raise ValueError(f"an ECP5 PLL cannot make {f_out_hz / 1e6:g} MHz from "
                         f"{f_in_hz / 1e6:g} MHz")
    return best[2]


# --- platforms ---------------------------------------------------------------------------------


class _PllDomainMixin:
    """Domain ``sync`` from a PLL at ``self.sync_hz``; ``_pll(clk_port, out, locked)`` makes the
    PLL from the oscillator's raw pin."""

    sync_hz: int

    def __init__(self, *, sync_hz: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sync_hz = sync_hz

    @property
    def file_templates(self):
        # no debug Verilog: rendering it costs a yosys run of its own, and nothing reads it
        return {k: v for k, v in super().file_templates.items() if not k.endswith(".debug.v")}

    def create_missing_domain(self, name):
        if name != "sync":
            return super().create_missing_domain(name)
        m = Module()
        clk_io = self.request(self.default_clk, dir="-")
        pll_clk, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
        m.submodules.pll = self._pll(clk_io, pll_clk, locked)
        # A power-on delay: iCE40 block RAMs read as zero for about 3 us after configuration
        # (Amaranth's own iCE40 domain waits 15 us; so do we, on both families). It counts on
        # the PLL's clock, which runs only after configuration, so it waits at least as long.
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        delay = int(15e-6 * self.sync_hz)
        timer, ready = Signal(range(delay + 1)), Signal()
        m.d.comb += ClockSignal("por").eq(pll_clk)
        with m.If(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(pll_clk)
        m.submodules.reset_sync = ResetSynchronizer(~(ready & locked), domain="sync")
        # no constraint on the PLL's output: nextpnr derives it from the oscillator's and the
        # PLL's settings, so the report's target is what the PLL really makes
        return m


class IcebreakerBoard(_PllDomainMixin, ICEBreakerPlatform):
    """The iCEBreaker (iCE40UP5K) with ``sync`` from an SB_PLL40_PAD.

    The oscillator's pin 35 is the PLL's own input pad: the PLL takes it directly (an input
    buffer on it would block the PLL's site).
    """

    def _pll(self, clk_io, out, locked):
        pll = ice40_pll(int(self.default_clk_frequency), self.sync_hz)
        return Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=pll.divr, p_DIVF=pll.divf, p_DIVQ=pll.divq,
            p_FILTER_RANGE=pll.filter_range,
            i_PACKAGEPIN=clk_io.io, i_RESETB=Const(1), i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=out, o_LOCK=locked,
        )


class Ulx3s85fBoard(_PllDomainMixin, ULX3S_85F_Platform):
    """The ULX3S with an LFE5U-85F, ``sync`` from an EHXPLLL.

    Building needs no programmer: openFPGALoader is dropped from the required tools (it is
    needed only by ``mstpn program``).
    """

    @property
    def required_tools(self):
        return [t for t in super().required_tools if t != "openFPGALoader"]

    def _pll(self, clk_io, out, locked):
        pll = ecp5_pll(int(self.default_clk_frequency), self.sync_hz)
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.default_clk_frequency / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{pll.f_out_hz / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=pll.clkfb_div,
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_buf.i, i_CLKFB=out,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0),
            o_CLKOP=out, o_LOCK=locked,
        )
        return m


@dataclass(frozen=True)
class BoardSpec:
    """What ``mstpn build`` needs to know about one board.

    Parameters
    ----------
    name : str
        The board's name, which is also the name of the preset it carries.
    platform : type
        The platform class (one of the above).
    family : {"ice40", "ecp5"}
    target_hz : int
        The system clock the PLL makes and timing must meet.
    synth_opts : tuple of str
        Extra ``synth_ice40``/``synth_ecp5`` options.
    lut_cell, ff_cell, dsp_cell : str
        nextpnr's names of the logic cell, flip-flop and multiplier in its utilisation report.
    ram_cells : dict of str to str
        RAM kind (as :mod:`mstpn.spec.presets` names it) -> nextpnr's cell name.
    max_lut_fraction : float
        The logic budget of the board's target (iCEBreaker: 90 % of LUTs; ULX3S: all).
    program_args : tuple of str
        openFPGALoader's options for the board (besides the bitstream).
    bitstream : str
        The bitstream's suffix.
    """

    name: str
    platform: type
    family: str
    target_hz: int
    synth_opts: tuple[str, ...]
    lut_cell: str
    ff_cell: str
    dsp_cell: str
    ram_cells: dict[str, str]
    max_lut_fraction: float
    program_args: tuple[str, ...]
    bitstream: str

    @property
    def preset(self) -> Preset:
        """The preset the board carries."""
        return PRESETS[self.name]

    def make_platform(self, sync_hz: int | None = None):
        """A fresh platform instance whose ``sync`` runs at ``sync_hz`` (default: the target)."""
        return self.platform(sync_hz=sync_hz or self.target_hz)


BOARD_SPECS: dict[str, BoardSpec] = {
    "icebreaker": BoardSpec(
        name="icebreaker", platform=IcebreakerBoard, family="ice40", target_hz=24_000_000,
        # -dsp: the MACs of the neuron unit and head in SB_MAC16 (the design brief asks for it)
        synth_opts=("-dsp",),
        lut_cell="ICESTORM_LC", ff_cell="SB_DFF", dsp_cell="ICESTORM_DSP",
        ram_cells={"EBR": "ICESTORM_RAM", "SPRAM": "ICESTORM_SPRAM"},
        max_lut_fraction=0.90, program_args=("-b", "ice40_generic"), bitstream="bin",
    ),
    "ulx3s-85f": BoardSpec(
        name="ulx3s-85f", platform=Ulx3s85fBoard, family="ecp5", target_hz=50_000_000,
        synth_opts=(),
        lut_cell="TRELLIS_COMB", ff_cell="TRELLIS_FF", dsp_cell="MULT18X18D",
        ram_cells={"EBR": "DP16KD"},
        max_lut_fraction=1.0, program_args=("-b", "ulx3s"), bitstream="bit",
    ),
}


def get_board(name: str) -> BoardSpec:
    """The board called ``name``, or a ValueError that lists the known ones."""
    try:
        return BOARD_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: "
                         f"{', '.join(sorted(BOARD_SPECS))}") from None


class BoardTop(Elaboratable):
    """The top level on a board's pins: UART to :class:`Top`, ``busy`` to an LED.

    Parameters
    ----------
    top : mstpn.hdl.top.Top
        Built for the board's ``sync`` clock (``clk_hz`` = the PLL's output).
    """

    def __init__(self, top) -> None:
        self.top = top

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self.top
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.led_buf = led_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        # rx is synchronised inside the UART (mstpn.hdl.uart), so the raw pin goes straight in
        m.d.comb += [top.rx.eq(rx_buf.i), tx_buf.o.eq(top.tx), led_buf.o.eq(top.busy)]
        return m

