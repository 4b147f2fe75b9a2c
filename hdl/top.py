"""The accelerator's top level: UART, framing, dispatcher and engine: what a bitstream holds.

    rx pin -> UART -> CobsDecoder -> FrameReceiver -> Dispatcher -> Engine
    tx pin <- UART <- FrameTransmitter <------------'

The board's platform (the boards issue) instantiates :class:`Top` in its clock domain ``sync``
(the board clock, or a PLL's) and wires ``rx``, ``tx`` and ``busy`` to pins. The simulated board
(:mod:`mstpn.sim.board`) runs this same design's Verilog in Verilator.

Cost (yosys ``synth_ice40``, iCEBreaker build, docs/boards.md): the UART, framing and dispatcher
take about 1,540 LUT4s and 5 EBRs beside the engine (the whole top: 4,700 of the iCE40UP5K's
5,280 logic cells); a request costs its bytes on the wire plus about 20 cycles plus the engine's
work.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..model.image import ParamImage
from ..spec.device import DeviceModel
from ..spec.presets import Preset, get_preset
from .dispatcher import Dispatcher, engine_signature
from .framing import CobsDecoder, FrameReceiver, FrameTransmitter
from .uart import UART, divisor_for

__all__ = ["Top", "ENGINES", "real_engine_available", "make_engine"]

#: The engine kinds a top level can hold.
ENGINES = ("auto", "engine", "standin")


def real_engine_available() -> bool:
    """Whether :mod:`mstpn.hdl.engine` (the m-STPN engine) can be imported."""
    try:
        from . import engine  # noqa: F401
    except ImportError:
        return False
    return True


def make_engine(kind: str, preset: Preset, device: DeviceModel, image: ParamImage | None):
    """The engine of a top level: ``"engine"`` (the m-STPN), ``"standin"``, or ``"auto"``
    (the m-STPN if it exists). Returns ``(component, is_standin)``."""
    if kind not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {kind!r}")
    if kind == "auto":
        kind = "engine" if real_engine_available() else "standin"
    if kind == "engine":
        from .engine import Engine

        return Engine(preset, device, image), False
    from .standin import StandInEngine

    return StandInEngine(preset, device, image), True


def _connect_engine(m: Module, port, engine, preset: Preset) -> None:
    """Connect the dispatcher's engine port to an engine, member by member (so an engine with
    extra debug ports still fits)."""
    for name, member in engine_signature(preset).members.items():
        ours, theirs = getattr(port, name), getattr(engine, name)
        if member.is_port:
            if member.flow == In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        elif member.flow == In:   # a stream into the engine
            m.d.comb += [theirs.valid.eq(ours.valid), theirs.payload.eq(ours.payload),
                         ours.ready.eq(theirs.ready)]
        else:
            m.d.comb += [ours.valid.eq(theirs.valid), ours.payload.eq(theirs.payload),
                         theirs.ready.eq(ours.ready)]


class Top(wiring.Component):
    """The accelerator.

    Parameters
    ----------
    preset : Preset or str
    device : DeviceModel, optional
        Default: all options off.
    image : ParamImage or None
        Baked in: the board plays with no upload.
    clk_hz : int
        The clock of domain ``sync``. Default: the preset's board oscillator.
    baud : int
        The UART's rate (default 3,000,000).
    engine : {"auto", "engine", "standin"}
        What sits behind the dispatcher.
    fifo_depth : int
        Bytes of each UART FIFO.

    Attributes
    ----------
    rx : Signal, in
        UART receive pin (from the host).
    tx : Signal, out
        UART transmit pin (to the host).
    busy : Signal, out
        Something is in flight (for an LED, and for the simulated board to know when it may
        sleep).

    Raises
    ------
    ValueError
        For an unknown preset or engine kind, an image of another preset or device model, or
        a baud the clock cannot make.
    """

    def __init__(self, preset: Preset | str, device: DeviceModel | None = None,
                 image: ParamImage | None = None, *, clk_hz: int | None = None,
                 baud: int = 3_000_000, engine: str = "auto", fifo_depth: int = 32):
        if isinstance(preset, str):
            preset = get_preset(preset)
        if not isinstance(preset, Preset):
            raise TypeError(f"preset must be a Preset or a preset name, not {preset!r}")
        device = DeviceModel() if device is None else device
        if image is not None:
            if image.preset != preset:
                raise ValueError(f"image is for preset {image.preset.name}, not {preset.name}")
            if image.device != device:
                raise ValueError(
                    f"image was made for device model ({image.device.describe()}), the build "
                    f"has ({device.describe()})")
        self.preset = preset
        self.device = device
        self.image = image
        self.clk_hz = preset.board.clock_hz if clk_hz is None else clk_hz
        self.baud = baud
        self.divisor = divisor_for(self.clk_hz, baud)
        self.fifo_depth = fifo_depth
        self.engine, self.standin = make_engine(engine, preset, device, image)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        # the divisor is a constant here (at least MIN_DIVISOR, by divisor_for): the UART's bit
        # timers need only its width
        divisor_bits = self.divisor.bit_length()
        m.submodules.uart = uart = UART(self.fifo_depth, divisor_bits=divisor_bits)
        m.submodules.decoder = decoder = CobsDecoder()
        m.submodules.receiver = receiver = FrameReceiver()
        m.submodules.transmitter = transmitter = FrameTransmitter()
        m.submodules.dispatcher = disp = Dispatcher(
            self.preset, self.device,
            baked_hash=None if self.image is None else self.image.content_hash(),
            standin=self.standin, clk_hz=self.clk_hz, divisor=self.divisor,
        )
        m.submodules.engine = engine = self.engine

        divisor = Signal(divisor_bits, init=self.divisor)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx), uart.divisor.eq(divisor)]
        wiring.connect(m, uart.rx_data, decoder.i)
        wiring.connect(m, decoder.o, receiver.i)
        wiring.connect(m, receiver.frame, disp.frame)
        wiring.connect(m, transmitter.o, uart.tx_data)
        wiring.connect(m, disp.send, transmitter.send)
        m.d.comb += [
            disp.rd_data.eq(receiver.rd_data), receiver.rd_addr.eq(disp.rd_addr),
            transmitter.wr_addr.eq(disp.tx_addr), transmitter.wr_data.eq(disp.tx_data),
            transmitter.wr_en.eq(disp.tx_en),
            disp.tx_idle.eq(transmitter.idle),
            self.busy.eq(~disp.idle | engine.busy | ~transmitter.idle | ~uart.tx_idle
                         | uart.rx_data.valid),
        ]
        _connect_engine(m, disp.engine, engine, self.preset)
        return m
