"""The layouts at the engine's boundary (docs/engine-interface.md), shared by the engine, the
dispatcher of the top level and the stand-in engine."""

from __future__ import annotations

import enum

from amaranth import signed
from amaranth.lib import data

from ..spec.counters import COUNTER_BITS, COUNTER_NAMES
from ..spec.presets import Preset

__all__ = ["Control", "COUNTER_BITS", "control_layout", "step_result_layout", "counter_layout",
           "param_write_layout"]



class Control(enum.IntEnum):
    """Operations of the engine's ``control`` stream."""

    RESET_STATE = 0
    SET_SEED = 1
    CLEAR_COUNTERS = 2


def control_layout() -> data.StructLayout:
    """One control operation, with the seed for SET_SEED."""
    return data.StructLayout({"op": 2, "seed": 32})


def step_result_layout(preset: Preset) -> data.StructLayout:
    """One step's result: the action and every logit."""
    return data.StructLayout({
        "action": 2,
        "logits": data.ArrayLayout(signed(32), preset.actions),
    })


def counter_layout() -> data.StructLayout:
    """The event counters (docs/spec.md)."""
    return data.StructLayout({name: COUNTER_BITS for name in COUNTER_NAMES})


def param_write_layout(address_bits: int) -> data.StructLayout:
    """One byte written into the parameter address map."""
    return data.StructLayout({"addr": address_bits, "data": 8})
