"""The trainable fake-quantised m-STPN against the bit-exact golden model (needs torch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mstpn.host.train.model import MSTPN  # noqa: E402
from mstpn.model.golden import GoldenModel  # noqa: E402
from mstpn.model.image import ParamImage  # noqa: E402
from mstpn.spec.device import DeviceModel  # noqa: E402
from mstpn.spec.presets import get_preset  # noqa: E402

DEVICES = {
    "default": DeviceModel(),
    "window+levels": DeviceModel(g_min=-96, g_max=96, level_shift=2),
    "soft+asym": DeviceModel(soft_bound=True, asym_up=20, asym_down=12),
}


#: Where the student runs: the CPU always, a GPU where torch sees one (``--torch-device cuda``).
TORCH_DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="torch sees no GPU")),
]


def _frames(rng: np.random.Generator, steps: int, batch: int, pixels: int) -> np.ndarray:
    """Sparse random binary frames, like Pong's (a few lit pixels)."""
    return (rng.random((steps, batch, pixels)) < 0.02).astype(np.float64)


@pytest.mark.parametrize("where", TORCH_DEVICES)
@pytest.mark.parametrize("name", sorted(DEVICES))
def test_fake_quant_matches_golden(name: str, where: str) -> None:
    preset = get_preset("icebreaker")
    device = DEVICES[name]
    model = MSTPN(preset, device, seed=3)
    with torch.no_grad():  # a livelier network than the initialisation, to exercise F
        model.plasticity.mul_(8.0)
        model.enc_gain.fill_(0.12)
    image = ParamImage.from_float(preset, model.real_params(), device)
    model.to(where)
    batch, steps = 3, 25
    golden = GoldenModel.from_image(image, batch=batch)
    frames = _frames(np.random.default_rng(0), steps, batch, preset.frame.pixels)
    state = model.initial_state(batch)
    moved = 0
    with torch.no_grad():
        codes = model.codes()
        for t in range(steps):
            logits, _, state = model.step(torch.as_tensor(frames[t]).to(where), state, codes)
            assert logits.device.type == state[0].device.type == where
            logits, f, h = logits.cpu(), state[0].cpu(), state[1].cpu()
            bits = frames[t].reshape(batch, preset.frame.rows, preset.frame.cols).astype(bool)
            out = golden.step(bits)
            np.testing.assert_array_equal(h.numpy().astype(np.int64), out.h)
            np.testing.assert_array_equal(f.numpy().astype(np.int64), golden.f)
            scale = 2.0 ** -13
            np.testing.assert_array_equal(
                np.rint(logits.numpy() / scale).astype(np.int64), out.logits)
            np.testing.assert_array_equal(logits.argmax(dim=1).numpy(), out.action)
            moved += int(np.count_nonzero(golden.f))
    assert moved > 0, "the plastic state never moved: the test exercises nothing"


def _backward(seed: int, steps: int, of) -> MSTPN:
    """A fresh student after back-propagating ``of(logits, value)`` summed over ``steps``."""
    preset = get_preset("icebreaker")
    model = MSTPN(preset, seed=seed)
    frames = _frames(np.random.default_rng(seed), steps, 2, preset.frame.pixels)
    state = model.initial_state(2)
    loss = 0.0
    for t in range(steps):
        logits, value, state = model.step(torch.as_tensor(frames[t]), state)
        loss = loss + of(logits, value)
    loss.backward()
    return model


def test_gradients_reach_every_parameter() -> None:
    model = _backward(1, 6, lambda logits, value: logits.sum() + value.sum())
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_value_trains_only_the_critic_head() -> None:
    model = _backward(2, 4, lambda logits, value: value.sum())
    for name, p in model.named_parameters():
        if name.startswith("critic."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or not p.grad.any(), name


@pytest.mark.parametrize("name", ["default", "window+levels"])
def test_fused_synapse_step_matches_unfused(name: str) -> None:
    """The fused per-synapse step: the same codes, and the same straight-through gradients."""
    preset = get_preset("icebreaker")
    frames = torch.as_tensor(_frames(np.random.default_rng(2), 12, 3, preset.frame.pixels))
    runs = []
    for fused in (False, True):
        model = MSTPN(preset, DEVICES[name], seed=3)
        with torch.no_grad():
            model.plasticity.mul_(8.0)
            model.enc_gain.fill_(0.12)
        model.fused = fused
        state = model.initial_state(3)
        codes = model.codes()
        loss, seen = 0.0, []
        for t in range(12):
            logits, _, state = model.step(frames[t], state, codes)
            loss = loss + (logits * torch.arange(3.0, dtype=logits.dtype)).sum()
            seen += [state[0].detach().clone(), state[1].detach().clone()]
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        runs.append((seen, grads))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        assert torch.equal(a, b)
    for n, g in runs[0][1].items():
        torch.testing.assert_close(runs[1][1][n], g, rtol=1e-4, atol=1e-6 * float(g.abs().max()))
