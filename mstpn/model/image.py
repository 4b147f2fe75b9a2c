"""The versioned parameter image: one trained agent's integer parameters for one preset.

An image holds every trained parameter of the network as integer codes of its Q-format
(:mod:`mstpn.spec.qformat`), together with the device options it was trained for, the noise
seed, the record of any device-to-device spread baked in at export, and free provenance.
The host LOADs it into the accelerator, the golden model runs on it, and ``mstpn build --params``
bakes it into a bitstream.

Arrays (E = encoder outputs, P = frame pixels, H = hidden neurons, N = plastic inputs,
A = actions), in the fixed order of :data:`FIELDS`:

==============  ======  ======  ==============  ===========================================
field           dtype   shape   Q-format        meaning
==============  ======  ======  ==============  ===========================================
``enc_w``       int8    (E, P)  ENC_WEIGHT      static encoder weights (only with an encoder)
``enc_gain``    uint8   (E,)    ENC_GAIN        encoder normalisation gain
``enc_bias``    int16   (E,)    BIAS            encoder bias
``w``           int8    (H, N)  WEIGHT          long-term weight W
``decay``       uint8   (H, N)  DECAY           decay lambda
``plasticity``  int8    (H, N)  PLASTICITY      meta-plastic update strength gamma
``gain``        uint8   (H,)    GAIN            plastic-layer normalisation gain
``bias``        int16   (H,)    BIAS            plastic-layer bias b
``head_w``      int8    (A, H)  HEAD_WEIGHT     actor-head weights V
``head_bias``   int32   (A,)    HEAD_BIAS       actor-head bias c
==============  ======  ======  ==============  ===========================================

Every code lies in its format's ``[lo, hi]``; the container dtype may be wider than the format.

File layout (all integers little-endian; ``docs/image-format.md`` has the full description)::

    offset      size  content
    0           8     magic b"MSTPNIMG"
    8           2     u16 format version (1)
    10          4     u32 header length L
    14          L     UTF-8 JSON header: {"version", "preset", "format_hash", "formats", "device",
                      "noise_seed", "spread", "meta", "arrays": [{"name", "dtype", "shape"}, ...]}
    14+L        D     each array's raw little-endian C-order bytes, in the header's order
    14+L+D      32    SHA-256 of bytes 0 .. 14+L+D (everything before it)

Loading checks the preamble, parses the header, checks the length the header declares, then the
checksum (before any array is trusted), then every field against the preset and this build's
Q-formats, and raises :class:`ImageError` naming the field and the problem. Saving is atomic: a
temporary file in the target's directory, flushed and fsynced, then ``os.replace``; a failed save
leaves nothing behind and leaves an existing file untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..spec.device import DeviceModel
from ..spec.presets import PRESETS, Preset, get_preset
from ..spec.qformat import (
    BIAS,
    DECAY,
    ENC_GAIN,
    ENC_WEIGHT,
    GAIN,
    HEAD_BIAS,
    HEAD_WEIGHT,
    PLASTICITY,
    WEIGHT,
    QFormat,
    format_hash,
    format_table,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "SUPPORTED_VERSIONS",
    "PREAMBLE",
    "DIGEST_BYTES",
    "MAX_HEADER_BYTES",
    "HEADER_KEYS",
    "FieldSpec",
    "FIELDS",
    "FIELDS_BY_NAME",
    "PLASTIC_FIELDS",
    "fields_for",
    "expected_shapes",
    "ImageError",
    "ParamImage",
]

#: The first 8 bytes of every image file.
MAGIC = b"MSTPNIMG"
#: The format version this build writes.
VERSION = 1
#: The format versions this build reads.
SUPPORTED_VERSIONS = (1,)
#: magic, u16 version, u32 header length.
PREAMBLE = struct.Struct("<8sHI")
#: The SHA-256 trailer.
DIGEST_BYTES = 32
#: A sanity limit on the JSON header, so a corrupt length cannot ask for gigabytes.
MAX_HEADER_BYTES = 1 << 24
#: The keys of the JSON header, all required.
HEADER_KEYS = (
    "version", "preset", "format_hash", "formats", "device", "noise_seed", "spread", "meta",
    "arrays",
)
#: The dtypes a header may name (others are refused before the checksum is computed).
_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
           "float32", "float64")
_MAX_NDIM = 4
_UINT32_MAX = 0xFFFFFFFF


class ImageError(ValueError):
    """A malformed or invalid parameter image.

    Attributes
    ----------
    field : str or None
        What is wrong: an array's name (``"w"``), a header key (``"preset"``, ``"device"``,
        ``"noise_seed"``, ``"format_hash"``, ...), or one of ``"magic"``, ``"version"``,
        ``"header"``, ``"checksum"``, ``"data"``, ``"trailing"``, ``"file"``.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):
        return (type(self), (str(self), self.field))


