"""
asyncio streams echo server for the echo benchmark: C{asyncio.start_server}
with a read/write/drain loop, on the default event loop (epoll on Linux).

Usage: C{python3 asyncio_echo.py PORT [HOST]} (HOST defaults to 127.0.0.1).
Prints C{listening on HOST:PORT} once it accepts connections; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

#: Bytes asked for per read; as large as the transport reads at once.
READ_SIZE = 256 * 1024


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """
    Send back everything read from one connection until it closes.
    """
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    """
    Serve L{echo} on C{host}:C{port} until SIGTERM or SIGINT.
    """
    server = await asyncio.start_server(echo, host, port)
    address = server.sockets[0].getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> None:
    """
    Parse C{PORT [HOST]} from C{argv} and run the server.
    """
    if len(argv) not in (2, 3):
        sys.exit("usage: asyncio_echo.py PORT [HOST]")
    port = int(argv[1])
    host = argv[2] if len(argv) == 3 else "127.0.0.1"
    asyncio.run(serve(host, port))


if __name__ == "__main__":
    main(sys.argv)
