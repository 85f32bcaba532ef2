"""
The HTTP site: routing, request limits and deadlines, access log, metrics.

Everything HTTP is parsed by C{twisted.web}; this module adds what a public
server needs on top: a deadline for the request head (slowloris), an idle
keep-alive timeout, limits on the request line, the header block and the
body (414, 431, 413 instead of a silent close), and per-request accounting
(access log in the combined format, Prometheus metrics, stats).
"""

from __future__ import annotations

import json
import re
from time import time
from typing import Any, Mapping

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import http
# twisted.web.http is a deprecation proxy: a name read through it costs
# microseconds, so the hot path binds them here.
from twisted.web.http import (
    HTTPChannel,
    _GenericHTTPChannelProtocol,
    combinedLogFormatter,
    datetimeToString,
)
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site, version as _serverVersion

from netsuite.listen import FlushBatch, StreamListener, _reactor, plainSocketTransport, sendOrQueue
from netsuite.stats import ServiceStats, StatsRegistry
from netsuite.status import SimpleStatus, StatusSource
from netsuite.web.api import APIResource, HealthResource
from netsuite.web.metrics import HTTPMetrics
from netsuite.web.pages import BuiltinPages, NotFoundPage, HomePage
from netsuite.web.static import StaticFolder

DEFAULT_HTTP = "tcp:8080:interface=127.0.0.1"

#: The access log, when it goes to the twistd log.
_accessLog = Logger(namespace="netsuite.web.access")



class Limits:
    """
    Request limits and timeouts of one site.

    @ivar maxBody: bytes of request body accepted (413 above).
    @ivar maxRequestLine: bytes in the request line, and in any one header
        line (414 / 431 above).
    @ivar maxHeaderBytes: bytes in the whole header block (431 above).
    @ivar maxHeaders: header lines in one request (431 above).
    @ivar headerTimeout: seconds from a request's first byte to the end of
        its headers (408 after).
    @ivar idleTimeout: seconds a keep-alive connection may wait for its next
        request.
    """

    def __init__(
        self,
        maxBody: int = 1024 * 1024,
        maxRequestLine: int = 8192,
        maxHeaderBytes: int = 16384,
        maxHeaders: int = 100,
        headerTimeout: float = 15.0,
        idleTimeout: float = 60.0,
    ) -> None:
        self.maxBody = maxBody
        self.maxRequestLine = maxRequestLine
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaders = maxHeaders
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout


#: Bytes of output a connection collects before it gives them to the
#: transport anyway (whose buffer then pauses a client's pipelined requests).
_HOLD_LIMIT = 65536

#: Reason phrases Twisted's table lacks.
_REASONS = {431: b"Request Header Fields Too Large"}


def _jsonError(status: int, message: str) -> bytes:
    """
    A complete HTTP/1.1 error response that closes the connection.
    """
    body = json.dumps({"error": message, "status": status}).encode("utf-8") + b"\n"
    reason = _REASONS.get(status) or http.RESPONSES.get(status, b"Error")
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Content-Type: application/json\r\n",
            b"X-Content-Type-Options: nosniff\r\n",
            b"Connection: close\r\n",
            b"Content-Length: %d\r\n\r\n" % (len(body),),
            body,
        ]
    )


#: A byte Twisted's combined-log formatter would write escaped.
_LOG_ESCAPED = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def accessLogLine(timestamp: str, request: Any) -> str:
    """
    C{request}'s line in the combined log format: exactly what
    L{twisted.web.http.combinedLogFormatter} writes, faster for the usual
    request whose fields are printable ASCII without quotes or backslashes.

    @param timestamp: the time, already in the log's format.
    """
    address = request.getClientAddress()
    if isinstance(address, (IPv4Address, IPv6Address)):
        ip = address.host.encode("ascii", "replace")
    else:
        ip = b"-"
    getHeader = request.getHeader
    fields = (
        ip,
        request.method,
        request.uri,
        request.clientproto,
        getHeader(b"referer") or b"-",
        getHeader(b"user-agent") or b"-",
    )
    try:
        joined = b" ".join(fields)
    except TypeError:  # not all bytes: leave it to Twisted
        return combinedLogFormatter(timestamp, request)
    if _LOG_ESCAPED.search(joined) is not None:
        return combinedLogFormatter(timestamp, request)
    return '"%s" - - %s "%s %s %s" %d %s "%s" "%s"' % (
        fields[0].decode("ascii"),
        timestamp,
        fields[1].decode("ascii"),
        fields[2].decode("ascii"),
        fields[3].decode("ascii"),
        request.code,
        request.sentLength or "-",
        fields[4].decode("ascii"),
        fields[5].decode("ascii"),
    )


