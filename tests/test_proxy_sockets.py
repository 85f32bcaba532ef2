"""
The HTTP proxy over real loopback sockets, against a local twisted.web
origin, a local TLS echo and hand-made origins: methods with bodies, chunked
and large streamed bodies with bounded buffers, keep-alive reuse, CONNECT
with certificate verification through the tunnel, half-close, rules, auth
(GET and CONNECT), header stripping, errors, an HTTPS proxy listener and
Python's urllib as a real client.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

import trustme
from OpenSSL import SSL
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock, deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server
from zope.interface import implementer

from netsuite.limits import descriptorOf, unsentBytes
from netsuite.proxy import ProxyFactory, ProxySettings, makeProxyService, shutWriting
from netsuite.proxyauth import Authenticator, hashPassword, loadUsers
from netsuite.proxyrules import ProxyRules, parseNetworks
from netsuite.resolving import LOOKUP_THREADS, AnsweringResolver
from tests.helpers import (
    Collector,
    RecordingProducer,
    connect,
    hostAddress,
    rawExchange,
    recvUntil,
    startListener,
    waitUntil,
)
from tests.test_proxy import FakeResolver
from tests.tlshelpers import (
    SOCKET_TIMEOUT,
    closeNotifyClient,
    makeServerOptions,
    startListener as startTLSListener,
    trustRootOf,
)

_CHUNK = bytes(range(256)) * 256  # 64 KiB


class _Echo(resource.Resource):
    """
    Answers what it got: method, headers and the body's length and hash.
    """

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        body = request.content.read()
        headers: Dict[str, List[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            headers[name.decode("latin-1").lower()] = [v.decode("latin-1") for v in values]
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-origin", b"yes")
        return json.dumps(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "version": request.clientproto.decode(),
                "headers": headers,
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()


class _Chunked(resource.Resource):
    """
    Three pieces, no Content-Length: chunked to an HTTP/1.1 client.
    """

    isLeaf = True

    def render_GET(self, request: server.Request) -> int:
        for piece in (b"one,", b"two,", b"three"):
            request.write(piece)
        request.finish()
        return server.NOT_DONE_YET


class _Pattern:
    """
    A push producer writing C{size} bytes of a pattern to a request, paced
    by it.
    """

    def __init__(self, request: server.Request, size: int) -> None:
        self.request = request
        self.left = size
        self.paused = False
        request.registerProducer(self, True)
        reactor.callLater(0, self.resumeProducing)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            piece = _CHUNK[: min(len(_CHUNK), self.left)]
            self.left -= len(piece)
            self.request.write(piece)
        if self.left == 0 and self.request is not None:
            request, self.request = self.request, None
            request.unregisterProducer()
            request.finish()

    def stopProducing(self) -> None:
        self.left = 0
        self.request = None


class _Big(resource.Resource):
    """
    C{/big?n=SIZE}: SIZE bytes of the pattern, with a Content-Length.
    """

    isLeaf = True

    def render_GET(self, request: server.Request) -> int:
        size = int(request.args[b"n"][0])
        request.setHeader(b"content-length", b"%d" % (size,))
        _Pattern(request, size)
        return server.NOT_DONE_YET


class _Counting(WrappingFactory):
    """
    Counts the connections made to the factory it wraps.
    """

    def __init__(self, wrapped: Any) -> None:
        WrappingFactory.__init__(self, wrapped)
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.accepted += 1
        return WrappingFactory.buildProtocol(self, addr)

    async def closeAll(self) -> None:
        """
        Abort every open connection and wait until each is gone, so that
        none outlives the test (the proxy's pooled ones close from its end
        a moment after it stops).
        """
        for wrapper in list(self.protocols):
            wrapper.transport.abortConnection()
        for _ in range(500):
            if not self.protocols:
                return
            await deferLater(reactor, 0.01, lambda: None)


def _pattern(size: int) -> bytes:
    return (_CHUNK * (size // len(_CHUNK) + 1))[:size]


def _parseResponse(data: bytes) -> Tuple[int, Dict[bytes, bytes], bytes]:
    """
    Split one complete response into status, headers (lowercase names) and
    body (de-chunked when chunked).
    """
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2 :]
        return status, headers, body
    if b"content-length" in headers:
        return status, headers, rest[: int(headers[b"content-length"])]
    return status, headers, rest


def _sendThenHalfClose(port: int, data: bytes) -> bytes:
    """
    Connect to C{port}, send C{data}, shut the sending side (C{nc -N}), and
    return everything received until the other side closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        return recvUntil(conn)


def _readResponse(conn: socket.socket, request: bytes) -> bytes:
    """
    Send C{request} on C{conn} and read one response framed by its
    C{Content-Length} (none: no body), nothing beyond it.
    """
    conn.sendall(request)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = conn.recv(1)
        if not byte:
            raise AssertionError(f"closed after {head!r}")
        head += byte
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise AssertionError(f"closed after {head + body!r}")
        body += chunk
    return head + body


def _readToClose(port: int, data: bytes) -> bytes:
    """
    Send C{data} on a raw socket and read until the server closes (in a
    thread).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
        s.sendall(data)
        return recvUntil(s)


def _buffered(transport: Any) -> int:
    """
    Bytes waiting in a Twisted TCP transport's write buffer.
    """
    while not hasattr(transport, "dataBuffer"):
        transport = transport.transport
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class _RawOrigin(Protocol):
    """
    An origin that keeps everything it receives and answers only when told.
    """

    def __init__(self, owner: "_RawOriginFactory") -> None:
        self.owner = owner
        self.received = bytearray()

    def connectionMade(self) -> None:
        self.owner.connections.append(self)
        if self.owner.pauseAtStart:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for target, d in list(self.owner.waiting):
            if len(self.received) >= target:
                self.owner.waiting.remove((target, d))
                d.callback(self)


class _RawOriginFactory(Factory):
    def __init__(self, pauseAtStart: bool = False) -> None:
        self.connections: List[_RawOrigin] = []
        self.waiting: List[Tuple[int, defer.Deferred[_RawOrigin]]] = []
        self.pauseAtStart = pauseAtStart

    def buildProtocol(self, addr: Any) -> _RawOrigin:
        return _RawOrigin(self)

    def waitFor(self, size: int) -> defer.Deferred[_RawOrigin]:
        """
        Fire with the first connection once it received C{size} bytes.
        """
        d: defer.Deferred[_RawOrigin] = defer.Deferred()
        if self.connections and len(self.connections[0].received) >= size:
            d.callback(self.connections[0])
        else:
            self.waiting.append((size, d))
        return d


class _TakingWhenTold(Protocol):
    """
    An origin that reads nothing until told, then one read each time it is
    (L{takeOne}).
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.taking = False
        self.answered = False

    def connectionMade(self) -> None:
        self.transport.pauseProducing()

    def takeOne(self) -> None:
        """
        Read once more.
        """
        self.taking = True
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.taking = False
        self.transport.pauseProducing()

    def bodyTaken(self) -> int:
        """
        The bytes read after the request's head.
        """
        head, found, body = bytes(self.received).partition(b"\r\n\r\n")
        return len(body) if found else 0

    def answer(self, response: bytes) -> None:
        """
        Send C{response} and read again.
        """
        self.answered = True
        self.transport.write(response)
        self.transport.resumeProducing()


class _TakingWhenToldFactory(Factory):
    def __init__(self) -> None:
        self.connections: List[_TakingWhenTold] = []

    def buildProtocol(self, addr: Any) -> _TakingWhenTold:
        taker = _TakingWhenTold()
        self.connections.append(taker)
        return taker


@implementer(IHalfCloseableProtocol)
class _CountThenAnswer(Protocol):
    """
    Counts bytes until the client half-closes, then answers with the count
    and closes: only works if the end of input crosses the tunnel.
    """

    count = 0

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"got %d\n" % (self.count,))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class _CountingInput(Protocol):
    """
    Counts bytes until the end of input (C{ended} fires with the count),
    then closes.
    """

    def __init__(self) -> None:
        self.count = 0
        self.ended: defer.Deferred[int] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.ended.callback(self.count)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class _GreetThenCount(_CountingInput):
    """
    Sends a greeting and ends its output at once, then counts what comes.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"hello from the origin\n")
        self.transport.loseWriteConnection()


def _tunnelAfterOriginEnd(port: int, ca: trustme.CA, target: int, tls12: bool, size: int) -> Tuple[bytes, str, str]:
    """
    Blocking: through the TLS proxy at C{port}, open a tunnel to C{target}
    and read until the proxy's end of output (its close_notify, or the
    connection's end); then send C{size} bytes and close_notify, and read
    on until the connection ends.

    @return: what was read, how the proxy's output ended
        (C{"close_notify"}, C{"eof"}, C{"reset"}), and how the client's
        sending went (C{"sent"} or the error).
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if tls12:
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    ca.configure_trust(context)
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        # Blocking for pyOpenSSL, with the kernel's timeouts instead.
        raw.settimeout(None)
        limit = struct.pack("ll", int(SOCKET_TIMEOUT), 0)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        conn = SSL.Connection(context, raw)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,))
        how = ""
        while not how:
            try:
                data = conn.recv(65536)
            except SSL.ZeroReturnError:
                how = "close_notify"
            except SSL.SysCallError as e:
                how = {-1: "eof", errno.EAGAIN: "timeout"}.get(e.args[0], "reset")
            else:
                if not data:
                    how = "eof"
                received += data
        try:
            conn.sendall(b"y" * size)
            conn.shutdown()
            sending = "sent"
        except (SSL.Error, OSError) as e:
            sending = type(e).__name__
        try:
            while conn.recv(65536):
                pass
        except (SSL.Error, OSError):
            pass
    return received, how, sending


