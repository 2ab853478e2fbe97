"""MRD message framing: round trips, trailing NULs, limits, truncation, unknown ids."""

from __future__ import annotations

import io
import struct

import ismrmrd
import numpy as np
import pytest
from ismrmrd.serialization import ProtocolDeserializer

from perfmoco.io.stream import (
    CONFIG_FILE_BYTES,
    MessageId,
    MessageReader,
    MessageTooLargeError,
    MessageWriter,
    StreamError,
    TruncatedMessageError,
    UnknownMessageError,
    read_message,
)

HEADER_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
    "<experimentalConditions><H1resonanceFrequency_Hz>127000000</H1resonanceFrequency_Hz>"
    "</experimentalConditions><encoding>"
    "<encodedSpace><matrixSize><x>32</x><y>32</y><z>1</z></matrixSize>"
    "<fieldOfView_mm><x>300</x><y>300</y><z>8</z></fieldOfView_mm></encodedSpace>"
    "<reconSpace><matrixSize><x>32</x><y>32</y><z>1</z></matrixSize>"
    "<fieldOfView_mm><x>300</x><y>300</y><z>8</z></fieldOfView_mm></reconSpace>"
    "<encodingLimits/><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
)


def make_image(seed: int = 0, shape=(24, 32), series: int = 1) -> ismrmrd.Image:
    rng = np.random.default_rng(seed)
    img = ismrmrd.Image.from_array(rng.random(shape, dtype=np.float32), transpose=False)
    img.image_series_index = series
    img.slice = seed % 3
    img.repetition = seed
    img.meta["GADGETRON_DataRole"] = "Image"
    img.meta["PERFMOCO_Test"] = str(seed)
    return img


def _all(data: bytes, **kw) -> list:
    return list(MessageReader(io.BytesIO(data), **kw))


def test_round_trip_every_kind():
    buf = io.BytesIO()
    w = MessageWriter(buf)
    w.config_file("perfmoco")
    w.config_text("<configuration/>")
    w.header(HEADER_XML)
    w.text('{"server.method": "none"}')
    images = [make_image(i) for i in range(3)]
    for img in images:
        w.image(img)
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 16), np.complex64))
    w.raw(MessageId.ACQUISITION, acq.to_bytes())
    wav = ismrmrd.Waveform.from_array(np.arange(20, dtype=np.uint32).reshape(2, 10))
    w.raw(MessageId.WAVEFORM, wav.to_bytes())
    w.close()
    msgs = _all(buf.getvalue())
    ids = [m.id for m in msgs]
    assert ids == [1, 2, 3, 5, 1022, 1022, 1022, 1008, 1026, 4]
    assert msgs[0].payload == "perfmoco"
    assert msgs[1].payload == "<configuration/>"
    assert msgs[2].payload == HEADER_XML
    assert msgs[3].payload == '{"server.method": "none"}'
    for m, img in zip(msgs[4:7], images):
        assert np.array_equal(m.payload.data, img.data)
        assert m.payload.image_series_index == 1 and m.payload.repetition == img.repetition
        assert m.payload.meta["PERFMOCO_Test"] == img.meta["PERFMOCO_Test"]
    # pass-through bytes are exactly what was sent
    assert msgs[7].payload == acq.to_bytes()
    assert msgs[8].payload == wav.to_bytes()
    assert sum(m.nbytes for m in msgs) == len(buf.getvalue())


def test_written_stream_is_readable_by_ismrmrd_deserializer():
    buf = io.BytesIO()
    w = MessageWriter(buf)
    w.config_file("perfmoco")
    w.text("hello")
    w.image(make_image(4))
    w.close()
    buf.seek(0)
    items = list(ProtocolDeserializer(buf).deserialize())
    assert items[0] == "perfmoco" and items[1] == "hello"
    assert np.array_equal(items[2].data, make_image(4).data)


def test_trailing_nul_is_stripped_from_text_header_and_meta():
    buf = io.BytesIO()
    w = MessageWriter(buf, nul_terminate=True)
    w.header(HEADER_XML)
    w.text("log line")
    w.config_text("cfg")
    img = make_image(1)
    raw = bytearray(img.to_bytes())
    meta = img.attribute_string.encode() + b"\x00"
    # rebuild the image message with a NUL counted in the meta length (Gadgetron C++ writer)
    body = raw[:198] + struct.pack("<Q", len(meta)) + meta + img.data.tobytes()
    w.raw(MessageId.IMAGE, bytes(body))
    w.close()
    data = buf.getvalue()
    msgs = _all(data)
    assert msgs[0].payload == HEADER_XML
    assert msgs[1].payload == "log line" and msgs[2].payload == "cfg"
    assert msgs[3].payload.meta["PERFMOCO_Test"] == "1"
    # the NUL-free header parses as MRD XML
    ismrmrd.xsd.CreateFromDocument(msgs[0].payload)