@dataclass(frozen=True)
class FieldSpec:
    """One array of the image.

    Parameters
    ----------
    name : str
        The array's name in the image.
    fmt : QFormat
        The format of its codes.
    dtype : str
        Its container dtype (at least as wide as ``fmt``).
    layer : {"encoder", "plastic", "head"}
        Which part of the network it belongs to; encoder fields exist only when the preset has an
        encoder.
    per_synapse : bool
        Whether it holds one value per synapse.
    """

    name: str
    fmt: QFormat
    dtype: str
    layer: str
    per_synapse: bool = False

    def shape(self, preset: Preset) -> tuple[int, ...]:
        """The array's shape in ``preset``."""
        if self.layer == "encoder":
            enc = preset.encoder
            if enc is None:
                raise ValueError(f"preset {preset.name} has no encoder, so no field {self.name!r}")
            return (enc.outputs, enc.inputs) if self.per_synapse else (enc.outputs,)
        if self.layer == "plastic":
            return (preset.hidden, preset.plastic.inputs) if self.per_synapse else (preset.hidden,)
        if self.name == "head_w":
            return (preset.actions, preset.hidden)
        return (preset.actions,)


#: Every array an image can hold, in file order.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("enc_w", ENC_WEIGHT, "int8", "encoder", per_synapse=True),
    FieldSpec("enc_gain", ENC_GAIN, "uint8", "encoder"),
    FieldSpec("enc_bias", BIAS, "int16", "encoder"),
    FieldSpec("w", WEIGHT, "int8", "plastic", per_synapse=True),
    FieldSpec("decay", DECAY, "uint8", "plastic", per_synapse=True),
    FieldSpec("plasticity", PLASTICITY, "int8", "plastic", per_synapse=True),
    FieldSpec("gain", GAIN, "uint8", "plastic"),
    FieldSpec("bias", BIAS, "int16", "plastic"),
    FieldSpec("head_w", HEAD_WEIGHT, "int8", "head"),
    FieldSpec("head_bias", HEAD_BIAS, "int32", "head"),
)
FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
#: The per-synapse parameters of the plastic layer (those the d2d spread can touch).
PLASTIC_FIELDS: tuple[str, ...] = tuple(
    f.name for f in FIELDS if f.layer == "plastic" and f.per_synapse
)

for _f in FIELDS:  # the container must hold every code of the format
    _info = np.iinfo(_f.dtype)
    if not _info.min <= _f.fmt.lo <= _f.fmt.hi <= _info.max:
        raise AssertionError(f"image field {_f.name}: {_f.dtype} cannot hold {_f.fmt.describe()}")


def fields_for(preset: Preset) -> tuple[FieldSpec, ...]:
    """The fields an image of ``preset`` holds, in file order."""
    return tuple(f for f in FIELDS if f.layer != "encoder" or preset.encoder is not None)


def expected_shapes(preset: Preset) -> dict[str, tuple[int, ...]]:
    """Each field's shape in ``preset``, in file order."""
    return {f.name: f.shape(preset) for f in fields_for(preset)}


# --- checks shared by validate() and from_bytes() ----------------------------------------------


def _check_noise_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ImageError(f"noise_seed must be an integer, not {seed!r}", "noise_seed")
    if not 0 <= int(seed) <= _UINT32_MAX:
        raise ImageError(
            f"noise_seed {int(seed)} is outside the uint32 range 0..{_UINT32_MAX}", "noise_seed"
        )


