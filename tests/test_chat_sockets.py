"""
The chat service over real loopback sockets: many clients in several rooms,
a client that does not read, over-long lines, flooding, /quit, TLS, refusals
and graceful stop.
"""

from __future__ import annotations

import socket
import ssl
import time

import trustme
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.internet.testing import MemoryReactorClock as MemoryReactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from netsuite.chat import _HELP, SEND_BUFFER, ChatFactory, ChatProtocol, ChatSettings, makeChatService
from netsuite.limits import descriptorOf, heldBytes
from tests.helpers import abortIfConnected, startListener, waitUntil
from tests.test_chat import foldedCounts
from tests.tlshelpers import closeNotifyClient, makeServerOptions, trustRootOf


class ChatClient(LineReceiver):
    """
    A chat client that keeps every line it receives and can wait for one.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.reason: Failure | None = None
        self.waiting: list[tuple[str, defer.Deferred[str]]] = []
        self.closed: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8")
        self.lines.append(text)
        for prefix, d in list(self.waiting):
            if text.startswith(prefix):
                self.waiting.remove((prefix, d))
                d.callback(text)

    def waitFor(self, prefix: str, timeout: float = 10.0) -> defer.Deferred[str]:
        """
        Fire with the first line from now on starting with C{prefix}.
        """
        d: defer.Deferred[str] = defer.Deferred()
        self.waiting.append((prefix, d))
        return d.addTimeout(timeout, reactor)

    def say(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.closed.callback(None)


def tlsEndpoint(port: int, ca: trustme.CA, address: str = "127.0.0.1") -> IStreamClientEndpoint:
    """
    A TLS client endpoint to C{127.0.0.1:port}, from C{address}, verifying
    C{localhost} against C{ca}.
    """
    return wrapClientTLS(
        optionsForClientTLS("localhost", trustRoot=trustRootOf(ca)),
        TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(address, 0)),
    )


class _Member:
    """
    A member of the hub without a connection (the rooms of a test).
    """

    name = None
    room = None

    def deliver(self, line: object) -> None:
        pass

    def replay(self, lines: object) -> None:
        pass


class ChatSocketTests(TestCase):
    timeout = 60

    async def startChat(self, tls=None, **settings) -> tuple[int, ChatFactory]:
        factory = ChatFactory(reactor, settings=ChatSettings(**settings))
        service = makeChatService(
            "tcp:0:interface=127.0.0.1", reactor, factory=factory, tls=tls, grace=1,
            maxPerHost=None,
        )
        port = await startListener(self, service)
        self.service = service
        return port, factory

    async def connect(self, port: int, name: str, endpoint=None) -> ChatClient:
        client = ChatClient()
        if endpoint is None:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await connectProtocol(endpoint, client)
        self.addCleanup(abortIfConnected, client.transport)
        joined = client.waitFor("*** you are in lobby")
        client.say(name)
        await joined
        return client

    async def connectStuck(self, port: int, factory: ChatFactory) -> tuple[socket.socket, ChatProtocol]:
        """
        A client named C{stuck} on a plain socket with a small receive
        buffer, which reads only when the test does; and its protocol.
        """
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        self.addCleanup(stuck.close)
        stuck.sendall(b"stuck\r\n")
        await waitUntil(lambda: factory.hub.find("stuck") is not None)
        protocol = factory.hub.find("stuck")
        assert isinstance(protocol, ChatProtocol)
        return stuck, protocol

    async def test_manyClientsInSeveralRooms(self) -> None:
        """
        200 clients in 4 rooms each send 3 lines: every client gets exactly
        the lines of the others in its room, each sender's in order, and
        nothing from the other rooms.
        """
        port, factory = await self.startChat(rate=0, maxClientsPerHost=0, historySize=0)
        rooms = ["red", "green", "blue", "lobby"]
        clients = await defer.gatherResults(
            [defer.ensureDeferred(self.connect(port, f"user{n}")) for n in range(200)]
        )
        joins = []
        for n, client in enumerate(clients):
            room = rooms[n % 4]
            if room != "lobby":
                joins.append(client.waitFor(f"*** you are in {room}"))
                client.say(f"/join {room}")
        await defer.gatherResults(joins)
        self.assertEqual(factory.hub.snapshot(), {"users": 200, "rooms": 4})
        for client in clients:
            client.lines.clear()
        for round in range(3):
            for n, client in enumerate(clients):
                client.say(f"line {round} from user{n}")
        expected = {n: [] for n in range(200)}
        for n in range(200):
            for m in range(200):
                if m != n and m % 4 == n % 4:
                    expected[n] += [f"user{m}: line {r} from user{m}" for r in range(3)]

        def messages(n: int) -> list[str]:
            return [line for line in clients[n].lines if not line.startswith("*** ")]

        for _ in range(200):
            if all(len(messages(n)) >= len(expected[n]) for n in range(200)):
                break
            await deferLater(reactor, 0.05, lambda: None)
        for n in range(200):
            got = messages(n)
            self.assertEqual(sorted(got), sorted(expected[n]), n)
            for m in range(200):
                mine = [line for line in got if line.startswith(f"user{m}: ")]
                self.assertEqual(mine, [line for line in expected[n] if line.startswith(f"user{m}: ")])
        self.assertFalse(any(line.startswith("! ") for c in clients for line in c.lines))

    async def test_clientThatDoesNotReadIsCutOff(self) -> None:
        """
        A client that never reads is disconnected once its pending output
        passes the bound; the others keep receiving everything.
        """
        port, factory = await self.startChat(rate=0, roomRate=0, historySize=0)
        sender = await self.connect(port, "sender")
        reader = await self.connect(port, "reader")
        _, stuck = await self.connectStuck(port, factory)
        # Keep the kernel from absorbing megabytes for it (its send buffer
        # grows with the connection otherwise).
        stuck._raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        left = reader.waitFor("*** stuck left (not reading)")
        payload = "x" * 900
        count = 3000  # 2.7 MB: far more than the socket buffers and the bound
        for n in range(count):
            sender.say(f"{n} {payload}")
            if n % 20 == 19:  # the reader, in this process, must keep up
                await deferLater(reactor, 0.001, lambda: None)
        await left
        self.assertIsNone(factory.hub.find("stuck"))
        self.assertEqual(factory.stats.counters["slow_readers"], 1)
        for _ in range(400):
            if sum(1 for line in reader.lines if line.startswith("sender: ")) >= count:
                break
            await deferLater(reactor, 0.05, lambda: None)
        got = [line for line in reader.lines if line.startswith("sender: ")]
        self.assertEqual(got, [f"sender: {n} {payload}" for n in range(count)])

    async def test_overlongLineRefusedAndDropped(self) -> None:
        """
        Over a real socket, a line over C{maxLine} bytes gets one
        C{! line too long} error and is dropped, whether it is just over the
        limit or 300 KB arriving in many reads; the connection stays open, and a line of
        exactly C{maxLine} bytes and the lines after a dropped one go
        through.
        """
        port, factory = await self.startChat(maxLine=100, rate=0, historySize=0)
        alice = await self.connect(port, "alice")
        bob = await self.connect(port, "bob")
        tooLong = "! line too long (over 100 bytes); it was dropped"
        refused = alice.waitFor("! ")
        alice.say("x" * 101)
        self.assertEqual(await refused, tooLong)

        refused = alice.waitFor("! ")
        alice.transport.write(b"z" * 300_000)  # no line end yet
        self.assertEqual(await refused, tooLong)  # the memory it takes is tested in test_chat

        heard = bob.waitFor("alice: after")
        alice.transport.write(b"zzz\r\n" + b"y" * 100 + b"\r\nafter\r\n")
        await heard
        self.assertEqual(
            [line for line in bob.lines if line.startswith("alice: ")],
            ["alice: " + "y" * 100, "alice: after"],
        )
        # Any error for these lines would come before the answer to /who.
        answered = alice.waitFor("*** in lobby: ")
        alice.say("/who")
        await answered
        self.assertEqual([line for line in alice.lines if line.startswith("! ")], [tooLong, tooLong])
        self.assertEqual(factory.stats.counters["long_lines"], 2)
        self.assertFalse(alice.closed.called)

    async def test_floodGetsSlowDownNotKick(self) -> None:
        """
        Over a real socket, with no line queue, lines beyond the burst are
        dropped, each with a C{! slow down} error saying when the client
        may speak again; the others get only the lines within the burst,
        and the flooder stays connected (it still hears the room).
        """
        # A rate so low the bucket cannot refill during the test, however
        # slow the machine.
        port, factory = await self.startChat(rate=0.01, burst=3, historySize=0, lineQueue=0)
        alice = await self.connect(port, "alice")
        bob = await self.connect(port, "bob")
        alice.transport.write(b"".join(b"line %d\r\n" % (n,) for n in range(5)))
        for _ in range(500):
            errors = [line for line in alice.lines if line.startswith("! ")]
            if len(errors) >= 2:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len(errors), 2, alice.lines)
        for error in errors:
            prefix = "! slow down: that line was dropped; you may speak again in "
            self.assertTrue(error.startswith(prefix) and error.endswith(" s"), error)
            self.assertGreater(float(error[len(prefix) : -2]), 50)
        # Bob's own answer comes after every line of alice's sent to him.
        answered = bob.waitFor("*** in lobby: ")
        bob.say("/who")
        await answered
        self.assertEqual(
            [line for line in bob.lines if line.startswith("alice: ")],
            ["alice: line 0", "alice: line 1", "alice: line 2"],
        )
        self.assertEqual(factory.stats.counters["dropped_lines"], 2)
        heard = alice.waitFor("bob: ")
        bob.say("still there?")
        self.assertEqual(await heard, "bob: still there?")
        self.assertFalse(alice.closed.called)
        self.assertIsNotNone(factory.hub.find("alice"))

    async def test_pasteWaitsItsTurn(self) -> None:
        """
        Over a real socket, lines past the burst wait their turn, up to the
        line queue, and reach the room in order at the budget's rate; past
        the queue, they are dropped with a C{! slow down}.  A client that
        ends its input meanwhile (C{nc -N}) has its waiting lines said
        before the connection closes.
        """
        port, factory = await self.startChat(rate=4, burst=3, lineQueue=2, historySize=0)
        alice = await self.connect(port, "alice")
        bob = await self.connect(port, "bob")
        last = bob.waitFor("alice: line 4")
        alice.transport.write(b"".join(b"line %d\r\n" % (n,) for n in range(8)))
        await last
        self.assertEqual(
            [line for line in bob.lines if line.startswith("alice: ")],
            [f"alice: line {n}" for n in range(5)],
        )
        errors = [line for line in alice.lines if line.startswith("! ")]
        self.assertEqual(len(errors), 3, alice.lines)
        for error in errors:
            self.assertTrue(
                error.startswith("! slow down: that line was dropped; 2 lines wait their turn; "), error
            )
        self.assertEqual(factory.stats.counters["queued_lines"], 2)
        left = bob.waitFor("*** alice left")
        alice.transport.write(b"".join(b"more %d\r\n" % (n,) for n in range(5)))
        alice.transport.loseWriteConnection()
        await left
        said = [line for line in bob.lines if line.startswith("alice: more")]
        self.assertEqual(said, [f"alice: more {n}" for n in range(len(said))])
        self.assertGreaterEqual(len(said), 2)  # (the burst refilled meanwhile)
        await alice.closed.addTimeout(10, reactor)

    async def test_quitClosesCleanlyAndRoomIsTold(self) -> None:
        """
        C{/quit REASON}: the client gets what was waiting for it, then
        C{* bye}, then the server closes the connection cleanly (a FIN, not a
        reset); the others in the room see C{* NAME left (REASON)}, and the
        name and the connection slot are free again.
        """
        port, factory = await self.startChat(historySize=0)
        alice = await self.connect(port, "alice")
        bob = await self.connect(port, "bob")
        left = alice.waitFor("*** bob left")
        bob.transport.write(b"/who\r\n/quit gone fishing\r\n")
        await bob.closed.addTimeout(10, reactor)
        self.assertEqual(bob.lines[-2:], ["*** in lobby: alice, bob", "*** bye"])
        bob.reason.trap(ConnectionDone)
        self.assertEqual(await left, "*** bob left (quit: gone fishing)")
        self.assertIsNone(factory.hub.find("bob"))
        self.assertEqual(factory.clients, 1)
        await self.connect(port, "bob")
        self.assertIsNotNone(factory.hub.find("bob"))

    async def test_joinsPastTheNoticeRateToldInOneLine(self) -> None:
        """
        40 clients of two addresses join at once, then quit: the lobby's
        member is told of the first ones one by one and of the others in
        lines of folded notices, and every join and leave is counted once.
        """
        port, factory = await self.startChat(historySize=0, maxClientsPerHost=0)
        bob = await self.connect(port, "bob")
        clients = await defer.gatherResults([
            defer.ensureDeferred(self.connect(
                port, f"n{n}", TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(f"127.0.0.{2 + n % 2}", 0))
            ))
            for n in range(40)
        ])

        def told() -> dict[str, int]:
            counts = {"joined": 0, "left": 0}
            for line in bob.lines:
                if line.startswith("*** lobby, last second: "):
                    for kind, count in foldedCounts(line).items():
                        counts[kind] += count
                elif line.startswith("*** n"):
                    counts["joined" if line.endswith(" joined lobby") else "left"] += 1
            return counts

        await waitUntil(lambda: told()["joined"] == 40)
        for client in clients:
            client.say("/quit")
        await waitUntil(lambda: told() == {"joined": 40, "left": 40})
        folded = [line for line in bob.lines if line.startswith("*** lobby, last second: ")]
        self.assertTrue(folded)
        self.assertLessEqual(len(bob.lines), 2 * 20 + 2 * len(folded) + 10)
        self.assertGreaterEqual(factory.stats.counters["notices_folded"], 40)

    async def test_halfCloseStillGetsEverything(self) -> None:
        """
        A client that sends many commands, shuts down its sending side
        (C{nc -N}) and only then reads gets every answer, then a clean close
        (it used to lose what had not reached the socket yet).  Its
        commands wait while their answers do: C{maxOutput} is the default.
        The last, sent without a line end, is answered too (it was dropped).
        """
        port, factory = await self.startChat(rate=0, historySize=0)
        bob = await self.connect(port, "bob")
        bob.transport.pauseProducing()
        count = 20000  # about 8 MB of answers: more than the socket buffers hold
        bob.transport.write(b"/help\r\n" * count + b"/who")
        bob.transport.loseWriteConnection()
        await deferLater(reactor, 0.5, lambda: None)
        bob.transport.resumeProducing()
        await bob.closed.addTimeout(30, reactor)
        bob.reason.trap(ConnectionDone)
        self.assertEqual(bob.lines.count(_HELP[0]), count)
        self.assertEqual(bob.lines[-2:], [_HELP[-1], "*** in lobby: bob"])
        self.assertIsNone(factory.hub.find("bob"))

    async def test_slowButSteadyReaderStays(self) -> None:
        """
        A client that reads steadily, more slowly than its answers come, is
        not cut off as not reading: taking any of what the transport and
        the system hold counts (here with a grace of 0.3 s, 8 KiB of
        output allowed, and a reader at 100 KB/s, whose transport buffer
        takes longer than the grace to empty).  With the system holding 128
        KiB for it, such a reader at 40 KB/s was cut off under the
        defaults.
        """
        from netsuite import chat

        self.patch(chat, "_SLOW_GRACE", 0.3)
        port, factory = await self.startChat(rate=0, maxOutput=8 * 1024, historySize=0)
        count = 500

        def readSlowly() -> int:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.settimeout(5)
                sock.sendall(b"bob\r\n" + b"/help\r\n" * count)
                received = b""
                while received.count(_HELP[-1].encode()) < count:
                    data = sock.recv(2048)
                    if not data:
                        break
                    received += data
                    time.sleep(2048 / 100_000)
                return received.count(_HELP[-1].encode())

        self.assertEqual(await threads.deferToThread(readSlowly), count)
        self.assertNotIn("slow_readers", factory.stats.counters)

    async def test_tlsCloseNotifyStillGetsEverything(self) -> None:
        """
        Over TLS, a client that sends its name and many commands, then
        close_notify, gets every answer and the server's close_notify (the
        close_notify ended the connection, and the answers not yet sent were
        lost); the room hears that it left.  Its commands wait while their
        answers do (3 MB of them, C{maxOutput} the default; it was cut off
        as not reading once 2 MB waited, in the pass they were read in).
        The last, sent without a line end, is answered too.
        """
        ca = trustme.CA()
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca), rate=0, historySize=0)
        endpoint = tlsEndpoint(port, ca)
        alice = await self.connect(port, "alice", endpoint)
        left = alice.waitFor("*** bob left", timeout=30)
        count = 5000
        received, how = await threads.deferToThread(
            closeNotifyClient, port, ca, b"bob\r\n" + b"/help\r\n" * count + b"/who"
        )
        lines = received.decode().split("\r\n")
        self.assertEqual((lines.count(_HELP[0]), how), (count, "close_notify"))
        self.assertEqual(lines[-3:-1], [_HELP[-1], "*** in lobby: alice, bob"])
        await left
        self.assertIsNone(factory.hub.find("bob"))

    async def test_nameAndEndOfInputAtOnceGetTheHistory(self) -> None:
        """
        A client that sends its name and at once ends its input (TLS
        close_notify; C{shutdown(SHUT_WR)} over TCP) gets the room's
        history, then the server's close: the end of input dropped the
        history not yet sent (over 20 tries, none of it came 16 times over
        TLS, 5 times over TCP).
        """
        ca = trustme.CA()
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca), rate=0)
        plain = makeChatService("tcp:0:interface=127.0.0.1", reactor, factory=factory, grace=1)
        plainPort = await startListener(self, plain)
        alice = await self.connect(plainPort, "alice")
        watcher = await self.connect(plainPort, "watcher")
        said = watcher.waitFor("alice: two")
        alice.say("one")
        alice.say("two")
        await said
        history = ["[history] alice: one", "[history] alice: two"]

        def halfClosing(name: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", plainPort), timeout=10) as sock:
                sock.sendall(name + b"\r\n")
                sock.shutdown(socket.SHUT_WR)
                received = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return received
                    received += data

        for n in range(5):
            received, how = await threads.deferToThread(closeNotifyClient, port, ca, b"secure%d\r\n" % (n,))
            lines = received.decode().split("\r\n")
            self.assertEqual(([line for line in lines if line.startswith("[history] ")], how), (history, "close_notify"))
            received = await threads.deferToThread(halfClosing, b"plain%d" % (n,))
            lines = received.decode().split("\r\n")
            self.assertEqual([line for line in lines if line.startswith("[history] ")], history)
        self.assertEqual(factory.hub.snapshot()["users"], 2)

    async def test_tlsReaderOfARoomBurstFromManyAddresses(self) -> None:
        """
        Over TLS, a member reading a room to which 15 addresses of 4
        clients each, each within the default flood limits, say 10 lines
        of 4,000 bytes at once gets every line that went out, and stays;
        the room refuses the rest.  Against a netsuite of its own process,
        the member was cut off as not reading, 2 MB having waited for it
        in the pass the lines were read in.
        """
        ca = trustme.CA()
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca))
        reader = await self.connect(port, "reader", tlsEndpoint(port, ca))
        senders = []
        for a in range(15):
            for k in range(4):
                address = f"127.0.3.{a + 1}"
                senders.append(await self.connect(port, f"s{a}x{k}", tlsEndpoint(port, ca, address)))
        await deferLater(reactor, 2.5, lambda: None)  # the joins' budgets fill again
        text = "z" * 4000
        for sender in senders:
            sender.transport.write(f"{text}\r\n".encode() * 10)
        for _ in range(200):
            await deferLater(reactor, 0.05, lambda: None)
            said = sum(1 for line in reader.lines if line.endswith(text))
            if reader.reason is not None or said == 600 - factory.stats.counters.get("room_refused", 0):
                break
        self.assertIsNone(reader.reason)
        self.assertNotIn("slow_readers", factory.stats.counters)
        refused = factory.stats.counters.get("room_refused", 0)
        self.assertGreater(refused, 0)
        self.assertEqual(said, 600 - refused)

    async def test_keepAliveFindsVanishedClients(self) -> None:
        """
        TCP keepalive is on for every chat connection, plain and TLS: a
        client that vanished (a laptop shut) is dropped, and its name
        freed, within 2 minutes (60 s idle, 6 asks 10 s apart; or lines
        sent to it unacknowledged for 2 minutes), not at the idle timeout
        an hour on.
        """
        if not hasattr(socket, "TCP_KEEPIDLE") or not hasattr(socket, "TCP_USER_TIMEOUT"):
            raise SkipTest("this system does not let keepalive times be set")
        factory = await self.securePlainPair()
        for name in ("secure", "plain"):
            sock = self.serverSocket(factory, name)
            options = [
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            ]
            self.assertEqual(options, [1, 60, 10, 6, 120_000], name)

    async def securePlainPair(self) -> ChatFactory:
        """
        Start one chat on a TLS listener and a plain one, with a client
        named C{secure} on the first and C{plain} on the second; return its
        factory.
        """
        ca = trustme.CA()
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca))
        plain = makeChatService("tcp:0:interface=127.0.0.1", reactor, factory=factory, grace=1)
        plainPort = await startListener(self, plain)
        await self.connect(port, "secure", tlsEndpoint(port, ca))
        await self.connect(plainPort, "plain")
        return factory

    def serverSocket(self, factory: ChatFactory, name: str) -> socket.socket:
        """
        The server's socket of the client called C{name}.
        """
        transport = factory.hub.find(name).transport
        while not hasattr(transport, "socket"):
            transport = transport.transport
        return transport.socket

    async def test_sendBufferBounded(self) -> None:
        """
        The system holds at most 64 KiB (Linux: 128 KiB) for a chat client,
        plain or TLS, beyond chat's own C{maxOutput}: for a client that did
        not read, it held up to 4 MiB more (2.8 MB measured).
        """
        factory = await self.securePlainPair()
        for name in ("secure", "plain"):
            size = self.serverSocket(factory, name).getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self.assertIn(size, (SEND_BUFFER, 2 * SEND_BUFFER), name)

    async def test_tlsAndPlainShareRooms(self) -> None:
        """
        A client over TLS (certificate generated here, verified) and one over
        plain TCP talk through one factory.
        """
        ca = trustme.CA()
        tls = makeServerOptions(self.mktemp(), ca)
        factory = ChatFactory(reactor)
        secure = makeChatService("tcp:0:interface=127.0.0.1", reactor, factory=factory, tls=tls, grace=1)
        plain = makeChatService("tcp:0:interface=127.0.0.1", reactor, factory=factory, grace=1)
        securePort = await startListener(self, secure)
        plainPort = await startListener(self, plain)
        endpoint = tlsEndpoint(securePort, ca)
        alice = await self.connect(securePort, "alice", endpoint)
        bob = await self.connect(plainPort, "bob")
        heard = bob.waitFor("alice: ")
        alice.say("over TLS")
        self.assertEqual(await heard, "alice: over TLS")
        heard = alice.waitFor("bob: ")
        bob.say("in the clear")
        self.assertEqual(await heard, "bob: in the clear")

    async def test_tlsQuitToldBeforeTheClose(self) -> None:
        """
        Over TLS, C{/quit} tells the room and frees the name at once, while
        the close still waits for the client's close_notify (the room heard
        of it, and the name stayed taken, only when the close gave up after
        10 s).
        """
        ca = trustme.CA()
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca), historySize=0)
        endpoint = tlsEndpoint(port, ca)
        alice = await self.connect(port, "alice", endpoint)
        bob = await self.connect(port, "bob", endpoint)
        left = alice.waitFor("*** bob left", timeout=30)
        bob.transport.pauseProducing()  # it reads nothing more: no close_notify back
        bob.say("/quit bye now")
        self.assertEqual(await left, "*** bob left (quit: bye now)")
        self.assertEqual(factory.clients, 2)
        self.assertIsNone(factory.hub.find("bob"))

    async def test_tlsQuitEndsAtTheClientsCloseNotify(self) -> None:
        """
        Over TLS, after C{/quit} a client that answers the server's
        close_notify with its own has its connection ended at once (the
        answer was taken as the end of its input, and the server gave up on
        the close only after 10 s).
        """
        ca = trustme.CA()
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca), historySize=0)
        endpoint = tlsEndpoint(port, ca)
        bob = await self.connect(port, "bob", endpoint)
        bob.say("/quit")
        await bob.closed.addTimeout(5, reactor)
        for _ in range(30):
            if factory.clients == 0:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(factory.clients, 0)

    async def test_tlsClientGetsALongHistory(self) -> None:
        """
        Over TLS, a client joining a room whose history is longer than
        C{maxOutput} (100 lines of 4 KB) gets all of it: written in one
        reactor pass, it filled TLS's buffer before any of it could be sent,
        and the client was cut off as not reading.
        """
        ca = trustme.CA()
        port, factory = await self.startChat(
            tls=makeServerOptions(self.mktemp(), ca), historySize=100, historyBytes=1 << 20, rate=0, roomRate=0
        )

        alice = await self.connect(port, "alice", tlsEndpoint(port, ca))
        for n in range(100):
            alice.sendLine(b"%d " % (n,) + "\u00e9".encode() * 1995)
        await deferLater(reactor, 0.2, lambda: None)
        bob = ChatClient()
        await connectProtocol(tlsEndpoint(port, ca), bob)
        self.addCleanup(lambda: bob.transport.abortConnection())
        last = bob.waitFor("[history] alice: 99 ")
        bob.say("bob")
        await last
        history = [line for line in bob.lines if line.startswith("[history] ")]
        self.assertEqual(history, [f"[history] alice: {n} " + "\u00e9" * 1995 for n in range(100)])
        self.assertEqual(factory.stats.counters.get("slow_readers", 0), 0)
        self.assertIsNotNone(factory.hub.find("bob"))

    async def test_historyLongerThanTheOutputLimitsReachesAReader(self) -> None:
        """
        A room's history far longer than C{maxOutput} (and than
        L{netsuite.chat._HARD_OUTPUT} times it) reaches a client that reads
        it, over plain TCP, followed by what the room said meanwhile: it is
        sent as the client takes it.  It was written whole in one reactor
        pass, and the client was cut off as not reading.
        """
        port, factory = await self.startChat(historySize=2000, historyBytes=16 << 20, maxOutput=16384, rate=0, roomRate=0)
        alice = await self.connect(port, "alice")
        watcher = await self.connect(port, "watcher")
        said = watcher.waitFor("alice: 1999 ")
        for n in range(2000):
            alice.sendLine(b"%d " % (n,) + b"h" * 4000)
        await said
        bob = await self.connect(port, "bob")
        alice.say("after")
        await bob.waitFor("alice: after", timeout=30)
        history = [line for line in bob.lines if line.startswith("[history] ")]
        self.assertEqual(history, [f"[history] alice: {n} " + "h" * 4000 for n in range(2000)])
        self.assertEqual(bob.lines[-1], "alice: after")
        self.assertEqual(factory.stats.counters.get("slow_readers", 0), 0)
        self.assertIsNotNone(factory.hub.find("bob"))

    async def test_roomsWaitForAClientThatDoesNotRead(self) -> None:
        """
        Three C{/rooms} of 600 KB each (500 rooms with long topics) from a
        client that reads nothing: the server holds about a transport
        buffer of them (it held all of them, 1.2 MB a C{/rooms} with 1,000
        rooms); once the client reads, it gets all three, whole.
        """
        port, factory = await self.startChat(rate=0, roomRate=0)
        hub = factory.hub
        topic = "\U0001f600" * 300
        for n in range(500):
            member = _Member()
            hub.register(member, f"m{n:03}")
            hub.join(member, f"room{n:03}")
            hub.setTopic(member, topic)
        stuck, protocol = await self.connectStuck(port, factory)
        stuck.sendall(b"/rooms\r\n" * 3)
        await deferLater(reactor, 0.5, lambda: None)
        self.assertLess(heldBytes(descriptorOf(protocol.transport)) + protocol._outBytes, 3 * 65536)
        stuck.setblocking(False)
        data = b""
        answer = ["*** 501 rooms:", "***   lobby (1 member)"] + [
            f"***   room{n:03} (1 member); topic: {topic}" for n in range(500)
        ]
        expected = ("\r\n".join(answer * 3) + "\r\n").encode("utf-8")
        for _ in range(500):
            try:
                data += stuck.recv(1 << 20)
            except BlockingIOError:
                await deferLater(reactor, 0.01, lambda: None)
            if data.endswith(expected):
                break
        self.assertEqual(data[-len(expected):], expected)
        self.assertEqual(factory.stats.counters.get("slow_readers", 0), 0)

    async def _flood(self, port: int, ca: trustme.CA | None, first: bytes, answered: bytes) -> tuple[int, bytes]:
        """
        Connect (over TLS when C{ca} is given), send C{first}, wait for
        C{answered}, then flood until the server stops reading (at most 64
        MiB); return the bytes sent in the flood and all the client got.
        """
        limit = 64 << 20

        def flood() -> tuple[int, bytes]:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            if ca is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
                conn = context.wrap_socket(conn, server_hostname="localhost")
            with conn:
                conn.sendall(first)
                got = b""
                while answered not in got:
                    data = conn.recv(65536)
                    if not data:
                        break
                    got += data
                conn.settimeout(1)
                sent = 0
                try:
                    while sent < limit:
                        conn.sendall(b"x\n" * 32768)
                        sent += 65536
                except OSError:  # timed out (the server does not read), or reset
                    pass
                conn.settimeout(5)
                try:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        got += data
                except OSError:
                    pass
                return sent, got

        sent, got = await threads.deferToThread(flood)
        self.assertLess(sent, limit)
        return sent, got

    async def _floodAfterTheExcessFlood(self, tls: bool) -> None:
        """
        A client cut off as an excess flood that sends on is not read any
        more: it gets the error line and the end of the server's output
        (over TLS a close_notify), its sends stall once the system's
        buffers are full, and its connection ends soon after.  The lingering
        close read and dropped the flood at full speed for 10 s (10.5 GB,
        7.1 s of CPU), and a client reconnecting did it again.
        """
        ca = trustme.CA() if tls else None
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca) if ca else None)
        sent, got = await self._flood(port, ca, b"flooder\r\n", b"*** you are in lobby")
        self.assertLess(self.service.stats.bytesIn, 1 << 20)
        self.assertIn(b"! excess flood: 100 lines dropped in a row; bye\r\n", got)
        self.assertEqual(factory.stats.counters["excess_floods"], 1)
        await waitUntil(lambda: self.service.stats.connectionsOpen == 0)
        self.assertEqual(self.service.stats.errors, 0)

    async def test_floodAfterTheExcessFloodIsNotRead(self) -> None:
        await self._floodAfterTheExcessFlood(tls=False)

    async def test_floodAfterTheExcessFloodIsNotReadOverTLS(self) -> None:
        await self._floodAfterTheExcessFlood(tls=True)

    async def _floodAfterQuit(self, tls: bool) -> None:
        """
        A client that sends C{/quit}, then floods, gets its C{*** bye}; past
        64 KiB (the chat's C{lingerBytes}) nothing more is read, and the
        connection ends 2 s later.  Its lingering close read the flood at
        full speed for the close's 10 s grace (3 GB, 3 CPU-seconds), again
        at each connection.
        """
        ca = trustme.CA() if tls else None
        port, factory = await self.startChat(tls=makeServerOptions(self.mktemp(), ca) if ca else None)
        sent, got = await self._flood(port, ca, b"quitter\r\n/quit\r\n", b"*** bye\r\n")
        self.assertIn(b"*** bye\r\n", got)
        self.assertLess(self.service.stats.bytesIn, 1 << 20)
        self.assertEqual(self.service.stats.counters["close_floods"], 1)
        await waitUntil(lambda: self.service.stats.connectionsOpen == 0)

    async def test_floodAfterQuitIsNotRead(self) -> None:
        await self._floodAfterQuit(tls=False)

    async def test_floodAfterQuitIsNotReadOverTLS(self) -> None:
        await self._floodAfterQuit(tls=True)

    async def test_floodOfARefusedClientIsNotRead(self) -> None:
        """
        A client refused (here, over its address's limit) that floods gets
        its refusal, and past 64 KiB is not read any more: its lingering
        close read 3.5 GB in 10 s, and 206 such connections could run at
        once from one address.
        """
        port, factory = await self.startChat(maxClientsPerHost=1)
        await self.connect(port, "first")
        sent, got = await self._flood(port, None, b"", b"\r\n")
        self.assertTrue(got.startswith(b"! too many connections from your address"), got)
        self.assertLess(self.service.stats.bytesIn, 1 << 20)
        self.assertEqual(self.service.stats.counters["close_floods"], 1)
        await waitUntil(lambda: self.service.stats.connectionsOpen == 1)

    async def test_refusedClientIsToldWhy(self) -> None:
        port, factory = await self.startChat(maxClientsPerHost=1)
        await self.connect(port, "first")
        second = ChatClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), second)
        await second.closed
        self.assertEqual(len(second.lines), 1)
        self.assertTrue(second.lines[0].startswith("! too many connections from your address"))

    async def test_stopSaysGoodbye(self) -> None:
        port, factory = await self.startChat()
        client = await self.connect(port, "alice")
        bye = client.waitFor("*** the server is shutting down")
        await self.service.stopService()
        await bye
        await client.closed


class MakeChatServiceTests(SynchronousTestCase):
    def test_settingsAsKeywords(self) -> None:
        """
        L{ChatSettings} fields can be given as keywords, next to the
        listener's own.
        """
        service = makeChatService("tcp:0", MemoryReactor(), historySize=5, rate=1.0, maxPerHost=3)
        settings = service.tracker.wrappedFactory.settings
        self.assertEqual((settings.historySize, settings.rate, settings.maxLine), (5, 1.0, 4096))
        self.assertEqual(service.tracker.maxPerHost, 3)

    def test_sharedFactoryTakesNoSettings(self) -> None:
        factory = ChatFactory(MemoryReactor())
        self.assertRaises(TypeError, makeChatService, "tcp:0", MemoryReactor(), factory=factory, rate=1.0)
        self.assertIs(makeChatService("tcp:0", MemoryReactor(), factory=factory).tracker.wrappedFactory, factory)
