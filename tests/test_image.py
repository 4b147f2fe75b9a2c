"""The parameter image: round trips, every kind of malformed file, atomic saves."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from mstpn.model import image as image_mod
from mstpn.model.image import (
    DIGEST_BYTES,
    FIELDS,
    FIELDS_BY_NAME,
    MAGIC,
    PREAMBLE,
    VERSION,
    ImageError,
    ParamImage,
    expected_shapes,
    fields_for,
)
from mstpn.spec import presets as presets_mod
from mstpn.spec.device import DeviceModel
from mstpn.spec.presets import PRESETS, FrameGeometry, Layer, Preset
from mstpn.spec.qformat import format_hash

ICE = PRESETS["icebreaker"]


@pytest.fixture(scope="module")
def good() -> ParamImage:
    return ParamImage.random(ICE, seed=7, noise_seed=0xDEADBEEF, meta={"description": "test"})


@pytest.fixture(scope="module")
def good_bytes(good: ParamImage) -> bytes:
    return good.to_bytes()


# --- a small helper that builds image bytes by hand, so a test can sign a wrong file ----------


def split(data: bytes) -> tuple[dict, list[bytes]]:
    """A valid image's header and each array's raw bytes."""
    _, _, hlen = PREAMBLE.unpack_from(data)
    header = json.loads(data[PREAMBLE.size : PREAMBLE.size + hlen])
    offset = PREAMBLE.size + hlen
    chunks = []
    for entry in header["arrays"]:
        size = int(np.prod(entry["shape"])) * np.dtype(entry["dtype"]).itemsize
        chunks.append(data[offset : offset + size])
        offset += size
    return header, chunks


def assemble(
    header: dict | bytes,
    chunks: list[bytes],
    *,
    version: int = VERSION,
    magic: bytes = MAGIC,
    sign: bool = True,
) -> bytes:
    """Image bytes from a header (a dict, or raw header bytes) and the arrays' bytes, signed."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    payload = magic + struct.pack("<HI", version, len(raw)) + raw + b"".join(chunks)
    return payload + (hashlib.sha256(payload).digest() if sign else b"\0" * DIGEST_BYTES)


def edit(data: bytes, change) -> bytes:
    """Apply ``change(header, chunks_by_name)`` to a valid image and re-sign it."""
    header, chunks = split(data)
    by_name = {e["name"]: c for e, c in zip(header["arrays"], chunks, strict=True)}
    change(header, by_name)
    if not isinstance(header["arrays"], list):
        return assemble(header, chunks)
    return assemble(header, [by_name[e["name"]] for e in header["arrays"]])


def entry(header: dict, name: str) -> dict:
    return next(e for e in header["arrays"] if e["name"] == name)


def set_code(data: bytes, name: str, value: int) -> bytes:
    """Put ``value`` into the first element of array ``name`` (bypassing validation)."""

    def change(header, chunks):
        dt = np.dtype(entry(header, name)["dtype"]).newbyteorder("<")
        arr = np.frombuffer(chunks[name], dt).copy()
        arr[0] = value
        chunks[name] = arr.tobytes()

    return edit(data, change)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_bytes_and_file(name: str, tmp_path: Path) -> None:
    preset = PRESETS[name]
    img = ParamImage.random(
        preset,
        seed=3,
        device=DeviceModel(g_min=-100, g_max=100, level_shift=2, soft_bound=True, asym_up=20,
                           asym_down=12, noise_bits=4),
        noise_seed=0xFFFFFFFF,
        spread={"sigma": 0.05, "seed": 11, "fields": ["w", "decay"]},
        meta={"description": "Pong agent – ünïcode", "checkpoint": "run/42.pt", "score": 21.0},
    )
    data = img.to_bytes()
    back = ParamImage.from_bytes(data)
    assert back == img
    assert back.preset is preset
    assert back.device == img.device and back.noise_seed == 0xFFFFFFFF
    assert back.meta == img.meta and back.spread == img.spread
    for spec in fields_for(preset):
        assert back.arrays[spec.name].dtype == np.dtype(spec.dtype)
        assert back.arrays[spec.name].shape == spec.shape(preset)
        assert back.arrays[spec.name].flags.writeable
    assert back.to_bytes() == data  # deterministic bytes

    path = img.save(tmp_path / "agent.img")
    assert path.read_bytes() == data
    assert ParamImage.load(path) == img
    assert sorted(os.listdir(tmp_path)) == ["agent.img"]