def _check_spread(spread: object) -> None:
    if spread is None:
        return
    if not isinstance(spread, Mapping):
        raise ImageError(f"spread must be a record or null, not {spread!r}", "spread")
    keys = {"sigma", "seed", "fields"}
    if set(spread) != keys:
        raise ImageError(
            f"spread record must have exactly the keys {sorted(keys)}, not {sorted(spread)}",
            "spread",
        )
    sigma = spread["sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 <= sigma <= 1:
        raise ImageError(f"spread sigma must be a number in [0, 1], not {sigma!r}", "spread")
    seed = spread["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ImageError(f"spread seed must be a non-negative integer, not {seed!r}", "spread")
    names = spread["fields"]
    if not isinstance(names, list | tuple) or not all(n in PLASTIC_FIELDS for n in names):
        raise ImageError(
            f"spread fields must be a list drawn from {list(PLASTIC_FIELDS)}, not {names!r}",
            "spread",
        )


def _check_meta(meta: object) -> None:
    if not isinstance(meta, Mapping):
        raise ImageError(f"meta must be a JSON object (a dict), not {type(meta).__name__}", "meta")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"meta is not plain JSON data: {exc}", "meta") from None


def _check_array(spec: FieldSpec, arr: object, preset: Preset) -> None:
    name = spec.name
    if not isinstance(arr, np.ndarray):
        raise ImageError(
            f"image field {name!r}: must be a numpy array, not {type(arr).__name__}", name
        )
    want = spec.shape(preset)
    if arr.shape != want:
        raise ImageError(
            f"image field {name!r}: shape {arr.shape} but preset {preset.name} needs {want}", name
        )
    fmt = spec.fmt
    if arr.dtype.kind not in "iu":
        raise ImageError(
            f"image field {name!r}: dtype {arr.dtype} but needs {spec.dtype} "
            f"(codes of {fmt.describe()})",
            name,
        )
    bad = (arr < fmt.lo) | (arr > fmt.hi)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ImageError(
            f"image field {name!r}: value {int(arr[index])} at index {index} outside "
            f"{fmt.lo}..{fmt.hi} ({fmt.name}, {fmt.describe()})",
            name,
        )
    if arr.dtype != np.dtype(spec.dtype):
        shown = arr.dtype.name if arr.dtype.isnative else arr.dtype.str
        raise ImageError(f"image field {name!r}: dtype {shown} but needs {spec.dtype}", name)


def _header_json(header: dict) -> bytes:
    return json.dumps(
        header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _parse_array_entries(entries: object) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """The header's array list, checked only as far as needed to size the data section."""
    if not isinstance(entries, list):
        raise ImageError("header key 'arrays' must be a list", "arrays")
    parsed: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    seen: set[str] = set()
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"name", "dtype", "shape"}:
            raise ImageError(
                f"header array entry {k} must be an object with keys name, dtype, shape", "arrays"
            )
        name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        if not isinstance(name, str) or not name:
            raise ImageError(f"header array entry {k}: name must be a string", "arrays")
        if name in seen:
            raise ImageError(f"duplicate field {name!r} in the header", name)
        seen.add(name)
        if dtype not in _DTYPES:
            raise ImageError(
                f"image field {name!r}: unknown dtype {dtype!r} (one of {', '.join(_DTYPES)})",
                name,
            )
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        ):
            raise ImageError(
                f"image field {name!r}: shape {shape!r} is not a list of at most {_MAX_NDIM} "
                "non-negative integers",
                name,
            )
        parsed.append((name, np.dtype(dtype), tuple(shape)))
    return parsed


def _format_diff(theirs: object) -> str:
    """Which formats differ between an image's format table and this build's."""
    ours = format_table()
    if not isinstance(theirs, dict):
        return ""
    diffs = []
    our_formats, their_formats = ours.get("formats", {}), theirs.get("formats", {})
    if isinstance(their_formats, dict):
        for name in sorted(set(our_formats) | set(their_formats)):
            if our_formats.get(name) != their_formats.get(name):
                diffs.append(name)
    for key in sorted(set(ours) - {"formats"}):
        if ours[key] != theirs.get(key):
            diffs.append(key)
    return f" (differing: {', '.join(diffs)})" if diffs else ""