class NetsuiteHTTPChannel(HTTPChannel):
    """
    An HTTP/1.x connection with netsuite's limits and deadlines.

    States: C{idle} (waiting for a request), C{head} (receiving a request
    line and headers, under the head deadline), C{busy} (receiving a body or
    answering).

    Output written while input is being handled (a response's head and
    body, the answers to pipelined requests) is collected, and the site
    sends what every connection collected at the end of the reactor's pass
    (the site's L{FlushBatch}); on plain TCP it goes straight to the
    socket when nothing is queued there.  That is one C{send} for a small
    response, all of them in a burst, instead of Twisted's buffer-and-poll
    (two C{epoll_ctl} calls a response).  Output is given to the transport
    at once when written at other times, when a producer streams the
    response, and when over L{_HOLD_LIMIT} bytes wait (so the transport's
    buffer still pauses a client that pipelines requests but does not read).  Code that writes around the channel (the
    static folder's C{sendfile}) calls L{flushOutput} first.
    """

    site: "NetsuiteSite"
    _state = "idle"
    _headBytes = 0
    _headLines = 0
    _deadline: IDelayedCall | None = None
    _headStarted = 0.0
    _closing = False

    def __init__(self, site: "NetsuiteSite") -> None:
        HTTPChannel.__init__(self)
        self.site = site
        limits = site.limits
        self.MAX_LENGTH = limits.maxRequestLine
        # Twisted's own checks stay as a backstop behind ours.
        self.totalHeadersSize = limits.maxHeaderBytes + limits.maxRequestLine + 1
        self.maxHeaders = limits.maxHeaders + 1

    _host = None
    #: Output not given to the transport yet, and its length.
    _out: list[bytes] | None = None
    _outBytes = 0
    _reading = False
    _raw: Any = None
    _rawStats: ServiceStats | None = None

    def connectionMade(self) -> None:
        HTTPChannel.connectionMade(self)
        self._raw, self._rawStats = plainSocketTransport(self.transport)

    def getHost(self) -> Any:
        # Request.__init__ asks for every request; getsockname once is enough.
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()
        return host

    def dataReceived(self, data: bytes) -> None:
        if self._state == "idle" and not self._closing:
            self._state = "head"
            self._headBytes = self._headLines = 0
            self._headStarted = self.site.reactor.seconds()
            # One timer at a time, checked when it fires: no callLater and
            # cancel for every request on a keep-alive connection.
            if self._deadline is None:
                self._deadline = self.callLater(self.site.limits.headerTimeout, self._checkHead)
        if self._reading:  # re-entered: a pipelined request
            HTTPChannel.dataReceived(self, data)
            return
        self._reading = True
        try:
            HTTPChannel.dataReceived(self, data)
        finally:
            self._reading = False
            if self._out:
                self.site.batch.add(self)

    def write(self, data: bytes) -> None:
        self.writeSequence((data,))

    def writeSequence(self, iovec: Any) -> None:
        out = self._out
        if out is None:
            self._out = out = []
        for data in iovec:
            out.append(data)
            self._outBytes += len(data)
        if not self._reading or self._outBytes > _HOLD_LIMIT or self._requestProducer is not None:
            self.flushOutput()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        out = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        self.writeSequence(out)

    def flushOutput(self) -> None:
        """
        Give everything written so far to the transport (for code about to
        write to the connection some other way).
        """
        out = self._out
        if out:
            self._out = None
            self._outBytes = 0
            self._send(out)

    def _send(self, chunks: list[bytes]) -> None:
        raw = self._raw
        if raw is None or self._requestProducer is not None:
            # A streamed response goes through the transport's buffer, which
            # paces its producer (and, measured, serves large files faster
            # than headers sent on their own ahead of sendfile).
            self.transport.writeSequence(chunks)
            return
        data = b"".join(chunks)
        if data:
            sendOrQueue(raw, self._rawStats, data)

    def loseConnection(self) -> None:
        self.flushOutput()
        HTTPChannel.loseConnection(self)

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        # Twisted splits Connection on spaces: "close, x" was not "close".
        tokens = {
            token.strip().lower()
            for value in request.requestHeaders.getRawHeaders(b"connection", [])
            for token in value.split(b",")
        }
        if version != b"HTTP/1.1":
            return False
        if b"close" in tokens:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return True

    def _send100Continue(self) -> None:
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.flushOutput()
        HTTPChannel._respondToBadRequestAndDisconnect(self)

    def lineReceived(self, line: bytes) -> None:
        if self._state == "head" and line:
            self._headLines += 1
            if self._headLines > 1:  # a header line, not the request line
                self._headBytes += len(line) + 2
                limits = self.site.limits
                if self._headBytes > limits.maxHeaderBytes or self._headLines > limits.maxHeaders + 1:
                    self._refuse(431, "request header fields too large")
                    return
        HTTPChannel.lineReceived(self, line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._headLines == 0:
            self._refuse(414, "request line too long")
        else:
            self._refuse(431, "request header line too long")

    def allHeadersReceived(self) -> None:
        self._state = "busy"
        if self.length is not None and self.length > self.site.limits.maxBody:
            self._refuse(413, f"request body over {self.site.limits.maxBody} bytes")
            return
        HTTPChannel.allHeadersReceived(self)

    def requestDone(self, request: Request) -> None:
        self._state = "idle"
        if self._waitingForTransport:
            # The client is not taking its answers: leave the requests it
            # pipelined behind this one unread, and read nothing more, until
            # it does.  (Twisted answers every request already read, so 60 KB
            # of pipelined requests could fill 100 MB of buffers.)
            self.paused = True
            self._networkProducer.pauseProducing()
        HTTPChannel.requestDone(self, request)

    def resumeProducing(self) -> None:
        HTTPChannel.resumeProducing(self)
        if self.paused and not self._waitingForTransport and not self._handlingRequest:
            self.paused = False
            self.dataReceived(b"")

    def bodyTooLarge(self) -> None:
        """
        A chunked body went over the limit: answer 413 and close.
        """
        self._refuse(413, f"request body over {self.site.limits.maxBody} bytes")

    def _checkHead(self) -> None:
        self._deadline = None
        if self._state != "head":
            return
        left = self._headStarted + self.site.limits.headerTimeout - self.site.reactor.seconds()
        if left > 0:
            self._deadline = self.callLater(left, self._checkHead)
        else:
            self._headTooSlow()

    def _headTooSlow(self) -> None:
        self.site.stats.count("header_timeouts")
        self._refuse(408, "request headers not received in time")

    def _refuse(self, status: int, message: str) -> None:
        """
        Answer C{status} with a JSON error and close, reading nothing more.
        """
        if self._closing:
            return
        self._closing = True
        self._cancelDeadline()
        self.site.stats.countError(f"refused_{status}")
        self.setTimeout(None)
        self.flushOutput()
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda *a: None  # type: ignore[method-assign, assignment]
        self.transport.write(self.errorResponse(status, message))
        self.transport.loseConnection()
        # Do not wait forever for a peer that does not read its answer.
        self.callLater(10, self.transport.abortConnection)

    def errorResponse(self, status: int, message: str) -> bytes:
        """
        The complete response that refuses a request with C{status} and
        closes the connection (a JSON body here).
        """
        return _jsonError(status, message)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason: Any) -> None:
        self._out = None
        self._outBytes = 0
        self._cancelDeadline()
        HTTPChannel.connectionLost(self, reason)


