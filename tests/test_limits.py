"""
Tests for L{netsuite.limits} and L{netsuite.stats}.
"""

import socket
import struct
import sys
import time
from types import SimpleNamespace
from typing import Any

from twisted.internet import abstract
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from netsuite.limits import (
    BucketTable,
    IdleTimeout,
    SendStall,
    TokenBucket,
    cancelIfActive,
    decimal,
    heldBytes,
    hostKey,
    peerReset,
)
from netsuite.stats import StatsRegistry


class DecimalTests(SynchronousTestCase):
    """
    L{decimal} reads digits as HTTP lengths and counts are read.
    """

    def test_number(self) -> None:
        self.assertEqual(decimal(b"0", 10**18), 0)
        self.assertEqual(decimal(b"000", 10**18), 0)
        self.assertEqual(decimal(b"0" * 5000 + b"42", 10**18), 42)
        self.assertEqual(decimal(b"9" * 18, 10**18), 10**18 - 1)

    def test_capped(self) -> None:
        """
        A number over C{cap} is C{cap}, also one of more digits than
        C{int()} reads (4,300).
        """
        self.assertEqual(decimal(b"1" + b"0" * 18, 10**18), 10**18)
        self.assertEqual(decimal(b"7" * 5000, 10**9), 10**9)
        self.assertEqual(decimal(b"1000000001", 10**9), 10**9)


class HostKeyTests(SynchronousTestCase):
    """
    Limits per address count an IPv6 client by its /64.
    """

    def test_keys(self) -> None:
        self.assertEqual(hostKey("10.0.0.1"), "10.0.0.1")
        self.assertEqual(hostKey("2001:db8::1"), "2001:db8::/64")
        self.assertEqual(hostKey("2001:db8:0:0:ffff:ffff:ffff:ffff"), "2001:db8::/64")
        self.assertEqual(hostKey("2001:db8:0:1::1"), "2001:db8:0:1::/64")
        self.assertEqual(hostKey("::ffff:10.1.2.3"), "10.1.2.3")
        self.assertEqual(hostKey("fe80::1%eth0"), "fe80::/64")
        self.assertEqual(hostKey("/run/netsuite.sock"), "/run/netsuite.sock")
        self.assertEqual(hostKey("not:an:address"), "not:an:address")


class HeldBytesTests(SynchronousTestCase):
    """
    L{heldBytes} counts what a Twisted socket transport holds, from its
    private buffer names.
    """

    def transport(self, **names: object) -> object:
        held = type("Transport", (), {})()
        held.__dict__.update(names)
        return held

    def test_counted(self) -> None:
        """
        The buffered list less what was sent of it, and the writes not yet
        joined into it.
        """
        self.assertEqual(heldBytes(self.transport(dataBuffer=b"x" * 100, offset=40, _tempDataLen=7)), 67)

    def test_nameGoneCountsNothing(self) -> None:
        """
        A later Twisted without one of the names: what the others say, not
        an C{AttributeError} in the protocol that asked.
        """
        self.assertEqual(heldBytes(self.transport(dataBuffer=b"x" * 100, offset=40)), 60)
        self.assertEqual(heldBytes(self.transport()), 0)


