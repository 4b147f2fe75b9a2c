"""The accelerator's event counters: their names, order and width, defined once.

The engine keeps them, the protocol's COUNTERS reply and STEP's optional counters carry them in
this order, the golden model reproduces them, and the energy ledger turns them into joules.
docs/spec.md says what each counts.
"""

__all__ = ["COUNTER_NAMES", "COUNTER_BITS"]

#: steps: decisions; macs: synaptic multiply-accumulates (static and plastic); f_writes: writes of
#: F (one per plastic synapse per step); potentiation/depression: F writes that raised/lowered F.
COUNTER_NAMES = ("steps", "macs", "f_writes", "potentiation", "depression")
#: Width of each counter in the hardware (wraps after 2**48 events: years at full speed).
COUNTER_BITS = 48
