"""The accelerator's parameter address map: where each image field and each state array lives.

LOAD and READBACK address one flat byte space. Each region holds one field of the parameter
image (:data:`mstpn.model.image.FIELDS`, in file order) or one state array, its elements in
row-major order, each element little-endian in ``element_bits`` bits: 2-bit codes packed four to
a byte, least significant first; 8-bit codes one per byte; wider codes in whole bytes. Regions
start on 4-byte boundaries. The host packs an image with :func:`pack_region`; the engine decodes
an address into (region, element, byte of the element) and from there into (tile, lane, word).

The state regions are ``f`` (the stored F, int8 per plastic synapse, in SHORT_TERM) and ``h``
(the last h, int8 per neuron); READBACK reads them, and LOAD may write ``f`` (tests use it to
set a state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec.presets import Preset
from ..spec.qformat import ACT, SHORT_TERM, QFormat
from .image import ParamImage, fields_for

__all__ = [
    "Region", "memory_map", "pack_region", "unpack_region", "pack_image", "element_bits",
    "address_bits",
]


def element_bits(fmt: QFormat) -> int:
    """Bits one element takes in the byte space: 1, 2 or 4 when packed, else whole bytes."""
    if fmt.bits <= 4:
        return 1 << (fmt.bits - 1).bit_length()
    return 8 * ((fmt.bits + 7) // 8)


@dataclass(frozen=True)
class Region:
    """One field's bytes in the parameter address space."""

    name: str
    fmt: QFormat
    shape: tuple[int, ...]
    base: int
    writable: bool = True

    @property
    def elements(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))

    @property
    def element_bits(self) -> int:
        """Bits per element in the byte space."""
        return element_bits(self.fmt)

    @property
    def nbytes(self) -> int:
        """Bytes the region occupies."""
        return (self.elements * self.element_bits + 7) // 8

    @property
    def end(self) -> int:
        """First byte after the region."""
        return self.base + self.nbytes


def memory_map(preset: Preset) -> dict[str, Region]:
    """Every region of ``preset``'s address space, in address order."""
    regions: dict[str, Region] = {}
    base = 0
    entries: list[tuple[str, QFormat, tuple[int, ...], bool]] = [
        (f.name, f.fmt, f.shape(preset), True) for f in fields_for(preset)
    ]
    entries.append(("f", SHORT_TERM, (preset.hidden, preset.plastic.inputs), True))
    entries.append(("h", ACT, (preset.hidden,), False))
    for name, fmt, shape, writable in entries:
        region = Region(name, fmt, shape, base, writable)
        regions[name] = region
        base = (region.end + 3) & ~3
    return regions


def pack_region(region: Region, values: np.ndarray) -> bytes:
    """The bytes of a region holding ``values`` (codes of the region's format)."""
    values = np.asarray(values, dtype=np.int64)
    if values.shape != region.shape:
        raise ValueError(f"region {region.name}: shape {values.shape}, expected {region.shape}")
    bits = region.element_bits
    codes = values.ravel() & ((1 << bits) - 1)  # two's complement in the element's width
    if bits < 8:
        per_byte = 8 // bits
        padded = np.zeros(-(-codes.size // per_byte) * per_byte, dtype=np.int64)
        padded[: codes.size] = codes
        shifts = np.arange(per_byte) * bits
        return (padded.reshape(-1, per_byte) << shifts).sum(axis=1).astype(np.uint8).tobytes()
    nbytes = bits // 8
    shifts = np.arange(nbytes) * 8
    return ((codes[:, None] >> shifts) & 0xFF).astype(np.uint8).tobytes()


def unpack_region(region: Region, data: bytes) -> np.ndarray:
    """The codes of a region from its bytes (the inverse of :func:`pack_region`)."""
    if len(data) != region.nbytes:
        raise ValueError(f"region {region.name}: {len(data)} bytes, expected {region.nbytes}")
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    bits = region.element_bits
    if bits < 8:
        per_byte = 8 // bits
        codes = ((raw[:, None] >> (np.arange(per_byte) * bits)) & ((1 << bits) - 1)).ravel()
        codes = codes[: region.elements]
    else:
        nbytes = bits // 8
        codes = (raw.reshape(-1, nbytes) << (np.arange(nbytes) * 8)).sum(axis=1)
    if region.fmt.signed:
        codes = np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
    return codes.reshape(region.shape)


def pack_image(image: ParamImage) -> list[tuple[int, bytes]]:
    """(base address, bytes) of every parameter region of an image, for LOAD."""
    regions = memory_map(image.preset)
    return [
        (regions[spec.name].base, pack_region(regions[spec.name], image.arrays[spec.name]))
        for spec in fields_for(image.preset)
    ]


def address_bits(preset: Preset) -> int:
    """Width of a byte address that reaches every region."""
    return max(r.end for r in memory_map(preset).values()).bit_length()
