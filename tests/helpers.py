"""
Helpers for tests over real loopback sockets.
"""

from __future__ import annotations

import codecs
import re
import socket
import time
from typing import Any, Callable

from twisted.internet import abstract, defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer


class Collector(Protocol):
    """
    A client that sends some data and collects what comes back.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.count = 0
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self.waiters: list[tuple[int, defer.Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self.count += len(data)
        for target, d in list(self.waiters):
            if self.count >= target:
                self.waiters.remove((target, d))
                d.callback(None)

    def waitFor(self, count: int) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if self.count >= count:
            d.callback(None)
        else:
            self.waiters.append((count, d))
        return d

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.closed.callback(None)


async def startListener(testCase: TestCase, service) -> int:
    """
    Start a listener service, stopped when C{testCase} ends; return its port.
    """
    service.startService()
    testCase.addCleanup(service.stopService)
    return service.port.getHost().port


async def connect(
    testCase: TestCase,
    port: int,
    protocol: Protocol,
    endpoint: IStreamClientEndpoint | None = None,
) -> Protocol:
    """
    Connect C{protocol} to 127.0.0.1:C{port} (or through C{endpoint}); the
    connection is aborted when C{testCase} ends.
    """
    if endpoint is None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await connectProtocol(endpoint, protocol)
    testCase.addCleanup(abortIfConnected, protocol.transport)
    return protocol


def abortIfConnected(transport: Any) -> None:
    """
    Abort C{transport}'s connection unless it is gone (Twisted's TLS
    transport fails to abort one already lost).
    """
    if getattr(transport, "connected", True):
        transport.abortConnection()


async def waitForQuiet(read: Callable[[], int], interval: float = 0.05, polls: int = 100) -> None:
    """
    Wait until C{read()} stops changing between two polls.
    """
    last = -1
    for _ in range(polls):
        await deferLater(reactor, interval, lambda: None)
        value = read()
        if value == last:
            return
        last = value


def occupiedPort(testCase: TestCase, kind: int = socket.SOCK_STREAM) -> int:
    """
    A loopback port held by another socket until C{testCase} ends.
    """
    taken = socket.socket(socket.AF_INET, kind)
    taken.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        taken.listen()
    testCase.addCleanup(taken.close)
    return taken.getsockname()[1]


def recvUntil(
    conn: socket.socket, done: Callable[[bytes], bool] | None = None, received: bytes = b""
) -> bytes:
    """
    Read from C{conn} (blocking) until C{done} is true of all read so far,
    or the other side closes (with no C{done}: until it closes); return all
    read, after C{received}.
    """
    while done is None or not done(received):
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def rawExchange(port: int, data: bytes, until: int = 1, timeout: float = 5.0) -> bytes:
    """
    Send C{data} on a raw socket and read until C{until} responses ended or
    the server closes (runs in a thread).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recvUntil(s, lambda r: r.count(b"HTTP/1.1 ") >= until and _complete(r, until))


def _complete(received: bytes, count: int) -> bool:
    """
    Whether C{received} holds C{count} complete responses with bodies.
    """
    rest = received
    for _ in range(count):
        if b"\r\n\r\n" not in rest:
            return False
        head, rest = rest.split(b"\r\n\r\n", 1)
        match = re.search(rb"(?i)content-length: (\d+)", head)
        length = int(match.group(1)) if match else 0
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True


def codecSearch(testCase: SynchronousTestCase, answer: Callable[[str], object] = lambda name: None) -> list[str]:
    """
    Register, for the length of C{testCase}, a codec search function that
    answers C{answer(name)}; return the list of the names Python asks it
    for (only names no codec before it knows).
    """
    asked: list[str] = []

    def search(name: str) -> object:
        asked.append(name)
        return answer(name)

    codecs.register(search)
    testCase.addCleanup(codecs.unregister, search)
    return asked


@implementer(IPushProducer)
class RecordingProducer:
    """
    A streaming producer that records what it was told.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class TakingTransport(StringTransport, abstract.FileDescriptor):
    """
    A L{StringTransport} that L{netsuite.limits.unsentBytes} measures as a
    socket's transport: what was written and the peer has not taken yet
    (L{take}), held in the transport.
    """

    @property
    def _tempDataLen(self) -> int:  # type: ignore[override]
        # What heldBytes counts.
        return len(self.io.getvalue())

    def take(self, size: int) -> bytes:
        """
        The peer takes the first C{size} bytes waiting.  Its producer is not
        resumed: a socket's transport resumes it once all is sent.
        """
        data = self.io.getvalue()
        self.clear()
        self.io.write(data[size:])
        return data[:size]


def hostAddress() -> str:
    """
    An IPv4 address of this host that is not loopback (the one it would
    send from off the host; no packet is sent).

    @raise SkipTest: there is none.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("198.51.100.1", 9))
            address: str = probe.getsockname()[0]
    except OSError:
        raise SkipTest("no route off this host: no address but loopback") from None
    if address.startswith("127."):
        raise SkipTest("no address but loopback")
    return address


#: For L{connectInMemory}: a plain connection, not a TLS one.
PLAIN = object()


def connectInMemory(
    factory: Any, alpn: Any = PLAIN, port: int = 40000, disconnects: bool = False
) -> tuple[Any, StringTransport]:
    """
    A new connection of C{factory} (a site, say) to a L{StringTransport}:
    a plain one, or, given C{alpn}, a TLS one where ALPN chose it (L{None}:
    no protocol).

    @param disconnects: whether closing the transport ends the connection
        at once (the protocol's C{connectionLost} is called).
    """
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = StringTransportWithDisconnection() if disconnects else StringTransport()
    if disconnects:
        transport.protocol = protocol
    if alpn is not PLAIN:
        transport.negotiatedProtocol = alpn
    protocol.makeConnection(transport)
    return protocol, transport


async def waitUntil(predicate, timeout: float = 5.0) -> None:
    """
    Poll C{predicate} until it is true.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await deferLater(reactor, 0.01, lambda: None)
