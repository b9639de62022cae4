"""A minimal HTTP/1.1 keep-alive client for the load generator.

httpx costs about a millisecond of CPU per request, which on a 2-core box shared with the
services would make the generator itself the bottleneck; this one writes the request bytes and
reads a Content-Length response, nothing more.
"""

from __future__ import annotations

import asyncio


class HttpPool:
    def __init__(self, host: str, port: int, max_connections: int = 256) -> None:
        self._host, self._port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
                try:
                    return await self._exchange(reader, writer, path, body, token)
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass  # the server closed an idle keep-alive connection: once more on a new one
            reader, writer = await asyncio.open_connection(self._host, self._port)
            return await self._exchange(reader, writer, path, body, token)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
        body: bytes,
        token: str,
    ) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            writer.write(head.encode() + body)
            status_line = await reader.readuntil(b"\r\n")
            length, close = 0, False
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer))
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
