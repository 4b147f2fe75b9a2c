"""The trainable m-STPN: the golden model's integer arithmetic in torch, with straight-through
gradients.

This is the student of every training stage. Its forward pass computes, in float64 tensors that
hold integer codes, exactly what :class:`mstpn.model.golden.GoldenModel` computes (docs/spec.md,
section 3): the same Q-formats (read from :mod:`mstpn.spec.qformat`), the same rounding (half away
from zero at quantisation, half up in the periphery), the same saturation, the same 512-entry tanh
table, the same per-neuron gain, the same fused F update of step t-1 applied as step t reads, and
the same device options (window, levels, soft bounds, asymmetry; cycle-to-cycle noise as
stochastic rounding from torch's generator instead of the LFSRs). Every rounding, floor and table
look-up passes its gradient straight through (the gradient of the smooth function it rounds), so
the network learns within the arithmetic it will run in.

Every product is an exact integer below 2**53, so float64 holds it exactly; the unit tests check
the actions, h and F against the golden model bit for bit.

The parameters are real values (the fields of :mod:`mstpn.model.image`, in real units, as
:meth:`mstpn.model.image.ParamImage.from_float` takes them), so export is ``from_float`` of
:meth:`MSTPN.real_params`. A float critic head (value of h), used only in training, sits beside
the actor head.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...model.image import FIELDS_BY_NAME
from ...spec.device import DeviceModel
from ...spec.presets import Preset
from ...spec.qformat import (
    ACT,
    ASYM,
    DECAY_ALIGN,
    ENC_NORM_SHIFT,
    F_TO_G_SHIFT,
    HEBB_FRAC,
    PLASTIC_NORM_SHIFT,
    TANH_INDEX_BITS,
    tanh_table,
)

__all__ = ["MSTPN", "State", "round_away", "quantize_ste", "sum_lit_rows"]

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
_DT = torch.float64


def _ste(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """``exact`` in the forward pass, ``smooth``'s gradient in the backward pass."""
    if not torch.is_grad_enabled():
        return exact
    return smooth + (exact - smooth).detach()


