"""The frame layer the data path forwards through: what the scanner accepts, refuses and hands on as it came."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request
from websockets.server import ServerProtocol

from relay.wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    Frame,
    FrameScanner,
    MaskSource,
    Oversized,
    ProtocolViolation,
    build_frame,
    close_payload,
    parse_close,
)
from relay.wire.link import FrameLink, LinkOwner
from tests.test_access import TOKEN
from tests.test_hostile_properties import EXAMPLES

MASKS = MaskSource()


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    frame = bytearray(build_frame(opcode, payload, MASKS.next()))
    if not fin:
        frame[0] &= 0x7F
    return bytes(frame)


def scan(data: bytes, *, masked: bool = True, max_payload: int = 1 << 20) -> list[Frame | Oversized]:
    scanner = FrameScanner(masked=masked, max_payload=max_payload, hard_limit=1 << 24)
    scanner.feed(data)
    found = []
    while (frame := scanner.next()) is not None:
        found.append(frame)
    return found


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=70_000), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=200_000), max_size=8),
)
def test_frames_come_out_whole_and_as_sent_wherever_the_reads_split_them(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(client_frame(OP_BINARY, p) for p in payloads)
    scanner = FrameScanner(masked=True, max_payload=1 << 20, hard_limit=1 << 24)
    found: list[Frame] = []
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        scanner.feed(stream[start:cut] if cut > start else b"")
        start = max(start, cut)
        while (frame := scanner.next()) is not None:
            assert isinstance(frame, Frame)
            found.append(Frame(frame.opcode, frame.fin, bytes(frame.payload), memoryview(bytes(frame.raw))))
    assert [bytes(f.payload) for f in found] == payloads
    # Each frame's bytes are exactly what was sent: masked frames can be forwarded without being built again.
    assert b"".join(bytes(f.raw) for f in found) == stream


def test_a_server_frame_is_handed_on_unmasked_and_unchanged() -> None:
    frame = build_frame(OP_TEXT, b'{"type":"response.output_audio.delta"}')
    [found] = scan(frame, masked=False)
    assert isinstance(found, Frame) and bytes(found.raw) == frame and bytes(found.payload) == frame[2:]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (build_frame(OP_TEXT, b"x"), 1002),  # a client's frame must be masked
        (bytes([0xC1]) + client_frame(OP_TEXT, b"x")[1:], 1002),  # RSV1 without a negotiated extension
        (bytes([0x83]) + client_frame(OP_TEXT, b"x")[1:], 1002),  # reserved opcode 3
        (client_frame(OP_PING, b"x", fin=False), 1002),  # a fragmented control frame
        (client_frame(OP_PING, b"x" * 126), 1002),  # a control frame over 125 bytes
        (client_frame(OP_CONT, b"x"), 1002),  # a continuation with nothing to continue
        (
            client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),
            1002,
        ),  # a new message mid-message
        (
            struct.pack("!BBQ", 0x82, 0xFF, 1 << 40),
            1009,
        ),  # a frame past the hard limit, refused from its header
    ],
)
def test_frames_that_break_rfc_6455_are_refused_with_its_close_code(data: bytes, code: int) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        scan(data)
    assert refused.value.code == code


def test_an_oversized_frame_is_skipped_as_it_arrives_and_the_next_one_still_comes_out() -> None:
    big, small = client_frame(OP_TEXT, b"x" * 5000), client_frame(OP_TEXT, b"after")
    scanner = FrameScanner(masked=True, max_payload=1000, hard_limit=1 << 20)
    scanner.feed(big[:100])
    assert scanner.next() == Oversized(OP_TEXT, 5000)  # known from the header, before its payload arrived
    for start in range(100, len(big), 700):
        scanner.feed(big[start : start + 700])
        assert scanner.next() is None
    scanner.feed(small)
    found = scanner.next()
    assert isinstance(found, Frame) and bytes(found.payload) == b"after"


def test_close_frames_are_read_as_the_rfc_allows() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(close_payload(4000, "bye")) == (4000, "bye")
    for bad, code in (
        (b"\x03", 1002),
        (struct.pack("!H", 1005), 1002),
        (struct.pack("!H", 1000) + b"\xff", 1007),
    ):
        with pytest.raises(ProtocolViolation) as refused:
            parse_close(bad)
        assert refused.value.code == code
    assert len(close_payload(1000, "é" * 100)) <= 125  # cut on a character boundary to fit a control frame


class _Transport:
    def __init__(self) -> None:
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.sent += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Owner:
    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes, bool]] = []
        self.closed: list[tuple[int, str]] = []

    def on_message(
        self, link: FrameLink, opcode: int, payload: bytes | memoryview, raw: memoryview | None
    ) -> bool:
        self.messages.append((opcode, bytes(payload), raw is not None))
        return True

    def on_oversized(self, link: FrameLink, opcode: int, size: int) -> None:
        self.messages.append((opcode, b"", False))

    def on_closed(self, link: FrameLink, code: int, reason: str) -> None:
        self.closed.append((code, reason))


def _server_link(owner: _Owner, transport: _Transport) -> FrameLink:
    return FrameLink(
        cast(asyncio.Transport, transport),
        cast(LinkOwner, owner),
        masking=False,
        max_message=1 << 20,
        hard_limit=1 << 24,
        heartbeat=0,
        close_grace=1,
    )


async def test_a_ping_between_fragments_is_answered_and_the_message_comes_out_whole() -> None:
    owner, transport = _Owner(), _Transport()
    link = _server_link(owner, transport)
    link.data_received(
        client_frame(OP_TEXT, b'{"type":', fin=False)
        + client_frame(OP_PING, b"are you there")
        + client_frame(OP_CONT, b'"response.create"}')
    )
    assert owner.messages == [
        (OP_TEXT, b'{"type":"response.create"}', False)
    ]  # reassembled: built anew when sent
    assert bytes(transport.sent) == build_frame(
        0xA, b"are you there"
    )  # the pong, unmasked from the server side


async def test_the_closing_handshake_echoes_the_code_and_reports_it_once() -> None:
    owner, transport = _Owner(), _Transport()
    link = _server_link(owner, transport)
    link.data_received(client_frame(OP_CLOSE, close_payload(4001, "done")) + client_frame(OP_TEXT, b"late"))
    assert owner.closed == [(4001, "done")]
    assert bytes(transport.sent) == build_frame(OP_CLOSE, struct.pack("!H", 4001))
    assert transport.closed and owner.messages == []  # nothing after the close is delivered
    link.connection_lost(None)
    assert owner.closed == [(4001, "done")]


async def test_a_held_link_delivers_nothing_until_it_is_released() -> None:
    owner, transport = _Owner(), _Transport()
    link = _server_link(owner, transport)
    link.hold()
    link.data_received(client_frame(OP_TEXT, b"one") + client_frame(OP_TEXT, b"two"))
    assert owner.messages == []
    link.release()
    assert [m[1] for m in owner.messages] == [b"one", b"two"]


# -- through a running relay ------------------------------------------------------------------------------------


class RawClient:
    """A WebSocket client written frame by frame, to send what the `websockets` client would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.scanner = FrameScanner(masked=False, max_payload=1 << 24, hard_limit=1 << 24)

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    async def frame(self) -> Frame:
        while (found := self.scanner.next()) is None:
            self.scanner.feed(await asyncio.wait_for(self.reader.read(65536), 10))
        assert isinstance(found, Frame)
        return Frame(found.opcode, found.fin, bytes(found.payload), memoryview(bytes(found.raw)))

    async def event(self) -> dict[str, object]:
        while (frame := await self.frame()).opcode != OP_TEXT:
            pass
        event = json.loads(bytes(frame.payload))
        assert isinstance(event, dict)
        return event


