"""The fixed-point formats of every m-STPN quantity: the one definition.

The gateware (:mod:`mstpn.hdl`), the golden model (:mod:`mstpn.model`), the trainer and the
exporter read their widths from here, so a change of Q-format is one edit in this file.
``docs/spec.md`` explains each choice and the quantisation study behind it.

A value's *code* is the integer held in hardware; its real value is ``code * 2**-frac``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "QFormat",
    "PIXEL",
    "ACT",
    "ACT_ONE",
    "ENC_WEIGHT",
    "WEIGHT",
    "SHORT_TERM",
    "CONDUCTANCE",
    "DECAY",
    "PLASTICITY",
    "ENC_GAIN",
    "GAIN",
    "BIAS",
    "HEAD_WEIGHT",
    "HEAD_BIAS",
    "ASYM",
    "TANH_INDEX_BITS",
    "ENC_NORM_SHIFT",
    "PLASTIC_NORM_SHIFT",
    "HEBB_FRAC",
    "DECAY_ALIGN",
    "F_TO_G_SHIFT",
    "f_to_g",
    "SOFT_BOUND_FRAC_MAX",
    "NOISE_BITS_MAX",
    "tanh_table",
    "format_table",
    "format_hash",
]


@dataclass(frozen=True)
class QFormat:
    """A two's-complement (or unsigned) fixed-point format.

    Parameters
    ----------
    name : str
        The quantity's name in the spec (``"w"``, ``"lambda"``, ...).
    bits : int
        Total width of the code, sign bit included.
    frac : int
        Fraction bits: the real value is ``code * 2**-frac``.
    signed : bool
        Two's complement when true, unsigned otherwise.

    Raises
    ------
    ValueError
        If ``bits`` is not in 1..32.
    """

    name: str
    bits: int
    frac: int
    signed: bool

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 32:
            raise ValueError(f"QFormat {self.name!r}: bits must be in 1..32, not {self.bits}")

    @property
    def lo(self) -> int:
        """The smallest code."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        """The largest code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """The real value of one code step (one LSB)."""
        return 2.0**-self.frac

    def quantize(self, real: np.ndarray | float) -> np.ndarray:
        """Round a real value to the nearest code (ties away from zero) and saturate."""
        scaled = np.asarray(real, dtype=np.float64) / self.scale
        codes = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        return np.clip(codes, self.lo, self.hi).astype(np.int64)

    def to_real(self, codes: np.ndarray | int) -> np.ndarray:
        """The real value of codes."""
        return np.asarray(codes, dtype=np.float64) * self.scale

    def describe(self) -> str:
        """Q-notation such as ``Q2.6 (int8)`` or ``UQ0.8 (uint8)``."""
        kind = f"{'int' if self.signed else 'uint'}{self.bits}"
        prefix = "Q" if self.signed else "UQ"
        return f"{prefix}{self.bits - self.frac}.{self.frac} ({kind})"


# --- Inputs and activations -------------------------------------------------------------------

#: One pixel of the binarised, bit-packed frame.
PIXEL = QFormat("x", 1, 0, False)
#: Neuron outputs h, encoder outputs and every entry of z = [x; h]. The tanh never produces -128,
#: so the codes are symmetric in [-127, 127].
ACT = QFormat("h", 8, 7, True)
#: The code a lit pixel takes when the raw frame feeds the plastic layer directly (no encoder).
ACT_ONE = 127

# --- The static encoder layer (W only, like a conventional crossbar) ---------------------------

#: Encoder weights: 2-bit integer codes {-2, -1, 0, 1}; the per-neuron gain carries their scale.
ENC_WEIGHT = QFormat("w_enc", 2, 0, True)

# --- The plastic m-STPN layer ------------------------------------------------------------------

#: Long-term weight W.
WEIGHT = QFormat("w", 8, 6, True)
#: Short-term (volatile) state F. It may have more fraction bits than W, so that small Hebbian
#: steps accumulate instead of being rounded away; G then adds F rounded to W's grid.
SHORT_TERM = QFormat("f", 8, 8, True)
#: Conductance G = sat(W + F), clamped to the device window, which lies inside this format.
CONDUCTANCE = QFormat("g", 8, 6, True)
#: Decay lambda (the device's relaxation), in [0, 255/256].
DECAY = QFormat("lambda", 8, 8, False)
#: Meta-plastic update strength gamma, in [-1, 127/128].
PLASTICITY = QFormat("gamma", 8, 7, True)

# --- Neuron periphery and head -----------------------------------------------------------------

