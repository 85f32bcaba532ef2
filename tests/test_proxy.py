"""
Tests for L{netsuite.proxy}, all in memory: the client is a L{ProxyChannel}
on a L{StringTransport}; origins are the protocols the proxy asks a
L{MemoryReactorClock} to connect, attached by hand to L{StringTransport}s
the tests read and write; names are resolved by L{FakeResolver}; time is
the same L{MemoryReactorClock}.

The channel collects its output while it reads and sends it at the end of
the reactor's pass (L{netsuite.listen.FlushBatch}), so L{Client.received}
advances the clock by 0 before it reads what the client got.
"""

from __future__ import annotations

import base64
import errno
import gc
import gzip
import itertools
import os
import socket
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    getConnectError,
)
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SynchronousTestCase
from zope.interface import implementer

from netsuite import limits as limitsModule
from netsuite import proxy as proxyModule
from netsuite.listen import ConnectionBudget
from netsuite.proxy import (
    CONNECT_ATTEMPT_DELAY,
    MAX_RACING_ATTEMPTS,
    HALF_CLOSED_TUNNEL_TIMEOUT,
    MAX_RESPONSE_HEAD,
    ProxyFactory,
    ProxyRequest,
    ProxySettings,
    UpstreamConnection,
    UpstreamPool,
    _BadTarget,
    _parseAuthority,
    parseTarget,
)
from netsuite.proxyauth import CHECK_PATIENCE, MAX_WAITING_CHECKS, Authenticator, _parseLine, hashPassword
from netsuite.proxyrules import ProxyRules, parseNetworks
from tests.helpers import TakingTransport

_ports = itertools.count(40000)

#: A public-looking address for example.com, and another for other.example.
PUBLIC = "93.184.216.34"
PUBLIC2 = "93.184.216.35"

#: What the fake resolver knows by default.
ANSWERS: Dict[str, List[str]] = {
    "example.com": [PUBLIC],
    "other.example": [PUBLIC2],
    "two.example": [PUBLIC, PUBLIC2],
    "loopback.example": ["127.0.0.1"],
    "metadata.example": [PUBLIC, "169.254.169.254"],
}

GET = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

#: Cheap scrypt parameters, so that the tests stay fast.
CHEAP = dict(n=16, r=1, p=1)


# Fakes and helpers.


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Resolves names from a table: a name in C{silent} never gets an answer,
    a name not in the table resolves to no address (a DNS failure).

    @ivar asked: the names asked for, in order.
    @ivar waiting: receivers of the names that were not answered.
    """

    def __init__(self, answers: Dict[str, List[str]], silent: Iterable[str] = ()) -> None:
        self.answers = answers
        self.silent = set(silent)
        self.asked: List[str] = []
        self.waiting: List[IResolutionReceiver] = []

    def resolveHostName(
        self,
        receiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: object = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(hostName)
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        if hostName in self.silent:
            self.waiting.append(receiver)
            return resolution
        for address in self.answers.get(hostName, []):
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, portNumber))
        receiver.resolutionComplete()
        return resolution


class Message:
    """
    One HTTP message as a peer received it.

    @ivar startLine: the request or status line.
    @ivar headers: C{(lowercase name, value)} pairs, in order.
    @ivar body: the body, de-chunked.
    @ivar complete: whether its framing says it is all there (L{None} when
        it is delimited by the end of the connection).
    @ivar rest: the bytes after it.
    @ivar chunks: the chunk sizes, for a chunked body.
    """

    def __init__(self, startLine: bytes, headers: List[Tuple[bytes, bytes]]) -> None:
        self.startLine = startLine
        self.headers = headers
        self.body = b""
        self.complete: Optional[bool] = True
        self.rest = b""
        self.chunks: List[int] = []

    @property
    def status(self) -> int:
        return int(self.startLine.split(b" ")[1])

    def header(self, name: bytes) -> List[bytes]:
        """
        Every value of the header C{name}.
        """
        return [value for n, value in self.headers if n == name.lower()]

    def names(self) -> List[bytes]:
        """
        The header names, lowercase, in order.
        """
        return [name for name, value in self.headers]


def _dechunk(message: Message, data: bytes) -> None:
    """
    Decode the chunked body at the start of C{data} into C{message}.
    """
    body = b""
    while True:
        line, sep, after = data.partition(b"\r\n")
        if not sep:
            message.body, message.complete = body, False
            return
        size = int(line.split(b";")[0], 16)
        if size == 0:
            # Trailer fields, then an empty line.
            if after.startswith(b"\r\n"):
                sep, rest = b"\r\n", after[2:]
            else:
                _trailers, sep, rest = after.partition(b"\r\n\r\n")
            message.body, message.complete, message.rest = body, bool(sep), rest
            return
        message.chunks.append(size)
        if len(after) < size + 2:
            message.body, message.complete = body + after[:size], False
            return
        if after[size : size + 2] != b"\r\n":
            raise FailTest(f"bad chunk ending: {after[size:size + 2]!r}")
        body += after[:size]
        data = after[size + 2 :]


def parseMessage(data: bytes, *, request: bool, noBody: bool = False) -> Message:
    """
    The first HTTP/1.x message in C{data}.

    @param noBody: it is a response without a body (to HEAD, or 1xx, 204,
        304).
    """
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise FailTest(f"no complete HTTP message head in {data[:200]!r}")
    lines = head.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise FailTest(f"bad header line {line!r}")
        headers.append((name.lower(), value.strip(b" \t")))
    message = Message(lines[0], headers)
    if not request and not noBody:
        status = message.status
        noBody = 100 <= status < 200 or status in (204, 304)
    coding = b",".join(message.header(b"transfer-encoding")).lower()
    lengths = message.header(b"content-length")
    if noBody:
        message.rest = rest
    elif coding.endswith(b"chunked"):
        _dechunk(message, rest)
    elif lengths:
        length = int(lengths[0])
        message.body, message.rest = rest[:length], rest[length:]
        message.complete = len(rest) >= length
    elif request:
        message.rest = rest
    else:
        message.body, message.complete = rest, None
    return message


def parseResponse(data: bytes, *, head: bool = False) -> Message:
    """
    The first response in C{data} (C{head}: the answer to a HEAD).
    """
    return parseMessage(data, request=False, noBody=head)


def parseRequest(data: bytes) -> Message:
    """
    The first request in C{data}.
    """
    return parseMessage(data, request=True)


def accessLines(events: Sequence[dict]) -> List[str]:
    """
    The access-log lines among captured log C{events}.
    """
    return [e["line"] for e in events if e.get("log_format") == "{line}" and "line" in e]


def basic(name: str, password: str) -> bytes:
    """
    A C{Proxy-Authorization} value for C{name} and C{password}.
    """
    return b"Basic " + base64.b64encode(f"{name}:{password}".encode())


class Client:
    """
    A client connection to the proxy, in memory.
    """

    def __init__(self, proxy: "Proxy", host: str, transport: type[StringTransport] = StringTransport) -> None:
        self.clock = proxy.clock
        kind = IPv6Address if ":" in host else IPv4Address
        self.address = kind("TCP", host, next(_ports))
        self.channel = proxy.factory.buildProtocol(self.address)
        self.transport = transport(hostAddress=IPv4Address("TCP", "127.0.0.1", 3128), peerAddress=self.address)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def received(self) -> bytes:
        """
        Everything sent to the client so far (after the end of the
        reactor's pass).
        """
        self.clock.advance(0)
        return self.transport.value()

    def response(self, *, head: bool = False) -> Message:
        return parseResponse(self.received(), head=head)

    def responses(self) -> List[Message]:
        """
        Every complete response received so far.
        """
        data = self.received()
        found = []
        while data:
            message = parseResponse(data)
            found.append(message)
            data = message.rest
        return found

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """
        The client's connection ends.
        """
        self.channel.connectionLost(Failure(ConnectionDone()))


class HalfCloseableTransport(StringTransport):
    """
    A L{StringTransport} that notes when its writing side is shut.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class Origin:
    """
    The origin end of one connection the proxy made.
    """

    def __init__(self, host: str, port: int, clientFactory: object) -> None:
        kind = IPv6Address if ":" in host else IPv4Address
        self.address = kind("TCP", host, port)
        self.protocol = clientFactory.buildProtocol(self.address)  # type: ignore[attr-defined]
        self.transport = HalfCloseableTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", next(_ports)), peerAddress=self.address
        )
        self.protocol.makeConnection(self.transport)

    def received(self) -> bytes:
        return self.transport.value()

    def request(self) -> Message:
        return parseRequest(self.received())

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self) -> None:
        """
        The origin closes the connection.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class Proxy:
    """
    A L{ProxyFactory} on a fake clock, fake resolver and fake connector.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        *,
        rules: Optional[ProxyRules] = None,
        settings: Optional[ProxySettings] = None,
        authenticator: Optional[Authenticator] = None,
        answers: Optional[Dict[str, List[str]]] = None,
        silent: Iterable[str] = (),
        accessLog: Optional[str] = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.resolver = FakeResolver(ANSWERS if answers is None else answers, silent)
        self.factory = ProxyFactory(
            self.clock,
            rules=rules,
            settings=settings,
            authenticator=authenticator,
            accessLog=accessLog,
            clock=self.clock,
            connector=self.clock,
            resolver=self.resolver,
        )
        self.factory.startFactory()
        testCase.addCleanup(self.factory.stopFactory)
        self.origins: List[Origin] = []

    @property
    def attempts(self) -> List[Tuple[str, int]]:
        """
        C{(address, port)} of every connection the proxy tried to make.
        """
        return [(host, port) for host, port, factory, timeout, bind in self.clock.tcpClients]

    def client(self, host: str = "127.0.0.1", transport: type[StringTransport] = StringTransport) -> Client:
        return Client(self, host, transport)

    def accept(self, index: int = -1) -> Origin:
        """
        Let the origin accept connection attempt C{index}.
        """
        host, port, clientFactory, timeout, bind = self.clock.tcpClients[index]
        origin = Origin(host, port, clientFactory)
        self.origins.append(origin)
        return origin

    def busy(self) -> Origin:
        """
        The origin whose connection carries a request now (a pooled one that
        was taken again).
        """
        [origin] = [o for o in self.origins if getattr(o.protocol, "request", None) is not None]
        return origin

    def refuse(self, index: int = -1) -> None:
        """
        Have connection attempt C{index} refused.
        """
        clientFactory = self.clock.tcpClients[index][2]
        clientFactory.clientConnectionFailed(self.clock.connectors[index], Failure(ConnectionRefusedError()))

    def exchange(
        self, request: bytes = GET, answer: bytes = OK, client: Optional[Client] = None
    ) -> Tuple[Client, Origin]:
        """
        Send C{request} from a (new) client and have the origin answer
        C{answer}: on the new connection the proxy asked for (accepted
        here), or the pooled connection it took.
        """
        if client is None:
            client = self.client()
        attempts = len(self.attempts)
        client.send(request)
        origin = self.accept() if len(self.attempts) > attempts else self.busy()
        origin.send(answer)
        self.clock.advance(0)  # the answer leaves at the end of the pass
        return client, origin


