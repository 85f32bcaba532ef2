"""
The HTTP site: routing, request limits and deadlines, access log, metrics.

Everything HTTP is parsed by C{twisted.web} (but chunked request bodies,
read by L{netsuite.chunked}); this module adds what a public
server needs on top: a deadline for the request head (slowloris), an idle
keep-alive timeout, limits on the request line, the header block and the
body (414, 431, 413 instead of a silent close; over HTTP/2 too), nothing
read after a connection starts closing, and per-request accounting
(access log in the combined format, Prometheus metrics, stats).
"""

from __future__ import annotations

import functools
import io
import json
import re
import tempfile
from collections import deque
from time import time
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote_to_bytes

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
# twisted.web.http is a deprecation proxy: a name read through it costs
# microseconds, so the hot path binds them here.
from twisted.web.http import (
    H2_ENABLED as _TWISTED_H2,
    NO_BODY_CODES,
    HTTPChannel,
    _ChunkedTransferDecoder,
    _GenericHTTPChannelProtocol,
    combinedLogFormatter,
    datetimeToString,
)
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site, version as _serverVersion
from zope.interface import implementer

try:
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    from h2.connection import AllowedStreamIDs, _decode_headers
    from h2.frame_buffer import FrameBuffer
    from h2.stream import StreamClosedBy, StreamInputs
    from h2.utilities import HeaderValidationFlags, is_informational_response, validate_headers
    from hyperframe.frame import (
        AltSvcFrame,
        ContinuationFrame,
        DataFrame,
        ExtensionFrame,
        GoAwayFrame,
        HeadersFrame,
        PingFrame,
        PriorityFrame,
        PushPromiseFrame,
        RstStreamFrame,
        SettingsFrame,
        WindowUpdateFrame,
    )
    from priority import DeadlockError
    from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection
except ImportError:
    # Twisted without its http2 extra, or (caught by tests/test_upstream.py)
    # a Twisted whose private HTTP/2 names moved: HTTP/1.1 only, for Twisted's
    # own HTTP/2 has none of netsuite's limits.
    H2Connection = object  # type: ignore[assignment, misc]

#: Whether netsuite serves HTTP/2 (offered by ALPN on its TLS listeners).
H2_SERVED = H2Connection is not object

from netsuite.accesslog import LogKeptThroughGrace, openAccessLog
from netsuite.chunked import ChunkedDecoder
from netsuite.limits import ClosingWatch, SendStall, TokenBucket, decimal, unsentBytes
from netsuite.listen import FlushBatch, StreamListener, _reactor, plainSocketTransport, sendOrQueue
from netsuite.stats import ServiceStats, StatsRegistry
from netsuite.status import SimpleStatus, StatusSource
from netsuite.web.api import APIError, APIResource, HealthResource, setJSONHeaders
from netsuite.web.metrics import HTTPMetrics
from netsuite.web.pages import BuiltinPages, NotFoundPage, HomePage
from netsuite.web.static import H2_MIN_CHUNK_SIZE, StaticFolder, clientKey

DEFAULT_HTTP = "tcp:8080:interface=127.0.0.1"

#: The access log, when it goes to the twistd log.
_accessLog = Logger(namespace="netsuite.web.access")
_log = Logger(namespace="netsuite.web")



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

#: Bytes of one HTTP/2 header block as it comes (compressed), as the h2
#: library bounds it decoded.
H2_MAX_HEADER_BLOCK = 65536

#: Seconds an HTTP/2 connection closed for the client's error or flood,
#: which is not read any more, gets to take its GOAWAY before it ends (as
#: chat's hostile clients).
H2_HOSTILE_GRACE = 2.0

#: Reason phrases Twisted's table lacks, or writes otherwise than RFC 9110.
_REASONS = {431: b"Request Header Fields Too Large", 505: b"HTTP Version Not Supported"}


def _jsonErrorBody(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode("utf-8") + b"\n"


def _jsonError(status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """
    A complete HTTP/1.1 error response that closes the connection, with
    C{headers} (its C{Content-Type} and C{X-Content-Type-Options} when
    they have none).
    """
    body = _jsonErrorBody(status, message)
    reason = _REASONS.get(status) or http.RESPONSES.get(status, b"Error")
    lines = [b"%s: %s\r\n" % (name, value) for name, value in headers]
    given = {name.lower() for name, _ in headers}
    if b"content-type" not in given:
        lines += [b"Content-Type: application/json\r\n", b"X-Content-Type-Options: nosniff\r\n"]
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            # (RFC 9110 6.6.1: a Date on every answer but a 1xx or 5xx.)
            b"Server: %s\r\nDate: %s\r\n" % (_serverVersion, _httpNow()),
            *lines,
            b"Connection: close\r\n",
            b"Content-Length: %d\r\n\r\n" % (len(body),),
            body,
        ]
    )


#: The version at the end of a request line other than HTTP/1.0 and 1.1.
_OTHER_VERSION = re.compile(rb" HTTP/([0-9])\.[0-9]\Z")

#: The bytes of a token (RFC 9110, 5.6.2), such as a method.
_TOKEN_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

#: A byte Twisted's combined-log formatter would write escaped.
_LOG_ESCAPED = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def logEscape(data: bytes) -> str:
    """
    C{data} as Twisted's combined-log formatter writes a field: printable
    ASCII as it is, other bytes as C{\\xNN}, quotes and backslashes escaped.
    """
    text = repr(data)[1:]
    if text[0] == "'":
        return text[1:-1].replace('"', '\\"').replace("\\'", "'")
    return text[1:-1]


def _twistedLine(timestamp: str, request: Any) -> str:
    """
    Twisted's combined log line, with the version as sent.
    """
    sent = getattr(request, "sentVersion", None)
    if not sent:
        return combinedLogFormatter(timestamp, request)
    kept, request.clientproto = request.clientproto, sent
    try:
        return combinedLogFormatter(timestamp, request)
    finally:
        request.clientproto = kept


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
    raw = getattr(request, "rawRequestLine", None)
    if raw is not None:
        # A request line that did not parse is logged as it came, as nginx
        # logs one ("GARBAGE" 400).
        return '"%s" - - %s "%s" %d %s "-" "-"' % (
            ip.decode("ascii"),
            timestamp,
            logEscape(raw),
            request.code,
            request.sentLength or "-",
        )
    getHeader = request.getHeader
    fields = (
        ip,
        request.method,
        request.uri,
        getattr(request, "sentVersion", None) or request.clientproto,
        getHeader(b"referer") or b"-",
        getHeader(b"user-agent") or b"-",
    )
    try:
        joined = b" ".join(fields)
    except TypeError:  # not all bytes: leave it to Twisted
        return _twistedLine(timestamp, request)
    if _LOG_ESCAPED.search(joined) is not None:
        return _twistedLine(timestamp, request)
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