def test_config_file_is_nul_padded_1024_bytes():
    buf = io.BytesIO()
    MessageWriter(buf).config_file("perfmoco-moco")
    data = buf.getvalue()
    assert len(data) == 2 + CONFIG_FILE_BYTES
    assert read_message(io.BytesIO(data)).payload == "perfmoco-moco"
    with pytest.raises(ValueError, match="config name"):
        MessageWriter(io.BytesIO()).config_file("x" * 2000)


def test_oversized_text_refused_before_reading_payload():
    data = struct.pack("<HI", MessageId.TEXT, 2**31)  # declares 2 GiB, sends nothing
    with pytest.raises(MessageTooLargeError, match="2147483648 bytes"):
        read_message(io.BytesIO(data), max_message_bytes=1 << 20)


def test_oversized_image_refused_before_allocating():
    img = make_image(0)
    head = bytearray(img.to_bytes()[:198])
    struct.pack_into("<3H", head, 16, 65535, 65535, 64)  # ~1 TB of float32 pixels
    data = struct.pack("<H", MessageId.IMAGE) + bytes(head) + struct.pack("<Q", 0)
    with pytest.raises(MessageTooLargeError, match="limit"):
        read_message(io.BytesIO(data), max_message_bytes=1 << 20)
    meta_bomb = struct.pack("<H", MessageId.IMAGE) + img.to_bytes()[:198] + struct.pack("<Q", 2**60)
    with pytest.raises(MessageTooLargeError):
        read_message(io.BytesIO(meta_bomb), max_message_bytes=1 << 20)


def test_oversized_acquisition_refused():
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 16), np.complex64))
    head = bytearray(acq.to_bytes()[:340])
    struct.pack_into("<H", head, 34, 65535)
    struct.pack_into("<H", head, 38, 1024)
    with pytest.raises(MessageTooLargeError):
        read_message(
            io.BytesIO(struct.pack("<H", 1008) + bytes(head)), max_message_bytes=1 << 20
        )


@pytest.mark.parametrize("cut", [1, 3, 10, 200, 230, -1])
def test_truncated_image(cut):
    buf = io.BytesIO()
    MessageWriter(buf).image(make_image(2))
    data = buf.getvalue()
    with pytest.raises(TruncatedMessageError, match="stream ended inside"):
        read_message(io.BytesIO(data[:cut]))


@pytest.mark.parametrize("mid", [MessageId.TEXT, MessageId.HEADER, MessageId.CONFIG_FILE])
def test_truncated_text_messages(mid):
    data = struct.pack("<HI", mid, 100) + b"short"
    with pytest.raises(TruncatedMessageError):
        read_message(io.BytesIO(data))


def test_clean_end_between_messages_and_close():
    assert read_message(io.BytesIO(b"")) is None
    r = MessageReader(io.BytesIO(struct.pack("<H", 5) + struct.pack("<I", 2) + b"hi"))
    assert [m.payload for m in r] == ["hi"] and not r.closed_cleanly
    r = MessageReader(io.BytesIO(struct.pack("<HH", 4, 5)))  # nothing read after CLOSE
    assert [m.id for m in r] == [MessageId.CLOSE] and r.closed_cleanly


@pytest.mark.parametrize("bad_id", [0, 6, 1030, 4096, 65535])
def test_unknown_ids(bad_id):
    with pytest.raises(UnknownMessageError, match=f"unknown MRD message id {bad_id}") as info:
        read_message(io.BytesIO(struct.pack("<H", bad_id) + b"\x00" * 8))
    assert info.value.message_id == bad_id


def test_malformed_payloads():
    bad_utf8 = struct.pack("<HI", MessageId.TEXT, 2) + b"\xff\xfe"
    with pytest.raises(StreamError, match="UTF-8"):
        read_message(io.BytesIO(bad_utf8))
    head = bytearray(make_image(0).to_bytes()[:198])
    struct.pack_into("<H", head, 2, 99)
    with pytest.raises(StreamError, match="data_type 99"):
        read_message(io.BytesIO(struct.pack("<H", 1022) + bytes(head) + b"\x00" * 8))
    img = make_image(0)
    meta = b"<ismrmrdMeta><meta>"  # not closed
    body = img.to_bytes()[:198] + struct.pack("<Q", len(meta)) + meta + img.data.tobytes()
    with pytest.raises(StreamError, match="could not be decoded"):
        read_message(io.BytesIO(struct.pack("<H", 1022) + body))


def test_stream_errors_are_value_errors():
    assert issubclass(TruncatedMessageError, EOFError)
    assert issubclass(StreamError, ValueError)
