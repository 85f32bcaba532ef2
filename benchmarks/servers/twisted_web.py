"""
Stock C{twisted.web} server for the HTTP benchmark: a C{Site} with two plain
C{Resource}s on the epoll reactor, nothing else.

  - C{/api/echo}: C{render_GET} returns the bytes of JSONFILE as
    C{application/json} (the runner writes netsuite's own C{/api/echo}
    answer there, so the body is the same size);
  - C{/}: C{render_GET} returns the bytes of HTMLFILE as C{text/html}
    (netsuite's home page, likewise).

The access log goes to ACCESSLOG in the combined format (C{Site(...,
logPath=...)}, Twisted's line-buffered file), as netsuite's does with
C{--http-access-log}.

Usage: C{python3 twisted_web.py PORT HOST JSONFILE HTMLFILE ACCESSLOG}.
Prints C{listening on HOST:PORT} once it accepts connections; stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import Request, Site  # noqa: E402

reactor: Any = _reactor


class FixedBody(Resource):
    """
    Answers every GET with the same bytes.
    """

    isLeaf = True

    def __init__(self, body: bytes, contentType: bytes) -> None:
        Resource.__init__(self)
        self.body = body
        self.contentType = contentType

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", self.contentType)
        return self.body


def main(argv: list[str]) -> None:
    """
    Serve the two resources on the port and host given in C{argv} until
    stopped.
    """
    if len(argv) != 6:
        sys.exit("usage: twisted_web.py PORT HOST JSONFILE HTMLFILE ACCESSLOG")
    port, host = int(argv[1]), argv[2]
    root = Resource()
    root.putChild(b"", FixedBody(Path(argv[4]).read_bytes(), b"text/html; charset=utf-8"))
    api = Resource()
    api.putChild(b"echo", FixedBody(Path(argv[3]).read_bytes(), b"application/json"))
    root.putChild(b"api", api)
    site = Site(root, logPath=argv[5])
    site.noisy = False
    listening = reactor.listenTCP(port, site, interface=host)
    address = listening.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