class ProxyTestCase(SynchronousTestCase):
    def proxy(self, **kwargs: object) -> Proxy:
        return Proxy(self, **kwargs)  # type: ignore[arg-type]

    def assertTextError(self, response: Message, status: int, *fragments: str) -> None:
        """
        C{response} is the proxy's own C{status} answer, whose text body
        holds every one of C{fragments}.
        """
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.header(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertTrue(response.complete)
        text = response.body.decode("utf-8")
        self.assertTrue(text.startswith("netsuite proxy: "), text)
        for fragment in fragments:
            self.assertIn(fragment, text)

    def assertAbortedBetween(self, proxy: Proxy, client: Client, earliest: float, latest: float) -> None:
        """
        C{client}'s connection is still there at C{earliest} seconds and
        aborted by C{latest}, the clock going a second at a time.
        """
        while proxy.clock.seconds() < earliest - 0.5:
            proxy.clock.advance(1)
        self.assertFalse(client.transport.disconnected, f"aborted before {earliest} s")
        while proxy.clock.seconds() < latest - 0.5 and not client.transport.disconnected:
            proxy.clock.advance(1)
        self.assertTrue(client.transport.disconnected, f"not aborted by {latest} s")

    def assertAbortedAfter(self, proxy: Proxy, client: Client, seconds: float) -> None:
        """
        C{client}'s connection is still there a second short of C{seconds},
        and aborted at C{seconds}.
        """
        proxy.clock.advance(seconds - 1)
        self.assertFalse(client.transport.disconnected)
        proxy.clock.advance(1)
        self.assertTrue(client.transport.disconnected, "not aborted")


# 1. parseTarget.


class ParseTargetTests(SynchronousTestCase):
    def test_plain(self) -> None:
        """
        A plain target gives its host, port 80, its path and the host as
        the authority.
        """
        self.assertEqual(parseTarget(b"http://example.com/a/b"), (b"example.com", 80, b"/a/b", b"example.com"))

    def test_port(self) -> None:
        """
        An explicit port is used and kept in the authority; port 80 written
        out is the same as none.
        """
        self.assertEqual(parseTarget(b"http://example.com:8080/x"), (b"example.com", 8080, b"/x", b"example.com:8080"))
        self.assertEqual(parseTarget(b"http://example.com:80/x"), (b"example.com", 80, b"/x", b"example.com"))
        self.assertEqual(parseTarget(b"http://example.com:/x"), (b"example.com", 80, b"/x", b"example.com"))

    def test_query(self) -> None:
        """
        The query is part of the path the origin is asked for; a fragment is
        not sent.
        """
        self.assertEqual(parseTarget(b"http://example.com/p?q=1&r")[2], b"/p?q=1&r")
        self.assertEqual(parseTarget(b"http://example.com?q=1")[2], b"/?q=1")
        self.assertEqual(parseTarget(b"http://example.com/p?q#frag")[2], b"/p?q")

    def test_ipv6Literal(self) -> None:
        """
        An IPv6 literal in brackets gives the bare address as the host and
        the bracketed form as the authority.
        """
        self.assertEqual(parseTarget(b"http://[::1]:8080/x"), (b"::1", 8080, b"/x", b"[::1]:8080"))
        self.assertEqual(parseTarget(b"http://[2001:DB8::1]/"), (b"2001:db8::1", 80, b"/", b"[2001:db8::1]"))

    def test_hostLowercased(self) -> None:
        """
        The host (and so the authority) is lowercased; the scheme is
        case-insensitive; the path keeps its case.
        """
        self.assertEqual(parseTarget(b"HTTP://EXAMPLE.Com/Path"), (b"example.com", 80, b"/Path", b"example.com"))

    def test_missingPath(self) -> None:
        """
        A target without a path asks for C{/}.
        """
        self.assertEqual(parseTarget(b"http://example.com"), (b"example.com", 80, b"/", b"example.com"))
        self.assertEqual(parseTarget(b"http://example.com:81"), (b"example.com", 81, b"/", b"example.com:81"))

    def assertRefused(self, target: bytes, fragment: str) -> None:
        with self.assertRaises(_BadTarget) as e:
            parseTarget(target)
        self.assertIn(fragment, str(e.exception), target)

    def test_refusesOtherSchemes(self) -> None:
        """
        https:// is refused with a pointer to CONNECT; other schemes and
        targets without a scheme are refused.
        """
        self.assertRefused(b"https://example.com/", "CONNECT")
        self.assertRefused(b"ftp://example.com/", "only http://")
        self.assertRefused(b"example.com/", "only http://")
        self.assertRefused(b"http:/example.com/", "only http://")

    def test_refusesUserinfo(self) -> None:
        """
        User names and passwords in the target are refused.
        """
        self.assertRefused(b"http://a@b/", "user names")
        self.assertRefused(b"http://user:pw@example.com/", "user names")

    def test_refusesBadPorts(self) -> None:
        """
        Port 0, ports over 65535, and ports that are not decimal digits are
        refused.
        """
        for target in (
            b"http://example.com:0/",
            b"http://example.com:65536/",
            b"http://example.com:999999/",
            b"http://example.com:abc/",
            b"http://example.com:8a/",
            b"http://example.com:-1/",
            b"http://example.com:+80/",
            b"http://[::1]:0/",
        ):
            self.assertRefused(target, "port")

    def test_refusesBadHosts(self) -> None:
        """
        Hosts with characters a host name cannot hold, and broken IPv6
        literals, are refused.
        """
        for target in (
            b"http://exa mple.com/",
            b"http://exa%6dple.com/",
            b"http://exa!mple.com/",
            b"http://exa\\mple.com/",
            b"http://-example.com/",
            b"http://example.com\x00/",
            b"http://ex\xc3\xa4mple.com/",
            b"http://[::1/",
            b"http://[zz::1]/",
            b"http://[::1]x/",
        ):
            with self.assertRaises(_BadTarget, msg=repr(target)):
                parseTarget(target)

    def test_refusesEmptyHost(self) -> None:
        """
        A target without a host is refused.
        """
        for target in (b"http:///x", b"http://:80/", b"http://", b"http://?q"):
            with self.assertRaises(_BadTarget, msg=repr(target)):
                parseTarget(target)

    def test_refusesLineBreakInHost(self) -> None:
        """
        A host name followed by a line feed is not a host name (the host
        pattern must not let C{$} match before a final newline).
        """
        with self.assertRaises(_BadTarget):
            parseTarget(b"http://example.com\n/")
        with self.assertRaises(_BadTarget):
            _parseAuthority(b"example.com\n", 443)

    def test_parseAuthority(self) -> None:
        """
        C{_parseAuthority} (CONNECT's target) needs a port when no default
        is given.
        """
        self.assertEqual(_parseAuthority(b"Example.COM:443", None), (b"example.com", 443))
        self.assertEqual(_parseAuthority(b"[::1]:443", None), (b"::1", 443))
        for bad in (b"example.com", b"example.com:", b"[::1]", b":443"):
            with self.assertRaises(_BadTarget, msg=repr(bad)):
                _parseAuthority(bad, None)

    def test_refusesZoneIds(self) -> None:
        """
        An IPv6 literal with a zone id (raw, or written C{%25} as in URLs)
        is refused: a zone names one of the client's interfaces.
        """
        for target in (b"http://[fe80::1%eth0]/", b"http://[2001:db8::1%25nosuchif]:8080/"):
            self.assertRefused(target, "zone id")
        with self.assertRaises(_BadTarget) as e:
            _parseAuthority(b"[fd00::2%eth0]:443", None)
        self.assertIn("zone id", str(e.exception))

    def test_refusesBadHostLabels(self) -> None:
        """
        A host name with an empty label, a label over 63 characters, or
        over 253 characters in all is refused; the longest valid ones (with
        or without one final dot) are not.
        """
        label = b"a" * 63
        longest = b".".join([label, label, label, b"b" * 61])
        self.assertEqual(len(longest), 253)
        for host in (b"a..b", b"a.b..", b"x." + label + b"a", b"a" * 64, longest + b"b", longest + b".b"):
            self.assertRefused(b"http://%s/" % (host,), "host name is not valid")
        for host in (longest, longest + b".", b"x." + label, b"a.b."):
            self.assertEqual(parseTarget(b"http://%s/" % (host,))[0], host)


# 2. What the origin receives.


class RequestForwardingTests(ProxyTestCase):
    def test_originFormAndHost(self) -> None:
        """
        The origin gets the request line in origin form and a C{Host} made
        from the target, whatever C{Host} the client sent.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://Example.com:8080/path?q HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        self.assertEqual(proxy.resolver.asked, ["example.com"])
        self.assertEqual(proxy.attempts, [(PUBLIC, 8080)])
        request = proxy.accept().request()
        self.assertEqual(request.startLine, b"GET /path?q HTTP/1.1")
        self.assertEqual(request.header(b"host"), [b"example.com:8080"])

    def test_hopByHopHeadersRemoved(self) -> None:
        """
        Hop-by-hop headers, and headers the client's C{Connection} header
        names, do not reach the origin; end-to-end headers do, and C{Via}
        is added.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(
            b"GET http://example.com/ HTTP/1.1\r\n"
            b"Host: example.com\r\n"
            b"Connection: keep-alive, X-Secret\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\n"
            b"Trailer: X-Checksum\r\n"
            b"Upgrade: websocket\r\n"
            b"Proxy-Authorization: Basic YTpi\r\n"
            b"X-Secret: s3cret\r\n"
            b"Accept: text/html\r\n"
            b"Cookie: a=b\r\n"
            b"X-Custom: 1\r\n"
            b"\r\n"
        )
        request = proxy.accept().request()
        self.assertEqual(request.startLine, b"GET / HTTP/1.1")
        self.assertEqual(
            sorted(request.names()), [b"accept", b"cookie", b"host", b"via", b"x-custom"], request.headers
        )
        self.assertEqual(request.header(b"accept"), [b"text/html"])
        self.assertEqual(request.header(b"cookie"), [b"a=b"])
        self.assertEqual(request.header(b"x-custom"), [b"1"])
        self.assertEqual(request.header(b"via"), [b"1.1 netsuite"])

    def test_headerNamedWithCloseInConnection(self) -> None:
        """
        C{Connection: close, X-Secret}: C{X-Secret} does not reach the origin.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(
            b"GET http://example.com/ HTTP/1.1\r\nConnection: close, X-Secret\r\n"
            b"X-Secret: s3cret\r\nAccept: */*\r\n\r\n"
        )
        request = proxy.accept().request()
        self.assertEqual(request.header(b"x-secret"), [])
        self.assertEqual(request.header(b"connection"), [])
        self.assertEqual(request.header(b"accept"), [b"*/*"])

    def test_connectionCloseAmongOtherTokensIsHonoured(self) -> None:
        """
        A client that sends C{Connection: close, X-Secret} gets
        C{Connection: close} and its connection is closed after the
        response, as with a bare C{Connection: close}.
        """
        proxy = self.proxy()
        for value in (b"close", b"close, X-Secret"):
            client, origin = proxy.exchange(
                b"GET http://example.com/ HTTP/1.1\r\nConnection: " + value + b"\r\n\r\n"
            )
            response = client.response()
            self.assertEqual(response.status, 200)
            self.assertEqual(response.header(b"connection"), [b"close"], value)
            self.assertTrue(client.closed, value)

    def test_underscoreHeadersDropped(self) -> None:
        """
        Request headers with C{_} in their names do not reach the origin,
        as with nginx's default: CGI, WSGI and PHP turn C{-} into C{_},
        so to an origin C{X_Forwarded_For} can pass for
        C{X-Forwarded-For}, and C{Content_Length} for C{Content-Length}.
        """
        proxy = self.proxy(settings=ProxySettings(forwardedFor=True))
        client = proxy.client("127.0.0.1")
        client.send(
            b"GET http://example.com/ HTTP/1.1\r\n"
            b"X_Forwarded_For: 10.0.0.1\r\n"
            b"Content_Length: 5\r\n"
            b"X-Real-IP_: 10.0.0.2\r\n"
            b"X-Custom: 1\r\n"
            b"\r\n"
        )
        request = proxy.accept().request()
        self.assertEqual(
            sorted(request.names()),
            [b"forwarded", b"host", b"via", b"x-custom", b"x-forwarded-for"],
            request.headers,
        )
        self.assertEqual(request.header(b"x-forwarded-for"), [b"127.0.0.1"])

    def test_controlCharactersInValuesBecomeSpaces(self) -> None:
        """
        Control characters other than HTAB in a request header value reach
        the origin as spaces (RFC 9110 5.5: strict parsers further on refuse
        them); a space at either end is trimmed; bytes above 0x7F and HTAB
        stay.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(
            b"GET http://example.com/ HTTP/1.1\r\n"
            b"X-A: a\x01b\x0bc\x0cd\x1be\x7ff\r\n"
            b"X-B: \x80\tg\xff\r\n"
            b"X-C: h\x1b\r\n"
            b"\r\n"
        )
        request = proxy.accept().request()
        self.assertEqual(request.header(b"x-a"), [b"a b c d e f"])
        self.assertEqual(request.header(b"x-b"), [b"\x80\tg\xff"])
        self.assertEqual(request.header(b"x-c"), [b"h"])

    def test_noForwardedHeadersByDefault(self) -> None:
        """
        By default the origin is not told the client's address.
        """
        proxy = self.proxy()
        proxy.client().send(GET)
        request = proxy.accept().request()
        self.assertEqual(request.header(b"x-forwarded-for"), [])
        self.assertEqual(request.header(b"forwarded"), [])

    def test_forwardedHeadersWhenAskedFor(self) -> None:
        """
        With C{forwardedFor}, C{X-Forwarded-For} and C{Forwarded} name the
        client (an IPv6 client's node is quoted and bracketed).
        """
        proxy = self.proxy(settings=ProxySettings(forwardedFor=True))
        proxy.client("127.0.0.1").send(GET)
        request = proxy.accept().request()
        self.assertEqual(request.header(b"x-forwarded-for"), [b"127.0.0.1"])
        self.assertEqual(request.header(b"forwarded"), [b"for=127.0.0.1;proto=http"])
        proxy.client("::1").send(GET)
        request = proxy.accept().request()
        self.assertEqual(request.header(b"x-forwarded-for"), [b"::1"])
        self.assertEqual(request.header(b"forwarded"), [b'for="[::1]";proto=http'])

    def test_viaNamesTheClientsVersion(self) -> None:
        """
        C{Via} names the protocol version the request came in: 1.0 for an
        HTTP/1.0 client; the origin is spoken to in HTTP/1.1 anyway.
        """
        proxy = self.proxy()
        proxy.client().send(b"GET http://example.com/ HTTP/1.0\r\n\r\n")
        request = proxy.accept().request()
        self.assertEqual(request.startLine, b"GET / HTTP/1.1")
        self.assertEqual(request.header(b"via"), [b"1.0 netsuite"])
        self.assertEqual(request.header(b"host"), [b"example.com"])

    def test_optionsAsterisk(self) -> None:
        """
        C{OPTIONS http://host} (no path at all) asks the origin for C{*};
        with a path it asks for the path.
        """
        proxy = self.proxy()
        proxy.client().send(b"OPTIONS http://example.com HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.accept().request().startLine, b"OPTIONS * HTTP/1.1")
        proxy.client().send(b"OPTIONS http://example.com/ HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.accept().request().startLine, b"OPTIONS / HTTP/1.1")

    def test_maxForwardsZeroAnsweredHere(self) -> None:
        """
        OPTIONS or TRACE with C{Max-Forwards: 0} is answered by the proxy
        and not forwarded (RFC 9110 section 7.6.2); TRACE gets its request
        back as C{message/http}, without credentials or cookies.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"OPTIONS http://example.com/ HTTP/1.1\r\nMax-Forwards: 0\r\n\r\n")
        self.assertTextError(client.response(), 200, "Max-Forwards is 0")
        self.assertFalse(client.closed)
        client = proxy.client()
        client.send(
            b"TRACE http://example.com/t HTTP/1.1\r\nMax-Forwards: 0\r\nX-Probe: 1\r\n"
            b"Cookie: s=secret\r\nAuthorization: Basic c2VjcmV0\r\n\r\n"
        )
        response = client.response()
        self.assertEqual((response.status, response.header(b"content-type")), (200, [b"message/http"]))
        echoed = parseRequest(response.body)
        self.assertEqual(echoed.startLine, b"TRACE http://example.com/t HTTP/1.1")
        self.assertEqual(echoed.header(b"x-probe"), [b"1"])
        self.assertEqual(echoed.header(b"max-forwards"), [b"0"])
        self.assertNotIn(b"secret", response.body)
        self.assertNotIn(b"c2VjcmV0", response.body)
        self.assertEqual(proxy.resolver.asked, [])
        self.assertEqual(proxy.attempts, [])

    def test_maxForwardsDecremented(self) -> None:
        """
        OPTIONS or TRACE with C{Max-Forwards} above 0 goes on with one less;
        other methods pass it on as it came; one that is not a number is
        refused with 400.
        """
        proxy = self.proxy()
        for method, sent, forwarded in ((b"OPTIONS", b"1", b"0"), (b"TRACE", b"10", b"9"), (b"GET", b"0", b"0")):
            proxy.client().send(b"%s http://example.com/ HTTP/1.1\r\nMax-Forwards: %s\r\n\r\n" % (method, sent))
            self.assertEqual(proxy.accept().request().header(b"max-forwards"), [forwarded], method)
        client = proxy.client()
        client.send(b"TRACE http://example.com/ HTTP/1.1\r\nMax-Forwards: -1\r\n\r\n")
        self.assertTextError(client.response(), 400, "Max-Forwards")

    def test_maxForwardsOfThousandsOfDigits(self) -> None:
        """
        A Max-Forwards of more digits than int() takes (4,300) is read as
        its number: the request went unanswered, with a traceback.
        """
        proxy = self.proxy()
        for sent, forwarded in ((b"0" * 5000 + b"2", b"1"), (b"9" * 5000, b"999999999")):
            proxy.client().send(b"OPTIONS http://example.com/ HTTP/1.1\r\nMax-Forwards: %s\r\n\r\n" % sent)
            self.assertEqual(proxy.accept().request().header(b"max-forwards"), [forwarded])
        client = proxy.client()
        client.send(b"OPTIONS http://example.com/ HTTP/1.1\r\nMax-Forwards: %s\r\n\r\n" % (b"0" * 5000))
        self.assertTextError(client.response(), 200, "Max-Forwards is 0")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_obsoleteLineFoldingRefused(self) -> None:
        """
        A request header continued on the next line (obsolete line
        folding) is a 400 and goes nowhere: a folded Content-Length of
        thousands of digits reached Twisted's int() (a traceback, and no
        answer), and other folded headers were sent on joined.
        """
        proxy = self.proxy()
        for folded in (b"Content-Length:\r\n " + b"9" * 4400, b"X-Long: a\r\n\tcontinued"):
            client = proxy.client()
            client.send(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\n" + folded + b"\r\n\r\n{}")
            self.assertTextError(client.response(), 400, "obsolete line folding")
        self.assertEqual(proxy.attempts, [])
        self.assertEqual(self.flushLoggedErrors(), [])


# 3. What the client receives.


class ResponseForwardingTests(ProxyTestCase):
    def test_controlCharactersInValuesBecomeSpaces(self) -> None:
        """
        Control characters other than HTAB in a response header value reach
        the client as spaces, trimmed at either end; bytes above 0x7F and
        HTAB stay, and the body is untouched.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            GET,
            b"HTTP/1.1 200 OK\r\nX-A: a\x01b\x1b[31mc\x7f\r\nX-B: \x80\tg\r\n"
            b"Content-Length: 4\r\n\r\n\x1b\x01\x7f\x0b",
        )
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"x-a"), [b"a b [31mc"])
        self.assertEqual(response.header(b"x-b"), [b"\x80\tg"])
        self.assertEqual(response.body, b"\x1b\x01\x7f\x0b")

    def test_dateAddedWhereMissing(self) -> None:
        """
        An answer forwarded without C{Date} gets one (RFC 9110 6.6.1: a
        recipient with a clock MUST add it), an origin's own is kept as it
        is, and the proxy's own answers have one, as nginx and squid send.
        """
        proxy = self.proxy()
        proxy.clock.advance(784111777)  # Sun, 06 Nov 1994 08:49:37 GMT
        client, _ = proxy.exchange()
        self.assertEqual(client.response().header(b"date"), [b"Sun, 06 Nov 1994 08:49:37 GMT"])
        dated = b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
        client, _ = proxy.exchange(answer=dated)
        self.assertEqual(client.response().header(b"date"), [b"Mon, 01 Jan 2001 00:00:00 GMT"])
        client = proxy.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        refusal = client.response()
        self.assertEqual(refusal.status, 400)
        self.assertEqual(refusal.header(b"date"), [b"Sun, 06 Nov 1994 08:49:37 GMT"])

    def test_hopByHopResponseHeadersRemoved(self) -> None:
        """
        Hop-by-hop response headers, those the origin's C{Connection} names
        and C{Proxy-Authenticate} do not reach the client; C{Set-Cookie} and
        C{Content-Length} do, and C{Via} is added.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            GET,
            b"HTTP/1.1 200 OK\r\n"
            b"Connection: keep-alive, X-Hop\r\n"
            b"X-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic realm=x\r\n"
            b"Upgrade: h2c\r\n"
            b"Set-Cookie: a=b\r\n"
            b"Content-Length: 5\r\n"
            b"\r\n"
            b"hello",
        )
        response = client.response()
        self.assertEqual(response.startLine, b"HTTP/1.1 200 OK")
        self.assertEqual(sorted(response.names()), [b"content-length", b"date", b"set-cookie", b"via"], response.headers)
        self.assertEqual(response.header(b"set-cookie"), [b"a=b"])
        self.assertEqual(response.header(b"content-length"), [b"5"])
        self.assertEqual(response.header(b"via"), [b"1.1 netsuite"])
        self.assertEqual(response.body, b"hello")
        self.assertEqual(response.rest, b"")
        self.assertFalse(client.closed)
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_reasonPhraseKept(self) -> None:
        """
        The origin's status code and reason reach the client; a missing
        reason is filled in.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 404 Nothing Here\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(client.response().startLine, b"HTTP/1.1 404 Nothing Here")
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(client.response().startLine, b"HTTP/1.1 200 OK")

    def test_chunkedResponseRechunked(self) -> None:
        """
        A chunked response arriving in pieces reaches an HTTP/1.1 client
        chunked and complete, and the connection stays open.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        origin.send(b"lo\r\n6\r\n world\r")
        origin.send(b"\n0\r\nX-Trailer: t\r\n\r\n")
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"transfer-encoding"), [b"chunked"])
        self.assertEqual(response.header(b"content-length"), [])
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"hello world")
        self.assertEqual(response.rest, b"")
        self.assertFalse(client.closed)
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_tinyChunksGoOnTogether(self) -> None:
        """
        The chunks of one read from the origin go to the client as one
        chunk: 1,000 1-byte chunks were sent on as 1,000 chunks, a write
        each (7.5 microseconds of the proxy's CPU a chunk, measured).
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 1000)
        origin.send(b"1\r\ny\r\n0\r\n\r\n")
        received = client.received()
        self.assertTrue(received.endswith(b"\r\n\r\n3e8\r\n" + b"x" * 1000 + b"\r\n1\r\ny\r\n0\r\n\r\n"), received[-80:])
        self.assertTrue(parseResponse(received).complete)
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_chunkedResponseWithBareLineFeed(self) -> None:
        """
        A chunked response whose chunk-size line ends in a bare LF ends the
        client's response as broken at once (it waited for a CRLF until the
        read timeout), and the origin connection is not pooled.
        """
        for body in (b"5\nhello\n0\n\n", b"5\r\nhello\n", b"0\r\nX-T: 1\n"):
            proxy = self.proxy()
            client = proxy.client()
            client.send(GET)
            origin = proxy.accept()
            origin.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            response = parseResponse(client.received())
            self.assertFalse(response.complete, body)
            self.assertTrue(client.closed, body)
            self.assertEqual(len(proxy.factory.pool), 0, body)

    def test_chunkedResponseToHTTP10Client(self) -> None:
        """
        An HTTP/1.0 client gets a chunked response without framing, ended by
        the end of the connection.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        data = client.received()
        response = parseResponse(data)
        self.assertEqual(response.startLine, b"HTTP/1.1 200 OK")
        self.assertEqual(response.header(b"connection"), [b"close"])
        self.assertEqual(response.header(b"transfer-encoding"), [])
        self.assertEqual(response.header(b"content-length"), [])
        self.assertEqual(response.body, b"hello world")
        self.assertTrue(client.closed)

    def test_closeDelimitedResponse(self) -> None:
        """
        A response ended by the origin closing reaches an HTTP/1.1 client
        chunked, complete once the origin closes.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\n\r\nsome ")
        origin.send(b"bytes")
        self.assertFalse(parseResponse(client.received()).complete)
        origin.close()
        response = client.response()
        self.assertEqual(response.header(b"transfer-encoding"), [b"chunked"])
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"some bytes")
        self.assertEqual(len(proxy.factory.pool), 0)

    def test_headResponseKeepsContentLength(self) -> None:
        """
        The response to HEAD has the origin's C{Content-Length} and no body;
        the connection is pooled.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            b"HEAD http://example.com/ HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        )
        response = client.response(head=True)
        self.assertEqual(response.header(b"content-length"), [b"1234"])
        self.assertEqual(response.rest, b"")
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_http10ClientGetsContentLengthAndClose(self) -> None:
        """
        An HTTP/1.0 client gets a Content-Length response, with the proxy's
        own version (RFC 9110, 6.2) and C{Connection: close}, then the
        connection is closed.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(b"GET http://example.com/ HTTP/1.0\r\n\r\n", OK)
        response = client.response()
        self.assertEqual(response.startLine, b"HTTP/1.1 200 OK")
        self.assertEqual(response.header(b"connection"), [b"close"])
        self.assertEqual(response.body, b"hello")
        self.assertTrue(client.closed)
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_noContentLengthIn204(self) -> None:
        """
        An origin's 204 with a Content-Length reaches the client without
        one (RFC 9110 section 8.6: never in a 204), ends at its head, and
        its connection is pooled.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: b\r\n\r\n")
        response = client.response()
        self.assertEqual(response.status, 204)
        self.assertEqual(response.header(b"content-length"), [])
        self.assertEqual(response.header(b"transfer-encoding"), [])
        self.assertEqual(response.header(b"x-a"), [b"b"])
        self.assertEqual(response.rest, b"")
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_304KeepsContentLengthWithoutBody(self) -> None:
        """
        An origin's 304 with a Content-Length (the length the 200 would
        have had, which RFC 9110 section 8.6 allows) is passed on as it is,
        and ends at its head: no body is awaited, the next request goes on
        the same origin connection.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n",
        )
        response = client.response()
        self.assertEqual(response.status, 304)
        self.assertEqual(response.header(b"content-length"), [b"5"])
        self.assertEqual(response.rest, b"")
        self.assertEqual(len(proxy.factory.pool), 1)
        proxy.exchange(client=client)
        self.assertEqual([r.status for r in client.responses()], [304, 200])
        self.assertEqual(len(proxy.origins), 1)

    def test_viaNamesTheOriginsVersion(self) -> None:
        """
        The response's C{Via} names the protocol version the response was
        received in (RFC 9110 section 7.6.3): 1.0 from an HTTP/1.0 origin.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(client.response().header(b"via"), [b"1.0 netsuite"])

    def test_otherTransferCodingsNotSilentlyDropped(self) -> None:
        """
        A response with C{Transfer-Encoding: gzip, chunked} has its body
        still gzip-coded after de-chunking: the client must be told (the
        coding kept in its C{Transfer-Encoding}) or get a 502, never the
        gzip bytes as if they were the body.
        """
        proxy = self.proxy()
        coded = gzip.compress(b"hello")
        client, origin = proxy.exchange(
            GET,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(coded), coded),
        )
        response = client.response()
        codings = b",".join(response.header(b"transfer-encoding")).lower()
        self.assertTrue(
            response.status == 502 or b"gzip" in codings,
            f"status {response.status}, Transfer-Encoding {codings!r}, body {response.body!r}",
        )


# 4. Broken and malicious origins.


class BrokenOriginTests(ProxyTestCase):
    def assertBadGateway(self, answer: bytes, *fragments: str) -> Message:
        """
        An origin answering C{answer} (in one piece) gets the client a 502
        naming the cause, and its connection is dropped, not pooled.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, answer)
        [response] = [r for r in client.responses() if r.status >= 200]  # after any 1xx passed on
        self.assertTextError(response, 502, *fragments)
        self.assertTrue(origin.transport.disconnecting)
        self.assertEqual(len(proxy.factory.pool), 0)
        self.assertEqual(proxy.factory.stats.counters.get("status_502"), 1)
        return response

    def test_invalidStatusLine(self) -> None:
        """
        A status line that is not HTTP/1.x with three digits: 502.
        """
        self.assertBadGateway(b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n", "did not answer in HTTP/1.x")
        self.assertBadGateway(b"HTTP/1.1 2OO OK\r\n\r\n", "did not answer in HTTP/1.x")
        self.assertBadGateway(b"HTTP/2.0 200 OK\r\n\r\n", "did not answer in HTTP/1.x")
        self.assertBadGateway(b"HTTP/1.1 099 Low\r\n\r\n", "invalid status")
        # Past 599 too (RFC 9110 15): 600 and 999 were relayed as they came.
        self.assertBadGateway(b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n", "invalid status")
        self.assertBadGateway(b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n", "invalid status")

    def test_contentLengthNotANumber(self) -> None:
        """
        C{Content-Length: abc}: 502.
        """
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "invalid Content-Length")
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length")

    def test_conflictingContentLengths(self) -> None:
        """
        Two different Content-Lengths (in two lines or one): 502.
        """
        self.assertBadGateway(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "invalid Content-Length"
        )
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", "invalid Content-Length")

    def test_repeatedEqualContentLengthAccepted(self) -> None:
        """
        The same Content-Length twice is one Content-Length.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), [b"5"])
        self.assertEqual(response.body, b"hello")

    def test_contentLengthLeadingZeros(self) -> None:
        """
        Leading zeros do not count against a Content-Length's 18 digits, as
        for a client's: C{0…05} of 30 digits is 5 (it was a 502), and equal
        to C{5}.  Over 18 digits without them is still a 502.
        """
        proxy = self.proxy()
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 29 + b"5\r\nContent-Length: 5\r\n\r\nhello"
        client, origin = proxy.exchange(GET, answer)
        response = client.response()
        self.assertEqual((response.status, response.header(b"content-length"), response.body), (200, [b"5"], b"hello"))
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nContent-Length: 1" + b"0" * 18 + b"\r\n\r\n", "invalid Content-Length")

    def test_headerLineWithoutColon(self) -> None:
        """
        A header line without a colon: 502.
        """
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nX-Broken\r\nContent-Length: 0\r\n\r\n", "invalid header line")

    def test_spaceBeforeColon(self) -> None:
        """
        A header name followed by a space before the colon: 502 (a classic
        smuggling vector: C{Content-Length : 0}).
        """
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "invalid header line")

    def test_obsFold(self) -> None:
        """
        An obs-fold continuation line: 502.
        """
        self.assertBadGateway(
            b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  continued\r\nContent-Length: 0\r\n\r\n", "invalid header line"
        )
        self.assertBadGateway(
            b"HTTP/1.1 200 OK\r\nX-Long: a\r\n\tContent-Length: 0\r\n\r\n", "invalid header line"
        )

    def test_carriageReturnInValue(self) -> None:
        """
        A lone CR (or a NUL) inside a header value: 502.
        """
        self.assertBadGateway(
            b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 0\r\nContent-Length: 0\r\n\r\n", "invalid header value"
        )
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", "invalid header value")

    def test_headTooLarge(self) -> None:
        """
        A response head over 64 KiB, ended or not: 502.
        """
        line = b"X-Filler: " + b"a" * 990 + b"\r\n"
        many = line * (MAX_RESPONSE_HEAD // len(line) + 1)
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 0\r\n\r\n", "too large")
        self.assertBadGateway(b"HTTP/1.1 200 OK\r\n" + many, "too large")

    def test_headTooLargeInPieces(self) -> None:
        """
        A head over 64 KiB sent in small pieces is refused once it is over,
        not buffered without end.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 200 OK\r\n")
        for i in range(MAX_RESPONSE_HEAD // 1000 + 2):
            origin.send(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000))
        self.assertTextError(client.response(), 502, "too large")
        self.assertTrue(origin.transport.disconnecting)

    def test_headsOfOneAnswerBounded(self) -> None:
        """
        The heads of one answer, interim ones included, are at most
        L{MAX_RESPONSE_HEADS} bytes: an origin sending 20 heads of 60 KB
        each (one byte at a time, each read searched again whole) made the
        proxy parse 1.2 MB for one request, 70 s of CPU.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        hint = b"HTTP/1.1 103 Early Hints\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(60)) + b"\r\n"
        for _ in range(2):
            origin.send(hint)
        self.assertFalse(origin.transport.disconnecting)
        origin.send(hint)
        self.assertTextError(client.responses()[-1], 502, "too large")
        self.assertTrue(origin.transport.disconnecting)

    def test_headsBoundedBeforeTheirEnd(self) -> None:
        """
        Interim heads, then a head not ended yet that takes the answer past
        L{MAX_RESPONSE_HEADS}: a 502 at once, not when (if ever) it ends.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        hint = b"HTTP/1.1 103 Early Hints\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40)) + b"\r\n"
        origin.send(hint * 2)
        origin.send(b"HTTP/1.1 200 OK\r\n" + b"".join(b"Y-%d: %s\r\n" % (i, b"b" * 1000) for i in range(55)))
        self.assertTextError(client.responses()[-1], 502, "too large")

    def test_headsCountedPerAnswer(self) -> None:
        """
        The bound on an answer's heads counts each answer's own: many
        answers on one pooled connection, each with a large head, all go
        through.
        """
        proxy = self.proxy()
        head = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(30))
        for _ in range(8):
            client = proxy.client()
            client.send(GET)
            if len(proxy.attempts) == 1 and _ == 0:
                origin = proxy.accept()
            origin.send(b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\nok")
            self.assertEqual(client.response().status, 200)
        self.assertEqual(len(proxy.attempts), 1)  # one pooled connection

    def test_headInPiecesOfOneByte(self) -> None:
        """
        A head that comes a byte at a time is read whole, its end found
        whether it is CRLF CRLF or a bare LF LF, across interim heads.
        """
        for answer in (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 5\n\nhello",
        ):
            proxy = self.proxy()
            client = proxy.client()
            client.send(GET)
            origin = proxy.accept()
            for i in range(len(answer)):
                origin.send(answer[i : i + 1])
            responses = client.responses()
            self.assertEqual(responses[-1].status, 200)
            self.assertEqual(responses[-1].body, b"hello")

    def test_switchingProtocols(self) -> None:
        """
        C{101 Switching Protocols}, never asked for: 502.
        """
        self.assertBadGateway(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", "switched protocols"
        )

    def test_proxyAuthenticationRequired(self) -> None:
        """
        C{407} from an origin: 502.  Only a proxy may ask for proxy
        credentials, and the origin's challenge is not passed on: the
        client got a 407 without C{Proxy-Authenticate}, taken for its own
        sign-in refused.
        """
        self.assertBadGateway(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n"
            b"Content-Length: 5\r\n\r\nlogin",
            "only a proxy may send",
        )

    def test_endlessInterimResponses(self) -> None:
        """
        An origin that sends interim responses without end (keeping the
        request waiting forever): 502 after 20.
        """
        self.assertBadGateway(b"HTTP/1.1 102 Processing\r\n\r\n" * 21, "interim responses")

    def test_originClosesBeforeAnswering(self) -> None:
        """
        An origin that closes a new connection without a word: 502, not
        retried.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        origin.close()
        self.assertTextError(client.response(), 502, "closed the connection without answering")
        self.assertEqual(len(proxy.attempts), 1)

    def test_originClosesInTheMiddleOfTheHead(self) -> None:
        """
        An origin that closes after part of its head: 502.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        origin.close()
        self.assertTextError(client.response(), 502, "without answering")

    def test_interimResponsesPassedOn(self) -> None:
        """
        An interim C{100 Continue} (in the same piece as the response, or
        alone) is skipped: the proxy answers C{Expect} itself.  Other 1xx
        (C{103 Early Hints}) go on to the client before the answer (RFC
        9110, 15.2), without their hop-by-hop fields; they were dropped.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            GET, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        )
        responses = client.responses()
        self.assertEqual([r.status for r in responses], [200])
        self.assertEqual(responses[0].body, b"hello")

        client = proxy.client()
        client.send(GET)
        self.assertEqual(len(proxy.attempts), 1)  # the pooled connection is used
        origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.received(), b"")
        origin.send(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nConnection: x-hop\r\nX-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\n\r\n"
        )
        self.assertEqual(
            client.received(), b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nVia: 1.1 netsuite\r\n\r\n"
        )
        origin.send(OK)
        responses = client.responses()
        self.assertEqual([r.status for r in responses], [103, 200])
        self.assertEqual(responses[1].body, b"hello")

    def test_interimResponsesNotToHTTP10(self) -> None:
        """
        An HTTP/1.0 client never gets a 1xx (RFC 9110, 15.2).
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK
        )
        self.assertEqual([r.status for r in client.responses()], [200])

    def test_interimResponsesPassedOnUpToALimit(self) -> None:
        """
        Up to L{MAX_RESPONSE_HEAD} bytes of 1xx go on for one request: the
        client's connection is not paced by the origin's yet.
        """
        proxy = self.proxy()
        hint = b"HTTP/1.1 103 Early Hints\r\nLink: <" + b"a" * 10000 + b">\r\n\r\n"
        client, origin = proxy.exchange(GET, hint * 10 + OK)
        self.assertEqual([r.status for r in client.responses()], [103] * 6 + [200])

    def test_transferEncodingOverridesContentLength(self) -> None:
        """
        With both C{Transfer-Encoding: chunked} and C{Content-Length}, the
        body is read as chunked and the client never sees the origin's
        Content-Length.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            GET,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
        )
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), [])
        self.assertEqual(response.header(b"transfer-encoding"), [b"chunked"])
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"hello")
        self.assertEqual(response.rest, b"")
        # RFC 9112 6.3: such an origin may be out of step; never reused.
        self.assertEqual(len(proxy.factory.pool), 0)
        self.assertTrue(origin.transport.disconnecting)

    def test_transferEncodingNotChunkedOnceAndLast(self) -> None:
        """
        A C{Transfer-Encoding} whose last coding is not C{chunked}, with
        C{chunked} twice, C{identity}, a coding no client knows, or none at
        all, cannot be framed (RFC 9112 sections 6.1 and 6.3): 502, and the
        origin's connection is closed; never passed on for the client to
        hang on.
        """
        body = b"5\r\nhello\r\n0\r\n\r\n"
        for codings in (
            b"chunked, chunked",
            b"chunked\r\nTransfer-Encoding: chunked",
            b"chunked, gzip",
            b"gzip",
            b"identity",
            b"identity, chunked",
            b"x-unknown, chunked",
            b"chunked;ext=1",
            b"",
        ):
            answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\nContent-Length: 19\r\n\r\n%s" % (codings, body)
            response = self.assertBadGateway(answer, "Transfer-Encoding")
            self.assertEqual(response.header(b"transfer-encoding"), [], codings)

    def test_http10ResponseWithTransferEncoding(self) -> None:
        """
        An HTTP/1.0 response with C{Transfer-Encoding} has faulty framing
        (RFC 9112 section 6.1): 502, and the origin's connection is closed
        (its chunked body was decoded and passed on).  One without a body
        (to a HEAD) is passed on, on a connection not kept.
        """
        self.assertBadGateway(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 response",
        )
        proxy = self.proxy()
        client, origin = proxy.exchange(
            b"HEAD http://example.com/ HTTP/1.1\r\n\r\n", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.assertEqual(client.response(head=True).status, 200)
        self.assertTrue(origin.closed)

    def test_codingBeforeChunkedPassedOn(self) -> None:
        """
        A coding the client can undo before the final C{chunked} (and
        C{chunked} in any case) is passed on with the body de-chunked and
        chunked again.
        """
        for codings, expected in ((b"Chunked", b"chunked"), (b"gzip, CHUNKED", b"gzip, chunked")):
            proxy = self.proxy()
            client, origin = proxy.exchange(
                GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % (codings,)
            )
            response = client.response()
            self.assertEqual(response.status, 200)
            self.assertEqual(response.header(b"transfer-encoding"), [expected])
            self.assertEqual(response.body, b"hello")
            self.assertEqual(len(proxy.factory.pool), 1)

    def test_malformedChunkedBody(self) -> None:
        """
        A malformed chunked body after the response began: the client's
        connection is cut (its chunked response never ends).
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
        )
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertFalse(response.complete)
        self.assertTrue(client.closed)
        self.assertTrue(origin.transport.disconnecting)
        self.assertEqual(len(proxy.factory.pool), 0)

    def test_bareLineFeedHeadEndsAtFirstBlankLine(self) -> None:
        """
        A head ended by a bare-LF blank line ends there, even when the body
        after it holds CRLFCRLF.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\nContent-Length: 10\n\nab\r\n\r\ncdef")
        response = client.response()
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.body, b"ab\r\n\r\ncdef")

    def test_bytesWhileIdleCloseThePooledConnection(self) -> None:
        """
        An origin that talks while nothing is asked is dropped from the pool.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange()
        self.assertEqual(len(proxy.factory.pool), 1)
        origin.send(b"HTTP/1.1 200 OK\r\n")
        self.assertTrue(origin.transport.disconnecting)
        # Out of the pool at once, not when the close completes: the next
        # request does not take a connection on its way out.
        self.assertEqual(len(proxy.factory.pool), 0)
        origin.close()
        self.assertEqual(len(proxy.factory.pool), 0)

    def test_bytesAfterTheBodyPreventPooling(self) -> None:
        """
        Bytes after a Content-Length body are not sent to the client and the
        connection (out of step) is not pooled.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        response = client.response()
        self.assertEqual(response.body, b"hello")
        self.assertEqual(response.rest, b"")
        self.assertEqual(len(proxy.factory.pool), 0)
        self.assertTrue(origin.transport.disconnecting)


# 5. Errors and timeouts.


class FailureTests(ProxyTestCase):
    def test_duplicateHostRefused(self) -> None:
        """
        A request with more than one C{Host} field is a 400 that closes
        the connection (RFC 9112, 3.2, as nginx answers it), a CONNECT too;
        it was forwarded with the C{Host} made from its URL.  One C{Host},
        or none, goes on.
        """
        proxy = self.proxy()
        for request in (
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nHost: evil.example\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nhost: example.com\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nHost: x\r\n\r\n",
        ):
            client = proxy.client()
            client.send(request)
            self.assertTextError(client.response(), 400, "more than one Host header")
            self.assertTrue(client.closed, request)
        self.assertEqual(proxy.attempts, [])
        client, origin = proxy.exchange(b"GET http://example.com/ HTTP/1.0\r\n\r\n", OK)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(origin.request().header(b"host"), [b"example.com"])

    def test_ownAnswerToHeadHasNoBody(self) -> None:
        """
        The proxy's own answer to a C{HEAD} (a 502 here, a 504 after the
        connect timeout, a 400) is its head alone, with the C{Content-Length}
        of the body a C{GET} gets: the next answer on the connection follows
        it directly (a body there broke Node's keep-alive agent with
        HPE_INVALID_CONSTANT, and curl warned "Excess found").
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=7), silent=["silent.example"])
        client = proxy.client()
        client.send(b"HEAD http://nowhere.example/ HTTP/1.1\r\n\r\nGET http://nowhere.example/ HTTP/1.1\r\n\r\n")
        data = client.received()
        head = parseResponse(data, head=True)
        self.assertEqual(head.status, 502)
        following = parseResponse(head.rest)
        self.assertTextError(following, 502, "could not resolve")
        self.assertEqual(head.header(b"content-length"), [b"%d" % len(following.body)])
        self.assertEqual(following.rest, b"")
        client.transport.clear()
        client.send(b"HEAD http://silent.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.advance(7)
        data = client.received()
        self.assertEqual(parseResponse(data, head=True).status, 504)
        self.assertTrue(data.endswith(b"\r\n\r\n"), data)
        client = proxy.client()
        client.send(b"HEAD http://example.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        data = client.received()
        self.assertEqual(parseResponse(data, head=True).status, 400)
        self.assertTrue(data.endswith(b"\r\n\r\n"), data)

    def test_dnsFailure(self) -> None:
        """
        A name that resolves to nothing: 502 "could not resolve".
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://nowhere.example/ HTTP/1.1\r\n\r\n")
        self.assertTextError(client.response(), 502, "could not resolve the host name nowhere.example")
        self.assertEqual(proxy.attempts, [])
        self.assertEqual(proxy.factory.stats.counters["dns_failures"], 1)
        self.assertFalse(client.closed)

    def test_resolverNeverAnswers(self) -> None:
        """
        A resolver that never answers: 504 after C{connectTimeout}, naming
        the resolution; a late answer changes nothing.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=7), silent=["example.com"])
        client = proxy.client()
        client.send(GET)
        proxy.clock.advance(6.9)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(0.1)
        self.assertTextError(client.response(), 504, "timed out resolving example.com", "7 seconds")
        receiver = proxy.resolver.waiting[0]
        receiver.addressResolved(IPv4Address("TCP", PUBLIC, 80))
        receiver.resolutionComplete()
        self.assertEqual(proxy.attempts, [])
        self.assertEqual(proxy.factory.stats.counters["connect_timeouts"], 1)

    def test_connectTimesOut(self) -> None:
        """
        A connection that is never made: 504 after C{connectTimeout}, and
        the attempt is stopped.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=7))
        client = proxy.client()
        client.send(GET)
        self.assertEqual(len(proxy.attempts), 1)
        proxy.clock.advance(6.9)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(0.1)
        self.assertTextError(client.response(), 504, "timed out connecting to example.com:80")
        self.assertTrue(proxy.clock.connectors[0].stoppedConnecting)

    def test_lateConnectionAfterTimeoutIsDropped(self) -> None:
        """
        A connection made after the request timed out is closed at once.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=7))
        client = proxy.client()
        client.send(GET)
        proxy.clock.advance(7)
        origin = proxy.accept()
        self.assertEqual(origin.received(), b"")
        self.assertTrue(origin.transport.disconnecting)

    def test_connectionRefused(self) -> None:
        """
        A refused connection: 502 "refused".
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        proxy.refuse()
        self.assertTextError(client.response(), 502, "example.com:80 refused the connection")
        self.assertEqual(proxy.factory.stats.counters["connect_failures"], 1)

    def test_connectFallsBackToNextAddress(self) -> None:
        """
        When a name has several addresses, a refused connection tries the
        next one.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://two.example/ HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.attempts, [(PUBLIC, 80)])
        proxy.refuse()
        self.assertEqual(proxy.attempts, [(PUBLIC, 80), (PUBLIC2, 80)])
        proxy.accept().send(OK)
        self.assertEqual(client.response().status, 200)

    def test_silentAddressDoesNotHoldTheNext(self) -> None:
        """
        An address that does not answer (IPv6 broken on the way drops what
        is sent) holds the next one up for L{CONNECT_ATTEMPT_DELAY}, not
        the whole connect timeout (RFC 8305): the next attempt starts
        then, the two race, and the one that connects is taken, the other
        stopped.  The request waited for the connect timeout, then got a
        504, the next address never tried.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=6))
        client = proxy.client()
        client.send(b"GET http://two.example/ HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.attempts, [(PUBLIC, 80)])
        proxy.clock.advance(CONNECT_ATTEMPT_DELAY - 0.01)
        self.assertEqual(len(proxy.attempts), 1)
        proxy.clock.advance(0.01)
        self.assertEqual(proxy.attempts, [(PUBLIC, 80), (PUBLIC2, 80)])
        proxy.accept(1).send(OK)
        self.assertEqual(client.response().status, 200)
        self.assertTrue(proxy.clock.connectors[0].stoppedConnecting)
        proxy.clock.advance(10)
        self.assertEqual(len(proxy.attempts), 2)
        self.assertEqual(len(client.responses()), 1)

    def test_firstToConnectWins(self) -> None:
        """
        The earlier address connecting after the next one was started wins;
        the other is stopped, and one that connects late anyway is closed.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://two.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.advance(CONNECT_ATTEMPT_DELAY)
        first = proxy.accept(0)
        self.assertTrue(proxy.clock.connectors[1].stoppedConnecting)
        late = proxy.accept(1)
        self.assertTrue(late.transport.disconnecting)
        first.send(OK)
        self.assertEqual(client.response().status, 200)

    def test_familiesTakeTurns(self) -> None:
        """
        Addresses are tried with their families taking turns, the first
        address's first (RFC 8305, 4).
        """
        v6, v6b = "2606:2800:220:1:248:1893:25c8:1946", "2606:2800:220:1:248:1893:25c8:1947"
        proxy = self.proxy(answers={"dual.example": [v6, v6b, PUBLIC, PUBLIC2]})
        client = proxy.client()
        client.send(b"GET http://dual.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.pump([CONNECT_ATTEMPT_DELAY] * 3)
        self.assertEqual([host for host, _ in proxy.attempts], [v6, PUBLIC, v6b, PUBLIC2])
        for index in range(4):
            proxy.refuse(index)
        self.assertTextError(client.response(), 502, "dual.example:80 refused the connection")
        self.assertEqual(proxy.factory.stats.counters["connect_failures"], 1)

    def test_refusalStartsTheNextAtOnce(self) -> None:
        """
        An attempt refused starts the next address at once, not at its
        turn; a 502 comes only once every attempt has failed.
        """
        proxy = self.proxy(answers={"three.example": [PUBLIC, PUBLIC2, "93.184.216.36"]})
        client = proxy.client()
        client.send(b"GET http://three.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.advance(CONNECT_ATTEMPT_DELAY)
        self.assertEqual(len(proxy.attempts), 2)
        proxy.refuse(1)
        self.assertEqual(len(proxy.attempts), 3)
        proxy.refuse(2)
        self.assertEqual(client.received(), b"")
        proxy.refuse(0)
        self.assertTextError(client.response(), 502, "three.example:80 refused the connection")

    def test_racingAttemptsBounded(self) -> None:
        """
        At most L{MAX_RACING_ATTEMPTS} attempts race for one request; one
        that fails makes way for the next address.  A name of 40 silent
        addresses had one request hold 40 sockets connecting.
        """
        many = [f"93.184.216.{n}" for n in range(100, 140)]
        proxy = self.proxy(answers={"many.example": many}, settings=ProxySettings(connectTimeout=10))
        client = proxy.client()
        client.send(b"GET http://many.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.pump([CONNECT_ATTEMPT_DELAY] * 30)
        self.assertEqual([host for host, _ in proxy.attempts], many[:MAX_RACING_ATTEMPTS])
        proxy.refuse(1)
        self.assertEqual(len(proxy.attempts), MAX_RACING_ATTEMPTS + 1)
        proxy.clock.pump([CONNECT_ATTEMPT_DELAY] * 4)
        self.assertEqual(len(proxy.attempts), MAX_RACING_ATTEMPTS + 1)
        proxy.clock.advance(10)
        self.assertTextError(client.response(), 504, "timed out connecting")

    def test_racingAttemptsTimeOut(self) -> None:
        """
        At the connect timeout every attempt still racing is stopped: 504.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=6))
        client = proxy.client()
        client.send(b"GET http://two.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.advance(6)
        self.assertTextError(client.response(), 504, "timed out connecting to two.example:80")
        self.assertEqual([c.stoppedConnecting for c in proxy.clock.connectors], [True, True])
        proxy.clock.advance(10)
        self.assertEqual(len(proxy.attempts), 2)

    def test_racingAttemptsCountInTheBudget(self) -> None:
        """
        Each attempt racing past a request's first is a socket more, and
        counts in the connection budget the proxy's listeners share while
        it races; the budget is back where it was once one connects (the
        others stopped), once all fail, at the connect timeout, and when
        the client leaves.  It counted none of them: a proxy of 1,000
        connections to names of silent addresses held 4,000 sockets.
        """
        many = [f"93.184.216.{n}" for n in range(100, 110)]
        names = ["a.example", "b.example", "c.example"]
        proxy = self.proxy(answers={name: many for name in names}, settings=ProxySettings(connectTimeout=10))
        budget = proxy.factory.budget = ConnectionBudget(100)
        budget.opened(None, 7)

        def race() -> Client:
            client = proxy.client()
            client.send(b"GET http://%s/ HTTP/1.1\r\n\r\n" % names.pop().encode())
            proxy.clock.pump([CONNECT_ATTEMPT_DELAY] * 3)
            self.assertEqual(budget.total, 7 + MAX_RACING_ATTEMPTS - 1)
            return client

        client = race()
        proxy.refuse(1)  # the next takes its place
        self.assertEqual(budget.total, 7 + MAX_RACING_ATTEMPTS - 1)
        proxy.accept(2).send(OK)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(budget.total, 7)

        race()
        proxy.clock.advance(10)
        self.assertEqual(budget.total, 7)

        race().lose()
        self.assertEqual(budget.total, 7)

        proxy = self.proxy(answers={"three.example": many[:3]})
        budget = proxy.factory.budget = ConnectionBudget(100)
        client = proxy.client()
        client.send(b"GET http://three.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.pump([CONNECT_ATTEMPT_DELAY] * 3)
        self.assertEqual(budget.total, 2)
        for index in range(3):
            proxy.refuse(index)
        self.assertTextError(client.response(), 502, "refused the connection")
        self.assertEqual(budget.total, 0)

    def test_noRacingWithoutRoomInTheBudget(self) -> None:
        """
        With no room left in the connection budget, a request's first
        attempt races alone (it is counted with the client's connection);
        the next starts once there is room, or at once when the first
        fails.
        """
        proxy = self.proxy(answers={"three.example": [PUBLIC, PUBLIC2, "93.184.216.36"]})
        budget = proxy.factory.budget = ConnectionBudget(10)
        budget.opened(None, 10)
        client = proxy.client()
        client.send(b"GET http://three.example/ HTTP/1.1\r\n\r\n")
        proxy.clock.pump([CONNECT_ATTEMPT_DELAY] * 4)
        self.assertEqual(proxy.attempts, [(PUBLIC, 80)])
        budget.closed(None, 1)
        proxy.clock.advance(CONNECT_ATTEMPT_DELAY)
        self.assertEqual(proxy.attempts, [(PUBLIC, 80), (PUBLIC2, 80)])
        self.assertEqual(budget.total, 10)
        proxy.refuse(0)
        self.assertEqual(proxy.attempts, [(PUBLIC, 80), (PUBLIC2, 80), ("93.184.216.36", 80)])
        proxy.accept(2).send(OK)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(budget.total, 9)

    def test_originNeverAnswers(self) -> None:
        """
        An origin that accepts the request but stays silent for
        C{readTimeout}: 504, and its connection is dropped.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=10, readTimeout=20))
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        proxy.clock.advance(19.9)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(0.1)
        self.assertNotEqual(client.received(), b"", "no answer after readTimeout (20 s) of silence")
        self.assertTextError(client.response(), 504, "did not answer within 20 seconds")
        self.assertTrue(origin.transport.disconnecting)

    def test_originNeverAnswersEventually504(self) -> None:
        """
        However late, a silent origin ends in a 504.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=10, readTimeout=20))
        client = proxy.client()
        client.send(GET)
        proxy.accept()
        proxy.clock.advance(30)
        self.assertTextError(client.response(), 504, "did not answer within 20 seconds")

    def test_originStallsInTheBody(self) -> None:
        """
        An origin silent for C{readTimeout} in the middle of a body: the
        client's connection is cut.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=10, readTimeout=20))
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        proxy.clock.advance(10)
        origin.send(b"!")  # read activity pushes the deadline on
        proxy.clock.advance(19.9)
        self.assertFalse(client.closed)
        proxy.clock.advance(0.1)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertFalse(response.complete)
        self.assertTrue(client.closed)

    def test_truncatedBody(self) -> None:
        """
        An origin that closes halfway through a Content-Length body: the
        client's connection is closed without a complete response (its
        Content-Length says more was due).
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        origin.close()
        response = client.response()
        self.assertEqual(response.header(b"content-length"), [b"10"])
        self.assertEqual(response.body, b"hello")
        self.assertFalse(response.complete)
        self.assertTrue(client.closed)
        self.assertEqual(proxy.factory.stats.counters["upstream_failures"], 1)

    def test_truncatedChunkedBodyToHTTP11Client(self) -> None:
        """
        A chunked body cut by the origin reaches an HTTP/1.1 client without
        its last chunk, and the connection is closed.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        origin.close()
        response = client.response()
        self.assertFalse(response.complete)
        self.assertEqual(response.body, b"hello")
        self.assertTrue(client.closed)

    def test_truncatedBodyToHTTP10ClientIsAborted(self) -> None:
        """
        An HTTP/1.0 client cannot tell a cut close-delimited body from a
        whole one by a clean close, so a response the origin cuts is
        aborted (reset), not closed cleanly.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        origin.close()
        self.assertEqual(parseResponse(client.received()).body, b"hello")
        self.assertTrue(client.closed)
        self.assertTrue(client.transport.disconnected, "closed cleanly: the cut looks like a complete response")

    def test_clientGoesAway(self) -> None:
        """
        A client that leaves while its response streams: the origin
        connection is dropped, not pooled.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.lose()
        self.assertTrue(origin.transport.disconnecting)
        origin.send(b"lo")
        origin.close()
        self.assertEqual(len(proxy.factory.pool), 0)

    def test_clientGoesAwayWhileConnecting(self) -> None:
        """
        A client that leaves while the origin connection is being made: the
        attempt is stopped.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        client.lose()
        self.assertTrue(proxy.clock.connectors[0].stoppedConnecting)
        proxy.clock.advance(60)

    def test_closeDelimitedBodyBrokenByOrigin(self) -> None:
        """
        A body delimited by the end of the connection is complete only when
        the origin closes cleanly: a reset in the middle reaches an HTTP/1.1
        client without the last chunk, its connection closed, and an
        HTTP/1.0 client as a reset.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\n\r\nsome ")
        origin.protocol.connectionLost(Failure(ConnectionLost()))
        response = client.response()
        self.assertEqual(response.header(b"transfer-encoding"), [b"chunked"])
        self.assertEqual(response.body, b"some ")
        self.assertFalse(response.complete, "a cut body looks complete")
        self.assertTrue(client.closed)
        self.assertEqual(proxy.factory.stats.counters["upstream_failures"], 1)
        client, origin = proxy.exchange(b"GET http://example.com/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nsome ")
        origin.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(parseResponse(client.received()).body, b"some ")
        self.assertTrue(client.transport.disconnected, "closed cleanly: the cut looks like a complete response")

    def test_uploadInProgressIsNotSilence(self) -> None:
        """
        While the request body still goes to the origin, its taking it is
        not silence: an upload longer than C{readTimeout} gets its answer.
        Once the body stops coming, the origin's silence counts: 504.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=10, readTimeout=20))
        client = proxy.client()
        client.send(b"POST http://example.com/up HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
        origin = proxy.accept()
        for _ in range(10):
            proxy.clock.advance(15)
            self.assertEqual(client.received(), b"")
            client.send(b"x" * 10)
        proxy.clock.advance(19)
        origin.send(OK)
        response = client.response()
        self.assertEqual((response.status, response.body), (200, b"hello"))
        self.assertEqual(len(origin.request().body), 100)

        client.transport.clear()
        client.send(b"POST http://example.com/up HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
        proxy.clock.advance(19.9)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(0.1)
        self.assertTextError(client.response(), 504, "did not answer within 20 seconds")

    def test_connectErrorInWords(self) -> None:
        """
        A connection that fails for another reason than a refusal: 502
        saying why in words, not as an errno.
        """
        proxy = self.proxy()
        for reason in (getConnectError((113, os.strerror(113))), getConnectError((113, ""))):
            client = proxy.client()
            client.send(GET)
            proxy.clock.tcpClients[-1][2].clientConnectionFailed(proxy.clock.connectors[-1], Failure(reason))
            response = client.response()
            self.assertTextError(response, 502, f"could not connect to example.com:80: {os.strerror(113)}")
            self.assertNotIn(b"113", response.body)

    def test_connectRaisingIs502(self) -> None:
        """
        A connect call that raises at once (as the system's does for an
        address it cannot use) is a 502 saying why, not an unhandled error
        and a connection closed without an answer.
        """
        proxy = self.proxy()

        def connectTCP(*args: object, **kwargs: object) -> None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        self.patch(proxy.clock, "connectTCP", connectTCP)
        client = proxy.client()
        client.send(GET)
        self.assertTextError(client.response(), 502, "could not connect to example.com:80: Name or service not known")
        self.assertFalse(client.closed)
        proxy.clock.advance(60)
        self.assertEqual(len(client.responses()), 1)

    def test_resolverRaisingIs502(self) -> None:
        """
        A resolver that raises at once is a 502 saying why, not a wait for
        the connect timeout.
        """
        proxy = self.proxy()

        def resolveHostName(*args: object, **kwargs: object) -> None:
            raise UnicodeError("encoding with 'idna' codec failed")

        self.patch(proxy.resolver, "resolveHostName", resolveHostName)
        client = proxy.client()
        client.send(GET)
        self.assertTextError(client.response(), 502, "could not resolve the host name example.com", "idna")
        self.assertEqual(proxy.factory.stats.counters["dns_failures"], 1)
        proxy.clock.advance(60)
        self.assertEqual(len(client.responses()), 1)



class FlowControlTests(ProxyTestCase):
    def test_slowClientPausesOrigin(self) -> None:
        """
        While the client's transport is full (it pauses the channel), the
        origin's response is not read.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.channel.pauseProducing()
        self.assertEqual(origin.transport.producerState, "paused")
        client.channel.resumeProducing()
        self.assertEqual(origin.transport.producerState, "producing")

    def test_pausedForTheClientIsNotTheOriginsSilence(self) -> None:
        """
        While the origin is not read because the client takes nothing, the
        read timeout does not run (it cut the client's download and blamed
        the origin); it starts over when reading resumes.
        """
        proxy = self.proxy(settings=ProxySettings(readTimeout=20, idleTimeout=60))
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.channel.pauseProducing()
        proxy.clock.advance(50)
        self.assertFalse(client.closed)
        self.assertFalse(origin.closed)
        client.channel.resumeProducing()
        proxy.clock.advance(19)
        origin.send(b"lo worl")
        response = client.response()
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"hello worl")
        self.assertEqual(proxy.factory.stats.counters.get("upstream_failures"), None)

    def test_clientTakingNothingIsCutOff(self) -> None:
        """
        A client that takes nothing of its answer for the idle timeout
        (nginx's send_timeout) is cut off, and logged as the client's: the
        status sent and the bytes so far, not an origin failure.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy(settings=ProxySettings(readTimeout=20, idleTimeout=60))
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.channel.pauseProducing()
        proxy.clock.advance(30)
        client.channel.resumeProducing()  # it takes some
        client.channel.pauseProducing()
        proxy.clock.advance(59)
        self.assertFalse(client.closed)
        proxy.clock.advance(1)
        self.assertTrue(client.transport.disconnected, "not aborted: its buffer is full")
        client.channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(origin.closed)
        [line] = accessLines(events)
        self.assertRegex(line, r'"GET http://example\.com/ HTTP/1\.1" 200 0 3 ')
        counters = proxy.factory.stats.counters
        self.assertEqual((counters["client_timeouts"], counters.get("upstream_failures")), (1, None))
        messages = [formatEvent(e) for e in events if e.get("log_format") != "{line}"]
        self.assertIn("client 127.0.0.1 took nothing of its answer for 60 seconds: closed", messages)

    def test_clientTakingSlowlyIsNotCutOff(self) -> None:
        """
        A client that takes its answer slowly but steadily, its transport's
        buffer full all along, is not cut off: it was, as one that took
        nothing, once its buffer had stayed full for the idle timeout.
        Once it takes nothing, it is, an idle timeout later.
        """
        proxy = self.proxy(settings=ProxySettings(readTimeout=20, idleTimeout=60))
        client = proxy.client(transport=TakingTransport)
        client, origin = proxy.exchange(
            GET, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50_000, client
        )
        client.channel.pauseProducing()  # its buffer is full
        for _ in range(200):  # 100 bytes a second
            proxy.clock.advance(1)
            client.transport.take(100)
        self.assertFalse(client.transport.disconnected)
        self.assertAbortedBetween(proxy, client, 260, 267)
        self.assertEqual(proxy.factory.stats.counters["client_timeouts"], 1)

    def test_originPausedAtTheEndOfItsAnswerIsReadAgain(self) -> None:
        """
        An origin connection paused for the client when its answer ended
        is read again once it is in the pool, so that it serves the next
        request.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.channel.pauseProducing()
        origin.send(b"lo worl")
        self.assertEqual(len(proxy.factory.pool), 1)
        self.assertEqual(origin.transport.producerState, "producing")

    def test_clientLostWhilePausedLeavesNoStallWatch(self) -> None:
        """
        A client lost while its answer waits for it (its buffer full)
        leaves no look of the answer's stall watch pending, and is not
        counted as timed out an idle timeout later.
        """
        proxy = self.proxy(settings=ProxySettings(readTimeout=20, idleTimeout=60))
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.channel.pauseProducing()
        proxy.clock.advance(10)
        client.channel.connectionLost(Failure(ConnectionLost()))
        looks = [c for c in proxy.clock.getDelayedCalls() if getattr(c.func, "__func__", None) is limitsModule.SendStall._look]
        self.assertEqual(looks, [])
        proxy.clock.advance(120)
        self.assertNotIn("client_timeouts", proxy.factory.stats.counters)

    def test_idleAfterAnswerEndedPausedGetsNo408(self) -> None:
        """
        An answer that ends while the client's buffer is full, then taken:
        the connection is idle until the client's next byte, and closed
        quietly at the idle timeout.  Resuming started a head for no bytes,
        and an unasked 408 went out one head timeout later, to be read as
        the answer to the next request (seen on the TLS port).
        """
        proxy = self.proxy(settings=ProxySettings(headerTimeout=5, idleTimeout=60))
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        client.channel.pauseProducing()
        origin.send(b"lo worl")
        client.channel.resumeProducing()
        self.assertEqual(client.response().body, b"hello worl")
        answered = client.received()
        proxy.clock.advance(30)
        self.assertEqual(client.received(), answered)
        self.assertFalse(client.closed)
        client.send(GET)
        origin.request()
        origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(client.received().count(b"HTTP/1.1 200 OK"), 2)
        proxy.clock.advance(60)
        self.assertTrue(client.closed)
        self.assertNotIn(b"408", client.received())
        self.assertNotIn("header_timeouts", proxy.factory.stats.counters)

    def test_slowOriginPausesUpload(self) -> None:
        """
        While the origin's transport is full, the client's upload is not
        read; the pacing ends with the body.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello")
        origin = proxy.accept()
        self.assertEqual(client.transport.producerState, "producing")
        origin.transport.producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        origin.transport.producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")
        client.send(b"world")
        self.assertIsNone(origin.transport.producer)
        self.assertEqual(origin.request().body, b"helloworld")

    def test_bodyWaitingForConnectionIsBounded(self) -> None:
        """
        A body arriving before the origin connection exists is held up to a
        bound, then the client is not read until the connection is made.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 70000)
        self.assertEqual(client.transport.producerState, "paused")
        origin = proxy.accept()
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(len(origin.request().body), 70000)
        client.send(b"y" * 30000)
        self.assertTrue(origin.request().complete)

    def test_closedAfterAnErrorAnswerClientTakingNothingIsAborted(self) -> None:
        """
        A connection closed after the proxy's own answer (here a 400 to an
        HTTP/1.0 client) is aborted when the client takes none of it for
        the idle timeout: it stayed open forever.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=60))
        client = proxy.client()
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTextError(client.response(), 400, "this is an HTTP proxy")
        self.assertTrue(client.closed)
        self.assertAbortedAfter(proxy, client, 60)
        self.assertEqual(proxy.factory.stats.counters["client_timeouts"], 1)

    def test_closingClientTakingSomeIsNotAborted(self) -> None:
        """
        A client whose connection is being closed is aborted only once it
        took none of the output waiting for it for a whole idle timeout
        (looked at ten times a timeout, so at most a tenth late): one
        that takes some within each is left to take the rest.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=60))
        taken = {50: 200000, 100: 1000}  # unsent from these seconds on
        unsent = lambda transport: min([300000] + [left for since, left in taken.items() if proxy.clock.seconds() >= since])
        self.patch(limitsModule, "unsentBytes", unsent)
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertTrue(client.closed)
        self.assertAbortedBetween(proxy, client, 100 + 60, 100 + 66)

    def test_closingClientTakingAllAtOnceIsAbortedAfterOneTimeout(self) -> None:
        """
        A client that takes all that was left at once (the kernel sends it
        after the close) and never closes is aborted one idle timeout
        after, at most a tenth late: it was kept for two, the output
        taken after the close counted as taken at the first look.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=60))
        self.patch(limitsModule, "unsentBytes", lambda transport: 0 if proxy.clock.seconds() > 0 else 5000)
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertTrue(client.closed)
        self.assertAbortedBetween(proxy, client, 60, 66)
        self.assertEqual(proxy.factory.stats.counters["client_timeouts"], 1)

    def test_stalledClientWhoseAnswerEndedIsJudgedByTheClose(self) -> None:
        """
        When the answer ends and the connection closes while the client's
        buffer is full, the stall timer no longer cuts it: the close's
        timer does, from the close, once it takes nothing.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=60))
        client, origin = proxy.exchange(
            b"GET http://example.com/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel"
        )
        client.channel.pauseProducing()
        proxy.clock.advance(30)
        origin.send(b"lo worl")
        proxy.clock.advance(0)
        self.assertTrue(client.closed)
        self.assertAbortedAfter(proxy, client, 60)
        self.assertEqual(proxy.factory.stats.counters["client_timeouts"], 1)

    def test_closingTimerEndsWithTheConnection(self) -> None:
        """
        The timer of a connection being closed is cancelled when it ends,
        also when it ends while it closes its tunnel.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=60))
        answered, tunnel = proxy.client(), proxy.client()
        answered.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(answered.closed)
        answered.lose()
        tunnel.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        proxy.accept()
        tunnel.lose()
        ours = {answered.channel, tunnel.channel, answered.transport, tunnel.transport}
        owners = [getattr(c.func, "__self__", None) for c in proxy.clock.getDelayedCalls()]
        self.assertEqual([o for o in owners if o in ours or getattr(o, "_transport", None) in ours], [])
        proxy.clock.advance(120)
        self.assertEqual((answered.transport.disconnected, tunnel.transport.disconnected), (False, False))


class ClientLimitTests(ProxyTestCase):
    def test_requestLineTooLong(self) -> None:
        """
        A request line over C{maxRequestLine}: 414 with a text body, closed.
        """
        proxy = self.proxy(settings=ProxySettings(maxRequestLine=1000))
        client = proxy.client()
        client.send(b"GET http://example.com/" + b"a" * 1000 + b" HTTP/1.1\r\n\r\n")
        self.assertTextError(client.response(), 414, "request line too long")
        self.assertTrue(client.closed)
        self.assertEqual(proxy.attempts, [])

    def test_headersTooLargeReasonPhrase(self) -> None:
        """
        The proxy's 431 has its reason phrase (it was C{431 Error}).
        """
        proxy = self.proxy(settings=ProxySettings(maxHeaderBytes=100))
        client = proxy.client()
        client.send(b"GET http://example.com/ HTTP/1.1\r\nX-A: " + b"a" * 200 + b"\r\n\r\n")
        response = client.response()
        self.assertTextError(response, 431)
        self.assertEqual(response.startLine, b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_headRefusalsLogged(self) -> None:
        """
        A request refused while its head is read gets its access-log line
        with the status answered, once its request line is read, as nginx
        logs its 400 and 431 (there was none), a request line that did not
        parse as it came; one too long for the limit as it came up to the
        limit (414, as nginx logs it; it had none).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy(settings=ProxySettings(maxHeaderBytes=100, maxRequestLine=1000))
        cases = [
            (b"GET http://example.com/a HTTP/1.1\r\nX-A: " + b"a" * 200 + b"\r\n\r\n", 431),
            (b"GET http://example.com/b HTTP/1.1\r\nBad header\r\n\r\n", 400),
            (b"POST http://example.com/c HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET http://example.com/" + b"d" * 1000 + b" HTTP/1.1\r\n\r\n", 414),
            (b'NOT A "REQUEST" \x16\r\n\r\n', 400),
            (b"\x16\x03\x01\x02\x00\x01", 400),
        ]
        for data, status in cases:
            client = proxy.client()
            client.send(data)
            self.assertEqual(client.response().status, status, data)
            client.channel.connectionLost(Failure(ConnectionDone()))
        lines = accessLines(events)
        self.assertEqual(len(lines), 6, lines)
        self.assertRegex(lines[0], r'^127\.0\.0\.1 - \[[^]]+\] "GET http://example\.com/a HTTP/1\.1" 431 0 0 ')
        self.assertRegex(lines[1], r'"GET http://example\.com/b HTTP/1\.1" 400 0 0 ')
        self.assertRegex(lines[2], r'"POST http://example\.com/c HTTP/1\.0" 400 0 0 ')
        # Cut at the limit (1000 bytes).
        self.assertRegex(lines[3], r'"GET http://example\.com/d{977}" 414 0 0 ')
        # A request line that did not parse, as it came (escaped).
        self.assertRegex(lines[4], r'"NOT A \\x22REQUEST\\x22 \\x16" 400 0 0 ')
        # A TLS handshake on the plain port: refused at once, not at the
        # header timeout.
        self.assertRegex(lines[5], r'"\\x16\\x03\\x01\\x02\\x00\\x01" 400 0 0 ')
        counters = proxy.factory.stats.counters
        self.assertEqual(
            (counters["requests"], counters["status_431"], counters["status_414"], counters["status_400"]), (6, 1, 1, 4)
        )
        self.assertEqual(proxy.attempts, [])

    def test_slowHeaders(self) -> None:
        """
        Headers not complete within C{headerTimeout}: 408 with a text body,
        closed.
        """
        proxy = self.proxy(settings=ProxySettings(headerTimeout=5))
        client = proxy.client()
        client.send(b"GET http://example.com/ HTTP/1.1\r\n")
        proxy.clock.advance(4.9)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(0.1)
        self.assertTextError(client.response(), 408, "not received in time")
        self.assertTrue(client.closed)

