"""
Stock Twisted forward proxy for the proxy benchmark: C{twisted.web.proxy.Proxy}
(an C{HTTPFactory} whose protocol is C{Proxy}) on the epoll reactor, nothing
else: no access log, no rules, no CONNECT.

As shipped, it reads a request's whole body before it connects to the
origin, writes the origin's bytes to the client as they come (no
backpressure: a slow client makes it buffer), and opens a new HTTP/1.0
connection to the origin for every request (C{ProxyClient} sends
C{Connection: close}).

Usage: C{python3 twisted_proxy.py PORT [HOST]} (HOST defaults to 127.0.0.1).
Prints C{listening on HOST:PORT} once it accepts connections; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import epollreactor

epollreactor.install()

# ProxyRequest binds the reactor it connects with at import: import it after
# installing epoll.
from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.web import http, proxy  # noqa: E402

reactor: Any = _reactor


def main(argv: list[str]) -> None:
    """
    Serve C{twisted.web.proxy.Proxy} on the port (and host) given in C{argv}
    until stopped.
    """
    if len(argv) not in (2, 3):
        sys.exit("usage: twisted_proxy.py PORT [HOST]")
    port = int(argv[1])
    host = argv[2] if len(argv) == 3 else "127.0.0.1"
    factory = http.HTTPFactory(logPath=None)
    factory.protocol = proxy.Proxy
    factory.noisy = False
    listening = reactor.listenTCP(port, factory, interface=host)
    address = listening.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
