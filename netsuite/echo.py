"""
The echo family: TCP echo (RFC 862), discard (RFC 863), daytime (RFC 867)
and UDP echo.

TCP echo streams: the transport is its own producer, so a peer that stops
reading makes the server stop reading from it instead of buffering.  UDP
echo never answers with more than it was sent, and limits every source (and
all sources together) so that it cannot be used to flood a third party.

Embedding::

    from netsuite.echo import makeEchoService
    makeEchoService("tcp:9007:interface=127.0.0.1").setServiceParent(application)
"""

from __future__ import annotations

import time
from typing import Any


from twisted.internet import main, tcp
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netsuite.limits import BucketTable, IdleTimeout, TokenBucket, hostKey, unsentBytes
from netsuite.listen import (
    DatagramListener,
    StreamListener,
    _reactor,
    limitReceiveBuffer,
    limitSendBuffer,
    plainSocketTransport,
)
from netsuite.stats import ServiceStats

DEFAULT_ECHO = "tcp:8007:interface=127.0.0.1"
DEFAULT_ECHO_UDP = "udp:8007:interface=127.0.0.1"
DEFAULT_DISCARD = "tcp:8009:interface=127.0.0.1"
DEFAULT_DAYTIME = "tcp:8013:interface=127.0.0.1"

#: Seconds a silent TCP echo or discard connection stays open.
DEFAULT_IDLE_TIMEOUT = 300.0

#: Bytes TCP echo reads at once on plain TCP.
DEFAULT_READ_SIZE = 256 * 1024

#: Bytes the system may hold for a TCP echo peer, sent and not yet taken
#: (Linux doubles it); left to the system, it grew to 4 MiB for a peer
#: that does not read.  Chat's 64 KiB halved echo's throughput on
#: loopback; this keeps it.
SEND_BUFFER = 128 * 1024

#: Bytes the system may hold received from a TCP echo or discard peer and
#: not yet read (Linux doubles it): while echo waits for its peer to read,
#: the peer's input waits there, and it grew by the system's tuning (up to
#: net.ipv4.tcp_rmem's largest, 6 MiB by default).
RECEIVE_BUFFER = 128 * 1024


@implementer(IHalfCloseableProtocol)
class _IdleClosing(Protocol):
    """
    A stream protocol closed after C{factory.idleTimeout} seconds without
    input; if it still has not gone another timeout later (a peer that
    neither sends nor reads), it is aborted.

    A peer that takes some of the output waiting for it (in the transport's
    buffer or the kernel's) within a timeout is not idle: TCP echo stops
    reading a peer whose echo waits, so a peer sending on while it reads
    slowly looked silent, and was closed (and reset) in the middle.
    """

    factory: "_StreamFactory"
    log = Logger()
    _idle: IdleTimeout | None = None
    _closing = False
    #: The output waiting at the last look, and the timer started then.
    _lastUnsent: int | None = None
    _lookedWith: IdleTimeout | None = None

    def connectionMade(self) -> None:
        if self.factory.idleTimeout:
            self._idle = IdleTimeout(
                self.factory.clock, self.factory.idleTimeout, self._timedOut
            )

    def _timedOut(self) -> None:
        moving = self._outputMoving()
        if not moving and self._closing:
            self.transport.abortConnection()
            return
        if not moving:
            self.factory.stats.count("idle_timeouts")
            self.log.debug("closing idle connection from {peer}", peer=self.transport.getPeer())
            self.closeGracefully()
        # Look again a timeout later (and abort, once closing, if the peer
        # took nothing of what is left).
        self._idle = self._lookedWith = IdleTimeout(
            self.factory.clock, self.factory.idleTimeout, self._timedOut
        )

    def _outputMoving(self) -> bool:
        """
        Whether the peer took some of the output waiting for it since the
        last look, a timeout ago.  At a first look (none before, or input
        came since) whether output waits: the peer gets one more timeout to
        take some.
        """
        unsent = unsentBytes(self.transport)
        last, self._lastUnsent = self._lastUnsent, unsent
        idle = self._idle
        if last is None or idle is None or idle is not self._lookedWith or idle.last > idle.started:
            return unsent > 0
        return unsent < last  # all taken since counts too

    def closeGracefully(self) -> None:
        """
        Send what is already buffered, then close.
        """
        self._closing = True
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.closeGracefully()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