# 6. Rules.


class RuleTests(ProxyTestCase):
    def test_refusedClient(self) -> None:
        """
        A client outside the allowed networks gets 403 and is closed; nothing
        is resolved or connected.
        """
        proxy = self.proxy()
        client = proxy.client("10.1.2.3")
        client.send(GET)
        self.assertTextError(client.response(), 403, "does not serve clients from 10.1.2.3")
        self.assertTrue(client.closed)
        self.assertEqual(proxy.resolver.asked, [])
        self.assertEqual(proxy.attempts, [])
        self.assertEqual(proxy.factory.stats.counters["refused_clients"], 1)

    def test_loopbackDestinationRefused(self) -> None:
        """
        A name resolving to 127.0.0.1: 403 mentioning loopback, and no
        connection is attempted.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://loopback.example/ HTTP/1.1\r\n\r\n")
        self.assertTextError(client.response(), 403, "loopback")
        self.assertEqual(proxy.attempts, [])
        self.assertEqual(proxy.factory.stats.counters["refused_destinations"], 1)

    def test_loopbackLiteralRefused(self) -> None:
        """
        Loopback written as an address (IPv4, IPv6, IPv4-mapped IPv6) is
        refused without asking the resolver.
        """
        proxy = self.proxy()
        for target in (b"http://127.0.0.1:8080/", b"http://[::1]/", b"http://[::ffff:127.0.0.1]/"):
            client = proxy.client()
            client.send(b"GET " + target + b" HTTP/1.1\r\n\r\n")
            self.assertTextError(client.response(), 403, "loopback")
        self.assertEqual(proxy.resolver.asked, [])
        self.assertEqual(proxy.attempts, [])

    def test_loopbackAllowedWhenAskedFor(self) -> None:
        """
        With C{allowLoopback}, a loopback destination is connected to.
        """
        proxy = self.proxy(rules=ProxyRules(allowLoopback=True))
        client, origin = proxy.exchange(b"GET http://loopback.example:8000/ HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.attempts, [("127.0.0.1", 8000)])
        self.assertEqual(client.response().status, 200)

    def test_anyRefusedAddressRefusesTheName(self) -> None:
        """
        A name resolving to a public address and 169.254.169.254: 403, no
        connection attempted to either.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://metadata.example/latest/meta-data/ HTTP/1.1\r\n\r\n")
        self.assertTextError(client.response(), 403, "169.254.169.254", "link-local")
        self.assertEqual(proxy.attempts, [])

    def test_connectToRefusedPort(self) -> None:
        """
        CONNECT to port 22: 403 naming the allowed ports.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"CONNECT example.com:22 HTTP/1.1\r\nHost: example.com:22\r\n\r\n")
        self.assertTextError(client.response(), 403, "port 22", "allowed: 443")
        self.assertEqual(proxy.resolver.asked, [])
        self.assertEqual(proxy.attempts, [])

    def test_failedConnectClosesTheConnection(self) -> None:
        """
        A failed CONNECT (a port not allowed, a bad target, too many
        tunnels) closes the connection: what the client sent after it,
        meant for the tunnel, is not read as a request (it went to the
        origin it named).
        """
        smuggled = b"GET http://example.com/smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
        cases = [
            (ProxySettings(), b"CONNECT example.com:22 HTTP/1.1\r\nHost: example.com:22\r\n\r\n", 403),
            (ProxySettings(), b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
            (ProxySettings(maxTunnels=1), b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 503),
        ]
        for settings, connect, status in cases:
            proxy = self.proxy(settings=settings)
            if status == 503:
                proxy.client().send(connect)  # the one tunnel allowed, connecting
            client = proxy.client()
            client.send(connect + smuggled)
            responses = client.responses()
            self.assertEqual([r.status for r in responses], [status], connect)
            self.assertEqual(responses[0].header(b"connection"), [b"close"])
            self.assertTrue(client.closed, connect)
            # Only the first client's tunnel was resolved.
            self.assertEqual(proxy.resolver.asked, ["example.com"] if status == 503 else [], connect)

    def test_originFormRequest(self) -> None:
        """
        A request in origin form (C{GET /}): 400 saying this is an HTTP
        proxy.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertTextError(client.response(), 400, "this is an HTTP proxy")
        self.assertEqual(proxy.attempts, [])

    def test_badTarget(self) -> None:
        """
        A target the proxy cannot fetch: 400 saying why.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET https://example.com/ HTTP/1.1\r\n\r\n")
        self.assertTextError(client.response(), 400, "CONNECT")
        self.assertFalse(client.closed)

    def test_targetWithBytesOutsidePrintableASCII(self) -> None:
        """
        A target holding DEL or a byte above 0x7F (which Twisted's
        request-line check lets through from 0x7F to 0xB0) gets 400 and is
        not fetched; the same bytes percent-encoded go on as they are.
        """
        proxy = self.proxy()
        for byte in (b"\x7f", b"\x80", b"\xa9", b"\xb0"):
            client = proxy.client()
            client.send(b"GET http://example.com/a" + byte + b"b HTTP/1.1\r\n\r\n")
            self.assertTextError(client.response(), 400, "printable ASCII", "percent-encode")
            self.assertFalse(client.closed)
        self.assertEqual(proxy.attempts, [])
        proxy.client().send(b"GET http://example.com/a%7F%80b HTTP/1.1\r\n\r\n")
        self.assertEqual(proxy.accept().request().startLine, b"GET /a%7F%80b HTTP/1.1")

    def test_ipv6ZoneIdRefused(self) -> None:
        """
        A GET or CONNECT to an IPv6 literal with a zone id: 400 saying so;
        nothing is connected.
        """
        proxy = self.proxy()
        for request in (
            b"GET http://[2001:db8::1%nosuchif]/ HTTP/1.1\r\n\r\n",
            b"CONNECT [fd00::2%eth0]:443 HTTP/1.1\r\n\r\n",
        ):
            client = proxy.client()
            client.send(request)
            self.assertTextError(client.response(), 400, "zone id")
        self.assertEqual(proxy.attempts, [])

    def test_unusableHostNamesRefused(self) -> None:
        """
        Host names DNS cannot carry (an empty label, a label over 63
        characters) get 400 at once, for GET and CONNECT, and the resolver
        is not asked (the system's would fail to encode them and never
        answer).
        """
        proxy = self.proxy()
        for request in (
            b"GET http://a..b/ HTTP/1.1\r\n\r\n",
            b"GET http://%s.example/ HTTP/1.1\r\n\r\n" % (b"a" * 64,),
            b"CONNECT a..b:443 HTTP/1.1\r\n\r\n",
        ):
            client = proxy.client()
            client.send(request)
            self.assertTextError(client.response(), 400, "host name is not valid")
        self.assertEqual(proxy.resolver.asked, [])

    def test_contentLengthAndChunked(self) -> None:
        """
        A request with both C{Content-Length} and C{Transfer-Encoding:
        chunked}: 400 and closed, nothing forwarded.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(
            b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n"
        )
        self.assertEqual(client.response().status, 400)
        self.assertTrue(client.closed)
        self.assertEqual(proxy.attempts, [])


