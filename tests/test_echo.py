"""
Tests for L{netsuite.echo}: in memory for the protocols, over real loopback
sockets for streaming, backpressure, UDP and daytime.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import fcntl
import socket
import struct
import sys
import tempfile
import termios
import threading
import time
from typing import Tuple

from twisted.internet import reactor, threads
import trustme
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from netsuite.echo import (
    RECEIVE_BUFFER,
    SEND_BUFFER,
    DaytimeFactory,
    DiscardFactory,
    EchoDatagram,
    EchoFactory,
    daytimeLine,
    makeDaytimeService,
    makeDiscardService,
    makeEchoService,
    makeEchoUDPService,
)
from netsuite.limits import descriptorOf
from netsuite.stats import ServiceStats
from netsuite.tls import loadPEM, serverOptions
from tests.tlshelpers import closeNotifyClient, trustRootOf, writeLeaf
from tests.helpers import Collector, connect, connectInMemory, startListener, waitForQuiet


class EchoProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = ServiceStats("echo")
        self.factory = EchoFactory(self.clock, self.stats, idleTimeout=300)

    def test_echoesBytes(self) -> None:
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        protocol.dataReceived(b"hello\r\n")
        protocol.dataReceived(b"\x00\xffbinary")
        self.assertEqual(transport.value(), b"hello\r\n\x00\xffbinary")

    def test_transportIsItsOwnProducer(self) -> None:
        """
        The echo registers its transport as a streaming producer, so a full
        write buffer pauses reading.
        """
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        self.assertIs(transport.producer, transport)
        self.assertTrue(transport.streaming)

    def test_idleTimeoutClosesSilentConnection(self) -> None:
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        self.clock.advance(299)
        self.assertTrue(transport.connected)
        self.clock.advance(1)
        self.assertFalse(transport.connected)
        self.assertEqual(self.stats.counters["idle_timeouts"], 1)

    def test_inputPostponesIdleTimeout(self) -> None:
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        self.clock.advance(200)
        protocol.dataReceived(b"x")
        self.clock.advance(200)
        self.assertTrue(transport.connected)
        self.clock.advance(100)
        self.assertFalse(transport.connected)

    def test_zeroIdleTimeoutNeverCloses(self) -> None:
        factory = EchoFactory(self.clock, self.stats, idleTimeout=0)
        protocol, transport = connectInMemory(factory, disconnects=True)
        self.clock.advance(10**6)
        self.assertTrue(transport.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutUnregistersProducerSoCloseCanFinish(self) -> None:
        """
        A registered producer would keep the connection open forever; the
        idle close unregisters it first.
        """
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        self.clock.advance(300)
        self.assertIsNone(transport.producer)

    def test_peerThatNeverTakesItsDataIsAborted(self) -> None:
        """
        If the close cannot finish (the peer neither sends nor reads), the
        connection is aborted one more timeout later.
        """
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.clock.advance(300)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.clock.advance(300)
        self.assertTrue(transport.disconnected)  # abortConnection

    def test_halfCloseFlushesThenCloses(self) -> None:
        """
        When the peer shuts down its sending side, what was echoed is still
        delivered and then the connection closes.
        """
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"last words")
        self.assertFalse(transport.connected)
        self.assertIsNone(transport.producer)

    def test_connectionLostCancelsTimer(self) -> None:
        protocol, transport = connectInMemory(self.factory, disconnects=True)
        transport.loseConnection()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DiscardAndDaytimeTests(SynchronousTestCase):
    def test_discardSendsNothing(self) -> None:
        clock = Clock()
        protocol, transport = connectInMemory(DiscardFactory(clock, ServiceStats("d"), 10), disconnects=True)
        protocol.dataReceived(b"x" * 1000)
        self.assertEqual(transport.value(), b"")
        clock.advance(10)
        self.assertFalse(transport.connected)

    def test_daytimeLineFormat(self) -> None:
        """
        The line is RFC 867 style, in UTC, in English.
        """
        # 2026-11-21 06:20:17 UTC was a Saturday.
        self.assertEqual(
            daytimeLine(1795242017),
            b"Saturday, November 21, 2026 06:20:17-UTC\r\n",
        )
        self.assertEqual(daytimeLine(0), b"Thursday, January 01, 1970 00:00:00-UTC\r\n")

    def test_daytimeSendsLineAndCloses(self) -> None:
        clock = Clock()
        clock.advance(86400)
        protocol, transport = connectInMemory(DaytimeFactory(clock), disconnects=True)
        self.assertEqual(transport.value(), daytimeLine(86400))
        self.assertFalse(transport.connected)


    def test_daytimePeerThatNeverLetsGoIsAborted(self) -> None:
        """
        A peer that keeps the close from finishing (e.g. a TLS client that
        never completes its handshake) is aborted after C{closeTimeout}.
        """
        clock = Clock()
        protocol = DaytimeFactory(clock, closeTimeout=30).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        clock.advance(29)
        self.assertFalse(transport.disconnected)
        clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_daytimeCloseCancelsAbort(self) -> None:
        clock = Clock()
        connectInMemory(DaytimeFactory(clock), disconnects=True)
        self.assertEqual(clock.getDelayedCalls(), [])


class FakeUDPTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    host: IPv4Address | None = None

    def write(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> IPv4Address | None:
        return self.host


class EchoDatagramTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = ServiceStats("echo-udp")

    def makeProtocol(self, **limits) -> tuple[EchoDatagram, FakeUDPTransport]:
        protocol = EchoDatagram(self.clock, self.stats, **limits)
        transport = FakeUDPTransport()
        protocol.transport = transport
        return protocol, transport

    def test_echoesToSender(self) -> None:
        protocol, transport = self.makeProtocol()
        protocol.datagramReceived(b"ping", ("10.0.0.1", 40000))
        self.assertEqual(transport.sent, [(b"ping", ("10.0.0.1", 40000))])
        self.assertEqual(self.stats.bytesOut, 4)

    def test_largestDatagramEchoedIntact(self) -> None:
        data = os.urandom(65507)
        protocol, transport = self.makeProtocol()
        protocol.datagramReceived(data, ("10.0.0.1", 40000))
        self.assertEqual(transport.sent, [(data, ("10.0.0.1", 40000))])

    def test_privilegedSourcePortDropped(self) -> None:
        """
        Datagrams from ports below 1024 (echo, chargen, DNS ...) are not
        answered: that is how echo loops and reflection start.
        """
        protocol, transport = self.makeProtocol()
        protocol.datagramReceived(b"x", ("10.0.0.1", 7))
        protocol.datagramReceived(b"x", ("10.0.0.1", 19))
        self.assertEqual(transport.sent, [])
        self.assertEqual(self.stats.counters["dropped_privileged_port"], 2)
        protocol.allowPrivilegedPorts = True
        protocol.datagramReceived(b"x", ("10.0.0.1", 7))
        self.assertEqual(len(transport.sent), 1)

    def test_ownPortDropped(self) -> None:
        """
        A datagram from the service's own port number comes from another
        echo server on that port, or is forged to look like this one's own:
        answering it would start a loop.
        """
        protocol, transport = self.makeProtocol()
        transport.host = IPv4Address("UDP", "127.0.0.1", 8007)
        protocol.startProtocol()
        protocol.datagramReceived(b"x", ("10.0.0.2", 8007))
        protocol.datagramReceived(b"x", ("127.0.0.1", 8007))
        self.assertEqual(transport.sent, [])
        self.assertEqual(self.stats.counters["dropped_loop"], 2)
        protocol.datagramReceived(b"x", ("10.0.0.2", 8008))
        self.assertEqual(transport.sent, [(b"x", ("10.0.0.2", 8008))])

    def test_rateLimitCountsAnIPv6SourceByItsSlash64(self) -> None:
        protocol, transport = self.makeProtocol(rate=10)
        for index in range(50):
            protocol.datagramReceived(b"x", (f"2001:db8::{index + 1:x}", 40000, 0, 0))
        self.assertEqual(len(transport.sent), 20)
        protocol.datagramReceived(b"x", ("2001:db8:0:1::1", 40000, 0, 0))
        self.assertEqual(len(transport.sent), 21)

    def test_perSourceRateLimit(self) -> None:
        """
        One source gets at most its burst (twice the rate) at once, then the
        rate; another source is not affected.
        """
        protocol, transport = self.makeProtocol(rate=10)
        for _ in range(50):
            protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
        self.assertEqual(len(transport.sent), 20)
        self.assertEqual(self.stats.counters["dropped_rate_limited"], 30)
        protocol.datagramReceived(b"x", ("10.0.0.2", 40000))
        self.assertEqual(len(transport.sent), 21)
        self.clock.advance(1)
        for _ in range(50):
            protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
        self.assertEqual(len(transport.sent), 31)

    def test_slowRatesStillAnswer(self) -> None:
        """
        A rate below one datagram every two seconds (per source, or for all
        sources) answers one datagram at a time at that rate (its burst,
        twice the rate, was less than one datagram: nothing was answered).
        """
        for limits in ({"rate": 0.4}, {"totalRate": 0.4}):
            protocol, transport = self.makeProtocol(**limits)
            protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
            protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
            self.assertEqual(len(transport.sent), 1, limits)
            self.clock.advance(2)
            protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
            self.assertEqual(len(transport.sent), 1, limits)
            self.clock.advance(0.5)
            protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
            self.assertEqual(len(transport.sent), 2, limits)

    def test_perSourceBandwidthLimit(self) -> None:
        protocol, transport = self.makeProtocol(bandwidth=100000)
        for _ in range(5):
            protocol.datagramReceived(b"x" * 40000, ("10.0.0.1", 40000))
        # Burst is max(bandwidth, 64 KiB) = 100000 bytes: two datagrams.
        self.assertEqual(len(transport.sent), 2)

    def test_totalLimitHoldsAgainstManySources(self) -> None:
        """
        Spoofed sources each have a fresh bucket, but all of them together
        are held to the total rate.
        """
        protocol, transport = self.makeProtocol(totalRate=50, maxSources=16)
        for i in range(1000):
            protocol.datagramReceived(b"x", (f"10.0.{i // 256}.{i % 256}", 40000))
        self.assertEqual(len(transport.sent), 100)

    def test_sendErrorIsCounted(self) -> None:
        protocol, transport = self.makeProtocol()

        def fail(data, addr):
            raise OSError(105, "No buffer space available")

        transport.write = fail
        protocol.datagramReceived(b"x", ("10.0.0.1", 40000))
        self.assertEqual(self.stats.errors, 1)
        self.assertEqual(self.stats.bytesOut, 0)


class EchoSocketTests(TestCase):
    """
    TCP echo over real loopback sockets.
    """

    async def test_tenMebibyteRoundTripByteExact(self) -> None:
        port = await startListener(self, makeEchoService("tcp:0:interface=127.0.0.1"))
        data = os.urandom(10 * 1024 * 1024)
        client = await connect(self, port, Collector())
        client.transport.write(data)
        await client.waitFor(len(data))
        got = b"".join(client.received)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())

    async def test_slowReaderDoesNotGrowServerBuffer(self) -> None:
        """
        A client that sends 32 MiB but does not read makes the server stop
        reading: it takes in only what the kernel buffers and its own bounded
        write buffer hold.  When the client reads again, every byte arrives.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1")
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        client.transport.pauseProducing()  # stop reading
        size = 32 * 1024 * 1024
        data = os.urandom(size)
        client.transport.write(data)
        await waitForQuiet(lambda: service.stats.bytesIn)
        wrapper = next(iter(service.tracker.protocols))
        serverTransport = wrapper.transport
        self.assertIs(wrapper.wrappedProtocol._socketTransport, serverTransport)
        buffered = len(serverTransport.dataBuffer) + serverTransport._tempDataLen
        # The write buffer is bounded by Twisted's threshold plus one read.
        readSize = service.tracker.wrappedFactory.readSize
        self.assertLessEqual(buffered, serverTransport.bufferSize + readSize)
        self.assertTrue(serverTransport.producerPaused)
        # Kernel socket buffers hold a few MiB at most; the rest waits in the
        # client, not in the server.
        self.assertLess(service.stats.bytesIn, size // 2)
        client.transport.resumeProducing()
        await client.waitFor(size)
        self.assertEqual(b"".join(client.received), data)

    async def test_slowReaderTakingItsEchoIsNotIdle(self) -> None:
        """
        A client that goes on sending while reading slowly is not idle,
        though the server stops reading it while its echo waits: it gets
        every byte back (it was closed as idle and reset).
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", idleTimeout=0.3)
        port = await startListener(self, service)
        data = os.urandom(1536 * 1024)

        def slowClient() -> bytes:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                s.settimeout(30)
                s.connect(("127.0.0.1", port))
                sender = threading.Thread(target=s.sendall, args=(data,))
                sender.start()
                received = bytearray()
                try:
                    while len(received) < len(data):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        received += chunk
                        time.sleep(0.01)
                except ConnectionError:
                    pass
                sender.join()
                return bytes(received)

        got = await threads.deferToThread(slowClient)
        self.assertEqual(len(got), len(data))
        self.assertEqual(got, data)
        self.assertNotIn("idle_timeouts", service.stats.counters)

    async def test_idleCloseLingers(self) -> None:
        """
        Over plain TCP, what a client sends after an idle close is read and
        dropped until it closes too (as over TLS, and for every other
        service): it was echoed on a socket already shut for writing, the
        connection ended at once, and the client's next bytes got a reset.
        """
        for make in (makeEchoService, makeDiscardService):
            # (One more timeout without output taken, and it is aborted.)
            service = make("tcp:0:interface=127.0.0.1", idleTimeout=1.0)
            port = await startListener(self, service)

            def client() -> Tuple[bytes, bytes]:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    first = s.recv(100)  # the server's end of output, once idle
                    s.sendall(b"late")
                    time.sleep(0.1)
                    s.sendall(b"later")
                    time.sleep(0.1)
                    s.shutdown(socket.SHUT_WR)
                    return first, s.recv(100)

            first, last = await threads.deferToThread(client)
            self.assertEqual((first, last), (b"", b""))
            await waitForQuiet(lambda: len(service.tracker.protocols))
            self.assertEqual(len(service.tracker.protocols), 0)
            self.assertEqual(service.stats.errors, 0)
            self.assertEqual(service.stats.bytesOut, 0)

    async def test_peerTakingNothingStillCutOff(self) -> None:
        """
        A client that sends but never reads is still closed as idle, and
        aborted when it takes nothing of what is left: within three
        timeouts.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", idleTimeout=0.3)
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        client.transport.pauseProducing()  # never reads
        client.transport.write(os.urandom(8 * 1024 * 1024))
        started = time.monotonic()
        # The client, reading nothing, may not notice: the server does.
        while service.stats.connectionsOpen and time.monotonic() - started < 10:
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(service.stats.connectionsOpen, 0)
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(service.stats.counters["idle_timeouts"], 1)
        client.transport.abortConnection()

    async def test_smallReadSizeStillByteExact(self) -> None:
        """
        Chunks larger than the read size, and a socket that takes only part
        of a chunk, still come back whole and in order.
        """
        port = await startListener(
            self, makeEchoService("tcp:0:interface=127.0.0.1", readSize=1000)
        )
        data = os.urandom(3 * 1024 * 1024 + 7)
        client = await connect(self, port, Collector())
        client.transport.write(data)
        await client.waitFor(len(data))
        self.assertEqual(b"".join(client.received), data)

    async def test_unixSocketUsesOrdinaryPath(self) -> None:
        """
        Echo over a UNIX socket (not plain TCP) takes Twisted's ordinary
        path and is byte-exact too.
        """
        # A short path: a clone in a deep folder made the test's own
        # temporary path longer than AF_UNIX takes (108 bytes).
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "echo.sock")
        service = makeEchoService(f"unix:{path}")
        service.startService()
        self.addCleanup(service.stopService)
        client = Collector()
        await connectProtocol(UNIXClientEndpoint(reactor, path), client)
        self.addCleanup(client.transport.abortConnection)
        data = os.urandom(1024 * 1024)
        client.transport.write(data)
        await client.waitFor(len(data))
        self.assertEqual(b"".join(client.received), data)
        wrapper = next(iter(service.tracker.protocols))
        self.assertIsNone(wrapper.wrappedProtocol._socketTransport)

    async def test_statsCountConnectionsAndBytes(self) -> None:
        service = makeEchoService("tcp:0:interface=127.0.0.1")
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        client.transport.write(b"12345")
        await client.waitFor(5)
        self.assertEqual(service.stats.connectionsOpen, 1)
        self.assertEqual(service.stats.connectionsTotal, 1)
        self.assertEqual((service.stats.bytesIn, service.stats.bytesOut), (5, 5))
        client.transport.loseConnection()
        await client.closed
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(service.stats.connectionsOpen, 0)

    async def test_halfCloseGetsEverythingBack(self) -> None:
        """
        A client that sends, shuts down its sending side and reads until the
        server closes gets all of its bytes back.
        """
        port = await startListener(self, makeEchoService("tcp:0:interface=127.0.0.1"))
        client = await connect(self, port, Collector())
        data = os.urandom(4 * 1024 * 1024)
        client.transport.write(data)
        client.transport.loseWriteConnection()
        await client.closed
        self.assertEqual(b"".join(client.received), data)

    async def test_stopClosesOpenConnections(self) -> None:
        """
        Stopping the service stops listening and closes its connections.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", grace=2)
        service.startService()
        port = service.port.getHost().port
        client = await connect(self, port, Collector())
        client.transport.write(b"x")
        await client.waitFor(1)
        await service.stopService()
        await client.closed
        self.assertIsInstance(client.reason, Failure)
        self.assertEqual(service.stats.connectionsOpen, 0)
        refused = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
        with self.assertRaises(Exception):
            await refused

    async def test_stopAbortsConnectionsThatDoNotClose(self) -> None:
        """
        A client that never reads cannot hold the stop longer than the grace
        period: its connection is aborted.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", grace=0.5)
        service.startService()
        client = await connect(self, service.port.getHost().port, Collector())
        client.transport.pauseProducing()
        client.transport.write(os.urandom(16 * 1024 * 1024))
        await deferLater(reactor, 0.3, lambda: None)
        started = time.monotonic()
        await service.stopService()
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(service.stats.connectionsOpen, 0)