class Echo(_IdleClosing):
    """
    Sends back every byte it receives (RFC 862), pausing its reads while the
    peer is not reading.

    On plain TCP it reads into its factory's shared buffer and sends straight
    from it when nothing is queued (no allocation, no copy, no reactor turn
    for a chunk the socket takes at once); only what the socket does not take
    is copied into the transport's buffer.  Everywhere else (TLS, UNIX
    sockets) it uses the ordinary Twisted path.
    """

    factory: "EchoFactory"
    _socketTransport: tcp.Server | None = None

    def connectionMade(self) -> None:
        _IdleClosing.connectionMade(self)
        limitSendBuffer(self.transport, SEND_BUFFER)
        limitReceiveBuffer(self.transport, RECEIVE_BUFFER)
        self.transport.registerProducer(self.transport, True)
        raw, _ = plainSocketTransport(self.transport)
        if raw is not None:
            self._socketTransport = raw
            raw.doRead = self._readAndEcho  # type: ignore[method-assign]

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.touch()
        self.transport.write(data)

    def _readAndEcho(self) -> object:
        """
        Stand-in for the TCP transport's C{doRead}: read one chunk and echo
        it, bypassing C{dataReceived} (so this also counts the stats).
        """
        raw = self._socketTransport
        assert raw is not None
        factory = self.factory
        try:
            size = raw.socket.recv_into(factory.readBuffer)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not size:
            return main.CONNECTION_DONE
        if self._idle is not None:
            self._idle.touch()
        factory.stats.bytesIn += size
        factory.stats.bytesOut += size
        chunk = factory.readView[:size]
        if not raw._tempDataLen and raw.offset == len(raw.dataBuffer):
            # Nothing queued, so sending now keeps the order.
            try:
                sent = raw.socket.send(chunk)
            except BlockingIOError:
                sent = 0
            except OSError:
                return main.CONNECTION_LOST
            if sent == size:
                return None
            chunk = chunk[sent:]
        # The transport's buffer pauses this producer once it is full.
        raw.write(bytes(chunk))
        return None

    def _readPlainly(self) -> None:
        """
        Give reads back to the transport (and so to the tracking wrapper,
        which drops what comes during a lingering close).
        """
        raw, self._socketTransport = self._socketTransport, None
        if raw is not None:
            del raw.doRead

    def connectionLost(self, reason: Failure) -> None:
        self._readPlainly()
        _IdleClosing.connectionLost(self, reason)

    def closeGracefully(self) -> None:
        # Nothing more is echoed: what comes now would be written on a
        # socket shut for writing.
        self._readPlainly()
        # A registered producer keeps the connection open; let it flush.
        self.transport.unregisterProducer()
        _IdleClosing.closeGracefully(self)


class Discard(_IdleClosing):
    """
    Reads and drops everything (RFC 863).
    """

    def connectionMade(self) -> None:
        _IdleClosing.connectionMade(self)
        limitReceiveBuffer(self.transport, RECEIVE_BUFFER)

    def dataReceived(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.touch()


class _StreamFactory(Factory):
    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        stats: ServiceStats,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        """
        @param idleTimeout: seconds without input before a connection is
            closed; 0 never closes.
        """
        self.clock = clock
        self.stats = stats
        self.idleTimeout = idleTimeout


class EchoFactory(_StreamFactory):
    """
    Builds L{Echo} protocols.

    @ivar readSize: bytes read at once on plain TCP.  A peer that does not
        read can leave at most this plus Twisted's write-buffer threshold
        (64 KiB) buffered in the server.
    """

    protocol = Echo

    def __init__(
        self,
        clock: IReactorTime,
        stats: ServiceStats,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        readSize: int = DEFAULT_READ_SIZE,
    ) -> None:
        _StreamFactory.__init__(self, clock, stats, idleTimeout)
        self.readSize = readSize
        # One buffer for every connection: each chunk is sent or copied
        # before the next read.
        self.readBuffer = bytearray(readSize)
        self.readView = memoryview(self.readBuffer)


class DiscardFactory(_StreamFactory):
    """
    Builds L{Discard} protocols.
    """

    protocol = Discard


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)


