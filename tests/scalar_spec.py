"""docs/spec.md's fused F update for one synapse, transcribed with Python integers.

The golden model vectorises this; the scalar reference of tests/test_golden.py and the engine's
tile testbench in tests/test_hdl_units.py both compare against this one transcription.
"""

from mstpn.spec import qformat as q
from mstpn.spec.device import DeviceModel


def f_to_g(f: int) -> int:
    """F's contribution to G: round half up from Q0.8 to Q2.6 (docs/spec.md 3.2)."""
    shift = q.SHORT_TERM.frac - q.CONDUCTANCE.frac
    return f if shift == 0 else (f + 2 ** (shift - 1)) // 2**shift


def fused_update(dev: DeviceModel, w: int, f_old: int, lam: int, gam: int, hp: int, zp: int,
                 r: int = 0) -> int:
    """F' for one synapse (docs/spec.md 3.3); ``r`` is the noise draw when noise is on."""
    hebb = gam * hp * zp
    frac = q.HEBB_FRAC
    if dev.asymmetry:
        hebb *= dev.asym_up if hebb >= 0 else dev.asym_down
        frac += q.ASYM.frac
    if dev.soft_bound:
        g_old = min(max(w + f_to_g(f_old), dev.g_min), dev.g_max)
        hebb *= (dev.g_max - g_old) if hebb >= 0 else (g_old - dev.g_min)
        frac += dev.soft_bound_frac
    acc = (lam * f_old) * 2 ** (q.DECAY_ALIGN + frac - q.HEBB_FRAC) + hebb
    shift = frac + dev.level_shift
    acc += r * 2 ** (shift - dev.noise_bits) if dev.noise_bits else 2 ** (shift - 1)
    f_new = (acc // 2**shift) * 2**dev.level_shift
    return min(max(f_new, dev.f_lo), dev.f_hi)