class TokenBucketTests(SynchronousTestCase):
    def test_burstThenRate(self) -> None:
        """
        A full bucket gives C{burst} tokens at once, then C{rate} a second.
        """
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=4, clock=clock)
        self.assertEqual([bucket.take() for _ in range(5)], [True] * 4 + [False])
        clock.advance(0.5)
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.take())

    def test_neverAboveBurst(self) -> None:
        """
        A long quiet time refills only up to C{burst}.
        """
        clock = Clock()
        bucket = TokenBucket(rate=10, burst=3, clock=clock)
        clock.advance(1000)
        self.assertEqual(sum(bucket.take() for _ in range(10)), 3)

    def test_giveUpToBurst(self) -> None:
        """
        L{TokenBucket.give} adds tokens at once, never past C{burst}.
        """
        clock = Clock()
        bucket = TokenBucket(rate=1, burst=5, clock=clock)
        self.assertEqual(sum(bucket.take() for _ in range(5)), 5)
        bucket.give(2)
        self.assertEqual(sum(bucket.take() for _ in range(5)), 2)
        bucket.give(100)
        self.assertEqual(sum(bucket.take() for _ in range(10)), 5)

    def test_delaySaysWhenTokensReturn(self) -> None:
        """
        L{TokenBucket.delay} is the wait until enough tokens are back.
        """
        clock = Clock()
        bucket = TokenBucket(rate=4, burst=1, clock=clock)
        self.assertEqual(bucket.delay(), 0)
        bucket.take()
        self.assertAlmostEqual(bucket.delay(), 0.25)
        clock.advance(0.25)
        self.assertTrue(bucket.take())

    def test_takeLargerAmounts(self) -> None:
        """
        A take of more than what is left fails and takes nothing.
        """
        clock = Clock()
        bucket = TokenBucket(rate=100, burst=100, clock=clock)
        self.assertTrue(bucket.take(60))
        self.assertFalse(bucket.take(60))
        self.assertTrue(bucket.take(40))

    def test_spendGoesIntoDebt(self) -> None:
        """
        L{TokenBucket.spend} always takes, going below zero, and says how
        long until the debt is paid; the bucket refills from the debt.
        """
        clock = Clock()
        bucket = TokenBucket(rate=100, burst=50, clock=clock)
        self.assertEqual(bucket.spend(30), 0.0)
        self.assertAlmostEqual(bucket.spend(120), 1.0)  # 20 left, 100 owed
        self.assertFalse(bucket.take(1))
        clock.advance(0.5)
        self.assertAlmostEqual(bucket.spend(10), 0.6)
        clock.advance(0.6)
        self.assertAlmostEqual(bucket.spend(0), 0.0)
        clock.advance(10)
        self.assertEqual(bucket.spend(50), 0.0)
        self.assertFalse(bucket.take(1))

    def test_rejectsNonPositive(self) -> None:
        self.assertRaises(ValueError, TokenBucket, 0, 1, Clock())


class BucketTableTests(SynchronousTestCase):
    def test_separateKeys(self) -> None:
        """
        Each key has its own bucket.
        """
        table: BucketTable[str] = BucketTable(1, 1, Clock())
        self.assertTrue(table.take("a"))
        self.assertFalse(table.take("a"))
        self.assertTrue(table.take("b"))

    def test_boundedKeys(self) -> None:
        """
        No more than C{maxKeys} buckets are kept; the least recently used one
        is forgotten first.
        """
        table: BucketTable[int] = BucketTable(1, 1, Clock(), maxKeys=3)
        for key in range(3):
            table.take(key)
        table.take(0)  # 0 is now the most recently used
        table.take(99)
        self.assertEqual(len(table), 3)
        self.assertFalse(table.take(0))  # still remembered, still empty
        self.assertTrue(table.take(1))  # forgotten, so full again

    def test_keepUntilFull(self) -> None:
        """
        With C{keepUntilFull}, a bucket is forgotten only once it has
        refilled: while the least recently used one has not, a key not
        seen gets nothing (no fresh burst for a key pushed out by many
        others) and no place, until it has.
        """
        clock = Clock()
        table: BucketTable[str] = BucketTable(1, 2, clock, maxKeys=2, keepUntilFull=True)
        self.assertTrue(table.take("a", 2))
        self.assertTrue(table.take("b"))
        self.assertEqual((table.available("c"), table.delay("c")), (0.0, 2.0))
        self.assertFalse(table.take("c"))
        self.assertEqual(len(table), 2)
        self.assertEqual(table.available("a"), 0.0)  # kept
        clock.advance(2)
        self.assertEqual(table.available("c"), 2.0)
        self.assertTrue(table.take("c"))  # "a" had refilled: forgotten
        self.assertEqual(len(table), 2)
        self.assertTrue(table.take("a", 2))  # so had "b"
        self.assertEqual(len(table), 2)
        self.assertFalse(table.take("b"))  # "c" has not

    def test_delay(self) -> None:
        """
        C{delay} tells how long until a key's bucket holds a token again
        (none for a key not seen), taking none and adding no key.
        """
        clock = Clock()
        table: BucketTable[str] = BucketTable(2, 1, clock)
        self.assertEqual(table.delay("a"), 0.0)
        self.assertEqual(len(table), 0)
        table.take("a")
        self.assertEqual(table.delay("a"), 0.5)
        clock.advance(0.5)
        self.assertEqual(table.delay("a"), 0.0)
        self.assertTrue(table.take("a"))