# --- the image ----------------------------------------------------------------------------------


@dataclass(eq=False)
class ParamImage:
    """One trained agent's integer parameters for one preset.

    Parameters
    ----------
    preset : Preset or str
        The preset whose geometry the arrays have (a name is looked up).
    arrays : dict of str to numpy.ndarray
        The codes, one array per field of :func:`fields_for` ``(preset)``.
    device : DeviceModel
        The device options the agent was trained for and the accelerator must run with.
    noise_seed : int
        The uint32 seed of the cycle-to-cycle noise LFSRs.
    spread : dict or None
        The record ``{"sigma", "seed", "fields"}`` of the device-to-device spread applied at
        export (:func:`mstpn.model.spread.apply_spread`), or None.
    meta : dict
        Free JSON-able provenance: description, source checkpoint, creation time, ...

    The constructor does not validate (so tests can build broken images); :meth:`validate`,
    :meth:`to_bytes`, :meth:`save` and :meth:`from_bytes` do.
    """

    preset: Preset
    arrays: dict[str, np.ndarray]
    device: DeviceModel = field(default_factory=DeviceModel)
    noise_seed: int = 1
    spread: dict | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.preset, str):
            try:
                self.preset = get_preset(self.preset)
            except ValueError as exc:
                raise ImageError(str(exc), "preset") from None

    # --- validation ----------------------------------------------------------------------------

    def validate(self) -> ParamImage:
        """Check every field; return self.

        Raises
        ------
        ImageError
            Naming the field and the problem: a missing or unexpected field, a wrong shape or
            dtype, a code outside its format, a bad device option, noise seed, spread or meta.
        """
        if not isinstance(self.preset, Preset):
            raise ImageError(f"preset must be a Preset, not {self.preset!r}", "preset")
        if not isinstance(self.device, DeviceModel):
            raise ImageError(f"device must be a DeviceModel, not {self.device!r}", "device")
        _check_noise_seed(self.noise_seed)
        _check_spread(self.spread)
        _check_meta(self.meta)
        if not isinstance(self.arrays, Mapping):
            raise ImageError("arrays must be a dict of numpy arrays", "arrays")
        specs = fields_for(self.preset)
        names = [s.name for s in specs]
        for name in names:
            if name not in self.arrays:
                raise ImageError(
                    f"missing field {name!r}: preset {self.preset.name} needs "
                    f"{', '.join(names)}",
                    name,
                )
        for name in self.arrays:
            if name not in names:
                why = (
                    f" (preset {self.preset.name} has no encoder)"
                    if name in FIELDS_BY_NAME
                    else ""
                )
                raise ImageError(f"unexpected field {name!r}{why}", name)
        for spec in specs:
            _check_array(spec, self.arrays[spec.name], self.preset)
        return self

    # --- serialisation -------------------------------------------------------------------------

    def _header(self) -> dict:
        return {
            "version": VERSION,
            "preset": self.preset.name,
            "format_hash": format_hash(),
            "formats": format_table(),
            "device": self.device.to_dict(),
            "noise_seed": int(self.noise_seed),
            "spread": None if self.spread is None else _plain_spread(self.spread),
            "meta": self.meta,
            "arrays": [
                {"name": s.name, "dtype": s.dtype, "shape": list(s.shape(self.preset))}
                for s in fields_for(self.preset)
            ],
        }

    def _payload(self) -> bytes:
        self.validate()
        header = _header_json(self._header())
        parts = [MAGIC, struct.pack("<HI", VERSION, len(header)), header]
        for spec in fields_for(self.preset):
            parts.append(
                np.ascontiguousarray(self.arrays[spec.name], np.dtype(spec.dtype).newbyteorder("<"))
                .tobytes()
            )
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        """The image file's bytes (validates first)."""
        payload = self._payload()
        return payload + hashlib.sha256(payload).digest()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ParamImage:
        """Parse and check an image file's bytes.

        Raises
        ------
        ImageError
            For a truncated file, bad magic, unsupported version, bad header, checksum mismatch,
            unknown preset, Q-formats other than this build's, missing, extra, mis-shaped,
            mis-typed or out-of-range arrays, bad device options, noise seed, a data section that
            does not match the declared arrays, or trailing bytes.
        """
        data = bytes(data)
        n = len(data)
        lead = data[: len(MAGIC)]
        if lead != MAGIC[: len(lead)]:
            raise ImageError(
                f"not an mstpn parameter image: magic {lead!r}, expected {MAGIC!r}", "magic"
            )
        if n < PREAMBLE.size:
            raise ImageError(
                f"truncated image: {n} bytes, shorter than the {PREAMBLE.size}-byte preamble",
                "file",
            )
        _, version, header_len = PREAMBLE.unpack_from(data)
        if version not in SUPPORTED_VERSIONS:
            raise ImageError(
                f"unsupported image format version {version}; this build reads version"
                f"{'s' if len(SUPPORTED_VERSIONS) > 1 else ''} "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
                "version",
            )
        if header_len > MAX_HEADER_BYTES:
            raise ImageError(
                f"header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes",
                "header",
            )
        body = PREAMBLE.size + header_len
        if n < body:
            raise ImageError(
                f"truncated image: the header declares {header_len} bytes but only "
                f"{n - PREAMBLE.size} follow the preamble",
                "file",
            )
        try:
            header = json.loads(data[PREAMBLE.size : body].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImageError(f"header is not valid JSON: {exc}", "header") from None
        except RecursionError:
            raise ImageError("header is not valid JSON: nested too deeply", "header") from None
        if not isinstance(header, dict):
            raise ImageError("header is not a JSON object", "header")
        for key in HEADER_KEYS:
            if key not in header:
                raise ImageError(f"header lacks key {key!r}", key)
        extra = sorted(set(header) - set(HEADER_KEYS))
        if extra:
            raise ImageError(f"unexpected header key(s): {', '.join(extra)}", "header")
        entries = _parse_array_entries(header["arrays"])
        sizes = [math.prod(shape) * dt.itemsize for _, dt, shape in entries]
        need = sum(sizes)
        total = body + need + DIGEST_BYTES

        # -- length and checksum, before any array is trusted
        if n != total:
            if n >= body + DIGEST_BYTES and hashlib.sha256(data[:-DIGEST_BYTES]).digest() == data[
                -DIGEST_BYTES:
            ]:
                raise ImageError(
                    f"data section has {n - body - DIGEST_BYTES} bytes but the declared arrays "
                    f"need {need}",
                    "data",
                )
            if n < total:
                raise ImageError(
                    f"truncated image: {n} bytes but the header declares {total}", "file"
                )
            raise ImageError(f"{n - total} trailing bytes after the checksum", "trailing")
        stored = data[total - DIGEST_BYTES :]
        computed = hashlib.sha256(data[: total - DIGEST_BYTES]).digest()
        if stored != computed:
            raise ImageError(
                f"checksum mismatch: the image is corrupt (stored {stored.hex()[:16]}..., "
                f"computed {computed.hex()[:16]}...)",
                "checksum",
            )

        # -- the header's meaning
        if header["version"] != version:
            raise ImageError(
                f"header says version {header['version']!r} but the preamble says {version}",
                "version",
            )
        preset_name = header["preset"]
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            raise ImageError(
                f"unknown preset {preset_name!r}; known presets: {', '.join(sorted(PRESETS))}",
                "preset",
            )
        preset = PRESETS[preset_name]
        ours = format_hash()
        theirs = header["format_hash"]
        if theirs != ours:
            shown = f"0x{theirs:08x}" if isinstance(theirs, int) else repr(theirs)
            raise ImageError(
                f"the image was made with other Q-formats: format_hash {shown}, this build has "
                f"0x{ours:08x}{_format_diff(header['formats'])}; re-export it with this build",
                "format_hash",
            )
        device_opts = header["device"]
        if not isinstance(device_opts, dict):
            raise ImageError(f"bad device options: {device_opts!r} is not an object", "device")
        try:
            device = DeviceModel.from_dict(device_opts)
        except (TypeError, ValueError) as exc:
            raise ImageError(f"bad device options: {exc}", "device") from None
        _check_noise_seed(header["noise_seed"])
        _check_spread(header["spread"])
        _check_meta(header["meta"])

        # -- the arrays
        arrays: dict[str, np.ndarray] = {}
        offset = body
        for (name, dt, shape), size in zip(entries, sizes, strict=True):
            raw = np.frombuffer(data, dtype=dt.newbyteorder("<"), count=size // dt.itemsize,
                                offset=offset)
            arrays[name] = raw.reshape(shape).astype(dt.newbyteorder("="))
            offset += size
        image = cls(
            preset=preset,
            arrays=arrays,
            device=device,
            noise_seed=header["noise_seed"],
            spread=header["spread"],
            meta=header["meta"],
        ).validate()
        order = [name for name, _, _ in entries]
        want = [s.name for s in fields_for(preset)]
        if order != want:
            raise ImageError(
                f"arrays out of order: {', '.join(order)}; the format's order is "
                f"{', '.join(want)}",
                "arrays",
            )
        return image

    def save(self, path: str | os.PathLike) -> Path:
        """Write the image to ``path`` atomically; refuse an invalid image.

        The bytes go to a temporary file in the same directory, which is flushed, fsynced and
        renamed onto ``path`` with :func:`os.replace`. On any failure the temporary file is
        removed, so no partial file is left and an existing ``path`` is untouched.

        Raises
        ------
        ImageError
            If the image is invalid (nothing is written).
        OSError
            If the file cannot be written.
        """
        target = Path(path)
        data = self.to_bytes()  # validates before anything touches the disk
        directory = target.parent if str(target.parent) else Path(".")
        fd, tmp_name = tempfile.mkstemp(
            dir=directory, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            try:
                mode = target.stat().st_mode & 0o777
            except OSError:
                mode = 0o644
            os.chmod(tmp_name, mode)
            os.replace(tmp_name, target)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise
        _fsync_dir(directory)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> ParamImage:
        """Read and check the image at ``path``.

        Raises
        ------
        ImageError
            If the file is missing or unreadable (field ``"file"``), or any check of
            :meth:`from_bytes` fails; the message starts with the path.
        """
        target = Path(path)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{target}: no such parameter image file", "file") from None
        except IsADirectoryError:
            raise ImageError(f"{target}: is a directory, not a parameter image", "file") from None
        except OSError as exc:
            raise ImageError(f"{target}: cannot read the parameter image: {exc}", "file") from None
        try:
            return cls.from_bytes(data)
        except ImageError as exc:
            raise ImageError(f"{target}: {exc}", exc.field) from None

    # --- hashes --------------------------------------------------------------------------------

    @property
    def checksum(self) -> str:
        """The hex SHA-256 of the payload: the checksum trailer of the image file."""
        return hashlib.sha256(self._payload()).hexdigest()

    def content_hash(self) -> int:
        """A 32-bit hash of what determines behaviour, for comparing against INFO.

        It covers the preset's name, :func:`~mstpn.spec.qformat.format_hash`, the device options,
        the noise seed and every array's name, dtype, shape and bytes, and leaves out ``meta`` and
        the ``spread`` record (whose effect is in the arrays): the first 4 bytes, little-endian, of
        SHA-256 over the canonical JSON of the former followed by the arrays' bytes in file order.
        """
        self.validate()
        header = self._header()
        del header["meta"], header["spread"], header["formats"], header["version"]
        blob = [_header_json(header)]
        for spec in fields_for(self.preset):
            blob.append(
                np.ascontiguousarray(self.arrays[spec.name], np.dtype(spec.dtype).newbyteorder("<"))
                .tobytes()
            )
        return int.from_bytes(hashlib.sha256(b"".join(blob)).digest()[:4], "little")

    # --- construction helpers ------------------------------------------------------------------

    @classmethod
    def random(
        cls,
        preset: Preset | str,
        seed: int,
        device: DeviceModel | None = None,
        **kw,
    ) -> ParamImage:
        """A seeded random but sensible image, for tests and conformance vectors.

        Pre-activations come out O(1): encoder weights are uniform codes, encoder gains 40..120,
        plastic gains 20..80, biases within +-0.25, W uniform in +-0.5, lambda uniform in
        [0.6, 1) (saturating at the top code), gamma uniform in +-0.3, head weights in +-1 and
        head biases in +-0.125. Drawn with ``numpy.random.default_rng(seed)`` in file order;
        changing the draws changes every conformance vector built from them.

        Parameters
        ----------
        preset : Preset or str
        seed : int
        device : DeviceModel, optional
        **kw
            Passed on to the constructor (``noise_seed``, ``spread``, ``meta``).
        """
        if isinstance(preset, str):
            preset = get_preset(preset)
        rng = np.random.default_rng(seed)
        h, n, a = preset.hidden, preset.plastic.inputs, preset.actions

        def codes(spec: str, lo: int, hi: int, shape: tuple[int, ...]) -> np.ndarray:
            fmt = FIELDS_BY_NAME[spec].fmt
            return np.clip(rng.integers(lo, hi + 1, shape), fmt.lo, fmt.hi)

        def reals(spec: str, lo: float, hi: float, shape: tuple[int, ...]) -> np.ndarray:
            return FIELDS_BY_NAME[spec].fmt.quantize(rng.uniform(lo, hi, shape))

        arrays: dict[str, np.ndarray] = {}
        if preset.encoder is not None:
            e, p = preset.encoder.outputs, preset.encoder.inputs
            arrays["enc_w"] = codes("enc_w", ENC_WEIGHT.lo, ENC_WEIGHT.hi, (e, p))
            arrays["enc_gain"] = codes("enc_gain", 40, 120, (e,))
            arrays["enc_bias"] = reals("enc_bias", -0.25, 0.25, (e,))
        arrays["w"] = reals("w", -0.5, 0.5, (h, n))
        arrays["decay"] = reals("decay", 0.6, 1.0, (h, n))
        arrays["plasticity"] = reals("plasticity", -0.3, 0.3, (h, n))
        arrays["gain"] = codes("gain", 20, 80, (h,))
        arrays["bias"] = reals("bias", -0.25, 0.25, (h,))
        arrays["head_w"] = reals("head_w", -1.0, 1.0, (a, h))
        arrays["head_bias"] = reals("head_bias", -0.125, 0.125, (a,))
        arrays = {k: v.astype(FIELDS_BY_NAME[k].dtype) for k, v in arrays.items()}
        kw.setdefault("meta", {"description": f"random image, seed {seed}"})
        return cls(
            preset=preset, arrays=arrays, device=device or DeviceModel(), **kw
        ).validate()

    @classmethod
    def from_float(
        cls,
        preset: Preset | str,
        params: Mapping[str, np.ndarray],
        device: DeviceModel | None = None,
        noise_seed: int = 1,
        spread: dict | None = None,
        meta: dict | None = None,
    ) -> ParamImage:
        """Quantise real-valued arrays with each field's Q-format (rounding, saturating).

        ``params`` maps field names to real values (the gains' real value is their code, as
        :meth:`dequantized` gives it). The result is validated.

        Raises
        ------
        ImageError
            For an unknown field, a non-finite value, or anything :meth:`validate` refuses.
        """
        arrays = {}
        for name, value in params.items():
            spec = FIELDS_BY_NAME.get(name)
            if spec is None:
                raise ImageError(f"unexpected field {name!r}", name)
            real = np.asarray(value, dtype=np.float64)
            if not np.isfinite(real).all():
                index = tuple(int(i) for i in np.argwhere(~np.isfinite(real))[0])
                raise ImageError(
                    f"image field {name!r}: non-finite value {real[index]} at index {index}", name
                )
            arrays[name] = spec.fmt.quantize(real).astype(spec.dtype)
        return cls(
            preset=preset,
            arrays=arrays,
            device=device or DeviceModel(),
            noise_seed=noise_seed,
            spread=spread,
            meta=dict(meta or {}),
        ).validate()

    def dequantized(self) -> dict[str, np.ndarray]:
        """Each array's real value, ``code * format.scale``, as float64 (for the float model).

        The gains' formats are integers, so their value here is the code; the normalisation
        shifts of :mod:`mstpn.spec.qformat` scale them in the network.
        """
        return {
            name: FIELDS_BY_NAME[name].fmt.to_real(arr) if name in FIELDS_BY_NAME
            else np.asarray(arr, dtype=np.float64)
            for name, arr in self.arrays.items()
        }

    def with_arrays(self, **changes: np.ndarray | None) -> ParamImage:
        """A copy with some arrays replaced; not validated.

        A value of None removes the field. An integer array (or nested list) for a known field
        whose values all fit the field's format is cast to the field's dtype, so
        ``image.with_arrays(decay=rng.integers(0, 256, shape))`` just works; anything else is
        kept as given, for :meth:`validate` to report. To store a wrongly typed array on purpose,
        use :meth:`replace` with a whole ``arrays`` dict.
        """
        arrays = {k: np.array(v, copy=True) for k, v in self.arrays.items()}
        for name, value in changes.items():
            if value is None:
                arrays.pop(name, None)
                continue
            value = np.array(value, copy=True)
            spec = FIELDS_BY_NAME.get(name)
            if (
                spec is not None
                and value.dtype.kind in "iu"
                and ((value >= spec.fmt.lo) & (value <= spec.fmt.hi)).all()
            ):
                value = value.astype(spec.dtype)
            arrays[name] = value
        return self.replace(arrays=arrays)

    def replace(self, **changes) -> ParamImage:
        """A copy with some attributes replaced (as :func:`dataclasses.replace`); not validated.

        Arrays, spread and meta are copied, so the copy shares no mutable state with self.
        """
        changes.setdefault("arrays", {k: np.array(v, copy=True) for k, v in self.arrays.items()})
        changes.setdefault("meta", json.loads(json.dumps(self.meta)) if _jsonable(self.meta)
                           else dict(self.meta))
        changes.setdefault("spread", None if self.spread is None else dict(self.spread))
        return dataclasses.replace(self, **changes)

    # --- comparison and display ----------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParamImage):
            return NotImplemented
        return (
            self.preset == other.preset
            and self.device == other.device
            and self.noise_seed == other.noise_seed
            and _normal(self.spread) == _normal(other.spread)
            and _normal(self.meta) == _normal(other.meta)
            and self.arrays.keys() == other.arrays.keys()
            and all(
                self.arrays[k].dtype == other.arrays[k].dtype
                and np.array_equal(self.arrays[k], other.arrays[k])
                for k in self.arrays
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        name = getattr(self.preset, "name", self.preset)
        return (
            f"ParamImage(preset={name!r}, arrays=[{', '.join(self.arrays)}], "
            f"device={self.device!r}, noise_seed={self.noise_seed}, spread={self.spread!r})"
        )

    def describe(self) -> str:
        """A one-line summary, for the CLI."""
        params = sum(int(a.size) for a in self.arrays.values())
        spread = (
            f"d2d spread sigma {self.spread['sigma']} seed {self.spread['seed']}"
            if self.spread else "no d2d spread"
        )
        return (
            f"preset {self.preset.name}, {params:,d} parameters, {self.device.describe()}, "
            f"noise seed {self.noise_seed}, {spread}, content hash 0x{self.content_hash():08x}"
        )


def _plain_spread(spread: Mapping) -> dict:
    return {
        "sigma": float(spread["sigma"]),
        "seed": int(spread["seed"]),
        "fields": [str(f) for f in spread["fields"]],
    }


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _normal(value: object) -> object:
    """Plain-JSON form, so that a tuple and a list (as a round trip makes them) compare equal."""
    return json.loads(json.dumps(value)) if _jsonable(value) else value


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
