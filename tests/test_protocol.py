"""The protocol's one definition: codes, sizes, INFO layout."""

from __future__ import annotations

import pytest

from mstpn.spec import protocol as P
from mstpn.spec.device import DeviceModel
from mstpn.spec.presets import PRESETS


def test_codes_are_distinct_and_fit():
    assert len({c.value for c in P.Command}) == len(P.Command)
    assert all(c < P.REPLY_FLAG for c in P.Command)
    assert len({e.value for e in P.Error}) == len(P.Error)
    assert P.ERROR_TYPE not in {c | P.REPLY_FLAG for c in P.Command}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_sizes_fit_every_preset(name):
    preset = PRESETS[name]
    assert P.step_request_bytes(preset) <= P.MAX_PAYLOAD
    assert P.step_reply_bytes(preset, 3) + P.OVERHEAD_BYTES <= 64   # the TX buffer's STEP slot
    assert P.LOAD_HEADER.size + P.MAX_CHUNK <= P.MAX_PAYLOAD
    assert P.preset_from_id(P.preset_id(preset)) == preset


def test_info_roundtrip_and_offsets():
    device = DeviceModel(g_min=-100, g_max=90, level_shift=2, soft_bound=True, asym_up=20,
                         asym_down=12, noise_bits=8)
    info = P.Info.build(PRESETS["ulx3s-85f"], device, flags=3, build_id=5, image_hash=0x1234,
                        clock_hz=25_000_000, divisor=133)
    raw = info.pack()
    assert len(raw) == P.INFO.size
    back = P.Info.unpack(raw + b"future fields")
    assert back == info and back.device == device and back.loaded
    assert raw[P.info_offset("flags")] == 3
    off = P.info_offset("image_hash")
    assert int.from_bytes(raw[off:off + 4], "little") == 0x1234
    with pytest.raises(ValueError):
        P.Info.unpack(raw[:-1])


def test_wire_bound():
    from cobs import cobs

    for n in (0, 1, 253, 254, 255, 600):
        assert len(cobs.encode(bytes([1] * n))) + 1 <= P.wire_bytes_max(n)