def test_layout_and_hashes(good: ParamImage, good_bytes: bytes) -> None:
    magic, version, hlen = PREAMBLE.unpack_from(good_bytes)
    assert (magic, version) == (MAGIC, 1)
    header = json.loads(good_bytes[14 : 14 + hlen])
    assert header["format_hash"] == format_hash()
    assert header["preset"] == "icebreaker" and header["noise_seed"] == 0xDEADBEEF
    assert [e["name"] for e in header["arrays"]] == [f.name for f in FIELDS]
    assert [tuple(e["shape"]) for e in header["arrays"]] == list(expected_shapes(ICE).values())
    data_len = sum(a.nbytes for a in good.arrays.values())
    assert len(good_bytes) == 14 + hlen + data_len + 32
    assert good_bytes[-32:].hex() == good.checksum
    assert hashlib.sha256(good_bytes[:-32]).hexdigest() == good.checksum
    # content hash: 32 bits, blind to provenance, sensitive to any code or to the seed
    h = good.content_hash()
    assert 0 <= h < 1 << 32
    assert good.replace(meta={"description": "other"}).content_hash() == h
    assert good.replace(noise_seed=2).content_hash() != h
    w = good.arrays["w"].copy()
    w[5, 5] ^= 1
    assert good.with_arrays(w=w).content_hash() != h
    assert good.with_arrays(w=w).checksum != good.checksum


def test_random_is_seeded_and_sensible() -> None:
    a, b, c = (ParamImage.random(ICE, s) for s in (1, 1, 2))
    assert a == b and a != c
    assert set(np.unique(a.arrays["enc_w"])) == {-2, -1, 0, 1}
    assert 40 <= a.arrays["enc_gain"].min() and a.arrays["enc_gain"].max() <= 120
    assert 20 <= a.arrays["gain"].min() and a.arrays["gain"].max() <= 80
    assert a.arrays["decay"].min() >= 150
    assert np.abs(a.arrays["plasticity"]).max() <= 40
    assert abs(a.arrays["w"].mean()) < 2


def test_dequantized_and_from_float(good: ParamImage) -> None:
    real = good.dequantized()
    for spec in fields_for(ICE):
        assert real[spec.name].dtype == np.float64
        np.testing.assert_array_equal(real[spec.name], good.arrays[spec.name] * spec.fmt.scale)
    assert ParamImage.from_float(ICE, real, meta=good.meta, noise_seed=good.noise_seed) == good
    # rounding and saturation
    params = dict(real)
    params["w"] = np.full((64, 128), 10.0)
    params["decay"] = np.full((64, 128), 0.5 + 0.4 / 256)
    img = ParamImage.from_float(ICE, params)
    assert (img.arrays["w"] == 127).all() and (img.arrays["decay"] == 128).all()
    params["w"] = np.where(np.eye(64, 128, dtype=bool), np.nan, 0.0)
    with pytest.raises(ImageError, match=r"field 'w': non-finite value nan at index \(0, 0\)"):
        ParamImage.from_float(ICE, params)
    with pytest.raises(ImageError, match="unexpected field 'foo'"):
        ParamImage.from_float(ICE, {**real, "foo": np.zeros(3)})


def test_with_arrays_and_replace(good: ParamImage) -> None:
    decay = np.full((64, 128), 200)  # int64 in range: cast to uint8
    img = good.with_arrays(decay=decay)
    assert img.arrays["decay"].dtype == np.uint8 and img.validate() is img
    assert "gain" not in good.with_arrays(gain=None).arrays
    assert good.arrays["decay"].max() == 255  # the original is untouched
    copy = good.replace(noise_seed=5)
    copy.arrays["w"][0, 0] = 99
    copy.meta["description"] = "changed"
    assert copy.noise_seed == 5 and good.noise_seed == 0xDEADBEEF
    assert good.arrays["w"][0, 0] != 99 and good.meta["description"] == "test"


def test_preset_without_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = FrameGeometry(pool_rows=8, pool_cols=8)
    preset = Preset(
        name="tiny", board=presets_mod.BOARDS["ulx3s-85f"], frame=frame, encoder=None,
        plastic=Layer("plastic", frame.pixels + 16, 16, tiles=1, lanes_per_tile=1, ram="EBR"),
    )
    img = ParamImage.random(preset, 4)
    assert set(img.arrays) == {"w", "decay", "plasticity", "gain", "bias", "head_w", "head_bias"}
    assert img.arrays["w"].shape == (16, frame.pixels + 16)
    with pytest.raises(ImageError, match="unexpected field 'enc_w' .preset tiny has no encoder"):
        img.with_arrays(enc_w=np.zeros((4, 4), np.int8)).validate()
    data = img.to_bytes()
    with pytest.raises(ImageError, match="unknown preset 'tiny'"):
        ParamImage.from_bytes(data)
    monkeypatch.setitem(PRESETS, "tiny", preset)
    assert ParamImage.from_bytes(data) == img


