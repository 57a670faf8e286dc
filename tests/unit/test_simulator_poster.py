"""The simulator's keep-alive webhook poster: a callback that does not answer in time is reported
as such and the POST is not sent again within the same attempt (a timeout is an OSError; it was
caught as a broken reused connection, re-sent on a fresh one and reported as "connection
failed: TimeoutError()")."""

from __future__ import annotations

import asyncio

import pytest

from extend_connector.simulator.webhooks import DeliveryError, _KeepAlivePoster


def test_a_callback_that_stops_answering_times_out_once_without_a_resend() -> None:
    async def scenario() -> tuple[int, str]:
        received = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                received += 1
                if received > 1:
                    await asyncio.sleep(5)  # the second request gets no answer in time
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        poster = _KeepAlivePoster(timeout=0.3)
        url = f"http://127.0.0.1:{port}/hook"
        try:
            assert await poster.post(url, b"{}", {}) == 200
            with pytest.raises(DeliveryError) as caught:
                await poster.post(url, b"{}", {})  # on the kept-alive connection
            await asyncio.sleep(0.1)
            return received, str(caught.value)
        finally:
            await poster.aclose()
            server.close()

    received, error = asyncio.run(scenario())
    assert "no answer within 0.3 s" in error
    assert received == 2
