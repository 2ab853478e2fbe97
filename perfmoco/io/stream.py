"""MRD streaming-protocol framing over any binary file object; no sockets.

Every message starts with a little-endian ``uint16`` id (:class:`MessageId`).
Byte layouts after the id (all integers little-endian):

==============  =============================================================
CONFIG_FILE     1024 bytes: the config name, NUL-padded
CONFIG_TEXT     ``uint32`` length + UTF-8 text
HEADER          ``uint32`` length + MRD XML header (UTF-8)
CLOSE           nothing
TEXT            ``uint32`` length + UTF-8 text
ACQUISITION     340-byte AcquisitionHeader, then trajectory
                (``trajectory_dimensions * number_of_samples`` float32) and
                data (``active_channels * number_of_samples`` complex64)
IMAGE           198-byte ImageHeader, ``uint64`` meta length + meta XML,
                pixels (``channels * nz * ny * nx`` of ``data_type``)
WAVEFORM        40-byte WaveformHeader, then
                ``channels * number_of_samples`` uint32
==============  =============================================================

Some senders count a trailing NUL in text, header and meta lengths; it is
stripped on reading.  Every declared length is checked against a limit
*before* anything is allocated, so a hostile or corrupt length cannot
exhaust memory.  Writing uses ismrmrd-python's
:class:`~ismrmrd.serialization.ProtocolSerializer` where it fits (images,
text, config messages, close); reading uses this module's own framing
because the serializer has no length limits and stops at unknown ids.
"""

from __future__ import annotations

import enum
import io
import struct
from typing import BinaryIO, NamedTuple

import ismrmrd
from ismrmrd.serialization import ConfigFile, ConfigText, ProtocolSerializer

__all__ = [
    "CONFIG_FILE_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Message",
    "MessageId",
    "MessageReader",
    "MessageTooLargeError",
    "MessageWriter",
    "StreamError",
    "TruncatedMessageError",
    "UnknownMessageError",
    "read_message",
]

#: Size of the CONFIG_FILE payload, bytes.
CONFIG_FILE_BYTES = 1024
#: Default limit on one message's declared size, bytes (``server.max_message_bytes``).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_IMAGE_HEADER_BYTES = 198
_ACQ_HEADER_BYTES = 340
_WAVEFORM_HEADER_BYTES = 40
#: Bytes per pixel for each MRD ``data_type``.
_PIXEL_BYTES = {1: 2, 2: 2, 3: 4, 4: 4, 5: 4, 6: 8, 7: 8, 8: 16}


