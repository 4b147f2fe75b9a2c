"""The float reference m-STPN: the same network as the golden model, in float64, unquantised.

It has the golden model's interface (``reset``, ``step``, ``counters``), so the quantisation
study, the trainer's agreement report and the tests can run both side by side. What it leaves out
is exactly what quantisation adds: the grids of W, F, lambda, gamma, h and the tanh table, the
rounding, and the LFSR noise. The conductance window, soft bounds and asymmetry are kept, in real
units, since they are properties of the device rather than of the number format.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..spec.device import DeviceModel
from ..spec.presets import Preset
from ..spec.qformat import ACT, ACT_ONE, ASYM, CONDUCTANCE, SHORT_TERM
from .golden import Counters, StepOutput, frames_to_bits

__all__ = ["FloatModel"]


class FloatModel:
    """The m-STPN in float64, for a batch of episodes.

    Parameters
    ----------
    preset : Preset
        The geometry.
    params : Mapping[str, numpy.ndarray]
        Real-valued parameters under the image's field names (``w``, ``decay``, ``gain`` ...), as
        :meth:`mstpn.model.image.ParamImage.dequantized` returns them or a trainer holds them.
    device : DeviceModel
        Device options; the window, soft bounds and asymmetry apply, levels and noise do not.
    batch : int
        Independent episodes.
    """

    def __init__(
        self,
        preset: Preset,
        params: Mapping[str, np.ndarray],
        device: DeviceModel | None = None,
        batch: int = 1,
    ) -> None:
        self.preset = preset
        self.device = device or DeviceModel()
        self.batch = batch
        self._p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        dev = self.device
        self._g_min = dev.g_min * CONDUCTANCE.scale
        self._g_max = dev.g_max * CONDUCTANCE.scale
        self._f_lo = dev.f_lo * SHORT_TERM.scale
        self._f_hi = dev.f_hi * SHORT_TERM.scale
        self._span = (1 << dev.soft_bound_frac) * CONDUCTANCE.scale if dev.soft_bound else 1.0
        hidden, inputs = preset.hidden, preset.plastic.inputs
        self.f = np.zeros((batch, hidden, inputs))
        self.h = np.zeros((batch, hidden))
        self._pending_h = np.zeros((batch, hidden))
        self._pending_z = np.zeros((batch, inputs))
        self.counters = Counters.zeros(batch)

    @classmethod
    def from_image(cls, image, batch: int = 1) -> FloatModel:
        """The float twin of a parameter image (its dequantised values)."""
        return cls(image.preset, image.dequantized(), image.device, batch=batch)

    def reset(self, which: np.ndarray | None = None) -> None:
        """Start new episodes (F, h and the pending update to 0)."""
        sel = slice(None) if which is None else np.asarray(which, dtype=bool)
        self.f[sel] = 0.0
        self.h[sel] = 0.0
        self._pending_h[sel] = 0.0
        self._pending_z[sel] = 0.0

    def set_seed(self, seed: int) -> None:
        """No effect: the float model has no noise."""

    def encode(self, bits: np.ndarray) -> np.ndarray:
        """x_t: tanh of the encoder's normalised sums, or the lit pixels."""
        p = self._p
        if self.preset.encoder is None:
            return bits * (ACT_ONE * ACT.scale)
        enc_w_t = p["enc_w"].T
        acc = np.stack([enc_w_t[np.flatnonzero(row)].sum(axis=0) for row in bits])
        return np.tanh(acc * p["enc_gain"] + p["enc_bias"])

    def step(self, frames: np.ndarray) -> StepOutput:
        """One decision per episode; see :meth:`mstpn.model.golden.GoldenModel.step`."""
        p, dev = self._p, self.device
        bits = frames_to_bits(frames, self.preset.frame).astype(np.float64)
        x = self.encode(bits)
        z = np.concatenate([x, self.h], axis=1)
        f_old = self.f
        hebb = p["plasticity"] * self._pending_h[:, :, None] * self._pending_z[:, None, :]
        if dev.asymmetry:
            hebb = hebb * np.where(hebb >= 0, dev.asym_up, dev.asym_down) * ASYM.scale
        if dev.soft_bound:
            g_old = np.clip(p["w"] + f_old, self._g_min, self._g_max)
            hebb = hebb * np.where(hebb >= 0, self._g_max - g_old, g_old - self._g_min) / self._span
        f_new = np.clip(p["decay"] * f_old + hebb, self._f_lo, self._f_hi)
        self.counters.f_writes += f_new[0].size
        self.counters.potentiation += (f_new > f_old).sum(axis=(1, 2))
        self.counters.depression += (f_new < f_old).sum(axis=(1, 2))
        g = np.clip(p["w"] + f_new, self._g_min, self._g_max)
        h = np.tanh(np.einsum("bhn,bn->bh", g, z) * p["gain"] + p["bias"])
        logits = h @ p["head_w"].T + p["head_bias"]
        self.f, self.h = f_new, h
        self._pending_h, self._pending_z = h, z
        self.counters.steps += 1
        self.counters.macs += self.preset.synapses
        return StepOutput(x=x, h=h, logits=logits, action=np.argmax(logits, axis=1))
