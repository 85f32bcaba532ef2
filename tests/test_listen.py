"""
Tests for L{netsuite.listen}: endpoint parsing, connection limits, stats and
start-up errors.
"""

from __future__ import annotations

import socket

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netsuite.echo import makeEchoService, makeEchoUDPService
from netsuite.listen import (
    ListenError,
    TrackingFactory,
    _describe,
    parseDatagramEndpoint,
    parseStreamEndpoint,
)
from netsuite.stats import ServiceStats
from tests.helpers import Collector, connect, occupiedPort, startListener
from tests.tlshelpers import makeServerOptions


class ParseTests(SynchronousTestCase):
    def test_datagramEndpoint(self) -> None:
        self.assertEqual(parseDatagramEndpoint("udp:7"), (7, ""))
        self.assertEqual(parseDatagramEndpoint("udp:7:interface=127.0.0.1"), (7, "127.0.0.1"))
        self.assertEqual(parseDatagramEndpoint("udp:7:interface=\\:\\:1"), (7, "::1"))

    def test_badDatagramEndpoints(self) -> None:
        for bad in ("udp", "udp:x", "udp:70000", "udp:-1", "tcp:7", "udp:7:iface=x", "udp:7:interface"):
            self.assertRaises(ValueError, parseDatagramEndpoint, bad)

    def test_badStreamEndpointMessage(self) -> None:
        message = str(self.assertRaises(ValueError, parseStreamEndpoint, None, "tcp:http"))
        self.assertIn("'tcp:http'", message)
        self.assertIn("tcp:8080:interface=127.0.0.1", message)

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

    def test_maxConnections(self) -> None:
        stats = ServiceStats("x")
        factory = TrackingFactory(Factory.forProtocol(Idle), stats, maxConnections=3)
        transports = [self.connect(factory, f"10.0.0.{i}") for i in range(5)]
        self.assertEqual([t.connected for t in transports], [True] * 3 + [False] * 2)
        self.assertEqual(stats.connectionsOpen, 3)
        self.assertEqual(stats.connectionsTotal, 3)

    def test_perHostCountsForgottenWhenZero(self) -> None:
        factory = TrackingFactory(Factory.forProtocol(Idle), ServiceStats("x"), maxPerHost=5)
        for i in range(100):
            self.connect(factory, f"10.0.{i // 256}.{i % 256}").loseConnection()
        self.assertEqual(factory._perHost, {})

    def test_errorsCounted(self) -> None:
        """
        A connection that ends in an error (not a clean close) counts as an
        error.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        stats = ServiceStats("x")
        factory = TrackingFactory(Factory.forProtocol(Idle), stats)
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        protocol.makeConnection(StringTransportWithDisconnection())
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(stats.errors, 1)


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