@implementer(IPushProducer)
class _Flood:
    """
    Writes to a transport without end, as fast as it takes it.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.paused = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.transport.disconnecting:
            self.transport.write(_CHUNK)

    def stopProducing(self) -> None:
        self.paused = True


@implementer(IPushProducer)
class _Endless(Protocol):
    """
    An origin that sends without end, as fast as it is read.
    """

    _paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while not self._paused and self.transport.connected and not self.transport.disconnecting:
            self.transport.write(b"x" * 65536)

    def stopProducing(self) -> None:
        self._paused = True


class ProxySocketTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        root = resource.Resource()
        root.putChild(b"echo", _Echo())
        root.putChild(b"chunked", _Chunked())
        root.putChild(b"big", _Big())
        site = server.Site(root)
        site.noisy = False
        self.origin = _Counting(site)
        port = reactor.listenTCP(0, self.origin, interface="127.0.0.1")
        self.addCleanup(self.origin.closeAll)
        self.addCleanup(port.stopListening)
        self.originPort = port.getHost().port
        self.base = f"http://127.0.0.1:{self.originPort}"

    async def startProxy(self, rules: ProxyRules | None = None, tls: Any = None, **kw: Any) -> int:
        if rules is None:
            rules = ProxyRules(allowLoopback=True)
        settings = kw.pop("settings", None) or ProxySettings()
        self.factory = ProxyFactory(reactor, rules=rules, settings=settings, **kw)
        self.listener = makeProxyService(
            "tcp:0:interface=127.0.0.1", reactor, factory=self.factory, tls=tls, grace=1
        )
        return await startListener(self, self.listener)

    async def exchange(self, port: int, data: bytes, expect: int = 1) -> bytes:
        """
        Send C{data} to the proxy on a raw socket (in a thread) and read
        C{expect} complete responses or until it closes.
        """
        return await threads.deferToThread(rawExchange, port, data, expect, 10.0)

    def channels(self) -> List[Any]:
        return [p.wrappedProtocol for p in self.listener.tracker.protocols]

    async def clientOf(self, tls: bool, rules: ProxyRules | None = None, **kw: Any) -> Collector:
        """
        Start a proxy (over TLS, with a certificate made here, when C{tls})
        and connect a client to it.
        """
        ca = trustme.CA()
        port = await self.startProxy(rules, tls=makeServerOptions(self.mktemp(), ca) if tls else None, **kw)
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls:
            endpoint = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=trustRootOf(ca)), endpoint)
        client = Collector()
        await connect(self, port, client, endpoint)
        return client

    async def assertChannelsEnd(self) -> None:
        """
        Fail unless every client connection of the proxy ends within 5 s.
        """
        for _ in range(50):
            if not self.channels():
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.channels(), [], "the client's connection stayed open")

    # Plain requests.

    async def test_getThroughProxy(self) -> None:
        """
        A GET in absolute form reaches the origin in origin form with the
        target's Host, and the answer comes back with C{Via}.
        """
        port = await self.startProxy()
        data = await self.exchange(
            port,
            b"GET %s/echo?x=1 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n" % (self.base.encode(),),
        )
        status, headers, body = _parseResponse(data)
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"via"], b"1.1 netsuite")
        seen = json.loads(body)
        self.assertEqual(seen["uri"], "/echo?x=1")
        self.assertEqual(seen["headers"]["host"], [f"127.0.0.1:{self.originPort}"])
        self.assertEqual(seen["headers"]["via"], ["1.1 netsuite"])

    async def test_methodsWithBodies(self) -> None:
        """
        POST, PUT, PATCH and DELETE with bodies (Content-Length and chunked)
        arrive whole at the origin.
        """
        port = await self.startProxy()
        body = os.urandom(300_000)
        for method in (b"POST", b"PUT", b"PATCH", b"DELETE"):
            data = await self.exchange(
                port,
                b"%s %s/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (method, self.base.encode(), len(body), body),
            )
            status, _, answer = _parseResponse(data)
            seen = json.loads(answer)
            self.assertEqual((status, seen["method"], seen["length"]), (200, method.decode(), len(body)))
            self.assertEqual(seen["sha256"], hashlib.sha256(body).hexdigest())
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:1000], body[1000:])) + b"0\r\n\r\n"
        data = await self.exchange(
            port,
            b"POST %s/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s"
            % (self.base.encode(), chunked),
        )
        seen = json.loads(_parseResponse(data)[2])
        self.assertEqual(seen["sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(seen["headers"]["transfer-encoding"], ["chunked"])

    async def test_expectContinue(self) -> None:
        """
        A client that sends C{Expect: 100-continue} gets the origin's
        C{100 Continue} (twisted.web sends one at once), then sends its
        body, which arrives whole; the origin saw C{Expect}.
        """
        port = await self.startProxy()
        body = os.urandom(200_000)

        def post() -> Tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
                s.sendall(
                    b"POST %s/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n" % (self.base.encode(), len(body))
                )
                interim = b""
                while b"\r\n\r\n" not in interim:
                    interim += s.recv(1)
                s.sendall(body)
                return interim, recvUntil(s)

        interim, data = await threads.deferToThread(post)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        status, _, answer = _parseResponse(data)
        seen = json.loads(answer)
        self.assertEqual((status, seen["length"]), (200, len(body)))
        self.assertEqual(seen["sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(seen["headers"]["expect"], ["100-continue"])

    async def test_expectContinueRefusedOrUnanswered(self) -> None:
        """
        Over real sockets: an origin that refuses an upload from its head
        (a 413) is heard before the body is sent, and gets none of it; one
        that ignores the expectation gets the body after the proxy's own
        C{100 Continue}.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        originPort = listener.getsockname()[1]

        def origin(refuse: bool) -> int:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                body = data.split(b"\r\n\r\n", 1)[1]
                if refuse:
                    conn.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(0.5)
                    try:
                        while True:
                            more = conn.recv(65536)
                            if not more:
                                break
                            body += more
                    except OSError:
                        pass
                    return len(body)
                while len(body) < 4:
                    body += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                return len(body)

        port = await self.startProxy()

        def client(size: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
                s.sendall(
                    b"PUT http://127.0.0.1:%d/f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: %d\r\n\r\n" % (originPort, size)
                )
                first = b""
                while b"\r\n\r\n" not in first:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    first += chunk
                if first.startswith(b"HTTP/1.1 100 "):
                    s.sendall(b"x" * size)
                    return first + recvUntil(s, lambda data: b"\r\n\r\n" in data)
                return first

        refused = threads.deferToThread(origin, True)
        answer = await threads.deferToThread(client, 10_000_000)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertEqual(await refused, 0)
        silent = threads.deferToThread(origin, False)
        answer = await threads.deferToThread(client, 4)
        self.assertTrue(answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 "), answer[:100])
        self.assertEqual(await silent, 4)

    async def test_http10KeepAlive(self) -> None:
        """
        Over real sockets, an HTTP/1.0 client asking for keep-alive (as
        C{ab -k -X} does) gets two answers on one connection, each with an
        HTTP/1.1 status line and C{Connection: keep-alive}; a chunked one
        then says C{Connection: close} and ends with the connection.
        """
        port = await self.startProxy()
        base = self.base.encode()

        def _whole(received: bytes) -> bool:
            head, ended, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
            return bool(ended) and length is not None and len(body) >= int(length.group(1))

        def exchange() -> list[bytes]:
            answers = []
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                for _ in range(2):
                    raw.sendall(b"GET %s/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % (base,))
                    answers.append(recvUntil(raw, _whole))
                raw.sendall(b"GET %s/chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % (base,))
                answers.append(recvUntil(raw))
            return answers

        answers = await threads.deferToThread(exchange)
        for answer in answers[:2]:
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
            self.assertIn(b"\r\nConnection: keep-alive\r\n", answer)
        status, headers, body = _parseResponse(answers[2])
        self.assertEqual((status, headers.get(b"connection"), body), (200, b"close", b"one,two,three"))

    async def test_chunkedResponse(self) -> None:
        """
        A chunked origin response reaches an HTTP/1.1 client chunked and
        whole, and an HTTP/1.0 client whole, ended by the close.
        """
        port = await self.startProxy()
        data = await threads.deferToThread(
            _readToClose, port, b"GET %s/chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (self.base.encode(),)
        )
        status, headers, body = _parseResponse(data)
        self.assertEqual((status, headers[b"transfer-encoding"], body), (200, b"chunked", b"one,two,three"))
        data = await threads.deferToThread(_readToClose, port, b"GET %s/chunked HTTP/1.0\r\n\r\n" % (self.base.encode(),))
        status, headers, body = _parseResponse(data)
        self.assertEqual((status, body), (200, b"one,two,three"))
        self.assertNotIn(b"transfer-encoding", headers)

    async def test_keepAliveReusesOriginConnection(self) -> None:
        """
        Requests one after another, on one client connection or several,
        share one origin connection from the pool.
        """
        port = await self.startProxy()
        request = b"GET %s/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(),)
        data = await self.exchange(port, request * 5, expect=5)
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 5)
        for _ in range(3):
            data = await self.exchange(port, request)
            self.assertEqual(_parseResponse(data)[0], 200)
        self.assertEqual(self.origin.accepted, 1)

    async def test_headerStripping(self) -> None:
        """
        Hop-by-hop headers, and every header the client names in
        C{Connection}, never reach the origin; end-to-end ones do.
        """
        port = await self.startProxy()
        data = await self.exchange(
            port,
            b"GET %s/echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\n"
            b"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eDp5\r\n"
            b"X-Kept: yes\r\nCookie: a=b\r\n\r\n" % (self.base.encode(),),
        )
        seen = json.loads(_parseResponse(data)[2])["headers"]
        for name in ("connection", "x-hop", "keep-alive", "proxy-connection", "te", "trailer",
                     "upgrade", "proxy-authorization"):
            self.assertNotIn(name, seen)
        self.assertEqual((seen["x-kept"], seen["cookie"]), (["yes"], ["a=b"]))
        self.assertNotIn("x-forwarded-for", seen)

    async def test_forwardedFor(self) -> None:
        """
        With C{forwardedFor}, the origin learns the client's address.
        """
        port = await self.startProxy(settings=ProxySettings(forwardedFor=True))
        data = await self.exchange(port, b"GET %s/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(),))
        seen = json.loads(_parseResponse(data)[2])["headers"]
        self.assertEqual(seen["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(seen["forwarded"], ["for=127.0.0.1;proto=http"])

    async def test_urllib(self) -> None:
        """
        Python's urllib with a proxy handler, a real client, gets through.
        """
        port = await self.startProxy()
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
        )

        def fetch() -> Tuple[int, bytes, Optional[str]]:
            request = urllib.request.Request(self.base + "/echo", data=b"payload", method="POST")
            with opener.open(request, timeout=10) as response:
                return response.status, response.read(), response.headers.get("Via")

        status, body, via = await threads.deferToThread(fetch)
        self.assertEqual((status, via), (200, "1.1 netsuite"))
        self.assertEqual(json.loads(body)["length"], 7)

    # Large bodies: bounded buffers both ways.

    async def test_largeDownloadBounded(self) -> None:
        """
        A client that stops reading a 64 MiB download pauses the origin: the
        proxy holds little; once it reads again every byte arrives.
        """
        port = await self.startProxy()
        size = 64 * 1024 * 1024
        client = Collector()
        await connect(self, port, client)
        client.transport.write(b"GET %s/big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(), size))
        await client.waitFor(1)
        client.transport.pauseProducing()
        await deferLater(reactor, 0.5, lambda: None)
        held = sum(_buffered(p.transport) for p in self.listener.tracker.protocols)
        self.assertLess(held, 2 * 1024 * 1024)
        client.transport.resumeProducing()
        while b"\r\n\r\n" not in b"".join(client.received)[:4096]:
            await deferLater(reactor, 0.01, lambda: None)
        head = b"".join(client.received).index(b"\r\n\r\n") + 4
        await client.waitFor(head + size)
        data = b"".join(client.received)
        self.assertEqual(len(data) - head, size)
        self.assertEqual(hashlib.sha256(data[head:]).digest(), hashlib.sha256(_pattern(size)).digest())

    async def test_clientGoneMidAnswerLogged(self) -> None:
        """
        Over real sockets, a client that reads part of a large download and
        closes gets its access-log line with the origin's status and the
        bytes that came so far (there was none).
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from tests.test_proxy import accessLines

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        port = await self.startProxy()
        size = 64 * 1024 * 1024

        def readSomeAndGo() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET %s/big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(), size))
                return recvUntil(s, lambda data: len(data) > 100_000)

        self.assertIn(b" 200 ", await threads.deferToThread(readSomeAndGo))
        for _ in range(200):
            if accessLines(events):
                break
            await deferLater(reactor, 0.05, lambda: None)
        [line] = accessLines(events)
        match = re.search(r'"GET \S+/big\?n=\d+ HTTP/1\.1" 200 0 (\d+) ', line)
        self.assertIsNotNone(match, line)
        self.assertLess(int(match.group(1)), size)

    async def test_largeUploadBounded(self) -> None:
        """
        A 32 MiB upload to an origin that does not read stays mostly in the
        client: the proxy stops reading it; once the origin reads, all of it
        arrives and the answer comes back.
        """
        origin = _RawOriginFactory(pauseAtStart=True)
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        port = await self.startProxy()
        size = 32 * 1024 * 1024
        client = Collector()
        await connect(self, port, client)
        client.transport.write(
            b"POST http://127.0.0.1:%d/up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (originPort.getHost().port, size)
        )
        client.transport.write(_pattern(size))

        def held() -> int:
            channel = self.channels()[0]
            return _buffered(channel.transport) + _buffered(channel.requests[0]._upstream.transport)

        def stopped() -> bool:
            # The proxy stopped reading for the origin, or holds too much.
            channels = self.channels()
            if not channels or not channels[0].requests or channels[0].requests[0]._upstream is None:
                return False
            return "upload" in channels[0]._gate._holds or held() >= 4 * 1024 * 1024

        await waitUntil(stopped, timeout=30)
        self.assertLess(held(), 4 * 1024 * 1024)
        self.assertGreater(_buffered(client.transport), 8 * 1024 * 1024)
        conn = origin.connections[0]
        conn.transport.resumeProducing()
        await origin.waitFor(size)
        headEnd = bytes(conn.received[:4096]).index(b"\r\n\r\n") + 4
        await origin.waitFor(headEnd + size)
        self.assertEqual(len(conn.received) - headEnd, size)
        self.assertEqual(hashlib.sha256(bytes(conn.received[headEnd:])).digest(),
                         hashlib.sha256(_pattern(size)).digest())
        conn.transport.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await client.waitFor(1)
        while b"ok" not in b"".join(client.received):
            await deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 201 Created\r\n"))

    # CONNECT.

    async def test_connectToTLSEcho(self) -> None:
        """
        CONNECT opens a tunnel to a local TLS echo; the client verifies the
        echo's certificate through it and talks to it.
        """
        ca = trustme.CA()
        directory = self.mktemp()
        os.makedirs(directory)
        echoPort = startTLSListener(self, makeServerOptions(directory, ca))
        port = await self.startProxy(ProxyRules(allowLoopback=True, connectPorts=frozenset({echoPort})))
        cadata = ca.cert_pem.bytes().decode()

        def talk() -> Tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                raw.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (echoPort, echoPort))
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += raw.recv(1)
                context = ssl.create_default_context(cadata=cadata)
                with context.wrap_socket(raw, server_hostname="localhost") as conn:
                    conn.sendall(b"through the tunnel")
                    echoed = b""
                    while len(echoed) < 18:
                        echoed += conn.recv(1024)
                    return answer, echoed

        answer, echoed = await threads.deferToThread(talk)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(echoed, b"through the tunnel")
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.factory.stats.counters.get("tunnels"), 1)
        self.assertEqual(self.factory.stats.gauges.get("tunnels_open"), 0)

    async def test_connectHalfClose(self) -> None:
        """
        A client that shuts its sending side through a tunnel still gets the
        origin's answer to the end of its input.
        """
        factory = Factory.forProtocol(_CountThenAnswer)
        originPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        port = await self.startProxy(ProxyRules(allowLoopback=True, connectPorts=frozenset({target})))

        def talk() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                raw.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,) + b"x" * 100000)
                raw.shutdown(socket.SHUT_WR)
                return recvUntil(raw)

        received = await threads.deferToThread(talk)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:100])
        self.assertTrue(received.endswith(b"got 100000\n"), received[-100:])

    async def test_connectIdleTimeout(self) -> None:
        """
        A tunnel that carries nothing for the idle timeout is closed.
        """
        origin = _RawOriginFactory()
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        port = await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})),
            settings=ProxySettings(tunnelIdleTimeout=0.3),
        )
        client = Collector()
        await connect(self, port, client)
        client.transport.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,))
        await client.closed
        self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.factory.stats.counters.get("tunnel_timeouts"), 1)

    async def test_connectOriginNotReadingIsAbortedOnceTheTunnelEnds(self) -> None:
        """
        Over real sockets: a client fills a tunnel to an origin that reads
        nothing, until the tunnel times out.  The proxy's connection to the
        origin, closed with bytes it cannot send, is aborted after the read
        timeout; it stayed for ever (a file descriptor leaked a tunnel,
        unseen by every limit).
        """
        origin = _RawOriginFactory(pauseAtStart=True)
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        port = await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})),
            settings=ProxySettings(readTimeout=0.5, tunnelIdleTimeout=0.3),
        )
        client = Collector()
        await connect(self, port, client)
        client.transport.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,))
        await client.waitFor(len(b"HTTP/1.1 200 Connection established\r\n\r\n"))
        client.transport.write(b"x" * (16 * 1024 * 1024))
        [connection] = origin.connections
        await client.closed  # the tunnel timed out
        counters = self.factory.stats.counters
        for _ in range(500):
            if counters.get("origin_timeouts"):
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(counters.get("origin_timeouts"), 1, "the origin's connection was kept")
        # Aborted: what the origin had not taken is dropped, and reading
        # again it finds the end (a reset).
        connection.transport.resumeProducing()
        for _ in range(500):
            if not connection.transport.connected:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(connection.transport.connected)
        self.assertLess(len(connection.received), 16 * 1024 * 1024)

    async def test_clientResetWhileNotReadIsClosed(self) -> None:
        await self._clientResetWhileNotRead(tls=False)

    async def test_clientResetWhileNotReadIsClosedTLS(self) -> None:
        await self._clientResetWhileNotRead(tls=True)

    async def _clientResetWhileNotRead(self, tls: bool) -> None:
        """
        Over real sockets: a client fills a tunnel to an origin that reads
        nothing, so the proxy stops reading from it, then resets its
        connection.  The proxy's side is closed at the next check, not at
        the tunnel's idle timeout (its socket, not read, told nothing).
        """
        from netsuite import proxy as proxyModule

        self.patch(proxyModule, "_RESET_CHECK", 0.2)
        origin = _RawOriginFactory(pauseAtStart=True)
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        client = await self.clientOf(
            tls,
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})),
            settings=ProxySettings(tunnelIdleTimeout=300, idleTimeout=300, readTimeout=300),
        )
        client.transport.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,))
        await client.waitFor(len(b"HTTP/1.1 200 Connection established\r\n\r\n"))
        _Flood(client.transport)
        [channel] = self.channels()
        socketTransport = descriptorOf(channel.transport)
        watched = 0.0
        for _ in range(1000):
            # Until the proxy has held its reading, and the reactor has
            # watched the client's socket for nothing, for 0.3 s (every
            # buffer on the way is full).
            if channel._gate.held and socketTransport not in set(reactor.getReaders()) | set(reactor.getWriters()):
                if time.monotonic() - watched > 0.3:
                    break
            else:
                watched = time.monotonic()
            await deferLater(reactor, 0.01, lambda: None)
        else:
            self.fail("the proxy never stopped reading")
        client.transport.abortConnection()  # a reset
        await self.assertChannelsEnd()
        [connection] = origin.connections
        connection.transport.abortConnection()
        for _ in range(100):  # the proxy's side of it goes too
            if not [call for call in reactor.getDelayedCalls() if "ClosingWatch" in repr(call.func)]:
                break
            await deferLater(reactor, 0.05, lambda: None)

    async def _tunnelTimesOutWhileClientTakesNothing(self, tls: bool) -> None:
        """
        A client opens a tunnel to an origin that sends without end, and
        stops reading once the tunnel is open: after the tunnel's idle
        timeout, then the idle timeout, its connection to the proxy is
        gone.
        """
        originPort = reactor.listenTCP(0, Factory.forProtocol(_Endless), interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        client = await self.clientOf(
            tls,
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})),
            settings=ProxySettings(tunnelIdleTimeout=0.3, idleTimeout=0.5),
        )
        client.transport.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,))
        await client.waitFor(len(b"HTTP/1.1 200 Connection established\r\n\r\n"))
        client.transport.pauseProducing()
        self.assertEqual(len(self.channels()), 1)
        await self.assertChannelsEnd()
        self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 200 "))
        counters = self.factory.stats.counters
        self.assertEqual((counters.get("tunnel_timeouts"), counters.get("client_timeouts")), (1, 1))

    async def test_connectIdleTimeoutClientTakingNothing(self) -> None:
        """
        A client that takes nothing of a tunnel that timed out is aborted
        after the idle timeout (it kept its connection forever).
        """
        await self._tunnelTimesOutWhileClientTakesNothing(tls=False)

    async def test_connectIdleTimeoutClientTakingNothingTLS(self) -> None:
        """
        The same on a TLS proxy listener, where the close_notify waits
        behind what the client does not take.
        """
        await self._tunnelTimesOutWhileClientTakesNothing(tls=True)

    def _unacceptingPort(self) -> int:
        """
        A loopback port whose listener accepts nothing and whose queue is
        full: a connection to it is never made (Linux drops the SYNs).
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        probe = socket.socket()
        probe.settimeout(0.3)
        with probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SkipTest("this system accepts connections beyond a full listen queue")
        return port

    async def _clientEndsWhileConnecting(self, tls: bool) -> None:
        """
        A client sends a CONNECT to an origin that never accepts, then ends
        its input (a FIN; over TLS, close_notify) with nothing sent for the
        tunnel: its connection closes at once with no answer, and the
        access log says 499.  It stayed until the connect timeout and was
        logged 504, holding its tunnel place.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from tests.test_proxy import accessLines

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        target = self._unacceptingPort()
        ca = trustme.CA()
        port = await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})),
            tls=makeServerOptions(self.mktemp(), ca) if tls else None,
            settings=ProxySettings(connectTimeout=30),
        )
        connect = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,)
        started = time.monotonic()
        if tls:
            received, how = await threads.deferToThread(closeNotifyClient, port, ca, connect, timeout=10)
            self.assertEqual((received, how), (b"", "close_notify"))
        else:

            def endAndRead() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    raw.sendall(connect)
                    raw.shutdown(socket.SHUT_WR)
                    return recvUntil(raw)

            self.assertEqual(await threads.deferToThread(endAndRead), b"")
        self.assertLess(time.monotonic() - started, 5)
        for _ in range(100):
            if accessLines(events):
                break
            await deferLater(reactor, 0.05, lambda: None)
        [line] = accessLines(events)
        self.assertRegex(line, r'"CONNECT 127\.0\.0\.1:\d+ HTTP/1\.1" 499 0 0 ')
        self.assertEqual(self.factory.tunnelsOpen, 0)
        self.assertNotIn("connect_timeouts", self.factory.stats.counters)

    async def test_clientEndsWhileConnecting(self) -> None:
        await self._clientEndsWhileConnecting(tls=False)

    async def test_clientEndsWhileConnectingTLS(self) -> None:
        await self._clientEndsWhileConnecting(tls=True)

    async def _closesWhenClientLeavesAfterEarlyAnswer(self, tls: bool) -> None:
        """
        An origin answers a large upload early (a 413 with C{Connection:
        close}, reading nothing of the body) and keeps its connection; the
        client, whose body the proxy had stopped reading, takes the answer
        and closes: its connection to the proxy is gone at once, not after
        the idle timeout.
        """
        origin = _RawOriginFactory()
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        client = await self.clientOf(tls, settings=ProxySettings(idleTimeout=30))
        head = b"POST http://127.0.0.1:%d/up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
            originPort.getHost().port,
            64 * 1024 * 1024,
        )
        client.transport.write(head + _CHUNK * 64)  # 4 MiB of the body
        connection = await origin.waitFor(len(head))
        connection.transport.pauseProducing()
        answer = b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n"
        connection.transport.write(answer)
        await client.waitFor(len(answer) + len(b"Via: 1.1 netsuite\r\n"))
        self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 413 "))
        client.transport.loseConnection()  # over TLS: after what it wrote, close_notify
        await self.assertChannelsEnd()
        await client.closed

    async def test_earlyHintsPassedOn(self) -> None:
        """
        Over real sockets, an origin's C{103 Early Hints} reaches the
        client before the answer, with C{Via} (it was dropped).
        """
        origin = _RawOriginFactory()
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        client = await self.clientOf(False)
        head = b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % (originPort.getHost().port,)
        client.transport.write(head)
        connection = await origin.waitFor(1)
        hint = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        connection.transport.write(hint)
        passed = hint[:-2] + b"Via: 1.1 netsuite\r\n\r\n"
        await client.waitFor(len(passed))
        self.assertEqual(b"".join(client.received), passed)
        date = b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"  # the origin's, kept
        connection.transport.write(b"HTTP/1.1 200 OK\r\n" + date + b"Content-Length: 2\r\n\r\nok")
        answer = b"HTTP/1.1 200 OK\r\n" + date + b"Via: 1.1 netsuite\r\nContent-Length: 2\r\n\r\nok"
        await client.waitFor(len(passed) + len(answer))
        self.assertEqual(b"".join(client.received), passed + answer)

    async def test_origin407IsABadGateway(self) -> None:
        """
        Over real sockets, an origin's C{407 Proxy Authentication Required}
        reaches the client as a 502 naming the cause, without the origin's
        challenge or body (it was passed on, a 407 without a challenge,
        taken for the proxy's own sign-in refused).
        """
        origin = _RawOriginFactory()
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        client = await self.clientOf(False)
        client.transport.write(
            b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (originPort.getHost().port,)
        )
        connection = await origin.waitFor(1)
        connection.transport.write(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n"
            b"Content-Length: 5\r\n\r\nlogin"
        )
        await client.closed.addTimeout(SOCKET_TIMEOUT, reactor)
        status, headers, body = _parseResponse(b"".join(client.received))
        self.assertEqual(status, 502)
        self.assertNotIn(b"proxy-authenticate", headers)
        self.assertIn(b"only a proxy may send", body)
        self.assertNotIn(b"login", body)

    async def test_clientLeavesAfterEarlyAnswer(self) -> None:
        """
        Over plain TCP the proxy's connection ends with its answer.
        """
        await self._closesWhenClientLeavesAfterEarlyAnswer(tls=False)

    async def test_clientLeavesAfterEarlyAnswerTLS(self) -> None:
        """
        Over TLS the proxy waits for the client's close_notify, behind the
        rest of the body it stopped reading: it reads on, dropping the body
        (the connection stayed until the idle timeout and was then cut).
        """
        await self._closesWhenClientLeavesAfterEarlyAnswer(tls=True)

    async def _closesAfterAnswerWithClose(self, tls: bool, size: int = 100) -> None:
        """
        A client asks with C{Connection: close}, reads its answer to the
        end and closes (over TLS: answers the proxy's close_notify with its
        own): its connection to the proxy ends at once, not after the idle
        timeout.
        """
        client = await self.clientOf(tls, settings=ProxySettings(idleTimeout=30))
        client.transport.write(b"GET %s/big?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (self.base.encode(), size))
        await client.closed.addTimeout(5, reactor)
        self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 200 "))
        await self.assertChannelsEnd()

    async def test_closesAfterAnswer(self) -> None:
        await self._closesAfterAnswerWithClose(tls=False)

    async def test_closesAfterAnswerTLS(self) -> None:
        """
        Over TLS the client's close_notify, answering the proxy's, ends the
        connection (it was taken as the end of the client's input only, and
        the connection stayed until the idle timeout).
        """
        await self._closesAfterAnswerWithClose(tls=True)

    async def test_closesAfterLargeAnswerTLS(self) -> None:
        """
        The same after an answer large enough that the proxy stopped
        reading while the client took it: it reads again to close (it was
        aborted after the idle timeout, counted as a client timeout).
        """
        await self._closesAfterAnswerWithClose(tls=True, size=3_000_000)
        self.assertNotIn("client_timeouts", self.factory.stats.counters)

    async def test_connectPortRefused(self) -> None:
        """
        CONNECT to a port not on the allow-list is refused with 403.
        """
        port = await self.startProxy()
        data = await self.exchange(port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (self.originPort,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"allowed: 443", body)

    # Rules, auth and errors.

    async def test_loopbackDestinationRefusedByDefault(self) -> None:
        """
        With the default rules, a loopback destination gets 403 naming why.
        """
        port = await self.startProxy(ProxyRules())
        data = await self.exchange(port, b"GET %s/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(),))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"loopback", body)
        self.assertEqual(self.origin.accepted, 0)

    async def test_resolvedNameCheckedByTheRules(self) -> None:
        """
        A host name goes through the real resolver and every address it
        resolves to is checked: C{localhost} is refused as loopback by the
        default rules (by GET and by CONNECT to an allowed port), never
        reaching the origin, and fetched when loopback is allowed.
        """
        port = await self.startProxy(ProxyRules(connectPorts=frozenset({self.originPort})))
        data = await self.exchange(port, b"GET http://localhost:%d/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (self.originPort,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"loopback", body)
        data = await self.exchange(port, b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % (self.originPort,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"loopback", body)
        self.assertEqual(self.origin.accepted, 0)

        port = await self.startProxy(ProxyRules(allowLoopback=True))
        data = await self.exchange(port, b"GET http://localhost:%d/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (self.originPort,))
        status, _, _ = _parseResponse(data)
        self.assertEqual(status, 200)
        self.assertEqual(self.origin.accepted, 1)

    async def test_resolverFailureOfAnyKindIs502(self) -> None:
        """
        A C{getaddrinfo} that fails with something other than a DNS error
        (C{EMFILE}: the process is out of file descriptors) is a 502 at
        once with netsuite's resolver; Twisted's never told the proxy, which
        answered 504 at its connect timeout.
        """
        import errno

        def outOfFiles(*args: Any) -> list:
            raise OSError(errno.EMFILE, "Too many open files")

        port = await self.startProxy(
            resolver=AnsweringResolver(reactor, getaddrinfo=outOfFiles), settings=ProxySettings(connectTimeout=30)
        )
        started = time.monotonic()
        data = await self.exchange(port, b"GET http://name.example/ HTTP/1.1\r\nHost: name.example\r\n\r\n")
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 502, body)
        self.assertIn(b"could not resolve the host name name.example", body)
        self.assertLess(time.monotonic() - started, 5)

    def slowResolver(self, threads: int = LOOKUP_THREADS) -> tuple[AnsweringResolver, threading.Event, list[str]]:
        """
        netsuite's resolver, whose lookups of names starting with C{slow}
        wait (for the event returned to be set, or L{SOCKET_TIMEOUT}) and
        then fail as a DNS timeout does; other names are 127.0.0.1.  The
        list returned gets each name C{getaddrinfo} was called for.
        """
        answer = threading.Event()
        looked: list[str] = []

        def getaddrinfo(host: str, *args: Any) -> list:
            looked.append(host)
            if host.startswith("slow"):
                answer.wait(SOCKET_TIMEOUT)
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return socket.getaddrinfo("127.0.0.1", *args)

        resolver = AnsweringResolver(reactor, getaddrinfo=getaddrinfo, threads=threads)
        self.addCleanup(resolver.stop)
        self.addCleanup(answer.set)
        return resolver, answer, looked

    async def askFor(self, port: int, names: list[str]) -> list[Collector]:
        """
        Send a GET of each of C{names} through the proxy, each on a
        connection of its own; answers are not waited for.
        """
        clients = []
        for name in names:
            client = Collector()
            await connect(self, port, client)
            client.transport.write(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (name.encode(), name.encode()))
            clients.append(client)
        return clients

    async def assertAnsweredAtOnce(self, port: int, endpoint: Any = None) -> None:
        """
        A request (from C{endpoint}'s address) for a name that resolves is
        answered, within L{SOCKET_TIMEOUT}.
        """
        client = Collector()
        await connect(self, port, client, endpoint)
        client.transport.write(
            b"GET http://fast.example:%d/echo HTTP/1.1\r\nHost: fast.example\r\nConnection: close\r\n\r\n"
            % (self.originPort,)
        )
        await client.closed.addTimeout(SOCKET_TIMEOUT, reactor)
        status, _, _ = _parseResponse(b"".join(client.received))
        self.assertEqual(status, 200)

    async def assertAll502(self, clients: list[Collector]) -> None:
        for client in clients:
            await client.waitFor(12).addTimeout(SOCKET_TIMEOUT, reactor)
            self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 502 "))

    async def test_slowLookupsHoldNoOtherClient(self) -> None:
        """
        Twelve requests for names whose DNS does not answer leave another
        client's request for a name that resolves answered at once: the
        lookups ran on the reactor's 10 threads, and every lookup behind
        them waited (a 3 s DNS timeout held the other client 5.7 s).
        """
        resolver, answer, _ = self.slowResolver()
        port = await self.startProxy(ProxyRules(allowLoopback=True), resolver=resolver)
        waiting = await self.askFor(port, [f"slow{i}.example" for i in range(12)])
        await self.assertAnsweredAtOnce(port)
        self.assertEqual([client.count for client in waiting], [0] * 12)
        answer.set()
        await self.assertAll502(waiting)

    async def test_oneClientsSlowLookupsTakeTurns(self) -> None:
        """
        Over real sockets, one client address with twenty requests for
        names whose DNS does not answer has its lookups take turns (here 4
        at a time, on 8 lookup threads), so another client address's
        request is answered at once; it waited for the first client's
        lookups to time out.
        """
        resolver, answer, _ = self.slowResolver(threads=8)
        port = await self.startProxy(
            ProxyRules(allowLoopback=True), resolver=resolver, settings=ProxySettings(lookupsPerClient=4)
        )
        waiting = await self.askFor(port, [f"slow{i}.example" for i in range(20)])
        await self.assertAnsweredAtOnce(port, TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=("127.0.0.2", 0)))
        self.assertEqual([client.count for client in waiting], [0] * 20)
        answer.set()
        await self.assertAll502(waiting)

    async def test_requestsForOneSlowNameShareItsLookup(self) -> None:
        """
        Over real sockets, five requests from one address for a name whose
        DNS is slow share one lookup, with one turn: the others waited for
        a turn and looked the name up again, each.
        """
        resolver, answer, looked = self.slowResolver()
        port = await self.startProxy(resolver=resolver, settings=ProxySettings(lookupsPerClient=1))
        clients = await self.askFor(port, ["slow.example"] * 5)
        await deferLater(reactor, 0.2)
        answer.set()
        await self.assertAll502(clients)
        self.assertEqual(looked, ["slow.example"])

    async def test_proxyItselfRefused(self) -> None:
        """
        Even with loopback allowed, the proxy does not connect to itself.
        """
        port = await self.startProxy()
        data = await self.exchange(port, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % (port,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"this proxy itself", body)

    async def test_ownInterfaceAddressRefused(self) -> None:
        """
        A proxy listening on 0.0.0.0 takes a network card's address as its
        own even when the host's name resolves to loopback only (as it is
        made to here; the proxy knew only what its name resolved to): a
        CONNECT or a GET to that address on its port is refused, not a
        tunnel or a request to itself (a loop: one write of nested
        CONNECTs opened a tunnel each).
        """
        address = hostAddress()
        self.patch(socket, "gethostname", lambda: "localhost")
        rules = ProxyRules()
        self.factory = ProxyFactory(reactor, rules=rules)
        self.listener = makeProxyService("tcp:0", reactor, factory=self.factory, grace=1)
        port = await startListener(self, self.listener)
        rules.connectPorts = frozenset({443, port})
        target = b"%s:%d" % (address.encode(), port)
        connect = b"CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n" % (target,)
        # The refused CONNECT closes the connection: the rest is not read.
        data = await self.exchange(port, connect * 3)
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d+)", data), [b"403"], data)
        data += await self.exchange(port, b"GET http://%s/ HTTP/1.1\r\n\r\n" % (target,))
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d+)", data), [b"403"] * 2, data)
        self.assertEqual(data.count(b"this proxy itself"), 2)
        self.assertEqual(self.factory.tunnelsOpen, 0)

    async def test_hostAddressRefusedOnAnyPort(self) -> None:
        """
        A network card's address of this host reaches what listens on
        0.0.0.0 as loopback does (netsuite's own status API, a service kept
        from outside by a firewall): the default rules refuse it on every
        port, not only on the proxy's own.  It was fetched.
        """
        address = hostAddress()
        everywhere = reactor.listenTCP(0, self.origin, interface="0.0.0.0")
        self.addCleanup(everywhere.stopListening)
        target = b"http://%s:%d/echo" % (address.encode(), everywhere.getHost().port)
        port = await self.startProxy(ProxyRules())
        data = await self.exchange(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (target,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"is an address of this host", body)
        self.assertEqual(self.origin.accepted, 0)
        port = await self.startProxy(ProxyRules(allowLoopback=True))
        data = await self.exchange(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % (target,))
        self.assertEqual(_parseResponse(data)[0], 200)

    async def test_clientRefused(self) -> None:
        """
        A client outside the allowed networks gets 403.
        """
        port = await self.startProxy(ProxyRules(clients=parseNetworks("10.0.0.0/8"), allowLoopback=True))
        data = await self.exchange(port, b"GET %s/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(),))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 403)
        self.assertIn(b"127.0.0.1", body)

    async def test_auth(self) -> None:
        """
        With a users file: no credentials or wrong ones get 407 with
        C{Proxy-Authenticate}; right ones pass, and never reach the origin.
        """
        port = await self.startProxy(authenticator=self._usersAuthenticator())
        request = b"GET %s/echo HTTP/1.1\r\nHost: x\r\n%s\r\n"
        data = await self.exchange(port, request % (self.base.encode(), b""))
        status, headers, _ = _parseResponse(data)
        self.assertEqual(status, 407)
        self.assertTrue(headers[b"proxy-authenticate"].startswith(b"Basic realm="))
        self.assertIn(b"date", headers)  # the proxy's own answers are dated
        wrong = b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(b"alice:nope")
        self.assertEqual(_parseResponse(await self.exchange(port, request % (self.base.encode(), wrong)))[0], 407)
        right = b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(b"alice:s3cret")
        status, _, body = _parseResponse(await self.exchange(port, request % (self.base.encode(), right)))
        self.assertEqual(status, 200)
        self.assertNotIn("proxy-authorization", json.loads(body)["headers"])

    async def test_rememberedNotToldWhileChecksHoldTheTries(self) -> None:
        """
        Over real sockets: while a check of the address's runs, alice's
        remembered credentials pass at once on a new connection only while
        the address could pay a wrong try besides the one the check holds.
        Once a guesser there has its last try held by a check of its own,
        its guesses on new connections, the right password among them, all
        wait for that try and are refused with it, none checked (the right
        one passed at once from memory); alice's own connection still
        passes at once.  The checks end when the test says, on a clock that
        does not move (no try comes back meanwhile).
        """
        pending: List[Any] = []

        def check(function: Any, *args: Any) -> defer.Deferred[bool]:
            d: defer.Deferred[bool] = defer.Deferred()
            pending.append(lambda: d.callback(function(*args)))
            return d

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice:" + hashPassword("s3cret", n=1024) + "\n")
        auth = Authenticator(loadUsers(path), Clock(), check=check)
        port = await self.startProxy(authenticator=auth)
        started: List[bytes] = []
        authenticate = auth.authenticate

        def counting(value: bytes, *args: Any, **kwargs: Any) -> Any:
            started.append(value)
            return authenticate(value, *args, **kwargs)

        auth.authenticate = counting  # type: ignore[method-assign]
        request = b"GET %s/echo HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic %s\r\n%s\r\n"

        def send(client: Collector, password: str, close: bool = True) -> None:
            credentials = base64.b64encode(f"alice:{password}".encode())
            client.transport.write(request % (self.base.encode(), credentials, b"Connection: close\r\n" if close else b""))

        async def newConnection(password: str) -> Collector:
            client = Collector()
            await connect(self, port, client)
            send(client, password)
            return client

        async def status(client: Collector) -> int:
            await client.closed.addTimeout(SOCKET_TIMEOUT, reactor)
            return _parseResponse(b"".join(client.received))[0]

        async def fire(count: int) -> None:
            await waitUntil(lambda: len(pending) == count)
            pending.pop(0)()

        def statuses(client: Collector) -> List[bytes]:
            return re.findall(rb"HTTP/1\.1 (\d{3}) ", b"".join(client.received))

        alice = Collector()
        await connect(self, port, alice)
        send(alice, "s3cret", close=False)
        await fire(1)
        await waitUntil(lambda: statuses(alice) == [b"200"])
        # A check of the address's holds one of its 5 tries: 4 are free.
        holder = await newConnection("wrong0")
        await waitUntil(lambda: len(pending) == 1)
        self.assertEqual(await status(await newConnection("s3cret")), 200)
        self.assertEqual(len(pending), 1)  # passed without a check
        await fire(1)
        self.assertEqual(await status(holder), 407)
        for i in range(1, 4):
            client = await newConnection(f"wrong{i}")
            await fire(1)
            self.assertEqual(await status(client), 407)
        # One try left, held by the guesser's check.
        holder = await newConnection("wrong4")
        await waitUntil(lambda: len(pending) == 1)
        asked = len(started)
        guesses = [await newConnection(password) for password in ("guess0", "s3cret", "guess1")]
        await waitUntil(lambda: len(started) == asked + 3)
        send(alice, "s3cret", close=False)
        await waitUntil(lambda: statuses(alice) == [b"200", b"200"])
        self.assertEqual(len(pending), 1)
        await fire(1)  # wrong: no try is left
        self.assertEqual(await status(holder), 407)
        self.assertEqual([await status(guess) for guess in guesses], [407, 407, 407])
        self.assertEqual(pending, [])  # none of them checked

    async def test_silentFirstAddressFallsBack(self) -> None:
        """
        A name whose first address drops connections (its accept queue is
        full: what IPv6 broken on the way looks like) is reached at its
        second address at once (RFC 8305): it got a 504 at the connect
        timeout, the second address never tried.
        """
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.2", self.originPort))
        silent.listen(0)
        queued = []
        for _ in range(4):  # fill its accept queue: later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.2", self.originPort))
            queued.append(filler)
        self.addCleanup(lambda: [filler.close() for filler in queued])
        resolver = FakeResolver({"dual.test": ["127.0.0.2", "127.0.0.1"]})
        port = await self.startProxy(resolver=resolver, settings=ProxySettings(connectTimeout=6))
        started = time.monotonic()
        data = await self.exchange(port, b"GET http://dual.test:%d/echo HTTP/1.1\r\nHost: x\r\n\r\n" % self.originPort)
        self.assertEqual(_parseResponse(data)[0], 200)
        self.assertLess(time.monotonic() - started, 3)

    async def test_originTakingAnUploadSlowlyIsNotSilent(self) -> None:
        """
        An origin that takes an upload slowly but steadily, all of it
        already written towards it, is not timed out while it takes it: it
        got a 504 "did not answer", 2 MB at 5 KB/s after 60 s.  Here the
        origin takes 100 KB through a 4 KB receive buffer, a read at a
        time, and the proxy's clock (a read timeout of 1 s) moves 0.4 s
        each time the proxy's side holds less: more than two read timeouts
        in all.  No thread and no wall clock decides the outcome: with the
        origin in a thread reading on the wall clock, a starved thread or
        the kernel's zero-window probes (up to 0.8 s apart, measured) left
        a second with nothing taken, and it failed 1 run in 6 to 16 of the
        proxy's modules under load.
        """
        size, readTimeout, step = 100_000, 1.0, 0.4
        clock = Clock()
        origin = _TakingWhenToldFactory()
        listening = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        # Set before any connection, so the window offered stays 4 KB: what
        # the origin has not taken stays on the proxy's side.
        listening.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        port = await self.startProxy(settings=ProxySettings(readTimeout=readTimeout), clock=clock)
        client = await connect(self, port, Collector())
        client.transport.write(
            b"PUT http://127.0.0.1:%d/f HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (listening.getHost().port, size)
            + b"x" * size
        )
        written: Optional[float] = None  # the proxy's time when the body was all written
        seen = 0
        while b"\r\n\r\n" not in b"".join(client.received):
            await deferLater(reactor, 0.001, lambda: None)
            clock.advance(0)  # the proxy's output goes at the end of its pass
            taker = origin.connections[0] if origin.connections else None
            if taker is None or taker.taking or taker.answered:
                continue
            if taker.bodyTaken() == size:
                taker.answer(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                continue
            requests = [request for channel in self.channels() for request in channel.requests]
            upstream = requests[0]._upstream if requests else None
            if upstream is None or not upstream._bodySent:
                taker.takeOne()
                continue
            unsent = unsentBytes(upstream.transport)
            if written is None:
                written = clock.seconds()
            elif unsent < seen:
                clock.advance(step)  # it took more: the proxy's time goes on
            elif unsent:
                continue  # what it read is not yet made up from the proxy's side
            seen = unsent
            taker.takeOne()
        self.assertEqual(_parseResponse(b"".join(client.received))[0], 201, client.received[:1])
        self.assertEqual(origin.connections[0].bodyTaken(), size)
        assert written is not None
        self.assertGreater(clock.seconds() - written, 2 * readTimeout)

    async def test_usersFileChangedWhileRunning(self) -> None:
        """
        A password changed and a user added with C{netsuite-proxy-user}
        while the proxy runs count once the file has been looked at (in a
        thread, as the first request after a second comes) and read again:
        they counted only after a restart, the old password still taken.
        """
        authenticator = self._usersAuthenticator()
        port = await self.startProxy(authenticator=authenticator)
        request = b"GET %s/echo HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"

        async def status(name: str, password: str) -> int:
            credentials = b"Basic " + base64.b64encode(f"{name}:{password}".encode())
            data = await self.exchange(port, request % (self.base.encode(), credentials))
            return _parseResponse(data)[0]

        self.assertEqual(await status("alice", "s3cret"), 200)
        with open(authenticator._path, "w") as f:
            f.write("alice:" + hashPassword("changed", n=1024) + "\n")
            f.write("bob:" + hashPassword("new", n=1024) + "\n")
        await deferLater(reactor, 1.1, lambda: None)
        # This request has the file looked at, and does not wait for it.
        self.assertIn(await status("alice", "s3cret"), (200, 407))
        while authenticator._looking or authenticator._reading:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(
            [await status("alice", "s3cret"), await status("alice", "changed"), await status("bob", "new")],
            [407, 200, 200],
        )

    def _usersAuthenticator(self) -> Authenticator:
        """
        An L{Authenticator} knowing alice (password C{s3cret}), with a quick
        hash.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("alice:" + hashPassword("s3cret", n=1024) + "\n")
        return Authenticator(loadUsers(path), reactor, path=path)

    async def _startAuthenticatingProxy(self, connectPort: int) -> int:
        """
        A proxy that wants alice's credentials and allows CONNECT to
        C{connectPort}; returns its port.
        """
        return await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({connectPort})),
            authenticator=self._usersAuthenticator(),
        )

    def _rawOrigin(self) -> Tuple[_RawOriginFactory, int]:
        """
        A L{_RawOriginFactory} listening on loopback, and its port.
        """
        origin = _RawOriginFactory()
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        return origin, originPort.getHost().port

    async def _originResets(self, tls: bool, request: bytes, answer: bytes) -> None:
        """
        An origin that answers C{request} with C{answer} and then resets
        its connection (TCP RST) resets the client's side too, after what
        came before: over TLS without a close_notify, which would tell the
        client the answer was whole.  (Twisted's TLS makes one as it
        aborts, but the socket drops it unsent.)
        """
        origin, target = self._rawOrigin()
        ca = trustme.CA()
        port = await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})),
            tls=makeServerOptions(self.mktemp(), ca) if tls else None,
        )

        def answerThenReset(conn: _RawOrigin) -> None:
            conn.transport.write(answer)
            # abortConnection closes with SO_LINGER 0: a reset.
            reactor.callLater(0.2, conn.transport.abortConnection)

        origin.waitFor(4).addCallback(answerThenReset)

        def talk() -> tuple[bytes, str]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                if tls:
                    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode("ascii"))
                    raw = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
                raw.sendall(request % (target,))
                received = recvUntil(raw, lambda r: r.endswith(b"hello"))
                try:
                    more = raw.recv(100)
                except ConnectionResetError:
                    return received, "reset"
                except ssl.SSLEOFError:
                    return received, "TCP end without close_notify"
                return received, f"ended with {more!r}"

        received, end = await threads.deferToThread(talk)
        self.assertRegex(received, rb"^HTTP/1\.[01] 200 ")
        self.assertTrue(received.endswith(b"hello"), received[-100:])
        if tls:
            # Python's ssl tells a reset as an end without close_notify:
            # an error either way, where a close_notify is a clean end.
            self.assertIn(end, ("reset", "TCP end without close_notify"))
        else:
            self.assertEqual(end, "reset")

    _CONNECT = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nping"

    async def test_originResetInATunnelResetsTheClient(self) -> None:
        """
        An origin that resets a tunnel resets the client's side too: it got
        a clean end (a FIN), as if the origin had closed.
        """
        await self._originResets(False, self._CONNECT, b"hello")

    async def test_originResetInATunnelResetsTheClientTLS(self) -> None:
        """
        The same on a TLS proxy listener (C{--proxy-tls}), where the client
        got a close_notify.
        """
        await self._originResets(True, self._CONNECT, b"hello")

    async def test_originResetCuttingABodyResetsTheClientTLS(self) -> None:
        """
        A body without a length, which only the end of the connection ends,
        cut by the origin's reset: the HTTP/1.0 client of a TLS proxy
        listener gets a reset, not a close_notify that ends the body as if
        it were whole.
        """
        await self._originResets(
            True, b"GET http://127.0.0.1:%d/ HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nhello"
        )

    async def test_connectWithoutCredentials(self) -> None:
        """
        With a users file, CONNECT without C{Proxy-Authorization} gets a
        complete 407 (framed by its C{Content-Length}) with a Basic
        C{Proxy-Authenticate} challenge, the connection stays usable for the
        next request, and nobody connects to the target; a client that asked
        for C{Connection: close} (or speaks HTTP/1.0) is closed after it.
        """
        origin, target = self._rawOrigin()
        port = await self._startAuthenticatingProxy(target)
        request = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (target, target)

        def twice() -> Tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
                first = _readResponse(s, request)
                return first, _readResponse(s, request)

        first, second = await threads.deferToThread(twice)
        for data in (first, second):
            status, headers, body = _parseResponse(data)
            self.assertEqual(status, 407)
            self.assertTrue(headers[b"proxy-authenticate"].startswith(b'Basic realm="'), headers)
            self.assertEqual(body, b"netsuite proxy: this proxy needs a user name and password\n")
            self.assertNotIn(b"connection", headers)

        closing = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        for other in (closing, request.replace(b"HTTP/1.1", b"HTTP/1.0")):
            data = await threads.deferToThread(_readToClose, port, other)
            status, headers, _ = _parseResponse(data)
            self.assertEqual(status, 407)
            self.assertIn(b"proxy-authenticate", headers)
        self.assertEqual(origin.connections, [])
        self.assertEqual(self.factory.stats.counters.get("tunnels"), None)

    async def test_connectWrongCredentials(self) -> None:
        """
        CONNECT with a wrong password, an unknown user or another scheme
        gets 407; nobody connects to the target.
        """
        origin, target = self._rawOrigin()
        port = await self._startAuthenticatingProxy(target)
        for credentials in (
            b"Basic " + base64.b64encode(b"alice:nope"),
            b"Basic " + base64.b64encode(b"mallory:s3cret"),
            b"Bearer s3cret",
        ):
            data = await self.exchange(
                port,
                b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nProxy-Authorization: %s\r\n\r\n" % (target, credentials),
            )
            status, headers, _ = _parseResponse(data)
            self.assertEqual(status, 407, credentials)
            self.assertIn(b"proxy-authenticate", headers)
        self.assertEqual(origin.connections, [])
        self.assertEqual(self.factory.stats.counters.get("auth_failures"), 3)

    async def test_connectRightCredentialsAfterChallenge(self) -> None:
        """
        As a browser does: CONNECT, 407, then CONNECT with the right
        credentials on the same connection opens the tunnel to a TLS echo;
        the client verifies its certificate through it and bytes go both
        ways.
        """
        ca = trustme.CA()
        directory = self.mktemp()
        os.makedirs(directory)
        echoPort = startTLSListener(self, makeServerOptions(directory, ca))
        port = await self._startAuthenticatingProxy(echoPort)
        cadata = ca.cert_pem.bytes().decode()
        request = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
        right = b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(b"alice:s3cret")
        payload = os.urandom(100_000)

        def talk() -> Tuple[bytes, bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                challenge = _readResponse(raw, request % (echoPort, echoPort, b""))
                answer = _readResponse(raw, request % (echoPort, echoPort, right))
                context = ssl.create_default_context(cadata=cadata)
                with context.wrap_socket(raw, server_hostname="localhost") as conn:
                    conn.sendall(payload)
                    echoed = recvUntil(conn, lambda r: len(r) >= len(payload))
                    return challenge, answer, echoed

        challenge, answer, echoed = await threads.deferToThread(talk)
        self.assertEqual(_parseResponse(challenge)[0], 407)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(echoed, payload)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.factory.stats.counters.get("tunnels"), 1)
        self.assertEqual(self.factory.stats.gauges.get("tunnels_open"), 0)

    async def test_connectCredentialsNotForwarded(self) -> None:
        """
        Through an authenticated tunnel the origin gets exactly the bytes the
        client sends after the CONNECT head: never the CONNECT request or
        its C{Proxy-Authorization}; the origin's bytes reach the client.
        """
        origin, target = self._rawOrigin()
        port = await self._startAuthenticatingProxy(target)
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        client = Collector()
        await connect(self, port, client)
        client.transport.write(
            b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n\r\n"
            % (target, base64.b64encode(b"alice:s3cret"))
        )
        await client.waitFor(len(established)).addTimeout(10, reactor)
        self.assertEqual(b"".join(client.received), established)
        client.transport.write(b"client hello")
        conn = await origin.waitFor(len(b"client hello")).addTimeout(10, reactor)
        conn.transport.write(b"origin hello")
        await client.waitFor(len(established + b"origin hello")).addTimeout(10, reactor)
        self.assertEqual(bytes(conn.received), b"client hello")
        self.assertEqual(b"".join(client.received), established + b"origin hello")
        self.assertEqual(self.channels()[0].requests[0].user, "alice")

    async def test_connectEarlyDataWaitsForCredentials(self) -> None:
        """
        Bytes a client sends right behind an authenticated CONNECT (before
        the 200, while the password is checked in a thread) are held and
        reach the origin first through the tunnel, alone.
        """
        origin, target = self._rawOrigin()
        port = await self._startAuthenticatingProxy(target)
        client = Collector()
        await connect(self, port, client)
        client.transport.write(
            b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n\r\nearly bytes"
            % (target, base64.b64encode(b"alice:s3cret"))
        )
        conn = await origin.waitFor(len(b"early bytes")).addTimeout(10, reactor)
        self.assertEqual(bytes(conn.received), b"early bytes")
        await client.waitFor(1).addTimeout(10, reactor)
        self.assertTrue(b"".join(client.received).startswith(b"HTTP/1.1 200 "))

    async def test_refusedConnection(self) -> None:
        """
        An origin port nobody listens on gives 502 naming it.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
        s.close()
        port = await self.startProxy()
        data = await self.exchange(port, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % (closed,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 502)
        self.assertIn(b"refused", body)

    async def test_originClosesEarly(self) -> None:
        """
        An origin that closes without answering gives 502.
        """
        origin = _RawOriginFactory()
        originPort = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        port = await self.startProxy()

        def closeOnRequest(conn: _RawOrigin) -> None:
            conn.transport.loseConnection()

        origin.waitFor(10).addCallback(closeOnRequest)
        data = await self.exchange(port, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % (originPort.getHost().port,))
        status, _, body = _parseResponse(data)
        self.assertEqual(status, 502)
        self.assertIn(b"closed the connection", body)

    async def test_originResetInCloseDelimitedBody(self) -> None:
        """
        An origin that resets its connection (TCP RST) in the middle of a
        body delimited by the end of the connection: the HTTP/1.1 client
        gets the bytes that came, no last chunk, and its connection closed,
        so it can tell the answer is short.
        """
        origin, target = self._rawOrigin()
        port = await self.startProxy()
        origin.waitFor(10).addCallback(
            lambda conn: conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial body")
        )

        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
                s.sendall(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % (target,))
                received = recvUntil(s, lambda r: b"partial body" in r)
                if b"partial body" not in received:
                    return received
                # abortConnection closes with SO_LINGER 0: a reset.
                reactor.callFromThread(origin.connections[0].transport.abortConnection)
                return recvUntil(s, lambda r: r.endswith(b"0\r\n\r\n"), received)

        received = await threads.deferToThread(fetch)
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", received)
        self.assertIn(b"partial body", received)
        self.assertFalse(received.endswith(b"0\r\n\r\n"), "the cut answer ends like a complete one")
        self.assertEqual(self.factory.stats.counters.get("upstream_failures"), 1)

    async def test_pipelinedRequestsThenHalfClose(self) -> None:
        """
        A client that sends three requests and shuts its sending side at
        once (C{nc -N}) gets three answers, then the proxy closes.
        """
        port = await self.startProxy()
        requests = b"".join(b"GET %s/echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(), n) for n in (1, 2, 3))
        received = await threads.deferToThread(_sendThenHalfClose, port, requests)
        self.assertEqual(received.count(b"HTTP/1.1 200 OK\r\n"), 3, received)
        for n in (1, 2, 3):
            self.assertIn(b'"uri": "/echo?n=%d"' % (n,), received)

    async def test_pipelinedRequestAnsweredHereThenHalfClose(self) -> None:
        """
        A request the proxy answers itself (400: not a proxy request),
        pipelined between two forwarded ones and followed by the end of the
        client's input, does not make the proxy close before the last one
        is answered.
        """
        port = await self.startProxy()
        forwarded = b"GET %s/echo?n=%%d HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(),)
        requests = forwarded % (1,) + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" + forwarded % (3,)
        received = await threads.deferToThread(_sendThenHalfClose, port, requests)
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", received), [b"200", b"400", b"200"], received)
        self.assertIn(b'"uri": "/echo?n=3"', received)

    async def test_notAProxyRequest(self) -> None:
        """
        A request in origin form gets 400 saying this is a proxy; conflicting
        framing headers get 400.
        """
        port = await self.startProxy()
        status, _, body = _parseResponse(await self.exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(status, 400)
        self.assertIn(b"HTTP proxy", body)
        data = await self.exchange(
            port,
            b"POST %s/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n" % (self.base.encode(),),
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "))
        self.assertEqual(self.origin.accepted, 0)

    async def test_duplicateHostRefused(self) -> None:
        """
        Over a real socket, a request with two C{Host} fields gets a 400 and
        its connection closes; nothing reaches the origin (it was forwarded
        with the C{Host} made from its URL, leaving which one counts to
        whoever read it).
        """
        port = await self.startProxy()
        client = Collector()
        await connect(self, port, client)
        client.transport.write(
            b"GET http://127.0.0.1:%d/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" % (self.originPort,)
        )
        try:
            await client.closed.addTimeout(SOCKET_TIMEOUT, reactor)
        except defer.TimeoutError:
            self.fail(f"the connection stayed open after {b''.join(client.received)!r}")
        status, _, body = _parseResponse(b"".join(client.received))
        self.assertEqual(status, 400)
        self.assertIn(b"more than one Host header", body)
        self.assertEqual(self.origin.accepted, 0)

    async def test_obsoleteLineFoldingRefused(self) -> None:
        """
        Over a real socket, a request header continued on the next line
        (obsolete line folding) gets a 400 and the connection closes;
        neither it nor the request pipelined after it reaches the origin
        (a folded header was forwarded joined to the one above).
        """
        port = await self.startProxy()
        base = self.base.encode()
        for folded in (b"Content-Length:\r\n 2", b"X-Long: a\r\n\tcontinued"):
            requests = (
                b"POST %s/echo HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n{}" % (base, folded)
                + b"GET %s/echo HTTP/1.1\r\nHost: x\r\n\r\n" % (base,)
            )
            received = await threads.deferToThread(_readToClose, port, requests)  # fails unless it closes
            self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", received), [b"400"], received)
            self.assertIn(b"obsolete line folding", received)
        self.assertEqual(self.origin.accepted, 0)

    # TLS to the proxy.

    async def test_httpsProxy(self) -> None:
        """
        With TLS, the proxy itself is reached over TLS (an HTTPS proxy).
        """
        ca = trustme.CA()
        directory = self.mktemp()
        os.makedirs(directory)
        port = await self.startProxy(tls=makeServerOptions(directory, ca))
        cadata = ca.cert_pem.bytes().decode()

        def fetch() -> bytes:
            context = ssl.create_default_context(cadata=cadata)
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as conn:
                    conn.sendall(b"GET %s/chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (self.base.encode(),))
                    return recvUntil(conn)

        status, _, body = _parseResponse(await threads.deferToThread(fetch))
        self.assertEqual((status, body), (200, b"one,two,three"))

    async def test_httpsProxyCloseNotifyGetsEveryAnswer(self) -> None:
        """
        Over TLS, a client that sends three requests, then close_notify,
        gets three answers and the proxy's close_notify (the close_notify
        ended the connection with nothing answered).
        """
        ca = trustme.CA()
        port = await self.startProxy(tls=makeServerOptions(self.mktemp(), ca))
        requests = b"".join(b"GET %s/echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (self.base.encode(), n) for n in (1, 2, 3))
        received, how = await threads.deferToThread(closeNotifyClient, port, ca, requests)
        self.assertEqual((received.count(b"HTTP/1.1 200 OK\r\n"), how), (3, "close_notify"), received)
        self.assertIn(b'"uri": "/echo?n=3"', received)

    async def test_httpsProxyCloseNotifyCrossesATunnel(self) -> None:
        """
        Over TLS, a client's close_notify through a C{CONNECT} tunnel is the
        end of its input at the origin, whose answer to it still comes back.
        """
        factory = Factory.forProtocol(_CountThenAnswer)
        originPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        ca = trustme.CA()
        port = await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})), tls=makeServerOptions(self.mktemp(), ca)
        )
        data = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % (target,) + b"x" * 100000
        received, how = await threads.deferToThread(closeNotifyClient, port, ca, data)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:100])
        self.assertTrue(received.endswith(b"got 100000\n"), received[-100:])
        self.assertEqual(how, "close_notify")


    async def _originEndsTunnel(self, tls12: bool) -> Tuple[bytes, str, str, _GreetThenCount]:
        origin = _GreetThenCount()
        originPort = reactor.listenTCP(0, Factory.forProtocol(lambda: origin), interface="127.0.0.1")
        self.addCleanup(originPort.stopListening)
        target = originPort.getHost().port
        ca = trustme.CA()
        port = await self.startProxy(
            ProxyRules(allowLoopback=True, connectPorts=frozenset({target})), tls=makeServerOptions(self.mktemp(), ca)
        )
        received, how, sending = await threads.deferToThread(_tunnelAfterOriginEnd, port, ca, target, tls12, 300_000)
        return received, how, sending, origin

    async def test_httpsProxyTunnelHalfClosedByOrigin(self) -> None:
        """
        Over TLS 1.3, an origin's end of its output reaches the client
        through a tunnel as the proxy's close_notify, and the tunnel stays
        open the other way, as over TCP: what the client sends after it
        reaches the origin whole, then the client's close_notify as the
        end of its input.  It ended the tunnel both ways, and what the
        client sent after was dropped.
        """
        received, how, sending, origin = await self._originEndsTunnel(tls12=False)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:100])
        self.assertTrue(received.endswith(b"\r\n\r\nhello from the origin\n"), received[-100:])
        self.assertEqual((how, sending), ("close_notify", "sent"))
        self.assertEqual(await origin.ended.addTimeout(10, reactor), 300_000)

    async def test_httpsProxyTunnelEndedByOriginOverTLS12(self) -> None:
        """
        Over TLS 1.2, whose close_notify the peer must answer at once
        dropping what it still has to send (RFC 5246 7.2.1), an origin's
        end of its output ends the tunnel both ways, after what it sent.
        """
        received, how, _, origin = await self._originEndsTunnel(tls12=True)
        self.assertTrue(received.endswith(b"\r\n\r\nhello from the origin\n"), received[-100:])
        self.assertEqual(how, "close_notify")
        self.assertEqual(await origin.ended.addTimeout(10, reactor), 0)


class _SlowReader(_CountingInput):
    """
    Reads nothing until told to, then counts bytes until the end of input.
    """

    def __init__(self) -> None:
        _CountingInput.__init__(self)
        self.started: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.started.callback(None)


class ShutWritingTests(TestCase):
    async def test_halfCloseWhileTheProducerIsPaused(self) -> None:
        """
        L{shutWriting} on a TCP transport whose buffer is full, its producer
        paused: the peer gets every byte, then the end, and the producer is
        resumed.  Twisted's C{loseWriteConnection} alone resumed the
        producer when the buffer drained and never shut the writing side (a
        tunnel's origin waited for the client's end for good).
        """
        reader = _SlowReader()
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: reader), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Protocol()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(Factory.forProtocol(lambda: client))
        self.addCleanup(client.transport.abortConnection)
        await reader.started
        producer = RecordingProducer()
        client.transport.registerProducer(producer, True)
        size = 8 * 1024 * 1024
        client.transport.write(b"x" * size)
        self.assertEqual(producer.calls, ["pause"])
        shutWriting(client.transport)
        reader.transport.resumeProducing()
        self.assertEqual(await reader.ended.addTimeout(10, reactor), size)
        self.assertEqual(producer.calls, ["pause", "resume"])