# --- every kind of malformed file ----------------------------------------------------------------


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1 :]


def _header_len(data: bytes) -> int:
    return PREAMBLE.unpack_from(data)[2]


def _bad_header_bytes(raw: bytes):
    def make(data: bytes) -> bytes:
        return assemble(raw, split(data)[1])

    return make


def _header_set(key: str, value):
    def make(data: bytes) -> bytes:
        return edit(data, lambda h, c: h.__setitem__(key, value))

    return make


def _drop_field(name: str):
    def change(header, chunks):
        header["arrays"] = [e for e in header["arrays"] if e["name"] != name]

    return lambda data: edit(data, change)


def _extra_field(header, chunks):
    header["arrays"].append({"name": "foo", "dtype": "int8", "shape": [4]})
    chunks["foo"] = b"\0" * 4


def _reshape_w(header, chunks):
    entry(header, "w")["shape"] = [64, 100]
    chunks["w"] = chunks["w"][: 64 * 100]


def _retype_w(header, chunks):
    entry(header, "w")["dtype"] = "int16"
    chunks["w"] = np.frombuffer(chunks["w"], np.int8).astype("<i2").tobytes()


def _float_w(header, chunks):
    entry(header, "w")["dtype"] = "float32"
    chunks["w"] = np.frombuffer(chunks["w"], np.int8).astype("<f4").tobytes()


def _unknown_dtype(header, chunks):
    entry(header, "w")["dtype"] = "int7"


def _swap_order(header, chunks):
    arrays = header["arrays"]
    arrays[3], arrays[4] = arrays[4], arrays[3]


def _signed_but_short(data: bytes) -> bytes:
    header, chunks = split(data)
    chunks[-1] = chunks[-1][:-4]
    return assemble(header, chunks)


def _out_of_range_cases():
    """(field, value) pairs for every field whose container can hold a code outside its format."""
    cases = []
    for spec in FIELDS:
        info = np.iinfo(spec.dtype)
        if spec.fmt.hi < info.max:
            cases.append((spec.name, spec.fmt.hi + 1))
        if spec.fmt.lo > info.min:
            cases.append((spec.name, spec.fmt.lo - 1))
    return cases


