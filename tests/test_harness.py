"""The suite's own instruments must be able to fail: the key scanner finds a key that does pass through it."""

from __future__ import annotations

import asyncio

from tests.conftest import TEST_API_KEY, _key_forms
from tests.harness import ScanningProxy


async def test_scanning_proxy_finds_the_key_even_split_across_reads() -> None:
    async def leaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        payload = f"HTTP/1.1 200 OK\r\n\r\n{{'oops': '{TEST_API_KEY}'}}".encode()
        middle = len(payload) - len(TEST_API_KEY) // 2
        writer.write(payload[:middle])
        await writer.drain()
        await asyncio.sleep(0.05)  # the second half arrives in another read
        writer.write(payload[middle:])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(leaky, "127.0.0.1", 0)
    proxy = ScanningProxy(server.sockets[0].getsockname()[1], _key_forms(TEST_API_KEY))
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    received = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    await proxy.stop()
    server.close()
    assert TEST_API_KEY.encode() in received
    assert proxy.leaks, "the scanner missed a key that passed through it"


def test_base64_forms_cover_every_alignment() -> None:
    import base64

    forms = _key_forms(TEST_API_KEY)
    for pad in range(3):
        encoded = base64.b64encode(b"x" * pad + TEST_API_KEY.encode() + b"y")
        assert any(form in encoded for form in forms[1:]), pad