_dateSecond = -1
_dateValue = b""


def _httpNow() -> bytes:
    """
    The C{Date} header's value now, made at most once a second.
    """
    global _dateSecond, _dateValue
    now = int(time())
    if now != _dateSecond:
        _dateValue = datetimeToString(now)
        _dateSecond = now
    return _dateValue


class NetsuiteRequest(Request):
    """
    A request that knows when it started and keeps its body under the
    site's limit.
    """

    startedAt = 0.0
    _bodyBytes = 0

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        Request.__init__(self, channel, *args, **kwargs)
        site = getattr(channel, "site", None)
        if site is not None:
            self.startedAt = site.reactor.seconds()

    def process(self) -> None:
        """
        Answer a plain GET or HEAD of a small static file the site's folder
        has answered before straight from its cache (L{StaticFolder.quickAnswer});
        anything else the usual way, through the resource tree.
        """
        channel = self.channel
        if type(channel) is NetsuiteHTTPChannel:
            site = channel.site
            static = site.static
            if static is not None:
                answer = static.quickAnswer(self)
                if answer is not None:
                    self.site = site
                    self._sendQuick(*answer)
                    return
        Request.process(self)

    def _sendQuick(self, head: bytes, body: bytes) -> None:
        """
        Send a whole 200 answer, header for header in the order the usual
        way writes it: the status line, the headers the channel already set
        (C{Connection: close}), C{Server} and C{Date}, C{head} and C{body};
        then finish as usual (access log, metrics, keep-alive).
        """
        out = [self.clientproto, b" 200 OK\r\n"]
        for name, values in self.responseHeaders.getAllRawHeaders():
            for value in values:
                out += (name, b": ", value, b"\r\n")
        out += (b"Server: ", _serverVersion, b"\r\nDate: ", _httpNow(), b"\r\n", head, b"\r\n", body)
        self.startedWriting = 1
        self.sentLength = len(body)
        self.channel.writeSequence(out)
        self.finish()

    def handleContentChunk(self, data: bytes) -> None:
        self._bodyBytes += len(data)
        if self._bodyBytes > self.channel.site.limits.maxBody:
            refuse = getattr(self.channel, "bodyTooLarge", None)
            if refuse is not None:
                refuse()
            else:  # an HTTP/2 stream: reset it
                self.channel.abortConnection()
            return
        Request.handleContentChunk(self, data)


