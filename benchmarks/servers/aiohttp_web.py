"""
aiohttp hello-world server for the HTTP benchmark, on the default asyncio
event loop (epoll on Linux; no uvloop).

  - C{/api/echo}: the bytes of JSONFILE as C{application/json} (netsuite's
    own C{/api/echo} answer, written there by the runner);
  - C{/}: the bytes of HTMLFILE as C{text/html} (netsuite's home page).

The access log goes to ACCESSLOG through aiohttp's access logger and a
C{logging.FileHandler}, so that every server in the benchmark writes one
line per request to a file; with C{-} as ACCESSLOG there is no access log
(C{access_log=None}, the way aiohttp hello-world is usually benchmarked).

Usage: C{python3 aiohttp_web.py PORT HOST JSONFILE HTMLFILE ACCESSLOG}.
Prints C{listening on HOST:PORT} once it accepts connections; stops on
SIGTERM or SIGINT.  Needs C{pip install aiohttp}.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from aiohttp import web


def makeApp(jsonBody: bytes, htmlBody: bytes) -> web.Application:
    """
    The application: two routes answering fixed bytes.
    """

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=jsonBody, content_type="application/json")

    async def home(request: web.Request) -> web.Response:
        return web.Response(body=htmlBody, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_get("/api/echo", echo)
    app.router.add_get("/", home)
    return app


def main(argv: list[str]) -> None:
    """
    Serve the application on the port and host given in C{argv} until
    stopped.
    """
    if len(argv) != 6:
        sys.exit("usage: aiohttp_web.py PORT HOST JSONFILE HTMLFILE ACCESSLOG")
    port, host = int(argv[1]), argv[2]
    accessLog: logging.Logger | None = None
    if argv[5] != "-":
        accessLog = logging.getLogger("aiohttp.access")
        accessLog.setLevel(logging.INFO)
        accessLog.addHandler(logging.FileHandler(argv[5]))
        accessLog.propagate = False
    app = makeApp(Path(argv[3]).read_bytes(), Path(argv[4]).read_bytes())
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=accessLog,
        print=lambda *_: print(f"listening on {host}:{port}", flush=True),
    )


if __name__ == "__main__":
    main(sys.argv)
