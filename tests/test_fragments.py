"""BLE fragments: round trips at every MTU, and lossy, duplicating and reordering links never yield wrong bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import fragments
from wire.device import MAX_MESSAGE_BYTES
from wire.errors import FrameError, MalformedError
from wire.fragments import MAX_PAYLOAD, MIN_PAYLOAD, Reassembler, split

messages = st.binary(max_size=MAX_MESSAGE_BYTES)
payloads = st.integers(MIN_PAYLOAD, MAX_PAYLOAD)


@given(message=messages, payload=payloads, msg=st.integers(0, 255))
def test_round_trip_any_message_any_mtu(message: bytes, payload: int, msg: int) -> None:
    frags = split(message, msg, payload)
    assert all(len(f) <= payload for f in frags)
    assert len(frags) == fragments.fragment_count(len(message), payload)
    r = Reassembler()
    results = [r.feed(f) for f in frags]
    assert results[-1] == (msg, message)
    assert all(res is None for res in results[:-1])
    assert r.in_progress is None


@st.composite
def conversation(draw: st.DrawFn) -> tuple[dict[int, bytes], list[bytes], int]:
    """A few messages with distinct numbers, fragmented at one payload size."""
    payload = draw(payloads)
    numbers = draw(st.lists(st.integers(0, 255), min_size=1, max_size=6, unique=True))
    sent = {n: draw(st.binary(max_size=600)) for n in numbers}
    stream = [f for n in numbers for f in split(sent[n], n, payload)]
    return sent, stream, payload


def _deliver(stream: list[bytes]) -> list[tuple[int, bytes]]:
    r = Reassembler()
    out: list[tuple[int, bytes]] = []
    for raw in stream:
        try:
            done = r.feed(raw)
        except FrameError:
            continue
        if done is not None:
            out.append(done)
    return out


@settings(max_examples=300)
@given(conv=conversation(), data=st.data())
def test_any_order_with_repeats_never_yields_wrong_bytes(
    conv: tuple[dict[int, bytes], list[bytes], int], data: st.DataObject
) -> None:
    sent, stream, _ = conv
    picks = data.draw(st.lists(st.integers(0, len(stream) - 1), max_size=4 * len(stream)))
    for msg, body in _deliver([stream[i] for i in picks]):
        assert body == sent[msg]


@settings(max_examples=300)
@given(conv=conversation(), data=st.data())
def test_in_order_link_that_drops_and_repeats(
    conv: tuple[dict[int, bytes], list[bytes], int], data: st.DataObject
) -> None:
    """BLE keeps order: every message with no lost fragment arrives exactly once; no other does."""
    sent, stream, _ = conv
    copies = data.draw(st.lists(st.integers(0, 3), min_size=len(stream), max_size=len(stream)))
    lossy = [raw for raw, n in zip(stream, copies, strict=True) for _ in range(n)]
    intact = {fragments.parse(raw).msg for raw in stream} - {
        fragments.parse(raw).msg for raw, n in zip(stream, copies, strict=True) if n == 0
    }
    got = _deliver(lossy)
    assert sorted(msg for msg, _ in got) == sorted(intact)
    assert all(body == sent[msg] for msg, body in got)


def test_worked_example_of_the_docs() -> None:
    """The bytes docs/ble.md shows firmware writers."""
    message = bytes(range(40))
    frags = split(message, 7, 20)
    assert [f.hex(" ") for f in frags] == [
        "07 00 00 28 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
        "07 01 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21",
        "07 02 22 23 24 25 26 27",
    ]


def _frags(n: int = 40, msg: int = 1) -> list[bytes]:
    return split(bytes(range(n)), msg, 20)


def test_gap_is_a_frame_error_and_drops_the_message() -> None:
    f = _frags()
    r = Reassembler()
    r.feed(f[0])
    with pytest.raises(FrameError, match=r"fragment 2 arrived while fragment 1 was expected") as info:
        r.feed(f[2])
    assert info.value.field == "index"
    assert r.in_progress is None


def test_duplicates_are_ignored_even_after_completion() -> None:
    f = _frags()
    r = Reassembler()
    assert r.feed(f[0]) is None
    assert r.feed(f[0]) is None
    assert r.feed(f[1]) is None
    assert r.feed(f[1]) is None
    assert r.feed(f[2]) == (1, bytes(range(40)))
    assert r.feed(f[2]) is None
    assert r.feed(f[0]) is None
    assert r.duplicates == 4


def test_duplicate_with_other_bytes_is_refused() -> None:
    f = _frags()
    r = Reassembler()
    r.feed(f[0])
    r.feed(f[1])
    with pytest.raises(FrameError, match="came twice with other bytes"):
        r.feed(f[1][:-1] + b"\xee")


def test_fragment_without_first_is_refused_without_touching_the_message_in_progress() -> None:
    other = _frags(msg=9)
    f = _frags()
    r = Reassembler()
    r.feed(f[0])
    with pytest.raises(FrameError, match="message 9 arrived without its first fragment"):
        r.feed(other[1])
    assert r.in_progress == 1
    r.feed(f[1])
    assert r.feed(f[2]) == (1, bytes(range(40)))


def test_new_first_fragment_resets() -> None:
    a, b = _frags(msg=1), _frags(30, msg=2)
    r = Reassembler()
    r.feed(a[0])
    r.feed(b[0])
    assert r.in_progress == 2
    assert r.feed(b[1]) == (2, bytes(range(30)))


def test_wrong_sized_fragment_is_refused() -> None:
    f = _frags()
    r = Reassembler()
    r.feed(f[0])
    with pytest.raises(FrameError, match="holds 17 bytes, expected 18"):
        r.feed(f[1][:-1])


def test_total_over_the_limit_is_refused_at_the_first_fragment() -> None:
    raw = fragments.FIRST_HEADER.pack(3, 0, MAX_MESSAGE_BYTES + 1) + bytes(16)
    with pytest.raises(FrameError, match=f"claims {MAX_MESSAGE_BYTES + 1} bytes, over {MAX_MESSAGE_BYTES}") as info:
        Reassembler().feed(raw)
    assert info.value.field == "total"


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x01\x00\x00"])
def test_short_fragments_are_refused(raw: bytes) -> None:
    with pytest.raises(FrameError, match="shorter than"):
        Reassembler().feed(raw)


def test_first_fragment_claiming_less_than_it_holds_is_refused() -> None:
    with pytest.raises(FrameError, match="holds 5 bytes of a 2-byte message"):
        fragments.parse(fragments.FIRST_HEADER.pack(1, 0, 2) + bytes(5))


def test_short_first_fragment_that_is_not_the_last_is_refused() -> None:
    with pytest.raises(FrameError, match=r"must fill 20\.\.512 bytes"):
        Reassembler().feed(fragments.FIRST_HEADER.pack(1, 0, 100) + bytes(4))


@pytest.mark.parametrize(
    ("message", "msg", "payload", "error"),
    [
        (b"x", 1, 19, "outside 20..512"),
        (b"x", 1, 513, "outside 20..512"),
        (b"x", 256, 20, "message number 256"),
        (bytes(MAX_MESSAGE_BYTES + 1), 1, 512, "over the 1024-byte limit"),
    ],
)
def test_split_refuses_what_cannot_travel(message: bytes, msg: int, payload: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        split(message, msg, payload)


def test_payload_follows_the_negotiated_mtu() -> None:
    assert fragments.payload_for_mtu(23) == 20
    assert fragments.payload_for_mtu(247) == 244
    assert fragments.payload_for_mtu(517) == 512
    assert fragments.payload_for_mtu(10) == 20


def test_service_data_round_trip_and_errors() -> None:
    data = fragments.service_data("stock001")
    assert data == b"\x01stock001"
    assert fragments.pid_of_service_data(data) == "stock001"
    with pytest.raises(MalformedError, match="not version 1"):
        fragments.pid_of_service_data(b"\x02stock001")
    with pytest.raises(MalformedError, match="not a product ID"):
        fragments.pid_of_service_data(b"\x01STOCK001")
    with pytest.raises(MalformedError, match="has 8 characters"):
        fragments.service_data("stock001stock001")
