"""``mstpn export``: a training checkpoint to a versioned parameter image.

The student of :mod:`mstpn.host.train` holds real-valued parameters in exactly the image's
fields; :meth:`~mstpn.model.image.ParamImage.from_float` quantises them with the same rounding the
student trained with, so the image's golden model reproduces the student's fixed-point forward
pass bit for bit. A device-to-device spread (:func:`mstpn.model.spread.apply_spread`) can be baked
in with its seed. Reading a checkpoint needs torch (the ``train`` extra).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from ..model.image import ParamImage
from ..model.spread import apply_spread
from ..spec.device import DeviceModel
from .train.settings import DAGGER, FORWARD_KL

__all__ = ["checkpoint_params", "export_checkpoint"]


def checkpoint_params(path: str | Path, ema: bool = False) -> tuple[dict, dict]:
    """The real-valued image fields of a checkpoint, and its stored config and counters.

    With ``ema``, the fields come from the running average of the parameters that training
    keeps beside them.

    Raises
    ------
    ImportError
        If torch is not installed.
    """
    try:
        from .train.trainer import load_checkpoint, model_from_checkpoint
    except ImportError as exc:  # torch missing
        raise ImportError(
            f"reading a training checkpoint needs torch: install the train extra "
            f"(uv run --extra train ...): {exc}"
        ) from None
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, ema=ema)
    info = {"config": ckpt["config"], "counters": ckpt["counters"], "best": ckpt.get("best")}
    return model.real_params(), info


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    spread_sigma: float | None = None,
    spread_seed: int = 0,
    noise_seed: int = 1,
    device: DeviceModel | None = None,
    ema: bool = False,
) -> ParamImage:
    """Quantise a checkpoint's student into an image and save it (atomically) at ``out``.

    Parameters
    ----------
    checkpoint : path
        A ``.pt`` checkpoint of ``mstpn train``.
    out : path
        The image file to write.
    spread_sigma, spread_seed
        Bake in a device-to-device spread of this relative sigma, drawn from this seed.
    noise_seed : int
        The LFSR seed stored in the image.
    device : DeviceModel, optional
        Override the device options the student was trained with.
    ema : bool
        Export the running average of the parameters instead of the latest ones.

    Returns
    -------
    ParamImage
        The saved image.
    """
    checkpoint = Path(checkpoint)
    params, info = checkpoint_params(checkpoint, ema=ema)
    cfg = info["config"]
    device = device or DeviceModel.from_dict(cfg["device"])
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    meta = {
        "description": "m-STPN Pong agent trained by mstpn train",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": digest,
        "weights": "running average" if ema else "latest",
        "stage": cfg["stage"],
        "train_seed": cfg["seed"],
        "frames": int(info["counters"]["frames"]),
        "wall_s": round(float(info["counters"]["wall_s"]), 1),
        "best_mean20": info["best"] if info["best"] not in (None, float("-inf")) else None,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Name only what shaped this stage: an A2C run's config still carries the default teacher.
    if cfg["stage"] == DAGGER:
        meta["teacher"] = cfg.get("teacher")
    else:
        meta["init"] = cfg.get("init")
        meta["kl_weight"] = cfg.get("kl_weight", 0.0)
        if meta["kl_weight"]:
            meta["kl_direction"] = cfg.get("kl_direction", FORWARD_KL)
        if cfg.get("temperature", 1.0) != 1.0:
            meta["temperature"] = cfg["temperature"]
    image = ParamImage.from_float(cfg["preset"], params, device, noise_seed=noise_seed, meta=meta)
    if spread_sigma:
        image = apply_spread(image, spread_sigma, spread_seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return image