async def test_fragments_pings_and_bad_utf8_from_a_real_client_meet_rfc_6455(
    relay_factory: Any,
) -> None:
    relay = await relay_factory(access_tokens=TOKEN)
    client = await RawClient.connect(relay.inner.port)
    assert (await client.event())["type"] == "session.created"
    item = json.dumps(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hello."}],
            },
        }
    ).encode()
    client.writer.write(
        client_frame(OP_TEXT, item[:20], fin=False)
        + client_frame(OP_PING, b"ping 1")
        + client_frame(OP_CONT, item[20:])
    )
    pong = await client.frame()
    assert (pong.opcode, bytes(pong.payload)) == (0xA, b"ping 1")  # answered between the fragments
    assert (await client.event())[
        "type"
    ] == "conversation.item.added"  # the reassembled event reached the model
    client.writer.write(client_frame(OP_TEXT, b'{"type": "response.cancel", "x": "\xff"}'))
    while (error := await client.event())["type"] == "conversation.item.done":
        pass
    assert error["type"] == "error" and error["error"]["code"] == "relay_bad_event"  # type: ignore[index]
    while (closing := await client.frame()).opcode != OP_CLOSE:
        pass
    assert parse_close(bytes(closing.payload))[0] == 1007
    client.writer.close()


async def test_frames_that_need_no_change_reach_the_other_side_byte_for_byte(relay_factory: Any) -> None:
    """Unchanged events are forwarded as the bytes they came in: odd spacing and key order survive both ways,
    which they would not if the relay parsed and serialised them again."""
    audio = base64.b64encode(bytes(960)).decode()
    from_client = '{ "audio" :"' + audio + '",  "type":"input_audio_buffer.append" }'
    from_upstream = (
        '{"delta": "' + audio + '" , "type" : "response.output_audio.delta", "response_id":"resp_1", '
        '"item_id":"item_1","output_index":0,"content_index":0, "event_id":"event_9"}'
    )
    received: list[str] = []

    async def upstream(ws: ServerConnection) -> None:
        session = {"id": "sess_1", "type": "realtime", "object": "realtime.session"}
        await ws.send(json.dumps({"type": "session.created", "event_id": "event_1", "session": session}))
        async for message in ws:
            assert isinstance(message, str)
            received.append(message)
            if json.loads(message)["type"] == "session.update":  # the relay's session defaults
                await ws.send(
                    json.dumps({"type": "session.updated", "event_id": "event_3", "session": session})
                )
            if '"input_audio_buffer.append"' in message:
                created = {"type": "response.created", "event_id": "event_2", "response": {"id": "resp_1"}}
                await ws.send(json.dumps(created))
                await ws.send(from_upstream)

    async with serve(upstream, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        relay = await relay_factory(upstream_url=url, access_tokens=TOKEN)
        client = await RawClient.connect(relay.inner.port)
        assert (await client.event())["type"] == "session.created"
        client.writer.write(client_frame(OP_TEXT, from_client.encode()))
        while (frame := await client.frame()).opcode != OP_TEXT or b"output_audio.delta" not in bytes(
            frame.payload
        ):
            pass
        client.writer.close()
    assert bytes(frame.payload) == from_upstream.encode()
    assert from_client in received


async def test_a_client_frame_reaches_the_upstream_with_the_clients_own_mask(relay_factory: Any) -> None:
    """The frame itself is forwarded, not rebuilt: the upstream sees the very bytes the client put on the wire,
    masking key included (a rebuilt frame would carry a fresh key)."""
    session = {"id": "sess_1", "type": "realtime", "object": "realtime.session"}
    seen = bytearray()
    got_it = asyncio.Event()
    sent = client_frame(OP_TEXT, b'{"type":"input_audio_buffer.append","audio":"AAAAAA=="}')

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshake = ServerProtocol()
        handshake.receive_data(await reader.readuntil(b"\r\n\r\n"))
        [request] = handshake.events_received()
        assert isinstance(request, Request)
        handshake.send_response(handshake.accept(request))
        writer.write(b"".join(handshake.data_to_send()))
        event = {"type": "session.created", "event_id": "event_1", "session": session}
        writer.write(build_frame(OP_TEXT, json.dumps(event).encode()))
        scanner = FrameScanner(masked=True, max_payload=1 << 20, hard_limit=1 << 24)
        while data := await reader.read(65536):
            seen.extend(data)
            scanner.feed(data)
            while (frame := scanner.next()) is not None:
                assert isinstance(frame, Frame)
                if json.loads(bytes(frame.payload))["type"] == "session.update":
                    updated = {"type": "session.updated", "event_id": "event_2", "session": session}
                    writer.write(build_frame(OP_TEXT, json.dumps(updated).encode()))
            if sent in seen:
                got_it.set()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    async with server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        relay = await relay_factory(upstream_url=url, access_tokens=TOKEN)
        client = await RawClient.connect(relay.inner.port)
        assert (await client.event())["type"] == "session.created"
        client.writer.write(sent)
        await asyncio.wait_for(got_it.wait(), 10)
        client.writer.close()