MALFORMED = [
    # (id, make(good_bytes) -> bad bytes, field, regex)
    ("empty", lambda d: b"", "file", r"truncated image: 0 bytes"),
    ("cut-in-magic", lambda d: d[:5], "file", r"truncated image: 5 bytes, shorter than"),
    ("cut-in-preamble", lambda d: d[:12], "file", r"truncated image: 12 bytes"),
    ("cut-in-header", lambda d: d[:40], "file", r"truncated image: the header declares \d+ bytes"),
    ("cut-after-header", lambda d: d[: 14 + _header_len(d)], "file",
     r"truncated image: \d+ bytes but the header declares \d+"),
    ("cut-in-data", lambda d: d[: len(d) // 2], "file", r"truncated image: \d+ bytes but the"),
    ("cut-in-checksum", lambda d: d[:-1], "file", r"truncated image"),
    ("bad-magic", lambda d: b"PK\x03\x04ZIP!" + d[8:], "magic",
     r"not an mstpn parameter image"),
    ("text-file", lambda d: b"hello world, not an image\n", "magic",
     r"not an mstpn parameter image"),
    ("bad-version", lambda d: assemble(split(d)[0], split(d)[1], version=2), "version",
     r"unsupported image format version 2; this build reads version 1"),
    ("huge-header-length", lambda d: d[:10] + struct.pack("<I", 0xFFFFFFFF) + d[14:], "header",
     r"header length 4294967295 exceeds the limit"),
    ("corrupt-json", _bad_header_bytes(b'{"version": 1, "preset": '), "header",
     r"header is not valid JSON"),
    ("non-utf8-header", _bad_header_bytes(b'{"x": "\xff\xfe"}'), "header",
     r"header is not valid JSON"),
    ("header-not-object", _bad_header_bytes(b"[1, 2, 3]"), "header", r"not a JSON object"),
    ("header-nested-too-deeply", _bad_header_bytes(b"[" * 100_000), "header",
     r"not valid JSON: nested too deeply"),
    ("huge-declared-shape",
     lambda d: edit(d, lambda h, c: entry(h, "w").__setitem__("shape", [1 << 40, 1 << 40])),
     "data", r"data section has \d+ bytes but the declared arrays need \d{20,}"),
    ("header-lacks-key", lambda d: edit(d, lambda h, c: h.pop("meta")), "meta",
     r"header lacks key 'meta'"),
    ("header-extra-key", _header_set("colour", "blue"), "header",
     r"unexpected header key\(s\): colour"),
    ("flipped-data-byte", lambda d: _flip(d, len(d) - 1000), "checksum", r"checksum mismatch"),
    ("flipped-first-data-byte", lambda d: _flip(d, 14 + _header_len(d)), "checksum",
     r"checksum mismatch"),
    ("flipped-checksum-byte", lambda d: _flip(d, len(d) - 3), "checksum", r"checksum mismatch"),
    ("unsigned", lambda d: assemble(*split(d), sign=False), "checksum", r"checksum mismatch"),
    ("trailing-bytes", lambda d: d + b"\0\0\0", "trailing", r"3 trailing bytes after the checksum"),
    ("data-length-mismatch", _signed_but_short, "data",
     r"data section has \d+ bytes but the declared arrays need \d+"),
    ("header-version-mismatch", _header_set("version", 3), "version",
     r"header says version 3 but the preamble says 1"),
    ("wrong-preset", _header_set("preset", "nosuch"), "preset",
     r"unknown preset 'nosuch'; known presets: icebreaker, ulx3s-85f"),
    ("format-hash", _header_set("format_hash", format_hash() ^ 1), "format_hash",
     r"made with other Q-formats"),
    ("format-hash-and-table",
     lambda d: edit(d, lambda h, c: (h.__setitem__("format_hash", 1),
                                     h["formats"]["formats"]["w"].__setitem__("bits", 6))),
     "format_hash", r"other Q-formats: format_hash 0x00000001.*differing: w\)"),
    ("missing-field", _drop_field("gain"), "gain", r"missing field 'gain'"),
    ("missing-encoder-field", _drop_field("enc_w"), "enc_w", r"missing field 'enc_w'"),
    ("extra-field", lambda d: edit(d, _extra_field), "foo", r"unexpected field 'foo'"),
    ("duplicate-field",
     lambda d: edit(d, lambda h, c: h["arrays"].append(dict(entry(h, "gain")))), "gain",
     r"duplicate field 'gain'"),
    ("wrong-shape", lambda d: edit(d, _reshape_w), "w",
     r"image field 'w': shape \(64, 100\) but preset icebreaker needs \(64, 128\)"),
    ("wrong-dtype", lambda d: edit(d, _retype_w), "w",
     r"image field 'w': dtype int16 but needs int8"),
    ("float-dtype", lambda d: edit(d, _float_w), "w",
     r"image field 'w': dtype float32 but needs int8"),
    ("unknown-dtype", lambda d: edit(d, _unknown_dtype), "w",
     r"image field 'w': unknown dtype 'int7'"),
    ("bad-shape-entry", lambda d: edit(d, lambda h, c: entry(h, "w").__setitem__("shape", "64")),
     "w", r"image field 'w': shape '64' is not a list"),
    ("arrays-out-of-order", lambda d: edit(d, _swap_order), "arrays", r"arrays out of order"),
    ("arrays-not-list", _header_set("arrays", {"w": 1}), "arrays", r"'arrays' must be a list"),
    *[
        (f"out-of-range-{name}-{value}", (lambda n, v: lambda d: set_code(d, n, v))(name, value),
         name, rf"image field '{name}': value {value} at index \(0,( 0)?\) outside")
        for name, value in _out_of_range_cases()
    ],
    ("bad-device-option", _header_set("device", {**DeviceModel().to_dict(), "level_shift": 99}),
     "device", r"bad device options: device option level_shift must be in 0\.\.6"),
    ("bad-device-window", _header_set("device", {**DeviceModel().to_dict(), "g_min": 50,
                                                 "g_max": 10}),
     "device", r"bad device options: conductance window"),
    ("unknown-device-option", _header_set("device", {"sparkle": True}), "device",
     r"bad device options: unknown device option\(s\): sparkle"),
    ("device-not-object", _header_set("device", "fast"), "device", r"bad device options"),
    ("noise-seed-negative", _header_set("noise_seed", -1), "noise_seed",
     r"noise_seed -1 is outside the uint32 range"),
    ("noise-seed-too-big", _header_set("noise_seed", 1 << 32), "noise_seed",
     r"noise_seed 4294967296 is outside the uint32 range"),
    ("noise-seed-float", _header_set("noise_seed", 1.5), "noise_seed",
     r"noise_seed must be an integer"),
    ("noise-seed-bool", _header_set("noise_seed", True), "noise_seed",
     r"noise_seed must be an integer"),
    ("bad-spread", _header_set("spread", {"sigma": 2.0, "seed": 1, "fields": ["w"]}), "spread",
     r"spread sigma must be a number in \[0, 1\]"),
    ("bad-spread-field", _header_set("spread", {"sigma": 0.1, "seed": 1, "fields": ["gain"]}),
     "spread", r"spread fields must be a list"),
    ("meta-not-object", _header_set("meta", "hello"), "meta", r"meta must be a JSON object"),
]


def test_out_of_range_cases_cover_the_narrow_formats() -> None:
    names = {name for name, _ in _out_of_range_cases()}
    assert {"enc_w", "head_bias"} <= names  # 2-bit codes in int8, 24-bit codes in int32


@pytest.mark.parametrize(
    ("make", "field", "pattern"),
    [pytest.param(m, f, p, id=i) for i, m, f, p in MALFORMED],
)
def test_malformed_bytes(good_bytes: bytes, make, field: str, pattern: str) -> None:
    bad = make(good_bytes)
    with pytest.raises(ImageError, match=pattern) as info:
        ParamImage.from_bytes(bad)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("make", "field", "pattern"),
    [pytest.param(m, f, p, id=i) for i, m, f, p in MALFORMED[::5]],
)
def test_malformed_file(good_bytes: bytes, tmp_path: Path, make, field: str, pattern: str) -> None:
    path = tmp_path / "bad.img"
    path.write_bytes(make(good_bytes))
    with pytest.raises(ImageError, match=pattern) as info:
        ParamImage.load(path)
    assert str(info.value).startswith(str(path))
    assert info.value.field == field


def test_load_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.img: no such parameter image file") as info:
        ParamImage.load(tmp_path / "nope.img")
    assert info.value.field == "file"
    with pytest.raises(ImageError, match="is a directory"):
        ParamImage.load(tmp_path)


# --- validate() on images in memory --------------------------------------------------------------


def _in_memory_cases():
    shapes = expected_shapes(ICE)
    cases = [
        ("missing", lambda g: g.with_arrays(gain=None), "gain", r"missing field 'gain'"),
        ("extra", lambda g: g.with_arrays(foo=np.zeros(3, np.int8)), "foo",
         r"unexpected field 'foo'"),
        ("shape", lambda g: g.with_arrays(w=np.zeros((64, 100), np.int8)), "w",
         r"image field 'w': shape \(64, 100\) but preset icebreaker needs \(64, 128\)"),
        ("dtype-int16",
         lambda g: g.replace(arrays={**g.arrays, "w": g.arrays["w"].astype(np.int16)}), "w",
         r"image field 'w': dtype int16 but needs int8"),
        ("dtype-big-endian",
         lambda g: g.replace(arrays={**g.arrays, "bias": g.arrays["bias"].astype(">i2")}),
         "bias", r"image field 'bias': dtype >i2 but needs int16"),
        ("dtype-float", lambda g: g.with_arrays(decay=np.zeros((64, 128))), "decay",
         r"image field 'decay': dtype float64 but needs uint8"),
        ("dtype-bool", lambda g: g.with_arrays(gain=np.ones(64, bool)), "gain",
         r"image field 'gain': dtype bool but needs uint8"),
        ("not-array", lambda g: g.replace(arrays={**g.arrays, "gain": [1] * 64}), "gain",
         r"image field 'gain': must be a numpy array, not list"),
        ("seed", lambda g: g.replace(noise_seed=1 << 32), "noise_seed", r"uint32"),
        ("device", lambda g: g.replace(device={"g_min": 0}), "device", r"must be a DeviceModel"),
        ("meta", lambda g: g.replace(meta={"when": object()}), "meta", r"not plain JSON"),
        ("spread", lambda g: g.replace(spread={"sigma": 0.1}), "spread", r"exactly the keys"),
    ]
    # one value above and one below the format in every field (int64 arrays, so any value fits)
    for spec in fields_for(ICE):
        for value in (spec.fmt.hi + 1, spec.fmt.lo - 1):
            arr = np.zeros(shapes[spec.name], np.int64)
            index = tuple(s - 1 for s in arr.shape)
            arr[index] = value
            shown = ", ".join(map(str, index)) + ("," if len(index) == 1 else "")
            cases.append((
                f"range-{spec.name}-{value}",
                (lambda n, a: lambda g: g.with_arrays(**{n: a}))(spec.name, arr),
                spec.name,
                rf"image field '{spec.name}': value {value} at index \({shown}\) outside "
                rf"{spec.fmt.lo}\.\.{spec.fmt.hi}",
            ))
    return cases


@pytest.mark.parametrize(
    ("make", "field", "pattern"),
    [pytest.param(m, f, p, id=i) for i, m, f, p in _in_memory_cases()],
)
def test_validate_in_memory(good: ParamImage, make, field: str, pattern: str) -> None:
    bad = make(good)
    with pytest.raises(ImageError, match=pattern) as info:
        bad.validate()
    assert info.value.field == field
    with pytest.raises(ImageError, match=pattern):
        bad.to_bytes()


def test_unknown_preset_name() -> None:
    with pytest.raises(ImageError, match="unknown preset 'nosuch'"):
        ParamImage("nosuch", {})
    assert ParamImage("icebreaker", {}).preset is ICE


def test_decay_message_example(good: ParamImage) -> None:
    decay = good.arrays["decay"].astype(np.int64)
    decay[3, 7] = 300
    with pytest.raises(ImageError, match=r"^image field 'decay': value 300 at index \(3, 7\) "
                                         r"outside 0\.\.255"):
        good.with_arrays(decay=decay).validate()


# --- atomic saves --------------------------------------------------------------------------------


def test_save_refuses_invalid_image(good: ParamImage, tmp_path: Path) -> None:
    bad = good.with_arrays(head_bias=np.full(3, 1 << 30, np.int32))
    with pytest.raises(ImageError, match="head_bias"):
        bad.save(tmp_path / "agent.img")
    assert os.listdir(tmp_path) == []

    good.save(tmp_path / "agent.img")
    before = (tmp_path / "agent.img").read_bytes()
    with pytest.raises(ImageError, match="missing field 'w'"):
        good.with_arrays(w=None).save(tmp_path / "agent.img")
    assert (tmp_path / "agent.img").read_bytes() == before
    assert os.listdir(tmp_path) == ["agent.img"]


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
def test_failed_save_leaves_no_trace(
    good: ParamImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    target = tmp_path / "agent.img"
    other = ParamImage.random(ICE, seed=99)
    other.save(target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if where == "write":
        real_fdopen = os.fdopen

        class Failing:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])  # half the image reaches the disk
                boom()

        monkeypatch.setattr(image_mod.os, "fdopen", lambda fd, mode: Failing(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(image_mod.os, where, boom)
    with pytest.raises(OSError, match="No space left"):
        good.save(target)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["agent.img"]  # no temp file left
    assert target.read_bytes() == before  # the old image is untouched
    assert ParamImage.load(target) == other


def test_failed_first_save_leaves_nothing(
    good: ParamImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args, **kwargs):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(image_mod.os, "replace", boom)
    with pytest.raises(OSError):
        good.save(tmp_path / "agent.img")
    assert os.listdir(tmp_path) == []


def test_save_keeps_mode_and_overwrites(good: ParamImage, tmp_path: Path) -> None:
    target = tmp_path / "agent.img"
    ParamImage.random(ICE, 5).save(target)
    os.chmod(target, 0o640)
    good.save(target)
    assert target.stat().st_mode & 0o777 == 0o640
    assert ParamImage.load(target) == good


def test_field_table_matches_brief() -> None:
    assert [f.name for f in FIELDS] == [
        "enc_w", "enc_gain", "enc_bias", "w", "decay", "plasticity", "gain", "bias", "head_w",
        "head_bias",
    ]
    assert {n: f.dtype for n, f in FIELDS_BY_NAME.items()} == {
        "enc_w": "int8", "enc_gain": "uint8", "enc_bias": "int16", "w": "int8", "decay": "uint8",
        "plasticity": "int8", "gain": "uint8", "bias": "int16", "head_w": "int8",
        "head_bias": "int32",
    }