class Datagrams(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr) -> None:
        self.received.append(data)


class UDPSocketTests(TestCase):
    async def startUDP(self, **limits) -> tuple[int, Datagrams, object]:
        service = makeEchoUDPService("udp:0:interface=127.0.0.1", **limits)
        service.startService()
        self.addCleanup(service.stopService)
        client = Datagrams()
        clientPort = reactor.listenUDP(0, client, interface="127.0.0.1", maxPacketSize=65535)
        self.addCleanup(clientPort.stopListening)
        return service.port.getHost().port, client, service

    async def waitForDatagrams(self, client: Datagrams, count: int) -> None:
        for _ in range(100):
            if len(client.received) >= count:
                return
            await deferLater(reactor, 0.02, lambda: None)

    async def test_datagramsUpTo64KiBEchoIntact(self) -> None:
        port, client, _ = await self.startUDP()
        payloads = [b"ping", os.urandom(1400), os.urandom(65507)]
        for payload in payloads:
            client.transport.write(payload, ("127.0.0.1", port))
        await self.waitForDatagrams(client, 3)
        self.assertEqual(sorted(client.received, key=len), payloads)

    async def test_rateLimitOverRealSocket(self) -> None:
        """
        A burst of 100 datagrams from one source gets only the burst
        allowance (twice the rate) back.
        """
        port, client, service = await self.startUDP(rate=10)
        for i in range(100):
            client.transport.write(b"%d" % i, ("127.0.0.1", port))
        await self.waitForDatagrams(client, 100)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(client.received), 20)
        self.assertEqual(service.protocol.stats.counters["dropped_rate_limited"], 80)

    async def test_twoEchoServersOnOnePortDoNotLoop(self) -> None:
        """
        Two netsuites on one port number (two hosts on their default port),
        and one datagram forged to come from the first: the second drops it
        instead of starting a loop that runs until the rate limits bite.
        """
        first = makeEchoUDPService("udp:0:interface=127.0.0.1")
        first.startService()
        self.addCleanup(first.stopService)
        port = first.port.getHost().port
        second = makeEchoUDPService(f"udp:{port}:interface=127.0.0.2")
        try:
            second.startService()
        except Exception as e:
            raise SkipTest(f"cannot listen on 127.0.0.2: {e}")
        self.addCleanup(second.stopService)
        first.port.write(b"forged", ("127.0.0.2", port))
        await deferLater(reactor, 0.3, lambda: None)
        counters = second.protocol.stats.counters
        self.assertEqual(counters["dropped_loop"], 1)
        self.assertEqual(counters.get("datagrams_out", 0), 0)
        self.assertEqual(first.protocol.stats.counters.get("datagrams_in", 0), 0)


