"""
Stock Twisted echo server for the echo benchmark: C{twisted.protocols.wire.Echo}
on the epoll reactor, nothing else.

Usage: C{python3 twisted_echo.py PORT [HOST]} (HOST defaults to 127.0.0.1).
Prints C{listening on HOST:PORT} once it accepts connections; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.protocols.wire import Echo  # noqa: E402

reactor: Any = _reactor


def main(argv: list[str]) -> None:
    """
    Serve C{Echo} on the port (and host) given in C{argv} until stopped.
    """
    if len(argv) not in (2, 3):
        sys.exit("usage: twisted_echo.py PORT [HOST]")
    port = int(argv[1])
    host = argv[2] if len(argv) == 3 else "127.0.0.1"
    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    listening = reactor.listenTCP(port, factory, interface=host)
    address = listening.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
