"""The bit-exact golden model of the m-STPN accelerator, in numpy integer arithmetic.

This is the reference that the Amaranth testbenches, the cocotb tests, the host's ``model``
backend and the exporter check against. It computes exactly what ``docs/spec.md`` defines, in the
order the hardware does: one pass over the synapses per step, with step t-1's plastic update of F
fused into step t's read. It runs a batch of independent episodes at once and keeps the
counters the hardware keeps.

Every intermediate is an exact integer (int64, which holds the widest intermediate of
docs/spec.md, 40 bits, with room to spare).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..spec.counters import COUNTER_NAMES
from ..spec.device import DeviceModel
from ..spec.preprocess import unpack_bits
from ..spec.presets import FrameGeometry, Preset
from ..spec.qformat import (
    ACT_ONE,
    ASYM,
    DECAY_ALIGN,
    ENC_NORM_SHIFT,
    HEBB_FRAC,
    PLASTIC_NORM_SHIFT,
    SHORT_TERM,
    TANH_INDEX_BITS,
    f_to_g,
    tanh_table,
)
from .noise import LaneNoise

__all__ = ["COUNTER_NAMES", "Counters", "StepOutput", "GoldenModel", "neuron", "frames_to_bits"]

_TANH = tanh_table()
_TANH_MAX_INDEX = (1 << TANH_INDEX_BITS) - 1


def neuron(acc: np.ndarray, gain: np.ndarray, bias: np.ndarray, shift: int) -> np.ndarray:
    """The neuron periphery: normalise, add the bias, look up tanh.

    ``u = ((acc * gain + 2**(shift-1)) >> shift) + bias`` (round half up, arithmetic shift), then
    ``h = sign(u) * TANH[min(|u|, 511)]``.

    Parameters
    ----------
    acc : numpy.ndarray
        Accumulated dot products, int64, neurons on the last axis.
    gain, bias : numpy.ndarray
        Per-neuron gain and bias codes.
    shift : int
        The layer's normalisation shift.

    Returns
    -------
    numpy.ndarray
        Codes of :data:`~mstpn.spec.qformat.ACT`, int64.
    """
    half = (1 << shift) >> 1
    u = ((acc * gain.astype(np.int64) + half) >> shift) + bias.astype(np.int64)
    return np.sign(u) * _TANH[np.minimum(np.abs(u), _TANH_MAX_INDEX)]


def frames_to_bits(frames: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Binary inputs as (batch, pixels) int64 from packed bytes or boolean images.

    Packed frames are (batch, bytes) uint8 as :func:`mstpn.spec.preprocess.pack_bits` makes
    them; boolean frames are (batch, rows, cols).
    """
    frames = np.asarray(frames)
    if frames.dtype == np.uint8 and frames.ndim == 2:
        frames = unpack_bits(frames, geometry)
    elif frames.dtype != np.bool_ or frames.ndim != 3:
        raise ValueError(
            "frames must be packed (batch, bytes) uint8 or boolean (batch, rows, cols), "
            f"not {frames.dtype} of shape {frames.shape}"
        )
    if frames.shape[1:] != (geometry.rows, geometry.cols):
        raise ValueError(
            f"frames must be {geometry.rows}x{geometry.cols} pixels, not "
            f"{frames.shape[1]}x{frames.shape[2]}"
        )
    return frames.reshape(frames.shape[0], -1).astype(np.int64)


@dataclass
class Counters:
    """The accelerator's event counters, one entry per episode of the batch.

    Attributes
    ----------
    steps : numpy.ndarray
        Network steps (decisions).
    macs : numpy.ndarray
        Synaptic multiply-accumulates, static and plastic (the head's are not counted).
    f_writes : numpy.ndarray
        Writes of F: every plastic synapse is written once per step.
    potentiation, depression : numpy.ndarray
        F writes that raised, or lowered, the stored value: the device's pulses.
    """

    steps: np.ndarray
    macs: np.ndarray
    f_writes: np.ndarray
    potentiation: np.ndarray
    depression: np.ndarray

    @classmethod
    def zeros(cls, batch: int) -> Counters:
        """All counters at zero."""
        return cls(*(np.zeros(batch, dtype=np.int64) for _ in COUNTER_NAMES))

    def clear(self, which: np.ndarray | None = None) -> None:
        """Zero the counters (of the selected episodes)."""
        for value in self.as_dict().values():
            value[slice(None) if which is None else which] = 0

    def as_dict(self) -> dict[str, np.ndarray]:
        """Name -> per-episode array."""
        return {name: getattr(self, name) for name in COUNTER_NAMES}


