"""
An HTTP forward proxy: absolute-form requests for every method, CONNECT
tunnels, keep-alive on both sides, destination rules and Basic proxy auth.

Requests from clients are parsed by C{twisted.web} (L{ProxyChannel} is a
L{NetsuiteHTTPChannel}: head deadline, 414/431, idle timeout); everything
else is here:

  - L{ProxyRequest} streams a request's body to the origin as it arrives
    and the response back as it arrives, each direction paced by the other
    side's transport buffer, so memory stays bounded whatever the sizes.
  - L{UpstreamConnection} speaks HTTP/1.1 to origins, and L{UpstreamPool}
    keeps idle ones per host (bounded) for the next request.
  - L{TunnelUpstream} carries a CONNECT tunnel, half-close included.
  - Destinations are resolved first and every address is checked
    (L{netsuite.proxyrules.ProxyRules}); the connection goes to an address
    that was checked, so DNS cannot swap it afterwards.

Hop-by-hop headers (RFC 9110 section 7.6.1) never cross the proxy in either
direction; C{Via} is added, C{X-Forwarded-For} and C{Forwarded} only when
asked for.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections import deque
from dataclasses import dataclass
from time import gmtime, strftime
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHostnameResolver,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
    ISSLTransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from zope.interface import implementer

from netsuite.accesslog import LogKeptThroughGrace, openAccessLog
from netsuite.chunked import ChunkedDecoder, MalformedChunkedBody
from netsuite.limits import (
    ClosingWatch,
    IdleTimeout,
    SendStall,
    cancelIfActive,
    decimal,
    hostKey,
    peerReset,
    unsentBytes,
)
from netsuite.listen import ConnectionBudget, FlushBatch, StreamListener, _reactor, plainSocketTransport, sendOrQueue
from netsuite.proxyauth import Authenticator
from netsuite.proxyrules import ProxyRules, Refusal, hostNameProblem
from netsuite.stats import ServiceStats
from netsuite.status import SimpleStatus, StatusSource
from netsuite.web.site import (
    _CLIENT_CLOSED,
    _NOT_VISIBLE,
    _REASONS,
    Limits,
    NetsuiteHTTPChannel,
    httpDate,
)

DEFAULT_PROXY = "tcp:3128:interface=127.0.0.1"

#: The access log, when it goes to the twistd log.
_accessLog = Logger(namespace="netsuite.proxy.access")

#: Hop-by-hop headers (RFC 9110 section 7.6.1), and the body's framing,
#: which the proxy does itself: never passed on in either direction.
_HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    ]
)

#: Request headers that never go to the origin: also C{Host} (rewritten from
#: the target), C{Expect} (only C{100-continue} is forwarded, by
#: L{ProxyRequest._forwardHead}) and the proxy's credentials.
_DROP_REQUEST = _HOP_BY_HOP | {b"proxy-authorization", b"host", b"expect"}

#: Response headers that never go to the client.  C{Proxy-Authenticate}
#: from an origin would make a browser offer this proxy's password to it.
_DROP_RESPONSE = _HOP_BY_HOP | {b"proxy-authenticate", b"proxy-authentication-info"}

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOSTNAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.-]{0,253}")
_STATUS_LINE = re.compile(rb"^HTTP/1\.([01]) ([0-9]{3})(?: (.*))?$")
_LOG_UNSAFE = re.compile(rb'[^\x21\x23-\x5b\x5d-\x7e]')
#: The same, for a whole request line: its spaces are kept.
_LOG_UNSAFE_LINE = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_LOG_UNSAFE_REASON = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
#: Control characters other than HTAB, CR and LF: invalid in a field value,
#: and refused by strict parsers further on (RFC 9110 5.5), so a forwarded
#: value has each replaced by a space.  CR, LF and NUL never get this far.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: Bytes of response head (status line and headers) accepted from an origin.
MAX_RESPONSE_HEAD = 65536
#: Bytes of the heads of one answer, its interim (1xx) responses included.
MAX_RESPONSE_HEADS = 2 * MAX_RESPONSE_HEAD
#: Bytes read from an origin at once.
_READ_SIZE = 1 << 18
#: Interim (1xx) responses skipped before one origin's answer.
_MAX_INTERIM = 20
#: Bytes of request body held while the origin connection is being made.
_PENDING_LIMIT = 65536
#: How often a client the proxy is not reading from is checked for a reset
#: (seconds): a socket not read reports nothing.
_RESET_CHECK = 5.0

#: Transfer codings an origin may apply before C{chunked}: passed on to
#: the client to undo (RFC 9112 section 7); any other is a 502.
_CODINGS = frozenset([b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"])

#: Methods a request may be sent again with (RFC 9110 section 9.2.2).
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])

#: Request headers a TRACE answered here does not echo (RFC 9110 section 9.3.8).
_TRACE_HIDDEN = frozenset([b"authorization", b"proxy-authorization", b"cookie"])

_TEXT_PLAIN = b"text/plain; charset=utf-8"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Seconds the proxy waits for an origin's C{100 Continue} before sending
#: its own (curl waits as long for one before it sends the body anyway).
CONTINUE_WAIT = 1.0
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


@dataclass
class ProxySettings:
    """
    Timeouts and limits of one proxy.

    @ivar connectTimeout: seconds to resolve and connect to an origin (504
        after).
    @ivar readTimeout: seconds an origin may stay silent while a response is
        awaited or read (504 before the response starts, a cut connection
        after); while it still takes the request body, it is not silent,
        and while the proxy does not read it because the client takes
        nothing, the time does not count.
    @ivar tunnelIdleTimeout: seconds a CONNECT tunnel may carry nothing
        either way before it is closed.
    @ivar idleTimeout: seconds a client's keep-alive connection may wait for
        its next request, a request body may stop coming (408), and a
        client may take nothing of its answer (cut off), as nginx's
        C{client_body_timeout} and C{send_timeout}; also nothing of what is
        left while its connection closes (after a tunnel, or an answer
        that ends the connection).
    @ivar headerTimeout: seconds from a request's first byte to the end of
        its headers (408 after).
    @ivar maxTunnels: CONNECT tunnels open or connecting at once (503 above;
        0: no limit).
    @ivar poolPerHost: idle origin connections kept per host and port.
    @ivar poolTotal: idle origin connections kept in all.
    @ivar poolIdleTimeout: seconds an idle origin connection is kept.
    @ivar forwardedFor: add C{X-Forwarded-For} and C{Forwarded} naming the
        client.
    @ivar maxRequestLine: bytes in the request line or one header line
        (414 / 431 above).
    @ivar maxHeaderBytes: bytes in a request's headers (431 above).
    @ivar maxHeaders: header lines in one request (431 above).
    @ivar lookupsPerClient: name lookups one client address may have
        running at once; its others wait their turn (0: no limit).
    """

    connectTimeout: float = 10.0
    readTimeout: float = 60.0
    tunnelIdleTimeout: float = 300.0
    idleTimeout: float = 60.0
    headerTimeout: float = 15.0
    maxTunnels: int = 1024
    poolPerHost: int = 64
    poolTotal: int = 512
    poolIdleTimeout: float = 30.0
    forwardedFor: bool = False
    maxRequestLine: int = 8192
    maxHeaderBytes: int = 32768
    maxHeaders: int = 100
    lookupsPerClient: int = 16


class _BadTarget(Exception):
    """
    A request target the proxy cannot use; the message says why.
    """


def _validHostName(host: bytes) -> bool:
    """
    Whether C{host} is a usable DNS name (L{hostNameProblem}).
    """
    return _HOSTNAME.fullmatch(host) is not None and hostNameProblem(host.decode("ascii")) is None


def _parseAuthority(authority: bytes, defaultPort: int | None) -> Tuple[bytes, int]:
    """
    Split C{host[:port]} (C{[v6]:port} for IPv6) into a lowercase host and
    a port.

    @raise _BadTarget: it is not a host name or address with a valid port.
    """
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end < 0:
            raise _BadTarget("the IPv6 address in the target has no closing bracket")
        host, rest = authority[1:end], authority[end + 1 :]
        if b"%" in host:
            # A zone names one of the client's interfaces: none of ours.
            raise _BadTarget("the target's IPv6 address has a zone id, which this proxy does not take")
        try:
            ipaddress.IPv6Address(host.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise _BadTarget("the target's IPv6 address is not valid") from None
        if rest and not rest.startswith(b":"):
            raise _BadTarget("the target's host is not valid")
        portText = rest[1:] if rest else None
    else:
        host, colon, portText = authority.rpartition(b":")
        if not colon:
            host, portText = authority, None
        if not _validHostName(host):
            raise _BadTarget("the target's host name is not valid")
    if portText is None or portText == b"":
        if defaultPort is None:
            raise _BadTarget("the target names no port")
        return host.lower(), defaultPort
    if not portText.isdigit() or len(portText) > 5 or not 0 < int(portText) < 65536:
        raise _BadTarget("the target's port is not valid")
    return host.lower(), int(portText)


def parseTarget(uri: bytes) -> Tuple[bytes, int, bytes, bytes]:
    """
    Split an absolute-form request target (C{http://host[:port]/path?query}).

    @return: C{(host, port, path, authority)}: C{path} is what the origin is
        asked for (C{/} when empty), C{authority} the C{Host} header.
    @raise _BadTarget: the target is not an absolute C{http} URL.
    """
    if _NOT_VISIBLE.search(uri) is not None:
        raise _BadTarget("the target holds a byte that is not printable ASCII (percent-encode it)")
    scheme, sep, rest = uri.partition(b"://")
    if not sep or scheme.lower() != b"http":
        if sep and scheme.lower() == b"https":
            raise _BadTarget("https:// URLs go through CONNECT, not as a plain request")
        raise _BadTarget("only http:// targets can be fetched")
    cut = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if 0 <= at < cut:
            cut = at
    authority, path = rest[:cut], rest[cut:]
    if b"@" in authority:
        raise _BadTarget("user names and passwords in the target are not accepted")
    host, port = _parseAuthority(authority, 80)
    path = path.partition(b"#")[0]
    if not path.startswith(b"/"):
        path = b"/" + path
    if port != 80:
        authority = (b"[%s]:%d" if b":" in host else b"%s:%d") % (host, port)
    else:
        authority = b"[%s]" % (host,) if b":" in host else host
    return host, port, path, authority


def _literalAddress(host: bytes) -> Optional[str]:
    """
    C{host} as an IP address string if it is one, else L{None}.
    """
    if not host or not (host[:1].isdigit() or b":" in host):
        return None
    try:
        return str(ipaddress.ip_address(host.decode("ascii")))
    except ValueError:
        return None


def _errorText(value: BaseException) -> str:
    """
    What C{value} says went wrong, in words (Twisted's connect errors keep
    the bare errno apart).
    """
    if isinstance(value, error.ConnectError):
        if value.args and value.args[0]:
            return str(value.args[0])
        if isinstance(value.osError, int):
            return os.strerror(value.osError)
        return (value.__doc__ or "").strip() or type(value).__name__
    if isinstance(value, OSError) and value.strerror:
        return value.strerror
    return str(value) or type(value).__name__


def _logField(value: bytes, unsafe: re.Pattern = _LOG_UNSAFE) -> str:
    if unsafe.search(value) is not None:
        value = unsafe.sub(lambda m: b"\\x%02x" % m.group()[0], value)
    return value.decode("ascii")


def _textBody(message: str) -> bytes:
    return f"netsuite proxy: {message}\n".encode("utf-8", "replace")


def _response(
    status: int, contentType: bytes, body: bytes, extra: bytes, connection: bytes | None, now: float,
    head: bool = False,
) -> bytes:
    """
    One of the proxy's own answers, with C{connection} as its C{Connection}
    header (see L{NetsuiteHTTPChannel.settleConnection}), dated C{now}; to
    a C{HEAD} (C{head}), its head alone, with the body's C{Content-Length}
    (RFC 9110, 9.3.2).
    """
    reason = _REASONS.get(status) or http.RESPONSES.get(status, b"Error")
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"Date: %s\r\n" % (httpDate(now),),
            b"Content-Type: %s\r\n" % (contentType,),
            b"Content-Length: %d\r\n" % (len(body),),
            extra,
            b"Connection: %s\r\n" % (connection,) if connection else b"",
            b"\r\n",
            b"" if head else body,
        ]
    )


#: Seconds a lookup holds its client's turn at most: one its resolver never
#: answers (Twisted's own when C{getaddrinfo} fails with other than a DNS
#: error) gives it back then, not never (its client address had no lookup
#: again, after C{lookupsPerClient} of them, until the proxy restarted).
LOOKUP_TURN_LIMIT = 60.0

_log = Logger()


class _Waiting(deque):  # type: ignore[type-arg]
    """
    The lookups of one client address that wait their turn, in order.

    @ivar compactAt: the length at which those no longer wanted are
        dropped (twice what was left the last time: each look is paid for
        by as many new ones).
    """

    compactAt = 64


class LookupTurns:
    """
    Name lookups by client address (L{hostKey}): an address may have
    C{perClient} lookups running at once, and its others wait their turn,
    in order.  One client's lookups of names whose DNS does not answer
    (each holds a lookup thread until the resolver's timeout) cannot take
    every thread (L{netsuite.resolving.LOOKUP_THREADS}) from the others.
    A lookup whose request has ended while it waited is passed over.
    """

    def __init__(self, perClient: int, clock: Any = None, holdLimit: float = LOOKUP_TURN_LIMIT) -> None:
        """
        @param perClient: lookups an address may have running at once
            (0: no limit).
        @param clock: times C{holdLimit} (none: a turn is held until its
            lookup ends).
        @param holdLimit: seconds a lookup holds its turn at most.
        """
        self.perClient = perClient
        self.holdLimit = holdLimit
        self._clock = clock
        self._running: Dict[str, int] = {}
        self._waiting: Dict[str, _Waiting] = {}
        #: The addresses whose waiting lookups are being started (up the
        #: stack): a lookup that ends meanwhile leaves the next to it.
        self._draining: set = set()

    def run(self, client: str, wanted: Callable[[], bool], start: Callable[[], defer.Deferred[Any]]) -> None:
        """
        Call C{start} (a lookup: its Deferred fires once it has ended) for
        C{client} now, or in its turn if C{wanted} then says it still is.
        """
        key = hostKey(client) if client else ""
        if self.perClient and self._running.get(key, 0) >= self.perClient:
            waiting = self._waiting.get(key)
            if waiting is None:
                waiting = self._waiting[key] = _Waiting()
            elif len(waiting) >= waiting.compactAt:
                # Requests that ended while they waited (their clients left)
                # are let go of now, not when a turn comes back.
                kept = [entry for entry in waiting if entry[0]()]
                waiting.clear()
                waiting.extend(kept)
                waiting.compactAt = max(_Waiting.compactAt, 2 * len(kept))
            waiting.append((wanted, start))
            return
        self._start(key, start)

    def running(self, client: str) -> int:
        """
        The lookups C{client}'s address has running.
        """
        return self._running.get(hostKey(client) if client else "", 0)

    def _start(self, key: str, start: Callable[[], defer.Deferred[Any]]) -> None:
        self._running[key] = self._running.get(key, 0) + 1
        given = False
        timer: Any = None

        def giveBack(result: Any) -> Any:
            nonlocal given
            if not given:
                given = True
                cancelIfActive(timer)
                self._ended(key)
            return result

        try:
            ended = start()
        except BaseException:
            giveBack(None)
            raise
        ended.addBoth(giveBack)
        if not given and self._clock is not None:
            timer = self._clock.callLater(self.holdLimit, giveBack, None)

    def _ended(self, key: str) -> None:
        left = self._running[key] - 1
        if left:
            self._running[key] = left
        else:
            del self._running[key]
        if key in self._draining:
            return  # one up the stack starts the next (not by recursion)
        self._draining.add(key)
        try:
            while self._running.get(key, 0) < self.perClient:
                waiting = self._waiting.get(key)
                if not waiting:
                    break
                wanted, start = waiting.popleft()
                if not waiting:
                    del self._waiting[key]
                if wanted():
                    try:
                        self._start(key, start)
                    except Exception:
                        _log.failure("starting a lookup in its turn")
        finally:
            self._draining.discard(key)


@implementer(IResolutionReceiver)
class _Addresses:
    """
    Collects every address a name resolves to.
    """

    def __init__(self) -> None:
        self.addresses: List[str] = []
        self.deferred: defer.Deferred[List[str]] = defer.Deferred()

    def resolutionBegan(self, resolution: object) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self.deferred.callback(self.addresses)


def shutWriting(transport: Any) -> None:
    """
    Shut C{transport}'s writing side once what it holds is sent.

    A Twisted TCP transport whose buffer drains while its producer is
    paused resumes the producer and forgets the half-close it was asked
    for: the peer never saw the end.  Whoever shuts writing has nothing
    more to write, so the producer is let go first (resumed if it was
    paused).
    """
    raw, _ = plainSocketTransport(transport)
    producer = raw.producer if raw is not None else None
    if producer is not None:
        paused = raw.producerPaused
        raw.unregisterProducer()
        if paused:
            producer.resumeProducing()
    transport.loseWriteConnection()


@implementer(IPushProducer)
class _HoldReading:
    """
    Registered on one side's transport: when that side's buffer fills, the
    other side (a L{ProxyChannel}) stops reading, for C{reason}.
    """

    def __init__(self, channel: "ProxyChannel", reason: str) -> None:
        self._channel = channel
        self._reason = reason

    def pauseProducing(self) -> None:
        self._channel.holdReading(self._reason)

    def resumeProducing(self) -> None:
        self._channel.releaseReading(self._reason)

    def stopProducing(self) -> None:
        self._channel.releaseReading(self._reason)


class _ReadGate:
    """
    Stands in for a channel's network producer: the transport reads only
    while nothing holds it (Twisted's channel, a full origin buffer, a
    request body waiting for its connection).
    """

    def __init__(self, producer: Any, stopped: Callable[[], None]) -> None:
        """
        @param stopped: called each time reading stops.
        """
        self._producer = producer
        self._stopped = stopped
        self._holds: set[str] = set()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer.unregisterProducer()

    def pauseProducing(self) -> None:
        self.hold("http")

    def resumeProducing(self) -> None:
        self.release("http")

    def hold(self, reason: str) -> None:
        if not self._holds:
            self._producer.pauseProducing()
            self._stopped()
        self._holds.add(reason)

    @property
    def held(self) -> bool:
        """
        Whether reading is stopped, for any reason.
        """
        return bool(self._holds)

    def release(self, reason: str) -> bool:
        """
        @return: whether this resumed reading.
        """
        if reason in self._holds:
            self._holds.discard(reason)
            if not self._holds:
                self._producer.resumeProducing()
                return True
        return False

    @property
    def heldByProxy(self) -> bool:
        """
        Whether the proxy holds the reading for its own reasons (an origin
        not taking the body, a connection being made, a tunnel), not
        Twisted's channel.
        """
        return bool(self._holds) and self._holds != {"http"}


class UpstreamConnection(Protocol):
    """
    One HTTP/1.1 connection to an origin, serving one L{ProxyRequest} at a
    time and idle in the L{UpstreamPool} between them.

    The response head is parsed here (strictly: an origin can be hostile),
    its body framed by C{Content-Length}, C{chunked} or the end of the
    connection, and handed to the request piece by piece.
    """

    request: Optional["ProxyRequest"] = None
    key: Tuple[bytes, int] = (b"", 0)
    _state = "connecting"  # then "head", "body", "idle", "closed"
    #: What came of a response head (searched already for its end).
    _buffer: bytes | bytearray = b""
    #: Bytes of the answer's heads so far, interim ones included.
    _headBytes = 0
    _reusable = False
    #: Whether bytes followed the response head being parsed, in its read.
    _bytesAfterHead = False
    _remaining = 0
    _framing = ""
    _decoder: Any = None
    _chunkedUpload = False
    #: Aborts the connection, closed, when the origin takes nothing more.
    _closing: ClosingWatch | None = None
    _bodySent = True
    _timer: Any = None
    _last = 0.0
    #: Not read while the client takes nothing (L{pauseReading}).
    _held = False
    _viaVersion = b"1.1"
    _interim = 0
    #: What of the request the origin had not taken when last looked at.
    _unsentSeen = 0

    def __init__(self, factory: "ProxyFactory", key: Tuple[bytes, int]) -> None:
        self.factory = factory
        self.key = key

    connecting: Optional["_Connecting"] = None

    _raw: Any = None

    def connectionMade(self) -> None:
        settings = self.factory.settings
        self._raw = plainSocketTransport(self.transport)[0]
        if self._raw is not None:
            # Large bodies: fewer, bigger reads (Twisted reads 64 KiB).
            self._raw.bufferSize = _READ_SIZE
        self._last = self.factory.clock.seconds()
        # One timer for the connection's life, checked when it fires: no
        # timer work per request or per read.
        self._step = min(settings.readTimeout, settings.poolIdleTimeout)
        self._timer = self.factory.clock.callLater(self._step, self._checkTimer)
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.request.connected(connecting, self)

    # Requests.

    def send(self, request: "ProxyRequest", head: List[bytes], chunkedUpload: bool, bodyFollows: bool) -> None:
        """
        Start C{request} on this connection: send its head; its body, if
        C{bodyFollows}, comes through L{writeBody} and L{endBody}.
        """
        self.request = request
        self._state = "head"
        self._buffer = b""
        self._headBytes = 0
        self._interim = 0
        self._chunkedUpload = chunkedUpload
        self._bodySent = not bodyFollows
        self._last = self.factory.clock.seconds()
        if self._raw is not None:
            sendOrQueue(self._raw, None, b"".join(head))  # one send, no poller work
        else:
            self.transport.writeSequence(head)

    def writeBody(self, data: bytes) -> None:
        """
        Send a piece of the request body.
        """
        # An origin still taking the body is not silent (the transport's
        # buffer stops the upload when it stops reading).
        self._last = self.factory.clock.seconds()
        if self._chunkedUpload:
            self.transport.writeSequence((b"%x\r\n" % (len(data),), data, b"\r\n"))
        else:
            self.transport.write(data)
        self._unsentSeen = unsentBytes(self.transport)

    def endBody(self) -> None:
        """
        The request body is complete.
        """
        if self._chunkedUpload:
            self.transport.write(b"0\r\n\r\n")
        self._bodySent = True
        self._last = self.factory.clock.seconds()
        self._unsentSeen = unsentBytes(self.transport)

    def pauseReading(self) -> None:
        """
        Stop reading: the client takes nothing.  The read timeout does not
        run meanwhile: the origin is not silent, we are not listening.
        """
        if self.transport is not None and self._state != "closed":
            self._held = True
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Read again (after L{pauseReading}); the read timeout starts over.
        """
        if self._held and self.transport is not None and self._state != "closed":
            self._held = False
            self._last = self.factory.clock.seconds()
            self.transport.resumeProducing()

    def park(self) -> None:
        """
        Wait, idle, for the next request (the pool's side).
        """
        self._state = "idle"
        self.request = None
        self._last = self.factory.clock.seconds()
        if self._held:  # its answer ended while the client took nothing
            self._held = False
            self.transport.resumeProducing()

    def _checkTimer(self) -> None:
        self._timer = None
        if self._state == "closed":
            return
        settings = self.factory.settings
        limit = settings.poolIdleTimeout if self._state == "idle" else settings.readTimeout
        now = self.factory.clock.seconds()
        if self._held:
            self._last = now
        if self._state == "head":
            # An origin still taking what was sent (a slow upload, all of it
            # queued) is not silent either: 2 MB taken at 5 KB/s got a 504.
            unsent = unsentBytes(self.transport)
            if unsent < self._unsentSeen:
                self._last = now
            self._unsentSeen = unsent
        left = self._last + limit - now
        if left > 0:
            self._timer = self.factory.clock.callLater(min(left, self._step), self._checkTimer)
        else:
            self._timedOut()

    def abort(self) -> None:
        """
        Drop this connection at once (its request is gone or failed).
        """
        self.request = None
        if self._state != "closed":
            self._state = "closed"
            self.transport.abortConnection()

    # Input.

    def dataReceived(self, data: bytes) -> None:
        self._last = self.factory.clock.seconds()
        request = self.request
        channel = request.channel if request is not None else None
        if channel is None or channel._reading:
            self._dispatch(data)
            return
        # What this read makes for the client goes out in one piece at the
        # end of the reactor pass, as the HTTP site's answers do.
        channel._reading = True
        try:
            self._dispatch(data)
        finally:
            channel._reading = False
            if channel._out:
                channel.site.batch.add(channel)

    def _dispatch(self, data: bytes) -> None:
        state = self._state
        if state == "body":
            self._bodyReceived(data)
        elif state == "head":
            self._headReceived(data)
        elif state == "idle":
            # Nothing is asked: an origin that talks now is broken.
            self._close()

    def _headReceived(self, data: bytes) -> None:
        # Only what came since the last search is searched (with the few
        # bytes before it an end may span): an origin dripping its head a
        # byte at a time cost time in the square of its length.
        start = len(self._buffer)
        if self._buffer:
            self._buffer += data
            buffer: bytes | bytearray = self._buffer
        else:
            buffer = data
        while True:
            end = buffer.find(b"\r\n\r\n", max(start - 3, 0))
            # A bare LF blank line may end the head sooner (RFC 9112 2.2).
            bare = buffer.find(b"\n\n", max(start - 1, 0), end if end >= 0 else len(buffer))
            if bare >= 0:
                end, rest = bare, buffer[bare + 2 :]
            elif end >= 0:
                rest = buffer[end + 4 :]
            else:
                if len(buffer) > MAX_RESPONSE_HEAD or self._headBytes + len(buffer) > MAX_RESPONSE_HEADS:
                    self._fail("the origin's response head is too large")
                else:
                    self._buffer = buffer if isinstance(buffer, bytearray) else bytearray(buffer)
                return
            self._headBytes += end
            if end > MAX_RESPONSE_HEAD or self._headBytes > MAX_RESPONSE_HEADS:
                self._fail("the origin's response head is too large")
                return
            head = bytes(buffer[:end])
            rest = bytes(rest)
            self._buffer = b""
            self._bytesAfterHead = bool(rest)
            if not self._parseHead(head):
                return
            if self._state == "head":  # an informational response: skip it
                buffer, start = rest, 0
                continue
            if rest and self._state == "body":
                self._bodyReceived(rest)
            elif rest and self._state == "idle":
                self._close()
            return

    def _parseHead(self, head: bytes) -> bool:
        lines = head.split(b"\n")
        controls = _CONTROL.search(head) is not None  # one scan; rare
        match = _STATUS_LINE.match(lines[0].rstrip(b"\r"))
        if match is None:
            self._fail("the origin did not answer in HTTP/1.x")
            return False
        minor, codeText, reason = match.groups()
        code = int(codeText)
        if reason is None or _LOG_UNSAFE_REASON.search(reason) is not None:
            reason = http.RESPONSES.get(code, b"Unknown")
        if not 100 <= code <= 599:  # RFC 9110 15: others are invalid
            self._fail("the origin answered with an invalid status")
            return False
        headers: List[Tuple[bytes, bytes]] = []
        connection: set[bytes] = set()
        lengths: List[bytes] = []
        codings: List[bytes] = []
        coded = False
        for raw in lines[1:]:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):
                self._fail("the origin sent an invalid header line")
                return False
            value = value.strip(b" \t")
            if b"\r" in value or b"\x00" in value:
                self._fail("the origin sent an invalid header value")
                return False
            if controls:
                value = _CONTROL.sub(b" ", value).strip(b" \t")
            lower = name.lower()
            if lower in _DROP_RESPONSE:
                if lower == b"connection":
                    connection.update(t.strip().lower() for t in value.split(b","))
                elif lower == b"content-length":
                    lengths.extend(v.strip() for v in value.split(b","))
                elif lower == b"transfer-encoding":
                    coded = True
                    codings.extend(v.strip().lower() for v in value.split(b","))
                continue
            headers.append((name, value))
        if connection:
            headers = [(n, v) for n, v in headers if n.lower() not in connection]
        request = self.request
        assert request is not None
        if 100 <= code < 200:
            if code == 101:
                self._fail("the origin switched protocols, which was not asked for")
                return False
            self._interim += 1
            if self._interim > _MAX_INTERIM:
                self._fail("the origin sent interim responses without end")
                return False
            if code == 100:
                request.continued()
            else:
                request.interimResponse(code, reason, headers, len(head), b"1.%s" % (minor,))
            return True  # the caller reads on for the answer
        if code == 407:
            # Only a proxy asks for proxy credentials, and this one passes
            # no challenge on: its client would take it as its own sign-in
            # refused (Chrome refuses it, ERR_UNEXPECTED_PROXY_AUTH).
            self._fail("the origin answered 407 Proxy Authentication Required, which only a proxy may send")
            return False
        length = -1
        if lengths:
            if not all(v.isdigit() for v in lengths):
                self._fail("the origin sent an invalid Content-Length")
                return False
            # Leading zeros do not count (a client's are taken the same way).
            values = {decimal(v, 10**18) for v in lengths}
            if len(values) != 1 or 10**18 in values:
                self._fail("the origin sent an invalid Content-Length")
                return False
            length = values.pop()
        noBody = request.method == b"HEAD" or code in (204, 304)
        codings = [c for c in codings if c]
        others: List[bytes] = []
        if noBody:
            framing = "none"
            if code == 204:
                length = -1  # never a Content-Length in a 204 (RFC 9110 8.6)
        elif coded and minor == b"0":
            # Faulty framing (RFC 9112 6.1): nobody can tell where it ends.
            self._fail("the origin sent Transfer-Encoding in an HTTP/1.0 response")
            return False
        elif coded:
            # Chunked once and last (RFC 9112 sections 6.1 and 6.3), after
            # codings the client can undo: anything else, nobody can frame.
            if not codings or codings[-1] != b"chunked" or not _CODINGS.issuperset(codings[:-1]):
                self._fail("the origin sent an unknown or invalid Transfer-Encoding")
                return False
            framing = "chunked"
            others = codings[:-1]
            length = -1
        elif length >= 0:
            framing = "length"
        else:
            framing = "close"
        self._framing = framing
        # Both framings (RFC 9112 6.3): read by Transfer-Encoding, but an
        # origin that sends them may be out of step, so never reused.
        self._reusable = (
            minor == b"1" and b"close" not in connection and framing != "close" and not (coded and lengths)
        )
        if framing == "chunked":
            self._decoder = ChunkedDecoder(self._deliver, self._chunksDone)
        self._remaining = length
        self._state = "body"
        self._viaVersion = b"1.%s" % (minor,)
        request.responseStarted(
            code, reason, headers, framing, length if (length >= 0 and not codings) else -1, others
        )
        if self._state == "body" and (framing == "none" or (framing == "length" and length == 0)):
            if self._bytesAfterHead:
                # Bytes after an answer without a body: never the answer to
                # the client's next (pipelined) request, which this
                # connection would take up at once.
                self._reusable = False
            self._responseDone()
        return True

    def _deliver(self, data: bytes) -> None:
        request = self.request
        if request is not None:
            request.responseData(data)

    def _chunksDone(self, extra: bytes) -> None:
        if extra:
            self._reusable = False
        self._responseDone()

    def _bodyReceived(self, data: bytes) -> None:
        framing = self._framing
        if framing == "length":
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._deliver(data)
                return
            if len(data) > remaining:
                self._reusable = False  # bytes after the body: out of step
                data = data[:remaining]
            self._remaining = 0
            self._deliver(data)
            if self._state == "body":
                self._responseDone()
        elif framing == "chunked":
            try:
                self._decoder.dataReceived(data)
            except MalformedChunkedBody:
                self._broken("the origin sent a malformed chunked body")
        else:  # "close": everything until the end of the connection
            self._deliver(data)

    def _responseDone(self) -> None:
        request = self.request
        self._state = "done"
        self._decoder = None
        if request is not None:
            request.stopUpload()
        # Back in the pool before the client's next (pipelined) request
        # can ask for it.
        if self._reusable and self._bodySent and self.transport is not None:
            self.factory.pool.put(self)
        else:
            self._close()
        if request is not None:
            request.responseDone()

    # Failures.

    def _close(self) -> None:
        if self._state != "closed":
            self._state = "closed"
            self.request = None
            self.factory.pool.discard(self)  # not taken while it closes
            self.transport.loseConnection()
            self._closing = _watchOrigin(self.factory, self.transport)

    def _fail(self, why: str) -> None:
        """
        The response is unusable before it began: 502.
        """
        request = self.request
        self.abort()
        self.factory.log_.info("origin {origin}: {why}", origin=self.key[0].decode("ascii"), why=why)
        if request is not None:
            request.upstreamFailed(502, why, retry=False)

    def _broken(self, why: str) -> None:
        request = self.request
        self.abort()
        if request is not None:
            request.upstreamBroken(why)

    def _timedOut(self) -> None:
        state, request = self._state, self.request
        self.abort()
        if request is None:
            return
        seconds = self.factory.settings.readTimeout
        if state == "head":
            request.upstreamFailed(504, f"the origin did not answer within {seconds:g} seconds", retry=False)
        else:
            request.upstreamBroken(f"the origin sent nothing for {seconds:g} seconds")

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        state, request = self._state, self.request
        self._state = "closed"
        self.request = None
        cancelIfActive(self._timer)
        self._timer = None
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        self.factory.pool.discard(self)
        if request is None:
            return
        if state == "head":
            request.upstreamFailed(
                502, "the origin closed the connection without answering", retry=not self._buffer
            )
        elif state == "body":
            if self._framing != "close":
                request.upstreamBroken("the origin closed the connection before the end of the response")
            elif reason.check(error.ConnectionDone):
                request.responseDone()  # a clean close ends such a body
            else:
                request.upstreamBroken("the origin's connection broke off in the middle of the response")


class UpstreamPool:
    """
    Idle origin connections, per host and port, for the next request to the
    same origin.  At most C{perHost} per origin and C{total} in all; when
    full, the connection idle the longest is closed.
    """

    def __init__(self, perHost: int, total: int) -> None:
        self.perHost = perHost
        self.total = total
        self._idle: Dict[Tuple[bytes, int], List[UpstreamConnection]] = {}
        #: Every idle connection, the longest idle first.
        self._order: Dict[UpstreamConnection, None] = {}

    def __len__(self) -> int:
        return len(self._order)

    def take(self, key: Tuple[bytes, int]) -> Optional[UpstreamConnection]:
        """
        An idle connection to C{key}, the most recently used, or L{None}.
        """
        idle = self._idle.get(key)
        if not idle:
            return None
        connection = idle.pop()
        if not idle:
            del self._idle[key]
        del self._order[connection]
        return connection

    def put(self, connection: UpstreamConnection) -> None:
        """
        Keep C{connection} for later, or close it when there is no room.
        """
        if self.perHost <= 0 or self.total <= 0:
            connection._close()
            return
        idle = self._idle.get(connection.key)
        if idle is not None and len(idle) >= self.perHost:
            self._drop(idle[0])
        elif len(self._order) >= self.total:
            self._drop(next(iter(self._order)))
        connection.park()
        self._idle.setdefault(connection.key, []).append(connection)
        self._order[connection] = None

    def _drop(self, connection: UpstreamConnection) -> None:
        self.discard(connection)
        connection._close()

    def discard(self, connection: UpstreamConnection) -> None:
        """
        Forget C{connection} (it closed while idle).
        """
        if self._order.pop(connection, 0) is None:
            idle = self._idle[connection.key]
            idle.remove(connection)
            if not idle:
                del self._idle[connection.key]

    def closeAll(self) -> None:
        """
        Close every idle connection.
        """
        connections = list(self._order)
        self._idle.clear()
        self._order.clear()
        for connection in connections:
            connection._close()


def _watchOrigin(factory: "ProxyFactory", transport: Any) -> ClosingWatch:
    """
    Watch an origin's connection the proxy closed: it is aborted once the
    origin takes nothing of what is left for C{--proxy-read-timeout}.  An
    origin that had stopped reading kept it, and its file descriptor, for
    ever, unseen by every limit: a client could leak one per tunnel.
    """
    timedOut = lambda: factory.stats.count("origin_timeouts")  # noqa: E731
    return ClosingWatch(factory.clock, transport, factory.settings.readTimeout, timedOut)


#: Seconds a CONNECT tunnel one side has ended its half of stays open with
#: nothing going either way.
HALF_CLOSED_TUNNEL_TIMEOUT = 30.0


@implementer(IHalfCloseableProtocol)
class TunnelUpstream(Protocol):
    """
    The origin's side of a CONNECT tunnel; the client's side is the
    L{ProxyChannel} the tunnel was asked on.
    """

    request: Optional["ProxyRequest"] = None
    channel: Optional["ProxyChannel"] = None
    _clientDone = False
    _originDone = False
    _closed = False
    _idle: IdleTimeout | None = None
    _closing: ClosingWatch | None = None
    _originGone = False

    def __init__(self, factory: "ProxyFactory", key: Tuple[bytes, int]) -> None:
        self.factory = factory
        self.key = key

    connecting: Optional["_Connecting"] = None

    def connectionMade(self) -> None:
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.request.connected(connecting, self)

    def pauseReading(self) -> None:
        if not self._closed:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        if not self._closed:
            self.transport.resumeProducing()

    def open(self, request: "ProxyRequest", channel: "ProxyChannel") -> None:
        """
        Start carrying bytes between C{channel}'s client and the origin.
        """
        self.request = request
        self.channel = channel
        self._idle = IdleTimeout(self.factory.clock, self.factory.settings.tunnelIdleTimeout, self._timedOut)
        self.transport.registerProducer(_HoldReading(channel, "tunnel"), True)

    def fromClient(self, data: bytes) -> None:
        """
        Bytes from the client, for the origin.
        """
        if self._closed:
            return
        self.request.bytesUp += len(data)  # type: ignore[union-attr]
        self._idle.touch()  # type: ignore[union-attr]
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or self._closed:
            return
        self.request.bytesDown += len(data)  # type: ignore[union-attr]
        self._idle.touch()  # type: ignore[union-attr]
        channel.write(data)

    def clientEnded(self) -> None:
        """
        The client will send nothing more: tell the origin.
        """
        self._clientDone = True
        if self._originDone:
            self.close()
        elif not self._closed:
            shutWriting(self.transport)
            self._halfClosed()

    def readConnectionLost(self) -> None:
        self._originDone = True
        channel = self.channel
        if channel is None:
            return
        if self._clientDone or not channel.canHalfClose():
            self.close()
        else:
            channel.flushOutput()
            shutWriting(channel.transport)
            self._halfClosed()

    def _halfClosed(self) -> None:
        """
        One side ended its half: the tunnel closes once nothing has gone
        either way for L{HALF_CLOSED_TUNNEL_TIMEOUT} (as HAProxy's
        C{timeout client-fin}), not the tunnel idle timeout: a peer that
        never ends its own half kept a tunnel the client had closed, and
        its place under the limits, for 300 s.
        """
        timeout = min(self.factory.settings.tunnelIdleTimeout, HALF_CLOSED_TUNNEL_TIMEOUT)
        if self._idle is not None and self._idle.timeout > timeout:
            self._idle.cancel()
            self._idle = IdleTimeout(self.factory.clock, timeout, self._timedOut)

    def writeConnectionLost(self) -> None:
        pass

    def close(self) -> None:
        """
        End the tunnel: close both sides (after what is buffered is sent).
        """
        if self._closed:
            return
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        self.transport.loseConnection()
        if not self._originGone:
            self._closing = _watchOrigin(self.factory, self.transport)
        channel = self.channel
        if channel is not None:
            channel.loseConnection()

    def _timedOut(self) -> None:
        self.factory.stats.count("tunnel_timeouts")
        self.close()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self._originGone = True
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        request = self.request
        channel = self.channel
        if not self._closed and channel is not None and reason.check(error.ConnectionLost):
            # The origin reset the tunnel: so is the client's side, which a
            # clean close (or close_notify) would show as a normal end.
            self._closed = True
            if self._idle is not None:
                self._idle.cancel()
            channel.transport.abortConnection()
        self.close()
        if request is not None:
            self.request = None
            request.tunnelClosed()


#: Seconds an attempt to connect to one of an origin's addresses has alone
#: before the next address is tried too (RFC 8305's Connection Attempt
#: Delay, as browsers and curl use).
CONNECT_ATTEMPT_DELAY = 0.25
#: Attempts to connect racing at once for one request: a name with many
#: addresses that drop what is sent to them made one request hold 40
#: sockets connecting (one every 0.25 s until the connect timeout).
MAX_RACING_ATTEMPTS = 4


def _interleaved(addresses: List[str]) -> List[str]:
    """
    C{addresses} (in the resolver's order of preference) with their families
    taking turns, the first address's first (RFC 8305, 4): a family that
    does not get through is not tried again and again before the other.
    """
    first = [a for a in addresses if (":" in a) == (":" in addresses[0])]
    other = [a for a in addresses if (":" in a) != (":" in addresses[0])]
    mixed: List[str] = []
    for pair in itertools.zip_longest(first, other):
        mixed.extend(a for a in pair if a is not None)
    return mixed


class _Connecting(ClientFactory):
    """
    One attempt to connect to one address of an origin for a request.
    """

    noisy = False

    def __init__(self, request: "ProxyRequest", protocol: Callable[[], Protocol]) -> None:
        self.request = request
        self._protocol = protocol
        self.connected = False

    def buildProtocol(self, addr: object) -> Protocol:
        self.connected = True
        protocol = self._protocol()
        protocol.connecting = self  # type: ignore[attr-defined]
        return protocol

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.request.connectFailed(self, reason)


class ProxyRequest(http.Request):
    """
    One proxied request: checked, routed, sent to its origin with its body
    streaming, and answered with the origin's response as it arrives; or a
    CONNECT tunnel.

    @ivar bytesUp: body bytes sent to the origin (for a tunnel, everything
        the client sent through it).
    @ivar bytesDown: body bytes received from the origin.
    @ivar user: the proxy user it was authenticated as, if any.
    @ivar rawRequestLine: the request line as it came, when it did not
        parse (it is logged so).
    """

    channel: "ProxyChannel"
    content = None
    bodyLength: Optional[int] = 0
    bodyComplete = False
    wantsContinue = False
    user: Optional[str] = None
    #: The request line, when it did not parse (see the access log).
    rawRequestLine: Optional[bytes] = None
    bytesUp = 0
    bytesDown = 0
    startedAt = 0.0
    code = 0
    _started = False
    _gone = False
    _ended = False
    _upstream: Any = None
    _headSent = False
    _pending: Optional[List[bytes]] = None
    _pendingBytes = 0
    _uploadProducer = False
    _timer: Any = None
    #: Attempts to connect under way, with their connectors (the request's
    #: own once it has addresses; this empty one is only read).
    _attempts: Dict[_Connecting, Any] = {}
    #: Starts the attempt to the next address (see L{CONNECT_ATTEMPT_DELAY}).
    _nextAttempt: Any = None
    #: Attempts past the first counted in the listeners' connection budget,
    #: and that budget, taken at the first attempt (see L{_countRacing}).
    _racingCounted = 0
    _racingBudget: Any = None
    _addresses: List[str] = []
    _retried = False
    _reused = False
    clientHost: Optional[str] = None
    _timedOutWhile = ""
    _tunnel = False
    _tunnelCounted = False
    _lengthSent = False
    #: Whether C{Expect: 100-continue} went to the origin, and whether the
    #: client has had its C{100 Continue}.
    _expectSent = False
    _continueSent = False
    #: Sends the proxy's own 100 Continue (L{CONTINUE_WAIT}).
    _continueCall: Any = None
    #: Bytes of the origin's informational responses passed on.
    _interimBytes = 0
    _target: Tuple[bytes, int, bytes, bytes] = (b"", 0, b"", b"")

    def gotLength(self, length: Optional[int]) -> None:
        # The body is not kept: it goes to the origin as it comes.
        channel = self.channel
        self.bodyLength = length
        self.clientHost = channel.clientHost
        self.method = channel._command
        self.uri = channel._path
        self.clientproto = channel._version
        self.startedAt = channel.factory.clock.seconds()

    def handleContentChunk(self, data: bytes) -> None:
        if self._ended or self._gone:
            return
        if self._headSent:
            self.bytesUp += len(data)
            self._upstream.writeBody(data)
            return
        if self._pending is None:
            self._pending = []
        self._pending.append(data)
        self._pendingBytes += len(data)
        if self._pendingBytes > _PENDING_LIMIT:
            self.channel.holdReading("connecting")

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path
        self.args = {}
        self.bodyComplete = True
        if self._ended or self._gone:
            return
        if not self._started:
            self.start()
        elif self._headSent and self.bodyLength != 0:
            self._endBody()

    def start(self) -> None:
        """
        Check the client and its credentials, then route the request (called
        once its headers are in).
        """
        if self._started:
            return
        self._started = True
        channel = self.channel
        factory = channel.factory
        if channel.refusal is not None:
            factory.stats.count("refused_clients")
            self.fail(403, channel.refusal, close=True)
            return
        hosts = self.requestHeaders.getRawHeaders(b"host")
        if hosts is not None and len(hosts) > 1:
            # RFC 9112, 3.2 (as nginx): which one an origin or a cache in
            # between would take is anyone's guess.
            self.fail(400, "more than one Host header", close=True)
            return
        if factory.authenticator is not None:
            values = self.requestHeaders.getRawHeaders(b"proxy-authorization")
            if not values or len(values) != 1:
                self._askForCredentials()
                return
            d = defer.ensureDeferred(
                factory.authenticator.authenticate(
                    values[0], channel.clientHost, lambda: not (self._gone or self._ended), connection=channel
                )
            )
            d.addCallbacks(self._authenticated, self._authError)
            return
        self._route()

    def _authenticated(self, user: Optional[str]) -> None:
        if self._gone or self._ended:
            return
        if user is None:
            self.channel.factory.stats.count("auth_failures")
            self._askForCredentials()
            return
        self.user = user
        self._route()

    def _authError(self, failure: Failure) -> None:
        self.channel.factory.log_.failure("checking proxy credentials", failure)
        if not (self._gone or self._ended):
            self.fail(500, "the credentials could not be checked")

    def _askForCredentials(self) -> None:
        self.fail(
            407,
            "this proxy needs a user name and password",
            extra=b'Proxy-Authenticate: Basic realm="netsuite proxy", charset="UTF-8"\r\n',
        )

    def _route(self) -> None:
        factory = self.channel.factory
        if self.method == b"CONNECT":
            self._routeTunnel()
            return
        uri = self.uri
        if uri.startswith(b"/") or uri == b"*":
            self.fail(
                400,
                "this is an HTTP proxy: configure it as your client's proxy "
                "(it takes absolute URLs such as http://example.com/, and CONNECT host:port)",
            )
            return
        try:
            target = parseTarget(uri)
        except _BadTarget as e:
            self.fail(400, str(e))
            return
        if self.method == b"OPTIONS" and target[2] == b"/" and not uri.partition(b"://")[2].count(b"/"):
            target = (target[0], target[1], b"*", target[3])
        if self.method in (b"OPTIONS", b"TRACE"):
            hops = self.requestHeaders.getRawHeaders(b"max-forwards")
            if hops is not None:
                if len(hops) != 1 or not hops[0].strip(b" \t").isdigit():
                    self.fail(400, "Max-Forwards must be one number")
                    return
                left = decimal(hops[0].strip(b" \t"), 10**9)
                if left == 0:
                    self._answerAsFinalRecipient()
                    return
                self.requestHeaders.setRawHeaders(b"max-forwards", [b"%d" % (left - 1,)])
        self._target = target
        connection = factory.pool.take((target[0], target[1]))
        if connection is not None:
            self._send(connection, reused=True)
        else:
            self._resolve()

    def _routeTunnel(self) -> None:
        factory = self.channel.factory
        if self.bodyLength != 0:
            self.fail(400, "a CONNECT request cannot have a body", close=True)
            return
        try:
            host, port = _parseAuthority(self.uri, None)
        except _BadTarget as e:
            self.fail(400, f"CONNECT needs host:port ({e})")
            return
        try:
            factory.rules.checkConnectPort(port)
        except Refusal as e:
            factory.stats.count("refused_destinations")
            self.fail(403, str(e))
            return
        if factory.settings.maxTunnels and factory.tunnelsOpen >= factory.settings.maxTunnels:
            factory.stats.count("refused_tunnels")
            self.fail(503, "too many tunnels are open; try again later")
            return
        # Counted from now, while it connects, so that the limit holds.
        factory.tunnelsOpened()
        self._tunnel = self._tunnelCounted = True
        self._target = (host, port, b"", self.uri)
        self._resolve()

    # Resolving and connecting.

    def _resolve(self) -> None:
        factory = self.channel.factory
        host = self._target[0]
        self._timer = factory.clock.callLater(factory.settings.connectTimeout, self._connectTimedOut)
        literal = _literalAddress(host)
        if literal is not None:
            self._resolved([literal])
            return
        self._timedOutWhile = "resolving"
        running = getattr(factory.resolver, "isRunning", None)
        if running is not None and running(host.decode("ascii"), self._target[1]):
            # It joins a lookup running (netsuite's resolver): no thread,
            # and no turn (it waited behind its own client's lookups).
            self._lookUp()
            return
        factory.lookups.run(self.clientHost or "", self._stillResolving, self._lookUp)

    def _stillResolving(self) -> bool:
        """
        Whether this request still waits for its lookup (not ended, gone,
        or timed out while its lookup waited its turn).
        """
        return not (self._gone or self._ended) and self._timer is not None

    def _lookUp(self) -> defer.Deferred[Any]:
        """
        Look the target's name up (in its turn among the client's): the
        Deferred fires when the lookup has ended.
        """
        factory = self.channel.factory
        host, port = self._target[0], self._target[1]
        receiver = _Addresses()
        receiver.deferred.addCallback(self._resolved)
        try:
            factory.resolver.resolveHostName(receiver, host.decode("ascii"), port)
        except Exception as e:
            factory.log_.info("resolving {host}: {why!r}", host=host.decode("ascii"), why=e)
            if not receiver.deferred.called:
                self._cancelTimer()
                factory.stats.count("dns_failures")
                self.fail(502, f"could not resolve the host name {host.decode('ascii')}: {_errorText(e)}")
                return defer.succeed(None)
        return receiver.deferred

    def _resolved(self, addresses: List[str]) -> None:
        if self._gone or self._ended or self._timer is None:
            return
        factory = self.channel.factory
        host, port = self._target[0], self._target[1]
        if not addresses:
            self._cancelTimer()
            factory.stats.count("dns_failures")
            self.fail(502, f"could not resolve the host name {host.decode('ascii')}")
            return
        # Once, in order (getaddrinfo's preference), every address checked.
        addresses = list(dict.fromkeys(addresses))
        try:
            factory.rules.checkDestination(addresses, port)
        except Refusal as e:
            self._cancelTimer()
            factory.stats.count("refused_destinations")
            self.fail(403, f"{e}; this proxy does not go there")
            return
        self._addresses = _interleaved(addresses)
        self._attempts = {}
        self._timedOutWhile = "connecting"
        self._connectNext()

    def _connectNext(self) -> None:
        """
        Start an attempt to connect to the next address; while it has not
        connected, the one after it starts L{CONNECT_ATTEMPT_DELAY} seconds
        later (RFC 8305), the attempts racing: an address that drops what
        is sent to it (IPv6 broken on the way) holds the others up that
        long, not the whole connect timeout.  At most
        L{MAX_RACING_ATTEMPTS} race; one that fails makes way for the next.
        """
        self._nextAttempt = None
        factory = self.channel.factory
        if self._attempts and factory.budget is not None and factory.budget.full(None):
            # No socket to spare in the connection budget: the attempts
            # under way race alone until one fails or room is made.
            self._nextAttempt = factory.clock.callLater(CONNECT_ATTEMPT_DELAY, self._connectNext)
            return
        address = self._addresses[0]
        self._addresses = self._addresses[1:]
        key = (self._target[0], self._target[1])
        protocol: Callable[[], Protocol]
        if self._tunnel:
            protocol = lambda: TunnelUpstream(factory, key)  # noqa: E731
        else:
            protocol = lambda: UpstreamConnection(factory, key)  # noqa: E731
        attempt = _Connecting(self, protocol)
        self._attempts[attempt] = None
        self._racingBudget = factory.budget
        self._countRacing()
        if self._addresses and len(self._attempts) < MAX_RACING_ATTEMPTS:
            self._nextAttempt = factory.clock.callLater(CONNECT_ATTEMPT_DELAY, self._connectNext)
        # Our own timer ends the attempt; the reactor's is only a backstop.
        try:
            connector = factory.connector.connectTCP(
                address, self._target[1], attempt, timeout=factory.settings.connectTimeout + 5
            )
        except Exception:
            self.connectFailed(attempt, Failure())
            return
        if attempt in self._attempts:
            self._attempts[attempt] = connector

    def _cancelNextAttempt(self) -> None:
        cancelIfActive(self._nextAttempt)
        self._nextAttempt = None

    def _stopConnecting(self) -> None:
        """
        Stop every attempt to connect still under way, and the next one.
        """
        self._cancelNextAttempt()
        attempts, self._attempts = self._attempts, {}
        self._countRacing()
        for attempt, connector in attempts.items():
            if connector is not None and not attempt.connected:
                connector.stopConnecting()

    def _countRacing(self) -> None:
        """
        Count the attempts racing past the first in the
        connection budget the proxy's listeners share: the first is the
        origin's socket, counted with the client's connection, and each
        other one is a socket more (a proxy of 1,000 connections to names
        of silent addresses held 4,000 sockets where the budget counted
        2,000).
        """
        extra = max(0, len(self._attempts) - 1)
        budget = self._racingBudget
        if budget is None or extra == self._racingCounted:
            return
        if extra > self._racingCounted:
            budget.opened(None, extra - self._racingCounted)
        else:
            budget.closed(None, self._racingCounted - extra)
        self._racingCounted = extra

    def connectFailed(self, attempt: _Connecting, reason: Failure) -> None:
        """
        An attempt to connect ended without a connection.
        """
        if self._attempts.pop(attempt, False) is False:
            return
        self._countRacing()
        if self._gone or self._ended or self._timer is None:
            return
        if self._addresses:
            # The next address now, not at its turn.
            self._cancelNextAttempt()
            self._connectNext()
            return
        if self._attempts:
            return  # others still race
        self._cancelTimer()
        factory = self.channel.factory
        where = self._describeTarget()
        factory.stats.count("connect_failures")
        if reason.check(error.ConnectionRefusedError):
            self.fail(502, f"the origin {where} refused the connection")
        elif reason.check(error.TimeoutError):
            self.fail(504, f"timed out connecting to {where}")
        else:
            self.fail(502, f"could not connect to {where}: {_errorText(reason.value)}")

    def connected(self, attempt: _Connecting, protocol: Protocol) -> None:
        """
        The origin accepted the connection C{attempt} made.
        """
        if attempt not in self._attempts or self._gone or self._ended:
            protocol.transport.abortConnection()  # type: ignore[union-attr]
            return
        del self._attempts[attempt]
        self._stopConnecting()  # the others lost the race
        self._cancelTimer()
        if self._tunnel:
            self._openTunnel(protocol)  # type: ignore[arg-type]
        else:
            self._send(protocol, reused=False)  # type: ignore[arg-type]

    def _connectTimedOut(self) -> None:
        self._timer = None
        if self._gone or self._ended:
            return
        self._stopConnecting()
        factory = self.channel.factory
        seconds = factory.settings.connectTimeout
        factory.stats.count("connect_timeouts")
        if self._timedOutWhile == "resolving":
            self.fail(504, f"timed out resolving {self._target[0].decode('ascii')} ({seconds:g} seconds)")
        else:
            self.fail(504, f"timed out connecting to {self._describeTarget()} ({seconds:g} seconds)")

    def _cancelTimer(self) -> None:
        cancelIfActive(self._timer)
        self._timer = None

    def _describeTarget(self) -> str:
        host, port = self._target[0], self._target[1]
        text = host.decode("ascii")
        return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    # Forwarding.

    def _forwardHead(self) -> List[bytes]:
        host, port, path, authority = self._target
        headers = self.requestHeaders
        drop = _DROP_REQUEST
        connection = headers.getRawHeaders(b"connection")
        if connection:
            drop = drop | {t.strip().lower() for v in connection for t in v.split(b",")}
        out = [self.method, b" ", path, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
        hadLength = False
        for name, values in headers.getAllRawHeaders():
            lower = name.lower()
            if lower in drop:
                if lower == b"content-length":
                    hadLength = True
                continue
            if b"_" in name:
                # As nginx drops them: CGI, WSGI and PHP turn "-" into "_",
                # so X_Forwarded_For could pass there for X-Forwarded-For.
                continue
            for value in values:
                if _CONTROL.search(value) is not None:
                    value = _CONTROL.sub(b" ", value).strip(b" \t")
                out += (name, b": ", value, b"\r\n")
        out.append(b"Via: 1.1 netsuite\r\n" if self.clientproto != b"HTTP/1.0" else b"Via: 1.0 netsuite\r\n")
        if self.channel.factory.settings.forwardedFor:
            client = self.channel.clientHost or "unknown"
            node = f'"[{client}]"' if ":" in client else client
            out += (
                b"X-Forwarded-For: ", client.encode("ascii"), b"\r\n",
                b"Forwarded: for=", node.encode("ascii"), b";proto=http\r\n",
            )
        if self._expectSent:
            out.append(b"Expect: 100-continue\r\n")
        if self.bodyLength is None:
            out.append(b"Transfer-Encoding: chunked\r\n")
        elif self.bodyLength or hadLength:
            out.append(b"Content-Length: %d\r\n" % (self.bodyLength,))
        out.append(b"\r\n")
        return out

    def _send(self, connection: UpstreamConnection, reused: bool) -> None:
        self._upstream = connection
        self._reused = reused
        bodyFollows = self.bodyLength != 0
        # RFC 9110 10.1.1: the expectation goes on, so that the origin can
        # refuse (401, 413) before the body is sent, unless some of the
        # body came anyway.
        self._expectSent = (
            bodyFollows and self.wantsContinue and not self.bodyComplete and not self._pending
            and not self.startedWriting
        )
        connection.send(self, self._forwardHead(), self.bodyLength is None, bodyFollows)
        if self._upstream is not connection:  # failed while sending
            return
        self._headSent = True
        if not bodyFollows:
            return
        channel = self.channel
        if self._expectSent:
            # The origin's own 100 is passed on (L{continued}); one that
            # ignores the expectation (or an HTTP/1.0 one) gets the body
            # after CONTINUE_WAIT all the same.
            self._continueCall = channel.factory.clock.callLater(CONTINUE_WAIT, self.continued)
        elif self.wantsContinue:
            self.continued()
        pending, self._pending, self._pendingBytes = self._pending, None, 0
        if pending:
            for data in pending:
                self.bytesUp += len(data)
                connection.writeBody(data)
        channel.releaseReading("connecting")
        if self.bodyComplete:
            self._endBody()
        else:
            connection.transport.registerProducer(_HoldReading(channel, "upload"), True)
            self._uploadProducer = True

    def continued(self) -> None:
        """
        Send the client its C{100 Continue}, once: the origin sent one, or
        did not within L{CONTINUE_WAIT}, or the expectation was not
        forwarded.  Nothing once the body is in or the answer began.
        """
        self._cancelContinue()
        if self._continueSent or self._gone or self._ended:
            return
        self._continueSent = True
        if self.wantsContinue and not self.bodyComplete and not self.startedWriting:
            self.channel.write(_CONTINUE)

    def _cancelContinue(self) -> None:
        cancelIfActive(self._continueCall)
        self._continueCall = None

    def _endBody(self) -> None:
        self.stopUpload()
        if self._upstream is not None:
            self._upstream.endBody()

    def stopUpload(self) -> None:
        """
        Stop pacing the client's upload by the origin connection.
        """
        if self._uploadProducer:
            self._uploadProducer = False
            connection = self._upstream
            if connection is not None and connection.transport is not None:
                connection.transport.unregisterProducer()
            if self.channel is not None:
                self.channel.releaseReading("upload")

    # The response.

    def interimResponse(
        self, code: int, reason: bytes, headers: List[Tuple[bytes, bytes]], size: int, via: bytes
    ) -> None:
        """
        An informational (1xx) response from the origin, other than C{100
        Continue}: passed on (RFC 9110, 15.2), so that a browser gets its
        C{103 Early Hints} through the proxy.  Never to an HTTP/1.0 client,
        which cannot take one, and only up to L{MAX_RESPONSE_HEAD} bytes of
        them for one request (the client's connection is not yet paced by
        the origin's).

        @param size: the response head's size as the origin sent it.
        @param via: the origin's HTTP version, for C{Via}.
        """
        if self._gone or self._ended or self.startedWriting or self.clientproto != b"HTTP/1.1":
            return
        self._interimBytes += size
        if self._interimBytes > MAX_RESPONSE_HEAD:
            return
        out = self._headLines(code, reason, headers, via)
        out.append(b"\r\n")
        self.channel.writeSequence(out)

    def _headLines(self, code: int, reason: bytes, headers: List[Tuple[bytes, bytes]], via: bytes) -> List[bytes]:
        """
        The start of a response head for the client: the status line, the
        origin's C{headers} and C{Via} (C{via}: the origin's HTTP version).
        """
        out = [b"HTTP/1.1 %d " % (code,), reason, b"\r\n"]
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        out += (b"Via: ", via, b" netsuite\r\n")
        return out

    def responseStarted(
        self,
        code: int,
        reason: bytes,
        headers: List[Tuple[bytes, bytes]],
        framing: str,
        length: int,
        codings: List[bytes] = [],
    ) -> None:
        """
        The origin's response head is in: send ours.

        @param framing: C{"none"}, C{"length"}, C{"chunked"} or C{"close"}.
        @param length: the body's length, or -1.
        @param codings: transfer codings applied besides C{chunked} (which
            the client must still undo).
        """
        self._cancelContinue()  # no 100 Continue after this
        if self._gone or self._ended:
            return
        if codings and self.clientproto != b"HTTP/1.1":
            self._upstream.abort()
            self._upstream = None
            self.fail(502, "the origin used a transfer coding an HTTP/1.0 client cannot take")
            return
        channel = self.channel
        if not self.bodyComplete:
            channel.persistent = False  # the rest of the body is not read
        self.code = code
        self.code_message = reason
        out = self._headLines(code, reason, headers, self._upstream._viaVersion)
        if not any(name.lower() == b"date" for name, _ in headers):
            # RFC 9110 6.6.1: a recipient with a clock forwarding a response
            # without one MUST add it.
            out += (b"Date: ", httpDate(channel.factory.clock.seconds()), b"\r\n")
        if length >= 0:
            out.append(b"Content-Length: %d\r\n" % (length,))
            self._lengthSent = True
        elif framing in ("chunked", "close"):
            if self.clientproto == b"HTTP/1.1":
                if codings:
                    out += (b"Transfer-Encoding: ", b", ".join(codings), b", chunked\r\n")
                else:
                    out.append(b"Transfer-Encoding: chunked\r\n")
                self.chunked = 1
        connection = channel.settleConnection(self.clientproto, length >= 0 or framing == "none")
        if connection is not None:
            out += (b"Connection: ", connection, b"\r\n")
        out.append(b"\r\n")
        self.startedWriting = 1
        channel.writeSequence(out)
        channel.followUpstream(self._upstream)

    def responseData(self, data: bytes) -> None:
        """
        A piece of the origin's response body.
        """
        self.bytesDown += len(data)
        if self._gone or self._ended:
            return
        self.sentLength += len(data)
        if self.chunked:
            self.channel.writeSequence((b"%x\r\n" % (len(data),), data, b"\r\n"))
        else:
            self.channel.write(data)

    def responseDone(self) -> None:
        """
        The origin's response is complete.
        """
        self.stopUpload()
        self._upstream = None
        if self._gone or self._ended:
            return
        self.channel.followUpstream(None)
        self.finish()

    def upstreamFailed(self, status: int, why: str, retry: bool) -> None:
        """
        The origin connection failed before a response began.

        @param retry: the origin closed a reused connection without a word
            (it timed it out as we sent): an idempotent request without a
            body is sent once more on a new connection.
        """
        self.stopUpload()
        self._cancelContinue()
        self._upstream = None
        self._headSent = False
        if self._gone or self._ended:
            return
        if (
            retry
            and self._reused
            and not self._retried
            and self.bodyLength == 0
            and self.method in _IDEMPOTENT  # others must not reach the origin twice
        ):
            self._retried = True
            self._resolve()
            return
        self.channel.factory.stats.count("upstream_failures")
        self.fail(status, why, close=self.bodyLength != 0)

    def upstreamBroken(self, why: str) -> None:
        """
        The origin connection failed during the response: the client's
        connection is closed without ending the response, so the client
        sees it cut.
        """
        self.stopUpload()
        self._upstream = None
        if self._gone or self._ended:
            return
        factory = self.channel.factory
        factory.stats.count("upstream_failures")
        factory.log_.info("{target}: {why}", target=_logField(self.uri), why=why)
        self._ended = True
        self.finished = 1
        channel = self.channel
        channel.followUpstream(None)
        channel.persistent = False
        factory.log(self)
        if self.chunked or self.method == b"HEAD" or self._lengthSent:
            channel.loseConnection()  # the client can tell the answer is short
        else:
            channel.flushOutput()
            channel.transport.abortConnection()  # only a reset tells it

    # Answers made here.

    def fail(self, status: int, message: str, *, close: bool = False, extra: bytes = b"") -> None:
        """
        Answer with C{status} and a one-line text body; close the client's
        connection after it when C{close}, or when the request's body was
        not all read, or for a failed CONNECT but a 407: what a client sends
        after a CONNECT is meant for the tunnel, not read as requests (a
        request sent with it went where it named).  After a 407 the client
        may ask again on the connection, with credentials, unless it had
        already sent bytes for the tunnel.
        """
        self._releaseTunnel()
        if self._gone or self._ended:
            return
        # Bytes already sent after a CONNECT were meant for its tunnel: after
        # a 407 too they are not read as requests (a GET pipelined there
        # was served).
        if self.method == b"CONNECT" and (status != 407 or self.channel.hasInputWaiting()):
            close = True
        if self.startedWriting:
            self.upstreamBroken(message)
            return
        self._answer(status, _TEXT_PLAIN, _textBody(message), close=close, extra=extra)

    def _answer(self, status: int, contentType: bytes, body: bytes, *, close: bool = False, extra: bytes = b"") -> None:
        """
        Answer with the proxy's own response (see L{fail}).
        """
        channel = self.channel
        if close or not self.bodyComplete:
            channel.persistent = False
        self.code = status
        head = self.method == b"HEAD"
        response = _response(
            status, contentType, body, extra, channel.settleConnection(self.clientproto, True),
            channel.factory.clock.seconds(), head,
        )
        self.startedWriting = 1
        self.sentLength = 0 if head else len(body)
        channel.write(response)
        self.finish()

    def _answerAsFinalRecipient(self) -> None:
        """
        Answer an C{OPTIONS} or C{TRACE} whose C{Max-Forwards} is 0 here
        (RFC 9110 section 7.6.2): C{TRACE} gets its request back, without
        credentials or cookies.
        """
        if self.method != b"TRACE":
            self._answer(200, _TEXT_PLAIN, _textBody("Max-Forwards is 0: this proxy answers, the origin was not asked"))
            return
        lines = [b"%s %s %s\r\n" % (self.method, self.uri, self.clientproto)]
        for name, values in self.requestHeaders.getAllRawHeaders():
            if name.lower() not in _TRACE_HIDDEN:
                lines += [b"%s: %s\r\n" % (name, value) for value in values]
        lines.append(b"\r\n")
        self._answer(200, b"message/http", b"".join(lines))

    def finish(self) -> None:
        if self._gone or self._ended or self.finished:
            return
        self._ended = True
        if self.bodyComplete:
            http.Request.finish(self)
            return
        # Answered before the body was all read: close after the answer
        # (the channel must not parse the rest of the body as requests).
        self.queued = 1
        http.Request.finish(self)
        self.channel.loseConnection()

    # Tunnels.

    def _openTunnel(self, tunnel: TunnelUpstream) -> None:
        self.channel.factory.stats.count("tunnels")
        self.code = 200
        self.startedWriting = 1
        self._upstream = tunnel
        tunnel.open(self, self.channel)
        self.channel.startTunnel(tunnel, _ESTABLISHED)

    def tunnelClosed(self) -> None:
        """
        The tunnel's origin side closed.
        """
        if self._ended or self.channel is None:
            return
        self._ended = True
        self._upstream = None
        self._releaseTunnel()
        self.channel.factory.log(self)

    def _releaseTunnel(self) -> None:
        """
        This CONNECT no longer counts against the tunnel limit.
        """
        if self._tunnelCounted:
            self._tunnelCounted = False
            self.channel.factory.tunnelsClosed()

    # The client.

    def _leaveOrigin(self) -> Any:
        """
        Stop resolving or connecting for this request, and let go of its
        origin connection (returned).
        """
        self._cancelTimer()
        self._cancelContinue()
        self._stopConnecting()
        upstream, self._upstream = self._upstream, None
        return upstream

    def endHere(self, status: int) -> bool:
        """
        The proxy ends this request while its body is being received (a
        malformed body, or one the client stopped sending, or a CONNECT
        whose client left), and closes the client's connection: the origin
        is left, a tunnel's place given back, and the access log shows
        C{status} if none of the answer was sent, else the status sent and
        the bytes so far.

        @return: whether C{status} may still be answered (none of the
            answer was sent).
        """
        answer = not self.startedWriting
        if not self._started or self._ended or self._gone:
            return answer
        self._ended = True
        self.stopUpload()
        upstream = self._leaveOrigin()
        if isinstance(upstream, TunnelUpstream):
            upstream.close()
        elif upstream is not None:
            upstream.abort()
        self._releaseTunnel()
        if answer:
            self.code = status
        self.channel.factory.log(self)
        return answer

    def connectionLost(self, reason: Failure) -> None:
        factory = self.channel.factory
        self._gone = True
        upstream = self._leaveOrigin()
        if isinstance(upstream, TunnelUpstream):
            upstream.close()
            if not self._ended:
                self._ended = True
                factory.log(self)
        elif upstream is not None:
            upstream.abort()
        if self._started and not self._ended:
            # Gone before its answer ended: logged as nginx logs it, 499
            # when none of the answer was sent, unless the proxy dropped it
            # itself at the end of its stop's grace period (503).
            self._ended = True
            if not self.startedWriting:
                stopped = self.channel.stopping and reason.check(error.ConnectionAborted)
                self.code = 503 if stopped else _CLIENT_CLOSED
            factory.log(self)
        self._releaseTunnel()
        http.Request.connectionLost(self, reason)


@implementer(IHalfCloseableProtocol)
class ProxyChannel(NetsuiteHTTPChannel):
    """
    A client's connection to the proxy: HTTP/1.x requests, one at a time,
    until it becomes a CONNECT tunnel.

    @ivar refusal: why the client rules refuse this client, or L{None}.
    @ivar clientHost: the client's IP address as text, if it has one.
    """

    factory: "ProxyFactory"
    refusal: Optional[str] = None
    clientHost: Optional[str] = None
    #: The service is stopping (L{closeGracefully} was called).
    stopping = False
    _tunnel: Optional[TunnelUpstream] = None
    _following: Any = None
    #: Whether a refusal may be answered (L{ProxyRequest.endHere}).
    _answerRefusal = True
    #: Times a client whose transport's buffer is full (see pauseProducing).
    _sendStall: Optional[SendStall] = None
    _resetTimer: Any = None

    def __init__(self, factory: "ProxyFactory") -> None:
        NetsuiteHTTPChannel.__init__(self, factory)  # type: ignore[arg-type]
        self.factory = factory

    def connectionMade(self) -> None:
        self.factory.connectionOpened()
        NetsuiteHTTPChannel.connectionMade(self)
        self._networkProducer = self._gate = _ReadGate(self._networkProducer, self._readingStopped)
        peer = self.transport.getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)):
            self.clientHost = peer.host
        try:
            self.factory.rules.checkClient(self.clientHost or "")
        except Refusal as e:
            self.refusal = str(e)

    def errorResponse(self, status: int, message: str, headers: Sequence[Tuple[bytes, bytes]] = ()) -> bytes:
        if not self._answerRefusal:
            return b""  # the answer has begun: it is cut, not followed
        extra = b"".join(b"%s: %s\r\n" % header for header in headers)
        return _response(status, _TEXT_PLAIN, _textBody(message), extra, b"close", self.factory.clock.seconds())

    def _refuse(self, status: int, message: str, headers: Sequence[Tuple[bytes, bytes]] = ()) -> None:
        if not self._closing and self.requests:
            # A request whose body is refused ends with it (logged so, not
            # as the client's 499).
            self._answerRefusal = self.requests[-1].endHere(status)
        NetsuiteHTTPChannel._refuse(self, status, message, headers)

    def _logRefusal(self, status: int, sent: int) -> None:
        """
        Log a request refused while its head was read (400, 408, 414, 431)
        once its request line is read; one refused later has logged itself
        (L{ProxyRequest.endHere}).
        """
        request = self._refusedRequest()
        if request is None or request._started or request._ended:
            return
        request._ended = True
        request.clientHost = self.clientHost
        request.startedAt = self.factory.clock.seconds()  # its head never completed
        request.code = status
        self.factory.log(request)

    def timeoutConnection(self) -> None:
        if self._gate.heldByProxy:
            # Not read by our choice (an origin not taking the body): the
            # client is not silent.
            self.resetTimeout()
            return
        request = self.requests[-1] if self.requests else None
        if request is not None and request._started and not (request.bodyComplete or request._ended):
            # The body stopped coming: 408, as nginx's client_body_timeout.
            self.factory.stats.count("client_timeouts")
            self._refuse(408, f"the request body stalled for {self.timeOut:g} seconds")
            return
        NetsuiteHTTPChannel.timeoutConnection(self)

    def closeGracefully(self) -> None:
        self.stopping = True
        NetsuiteHTTPChannel.closeGracefully(self)

    def holdReading(self, reason: str) -> None:
        """
        Stop reading from the client for C{reason} (until released).
        """
        self._gate.hold(reason)

    def releaseReading(self, reason: str) -> None:
        """
        Read from the client again, as far as C{reason} is concerned; its
        idle timeout starts over when nothing holds it any more.
        """
        if self._gate.release(reason):
            self.resetTimeout()

    def _readingStopped(self) -> None:
        # One timer, checked when it fires: none set and cancelled each
        # time reading stops and starts again.
        if self._resetTimer is None and not getattr(self.transport, "disconnected", False):
            self._resetTimer = self.callLater(_RESET_CHECK, self._checkReset)

    def _checkReset(self) -> None:
        """
        Close a client that reset its connection while it was not read
        from (a full origin buffer, a tunnel the origin does not take):
        nothing else would notice before the idle timeout.
        """
        self._resetTimer = None
        if not self._gate.held or self.transport.disconnecting or getattr(self.transport, "disconnected", False):
            return
        if not peerReset(self.transport):
            self._resetTimer = self.callLater(_RESET_CHECK, self._checkReset)
            return
        self.factory.log_.info(
            "client {client} reset its connection while it was not read from: closed",
            client=self.clientHost or "-",
        )
        self.transport.abortConnection()

    def allHeadersReceived(self) -> None:
        NetsuiteHTTPChannel.allHeadersReceived(self)
        if self.length != 0 and self.requests and not self._closing:
            # A body follows: start now, so that it streams.
            self.requests[-1].start()

    def _send100Continue(self) -> None:
        # Sent once the origin's connection is ready, not before.
        self.requests[-1].wantsContinue = True

    def followUpstream(self, upstream: Any) -> None:
        """
        Pace C{upstream} (an origin connection) by this client: it is paused
        whenever the client's buffer is full.
        """
        self._following = upstream
        if upstream is not None and self._waitingForTransport:
            upstream.pauseReading()

    def pauseProducing(self) -> None:
        NetsuiteHTTPChannel.pauseProducing(self)
        following = self._following
        if following is not None:
            following.pauseReading()
        if self._tunnel is None:  # a tunnel has its own idle timeout
            # nginx's send_timeout: a client taking nothing of its answer
            # for the idle timeout is cut off; one taking some, however
            # slowly, is not (timing the pause alone cut off a client
            # reading 3 KB/s over TLS).
            if self._sendStall is None:
                self._sendStall = SendStall(
                    self.factory.clock,
                    self.factory.settings.idleTimeout,
                    lambda: unsentBytes(self.transport),
                    self._stalled,
                )
            self._sendStall.watch()

    def _stalled(self) -> None:
        """
        The client took nothing of its answer for the idle timeout: cut
        off.
        """
        if self._tunnel is not None:
            return
        seconds = self.factory.settings.idleTimeout
        self.factory.stats.count("client_timeouts")
        self.factory.log_.info(
            "client {client} took nothing of its answer for {seconds:g} seconds: closed",
            client=self.clientHost or "-",
            seconds=seconds,
        )
        # Logged by its request as the client's: the status sent, the bytes
        # so far.
        self.transport.abortConnection()

    def loseConnection(self) -> None:
        # No longer the transport's producer: the closing timer takes over.
        if self._sendStall is not None:
            self._sendStall.stop()
        NetsuiteHTTPChannel.loseConnection(self)

    # Tunnels.

    def startTunnel(self, tunnel: TunnelUpstream, answer: bytes) -> None:
        """
        Answer C{answer} and carry bytes both ways between this client and
        C{tunnel} from now on.
        """
        self.write(answer)
        self.flushOutput()
        self._state = "tunnel"
        self._cancelDeadline()
        self.setTimeout(None)
        self._tunnel = tunnel
        self._following = tunnel
        if self._waitingForTransport:
            tunnel.pauseReading()
        early = b"".join(self._dataBuffer)
        self._dataBuffer = []
        self._gate.release("http")
        if early:
            tunnel.fromClient(early)
        if self._inputEnded:  # the client shut its side while we connected
            tunnel.clientEnded()

    def hasInputWaiting(self) -> bool:
        """
        Whether bytes the client sent after the request being answered wait
        to be read (in the line parser's buffer, or held while it answers).
        """
        return bool(self._dataBuffer) or bool(self._buffer)

    def canHalfClose(self) -> bool:
        """
        Whether this client's connection can be closed one way: plain TCP,
        or TLS 1.3 through netsuite's TLS (its C{canShutWriting}).
        """
        if ISSLTransport(self.transport, None) is None:
            return True
        canShutWriting = getattr(self.transport, "canShutWriting", None)
        return canShutWriting is not None and bool(canShutWriting())

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.fromClient(data)
            return
        NetsuiteHTTPChannel.dataReceived(self, data)

    def readConnectionLost(self) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.clientEnded()
            return
        self._inputEnded = True
        if self._connectAbandoned():
            return
        NetsuiteHTTPChannel.readConnectionLost(self)

    def _connectAbandoned(self) -> bool:
        """
        End a CONNECT still waiting for its origin (checked, resolved or
        connected to) whose client ended its input having sent nothing for
        the tunnel: a tunnel could carry nothing from it, and a client that
        closed looks the same.  Taken as gone, as nginx and squid take a
        client's end before its answer: the origin is left, the tunnel's
        place is given back and it is logged C{499}.

        @return: whether it was ended.
        """
        request = self.requests[-1] if self.requests else None
        if request is None or request.method != b"CONNECT" or self._dataBuffer:
            return False
        if not request._started or request._ended or request._gone:
            return False
        request.endHere(_CLIENT_CLOSED)
        self.loseConnection()
        return True

    def resumeProducing(self) -> None:
        if self._sendStall is not None:
            self._sendStall.stop()
        NetsuiteHTTPChannel.resumeProducing(self)
        following = self._following
        if following is not None:
            following.resumeReading()

    def connectionLost(self, reason: Failure) -> None:
        self._following = None
        if self._sendStall is not None:
            self._sendStall.cancel()
        cancelIfActive(self._resetTimer)
        self._resetTimer = None
        try:
            NetsuiteHTTPChannel.connectionLost(self, reason)
        finally:
            self.factory.connectionClosed()


class ProxyFactory(LogKeptThroughGrace, Factory):
    """
    The proxy's protocol factory: its rules, authenticator, origin pool,
    access log and stats.  One factory serves every listener of the proxy
    (plain and TLS).

    @ivar rules: the L{ProxyRules} checked for every client and destination.
    @ivar authenticator: an L{Authenticator}, when the proxy needs users.
    @ivar settings: the L{ProxySettings}.
    @ivar pool: idle origin connections.
    @ivar tunnelsOpen: CONNECT tunnels open now, or connecting.
    @ivar budget: the L{ConnectionBudget} the proxy's listeners share, set
        by the first L{ProxyListener}: attempts to connect racing past a
        request's first come out of it too.
    """

    noisy = False
    log_ = Logger()
    budget: ConnectionBudget | None = None
    _logSecond = -1
    _logTime = ""

    def __init__(
        self,
        reactor: Any = None,
        *,
        rules: ProxyRules | None = None,
        settings: ProxySettings | None = None,
        stats: ServiceStats | None = None,
        authenticator: Authenticator | None = None,
        accessLog: str | None = None,
        clock: IReactorTime | None = None,
        connector: IReactorTCP | None = None,
        resolver: IHostnameResolver | None = None,
    ) -> None:
        """
        @param reactor: the reactor (default: the global one); C{clock},
            C{connector} and C{resolver} default to it and can be given
            apart for tests.
        @param accessLog: a file to append the access log to; by default it
            goes to the twistd log.
        """
        reactor = _reactor(reactor)
        self.reactor = clock or reactor
        self.clock = self.reactor
        self.connector = connector or reactor
        self.resolver = resolver or reactor.nameResolver  # type: ignore[attr-defined]
        self.rules = rules or ProxyRules()
        self.settings = settings or ProxySettings()
        self.stats = stats or ServiceStats("proxy")
        self.authenticator = authenticator
        s = self.settings
        self.limits = Limits(
            maxBody=2**62,
            maxRequestLine=s.maxRequestLine,
            maxHeaderBytes=s.maxHeaderBytes,
            maxHeaders=s.maxHeaders,
            headerTimeout=s.headerTimeout,
            idleTimeout=s.idleTimeout,
        )
        self.pool = UpstreamPool(s.poolPerHost, s.poolTotal)
        self.lookups = LookupTurns(s.lookupsPerClient, self.clock)
        self.tunnelsOpen = 0
        self.accessLogPath = accessLog
        self._logFile: Any = None
        self.batch = FlushBatch(self.reactor)

    def buildProtocol(self, addr: object) -> ProxyChannel:
        channel = ProxyChannel(self)
        channel.requestFactory = ProxyRequest  # type: ignore[assignment]
        channel.callLater = self.clock.callLater  # type: ignore[assignment]
        channel.timeOut = self.settings.idleTimeout
        return channel

    def startFactory(self) -> None:
        self.stillLogging()
        if self.accessLogPath and self._logFile is None:
            self._logFile = openAccessLog(self.accessLogPath, self.clock)

    def stopFactory(self) -> None:
        self.pool.closeAll()
        self.stopLogging()

    def _closeLog(self) -> None:
        if self._logFile is not None:
            self._logFile.close()
            self._logFile = None

    def tunnelsOpened(self) -> None:
        """
        A CONNECT was routed: it counts against C{maxTunnels} from now,
        while it connects and while it is open.
        """
        self.tunnelsOpen += 1
        self.stats.gauges["tunnels_open"] = self.tunnelsOpen

    def tunnelsClosed(self) -> None:
        self.tunnelsOpen -= 1
        self.stats.gauges["tunnels_open"] = self.tunnelsOpen

    def log(self, request: ProxyRequest) -> None:  # type: ignore[override]
        """
        Count C{request} and write its access-log line: client, user,
        request line, status, body bytes to and from the origin, seconds.
        """
        stats = self.stats
        code = request.code
        stats.count("requests")
        stats.count(f"status_{code}")
        if request.bytesUp:
            stats.count("upstream_bytes_sent", request.bytesUp)
        if request.bytesDown:
            stats.count("upstream_bytes_received", request.bytesDown)
        now = self.clock.seconds()
        second = int(now)
        if second != self._logSecond:
            self._logSecond = second
            self._logTime = strftime("%d/%b/%Y:%H:%M:%S +0000", gmtime(second))
        if request.rawRequestLine is not None:
            requestLine = _logField(request.rawRequestLine, _LOG_UNSAFE_LINE)  # it did not parse
        else:
            version = getattr(request, "sentVersion", None) or request.clientproto  # as sent
            requestLine = f"{_logField(request.method)} {_logField(request.uri)} {_logField(version)}"
        line = "%s %s [%s] \"%s\" %d %d %d %.3f" % (
            request.clientHost or "-",
            request.user or "-",
            self._logTime,
            requestLine,
            code,
            request.bytesUp,
            request.bytesDown,
            now - request.startedAt,
        )
        if self._logFile is not None:
            self._logFile.write(line + "\n")
        else:
            _accessLog.info("{line}", line=line)


class ProxyListener(StreamListener):
    """
    A L{StreamListener} for the proxy that tells its rules where it listens,
    so the proxy refuses to connect to itself.  A proxied connection holds
    its origin's too, so it counts twice in a shared connection budget; the
    budget goes to its factory too, for the attempts to connect that race
    (see L{ProxyFactory.budget}).
    """

    connectionWeight = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        StreamListener.__init__(self, *args, **kwargs)
        factory: ProxyFactory = self.tracker.wrappedFactory  # type: ignore[assignment]
        if factory.budget is None:
            factory.budget = self.tracker.budget

    def _listening(self, port: Any) -> None:
        StreamListener._listening(self, port)
        address = port.getHost()
        host = getattr(address, "host", None)
        if host is None:
            return
        factory: ProxyFactory = self.tracker.wrappedFactory  # type: ignore[assignment]
        rules = factory.rules
        try:
            # On an unspecified address, the rules take every address this
            # host can bind to as the proxy's (its name may resolve to
            # loopback only, while a network card's address reaches it too).
            rules.addOwnAddress(host, address.port)
        except ValueError:
            return


def makeProxyService(
    endpoint: str = DEFAULT_PROXY,
    reactor: Any = None,
    *,
    factory: ProxyFactory | None = None,
    status: StatusSource | None = None,
    stats: ServiceStats | None = None,
    **options: Any,
) -> ProxyListener:
    """
    A service running netsuite's HTTP forward proxy on C{endpoint}.

    @param factory: a L{ProxyFactory} to share between listeners (plain and
        TLS); by default one is made from C{options}: C{rules},
        C{settings}, C{authenticator}, C{accessLog}.
    @param options: also the keyword arguments of L{StreamListener}
        (C{tls}, C{grace}, C{maxConnections}, C{maxPerHost},
        C{handshakeTimeout}, C{lingerTime}, C{lingerTimeout}, C{budget}).
    """
    reactor = _reactor(reactor)
    listening = {
        name: options.pop(name)
        for name in (
            "tls", "grace", "maxConnections", "maxPerHost", "handshakeTimeout", "lingerTime", "lingerTimeout", "budget"
        )
        if name in options
    }
    if factory is None:
        factory = ProxyFactory(reactor, stats=stats, **options)
    elif options:
        raise TypeError(f"options given with a factory: {', '.join(sorted(options))}")
    listener = ProxyListener(
        "proxy", endpoint, factory, reactor=reactor, stats=factory.stats, speaksHTTP=True, **listening
    )
    if status is not None and isinstance(status, SimpleStatus):
        status.add(listener)
    return listener
