"""The SSE decoder behind the openai provider: events come out whole however the bytes were cut."""

from __future__ import annotations

import pytest

from agentstream.core.providers._sse import ServerSentEvent, SSEDecoder

# Multi-line data, a comment, CRLF line ends, an event name, an id, and text whose characters span
# 2, 3 and 4 bytes, ZWJ sequences, flags and combining marks: every split point below cuts something.
STREAM = (
    ": keep-alive\r\n"
    "id: 7\r\n"
    "data: 你好，世界\r\n"
    "data: 👨‍👩‍👧‍👦 🇯🇵🇫🇷 é ñ\r\n"
    "\r\n"
    "event: error\r\n"
    'data:{"message": "überlastet"}\r\n'
    "\r\n"
    "data: [DONE]\r\n"
    "\r\n"
).encode()
EXPECTED = [
    ServerSentEvent(data="你好，世界\n👨‍👩‍👧‍👦 🇯🇵🇫🇷 é ñ", id="7"),
    ServerSentEvent(data='{"message": "überlastet"}', event="error", id="7"),
    ServerSentEvent(data="[DONE]", id="7"),
]


def feed_all(*pieces: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


def test_an_event_comes_out_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: hel") == []
    assert decoder.feed(b"lo\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent(data="hello")]


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_in_two_at_any_byte_gives_the_same_events(cut: int) -> None:
    assert feed_all(STREAM[:cut], STREAM[cut:]) == EXPECTED


def test_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    assert feed_all(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_all_three_line_endings(newline: str) -> None:
    stream = f"data: a{newline}data: b{newline}{newline}data: c{newline}{newline}".encode()
    assert feed_all(stream) == [ServerSentEvent(data="a\nb"), ServerSentEvent(data="c")]


def test_cr_then_lf_in_the_next_read_is_one_line_end_not_two() -> None:
    # Read as two line ends, the "\n" would be a blank line and dispatch "a" without "b".
    assert feed_all(b"data: a\r", b"\ndata: b\r", b"\n\r\n") == [ServerSentEvent(data="a\nb")]


def test_field_value_rules() -> None:
    stream = b"data:x\ndata:  two spaces\ndata\n\n"
    assert feed_all(stream) == [ServerSentEvent(data="x\n two spaces\n")]


def test_comments_and_events_without_data_are_not_dispatched() -> None:
    assert feed_all(b": ping\n\nevent: ping\n\nretry: 10\n\n") == []


def test_event_name_resets_after_each_event_and_id_persists() -> None:
    stream = b"event: error\nid: 1\ndata: a\n\ndata: b\n\n"
    assert feed_all(stream) == [
        ServerSentEvent(data="a", event="error", id="1"),
        ServerSentEvent(data="b", id="1"),
    ]


def test_leading_bom_is_dropped_split_or_not() -> None:
    bom = "\ufeff".encode()
    assert feed_all(bom + b"data: a\n\n") == [ServerSentEvent(data="a")]
    assert feed_all(bom[:1], bom[1:] + b"data: a\n\n") == [ServerSentEvent(data="a")]
    assert feed_all(b"data: \xef\xbb\xbfa\n\n") == [ServerSentEvent(data="\ufeffa")]


def test_an_event_cut_off_by_the_end_of_the_stream_is_not_dispatched() -> None:
    assert feed_all(b"data: complete\n\ndata: cut off\n") == [ServerSentEvent(data="complete")]


def test_invalid_utf8_raises_instead_of_inventing_replacement_characters() -> None:
    with pytest.raises(UnicodeDecodeError):
        feed_all(b"data: \xff\n\n")