@dataclass
class StepOutput:
    """What one step produced, per episode of the batch."""

    x: np.ndarray  #: the plastic layer's feed-forward input (encoder outputs or lit pixels)
    h: np.ndarray  #: hidden state h_t, codes of ACT
    logits: np.ndarray  #: V h + c, int64
    action: np.ndarray  #: argmax of the logits (ties: the lowest index)
    extra: dict = field(default_factory=dict)


class GoldenModel:
    """The fixed-point m-STPN, bit-exact to the hardware, for a batch of episodes.

    Parameters
    ----------
    preset : Preset
        Geometry and tiling (the tiling fixes which lane draws which noise).
    arrays : Mapping[str, numpy.ndarray]
        The parameter image's integer arrays (see :mod:`mstpn.model.image`).
    device : DeviceModel
        The device-model options.
    batch : int
        Independent episodes run side by side.
    noise_seed : int
        Seed of the LFSRs (used only when ``device.noise_bits`` > 0).
    """

    def __init__(
        self,
        preset: Preset,
        arrays: Mapping[str, np.ndarray],
        device: DeviceModel | None = None,
        batch: int = 1,
        noise_seed: int = 1,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.preset = preset
        self.device = device or DeviceModel()
        self.batch = batch
        p = {name: np.asarray(value).astype(np.int64) for name, value in arrays.items()}
        self._p = p
        hidden, inputs = preset.hidden, preset.plastic.inputs
        if p["w"].shape != (hidden, inputs):
            raise ValueError(f"w must be {(hidden, inputs)}, not {p['w'].shape}")
        if preset.encoder is not None:
            self._enc_w_t = np.ascontiguousarray(p["enc_w"].T)
        self._noise = (
            LaneNoise(preset.plastic.lanes, hidden, inputs, self.device.noise_bits, batch)
            if self.device.noise_bits
            else None
        )
        self.noise_seed = noise_seed
        self.f = np.zeros((batch, hidden, inputs), dtype=np.int8)
        self.h = np.zeros((batch, hidden), dtype=np.int64)
        self._pending_h = np.zeros((batch, hidden), dtype=np.int64)
        self._pending_z = np.zeros((batch, inputs), dtype=np.int64)
        self.counters = Counters.zeros(batch)
        self.reset()

    @classmethod
    def from_image(cls, image, batch: int = 1, noise_seed: int | None = None) -> GoldenModel:
        """A model of a :class:`~mstpn.model.image.ParamImage` (its device model and seed)."""
        seed = image.noise_seed if noise_seed is None else noise_seed
        return cls(image.preset, image.arrays, image.device, batch=batch, noise_seed=seed)

    # --- episode control -----------------------------------------------------------------------

    def _select(self, which: np.ndarray | None) -> np.ndarray | slice:
        if which is None:
            return slice(None)
        which = np.asarray(which, dtype=bool)
        if which.shape != (self.batch,):
            raise ValueError(f"episode mask must have shape ({self.batch},), not {which.shape}")
        return which

    def reset(self, which: np.ndarray | None = None) -> None:
        """Start new episodes: F, h and the pending update to 0, the LFSRs reseeded.

        The counters are not cleared (the hardware's run until read); see :meth:`Counters.clear`.
        """
        sel = self._select(which)
        self.f[sel] = 0
        self.h[sel] = 0
        self._pending_h[sel] = 0
        self._pending_z[sel] = 0
        if self._noise is not None:
            self._noise.seed(self.noise_seed, None if which is None else sel)

    def set_seed(self, seed: int) -> None:
        """SET_SEED: load the LFSRs of every episode from ``seed`` (kept for later resets)."""
        self.noise_seed = seed
        if self._noise is not None:
            self._noise.seed(seed)

    # --- the step ------------------------------------------------------------------------------

    def encode(self, bits: np.ndarray) -> np.ndarray:
        """x_t from the binary frame: the static encoder's outputs, or the lit pixels."""
        if self.preset.encoder is None:
            return bits * ACT_ONE
        # Frames are sparse (a few dozen lit pixels of 3,200), so summing the weight rows of the lit
        # pixels is exact and fast, with no BLAS threads to fight over a busy machine.
        acc = np.stack([self._enc_w_t[np.flatnonzero(row)].sum(axis=0) for row in bits])
        return neuron(acc, self._p["enc_gain"], self._p["enc_bias"], ENC_NORM_SHIFT)

    def _fused_update(self) -> np.ndarray:
        """Apply step t-1's pending plastic update to F; return the new F as int64."""
        dev, p = self.device, self._p
        f_old = self.f.astype(np.int64)
        hebb = p["plasticity"] * (self._pending_h[:, :, None] * self._pending_z[:, None, :])
        frac = HEBB_FRAC
        if dev.asymmetry:
            hebb = hebb * np.where(hebb >= 0, dev.asym_up, dev.asym_down)
            frac += ASYM.frac
        if dev.soft_bound:
            g_old = np.clip(p["w"] + f_to_g(f_old), dev.g_min, dev.g_max)
            hebb = hebb * np.where(hebb >= 0, dev.g_max - g_old, g_old - dev.g_min)
            frac += dev.soft_bound_frac
        acc = ((p["decay"] * f_old) << (DECAY_ALIGN + frac - HEBB_FRAC)) + hebb
        shift = frac + dev.level_shift
        if self._noise is None:
            acc += 1 << (shift - 1)
        else:
            acc += self._noise.draw() << (shift - dev.noise_bits)
        f_new = np.clip((acc >> shift) << dev.level_shift, dev.f_lo, dev.f_hi)
        c = self.counters
        c.f_writes += f_new[0].size
        c.potentiation += (f_new > f_old).sum(axis=(1, 2))
        c.depression += (f_new < f_old).sum(axis=(1, 2))
        return f_new

    def step(self, frames: np.ndarray) -> StepOutput:
        """One decision for every episode of the batch.

        Parameters
        ----------
        frames : numpy.ndarray
            (batch, bytes) packed uint8 frames, or (batch, rows, cols) booleans.

        Returns
        -------
        StepOutput
        """
        bits = frames_to_bits(frames, self.preset.frame)
        if bits.shape[0] != self.batch:
            raise ValueError(f"expected {self.batch} frames, got {bits.shape[0]}")
        p, dev = self._p, self.device
        x = self.encode(bits)
        z = np.concatenate([x, self.h], axis=1)
        f_new = self._fused_update()
        g = np.clip(p["w"] + f_to_g(f_new), dev.g_min, dev.g_max)
        acc = np.einsum("bhn,bn->bh", g, z)
        h = neuron(acc, p["gain"], p["bias"], PLASTIC_NORM_SHIFT)
        logits = h @ p["head_w"].T + p["head_bias"]
        action = np.argmax(logits, axis=1)
        self.f = f_new.astype(np.int8)
        # the model's state must not alias what it returns: reset() zeroes it in place
        self.h = h.copy()
        self._pending_h = self.h
        self._pending_z = z
        self.counters.steps += 1
        self.counters.macs += self.preset.synapses
        return StepOutput(x=x, h=h, logits=logits, action=action)

    # --- observation ---------------------------------------------------------------------------

    def f_checksum(self) -> np.ndarray:
        """CRC-32 (zlib) of each episode's stored F, as int8 bytes in row-major order."""
        return np.array([zlib.crc32(f.tobytes()) for f in self.f], dtype=np.uint32)

    def logical_f(self) -> np.ndarray:
        """F with the pending update applied (F_t of the paper's equations), without side effects.

        The hardware stores F one update behind, since the update of step t runs during the read
        of step t+1; this is the state a float model that updates at the end of each step holds.
        """
        saved = (self.f.copy(), self.counters, self._noise.state.copy() if self._noise else None)
        self.counters = Counters.zeros(self.batch)
        try:
            return self._fused_update().astype(np.int8)
        finally:
            self.f, self.counters = saved[0], saved[1]
            if self._noise is not None:
                self._noise.state = saved[2]

    @property
    def pending(self) -> tuple[np.ndarray, np.ndarray]:
        """The (h_t, z_t) that the next step's fused update will use."""
        return self._pending_h, self._pending_z

    def check_f_range(self) -> None:
        """Assert that F lies on the device's grid (a self-check for tests)."""
        assert self.f.min() >= self.device.f_lo and self.f.max() <= self.device.f_hi
        assert not np.any(self.f.astype(np.int64) % (1 << self.device.level_shift))
        assert SHORT_TERM.lo <= self.f.min()
