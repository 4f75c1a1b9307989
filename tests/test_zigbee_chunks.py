"""The Zigbee chunk codec: any message, any chunk size 20..80, any order, duplicates tolerated, gaps detected."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import zigbee_chunks as zc
from wire.device import MAX_MESSAGE_BYTES
from wire.errors import MalformedError

messages = st.binary(min_size=0, max_size=MAX_MESSAGE_BYTES)
chunk_sizes = st.integers(min_value=zc.MIN_CHUNK_BYTES, max_value=zc.MAX_CHUNK_BYTES)
msg_numbers = st.integers(min_value=0, max_value=255)


def feed_all(reassembler: zc.Reassembler, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    done = []
    for raw in chunks:
        result = reassembler.feed(raw, 0.0)
        if result is not None:
            done.append(result)
    return done


@given(messages, chunk_sizes, msg_numbers)
def test_round_trip_in_order(message: bytes, size: int, msg: int) -> None:
    chunks = zc.split(message, msg, size)
    assert all(len(c) <= size for c in chunks)
    assert feed_all(zc.Reassembler(), chunks) == [(msg, message)]


@given(messages, chunk_sizes, msg_numbers, st.randoms(use_true_random=False))
def test_round_trip_shuffled_with_duplicates(message: bytes, size: int, msg: int, rnd: random.Random) -> None:
    chunks = zc.split(message, msg, size)
    noisy = chunks + [rnd.choice(chunks) for _ in range(rnd.randint(0, len(chunks)))]
    rnd.shuffle(noisy)
    # The last arrival completes the message; a duplicate after that is ignored, not a second message.
    reassembler = zc.Reassembler()
    assert feed_all(reassembler, noisy) == [(msg, message)]
    assert reassembler.duplicates == len(noisy) - len(chunks)


@given(st.binary(min_size=zc.MAX_CHUNK_BYTES + 1, max_size=MAX_MESSAGE_BYTES), chunk_sizes, st.data())
def test_a_missing_chunk_is_detected(message: bytes, size: int, data: st.DataObject) -> None:
    chunks = zc.split(message, 7, size)
    lost = data.draw(st.integers(min_value=0, max_value=len(chunks) - 1))
    reassembler = zc.Reassembler()
    assert feed_all(reassembler, chunks[:lost] + chunks[lost + 1 :]) == []
    assert reassembler.missing(7) == [lost]


@settings(max_examples=50)
@given(st.lists(st.tuples(msg_numbers, messages), min_size=2, max_size=4, unique_by=lambda p: p[0]), chunk_sizes)
def test_interleaved_messages(pairs: list[tuple[int, bytes]], size: int) -> None:
    streams = [zc.split(m, n, size) for n, m in pairs]
    interleaved = [c for group in zip(*streams, strict=False) for c in group]
    interleaved += [c for s in streams for c in s[min(len(x) for x in streams) :]]
    assert sorted(feed_all(zc.Reassembler(), interleaved)) == sorted(pairs)


def test_header_layout() -> None:
    chunks = zc.split(b"x" * 100, 0x42, 40)
    assert len(chunks) == 3
    assert chunks[1][:5] == bytes([0x42, 1, 3, 100, 0])
    assert zc.decode_chunk(chunks[2]) == zc.Chunk(msg=0x42, index=2, count=3, total=100, data=b"x" * 30)


@pytest.mark.parametrize("size", [zc.MIN_CHUNK_BYTES - 1, zc.MAX_CHUNK_BYTES + 1])
def test_chunk_size_out_of_range(size: int) -> None:
    with pytest.raises(ValueError, match="chunk size"):
        zc.split(b"abc", 0, size)


def test_message_over_the_limit_is_refused_by_sender_and_receiver() -> None:
    with pytest.raises(ValueError, match="limit"):
        zc.split(b"x" * (MAX_MESSAGE_BYTES + 1), 0, 80)
    big = zc.Chunk(msg=1, index=0, count=20, total=1500, data=b"x" * 75).encode()
    with pytest.raises(zc.ChunkError, match="over 1024"):
        zc.Reassembler().feed(big, 0.0)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"\x01\x00", "chunk"),
        (bytes([1, 3, 3, 10, 0]) + b"x", "index"),
        (bytes([1, 0, 0, 10, 0]), "index"),
        (bytes([1, 0, 1, 3, 0]) + b"toolong", "total"),
    ],
)
def test_bad_headers_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(zc.ChunkError) as info:
        zc.decode_chunk(raw)
    assert info.value.field == field
    assert isinstance(info.value, MalformedError)


def test_conflicting_duplicate_and_disagreeing_sizes_raise() -> None:
    reassembler = zc.Reassembler()
    first, _ = zc.split(b"a" * 100, 5, 64)
    reassembler.feed(first, 0.0)
    with pytest.raises(zc.ChunkError, match="twice with other bytes"):
        reassembler.feed(first[:-1] + b"b", 0.0)
    other = zc.Chunk(msg=5, index=1, count=3, total=100, data=b"a").encode()
    with pytest.raises(zc.ChunkError, match="earlier chunks said"):
        reassembler.feed(other, 0.0)


def test_partial_messages_expire_and_are_bounded() -> None:
    reassembler = zc.Reassembler(timeout_s=1.0, max_partial=2)
    for msg in (1, 2):
        reassembler.feed(zc.split(b"y" * 100, msg, 40)[0], 0.0)
    reassembler.feed(zc.split(b"y" * 100, 3, 40)[0], 0.5)
    assert reassembler.missing(1) is None  # evicted, oldest first
    assert reassembler.missing(3) == [1, 2]
    assert reassembler.expire(2.0) == [2, 3]
    assert reassembler.missing(3) is None


def test_a_message_number_reused_with_other_bytes_starts_a_new_message() -> None:
    # A sender that restarted numbers its messages from the same point again: same number, new content.
    reassembler = zc.Reassembler()
    assert feed_all(reassembler, zc.split(b"one" * 40, 9, 30)) == [(9, b"one" * 40)]
    assert feed_all(reassembler, zc.split(b"one" * 40, 9, 30)) == []  # a repeat of the very same message
    assert feed_all(reassembler, zc.split(b"two" * 40, 9, 30)) == [(9, b"two" * 40)]
    reassembler.forget(9)
    assert feed_all(reassembler, zc.split(b"two" * 40, 9, 30)) == [(9, b"two" * 40)]


def test_manufacturer_name_carries_the_pid() -> None:
    name = zc.manufacturer_name("abcd1234")
    assert name == "_TZ3000_abcd1234"
    assert zc.pid_of_manufacturer_name(name) == "abcd1234"
    assert zc.pid_of_manufacturer_name("ACME-ZB_0000zzzz") == "0000zzzz"


@pytest.mark.parametrize("name", ["_TZ3000_abc", "_TZ3000_ABCD1234", "_TZ3000_abcd12345", ""])
def test_bad_manufacturer_names_are_refused(name: str) -> None:
    with pytest.raises(MalformedError) as info:
        zc.pid_of_manufacturer_name(name)
    assert "manufacturer_name" in str(info.value.field)


def test_manufacturer_name_needs_an_8_character_pid_and_prefix() -> None:
    with pytest.raises(MalformedError, match="8 characters"):
        zc.manufacturer_name("abcd1234abcd1234")
    with pytest.raises(MalformedError, match="prefix"):
        zc.manufacturer_name("abcd1234", prefix="short")


def test_cluster_lies_in_the_manufacturer_specific_range() -> None:
    assert 0xFC00 <= zc.CLUSTER_ID <= 0xFFFF
    assert zc.DEFAULT_CHUNK_BYTES + 5 + 1 <= 82  # ZCL header with manufacturer code + length prefix: one APS frame
