"""55AA framing: exact layout, an incremental decoder that survives garbage and splits, and refuses broken frames."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import FrameError, MalformedError
from wire.frames55aa import MAX_PAYLOAD, PREFIX, SUFFIX, Command, Decoder, Frame, encode

FRAME = Frame(seq=1, cmd=Command.INFO, payload=b"\xa2bid\x01bopdinfo")


def test_layout() -> None:
    raw = encode(FRAME)
    assert raw[:4] == PREFIX
    assert raw[-4:] == SUFFIX
    seq, cmd, length = struct.unpack(">III", raw[4:16])
    assert (seq, cmd, length) == (1, 0x80, len(FRAME.payload) + 8)
    assert raw[16:-8] == FRAME.payload
    assert struct.unpack(">I", raw[-8:-4])[0] == zlib.crc32(raw[:-8])
    assert len(raw) == 16 + len(FRAME.payload) + 8


def test_command_codes() -> None:
    assert (Command.INFO, Command.REBADGE, Command.ERROR) == (0x80, 0x81, 0x8F)


def test_empty_payload() -> None:
    frame = Frame(seq=0, cmd=Command.ERROR, payload=b"")
    assert Decoder().feed(encode(frame)) == [frame]


def test_oversize_payload_is_refused_on_encode() -> None:
    with pytest.raises(FrameError) as caught:
        encode(Frame(1, 1, b"\x00" * (MAX_PAYLOAD + 1)))
    assert caught.value.field == "payload"
    assert Decoder().feed(encode(Frame(1, 1, b"\x00" * MAX_PAYLOAD)))[0].payload == b"\x00" * MAX_PAYLOAD


def test_several_frames_in_one_chunk() -> None:
    frames = [Frame(seq=i, cmd=Command.REBADGE, payload=bytes([i]) * i) for i in range(5)]
    assert Decoder().feed(b"".join(encode(f) for f in frames)) == frames


def test_garbage_is_skipped_and_counted() -> None:
    decoder = Decoder()
    assert decoder.feed(b"\x01\x02\x03junk\x00\x00\x55") == []  # ends in a possible prefix start
    assert decoder.feed(b"\x11" + encode(FRAME) + b"zz" + encode(FRAME)) == [FRAME, FRAME]
    assert decoder.skipped == len(b"\x01\x02\x03junk\x00\x00\x55\x11") + 2


def test_garbage_alone_keeps_only_a_possible_prefix_start() -> None:
    decoder = Decoder()
    decoder.feed(b"x" * 1000)
    assert decoder.skipped == 1000 - (len(PREFIX) - 1)
    assert decoder.feed(encode(FRAME)) == [FRAME]
    assert decoder.skipped == 1000


def test_split_at_every_byte_boundary() -> None:
    raw = encode(FRAME)
    for cut in range(len(raw) + 1):
        decoder = Decoder()
        assert decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) == [FRAME], cut
        assert decoder.skipped == 0


def test_one_byte_at_a_time() -> None:
    decoder = Decoder()
    out: list[Frame] = []
    for byte in encode(FRAME) * 3:
        out += decoder.feed(bytes([byte]))
    assert out == [FRAME] * 3


def test_bad_crc_is_refused_and_the_stream_recovers() -> None:
    bad = bytearray(encode(FRAME))
    bad[20] ^= 0xFF
    decoder = Decoder()
    with pytest.raises(FrameError, match="CRC32") as caught:
        decoder.feed(bytes(bad) + encode(FRAME))
    assert caught.value.field == "crc"
    assert decoder.feed(b"") == [FRAME]


def test_bad_suffix_is_refused() -> None:
    bad = encode(FRAME)[:-4] + b"\x00\x00\xaa\x56"
    with pytest.raises(FrameError, match="suffix") as caught:
        Decoder().feed(bad)
    assert caught.value.field == "suffix"


@pytest.mark.parametrize("length", [0, 7, MAX_PAYLOAD + 9, 2**32 - 1])
def test_out_of_range_length_is_refused_and_resynced(length: int) -> None:
    header = PREFIX + struct.pack(">III", 1, 0x80, length)
    decoder = Decoder()
    with pytest.raises(FrameError, match="out of range") as caught:
        decoder.feed(header + encode(FRAME))
    assert caught.value.field == "len"
    assert decoder.feed(b"") == [FRAME]


def test_good_frames_ahead_of_a_bad_one_are_not_lost() -> None:
    bad = bytearray(encode(Frame(2, 0x80, b"xyz")))
    bad[-5] ^= 1
    decoder = Decoder()
    assert decoder.feed(encode(FRAME) + bytes(bad) + encode(FRAME)) == [FRAME]
    with pytest.raises(FrameError, match="seq 2"):
        decoder.feed(b"")
    assert decoder.feed(b"") == [FRAME]


def test_frame_error_is_malformed() -> None:
    assert issubclass(FrameError, MalformedError)


@given(
    payload=st.binary(max_size=300),
    seq=st.integers(0, 2**32 - 1),
    cmd=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    garbage=st.binary(max_size=20).filter(lambda g: PREFIX[:1] not in g),
)
def test_any_payload_split_anywhere_round_trips(
    payload: bytes, seq: int, cmd: int, cuts: list[int], garbage: bytes
) -> None:
    frame = Frame(seq, cmd, payload)
    raw = garbage + encode(frame)
    points = sorted({min(c, len(raw)) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    decoder = Decoder()
    out = [f for chunk in chunks for f in decoder.feed(chunk)]
    assert out == [frame]
    assert decoder.skipped == len(garbage)
