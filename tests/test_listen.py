"""
Tests for L{netsuite.listen}: endpoint parsing, connection limits, stats and
start-up errors.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
from typing import Any, List, Tuple

from OpenSSL import SSL
from OpenSSL.SSL import SENT_SHUTDOWN, WantReadError, ZeroReturnError
from twisted.internet import reactor, tcp, threads
from twisted.internet.task import Clock, deferLater
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactor,
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, IPushProducer
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from netsuite.chat import makeChatService
from netsuite.echo import makeDiscardService, makeEchoService, makeEchoUDPService
from netsuite.listen import (
    PLAIN_HTTP_ON_TLS,
    ConnectionBudget,
    ListenError,
    StreamListener,
    TrackingFactory,
    _CloseNotifyAsEndOfInput,
    _HalfClosingTLSFactory,
    _HalfClosingTLSProtocol,
    _PeerReadGateFactory,
    _describe,
    parseDatagramEndpoint,
    parseStreamEndpoint,
)
from netsuite.stats import ServiceStats
from tests.helpers import (
    Collector,
    RecordingProducer,
    connect,
    occupiedPort,
    rawExchange,
    recvUntil,
    startListener,
    waitForQuiet,
    waitUntil,
)
import trustme

from netsuite.proxy import makeProxyService
from netsuite.web.site import makeHTTPService
from tests.tlshelpers import (
    KEY_UPDATE_MISSING,
    KeyUpdateClient,
    keyUpdateFlood,
    makeServerOptions,
    stdlibTLSEcho,
    writeLeaf,
)
from netsuite import listen


class ParseTests(SynchronousTestCase):
    def test_datagramEndpoint(self) -> None:
        self.assertEqual(parseDatagramEndpoint("udp:7"), (7, ""))
        self.assertEqual(parseDatagramEndpoint("udp:7:interface=127.0.0.1"), (7, "127.0.0.1"))
        self.assertEqual(parseDatagramEndpoint("udp:7:interface=\\:\\:1"), (7, "::1"))

    def test_badDatagramEndpoints(self) -> None:
        for bad in ("udp", "udp:x", "udp:70000", "udp:-1", "tcp:7", "udp:7:iface=x", "udp:7:interface"):
            self.assertRaises(ValueError, parseDatagramEndpoint, bad)

    def test_datagramInterfaceMustBeAnAddress(self) -> None:
        """
        A UDP interface that is not an IP address (a host name) is refused
        in one sentence: Twisted's listenUDP raised InvalidAddressError,
        which reached the user as a traceback.
        """
        for name in ("localhost", "eth0", "127.0.0.256"):
            message = str(self.assertRaises(ValueError, parseDatagramEndpoint, f"udp:7:interface={name}"))
            self.assertIn(f"interface {name!r} is not an IP address", message)

    def test_datagramInterfaceEmptyOrTwice(self) -> None:
        """
        An empty C{interface=}, or one given twice, is refused as for stream
        endpoints: UDP echo listened on every interface.
        """
        for description, why in [
            ("udp:7:interface=", "interface= is empty"),
            ("udp:7:interface=127.0.0.1:interface=", "interface= is given twice"),
            ("udp:7:interface=127.0.0.1:interface=0.0.0.0", "interface= is given twice"),
        ]:
            message = str(self.assertRaises(ValueError, parseDatagramEndpoint, description))
            self.assertIn(why, message)

    def test_sslEndpointNoClientCanUse(self) -> None:
        """
        An C{ssl:} endpoint whose certificate no client could make a
        handshake with (a DSA key) is refused, as netsuite's own TLS is; it
        started, and every handshake failed.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import dsa, ec
        import datetime

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)

        def write(name: str, key: object) -> tuple[str, str]:
            subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (
                x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=9))
                .sign(key, hashes.SHA256())
            )
            keyPath, certPath = os.path.join(directory, name + "-key.pem"), os.path.join(directory, name + ".pem")
            with open(keyPath, "wb") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            with open(certPath, "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            return keyPath, certPath

        keyPath, certPath = write("dsa", dsa.generate_private_key(2048))
        message = str(self.assertRaises(
            ValueError, parseStreamEndpoint, reactor, f"ssl:0:privateKey={keyPath}:certKey={certPath}"
        ))
        self.assertIn("no TLS client can connect with a certificate that has a DSA key", message)
        keyPath, certPath = write("ec", ec.generate_private_key(ec.SECP256R1()))
        parseStreamEndpoint(reactor, f"ssl:0:privateKey={keyPath}:certKey={certPath}")

    def test_systemdSocketOfTheWrongKind(self) -> None:
        """
        A socket systemd passed that is not a listening stream socket of
        the endpoint's family is refused in one sentence: a UDP one made
        the reactor spin on accept errors, a UNIX one given as INET a
        traceback a connection, one not listening nothing at all.
        """
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint

        from netsuite.listen import _checkAdopted

        def made(family: int, kind: int, listening: bool) -> socket.socket:
            sock = socket.socket(family, kind)
            self.addCleanup(sock.close)
            if family == socket.AF_INET:
                sock.bind(("127.0.0.1", 0))
            if listening:
                sock.listen(1)
            return sock

        for family, kind, listening, problem in [
            (socket.AF_INET, socket.SOCK_DGRAM, False, "a SOCK_DGRAM socket, not a stream"),
            (socket.AF_UNIX, socket.SOCK_STREAM, False, "an AF_UNIX socket, not AF_INET"),
            (socket.AF_INET, socket.SOCK_STREAM, False, "not listening"),
        ]:
            sock = made(family, kind, listening)
            endpoint = AdoptedStreamServerEndpoint(None, sock.fileno(), socket.AF_INET)
            message = str(self.assertRaises(ValueError, _checkAdopted, endpoint, "systemd:domain=INET:index=0"))
            self.assertIn(f"the socket systemd passed is {problem}", message)
        good = made(socket.AF_INET, socket.SOCK_STREAM, True)
        _checkAdopted(AdoptedStreamServerEndpoint(None, good.fileno(), socket.AF_INET), "systemd:domain=INET:index=0")

    def test_systemdPassedNone(self) -> None:
        """
        A systemd endpoint whose socket was not passed says so; it said
        "(list index out of range)".
        """
        from twisted.internet.endpoints import _SystemdParser
        from twisted.python.systemd import ListenFDs

        self.patch(_SystemdParser, "_sddaemon", ListenFDs([], ()))
        for description, which in [("systemd:domain=INET:index=0", "of that index"),
                                   ("systemd:domain=INET:name=web", "named 'web'")]:
            message = str(self.assertRaises(ValueError, parseStreamEndpoint, None, description))
            self.assertIn(f"systemd passed no socket {which}", message)

    def test_badStreamEndpointMessage(self) -> None:
        message = str(self.assertRaises(ValueError, parseStreamEndpoint, None, "tcp:http"))
        self.assertIn("'tcp:http'", message)
        self.assertIn("tcp:8080:interface=127.0.0.1", message)

    def test_sslFilesCheckedBeforeTwistedReadsThem(self) -> None:
        """
        The files an C{ssl:} endpoint string names (by keyword or position,
        or C{server.pem} by default) must be regular files of at most
        L{netsuite.tls.MAX_PEM_FILE} bytes, checked before Twisted reads
        them whole; each refusal names the argument and the file.  (A FIFO
        or C{/dev/zero} there: see
        L{tests.test_tap.StartDoesNotWaitTests}.)
        """
        from netsuite.tls import MAX_PEM_FILE

        directory = os.path.abspath(self.mktemp())
        certPath, keyPath = writeLeaf(directory, trustme.CA().issue_cert("localhost"))
        good = f"ssl:0:privateKey={keyPath}:certKey={certPath}"
        self.assertIsNotNone(parseStreamEndpoint(None, good))
        huge = os.path.join(directory, "huge.pem")
        with open(huge, "wb") as f:
            f.write(b"#" * (MAX_PEM_FILE + 1))
        missing = os.path.join(directory, "missing.pem")
        for description, name, path, reason in [
            (f"ssl:0:privateKey={huge}", "privateKey", huge, f"longer than {MAX_PEM_FILE} bytes"),
            (f"ssl:0:{huge}:{certPath}", "privateKey", huge, f"longer than {MAX_PEM_FILE} bytes"),
            (f"ssl:0:privateKey={keyPath}:certKey={directory}", "certKey", directory, "Is a directory"),
            (f"{good}:extraCertChain={huge}", "extraCertChain", huge, f"longer than {MAX_PEM_FILE} bytes"),
            (f"{good}:dhParameters={missing}", "dhParameters", missing, "No such file or directory"),
            (f"ssl:0:privateKey={os.devnull}", "privateKey", os.devnull, "not a regular file"),
        ]:
            message = str(self.assertRaises(ValueError, parseStreamEndpoint, None, description))
            self.assertIn(f": {name}={path!r} cannot be read: {reason}", message)
        # Without privateKey, Twisted reads server.pem in the current directory.
        message = str(self.assertRaises(ValueError, parseStreamEndpoint, None, "ssl:0"))
        self.assertIn("privateKey='server.pem' cannot be read: No such file or directory", message)

    def test_sslSettingsOpenSSLRefusesAreRefused(self) -> None:
        """
        An C{ssl:} endpoint whose C{dhParameters} file holds no DH
        parameters is refused in one message: OpenSSL reads it only when
        it makes the context, so the service started and every connection
        failed, each with tracebacks in the log.
        """
        directory = os.path.abspath(self.mktemp())
        certPath, keyPath = writeLeaf(directory, trustme.CA().issue_cert("localhost"))
        bad = os.path.join(directory, "dh.pem")
        with open(bad, "w") as f:
            f.write("garbage\n")
        description = f"ssl:0:privateKey={keyPath}:certKey={certPath}:dhParameters={bad}"
        message = str(self.assertRaises(ValueError, parseStreamEndpoint, None, description))
        self.assertTrue(message.startswith("ssl endpoint 'ssl:0:privateKey="), message)
        self.assertIn(": OpenSSL cannot use its TLS settings (no start line", message)
        self.assertIn("dhParameters= too", message)
        self.assertNotIn("\n", message)

    def test_lingerLimitsAboveZero(self) -> None:
        """
        A lingering limit that is not above 0 is refused as the listener is
        made.
        """
        for name, value in [("lingerTime", 0), ("lingerTimeout", -1.0), ("lingerTime", float("nan"))]:
            message = str(
                self.assertRaises(ValueError, StreamListener, "echo", "tcp:0", Factory.forProtocol(Idle), **{name: value})
            )
            self.assertEqual(message, f"{name} must be above 0 seconds, not {value!r}")

    def test_describeAddresses(self) -> None:
        self.assertEqual(_describe(IPv4Address("TCP", "127.0.0.1", 80)), "tcp 127.0.0.1:80")
        self.assertEqual(_describe(IPv6Address("TCP", "::1", 80)), "tcp [::1]:80")
        self.assertEqual(_describe(UNIXAddress(b"/run/x.sock")), "unix b'/run/x.sock'")


class Idle(Protocol):
    pass


class TrackingFactoryTests(SynchronousTestCase):
    def connect(self, factory: TrackingFactory, host: str):
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def test_maxPerHost(self) -> None:
        """
        Past C{maxPerHost} connections from one address, new ones from it are
        closed at once; other addresses are not affected, and a slot frees up
        when a connection ends.
        """
        stats = ServiceStats("x")
        factory = TrackingFactory(Factory.forProtocol(Idle), stats, maxPerHost=2)
        first = self.connect(factory, "10.0.0.1")
        self.connect(factory, "10.0.0.1")
        refused = self.connect(factory, "10.0.0.1")
        self.assertFalse(refused.connected)
        self.assertTrue(self.connect(factory, "10.0.0.2").connected)
        self.assertEqual(stats.counters["refused_connections"], 1)
        self.assertEqual(stats.connectionsOpen, 3)
        first.loseConnection()
        self.assertTrue(self.connect(factory, "10.0.0.1").connected)

    def test_maxPerHostCountsAnIPv6ClientByItsSlash64(self) -> None:
        """
        Addresses in one IPv6 /64 share C{maxPerHost} (one subscriber holds
        the whole /64); another /64 does not.
        """
        stats = ServiceStats("x")
        factory = TrackingFactory(Factory.forProtocol(Idle), stats, maxPerHost=2)
        self.connect(factory, "2001:db8::1")
        self.connect(factory, "2001:db8::2")
        self.assertFalse(self.connect(factory, "2001:db8::ffff:3").connected)
        self.assertTrue(self.connect(factory, "2001:db8:0:1::1").connected)
        self.assertTrue(self.connect(factory, "::ffff:10.0.0.1").connected)
        self.assertTrue(self.connect(factory, "10.0.0.1").connected)
        self.assertFalse(self.connect(factory, "::ffff:10.0.0.1").connected)

    def test_maxConnections(self) -> None:
        stats = ServiceStats("x")
        factory = TrackingFactory(Factory.forProtocol(Idle), stats, maxConnections=3)
        transports = [self.connect(factory, f"10.0.0.{i}") for i in range(5)]
        self.assertEqual([t.connected for t in transports], [True] * 3 + [False] * 2)
        self.assertEqual(stats.connectionsOpen, 3)
        self.assertEqual(stats.connectionsTotal, 3)

    def test_budgetSharedByListeners(self) -> None:
        """
        A L{ConnectionBudget} shared by two listeners counts their
        connections together, per address and in all (a connection counting
        its weight), on top of each listener's own limits; connections that
        end give their places back.
        """
        budget = ConnectionBudget(maxTotal=5, maxPerHost=2)
        stats = ServiceStats("x")
        one = TrackingFactory(Factory.forProtocol(Idle), stats, budget=budget)
        two = TrackingFactory(Factory.forProtocol(Idle), stats, budget=budget, weight=2)
        first = self.connect(one, "10.0.0.1")
        self.assertTrue(self.connect(two, "10.0.0.1").connected)
        self.assertFalse(self.connect(one, "10.0.0.1").connected)
        self.assertFalse(self.connect(two, "10.0.0.1").connected)
        self.assertEqual((budget.total, budget.fromHost("10.0.0.1")), (3, 2))
        self.assertTrue(self.connect(one, "10.0.0.2").connected)
        # 4 of 5: a connection of weight 2 no longer fits, one of weight 1 does.
        self.assertFalse(self.connect(two, "10.0.0.3").connected)
        self.assertTrue(self.connect(one, "10.0.0.3").connected)
        self.assertFalse(self.connect(one, "10.0.0.4").connected)
        self.assertEqual(stats.counters["refused_connections"], 4)
        first.loseConnection()
        self.assertEqual((budget.total, budget.fromHost("10.0.0.1")), (4, 1))
        self.assertTrue(self.connect(one, "10.0.0.1").connected)

    def test_perHostCountsForgottenWhenZero(self) -> None:
        factory = TrackingFactory(Factory.forProtocol(Idle), ServiceStats("x"), maxPerHost=5)
        for i in range(100):
            self.connect(factory, f"10.0.{i // 256}.{i % 256}").loseConnection()
        self.assertEqual(factory._own._perHost, {})

    def test_errorsCounted(self) -> None:
        """
        A connection that ends in an error (a TLS error, an abort) counts as
        an error; one the peer ended, cleanly or with a reset, does not.
        """
        from twisted.internet.error import ConnectionAborted, ConnectionDone
        from twisted.python.failure import Failure

        stats = ServiceStats("x")
        factory = TrackingFactory(Factory.forProtocol(Idle), stats)
        reasons = [SSL.Error([("SSL routines", "", "bad record mac")]), ConnectionAborted(), ConnectionLost(), ConnectionDone()]
        for reason in reasons:
            protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
            protocol.makeConnection(StringTransportWithDisconnection())
            protocol.connectionLost(Failure(reason))
        self.assertEqual(stats.errors, 2)


class ListenerSocketTests(TestCase):
    async def test_portInUseIsAReadableListenError(self) -> None:
        port = occupiedPort(self)
        service = makeEchoService(f"tcp:{port}:interface=127.0.0.1")
        error = self.assertRaises(ListenError, service.privilegedStartService)
        self.assertEqual(
            str(error),
            f"echo: cannot listen on 'tcp:{port}:interface=127.0.0.1': Address already in use",
        )

    async def test_udpPortInUseIsAReadableListenError(self) -> None:
        port = occupiedPort(self, socket.SOCK_DGRAM)
        service = makeEchoUDPService(f"udp:{port}:interface=127.0.0.1")
        error = self.assertRaises(ListenError, service.privilegedStartService)
        self.assertIn(f"'udp:{port}:interface=127.0.0.1': Address already in use", str(error))

    async def test_perHostLimitOverRealSockets(self) -> None:
        """
        The third connection from 127.0.0.1 to a listener with
        C{maxPerHost=2} is closed at once; the first two keep working.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", maxPerHost=2)
        port = await startListener(self, service)
        clients = [await connect(self, port, Collector()) for _ in range(3)]
        await clients[2].closed
        self.assertEqual(clients[2].received, [])
        for client in clients[:2]:
            client.transport.write(b"still here")
            await client.waitFor(10)
        self.assertEqual(service.stats.counters["refused_connections"], 1)

    async def test_budgetOverRealSockets(self) -> None:
        """
        Two listeners sharing a budget of two connections: the third, to
        either, is closed at once; the first two keep working.
        """
        budget = ConnectionBudget(maxTotal=2)
        services = [makeEchoService("tcp:0:interface=127.0.0.1", budget=budget) for _ in range(2)]
        ports = [await startListener(self, service) for service in services]
        clients = [await connect(self, ports[0], Collector()), await connect(self, ports[1], Collector())]
        for port in ports:
            refused = await connect(self, port, Collector())
            await refused.closed
            self.assertEqual(refused.received, [])
        for client in clients:
            client.transport.write(b"still here")
            await client.waitFor(10)
        self.assertEqual([service.stats.counters["refused_connections"] for service in services], [1, 1])

    async def test_refusedTLSConnectionClosedBeforeHandshake(self) -> None:
        """
        Over TLS a refused connection is closed before any handshake work.
        """
        service = makeEchoService(
            "tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()), maxConnections=0
        )
        port = await startListener(self, service)
        raw = await connect(self, port, Collector())
        await raw.closed
        self.assertEqual(raw.received, [])
        self.assertEqual(service.stats.counters["refused_connections"], 1)
        self.assertEqual(service.stats.connectionsTotal, 0)


class PeerReadGateTests(SynchronousTestCase):
    """
    L{_PeerReadGate} (between the socket and TLS) stops reading while output
    waits for the peer, and passes the producer registered above it the
    transport's pauses as the transport itself did.
    """

    def setUp(self) -> None:
        self.transport = StringTransportWithDisconnection()
        self.gate = _PeerReadGateFactory(Factory.forProtocol(Protocol), ServiceStats("x")).buildProtocol(None)
        self.transport.protocol = self.gate
        self.gate.makeConnection(self.transport)
        self.signal = self.transport.producer

    def test_readingStopsWhileOutputWaits(self) -> None:
        self.assertTrue(self.transport.streaming)
        self.assertEqual(self.transport.producerState, "producing")
        self.signal.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.signal.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_producerAbovePausedAndResumedWithTheOutput(self) -> None:
        producer = RecordingProducer()
        self.gate.registerProducer(producer, True)
        self.assertIs(self.transport.producer, self.signal)
        self.signal.pauseProducing()
        self.signal.resumeProducing()
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_producerRegisteredWhileOutputWaitsStartsPaused(self) -> None:
        self.signal.pauseProducing()
        producer = RecordingProducer()
        self.gate.registerProducer(producer, True)
        self.assertEqual(producer.calls, ["pause"])

    def test_secondProducerRefused(self) -> None:
        self.gate.registerProducer(RecordingProducer(), True)
        self.assertRaises(RuntimeError, self.gate.registerProducer, RecordingProducer(), True)
        self.gate.unregisterProducer()
        self.gate.registerProducer(RecordingProducer(), True)

    def test_pauseFromAboveOutlastsDrainedOutput(self) -> None:
        """
        A layer above that stopped reading (an HTTP channel between
        requests) keeps it stopped when the output drains, and the other
        way round.
        """
        self.gate.pauseProducing()
        self.signal.pauseProducing()
        self.signal.resumeProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.signal.pauseProducing()
        self.gate.resumeProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.signal.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_loseConnectionIsNotHeldByTheGate(self) -> None:
        self.gate.loseConnection()
        self.assertIsNone(self.transport.producer)
        self.assertFalse(self.transport.connected)

    def test_halfCloseableOnlyAfterCloseNotify(self) -> None:
        """
        The end of TCP input ends the connection (the gate does not handle
        half-close) until TLS saw the peer's close_notify; from then on
        whatever the peer sends is dropped, not kept unread by TLS.
        """
        received: List[bytes] = []
        self.gate.wrappedProtocol.dataReceived = received.append
        self.assertFalse(IHalfCloseableProtocol.providedBy(self.gate))
        self.gate.dataReceived(b"\x16before")
        self.gate.wrappedProtocol.peerClosed = True
        self.gate.dataReceived(b"after")
        self.assertEqual(received, [b"\x16before"])

    def test_connectionLostStopsTheProducerOnce(self) -> None:
        producer = RecordingProducer()
        self.gate.registerProducer(producer, True)
        self.signal.stopProducing()
        self.gate.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(producer.calls, ["stop"])


class _GateOnASocketPairTestCase(SynchronousTestCase):
    """
    A L{_PeerReadGate} over a real socket pair under a Twisted TCP
    transport, on a fake reactor.
    """

    def startGate(self, factory: _PeerReadGateFactory, reactor: MemoryReactor) -> None:
        """
        Connect a gate of C{factory} on C{reactor} to one end of a socket
        pair, reading: C{self.peer} is the other end, and C{self.received}
        what the protocol under the gate receives.
        """
        ours, self.peer = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(self.peer.close)
        self.reactor = reactor
        self.gate = factory.buildProtocol(None)
        self.received: List[bytes] = []
        self.gate.wrappedProtocol.dataReceived = self.received.append
        self.transport = tcp.Connection(ours, self.gate, reactor)
        self.transport.connected = True
        self.gate.makeConnection(self.transport)
        self.transport.startReading()


class PeerReadGateInputTests(_GateOnASocketPairTestCase):
    """
    Once the output waiting for the peer is sent, L{_PeerReadGate} has what
    the peer sent meanwhile read before the producer above it is resumed:
    resumed at once, the producer filled the transport again before the
    reactor looked at the socket, and nothing the peer sent was read while
    it took its answers as fast as they came (an HTTP/2 client's PING,
    answered only after the whole download).  A real socket pair under a
    Twisted TCP transport, on a L{MemoryReactor}.
    """

    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.startGate(_PeerReadGateFactory(Factory.forProtocol(Protocol), ServiceStats("x"), clock=clock), clock)
        self.producer = RecordingProducer()
        self.gate.registerProducer(self.producer, True)

    def fill(self) -> None:
        """
        Write more than the transport's buffer holds: output waits.
        """
        self.gate.write(b"x" * (self.transport.bufferSize + 1))
        self.assertNotIn(self.transport, self.reactor.readers)

    def drain(self) -> None:
        """
        The reactor sends the output waiting (the peer's socket takes it).
        """
        self.transport.doWrite()
        self.assertEqual(self.transport.dataBuffer, b"")
        self.peer.recv(1 << 20)

    def hold(self, data: bytes = b"PING") -> None:
        """
        Have the producer held for the peer's input: output waits, the peer
        sends C{data}, the output is sent.
        """
        self.fill()
        self.peer.sendall(data)
        self.drain()
        self.assertEqual(self.producer.calls, ["pause"])

    def test_resumedAtOnceWhenNothingWaits(self) -> None:
        self.fill()
        self.drain()
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertIn(self.transport, self.reactor.readers)

    def test_inputWaitingReadBeforeTheProducerResumes(self) -> None:
        self.hold()
        self.assertIn(self.transport, self.reactor.readers)
        self.transport.doRead()
        self.assertEqual((self.received, self.producer.calls), ([b"PING"], ["pause", "resume"]))

    def test_endOfInputNotWaitedFor(self) -> None:
        """
        The peer's end of input is not data to be read first: the reactor
        ends the connection on it when it reads.
        """
        self.fill()
        self.peer.shutdown(socket.SHUT_WR)
        self.drain()
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_heldProducerResumedWhenReadingStopsAbove(self) -> None:
        """
        A layer above that stops reading (an HTTP/1 channel answering a
        request) leaves nothing to wait for: the producer resumes.
        """
        self.hold(b"GET")
        self.gate.pauseProducing()
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertNotIn(self.transport, self.reactor.readers)

    def test_heldProducerWaitsForOutputWaitingAgain(self) -> None:
        """
        Output that waits again while the producer is held (written by
        something else) keeps it paused; once that is sent, the input still
        waiting is read first.
        """
        self.hold()
        self.fill()
        self.drain()
        self.assertNotIn("resume", self.producer.calls)
        self.transport.doRead()
        self.assertEqual(self.received, [b"PING"])
        self.assertEqual(self.producer.calls[-1], "resume")
        self.assertEqual(self.producer.calls.count("resume"), 1)

    def test_heldProducerResumedWhenClosedWithoutReading(self) -> None:
        """
        A connection closed without reading on (a hostile peer) while the
        producer is held for the peer's input: nothing will be read for
        it, and it resumes (to finish, and let the close go out).
        """
        self.hold(b"FLOOD")
        self.gate.wrappedProtocol.loseConnection = lambda: None  # (TLS's close_notify)
        self.gate.closeWithoutReading(2.0)
        if self.gate._refusal is not None:
            self.gate._refusal.cancel()
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertNotIn(self.transport, self.reactor.readers)

    def test_heldProducerUnregistered(self) -> None:
        self.hold()
        self.gate.unregisterProducer()
        self.transport.doRead()
        self.assertEqual(self.producer.calls, ["pause"])

    def test_nextProducerNotResumedForTheInputTheLastWaitedFor(self) -> None:
        """
        A producer unregistered while held, and another registered before
        the input is read (an HTTP/1 channel's next answer): the gate did
        not pause the new one, and does not resume it.
        """
        self.hold()
        self.gate.unregisterProducer()
        nextProducer = RecordingProducer()
        self.gate.registerProducer(nextProducer, True)
        self.transport.doRead()
        self.assertEqual((self.received, self.producer.calls, nextProducer.calls), ([b"PING"], ["pause"], []))

    def test_inputHandedOnBeforeTheProducerResumes(self) -> None:
        """
        The input the producer was held for reaches the protocol above
        before the producer resumes (an HTTP/2 PING is answered before the
        next piece of a file is written, not after).
        """
        events: List[object] = []
        self.gate.wrappedProtocol.dataReceived = events.append
        self.producer.calls = events  # type: ignore[assignment]
        self.hold()
        self.transport.doRead()
        self.assertEqual(events, ["pause", b"PING", "resume"])

    def test_notHeldWhileReadingIsPausedAbove(self) -> None:
        """
        Output sent while a layer above keeps reading stopped (an HTTP/1
        channel answering a request): the peer's input waiting will not be
        read, so the producer resumes at once rather than wait for it.
        """
        self.gate.pauseProducing()
        self.fill()
        self.peer.sendall(b"GET")
        self.drain()
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertNotIn(self.transport, self.reactor.readers)

    def test_producerResumedOnlyOnceForTheInputItWaitedFor(self) -> None:
        """
        The gate resumes the producer only after holding it, once: neither
        the peer's next input nor a pause above resumes it again.  (TLS
        pauses the same producer while it holds the service's output during
        a handshake; a resume from the gate then had the service write into
        TLS's unbounded buffer.)
        """
        self.hold()
        self.transport.doRead()
        self.peer.sendall(b"PING")
        self.transport.doRead()
        self.gate.pauseProducing()
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_heldProducerLostWithTheConnection(self) -> None:
        """
        The connection lost while the producer is held: the producer is
        stopped, and a layer above that stops reading as it ends raises
        nothing (the held producer is gone).
        """
        self.hold()
        self.gate.wrappedProtocol.connectionLost = lambda reason: self.gate.pauseProducing()
        self.transport.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.producer.calls, ["pause", "stop"])

    def test_producerResumedByAPauseAboveMayReadOn(self) -> None:
        """
        A layer above that stops reading releases the held producer, and
        when that producer ends the answer at once and the layer reads on
        (an HTTP/1 channel answering a small request), reading goes on: the
        gate stops reading before it releases the producer, not after.
        """
        self.hold()

        def resumed() -> None:
            self.producer.calls.append("resume")
            self.gate.resumeProducing()

        self.producer.resumeProducing = resumed  # type: ignore[method-assign]
        self.gate.pauseProducing()
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertIn(self.transport, self.reactor.readers)
        self.transport.doRead()
        self.assertEqual(self.received, [b"PING"])

    def test_heldProducerStaysHeldWhenAskedToReadOn(self) -> None:
        """
        A layer above asking to read while the producer is held for the
        peer's input (reading is on already) does not release it before
        that input is read.
        """
        self.hold()
        self.gate.resumeProducing()
        self.assertEqual(self.producer.calls, ["pause"])
        self.transport.doRead()
        self.assertEqual(self.producer.calls, ["pause", "resume"])

    def test_heldProducerClosingAsItResumesKeepsTheRefusal(self) -> None:
        """
        A connection closed without reading on while the producer is held,
        whose service closes as the producer resumes (TLS's close asks the
        gate to read on to the peer's close_notify): nothing more is read,
        and the connection ends after the grace, not at the lingering
        close's timeout.
        """
        self.gate.factory.lingerTimeout = 0.5
        self.hold()

        def resumed() -> None:
            self.producer.calls.append("resume")
            self.gate.readToClose()

        self.producer.resumeProducing = resumed  # type: ignore[method-assign]
        self.gate.wrappedProtocol.loseConnection = self.gate.readToClose  # as TLS's close does
        self.gate.closeWithoutReading(2.0)
        self.assertEqual(self.producer.calls, ["pause", "resume"])
        self.assertNotIn(self.transport, self.reactor.readers)
        self.reactor.advance(2.0 - 0.01)
        self.assertFalse(self.transport.disconnecting)
        self.reactor.advance(0.01)
        self.assertTrue(self.transport.disconnecting)


@implementer(IHandshakeListener, IPushProducer)
class _Firehose(Protocol):
    """
    Once TLS is up, writes from its C{resumeProducing} while its transport
    takes more (as a producer with data ready does), up to its factory's
    C{limit}; at C{STOP} from the peer, notes in its factory how much it
    had written, and closes.
    """

    factory: Any
    paused = False
    written = 0

    def handshakeCompleted(self) -> None:
        listen.limitSendBuffer(self.transport, 256 * 1024)
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.written < self.factory.limit:
            self.transport.write(b"x" * 65536)
            self.written += 65536

    def dataReceived(self, data: bytes) -> None:
        if b"STOP" in data:
            self.factory.writtenAtStop.append(self.written)
            self.written = self.factory.limit
            self.transport.unregisterProducer()
            self.transport.loseConnection()


class PeerReadGateFloodWhileClosingTests(_GateOnASocketPairTestCase):
    """
    A TLS connection closing (L{_PeerReadGate.readToClose}) whose peer
    sends more than the factory's C{lingerBytes} is read no more, whatever
    asks to read after, and ends 2 s (L{listen._FLOOD_GRACE}) later.  A
    real socket pair under a Twisted TCP transport, on a fake reactor.
    """

    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.stats = ServiceStats("x")
        factory = _PeerReadGateFactory(Factory.forProtocol(Protocol), self.stats, clock=clock)
        factory.lingerBytes = 100
        self.startGate(factory, clock)

    def test_floodNotReadAgain(self) -> None:
        self.gate.readToClose()
        self.peer.sendall(b"x" * 100)
        self.transport.doRead()
        self.assertIn(self.transport, self.reactor.readers)  # within the allowance
        self.peer.sendall(b"y")
        self.transport.doRead()
        self.assertNotIn(self.transport, self.reactor.readers)
        self.assertEqual(b"".join(self.received), b"x" * 100)  # not the byte past it
        self.assertEqual(self.stats.counters.get("close_floods"), 1)
        self.gate.readToClose()
        self.gate.resumeProducing()
        self.assertNotIn(self.transport, self.reactor.readers)
        self.reactor.advance(2.0 - 0.01)  # (the README's 2 s)
        self.assertFalse(self.transport.disconnecting)
        self.reactor.advance(0.01)
        self.assertTrue(self.transport.disconnecting or self.transport.disconnected)


class PeerReadGateSocketTests(TestCase):
    """
    Over real TLS connections, a peer that takes what it is sent as fast as
    it comes gets what it sends read between the service's writes.
    """

    async def test_peerReadWhileTakingAFirehose(self) -> None:
        """
        The peer's C{STOP}, sent once it got 1 MiB, is read after at most
        the few MiB the sockets hold; the service got it only once it had
        written all it had (64 MiB).
        """
        factory = Factory.forProtocol(_Firehose)
        factory.limit, factory.writtenAtStop = 64 << 20, []
        ca = trustme.CA()
        service = StreamListener(
            "firehose", "tcp:0:interface=127.0.0.1", factory, reactor=reactor, tls=makeServerOptions(self.mktemp(), ca)
        )
        port = await startListener(self, service)

        def client() -> int:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            raw.settimeout(10)
            raw.connect(("127.0.0.1", port))
            with context.wrap_socket(raw, server_hostname="localhost") as conn:
                received = len(recvUntil(conn, lambda got: len(got) >= 1 << 20))
                conn.sendall(b"STOP")
                while conn.recv(1 << 20):
                    pass
                return received

        received = await threads.deferToThread(client)
        await waitUntil(lambda: factory.writtenAtStop)
        self.assertLess(factory.writtenAtStop[0] - received, 8 << 20)


class _ClosedConnection:
    """
    Stands for a pyOpenSSL connection whose peer's close_notify has come,
    and which has sent its own or not (C{flags}, as C{get_shutdown}).
    """

    def __init__(self, flags: int) -> None:
        self.flags = flags

    def recv(self, size: int) -> bytes:
        raise ZeroReturnError()

    def get_shutdown(self) -> int:
        return self.flags


class _Ending(Protocol):
    ended = 0

    def readConnectionLost(self) -> None:
        self.ended += 1


class CloseNotifyTests(SynchronousTestCase):
    """
    L{_CloseNotifyAsEndOfInput}: a peer's close_notify is the end of its
    input, unless it answers the one netsuite sent.
    """

    def tls(self, flags: int, disconnecting: bool) -> tuple[_CloseNotifyAsEndOfInput, Any]:
        tls = _HalfClosingTLSProtocol(None, _Ending())
        tls.disconnecting = disconnecting
        return _CloseNotifyAsEndOfInput(_ClosedConnection(flags), tls), tls

    def test_firstCloseNotifyEndsTheInput(self) -> None:
        """
        Also while the service's close waits for its producer (its own
        close_notify not sent yet): what it still writes goes out.
        """
        for disconnecting in (False, True):
            connection, tls = self.tls(0, disconnecting)
            self.assertRaises(WantReadError, connection.recv, 1024)
            self.assertEqual((tls.peerClosed, tls.wrappedProtocol.ended), (True, 1))

    def test_answerEndsTheConnection(self) -> None:
        """
        The close_notify that answers netsuite's own goes to TLS, which ends
        the connection (kept as the end of input, the connection stayed).
        """
        connection, tls = self.tls(SENT_SHUTDOWN, True)
        self.assertRaises(ZeroReturnError, connection.recv, 1024)
        self.assertEqual((tls.peerClosed, tls.wrappedProtocol.ended), (False, 0))


class TLSKeyUpdateFloodTests(TestCase):
    """
    A TLS 1.3 client that asks for a KeyUpdate back again and again and
    never reads: the server stops reading from it instead of holding every
    answer.
    """

    if KEY_UPDATE_MISSING:
        skip = KEY_UPDATE_MISSING

    async def _flood(self, service: StreamListener) -> int:
        # Over the KeyUpdate limit the connection would end at once (see
        # TLSKeyUpdateLimitTests); here the answers must pile up.
        self.patch(listen, "KEY_UPDATES_FREE", 10**9)
        port = await startListener(self, service)
        # Small buffers, inherited by the accepted socket, so the kernel
        # holds little of the output.
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            service.port.socket.setsockopt(socket.SOL_SOCKET, option, 4096)
        raw, sent = await threads.deferToThread(keyUpdateFlood, port, 40000)
        self.addCleanup(raw.close)
        await waitForQuiet(lambda: _buffered(service))
        return _buffered(service)

    async def test_discardStopsReading(self) -> None:
        service = makeDiscardService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        self.assertLess(await self._flood(service), 256 * 1024)

    async def test_chatStopsReadingBeforeTheName(self) -> None:
        service = makeChatService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        self.assertLess(await self._flood(service), 256 * 1024)

    async def test_sslEndpointStopsReading(self) -> None:
        """
        An C{ssl:} endpoint string gets netsuite's TLS, and stops reading
        too (Twisted's own held every answer).
        """
        certPath, keyPath = writeLeaf(self.mktemp(), trustme.CA().issue_cert("localhost"))
        service = makeDiscardService(f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}")
        self.assertLess(await self._flood(service), 256 * 1024)


class TLSKeyUpdateLimitTests(TestCase):
    """
    A TLS 1.3 client may send L{listen.KEY_UPDATES_FREE} KeyUpdates and one
    more per L{listen.KEY_UPDATE_BYTES} it sent; one that sends more is
    aborted and counted as C{tls_key_update_floods}, whatever the service
    is doing (OpenSSL alone would take them until a timeout).
    """

    if KEY_UPDATE_MISSING:
        skip = KEY_UPDATE_MISSING

    async def _aborted(self, service: StreamListener) -> None:
        """
        C{service}'s one connection ended, counted as a KeyUpdate flood.
        """
        await waitForQuiet(lambda: service.stats.connectionsOpen)
        self.assertEqual(service.stats.connectionsOpen, 0)
        self.assertEqual(service.stats.counters.get("tls_key_update_floods"), 1)

    async def test_floodAborted(self) -> None:
        """
        A client that sends KeyUpdates and nothing else is aborted once it
        is over the limit, not left to a timeout (discard's is 300 s).
        """
        service = makeDiscardService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def flood() -> int:
            client = KeyUpdateClient(port, smallBuffers=True, stall=0.5)
            self.addCleanup(client.close)
            return client.keyUpdates(100000)

        sent = await threads.deferToThread(flood)
        self.assertLess(sent, 100000)
        await self._aborted(service)
        messages = [formatEvent(e) for e in events if "KeyUpdates" in formatEvent(e)]
        self.assertEqual(len(messages), 1, messages)
        self.assertRegex(messages[0], r"^discard: client 127\.0\.0\.1 sent \d+ TLS KeyUpdates in \d+ bytes: aborted$")

    async def test_burstEndsAfterAFewDozen(self) -> None:
        """
        KeyUpdates sent in one write, read at once, end the connection
        after a few dozen: OpenSSL gets L{listen.RECORDS_PER_FEED} records
        at a time, and the limit is looked at between (a 64 KiB read let
        2400 through, each costing the server 20 microseconds).
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def burst() -> None:
            client = KeyUpdateClient(port)
            self.addCleanup(client.close)
            try:
                client.keyUpdateBurst(4000)
            except ConnectionError:
                pass  # cut off while sending

        await threads.deferToThread(burst)
        await self._aborted(service)
        [message] = [formatEvent(e) for e in events if "KeyUpdates" in formatEvent(e)]
        taken = int(re.search(r"sent (\d+) TLS KeyUpdates", message).group(1))
        self.assertLessEqual(taken, listen.KEY_UPDATES_FREE + listen.RECORDS_PER_FEED)

    async def test_renegotiationAborted(self) -> None:
        """
        A TLS 1.2 client that starts a renegotiation is aborted, logged and
        counted as C{tls_renegotiations}: OpenSSL refuses it with a warning
        alert and keeps the connection, so a client could ask again and
        again (100,000 times a second, a CPU busy) until a timeout.
        """
        ca = trustme.CA()
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp(), ca))
        port = await startListener(self, service)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def renegotiate() -> Tuple[bytes, str]:
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
            with socket.create_connection(("127.0.0.1", port)) as raw:
                # Blocking for pyOpenSSL, but never for ever.
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
                connection = SSL.Connection(context, raw)
                connection.set_connect_state()
                connection.do_handshake()
                connection.sendall(b"ping")
                echoed = connection.recv(4)
                connection.renegotiate()
                for _ in range(100):
                    try:
                        connection.do_handshake()
                        connection.recv(1)
                    except SSL.WantReadError:
                        continue
                    except SSL.SysCallError:
                        return echoed, "reset"
                    except SSL.Error as e:
                        return echoed, f"TLS error {e}"
                return echoed, "still open"

        echoed, end = await threads.deferToThread(renegotiate)
        self.assertEqual(echoed, b"ping")
        # OpenSSL's refusal (a warning alert) may come before the reset.
        self.assertNotEqual(end, "still open")
        await waitForQuiet(lambda: service.stats.connectionsOpen)
        self.assertEqual(service.stats.connectionsOpen, 0)
        self.assertEqual(service.stats.counters.get("tls_renegotiations"), 1)
        messages = [formatEvent(e) for e in events if "renegotiation" in formatEvent(e)]
        self.assertEqual(messages, ["echo: client 127.0.0.1 started a TLS renegotiation: aborted"])

    async def test_floodAfterHTTPClose(self) -> None:
        """
        After the web server closed a connection (C{Connection: close}), it
        drops what the client still sends until its close_notify; a
        KeyUpdate flood there is aborted too, not left to the closing timer.
        """
        service = makeHTTPService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)

        def closeThenFlood() -> Tuple[bytes, int]:
            client = KeyUpdateClient(port, smallBuffers=True, stall=0.5)
            self.addCleanup(client.close)
            client.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = client.readAll()
            return answer, client.keyUpdates(100000)

        answer, sent = await threads.deferToThread(closeThenFlood)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertLess(sent, 100000)
        await self._aborted(service)

    async def test_honestClientKeepsItsConnection(self) -> None:
        """
        The free KeyUpdates and those earned by what the client sent do not
        end the connection; the first one over the limit does.
        """
        self.patch(listen, "KEY_UPDATE_BYTES", 16384)
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        data = os.urandom(4 * 16384)

        def talk(client: KeyUpdateClient, message: bytes) -> bytes:
            client.write(message)
            echoed = b""
            while len(echoed) < len(message):
                echoed += client.read()
            return echoed

        def honest() -> Tuple[List[int], List[bytes], KeyUpdateClient]:
            client = KeyUpdateClient(port)
            self.addCleanup(client.close)
            sent = [client.keyUpdates(listen.KEY_UPDATES_FREE)]
            echoed = [talk(client, b"ping"), talk(client, data)]
            # Four more, earned by the 64 KiB.
            sent.append(client.keyUpdates(4))
            echoed.append(talk(client, b"pong"))
            return sent, echoed, client

        sent, echoed, client = await threads.deferToThread(honest)
        self.assertEqual(sent, [listen.KEY_UPDATES_FREE, 4])
        self.assertEqual(echoed, [b"ping", data, b"pong"])
        self.assertEqual(service.stats.connectionsOpen, 1)
        self.assertNotIn("tls_key_update_floods", service.stats.counters)

        def overTheLimit() -> None:
            client.keyUpdates(10)
            client.write(b"ping")
            while client.read():
                pass

        await self.assertFailure(threads.deferToThread(overTheLimit), ConnectionError)
        await self._aborted(service)


class RecordPiecesTests(SynchronousTestCase):
    """
    What a TLS connection reads is given to OpenSSL in pieces cut where a
    record begins, with at most L{listen.RECORDS_PER_FEED} records begun
    in each, whatever the reads cut.
    """

    def test_pieces(self) -> None:
        records = b"".join(
            bytes([23, 3, 3]) + struct.pack(">H", size) + bytes([size % 251]) * size
            for size in [22] * 100 + [16401, 0, 3] + [22] * 40 + [300]
        )
        for readSize in (1, 2, 4, 5, 6, 27, 1000, 4096, 65536):
            tls = _HalfClosingTLSProtocol.__new__(_HalfClosingTLSProtocol)
            pieces = []
            for start in range(0, len(records), readSize):
                pieces.extend(p for p in tls._pieces(records[start : start + readSize]) if p)
            self.assertEqual(b"".join(pieces), records, readSize)
            begun = [_recordsBegun(records, pieces, i) for i in range(len(pieces))]
            self.assertLessEqual(max(begun), listen.RECORDS_PER_FEED, readSize)
        self.assertGreaterEqual(len(pieces), 5)  # read whole: 144 records cut


class _Received(Protocol):
    """
    Records each C{dataReceived}, the end of input and the connection's end
    in order.
    """

    def __init__(self) -> None:
        self.events: List[Any] = []

    def dataReceived(self, data: bytes) -> None:
        self.events.append(data)

    def readConnectionLost(self) -> None:
        self.events.append("end of input")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.events.append(reason.type)


@implementer(IHalfCloseableProtocol)
class _HalfClosingReceived(_Received):
    """
    A L{_Received} that handles half-close.
    """


def memoryTLSClient() -> Tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """
    A stdlib TLS client over memory, checking no certificate.

    @return: the client, its incoming BIO (write the server's bytes there),
        and its outgoing one (read what it sends there).
    """
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return context.wrap_bio(incoming, outgoing, server_hostname="localhost"), incoming, outgoing


class TLSPlaintextTests(SynchronousTestCase):
    """
    The plaintext of every TLS record OpenSSL reads from one piece of a
    read goes to the service in one C{dataReceived} (Twisted's gave it each
    record's on its own: 1-byte records cost echo 22 microseconds each,
    measured, and 4.5 once handed on together).
    """

    def connect(self, service: _Received) -> Tuple[_HalfClosingTLSProtocol, ssl.SSLObject, ssl.MemoryBIO]:
        """
        A server TLS protocol for C{service} over an in-memory transport,
        and a stdlib client whose handshake with it is done.

        @return: the server protocol, the client, and the client's outgoing
            BIO.
        """
        options = makeServerOptions(self.mktemp())
        factory = _HalfClosingTLSFactory(options, False, Factory.forProtocol(lambda: service), Clock())
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        transport = StringTransport()
        server.makeConnection(transport)
        client, incoming, outgoing = memoryTLSClient()
        for _ in range(5):
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                server.dataReceived(outgoing.read())
                incoming.write(transport.value())
                transport.clear()
        server.dataReceived(outgoing.read())  # the client's Finished
        self.assertTrue(server._handshakeDone)
        return server, client, outgoing

    def oneByteRecords(self, client: ssl.SSLObject, outgoing: ssl.MemoryBIO, data: bytes) -> bytes:
        """
        C{data} from C{client} in 1-byte records, as they go on the wire.
        """
        for i in range(len(data)):
            client.write(data[i : i + 1])
        return outgoing.read()

    def test_oneCallForManyRecords(self) -> None:
        service = _Received()
        server, client, outgoing = self.connect(service)
        data = bytes(range(256)) * 4
        server.dataReceived(self.oneByteRecords(client, outgoing, data))
        self.assertEqual(b"".join(service.events), data)
        # One call for each piece of at most RECORDS_PER_FEED records.
        self.assertEqual(len(service.events), len(data) // listen.RECORDS_PER_FEED)

    def test_plaintextBeforeTheCloseNotify(self) -> None:
        """
        What came before a close_notify read with it reaches the service
        before the end of its input (or of the connection).
        """
        for service in (_HalfClosingReceived(), _Received()):
            server, client, outgoing = self.connect(service)
            wire = self.oneByteRecords(client, outgoing, b"last words")
            with self.assertRaises(ssl.SSLWantReadError):
                client.unwrap()
            server.dataReceived(wire + outgoing.read())
            end = "end of input" if isinstance(service, _HalfClosingReceived) else ConnectionDone
            if end == ConnectionDone:
                server.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(service.events, [b"last words", end])

    def test_plaintextBeforeABadRecord(self) -> None:
        """
        What came before a record that does not decrypt reaches the service
        before the connection's end.
        """
        service = _Received()
        server, client, outgoing = self.connect(service)
        wire = self.oneByteRecords(client, outgoing, b"fine")
        bad = bytearray(self.oneByteRecords(client, outgoing, b"!"))
        bad[-1] ^= 1
        server.dataReceived(wire + bytes(bad))
        server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(service.events[0], b"fine")
        self.assertEqual(service.events[1:], [SSL.Error])


def _tinyRecordsEchoed(port: int, count: int) -> Tuple[bytes, bytes, int]:
    """
    Blocking: send C{count} bytes to the TLS echo service on C{port} in
    1-byte records, all in one write, and read them back.

    @return: the plaintext sent, the plaintext echoed, and the number of
        TLS records it came in.
    """
    client, incoming, outgoing = memoryTLSClient()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                chunk = raw.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed during the handshake")
                incoming.write(chunk)
        data = os.urandom(count)
        for i in range(count):
            client.write(data[i : i + 1])
        raw.sendall(outgoing.read())
        wire = echoed = b""
        while len(echoed) < count:
            try:
                echoed += client.read(count)
            except ssl.SSLWantReadError:
                chunk = raw.recv(65536)
                if not chunk:
                    raise ConnectionError(f"the server closed after {len(echoed)} bytes echoed")
                wire += chunk
                incoming.write(chunk)
    # Any TLS 1.3 session tickets come in the same stream.
    records = _recordsBegun(wire, [wire], 0)
    return data, echoed, records


class TLSWriteHalfCloseTests(SynchronousTestCase):
    """
    L{_HalfClosingTLSProtocol.loseWriteConnection}: over TLS 1.3 netsuite's
    close_notify ends its output only, and what the client still sends is
    handed on; where that cannot be, the connection closes.
    """

    def connect(self, service: _Received, tls12: bool = False) -> _HalfClosingTLSProtocol:
        """
        A server TLS protocol for C{service} over an in-memory transport,
        its handshake done with a stdlib client (C{self.client}, its BIOs
        C{self.incoming} and C{self.outgoing}), TLS 1.2 if C{tls12}.
        """
        options = makeServerOptions(self.mktemp())
        factory = _HalfClosingTLSFactory(options, False, Factory.forProtocol(lambda: service), Clock())
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        server.makeConnection(StringTransport())
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        for _ in range(5):
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.toServer(server)
                self.toClient(server)
        self.toServer(server)
        self.assertTrue(server._handshakeDone)
        return server

    def toServer(self, server: _HalfClosingTLSProtocol) -> None:
        data = self.outgoing.read()
        if data:
            server.dataReceived(data)

    def toClient(self, server: _HalfClosingTLSProtocol) -> Tuple[bytes, bool]:
        """
        Give the client what the server sent: what it reads, and whether
        the server's close_notify came.
        """
        self.incoming.write(server.transport.value())
        server.transport.clear()
        out = b""
        while True:
            try:
                data = self.client.read(65536)
            except ssl.SSLZeroReturnError:
                return out, True
            except ssl.SSLWantReadError:
                return out, False
            if not data:  # the stdlib's read gives b"" for a close_notify
                return out, True
            out += data

    def test_writeSideOnly(self) -> None:
        service = _HalfClosingReceived()
        server = self.connect(service)
        self.assertTrue(server.canShutWriting())
        server.write(b"last words")
        server.loseWriteConnection()
        self.assertEqual(self.toClient(server), (b"last words", True))
        self.assertFalse(server.transport.disconnecting)
        server.write(b"nothing may follow")
        server.writeSequence([b"nor this"])
        self.assertEqual(server.transport.value(), b"")
        self.client.write(b"still coming")
        self.toServer(server)
        self.assertEqual(service.events, [b"still coming"])
        self.assertFalse(server.transport.disconnecting)
        # The client's own close_notify ends the connection.
        self.client.unwrap()  # done at once: the server's came
        self.toServer(server)
        self.assertTrue(server.transport.disconnecting)

    def test_secondCallSendsNothingMore(self) -> None:
        server = self.connect(_HalfClosingReceived())
        server.loseWriteConnection()
        sent = server.transport.value()
        server.loseWriteConnection()
        self.assertEqual(server.transport.value(), sent)
        self.assertFalse(server.transport.disconnecting)

    def test_beforeTheHandshakeClosesTheConnection(self) -> None:
        """
        Before the handshake has ended there is no TLS 1.3 to half-close:
        the connection closes.
        """
        options = makeServerOptions(self.mktemp())
        factory = _HalfClosingTLSFactory(options, False, Factory.forProtocol(_HalfClosingReceived), Clock())
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        server.makeConnection(StringTransport())
        self.assertFalse(server.canShutWriting())
        server.loseWriteConnection()
        self.assertTrue(server.disconnecting)
        self.assertFalse(server.writeShut)

    def test_tls12ClosesTheConnection(self) -> None:
        """
        TLS 1.2 has no half-close (RFC 5246 7.2.1): the connection closes.
        """
        server = self.connect(_HalfClosingReceived(), tls12=True)
        self.assertEqual(server._tlsConnection.get_protocol_version_name(), "TLSv1.2")
        self.assertFalse(server.canShutWriting())
        server.loseWriteConnection()
        self.assertTrue(server.disconnecting)
        self.assertFalse(server.writeShut)

    def test_serviceWithoutHalfCloseClosesTheConnection(self) -> None:
        server = self.connect(_Received())
        self.assertFalse(server.canShutWriting())
        server.loseWriteConnection()
        self.assertTrue(server.disconnecting)


class TLSTinyRecordsTests(TestCase):
    """
    Over real sockets: TLS echo answers many 1-byte records read at once
    with few records of its own, not one each.
    """

    async def test_echoAnswersInFewRecords(self) -> None:
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        sent, echoed, records = await threads.deferToThread(_tinyRecordsEchoed, port, 3000)
        self.assertEqual(echoed, sent)
        # At most one for each RECORDS_PER_FEED records read (fewer when the
        # system coalesces), and a few session tickets.
        self.assertLess(records, 3000 // listen.RECORDS_PER_FEED + 10)


def _recordsBegun(records: bytes, pieces: List[bytes], index: int) -> int:
    """
    How many of the records in C{records} begin in C{pieces[index]}.
    """
    start = sum(map(len, pieces[:index]))
    end = start + len(pieces[index])
    position, begun = 0, 0
    while position < len(records):
        begun += start <= position < end
        position += 5 + struct.unpack(">H", records[position + 3 : position + 5])[0]
    return begun


def _buffered(service: StreamListener) -> int:
    """
    Bytes waiting in the socket transports of C{service}'s connections.
    """
    total = 0
    for gate in service.factory.protocols:
        socketTransport = gate.transport
        total += len(socketTransport.dataBuffer) - socketTransport.offset + socketTransport._tempDataLen
    return total


class PlainHTTPOnTLSPortTests(TestCase):
    """
    A plain HTTP request sent to the TLS port of a service that speaks HTTP
    gets a C{400} saying why, as nginx answers, not a closed connection.
    """

    async def test_plainRequestGetsA400(self) -> None:
        ca = trustme.CA()
        service = makeEchoService(
            "tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp(), ca), speaksHTTP=True
        )
        port = await startListener(self, service)
        answer = await threads.deferToThread(rawExchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(answer, PLAIN_HTTP_ON_TLS)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertEqual(service.stats.counters["plain_http_refused"], 1)
        await waitForQuiet(lambda: service.stats.connectionsOpen)
        self.assertEqual(service.stats.errors, 0)  # counted as plain_http_refused only
        # TLS clients are served as before.
        cadata = ca.cert_pem.bytes().decode("ascii")
        _, _, echoed = await threads.deferToThread(stdlibTLSEcho, port, cadata, b"ping")
        self.assertEqual(echoed, b"ping")

    async def test_plainUploadGetsItsAnswer(self) -> None:
        """
        A plain POST of 32 MiB, sent whole before the client reads (Python's
        C{http.client}), gets the 400, not a reset: the listener reads on,
        dropping the body, until the client closes (the server closed at
        once, and the body still coming made the system reset the
        connection: C{BrokenPipeError}).
        """
        import http.client

        service = makeHTTPService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)

        def upload() -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("POST", "/api/echo", body=b"x" * (32 * 1024 * 1024))
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        status, body = await threads.deferToThread(upload)
        self.assertEqual((status, body), (400, PLAIN_HTTP_ON_TLS.split(b"\r\n\r\n", 1)[1]))
        await waitForQuiet(lambda: service.stats.connectionsOpen)
        self.assertEqual(service.stats.counters["plain_http_refused"], 1)
        self.assertEqual(service.stats.errors, 0)

    async def test_otherServicesFailTheHandshakeAsBefore(self) -> None:
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        answer = await threads.deferToThread(rawExchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertNotIn(b"HTTP/1.1", answer)
        self.assertNotIn("plain_http_refused", service.stats.counters)

    async def test_webServerAndProxyAnswer(self) -> None:
        for service in (
            makeHTTPService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp())),
            makeProxyService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp())),
        ):
            port = await startListener(self, service)
            answer = await threads.deferToThread(
                rawExchange, port, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
            )
            self.assertEqual(answer, PLAIN_HTTP_ON_TLS)

    async def test_sslEndpointAnswers(self) -> None:
        """
        The web server on an C{ssl:} endpoint string answers too (Twisted's
        own TLS closed the connection), and serves TLS clients.
        """
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        service = makeHTTPService(f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}")
        port = await startListener(self, service)
        answer = await threads.deferToThread(rawExchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(answer, PLAIN_HTTP_ON_TLS)
        self.assertTrue(service.info().tls)
        cadata = ca.cert_pem.bytes().decode("ascii")
        _, _, answer = await threads.deferToThread(
            stdlibTLSEcho, port, cadata, b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 404 "), answer)


def _handshakeThenWait(port: int, cadata: str, wait: float) -> bytes:
    """
    Blocking: a TLS client that finishes its handshake, waits C{wait}
    seconds, then sends C{ping} and reads the echo.
    """
    import ssl
    import time

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cadata)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            time.sleep(wait)
            conn.sendall(b"ping")
            return conn.recv(4)


class TLSHandshakeTimeoutTests(TestCase):
    """
    A TLS client gets C{handshakeTimeout} seconds from its connection to
    finish its handshake, on a C{tls=} listener and on an C{ssl:} endpoint;
    then its connection is aborted and counted (echo and discard kept an
    unfinished handshake for their whole idle timeout, 300 seconds).
    """

    async def assertAborted(self, service: StreamListener, port: int, first: bytes) -> None:
        client = await connect(self, port, Collector())
        if first:
            client.transport.write(first)
        await client.closed.addTimeout(10, reactor)
        self.assertEqual(client.received, [])
        self.assertEqual(service.stats.counters["tls_handshake_timeouts"], 1)

    async def test_silentClientAborted(self) -> None:
        for make in (makeEchoService, makeDiscardService, makeChatService, makeHTTPService, makeProxyService):
            service = make("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()), handshakeTimeout=0.3)
            port = await startListener(self, service)
            await self.assertAborted(service, port, b"")

    async def test_partialHelloAborted(self) -> None:
        """
        A client that sends the start of a ClientHello and no more is
        aborted too.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()), handshakeTimeout=0.3)
        port = await startListener(self, service)
        await self.assertAborted(service, port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

    async def test_sslEndpoint(self) -> None:
        """
        An C{ssl:} endpoint's connections get the same deadline.
        """
        certPath, keyPath = writeLeaf(self.mktemp(), trustme.CA().issue_cert("localhost"))
        service = makeEchoService(
            f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}", handshakeTimeout=0.3
        )
        port = await startListener(self, service)
        await self.assertAborted(service, port, b"")

    async def test_finishedHandshakeNotTimed(self) -> None:
        """
        A client whose handshake is done may then wait longer than the
        deadline; a plain listener has no deadline at all.
        """
        ca = trustme.CA()
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp(), ca), handshakeTimeout=0.3)
        port = await startListener(self, service)
        cadata = ca.cert_pem.bytes().decode("ascii")
        self.assertEqual(await threads.deferToThread(_handshakeThenWait, port, cadata, 1.0), b"ping")
        self.assertNotIn("tls_handshake_timeouts", service.stats.counters)
        plain = makeEchoService("tcp:0:interface=127.0.0.1", handshakeTimeout=0.3)
        client = await connect(self, await startListener(self, plain), Collector())
        await deferLater(reactor, 0.8, lambda: None)
        client.transport.write(b"pong")
        await client.waitFor(4)
        self.assertEqual(b"".join(client.received), b"pong")

    async def test_noDeadline(self) -> None:
        """
        C{handshakeTimeout=None}: no deadline (the listener's connections
        get no timer).
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()), handshakeTimeout=None)
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        await deferLater(reactor, 0.8, lambda: None)
        self.assertIsNone(client.reason)
        self.assertEqual(service.stats.connectionsOpen, 1)


class _HeldOutput:
    """
    The parts of a Twisted TCP transport a L{listen._Linger} looks at.
    """

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.7", 40000)


class LingerTests(SynchronousTestCase):
    """
    L{listen._Linger} ends a closed connection after
    L{listen.LINGER_TIMEOUT} seconds without input, or
    L{listen.LINGER_TIME} seconds in all, counted from when the output was
    all handed to the system.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = _HeldOutput()
        self.stats = ServiceStats("http")
        self.ended: List[float] = []

    def linger(self) -> Any:
        return listen._Linger(
            self.clock, self.transport, self.stats, lambda: self.ended.append(self.clock.seconds())  # type: ignore[arg-type]
        )

    def test_quietPeer(self) -> None:
        self.linger()
        self.clock.advance(listen.LINGER_TIMEOUT - 0.01)
        self.assertEqual(self.ended, [])
        self.clock.advance(0.01)
        self.assertEqual(self.ended, [listen.LINGER_TIMEOUT])
        self.assertEqual(self.stats.counters, {"close_timeouts": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_inputPostponesTheEnd(self) -> None:
        linger = self.linger()
        self.clock.advance(4)
        linger.received()
        self.clock.advance(4)
        self.assertEqual(self.ended, [])
        self.clock.advance(1)
        self.assertEqual(self.ended, [4 + listen.LINGER_TIMEOUT])

    def test_allowance(self) -> None:
        """
        With an allowance, L{listen._Linger.received} says when the bytes
        received take the peer past it; without one, never.
        """
        linger = listen._Linger(self.clock, self.transport, self.stats, lambda: None, allowance=100)  # type: ignore[arg-type]
        self.assertFalse(linger.received(60))
        self.assertFalse(linger.received(40))
        self.assertTrue(linger.received(1))
        linger.cancel()
        self.assertFalse(self.linger().received(10**12))

    def test_floodEndsAtLingerTime(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        linger = self.linger()
        while not self.ended:
            self.clock.advance(0.5)
            linger.received()
        self.assertEqual(self.ended, [listen.LINGER_TIME])
        self.assertEqual(self.stats.counters, {"close_floods": 1})
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["http: client 192.0.2.7 still sent 30 seconds after its connection closed: closed"],
        )

    def test_heldOutputIsNotCut(self) -> None:
        """
        While the transport still holds output (a peer slow to take its
        answer), nothing ends; the clock starts once the output is handed
        over.  (A peer that takes nothing is the service's to abort.)
        """
        self.transport._tempDataLen = 100
        linger = self.linger()
        self.clock.advance(100)
        self.assertEqual(self.ended, [])
        self.transport._tempDataLen = 0
        self.clock.advance(1)  # looked at once a second
        while not self.ended:
            self.clock.advance(0.5)
            linger.received()
        self.assertEqual(self.ended, [101 + listen.LINGER_TIME])

    def test_cancel(self) -> None:
        self.linger().cancel()
        self.clock.advance(100)
        self.assertEqual(self.ended, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _RefusedTransport(_HeldOutput):
    """
    The parts of a Twisted TCP transport a L{listen._Refusal} calls, which
    it records.
    """

    disconnecting = False
    _writeDisconnecting = False

    def __init__(self) -> None:
        self.calls: List[str] = []

    def __getattr__(self, name: str) -> Any:
        if name in ("stopReading", "unregisterProducer", "loseWriteConnection", "loseConnection", "abortConnection"):
            return lambda: self.calls.append(name)
        raise AttributeError(name)


class RefusalTests(SynchronousTestCase):
    """
    L{listen._Refusal} stops reading at once, sends the end of output once
    what waits is sent, and ends the connection after its grace: closed,
    or aborted if output still waits.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = _RefusedTransport()

    def test_closedAfterTheGrace(self) -> None:
        listen._Refusal(self.clock, self.transport, 2.0)  # type: ignore[arg-type]
        self.assertEqual(self.transport.calls, ["stopReading", "unregisterProducer", "loseWriteConnection"])
        self.clock.advance(1.9)
        self.assertEqual(len(self.transport.calls), 3)
        self.clock.advance(0.1)
        self.assertEqual(self.transport.calls[3:], ["loseConnection"])

    def test_abortedIfOutputWaits(self) -> None:
        listen._Refusal(self.clock, self.transport, 2.0)  # type: ignore[arg-type]
        self.transport._tempDataLen = 100
        self.clock.advance(2.0)
        self.assertEqual(self.transport.calls[3:], ["abortConnection"])

    def test_endOfOutputSentOnce(self) -> None:
        """
        The end of output is not asked for again when it was (a lingering
        close that turned into a refusal), nor on a transport closing
        already: asked again, Twisted wrote to the shut socket and lost the
        connection at once.
        """
        for closing in ("_writeDisconnecting", "disconnecting"):
            transport = _RefusedTransport()
            setattr(transport, closing, True)
            listen._Refusal(self.clock, transport, 2.0)  # type: ignore[arg-type]
            self.assertEqual(transport.calls, ["stopReading", "unregisterProducer"], closing)
            self.clock.advance(2.0)
            self.assertEqual(transport.calls[2:], ["loseConnection"], closing)

    def test_cancel(self) -> None:
        listen._Refusal(self.clock, self.transport, 2.0).cancel()  # type: ignore[arg-type]
        self.clock.advance(100)
        self.assertEqual(len(self.transport.calls), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])


@implementer(IHalfCloseableProtocol)
class _Refuser(Protocol):
    """
    Writes C{bye} and closes without reading on (with its factory's
    C{grace}) at the line C{HOSTILE}, or when the peer ends its input; then
    calls its factory's C{after} methods of its transport, as services do
    (chat pauses and resumes its producer; Twisted's HTTP/2 calls
    loseConnection after its own close).  It notes whether its socket is
    read after that, and when it was closed.
    """

    factory: Any
    refusedAt: float | None = None
    reading: bool | None = None

    def dataReceived(self, data: bytes) -> None:
        if b"HOSTILE" in data:
            self._refuse()

    def readConnectionLost(self) -> None:
        self._refuse()

    def writeConnectionLost(self) -> None:
        pass

    def _refuse(self) -> None:
        if self.refusedAt is not None:
            return
        self.refusedAt = reactor.seconds()
        self.transport.write(b"bye\r\n")
        self.transport.closeWithoutReading(self.factory.grace)
        for name in self.factory.after:
            getattr(self.transport, name)()
        sock = self.transport
        while not isinstance(sock, tcp.Connection):
            sock = sock.transport
        self.reading = sock in reactor.getReaders()
        self.factory.refusers.append(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.ended.append(reactor.seconds() - (self.refusedAt or 0.0))


class ClosingWithoutReadingTests(TestCase):
    """
    L{listen._TrackedProtocol.closeWithoutReading} over real sockets: the
    peer gets what was written and the end of output (over TLS a
    close_notify), nothing it sends after is read, whatever the service
    does with its transport after, and the connection ends after the grace;
    a peer that ended its input is closed at once.
    """

    GRACE = 3.0

    async def refused(self, tls: bool, after: List[str], halfClose: bool = False) -> Tuple[bytes, int, _Refuser, float]:
        """
        A client of a L{_Refuser} service that sends C{HOSTILE} (or ends
        its input, C{halfClose}), then sends on until its sends stall, then
        reads to the end; what it read, what it sent after, the refuser and
        seconds from the refusal to the end of the connection.
        """
        ca = trustme.CA() if tls else None
        factory = Factory.forProtocol(_Refuser)
        factory.grace, factory.after, factory.refusers, factory.ended = self.GRACE, after, [], []
        service = StreamListener(
            "refuser",
            "tcp:0:interface=127.0.0.1",
            factory,
            reactor=reactor,
            tls=makeServerOptions(self.mktemp(), ca) if ca else None,
            lingerTimeout=0.5,
        )
        port = await startListener(self, service)
        limit = 64 << 20

        def client() -> Tuple[bytes, int]:
            with _client(port, ca.cert_pem.bytes().decode() if ca else None) as conn:
                sent = 0
                if halfClose:
                    conn.sendall(b"x")
                    conn.shutdown(socket.SHUT_WR)
                else:
                    conn.sendall(b"HOSTILE\r\n")
                    conn.settimeout(1)
                    try:
                        while sent < limit:
                            conn.sendall(b"x" * 65536)
                            sent += 65536
                    except OSError:  # timed out: not read
                        pass
                    conn.settimeout(10)
                return recvUntil(conn), sent

        got, sent = await threads.deferToThread(client)
        await waitUntil(lambda: factory.ended, timeout=self.GRACE + 5)
        self.assertEqual(got, b"bye\r\n")
        self.assertLess(sent, limit)
        self.assertLess(service.stats.bytesIn, 1 << 20)
        self.assertEqual(service.stats.errors, 0)
        return got, sent, factory.refusers[0], factory.ended[0]

    async def test_notReadAndClosedAfterTheGrace(self) -> None:
        """
        Over TCP: the service resuming its transport after the close does
        not read the peer again (it read a flood on), and its
        loseConnection after does not cut the grace short (the connection
        was closed at once).
        """
        _, _, refuser, ended = await self.refused(False, ["pauseProducing", "resumeProducing", "loseConnection"])
        self.assertFalse(refuser.reading)
        self.assertGreaterEqual(ended, self.GRACE - 0.01)

    async def test_notReadAndClosedAfterTheGraceOverTLS(self) -> None:
        """
        The same over TLS, where the read gate under TLS stops reading: a
        resume from above did not start it again, nor did TLS's close that
        follows the service's loseConnection, which also started the
        lingering close (the connection ended after its 0.5 s timeout).
        """
        _, _, refuser, ended = await self.refused(True, ["pauseProducing", "resumeProducing", "loseConnection"])
        self.assertFalse(refuser.reading)
        self.assertGreaterEqual(ended, self.GRACE - 0.01)

    async def test_closedAtOnceWhenTheInputEnded(self) -> None:
        """
        A peer that ended its input has nothing more to send: the close is
        the ordinary one, at once, not after the grace.
        """
        self.GRACE = 30.0
        _, _, _, ended = await self.refused(False, [], halfClose=True)
        self.assertLess(ended, 5)


class _Kicker(Protocol):
    """
    Notes what it receives; at C{KICK}, closes its factory's first
    connection without reading on, as a service may close a client on
    another's word.
    """

    factory: Any

    def connectionMade(self) -> None:
        self.received: List[bytes] = []
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if b"KICK" in data:
            self.factory.connections[0].transport.closeWithoutReading(self.factory.grace)
            self.factory.kicked = True


class ClosedWithoutReadingByAnotherTests(TestCase):
    """
    A connection closed without reading on while the reactor handles
    another's input may still be read once in that pass: the epoll and
    poll reactors call C{doRead} for every socket their poll found
    readable, even one that stopped reading since.  What is read then is
    counted, and not given to its protocol.
    """

    async def test_readInTheSamePassNotGivenToTheProtocol(self) -> None:
        if type(reactor).__name__ not in ("EPollReactor", "PollReactor"):
            raise SkipTest("only the epoll and poll reactors read a socket that stopped reading")
        factory = Factory.forProtocol(_Kicker)
        factory.connections, factory.grace, factory.kicked = [], 0.2, False
        service = StreamListener("kicker", "tcp:0:interface=127.0.0.1", factory, reactor=reactor)
        port = await startListener(self, service)
        clients = []
        for count in (1, 2):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            self.addCleanup(clients[-1].close)
            await waitUntil(lambda: len(factory.connections) == count)
        victim, kicker = factory.connections
        for protocol in (victim, kicker):
            protocol.transport.pauseProducing()
        clients[0].sendall(b"late")
        clients[1].sendall(b"KICK")

        def waiting(protocol: _Kicker) -> bool:
            try:
                return bool(protocol.transport.transport.socket.recv(8, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except BlockingIOError:
                return False

        await waitUntil(lambda: waiting(victim) and waiting(kicker))
        # Both readable in the same poll, the kicker's first.
        kicker.transport.resumeProducing()
        victim.transport.resumeProducing()
        await waitUntil(lambda: factory.kicked)
        await waitUntil(lambda: service.stats.bytesIn == 8)
        self.assertEqual(kicker.received, [b"KICK"])
        self.assertEqual(victim.received, [])


def _client(port: int, cadata: str | None) -> socket.socket:
    """
    Blocking: a socket to C{port}, over TLS when C{cadata} (the CA to
    trust) is given.
    """
    import ssl

    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if cadata is None:
        return raw
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cadata)
    return context.wrap_socket(raw, server_hostname="localhost")


def _answeredThenClosed(conn: socket.socket) -> bytes:
    """
    Blocking: ask for C{/healthz} with C{Connection: close} and read until
    the server's close (its FIN, or its close_notify over TLS).
    """
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return recvUntil(conn)


class LingeringCloseTests(TestCase):
    """
    When a service closes a connection, its listener sends everything, then
    the end of output (TCP's FIN, TLS's close_notify), and reads on,
    dropping what comes, until the client closes too, or for
    L{listen.LINGER_TIMEOUT} seconds without input, or L{listen.LINGER_TIME}
    seconds in all (nginx's lingering close).
    """

    async def startHTTP(self, tls: bool, **kwargs: Any) -> Tuple[int, StreamListener, str | None]:
        cadata = None
        options = None
        if tls:
            ca = trustme.CA()
            options = makeServerOptions(self.mktemp(), ca, [b"http/1.1"])
            cadata = ca.cert_pem.bytes().decode()
        service = makeHTTPService("tcp:0:interface=127.0.0.1", tls=options, **kwargs)
        port = await startListener(self, service)
        return port, service, cadata

    async def closedByTheServer(self, tls: bool, **kwargs: Any) -> Tuple[StreamListener, socket.socket]:
        """
        A web server (made with C{kwargs}), and a client connection to it
        that got its answer and the server's close, and holds its socket
        open.
        """
        port, service, cadata = await self.startHTTP(tls, **kwargs)
        conn = await threads.deferToThread(_client, port, cadata)
        self.addCleanup(conn.close)
        answer = await threads.deferToThread(_answeredThenClosed, conn)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        return service, conn

    async def closedWithin(self, service: StreamListener, seconds: float) -> float:
        """
        Seconds until C{service} has no connection open; fails after
        C{seconds}.
        """
        began = reactor.seconds()
        while service.stats.connectionsOpen:
            if reactor.seconds() - began > seconds:
                self.fail(f"still open after {seconds} s")
            await deferLater(reactor, 0.02, lambda: None)
        return reactor.seconds() - began

    async def _uploadOverTheLimit(self, tls: bool) -> None:
        """
        A client that sends its whole body before it reads (Python's
        C{http.client}) gets the 413, not a reset: over plain
        TCP the server closed at once, and the body still coming made the
        system reset the connection (C{BrokenPipeError}); nginx answers
        413 too.
        """
        import http.client
        import ssl

        port, service, cadata = await self.startHTTP(tls)

        def upload() -> int:
            if cadata is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            else:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.load_verify_locations(cadata=cadata)
                connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
                connection._create_connection = lambda address, *a, **k: socket.create_connection(  # type: ignore[attr-defined]
                    ("127.0.0.1", port), *a, **k
                )
            try:
                connection.request("POST", "/api/echo", body=b"x" * (32 * 1024 * 1024))
                return connection.getresponse().status
            finally:
                connection.close()

        self.assertEqual(await threads.deferToThread(upload), 413)
        await self.closedWithin(service, 5)

    async def test_uploadOverTheLimitGetsItsAnswer(self) -> None:
        await self._uploadOverTheLimit(tls=False)

    async def test_uploadOverTheLimitGetsItsAnswerOverTLS(self) -> None:
        await self._uploadOverTheLimit(tls=True)

    async def _quietClient(self, tls: bool) -> None:
        """
        A client that got its answer and the server's close but neither
        closes nor sends keeps its connection the listener's
        C{lingerTimeout} seconds (C{--linger-timeout}), then the server
        closes it, counted as C{close_timeouts}, not as an error (over TLS
        it stayed until a timeout of the service, 60 s for the web
        server's).
        """
        service, _ = await self.closedByTheServer(tls, lingerTimeout=0.5)
        self.assertEqual(service.stats.connectionsOpen, 1)
        waited = await self.closedWithin(service, 3)
        self.assertGreater(waited, 0.3)
        self.assertEqual(service.stats.counters.get("close_timeouts"), 1)
        self.assertEqual(service.stats.errors, 0)

    async def test_quietClient(self) -> None:
        await self._quietClient(tls=False)

    async def test_quietClientOverTLS(self) -> None:
        await self._quietClient(tls=True)

    async def _floodingClient(self, tls: bool) -> None:
        """
        A client that goes on sending after the server's close is read
        (and dropped) for the listener's C{lingerTime} seconds
        (C{--linger-time}), then closed, counted as C{close_floods} and
        logged (over TLS it went on until a timeout of the service).
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service, conn = await self.closedByTheServer(tls, lingerTimeout=0.5, lingerTime=1.0)
        received = service.stats.bytesIn

        def flood() -> None:
            import time

            conn.settimeout(0.5)
            end = time.monotonic() + 6
            while time.monotonic() < end:
                try:
                    conn.sendall(b"y" * 16384)
                    time.sleep(0.01)
                except OSError:  # reset, timed out: the server is gone
                    return

        flooding = threads.deferToThread(flood)
        waited = await self.closedWithin(service, 4)
        await flooding
        self.assertGreater(waited, 0.8)
        if not tls:  # over TLS, dropped under the count
            self.assertGreater(service.stats.bytesIn - received, 30 * 16384)
        self.assertEqual(service.stats.counters.get("close_floods"), 1)
        self.assertNotIn("close_timeouts", service.stats.counters)
        messages = [formatEvent(e) for e in events if "after its connection closed" in formatEvent(e)]
        self.assertEqual(messages, ["http: client 127.0.0.1 still sent 1 seconds after its connection closed: closed"])

    async def test_floodingClient(self) -> None:
        await self._floodingClient(tls=False)

    async def test_floodingClientOverTLS(self) -> None:
        await self._floodingClient(tls=True)

    async def _closingClient(self, tls: bool) -> None:
        """
        A client that closes once it has its answer ends the connection at
        once, with nothing counted.
        """
        port, service, cadata = await self.startHTTP(tls)

        def exchange() -> bytes:
            with _client(port, cadata) as conn:
                return _answeredThenClosed(conn)

        answer = await threads.deferToThread(exchange)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        await self.closedWithin(service, 1)
        self.assertNotIn("close_timeouts", service.stats.counters)
        self.assertEqual(service.stats.errors, 0)

    async def test_closingClient(self) -> None:
        await self._closingClient(tls=False)

    async def test_closingClientOverTLS(self) -> None:
        await self._closingClient(tls=True)

    async def test_halfClosedClientNotKept(self) -> None:
        """
        A client that ended its input before the service closed (echo's
        C{nc -N}) is not waited for: it already closed its side.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1")
        port = await startListener(self, service)

        def echo() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"ping")
                conn.shutdown(socket.SHUT_WR)
                answer = recvUntil(conn)
                import time

                time.sleep(1)  # holds its socket
                return answer

        waiting = threads.deferToThread(echo)
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(service.stats.connectionsOpen, 0)
        self.assertEqual(await waiting, b"ping")

    async def test_stopDoesNotLinger(self) -> None:
        """
        Stopping closes idle connections at once: the process is going
        away, and a client that does not close its side would hold the
        stop for the whole grace period.
        """
        port, service, cadata = await self.startHTTP(False, grace=10)

        def keepAlive() -> socket.socket:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            recvUntil(conn, lambda r: r.endswith(b"\r\n\r\nok\n"))
            return conn

        conn = await threads.deferToThread(keepAlive)
        self.addCleanup(conn.close)
        began = reactor.seconds()
        await service.stopService()
        self.assertLess(reactor.seconds() - began, 2)


def _helloRecords(declared: int, sent: int) -> bytes:
    """
    TLS handshake records carrying the start of a ClientHello that declares
    C{declared} bytes: C{sent} bytes of it, in records of 16 KiB.
    """
    message = b"\x01" + declared.to_bytes(3, "big") + b"\x03\x03" + b"\x00" * (sent - 6)
    return b"".join(
        b"\x16\x03\x01" + struct.pack(">H", len(chunk)) + chunk
        for chunk in (message[i : i + 16384] for i in range(0, len(message), 16384))
    )


def _leave(conn: socket.socket, reset: bool) -> None:
    """
    Blocking: close C{conn} without a TLS close_notify, with a TCP reset if
    C{reset}, else with a FIN after which it reads (and drops) until the
    server closes.
    """
    if reset:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        conn.shutdown(socket.SHUT_WR)  # an SSLSocket's sends no close_notify
        raw = socket.socket(fileno=os.dup(conn.fileno()))
        raw.settimeout(10)
        with raw:
            while raw.recv(65536):
                pass
    conn.close()


class PeerEndTests(TestCase):
    """
    A client that goes away, however it does, is not counted among
    C{errors}, over TLS as over TCP: in the middle of an answer (aria2c
    drops the connections of ranges it no longer needs), with a TCP reset
    once answered (curl after an HTTP/2 exchange), or over TLS without a
    close_notify.  Each was an error over TLS, and over TCP only a reset
    was; a TLS error still is.
    """

    startHTTP = LingeringCloseTests.startHTTP
    closedWithin = LingeringCloseTests.closedWithin

    async def _leaves(self, tls: bool, midAnswer: bool, reset: bool) -> None:
        root = self.mktemp()
        os.makedirs(root)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(b"x" * (16 * 1024 * 1024))
        port, service, cadata = await self.startHTTP(tls, root=root)

        def exchange() -> bytes:
            conn = _client(port, cadata)
            try:
                if midAnswer:
                    conn.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                    received = recvUntil(conn, lambda r: len(r) > 256 * 1024)
                else:
                    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    received = recvUntil(conn, lambda r: r.endswith(b"\r\n\r\nok\n"))
                _leave(conn, reset)
            finally:
                conn.close()
            return received

        received = await threads.deferToThread(exchange)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received[:100])
        await self.closedWithin(service, 5)
        self.assertEqual((service.stats.errors, service.stats.connectionsTotal), (0, 1), service.stats.snapshot())

    async def test_resetInTheMiddleOfAnAnswer(self) -> None:
        await self._leaves(tls=False, midAnswer=True, reset=True)

    async def test_resetInTheMiddleOfAnAnswerOverTLS(self) -> None:
        await self._leaves(tls=True, midAnswer=True, reset=True)

    async def test_resetOnceAnswered(self) -> None:
        await self._leaves(tls=False, midAnswer=False, reset=True)

    async def test_resetOnceAnsweredOverTLS(self) -> None:
        await self._leaves(tls=True, midAnswer=False, reset=True)

    async def test_noCloseNotifyInTheMiddleOfAnAnswer(self) -> None:
        await self._leaves(tls=True, midAnswer=True, reset=False)

    async def test_noCloseNotifyOnceAnswered(self) -> None:
        await self._leaves(tls=True, midAnswer=False, reset=False)

    async def test_tlsErrorCounted(self) -> None:
        """
        A record that does not decrypt (its authentication tag is wrong)
        ends the connection as an error.
        """
        port, service, cadata = await self.startHTTP(True)

        def forge() -> None:
            conn = _client(port, cadata)
            with conn, socket.socket(fileno=os.dup(conn.fileno())) as raw:
                raw.settimeout(10)
                raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
                recvUntil(raw)

        await threads.deferToThread(forge)
        await self.closedWithin(service, 5)
        self.assertEqual(service.stats.errors, 1)


class TLSCloseNotifyInHandshakeTests(TestCase):
    """
    A client that sends its close_notify before its handshake is done (as
    aria2c does for each connection it no longer needs) is closed cleanly:
    Twisted's TLS took pyOpenSSL's argument-less C{ZeroReturnError} apart,
    and an C{IndexError} went up to the reactor, logged as an unhandled
    error with its traceback.
    """

    async def test_closeNotifyAfterTheClientHello(self) -> None:
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        tls, _, outgoing = memoryTLSClient()
        with self.assertRaises(ssl.SSLWantReadError):
            tls.do_handshake()
        closeNotify = b"\x15\x03\x03\x00\x02\x01\x00"  # a warning alert, close_notify
        client = await connect(self, port, Collector())
        client.transport.write(outgoing.read() + closeNotify)
        await client.closed.addTimeout(5, reactor)
        self.assertEqual(service.stats.errors, 0)
        self.assertEqual(service.stats.connectionsOpen, 0)


class TLSHandshakeSizeTests(TestCase):
    """
    A TLS client may send L{listen.HANDSHAKE_BYTES} before its handshake is
    done; one that sends more is aborted, logged and counted as
    C{tls_handshakes_too_large} (OpenSSL held a ClientHello of up to 128
    KiB, about 240 KB of memory a connection, until the handshake timeout;
    with a limit of 64 KiB, 200 KiB).
    """

    async def sendHello(self, *hello: int) -> tuple[Any, Collector]:
        """
        Send a TLS echo service C{_helloRecords(*hello)}; return the
        service and the client, once the service has closed it.
        """
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()))
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        client.transport.write(_helloRecords(*hello))
        await client.closed.addTimeout(5, reactor)
        return service, client

    async def test_helloOverBoringSSLsLimitAborted(self) -> None:
        """
        A ClientHello over 16 KiB, which BoringSSL (a server asking for no
        client certificate) refuses too, is aborted as it comes.
        """
        service, _ = await self.sendHello(40000, 20000)
        self.assertEqual(service.stats.counters.get("tls_handshakes_too_large"), 1)

    async def test_largeHelloAborted(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service, client = await self.sendHello(131000, 70000)
        self.assertEqual(client.received, [])
        self.assertEqual(service.stats.counters.get("tls_handshakes_too_large"), 1)
        self.assertNotIn("tls_handshake_timeouts", service.stats.counters)
        messages = [formatEvent(e) for e in events if "before its TLS handshake ended" in formatEvent(e)]
        self.assertEqual(len(messages), 1, messages)
        self.assertTrue(messages[0].startswith("echo: client 127.0.0.1 sent "), messages)

    async def test_helloWithinTheLimitWaits(self) -> None:
        """
        A ClientHello not yet complete under the limit is waited for (until
        the handshake timeout).
        """
        service = makeEchoService(
            "tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp()), handshakeTimeout=1
        )
        port = await startListener(self, service)
        client = await connect(self, port, Collector())
        client.transport.write(_helloRecords(16384, 16000))
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(service.stats.connectionsOpen, 1)
        await client.closed.addTimeout(5, reactor)
        self.assertEqual(service.stats.counters.get("tls_handshake_timeouts"), 1)
        self.assertNotIn("tls_handshakes_too_large", service.stats.counters)

    async def test_dataRightAfterTheHandshake(self) -> None:
        """
        What a client sends with and after its last handshake message, in
        the same reads, is not counted: a large upload at once is echoed.
        """
        import ssl

        ca = trustme.CA()
        service = makeEchoService("tcp:0:interface=127.0.0.1", tls=makeServerOptions(self.mktemp(), ca))
        port = await startListener(self, service)
        data = os.urandom(256 * 1024)

        def upload() -> bytes:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cadata=ca.cert_pem.bytes().decode("ascii"))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                # The handshake is finished as the first data goes out.
                with context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as conn:
                    conn.sendall(data)
                    return recvUntil(conn, lambda received: len(received) >= len(data))

        self.assertEqual(await threads.deferToThread(upload), data)
        self.assertNotIn("tls_handshakes_too_large", service.stats.counters)
