"""The host driver of the serial link: one class, :class:`Link`, for a board, the simulated board
and the fake board alike.

It sits between the host's loop (``mstpn play``, ``selftest``, tests) and a pyserial URL
(``/dev/ttyUSB1``, ``socket://localhost:4000``, ``loop://``): it frames each request as
:mod:`mstpn.spec.protocol` says (COBS from the ``cobs`` package, CRC-16 from ``crcmod``), waits
for the one reply with the same sequence number, and retries a lost or corrupt exchange with the
*same* sequence number, so the gateware recognises a repeated STEP and answers it from its
stored reply instead of stepping twice.

Cost per exchange: the frame's bytes on the wire (``protocol.wire_bytes_max``) plus one
round trip; a STEP of the preprocessed 400-byte frame is 411 bytes out and 13 back.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

import crcmod.predefined
import numpy as np
import serial
from cobs import cobs

from ..model.image import ParamImage
from ..model.memmap import memory_map, pack_image, unpack_region
from ..spec import protocol as P
from ..spec.presets import Preset
from ..spec.qformat import format_hash

__all__ = [
    "LinkError", "LinkTimeout", "DeviceError", "InfoMismatch", "FrameError", "StepReply",
    "Link", "crc16", "encode_frame", "decode_body", "body_of", "open_port",
]

#: CRC-16/CCITT-FALSE (crcmod's "crc-ccitt-false"): poly 0x1021, init 0xFFFF, no reflection.
crc16 = crcmod.predefined.mkPredefinedCrcFun(P.CRC_NAME)

#: Device errors that mean "your request arrived damaged": worth a retry.
TRANSIENT = (P.Error.BAD_CRC, P.Error.BAD_FRAME, P.Error.OVERSIZE, P.Error.BAD_LENGTH)


class LinkError(Exception):
    """A problem with the link: opening the port, a timeout, a device error."""


class LinkTimeout(LinkError):
    """No valid reply came in time, after every retry."""


class FrameError(LinkError):
    """A received frame does not decode or check."""


class InfoMismatch(LinkError):
    """The board's INFO does not fit the parameter image."""


class DeviceError(LinkError):
    """The board answered a request with an ERROR reply."""

    def __init__(self, code: int, request: int, what: str):
        self.code = code
        self.request = request
        try:
            name = P.Error(code).name
        except ValueError:
            name = f"error 0x{code:02x}"
        super().__init__(f"{what}: the board replied {name}")


@dataclass
class StepReply:
    """The reply to a STEP."""

    action: int
    logits: list[int] | None = None
    counters: dict[str, int] | None = None


def body_of(type_: int, seq: int, payload: bytes) -> bytes:
    """A frame's decoded body: header, payload, CRC (big-endian)."""
    if len(payload) > P.MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes; the protocol allows {P.MAX_PAYLOAD}")
    head = P.HEADER.pack(type_, seq & 0xFF, len(payload)) + bytes(payload)
    return head + crc16(head).to_bytes(2, "big")


def encode_frame(type_: int, seq: int, payload: bytes = b"") -> bytes:
    """A frame's bytes on the wire: COBS of the body, then the 0x00 delimiter."""
    return cobs.encode(body_of(type_, seq, payload)) + b"\x00"


def decode_body(encoded: bytes) -> tuple[int, int, bytes]:
    """(type, seq, payload) of one frame's COBS bytes (without the delimiter).

    Raises
    ------
    FrameError
        On broken COBS, a short body, a bad CRC or a length that disagrees.
    """
    try:
        body = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise FrameError(f"bad COBS: {exc}") from None
    if len(body) < P.OVERHEAD_BYTES:
        raise FrameError(f"frame of {len(body)} bytes is shorter than a header and CRC")
    if crc16(body) != 0:
        raise FrameError("bad CRC")
    type_, seq, length = P.HEADER.unpack_from(body)
    if length != len(body) - P.OVERHEAD_BYTES:
        raise FrameError(f"length field {length}, payload {len(body) - P.OVERHEAD_BYTES}")
    return type_, seq, body[P.HEADER_BYTES:-P.CRC_BYTES]