#: Per-neuron gain of the encoder's periphery: u = ((a * gain) >> ENC_NORM_SHIFT) + b. Its
#: accumulator counts integer weight codes times binary pixels, so the gain is a small real.
ENC_GAIN = QFormat("enc_gain", 8, 11, False)
#: Per-neuron gain of the plastic layer's periphery normalisation, in [0, 2).
GAIN = QFormat("gain", 8, 7, False)
#: Bias b, added in the pre-activation domain u, which has ACT.frac fraction bits.
BIAS = QFormat("b", 16, ACT.frac, True)
#: Actor-head weights V.
HEAD_WEIGHT = QFormat("v", 8, 6, True)
#: Actor-head bias c, in the scale of the products V * h.
HEAD_BIAS = QFormat("c", 24, HEAD_WEIGHT.frac + ACT.frac, True)
#: Up/down asymmetry factors of the Hebbian step: 16 is 1.0.
ASYM = QFormat("asym", 8, 4, False)

#: The tanh table is indexed by |u| saturated to 2**TANH_INDEX_BITS - 1, with u in ACT.frac
#: fraction bits: 512 entries cover |u| < 4, where tanh reaches 127/128.
TANH_INDEX_BITS = 9

#: Right shift of a * gain in the encoder's periphery: it brings the product to the pre-activation
#: u, which has ACT.frac fraction bits. The accumulator has ENC_WEIGHT.frac + PIXEL.frac.
ENC_NORM_SHIFT = ENC_WEIGHT.frac + PIXEL.frac + ENC_GAIN.frac - ACT.frac
#: The same shift in the plastic layer, whose accumulator has CONDUCTANCE.frac + ACT.frac.
PLASTIC_NORM_SHIFT = CONDUCTANCE.frac + ACT.frac + GAIN.frac - ACT.frac

#: Fraction bits, below one F step, of the Hebbian product gamma * h * z.
HEBB_FRAC = PLASTICITY.frac + 2 * ACT.frac - SHORT_TERM.frac
#: Left shift that aligns lambda * F to the Hebbian product.
DECAY_ALIGN = HEBB_FRAC - DECAY.frac
#: Largest soft-bound span shift: the window's span never exceeds the conductance range.
SOFT_BOUND_FRAC_MAX = CONDUCTANCE.bits

#: Widest noise draw per synapse per step: the dither must fit below one F step.
NOISE_BITS_MAX = HEBB_FRAC

if DECAY_ALIGN < 0 or ENC_NORM_SHIFT < 0 or PLASTIC_NORM_SHIFT < 0:
    raise AssertionError("a shift derived from the formats is negative: the formats do not chain")
#: Right shift (round half up) that brings F to the grid of W and G: G = W + round(F / 2**shift).
F_TO_G_SHIFT = SHORT_TERM.frac - CONDUCTANCE.frac

if WEIGHT.frac != CONDUCTANCE.frac or F_TO_G_SHIFT < 0:
    raise AssertionError("W must be on G's grid, and F on it or finer")


def f_to_g(f: np.ndarray | int) -> np.ndarray | int:
    """F's contribution to G, on G's grid: F rounded half up by :data:`F_TO_G_SHIFT` bits."""
    if F_TO_G_SHIFT == 0:
        return f
    return (f + (1 << (F_TO_G_SHIFT - 1))) >> F_TO_G_SHIFT


def tanh_table() -> np.ndarray:
    """The neuron's tanh table: entry k is round(128 * tanh(k / 128)), at most 127.

    Returns
    -------
    numpy.ndarray
        ``2**TANH_INDEX_BITS`` codes of :data:`ACT`, as int64.
    """
    k = np.arange(1 << TANH_INDEX_BITS, dtype=np.float64)
    one = float(1 << ACT.frac)
    return np.minimum(np.floor(one * np.tanh(k / one) + 0.5), ACT.hi).astype(np.int64)


_ALL = (
    PIXEL, ACT, ENC_WEIGHT, ENC_GAIN, WEIGHT, SHORT_TERM, CONDUCTANCE, DECAY, PLASTICITY, GAIN,
    BIAS,
    HEAD_WEIGHT, HEAD_BIAS, ASYM,
)


def format_table() -> dict:
    """Every format and constant of this module, as plain data (for images and INFO)."""
    return {
        "formats": {q.name: asdict(q) for q in _ALL},
        "act_one": ACT_ONE,
        "tanh_index_bits": TANH_INDEX_BITS,
        "enc_norm_shift": ENC_NORM_SHIFT,
        "plastic_norm_shift": PLASTIC_NORM_SHIFT,
        "f_to_g_shift": F_TO_G_SHIFT,
        "tanh_table_sha256": hashlib.sha256(tanh_table().astype("<i2").tobytes()).hexdigest(),
    }


def format_hash() -> int:
    """A 32-bit hash of :func:`format_table`: equal hashes mean equal arithmetic."""
    blob = json.dumps(format_table(), sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")
