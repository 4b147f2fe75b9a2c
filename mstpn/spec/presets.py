"""Presets: a network geometry, its tiling onto synapse tiles and lanes, and the board it fits.

This is the one definition of each preset's sizes. The gateware elaborates from it, the golden
model and the trainer build their arrays from it, and the host checks a board's INFO against it.
Each preset's memory budget is checked against its board's RAM when the preset is defined, so a
preset that does not fit cannot be imported.

Both presets share one network geometry, so one trained agent plays on both; they differ in how
many tiles and lanes run it, and so in cycles per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil

from .qformat import ACT, DECAY, ENC_WEIGHT, PLASTICITY, SHORT_TERM, TANH_INDEX_BITS, WEIGHT

__all__ = [
    "RamKind",
    "Board",
    "Layer",
    "FrameGeometry",
    "Preset",
    "BOARDS",
    "PRESETS",
    "get_preset",
    "ACTIONS",
    "ALE_ACTIONS",
]

#: The agent's actions, in the head's output order.
ACTIONS = ("NOOP", "UP", "DOWN")
#: Their indices in ALE Pong's minimal action set [NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE]:
#: RIGHT moves our paddle up, LEFT moves it down.
ALE_ACTIONS = (0, 2, 3)


@dataclass(frozen=True)
class RamKind:
    """One kind of on-chip RAM block.

    Parameters
    ----------
    name : str
        The primitive's family name (``"SPRAM"``, ``"EBR"``).
    count : int
        How many the device has.
    shapes : tuple of (depth, width)
        The aspect ratios one block can be configured to.
    """

    name: str
    count: int
    shapes: tuple[tuple[int, int], ...]

    @property
    def bits(self) -> int:
        """The capacity of one block."""
        return max(d * w for d, w in self.shapes)

    def blocks_for(self, depth: int, width: int) -> int:
        """The fewest blocks that hold a memory of ``depth`` words of ``width`` bits."""
        return min(ceil(depth / d) * ceil(width / w) for d, w in self.shapes)


@dataclass(frozen=True)
class Board:
    """A development board: its FPGA's resources and its oscillator."""

    name: str
    device: str
    luts: int
    dsps: int
    clock_hz: int
    rams: tuple[RamKind, ...]

    def ram(self, name: str) -> RamKind:
        """The RAM kind called ``name``."""
        for kind in self.rams:
            if kind.name == name:
                return kind
        raise KeyError(f"board {self.name} has no RAM kind {name!r}")


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker",
        device="iCE40UP5K-SG48",
        luts=5280,
        dsps=8,
        clock_hz=12_000_000,
        rams=(
            RamKind("SPRAM", 4, ((16384, 16),)),
            RamKind("EBR", 30, ((256, 16), (512, 8), (1024, 4), (2048, 2))),
        ),
    ),
    "ulx3s-85f": Board(
        name="ulx3s-85f",
        device="LFE5U-85F-6BG381C",
        luts=83640,
        dsps=156,
        clock_hz=25_000_000,
        rams=(
            RamKind(
                "EBR", 208,
                ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
            ),
        ),
    ),
}


@dataclass(frozen=True)
class Layer:
    """One layer of synapses and its tiling.

    Parameters
    ----------
    kind : {"static", "plastic"}
        A static layer holds W only (the encoder); a plastic layer holds W, F, lambda and gamma.
    inputs, outputs : int
        Pre-synaptic inputs (columns) and post-synaptic neurons (rows). A plastic layer's inputs
        include its own recurrent h.
    tiles, lanes_per_tile : int
        Each tile has its own memory and ``lanes_per_tile`` MAC lanes, each reading one synapse's
        whole state per cycle. Lane ``l`` of ``tiles * lanes_per_tile`` handles the columns
        ``j`` with ``j % lanes == l``.
    ram : str
        The RAM kind that holds the tiles' synapse memories.
    """

    kind: str
    inputs: int
    outputs: int
    tiles: int
    lanes_per_tile: int
    ram: str

    def __post_init__(self) -> None:
        if self.kind not in ("static", "plastic"):
            raise ValueError(f"layer kind must be 'static' or 'plastic', not {self.kind!r}")
        for name in ("inputs", "outputs", "tiles", "lanes_per_tile"):
            if getattr(self, name) < 1:
                raise ValueError(f"layer {name} must be at least 1, not {getattr(self, name)}")
        if self.inputs % self.lanes:
            raise ValueError(
                f"{self.kind} layer: {self.lanes} lanes do not divide its {self.inputs} inputs"
            )

    @property
    def lanes(self) -> int:
        """All MAC lanes of the layer."""
        return self.tiles * self.lanes_per_tile

    @property
    def synapses(self) -> int:
        """Synapses in the layer."""
        return self.inputs * self.outputs

    @property
    def bits_per_synapse(self) -> int:
        """State bits one lane reads per cycle."""
        if self.kind == "static":
            return ENC_WEIGHT.bits
        return WEIGHT.bits + SHORT_TERM.bits + DECAY.bits + PLASTICITY.bits

    @property
    def cycles(self) -> int:
        """Cycles of one pass at one synapse per lane per cycle (the memory roofline)."""
        return self.synapses // self.lanes

    @property
    def tile_depth(self) -> int:
        """Words in one tile's memory."""
        return self.cycles

    @property
    def tile_width(self) -> int:
        """Bits per word of one tile's memory."""
        return self.lanes_per_tile * self.bits_per_synapse


