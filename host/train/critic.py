"""A critic that reads the frames as well as h (``--critic frames``); training only.

The default critic is linear in h. A linear probe of h reads where the coming ball will cross
our column with R^2 0.22 (docs/training.md, "Teaching h what the ball does"), and whether that
crossing misses the paddle is most of a state's value in Pong: such a critic leaves most of the
return unexplained, and the advantages it gives are mostly noise. This critic also sees the
binary frame and the one before it, so the ball's and the paddles' positions and velocities.
Like the default critic it is float, reads h detached, and never reaches the image.
"""

from __future__ import annotations

import torch
from torch import nn

from ...spec.qformat import ACT
from .model import sum_lit_rows

__all__ = ["FrameCritic"]

_DT = torch.float64


class FrameCritic(nn.Module):
    """Value of a state from the binary frame, the frame before it and h.

    One hidden layer of ``width`` ReLU units over the two frames' lit pixels and h, then a
    linear read-out. The frames' part of the first layer sums the lit pixels' weight rows
    (:func:`.model.sum_lit_rows`), as the encoder does.

    Parameters
    ----------
    pixels : int
        Pixels of a binary frame (the preset's encoder inputs).
    hidden : int
        Width of h (the preset's hidden units).
    width : int
        Hidden units of the critic.
    seed : int
        Seed of the initialisation.
    """

    def __init__(self, pixels: int, hidden: int, width: int = 128, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("pixels", pixels), ("hidden", hidden), ("width", width)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"FrameCritic: {name} must be a whole number >= 1, not {value!r}")
        self.pixels = pixels
        gen = torch.Generator().manual_seed(seed)
        # Rows [0, pixels) weigh the frame, [pixels, 2 * pixels) the frame before it.
        self.frames = nn.Parameter(
            torch.randn(2 * pixels, width, generator=gen, dtype=_DT) * 0.05)
        self.from_h = nn.Linear(hidden, width, dtype=_DT)
        self.out = nn.Linear(width, 1, dtype=_DT)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, bits: torch.Tensor, prev_bits: torch.Tensor,
                h: torch.Tensor) -> torch.Tensor:
        """Values (batch,) of frames ``bits`` after ``prev_bits`` (batch, pixels; 0/1) and h
        codes (batch, hidden), read detached."""
        if bits.shape != prev_bits.shape or bits.shape[-1] != self.pixels:
            raise ValueError(f"FrameCritic: frames of {self.pixels} pixels expected, got "
                             f"{tuple(bits.shape)} and {tuple(prev_bits.shape)}")
        lit = sum_lit_rows(torch.cat([bits, prev_bits], dim=1), self.frames)
        hidden = torch.relu(lit + self.from_h((h * ACT.scale).detach().to(_DT)))
        return self.out(hidden).squeeze(-1)