class NetsuiteSite(Site):
    """
    A L{Site} with netsuite's limits, access log, metrics and stats.

    @ivar limits: the L{Limits} every connection gets.
    @ivar metrics: the L{HTTPMetrics} every finished request is counted in.
    @ivar stats: the HTTP service's L{ServiceStats}.
    """

    requestFactory = NetsuiteRequest
    displayTracebacks = False
    #: The folder served at C{/}, whose small files are answered quickly.
    static: StaticFolder | None = None
    noisy = False

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: IReactorTime,
        stats: ServiceStats,
        metrics: HTTPMetrics,
        limits: Limits | None = None,
        accessLog: str | None = None,
    ) -> None:
        """
        @param accessLog: a file to append the access log to, in the
            combined log format; by default it goes to the twistd log.
        """
        self.limits = limits or Limits()
        # Bodies are parsed by the resources that want them (with JSON
        # errors), never by Request for everyone.
        Site.__init__(
            self,
            resource,
            logPath=accessLog,
            timeout=self.limits.idleTimeout,
            reactor=reactor,
            parsePOSTFormSubmission=False,
            logFormatter=accessLogLine,
        )
        self.stats = stats
        self.metrics = metrics
        #: Connections whose collected output goes out at the end of the
        #: reactor pass.
        self.batch = FlushBatch(reactor)

    def protocol(self) -> _GenericHTTPChannelProtocol:  # type: ignore[override]
        # Twisted negotiates HTTP/2 through this wrapper; the HTTP/1 channel
        # inside is ours.
        return _GenericHTTPChannelProtocol(NetsuiteHTTPChannel(self))

    def log(self, request: Request) -> None:
        self.stats.count("requests")
        started = getattr(request, "startedAt", 0.0)
        self.metrics.observe(
            request.method,
            request.code,
            self.reactor.seconds() - started if started else 0.0,
            request.sentLength,
        )
        if self.logPath:
            Site.log(self, request)
        else:
            _accessLog.info(
                "{line}", line=self._logFormatter(self._logDateTime, request)
            )

    def startFactory(self) -> None:
        Site.startFactory(self)
        if not self.logPath:
            self._logFile = None

    def _openLogFile(self, path: Any) -> Any:
        return _BufferedLog(Site._openLogFile(self, path), self.reactor)