class MessageId(enum.IntEnum):
    """Ids of the MRD streaming messages this module reads and writes."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ACQUISITION = 1008
    IMAGE = 1022
    WAVEFORM = 1026


class StreamError(ValueError):
    """A message that cannot be read; the stream cannot be trusted after it."""


class TruncatedMessageError(StreamError, EOFError):
    """The stream ended inside a message (or before any message id)."""


class UnknownMessageError(StreamError):
    """A message id this protocol does not know; its length cannot be known either."""

    def __init__(self, message_id: int) -> None:
        super().__init__(
            f"unknown MRD message id {message_id}; known ids: "
            + ", ".join(f"{m.value} ({m.name})" for m in MessageId)
        )
        self.message_id = message_id


class MessageTooLargeError(StreamError):
    """A declared length beyond the configured limit (refused before allocating)."""


class Message(NamedTuple):
    """One message read from a stream.

    Attributes
    ----------
    id : MessageId
    payload : str, ismrmrd.Image, bytes or None
        ``str`` for CONFIG_FILE, CONFIG_TEXT, HEADER and TEXT (trailing NULs
        removed); ``ismrmrd.Image`` for IMAGE; the raw bytes after the id for
        ACQUISITION and WAVEFORM (to pass them through untouched); ``None``
        for CLOSE.
    nbytes : int
        Bytes the message occupied on the stream, id included.
    """

    id: MessageId
    payload: str | ismrmrd.Image | bytes | None
    nbytes: int


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    """Read exactly ``n`` bytes or raise :class:`TruncatedMessageError`."""
    chunks = []
    left = n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise TruncatedMessageError(
                f"stream ended inside {what}: {n - left} of {n} bytes received"
            )
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _check_size(nbytes: int, limit: int, what: str) -> None:
    if nbytes > limit:
        raise MessageTooLargeError(
            f"{what} declares {nbytes} bytes, more than the limit of {limit} bytes "
            "(server.max_message_bytes)"
        )


def _decode_text(raw: bytes, what: str) -> str:
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StreamError(f"{what} is not UTF-8 text ({exc})") from None


def _read_text(stream: BinaryIO, limit: int, what: str) -> tuple[str, int]:
    (length,) = _U32.unpack(_read_exact(stream, 4, f"{what} length"))
    _check_size(length, limit, what)
    return _decode_text(_read_exact(stream, length, what), what), 4 + length


def _read_image(stream: BinaryIO, limit: int) -> tuple[ismrmrd.Image, int]:
    head = _read_exact(stream, _IMAGE_HEADER_BYTES, "IMAGE header")
    (data_type,) = _U16.unpack_from(head, 2)
    nx, ny, nz = struct.unpack_from("<3H", head, 16)
    (channels,) = _U16.unpack_from(head, 34)
    if data_type not in _PIXEL_BYTES:
        raise StreamError(f"IMAGE has unknown data_type {data_type}; known: {sorted(_PIXEL_BYTES)}")
    pixel_bytes = nx * ny * nz * channels * _PIXEL_BYTES[data_type]
    (meta_len,) = _U64.unpack(_read_exact(stream, 8, "IMAGE meta length"))
    _check_size(meta_len + pixel_bytes, limit, f"IMAGE ({nx}x{ny}x{nz}x{channels} pixels + meta)")
    meta = _read_exact(stream, meta_len, "IMAGE meta")
    pixels = _read_exact(stream, pixel_bytes, "IMAGE pixels")
    meta = meta.rstrip(b"\x00")
    _decode_text(meta, "IMAGE meta")
    body = io.BytesIO(_U64.pack(len(meta)) + meta + pixels)
    try:
        image = ismrmrd.Image.deserialize_from_with_header(head, body.read)
    except Exception as exc:  # ismrmrd raises assorted errors on malformed meta
        raise StreamError(f"IMAGE could not be decoded ({type(exc).__name__}: {exc})") from None
    return image, _IMAGE_HEADER_BYTES + 8 + meta_len + pixel_bytes


def _read_acquisition(stream: BinaryIO, limit: int) -> tuple[bytes, int]:
    head = _read_exact(stream, _ACQ_HEADER_BYTES, "ACQUISITION header")
    (samples,) = _U16.unpack_from(head, 34)
    (channels,) = _U16.unpack_from(head, 38)
    (traj_dims,) = _U16.unpack_from(head, 176)
    nbytes = samples * traj_dims * 4 + samples * channels * 8
    _check_size(nbytes, limit, f"ACQUISITION ({samples} samples x {channels} channels)")
    return head + _read_exact(stream, nbytes, "ACQUISITION data"), _ACQ_HEADER_BYTES + nbytes


def _read_waveform(stream: BinaryIO, limit: int) -> tuple[bytes, int]:
    head = _read_exact(stream, _WAVEFORM_HEADER_BYTES, "WAVEFORM header")
    samples, channels = struct.unpack_from("<2H", head, 28)
    nbytes = samples * channels * 4
    _check_size(nbytes, limit, f"WAVEFORM ({samples} samples x {channels} channels)")
    return head + _read_exact(stream, nbytes, "WAVEFORM data"), _WAVEFORM_HEADER_BYTES + nbytes


def read_message(
    stream: BinaryIO, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Message | None:
    """Read one message.

    Parameters
    ----------
    stream : BinaryIO
        Any object with ``read(n)`` returning bytes (``b''`` at the end).
    max_message_bytes : int, keyword-only
        Largest size a message may declare, bytes; larger ones are refused
        before anything is allocated.

    Returns
    -------
    Message or None
        ``None`` when the stream ends cleanly *between* messages.

    Raises
    ------
    TruncatedMessageError
        The stream ended inside a message.
    UnknownMessageError
        An id not in :class:`MessageId`.
    MessageTooLargeError
        A declared length beyond ``max_message_bytes``.
    StreamError
        Any other malformed message (bad UTF-8, unknown pixel type, ...).
    """
    first = stream.read(2)
    if not first:
        return None
    if len(first) < 2:
        first += _read_exact(stream, 2 - len(first), "message id")
    (raw_id,) = _U16.unpack(first)
    try:
        mid = MessageId(raw_id)
    except ValueError:
        raise UnknownMessageError(raw_id) from None
    limit = int(max_message_bytes)
    if mid is MessageId.CLOSE:
        return Message(mid, None, 2)
    if mid is MessageId.CONFIG_FILE:
        raw = _read_exact(stream, CONFIG_FILE_BYTES, "CONFIG_FILE")
        name = _decode_text(raw.split(b"\x00", 1)[0], "CONFIG_FILE")
        return Message(mid, name, 2 + CONFIG_FILE_BYTES)
    if mid in (MessageId.CONFIG_TEXT, MessageId.HEADER, MessageId.TEXT):
        text, n = _read_text(stream, limit, mid.name)
        return Message(mid, text, 2 + n)
    reader = {
        MessageId.IMAGE: _read_image,
        MessageId.ACQUISITION: _read_acquisition,
        MessageId.WAVEFORM: _read_waveform,
    }[mid]
    payload, n = reader(stream, limit)
    return Message(mid, payload, 2 + n)


class MessageReader:
    """Iterate over the messages of a stream up to (and including) CLOSE.

    Parameters
    ----------
    stream : BinaryIO
        The input (``socket.makefile('rb')``, ``io.BytesIO``, a file, ...).
    max_message_bytes : int, keyword-only
        Limit passed to :func:`read_message`.

    Notes
    -----
    Iteration stops after a CLOSE message (which is yielded) or at a clean
    end of stream; :attr:`closed_cleanly` tells which.  Errors propagate as
    :class:`StreamError` subclasses.
    """

    def __init__(
        self, stream: BinaryIO, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.stream = stream
        self.max_message_bytes = int(max_message_bytes)
        self.closed_cleanly = False
        self.bytes_read = 0

    def __iter__(self):
        while True:
            msg = read_message(self.stream, max_message_bytes=self.max_message_bytes)
            if msg is None:
                return
            self.bytes_read += msg.nbytes
            yield msg
            if msg.id is MessageId.CLOSE:
                self.closed_cleanly = True
                return


class MessageWriter:
    """Write MRD messages to a binary stream.

    Parameters
    ----------
    stream : BinaryIO
        Any object with ``write(bytes)`` (and optionally ``flush()``).
    nul_terminate : bool, keyword-only
        Count and send a trailing NUL after text, header and config text, as
        the Python MRD server and Gadgetron's C++ writers do (readers here
        accept both).
    """

    def __init__(self, stream: BinaryIO, *, nul_terminate: bool = False) -> None:
        self.stream = stream
        self.nul_terminate = bool(nul_terminate)
        self._ser = ProtocolSerializer(stream)

    def _text(self, mid: MessageId, text: str) -> None:
        data = text.encode("utf-8") + (b"\x00" if self.nul_terminate else b"")
        self.stream.write(_U16.pack(mid) + _U32.pack(len(data)) + data)

    def config_file(self, name: str) -> None:
        """CONFIG_FILE: the name of a configuration the server knows (< 1024 bytes)."""
        if len(name.encode("utf-8")) >= CONFIG_FILE_BYTES:
            raise ValueError(
                f"config name must be < {CONFIG_FILE_BYTES} bytes, got {name[:40]!r}..."
            )
        self._ser.serialize(ConfigFile(name))

    def config_text(self, text: str) -> None:
        """CONFIG_TEXT: a configuration sent as text."""
        if self.nul_terminate:
            self._text(MessageId.CONFIG_TEXT, text)
        else:
            self._ser.serialize(ConfigText(text))

    def header(self, xml: str | bytes) -> None:
        """HEADER: the MRD XML header (any trailing NUL of ``xml`` is dropped first)."""
        if isinstance(xml, bytes | bytearray):
            xml = bytes(xml).decode("utf-8")
        self._text(MessageId.HEADER, xml.rstrip("\x00"))

    def text(self, text: str) -> None:
        """TEXT: a log line or JSON settings."""
        if self.nul_terminate:
            self._text(MessageId.TEXT, text)
        else:
            self._ser.serialize(str(text))

    def image(self, image: ismrmrd.Image) -> None:
        """IMAGE: one ``ismrmrd.Image`` (header, meta, pixels)."""
        self._ser.serialize(image)

    def raw(self, message_id: MessageId | int, body: bytes) -> None:
        """Any message from its id and the bytes after the id (pass-through)."""
        self.stream.write(_U16.pack(int(message_id)) + bytes(body))

    def close(self) -> None:
        """CLOSE, then flush the stream (which stays open)."""
        self.stream.write(_U16.pack(MessageId.CLOSE))
        self.flush()

    def flush(self) -> None:
        """Flush the underlying stream when it can be flushed."""
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()