class CancelIfActiveTests(SynchronousTestCase):
    """
    L{cancelIfActive} cancels a call still to come, and passes over one
    that is L{None}, has run or was cancelled (which C{cancel} refuses).
    """

    def test_pendingCallCancelled(self) -> None:
        clock = Clock()
        ran = []
        call = clock.callLater(1, ran.append, 1)
        cancelIfActive(call)
        self.assertFalse(call.active())
        clock.advance(2)
        self.assertEqual(ran, [])

    def test_noCallRunOrCancelledPassedOver(self) -> None:
        clock = Clock()
        ran = []
        done = clock.callLater(1, ran.append, 1)
        clock.advance(1)
        cancelled = clock.callLater(1, ran.append, 2)
        cancelled.cancel()
        for call in (None, done, cancelled):
            cancelIfActive(call)
        clock.advance(2)
        self.assertEqual(ran, [1])


class IdleTimeoutTests(SynchronousTestCase):
    def test_firesAfterSilence(self) -> None:
        clock = Clock()
        fired = []
        IdleTimeout(clock, 10, lambda: fired.append(clock.seconds()))
        clock.advance(9.9)
        self.assertEqual(fired, [])
        clock.advance(0.1)
        self.assertEqual(fired, [10])

    def test_touchPostpones(self) -> None:
        """
        Activity moves the deadline to C{timeout} after the last touch.
        """
        clock = Clock()
        fired = []
        idle = IdleTimeout(clock, 10, lambda: fired.append(clock.seconds()))
        clock.advance(6)
        idle.touch()
        clock.advance(6)
        idle.touch()
        clock.advance(9)
        self.assertEqual(fired, [])
        clock.advance(1)
        self.assertEqual(fired, [22])

    def test_cancel(self) -> None:
        clock = Clock()
        fired = []
        idle = IdleTimeout(clock, 1, lambda: fired.append(True))
        idle.cancel()
        clock.advance(5)
        self.assertEqual(fired, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class SendStallTests(SynchronousTestCase):
    """
    L{SendStall}: nginx's C{send_timeout}, from the last output the peer
    took.
    """

    def stall(self, timeout: float = 60) -> tuple[Clock, list[int], list[float], SendStall]:
        clock = Clock()
        left = [100_000]
        stalled: list[float] = []
        watch = SendStall(clock, timeout, lambda: left[0], lambda: stalled.append(clock.seconds()))
        return clock, left, stalled, watch

    def test_peerTakingNothingStalls(self) -> None:
        """
        Output the peer takes none of ends the watch at the timeout, no
        sooner, and leaves nothing to run.
        """
        clock, left, stalled, watch = self.stall()
        watch.watch()
        clock.advance(59.9)
        self.assertEqual(stalled, [])
        clock.advance(0.1)
        self.assertEqual(stalled, [60])
        self.assertFalse(watch.watching)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slowSteadyPeerDoesNotStall(self) -> None:
        """
        A peer that takes some of its output now and then, however little,
        is never timed out (timing the wait cut it off at the timeout);
        once it stops, the timeout runs from the last look that saw it
        take something, so it ends at most a tenth late.
        """
        clock, left, stalled, watch = self.stall()
        watch.watch()
        for _ in range(300):  # 50 bytes a second for five minutes
            clock.advance(1)
            left[0] -= 50
        self.assertEqual(stalled, [])
        clock.pump([1] * 59)
        self.assertEqual(stalled, [])
        clock.pump([1] * 7)
        self.assertEqual(stalled, [366])

    def test_tookCalledOnProgress(self) -> None:
        """
        C{took} is called at each look that finds the peer took something.
        """
        clock = Clock()
        left = [1000]
        took: list[float] = []
        watch = SendStall(clock, 10, lambda: left[0], lambda: None, lambda: took.append(clock.seconds()))
        watch.watch()
        clock.advance(1)  # the first look
        left[0] -= 1
        clock.advance(1)
        clock.advance(1)
        self.assertEqual(took, [2])

    def test_stopAndWatchAgain(self) -> None:
        """
        A watch stopped and begun again times out from its new beginning;
        a stopped one never fires; L{SendStall.progressed} restarts the
        timeout; L{SendStall.cancel} leaves nothing to run.
        """
        clock, left, stalled, watch = self.stall()
        watch.watch()
        clock.advance(50)
        watch.stop()
        clock.advance(100)
        self.assertEqual(stalled, [])
        watch.watch()
        clock.advance(30)
        watch.progressed()
        clock.advance(59)
        self.assertEqual(stalled, [])
        clock.advance(1)
        self.assertEqual(stalled, [240])
        watch.watch()
        watch.cancel()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(100)
        self.assertEqual(stalled, [240])

    def test_newWatchDoesNotCompareWithThePreviousOne(self) -> None:
        """
        A new watch does not count as progress what was taken while no
        watch was on: the peer that takes nothing of it is cut off at the
        timeout from its beginning, not a look later.
        """
        clock, left, stalled, watch = self.stall()
        watch.watch()
        clock.advance(6)  # a look: 100,000 left
        watch.stop()
        clock.advance(10)
        left[0] = 50_000  # taken while nothing waited for the peer
        watch.watch()
        clock.advance(59.9)
        self.assertEqual(stalled, [])
        clock.advance(0.1)
        self.assertEqual(stalled, [76])


class StatsTests(SynchronousTestCase):
    def test_registrySharesPerService(self) -> None:
        """
        Listeners of one service share one stats object; the snapshot is
        JSON-ready and includes service-specific counters.
        """
        registry = StatsRegistry()
        echo = registry.forService("echo")
        self.assertIs(registry.forService("echo"), echo)
        echo.bytesIn += 5
        echo.countError("timeouts")
        self.assertEqual(
            registry.snapshot(),
            {
                "echo": {
                    "connections_open": 0,
                    "connections_total": 0,
                    "bytes_in": 5,
                    "bytes_out": 0,
                    "errors": 1,
                    "timeouts": 1,
                }
            },
        )


class PeerResetTests(SynchronousTestCase):
    """
    L{peerReset} tells a connection its peer reset from one that is well
    or only half-closed, by the socket under a transport.
    """

    def pair(self) -> tuple[socket.socket, socket.socket]:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        return client, server

    def transport(self, sock: socket.socket) -> Any:
        # As the reactor's TCP transport, under a wrapper (TLS, tracking).
        descriptor = abstract.FileDescriptor()
        descriptor.socket = sock
        return SimpleNamespace(transport=descriptor)

    def settled(self) -> None:
        time.sleep(0.05)  # loopback delivers at once; a little margin

    def test_wellIsNotReset(self) -> None:
        client, server = self.pair()
        client.sendall(b"x" * 1000)
        self.settled()
        self.assertFalse(peerReset(self.transport(server)))

    def test_halfClosedIsNotReset(self) -> None:
        client, server = self.pair()
        client.shutdown(socket.SHUT_WR)
        self.settled()
        self.assertFalse(peerReset(self.transport(server)))

    def test_reset(self) -> None:
        client, server = self.pair()
        client.sendall(b"x" * 100000)  # unread: a reset is seen all the same
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        self.settled()
        self.assertTrue(peerReset(self.transport(server)))
        if sys.platform.startswith("linux"):  # told by the state, which stays
            self.assertTrue(peerReset(self.transport(server)))

    def test_noSocket(self) -> None:
        self.assertFalse(peerReset(object()))

    def test_softErrorIsNotReset(self) -> None:
        """
        One ICMP host unreachable for a connection (a router's, while a
        route flaps) is a soft error TCP rides out, not a reset: taken for
        one, it aborted a healthy client.  (Raw sockets: root on Linux.)
        """
        try:
            sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except (AttributeError, OSError):
            raise SkipTest("needs raw sockets (root on Linux)")
        self.addCleanup(sniffer.close)
        self.addCleanup(sender.close)
        sniffer.bind(("lo", 0))
        sniffer.settimeout(2)
        client, server = self.pair()
        serverPort, clientPort = server.getsockname()[1], client.getsockname()[1]
        first = None  # the server's initial sequence number, from its SYN-ACK
        while first is None:
            packet = sniffer.recv(65535)[14:]
            if len(packet) < 40 or packet[9] != 6:
                continue
            segment = packet[(packet[0] & 15) * 4 :]
            source, destination, sequence = struct.unpack("!HHI", segment[:8])
            if (source, destination) == (serverPort, clientPort) and segment[13] & 0x12 == 0x12:
                first = sequence
        quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, *[socket.inet_aton("127.0.0.1")] * 2)
        quoted = quoted[:10] + struct.pack("!H", _checksum(quoted)) + quoted[12:]
        quoted += struct.pack("!HHI", serverPort, clientPort, (first + 1) & 0xFFFFFFFF)
        icmp = struct.pack("!BBHI", 3, 1, 0, 0) + quoted  # destination unreachable: host
        sender.sendto(icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:], ("127.0.0.1", 0))
        self.settled()
        self.assertFalse(peerReset(self.transport(server)))
        server.sendall(b"still")
        self.assertEqual(client.recv(5), b"still")


def _checksum(data: bytes) -> int:
    """
    The Internet checksum (RFC 1071) of C{data}.
    """
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
