"""Device-to-device spread: one chip's fixed deviations, baked into its parameter image at export.

Real memristors of one nominal kind differ from device to device: each has its own conductance
range, step size and relaxation. This is a property of one chip, fixed for its life, so mstpn
applies it once, at export, to the parameter image with a seed; the gateware needs no logic for it
and the golden model sees it as ordinary parameters.

Each selected per-synapse parameter of the plastic layer gets a multiplicative Gaussian
deviation::

    real' = real * (1 + sigma * N(0, 1))

re-quantised with the field's Q-format (round to nearest, saturating). The deviations of W model
the spread of the programmed long-term conductance, those of lambda the spread of the relaxation
time, those of gamma the spread of the update step size. Note that for large sigma the factor
``1 + sigma * N(0, 1)`` can be negative (about 16 % of draws at sigma = 1), which flips a signed
parameter's sign and drives an unsigned one (lambda) to 0.

Relation to other simulators: aihwkit's pulsed devices draw, once per device when the array is
built, a Gaussian deviation of the step size (``dw_min_dtod``), of the up/down asymmetry
(``up_down_dtod``), of the bounds (``w_max_dtod``, ``w_min_dtod``) and of the decay lifetime
(``lifetime_dtod``), each with the given relative standard deviation. NeuroSim's device-to-device
variation likewise fixes, per cell, a Gaussian deviation of the nonlinearity and of the
conductance range (as opposed to its cycle-to-cycle variation, redrawn at every pulse). Here
``sigma`` plays the part of those ``*_dtod`` parameters: on gamma it is the spread of the update
step size (``dw_min_dtod``), on lambda the spread of retention (``lifetime_dtod``), and on W the
spread of the programmed long-term conductance (what ``w_max_dtod``/``w_min_dtod`` do to the
reachable range).

Cycle-to-cycle noise, which does change from step to step, is a device option
(:attr:`mstpn.spec.device.DeviceModel.noise_bits`), not this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .image import FIELDS_BY_NAME, PLASTIC_FIELDS, ParamImage

__all__ = ["apply_spread", "SPREAD_FIELDS"]

#: The fields that can carry a spread, in the fixed order of the draws.
SPREAD_FIELDS: tuple[str, ...] = PLASTIC_FIELDS


def apply_spread(
    image: ParamImage,
    sigma: float,
    seed: int,
    fields: Iterable[str] = ("w", "decay", "plasticity"),
) -> ParamImage:
    """A copy of ``image`` with a device-to-device spread applied to the plastic layer.

    The draws come from ``numpy.random.default_rng(seed)``: one standard normal per synapse for
    every field of :data:`SPREAD_FIELDS`, in that order (each a row-major array of the layer's
    shape), whether or not the field is selected, so a field's deviations depend only on the seed
    and never on which other fields are selected.

    Parameters
    ----------
    image : ParamImage
        A valid image without a spread.
    sigma : float
        The relative standard deviation, in [0, 1]. 0 leaves every array as it is.
    seed : int
        The seed of this chip's spread (a non-negative integer).
    fields : iterable of str
        Which of :data:`SPREAD_FIELDS` to perturb.

    Returns
    -------
    ParamImage
        The perturbed image, with ``spread = {"sigma", "seed", "fields"}`` recorded.

    Raises
    ------
    ValueError
        If the image already has a spread, sigma is not in [0, 1], the seed is not a
        non-negative integer, or a field is not a plastic per-synapse parameter.
    """
    if image.spread is not None:
        raise ValueError(
            f"the image already has a device-to-device spread (sigma {image.spread.get('sigma')},"
            f" seed {image.spread.get('seed')}); apply spread to the unspread export instead"
        )
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, int | float | np.floating | np.integer)
        or not math.isfinite(sigma)
        or not 0.0 <= sigma <= 1.0
    ):
        raise ValueError(f"spread sigma must be a number in [0, 1], not {sigma!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"spread seed must be a non-negative integer, not {seed!r}")
    if isinstance(fields, str):
        fields = (fields,)
    chosen = list(fields)
    for name in chosen:
        if name not in SPREAD_FIELDS:
            raise ValueError(
                f"spread field {name!r} is not a per-synapse parameter of the plastic layer; "
                f"choose from {', '.join(SPREAD_FIELDS)}"
            )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"spread fields repeat: {chosen}")
    image.validate()

    rng = np.random.default_rng(int(seed))
    changes = {}
    for name in SPREAD_FIELDS:
        codes = image.arrays[name]
        deviation = rng.standard_normal(codes.shape)
        if name not in chosen:
            continue
        fmt = FIELDS_BY_NAME[name].fmt
        real = fmt.to_real(codes) * (1.0 + float(sigma) * deviation)
        changes[name] = fmt.quantize(real).astype(codes.dtype)
    result = image.with_arrays(**changes)
    result.spread = {
        "sigma": float(sigma),
        "seed": int(seed),
        "fields": [name for name in SPREAD_FIELDS if name in chosen],
    }
    return result.validate()