def daytimeLine(seconds: float) -> bytes:
    """
    The RFC 867 line for a POSIX time, in UTC and English whatever the
    locale: C{b"Saturday, November 21, 2026 06:20:17-UTC\\r\\n"}.
    """
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d}, {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}-UTC\r\n"
    ).encode("ascii")


class Daytime(Protocol):
    """
    Sends the current date and time as one line, then closes (RFC 867).
    """

    factory: "DaytimeFactory"
    _abort = None

    def connectionMade(self) -> None:
        clock = self.factory.clock
        # A TLS peer that never finishes its handshake would keep the close
        # from finishing; it gets closeTimeout seconds.
        self._abort = clock.callLater(self.factory.closeTimeout, self.transport.abortConnection)
        self.transport.write(daytimeLine(clock.seconds()))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._abort is not None and self._abort.active():
            self._abort.cancel()


class DaytimeFactory(Factory):
    """
    Builds L{Daytime} protocols.

    @ivar closeTimeout: seconds a connection may take to close before it is
        aborted.
    """

    protocol = Daytime
    noisy = False

    def __init__(self, clock: IReactorTime, closeTimeout: float = 30.0) -> None:
        self.clock = clock
        self.closeTimeout = closeTimeout


class EchoDatagram(DatagramProtocol):
    """
    UDP echo with per-source and overall rate limits.

    A datagram is echoed only if its source has a packet token and enough
    byte tokens left, and the service as a whole has both too; otherwise it
    is dropped and counted.  Datagrams from ports below 1024 are dropped
    unless C{allowPrivilegedPorts}: those are other servers (echo, chargen,
    DNS ...), and answering them is how echo loops and reflection start.
    Datagrams from this service's own port number are dropped too: they
    come from another echo server like this one (or are forged to look
    like this one's own), and answering would start a loop.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        stats: ServiceStats,
        *,
        rate: float = 100.0,
        bandwidth: float = 1024 * 1024,
        totalRate: float = 1000.0,
        totalBandwidth: float = 8 * 1024 * 1024,
        maxSources: int = 4096,
        allowPrivilegedPorts: bool = False,
    ) -> None:
        """
        @param rate: datagrams a second per source host (burst twice that,
            and at least one datagram, so that a rate below one every two
            seconds still answers).
        @param bandwidth: bytes a second per source host (burst at least
            one maximum-size datagram).
        @param totalRate: datagrams a second for all sources together
            (burst twice that, at least one).
        @param totalBandwidth: bytes a second for all sources together.
        @param maxSources: source hosts remembered at once (least recently
            seen forgotten first).
        """
        self.stats = stats
        self.allowPrivilegedPorts = allowPrivilegedPorts
        self._packets: BucketTable[str] = BucketTable(rate, max(2 * rate, 1.0), clock, maxSources)
        self._bytes: BucketTable[str] = BucketTable(
            bandwidth, max(bandwidth, 65536), clock, maxSources
        )
        self._totalPackets = TokenBucket(totalRate, max(2 * totalRate, 1.0), clock)
        self._totalBytes = TokenBucket(totalBandwidth, max(totalBandwidth, 65536), clock)
        self._ownPort: int | None = None

    def startProtocol(self) -> None:
        self._ownPort = self.transport.getHost().port

    def datagramReceived(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        stats = self.stats
        size = len(data)
        stats.bytesIn += size
        stats.count("datagrams_in")
        host, port = addr[0], addr[1]
        source = hostKey(host)
        if port < 1024 and not self.allowPrivilegedPorts:
            stats.count("dropped_privileged_port")
            return
        if port == self._ownPort:
            stats.count("dropped_loop")
            return
        if not (
            self._packets.take(source)
            and self._bytes.take(source, size)
            and self._totalPackets.take()
            and self._totalBytes.take(size)
        ):
            stats.count("dropped_rate_limited")
            return
        try:
            self.transport.write(data, addr)
        except OSError as e:
            stats.countError("send_errors")
            self.log.debug("cannot echo to {addr}: {e}", addr=addr, e=e)
            return
        stats.bytesOut += size
        stats.count("datagrams_out")


def makeEchoService(
    endpoint: str = DEFAULT_ECHO,
    reactor: object | None = None,
    *,
    stats: ServiceStats | None = None,
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
    readSize: int = DEFAULT_READ_SIZE,
    **listening: Any,
) -> StreamListener:
    """
    A service running TCP echo on C{endpoint} (a Twisted endpoint string).

    @param stats: where to count; shared by listeners of the same service.
    @param idleTimeout: seconds without input before a connection is closed.
    @param readSize: bytes read at once (see L{EchoFactory}).
    @param listening: keyword arguments of L{StreamListener}: C{tls} (serve
        TLS with these options, see L{netsuite.tls}), C{grace} (seconds open
        connections get to finish when stopping), C{maxConnections},
        C{maxPerHost}, C{handshakeTimeout} (seconds a TLS client gets to
        finish its handshake), C{lingerTime} and C{lingerTimeout} (how long
        a connection the service closed is read on for the peer's close).
    """
    reactor = _reactor(reactor)
    stats = stats if stats is not None else ServiceStats("echo")
    factory = EchoFactory(reactor, stats, idleTimeout, readSize)  # type: ignore[arg-type]
    return StreamListener("echo", endpoint, factory, reactor=reactor, stats=stats, **listening)


def makeDiscardService(
    endpoint: str = DEFAULT_DISCARD,
    reactor: object | None = None,
    *,
    stats: ServiceStats | None = None,
    idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
    **listening: Any,
) -> StreamListener:
    """
    A service running TCP discard on C{endpoint}; see L{makeEchoService}.
    """
    reactor = _reactor(reactor)
    stats = stats if stats is not None else ServiceStats("discard")
    factory = DiscardFactory(reactor, stats, idleTimeout)  # type: ignore[arg-type]
    return StreamListener("discard", endpoint, factory, reactor=reactor, stats=stats, **listening)


def makeDaytimeService(
    endpoint: str = DEFAULT_DAYTIME,
    reactor: object | None = None,
    *,
    stats: ServiceStats | None = None,
    **listening: Any,
) -> StreamListener:
    """
    A service running daytime on C{endpoint}; see L{makeEchoService}.
    """
    reactor = _reactor(reactor)
    factory = DaytimeFactory(reactor)  # type: ignore[arg-type]
    return StreamListener("daytime", endpoint, factory, reactor=reactor, stats=stats, **listening)


def makeEchoUDPService(
    endpoint: str = DEFAULT_ECHO_UDP,
    reactor: object | None = None,
    *,
    stats: ServiceStats | None = None,
    **limits: float,
) -> DatagramListener:
    """
    A service running UDP echo on C{endpoint} (C{udp:PORT[:interface=ADDR]}).

    @param limits: keyword arguments of L{EchoDatagram} (C{rate},
        C{bandwidth}, C{totalRate}, C{totalBandwidth}, C{maxSources},
        C{allowPrivilegedPorts}).
    """
    reactor = _reactor(reactor)
    stats = stats if stats is not None else ServiceStats("echo-udp")
    protocol = EchoDatagram(reactor, stats, **limits)  # type: ignore[arg-type]
    return DatagramListener("echo-udp", endpoint, protocol, reactor=reactor)
