"""Tiny presets and device models for fast tests of the golden model and the engine."""

from mstpn.spec import qformat as q
from mstpn.spec.device import DeviceModel
from mstpn.spec.presets import BOARDS, FrameGeometry, Layer, Preset

#: A 4x6-pixel frame, a 6-unit encoder on 4 lanes, a 4-neuron plastic layer on 2 lanes.
TINY = Preset(
    name="tiny",
    board=BOARDS["icebreaker"],
    frame=FrameGeometry(top=0, bottom=8, width=12, pool_rows=2, pool_cols=2),
    encoder=Layer("static", 24, 6, tiles=1, lanes_per_tile=4, ram="EBR"),
    plastic=Layer("plastic", 6 + 4, 4, tiles=1, lanes_per_tile=2, ram="EBR"),
)

#: One device model per option, and every option at once.
DEVICES = {
    "plain": DeviceModel(),
    "window": DeviceModel(g_min=-70, g_max=50),
    "levels": DeviceModel(level_shift=3),
    "soft": DeviceModel(soft_bound=True),
    "asym": DeviceModel(asym_up=25, asym_down=9),
    "noise": DeviceModel(noise_bits=7),
    "all": DeviceModel(g_min=-90, g_max=100, level_shift=2, soft_bound=True, asym_up=19,
                       asym_down=14, noise_bits=q.NOISE_BITS_MAX),
}
