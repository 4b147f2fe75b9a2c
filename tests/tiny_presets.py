"""Tiny presets for fast tests of the golden model and the engine (shared by both)."""

from mstpn.spec.presets import BOARDS, FrameGeometry, Layer, Preset

#: A 4x6-pixel frame, a 6-unit encoder on 4 lanes, a 4-neuron plastic layer on 2 lanes.
TINY = Preset(
    name="tiny",
    board=BOARDS["icebreaker"],
    frame=FrameGeometry(top=0, bottom=8, width=12, pool_rows=2, pool_cols=2),
    encoder=Layer("static", 24, 6, tiles=1, lanes_per_tile=4, ram="EBR"),
    plastic=Layer("plastic", 6 + 4, 4, tiles=1, lanes_per_tile=2, ram="EBR"),
)