@dataclass(frozen=True)
class FrameGeometry:
    """How a 210x160 ALE frame becomes the binary input: crop, binarise, max-pool.

    Parameters
    ----------
    top, bottom : int
        The play area's rows, ``top`` included and ``bottom`` excluded.
    pool_rows, pool_cols : int
        The max-pooling window. A 2x4 window keeps the 4x2-pixel ball.
    """

    top: int = 34
    bottom: int = 194
    width: int = 160
    pool_rows: int = 2
    pool_cols: int = 4

    def __post_init__(self) -> None:
        if (self.bottom - self.top) % self.pool_rows or self.width % self.pool_cols:
            raise ValueError("the pooling window must tile the cropped play area exactly")

    @property
    def rows(self) -> int:
        """Rows of the binary input."""
        return (self.bottom - self.top) // self.pool_rows

    @property
    def cols(self) -> int:
        """Columns of the binary input."""
        return self.width // self.pool_cols

    @property
    def pixels(self) -> int:
        """Pixels of the binary input."""
        return self.rows * self.cols

    @property
    def packed_bytes(self) -> int:
        """Bytes of one bit-packed frame."""
        return ceil(self.pixels / 8)


@dataclass(frozen=True)
class Preset:
    """A network geometry, tiled onto a board.

    Parameters
    ----------
    name : str
        The preset's name, as the CLI and the parameter image spell it.
    board : Board
        The board it is built for.
    frame : FrameGeometry
        The preprocessing that turns an ALE frame into the input x.
    encoder : Layer or None
        The optional static encoder (pixels to features).
    plastic : Layer
        The m-STPN layer; its inputs are the encoder's outputs (or the pixels) and its own h.
    actions : int
        Outputs of the actor head.
    periphery_ram : str
        The dual-port RAM kind of the memories beside the tiles (tanh table, z and frame
        buffers, per-neuron parameters, head) and of the plastic layer's F.

    Raises
    ------
    ValueError
        If the layers do not chain, or the memories do not fit the board, naming what overflowed.
    """

    name: str
    board: Board
    frame: FrameGeometry
    encoder: Layer | None
    plastic: Layer
    actions: int = len(ACTIONS)
    periphery_ram: str = "EBR"
    budget: dict[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        features = self.encoder.outputs if self.encoder else self.frame.pixels
        if self.encoder and self.encoder.inputs != self.frame.pixels:
            raise ValueError(
                f"preset {self.name}: the encoder takes {self.encoder.inputs} inputs but a frame "
                f"has {self.frame.pixels} pixels"
            )
        if self.encoder and self.encoder.kind != "static":
            raise ValueError(f"preset {self.name}: the encoder must be a static layer")
        if self.plastic.kind != "plastic":
            raise ValueError(f"preset {self.name}: the m-STPN layer must be plastic")
        if self.plastic.inputs != features + self.hidden:
            raise ValueError(
                f"preset {self.name}: the plastic layer takes {self.plastic.inputs} inputs but "
                f"z = [x; h] has {features} + {self.hidden}"
            )
        if self.actions != len(ACTIONS):
            raise ValueError(f"preset {self.name}: the head must have {len(ACTIONS)} actions")
        object.__setattr__(self, "budget", self._check_budget())

    # --- geometry ------------------------------------------------------------------------------

    @property
    def hidden(self) -> int:
        """Neurons of the plastic layer (the size of h)."""
        return self.plastic.outputs

    @property
    def features(self) -> int:
        """Size of x, the plastic layer's feed-forward input."""
        return self.encoder.outputs if self.encoder else self.frame.pixels

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The synapse layers, in data-path order."""
        return (self.encoder, self.plastic) if self.encoder else (self.plastic,)

    @property
    def synapses(self) -> int:
        """Synapses of all layers, static and plastic."""
        return sum(layer.synapses for layer in self.layers)

    @property
    def roofline_cycles(self) -> int:
        """Cycles per step if every lane retires one synapse every cycle."""
        return sum(layer.cycles for layer in self.layers)

    # --- memory budget -------------------------------------------------------------------------

    def periphery_memories(self) -> dict[str, tuple[int, int]]:
        """The small memories beside the tiles, as name -> (depth, width)."""
        mems = {
            "tanh table": (1 << TANH_INDEX_BITS, ACT.bits - 1),
            "frame buffer (2 frames)": (2 * self.frame.pixels, 1),
            "z buffers (x and h, two steps)": (2 * self.plastic.inputs, ACT.bits),
            "plastic gain and bias": (self.hidden, 24),
            "head weights": (self.actions * self.hidden, 8),
        }
        if self.encoder:
            mems["encoder gain and bias"] = (self.encoder.outputs, 24)
        return mems

    def _check_budget(self) -> dict[str, int]:
        used: dict[str, int] = {kind.name: 0 for kind in self.board.rams}
        periphery = self.board.ram(self.periphery_ram)
        for layer in self.layers:
            kind = self.board.ram(layer.ram)
            if layer.kind == "static":
                used[kind.name] += layer.tiles * kind.blocks_for(layer.tile_depth, layer.tile_width)
                continue
            # F is read and written back every cycle, so it needs a second port: it lives in the
            # periphery's dual-port RAM, while W, lambda and gamma may sit in single-port SPRAM.
            f_width = layer.lanes_per_tile * SHORT_TERM.bits
            used[kind.name] += layer.tiles * kind.blocks_for(
                layer.tile_depth, layer.tile_width - f_width)
            used[periphery.name] += layer.tiles * periphery.blocks_for(layer.tile_depth, f_width)
        for depth, width in self.periphery_memories().values():
            used[periphery.name] += periphery.blocks_for(depth, width)
        for kind in self.board.rams:
            if used[kind.name] > kind.count:
                raise ValueError(
                    f"preset {self.name} does not fit {self.board.name}: it needs "
                    f"{used[kind.name]} {kind.name} blocks and the {self.board.device} has "
                    f"{kind.count}"
                )
        return used

    def summary(self) -> str:
        """A few lines on the geometry and the budget, for ``mstpn info`` and docs."""
        lines = [f"preset {self.name} on {self.board.name} ({self.board.device})"]
        lines.append(
            f"  input {self.frame.rows}x{self.frame.cols} binary ({self.frame.pixels} pixels)"
        )
        for layer in self.layers:
            lines.append(
                f"  {layer.kind:7s} {layer.inputs:5d} -> {layer.outputs:3d}: {layer.synapses:7,d}"
                f" synapses, {layer.tiles} tiles x {layer.lanes_per_tile} lanes, "
                f"{layer.cycles:,d} cycles"
            )
        lines.append(f"  head {self.hidden} -> {self.actions} actions")
        lines.append(
            f"  {self.synapses:,d} synapses, roofline {self.roofline_cycles:,d} cycles/step"
        )
        budget = ", ".join(
            f"{self.budget[k.name]}/{k.count} {k.name}" for k in self.board.rams
        )
        lines.append(f"  RAM blocks {budget}")
        return "\n".join(lines)


_FRAME = FrameGeometry()
_FEATURES = 64
_HIDDEN = 64

PRESETS: dict[str, Preset] = {
    # 4 SPRAMs: two for the encoder's 2-bit weights (8 per 16-bit word, 25,600 words: one SPRAM
    # after the other) and two, side by side, for the plastic layer's W, lambda and gamma (24
    # bits, one lane); F sits in 16 EBRs. 8 encoder lanes, not 16: the top level then fits
    # within 90 % of the logic cells (docs/boards.md), at 33,830 cycles a step (709 steps/s at
    # 24 MHz, against the link's 60 decisions/s).
    "icebreaker": Preset(
        name="icebreaker",
        board=BOARDS["icebreaker"],
        frame=_FRAME,
        encoder=Layer("static", _FRAME.pixels, _FEATURES, tiles=1, lanes_per_tile=8, ram="SPRAM"),
        plastic=Layer("plastic", _FEATURES + _HIDDEN, _HIDDEN, tiles=1, lanes_per_tile=1,
                      ram="SPRAM"),
    ),
    # The same network on 4 encoder tiles x 16 lanes and 8 plastic tiles x 2 lanes of EBR.
    "ulx3s-85f": Preset(
        name="ulx3s-85f",
        board=BOARDS["ulx3s-85f"],
        frame=_FRAME,
        encoder=Layer("static", _FRAME.pixels, _FEATURES, tiles=4, lanes_per_tile=16, ram="EBR"),
        plastic=Layer("plastic", _FEATURES + _HIDDEN, _HIDDEN, tiles=8, lanes_per_tile=2,
                      ram="EBR"),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a ValueError that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None