class _BufferedLog:
    """
    An access log file written in batches: at most once a second, or when
    64 KiB are waiting, and when it is closed (instead of one C{write} a
    request).
    """

    def __init__(self, file: Any, clock: Any, delay: float = 1.0, limit: int = 65536) -> None:
        self._file = file
        self._clock = clock
        self._delay = delay
        self._limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._call: Any = None

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()
        elif self._call is None:
            self._call = self._clock.callLater(self._delay, self.flush)

    def flush(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if self._lines:
            data, self._lines, self._size = "".join(self._lines), [], 0
            self._file.write(data)

    def close(self) -> None:
        self.flush()
        self._file.close()


class RootResource(Resource):
    """
    C{/}: netsuite's reserved names, then the static folder (if any), then
    the home page for C{/} and the 404 page for anything else.
    """

    def __init__(
        self, *, home: IResource, notFound: IResource, static: StaticFolder | None
    ) -> None:
        Resource.__init__(self)
        self.home = home
        self.notFound = notFound
        self.static = static

    def getChild(self, name: bytes, request: Request) -> IResource:
        root = name == b"" and not request.postpath
        if self.static is not None and not (root and not self.static.hasIndex()):
            # The folder sees the whole path.
            request.postpath.insert(0, request.prepath.pop())
            return self.static
        if root:
            return self.home
        return self.notFound

    def render(self, request: Request) -> bytes:
        # A request for "" (no slash at all) is the home page too.
        return self.home.render(request)


def makeSite(
    status: StatusSource,
    *,
    reactor: IReactorTime,
    stats: ServiceStats,
    root: str | None = None,
    followSymlinks: bool = False,
    accessLog: str | None = None,
    limits: Limits | None = None,
    api: Mapping[bytes, IResource] | None = None,
) -> NetsuiteSite:
    """
    Build netsuite's whole site.

    @param status: where the home page, C{/api/status} and C{/healthz} read
        listeners and stats from.
    @param root: a folder to serve at C{/}, or L{None}.
    @param api: more children of C{/api}, by name (the download service's
        C{downloads}, for one).
    """
    limits = limits or Limits()
    metrics = HTTPMetrics(status.stats)
    notFound = NotFoundPage()
    home = HomePage(status, reactor)
    static = None
    if root is not None:
        static = StaticFolder(
            root, notFound=notFound, clock=reactor, followSymlinks=followSymlinks
        )
    top = RootResource(home=home, notFound=notFound, static=static)
    apiResource = APIResource(status, maxBody=limits.maxBody, clock=reactor)
    for name, child in (api or {}).items():
        apiResource.putChild(name, child)
    top.putChild(b"api", apiResource)
    top.putChild(b"healthz", HealthResource(status))
    top.putChild(b"metrics", metrics.resource())
    top.putChild(b"_netsuite", BuiltinPages(home, notFound))
    site = NetsuiteSite(
        top, reactor=reactor, stats=stats, metrics=metrics, limits=limits, accessLog=accessLog
    )
    site.static = static
    return site


def makeHTTPService(
    endpoint: str = DEFAULT_HTTP,
    reactor: Any = None,
    *,
    status: StatusSource | None = None,
    stats: ServiceStats | None = None,
    root: str | None = None,
    followSymlinks: bool = False,
    accessLog: str | None = None,
    limits: Limits | None = None,
    api: Mapping[bytes, IResource] | None = None,
    **listening: Any,
) -> StreamListener:
    """
    A service running netsuite's HTTP server on C{endpoint}.

    @param status: what the status pages show; by default a
        L{SimpleStatus} that knows this listener only.
    @param root: a folder to serve at C{/} (like C{twistd web --path}).
    @param followSymlinks: serve symlinks that point outside C{root}.
    @param accessLog: file for the combined-format access log (default: the
        twistd log).
    @param limits: request limits and timeouts.
    @param api: more children of C{/api}, by name.
    @param listening: keyword arguments of L{StreamListener} (C{tls},
        C{grace}, C{maxConnections}, C{maxPerHost}); give C{tls} options
        made with C{acceptableProtocols=[b"h2", b"http/1.1"]} for HTTP/2.
    """
    reactor = _reactor(reactor)
    own = status is None
    if status is None:
        status = SimpleStatus(StatsRegistry())
    if stats is None:
        stats = status.stats.forService("http")
    site = makeSite(
        status,
        reactor=reactor,
        stats=stats,
        root=root,
        followSymlinks=followSymlinks,
        accessLog=accessLog,
        limits=limits,
        api=api,
    )
    listener = StreamListener("http", endpoint, site, reactor=reactor, stats=stats, **listening)
    if own:
        status.add(listener)  # type: ignore[union-attr]
    return listener
