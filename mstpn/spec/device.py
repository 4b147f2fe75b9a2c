"""The device model: the memristor effects that sat() and q() of the m-STPN step carry.

Each option is off or on, and each is bit-reproducible. In the gateware they are elaboration
parameters, and an option that is off costs no logic. ``docs/device-model.md`` relates each one to
aihwkit's PulsedDevice family, NeuroSim's nonlinearity and variation, and the SrTiO3 devices of
Weilenmann et al.

The device-to-device spread is not here: it is a property of one chip's parameter image, applied
at export with a seed (:func:`mstpn.model.spread.apply_spread`), so the hardware needs no logic for
it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .qformat import ASYM, CONDUCTANCE, NOISE_BITS_MAX, SHORT_TERM

__all__ = ["DeviceModel"]


@dataclass(frozen=True)
class DeviceModel:
    """Device-model options of the plastic layer.

    Parameters
    ----------
    g_min, g_max : int
        The conductance window, in codes of :data:`~mstpn.spec.qformat.CONDUCTANCE`: G = W + F is
        clamped to it before the multiply. The default is the whole format.
    level_shift : int
        The F grid: F moves in steps of ``2**level_shift`` codes, so it has
        ``256 >> level_shift`` levels. 0 is the full 8-bit grid.
    soft_bound : bool
        State-dependent steps: a potentiating Hebbian step is scaled by the distance of G to
        ``g_max``, a depressing one by its distance to ``g_min``, both over the window's span.
    asym_up, asym_down : int or None
        Up/down asymmetry: potentiating and depressing Hebbian steps are scaled by these codes of
        :data:`~mstpn.spec.qformat.ASYM` (16 is 1.0). Both None is off; both or neither must be set.
    noise_bits : int
        Cycle-to-cycle noise: 0 is off (deterministic round-half-up). Otherwise each F update is
        rounded stochastically with this many bits drawn from the lane's LFSR.

    Raises
    ------
    ValueError
        Naming the option and its allowed range.
    """

    g_min: int = CONDUCTANCE.lo
    g_max: int = CONDUCTANCE.hi
    level_shift: int = 0
    soft_bound: bool = False
    asym_up: int | None = None
    asym_down: int | None = None
    noise_bits: int = 0

    def __post_init__(self) -> None:
        for name in ("g_min", "g_max", "level_shift", "noise_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"device option {name} must be an integer, not {value!r}")
        if not CONDUCTANCE.lo <= self.g_min < self.g_max <= CONDUCTANCE.hi:
            raise ValueError(
                f"conductance window [g_min, g_max] = [{self.g_min}, {self.g_max}] must satisfy "
                f"{CONDUCTANCE.lo} <= g_min < g_max <= {CONDUCTANCE.hi}"
            )
        if not 0 <= self.level_shift <= SHORT_TERM.bits - 2:
            raise ValueError(
                f"device option level_shift must be in 0..{SHORT_TERM.bits - 2} "
                f"({1 << SHORT_TERM.bits} down to 4 levels), not {self.level_shift}"
            )
        if not isinstance(self.soft_bound, bool):
            raise ValueError(
                f"device option soft_bound must be true or false, not {self.soft_bound!r}"
            )
        if (self.asym_up is None) != (self.asym_down is None):
            raise ValueError("device options asym_up and asym_down must both be set, or neither")
        for name in ("asym_up", "asym_down"):
            value = getattr(self, name)
            valid = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (valid and ASYM.lo <= value <= ASYM.hi):
                raise ValueError(
                    f"device option {name} must be an integer in {ASYM.lo}..{ASYM.hi} "
                    f"(16 is 1.0), not {value!r}"
                )
        if not 0 <= self.noise_bits <= NOISE_BITS_MAX:
            raise ValueError(
                f"device option noise_bits must be in 0..{NOISE_BITS_MAX} (0 is off), "
                f"not {self.noise_bits}"
            )

    # --- derived quantities: the golden model and the gateware both use these ------------------

    @property
    def asymmetry(self) -> bool:
        """Whether up/down asymmetry is on."""
        return self.asym_up is not None

    @property
    def levels(self) -> int:
        """The number of levels of the F grid."""
        return 1 << (SHORT_TERM.bits - self.level_shift)

    @property
    def f_lo(self) -> int:
        """The lowest F code on the grid."""
        return SHORT_TERM.lo

    @property
    def f_hi(self) -> int:
        """The highest F code on the grid (the top of the format rounded down to a level)."""
        return (SHORT_TERM.hi >> self.level_shift) << self.level_shift

    @property
    def soft_bound_frac(self) -> int:
        """Fraction bits of the soft-bound factor: the bit length of the window's span."""
        return (self.g_max - self.g_min).bit_length() if self.soft_bound else 0

    @property
    def asym_frac(self) -> int:
        """Fraction bits of the asymmetry factor, or 0 when asymmetry is off."""
        return ASYM.frac if self.asymmetry else 0

    def to_dict(self) -> dict:
        """Plain data for the parameter image and INFO."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DeviceModel:
        """The inverse of :meth:`to_dict`; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown device option(s): {', '.join(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        """A one-line summary, for INFO and play's summary."""
        parts = [f"window [{self.g_min}, {self.g_max}]", f"{self.levels} levels"]
        if self.soft_bound:
            parts.append("soft bounds")
        if self.asymmetry:
            parts.append(f"asymmetry up {self.asym_up}/16 down {self.asym_down}/16")
        parts.append(f"noise {self.noise_bits} bits" if self.noise_bits else "no noise")
        return ", ".join(parts)