@implementer(IHalfCloseableProtocol)
class NetsuiteHTTPChannel(HTTPChannel):
    """
    An HTTP/1.x connection with netsuite's limits and deadlines.

    A client that shuts its side of the connection (C{nc -N}; over TLS,
    its C{close_notify}) has every request it sent answered, then the
    connection closes: twisted.web dropped what was not sent yet (every
    answer written a part at a time: any file over 64 KiB got nothing).

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
    #: The request line being received, until its headers are complete.
    _requestLine: bytes | None = None
    #: Aborts a refused connection whose peer does not close.
    _abortCall: IDelayedCall | None = None
    #: Aborts the connection being closed if the client takes nothing of
    #: what is left (L{loseConnection}).
    _closingWatch: ClosingWatch | None = None
    #: L{connectionLost} was called.
    _lost = False
    #: The client ended its input (L{readConnectionLost}).
    _inputEnded = False

    def __init__(self, site: "NetsuiteSite") -> None:
        HTTPChannel.__init__(self)
        self.site = site
        limits = site.limits
        self.MAX_LENGTH = limits.maxRequestLine
        # Twisted's own checks stay as a backstop behind ours.
        self.totalHeadersSize = limits.maxHeaderBytes + limits.maxRequestLine + 1
        self.maxHeaders = limits.maxHeaders + 1

    _host = None
    #: The last C{Host} value found well-formed on this connection.
    _goodHost = b""
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
        if self.transport.disconnecting:
            # Closing (a refusal, the idle timeout): over TLS the connection
            # reads on until the peer's close_notify, and Twisted would go
            # on parsing, and running, requests.
            return
        if self._state == "idle" and data and not self.paused:
            # A head begins with its first byte read.  Not for the empty
            # call of resumeProducing (an idle connection got a 408 one
            # head timeout after a large answer), nor for bytes held while
            # paused: lineReceived and _checkLineEnds start it when they
            # are parsed.
            self._startHead()
        if self._reading:  # re-entered: a pipelined request
            HTTPChannel.dataReceived(self, data)
            self._checkLineEnds()
            return
        self._reading = True
        try:
            HTTPChannel.dataReceived(self, data)
            self._checkLineEnds()
        finally:
            self._reading = False
            if self._out:
                self.site.batch.add(self)
        if self._inputEnded:
            self._closeIfInputDone()

    def readConnectionLost(self) -> None:
        """
        The client sent its last requests and shut its side: answer every
        one of them (some may wait in the buffer), then close.
        """
        self._inputEnded = True
        self._closeIfInputDone()

    def writeConnectionLost(self) -> None:
        pass

    def _closeIfInputDone(self) -> None:
        """
        Close once the client has ended its input and every request it sent
        is answered (or the last one can never be complete).
        """
        if not self._inputEnded or self.paused or self._busyReceiving or self.transport.disconnecting:
            # Paused, or parsing (a request answered here, while those after
            # it wait in the parser's buffer): L{dataReceived} looks again.
            return
        request = self.requests[-1] if self.requests else None
        if request is None or not getattr(request, "bodyComplete", self._handlingRequest):
            self.loseConnection()

    def _startHead(self) -> None:
        """
        A request's head begins: count its lines and bytes, and time it.
        """
        if self._closing:
            return
        self._state = "head"
        self._headBytes = self._headLines = 0
        self._requestLine = None
        self._headStarted = self.site.reactor.seconds()
        # One timer at a time, checked when it fires: no callLater and
        # cancel for every request on a keep-alive connection.
        if self._deadline is None:
            self._deadline = self.callLater(self.site.limits.headerTimeout, self._checkHead)

    def _checkLineEnds(self) -> None:
        # Once the line parser has taken every CRLF-ended line of a head
        # from its buffer (it is not in the middle of its loop, nor paused),
        # an LF still there is a bare one, which would wait for the 408.
        if not self.line_mode or self.paused or self._busyReceiving or not self._buffer:
            return
        if self._closing or self.transport.disconnecting:
            return
        if self._state == "idle":
            # What follows an answered request in the same read: the next
            # head has begun.
            self._startHead()
        if self._state != "head":
            return
        buffer = self._buffer
        if not self._headLines and buffer[0] not in _TOKEN_BYTES and buffer[0] not in b"\r\n":
            # A method is a token: this is no HTTP request (a TLS handshake
            # on the plain port, say), and need not wait for the 408.
            self._requestLine = buffer.split(b"\r\n", 1)[0]
            self._refuse(400, "not an HTTP request")
        elif b"\n" in buffer:
            if not self._headLines:
                self._requestLine = buffer.split(b"\n", 1)[0].rstrip(b"\r")
            self._refuse(400, "bare LF in the request head: lines end with CRLF")

    def write(self, data: bytes) -> None:
        self.writeSequence((data,))

    def writeSequence(self, iovec: Any) -> None:
        out = self._out
        if out is None:
            self._out = out = []
        if type(iovec) is not list and type(iovec) is not tuple:
            iovec = list(iovec)
        out.extend(iovec)
        self._outBytes += sum(map(len, iovec))
        if not self._reading or self._outBytes > _HOLD_LIMIT or self._requestProducer is not None:
            self.flushOutput()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        # The server's own version, whatever the client's (RFC 9110, 6.2).
        # (HTTP/1.1 answers have chunks: the header lookup is spared them.)
        delimited = (
            version == b"HTTP/1.1"
            or headers.hasHeader(b"content-length")
            or int(code) in NO_BODY_CODES
            or (bool(self.requests) and self.requests[0].method == b"HEAD")  # the one answered
        )
        connection = self.settleConnection(version, delimited)
        if connection is not None:
            headers.setRawHeaders(b"Connection", [connection])
        out = [b"HTTP/1.1 ", code, b" ", reason, b"\r\n"]
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
        """
        Close after what is buffered is sent; abort if the client takes none
        of it for the idle timeout (nginx's C{send_timeout}).  Over TLS, a
        client that does not answer the close_notify is aborted in the same
        way.
        """
        self.flushOutput()
        HTTPChannel.loseConnection(self)
        if self._closingWatch is None and not self._lost:
            self._closingWatch = ClosingWatch(
                self.site.reactor, self.transport, self.site.limits.idleTimeout, self._closingAborted
            )

    def _closingAborted(self) -> None:
        self.site.stats.count("client_timeouts")
        peer = self.transport.getPeer()
        _log.info(
            "client {client} took nothing for {seconds:g} seconds while its connection closed: aborted",
            client=getattr(peer, "host", None) or "-",
            seconds=self.site.limits.idleTimeout,
        )

    def closeGracefully(self) -> None:
        """
        The service is stopping: close now when no request is in hand, else
        once its answer is sent.  Closing through the channel unregisters it
        as the transport's producer first; without that TLS sends no
        close_notify, and the connection waited for the end of the grace
        period to be aborted.
        """
        if self.requests:
            self.persistent = False
        elif not self.transport.disconnecting:
            self.loseConnection()

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        Whether the connection may carry another request after C{request}:
        an HTTP/1.1 one unless it says C{Connection: close}, an HTTP/1.0 one
        only when it says C{Connection: keep-alive} (RFC 9112, 9.3), as
        nginx does for C{ab -k}.  The answer's C{Connection} header is
        L{settleConnection}.
        """
        values = request.requestHeaders.getRawHeaders(b"connection")
        if values is None:
            return version == b"HTTP/1.1"
        # Twisted splits Connection on spaces: "close, x" was not "close".
        tokens = {token.strip().lower() for value in values for token in value.split(b",")}
        return b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)

    def settleConnection(self, version: bytes, delimited: bool) -> bytes | None:
        """
        Decide whether the connection goes on after the answer being
        started (ending keep-alive for an HTTP/1.0 answer not C{delimited}),
        and return that answer's C{Connection} header, to be written once:
        C{close} when the connection ends after it, as nginx says it (the
        status line says HTTP/1.1 even to an HTTP/1.0 client, which cannot
        go by the version then), C{keep-alive} when an HTTP/1.0 client's
        connection goes on, else none.  An HTTP/1.0 answer with a body not
        C{delimited} by its length has no chunks to end it: the end of the
        connection does.
        """
        if version == b"HTTP/1.1":
            return None if self.persistent else b"close"
        if self.persistent and not delimited:
            self.persistent = False
        return b"keep-alive" if self.persistent else b"close"

    def _send100Continue(self) -> None:
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted goes on parsing after a bad header line that is not the
        # last one, trusting the transport to stop reading; TLS does not
        # (it waits for the peer's close_notify), so the refused request
        # would run on the next read.  _refuse ignores every later byte.
        decoder = self._transferDecoder
        if isinstance(decoder, ChunkedDecoder) and decoder.problem:
            if decoder.tooLarge:
                self.bodyTooLarge()
            else:
                self._refuse(400, decoder.problem)
            return
        self._refuse(400, "malformed request")

    def lineReceived(self, line: bytes) -> None:
        if self._state == "idle":
            # The next request, in the same read as the one just answered:
            # its head gets the same limits and deadline.
            self._startHead()
        if b"\n" in line:
            if self._state == "head" and not self._headLines:
                self._requestLine = line.split(b"\n", 1)[0]
            self._refuse(400, "bare LF in the request head: lines end with CRLF")
            return
        if self._state == "head" and not line and not self._headLines:
            # Empty lines before the request line are skipped, any number
            # of them as nginx does (RFC 9112 2.2: "at least one"; Twisted
            # skips one), within the head's size and deadline.
            self._headBytes += 2
            if self._headBytes > self.site.limits.maxHeaderBytes:
                self._refuse(400, "only empty lines where a request line should be")
            return
        if self._state == "head" and line:
            self._headLines += 1
            if self._headLines == 1:
                self._headBytes = 0  # the empty lines skipped before
                self._requestLine = line
                version = line[-9:]
                if version != b" HTTP/1.1" and version != b" HTTP/1.0":
                    read = self._otherVersion(line)
                    if read is None:
                        return
                    if read != line:
                        # Served as HTTP/1.1, logged as sent (as nginx logs it).
                        HTTPChannel.lineReceived(self, read)
                        if self.requests:
                            self.requests[-1].sentVersion = version[1:]
                        return
            if self._headLines > 1:  # a header line, not the request line
                self._headBytes += len(line) + 2
                limits = self.site.limits
                if self._headBytes > limits.maxHeaderBytes or self._headLines > limits.maxHeaders + 1:
                    self._refuse(431, "request header fields too large")
                    return
                if line[0] in b" \t":
                    # Obsolete line folding (RFC 9112, 5.2: 400, as nginx):
                    # Twisted joined it to the header above, past the
                    # checks of this method (a folded Content-Length of
                    # 5,000 digits went unanswered, with a traceback).
                    self._refuse(400, "obsolete line folding in the request head")
                    return
                if (
                    line[0] in b"Tt"
                    and line[:18].lower() == b"transfer-encoding:"
                    and line[18:].strip(b" \t").lower() != b"chunked"
                ):
                    # Twisted takes "identity" and ignores it (RFC 9112, 6.3:
                    # 400).  Checked here, where every header line passes.
                    self._refuse(400, "Transfer-Encoding other than chunked")
                    return
                if line[0] in b"Cc" and line[:15].lower() == b"content-length:":
                    value = line[15:].strip(b" \t")
                    if value.isdigit() and value.isascii():
                        # Twisted's int() refuses over 4,300 digits (a
                        # traceback, and no answer): leading zeros go, and
                        # a length no body could have is a 413 here.
                        length = decimal(value, 10**18)
                        if length == 10**18:
                            self._refuse(413, f"request body over {self.site.limits.maxBody} bytes")
                            return
                        line = line[:15] + b" %d" % (length,)
        HTTPChannel.lineReceived(self, line)

    def _otherVersion(self, line: bytes) -> bytes | None:
        """
        A request line that is not HTTP/1.0 or 1.1: one of a later HTTP/1
        is read as HTTP/1.1, the highest this server knows (RFC 9110, 6.2),
        as nginx does; one of another major version is refused (505, or
        400 for a broken h2c preface), and L{None} returned.  A line
        without a version of that form is left to Twisted's parser (400).
        """
        other = _OTHER_VERSION.search(line)
        if other is None:
            return line
        if other.group(1) == b"1":
            return line[:-9] + b" HTTP/1.1"
        if line != b"PRI * HTTP/2.0":
            sent = other.group()[6:].decode()
            self._refuse(505, f"HTTP version {sent} not supported: requests in this form are HTTP/1.x")
        elif (
            getattr(self.site, "h2c", False)
            and H2_SERVED
            and getattr(self.transport, "negotiatedProtocol", _NO_TLS) is _NO_TLS
        ):
            self._refuse(400, "malformed HTTP/2 connection preface")
        else:
            self._refuse(505, "HTTP/2 with prior knowledge is not served on this connection")
        return None

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._headLines == 0:
            # Logged as it came, up to the limit, as nginx logs its 414.
            self._requestLine = line[: self.MAX_LENGTH]
            self._refuse(414, "request line too long")
        else:
            self._refuse(431, "request header line too long")

    def allHeadersReceived(self) -> None:
        self._state = "busy"
        self._requestLine = None
        if self._version != b"HTTP/1.1" and self.requests[-1].requestHeaders.hasHeader(b"transfer-encoding"):
            # Faulty framing (RFC 9112, 6.1): Twisted decoded it as chunked.
            self._refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
            return
        if self.length is not None and self.length > self.site.limits.maxBody:
            self._refuse(413, f"request body over {self.site.limits.maxBody} bytes")
            return
        check = getattr(self.requests[-1], "headRefusal", None)  # not the proxy's
        if self.length != 0 and check is not None:
            # A body follows: its resource may refuse it now, before a
            # 100 Continue and before the body is read.
            refusal = check(self._command, self._path, self._version, self.length)
            if refusal is not None:
                self._refuse(*refusal)
                return
        decoder = self._transferDecoder
        if type(decoder) is _ChunkedTransferDecoder:
            self._transferDecoder = ChunkedDecoder(
                decoder.dataCallback, decoder.finishCallback, self.site.limits.maxBody
            )
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
        self._closeIfInputDone()

    def resumeProducing(self) -> None:
        HTTPChannel.resumeProducing(self)
        if self.paused and not self._waitingForTransport and not self._handlingRequest:
            self.paused = False
            self.dataReceived(b"")
        self._closeIfInputDone()

    def bodyTooLarge(self) -> None:
        """
        A chunked body went over the limit: answer 413 and close.
        """
        self._refuse(413, f"request body over {self.site.limits.maxBody} bytes")

    def refuseBody(self, status: int, message: str) -> None:
        """
        Refuse the request whose body is being received, with C{status},
        and close (its body is not read).
        """
        self._refuse(status, message, [(b"Retry-After", b"1")] if status == 503 else [])

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

    def _refuse(self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """
        Answer C{status} with a JSON error (and C{headers}) and close,
        reading nothing more.
        """
        if self._closing:
            return
        self._closing = True
        self._cancelDeadline()
        self.site.stats.countError(f"refused_{status}")
        self.setTimeout(None)
        self.flushOutput()
        self.dataReceived = self.lineReceived = self.rawDataReceived = lambda *a: None  # type: ignore[method-assign, assignment]
        response = self.errorResponse(status, message, headers)
        if getattr(self, "_command", None) == b"HEAD":
            response = response[: response.find(b"\r\n\r\n") + 4]  # its length, not its body
        self.transport.write(response)
        self._logRefusal(status, len(response) - response.find(b"\r\n\r\n") - 4)
        # Unregisters the channel as the transport's producer first: TLS
        # sends its close_notify only once no producer is registered.
        self.loseConnection()
        # Do not wait forever for a peer that does not read its answer.
        self._abortCall = self.callLater(10, self._abortUntaken)

    def _abortUntaken(self) -> None:
        """
        Abort a refused connection whose client has not taken its answer
        in 10 seconds.  One that took it is left to netsuite's listener,
        which ends it once the client closes too, or sends nothing for 5
        seconds, or 30 seconds on (its lingering close): an upload over the
        limit may still be on its way, and a reset now could lose the
        answer before the client reads it.
        """
        self._abortCall = None
        if unsentBytes(self.transport):
            self.transport.abortConnection()

    def errorResponse(self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
        """
        The complete response that refuses a request with C{status} (and
        C{headers}) and closes the connection (a JSON body here).
        """
        return _jsonError(status, message, headers)

    def _logRefusal(self, status: int, sent: int) -> None:
        """
        Write the access-log line of a request refused with C{status} (as
        nginx logs its 400, 408, 413): the one being received, once its
        request line is read.
        """
        request = self._refusedRequest()
        if request is None:
            return
        request.code = status
        request.sentLength = sent
        self.site.log(request)

    def _refusedRequest(self) -> Request | None:
        """
        The request being received, for the access-log line of its
        refusal: with its method, target and version, or, when its request
        line did not parse, that line as C{rawRequestLine}.  L{None} before
        a request line is read, and for a request already processed (its
        own line follows).
        """
        command = getattr(self, "_command", None)
        if command is None and self._requestLine is None:
            return None
        # With none, it was refused before Twisted made one.
        request = self.requests[-1] if self.requests else self.requestFactory(self)
        if request.startedWriting or getattr(request, "site", None) is not None:
            return None
        if command is not None:
            request.method, request.uri = command, self._path
            request.clientproto = self._version
        else:
            request.rawRequestLine = self._requestLine
            # For /metrics: a known method counts as itself.
            request.method = self._requestLine.split(b" ", 1)[0]
        return request

    def timeoutConnection(self) -> None:
        request = self.requests[-1] if self.requests else None
        if (
            self._state == "busy"
            and self._transferDecoder is not None
            and request is not None
            and not request.startedWriting
        ):
            # The body stopped coming: 408, as nginx's client_body_timeout.
            self._refuse(408, f"the request body stopped coming for {self.timeOut:g} seconds")
            return
        HTTPChannel.timeoutConnection(self)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def connectionLost(self, reason: Any) -> None:
        if not self._closing and self._state == "busy" and self._transferDecoder is not None and not self._lost:
            # Gone in the middle of a request body: logged (and counted)
            # as nginx logs it, 400 ("client prematurely closed connection
            # while reading client request body"); it was in no log.
            self._logRefusal(400, 0)
        self._lost = True
        self._out = None
        self._outBytes = 0
        self._cancelDeadline()
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        self._abortCall = None
        if self._closingWatch is not None:
            self._closingWatch.cancel()
            self._closingWatch = None
        HTTPChannel.connectionLost(self, reason)


def _queuedOnStream(channel: Any) -> int:
    """
    Body bytes an HTTP/2 stream (Twisted's C{H2Stream}) gave its connection
    that are still in its queue, not sent; 0 for anything else.
    """
    queues = getattr(getattr(channel, "_conn", None), "_outboundStreamQueues", None)
    queue = queues.get(getattr(channel, "streamID", None)) if isinstance(queues, dict) else None
    return queue.size if isinstance(queue, _OutputQueue) else 0


_dateSecond = -1
_dateValue = b""

#: A C{Host} value, or the authority of an absolute target (RFC 9110, 7.2;
#: RFC 3986, 3.2.2): a name or an IP literal, and a port; no user info.
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[0-9A-Za-z._~%!$&'()*+,;=-]*)(?::[0-9]*)?")

#: A byte a request target may not hold (here and in the proxy): it must be
#: visible ASCII.  Twisted's HTTP/1.1 request-line check lets DEL and 0x80
#: to 0xB0 through (and refuses the bytes above); HTTP/2 has no check.
_NOT_VISIBLE = re.compile(rb"[^\x21-\x7e]")

#: An absolute-form request target, without its query: authority, path.
_ABSOLUTE_FORM = re.compile(rb"(?i)https?://([^/]*)(/.*)?", re.S)


def httpDate(now: float) -> bytes:
    """
    The C{Date} header's value for the time C{now} (seconds since the
    epoch), made at most once a second.
    """
    global _dateSecond, _dateValue
    second = int(now)
    if second != _dateSecond:
        _dateValue = datetimeToString(second)
        _dateSecond = second
    return _dateValue


def _httpNow() -> bytes:
    """
    The C{Date} header's value now.
    """
    return httpDate(time())


#: The status the access log shows for a request whose client went away
#: before any of the answer was sent (nginx's).
_CLIENT_CLOSED = 499


#: Bytes of a request's body kept in memory; a larger one goes to a
#: temporary file.
BODY_IN_MEMORY = 64 * 1024

#: Request bodies a site holds in temporary files at once (each a file
#: descriptor, outside the connection limits; see also
#: L{BODY_FILES_PER_HOST} and L{H2_BODY_FILES}); past it, a larger body is
#: refused (503).
BODY_FILES = 64

#: ... of them for one client address (an IPv6 one by its /64), and for
#: one HTTP/2 connection: one client held all 64, its bodies stopped, and
#: every other client's large upload got a 503.
BODY_FILES_PER_HOST = 16
H2_BODY_FILES = 8


class _BodyFile:
    """
    A request body in a temporary file, counted in its site's C{bodyFiles}
    until it is closed.
    """

    def __init__(self, site: "NetsuiteSite", start: bytes, host: str, connection: Any = None) -> None:
        """
        @param host: the client's address, as limits count it.
        @param connection: the HTTP/2 connection the body comes on, if any.
        @raise OSError: no temporary file can be made, or written.
        """
        self._file = tempfile.TemporaryFile()
        try:
            self._file.write(start)
        except OSError:
            self._file.close()
            raise
        self._site: "NetsuiteSite | None" = site
        self._host = host
        self._connection = connection
        site.bodyFiles += 1
        site.bodyFilesByHost[host] = site.bodyFilesByHost.get(host, 0) + 1
        if connection is not None:
            connection.bodyFiles += 1

    def close(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            site.bodyFiles -= 1
            left = site.bodyFilesByHost.pop(self._host, 1) - 1
            if left:
                site.bodyFilesByHost[self._host] = left
            if self._connection is not None:
                self._connection.bodyFiles -= 1
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class NetsuiteRequest(Request):
    """
    A request that knows when it started and keeps its body under the
    site's limit.
    """

    startedAt = 0.0
    _bodyBytes = 0
    #: Whether the whole request, its body too, has been received.
    bodyComplete = False
    #: Whether the head of its answer was never sent: its HTTP/2 stream
    #: was gone (see L{NetsuiteH2Connection.writeHeaders}).
    _headLost = False

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        Request.__init__(self, channel, *args, **kwargs)
        site = getattr(channel, "site", None)
        if site is not None:
            self.startedAt = site.reactor.seconds()

    def process(self) -> None:
        """
        Refuse a request whose target or C{Host} is malformed (400); answer
        a plain GET or HEAD of a small static file the site's folder has
        answered before straight from its cache (L{StaticFolder.quickAnswer});
        anything else the usual way, through the resource tree.
        """
        self.bodyComplete = True
        problem = self._checkTarget()
        if problem is not None:
            self._answerError(400, problem)
            return
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

    def headRefusal(
        self, method: bytes, uri: bytes, version: bytes, length: int | None
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """
        Ask the resource this request goes to whether it refuses the
        request from its head alone, before its body is read (as nginx
        answers a 401 or a 413 before reading a body): a resource with a
        C{checkHead(request, length)} method refuses by raising
        L{APIError} (see L{JSONResource.checkHead}).  Called once the head
        is in, for a request with a body (of C{length} bytes; L{None}:
        chunked); a target that is not one is left to L{process} (400).

        @return: the status, message and response headers to refuse it
            with, or L{None}.
        """
        self.method, self.uri, self.clientproto = method, uri, version
        self.path = uri.split(b"?", 1)[0]
        if self._checkTarget() is not None or self.path[:1] != b"/":
            return None
        self.prepath = []
        self.postpath = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        try:
            try:
                # Routed as process() routes it: //api/x and /api/./x are
                # /api/x (they went round the check).
                resource = self.channel.site.getResourceFor(self)
            finally:
                self.site = None  # process() sets it; a refusal's log line wants it unset
            check = getattr(resource, "checkHead", None)
            if check is not None:
                check(self, length)
        except APIError as refused:
            setJSONHeaders(self)  # as the resource would answer it
            headers = [(name, value) for name, values in self.responseHeaders.getAllRawHeaders() for value in values]
            return refused.code, refused.message, headers
        except Exception:
            _log.failure("checking the head of {method} {uri!r}", method=method.decode("latin-1"), uri=uri)
        finally:
            # Nothing the route or the check set stays on the answer.
            self.responseHeaders = Headers()
            self.code, self.code_message = http.OK, http.RESPONSES[http.OK]
        return None

    def _checkTarget(self) -> str | None:
        """
        Check the request target and C{Host} (RFC 9112, 3.2): one valid
        C{Host} (required in HTTP/1.1), and a path, C{*} or an absolute
        C{http(s)://} URL, whose path is then the one served and whose
        authority is the C{Host} (3.2.2), all in visible ASCII.  Over
        HTTP/2 the same, with C{:authority} as the C{Host} (a C{Host}
        beside it must say the same) and no absolute URL (RFC 9113 8.3.1).

        @return: what is wrong, or L{None}.
        """
        headers = self.requestHeaders
        http2 = self.clientproto == b"HTTP/2"
        hosts = headers.getRawHeaders(b"host")
        if hosts is None:
            if self.clientproto == b"HTTP/1.1":
                return "HTTP/1.1 request without a Host header"
        elif len(hosts) > 1 and not (http2 and len(set(hosts)) == 1):
            # Over HTTP/2, :authority and a Host that say the same are one.
            return "more than one Host header"
        elif http2:
            if _HOST.fullmatch(hosts[0]) is None:
                return "malformed Host header"
            if len(hosts) > 1:
                headers.setRawHeaders(b"host", hosts[:1])
        else:
            # A keep-alive client sends the same Host every time.
            channel = self.channel
            if hosts[0] != channel._goodHost:
                if _HOST.fullmatch(hosts[0]) is None:
                    return "malformed Host header"
                channel._goodHost = hosts[0]
        path = self.path
        if _NOT_VISIBLE.search(path) is not None:
            return "malformed request target"
        if path[:1] == b"/" or path == b"*":
            return None
        absolute = None if http2 else _ABSOLUTE_FORM.fullmatch(path)  # RFC 9113 8.3.1
        if absolute is None or not absolute.group(1) or _HOST.fullmatch(absolute.group(1)) is None:
            return "malformed request target"
        headers.setRawHeaders(b"Host", [absolute.group(1)])
        self.path = absolute.group(2) or b"/"
        return None

    def _answerError(self, status: int, message: str) -> None:
        """
        Answer C{status} with a JSON error body, without the resource tree.
        """
        self.site = self.channel.site
        body = _jsonErrorBody(status, message)
        if isinstance(self.channel, NetsuiteHTTPChannel):
            # A refusal closes the connection, as the channel's own do (and
            # nginx after any 400): the next pipelined request went on.
            self.channel.persistent = False
        self.setResponseCode(status)
        for name, value in (
            (b"Server", _serverVersion),
            (b"Date", _httpNow()),
            (b"Content-Type", b"application/json"),
            (b"X-Content-Type-Options", b"nosniff"),
            (b"Content-Length", b"%d" % (len(body),)),
        ):
            self.setHeader(name, value)
        self.write(body)
        self.finish()

    def _sendQuick(self, head: bytes, body: bytes) -> None:
        """
        Send a whole 200 answer, header for header in the order the usual
        way writes it: the status line, C{Server} and C{Date}, C{head} (with
        C{Content-Length}), C{Connection} when there is one, and C{body};
        then finish as usual (access log, metrics, keep-alive).
        """
        out = [b"HTTP/1.1 200 OK\r\n"]
        for name, values in self.responseHeaders.getAllRawHeaders():
            for value in values:
                out += (name, b": ", value, b"\r\n")
        out += (b"Server: ", _serverVersion, b"\r\nDate: ", _httpNow(), b"\r\n", head)
        connection = self.channel.settleConnection(self.clientproto, True)
        if connection is not None:
            out += (b"Connection: ", connection, b"\r\n")
        out += (b"\r\n", body)
        self.startedWriting = 1
        self.sentLength = len(body)
        self.channel.writeSequence(out)
        self.finish()

    def connectionLost(self, reason: Failure) -> None:
        """
        The client went away (or reset its HTTP/2 stream) before the answer
        was finished: a request being answered still gets its access-log
        line and metrics, as nginx writes them: status 499 when nothing of
        the answer was sent, else its status and the body bytes sent.
        """
        site = self.site
        if site is not None and not self.finished and not self._disconnected:
            if not self.startedWriting:
                self.code = _CLIENT_CLOSED
            else:
                # Over HTTP/2, what still waits in the stream's queue was
                # never sent (a stalled stream logged 16,384 bytes sent).
                self.sentLength = max(self.sentLength - _queuedOnStream(self.channel), 0)
            site.log(self)
        Request.connectionLost(self, reason)

    def gotLength(self, length: int | None) -> None:
        """
        Keep the body in memory (see L{handleContentChunk}): Twisted gave
        each body of 100,000 bytes or more, and each chunked one, a
        temporary file of its own, a file descriptor no limit counted: 100
        streams of an HTTP/2 connection took 100 of them, and 200
        connections ran the process out of descriptors.
        """
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        self._bodyBytes += len(data)
        site = self.channel.site
        if self._bodyBytes > site.limits.maxBody:
            refuse = getattr(self.channel, "bodyTooLarge", None)
            if refuse is not None:
                refuse()
            else:  # an HTTP/2 stream (its connection refuses first): reset it
                self.channel.abortConnection()
            return
        if self._bodyBytes > BODY_IN_MEMORY and isinstance(self.content, io.BytesIO):
            # Past what is kept in memory: a temporary file, one of at most
            # BODY_FILES at once.
            host = clientKey(self)
            connection = getattr(self.channel, "_conn", None)  # HTTP/2's
            if site.bodyFiles >= BODY_FILES:
                problem = f"more than {BODY_FILES} request bodies are being received"
            elif host and site.bodyFilesByHost.get(host, 0) >= BODY_FILES_PER_HOST:
                # (Not for a UNIX socket's clients, which have no address.)
                problem = f"more than {BODY_FILES_PER_HOST} request bodies are being received from your address"
            elif connection is not None and getattr(connection, "bodyFiles", 0) >= H2_BODY_FILES:
                problem = f"more than {H2_BODY_FILES} request bodies are being received on this connection"
            else:
                try:
                    self.content = _BodyFile(
                        site, self.content.getvalue(), host, connection if hasattr(connection, "bodyFiles") else None
                    )
                    problem = ""
                except OSError as e:  # out of descriptors, or of disk
                    problem = f"the body cannot be kept ({e.strerror or e})"
            if problem:
                site.stats.count("body_files_refused")
                refuse = getattr(self.channel, "refuseBody", None)
                if refuse is None:  # an HTTP/2 stream: its connection answers on it
                    connection = self.channel._conn
                    refuse = functools.partial(connection.refuseBody, self.channel.streamID)
                refuse(503, f"{problem}; try again")
                return
        Request.handleContentChunk(self, data)


#: The headers the access-log line of an HTTP/2 request refused for its
#: head is made of (a CONNECT has only an authority).
_LOGGED_FIELDS = frozenset((b":method", b":path", b":authority", b"referer", b"user-agent"))

#: The type of an HTTP/2 DATA frame (RFC 9113, 6.1): a body, not a head.
_DATA_FRAME = 0x0

#: The type of an HTTP/2 WINDOW_UPDATE frame (RFC 9113, 6.9).
_WINDOW_UPDATE_FRAME = 0x8

#: Bytes of answers an HTTP/2 connection holds for its client before it
#: processes no more of the client's requests (until the client takes them).
_H2_QUEUE_LIMIT = 1024 * 1024

#: Bytes of frames outside flow control (answers' HEADERS among them) an
#: HTTP/2 connection may hold while its transport is paused, before it
#: processes no more requests until they are sent: Twisted aborts the
#: connection at 17 KiB of them, so a client reading at its own pace that
#: sent 50 requests at once, answered with large heads, was cut off.
_H2_CONTROL_HOLD = 4 * 1024

#: Empty DATA frames (not ending their stream) an HTTP/2 client may send at
#: once, and a second after that: each costs the server work and carries
#: nothing (CVE-2019-9518); past that the connection ends with a GOAWAY.
H2_EMPTY_DATA_BURST = 100
H2_EMPTY_DATA_RATE = 10.0

#: Streams an HTTP/2 client may reset at once, and a second after that (as
#: nghttp2): each reset request may already have been processed, and frees
#: its place among the concurrent streams at once (Rapid Reset,
#: CVE-2023-44487); past that the connection ends with a GOAWAY.
H2_RESET_BURST = 1000
H2_RESET_RATE = 33.0

#: Control frames (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, and frames of
#: other or unknown types) an HTTP/2 client may send at once, and a second
#: after that: each costs the server 10 to 45 microseconds and carries no
#: request (CVE-2019-9512, 9515); past that the connection ends with a
#: GOAWAY.  A client earns more by the server's work for it: each request
#: head, and each DATA frame sent of L{H2_CONTROL_FRAME_BYTES} or more
#: (which a client with a small window answers with WINDOW_UPDATEs); a
#: smaller frame earns in proportion, so that a client opening its window
#: a few bytes at a time (the "data dribble", CVE-2019-9511) earns nearly
#: nothing for the frames it makes the server send.
H2_CONTROL_BURST = 100
H2_CONTROL_RATE = 10.0
H2_CONTROL_PER_REQUEST = 10
H2_CONTROL_PER_DATA_FRAME = 2
H2_CONTROL_FRAME_BYTES = 256
#: What DATA frames sent earn is kept apart from the budget, not lost past
#: its burst, up to this many frames: a client with a large window that
#: gives back each frame (two WINDOW_UPDATEs) is sent many frames at once,
#: and was cut off (a 1 MiB window: 64 frames earning 128 where the burst
#: holds 100).  4096 answer 2,048 frames of 16 KiB, a 32 MiB window.
H2_CONTROL_DATA_CREDIT = 4096

#: Settings in one SETTINGS frame, past which the connection ends with a
#: GOAWAY (as nghttp2): each costs work, and RFC 9113 defines six.
H2_MAX_SETTINGS = 32

#: The largest HPACK table (bytes) netsuite's answers are compressed
#: against on an HTTP/2 connection, whatever larger size the client allows
#: (RFC 7541, 4.2 lets the encoder use less; nghttp2's default): h2 took
#: the client's word, up to 4 GiB, and each answer's new header values
#: (a redirect's Location) stayed in the table for good, searched one by
#: one for every header of every answer.
H2_ENCODER_TABLE = 4096

#: Bytes of DATA an HTTP/2 connection sends in one reactor turn, as one
#: write to its transport (Twisted's loop sent one frame, 16 KiB, a turn).
H2_TURN_BYTES = 256 * 1024

#: Seconds within which an HTTP/2 connection's idle timeout may be due, and
#: its quiet may have begun after a file stalled, for the connection to
#: time out at once when the stall timeout resets that file, rather than
#: start the requests waiting for a file (see
#: L{NetsuiteH2Connection.timeOutIfDue}).
H2_IDLE_SLACK = 1.0


class _Flood(Exception):
    """
    An HTTP/2 client sent control frames past its budget: the argument is
    the GOAWAY's debug data.
    """


if H2_SERVED:
    #: How h2 checks a request's head (not trailers, not an answer).
    _REQUEST_HEAD = HeaderValidationFlags(
        is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
    )

    #: How h2 checks a request's trailers.
    _TRAILERS = _REQUEST_HEAD._replace(is_trailer=True)

    class _Malformed(h2.events.DataReceived):  # type: ignore[misc]
        """
        A request found malformed (RFC 9113, 8.1.1) after its head: a DATA
        frame that takes its body past its declared C{content-length}, or
        ends it short of it, or malformed trailers.  It is refused on its
        stream, in its turn among the read's events.

        @ivar reset: for a stream error that is not a malformed request (a
            stream made to depend on itself, one past the concurrent
            streams allowed), the error code the stream is reset with,
            unanswered, in place of the refusal.
        """

        def __init__(self, streamID: int, flowControlled: int, message: str, reset: int | None = None) -> None:
            # Not h2's __init__: its arguments differ between versions.
            self.stream_id = streamID
            self.stream_ended = None
            self.data = b""
            self.flow_controlled_length = flowControlled
            self.message = message
            self.reset = reset

    class _BadTrailers(Exception):
        """
        h2 found a stream's trailers malformed (they do not end the
        stream) after it decoded them: the argument says why.
        """

    #: Why a stream is reset when it is made to depend on itself.
    _SELF_DEPENDENT = "stream depends on itself"

    #: Why a stream is refused past the concurrent streams allowed.
    _TOO_MANY_STREAMS = "too many concurrent streams"

    #: Why a stream is reset when a WINDOW_UPDATE frame adds 0 to its window.
    _ZERO_INCREMENT = "window increment of 0"

    class _FrameBuffer(FrameBuffer):  # type: ignore[misc]
        """
        h2's buffer of the frames a connection receives, that reads a
        WINDOW_UPDATE frame's increment without its reserved bit, which RFC
        9113 (6.9) says is ignored when received, and gives one of 0 on a
        stream on as a frame with that increment, for the connection to
        reset its stream (RFC 9113, 6.9: a stream error), as nginx does.
        hyperframe refused both while parsing: a connection error.

        A header block being received (HEADERS, then CONTINUATION frames)
        is held to L{H2_MAX_HEADER_BLOCK} bytes; past it the connection
        ends with C{ENHANCE_YOUR_CALM}.  h2 held 64 frames of any size:
        1.2 MB per connection until the head deadline.
        """

        _blockBytes = 0

        def _update_header_buffer(self, f: Any) -> Any:
            if isinstance(f, ContinuationFrame) and self._headers_buffer:
                self._blockBytes += len(f.data)
                if self._blockBytes > H2_MAX_HEADER_BLOCK:
                    raise h2.exceptions.DenialOfServiceError(
                        f"header block over {H2_MAX_HEADER_BLOCK} bytes"
                    )
            elif isinstance(f, (HeadersFrame, PushPromiseFrame)):
                self._blockBytes = len(f.data)
            return FrameBuffer._update_header_buffer(self, f)

        def __next__(self) -> Any:
            data = self._data
            if len(data) >= 13 and data[3] == _WINDOW_UPDATE_FRAME and data[:3] == b"\0\0\4":
                data[9] &= 0x7F
                streamID = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
                # Inside a header block any other frame ends the connection.
                if streamID and data[9:13] == b"\0\0\0\0" and not self._headers_buffer:
                    del data[:13]
                    return WindowUpdateFrame(streamID, window_increment=0)
            return FrameBuffer.__next__(self)


def _validate(headers: list[tuple[bytes, bytes]], flags: Any) -> None:
    """
    Run h2's checks of a header block (C{flags}: which kind).

    @raise h2.exceptions.ProtocolError: it is malformed.
    """
    for _ in validate_headers(headers, flags):
        pass


def _forTwisted(headers: list[tuple[bytes, bytes]], declared: int | None) -> list[tuple[bytes, bytes]]:
    """
    A checked request head as Twisted's HTTP/2 takes it: the C{cookie}
    crumbs joined into one field (RFC 9113, 8.2.3), and one
    C{content-length} field of the number it C{declared} (Twisted's
    C{int()} refuses over 4,300 digits, and takes each of two equal
    fields).
    """
    cookies = [value for name, value in headers if name == b"cookie"]
    if declared is None and len(cookies) < 2:
        return headers
    crumbs = [value for value in cookies if value]
    fields = [field for field in headers if field[0] not in (b"cookie", b"content-length")]
    if crumbs:
        fields.append((b"cookie", b"; ".join(crumbs)))
    if declared is not None:
        fields.append((b"content-length", b"%d" % (declared,)))
    return fields


def _declaredLength(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """
    The body length a request's C{content-length} fields declare (L{None}:
    none), read as HTTP/1's is: leading zeros are dropped, and a length of
    more than 18 digits is read as 10**18 (C{int()} refuses over 4,300).

    @raise ValueError: a value is not all digits, or two values differ.
    """
    declared: int | None = None
    for name, value in headers:
        if name != b"content-length":
            continue
        if not value.isdigit():
            raise ValueError("invalid content-length")
        number = decimal(value, 10**18)
        if declared is not None and number != declared:
            raise ValueError("conflicting content-length values")
        declared = number
    return declared


#: DATA frames sent and not yet given back that are remembered for one
#: stream's flow-control window (L{_GiveBacks}), and for the connection's:
#: past that the client is taken for one that does not give back every
#: frame.  The streams sharing the connection's window cut theirs into
#: frames of a few hundred bytes: 32 a stream were too few for a window
#: of 12,712 bytes and 8 streams.  (About 30 KB a stream at most.)
_GIVE_BACK_STREAM_FRAMES = 256
_GIVE_BACK_CONNECTION_FRAMES = 256

#: Frames given back that are remembered as evidence (L{_GiveBacks}).
_GIVE_BACK_EVIDENCE = 8


class _GiveBacks:
    """
    How an HTTP/2 client gives back one flow-control window (a stream's,
    or the connection's): whether it answers every DATA frame sent on it
    with a C{WINDOW_UPDATE} of exactly that frame's size, in the order
    sent; and so whether it is sure to give back some of what it has not
    yet.

    An update when nothing is outstanding opens the window further and
    says nothing; any other update (several frames at once, half a
    window, a few bytes) makes the client one that does not give back
    every frame, for good.  A client that gives back once a size or a
    share of its window has come in can look like one that gives back
    every frame while each frame is that large: a frame outstanding is
    only counted on to come back if the client gave back alone one no
    larger, sent with at least as much of the window left after it.

    @ivar perFrame: whether every update so far gave back the oldest frame
        outstanding, and at least one did.
    """

    __slots__ = ("_limit", "_outstanding", "_evidence", "perFrame", "_mixed", "_sure")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        #: The frames sent and not given back, oldest first: (size, the
        #: window left after it).
        self._outstanding: deque[tuple[int, int]] = deque()
        #: Frames given back alone, (size, window left after it), none
        #: smaller with as much left as another.
        self._evidence: list[tuple[int, int]] = []
        self.perFrame = False
        self._mixed = False
        #: What L{sure} found, until a frame is sent or given back.
        self._sure: bool | None = None

    def sent(self, size: int, left: int) -> None:
        """
        A DATA frame of C{size} bytes went out, leaving C{left} bytes of
        the window.
        """
        if self._mixed:
            return
        if len(self._outstanding) >= self._limit:
            self._giveUp()
            return
        self._outstanding.append((size, left))
        self._sure = None

    def updated(self, increment: int) -> None:
        """
        The client gave back C{increment} bytes of the window.
        """
        if self._mixed or not self._outstanding:
            return
        sent = self._outstanding[0]
        if increment != sent[0]:
            self._giveUp()
            return
        self._outstanding.popleft()
        self.perFrame = True
        self._sure = None
        evidence = self._evidence
        if any(size <= sent[0] and left >= sent[1] for size, left in evidence):
            return
        evidence[:] = [e for e in evidence if not (sent[0] <= e[0] and sent[1] >= e[1])]
        if len(evidence) < _GIVE_BACK_EVIDENCE:
            evidence.append(sent)

    def _giveUp(self) -> None:
        self._mixed = True
        self.perFrame = False
        self._outstanding.clear()
        self._evidence.clear()

    def sure(self) -> bool:
        """
        Whether the client, giving back every frame, is sure to give back
        some of the window: a frame outstanding is like one it gave back
        alone (no smaller, sent with no more of the window left).
        """
        if not self.perFrame:
            return False
        if self._sure is None:
            evidence = self._evidence
            self._sure = any(
                size <= sentSize and left >= sentLeft
                for sentSize, sentLeft in self._outstanding
                for size, left in evidence
            )
        return self._sure


class _OutputQueue(deque):  # type: ignore[type-arg]
    """
    One HTTP/2 stream's output waiting to be sent (the sending loop takes
    its frames from it): its bytes are counted in C{size}, and into its
    connection's C{_queued}.
    """

    size = 0

    def __init__(self, connection: "NetsuiteH2Connection") -> None:
        deque.__init__(self)
        self._connection = connection

    def append(self, chunk: Any) -> None:
        if chunk is not _END_STREAM_SENTINEL:
            self.size += len(chunk)
            self._connection._queued += len(chunk)
        deque.append(self, chunk)

    def appendleft(self, chunk: Any) -> None:
        if chunk is not _END_STREAM_SENTINEL:
            self.size += len(chunk)
            self._connection._queued += len(chunk)
        deque.appendleft(self, chunk)

    def popleft(self) -> Any:
        chunk = deque.popleft(self)
        if chunk is not _END_STREAM_SENTINEL:
            self.size -= len(chunk)
            self._connection._queued -= len(chunk)
        return chunk

    def clear(self) -> None:
        self._connection._queued -= self.size
        self.size = 0
        deque.clear(self)


class NetsuiteH2Connection(H2Connection):  # type: ignore[misc, valid-type]
    """
    An HTTP/2 connection with the site's request limits, that reads
    nothing more once it is closing.

    Twisted's connection closes after a protocol error (or the peer's
    GOAWAY) with C{loseConnection}, which over TLS waits for the peer's
    close_notify and goes on reading: every frame still arriving went into
    h2's buffer (a CONTINUATION flood grew memory by the byte sent).  Here
    any input after that aborts the connection, and a peer that neither
    sends nor closes is aborted after L{abortTimeout} seconds.

    A request over the site's L{Limits} gets the answer HTTP/1 gets, on its
    own stream: too many or too large header lines (431), a C{:path} over
    the request line's limit (414), a body over the limit, declared or
    received (413).  If the client is still sending that request, its
    stream is then reset with C{NO_ERROR} (RFC 9113, 8.1); the connection's
    other streams go on.

    A stream whose flow-control window is empty is parked: Twisted's
    sending loop sees it no more until a C{WINDOW_UPDATE} or C{SETTINGS}
    frame opens the window (see L{_FlowAwarePriority}).  So is one whose
    window would cut a DATA frame under L{H2_CONTROL_FRAME_BYTES} while a
    client that gives back every frame is sure to give back more (see
    L{_waitForGiveBack}), until its window or the connection's changes;
    and a file's chunk ends in no such frame (L{holdTails}).

    A request head has the deadline it has over HTTP/1 (C{headerTimeout}):
    from the first byte of a head (the connection preface, a frame header,
    any frame but DATA) to the end of its header block.  Past
    it the connection is closed with a GOAWAY (C{NO_ERROR}: the request was
    not processed, and may be sent again).  Every frame used to restart the
    idle timeout, so a client sending a byte a minute held a connection for
    days.  A connection with no stream open (no request being received or
    answered) is idle whatever control frames (PING, SETTINGS,
    WINDOW_UPDATE, PRIORITY) the client sends: they restart the idle
    timeout only while a stream is open.  A GOAWAY (head deadline, idle
    timeout, protocol error) is followed by the close at once: the
    connection stops being the transport's producer first, without which
    TLS sends no close_notify.

    Control frames (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, unknown
    types) come out of a budget (L{H2_CONTROL_BURST}, L{H2_CONTROL_RATE},
    earned back by requests and by the size of DATA frames sent): past
    it, or at a SETTINGS frame of more than L{H2_MAX_SETTINGS} settings,
    the connection ends with a GOAWAY (C{ENHANCE_YOUR_CALM}) at that
    frame.

    The client's PRIORITY information is ignored (RFC 9113, 5.3.1): streams
    are sent in turn.  Twisted put every stream a PRIORITY frame named in
    its priority tree, whose 1000 places a client could fill.

    A client that does not take its answers gets no more of its requests
    processed while more than L{_H2_QUEUE_LIMIT} bytes of answers wait for
    it: the requests it has sent wait, and are processed in order once it
    reads (as over HTTP/1, where a client that does not read gets no more
    answered).  Without it, 100 streams' answers were held in memory.

    A CONNECT request (RFC 9113, 8.5) gets a 400 on its stream, as HTTP/1's
    authority-form target does.

    The sending loop is Twisted's, made to cost time in proportion to what
    it sends: up to L{H2_TURN_BYTES} of frames go out in one reactor turn,
    as one write (Twisted sent one frame a turn, each its own TLS write);
    the rest of a chunk larger than a frame is not copied for each frame;
    a stream's queued bytes are counted as they come and go, not summed
    for every frame and every write.
    """

    site: "NetsuiteSite"
    abortTimeout = 10
    resetBurst = H2_RESET_BURST
    resetRate = H2_RESET_RATE
    controlBurst = H2_CONTROL_BURST
    controlRate = H2_CONTROL_RATE
    _aborted = False
    #: Request bodies in temporary files for this connection (see
    #: L{H2_BODY_FILES}).
    bodyFiles = 0
    #: Checks for request bodies that stopped coming.
    _bodyCall: IDelayedCall | None = None
    #: When the head being received began (L{None}: none is).
    _headSince: float | None = None
    _headCall: IDelayedCall | None = None
    #: Request heads received (complete header blocks).
    _heads = 0
    #: Whether the connection stopped being its transport's producer.
    _unregistered = False
    #: Bytes queued in the streams' output queues (see L{_OutputQueue}).
    _queued = 0
    #: Whether a GOAWAY went out for a stop, or came from the client, the
    #: open streams still to end.
    _draining = False
    #: Streams above this one are refused while draining.
    _drainAbove = 0
    #: Whether the client's GOAWAY started the draining (netsuite's own
    #: GOAWAY is still to be sent, at the end).
    _clientWentAway = False
    _releasing = False

    def __init__(self, site: "NetsuiteSite") -> None:
        H2Connection.__init__(self, site.reactor)
        # Its timers run on the site's reactor, not the global one, also
        # when it is made outside the site's protocol switch.
        self.callLater = site.reactor.callLater
        #: Body bytes received so far, by stream.
        self._received: dict[int, int] = {}
        #: Streams whose request body is coming, and when it last came.
        self._bodySince: dict[int, float] = {}
        self._emptyData = TokenBucket(H2_EMPTY_DATA_RATE, H2_EMPTY_DATA_BURST, site.reactor)
        self._resets = TokenBucket(self.resetRate, self.resetBurst, site.reactor)
        self._controls = TokenBucket(self.controlRate, self.controlBurst, site.reactor)
        #: Control frames earned by DATA frames sent, not yet spent (see
        #: L{H2_CONTROL_DATA_CREDIT}).
        self._dataCredit = 0.0
        #: Streams blocked because their flow-control window is empty.
        self._parked: set[int] = set()
        #: Streams whose next DATA frame waits for the client to give back
        #: more of their own window (see L{_waitForGiveBack}), woken only
        #: when it changes; one waiting for the connection's is woken by
        #: its update, as every stream is.
        self._shortWindows: set[int] = set()
        #: How the client gives back each stream's window, and the
        #: connection's.
        self._streamGiveBacks: dict[int, _GiveBacks] = {}
        self._connectionGiveBacks = _GiveBacks(_GIVE_BACK_CONNECTION_FRAMES)
        #: Streams whose producer writes more as soon as what it wrote is
        #: sent (L{holdTails}), and those of them whose queue is down to a
        #: tail that waits for it.
        self._readsAhead: set[int] = set()
        self._tails: set[int] = set()
        self.priority = _FlowAwarePriority(self.priority, self)
        #: Deferreds waiting for a stream's queue to be sent, by stream.
        self._sentWaiters: dict[int, list[Deferred[None]]] = {}
        #: Streams whose complete request waits to be processed until the
        #: output queued goes under L{_H2_QUEUE_LIMIT}, in order (the
        #: values are unused).
        self._held: dict[int, None] = {}
        self._receiveFrames = self.conn.receive_data
        self.conn.receive_data = self._receive
        # A malformed request head is refused on its stream by _checkHead
        # (h2 ended the connection), with the checks h2 would have made.
        self.conn.config.validate_inbound_headers = False
        # Cookie crumbs are joined after the checks (h2 joined them first,
        # which moved them after the pseudo-headers).
        self.conn.config.normalize_inbound_headers = False
        self._beginStream = self.conn._begin_new_stream
        self.conn._begin_new_stream = self._beginNewStream
        # h2's private table of what handles each kind of frame.
        dispatch = self.conn._frame_dispatch_table
        self._receiveGoAwayFrame = dispatch[GoAwayFrame]
        dispatch[GoAwayFrame] = self._clientGoAway
        self._receiveDataFrame = dispatch[DataFrame]
        dispatch[DataFrame] = self._dataFrame
        self._receivePriorityFrame = dispatch[PriorityFrame]
        dispatch[PriorityFrame] = self._priorityFrame
        self._receiveWindowUpdateFrame = dispatch[WindowUpdateFrame]
        dispatch[WindowUpdateFrame] = self._windowUpdateFrame
        self.conn.incoming_buffer = _FrameBuffer(server=True)
        for kind in (SettingsFrame, PingFrame, WindowUpdateFrame, PriorityFrame, AltSvcFrame, ExtensionFrame):
            dispatch[kind] = self._budgeted(dispatch[kind])
        self._receiveHeadersFrame = dispatch[HeadersFrame]
        dispatch[HeadersFrame] = self._headersFrame
        self._receiveSettingsFrame = dispatch[SettingsFrame]
        dispatch[SettingsFrame] = self._settingsFrame
        # h2's private record of who closed a stream (None: not known).
        self._closedBy = getattr(self.conn, "_stream_closed_by", lambda streamID: None)

    def _beginNewStream(self, *args: Any, **kwargs: Any) -> Any:
        """
        h2's new stream, whose reading of a request's C{content-length}
        (before any other check of its head) no longer ends the connection:
        a value h2 cannot read is left to L{_checkHead}.  Trailers no longer
        make h2 forget the declared length (see L{_checkTrailers}), and
        h2's finding them malformed raises L{_BadTrailers} (for
        L{_headersFrame}), not a connection error.
        """
        stream = self._beginStream(*args, **kwargs)
        initialize = stream._initialize_content_length
        receiveHeaders = stream.receive_headers
        headRead = False
        opened = False

        def receiveHeadersOrTrailers(headers: list[tuple[bytes, bytes]], *rest: Any) -> tuple[list, list]:
            nonlocal opened
            if is_informational_response(headers):
                # h2 would take it for an interim answer, and raise before
                # it looks at the stream's state; any :status in a request
                # head or its trailers is refused by _checkHead or
                # _checkTrailers, whatever its value.
                headers = [(name, b"200" if name == b":status" else value) for name, value in headers]
            if not opened:
                received = receiveHeaders(headers, *rest)
                opened = True
                return received  # type: ignore[no-any-return]
            state = stream.state_machine.state
            try:
                return receiveHeaders(headers, *rest)  # type: ignore[no-any-return]
            except h2.exceptions.StreamClosedError:
                raise  # h2's own: the stream is closed (or was reset)
            except h2.exceptions.ProtocolError as malformed:
                # h2 marks the stream closed for trailers after trailers
                # (in the read of the first, before the refusal): it stays
                # open, for the refusal to be sent.
                stream.state_machine.state = state
                raise _BadTrailers(f"malformed trailers: {malformed}") from None

        def initializeContentLength(headers: list[tuple[bytes, bytes]]) -> None:
            nonlocal headRead
            if headRead:
                return  # trailers
            headRead = True
            try:
                initialize(headers)
            except h2.exceptions.ProtocolError:
                try:
                    stream._expected_content_length = _declaredLength(headers)
                except ValueError:
                    stream._expected_content_length = None  # refused

        stream._initialize_content_length = initializeContentLength
        stream.receive_headers = receiveHeadersOrTrailers
        return stream

    def _takeControl(self) -> bool:
        """
        Take one control frame from what DATA frames sent earned, else from
        the connection's budget; say whether there was one.
        """
        if self._dataCredit >= 1:
            self._dataCredit -= 1
            return True
        return self._controls.take()

    def _budgeted(self, receive: Callable[[Any], tuple[list, list]]) -> Callable[[Any], tuple[list, list]]:
        """
        h2's handler C{receive} of a kind of control frame, taking each
        frame from the connection's budget (L{H2_CONTROL_BURST}) first: a
        client past it, or sending a SETTINGS frame of more than
        L{H2_MAX_SETTINGS} settings, stops h2 at that frame (the rest of the
        read is not looked at) with L{_Flood}.
        """

        def budgeted(frame: Any) -> tuple[list, list]:
            if not self._takeControl():
                raise _Flood(b"too many control frames")
            if isinstance(frame, SettingsFrame) and frame.body_len > 6 * H2_MAX_SETTINGS:
                raise _Flood(b"too many settings in one frame")
            return receive(frame)

        return budgeted

    def _headersFrame(self, frame: Any) -> tuple[list, list]:
        """
        Take a HEADERS frame (with h2): one that opens a request earns the
        budget its request brings (L{H2_CONTROL_PER_REQUEST}) as it is
        read, before the control frames after it in the same read are
        charged.  Malformed trailers are refused on their stream, a stream
        made to depend on itself is reset (C{PROTOCOL_ERROR}), and so is a
        stream past the concurrent streams allowed (C{REFUSED_STREAM}: the
        client may send it again, RFC 9113 5.1.2), as nginx refuses it.
        h2 made each a connection error, the last before it decoded the
        header block.  Late HEADERS on a stream reset here, which h2 has
        forgotten, are ignored.  A frame of a stream reset so, and a late
        one, comes out of the budget for control frames instead.
        """
        streamID = frame.stream_id
        conn = self.conn
        if (
            streamID % 2
            and streamID not in conn.streams
            and streamID <= conn.highest_inbound_stream_id
            and self._closedBy(streamID) is StreamClosedBy.SEND_RST_STREAM
        ):
            # Late HEADERS (trailers) on a stream reset here, which h2 has
            # forgotten: ignored (RFC 9113, 5.1), its block decoded (the
            # HPACK state stays whole).  h2 took it for a new stream, and
            # with the concurrent streams at the limit (as they are when a
            # stream is refused) ended the connection.
            if not self._takeControl():
                raise _Flood(b"too many control frames")
            _decode_headers(conn.decoder, frame.data)
            return [], []
        overLimit = (
            streamID not in conn.streams
            and streamID % 2
            and streamID > conn.highest_inbound_stream_id
            and conn.open_inbound_streams >= conn.local_settings.max_concurrent_streams
        )
        if overLimit:
            # Opened here, past h2's check, for h2 to decode its block.
            conn._get_or_create_stream(streamID, AllowedStreamIDs.ODD)
        selfDependent = "PRIORITY" in frame.flags and frame.depends_on == streamID
        if selfDependent:
            frame.flags.discard("PRIORITY")  # h2 would end the connection
        try:
            frames, events = self._receiveHeadersFrame(frame)
        except _BadTrailers as bad:
            return [], [_Malformed(streamID, 0, bad.args[0])]
        if selfDependent or overLimit:
            if not self._takeControl():
                raise _Flood(b"too many control frames")
            kept = [event for event in events if getattr(event, "stream_id", None) != streamID]
            if selfDependent:
                refusal = _Malformed(streamID, 0, _SELF_DEPENDENT, reset=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            else:
                refusal = _Malformed(streamID, 0, _TOO_MANY_STREAMS, reset=h2.errors.ErrorCodes.REFUSED_STREAM)
            return frames, kept + [refusal]
        if any(isinstance(event, h2.events.RequestReceived) for event in events):
            self._controls.give(H2_CONTROL_PER_REQUEST)
        for event in events:
            if isinstance(event, h2.events.TrailersReceived):
                problem = self._checkTrailers(event)
                if problem is not None:
                    # In place of the end of the stream (trailers end it).
                    ends = (h2.events.TrailersReceived, h2.events.StreamEnded)
                    kept = [e for e in events if not isinstance(e, ends)]
                    return frames, kept + [_Malformed(event.stream_id, 0, problem)]
        return frames, events

    def _checkTrailers(self, event: Any) -> str | None:
        """
        Check a request's trailers (h2 checked them, but made a problem
        the connection's; Twisted drops them): they must be well formed,
        and the body they end as long as its C{content-length} says (h2
        checks a declared length against DATA frames that end a stream
        only).

        @return: why the request is malformed, or L{None}.
        """
        try:
            _validate(event.headers, _TRAILERS)
        except h2.exceptions.ProtocolError as malformed:
            return f"malformed trailers: {malformed}"
        stream = self.conn.streams.get(event.stream_id)
        expected = getattr(stream, "_expected_content_length", None)
        received = getattr(stream, "_actual_content_length", None)
        if expected is not None and received is not None and received != expected:
            return f"request body of {received} bytes, content-length {expected}"
        return None

    def _priorityFrame(self, frame: Any) -> tuple[list, list]:
        """
        Take a PRIORITY frame (with h2, budgeted): one that makes its
        stream depend on itself gets that stream reset, where h2 ended the
        connection.
        """
        if frame.depends_on == frame.stream_id:
            return [], [
                _Malformed(frame.stream_id, 0, _SELF_DEPENDENT, reset=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            ]
        return self._receivePriorityFrame(frame)  # type: ignore[no-any-return]

    def _windowUpdateFrame(self, frame: Any) -> tuple[list, list]:
        """
        Take a WINDOW_UPDATE frame (with h2, budgeted): one that adds 0 to
        a stream's window (only L{_FrameBuffer} makes those) gets that
        stream reset, where hyperframe ended the connection.
        """
        if not frame.window_increment:
            return [], [_Malformed(frame.stream_id, 0, _ZERO_INCREMENT, reset=h2.errors.ErrorCodes.PROTOCOL_ERROR)]
        result = self._receiveWindowUpdateFrame(frame)
        giveBacks = self._streamGiveBacks.get(frame.stream_id) if frame.stream_id else self._connectionGiveBacks
        if giveBacks is not None:
            giveBacks.updated(frame.window_increment)
        return result  # type: ignore[no-any-return]

    def _settingsFrame(self, frame: Any) -> tuple[list, list]:
        """
        Take a SETTINGS frame (with h2, budgeted), reading a header table
        size over L{H2_ENCODER_TABLE} as that: h2 sizes the table it
        compresses answers against by it.
        """
        table = frame.settings.get(SettingsFrame.HEADER_TABLE_SIZE)
        if table is not None and table > H2_ENCODER_TABLE:
            frame.settings[SettingsFrame.HEADER_TABLE_SIZE] = H2_ENCODER_TABLE
        return self._receiveSettingsFrame(frame)  # type: ignore[no-any-return]

    def _dataFrame(self, frame: Any) -> tuple[list, list]:
        """
        Take a DATA frame (in place of h2), ignoring one on a stream
        netsuite reset, as RFC 9113 (5.1) wants: the client may have sent
        it before the RST_STREAM reached it.  It still counts in the
        connection's flow control, whose window h2 gives back.  h2 answered
        each with a RST_STREAM (C{STREAM_CLOSED}): an upload over the body
        limit still on its way got one per frame after its 413 and reset.
        """
        resetHere = self._closedBy(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM
        try:
            frames, events = self._receiveDataFrame(frame)
        except h2.exceptions.InvalidBodyLengthError as wrong:
            # A stream error (RFC 9113, 8.1.1), which h2 made the
            # connection's: refused on its stream, in its turn.
            expected, actual = wrong.expected_length, wrong.actual_length
            stream = self.conn.streams.get(frame.stream_id)
            if "END_STREAM" in frame.flags and stream is not None:
                # The client has ended its request (h2 raised before it
                # took the end): the refusal closes the stream, with no
                # reset after it.
                stream.state_machine.process_input(StreamInputs.RECV_END_STREAM)
            if actual > expected:
                message = f"request body longer than its content-length of {expected}"
            else:
                message = f"request body of {actual} bytes, content-length {expected}"
            return [], [_Malformed(frame.stream_id, frame.flow_controlled_length, message)]
        if resetHere:
            frames = [f for f in frames if not isinstance(f, RstStreamFrame)]
        return frames, events

    def _clientGoAway(self, frame: Any) -> tuple[list, list]:
        """
        Take the client's GOAWAY (in place of h2).  h2 closes at once and
        sends nothing more, dropping the streams the client opened, though
        RFC 9113 (6.8) lets them finish and clients count on it (Node's
        HTTP/2 C{session.close()} sends a GOAWAY, then waits for its
        streams).  One without an error, while streams are open: they are
        answered, streams opened after it refused, and once the last has
        ended the connection closes with netsuite's own GOAWAY.  Any other
        goes to h2, as before.
        """
        if frame.error_code or not self.conn.open_inbound_streams or self.transport.disconnecting:
            return self._receiveGoAwayFrame(frame)  # type: ignore[no-any-return]
        if not self._draining:
            self._draining = True
            self._clientWentAway = True
            self._drainAbove = self.conn.highest_inbound_stream_id
        return [], []

    def _receive(self, data: bytes) -> list:
        """
        h2's events for C{data}, up to a client's GOAWAY that h2 took (see
        L{_clientGoAway}): once h2 has read it, it sends nothing more (it
        is closed), so the requests that came with it cannot be answered,
        and are not processed.  Twisted then ends the connection, and the
        streams already open with it.  Control frames past the budget end
        it here (see L{_budgeted}), with none of the read's events.
        """
        try:
            events = self._receiveFrames(data)
        except _Flood as flood:
            self.site.stats.count("h2_control_floods")
            self._goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, flood.args[0])
            return []
        except h2.exceptions.ProtocolError:
            # h2's GOAWAY goes first; Twisted's close then finds the
            # connection closed.
            self.transport.write(self.conn.data_to_send())
            self._closeWithoutReading()
            raise
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return [event]
        return events

    def dataReceived(self, data: bytes) -> None:
        transport = self.transport
        if transport.disconnecting:
            if not self._aborted:
                self._aborted = True
                transport.abortConnection()
            return
        heads = self._heads
        streams = len(self.streams)
        initialWindow = self.conn.remote_settings.initial_window_size
        H2Connection.dataReceived(self, data)
        if transport.disconnecting:  # Twisted closed: a protocol error, a GOAWAY
            self._closing()
            return
        if self._clientWentAway and not self.streams:
            self._goAway(h2.errors.ErrorCodes.NO_ERROR)  # nothing left to answer
            return
        if self.conn.remote_settings.initial_window_size > initialWindow:
            # Every stream's window grew (Twisted does nothing for SETTINGS):
            # a producer paused on an empty window goes on.
            self._wake(list(self.streams))
        self._timeHead(self._heads != heads)
        if streams or self._heads != heads:
            # A request came, or the last stream was reset: Twisted's
            # restart came before the frames were handled.
            H2Connection.resetTimeout(self)
        if self._parked:
            self._wake(list(self._parked))

    def resetTimeout(self) -> None:
        """
        Restart the idle timeout, which Twisted does for every frame
        received or sent: only while a stream is open or a head is being
        received (it has its own deadline).
        """
        if self.streams or self._headPending():
            H2Connection.resetTimeout(self)

    def _headPending(self) -> bool:
        """
        Whether the client is in the middle of a request head: what h2's
        frame buffer holds (its private state) is part of the connection
        preface, of a frame header, of any frame but DATA (a body may be
        slow; control frames are as small as heads), or a header block not
        ended.
        """
        buffer = self.conn.incoming_buffer
        if buffer._preamble_len or buffer._headers_buffer:
            return True
        data = buffer._data
        return 0 < len(data) < 9 or (len(data) >= 9 and data[3] != _DATA_FRAME)

    def _timeHead(self, progressed: bool) -> None:
        """
        After a read: start timing a head that began, stop when none is
        pending; a head completed in the read starts the clock again.
        """
        if not self._headPending():
            self._headSince = None
            return
        if self._headSince is None or progressed:
            self._headSince = self.site.reactor.seconds()
        if self._headCall is None:
            self._headCall = self.callLater(self.site.limits.headerTimeout, self._checkHeadDeadline)

    def _checkHeadDeadline(self) -> None:
        self._headCall = None
        if self._headSince is None or self.transport.disconnecting:
            return
        left = self._headSince + self.site.limits.headerTimeout - self.site.reactor.seconds()
        if left > 0:
            self._headCall = self.callLater(left, self._checkHeadDeadline)
            return
        self.site.stats.count("header_timeouts")
        self._goAway(h2.errors.ErrorCodes.NO_ERROR, b"request headers not received in time")

    def inputEnded(self) -> None:
        """
        The client ended its input (a TCP half-close; over TLS its
        close_notify): its streams cannot go on, for their flow control
        needs its frames.  The connection closes once what is written is
        sent, as any close here (TLS sends its close_notify; a client that
        takes nothing is aborted after L{abortTimeout}).  It stayed open,
        over TLS without the server's close_notify.
        """
        if self.transport.disconnecting:
            return
        self.setTimeout(None)
        self.transport.loseConnection()
        self._closing()

    def closeGracefully(self) -> None:
        """
        The service is stopping: a GOAWAY (C{NO_ERROR}) now; the streams
        already open are answered, and the connection closes after the
        last.
        """
        if self.transport.disconnecting or self._draining:
            return
        if not self.streams:
            self._goAway(h2.errors.ErrorCodes.NO_ERROR)
            return
        self._draining = True
        self._drainAbove = self.conn.highest_inbound_stream_id
        # Written past h2, which would answer nothing more once it sent one.
        goAway = GoAwayFrame(0, last_stream_id=self._drainAbove, error_code=0)
        self.transport.write(self.conn.data_to_send() + goAway.serialize())

    def timeoutConnection(self) -> None:
        """
        The idle timeout: a GOAWAY with C{NO_ERROR}, as every timeout here
        and nginx's (Twisted sent C{PROTOCOL_ERROR} while a stream was
        open, a client that shut its windows and sent nothing for a minute
        say, which is no error of the protocol).
        """
        self._log.info("Timing out client {client}", client=self.transport.getPeer())
        self._goAway(h2.errors.ErrorCodes.NO_ERROR)

    def timeOutIfDue(self, stalledFor: float) -> None:
        """
        One of the connection's files was reset by its stall timeout, after
        C{stalledFor} seconds, and the requests waiting for a file are
        about to start (the static folder asks): time the connection out
        now if nothing was received or sent since the file stalled and its
        idle timeout is due, both within L{H2_IDLE_SLACK} seconds.  A
        client that shut its windows and then sent nothing has its stalled
        files reset by their stall timeout as its idle timeout comes, both
        a minute, a few milliseconds apart: the waiting requests were each
        given a file and sent their headers, and the GOAWAY followed.  A
        file that ended otherwise, or a connection that was busy meanwhile
        (its idle timeout shorter than the stall), lets them start: asked
        at every file's end, an idle timeout of 1 s or less was always due
        within the second, and the connection ended with its requests.
        """
        call = getattr(self, "_TimeoutMixin__timeoutCall", None)  # Twisted's, private
        if call is None or not call.active() or self.transport.disconnecting:
            return
        left = call.getTime() - self.site.reactor.seconds()
        quietFor = self.timeOut - left
        if left <= H2_IDLE_SLACK and quietFor >= stalledFor - H2_IDLE_SLACK:
            self.timeoutConnection()

    def _goAway(self, errorCode: int, message: bytes = b"") -> None:
        """
        Send a GOAWAY with C{errorCode} and close the connection, unless it
        is closing already (one GOAWAY, one abort timer).
        """
        if self.transport.disconnecting:
            return
        self.setTimeout(None)
        self.conn.close_connection(error_code=errorCode, additional_data=message or None)
        self.transport.write(self.conn.data_to_send())
        if errorCode != h2.errors.ErrorCodes.NO_ERROR:
            self._closeWithoutReading()
        else:
            self.transport.loseConnection()
            self._closing()

    def _closeWithoutReading(self) -> None:
        """
        Close for the client's error or flood, its GOAWAY written: nothing
        it sends after is read, and the connection ends
        L{H2_HOSTILE_GRACE} seconds later (see
        L{netsuite.listen._TrackedProtocol.closeWithoutReading}).  The
        listener's lingering close read it on and dropped it for the 10 s
        of the abort timer (5.9 GB of PINGs over h2c); aborting the
        connection at the client's next bytes lost the GOAWAY to a client
        that kept sending.
        """
        self._closing()  # over TLS, the close_notify waits for that
        closeWithoutReading = getattr(self.transport, "closeWithoutReading", None)
        if closeWithoutReading is None:
            self.transport.loseConnection()
        else:
            closeWithoutReading(H2_HOSTILE_GRACE)

    def _closing(self) -> None:
        """
        The transport is closing: stop being its producer, so that TLS
        sends its close_notify once the output is written (it waits while
        a producer is registered), and abort the connection if the client
        neither reads nor closes within L{abortTimeout} seconds.
        """
        if not self._unregistered:
            self._unregistered = True
            self.transport.unregisterProducer()
        if self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def forceAbortClient(self) -> None:
        """
        The client neither closed nor went on sending for L{abortTimeout}
        seconds after the GOAWAY: aborted, counted as C{client_timeouts}
        (as HTTP/1's closing timer counts it).
        """
        if self._aborted:  # cut off already, for going on sending
            self._abortingCall = None  # called: not to be cancelled
            return
        self._aborted = True
        self.site.stats.count("client_timeouts")
        H2Connection.forceAbortClient(self)

    def connectionLost(self, reason: Failure, _cancelTimeouts: bool = True) -> None:
        for call in (self._headCall, self._bodyCall):
            if call is not None and call.active():
                call.cancel()
        self._headCall = self._bodyCall = None
        if self._sendStall is not None:
            self._sendStall.cancel()
        for streamID in list(self._bodySince):
            self._bodyCutShort(streamID)
        H2Connection.connectionLost(self, reason, _cancelTimeouts)

    def _bodyCutShort(self, streamID: int) -> None:
        """
        Stream C{streamID} is reset or lost while its request body still
        comes: logged (and counted) 400, as HTTP/1 logs a client gone in
        the middle of its body, and nginx; it was in no log.
        """
        if self._bodySince.pop(streamID, None) is None:
            return
        stream = self.streams.get(streamID)
        request = getattr(stream, "_request", None)
        if request is None or request.site is not None or request.startedWriting:
            return  # being answered already: it logs itself
        self._logRefusal(stream, 400, 0, [])

    def _waitForBody(self, streamID: int) -> None:
        """
        Time the request body of stream C{streamID}: one that stops coming
        for the idle timeout gets a 408 (nginx's C{client_body_timeout}).
        The connection's own idle timeout did not end it: any frame (a
        PING) kept the connection, and the stream, alive.
        """
        self._bodySince[streamID] = self.site.reactor.seconds()
        if self._bodyCall is None:
            self._bodyCall = self.callLater(self.site.limits.idleTimeout, self._checkBodies)

    def _checkBodies(self) -> None:
        self._bodyCall = None
        if self.transport.disconnecting:
            return
        now = self.site.reactor.seconds()
        idle = self.site.limits.idleTimeout
        for streamID, since in list(self._bodySince.items()):
            if now - since < idle or self._bodySince.pop(streamID, None) is None:
                continue
            self.site.stats.count("body_timeouts")
            stream = self.streams.get(streamID)
            if stream is not None and getattr(stream._request, "startedWriting", False):
                self.abortRequest(streamID)  # answered already: the rest is not waited for
            else:
                self._refuseStream(streamID, 408, f"the request body stopped coming for {idle:g} seconds")
        if self._bodySince:
            soonest = min(self._bodySince.values()) + idle
            self._bodyCall = self.callLater(max(soonest - now, 0.01), self._checkBodies)

    def whenSent(self, streamID: int) -> Deferred[None]:
        """
        Wait until the connection has sent everything stream C{streamID}
        has queued (or the stream is gone), but for a tail held for what
        the stream writes next (L{holdTails}).

        @return: a L{Deferred} that fires with L{None} then.
        """
        sent: Deferred[None] = Deferred()
        if self._outboundStreamQueues.get(streamID) and streamID not in self._tails:
            self._sentWaiters.setdefault(streamID, []).append(sent)
        else:
            sent.callback(None)
        return sent

    def holdTails(self, streamID: int) -> None:
        """
        Say that stream C{streamID}'s producer writes more as soon as what
        it wrote is sent (L{whenSent}): then what is left of what it
        wrote, once under L{H2_CONTROL_FRAME_BYTES} and less than the
        window takes, waits for what it writes next, and goes with it,
        rather than in a frame of its own (until the stream ends).  A file
        read in chunks ended each in a sliver, sent alone and given back
        alone, and the windows a client gave back every frame were cut
        into smaller and smaller frames.
        """
        self._readsAhead.add(streamID)

    def _fireSent(self, streamID: int) -> None:
        for sent in self._sentWaiters.pop(streamID, ()):
            sent.callback(None)

    def _sendPrioritisedData(self, *args: Any) -> None:
        """
        The sending loop (Twisted's, batched): send frames from the streams
        in turn until L{H2_TURN_BYTES} are sent, every stream has nothing
        it can send, or the transport is full; then go on in the next
        reactor turn, when a stream has data again, or when the transport
        takes data again.
        """
        if not self._stillProducing:
            return
        conn = self.conn
        queues = self._outboundStreamQueues
        sent = 0
        earning = 0  # bytes sent in DATA frames, each counted up to a full frame
        again: Callable[[], object] | None = None
        while True:
            if self._consumerBlocked is not None:
                self._consumerBlocked.addCallback(self._sendPrioritisedData)
                break
            if sent >= H2_TURN_BYTES:
                again = self._sendPrioritisedData
                break
            try:
                streamID = next(self.priority)
            except DeadlockError:
                assert self._sendingDeferred is None
                self._sendingDeferred = Deferred()
                self._sendingDeferred.addCallback(self._sendPrioritisedData)
                break
            queue = queues[streamID]
            self._shortWindows.discard(streamID)
            self._tails.discard(streamID)
            if not queue:  # unblocked with nothing queued
                self.priority.block(streamID)
                continue
            size = min(conn.max_outbound_frame_size, conn.local_flow_control_window(streamID))
            if size < H2_CONTROL_FRAME_BYTES and queue.size > size and self._waitForGiveBack(streamID):
                self.priority.block(streamID)
                if conn.streams[streamID].outbound_flow_control_window < H2_CONTROL_FRAME_BYTES:
                    self._shortWindows.add(streamID)
                continue
            if (
                0 < queue.size < min(size, H2_CONTROL_FRAME_BYTES)
                and streamID in self._readsAhead
                and queue[-1] is not _END_STREAM_SENTINEL
            ):
                # A tail, which waits for what the producer writes next.
                self.priority.block(streamID)
                self._tails.add(streamID)
                self._fireSent(streamID)
                continue
            if queue.size > size:
                window = conn.streams[streamID].outbound_flow_control_window
                if size < window < size + H2_CONTROL_FRAME_BYTES and window >= 2 * H2_CONTROL_FRAME_BYTES:
                    # Cut by the connection's window (or the frame size),
                    # the frame would leave its stream's window a sliver,
                    # a frame as small next: it leaves the stream a frame
                    # worth its give-back instead.
                    size = window - H2_CONTROL_FRAME_BYTES
            chunk = queue.popleft()
            if chunk is _END_STREAM_SENTINEL:
                conn.end_stream(streamID)
                # Written before the stream is done with, which may close
                # the connection (a graceful stop's last stream).
                self.transport.write(conn.data_to_send())
                sent += 1
                self._requestDone(streamID)
                continue
            if len(chunk) < size and queue and queue[0] is not _END_STREAM_SENTINEL:
                chunk = self._joinChunks(queue, chunk, size)
            if len(chunk) > size:
                queue.appendleft(chunk[size:])
                chunk = chunk[:size]
            if chunk:
                conn.send_data(streamID, chunk)
                sent += len(chunk)
                earning += min(len(chunk), H2_CONTROL_FRAME_BYTES)
                self._sentData(streamID, len(chunk))
            if not queue:
                self.priority.block(streamID)
            if self.remainingOutboundWindow(streamID) <= 0:
                self.streams[streamID].flowControlBlocked()
        if sent:
            self.resetTimeout()
            self._dataCredit = min(
                H2_CONTROL_DATA_CREDIT, self._dataCredit + earning * H2_CONTROL_PER_DATA_FRAME / H2_CONTROL_FRAME_BYTES
            )
        data = conn.data_to_send()
        if data:
            self.transport.write(data)
        if again is not None:
            self._reactor.callLater(0, again)
        if self._sentWaiters:
            queues = self._outboundStreamQueues
            for streamID in [s for s in self._sentWaiters if not queues.get(s)]:
                self._fireSent(streamID)
        if self._held:
            self._releaseHeld()

    def _sentData(self, streamID: int, size: int) -> None:
        """
        Note a DATA frame of C{size} bytes sent on stream C{streamID}, for
        L{_waitForGiveBack}.
        """
        conn = self.conn
        giveBacks = self._streamGiveBacks.get(streamID)
        if giveBacks is None:
            giveBacks = self._streamGiveBacks[streamID] = _GiveBacks(_GIVE_BACK_STREAM_FRAMES)
        giveBacks.sent(size, conn.streams[streamID].outbound_flow_control_window)
        self._connectionGiveBacks.sent(size, conn.outbound_flow_control_window)

    def _waitForGiveBack(self, streamID: int) -> bool:
        """
        Whether stream C{streamID}, whose window (its own or the
        connection's) would cut what it has queued into a DATA frame under
        L{H2_CONTROL_FRAME_BYTES}, is to wait for the client to give back
        more: only when the client gives back every frame on both windows
        (L{_GiveBacks}), and is sure to give back more of each window
        that is that small.  Otherwise the frame goes, however small.

        A client that gives back every frame pays two control frames for
        each, and a frame that small earns less than that: the windows it
        gave back were cut into smaller and smaller frames (streams sharing
        the connection's window, a window cutting a file's chunk), and it
        was cut off as a flood.
        """
        stream = self._streamGiveBacks.get(streamID)
        connection = self._connectionGiveBacks
        if stream is None or not (stream.perFrame and connection.perFrame):
            return False
        conn = self.conn
        least = H2_CONTROL_FRAME_BYTES
        if conn.streams[streamID].outbound_flow_control_window < least and not stream.sure():
            return False
        return conn.outbound_flow_control_window >= least or connection.sure()

    @staticmethod
    def _joinChunks(queue: _OutputQueue, chunk: Any, size: int) -> bytes:
        """
        C{chunk}, taken off C{queue}, with what follows it in the queue up
        to C{size} bytes in all (the end of the stream not passed): one
        frame where the window allows it.  Each chunk was sent in frames
        of its own, so a window cutting a chunk left a sliver of it for a
        frame alone, and a window given back a frame at a time was cut
        into ever smaller frames.
        """
        parts = [chunk]
        length = len(chunk)
        while length < size and queue and queue[0] is not _END_STREAM_SENTINEL:
            part = queue.popleft()
            room = size - length
            if len(part) > room:
                part = memoryview(part)
                queue.appendleft(part[room:])
                part = part[:room]
            parts.append(part)
            length += len(part)
        return b"".join(parts)

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        """
        Queue C{data} on stream C{streamID}; a chunk larger than a frame
        is queued as a C{memoryview}.  Twisted's sending loop cuts one
        frame at a time off the chunk it queued and queues the rest again:
        of bytes, that rest was copied for every frame, so sending an
        answer cost time in the square of its size (32 MiB written at
        once took 3.5 s where HTTP/1 took 0.4 s).  A view's rest is not a
        copy.
        """
        if len(data) > H2_MIN_CHUNK_SIZE:
            # Past the smallest frame a client may allow, not only past its
            # frame size: a small window cuts a chunk too.
            if type(data) is not bytes:
                # Taken now: a view would stop a bytearray from being resized.
                data = bytes(data)
            data = memoryview(data)  # type: ignore[assignment]
        if self._streamGone(streamID):
            # Queued for the reset to come to drop (the request counts it
            # as not sent); h2 raised on the window of a stream it forgot.
            self._outboundStreamQueues[streamID].append(data)
            return
        H2Connection.writeDataToStream(self, streamID, data)
        if not self._sendable(streamID):
            # Queued while the window is shut: Twisted leaves the stream
            # blocked, and must be told when the window opens.
            self._parked.add(streamID)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any, streamID: int) -> None:
        """
        Send the head of the answer on stream C{streamID}; nothing once
        the stream is gone (L{_streamGone}), the request then logged 499
        whether it finishes or is told of the reset to come.  h2 took a
        stream it had forgotten for a new one and raised
        C{StreamIDTooLowError}, where Twisted passes over only its
        C{StreamClosedError}: a critical error, and the request answered,
        logged and counted as a 500.
        """
        if not self._streamGone(streamID):
            H2Connection.writeHeaders(self, version, code, reason, headers, streamID)
            return
        request = getattr(self.streams.get(streamID), "_request", None)  # Twisted's, private
        if request is not None:
            request._headLost = True

    def _send100Continue(self, streamID: int) -> None:
        if not self._streamGone(streamID):  # h2 raised, out of dataReceived
            H2Connection._send100Continue(self, streamID)

    def _respondToBadRequestAndDisconnect(self, streamID: int) -> None:
        if not self._streamGone(streamID):  # its reset, to come, ends it
            H2Connection._respondToBadRequestAndDisconnect(self, streamID)

    def _handleWindowUpdate(self, event: Any) -> None:
        if event.stream_id:
            H2Connection._handleWindowUpdate(self, event)
            if event.stream_id in self._shortWindows:
                self._wake([event.stream_id])
        else:
            # The connection's window grew: every stream's may be open,
            # but for those waiting on their own window, looked at again
            # for nothing, unless that update made the client one that does
            # not give back every frame.  (Twisted's loop over the streams
            # broke when a producer it resumed ended its stream, a file
            # that shrank.)
            short = self._shortWindows if self._connectionGiveBacks.perFrame else ()
            self._wake([streamID for streamID in self.streams if streamID not in short])

    def refuseBody(self, streamID: int, status: int, message: str) -> None:
        """
        Refuse the request whose body stream C{streamID} is receiving: answer
        C{status} (a 503 with C{Retry-After}), logged, then reset the
        stream with C{NO_ERROR} (RFC 9113 8.1).  It was reset unanswered,
        and not logged.
        """
        extra = [(b"retry-after", b"1")] if status == 503 else []
        self._refuseStream(streamID, status, message, extra)

    def abortRequest(self, streamID: int) -> None:
        """
        Reset stream C{streamID} (its producer failed or stalled, its answer
        cut short) with C{INTERNAL_ERROR}, as nginx does: Twisted reset it
        with C{NO_ERROR}, which says the answer was complete (RFC 9113,
        8.1), and curl took a gzipped body cut short (it has no
        C{content-length}) for a whole one.  Once the connection is closed
        (a GOAWAY went out, the client not reading it) there is nothing to
        reset, and the stream is only forgotten (h2 raised, a traceback a
        stream).

        Either way its request is told it is lost, so that it is logged and
        counted as over HTTP/1, with the body bytes sent (not those still
        queued, which L{_requestDone} drops): Twisted forgot the stream
        untold, and such a request was in no log.

        A stream the client reset in the input being read (h2 closed it;
        Twisted hears of it next) is told it is lost at once, and not reset
        again: a WINDOW_UPDATE and an RST_STREAM in one read resumed a file
        that had shrunk, and h2's C{StreamClosedError} escaped through
        C{dataReceived}, a traceback, and the connection was lost.
        """
        if self.conn.state_machine.state != h2.connection.ConnectionState.CLOSED:
            try:
                self.conn.reset_stream(streamID, h2.errors.ErrorCodes.INTERNAL_ERROR)
            except h2.exceptions.StreamClosedError:
                pass  # its StreamReset, to come, finds it forgotten (_requestAborted)
            else:
                if not self._tryToWriteControlData():
                    return  # aborted: every stream is told
        stream = self.streams.get(streamID)
        if stream is not None:
            stream.connectionLost(Failure(ConnectionLost("the answer was cut short")))
            self._requestDone(streamID)

    def remainingOutboundWindow(self, streamID: int) -> int:
        """
        Room left in stream C{streamID}'s flow-control window once what it
        has queued is sent: none once the stream is gone (L{_streamGone}),
        so that no producer is resumed for it (h2 raised on the window of
        a stream it forgot, out of C{dataReceived}).
        """
        if self._streamGone(streamID):
            return 0
        queued: int = self._outboundStreamQueues[streamID].size
        return self.conn.local_flow_control_window(streamID) - queued  # type: ignore[no-any-return]

    def _streamGone(self, streamID: int) -> bool:
        """
        Whether h2 has closed stream C{streamID}, or forgotten it, though
        Twisted still has it: the client reset it in the input being read,
        and Twisted hears of the reset next (h2 reads all of a read before
        Twisted sees any of it, and forgets the closed streams as it counts
        the open ones, for a new stream's HEADERS or a GOAWAY).  Nothing
        may start or be sent on it: h2 raises C{StreamClosedError}, or,
        taking a stream it forgot for a new one, C{StreamIDTooLowError}.
        """
        state = self.conn.streams.get(streamID)
        return state is None or state.closed  # type: ignore[no-any-return]

    def _sendable(self, streamID: int) -> bool:
        """
        Whether the sending loop can send what stream C{streamID} has
        queued first: the end of the stream, or data with room in the
        flow-control window; not if the stream is gone (L{_streamGone}).
        """
        queue = self._outboundStreamQueues.get(streamID)
        if not queue:
            return True
        if self._streamGone(streamID):
            return False
        return queue[0] is _END_STREAM_SENTINEL or self.conn.local_flow_control_window(streamID) > 0  # type: ignore[no-any-return]

    def _wake(self, streamIDs: list[int]) -> None:
        """
        For each of C{streamIDs} whose window is open: unpark it, let the
        sending loop take what it has queued (its queue may have been sent
        meanwhile, the loop sending several frames a turn), and resume its
        producer (Twisted does this for a WINDOW_UPDATE, not for SETTINGS);
        then restart the loop if it waits for a stream.
        """
        woken = False
        for streamID in streamIDs:
            stream = self.streams.get(streamID)
            if stream is None:
                self._parked.discard(streamID)
                self._shortWindows.discard(streamID)
            elif self._sendable(streamID):
                self._parked.discard(streamID)
                self._shortWindows.discard(streamID)
                if self._outboundStreamQueues.get(streamID):
                    self.priority.unblock(streamID)
                    woken = True
                stream.windowUpdated()
        if woken and self._sendingDeferred is not None:
            sending, self._sendingDeferred = self._sendingDeferred, None
            sending.callback(None)

    def _requestReceived(self, event: Any) -> None:
        self._heads += 1
        if self.transport.disconnecting or not self._stillProducing:
            # The rest of a read that ended in a GOAWAY, or in Twisted's
            # abort (the request was processed for nobody, with tracebacks).
            return
        if self._draining and event.stream_id > self._drainAbove:
            # After the GOAWAY: not processed, may be sent again.
            if not self._streamGone(event.stream_id):  # else reset by the client already
                self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            self._requestAborted(event)  # counted as a reset: a flood ends
            return
        refusal, declared = self._checkHead(event.headers, event.stream_ended is not None)
        if refusal is not None:
            self._refuseStream(event.stream_id, *refusal, headers=event.headers)
            return
        headers = _forTwisted(event.headers, declared)
        expect = None
        if event.stream_ended is None:
            # A body follows: its resource may refuse it from the head,
            # before Twisted sends the 100 Continue it asks for.
            expect = [value for name, value in headers if name == b"expect"]
            if expect:
                headers = [field for field in headers if field[0] != b"expect"]
        event.headers = headers
        H2Connection._requestReceived(self, event)
        self._outboundStreamQueues[event.stream_id] = _OutputQueue(self)
        if event.stream_ended is None:
            stream = self.streams[event.stream_id]
            request = stream._request  # Twisted's, private
            check = getattr(request, "headRefusal", None)  # another requestFactory's has none
            refusal = None if check is None else check(stream.command, stream.path, b"HTTP/2", declared)
            if refusal is not None:
                self._refuseStream(event.stream_id, *refusal)
                return
            self._waitForBody(event.stream_id)
            if expect:
                request.requestHeaders.setRawHeaders(b"expect", expect)
                if expect[0].lower() == b"100-continue":
                    stream._send100Continue()

    def _handlePriorityUpdate(self, event: Any) -> None:
        # Ignored: see the class docstring.
        pass

    def _checkHead(
        self, headers: list[tuple[bytes, bytes]], ended: bool = False
    ) -> tuple[tuple[int, str] | None, int | None]:
        """
        Check a request's headers against the site's limits, counted as
        HTTP/1 counts them (C{name: value} lines; the crumbs of a split
        C{cookie} as one line); refuse a malformed head (RFC 9113, 8.1.1:
        by h2's checks, and a C{content-length} not a number, or two
        different ones), CONNECT, and a request that C{ended} with its head
        though it declares a body (h2 checks a declared length only against
        DATA frames, and such a request was processed with no body).

        A malformed head used to end the connection, with every other
        request on it (h2 makes it a connection error); nginx answers 400
        on the stream, as here.

        @return: the status and message to refuse the request with (or
            L{None}), and the body length it declares (or L{None}).
        """
        limits = self.site.limits
        lines = size = 0
        cookie = False
        for name, value in headers:
            if name[:1] == b":":
                if name == b":path" and len(value) > limits.maxRequestLine:
                    return (414, "request line too long"), None
                if name == b":method" and value == b"CONNECT":
                    return (400, "CONNECT is not served here"), None
                if name != b":authority":
                    continue
                name = b"host"  # what it becomes
            line = len(name) + len(value) + 2
            if line > limits.maxRequestLine:
                return (431, "request header line too long"), None
            if name == b"cookie":
                if cookie:
                    size += len(value) + 2
                    continue
                cookie = True
            lines += 1
            size += line + 2
        if lines > limits.maxHeaders or size > limits.maxHeaderBytes:
            return (431, "request header fields too large"), None
        try:
            _validate(headers, _REQUEST_HEAD)
            declared = _declaredLength(headers)
        except (h2.exceptions.ProtocolError, ValueError) as malformed:
            return (400, f"malformed request: {malformed}"), None
        if declared is not None and declared > limits.maxBody:
            return (413, f"request body over {limits.maxBody} bytes"), None
        if ended and declared:
            return (400, f"request body of {declared} bytes missing"), None
        return None, declared

    def _requestDataReceived(self, event: Any) -> None:
        if self.transport.disconnecting or not self._stillProducing:
            return  # the rest of a read that ended in a GOAWAY, or an abort
        if isinstance(event, _Malformed):
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.reset is not None:
                self._streamError(event.stream_id, event.message, event.reset)
            elif event.stream_id in self.streams:
                self._refuseStream(event.stream_id, 400, event.message)
            return
        if not event.data and event.stream_ended is None and not self._emptyData.take():
            self.site.stats.count("h2_empty_frame_floods")
            self._goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, b"too many empty DATA frames")
            return
        streamID = event.stream_id
        if streamID in self.streams:
            received = self._received.get(streamID, 0) + len(event.data)
            self._received[streamID] = received
            if received <= self.site.limits.maxBody:
                if streamID in self._bodySince:
                    self._bodySince[streamID] = self.site.reactor.seconds()
                H2Connection._requestDataReceived(self, event)
                return
            self._refuseStream(streamID, 413, f"request body over {self.site.limits.maxBody} bytes")
        # A refused stream's data: only the connection's window needs it back.
        if event.flow_controlled_length:
            self.conn.acknowledge_received_data(event.flow_controlled_length, streamID)

    def _requestEnded(self, event: Any) -> None:
        streamID = event.stream_id
        self._bodySince.pop(streamID, None)
        if streamID not in self.streams or self.transport.disconnecting or not self._stillProducing:
            return
        if self._streamGone(streamID):
            # The client reset the stream in this same read: Twisted hears
            # of the reset next.
            return
        if self._held or self._backedUp():
            self._held[streamID] = None
            return
        H2Connection._requestEnded(self, event)

    def _backedUp(self) -> bool:
        """
        Whether what waits for the client is enough that no more of its
        requests are processed for now (L{_H2_QUEUE_LIMIT} of answers, or
        L{_H2_CONTROL_HOLD} of answer heads waiting for the transport).
        """
        return self._queued >= _H2_QUEUE_LIMIT or self._bufferedControlFrameBytes >= _H2_CONTROL_HOLD

    #: Watches the output while the transport is full (see L{pauseProducing}).
    _sendStall: SendStall | None = None

    def pauseProducing(self) -> None:
        """
        The transport is full: nothing is sent, and over TLS nothing read,
        until it is all taken.  What the client takes meanwhile counts as
        activity for the idle timeout, as the frames sent would: a client
        reading a large answer slowly but steadily (3 KB/s, a 16 MiB
        window) got the idle timeout's GOAWAY after two minutes.
        """
        H2Connection.pauseProducing(self)
        if self.timeOut:
            if self._sendStall is None:
                self._sendStall = SendStall(
                    self.site.reactor, self.timeOut, lambda: unsentBytes(self.transport), lambda: None, self.resetTimeout
                )
            self._sendStall.watch()

    def resumeProducing(self) -> None:
        """
        The transport takes more: Twisted sends the frames held meanwhile;
        then requests held for them (L{_H2_CONTROL_HOLD}) are processed.
        """
        if self._sendStall is not None:
            self._sendStall.stop()
        H2Connection.resumeProducing(self)
        if self._held and self._consumerBlocked is None:
            self._releaseHeld()

    def _releaseHeld(self) -> None:
        """
        Process the requests held by L{_requestEnded}, in order, while the
        connection is not L{_backedUp}.  One whose stream is gone
        (L{_streamGone}) stays held for its reset, which comes next in the
        read being handled (L{_requestDone} logs it): it was processed on
        the stream h2 had forgotten, h2 raised (a critical error, then an
        Unhandled Error out of C{dataReceived}, the connection dropped
        without a GOAWAY) and the requests were in no log.
        """
        if self._releasing:
            return
        self._releasing = True
        try:
            while (
                self._held
                and not self._backedUp()
                and self._stillProducing  # not being lost
                and not self.transport.disconnecting
            ):
                streamID = next((held for held in self._held if not self._streamGone(held)), None)
                if streamID is None:
                    break
                del self._held[streamID]
                self.streams[streamID].requestComplete()
        finally:
            self._releasing = False

    def _requestAborted(self, event: Any) -> None:
        self._bodyCutShort(event.stream_id)
        # Closing before this reset: a flood already counted, or another end.
        closing = self.transport.disconnecting
        if event.stream_id in self.streams:
            # Newer Twisted limits resets too, with the same burst and rate
            # (netsuite's limit holds for every version): it may end the
            # connection at this reset, the flood still to be counted.
            H2Connection._requestAborted(self, event)
        self._takeReset(closing)

    def _takeReset(self, closing: bool) -> None:
        """
        Take a stream reset (by the client, or as if by it) from the
        connection's budget (Rapid Reset): past it, the connection ends
        with a GOAWAY (C{ENHANCE_YOUR_CALM}), the flood counted unless the
        connection was C{closing} already.
        """
        if not self._resets.take() and not closing:
            self.site.stats.count("h2_reset_floods")
            self._goAway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, b"too many streams reset")

    def _requestDone(self, streamID: int) -> None:
        """
        Forget stream C{streamID}, ended, reset or lost.  A request held
        (L{_requestEnded}), never processed, is logged and counted 499,
        as a client gone before its answer is: it was in no log.
        """
        self._received.pop(streamID, None)
        self._bodySince.pop(streamID, None)
        self._parked.discard(streamID)
        self._shortWindows.discard(streamID)
        self._streamGiveBacks.pop(streamID, None)
        self._readsAhead.discard(streamID)
        self._tails.discard(streamID)
        if streamID in self._held:
            del self._held[streamID]
            self._logRefusal(self.streams.get(streamID), _CLIENT_CLOSED, 0, [])
        queue = self._outboundStreamQueues.get(streamID)
        if queue:
            queue.clear()
        H2Connection._requestDone(self, streamID)
        self._fireSent(streamID)
        if self._held:
            self._releaseHeld()
        if self._draining and not self.streams and not self.transport.disconnecting:
            if self._clientWentAway:
                self._goAway(h2.errors.ErrorCodes.NO_ERROR)
                return
            self.transport.loseConnection()
            self._closing()

    def _refuseStream(
        self,
        streamID: int,
        status: int,
        message: str,
        extra: Iterable[tuple[bytes, bytes]] = (),
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """
        Answer stream C{streamID} with C{status}, C{extra} response headers
        (its C{content-type} and C{x-content-type-options} when they have
        none) and a JSON error, and reset it if the client is still sending
        its request.

        @param headers: the request's headers, when it is refused for them
            (it has no stream of Twisted's yet).
        """
        self.site.stats.countError(f"refused_{status}")
        # Its refusal is its log line.
        self._bodySince.pop(streamID, None)
        self._held.pop(streamID, None)
        # Taken now: a connection aborted for its buffered frames (below)
        # has forgotten its streams.
        stream = self.streams.get(streamID)
        body = _jsonErrorBody(status, message)
        sent = 0
        answer = [
            (b":status", b"%d" % (status,)),
            (b"server", _serverVersion),
            (b"date", _httpNow()),
            *((name.lower(), value) for name, value in extra),
        ]
        if not any(name == b"content-type" for name, _ in answer):
            answer += [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
        conn = self.conn
        written = True
        method = stream.command if stream is not None else dict(headers or ()).get(b":method")
        try:
            # A client may allow less than the body: then the status alone.
            fits = len(body) <= min(
                conn.local_flow_control_window(streamID), conn.max_outbound_frame_size
            )
            head = method == b"HEAD"
            if fits or head:
                answer.append((b"content-length", b"%d" % (len(body),)))
            if head:
                fits = False  # an answer to a HEAD has no body: its length only
            conn.send_headers(streamID, answer, end_stream=not fits)
            if fits:
                conn.send_data(streamID, body, end_stream=True)
                sent = len(body)
            state = conn.streams.get(streamID)
            if state is not None and not state.closed:
                # The answer in a write (a TLS record) of its own: curl 7.88
                # read a reset that came in the same record as the answer
                # first, and reported a framing error instead of the answer.
                written = self._tryToWriteControlData()
                if written:
                    conn.reset_stream(streamID, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            pass  # the client reset the stream already
        # Not written: Twisted aborted the connection of a client that read
        # too little of what was queued (and logged why), the answer unsent.
        written = written and self._tryToWriteControlData()
        self._logRefusal(stream, status, sent if written else 0, headers or [])
        if written and stream is not None:
            stream.connectionLost(Failure(ConnectionLost(message)))
            self._requestDone(streamID)

    def _streamError(self, streamID: int, message: str, code: int) -> None:
        """
        Reset stream C{streamID} with error C{code} (a stream error, RFC
        9113 5.4.2), unanswered: a request on it being received or
        processed is lost, as if the client had reset it.  An idle stream
        gets the reset too, as nginx and Go send it; a closed one nothing
        (no frame but PRIORITY may be sent on it, RFC 9113 5.1).  Counted
        as C{h2_refused_streams} (C{REFUSED_STREAM}) or C{h2_stream_errors}.
        """
        refused = code == h2.errors.ErrorCodes.REFUSED_STREAM
        self.site.stats.count("h2_refused_streams" if refused else "h2_stream_errors")
        conn = self.conn
        state = conn.streams.get(streamID)
        if state is not None and not state.closed:
            conn.reset_stream(streamID, code)
        elif streamID > (conn.highest_inbound_stream_id if streamID % 2 else conn.highest_outbound_stream_id):
            reset = RstStreamFrame(streamID)
            reset.error_code = code
            conn._prepare_for_sending([reset])  # h2 resets only streams it knows
        stream = self.streams.get(streamID)
        if stream is not None:
            stream.connectionLost(Failure(ConnectionLost(message)))
            self._requestDone(streamID)
            # A request dropped, as by the client's reset: a flood of them
            # is Rapid Reset (each request earns more control budget than
            # its PRIORITY frame costs).
            self._takeReset(self.transport.disconnecting)

    def _logRefusal(self, stream: Any, status: int, sent: int, headers: list[tuple[bytes, bytes]]) -> None:
        """
        Write the access-log line of the request on C{stream} (Twisted's
        stream, or L{None} if it has none yet), refused with C{status} (and
        count it in C{/metrics}), as HTTP/1 logs its refusals and nginx its
        413 over HTTP/2, with the C{sent} bytes of its body.
        """
        request = getattr(stream, "_request", None)  # Twisted's, private
        if request is not None:  # refused as its body came
            method, target = stream.command, stream.path  # type: ignore[union-attr]
        else:  # refused for its head
            # Each field cut at the line limit: the head may have been
            # refused before the rest of it was checked.
            cut = self.site.limits.maxRequestLine
            request = self.site.requestFactory(self)
            fields = {name: value[:cut] for name, value in headers if name in _LOGGED_FIELDS}
            method = fields.get(b":method", b"-")
            target = fields.get(b":path", fields.get(b":authority", b"-"))
            for name in (b"referer", b"user-agent"):
                if name in fields:
                    request.requestHeaders.setRawHeaders(name, [fields[name]])
        request.method, request.uri, request.clientproto = method, target, b"HTTP/2"
        request.code = status
        request.sentLength = sent
        self.site.log(request)


class _FlowAwarePriority:
    """
    An HTTP/2 connection's priority tree (Twisted's sending loop takes the
    next stream to send on from it) that hands out only streams that can
    send.

    Twisted's loop took a stream with an empty flow-control window, sent
    nothing and ran again at once: a client that stopped sending
    C{WINDOW_UPDATE} kept the server's CPU busy until the stream's stall
    reset.  Such a stream is blocked here and parked with its connection,
    which unblocks it when its window opens.
    """

    def __init__(self, tree: Any, connection: NetsuiteH2Connection) -> None:
        self._tree = tree
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tree, name)

    def __iter__(self) -> "_FlowAwarePriority":
        return self

    def __next__(self) -> int:
        # Raises priority.DeadlockError once every stream is blocked.
        while True:
            streamID: int = next(self._tree)
            if self._connection._sendable(streamID):
                return streamID
            self._tree.block(streamID)
            self._connection._parked.add(streamID)


#: What an HTTP/2 client sends first (RFC 9113, 3.4): on a plain
#: connection, a client that knows the server speaks HTTP/2 ("prior
#: knowledge", C{curl --http2-prior-knowledge}) starts with it.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_NO_TLS = object()


@implementer(IHalfCloseableProtocol)
class _ChannelSwitch(_GenericHTTPChannelProtocol):  # type: ignore[misc]
    """
    Twisted's choice of HTTP/1.1 or HTTP/2 by ALPN, with a
    L{NetsuiteH2Connection} for HTTP/2 (Twisted's builds its own
    C{H2Connection}, and has no hook for another); on a plain connection,
    when the site allows it (L{NetsuiteSite.h2c}), HTTP/2 for a client
    whose first bytes are HTTP/2's preface.  The end of the client's input
    goes to an HTTP/1 channel (see L{NetsuiteHTTPChannel}); over HTTP/2,
    whose answers need the client's frames, it closes the connection once
    what is written is sent.
    """

    def makeConnection(self, transport: Any) -> None:
        site = self._site
        if isinstance(site, NetsuiteSite):
            site.connectionOpened()
        _GenericHTTPChannelProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure) -> None:
        try:
            _GenericHTTPChannelProtocol.connectionLost(self, reason)
        finally:
            site = self._site
            if isinstance(site, NetsuiteSite):
                site.connectionClosed()

    def readConnectionLost(self) -> None:
        channel = self._channel
        if IHalfCloseableProtocol.providedBy(channel):
            channel.readConnectionLost()
        elif isinstance(channel, NetsuiteH2Connection):
            channel.inputEnded()
        else:
            channel.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    _start = b""  # the first bytes of a plain connection, while they may be the preface

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            negotiated = getattr(self._channel.transport, "negotiatedProtocol", _NO_TLS)
            if negotiated == b"h2":
                if H2_SERVED:
                    self._startHTTP2()
                else:  # never Twisted's HTTP/2: the preface gets a 400
                    self._negotiatedProtocol = b"http/1.1"
            elif negotiated is _NO_TLS and self._site.h2c and H2_SERVED:
                start = self._start = self._start + data
                if len(start) < len(_H2_PREFACE) and _H2_PREFACE.startswith(start):
                    http1 = self._channel
                    if http1._state == "idle":
                        http1._startHead()  # the head deadline runs meanwhile
                    return
                data, self._start = start, b""
                if start.startswith(_H2_PREFACE):
                    self._startHTTP2()
                else:
                    self._negotiatedProtocol = b"http/1.1"
            else:
                # HTTP/1.x: by ALPN (http/1.1 or http/1.0), without it, or
                # plain.  Twisted took only http/1.1: a client choosing
                # http/1.0 (curl --http1.0) got no answer, and the log an
                # AssertionError's traceback.
                self._negotiatedProtocol = b"http/1.1"
        _GenericHTTPChannelProtocol.dataReceived(self, data)

    def closeGracefully(self) -> None:
        """
        The service is stopping: see the channel's C{closeGracefully}.
        """
        closer = getattr(self._channel, "closeGracefully", None)
        if closer is not None:
            closer()
        else:
            self._channel.loseConnection()

    def _startHTTP2(self) -> None:
        # What Twisted's dataReceived does, with netsuite's connection.
        http1 = self._channel
        networkProducer = http1._networkProducer
        networkProducer.unregisterProducer()
        http1.setTimeout(None)
        http1._state = "h2"
        if http1._deadline is not None:  # the preface of a plain connection ran it
            http1._deadline.cancel()
            http1._deadline = None
        channel = self._channel = NetsuiteH2Connection(self._site)
        channel.requestFactory = self._requestFactory
        channel.site = self._site
        channel.factory = self._factory
        channel.timeOut = self._timeOut
        channel.callLater = self._callLater
        channel.makeConnection(http1.transport)
        networkProducer.registerProducer(channel, True)
        self._negotiatedProtocol = b"h2"


class NetsuiteSite(LogKeptThroughGrace, Site):
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
    #: Whether a plain (not TLS) connection may speak HTTP/2 with prior
    #: knowledge (h2c; without the HTTP/1.1 C{Upgrade}, which RFC 9113
    #: deprecates): its client starts with HTTP/2's preface.
    h2c = False
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
        #: Request bodies held in temporary files now (see L{BODY_FILES}), in
        #: all and by client address.
        self.bodyFiles = 0
        self.bodyFilesByHost: dict[str, int] = {}

    def getResourceFor(self, request: Request) -> IResource:
        """
        Route C{request} with its empty and C{.} path segments merged away
        (C{//api/./status} is C{/api/status}, as nginx's C{merge_slashes}
        does), a final one kept as the trailing slash, so that every
        spelling of a path reaches the same resource.
        """
        postpath = request.postpath
        if b"" in postpath[:-1] or b"." in postpath:
            *inner, last = postpath
            request.postpath = [p for p in inner if p != b"" and p != b"."] + [
                b"" if last == b"." else last
            ]
        return Site.getResourceFor(self, request)

    def protocol(self) -> _GenericHTTPChannelProtocol:  # type: ignore[override]
        # HTTP/2 is negotiated through this wrapper; both channels are ours.
        return _ChannelSwitch(NetsuiteHTTPChannel(self))

    def log(self, request: Request) -> None:
        if getattr(request, "_headLost", False):
            # Its HTTP/2 stream was gone before the head of its answer:
            # none of the answer was sent.
            request.code, request.sentLength = _CLIENT_CLOSED, 0
        self.stats.count("requests")
        started = getattr(request, "startedAt", 0.0)
        self.metrics.observe(
            request.method,
            request.code,
            self.reactor.seconds() - started if started else 0.0,
            request.sentLength,
        )
        if self._logFile is not None:
            Site.log(self, request)
        else:
            _accessLog.info(
                "{line}", line=self._logFormatter(self._logDateTime, request)
            )

    def startFactory(self) -> None:
        if self.stillLogging():
            return
        Site.startFactory(self)
        if not self.logPath:
            self._logFile = None

    def stopFactory(self) -> None:
        # Twisted closes the access log (and stops its clock) at once: the
        # answers that end in the grace period went to the twistd log,
        # their times frozen at the stop.
        self.stopLogging()

    def _closeLog(self) -> None:
        Site.stopFactory(self)

    def _openLogFile(self, path: Any) -> Any:
        # Not Twisted's LogFile, which rotates the log every megabyte.
        return openAccessLog(path, self.reactor)


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


class _Exactly(Resource):
    """
    C{resource} at its own path only: a path below it (C{/metrics/x},
    C{/healthz/}) gets C{notFound}, where the leaf answered as itself.
    """

    isLeaf = True

    def __init__(self, resource: Resource, notFound: Resource) -> None:
        Resource.__init__(self)
        self._resource = resource
        self._notFound = notFound

    def render(self, request: Request) -> bytes:
        return (self._notFound if request.postpath else self._resource).render(request)  # type: ignore[no-any-return]


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
    h2c: bool = False,
) -> NetsuiteSite:
    """
    Build netsuite's whole site.

    @param status: where the home page, C{/api/status} and C{/healthz} read
        listeners and stats from.
    @param root: a folder to serve at C{/}, or L{None}.
    @param api: more children of C{/api}, by name (the download service's
        C{downloads}, for one).
    @param h2c: serve HTTP/2 with prior knowledge on plain connections
        (L{NetsuiteSite.h2c}).
    """
    limits = limits or Limits()
    if not H2_SERVED and _TWISTED_H2:
        _log.warn("HTTP/2 is off: this Twisted's HTTP/2 is not one netsuite knows (HTTP/1.1 is served)")
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
    top.putChild(b"healthz", _Exactly(HealthResource(status), notFound))
    top.putChild(b"metrics", _Exactly(metrics.resource(), notFound))
    top.putChild(b"_netsuite", BuiltinPages(home, notFound))
    site = NetsuiteSite(
        top, reactor=reactor, stats=stats, metrics=metrics, limits=limits, accessLog=accessLog
    )
    site.static = static
    site.h2c = h2c
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
    site: NetsuiteSite | None = None,
    h2c: bool = False,
    **listening: Any,
) -> StreamListener:
    """
    A service running netsuite's HTTP server on C{endpoint}.

    @param status: what the status pages show; by default a
        L{SimpleStatus} that knows this listener only.
    @param site: a site (from L{makeSite}) to serve, shared with other
        listeners: a plain and a TLS listener given the same site have one
        C{/metrics}, one static file cache and one access log.  Its pages
        show the status it was made with (add the listeners to it), and
        C{status}, C{stats}, C{root}, C{followSymlinks}, C{accessLog},
        C{limits}, C{api} and C{h2c} are not used.  Without it, a site of this
        listener's own is made from them.
    @param root: a folder to serve at C{/} (like C{twistd web --path}).
    @param followSymlinks: serve symlinks that point outside C{root}.
    @param accessLog: file for the combined-format access log (default: the
        twistd log).
    @param limits: request limits and timeouts.
    @param api: more children of C{/api}, by name.
    @param h2c: serve HTTP/2 with prior knowledge on plain connections
        (L{NetsuiteSite.h2c}).
    @param listening: keyword arguments of L{StreamListener} (C{tls},
        C{grace}, C{maxConnections}, C{maxPerHost}, C{handshakeTimeout},
        C{lingerTime}, C{lingerTimeout});
        give C{tls} options made with
        C{acceptableProtocols=[b"h2", b"http/1.1"]} for HTTP/2.
    """
    reactor = _reactor(reactor)
    if site is not None:
        # Its pages show the status it was made with.
        return StreamListener("http", endpoint, site, reactor=reactor, stats=site.stats, speaksHTTP=True, **listening)
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
        h2c=h2c,
    )
    listener = StreamListener("http", endpoint, site, reactor=reactor, stats=stats, speaksHTTP=True, **listening)
    if own:
        status.add(listener)  # type: ignore[union-attr]
    return listener