class DaytimeSocketTests(TestCase):
    async def test_daytimeSendsCurrentTimeAndCloses(self) -> None:
        port = await startListener(self, makeDaytimeService("tcp:0:interface=127.0.0.1"))
        client = await connect(self, port, Collector())
        await client.closed
        line = b"".join(client.received)
        match = re.fullmatch(
            rb"(\w+), (\w+) (\d\d), (\d{4}) (\d\d):(\d\d):(\d\d)-UTC\r\n", line
        )
        self.assertIsNotNone(match, line)
        sent = time.strptime(line.decode()[:-6], "%A, %B %d, %Y %H:%M:%S")
        self.assertLess(abs(time.mktime(sent) - time.mktime(time.gmtime())), 5)


class TLSBackpressureTests(TestCase):
    async def test_slowTLSReaderDoesNotGrowServerBuffer(self) -> None:
        """
        Over TLS too, a client that does not read makes the server stop
        reading, and gets everything once it reads again.
        """
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        service = makeEchoService(
            "tcp:0:interface=127.0.0.1", tls=serverOptions(*loadPEM(certPath, keyPath))
        )
        port = await startListener(self, service)
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=trustRootOf(ca)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        client = await connect(self, port, Collector(), endpoint)
        client.transport.pauseProducing()
        size = 32 * 1024 * 1024
        data = os.urandom(size)
        client.transport.write(data)
        await waitForQuiet(lambda: service.stats.bytesIn)
        wrapper = next(iter(service.tracker.protocols))
        self.assertIsNone(wrapper.wrappedProtocol._socketTransport)  # TLS: ordinary path
        self.assertLess(service.stats.bytesIn, size // 2)
        client.transport.resumeProducing()
        await client.waitFor(size)
        self.assertEqual(b"".join(client.received), data)



def kernelQueues(transport: object) -> Tuple[int, int, int]:
    """
    What the system holds for the TCP connection under C{transport} (on
    the server's side): bytes received and not read, bytes sent and not
    taken, and the size of its receive buffer.
    """
    if not sys.platform.startswith("linux"):
        raise SkipTest("the queues are read with Linux's ioctls")
    sock = descriptorOf(transport).socket
    inq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    outq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return inq, outq, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class KernelBufferTests(TestCase):
    """
    What the system holds for a peer, beyond what echo holds itself.
    """

    async def floodWithoutReading(self, tls: bool) -> Tuple[int, int, int]:
        """
        Have a client send 32 MiB to echo (over TLS if C{tls}) without
        reading; what the system holds for it once the server has stopped
        reading it.
        """
        options, endpoint = None, None
        if tls:
            ca = trustme.CA()
            options = serverOptions(*loadPEM(*writeLeaf(self.mktemp(), ca.issue_cert("localhost"))))
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=options)
        port = await startListener(self, service)
        if tls:
            endpoint = wrapClientTLS(
                optionsForClientTLS("localhost", trustRoot=trustRootOf(ca)),
                TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            )
        client = await connect(self, port, Collector(), endpoint)
        client.transport.write(b"x")
        await client.waitFor(1)  # (over TLS, the handshake is done)
        client.transport.pauseProducing()
        client.transport.write(b"x" * (32 * 1024 * 1024))
        await waitForQuiet(lambda: service.stats.bytesIn)
        queues = kernelQueues(next(iter(service.tracker.protocols)).transport)
        client.transport.abortConnection()
        return queues

    def assertBounded(self, queues: Tuple[int, int, int]) -> None:
        inq, outq, rcvbuf = queues
        self.assertLessEqual(outq, 2 * SEND_BUFFER)
        self.assertLessEqual(inq, 2 * RECEIVE_BUFFER)
        self.assertLessEqual(rcvbuf, 2 * RECEIVE_BUFFER)

    async def test_echoPeerThatDoesNotRead(self) -> None:
        """
        For an echo peer that sends and does not read, the system holds at
        most about 2 x L{SEND_BUFFER} of echo and 2 x L{RECEIVE_BUFFER} of
        input: left to tune itself, it held 4 MiB of echo and up to 2 MB
        of input a connection (20 such clients: 97 MB).
        """
        self.assertBounded(await self.floodWithoutReading(tls=False))

    async def test_tlsEchoPeerThatDoesNotRead(self) -> None:
        """
        The same over TLS.
        """
        self.assertBounded(await self.floodWithoutReading(tls=True))

    async def test_discardReceiveBuffer(self) -> None:
        """
        Discard's receive buffer stays at L{RECEIVE_BUFFER} (Linux: twice
        that) however fast its peer sends, where the system tuned it (to 0.6
        to 1.3 MB over 32 MiB, measured): what waits there while the server
        is busy is bounded.
        """
        service = makeDiscardService("tcp:0:interface=127.0.0.1")
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        size = 32 * 1024 * 1024
        client.transport.write(b"d" * size)
        while service.stats.bytesIn < size:
            await deferLater(reactor, 0.01, lambda: None)
        inq, outq, rcvbuf = kernelQueues(next(iter(service.tracker.protocols)).transport)
        self.assertEqual(rcvbuf, 2 * RECEIVE_BUFFER)