# 7. Authentication.


class AuthTests(ProxyTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        users = dict([_parseLine("alice:" + hashPassword("right", **CHEAP))])
        authenticator = Authenticator(users, self.clock, check=lambda f, *a: defer.succeed(f(*a)))
        self.proxy_ = self.proxy(authenticator=authenticator)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def accessLines(self) -> List[str]:
        return accessLines(self.events)

    def test_noCredentials(self) -> None:
        """
        No C{Proxy-Authorization}: 407 with a Basic challenge; nothing is
        resolved.
        """
        client = self.proxy_.client()
        client.send(GET)
        response = client.response()
        self.assertTextError(response, 407, "needs a user name and password")
        [challenge] = response.header(b"proxy-authenticate")
        self.assertTrue(challenge.startswith(b'Basic realm="'), challenge)
        self.assertEqual(self.proxy_.resolver.asked, [])

    def test_wrongPassword(self) -> None:
        """
        A wrong password (or user): 407.
        """
        for credentials in (basic("alice", "wrong"), basic("mallory", "right"), b"Bearer abc"):
            client = self.proxy_.client()
            client.send(b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + credentials + b"\r\n\r\n")
            self.assertEqual(client.response().status, 407, credentials)
        self.assertEqual(self.proxy_.attempts, [])
        self.assertEqual(self.proxy_.factory.stats.counters["auth_failures"], 3)

    def test_rightPassword(self) -> None:
        """
        The right password: forwarded, without C{Proxy-Authorization}; the
        access-log line names the user.
        """
        client, origin = self.proxy_.exchange(
            b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", "right") + b"\r\n\r\n"
        )
        self.assertEqual(client.response().status, 200)
        self.assertEqual(origin.request().header(b"proxy-authorization"), [])
        [line] = self.accessLines()
        self.assertTrue(line.startswith("127.0.0.1 alice ["), line)

    def test_guessesFromManyAddressesShareOneLimit(self) -> None:
        """
        Wrong guesses spread over many loopback addresses (all allowed
        clients) use up the checks all clients share, and fill the line of
        those waiting for one: then even the right password gets the usual
        407 without being checked, until the allowance refills.
        """
        guessing = []
        for i in range(25 + MAX_WAITING_CHECKS):
            client = self.proxy_.client(f"127.0.{i // 200}.{i % 200 + 2}")
            client.send(b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", f"guess{i}") + b"\r\n\r\n")
            guessing.append(client)
        self.assertEqual({client.response().status for client in guessing[:20] + guessing[-5:]}, {407})
        right = b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", "right") + b"\r\n\r\n"
        client = self.proxy_.client("127.0.1.1")
        client.send(right)
        response = client.response()
        self.assertTextError(response, 407, "needs a user name and password")
        self.assertEqual(len(response.header(b"proxy-authenticate")), 1)
        self.assertEqual(self.proxy_.attempts, [])
        self.clock.advance(CHECK_PATIENCE)  # the guesses waiting give up
        self.assertEqual({client.response().status for client in guessing}, {407})
        self.clock.advance(1)
        client.transport.clear()
        client.send(right)
        self.proxy_.accept().send(OK)
        self.assertEqual(client.response().status, 200)

    def test_signedInConnectionKeptWhileItsAddressIsLimited(self) -> None:
        """
        A guesser behind the same address as a signed-in user, its wrong
        tries used up, does not lock the user out of the connection she
        signed in on; a new connection from that address gets a 407 for
        the same credentials until the address is under its limit again
        (answered from what is remembered there, they would tell the
        guesser its right guess).
        """
        right = b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", "right") + b"\r\n\r\n"
        alice, _ = self.proxy_.exchange(right, client=self.proxy_.client("127.0.0.7"))
        self.assertEqual(alice.response().status, 200)
        guesser = self.proxy_.client("127.0.0.7")
        for i in range(6):
            guesser.transport.clear()
            guesser.send(b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", f"guess{i}") + b"\r\n\r\n")
            self.assertEqual(guesser.response().status, 407)
        alice.transport.clear()
        self.proxy_.exchange(right, client=alice)
        self.assertEqual(alice.response().status, 200)
        for client in (guesser, self.proxy_.client("127.0.0.7")):
            client.transport.clear()
            client.send(right)
            self.assertEqual(client.response().status, 407)
        self.clock.advance(1)
        self.assertEqual(self.proxy_.exchange(right, client=self.proxy_.client("127.0.0.7"))[0].response().status, 200)

    def test_halfCloseAfterChallenge(self) -> None:
        """
        A 407 between two requests with credentials, all pipelined and then
        the end of the client's input: all three are answered.
        """
        good = b"Proxy-Authorization: " + basic("alice", "right") + b"\r\n"
        client = self.proxy_.client()
        client.send(
            b"GET http://example.com/1 HTTP/1.1\r\n" + good + b"\r\n"
            b"GET http://example.com/2 HTTP/1.1\r\n\r\n"
            b"GET http://example.com/3 HTTP/1.1\r\n" + good + b"\r\n"
        )
        client.channel.readConnectionLost()
        origin = self.proxy_.accept()
        origin.send(OK)
        origin.send(OK)
        self.assertEqual([r.status for r in client.responses()], [200, 407, 200])
        self.assertEqual(origin.received().count(b"GET /"), 2)
        self.assertTrue(client.closed)

    def test_retryAfterChallengeOnSameConnection(self) -> None:
        """
        After a 407 the connection stays open for the request with
        credentials.
        """
        client = self.proxy_.client()
        client.send(GET)
        self.assertEqual(client.response().status, 407)
        self.assertFalse(client.closed)
        client.transport.clear()
        client.send(
            b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", "right") + b"\r\n\r\n"
        )
        self.proxy_.accept().send(OK)
        self.assertEqual(client.response().status, 200)


    def test_challengeToHeadHasNoBody(self) -> None:
        """
        The 407 to a C{HEAD} has no body, and its access-log line counts
        none sent; the request with credentials after it on the connection
        is read and answered as the next one.
        """
        logged: list = []
        log = self.proxy_.factory.log
        self.patch(self.proxy_.factory, "log", lambda request: logged.append(request) or log(request))
        client = self.proxy_.client()
        client.send(
            b"HEAD http://example.com/ HTTP/1.1\r\n\r\n"
            b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", "right") + b"\r\n\r\n"
        )
        self.proxy_.accept().send(OK)
        head = parseResponse(client.received(), head=True)
        self.assertEqual(head.status, 407)
        self.assertNotEqual(head.header(b"content-length"), [b"0"])
        following = parseResponse(head.rest)
        self.assertEqual((following.status, following.body, following.rest), (200, b"hello", b""))
        self.assertEqual(client.channel.requests, [])
        self.assertFalse(client.closed)
        # No body sent: the request's sentLength (twisted.web's count of
        # the body bytes sent, which an application's log may read; the
        # access log here counts the origin's) is 0, as Twisted's own
        # answers to HEAD count it.
        [line, _] = self.accessLines()
        self.assertRegex(line, r'"HEAD http://example\.com/ HTTP/1\.1" 407 0 0 ')
        self.assertEqual([(r.method, r.code, r.sentLength) for r in logged], [(b"HEAD", 407, 0), (b"GET", 200, 5)])

    def test_connectChallengeWithBytesForTheTunnel(self) -> None:
        """
        A CONNECT answered 407 closes the connection when the client had
        already sent bytes after it, meant for the tunnel (a GET pipelined
        there, with credentials, was served); without them the connection
        stays open for the CONNECT with credentials.
        """
        client = self.proxy_.client()
        client.send(
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"
            b"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: " + basic("alice", "right") + b"\r\n\r\n"
        )
        self.assertEqual([r.status for r in client.responses()], [407])
        self.assertTrue(client.closed)
        self.assertEqual(self.proxy_.attempts, [])
        client = self.proxy_.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        self.assertEqual(client.response().status, 407)
        self.assertFalse(client.closed)


# 8. Keep-alive and the pool.


class KeepAliveTests(ProxyTestCase):
    def test_twoRequestsOneOriginConnection(self) -> None:
        """
        Two requests on one client connection to the same origin use one
        origin connection.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange()
        self.assertEqual(client.response().body, b"hello")
        origin.transport.clear()
        client.transport.clear()
        client.send(b"GET http://example.com/second HTTP/1.1\r\n\r\n")
        self.assertEqual(len(proxy.attempts), 1)
        self.assertEqual(origin.request().startLine, b"GET /second HTTP/1.1")
        origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        self.assertEqual(client.response().body, b"second")
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_http10KeepAlive(self) -> None:
        """
        An HTTP/1.0 client asking for keep-alive keeps its connection
        while each answer has a length, and is told so; an answer whose
        body only the end of the connection can end (chunked from the
        origin) says C{Connection: close} and closes it.  Every answer says
        HTTP/1.1, the proxy's own version (RFC 9110, 6.2).  Each was closed.
        """
        proxy = self.proxy()
        client = proxy.client()
        keepAlive = b"GET http://example.com/%d HTTP/1.0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
        client, origin = proxy.exchange(keepAlive % (1,), OK, client)
        [response] = client.responses()
        self.assertEqual(response.startLine, b"HTTP/1.1 200 OK")
        self.assertEqual(response.header(b"connection"), [b"keep-alive"])
        self.assertFalse(client.closed)
        forwarded = origin.request()
        self.assertEqual(forwarded.header(b"connection"), [])
        self.assertEqual(forwarded.header(b"keep-alive"), [])
        client.transport.clear()
        client.send(b"GET http://loopback.example/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        refused = client.response()
        self.assertTextError(refused, 403, "loopback")
        self.assertEqual(refused.header(b"connection"), [b"keep-alive"])
        self.assertFalse(client.closed)
        client.transport.clear()
        client, origin = proxy.exchange(
            keepAlive % (2,), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n", client
        )
        response = client.response()
        self.assertEqual(response.startLine, b"HTTP/1.1 200 OK")
        self.assertEqual(response.header(b"connection"), [b"close"])
        self.assertEqual(response.body, b"two")
        self.assertTrue(client.closed)

    def test_http10KeepAliveAfterABodilessAnswer(self) -> None:
        """
        An answer with no body (to HEAD, a 204) keeps an HTTP/1.0 client's
        keep-alive connection, though it has no length.
        """
        proxy = self.proxy()
        client = proxy.client()
        for request, answer in (
            (b"HEAD http://example.com/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"),
            (b"GET http://example.com/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ):
            client.transport.clear()
            client, origin = proxy.exchange(request, answer, client)
            response = client.response(head=True)
            self.assertEqual(response.header(b"connection"), [b"keep-alive"], request)
            self.assertFalse(client.closed, request)

    def test_http10ProxysOwnAnswerSaysClose(self) -> None:
        """
        The proxy's own answer to an HTTP/1.0 client without keep-alive
        says HTTP/1.1 and C{Connection: close} (it said HTTP/1.0 and
        nothing), and closes.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"GET http://loopback.example/ HTTP/1.0\r\n\r\n")
        response = client.response()
        self.assertEqual(response.startLine, b"HTTP/1.1 403 Forbidden")
        self.assertEqual(response.header(b"connection"), [b"close"])
        self.assertTrue(client.closed)

    def test_laterAndOtherVersions(self) -> None:
        """
        A request of a later HTTP/1 minor version is forwarded as HTTP/1.1
        (RFC 9110, 6.2); one of another major version is a 505 and the
        connection closes.  The access log shows the version as sent.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        client, origin = proxy.exchange(b"GET http://example.com/ HTTP/1.2\r\n\r\n", OK)
        self.assertEqual(origin.request().startLine, b"GET / HTTP/1.1")
        self.assertEqual(client.response().body, b"hello")
        self.assertFalse(client.closed)
        [line] = accessLines(events)
        self.assertIn('"GET http://example.com/ HTTP/1.2" 200 ', line)
        client = proxy.client()
        client.send(b"GET http://example.com/ HTTP/2.0\r\n\r\n")
        self.assertTextError(client.response(), 505, "HTTP version 2.0 not supported")
        self.assertTrue(client.closed)
        self.assertEqual(len(proxy.attempts), 1)

    def test_pipelinedRequests(self) -> None:
        """
        Two requests pipelined in one piece are answered in order, on one
        origin connection.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET + b"GET http://example.com/2 HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        origin.send(OK)
        self.assertEqual(origin.received().count(b"GET "), 2)
        origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
        self.assertEqual([r.body for r in client.responses()], [b"hello", b"two"])
        self.assertEqual(len(proxy.attempts), 1)

    def test_bytesAfterABodilessAnswerNeverAnswerTheNext(self) -> None:
        """
        Bytes an origin sends after an answer without a body (a 204, a
        HEAD's answer, a Content-Length of 0) never answer the client's
        next pipelined request: the connection is closed, and the next
        request goes on another.  They were read as its answer (a smuggled
        response), and the origin's real answer was lost.
        """
        smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
        for first, answer in (
            (GET, b"HTTP/1.1 204 No Content\r\n\r\n"),
            (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (b"HEAD http://example.com/ HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n"),
        ):
            proxy = self.proxy()
            client = proxy.client()
            client.send(first + b"GET http://example.com/2 HTTP/1.1\r\n\r\n")
            origin = proxy.accept()
            origin.send(answer + smuggled)
            self.assertTrue(origin.transport.disconnecting, answer)
            second = proxy.accept()
            self.assertIn(b"GET /2 ", second.received())
            second.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
            received = client.received()
            self.assertNotIn(b"SMUGGLED", received, answer)
            self.assertTrue(received.endswith(b"\r\n\r\nreal"), (answer, received))

    def test_originConnectionCloseNotPooled(self) -> None:
        """
        An origin that says C{Connection: close}, or speaks HTTP/1.0, is not
        pooled.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(client.response().status, 200)
        self.assertTrue(origin.transport.disconnecting)
        client, origin = proxy.exchange(GET, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(client.response().status, 200)
        self.assertEqual(len(proxy.factory.pool), 0)

    def test_idlePooledConnectionClosedByOrigin(self) -> None:
        """
        A pooled connection the origin closes while idle leaves the pool;
        the next request makes a new connection.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange()
        self.assertEqual(len(proxy.factory.pool), 1)
        origin.close()
        self.assertEqual(len(proxy.factory.pool), 0)
        proxy.exchange(client=client)
        self.assertEqual(len(proxy.attempts), 2)

    def test_idlePooledConnectionTimesOut(self) -> None:
        """
        A pooled connection is closed after C{poolIdleTimeout}.
        """
        proxy = self.proxy(settings=ProxySettings(connectTimeout=10, readTimeout=20, poolIdleTimeout=5))
        client, origin = proxy.exchange()
        proxy.clock.advance(4.9)
        self.assertFalse(origin.transport.disconnecting)
        proxy.clock.advance(0.1)
        self.assertTrue(origin.transport.disconnecting, "still open after poolIdleTimeout (5 s)")

    def test_reusedConnectionClosedWithoutAnswerRetried(self) -> None:
        """
        A GET sent on a reused connection that the origin closes without a
        word is sent again on a new connection; the client gets the 200.
        """
        proxy = self.proxy()
        client, first = proxy.exchange()
        client.transport.clear()
        client.send(b"GET http://example.com/again HTTP/1.1\r\n\r\n")
        self.assertEqual(len(proxy.attempts), 1)
        first.close()
        self.assertEqual(len(proxy.attempts), 2)
        second = proxy.accept()
        self.assertEqual(second.request().startLine, b"GET /again HTTP/1.1")
        second.send(OK)
        response = client.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"hello")

    def test_retriedOnlyOnce(self) -> None:
        """
        The retry's own failure is not retried: 502.
        """
        proxy = self.proxy()
        client, first = proxy.exchange()
        client.transport.clear()
        client.send(GET)
        first.close()
        proxy.accept().close()
        self.assertTextError(client.response(), 502, "without answering")
        self.assertEqual(len(proxy.attempts), 2)

    def test_reusedConnectionClosedWithoutAnswerPostNotRetried(self) -> None:
        """
        A POST with a body on a reused connection that closes without an
        answer is not sent again: 502, and the client's connection closes.
        """
        proxy = self.proxy()
        client, first = proxy.exchange()
        client.transport.clear()
        first.transport.clear()
        client.send(b"POST http://example.com/form HTTP/1.1\r\nContent-Length: 4\r\n\r\ndata")
        self.assertEqual(first.request().body, b"data")
        first.close()
        self.assertEqual(len(proxy.attempts), 1)
        self.assertTextError(client.response(), 502, "without answering")
        self.assertTrue(client.closed)

    def test_nonIdempotentRequestNotRetried(self) -> None:
        """
        A POST or PATCH without a body, on a reused connection the origin
        closes without a word, is not sent again (the origin may have acted
        on it): 502.  An idempotent DELETE is sent again.
        """
        for request in (
            b"POST http://example.com/act HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"PATCH http://example.com/act HTTP/1.1\r\n\r\n",
        ):
            proxy = self.proxy()
            client, first = proxy.exchange()
            client.transport.clear()
            client.send(request)
            first.close()
            self.assertEqual(len(proxy.attempts), 1, request)
            self.assertTextError(client.response(), 502, "without answering")
        proxy = self.proxy()
        client, first = proxy.exchange()
        client.send(b"DELETE http://example.com/x HTTP/1.1\r\n\r\n")
        first.close()
        self.assertEqual(len(proxy.attempts), 2)
        self.assertEqual(proxy.accept().request().startLine, b"DELETE /x HTTP/1.1")

    def test_pipelinedRequestsThenHalfClose(self) -> None:
        """
        A client that pipelines three requests, then shuts its sending side
        (C{nc -N}), gets all three answers in order, then the connection
        closes.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"".join(b"GET http://example.com/%d HTTP/1.1\r\n\r\n" % (i,) for i in (1, 2, 3)))
        client.channel.readConnectionLost()
        origin = proxy.accept()
        for i in (1, 2, 3):
            self.assertFalse(client.closed)
            origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % (i,))
        self.assertEqual([r.body for r in client.responses()], [b"1", b"2", b"3"])
        self.assertEqual(origin.received().count(b"GET /"), 3)
        self.assertTrue(client.closed)

    def test_halfCloseAfterIncompleteRequest(self) -> None:
        """
        After the client shuts its side, a request it left incomplete can
        never end: the complete ones are answered, then the connection
        closes.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET + b"GET http://example.com/2 HTTP/1.1\r\nHost: exa")
        client.channel.readConnectionLost()
        self.assertFalse(client.closed)
        proxy.accept().send(OK)
        self.assertEqual([r.body for r in client.responses()], [b"hello"])
        self.assertTrue(client.closed)


    def test_halfCloseAfterRequestAnsweredHere(self) -> None:
        """
        A request the proxy answers itself (400, 403, OPTIONS with
        Max-Forwards 0), pipelined between forwarded ones and followed by
        the end of the client's input, does not end the connection early:
        the request after it is answered too, then the connection closes.
        """
        answeredHere = {
            400: b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
            403: b"GET http://169.254.169.254/ HTTP/1.1\r\nHost: x\r\n\r\n",
            200: b"OPTIONS http://example.com/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n",
        }
        for status, middle in answeredHere.items():
            proxy = self.proxy()
            client = proxy.client()
            client.send(GET + middle + b"GET http://example.com/3 HTTP/1.1\r\nHost: x\r\n\r\n")
            client.channel.readConnectionLost()
            origin = proxy.accept()
            origin.send(OK)
            self.assertFalse(client.closed, status)
            self.assertEqual(origin.received().count(b"GET /3 "), 1, status)
            origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3")
            responses = client.responses()
            self.assertEqual([r.status for r in responses], [200, status, 200], status)
            self.assertEqual(responses[-1].body, b"3")
            self.assertTrue(client.closed, status)

    def test_halfCloseAfterRequestAnsweredHereThenIncompleteOne(self) -> None:
        """
        After a request the proxy answers itself, a request the client left
        incomplete when it shut its side is dropped quietly: the connection
        closes after the complete ones are answered.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\nGET http://example.com/3 HTTP/1.1\r\nHo")
        client.channel.readConnectionLost()
        origin = proxy.accept()
        origin.send(OK)
        self.assertEqual([r.status for r in client.responses()], [200, 400])
        self.assertTrue(client.closed)
        self.assertEqual(origin.received().count(b"GET "), 1)


class UpstreamPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = ProxyFactory(self.clock, clock=self.clock, connector=self.clock, resolver=FakeResolver({}))

    def connection(self, host: bytes = b"example.com", port: int = 80) -> UpstreamConnection:
        connection = UpstreamConnection(self.factory, (host, port))
        connection.makeConnection(StringTransport())
        return connection

    def test_takeMostRecent(self) -> None:
        """
        C{take} gives the most recently parked connection for the key, and
        L{None} when there is none.
        """
        pool = UpstreamPool(perHost=4, total=10)
        a, b = self.connection(), self.connection()
        pool.put(a)
        pool.put(b)
        self.assertIsNone(pool.take((b"other", 80)))
        self.assertIsNone(pool.take((b"example.com", 81)))
        self.assertIs(pool.take((b"example.com", 80)), b)
        self.assertIs(pool.take((b"example.com", 80)), a)
        self.assertIsNone(pool.take((b"example.com", 80)))
        self.assertEqual(len(pool), 0)

    def test_perHostBound(self) -> None:
        """
        Putting more than C{perHost} for one origin closes the oldest.
        """
        pool = UpstreamPool(perHost=2, total=10)
        a, b, c = self.connection(), self.connection(), self.connection()
        other = self.connection(b"other.example")
        for connection in (a, other, b, c):
            pool.put(connection)
        self.assertEqual(len(pool), 3)
        self.assertTrue(a.transport.disconnecting)
        self.assertFalse(b.transport.disconnecting or c.transport.disconnecting or other.transport.disconnecting)
        self.assertIs(pool.take((b"example.com", 80)), c)
        self.assertIs(pool.take((b"example.com", 80)), b)
        self.assertIsNone(pool.take((b"example.com", 80)))
        self.assertIs(pool.take((b"other.example", 80)), other)

    def test_totalBound(self) -> None:
        """
        Putting more than C{total} closes the oldest idle connection.
        """
        pool = UpstreamPool(perHost=8, total=2)
        a, b, c = self.connection(b"a"), self.connection(b"b"), self.connection(b"c")
        for connection in (a, b, c):
            pool.put(connection)
        self.assertEqual(len(pool), 2)
        self.assertTrue(a.transport.disconnecting)
        self.assertIsNone(pool.take((b"a", 80)))
        self.assertIs(pool.take((b"b", 80)), b)
        self.assertIs(pool.take((b"c", 80)), c)

    def test_totalBoundEvictingFromTheSameHost(self) -> None:
        """
        When the pool is full and the oldest idle connection is to the same
        origin as the one put, the new one is still kept and found.
        """
        pool = UpstreamPool(perHost=8, total=1)
        a, b = self.connection(), self.connection()
        pool.put(a)
        pool.put(b)
        self.assertTrue(a.transport.disconnecting)
        self.assertEqual(len(pool), 1)
        self.assertIs(pool.take((b"example.com", 80)), b)
        self.assertEqual(len(pool), 0)

    def test_zeroBoundsKeepNothing(self) -> None:
        """
        A pool with no room closes what it is given.
        """
        for perHost, total in ((0, 10), (4, 0)):
            pool = UpstreamPool(perHost=perHost, total=total)
            a = self.connection()
            pool.put(a)
            self.assertEqual(len(pool), 0)
            self.assertTrue(a.transport.disconnecting)

    def test_discard(self) -> None:
        """
        C{discard} forgets a connection; discarding one that is not there
        changes nothing.
        """
        pool = UpstreamPool(perHost=4, total=10)
        a, b = self.connection(), self.connection()
        pool.put(a)
        pool.put(b)
        pool.discard(a)
        self.assertEqual(len(pool), 1)
        pool.discard(a)
        pool.discard(self.connection(b"other"))
        self.assertEqual(len(pool), 1)
        self.assertIs(pool.take((b"example.com", 80)), b)
        self.assertIsNone(pool.take((b"example.com", 80)))

    def test_closeAll(self) -> None:
        """
        C{closeAll} closes every idle connection.
        """
        pool = UpstreamPool(perHost=4, total=10)
        connections = [self.connection(), self.connection(b"b"), self.connection(b"c")]
        for connection in connections:
            pool.put(connection)
        pool.closeAll()
        self.assertEqual(len(pool), 0)
        self.assertTrue(all(c.transport.disconnecting for c in connections))

    def test_poolPerHostSetting(self) -> None:
        """
        The factory's pool follows C{poolPerHost} and C{poolTotal}: with
        C{poolPerHost=1}, two requests at once to one origin leave one
        pooled connection.
        """
        proxy = Proxy(self, settings=ProxySettings(poolPerHost=1, poolTotal=5))
        self.assertEqual((proxy.factory.pool.perHost, proxy.factory.pool.total), (1, 5))
        one, two = proxy.client(), proxy.client()
        one.send(GET)
        two.send(GET)
        first, second = proxy.accept(0), proxy.accept(1)
        first.send(OK)
        second.send(OK)
        self.assertEqual(len(proxy.factory.pool), 1)
        self.assertTrue(first.transport.disconnecting)
        self.assertFalse(second.transport.disconnecting)


# 9. Request bodies.


class RequestBodyTests(ProxyTestCase):
    def test_contentLengthBodyStreams(self) -> None:
        """
        A POST body with Content-Length goes to the origin with the same
        Content-Length, piece by piece as it arrives.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(
            b"POST http://example.com/up HTTP/1.1\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\nhello"
        )
        origin = proxy.accept()
        self.assertTrue(origin.received().endswith(b"\r\n\r\nhello"))
        request = origin.request()
        self.assertEqual(request.startLine, b"POST /up HTTP/1.1")
        self.assertEqual(request.header(b"content-length"), [b"10"])
        self.assertEqual(request.header(b"content-type"), [b"text/plain"])
        self.assertFalse(request.complete)
        client.send(b"world")
        request = origin.request()
        self.assertTrue(request.complete)
        self.assertEqual(request.body, b"helloworld")
        origin.send(OK)
        self.assertEqual(client.response().status, 200)
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_emptyContentLengthKept(self) -> None:
        """
        C{Content-Length: 0} on a POST is sent as such.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        request = origin.request()
        self.assertEqual(request.header(b"content-length"), [b"0"])
        self.assertEqual(request.body, b"")

    def test_chunkedUpload(self) -> None:
        """
        A chunked upload reaches the origin chunked and complete.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"POST http://example.com/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        origin = proxy.accept()
        client.send(b"6\r\n world\r\n")
        request = origin.request()
        self.assertEqual(request.header(b"transfer-encoding"), [b"chunked"])
        self.assertEqual(request.header(b"content-length"), [])
        self.assertFalse(request.complete)
        client.send(b"0\r\n\r\n")
        request = origin.request()
        self.assertTrue(request.complete)
        self.assertEqual(request.body, b"hello world")
        self.assertEqual(request.rest, b"")
        origin.send(OK)
        self.assertEqual(client.response().status, 200)

    def test_expectContinue(self) -> None:
        """
        C{Expect: 100-continue} goes to the origin (RFC 9110 10.1.1), and
        the origin's C{100 Continue} on to the client, once; not before.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://example.com/f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(client.received(), b"")
        origin = proxy.accept()
        self.assertEqual(origin.request().header(b"expect"), [b"100-continue"])
        self.assertEqual(client.received(), b"")
        origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        proxy.clock.advance(proxyModule.CONTINUE_WAIT)
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"data")
        self.assertEqual(origin.request().body, b"data")
        origin.send(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual([r.status for r in client.responses()], [100, 201])
        self.assertFalse(client.closed)
        self.assertEqual(len(proxy.factory.pool), 1)

    def test_expectContinueOriginRefuses(self) -> None:
        """
        An origin that refuses a body from its head (a C{413}, as S3 or
        nginx do) is heard before the body is sent: the client gets the
        C{413} and no C{100}; its connection closes, since the body it was
        to send is not read, and the origin's is not kept.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://example.com/f HTTP/1.1\r\nContent-Length: 9000000\r\nExpect: 100-continue\r\n\r\n")
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
        proxy.clock.advance(proxyModule.CONTINUE_WAIT)
        [response] = client.responses()
        self.assertEqual((response.status, response.body), (413, b"big"))
        self.assertTrue(client.closed)
        self.assertTrue(origin.closed)
        self.assertEqual(len(proxy.factory.pool), 0)

    def test_expectContinueOriginSilent(self) -> None:
        """
        An origin that ignores the expectation (an HTTP/1.0 one does): the
        client gets the proxy's own C{100 Continue} after
        L{proxyModule.CONTINUE_WAIT}, and its body then goes on.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://example.com/f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        origin = proxy.accept()
        proxy.clock.advance(proxyModule.CONTINUE_WAIT - 0.01)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(0.01)
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"data")
        self.assertEqual(origin.request().body, b"data")
        origin.send(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual([r.status for r in client.responses()], [100, 200])

    def test_expectContinueBodySentAnyway(self) -> None:
        """
        A client that sends its body without waiting (it may, RFC 9110
        10.1.1): what came is not held back for an origin's answer, and the
        expectation is not forwarded; the client still gets its C{100}.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://example.com/f HTTP/1.1\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\ndata")
        origin = proxy.accept()
        request = origin.request()
        self.assertEqual((request.header(b"expect"), request.body), ([], b"data"))
        self.assertEqual(client.received(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"more")
        self.assertEqual(origin.request().body, b"datamore")

    def test_unaskedContinueNotPassedOn(self) -> None:
        """
        An origin's C{100 Continue} to a request that did not ask for one
        is not passed on (an HTTP/1.1 client did not expect it; RFC 9110
        15.2.1 lets it be ignored, but not every client does).
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://example.com/f HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
        origin = proxy.accept()
        self.assertEqual(origin.request().header(b"expect"), [])
        origin.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.received(), b"")
        client.send(b"data")
        origin.send(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual([r.status for r in client.responses()], [204])

    def test_otherExpectationNotForwarded(self) -> None:
        """
        Only C{100-continue} is forwarded; another expectation is dropped
        as before.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://example.com/f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 200-ok\r\n\r\n")
        origin = proxy.accept()
        self.assertEqual(origin.request().header(b"expect"), [])
        self.assertEqual(client.received(), b"")

    def test_expectContinueRefusedDestination(self) -> None:
        """
        C{Expect: 100-continue} to a refused destination: no 100, a 403 and
        the connection closed (the body is not read).
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"PUT http://loopback.example/ HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        responses = client.responses()
        self.assertEqual([r.status for r in responses], [403])
        self.assertTrue(client.closed)

    def test_http10RequestWithTransferEncoding(self) -> None:
        """
        An HTTP/1.0 request with C{Transfer-Encoding} has faulty framing
        (RFC 9112 section 6.1): 400 and the connection closed; it was
        decoded and sent on chunked, as HTTP/1.1.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(
            b"POST http://example.com/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertTextError(client.response(), 400, "Transfer-Encoding in an HTTP/1.0 request")
        self.assertTrue(client.closed)
        self.assertEqual(proxy.attempts, [])

    def test_malformedChunkedBodyLoggedAs400(self) -> None:
        """
        A chunked upload the proxy refuses in the middle (a bad chunk-size
        line, a chunk not followed by CRLF) gets a 400, and is logged and
        counted as the 400 it got, not as a 499 (the client did not go
        away); the origin is left.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        for bad in (b"zz\r\n", b"3\r\nabcXX"):
            client = proxy.client()
            client.send(b"POST http://example.com/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            origin = proxy.accept()
            client.send(bad)
            self.assertTextError(client.response(), 400)
            self.assertTrue(client.closed)
            client.lose()
            self.assertTrue(origin.closed)
        lines = accessLines(events)
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'"POST http://example\.com/ HTTP/1\.1" 400 5 0 ')
        self.assertRegex(lines[1], r'"POST http://example\.com/ HTTP/1\.1" 400 8 0 ')
        counters = proxy.factory.stats.counters
        self.assertEqual((counters["status_400"], counters.get("status_499")), (2, None))

    def test_stalledBodyGets408(self) -> None:
        """
        A client that stops sending its body gets a 408 at the idle timeout
        (nginx's client_body_timeout), logged as such; it was closed
        without an answer and logged as a 499.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy(settings=ProxySettings(idleTimeout=30))
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        origin = proxy.accept()
        proxy.clock.advance(29)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(1)
        self.assertTextError(client.response(), 408, "the request body stalled for 30 seconds")
        self.assertTrue(client.closed)
        self.assertTrue(origin.closed)
        client.lose()
        [line] = accessLines(events)
        self.assertRegex(line, r'"POST http://example\.com/ HTTP/1\.1" 408 3 0 ')
        self.assertEqual(proxy.factory.stats.counters["client_timeouts"], 1)

    def test_bodyHeldForTheOriginIsNotTheClientsSilence(self) -> None:
        """
        While the origin takes no more of the body (and the client is not
        read), the client's idle timeout does not run: the origin's read
        timeout ends it.  The client's connection was closed at its idle
        timeout.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=10, readTimeout=30))
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        origin = proxy.accept()
        origin.transport.producer.pauseProducing()  # the origin's buffer is full
        proxy.clock.advance(25)
        self.assertFalse(client.closed)
        self.assertEqual(client.received(), b"")
        proxy.clock.advance(5)
        self.assertTextError(client.response(), 504, "did not answer within 30 seconds")

    def test_refusedBodyAfterTheAnswerBegan(self) -> None:
        """
        A chunked upload refused after the origin's answer began: the
        answer is cut (no second status line after it), and logged with
        the status sent and the bytes so far.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        client.send(b"zz\r\n")
        data = client.received()
        self.assertEqual(data.count(b"HTTP/1.1 "), 1, data)
        self.assertTrue(data.endswith(b"\r\n\r\nabc"), data)
        self.assertTrue(client.closed)
        self.assertTrue(origin.closed)
        client.lose()
        [line] = accessLines(events)
        self.assertRegex(line, r'"POST http://example\.com/ HTTP/1\.1" 200 5 3 ')

    def test_earlyResponseClosesClient(self) -> None:
        """
        An origin that answers before the upload is over: the response is
        forwarded, and the client's connection is closed after it.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 413 Too Big\r\nContent-Length: 0\r\n\r\n")
        response = client.response()
        self.assertEqual(response.status, 413)
        self.assertEqual(response.header(b"connection"), [b"close"])
        self.assertTrue(client.closed)
        self.assertEqual(len(proxy.factory.pool), 0)


    def test_originTakingNothingAfterAnEarlyResponseIsAborted(self) -> None:
        """
        The connection to an origin that answered before the upload was
        over, and then stopped reading it, is closed, and aborted once the
        origin takes none of what is left for C{readTimeout} (it was kept
        for ever).
        """
        proxy = self.proxy(settings=ProxySettings(readTimeout=60, idleTimeout=600))
        self.patch(limitsModule, "unsentBytes", lambda transport: 1000)
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 413 Too Big\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(client.response().status, 413)
        client.lose()
        self.assertTrue(origin.transport.disconnecting)
        proxy.clock.advance(59)
        self.assertFalse(origin.transport.disconnected)
        proxy.clock.advance(7)
        self.assertTrue(origin.transport.disconnected)
        # One that ends by itself ends the watch.
        client = proxy.client()
        client.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 413 Too Big\r\nContent-Length: 0\r\n\r\n")
        client.lose()
        origin.close()
        owners = [getattr(c.func, "__self__", None) for c in proxy.clock.getDelayedCalls()]
        self.assertEqual([o for o in owners if getattr(o, "_transport", None) is origin.transport], [])


# CONNECT tunnels.


class TunnelTests(ProxyTestCase):
    def test_tunnelCarriesBytesBothWays(self) -> None:
        """
        CONNECT answers 200 once the origin accepts, then carries bytes both
        ways untouched (including bytes the client sent early).
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01early")
        self.assertEqual(proxy.attempts, [(PUBLIC, 443)])
        self.assertEqual(client.received(), b"")
        origin = proxy.accept()
        self.assertEqual(client.received(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(origin.received(), b"\x16\x03\x01early")
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(origin.received(), b"\x16\x03\x01earlyGET / HTTP/1.1\r\n\r\n")
        origin.send(b"\x00binary\xff")
        self.assertTrue(client.received().endswith(b"\x00binary\xff"))
        self.assertEqual(proxy.factory.tunnelsOpen, 1)
        origin.close()
        self.assertTrue(client.closed)
        self.assertEqual(proxy.factory.tunnelsOpen, 0)
        self.assertEqual(proxy.factory.stats.counters["tunnels"], 1)

    def test_tunnelIdleTimeout(self) -> None:
        """
        A tunnel that carries nothing for C{tunnelIdleTimeout} is closed.
        """
        proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=30))
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        proxy.clock.advance(29)
        client.send(b"x")
        proxy.clock.advance(29)
        self.assertFalse(client.closed)
        proxy.clock.advance(1)
        self.assertTrue(client.closed)
        self.assertTrue(origin.transport.disconnecting)

    def test_halfClosedTunnelEndsSooner(self) -> None:
        """
        Once either side has ended its half of a tunnel, the tunnel closes
        after L{HALF_CLOSED_TUNNEL_TIMEOUT} with nothing going either way
        (as HAProxy's C{timeout client-fin}), not the tunnel idle timeout:
        an origin that never ended its own half kept a tunnel its client
        had closed, and its place under the limits, for 300 s.  Bytes still
        going count as before.
        """
        for ending in ("client", "origin"):
            with self.subTest(ending=ending):
                proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=300))
                client = proxy.client()
                client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
                origin = proxy.accept()
                if ending == "client":
                    client.channel.readConnectionLost()
                    self.assertTrue(origin.transport.writeClosed)
                else:
                    ended: List[bool] = []
                    client.transport.loseWriteConnection = lambda: ended.append(True)  # type: ignore[attr-defined]
                    origin.protocol.readConnectionLost()
                    self.assertEqual(ended, [True])
                proxy.clock.advance(HALF_CLOSED_TUNNEL_TIMEOUT - 1)
                if ending == "client":
                    origin.send(b"still answering")
                else:
                    client.send(b"still asking")
                proxy.clock.advance(HALF_CLOSED_TUNNEL_TIMEOUT - 1)
                self.assertFalse(client.closed)
                proxy.clock.advance(1)
                self.assertTrue(client.closed)
                self.assertTrue(origin.transport.disconnecting)
                self.assertEqual(proxy.factory.stats.counters["tunnel_timeouts"], 1)

    def test_originTakingNothingAfterTheTunnelIsAborted(self) -> None:
        """
        The origin's side of a tunnel that ended (timed out, or its client
        went) is aborted once the origin takes none of what is left for
        C{readTimeout}: an origin that had stopped reading kept it, and its
        file descriptor, for ever, unseen by every limit.  One that takes
        some is given more time; one that closes ends the watch.
        """
        for end in ("timeout", "client gone"):
            proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=30, readTimeout=60, idleTimeout=600))
            self.patch(limitsModule, "unsentBytes", lambda transport: 1000)
            client = proxy.client()
            client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            origin = proxy.accept()
            client.send(b"x" * 1000)
            if end == "timeout":
                proxy.clock.advance(30)
            else:
                client.lose()
            self.assertTrue(origin.transport.disconnecting, end)
            proxy.clock.advance(59)
            self.assertFalse(origin.transport.disconnected, end)
            proxy.clock.advance(7)
            self.assertTrue(origin.transport.disconnected, end)
            self.assertEqual(proxy.factory.stats.counters["origin_timeouts"], 1)
        proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=30, readTimeout=60))
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        client.lose()
        origin.close()
        self.assertEqual(proxy.clock.getDelayedCalls(), [])

    def test_clientTakingNothingAfterTunnelTimeoutIsAborted(self) -> None:
        """
        When a tunnel times out while its client takes nothing, the
        client's connection, closed after what is buffered, is aborted once
        the client takes none of it for the idle timeout (it stayed open
        forever, holding its place).
        """
        proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=30, idleTimeout=60))
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        origin.send(b"x" * 100000)
        client.channel.pauseProducing()  # its buffer is full
        proxy.clock.advance(30)
        self.assertTrue(origin.closed)
        self.assertTrue(client.closed)
        self.assertAbortedAfter(proxy, client, 60)
        self.assertEqual(proxy.factory.stats.counters["tunnel_timeouts"], 1)
        self.assertEqual(proxy.factory.stats.counters["client_timeouts"], 1)

    def test_clientPausedAsTheTunnelStartsIsLeftToTheTunnel(self) -> None:
        """
        A client whose buffer is full as its CONNECT is answered is not cut
        off by the answer's stall watch once the tunnel has started: the
        tunnel's own timeouts judge it (here a client that keeps sending
        for longer than the idle timeout keeps its tunnel).
        """
        proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=600, idleTimeout=60))
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        client.channel.pauseProducing()  # its buffer is full
        origin = proxy.accept()
        self.assertIsNotNone(client.channel._tunnel)
        for _ in range(10):
            proxy.clock.advance(20)
            client.send(b"x")
        self.assertFalse(client.closed)
        self.assertFalse(client.transport.disconnected)
        self.assertEqual(origin.received(), b"x" * 10)
        self.assertNotIn("client_timeouts", proxy.factory.stats.counters)

    def test_clientTakingNothingAfterOriginClosedIsAborted(self) -> None:
        """
        A tunnel the origin closed is closed on the client's side after
        what is buffered; a client that takes none of it for the idle
        timeout is aborted.
        """
        proxy = self.proxy(settings=ProxySettings(idleTimeout=60))
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        origin.send(b"x" * 100000)
        origin.close()
        self.assertTrue(client.closed)
        self.assertAbortedAfter(proxy, client, 60)

    def test_tunnelLimit(self) -> None:
        """
        Over C{maxTunnels} open tunnels, CONNECT gets 503.
        """
        proxy = self.proxy(settings=ProxySettings(maxTunnels=1))
        proxy.client().send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        proxy.accept()
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        self.assertTextError(client.response(), 503, "too many tunnels")
        self.assertEqual(len(proxy.attempts), 1)

    def test_tunnelLimitCountsTunnelsStillConnecting(self) -> None:
        """
        CONNECTs still resolving or connecting count against
        C{maxTunnels}, so parallel ones cannot overshoot it; each way one
        can fail gives its place back, and an open tunnel holds its place
        until it closes.
        """
        proxy = self.proxy(settings=ProxySettings(maxTunnels=2), silent=["slow.example"])
        connect = b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"
        first, second, third = proxy.client(), proxy.client(), proxy.client()
        first.send(connect)
        second.send(b"CONNECT slow.example:443 HTTP/1.1\r\n\r\n")
        third.send(connect)
        self.assertTextError(third.response(), 503, "too many tunnels")
        self.assertEqual(len(proxy.attempts), 1)
        self.assertEqual(proxy.factory.tunnelsOpen, 2)
        self.assertEqual(proxy.factory.stats.gauges["tunnels_open"], 2)
        proxy.refuse()
        self.assertEqual(first.response().status, 502)
        self.assertEqual(proxy.factory.tunnelsOpen, 1)
        second.lose()
        self.assertEqual(proxy.factory.tunnelsOpen, 0)
        for target in (b"loopback.example:443", b"nowhere.example:443"):
            client = proxy.client()
            client.send(b"CONNECT %s HTTP/1.1\r\n\r\n" % (target,))
            self.assertIn(client.response().status, (403, 502))
        client = proxy.client()
        client.send(connect)
        proxy.clock.advance(10)
        self.assertEqual(client.response().status, 504)
        self.assertEqual(proxy.factory.tunnelsOpen, 0)
        client = proxy.client()
        client.send(connect)
        origin = proxy.accept()
        self.assertEqual(proxy.factory.tunnelsOpen, 1)
        origin.close()
        self.assertEqual(proxy.factory.tunnelsOpen, 0)
        self.assertEqual(proxy.factory.stats.counters["tunnels"], 1)
        self.assertEqual(proxy.factory.stats.gauges["tunnels_open"], 0)

    def test_clientEndBeforeTunnelOpensReachesOrigin(self) -> None:
        """
        A client that sends CONNECT and its first bytes, then shuts its
        sending side before the origin connection is made: once the tunnel
        opens, the origin gets the bytes, then the end of the input.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\nhello")
        client.channel.readConnectionLost()
        self.assertFalse(client.closed)
        origin = proxy.accept()
        self.assertEqual(client.received(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(origin.received(), b"hello")
        self.assertTrue(origin.transport.writeClosed, "the origin still waits for more from the client")

    def test_clientResetWhileNotReadIsClosed(self) -> None:
        """
        A client whose tunnel the origin stops taking is not read from; its
        socket is checked every five seconds while so, and a reset (a
        pending error) closes it.  It was seen only at the tunnel's idle
        timeout.  Once read again, it is no longer checked.
        """
        errors: List[bool] = []
        self.patch(proxyModule, "peerReset", lambda transport: errors.append(True) or len(errors) == 3)
        proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=300))
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        origin.transport.producer.pauseProducing()  # the origin's buffer is full
        self.assertEqual(client.transport.producerState, "paused")
        origin.transport.producer.resumeProducing()
        proxy.clock.advance(5)
        self.assertEqual(errors, [], "checked while read from")
        origin.transport.producer.pauseProducing()
        proxy.clock.advance(4.9)
        self.assertEqual(errors, [])
        proxy.clock.advance(0.1)
        self.assertEqual((len(errors), client.transport.disconnected), (1, False))
        proxy.clock.advance(5)
        proxy.clock.advance(5)
        self.assertEqual((len(errors), client.transport.disconnected), (3, True))

    def test_idleOrUnfinishedClientEnd(self) -> None:
        """
        The end of a client's input when it is idle (after an answer), or in
        the middle of a request head, closes at once.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        proxy.accept().send(OK)
        self.assertEqual(len(client.responses()), 1)
        self.assertFalse(client.closed)
        client.channel.readConnectionLost()
        self.assertTrue(client.closed)
        client = proxy.client()
        client.send(b"GET http://example.com/2 HTTP/1.1\r\nHost: exa")
        client.channel.readConnectionLost()
        self.assertTrue(client.closed)

    def test_requestNotTunnelStillAnsweredAfterClientEnd(self) -> None:
        """
        Only a CONNECT is taken as gone: a GET whose client ends its input
        while the origin connection is made still gets its answer.
        """
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        client.channel.readConnectionLost()
        self.assertFalse(client.closed)
        proxy.accept().send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        self.assertEqual([response.body for response in client.responses()], [b"1"])
        self.assertTrue(client.closed)

    def test_lostConnectionNotCheckedForAReset(self) -> None:
        """
        A connection already lost is not checked for a reset, neither when
        its reading stops nor when a check armed before comes due.
        """
        for when in ("armed before", "stops after"):
            checked: List[bool] = []
            self.patch(proxyModule, "peerReset", lambda transport: checked.append(True) or False)
            proxy = self.proxy(settings=ProxySettings(tunnelIdleTimeout=300))
            client = proxy.client()
            client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            origin = proxy.accept()
            if when == "armed before":
                origin.transport.producer.pauseProducing()
                client.transport.disconnected = True
            else:
                client.transport.disconnected = True
                origin.transport.producer.pauseProducing()
                self.assertIsNone(client.channel._resetTimer)
            proxy.clock.advance(5)
            self.assertEqual(checked, [], when)

    def test_clientEndBeforeTunnelOpensWithNothingSentIsGone(self) -> None:
        """
        A client that ends its input while its CONNECT is still resolved or
        connected to, having sent nothing for the tunnel, is taken as gone:
        the attempt stops, the connection closes without an answer, the
        tunnel's place is given back and the access log says 499.  It held
        its place until the connect timeout, then was logged 504.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy(settings=ProxySettings(maxTunnels=1), silent=["slow.example"])
        for target in (b"example.com:443", b"slow.example:443"):
            client = proxy.client()
            client.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target))
            self.assertEqual(proxy.factory.tunnelsOpen, 1)
            client.channel.readConnectionLost()
            self.assertTrue(client.closed, target)
            self.assertEqual(client.received(), b"")
            self.assertEqual(proxy.factory.tunnelsOpen, 0, target)
            client.lose()
            self.assertEqual(proxy.factory.tunnelsOpen, 0, target)
        self.assertTrue(proxy.clock.connectors[0].stoppedConnecting)
        [waiting] = proxy.resolver.waiting
        waiting.addressResolved(IPv4Address("TCP", PUBLIC, 443))
        waiting.resolutionComplete()
        proxy.clock.advance(60)
        self.assertEqual(len(proxy.attempts), 1, "connected for a client that was gone")
        lines = accessLines(events)
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'"CONNECT example\.com:443 HTTP/1\.1" 499 0 0 ')
        self.assertRegex(lines[1], r'"CONNECT slow\.example:443 HTTP/1\.1" 499 0 0 ')
        self.assertNotIn("connect_timeouts", proxy.factory.stats.counters)
        # With the limit's place given back, the next CONNECT goes ahead.
        client = proxy.client()
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        proxy.accept()
        self.assertEqual(client.received(), b"HTTP/1.1 200 Connection established\r\n\r\n")

# 10. Stats and the access log.


class StatsAndLogTests(ProxyTestCase):
    def test_counters(self) -> None:
        """
        Requests are counted in all, per status, and in bytes each way.
        """
        proxy = self.proxy()
        client, origin = proxy.exchange(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        proxy.exchange(client=client)
        other = proxy.client()
        other.send(b"GET http://nowhere.example/ HTTP/1.1\r\n\r\n")
        other.received()
        counters = proxy.factory.stats.counters
        self.assertEqual(counters["requests"], 3)
        self.assertEqual(counters["status_200"], 2)
        self.assertEqual(counters["status_502"], 1)
        self.assertEqual(counters["upstream_bytes_sent"], 3)
        self.assertEqual(counters["upstream_bytes_received"], 10)

    def test_accessLogLine(self) -> None:
        """
        The access-log line has the client, user, request line, status and
        body bytes each way.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        proxy.exchange(b"POST http://example.com/p?q=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        [line] = accessLines(events)
        self.assertRegex(
            line, r'^127\.0\.0\.1 - \[[^]]+\] "POST http://example\.com/p\?q=1 HTTP/1\.1" 200 3 5 [0-9.]+$'
        )

    def test_clientGoneLogged(self) -> None:
        """
        A client that goes away before its answer ends gets its access-log
        line, as nginx writes it: 499 while the origin has not answered
        (also while connecting), the origin's status and the bytes so far
        once it has (there was no line).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        client = proxy.client()
        client.send(GET)
        client.lose()  # while connecting
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        client.lose()  # the origin has the request
        self.assertTrue(origin.closed)
        client = proxy.client()
        client.send(GET)
        origin = proxy.accept()
        origin.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        proxy.clock.advance(0)
        client.lose()  # in the middle of the body
        lines = accessLines(events)
        self.assertEqual(len(lines), 3, lines)
        self.assertRegex(lines[0], r'"GET http://example\.com/ HTTP/1\.1" 499 0 0 ')
        self.assertRegex(lines[1], r'"GET http://example\.com/ HTTP/1\.1" 499 0 0 ')
        self.assertRegex(lines[2], r'"GET http://example\.com/ HTTP/1\.1" 200 0 3 ')
        self.assertEqual(proxy.factory.stats.counters["status_499"], 2)

    def test_droppedAtTheEndOfTheStopLogged503(self) -> None:
        """
        A request the proxy drops at the end of its stop's grace period
        (the connection aborted) before any answer is logged as 503, not as
        the client's 499; one whose client closes during the grace period
        is still a 499.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        clients = []
        for _ in range(2):
            client = proxy.client()
            client.send(GET)
            proxy.accept()
            client.channel.closeGracefully()
            clients.append(client)
        clients[0].channel.connectionLost(Failure(ConnectionAborted()))
        clients[1].lose()
        lines = accessLines(events)
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'"GET http://example\.com/ HTTP/1\.1" 503 0 0 ')
        self.assertRegex(lines[1], r'"GET http://example\.com/ HTTP/1\.1" 499 0 0 ')

    def test_accessLogNamespace(self) -> None:
        """
        Access-log events have their own namespace, C{netsuite.proxy.access},
        apart from the proxy's other messages (so that they can be filtered
        and routed on their own).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        proxy.exchange()
        [event] = [e for e in events if e.get("log_format") == "{line}"]
        self.assertEqual(event["log_namespace"], "netsuite.proxy.access")

    def test_accessLogEscapesOddBytes(self) -> None:
        """
        Quotes and backslashes in the target, and DEL in a refused one, are
        escaped in the log line.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        client = proxy.client()
        client.send(b'GET http://example.com/a"b\\c HTTP/1.1\r\n\r\n')
        origin = proxy.accept()
        self.assertEqual(origin.request().startLine, b'GET /a"b\\c HTTP/1.1')
        origin.send(OK)
        client.send(b"GET http://example.com/d\x7f HTTP/1.1\r\n\r\n")
        first, second = accessLines(events)
        self.assertIn('"GET http://example.com/a\\x22b\\x5cc HTTP/1.1" 200', first)
        self.assertIn('"GET http://example.com/d\\x7f HTTP/1.1" 400', second)
        first.encode("ascii")
        second.encode("ascii")

    def test_accessLogFile(self) -> None:
        """
        With C{accessLog}, lines go to that file (written when the factory
        stops at the latest, and its last connection has ended): an answer
        that ends after the stop, in the grace period, is in it too (it went
        to the twistd log).
        """
        path = self.mktemp()
        proxy = self.proxy(accessLog=path)
        client = proxy.client()
        client.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        origin = proxy.accept()
        other = proxy.client()
        other.send(b"GET http://loopback.example/ HTTP/1.1\r\n\r\n")
        other.received()
        proxy.factory.stopFactory()
        origin.send(OK)
        self.assertEqual(client.response().status, 200)
        client.lose()
        self.assertIsNotNone(proxy.factory._logFile)
        other.lose()
        self.assertIsNone(proxy.factory._logFile)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn('"GET http://loopback.example/ HTTP/1.1" 403 0 0 ', lines[0])
        self.assertIn('"GET http://example.com/ HTTP/1.1" 200 0 5 ', lines[1])

    def test_logMessagesAreText(self) -> None:
        """
        The proxy's messages name origins and targets as text, not as
        Python byte strings.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proxy = self.proxy()
        proxy.exchange(GET, b"garbage\r\n\r\n")
        client, origin = proxy.exchange(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        origin.close()
        messages = [formatEvent(e) for e in events if e.get("log_format") != "{line}"]
        self.assertIn("origin example.com: the origin did not answer in HTTP/1.x", messages)
        self.assertIn("http://example.com/: the origin closed the connection before the end of the response", messages)


class LookupTurnTests(ProxyTestCase):
    """
    A client address may have C{lookupsPerClient} name lookups running at
    once; its others wait their turn, and other clients' lookups start at
    once: one client's lookups of names whose DNS does not answer held
    every lookup thread, for every client.
    """

    SLOW = ["slow1.example", "slow2.example", "slow3.example"]

    def ask(self, proxy: Proxy, name: str, host: str = "127.0.0.1") -> Client:
        client = proxy.client(host)
        client.send(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (name.encode(), name.encode()))
        return client

    def test_turns(self) -> None:
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=2), silent=self.SLOW)
        for name in self.SLOW:
            self.ask(proxy, name)
        self.assertEqual(proxy.resolver.asked, self.SLOW[:2])
        # Another address (an IPv6 client of another /64 too): at once.
        other = self.ask(proxy, "example.com", "127.0.0.2")
        self.assertEqual(proxy.resolver.asked[-1], "example.com")
        self.assertEqual(len(proxy.attempts), 1)
        self.assertFalse(other.closed)
        # The first slow lookup ends (no addresses): the third's turn.
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(proxy.resolver.asked[-1], "slow3.example")
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 2)
        for receiver in proxy.resolver.waiting[1:]:
            receiver.resolutionComplete()
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 0)

    def test_oneAddressOfASubscriber(self) -> None:
        """
        The clients of one IPv6 /64 take turns as one address, as in every
        per-address limit of netsuite.
        """
        rules = ProxyRules(clients=parseNetworks("2001:db8::/32"))
        proxy = self.proxy(rules=rules, settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0], "2001:db8::1")
        self.ask(proxy, self.SLOW[1], "2001:db8::2")
        self.assertEqual(proxy.resolver.asked, self.SLOW[:1])
        self.ask(proxy, self.SLOW[2], "2001:db8:0:1::1")
        self.assertEqual(proxy.resolver.asked, [self.SLOW[0], self.SLOW[2]])

    def test_goneWhileWaitingPassedOver(self) -> None:
        """
        A request whose client left, or that timed out, while its lookup
        waited its turn is passed over: its lookup is never made.
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1, connectTimeout=10), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0])
        gone = self.ask(proxy, self.SLOW[1])
        proxy.clock.advance(5)
        late = self.ask(proxy, self.SLOW[2])
        gone.lose()
        proxy.clock.advance(5)  # the first and second time out, not the third
        proxy.clock.advance(5.5)  # the third times out too, still waiting
        self.assertTextError(late.response(), 504, "timed out resolving slow3.example")
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(proxy.resolver.asked, self.SLOW[:1])
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 0)
        # The turns are free again.
        self.ask(proxy, "example.com")
        self.assertEqual(proxy.resolver.asked[-1], "example.com")

    def test_turnGivenBackAfterABug(self) -> None:
        """
        A lookup whose answer meets a bug still gives its turn back.
        """

        def broken(request: object, addresses: object) -> None:
            raise RuntimeError("a bug")

        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.patch(ProxyRequest, "_resolved", broken)
        self.ask(proxy, self.SLOW[0])
        self.ask(proxy, self.SLOW[1])
        proxy.resolver.waiting.pop(0).resolutionComplete()
        self.assertEqual(proxy.resolver.asked, self.SLOW[:2])
        gc.collect()  # the bug's failure is logged when its Deferred goes
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_joiningTakesNoTurn(self) -> None:
        """
        A request for a name whose lookup runs (netsuite's resolver shares
        it: no thread) takes no turn: it waited behind its own client's
        lookups, and then looked the name up again.
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        proxy.resolver.isRunning = lambda name, port: name in proxy.resolver.asked  # type: ignore[attr-defined]
        self.ask(proxy, self.SLOW[0])
        self.ask(proxy, self.SLOW[0])
        self.assertEqual(proxy.resolver.asked, [self.SLOW[0]] * 2)
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 1)
        self.ask(proxy, self.SLOW[1])
        self.assertEqual(proxy.resolver.asked, [self.SLOW[0]] * 2)

    def test_unlimited(self) -> None:
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=0), silent=self.SLOW)
        for name in self.SLOW:
            self.ask(proxy, name)
        self.assertEqual(proxy.resolver.asked, self.SLOW)


class LookupTurnReviewTests(ProxyTestCase):
    """
    More of L{netsuite.proxy.LookupTurns}: its order, what it keeps, the
    paths by which a turn is given back, re-entrant answers.
    """

    SLOW = LookupTurnTests.SLOW

    ask = LookupTurnTests.ask

    def turns(self, proxy: Proxy) -> Tuple[Dict[str, int], Dict[str, int]]:
        lookups = proxy.factory.lookups
        return dict(lookups._running), {key: len(waiting) for key, waiting in lookups._waiting.items()}

    def test_default(self) -> None:
        self.assertEqual(ProxySettings().lookupsPerClient, 16)

    def test_receiverDeclared(self) -> None:
        """
        The resolver's receiver is declared an L{IResolutionReceiver}; the
        turns are none (the decorator went to the class inserted between).
        """
        self.assertTrue(IResolutionReceiver.implementedBy(proxyModule._Addresses))
        self.assertFalse(IResolutionReceiver.implementedBy(proxyModule.LookupTurns))

    def test_inOrder(self) -> None:
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        for name in self.SLOW:
            self.ask(proxy, name)
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(proxy.resolver.asked, self.SLOW[:2])
        proxy.resolver.waiting[1].resolutionComplete()
        self.assertEqual(proxy.resolver.asked, self.SLOW)

    def test_liveBehindGone(self) -> None:
        """
        A lookup that waits behind one whose client left starts in the
        turn that frees: the one gone does not take it.
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0])
        self.ask(proxy, self.SLOW[1]).lose()
        self.ask(proxy, self.SLOW[2])
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(proxy.resolver.asked, [self.SLOW[0], self.SLOW[2]])

    def test_nothingKept(self) -> None:
        """
        Once its lookups have ended, nothing is kept for a client address
        (an attacker has any number of IPv6 /64s).
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0])
        self.ask(proxy, self.SLOW[1])
        self.assertEqual(self.turns(proxy), ({"127.0.0.1": 1}, {"127.0.0.1": 1}))
        proxy.resolver.waiting[0].resolutionComplete()
        proxy.resolver.waiting[1].resolutionComplete()
        self.assertEqual(self.turns(proxy), ({}, {}))

    def test_runningBySubscriber(self) -> None:
        rules = ProxyRules(clients=parseNetworks("2001:db8::/32, 127.0.0.1"))
        proxy = self.proxy(rules=rules, settings=ProxySettings(lookupsPerClient=2), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0], "2001:db8::1")
        self.assertEqual(proxy.factory.lookups.running("2001:db8::2"), 1)
        self.ask(proxy, self.SLOW[1], "::ffff:127.0.0.1")
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 1)

    def test_resolverRaises(self) -> None:
        """
        A resolver that raises at once: the request fails (502) and its turn
        is given back.
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        asked = proxy.resolver.resolveHostName

        def resolveHostName(receiver: IResolutionReceiver, hostName: str, *args: object) -> IHostResolution:
            if hostName == "boom.example":
                raise OSError("no lookups today")
            return asked(receiver, hostName, *args)

        proxy.resolver.resolveHostName = resolveHostName  # type: ignore[method-assign]
        self.assertTextError(self.ask(proxy, "boom.example").response(), 502, "could not resolve")
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 0)
        self.ask(proxy, self.SLOW[0])
        self.assertEqual(proxy.resolver.asked, self.SLOW[:1])

    def test_startRaises(self) -> None:
        """
        A lookup that raises as it starts (a bug) gives its turn back.
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        lookUp = ProxyRequest._lookUp
        calls = []

        def broken(request: ProxyRequest) -> defer.Deferred[object]:
            calls.append(request)
            if len(calls) == 1:
                raise RuntimeError("a bug")
            return lookUp(request)

        self.patch(ProxyRequest, "_lookUp", broken)
        try:
            self.ask(proxy, "example.com")
        except RuntimeError:
            pass
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 0)
        self.ask(proxy, self.SLOW[0])
        self.assertEqual(proxy.resolver.asked, self.SLOW[:1])

    def test_reentrantAnswerKeepsOrder(self) -> None:
        """
        A lookup started in its turn that is answered at once (a 502), whose
        connection then has its next request looked up: that one waits
        behind those that were waiting before it.
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0])
        pipelined = proxy.client()
        pipelined.send(
            b"GET http://nowhere.example/ HTTP/1.1\r\nHost: nowhere.example\r\n\r\n"
            b"GET http://slow2.example/ HTTP/1.1\r\nHost: slow2.example\r\n\r\n"
        )
        self.ask(proxy, self.SLOW[2])
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(proxy.resolver.asked, [self.SLOW[0], "nowhere.example", self.SLOW[2]])
        self.assertEqual(self.turns(proxy), ({"127.0.0.1": 1}, {"127.0.0.1": 1}))
        proxy.resolver.waiting[1].resolutionComplete()
        self.assertEqual(proxy.resolver.asked[-1], self.SLOW[1])

    def test_manyAnsweredAtOnce(self) -> None:
        """
        Hundreds of waiting lookups whose resolver answers them at once
        (names with no address: 502) are each answered when the turn
        frees: the turns are given on in a loop, not by recursion (which
        ran out of stack past a couple of hundred, and dropped the rest).
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0])
        clients = [self.ask(proxy, f"none{i}.example") for i in range(500)]
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(len(proxy.resolver.asked), 501)
        self.assertEqual([client.response().status for client in clients], [502] * 500)
        self.assertEqual(self.turns(proxy), ({}, {}))
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_unansweredLookupGivesTurnBack(self) -> None:
        """
        Twisted's own resolver never answers a lookup whose C{getaddrinfo}
        fails with other than a DNS error (C{EMFILE}): its turn is given
        back after C{LOOKUP_TURN_LIMIT} (60 s), not held for good
        (after C{lookupsPerClient} such failures, a client address had no
        lookup again until the proxy restarted).
        """
        from twisted.internet._resolver import GAIResolver
        from twisted.internet.test.test_resolver import deterministicPool, deterministicReactorThreads

        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1, connectTimeout=10))
        pool, threadWork = deterministicPool()
        threads, reactorWork = deterministicReactorThreads()
        looked: List[str] = []

        def getaddrinfo(host: str, port: int, *args: object) -> list:
            looked.append(host)
            if host == "broken.example":
                raise OSError(errno.EMFILE, "Too many open files")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))]

        proxy.factory.resolver = GAIResolver(threads, lambda: pool, getaddrinfo)
        broken = self.ask(proxy, "broken.example")
        threadWork()
        reactorWork()
        proxy.clock.advance(10)
        self.assertTextError(broken.response(), 504, "timed out resolving broken.example")
        proxy.clock.advance(120)
        later = self.ask(proxy, "example.com")
        threadWork()
        reactorWork()
        self.assertEqual(looked, ["broken.example", "example.com"])
        self.assertEqual(proxy.attempts, [(PUBLIC, 80)])
        del broken, later
        gc.collect()  # Twisted's failed lookup is logged when its Deferred goes
        self.flushLoggedErrors(OSError)

    def test_noThreadGivesTurnBack(self) -> None:
        """
        netsuite's own resolver: a lookup whose thread could not start
        (C{RuntimeError: can't start new thread}, out of processes) is "no
        addresses" at once (a 502), its turn given back, and so is the next
        lookup of that name (it was never answered, and every later lookup
        of the name joined it).
        """
        from netsuite import resolving

        def noThread(*args: object, **kwargs: object) -> None:
            raise RuntimeError("can't start new thread")

        self.patch(resolving, "_daemonThread", noThread)
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1, connectTimeout=10))
        # The refusal comes in the reactor's thread: no thread is involved.
        proxy.clock.callFromThread = lambda f, *args, **kwargs: f(*args, **kwargs)  # type: ignore[attr-defined]
        resolver = resolving.AnsweringResolver(proxy.clock, getaddrinfo=lambda *args: [])
        self.addCleanup(resolver.stop)
        proxy.factory.resolver = resolver
        for _ in range(2):
            client = self.ask(proxy, "example.com")
            self.assertTextError(client.response(), 502, "could not resolve the host name example.com")
            self.assertEqual(proxy.factory.lookups.running("127.0.0.1"), 0)

    def test_goneNotKept(self) -> None:
        """
        A client that asks and leaves, again and again, while its lookups
        do not answer: what waits for it is not kept for each request (each
        held its request, connection and headers until a turn came back).
        """
        proxy = self.proxy(settings=ProxySettings(lookupsPerClient=1), silent=self.SLOW)
        self.ask(proxy, self.SLOW[0])
        for i in range(1000):
            self.ask(proxy, self.SLOW[1]).lose()
        self.assertLess(self.turns(proxy)[1]["127.0.0.1"], 200)
        live = self.ask(proxy, self.SLOW[2])
        proxy.resolver.waiting[0].resolutionComplete()
        self.assertEqual(proxy.resolver.asked, [self.SLOW[0], self.SLOW[2]])
        self.assertFalse(live.closed)