def open_port(url: str, baud: int, timeout: float):
    """Open a pyserial URL, turning the usual failures into messages a user can act on."""
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout, write_timeout=timeout)
    except serial.SerialException as exc:
        err = getattr(exc, "errno", None)
        text = str(exc)
        if err == errno.EBUSY or "busy" in text.lower():
            raise LinkError(f"port {url} is busy (another program has it open)") from None
        if err == errno.EACCES or "permission denied" in text.lower():
            raise LinkError(
                f"permission denied on {url} (add yourself to the group that owns it, "
                f"e.g. dialout, and log in again)") from None
        if err == errno.ENOENT or "no such file" in text.lower():
            raise LinkError(f"no such port {url} (is the board plugged in?)") from None
        if url.startswith("socket://") and ("refused" in text.lower() or "111" in text):
            raise LinkError(
                f"nothing listens at {url} (start the simulated board with "
                f"'mstpn sim serve')") from None
        raise LinkError(f"cannot open {url}: {text}") from None
    except ValueError as exc:
        raise LinkError(f"cannot open {url}: {exc}") from None


class Link:
    """A connection to an accelerator.

    Parameters
    ----------
    url : str
        A pyserial URL: ``/dev/ttyUSB1``, ``socket://localhost:4000``, ``loop://``.
    baud : int
        The line rate (ignored by socket:// and loop://).
    timeout : float
        Seconds to wait for each reply before retrying.
    retries : int
        Extra tries of an exchange after the first.
    port : serial-like, optional
        An already open port (anything with ``write``, ``read``, ``timeout``); ``url`` is then
        only a name for messages.
    step_timeout : float, optional
        Seconds to wait for a STEP reply (default ``timeout``).

    Raises
    ------
    LinkError
        If the port cannot be opened, with the reason.
    """

    def __init__(self, url: str = "", baud: int = 3_000_000, timeout: float = 1.0,
                 retries: int = 5, port=None, step_timeout: float | None = None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        self.url = url or repr(port)
        self.timeout = timeout
        self.step_timeout = timeout if step_timeout is None else step_timeout
        self.retries = retries
        self.port = port if port is not None else open_port(url, baud, timeout)
        self._seq = 0
        self._last_step: tuple[int, bytes] | None = None
        self._rx = bytearray()
        self.stats = {"exchanges": 0, "retries": 0, "bytes_out": 0, "bytes_in": 0,
                      "bad_frames": 0, "stale": 0}
        self._info: P.Info | None = None

    # --- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the port."""
        self.port.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_frame(self, deadline: float) -> bytes | None:
        """The next frame's COBS bytes, or None at the deadline."""
        while True:
            end = self._rx.find(0)
            if end >= 0:
                frame = bytes(self._rx[:end])
                del self._rx[:end + 1]
                if frame:
                    return frame
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # block for the first byte, then take whatever else has arrived without waiting
            # (socket:// reports at most 1 byte in in_waiting)
            self.port.timeout = min(left, 0.05)
            chunk = self.port.read(1)
            if chunk:
                self.port.timeout = 0
                chunk += self.port.read(4096)
                self.stats["bytes_in"] += len(chunk)
                self._rx += chunk
                if len(self._rx) > 4 * P.MAX_WIRE_BYTES:   # no delimiter in sight: garbage
                    del self._rx[:-P.MAX_WIRE_BYTES]

    def exchange(self, command: int, payload: bytes = b"", what: str | None = None,
                 timeout: float | None = None) -> bytes:
        """Send one request and return its reply's payload, retrying lost or damaged ones.

        Raises
        ------
        DeviceError
            If the board refuses the request (not for transient framing errors, which are
            retried).
        LinkTimeout
            If no reply came after every try.
        """
        what = what or P.Command(command).name
        timeout = self.timeout if timeout is None else timeout
        seq = self._seq
        body = body_of(command, seq, payload)
        if command == P.Command.STEP and (seq, body[-2:]) == self._last_step:
            # the board would take this new STEP for a repeat of the last one: skip a number
            seq = (seq + 1) & 0xFF
            body = body_of(command, seq, payload)
        self._seq = (seq + 1) & 0xFF
        if command == P.Command.STEP:
            self._last_step = (seq, body[-2:])
        frame = cobs.encode(body) + b"\x00"
        self.stats["exchanges"] += 1
        last_error: DeviceError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                # a leading delimiter ends whatever partial frame the board holds
                self.port.write(b"\x00")
            self.port.write(frame)
            self.stats["bytes_out"] += len(frame)
            deadline = time.monotonic() + timeout
            while True:
                encoded = self._next_frame(deadline)
                if encoded is None:
                    break
                try:
                    rtype, rseq, rpayload = decode_body(encoded)
                except FrameError:
                    # most likely our reply, damaged: ask again now rather than at the deadline
                    # (a repeated STEP is answered from the board's stored reply)
                    self.stats["bad_frames"] += 1
                    break
                if rseq != seq or rtype not in (command | P.REPLY_FLAG, P.ERROR_TYPE):
                    self.stats["stale"] += 1
                    continue
                if rtype == P.ERROR_TYPE:
                    code = rpayload[0] if rpayload else 0
                    request = rpayload[1] if len(rpayload) > 1 else 0
                    last_error = DeviceError(code, request, f"{what} (seq {seq})")
                    if code in TRANSIENT and request in (command, 0):
                        break    # our request arrived damaged: send it again
                    if code in TRANSIENT:
                        continue  # an answer to line garbage that happened to carry our seq
                    raise last_error
                return rpayload
        if last_error is not None:
            raise last_error
        raise LinkTimeout(
            f"no reply to {what} (seq {seq}) from {self.url} after {self.retries + 1} "
            f"tries of {timeout:g} s (is the board running, and at this baud?)")

    # --- commands -------------------------------------------------------------------------------

    def info(self) -> P.Info:
        """INFO: who the board is."""
        self._info = P.Info.unpack(self.exchange(P.Command.INFO))
        return self._info

    def write(self, addr: int, data: bytes) -> None:
        """LOAD raw bytes at ``addr`` of the address map, in chunks."""
        for off in range(0, len(data), P.MAX_CHUNK):
            chunk = bytes(data[off:off + P.MAX_CHUNK])
            self.exchange(P.Command.LOAD, P.LOAD_HEADER.pack(addr + off) + chunk,
                          what=f"LOAD of {len(chunk)} bytes at 0x{addr + off:05x}")

    def readback(self, addr: int, n: int) -> bytes:
        """READBACK ``n`` bytes from ``addr``, in chunks."""
        out = bytearray()
        while len(out) < n:
            count = min(P.MAX_CHUNK, n - len(out))
            a = addr + len(out)
            data = self.exchange(P.Command.READBACK, P.READBACK_REQUEST.pack(a, count),
                                 what=f"READBACK of {count} bytes at 0x{a:05x}")
            if len(data) != count:
                raise FrameError(f"READBACK at 0x{a:05x}: {len(data)} bytes, asked {count}")
            out += data
        return bytes(out)

    def commit(self, content_hash: int) -> None:
        """COMMIT: the upload is complete; STEP is allowed."""
        self.exchange(P.Command.COMMIT, P.COMMIT.pack(content_hash & 0xFFFFFFFF))

    def check_image(self, image: ParamImage, info: P.Info | None = None) -> P.Info:
        """Check that the board's INFO fits ``image``.

        Raises
        ------
        InfoMismatch
            Naming what differs: protocol version, preset, Q-formats or device options.
        """
        info = info or self.info()
        if info.version != P.VERSION:
            raise InfoMismatch(
                f"the board speaks protocol version {info.version}, this host {P.VERSION}")
        try:
            board_preset = info.preset.name
        except ValueError as exc:
            raise InfoMismatch(str(exc)) from None
        if board_preset != image.preset.name:
            raise InfoMismatch(
                f"the board runs preset {board_preset}, the image is for {image.preset.name}")
        if info.format_hash != format_hash():
            raise InfoMismatch(
                f"the board's Q-formats (hash {info.format_hash:08x}) differ from this host's "
                f"({format_hash():08x}): rebuild the bitstream")
        if info.device != image.device:
            raise InfoMismatch(
                f"the board's device model ({info.device.describe()}) differs from the "
                f"image's ({image.device.describe()})")
        return info

    def load(self, image: ParamImage, verify: bool = True, force: bool = True) -> bool:
        """Upload a parameter image: check INFO, LOAD every region, verify by READBACK, COMMIT.

        Parameters
        ----------
        image : ParamImage
        verify : bool
            Read every region back and compare.
        force : bool
            Upload even if INFO says this image is already loaded.

        Returns
        -------
        bool
            Whether anything was uploaded.

        Raises
        ------
        InfoMismatch, LinkError
        """
        info = self.check_image(image)
        content = image.content_hash()
        if not force and info.loaded and info.image_hash == content:
            return False
        chunks = pack_image(image)
        for base, data in chunks:
            self.write(base, data)
        if verify:
            for base, data in chunks:
                back = self.readback(base, len(data))
                if back != data:
                    bad = next(i for i in range(len(data)) if back[i] != data[i])
                    raise LinkError(
                        f"upload verification failed at 0x{base + bad:05x}: wrote "
                        f"0x{data[bad]:02x}, read 0x{back[bad]:02x}")
        self.commit(content)
        return True

    def reset_state(self) -> None:
        """RESET_STATE: start an episode."""
        self.exchange(P.Command.RESET_STATE)

    def set_seed(self, seed: int) -> None:
        """SET_SEED of the noise LFSRs."""
        if not 0 <= seed < 1 << 32:
            raise ValueError(f"seed must be a uint32, not {seed}")
        self.exchange(P.Command.SET_SEED, P.SEED.pack(seed))

    def step(self, frame: bytes | np.ndarray, logits: bool = False,
             counters: bool = False) -> StepReply:
        """STEP one packed frame (``pack_bits`` output); returns the action and, if asked, the
        logits and the counters after the step."""
        frame = bytes(np.asarray(frame, dtype=np.uint8).ravel()) if not isinstance(
            frame, bytes | bytearray) else bytes(frame)
        flags = (P.StepFlags.LOGITS if logits else 0) | (P.StepFlags.COUNTERS if counters else 0)
        data = self.exchange(P.Command.STEP, bytes([flags]) + frame,
                             timeout=self.step_timeout)
        reply = StepReply(action=data[0])
        pos = 1
        if logits:
            actions = (len(data) - 1 - (P.counters_bytes() if counters else 0)) // 4
            reply.logits = [int.from_bytes(data[pos + 4 * k: pos + 4 * k + 4], "little",
                                           signed=True) for k in range(actions)]
            pos += 4 * actions
        if counters:
            reply.counters = _counters(data[pos:pos + P.counters_bytes()])
        return reply

    def counters(self, clear: bool = False) -> dict[str, int]:
        """COUNTERS, cleared after reading if ``clear``."""
        return _counters(self.exchange(P.Command.COUNTERS, bytes([1]) if clear else b""))

    def read_state(self, preset: Preset) -> dict[str, np.ndarray]:
        """READBACK of the state regions ``f`` (stored F) and ``h``, decoded."""
        regions = memory_map(preset)
        return {name: unpack_region(regions[name], self.readback(regions[name].base,
                                                                 regions[name].nbytes))
                for name in ("f", "h")}


def _counters(data: bytes) -> dict[str, int]:
    n = P.COUNTER_BYTES
    return {name: int.from_bytes(data[n * i:n * i + n], "little")
            for i, name in enumerate(P.COUNTER_NAMES)}
