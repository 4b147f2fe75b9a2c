"""The serial protocol between the host and the accelerator: the one definition of its codes.

The gateware (:mod:`mstpn.hdl.framing`, :mod:`mstpn.hdl.dispatcher`), the host driver
(:mod:`mstpn.host.link`), the simulated board and the tests all import this module; nothing
restates a code, a size or a field offset. ``docs/protocol.md`` has the byte-level tables.

On the wire every frame is COBS-encoded and ends with one 0x00 delimiter. Decoded, a frame (the
*body*) is::

    offset  size  field
    0       1     type      command code (request), command | 0x80 (reply) or ERROR (0xFF)
    1       1     seq       sequence number; a reply echoes its request's
    2       2     length    payload bytes, little-endian
    4       n     payload
    4+n     2     crc       CRC-16/CCITT-FALSE of bytes 0 .. 4+n, most significant byte first

CRC-16/CCITT-FALSE: polynomial 0x1021, init 0xFFFF, no input or output reflection, xorout 0
(check value 0x29B1 for b"123456789"); sent big-endian so that the CRC of the whole body is 0.
Every other multi-byte integer is little-endian. There is exactly one reply per request frame
(empty frames, two delimiters in a row, get none).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .counters import COUNTER_BITS, COUNTER_NAMES
from .device import DeviceModel
from .presets import PRESETS, Preset

__all__ = [
    "VERSION", "Command", "Error", "ERROR_TYPE", "REPLY_FLAG", "StepFlags",
    "HEADER", "HEADER_BYTES", "CRC_BYTES", "OVERHEAD_BYTES", "MAX_PAYLOAD", "MAX_BODY",
    "MAX_REPLY_BODY",
    "MAX_CHUNK", "MAX_WIRE_BYTES", "CRC_POLY", "CRC_INIT", "CRC_NAME", "PRESET_IDS",
    "preset_id", "preset_from_id", "LOAD_HEADER", "READBACK_REQUEST", "SEED", "COMMIT",
    "COUNTER_NAMES", "COUNTER_BYTES", "INFO", "INFO_FIELDS", "info_offset", "InfoFlags", "Info",
    "step_reply_bytes",
    "step_request_bytes", "counters_bytes", "wire_bytes_max", "device_bytes",
]

#: Protocol version, the first byte of INFO. Bumped on any incompatible change.
VERSION = 1


class Command(enum.IntEnum):
    """Request codes (the ``type`` byte of a request)."""

    INFO = 0x01          #: who are you: version, preset, geometry, formats, device options
    LOAD = 0x02          #: write bytes of the parameter address map
    READBACK = 0x03      #: read bytes of the parameter address map
    RESET_STATE = 0x04   #: start of an episode: F, h and the pending pair to 0
    STEP = 0x05          #: a packed frame in, the action (and logits, counters) out
    COUNTERS = 0x06      #: the event counters (optionally cleared after reading)
    SET_SEED = 0x07      #: load the noise LFSRs' seed
    COMMIT = 0x08        #: declare the upload complete: records its content hash, allows STEP


#: A reply's type is its request's with this bit set.
REPLY_FLAG = 0x80
#: The type of an error reply.
ERROR_TYPE = 0xFF


class Error(enum.IntEnum):
    """Error codes: the first payload byte of an ERROR reply (the second is the request type)."""

    BAD_CRC = 0x01          #: the body's CRC does not check
    BAD_LENGTH = 0x02       #: shorter than a header plus CRC, length field disagrees, or the
                            #: payload's size is wrong for the command
    UNKNOWN_COMMAND = 0x03  #: the type byte is no command
    OVERSIZE = 0x04         #: the body is longer than MAX_BODY
    NOT_LOADED = 0x05       #: STEP before a committed LOAD (or a baked-in image)
    BAD_ADDRESS = 0x06      #: LOAD or READBACK outside the address map, or LOAD into ``h``
    BUSY = 0x07             #: reserved: the dispatcher serialises requests, so never sent today
    BAD_FRAME = 0x08        #: COBS structure broken (a code byte points past the delimiter)
    BAD_ARGUMENT = 0x09     #: a field out of range (READBACK count 0 or above MAX_CHUNK, flags)


class StepFlags(enum.IntFlag):
    """The first payload byte of STEP."""

    LOGITS = 0x01    #: the reply carries every logit (int32 each)
    COUNTERS = 0x02  #: the reply carries the counters after the step


class InfoFlags(enum.IntFlag):
    """The ``flags`` byte of INFO."""

    LOADED = 0x01   #: a committed upload or a baked-in image: STEP is allowed
    BAKED = 0x02    #: the bitstream has a parameter image baked in
    STANDIN = 0x04  #: a stand-in engine sits behind the link (not the m-STPN)


#: The header: type, seq, length.
HEADER = struct.Struct("<BBH")
HEADER_BYTES = HEADER.size
CRC_BYTES = 2
OVERHEAD_BYTES = HEADER_BYTES + CRC_BYTES
#: Largest payload of any frame, either direction.
MAX_PAYLOAD = 512
#: Largest body (header + payload + CRC): the size of each of the gateware's frame buffers.
MAX_BODY = MAX_PAYLOAD + OVERHEAD_BYTES
#: Largest LOAD data or READBACK count.
MAX_CHUNK = 256

CRC_NAME = "crc-ccitt-false"  #: crcmod.predefined's name for it
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF

#: LOAD payload: address, then 1..MAX_CHUNK data bytes.
LOAD_HEADER = struct.Struct("<I")
#: READBACK payload: address, count (1..MAX_CHUNK); the reply's payload is the bytes.
READBACK_REQUEST = struct.Struct("<IH")
#: SET_SEED payload.
SEED = struct.Struct("<I")
#: COMMIT payload: the image's content hash (:meth:`ParamImage.content_hash`), echoed by INFO.
COMMIT = struct.Struct("<I")

#: The counters (mstpn.spec.counters), in the order of COUNTERS replies, each COUNTER_BYTES
#: little-endian.
COUNTER_BYTES = COUNTER_BITS // 8

#: Preset ids of INFO (0 is no preset).
PRESET_IDS = {"icebreaker": 1, "ulx3s-85f": 2}


def preset_id(preset: Preset | str) -> int:
    """The INFO id of a preset."""
    name = preset if isinstance(preset, str) else preset.name
    try:
        return PRESET_IDS[name]
    except KeyError:
        raise ValueError(f"preset {name!r} has no protocol id; add it to PRESET_IDS") from None


def preset_from_id(ident: int) -> Preset:
    """The preset of an INFO id."""
    for name, value in PRESET_IDS.items():
        if value == ident:
            return PRESETS[name]
    raise ValueError(f"unknown preset id {ident} in INFO")


#: INFO reply payload fields and their struct codes, in order. Device flags: bit 0 soft bounds,
#: bit 1 asymmetry.
INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("version", "B"), ("preset_id", "B"), ("flags", "B"), ("device_flags", "B"),
    ("format_hash", "I"),
    ("g_min", "b"), ("g_max", "b"), ("level_shift", "B"), ("noise_bits", "B"),
    ("asym_up", "B"), ("asym_down", "B"),
    ("frame_bytes", "H"), ("features", "H"), ("hidden", "H"), ("plastic_inputs", "H"),
    ("actions", "H"),
    ("enc_tiles", "B"), ("enc_lanes", "B"), ("plastic_tiles", "B"), ("plastic_lanes", "B"),
    ("address_space", "I"), ("max_payload", "H"), ("max_chunk", "H"), ("build_id", "I"),
    ("image_hash", "I"), ("clock_hz", "I"), ("divisor", "I"),
)
INFO = struct.Struct("<" + "".join(code for _, code in INFO_FIELDS))
_INFO_FIELDS = tuple(name for name, _ in INFO_FIELDS)


def info_offset(name: str) -> int:
    """Byte offset of an INFO field (the gateware patches ``flags`` and ``image_hash``)."""
    codes = ""
    for field_name, code in INFO_FIELDS:
        if field_name == name:
            return struct.calcsize("<" + codes)
        codes += code
    raise KeyError(name)


def device_bytes(device: DeviceModel) -> tuple[int, int, int, int, int, int, int]:
    """(device flags, g_min, g_max, level_shift, noise_bits, asym_up, asym_down) for INFO."""
    flags = (1 if device.soft_bound else 0) | (2 if device.asymmetry else 0)
    return (flags, device.g_min, device.g_max, device.level_shift, device.noise_bits,
            device.asym_up or 0, device.asym_down or 0)


@dataclass(frozen=True)
class Info:
    """A decoded INFO reply."""

    version: int
    preset_id: int
    flags: int
    device_flags: int
    format_hash: int
    g_min: int
    g_max: int
    level_shift: int
    noise_bits: int
    asym_up: int
    asym_down: int
    frame_bytes: int
    features: int
    hidden: int
    plastic_inputs: int
    actions: int
    enc_tiles: int
    enc_lanes: int
    plastic_tiles: int
    plastic_lanes: int
    address_space: int
    max_payload: int
    max_chunk: int
    build_id: int
    image_hash: int
    clock_hz: int
    divisor: int

    @classmethod
    def unpack(cls, payload: bytes) -> Info:
        """Decode an INFO payload (longer payloads from newer builds are accepted)."""
        if len(payload) < INFO.size:
            raise ValueError(f"INFO payload is {len(payload)} bytes, expected {INFO.size}")
        return cls(*INFO.unpack_from(payload))

    @classmethod
    def build(cls, preset: Preset, device: DeviceModel, *, flags: int = 0, build_id: int = 0,
              image_hash: int = 0, clock_hz: int = 0, divisor: int = 0,
              format_hash: int | None = None) -> Info:
        """The INFO a gateware build of ``preset`` and ``device`` answers."""
        from ..model.memmap import memory_map
        from .qformat import format_hash as _format_hash

        enc = preset.encoder
        dflags, g_min, g_max, level_shift, noise_bits, up, down = device_bytes(device)
        space = max(r.end for r in memory_map(preset).values())
        return cls(
            VERSION, preset_id(preset), flags, dflags,
            _format_hash() if format_hash is None else format_hash,
            g_min, g_max, level_shift, noise_bits, up, down,
            preset.frame.packed_bytes, preset.features, preset.hidden, preset.plastic.inputs,
            preset.actions,
            enc.tiles if enc else 0, enc.lanes_per_tile if enc else 0,
            preset.plastic.tiles, preset.plastic.lanes_per_tile,
            space, MAX_PAYLOAD, MAX_CHUNK, build_id, image_hash, clock_hz, divisor,
        )

    def pack(self) -> bytes:
        """The payload bytes."""
        return INFO.pack(*(getattr(self, name) for name in _INFO_FIELDS))

    @property
    def preset(self) -> Preset:
        """The preset this board runs."""
        return preset_from_id(self.preset_id)

    @property
    def device(self) -> DeviceModel:
        """The device-model options the gateware was elaborated with."""
        asym = bool(self.device_flags & 2)
        return DeviceModel(
            g_min=self.g_min, g_max=self.g_max, level_shift=self.level_shift,
            soft_bound=bool(self.device_flags & 1),
            asym_up=self.asym_up if asym else None, asym_down=self.asym_down if asym else None,
            noise_bits=self.noise_bits,
        )

    @property
    def loaded(self) -> bool:
        """STEP is allowed."""
        return bool(self.flags & InfoFlags.LOADED)


def step_request_bytes(preset: Preset) -> int:
    """Payload bytes of a STEP request: flags, then the packed frame."""
    return 1 + preset.frame.packed_bytes


def counters_bytes() -> int:
    """Payload bytes of the counters block."""
    return COUNTER_BYTES * len(COUNTER_NAMES)


def step_reply_bytes(preset: Preset, flags: int) -> int:
    """Payload bytes of a STEP reply: the action, then logits and counters if asked for."""
    n = 1
    if flags & StepFlags.LOGITS:
        n += 4 * preset.actions
    if flags & StepFlags.COUNTERS:
        n += counters_bytes()
    return n


def wire_bytes_max(body: int) -> int:
    """Most bytes a body of ``body`` bytes takes on the wire: COBS overhead plus the delimiter."""
    return body + body // 254 + 2


#: Bytes on the wire of the largest frame.
MAX_WIRE_BYTES = wire_bytes_max(MAX_BODY)
#: The longest reply body: a READBACK of MAX_CHUNK bytes, INFO, the counters or an ERROR (its
#: code and the request's type). Requests may be longer: a LOAD carries a header besides its
#: chunk. A STEP reply is sized by :func:`step_reply_bytes`.
MAX_REPLY_BODY = OVERHEAD_BYTES + max(MAX_CHUNK, INFO.size, counters_bytes(), 2)

assert step_request_bytes(PRESETS["icebreaker"]) <= MAX_PAYLOAD
assert INFO.size <= MAX_PAYLOAD and LOAD_HEADER.size + MAX_CHUNK <= MAX_PAYLOAD
