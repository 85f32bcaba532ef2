"""
Plain Twisted broadcast chat server, the reference of the chat benchmark: a
C{LineReceiver} on the epoll reactor, nothing else (no limits, no flood
control, no backpressure).

A client's first line is its name; it is then told C{*** you are in lobby}.
Every later line goes to every other named client as C{NAME: text}, with
C{sendLine} (CRLF).

Usage: C{python3 twisted_chat.py PORT [HOST]} (HOST defaults to 127.0.0.1).
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
from twisted.protocols.basic import LineReceiver  # noqa: E402

reactor: Any = _reactor


class Chat(LineReceiver):
    """
    One chat client: named by its first line, then broadcasting.
    """

    name: bytes | None = None

    def lineReceived(self, line: bytes) -> None:
        """
        Take the first line as the name; send every later one to the others.
        """
        clients = self.factory.clients
        if self.name is None:
            self.name = line
            clients.add(self)
            self.sendLine(b"*** you are in lobby")
            return
        message = self.name + b": " + line
        for client in clients:
            if client is not self:
                client.sendLine(message)

    def connectionLost(self, reason: object = None) -> None:
        """
        Stop sending to this client.
        """
        self.factory.clients.discard(self)


def main(argv: list[str]) -> None:
    """
    Serve L{Chat} on the port (and host) given in C{argv} until stopped.
    """
    if len(argv) not in (2, 3):
        sys.exit("usage: twisted_chat.py PORT [HOST]")
    port = int(argv[1])
    host = argv[2] if len(argv) == 3 else "127.0.0.1"
    factory = Factory.forProtocol(Chat)
    factory.noisy = False
    factory.clients = set()  # type: ignore[attr-defined]
    listening = reactor.listenTCP(port, factory, interface=host)
    address = listening.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
