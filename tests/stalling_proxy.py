"""A TCP proxy in front of a real server that can stop forwarding, as a hung or partitioned server would.

While stalled, connections stay open and bytes are held in both directions, so calls through it
time out (rather than fail fast on a refused connection): what a Temporal frontend that stopped
answering looks like to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class StallingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; `stall` holds traffic, `resume` lets it through."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.address = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.address

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def stop(self) -> None:
        # Held bytes are dropped, not flushed: a stalled call must never reach the server late.
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        # Owned to the end: each pump is awaited, so none is left pending or unread.
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def stalling_proxy(target: str) -> AsyncIterator[StallingProxy]:
    """A started `StallingProxy` in front of ``target``, stopped on exit."""
    proxy = StallingProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
