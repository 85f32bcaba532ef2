"""
netsuite's built-in pages: the home page (every listener and its live
counters), the 404 page, and their assets under C{/_netsuite/}.

Built-in pages carry a strict Content-Security-Policy: no inline script or
style, nothing loaded from elsewhere.
"""

from __future__ import annotations

import html
import time
from urllib.parse import unquote
from typing import Dict, List

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from netsuite.status import ListenerInfo, StatusSource

#: Headers on every built-in HTML page.
PAGE_HEADERS = {
    b"Content-Type": b"text/html; charset=utf-8",
    b"X-Content-Type-Options": b"nosniff",
    b"Content-Security-Policy": (
        b"default-src 'none'; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; img-src 'self'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'"
    ),
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
}

STYLE = b"""\
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.down { color: #b00; font-weight: 600; }
code { background: #f4f4f4; padding: 0 .25rem; }
"""

SCRIPT = b"""\
"use strict";
// Refreshes the counters of the home page from /api/status.
function refresh() {
  fetch("/api/status", {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (s) {
    document.getElementById("uptime").textContent = Math.round(s.uptime_seconds);
    document.querySelectorAll("td[data-service]").forEach(function (cell) {
      var svc = s.services[cell.dataset.service];
      if (svc && cell.dataset.key in svc) { cell.textContent = svc[cell.dataset.key]; }
    });
  }).catch(function () {});
}
setInterval(refresh, 2000);
"""

#: Counters shown for every service, in this order.
COUNTERS = ("connections_open", "connections_total", "bytes_in", "bytes_out", "errors")


def _setHeaders(request: Request, headers: Dict[bytes, bytes]) -> None:
    for name, value in headers.items():
        request.setHeader(name, value)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def methodNotAllowed(request: Request) -> bytes:
    """
    Answer a method other than GET and HEAD with a 405 built-in page and
    C{Allow: GET, HEAD}.

    @return: the body, for a C{render} method to return.
    """
    request.setResponseCode(405)
    _setHeaders(request, PAGE_HEADERS)
    request.setHeader(b"Allow", b"GET, HEAD")
    return (
        b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        b"<title>405 Method Not Allowed</title>"
        b"<link rel=\"stylesheet\" href=\"/_netsuite/style.css\"></head>"
        b"<body><h1>405 Method Not Allowed</h1><p>Use GET or HEAD here.</p></body></html>\n"
    )


def headOnly(request: Request, body: bytes) -> bytes:
    """
    C{body} as the answer to C{request}; to a C{HEAD}, its length only
    (Twisted would send none of it too, but log a warning every time).
    """
    if request.method != b"HEAD":
        return body
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    return b""


class _ReadOnly(Resource):
    """
    A resource that answers GET and HEAD only; any other method gets
    L{methodNotAllowed} (Twisted answers with its own pages: 405 for POST,
    501 for the rest).
    """

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return methodNotAllowed(request)
        return headOnly(request, Resource.render(self, request))


class HomePage(_ReadOnly):
    """
    The home page: every listener with its address, each service's counters,
    and links to the API.  Rendered at most once a second.
    """

    isLeaf = True

    def __init__(self, status: StatusSource, clock: IReactorTime) -> None:
        _ReadOnly.__init__(self)
        self.status = status
        self.clock = clock
        self._cached: bytes | None = None
        self._cachedAt = 0.0

    def render_GET(self, request: Request) -> bytes:
        _setHeaders(request, PAGE_HEADERS)
        request.setHeader(b"Cache-Control", b"no-store")
        now = self.clock.seconds()
        if self._cached is None or now - self._cachedAt >= 1.0:
            self._cached = self.renderPage(now)
            self._cachedAt = now
        return self._cached

    def renderPage(self, now: float) -> bytes:
        """
        The page's HTML as it is at C{now}.
        """
        status = self.status
        listeners = status.listeners()
        snapshot = status.stats.snapshot()
        rows: List[str] = []
        for info in listeners:
            rows.append(self._listenerRow(info))
        services = sorted(set(snapshot) | {i.service for i in listeners})
        counterRows = []
        for name in services:
            values = snapshot.get(name, {})
            cells = "".join(
                f'<td class="n" data-service="{_e(name)}" data-key="{key}">'
                f"{_e(values.get(key, 0))}</td>"
                for key in COUNTERS
            )
            counterRows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
        uptime = round(now - status.started)
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>netsuite</title><link rel="stylesheet" href="/_netsuite/style.css">
<script src="/_netsuite/home.js" defer></script></head>
<body><h1>netsuite</h1>
<p class="sub">version {_e(status.version)} &middot; up <span id="uptime">{uptime}</span> s
&middot; started {_e(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.started)))}</p>
<h2>Listeners</h2>
<table><thead><tr><th>service</th><th>address</th><th>TLS</th><th>configured as</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>Counters</h2>
<table><thead><tr><th>service</th>{"".join(f'<th class="n">{k.replace("_", " ")}</th>' for k in COUNTERS)}</tr></thead>
<tbody>{"".join(counterRows)}</tbody></table>
<h2>API</h2>
<ul>
<li><a href="/api/status"><code>GET /api/status</code></a>: uptime, version and every service's counters, as JSON</li>
<li><a href="/api/echo"><code>GET|POST /api/echo</code></a>: your request back, as JSON</li>
<li><a href="/healthz"><code>GET /healthz</code></a>: <code>ok</code> when every listener listens</li>
<li><a href="/metrics"><code>GET /metrics</code></a>: Prometheus metrics</li>
</ul></body></html>
"""
        return page.encode("utf-8")

    @staticmethod
    def _listenerRow(info: ListenerInfo) -> str:
        address = (
            _e(info.address) if info.address is not None
            else '<span class="down">not listening</span>'
        )
        return (
            f"<tr><td>{_e(info.service)}</td><td>{address}</td>"
            f"<td>{'yes' if info.tls else ''}</td><td><code>{_e(info.endpoint)}</code></td></tr>"
        )


class NotFoundPage(Resource):
    """
    The 404 page.  The requested path is shown HTML-escaped.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        _setHeaders(request, PAGE_HEADERS)
        path = _e(unquote(request.path.decode("ascii", "replace"), errors="replace"))
        return headOnly(request, (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>404 Not Found</title>"
            "<link rel=\"stylesheet\" href=\"/_netsuite/style.css\"></head>"
            f"<body><h1>404 Not Found</h1><p>Nothing is at <code>{path}</code>.</p>"
            "<p><a href=\"/_netsuite/\">netsuite home</a></p></body></html>\n"
        ).encode("utf-8"))


class _Asset(_ReadOnly):
    isLeaf = True

    def __init__(self, body: bytes, contentType: bytes) -> None:
        _ReadOnly.__init__(self)
        self.body = body
        self.contentType = contentType

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", self.contentType)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return self.body


class BuiltinPages(_ReadOnly):
    """
    C{/_netsuite/}: the home page and its assets, always there even when a
    static folder owns C{/}.
    """

    def __init__(self, home: IResource, notFound: IResource) -> None:
        _ReadOnly.__init__(self)
        self.notFound = notFound
        self.putChild(b"", home)
        self.putChild(b"style.css", _Asset(STYLE, b"text/css; charset=utf-8"))
        self.putChild(b"home.js", _Asset(SCRIPT, b"text/javascript; charset=utf-8"))

    def getChild(self, name: bytes, request: Request) -> IResource:
        return self.notFound

    def render_GET(self, request: Request) -> bytes:
        # /_netsuite without the slash.
        request.redirect(b"/_netsuite/")
        return b""