class TLSHalfCloseTests(TestCase):
    """
    Over TLS a client's close_notify is the end of its input, as a TCP
    half-close is: it still gets everything back, then netsuite's own
    close_notify.
    """

    async def startEcho(self) -> Tuple[int, trustme.CA]:
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        self.service = makeEchoService("tcp:0:interface=127.0.0.1", tls=serverOptions(*loadPEM(certPath, keyPath)))
        return await startListener(self, self.service), ca

    async def test_closeNotifyGetsEverythingBack(self) -> None:
        """
        A client that sends 4 MiB, then close_notify, and reads on gets all
        4 MiB back and the server's close_notify (it lost what was not yet
        echoed: the close_notify ended the connection).  The last 16 KiB
        and the close_notify reach the server in one read, so their echo is
        still to be sent when the close_notify is read.
        """
        port, ca = await self.startEcho()
        data = os.urandom(4 * 1024 * 1024)
        received, how = await threads.deferToThread(closeNotifyClient, port, ca, data, echoedBeforeEnd=16 * 1024)
        self.assertEqual((len(received), how), (len(data), "close_notify"))
        self.assertEqual(received, data)
        await waitForQuiet(lambda: self.service.stats.connectionsOpen)
        self.assertEqual(self.service.stats.connectionsOpen, 0)

    async def test_closeNotifyThenTCPShutdown(self) -> None:
        """
        A client that also shuts the sending side of its socket after the
        close_notify gets everything back too: that end of TCP input then
        changes nothing.
        """
        port, ca = await self.startEcho()
        data = os.urandom(1024 * 1024)
        received, how = await threads.deferToThread(
            closeNotifyClient, port, ca, data, shutDownTCP=True, echoedBeforeEnd=16 * 1024
        )
        self.assertEqual((received == data, how), (True, "close_notify"))

    async def test_endOfTCPWithoutCloseNotifyEndsTheConnection(self) -> None:
        """
        The end of TCP input without a close_notify first (a truncation)
        still ends the connection at once, without netsuite's close_notify.
        """
        port, ca = await self.startEcho()
        received, how = await threads.deferToThread(
            closeNotifyClient, port, ca, b"x" * 1000, shutDownTCP=True, closeNotify=False
        )
        self.assertEqual(how, "eof")
        await waitForQuiet(lambda: self.service.stats.connectionsOpen)
        self.assertEqual(self.service.stats.connectionsOpen, 0)


class BareFactoryTests(TestCase):
    timeout = 10

    async def test_bareFactoryUnderTLSStaysEncrypted(self) -> None:
        """
        L{EchoFactory} used on its own under TLS (no netsuite listener, so no
        tracking wrapper) takes the ordinary path: the direct path must never
        write past TLS.
        """
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        factory = TLSMemoryBIOFactory(
            serverOptions(*loadPEM(certPath, keyPath)),
            False,
            EchoFactory(reactor, ServiceStats("echo")),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=trustRootOf(ca)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        client = await connect(self, 0, Collector(), endpoint)
        data = os.urandom(1024 * 1024)
        client.transport.write(data)
        await client.waitFor(len(data))
        self.assertEqual(b"".join(client.received), data)
        client.transport.loseConnection()
        await client.closed
