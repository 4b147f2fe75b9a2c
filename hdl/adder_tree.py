"""A pipelined adder tree: the reduction of partial sums across lanes and across tiles.

Each synapse tile reduces its lanes' row sums with one, and the engine reduces the tiles' sums
with another. All inputs are valid on the same cycle (the lanes and tiles run in lockstep), so
the tree needs no handshake: ``valid`` travels beside the sums.

Cost: ``n - 1`` adders, a register level per tree level; latency ``ceil(log2(n))`` cycles
(0 for one input), throughput one reduction per cycle.
"""

from __future__ import annotations

from amaranth import Signal, signed
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AdderTree"]


class AdderTree(wiring.Component):
    """Sum ``n`` signed inputs, one register level per tree level.

    Parameters
    ----------
    n : int
        Inputs, at least 1.
    in_width, out_width : int
        Signed widths of each input and of the sum (the caller bounds the sum).

    Attributes
    ----------
    inputs : In(ArrayLayout(signed(in_width), n))
    valid_in : In(1)
    sum : Out(signed(out_width))
    valid_out : Out(1)
        ``valid_in`` delayed by :attr:`latency` cycles, beside ``sum``.

    Raises
    ------
    ValueError
        If a parameter is not a positive integer, or ``out_width < in_width``.
    """

    def __init__(self, n: int, in_width: int, out_width: int) -> None:
        for name, value in (("n", n), ("in_width", in_width), ("out_width", out_width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AdderTree {name} must be a positive integer, not {value!r}")
        if out_width < in_width:
            raise ValueError(f"AdderTree out_width {out_width} is narrower than in_width "
                             f"{in_width}")
        self.n, self.in_width, self.out_width = n, in_width, out_width
        self.latency = (n - 1).bit_length()
        super().__init__({
            "inputs": In(data.ArrayLayout(signed(in_width), n)),
            "valid_in": In(1),
            "sum": Out(signed(out_width)),
            "valid_out": Out(1),
        })

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        level = [self.inputs[k] for k in range(self.n)]
        valid = self.valid_in
        depth = 0
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level), 2):
                s = Signal(signed(self.out_width), name=f"l{depth}_{k // 2}")
                if k + 1 < len(level):
                    m.d.sync += s.eq(level[k] + level[k + 1])
                else:
                    m.d.sync += s.eq(level[k])
                nxt.append(s)
            v = Signal(name=f"valid_l{depth}")
            m.d.sync += v.eq(valid)
            level, valid, depth = nxt, v, depth + 1
        m.d.comb += [self.sum.eq(level[0]), self.valid_out.eq(valid)]
        return m