def round_away(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero, as :meth:`mstpn.spec.qformat.QFormat.quantize` does."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def quantize_ste(real: torch.Tensor, name: str) -> torch.Tensor:
    """Codes of the image field ``name`` (rounded, saturated) with a straight-through gradient.

    Within the format's range the gradient is that of ``real / scale``; a saturated code has
    none, as in hardware.
    """
    fmt = FIELDS_BY_NAME[name].fmt
    scaled = real / fmt.scale
    return torch.clamp(_ste(round_away(scaled), scaled), fmt.lo, fmt.hi)


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return _ste(torch.floor(x), x)


class _SynapseStep(torch.autograd.Function):
    """The per-synapse path of one step, fused: F's update, G and the MAC.

    Forward (codes, exactly as :meth:`MSTPN._update_f` and :meth:`MSTPN.step` compute them for a
    device without soft bounds or asymmetry)::

        f_new = clamp(floor((lambda*f_old*2**k + gamma*h_p*z_p + r) / 2**s) * 2**l, F window)
        g     = clamp(w + floor((f_new + 2**(t-1)) / 2**t), G window)
        acc   = g @ z

    Backward: the same straight-through gradients as the unfused graph (each floor passes the
    gradient of its argument, each clamp passes it inside its window), written out so that a
    step costs a handful of (batch, H, N) passes instead of a few dozen autograd nodes.
    """

    @staticmethod
    def forward(ctx, f_old, h_p, z_p, z, decay, plast, w, offset, k_mul, shift, level, f_lo,
                f_hi, g_to, g_lo, g_hi):
        acc = decay * f_old
        acc.mul_(k_mul)
        acc.addcmul_(plast, h_p[:, :, None] * z_p[:, None, :])
        if isinstance(offset, torch.Tensor):
            acc.add_(offset)
        else:
            acc.add_(float(offset))
        f_new = torch.floor(acc.div_(float(1 << shift))).mul_(float(1 << level))
        f_mask = (f_new >= f_lo) & (f_new <= f_hi)
        f_new.clamp_(f_lo, f_hi)
        if g_to:
            g = torch.floor((f_new + float(1 << (g_to - 1))) / float(1 << g_to)).add_(w)
        else:
            g = f_new + w
        g_mask = (g >= g_lo) & (g <= g_hi)
        g.clamp_(g_lo, g_hi)
        out = (g * z[:, None, :]).sum(-1)  # exact: integer partial sums below 2**24
        ctx.save_for_backward(f_old, h_p, z_p, z, decay, plast, f_mask, g_mask, g)
        ctx.consts = (k_mul, float(1 << level) / float(1 << shift), 1.0 / float(1 << g_to))
        return f_new, out

    @staticmethod
    def backward(ctx, grad_f, grad_out):
        f_old, h_p, z_p, z, decay, plast, f_mask, g_mask, g = ctx.saved_tensors
        k_mul, f_scale, g_scale = ctx.consts
        grad_z = (grad_out[:, :, None] * g).sum(1)
        gg = grad_out[:, :, None] * z[:, None, :]
        gg.mul_(g_mask)
        grad_w = gg.sum(0)
        gg.mul_(g_scale)
        if grad_f is not None:
            gg.add_(grad_f)
        gg.mul_(f_mask).mul_(f_scale)  # the gradient of acc
        grad_decay = (gg * f_old).sum(0).mul_(k_mul)
        grad_f_old = (gg * decay).mul_(k_mul)
        grad_plast = (gg * (h_p[:, :, None] * z_p[:, None, :])).sum(0)
        gp = gg.mul_(plast)
        grad_h_p = (gp * z_p[:, None, :]).sum(-1)
        grad_z_p = (gp * h_p[:, :, None]).sum(1)
        return (grad_f_old, grad_h_p, grad_z_p, grad_z, grad_decay, grad_plast, grad_w,
                None, None, None, None, None, None, None, None, None)


def sum_lit_rows(bits: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``bits @ table`` for binary frames (batch, pixels), by summing the lit pixels' rows.

    The frames are sparse (a few dozen lit pixels of 3,200): the sum is the same product (exact
    for integer tables), several times cheaper, forward and backward.
    """
    rows, cols = torch.nonzero(bits, as_tuple=True)
    counts = torch.bincount(rows, minlength=bits.shape[0])
    offsets = torch.cumsum(counts, 0) - counts
    return torch.nn.functional.embedding_bag(cols, table, offsets, mode="sum")


class MSTPN(nn.Module):
    """The m-STPN of a preset, trainable, in the golden model's arithmetic.

    Parameters
    ----------
    preset : Preset
        The geometry (it must have an encoder: both presets do).
    device : DeviceModel, optional
        The device options to train under.
    seed : int
        Seed of the initialisation.
    """

    def __init__(self, preset: Preset, device: DeviceModel | None = None, seed: int = 0) -> None:
        super().__init__()
        if preset.encoder is None:
            raise ValueError("the trainer needs a preset with an encoder layer")
        self.preset = preset
        self.device_model = device or DeviceModel()
        gen = torch.Generator().manual_seed(seed)
        e, p = preset.encoder.outputs, preset.encoder.inputs
        h, n, a = preset.hidden, preset.plastic.inputs, preset.actions

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=_DT)

        # Encoder: latent 2-bit weights in code units, sparse at start.
        self.enc_w = nn.Parameter(0.55 * rand(e, p))
        self.enc_gain = nn.Parameter(torch.full((e,), 0.08, dtype=_DT))
        self.enc_bias = nn.Parameter(0.05 * rand(e))
        # Plastic layer.
        self.w = nn.Parameter(rand(h, n) * (1.0 / math.sqrt(n)) * 1.5)
        self.decay = nn.Parameter(0.5 + 0.45 * torch.rand(h, n, generator=gen, dtype=_DT))
        self.plasticity = nn.Parameter(0.03 * rand(h, n))
        self.gain = nn.Parameter(torch.full((h,), 1.0, dtype=_DT))
        self.bias = nn.Parameter(torch.zeros(h, dtype=_DT))
        # Actor head (quantised) and critic head (float, training only).
        self.head_w = nn.Parameter(0.1 * rand(a, h))
        self.head_bias = nn.Parameter(torch.zeros(a, dtype=_DT))
        self.critic = nn.Linear(h, 1, dtype=_DT)
        self.register_buffer("tanh_table", torch.tensor(tanh_table(), dtype=_DT))
        # The per-synapse path (B, H, N) is exact in float32 unless soft bounds or asymmetry
        # widen the Hebbian product beyond 24 bits (docs/spec.md 3.3); then it runs in float64.
        dev = self.device_model
        self.syn_dtype = _DT if (dev.soft_bound or dev.asymmetry) else torch.float32
        # The fused per-synapse step (:class:`_SynapseStep`) covers every device but those.
        self.fused = not (dev.soft_bound or dev.asymmetry)

    # --- parameters ----------------------------------------------------------------------------

    IMAGE_FIELDS = (
        "enc_w", "enc_gain", "enc_bias", "w", "decay", "plasticity", "gain", "bias", "head_w",
        "head_bias",
    )

    def real_params(self) -> dict[str, np.ndarray]:
        """The image fields' real values, for :meth:`ParamImage.from_float`.

        The encoder weights are rounded to their 2-bit codes here (their float twin is the
        rounded layer); every other field is the unrounded latent value.
        """
        out = {}
        for name in self.IMAGE_FIELDS:
            value = getattr(self, name).detach().cpu().numpy().astype(np.float64)
            if name == "enc_w":
                fmt = FIELDS_BY_NAME[name].fmt
                value = fmt.quantize(value).astype(np.float64)
            out[name] = value
        return out

    def load_real_params(self, params: dict[str, np.ndarray]) -> None:
        """Set the image fields from real values (for example an image's dequantised arrays)."""
        with torch.no_grad():
            for name in self.IMAGE_FIELDS:
                getattr(self, name).copy_(torch.as_tensor(np.asarray(params[name]), dtype=_DT))

    def codes(self) -> dict[str, torch.Tensor]:
        """Every field's codes, with straight-through gradients to the latent values."""
        return {name: quantize_ste(getattr(self, name), name) for name in self.IMAGE_FIELDS}

    # --- the network ---------------------------------------------------------------------------

    def initial_state(self, batch: int) -> State:
        """Zero (F, h, h_p, z_p): the state after RESET_STATE, where the parameters are."""
        h, n = self.preset.hidden, self.preset.plastic.inputs
        dev = self.tanh_table.device
        return (
            torch.zeros(batch, h, n, dtype=self.syn_dtype, device=dev),
            torch.zeros(batch, h, dtype=_DT, device=dev),
            torch.zeros(batch, h, dtype=_DT, device=dev),
            torch.zeros(batch, n, dtype=_DT, device=dev),
        )

    @staticmethod
    def reset_state(state: State, done: torch.Tensor) -> State:
        """Zero the state of the episodes where ``done`` (bool, (batch,)) is true."""
        if not bool(done.any()):
            return state
        keep = (~done).to(_DT)
        return (
            state[0] * keep[:, None, None].to(state[0].dtype),
            state[1] * keep[:, None],
            state[2] * keep[:, None],
            state[3] * keep[:, None],
        )

    def _neuron(self, acc: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                shift: int) -> torch.Tensor:
        """The periphery: ``u = ((acc*g + 2**(s-1)) >> s) + b``; ``h = sign(u) TANH[|u|]``."""
        scaled = (acc * gain + float(1 << (shift - 1))) / float(1 << shift)
        u = _floor_ste(scaled) + bias
        index = torch.clamp(torch.abs(u.detach()), max=(1 << TANH_INDEX_BITS) - 1).long()
        exact = torch.sign(u.detach()) * self.tanh_table[index]
        one = float(1 << ACT.frac)
        return _ste(exact, one * torch.tanh(u / one))

    def encode(self, bits: torch.Tensor, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder outputs (ACT codes) of binary frames (batch, pixels) in {0, 1}."""
        acc = sum_lit_rows(bits, codes["enc_w"].T.contiguous()).to(_DT)
        return self._neuron(acc, codes["enc_gain"], codes["enc_bias"], ENC_NORM_SHIFT)

    def _update_f(self, f_old: torch.Tensor, h_p: torch.Tensor, z_p: torch.Tensor,
                  codes: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        """The fused plastic update of docs/spec.md 3.3, on codes."""
        dev = self.device_model
        sd = self.syn_dtype
        hebb = codes["plasticity"].to(sd) * (h_p.to(sd)[:, :, None] * z_p.to(sd)[:, None, :])
        frac = HEBB_FRAC
        if dev.asymmetry:
            up = hebb.detach() >= 0
            hebb = hebb * torch.where(up, float(dev.asym_up), float(dev.asym_down))
            frac += ASYM.frac
        if dev.soft_bound:
            g_old = torch.clamp(w + self._f_to_g(f_old), dev.g_min, dev.g_max)
            up = hebb.detach() >= 0
            hebb = hebb * torch.where(up, dev.g_max - g_old, g_old - dev.g_min)
            frac += dev.soft_bound_frac
        acc = codes["decay"].to(sd) * f_old * float(1 << (DECAY_ALIGN + frac - HEBB_FRAC)) + hebb
        shift = frac + dev.level_shift
        if dev.noise_bits:
            r = torch.randint(0, 1 << dev.noise_bits, acc.shape, dtype=sd, device=acc.device)
            acc = acc + r * float(1 << (shift - dev.noise_bits))
        else:
            acc = acc + float(1 << (shift - 1))
        f_new = _floor_ste(acc / float(1 << shift)) * float(1 << dev.level_shift)
        return torch.clamp(f_new, dev.f_lo, dev.f_hi)

    def _fused_synapses(self, f_old, h_p, z_p, z, codes, w):
        """:class:`_SynapseStep` for a device without soft bounds or asymmetry."""
        dev = self.device_model
        sd = self.syn_dtype
        shift = HEBB_FRAC + dev.level_shift
        if dev.noise_bits:
            r = torch.randint(0, 1 << dev.noise_bits, f_old.shape, dtype=sd,
                              device=f_old.device)
            offset = r * float(1 << (shift - dev.noise_bits))
        else:
            offset = float(1 << (shift - 1))
        return _SynapseStep.apply(
            f_old, h_p.to(sd), z_p.to(sd), z.to(sd), codes["decay"].to(sd),
            codes["plasticity"].to(sd), w, offset, float(1 << DECAY_ALIGN), shift,
            dev.level_shift, dev.f_lo, dev.f_hi, F_TO_G_SHIFT, dev.g_min, dev.g_max)

    @staticmethod
    def _f_to_g(f: torch.Tensor) -> torch.Tensor:
        if F_TO_G_SHIFT == 0:
            return f
        return _floor_ste((f + float(1 << (F_TO_G_SHIFT - 1))) / float(1 << F_TO_G_SHIFT))

    def step(self, bits: torch.Tensor | None, state: State,
             codes: dict[str, torch.Tensor] | None = None, x: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One decision for a batch.

        Parameters
        ----------
        bits : torch.Tensor
            (batch, pixels) binary frames, float64 0/1.
        state : State
            (F, h, h_p, z_p) codes: F as stored *before* the pending update (as the golden
            model stores it), h the last h, (h_p, z_p) the pending pair.
        codes : dict, optional
            :meth:`codes`, computed once per sequence to save time.
        x : torch.Tensor, optional
            The encoder's outputs for ``bits``, if already computed (:meth:`encode` of a whole
            sequence at once); ``bits`` is then ignored.

        Returns
        -------
        logits : torch.Tensor
            (batch, actions) actor logits in real units (``V h + c``); their argmax (lowest
            index on ties) is the golden model's action.
        value : torch.Tensor
            (batch,) critic value (its gradient reaches only the critic head).
        state : State
            The next state.
        """
        codes = self.codes() if codes is None else codes
        dev = self.device_model
        f_old, h_prev, h_p, z_p = state
        if x is None:
            x = self.encode(bits, codes)
        z = torch.cat([x, h_prev], dim=1)
        w = codes["w"].to(self.syn_dtype)
        if self.fused:
            f_new, acc = self._fused_synapses(f_old, h_p, z_p, z, codes, w)
        else:
            f_new = self._update_f(f_old, h_p, z_p, codes, w)
            g = torch.clamp(w + self._f_to_g(f_new), dev.g_min, dev.g_max)
            acc = torch.bmm(g, z.to(self.syn_dtype)[:, :, None])[:, :, 0]
        acc = acc.to(_DT)
        h = self._neuron(acc, codes["gain"], codes["bias"], PLASTIC_NORM_SHIFT)
        logits_code = h @ codes["head_w"].T + codes["head_bias"]
        logits = logits_code * FIELDS_BY_NAME["head_bias"].fmt.scale
        # The critic reads h but does not shape it: fine-tuning a taught policy, the value
        # loss's gradient through the shared network out-pulled the policy gradient and
        # unlearned the policy (A2C from the stage-4 agent: greedy -1.6 -> -13 in 1.3M frames).
        value = self.critic((h * ACT.scale).detach()).squeeze(-1)
        return logits, value, (f_new, h, h, z)

    def param_groups(self, lr: float, encoder_scale: float = 20.0) -> list[dict]:
        """Optimiser groups: the 2-bit encoder weights live in code units.

        They learn ``encoder_scale`` times faster than the rest by default. 0 freezes them:
        under a noisy policy gradient, Adam's unit-size steps walk 204,800 latent 2-bit weights
        across their rounding thresholds and scramble the features a teacher taught.
        """
        enc = [self.enc_w]
        rest = [p for n, p in self.named_parameters() if n != "enc_w"]
        return [{"params": enc, "lr": lr * encoder_scale}, {"params": rest, "lr": lr}]
