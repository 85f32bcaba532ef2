"""
Tests for L{netsuite.chat} (the line protocol, its commands and limits) and
L{netsuite.rooms} (the room model), all in memory: clients are
L{StringTransport}s, time is a L{MemoryReactorClock}.

The protocol collects a connection's output and sends it at the end of the
reactor's pass (L{netsuite.listen.FlushBatch}), so L{ChatClient.received}
advances the clock by 0 before it reads what the client got.
"""

from __future__ import annotations

import gc
import itertools
import weakref
from typing import Any, Dict, List, Optional, Sequence, Union

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from netsuite.chat import _CLOSE_GRACE, _EXCESS_FLOOD, _FREE_EMPTY_LINES, _HARD_OUTPUT, _HELP, _HOSTILE_GRACE, _SLOW_GRACE, MAX_TOPIC, QUEUE_BYTES, ChatFactory, ChatProtocol, ChatSettings
from netsuite.rooms import _FOLD_PERIOD, _NOTICE_BURST, HISTORY_BYTES, LOBBY, ChatError, ChatHub, IMember, Line, cleanText
from netsuite.stats import ServiceStats

_ports = itertools.count(40000)

NAME_RULES = "names are 1-32 characters: letters, digits, '_', '-' and '.'"
ROOM_RULES = "room names are 1-32 characters: letters, digits, '_', '-' and '.'"
GREETING = [
    "*** welcome to netsuite chat",
    "*** what is your name? (1-32 letters, digits, '_', '-' or '.')",
]
#: What /help sends; its content is checked against the commands below.
HELP = _HELP


class ChatClient:
    """
    One chat connection in memory: a L{ChatProtocol} on a L{StringTransport}
    with a peer address, and ways to send it lines and read what it was sent.
    """

    def __init__(
        self, factory: ChatFactory, clock: MemoryReactorClock, host: str, transport: type = StringTransport
    ) -> None:
        self.clock = clock
        self.address = IPv4Address("TCP", host, next(_ports))
        self.protocol: ChatProtocol = factory.buildProtocol(self.address)
        self.transport = transport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8023), peerAddress=self.address
        )
        self.protocol.makeConnection(self.transport)

    def send(self, *lines: Union[str, bytes], ending: bytes = b"\r\n") -> None:
        """
        Send each of C{lines} (text is encoded as UTF-8) in its own
        C{dataReceived}, followed by C{ending}.
        """
        for line in lines:
            data = line.encode("utf-8") if isinstance(line, str) else line
            self.protocol.dataReceived(data + ending)

    def sendRaw(self, data: bytes) -> None:
        """
        Deliver C{data} as one C{dataReceived}.
        """
        self.protocol.dataReceived(data)

    def receivedBytes(self) -> bytes:
        """
        Everything sent to this client since last asked (after the end of
        the reactor's pass), and forget it.
        """
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data

    def received(self) -> List[str]:
        """
        The lines sent to this client since last asked, without their
        CRLF, and forget them.  Every line must end with CRLF and contain no
        other CR or LF.
        """
        data = self.receivedBytes()
        if not data:
            return []
        if not data.endswith(b"\r\n"):
            raise AssertionError(f"output does not end with CRLF: {data!r}")
        lines = data[:-2].split(b"\r\n")
        for line in lines:
            if b"\r" in line or b"\n" in line:
                raise AssertionError(f"stray line break in {line!r}")
        return [line.decode("utf-8") for line in lines]

    def disconnect(self, reason: Any = None) -> None:
        """
        The connection is gone (as the reactor would report it).
        """
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))
        self.clock.advance(0)

    @property
    def closing(self) -> bool:
        """
        Whether the server closed (or aborted) this connection.
        """
        return bool(self.transport.disconnecting or self.transport.disconnected)


class ChatTestCase(SynchronousTestCase):
    """
    A chat factory on a fake clock, and helpers to connect clients to it.

    @cvar settings: L{ChatSettings} fields for this test case.
    """

    settings: Dict[str, Any] = {}

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = self.makeFactory()
        self.clients: List[ChatClient] = []

    def makeFactory(self, **overrides: Any) -> ChatFactory:
        settings = ChatSettings(**{**self.settings, **overrides})
        self.factory = ChatFactory(self.clock, settings=settings)
        return self.factory

    def connect(self, host: str = "127.0.0.1", transport: type = StringTransport) -> ChatClient:
        """
        A new connection (on a C{transport}), whose greeting is not read
        yet.
        """
        client = ChatClient(self.factory, self.clock, host, transport)
        self.clients.append(client)
        return client

    def named(self, name: str, host: str = "127.0.0.1") -> ChatClient:
        """
        A new connection that gave C{name}; everyone's output so far is
        read and forgotten.
        """
        client = self.connect(host)
        client.send(name)
        self.assertIs(self.factory.hub.find(name), client.protocol)
        self.drain()
        return client

    def drain(self) -> None:
        """
        Forget what every client was sent so far.
        """
        for client in self.clients:
            client.received()


class NameTests(ChatTestCase):
    """
    Greeting and choosing a name.
    """

    def test_greetingThenNamePrompt(self) -> None:
        client = self.connect()
        self.assertEqual(client.received(), GREETING)
        self.assertIsNone(client.protocol.name)
        self.assertEqual(self.factory.hub.members, {})

    def test_firstLineIsTheName(self) -> None:
        client = self.connect()
        client.received()
        client.send("alice")
        self.assertEqual(
            client.received(),
            ["*** hello alice; /help lists the commands", "*** you are in lobby with 0 others"],
        )
        self.assertEqual(client.protocol.name, "alice")
        self.assertIs(self.factory.hub.find("ALICE"), client.protocol)

    def test_validNames(self) -> None:
        """
        Names of 1 to 32 letters, digits, C{_}, C{-} and C{.} are accepted.
        """
        for name in ["a", "Z", "7", "x" * 32, "A_b-c.9", "...", "-_-"]:
            client = self.connect()
            client.received()
            client.send(name)
            self.assertEqual(
                client.received()[0], f"*** hello {name}; /help lists the commands", name
            )
            self.assertEqual(client.protocol.name, name)

    def test_invalidNameGetsAnotherChance(self) -> None:
        for bad in ["x" * 33, "two words", "bang!", "caf\u00e9", "#room", "a/b", "@"]:
            client = self.connect()
            client.received()
            client.send(bad)
            self.assertEqual(client.received(), [f"! {NAME_RULES}; try another (2 left)"], bad)
            self.assertFalse(client.closing)
            self.assertIsNone(client.protocol.name)
            client.send("ok")
            self.assertEqual(client.received()[0], "*** hello ok; /help lists the commands")
            client.disconnect()

    def test_takenNameCaseInsensitive(self) -> None:
        self.named("alice")
        client = self.connect()
        client.received()
        client.send("ALICE")
        self.assertEqual(client.received(), ["! the name ALICE is taken; try another (2 left)"])
        client.send("Alice")
        self.assertEqual(client.received(), ["! the name Alice is taken; try another (1 left)"])
        client.send("bob")
        self.assertEqual(client.received()[0], "*** hello bob; /help lists the commands")

    def test_threeTriesThenClosed(self) -> None:
        client = self.connect()
        client.received()
        client.send("a b", "c d")
        self.assertFalse(client.closing)
        client.send("e f")
        self.assertEqual(
            client.received(),
            [
                f"! {NAME_RULES}; try another (2 left)",
                f"! {NAME_RULES}; try another (1 left)",
                f"! {NAME_RULES}; too many tries, bye",
            ],
        )
        self.assertTrue(client.transport.disconnecting)
        client.send("alice")
        self.assertEqual(client.received(), [])
        self.assertIsNone(self.factory.hub.find("alice"))

    def test_triesInOneChunkStopAtTheLimit(self) -> None:
        """
        Lines that arrive after the last try, in the same read, are ignored.
        """
        client = self.connect()
        client.received()
        client.sendRaw(b"a b\nc d\ne f\nalice\n")
        self.assertEqual(client.received()[-1], f"! {NAME_RULES}; too many tries, bye")
        self.assertIsNone(self.factory.hub.find("alice"))
        self.assertTrue(client.transport.disconnecting)

    def test_nameTriesConfigurable(self) -> None:
        self.makeFactory(nameTries=1)
        client = self.connect()
        client.received()
        client.send("no good")
        self.assertEqual(client.received(), [f"! {NAME_RULES}; too many tries, bye"])
        self.assertTrue(client.transport.disconnecting)

    def test_crlfAndLfBothEndLines(self) -> None:
        bob = self.named("bob")
        alice = self.connect()
        alice.send("alice", ending=b"\n")
        self.assertEqual(alice.protocol.name, "alice")
        self.drain()
        alice.send("one", ending=b"\n")
        alice.send("two", ending=b"\r\n")
        alice.sendRaw(b"three\r\nfour\nfi")
        alice.sendRaw(b"ve\r")
        alice.sendRaw(b"\n")
        self.assertEqual(
            bob.received(),
            ["alice: one", "alice: two", "alice: three", "alice: four", "alice: five"],
        )

    def test_bareCRAndCRNULEndLines(self) -> None:
        """
        A lone CR ends a line, and so does telnet's CR NUL, as IRC servers
        take them: such lines were not seen until an LF came, and then all
        of them came as one line.  A CRLF is still one line end when its CR
        and LF come in different reads (ten such lines are ten lines in:
        an empty line between would have been counted too).
        """
        bob = self.named("bob")
        alice = self.connect()
        alice.send("alice", ending=b"\r")
        self.assertEqual(alice.protocol.name, "alice")
        self.drain()
        alice.sendRaw(b"one\rtwo\r\x00three\r\nfour\n")
        alice.sendRaw(b"five\r")
        alice.sendRaw(b"\x00six\r")
        self.assertEqual(
            bob.received(),
            ["alice: one", "alice: two", "alice: three", "alice: four", "alice: five", "alice: six"],
        )
        self.clock.advance(10)
        linesIn = self.factory.stats.counters.get("lines_in", 0)
        for n in range(10):
            alice.sendRaw(b"line %d\r" % (n,))
            alice.sendRaw(b"\n")
        self.assertEqual(bob.received(), [f"alice: line {n}" for n in range(10)])
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters["lines_in"] - linesIn, 10)

    def test_crCrLfIsOneLineEnd(self) -> None:
        """
        CR CR LF (Windows' text mode writing CRLF) is one line end, split
        between reads or not, and so is CR CR NUL: the CR ended the line and
        the CRLF after it was an empty line, a line of the flood budget each
        (ten lines within a burst of ten got five "slow down").  A third CR
        is an empty line again, a line in (free while few).
        """
        bob = self.named("bob")
        alice = self.named("alice")
        self.drain()
        self.clock.advance(10)
        linesIn = self.factory.stats.counters.get("lines_in", 0)
        for n in range(5):
            alice.sendRaw(b"m%d\r\r\n" % (n,))
        for n in range(5, 8):
            alice.sendRaw(b"m%d\r" % (n,))
            alice.sendRaw(b"\r")
            alice.sendRaw(b"\n")
        alice.sendRaw(b"m8\r\r\x00m9\r")
        alice.sendRaw(b"\r\n")
        self.assertEqual(bob.received(), [f"alice: m{n}" for n in range(10)])
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters["lines_in"] - linesIn, 10)
        self.clock.advance(10)
        linesIn = self.factory.stats.counters.get("lines_in", 0)
        alice.sendRaw(b"m10\r\r\r\n" * 5)
        self.assertEqual(bob.received(), ["alice: m10"] * 5)
        self.assertEqual(self.factory.stats.counters["lines_in"] - linesIn, 2 * 5)

    def test_crCrThenLFInTheNextRead(self) -> None:
        """
        CR CR at the end of a read, then LF in the next, is one line end:
        the second CR is kept for the LF that may follow (without it, that
        CR LF was an empty line), and it is not taken as ending an empty
        line of its own (then the LF was skipped after it).  Each line is
        one line in.
        """
        bob = self.named("bob")
        alice = self.named("alice")
        linesIn = self.factory.stats.counters.get("lines_in", 0)
        for n in range(5):
            alice.sendRaw(b"m%d\r\r" % (n,))
            alice.sendRaw(b"\n")
        self.assertEqual(bob.received(), [f"alice: m{n}" for n in range(5)])
        self.assertEqual(self.factory.stats.counters["lines_in"] - linesIn, 5)

    def test_lineEndAfterACRInTheNextRead(self) -> None:
        """
        CR, then CRLF in the next read, is one line end too: the LF was an
        empty line, a line of the flood budget (ten lines within a burst of
        ten got five "slow down"), a line in.
        """
        bob = self.named("bob")
        alice = self.named("alice")
        self.drain()
        self.clock.advance(10)
        linesIn = self.factory.stats.counters.get("lines_in", 0)
        for n in range(10):
            alice.sendRaw(b"m%d\r" % (n,))
            alice.sendRaw(b"\r\n")
        self.assertEqual(bob.received(), [f"alice: m{n}" for n in range(10)])
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters["lines_in"] - linesIn, 10)

    def test_blankLinesBetweenPastedLinesAreFree(self) -> None:
        """
        A paste with a blank line (or two) after each line costs a line of
        the flood budget for each line said, as IRC servers skip them: each
        blank line cost a line, with a "slow down" of its own, so p0 to p5
        each followed by CRLF CRLF (rate 5, burst 10) showed p0 to p4 only
        and got two "slow down".  A third blank line in a row costs a line
        again, dropped quietly once the budget is spent.
        """
        bob = self.named("bob")
        alice = self.named("alice")
        self.clock.advance(10)
        alice.sendRaw(b"".join(b"p%d\r\n\r\n" % (n,) for n in range(6)))
        self.assertEqual(bob.received(), [f"alice: p{n}" for n in range(6)])
        self.assertEqual(alice.received(), [])
        self.clock.advance(10)
        alice.sendRaw(b"".join(b"q%d\n\n\n" % (n,) for n in range(10)))
        self.assertEqual(bob.received(), [f"alice: q{n}" for n in range(10)])
        self.assertEqual(alice.received(), [])
        self.clock.advance(10)
        alice.sendRaw(b"r\r\n" + b"\r\n" * (_FREE_EMPTY_LINES + 9 + 5) + b"s\r\n")
        self.assertEqual(bob.received(), ["alice: r"])
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters["dropped_lines"], 5)
        self.clock.advance(0.21)
        self.assertEqual(bob.received(), ["alice: s"])  # it waited its turn

    def test_emptyLinesBeforeTheNameAreIgnored(self) -> None:
        """
        Enter pressed before the name costs no try (it cost one, with an
        error); past the first few in a row, each such line is a line of
        the flood budget, dropped quietly once it is spent, so a stream of
        them is cut off as an excess flood.
        """
        client = self.connect()
        client.received()
        client.send("", "   ", "", "")
        self.assertEqual(client.received(), [])
        client.send("alice")
        self.assertEqual(client.protocol.name, "alice")
        flooder = self.connect()
        flooder.received()
        flooder.sendRaw(b"\n" * (_FREE_EMPTY_LINES + 10 + _EXCESS_FLOOD - 1))
        self.assertFalse(flooder.closing)
        self.assertEqual(flooder.received(), [])
        flooder.sendRaw(b"\n")
        self.assertTrue(flooder.closing)
        self.assertEqual(flooder.received(), [f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye"])

    def test_utf8(self) -> None:
        bob = self.named("bob")
        alice = self.named("alice")
        text = "h\u00e9llo w\u00f6rld \u2713 \U0001f600 \u65e5\u672c"
        alice.send(text)
        self.assertEqual(bob.receivedBytes(), ("alice: " + text).encode("utf-8") + b"\r\n")

    def test_registersAsStreamingProducer(self) -> None:
        client = self.connect()
        self.assertIs(client.transport.producer, client.protocol)
        self.assertTrue(client.transport.streaming)


class RoomTests(ChatTestCase):
    """
    The lobby, messages, and join and leave notices.
    """

    def test_everyoneStartsInLobby(self) -> None:
        alice = self.named("alice")
        self.assertEqual(alice.protocol.room.name, LOBBY)
        self.assertIn("alice", self.factory.hub.rooms[LOBBY].members)

    def test_messageGoesToOthersNotSender(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        alice.send("hello there")
        self.assertEqual(bob.received(), ["alice: hello there"])
        self.assertEqual(carol.received(), ["alice: hello there"])
        self.assertEqual(alice.received(), [])

    def test_messageStaysInItsRoom(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        carol.send("/join dev")
        self.drain()
        alice.send("lobby only")
        carol.send("dev only")
        self.assertEqual(bob.received(), ["alice: lobby only"])
        self.assertEqual(carol.received(), [])
        self.assertEqual(alice.received(), [])

    def test_joinNotice(self) -> None:
        alice = self.named("alice")
        bob = self.connect()
        bob.send("bob")
        self.assertEqual(alice.received(), ["*** bob joined lobby"])
        self.assertEqual(
            bob.received(),
            GREETING + ["*** hello bob; /help lists the commands", "*** you are in lobby with 1 other"],
        )
        carol = self.connect()
        carol.send("carol")
        self.assertEqual(carol.received()[-1], "*** you are in lobby with 2 others")

    def test_leaveNoticeOnJoin(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        carol.send("/join dev")
        bob.send("/join dev")
        self.assertEqual(alice.received(), ["*** carol left lobby", "*** bob left lobby"])
        self.assertEqual(carol.received(), ["*** you are in dev with 0 others", "*** bob joined dev"])
        self.assertEqual(bob.received(), ["*** carol left lobby", "*** you are in dev with 1 other"])

    def test_leaveNoticeOnDisconnect(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        bob.disconnect()
        self.assertEqual(alice.received(), ["*** bob left (connection closed)"])
        self.assertIsNone(self.factory.hub.find("bob"))

    def test_unnamedDisconnectIsSilent(self) -> None:
        alice = self.named("alice")
        other = self.connect()
        other.disconnect()
        self.assertEqual(alice.received(), [])

    def test_blankLinesAreNotSent(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        bob.send("", "   ", "\t")
        self.assertEqual(alice.received(), [])
        self.assertEqual(bob.received(), [])

    def test_messageSurroundingWhitespaceStripped(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        bob.send("  spaced\tout  ")
        self.assertEqual(alice.received(), ["bob: spaced out"])


class CommandTests(ChatTestCase):
    """
    Every command, its errors and its usage line.
    """

    def test_help(self) -> None:
        alice = self.named("alice")
        alice.send("/help")
        self.assertEqual(alice.received(), HELP)

    def test_helpListsEveryCommand(self) -> None:
        listed = {line.split()[1][1:] for line in HELP if line.startswith("***   /")}
        self.assertEqual(listed, set(ChatProtocol.commands))

    def test_nickTellsRoom(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        carol.send("/join dev")
        self.drain()
        alice.send("/nick alicia")
        self.assertEqual(alice.received(), ["*** alice is now known as alicia"])
        self.assertEqual(bob.received(), ["*** alice is now known as alicia"])
        self.assertEqual(carol.received(), [])
        self.assertIs(self.factory.hub.find("alicia"), alice.protocol)
        self.assertIsNone(self.factory.hub.find("alice"))
        alice.send("hi")
        self.assertEqual(bob.received(), ["alicia: hi"])
        bob.send("/who")
        self.assertEqual(bob.received(), ["*** in lobby: alicia, bob"])

    def test_nickFreesOldName(self) -> None:
        alice = self.named("alice")
        alice.send("/nick alicia")
        self.named("alice")
        self.assertEqual(len(self.factory.hub.members), 2)

    def test_nickTaken(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/nick BOB")
        self.assertEqual(alice.received(), ["! the name BOB is taken"])
        self.assertEqual(bob.received(), [])
        self.assertEqual(alice.protocol.name, "alice")

    def test_nickInvalid(self) -> None:
        alice = self.named("alice")
        alice.send("/nick bad name!", "/nick " + "x" * 33)
        self.assertEqual(alice.received(), [f"! {NAME_RULES}"] * 2)
        self.assertEqual(alice.protocol.name, "alice")

    def test_nickSameName(self) -> None:
        alice = self.named("alice")
        alice.send("/nick alice")
        self.assertEqual(alice.received(), ["! you are already called alice"])

    def test_nickCaseOnlyChange(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/nick Alice")
        self.assertEqual(alice.received(), ["*** alice is now known as Alice"])
        self.assertEqual(bob.received(), ["*** alice is now known as Alice"])
        self.assertEqual(alice.protocol.name, "Alice")
        self.assertIs(self.factory.hub.find("alice"), alice.protocol)
        self.assertEqual(len(self.factory.hub.members), 2)

    def test_nickUsage(self) -> None:
        alice = self.named("alice")
        alice.send("/nick", "/nick   ")
        self.assertEqual(alice.received(), ["! usage: /nick NAME"] * 2)

    def test_joinCreatesRoom(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join dev")
        self.assertEqual(alice.received(), ["*** you are in dev with 0 others"])
        self.assertEqual(bob.received(), ["*** alice left lobby"])
        self.assertEqual(alice.protocol.room.name, "dev")
        self.assertIn("dev", self.factory.hub.rooms)

    def test_joinKeepsNameAsWritten(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join Dev.Team")
        bob.send("/join dev.team")
        self.assertEqual(bob.received(), ["*** alice left lobby", "*** you are in Dev.Team with 1 other"])
        self.assertIs(alice.protocol.room, bob.protocol.room)

    def test_joinLeadingHashIgnored(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join #dev")
        bob.send("/join dev")
        self.assertEqual(alice.received(), ["*** you are in dev with 0 others", "*** bob joined dev"])
        self.assertEqual(sorted(self.factory.hub.rooms), ["dev", "lobby"])

    def test_joinRoomYouAreIn(self) -> None:
        alice = self.named("alice")
        alice.send("/join lobby", "/join #LOBBY")
        self.assertEqual(alice.received(), ["! you are already in lobby"] * 2)
        alice.send("/join dev")
        alice.received()
        alice.send("/join Dev")
        self.assertEqual(alice.received(), ["! you are already in dev"])

    def test_joinInvalidRoom(self) -> None:
        alice = self.named("alice")
        alice.send("/join two words", "/join #", "/join ##dev", "/join " + "r" * 33, "/join caf\u00e9")
        self.assertEqual(alice.received(), [f"! {ROOM_RULES}"] * 5)
        self.assertEqual(list(self.factory.hub.rooms), [LOBBY])
        self.assertEqual(alice.protocol.room.name, LOBBY)

    def test_joinUsage(self) -> None:
        alice = self.named("alice")
        alice.send("/join")
        self.assertEqual(alice.received(), ["! usage: /join ROOM"])

    def test_joinTooManyRooms(self) -> None:
        self.makeFactory(maxRooms=2)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join one")
        self.drain()
        bob.send("/join two")
        self.assertEqual(bob.received(), ["! there are already 2 rooms; join one of them"])
        self.assertEqual(bob.protocol.room.name, LOBBY)
        bob.send("/join one")
        self.assertEqual(bob.received(), ["*** you are in one with 1 other"])

    def test_lobbyOnly(self) -> None:
        """
        With one room at most (C{--chat-max-rooms 0} or C{1}), the lobby is
        the only one, and C{/join} says so (it said "there are already 1
        rooms").
        """
        for most in (1, 0):  # 0 from an application embedding chat
            self.makeFactory(maxRooms=most)
            alice = self.named("alice")
            alice.send("/join one")
            self.assertEqual(alice.received(), ["! no room but the lobby may be made here"])

    def test_partBackToLobby(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join dev")
        self.drain()
        alice.send("/part")
        self.assertEqual(alice.received(), ["*** you are in lobby with 1 other"])
        self.assertEqual(bob.received(), ["*** alice joined lobby"])
        self.assertEqual(alice.protocol.room.name, LOBBY)
        self.assertNotIn("dev", self.factory.hub.rooms)

    def test_partTellsTheRoomLeft(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join dev")
        bob.send("/join dev")
        self.drain()
        alice.send("/part")
        self.assertEqual(bob.received(), ["*** alice left dev"])

    def test_partInLobby(self) -> None:
        alice = self.named("alice")
        alice.send("/part")
        self.assertEqual(
            alice.received(), ["! you are in the lobby already; /quit to leave the chat"]
        )

    def test_rooms(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        bob.send("/join dev", "/topic builds")
        carol.send("/join dev")
        alice.send("/join Alpha")
        self.drain()
        alice.send("/rooms")
        self.assertEqual(
            alice.received(),
            [
                "*** 3 rooms:",
                "***   lobby (0 members)",
                "***   Alpha (1 member)",
                "***   dev (2 members); topic: builds",
            ],
        )

    def test_emptyRoomsDisappearButLobby(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/join dev")
        bob.send("/join dev")
        alice.send("/join other")
        bob.disconnect()
        alice.send("/part")
        self.drain()
        alice.send("/rooms")
        self.assertEqual(alice.received(), ["*** 1 room:", "***   lobby (1 member)"])
        alice.disconnect()
        self.assertEqual(list(self.factory.hub.rooms), [LOBBY])

    def test_who(self) -> None:
        alice = self.named("alice")
        self.named("Bob")
        self.named("carol")
        dave = self.named("dave")
        dave.send("/join dev")
        self.drain()
        alice.send("/who")
        self.assertEqual(alice.received(), ["*** in lobby: alice, Bob, carol"])
        dave.received()
        dave.send("/who")
        self.assertEqual(dave.received(), ["*** in dev: dave"])

    def test_privateMessagesToOneMemberAreLimited(self) -> None:
        """
        Private messages to one member, from everyone together, are held to
        C{privateRate} bytes a second (in bursts of 4 s worth): a sender
        over it is told when to try again.  Many connections could bury one
        member under more than it reads, and have it cut off.
        """
        self.makeFactory(privateRate=1000.0, rate=0)
        senders = [self.named(f"s{n}") for n in range(4)]
        bob = self.named("bob")
        carol = self.named("carol")
        text = "p" * 480  # "[private] sN: " + 480 + CRLF: 496 bytes
        for sender in senders:
            sender.send(f"/msg bob {text}", f"/msg bob {text}")
        self.assertEqual(bob.received(), [f"[private] s{n}: {text}" for n in range(4) for _ in range(2)])
        senders[0].received()
        senders[0].send(f"/msg bob {text}")
        self.assertEqual(
            senders[0].received(), ["! bob is being sent too many private messages; try again in 0.5 s"]
        )
        self.assertEqual(bob.received(), [])
        senders[1].send(f"/msg carol {text}")
        self.assertEqual(carol.received(), [f"[private] s1: {text}"])
        self.clock.advance(0.5)
        senders[0].send(f"/msg bob {text}")
        self.assertEqual(bob.received(), [f"[private] s0: {text}"])
        self.assertEqual(self.factory.stats.counters["private_refused"], 1)

    def test_privateLimitGoesWithTheMember(self) -> None:
        """
        A member who leaves takes its budget with it: one who takes the name
        starts afresh.
        """
        self.makeFactory(privateRate=1000.0, rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[f"/msg bob {'p' * 480}"] * 9)
        self.assertEqual(len(bob.received()), 8)
        bob.send("/quit")
        bob.disconnect()
        self.assertEqual(self.factory.hub._inboxes, {})
        bob = self.named("bob")
        alice.received()
        alice.send(f"/msg bob {'p' * 480}")
        self.assertEqual(len(bob.received()), 1)

    def test_privateLineOverTheBurstStillGoes(self) -> None:
        """
        A line longer than the whole burst is not refused for ever: it takes
        all of it.
        """
        self.makeFactory(privateRate=10.0, rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/msg bob " + "p" * 100)
        self.assertEqual(bob.received(), ["[private] alice: " + "p" * 100])
        alice.received()
        alice.send("/msg bob again")
        self.assertEqual(alice.received(), ["! bob is being sent too many private messages; try again in 2.4 s"])

    def test_privateRateZeroIsNoLimit(self) -> None:
        self.makeFactory(privateRate=0, rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[f"/msg bob {'p' * 4000}"] * 100)
        self.assertEqual(len(bob.received()), 100)

    def test_msg(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        bob.send("/join dev")
        self.drain()
        alice.send("/msg BOB psst,  over here")
        self.assertEqual(bob.received(), ["[private] alice: psst,  over here"])
        self.assertEqual(alice.received(), ["[private to bob] psst,  over here"])
        self.assertEqual(carol.received(), [])

    def test_msgUnknownTarget(self) -> None:
        alice = self.named("alice")
        alice.send("/msg dave hello")
        self.assertEqual(alice.received(), ["! nobody is called dave"])

    def test_msgToYourself(self) -> None:
        alice = self.named("alice")
        alice.send("/msg Alice hello")
        self.assertEqual(alice.received(), ["! that is you"])

    def test_msgUsage(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/msg", "/msg bob", "/msg bob    ")
        self.assertEqual(alice.received(), ["! usage: /msg NAME TEXT"] * 3)
        self.assertEqual(bob.received(), [])

    def test_me(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        carol.send("/join dev")
        self.drain()
        alice.send("/me waves at everyone")
        self.assertEqual(alice.received(), ["* alice waves at everyone"])
        self.assertEqual(bob.received(), ["* alice waves at everyone"])
        self.assertEqual(carol.received(), [])

    def test_actionNeverPassesForAServerLine(self) -> None:
        """
        Server lines start with C{*** }, actions with C{* name }: a user
        named C{the} cannot make C{/me} look like the server's notices
        (they were both C{* }).
        """
        the = self.named("the")
        bob = self.named("bob")
        self.drain()
        the.send("/me server is shutting down; bye", "/me left (excess flood)")
        lines = bob.received()
        self.assertEqual(lines, ["* the server is shutting down; bye", "* the left (excess flood)"])
        the.send("/quit")
        self.assertEqual(bob.received(), ["*** the left (quit)"])

    def test_meUsage(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/me")
        self.assertEqual(alice.received(), ["! usage: /me ACTION"])
        self.assertEqual(bob.received(), [])

    def test_topic(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/topic")
        self.assertEqual(alice.received(), ["*** lobby has no topic"])
        alice.send("/topic  Rust \x1b[31monly ")
        self.assertEqual(alice.received(), ["*** alice set the topic of lobby: Rust only"])
        self.assertEqual(bob.received(), ["*** alice set the topic of lobby: Rust only"])
        bob.send("/topic")
        self.assertEqual(bob.received(), ["*** topic of lobby: Rust only"])
        bob.send("/topic something else")
        self.assertEqual(alice.received(), ["*** bob set the topic of lobby: something else"])

    def test_topicCleared(self) -> None:
        """
        C{/topic -delete} clears the topic (an empty topic could not be
        set: the topic could never be cleared); a topic over L{MAX_TOPIC}
        characters is refused.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/topic builds")
        bob.received()
        alice.received()
        alice.send("/topic -delete")
        self.assertEqual(alice.received(), ["*** alice cleared the topic of lobby"])
        self.assertEqual(bob.received(), ["*** alice cleared the topic of lobby"])
        bob.send("/topic")
        self.assertEqual(bob.received(), ["*** lobby has no topic"])
        bob.send("/topic -delete")
        self.assertEqual(bob.received(), ["! lobby has no topic"])
        self.assertEqual(alice.received(), [])
        alice.send("/topic " + "t" * (MAX_TOPIC + 1))
        self.assertEqual(alice.received(), [f"! a topic is at most {MAX_TOPIC} characters"])
        alice.send("/topic " + "t" * MAX_TOPIC)
        self.assertEqual(bob.received(), ["*** alice set the topic of lobby: " + "t" * MAX_TOPIC])

    def test_topicShownOnJoin(self) -> None:
        alice = self.named("alice")
        alice.send("/topic welcome all")
        alice.send("/join dev", "/topic dev talk")
        bob = self.connect()
        bob.send("bob")
        self.assertEqual(
            bob.received()[-2:], ["*** you are in lobby with 0 others", "*** topic: welcome all"]
        )
        bob.send("/join dev")
        self.assertEqual(bob.received(), ["*** you are in dev with 1 other", "*** topic: dev talk"])

    def test_topicIsPerRoom(self) -> None:
        alice = self.named("alice")
        alice.send("/join dev", "/topic dev talk", "/part")
        alice.received()
        alice.send("/topic")
        self.assertEqual(alice.received(), ["*** lobby has no topic"])

    def test_quit(self) -> None:
        """
        C{/quit} tells the room and frees the name at once, as an IRC
        server's QUIT, before the connection has closed (over TLS it waits
        for the client's close_notify: the room heard of it, and the name
        stayed taken, up to 10 s later).
        """
        alice = self.named("alice")
        bob = self.named("bob")
        bob.send("/quit gone fishing")
        self.assertEqual(bob.received(), ["*** bye"])
        self.assertTrue(bob.transport.disconnecting)
        self.assertEqual(alice.received(), ["*** bob left (quit: gone fishing)"])
        bob.send("still here?")
        self.assertEqual(alice.received(), [])
        self.assertIsNone(self.factory.hub.find("bob"))
        newBob = self.named("bob")
        self.assertIs(self.factory.hub.find("bob"), newBob.protocol)
        bob.disconnect()
        self.assertEqual(alice.received(), [])
        self.assertIs(self.factory.hub.find("bob"), newBob.protocol)

    def test_quitWithoutReason(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        bob.send("/quit")
        bob.disconnect()
        self.assertEqual(alice.received(), ["*** bob left (quit)"])

    def test_quitBeforeAName(self) -> None:
        """
        C{/quit} before a name is given leaves, as IRC's QUIT before
        registering: it was taken for a name, refused, and cost a try.
        """
        alice = self.named("alice")
        for line in ("/quit", "/QUIT not today"):
            client = self.connect()
            client.received()
            client.send(line)
            self.assertEqual(client.received(), ["*** bye"])
            self.assertTrue(client.transport.disconnecting)
            client.disconnect()
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters.get("excess_floods", 0), 0)

    def test_commandsBeforeANameCostNoTry(self) -> None:
        """
        A line starting with C{/} before the name, which no name does, gets
        a line saying a name comes first (C{/help} the help) and costs no
        try: C{/help} at the name prompt was refused as a name, and cost one.
        Each is a line of the flood budget, so a stream of them is still cut
        off as an excess flood.
        """
        self.makeFactory(rate=5.0, burst=10.0)
        client = self.connect()
        client.received()
        client.send("/help")
        self.assertEqual(client.received(), HELP)
        client.send("/join dev", "/who", "//hi", "/")
        self.assertEqual(client.received(), ["! give your name first; commands work once you have one"] * 4)
        client.send("no good")
        self.assertEqual(client.received(), [f"! {NAME_RULES}; try another (2 left)"])
        client.send("alice")
        self.assertEqual(client.protocol.name, "alice")
        flooder = self.connect(host="192.0.2.1")
        flooder.received()
        flooder.sendRaw(b"/help\n" * (10 + _EXCESS_FLOOD))
        self.assertTrue(flooder.closing)
        self.assertEqual(flooder.received()[-1], f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye")

    def test_helpBeforeANameWhateverTheCase(self) -> None:
        """
        C{/HELP} before the name gets the help too, as commands after it
        do whatever their case (and so does C{/Quit}).
        """
        client = self.connect()
        client.received()
        client.send("/HELP")
        self.assertEqual(client.received(), HELP)
        client.send("/Help me")
        self.assertEqual(client.received(), HELP)
        self.assertIsNone(client.protocol.name)

    def test_lineStartingWithASlash(self) -> None:
        """
        A line that starts with C{//} goes to the room with one C{/} less,
        as IRC clients take it: there was no way to say a line starting
        with C{/} (C{//join is the command} got "unknown command").
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("//join is the command", "//")
        self.assertEqual(bob.received(), ["alice: /join is the command", "alice: /"])
        self.assertEqual(alice.received(), [])
        self.assertEqual(alice.protocol.room.name, LOBBY)

    def test_quitSendsPendingOutputFirst(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("last words")
        bob.send("/quit")
        self.assertEqual(bob.received(), ["alice: last words", "*** bye"])

    def test_halfCloseSendsWhatIsWaitingThenCloses(self) -> None:
        """
        A client that shuts down its sending side (C{nc -N}) still gets
        every line produced for it, then the server closes; the room is told
        it left.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        self.assertTrue(IHalfCloseableProtocol.providedBy(bob.protocol))
        bob.send("/who")
        bob.protocol.readConnectionLost()
        self.assertEqual(bob.received(), ["*** in lobby: alice, bob"])
        self.assertTrue(bob.transport.disconnecting)
        bob.disconnect()
        self.assertEqual(alice.received(), ["*** bob left (connection closed)"])

    def test_halfCloseEndsTheLastLine(self) -> None:
        """
        The end of a client's input ends a last line it sent without a line
        ending (C{printf 'hi\\nlast words' | nc -N}), as the end of a file
        ends its last line: it was dropped.  A line being refused as too
        long stays refused, and a line end split before it stays one.
        """
        self.makeFactory(maxLine=20)
        bob = self.named("bob")
        alice = self.named("alice")
        alice.sendRaw(b"hi\nlast words")
        alice.protocol.readConnectionLost()
        self.assertEqual(bob.received(), ["alice: hi", "alice: last words", "*** alice left (connection closed)"])
        self.assertTrue(alice.transport.disconnecting)
        carol = self.connect()
        carol.sendRaw(b"carol")
        carol.protocol.readConnectionLost()
        self.assertEqual(bob.received(), ["*** carol joined lobby", "*** carol left (connection closed)"])
        for sent, answer in [
            (b"x" * 21, "! line too long (over 20 bytes); it was dropped"),
            (b"/who\r", "*** in lobby: bob, dave"),
            (b"/who\r\r", "*** in lobby: bob, dave"),
        ]:
            dave = self.named("dave")
            dave.sendRaw(sent)
            dave.protocol.readConnectionLost()
            self.assertEqual(dave.received(), [answer])
            self.assertEqual(bob.received(), ["*** dave left (connection closed)"])
            self.assertTrue(dave.transport.disconnecting)
            dave.disconnect()

    def test_lastLineHeldAtTheEndOfInput(self) -> None:
        """
        A last line without a line end, sent by a client that does not
        read, is held when the input ends if more than C{maxOutput} waits
        for the client by then, and answered once the client takes what
        waits; the connection closes after: without the check, the end of
        input closed at once, and the line was lost.
        """
        self.makeFactory(rate=0, maxOutput=1000)
        alice = self.connect(transport=FillingTransport)
        alice.send("alice")
        takeAll(alice)
        bob = self.named("bob")
        alice.transport.producer.pauseProducing()
        alice.sendRaw(b"/who")
        bob.send("b" * 2000)  # now more than maxOutput waits for alice
        alice.protocol.readConnectionLost()
        self.assertFalse(alice.transport.disconnecting)
        alice.transport.producer.resumeProducing()
        lines = readAll(alice)
        self.assertEqual(lines, ["bob: " + "b" * 2000, "*** in lobby: alice, bob"])
        self.assertTrue(alice.transport.disconnecting)

    def test_unknownCommand(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/dance wildly", "/", "/ msg")
        self.assertEqual(
            alice.received(),
            [
                "! unknown command /dance; /help lists them",
                "! unknown command /; /help lists them",
                "! unknown command /; /help lists them",
            ],
        )
        self.assertFalse(alice.closing)
        self.assertEqual(bob.received(), [])
        alice.send("still here")
        self.assertEqual(bob.received(), ["alice: still here"])

    def test_commandsCaseInsensitive(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/HELP")
        self.assertEqual(alice.received(), HELP)
        alice.send("/Me jumps")
        self.assertEqual(bob.received(), ["* alice jumps"])
        self.assertEqual(alice.received(), ["* alice jumps"])
        alice.send("/JOIN dev", "/WhO")
        self.assertEqual(alice.received(), ["*** you are in dev with 0 others", "*** in dev: alice"])
        alice.send("/Quit")
        self.assertEqual(alice.received(), ["*** bye"])

    def test_everyErrorStartsWithBang(self) -> None:
        """
        Each mistake gets exactly one line, and it starts with C{! }.
        """
        alice = self.named("alice")
        self.named("bob")
        mistakes = [
            "/nick", "/nick bob", "/nick bad name", "/nick alice", "/join", "/join lobby",
            "/join bad room", "/part", "/msg", "/msg bob", "/msg nobody hi", "/msg alice hi",
            "/me", "/nonsense",
        ]
        for mistake in mistakes:
            alice.send(mistake)
            self.clock.advance(0.2)  # (past the burst, lines wait their turn)
            lines = alice.received()
            self.assertEqual(len(lines), 1, (mistake, lines))
            self.assertTrue(lines[0].startswith("! "), (mistake, lines))
            self.assertFalse(alice.closing)


class HistoryTests(ChatTestCase):
    """
    A room's last lines, replayed to whoever joins it.
    """

    settings = {"historySize": 3}

    def test_historyReplayedOnJoin(self) -> None:
        alice = self.named("alice")
        alice.send("one", "two", "three", "/me four")
        bob = self.connect()
        bob.send("bob")
        self.assertEqual(
            bob.received()[2:],
            [
                "*** hello bob; /help lists the commands",
                "*** you are in lobby with 1 other",
                "[history] alice: two",
                "[history] alice: three",
                "[history] * alice four",
            ],
        )

    def test_historyAfterTopic(self) -> None:
        alice = self.named("alice")
        alice.send("/join dev", "/topic t", "said")
        bob = self.named("bob")
        bob.send("/join dev")
        self.assertEqual(
            bob.received(), ["*** you are in dev with 1 other", "*** topic: t", "[history] alice: said"]
        )

    def test_historyDisabled(self) -> None:
        self.makeFactory(historySize=0)
        alice = self.named("alice")
        alice.send("one", "/me two")
        bob = self.connect()
        bob.send("bob")
        self.assertEqual(bob.received()[-1], "*** you are in lobby with 1 other")
        self.assertEqual(len(self.factory.hub.rooms[LOBBY].history), 0)

    def test_onlyMessagesAndActionsRemembered(self) -> None:
        alice = self.named("alice")
        carol = self.named("carol")
        alice.send("/join dev")
        carol.send("/join dev", "/msg alice secret", "/nick carole", "/topic x", "/part")
        alice.send("/me stays")
        bob = self.named("bob")
        bob.send("/join dev")
        self.assertEqual(
            bob.received(),
            ["*** you are in dev with 1 other", "*** topic: x", "[history] * alice stays"],
        )

    def test_historyIsPerRoom(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("in lobby")
        bob.send("/join dev", "in dev")
        carol = self.named("carol")
        carol.send("/join dev")
        self.assertEqual(
            carol.received(), ["*** you are in dev with 1 other", "[history] bob: in dev"]
        )
        carol.send("/part")
        self.assertEqual(
            carol.received(), ["*** you are in lobby with 1 other", "[history] alice: in lobby"]
        )

    def test_historyIsPerRoomInHub(self) -> None:
        alice = self.named("alice")
        alice.send("hello")
        history = self.factory.hub.rooms[LOBBY].history
        self.assertEqual([line.text for line in history], ["[history] alice: hello"])


class FillingTransport(StringTransport):
    """
    A L{StringTransport} that, as a real one, pauses its producer when more
    than C{bufferSize} bytes wait in it; L{take} is the client reading them.
    """

    bufferSize = 65536

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        if len(self.io.getvalue()) > self.bufferSize and self.producer is not None:
            self.producer.pauseProducing()

    def take(self) -> bytes:
        """
        The client reads what waits; the producer is resumed.
        """
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data


class RefusingTransport(StringTransport):
    """
    A L{StringTransport} that, as netsuite's listeners, can close without
    reading on; it keeps the grace of each such close.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        StringTransport.__init__(self, *args, **kwargs)
        self.refused: List[float] = []

    def closeWithoutReading(self, grace: float) -> None:
        self.refused.append(grace)


def takeAll(client: ChatClient) -> bytes:
    """
    Read as a client on a L{FillingTransport} would, a pass of the reactor
    at a time, until nothing more comes; what came.
    """
    data = b""
    for _ in range(1000):
        client.clock.advance(0)
        chunk = client.transport.take()
        if not chunk:
            break
        data += chunk
    return data


def readAll(client: ChatClient) -> List[str]:
    """
    L{takeAll}, as lines.
    """
    return takeAll(client).decode("utf-8").split("\r\n")[:-1]


class RoomBudgetTests(ChatTestCase):
    """
    What one room is sent, by all its members together, is held to
    C{roomRate} bytes a second (in bursts of 4 s worth): past it, what is
    said is refused, and the sender told when to try again.  Members from
    many addresses, each within its flood limits, made the room send every
    member more at once than it could take, and the readers were cut off.
    """

    def setUp(self) -> None:
        ChatTestCase.setUp(self)
        # (Notices told one by one, however many: see NoticeFoldingTests.)
        self.makeFactory(roomRate=1000.0, rate=0, noticeRate=0)

    def refill(self) -> None:
        """
        Let every room's budget fill up again (the joins took from it).
        """
        self.clock.advance(10)

    def test_linesToARoomAreLimited(self) -> None:
        senders = [self.named(f"s{n}") for n in range(4)]
        bob = self.named("bob")
        carol = self.named("carol")
        carol.send("/join dev")
        self.refill()
        self.drain()
        text = "r" * 490  # "sN: " + 490 + CRLF: 496 bytes
        for sender in senders:
            sender.send(text, text)
        self.assertEqual(bob.received(), [f"s{n}: {text}" for n in range(4) for _ in range(2)])
        senders[0].received()
        senders[0].send(text)
        self.assertEqual(
            senders[0].received(), ["! lobby is being sent too much at once; that line was dropped; try again in 0.5 s"]
        )
        self.assertEqual(bob.received(), [])
        self.assertEqual(len(self.factory.hub.rooms[LOBBY].history), 8)
        senders[1].send("/join dev", text)
        self.assertEqual(carol.received(), ["*** s1 joined dev", f"s1: {text}"])
        self.clock.advance(0.5)
        senders[0].send(text)
        self.assertEqual(bob.received(), ["*** s1 left lobby", f"s0: {text}"])
        self.assertEqual(self.factory.stats.counters["room_refused"], 1)

    def test_actionsAndTopicsToo(self) -> None:
        """
        C{/me} and C{/topic} are lines to the room like any other: refused
        past the budget, the topic unchanged.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        self.refill()
        # 41 bytes, then 3 x 990, then 980: 9 left.
        alice.send("/topic first", *["/me " + "a" * 980] * 3, "/me " + "a" * 970)
        self.drain()
        alice.send("/me waves", "/topic " + "t" * 300)
        refused = "! lobby is being sent too much at once; that line was dropped; try again in"
        self.assertEqual(alice.received(), [f"{refused} 0.1 s", f"{refused} 0.3 s"])
        self.assertEqual(bob.received(), [])
        self.assertEqual(self.factory.hub.rooms[LOBBY].topic, "first")

    def test_noticesGoAndComeOutOfTheBudget(self) -> None:
        """
        Notices (joins, leaves, names) go out whatever the budget, and what
        members say waits for them.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        self.refill()
        alice.send("a" * 3900)  # 3,909 bytes: 91 left; the notices take 485
        for n in range(20):
            self.named(f"n{n}")
        self.named("late")
        bob.send("/nick robert")
        self.assertEqual(alice.received(), ["*** bob is now known as robert"])
        alice.send("hello")
        self.assertEqual(
            alice.received(), ["! lobby is being sent too much at once; that line was dropped; try again in 0.4 s"]
        )
        self.assertEqual(bob.received(), ["*** bob is now known as robert"])

    def test_quitWordsWithinTheBudget(self) -> None:
        """
        A C{/quit} message is shown cut to 300 characters, and not at all
        when the room's budget cannot take it: quitting clients of a few
        addresses, each within its limits, sent the room twice its rate in
        4 KB quit messages.
        """
        bob = self.named("bob")
        self.refill()
        alice = self.named("alice")
        alice.send("/quit " + "q" * 4000)
        self.assertEqual(bob.received(), ["*** alice left (quit: " + "q" * 300 + ")"])
        carol = self.named("carol")
        carol.send("c" * 3300)  # the budget is spent
        bob.received()
        carol.send("/quit " + "q" * 300)
        self.assertEqual(bob.received(), ["*** carol left (quit)"])

    def test_noticeDebtHasAFloor(self) -> None:
        """
        However many notices a flood of joins and quits from many addresses
        sends, the room may speak again within 8 s (its budget went into a
        debt without end, the room silent for minutes after the flood).
        """
        bob = self.named("bob")
        for n in range(200):
            client = self.named(f"n{n}", host=f"10.1.{n}.1")
            client.send("/quit")
        bob.received()
        bob.send("hello")
        [refusal] = bob.received()
        seconds = float(refusal.rsplit(" ", 2)[-2])
        self.assertLessEqual(seconds, 4.1)  # the burst of 4,000 bytes, at 1,000 a second
        self.clock.advance(seconds + 0.1)
        bob.send("hello")
        self.assertEqual(bob.received(), [])
        self.assertEqual(self.factory.hub.rooms[LOBBY].history[-1].encoded, b"[history] bob: hello\r\n")

    def test_lineOverTheBurstStillGoes(self) -> None:
        """
        A line longer than the whole burst is not refused for ever: it takes
        all of it.
        """
        self.makeFactory(roomRate=100.0, rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        self.refill()
        alice.send("l" * 1000)
        self.assertEqual(bob.received(), ["alice: " + "l" * 1000])
        alice.send("again")
        self.assertEqual(alice.received(), ["! lobby is being sent too much at once; that line was dropped; try again in 0.1 s"])

    def test_roomRateZeroIsNoLimit(self) -> None:
        self.makeFactory(roomRate=0, rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*["m" * 4000] * 100)
        self.assertEqual(len(bob.received()), 100)
        self.assertIsNone(self.factory.hub.rooms[LOBBY].budget)

    def test_burstFromManyAddressesReachesAReader(self) -> None:
        """
        At the default limits, 15 addresses of 4 clients each, each client
        within its flood limits, say 10 lines of 4,000 bytes at once: a
        member whose transport holds 64 KiB and who reads only once it is
        all said gets every line that went out, and is not cut off as not
        reading (it was, past 8 times C{maxOutput}).
        """
        self.makeFactory()
        reader = self.connect(transport=FillingTransport)
        reader.send("reader")
        senders = [self.named(f"s{a}x{k}", host=f"10.0.{a}.1") for a in range(15) for k in range(4)]
        reader.transport.take()
        self.clock.advance(10)
        text = "z" * 4000
        for sender in senders:
            sender.sendRaw(f"{text}\r\n".encode() * 10)
        self.assertFalse(reader.closing)
        data = takeAll(reader)
        self.assertFalse(reader.closing)
        self.assertNotIn("slow_readers", self.factory.stats.counters)
        said = [line for line in data.decode().split("\r\n") if line.endswith(text)]
        refused = self.factory.stats.counters.get("room_refused", 0)
        self.assertGreater(refused, 0)
        self.assertEqual(len(said), 600 - refused)
        self.assertLessEqual(len(said) * 4010, 4 * 64 * 1024 + 4010)


def foldedCounts(line: str) -> Dict[str, int]:
    """
    The notices a line of folded notices (C{*** lobby, last second: 5
    joined, 1 changed name (...)}) tells, by kind: C{"joined"}, C{"left"}
    or C{"renamed"}.
    """
    counts: Dict[str, int] = {}
    for part in line.split(": ", 1)[1].split(" (")[0].split(", "):
        count, kind = part.split(" ", 1)
        kind = {"changed name": "renamed", "changed names": "renamed"}.get(kind, kind)
        counts[kind] = counts.get(kind, 0) + int(count)
    return counts


class NoticeFoldingTests(ChatTestCase):
    """
    A room is sent at most L{netsuite.rooms.NOTICE_RATE} join, leave and
    new-name notices a second one by one (in bursts of 20): past that,
    they are counted, and told in one line a second.  Clients of 30
    addresses joining and leaving in a loop, each within its address's
    limit, sent the 200 members of the lobby 37.9 MB of notices in 15 s.
    """

    FOLDED = "*** lobby, last second: {} (too many to name; /who lists who is here)"

    def setUp(self) -> None:
        ChatTestCase.setUp(self)
        self.bob = self.named("bob")
        self.clock.advance(60)  # the notice budget refills
        self.hosts = itertools.count(1)

    def arrive(self, name: str) -> ChatClient:
        """
        A new client named C{name}, of an address of its own; nobody's
        output is read.
        """
        client = self.connect(f"10.2.{next(self.hosts)}.1")
        client.send(name)
        return client

    def foldCalls(self) -> List[Any]:
        """
        The calls scheduled to tell folded notices.
        """
        tell = self.factory.hub._tellFolded
        return [call for call in self.clock.getDelayedCalls() if call.func == tell]

    def folded(self, lines: List[str]) -> Dict[str, int]:
        """
        The notices C{lines} tell: those told one by one and those counted
        in lines of folded notices, by kind.
        """
        told = {"joined": 0, "left": 0, "renamed": 0}
        for line in lines:
            if line.startswith("*** lobby, last second: "):
                for kind, count in foldedCounts(line).items():
                    told[kind] += count
            elif line.endswith(" joined lobby"):
                told["joined"] += 1
            elif " left" in line:
                told["left"] += 1
            elif " is now known as " in line:
                told["renamed"] += 1
            else:
                raise AssertionError(f"not a notice: {line!r}")
        return told

    def test_noticesPastTheBurstToldInOneLine(self) -> None:
        """
        The first 20 notices are told one by one; those past them, of each
        kind, are counted and told in one line a second later; once the
        budget refills, notices are told one by one again.
        """
        bob = self.bob
        arrivals = [self.arrive(f"n{n}") for n in range(int(_NOTICE_BURST))]
        self.assertEqual(bob.received(), [f"*** n{n} joined lobby" for n in range(20)])
        late = [self.arrive(f"late{n}") for n in range(5)]
        for client in arrivals[:3]:
            client.send("/quit")
        late[0].send("/nick later0")
        self.assertEqual(bob.received(), [])
        self.clock.advance(_FOLD_PERIOD)
        self.assertEqual(bob.received(), [self.FOLDED.format("5 joined, 3 left, 1 changed name")])
        self.assertEqual(self.factory.stats.counters["notices_folded"], 9)
        self.clock.advance(1 / self.factory.settings.noticeRate)
        late[1].send("/nick later1")
        self.assertEqual(bob.received(), ["*** late1 is now known as later1"])
        self.assertEqual(self.foldCalls(), [])

    def test_pluralsOfEachKind(self) -> None:
        """
        Each kind is named as its count wants; a kind nobody did is left
        out.
        """
        bob = self.bob
        clients = [self.arrive(f"n{n}") for n in range(int(_NOTICE_BURST) + 1)]
        clients[0].send("/nick m0")
        clients[1].send("/nick m1")
        bob.received()
        self.clock.advance(_FOLD_PERIOD)
        self.assertEqual(bob.received(), [self.FOLDED.format("1 joined, 2 changed names")])
        self.assertEqual(self.foldCalls(), [])

    def test_joinAndLeaveLoopsFromManyAddresses(self) -> None:
        """
        30 addresses joining and quitting 10 times a second each, for 15
        s: the lobby's members are sent about 3 notices a second, and
        every join and leave is told, one by one or counted.
        """
        bob = self.bob
        lines = []
        for second in range(15):
            for host in range(30):
                for n in range(10):
                    client = self.connect(f"10.3.{host}.1")
                    client.send(f"h{host}x{n}")
                    client.send("/quit")
                    client.disconnect()
            lines += bob.received()
            self.clock.advance(1.0)
        lines += bob.received()
        self.assertLessEqual(len(lines), _NOTICE_BURST + 15 * 3 + 1)
        self.assertEqual(self.folded(lines), {"joined": 4500, "left": 4500, "renamed": 0})
        self.assertEqual(self.foldCalls(), [])

    def test_roomEmptiedWhileCounting(self) -> None:
        """
        A room whose last member leaves while its notices are counted is
        gone, nothing is left scheduled for it, and a room made again of
        that name starts afresh.
        """
        clients = [self.arrive(f"n{n}") for n in range(int(_NOTICE_BURST) + 3)]
        for client in clients:
            client.send("/join dev")
        self.assertIsNotNone(self.factory.hub.rooms["dev"].folded)
        dev = self.factory.hub.rooms["dev"]
        for client in clients:
            client.send("/quit")
        self.assertNotIn("dev", self.factory.hub.rooms)
        self.assertEqual([call for call in self.foldCalls() if call.args == (dev,)], [])
        self.clock.advance(_FOLD_PERIOD)  # (the lobby's told)
        self.assertEqual(self.foldCalls(), [])
        self.bob.received()
        self.bob.send("/join dev")
        self.assertIsNone(self.factory.hub.rooms["dev"].folded)
        self.assertEqual(self.factory.hub.rooms["dev"].notices.delay(_NOTICE_BURST - 1), 0)  # (bob's join took one)

    def test_stopTellsWhatIsCounted(self) -> None:
        """
        When the factory stops (its last listener stopped), the notices
        being counted are told at once and nothing stays scheduled; until
        it starts again, notices go one by one.
        """
        bob = self.bob
        for n in range(int(_NOTICE_BURST) + 2):
            self.arrive(f"n{n}")
        bob.received()
        self.factory.doStart()
        self.factory.doStop()
        self.assertEqual(bob.received(), [self.FOLDED.format("2 joined")])
        self.assertEqual(self.foldCalls(), [])
        self.arrive("after")
        self.assertEqual(bob.received(), ["*** after joined lobby"])
        self.factory.doStart()
        self.arrive("again")
        self.assertEqual(bob.received(), [])
        self.assertEqual(len(self.foldCalls()), 1)
        self.clock.advance(_FOLD_PERIOD)
        self.assertEqual(bob.received(), [self.FOLDED.format("1 joined")])

    def test_countingGoesOnWhenTheBudgetRefills(self) -> None:
        """
        While notices are counted, those that come are counted too, though
        the rate would let them go one by one by then: a notice told alone
        would come before the line telling earlier ones.
        """
        bob = self.bob
        for n in range(int(_NOTICE_BURST) + 1):
            self.arrive(f"n{n}")
        bob.received()
        self.clock.advance(_FOLD_PERIOD * 0.6)  # a notice's worth of rate
        self.arrive("later")
        self.assertEqual(bob.received(), [])
        self.clock.advance(_FOLD_PERIOD * 0.4)
        self.assertEqual(bob.received(), [self.FOLDED.format("2 joined")])

    def test_foldedLineTakenFromTheRoomsBudget(self) -> None:
        """
        The line telling folded notices comes out of the room's byte
        budget, as notices told one by one do.
        """
        self.makeFactory(roomRate=1000.0, rate=0)
        bob = self.named("bob")
        self.clock.advance(60)
        for n in range(int(_NOTICE_BURST) + 1):
            self.arrive(f"n{n}")
        budget = self.factory.hub.rooms[LOBBY].budget
        self.assertLess(budget.delay(budget.burst), _FOLD_PERIOD)  # (the joins took less than a second's)
        self.clock.advance(_FOLD_PERIOD)
        told = bob.received()[-1]
        self.assertEqual(told, self.FOLDED.format("1 joined"))
        # Full again by then, less the line's bytes, at 1,000 a second.
        self.assertAlmostEqual(budget.delay(budget.burst), (len(told) + 2) / 1000.0)

    def test_hubSharedByTwoFactories(self) -> None:
        """
        A hub shared by two factories folds notices until both have
        stopped: the first to stop turned it off for the other.
        """
        other = ChatFactory(self.clock, hub=self.factory.hub)
        self.factory.doStart()
        other.doStart()
        self.factory.doStop()
        bob = self.bob
        for n in range(int(_NOTICE_BURST) + 5):
            self.arrive(f"n{n}")
        self.assertEqual(len(bob.received()), _NOTICE_BURST)
        other.doStop()
        self.assertEqual(bob.received(), [self.FOLDED.format("5 joined")])
        self.assertEqual(self.foldCalls(), [])

    def test_noticeRateZeroIsNoLimit(self) -> None:
        self.makeFactory(noticeRate=0)
        bob = self.named("bob")
        for n in range(50):
            self.arrive(f"n{n}")
        self.assertEqual(bob.received(), [f"*** n{n} joined lobby" for n in range(50)])
        self.assertEqual(self.foldCalls(), [])


class OwnAnswersTests(ChatTestCase):
    """
    While more than C{maxOutput} bytes wait for a client whose transport
    is full, the rest of what it sent waits too, its transport paused, and
    is answered as it takes its answers: its own commands (C{/rooms} many
    times in one write) cannot pile up answers for it until it is cut off
    as not reading.
    """

    settings = {"maxOutput": 1000, "rate": 0}

    def reader(self) -> ChatClient:
        client = self.connect(transport=FillingTransport)
        client.send("alice")
        self.clock.advance(0)
        client.transport.take()
        return client

    def test_answersWaitForTheClient(self) -> None:
        alice = self.reader()
        alice.sendRaw(b"/help\r\n" * 500)  # 330 KB of answers
        self.assertEqual(alice.transport.producerState, "paused")
        self.assertFalse(alice.closing)
        self.assertEqual(readAll(alice), HELP * 500)
        self.assertEqual(alice.transport.producerState, "producing")
        self.assertNotIn("slow_readers", self.factory.stats.counters)

    def test_moreInputWhileHeld(self) -> None:
        """
        What arrives while the client's lines wait (the rest of the read
        its transport was paused in) is answered after them, in order.
        """
        alice = self.reader()
        alice.sendRaw(b"/help\r\n" * 200)
        alice.sendRaw(b"/who\r\n/he")
        alice.sendRaw(b"lp\r\n")
        self.assertEqual(readAll(alice), HELP * 200 + ["*** in lobby: alice"] + HELP)

    def test_inputEndedWhileHeld(self) -> None:
        """
        A client whose input ends while its lines wait gets them answered,
        then the connection closes.
        """
        alice = self.reader()
        alice.sendRaw(b"/help\r\n" * 200 + b"/quit\r\n")
        alice.protocol.readConnectionLost()
        self.assertFalse(alice.closing)
        self.assertEqual(readAll(alice), HELP * 200 + ["*** bye"])
        self.assertTrue(alice.closing)

    def test_inputEndedWhileHeldWithoutQuit(self) -> None:
        """
        The same without a C{/quit}: the end of input, which came while the
        lines waited, closes the connection once they are answered.
        """
        alice = self.reader()
        alice.sendRaw(b"/help\r\n" * 200)
        alice.protocol.readConnectionLost()
        self.assertFalse(alice.closing)
        self.assertEqual(readAll(alice), HELP * 200)
        self.assertTrue(alice.closing)

    def test_aClientThatDoesNotReadIsStillCutOff(self) -> None:
        """
        A client that takes nothing is cut off as before once what the
        room says for it passes the limit; its own lines wait.
        """
        alice = self.reader()
        bob = self.named("bob")
        alice.sendRaw(b"/help\r\n" * 200)
        bob.send(*["m" * 90] * 11)
        self.clock.advance(_SLOW_GRACE)
        self.assertTrue(alice.transport.disconnected)
        self.assertEqual(self.factory.stats.counters["slow_readers"], 1)


class LongAnswerTests(ChatTestCase):
    """
    Answers as long as the server's state makes them (C{/rooms}, C{/who})
    are made as the client takes them, as a room's history is, and the
    client's next lines wait until it has taken them: a client that does
    not read holds about a transport's buffer of them, however many rooms
    and members there are and however often it asks.
    """

    settings = {"rate": 0}
    TOPIC = "\U0001f600" * MAX_TOPIC

    def makeRooms(self, count: int) -> List[str]:
        """
        Make C{count} rooms (each with a member and a topic of 1,200
        bytes); return the lines of C{/rooms} about them.
        """
        hub = self.factory.hub
        for n in range(count):
            member = FakeMember()
            hub.register(member, f"m{n:04}")
            hub.join(member, f"room{n:04}")
            hub.setTopic(member, self.TOPIC)
        self.clock.advance(_FOLD_PERIOD)  # the lobby is told of them
        return [f"***   room{n:04} (1 member); topic: {self.TOPIC}" for n in range(count)]

    def reader(self, name: str = "alice") -> ChatClient:
        client = self.connect(transport=FillingTransport)
        client.send(name)
        takeAll(client)
        return client

    def held(self, client: ChatClient) -> int:
        """
        The bytes waiting for C{client}, in its transport and in the chat.
        """
        return len(client.transport.value()) + client.protocol._outBytes

    def test_waitingLinesWaitForALongAnswer(self) -> None:
        """
        Lines waiting their turn behind a long answer (see
        L{LineQueueTests}) wait until the client has taken it, as the lines
        it sends after it do.
        """
        self.makeFactory(rate=5.0, burst=1.0, hostRate=0)
        self.makeRooms(400)
        alice = self.reader()
        self.clock.advance(1)
        alice.sendRaw(b"first\r\n/rooms\r\n/join dev\r\n")
        for _ in range(20):
            self.clock.advance(0.1)
        self.assertEqual(alice.protocol.room.name, LOBBY)
        lines = readAll(alice)
        self.assertIn("*** 401 rooms:", lines)
        self.clock.advance(0.21)
        self.assertEqual(alice.protocol.room.name, "dev")

    def test_waitingLinesAfterALongAnswerSentAtOnce(self) -> None:
        """
        Lines waiting their turn behind a long answer are handled once it
        is sent, also to a client that takes it as fast as it is sent
        (its transport never full).
        """
        self.makeFactory(rate=5.0, burst=1.0, hostRate=0)
        self.makeRooms(400)
        alice = self.named("alice")
        self.clock.advance(1)
        alice.sendRaw(b"first\r\n/rooms\r\n/join dev\r\n")
        for _ in range(20):
            self.clock.advance(0.1)
        self.assertEqual(alice.protocol.room.name, "dev")

    def test_roomsSentAsTheClientTakesThem(self) -> None:
        """
        Three C{/rooms} of 500 KB each, from a client that reads nothing:
        about two transport buffers wait for it (the whole answer waited,
        in the transport and the chat: 1,000 rooms with long topics made
        1.2 MB a C{/rooms}, and 990 clients asking 3 times each took 1.1 GB
        of memory).  Once it reads, it gets the three answers, whole and in
        order, then what it sent after them.
        """
        lines = self.makeRooms(400)
        alice = self.reader()
        alice.sendRaw(b"/rooms\r\n" * 3 + b"/join dev\r\n")
        for _ in range(10):
            self.clock.advance(0)
        self.assertLess(self.held(alice), 2 * 65536 + 2 * 1300)
        self.assertEqual(alice.protocol.room.name, LOBBY)
        self.clock.advance(_SLOW_GRACE * 10)
        self.assertFalse(alice.closing)
        answer = ["*** 401 rooms:", "***   lobby (1 member)"] + lines
        self.assertEqual(readAll(alice), answer * 3 + ["*** you are in dev with 0 others"])
        self.assertNotIn("slow_readers", self.factory.stats.counters)

    def test_whoSentAsTheClientTakesIt(self) -> None:
        """
        C{/who} in a room of many members comes in lines of 50 names, after
        one that says how many there are, made as the client takes them.
        """
        hub = self.factory.hub
        for n in range(2000):
            hub.register(FakeMember(), f"member{n:04}-" + "x" * 20)
        alice = self.reader("a")
        alice.sendRaw(b"/who\r\n" * 3)
        for _ in range(10):
            self.clock.advance(0)
        self.assertLess(self.held(alice), 2 * 65536 + 2 * 2000)
        names = ["a"] + [f"member{n:04}-" + "x" * 20 for n in range(2000)]
        answer = ["*** 2001 in lobby:"] + [
            "***   " + ", ".join(names[n : n + 50]) for n in range(0, len(names), 50)
        ]
        self.assertEqual(readAll(alice), answer * 3)

    def test_fewMembersInOneLine(self) -> None:
        """
        Up to 50 members, C{/who} is one line, as it was.
        """
        hub = self.factory.hub
        for n in range(49):
            hub.register(FakeMember(), f"m{n:02}")
        alice = self.named("alice")
        alice.send("/who")
        self.assertEqual(alice.received(), ["*** in lobby: alice, " + ", ".join(f"m{n:02}" for n in range(49))])

    def test_roomsAfterTheHistory(self) -> None:
        """
        A C{/rooms} sent while a room's history is still being replayed
        comes after it; what the room says meanwhile after both.
        """
        self.makeFactory(rate=0, roomRate=0, historySize=300, historyBytes=1 << 20)
        bob = self.named("bob")
        said = [f"{n} " + "h" * 1000 for n in range(300)]
        bob.send(*said)
        self.drain()
        carol = self.connect(transport=FillingTransport)
        carol.send("carol")
        self.clock.advance(0)
        carol.send("/rooms")
        bob.send("meanwhile")
        lines = readAll(carol)
        self.assertEqual(lines[4:304], [f"[history] bob: {text}" for text in said])
        self.assertEqual(lines[304:], ["*** 1 room:", "***   lobby (2 members)", "bob: meanwhile"])

    def test_answerToAPausedClientWaitsWhole(self) -> None:
        """
        A client whose transport is full (paused) that asks for C{/rooms}
        gets none of it written meanwhile: it is all made as the client
        takes it (its first 64 KiB were written at once, to wait in the
        chat), and comes whole once it reads.
        """
        lines = self.makeRooms(200)
        alice = self.reader()
        alice.transport.producer.pauseProducing()
        alice.sendRaw(b"/rooms\r\n")
        self.clock.advance(0)
        self.assertEqual(self.held(alice), 0)
        alice.transport.producer.resumeProducing()
        self.assertEqual(readAll(alice), ["*** 201 rooms:", "***   lobby (1 member)"] + lines)

    def test_roomGoneMeanwhileIsLeftOut(self) -> None:
        """
        Each room is shown as it is when its line is made: one gone by
        then is left out (the first line, made at once, counted it, as the
        README says).
        """
        self.makeRooms(200)
        alice = self.reader()
        alice.send("/rooms")
        self.clock.advance(0)
        gone = self.factory.hub.find("m0199")
        self.factory.hub.leave(gone)
        lines = readAll(alice)
        self.assertEqual(lines[0], "*** 201 rooms:")
        self.assertEqual(len(lines), 201)
        self.assertFalse(any(line.startswith("***   room0199 ") for line in lines))

    def test_roomsGoneMeanwhileAreFreed(self) -> None:
        """
        A room deleted while a client that does not read holds a C{/rooms}
        that lists it is freed, its history with it: the answer held every
        room it listed, and clients that did not read kept 100 MB of
        deleted rooms' histories each round of rooms made and left.
        """
        self.makeRooms(200)
        alice = self.reader()
        alice.send("/rooms")
        self.clock.advance(0)
        hub = self.factory.hub
        gone = weakref.ref(hub.rooms["room0150"])
        hub.leave(hub.find("m0150"))
        gc.collect()
        self.assertIsNone(gone())
        lines = readAll(alice)
        self.assertEqual(len(lines), 201)
        self.assertNotIn("***   room0150 (1 member); topic: " + self.TOPIC, lines)

    def test_inputEndedDuringTheAnswer(self) -> None:
        """
        A client that ends its input after its C{/rooms} gets all of it,
        then the close.
        """
        lines = self.makeRooms(200)
        alice = self.reader()
        alice.sendRaw(b"/rooms\r\n")
        alice.protocol.readConnectionLost()
        self.assertFalse(alice.closing)
        self.assertEqual(readAll(alice)[2:], lines)
        self.assertTrue(alice.transport.disconnecting)

    def test_quitDuringTheAnswer(self) -> None:
        """
        The server stopping drops the rest of an answer: the goodbye comes
        at once.
        """
        self.makeRooms(200)
        alice = self.reader()
        alice.sendRaw(b"/rooms\r\n")
        self.clock.advance(0)
        alice.protocol.closeGracefully()
        lines = readAll(alice)
        self.assertEqual(lines[-1], "*** the server is shutting down; bye")
        self.assertLess(len(lines), 200)


class HistoryReplayTests(ChatTestCase):
    """
    A long history is sent as the joining client takes it; only what is
    said meanwhile counts against C{maxOutput}.
    """

    settings = {"historySize": 500, "historyBytes": 1 << 20, "maxOutput": 1000, "rate": 0, "roomRate": 0}

    def fillHistory(self, lines: int = 300) -> List[str]:
        """
        Have someone say C{lines} lines of about 1 KB in the lobby; return
        them as they are replayed.
        """
        alice = self.named("alice")
        said = [f"{n} " + "h" * 1000 for n in range(lines)]
        alice.send(*said)
        self.drain()
        return [f"[history] alice: {text}" for text in said]

    def joinFilling(self, name: str) -> ChatClient:
        """
        A client on a L{FillingTransport} that gave C{name}.
        """
        client = self.connect(transport=FillingTransport)
        client.send(name)
        return client

    def test_historySentAsTheClientTakesIt(self) -> None:
        """
        300 KB of history to a client whose transport holds 64 KiB, with
        C{maxOutput} at 1000 bytes: each piece waits for the last to be
        taken, and the client gets it all (it was cut off as not reading
        past 8 x C{maxOutput}).
        """
        history = self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        self.assertLess(len(bob.transport.value()), 2 * 65536 + 4096)
        self.clock.advance(_SLOW_GRACE * 10)
        self.assertFalse(bob.closing)
        lines = readAll(bob)
        self.assertEqual(lines[:4], GREETING + ["*** hello bob; /help lists the commands", "*** you are in lobby with 1 other"])
        self.assertEqual(lines[4:], history)
        self.assertEqual(self.factory.stats.counters.get("slow_readers", 0), 0)

    def test_whatIsSaidMeanwhileComesAfter(self) -> None:
        history = self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        self.clients[0].send("meanwhile")
        self.connect().send("carol")
        lines = readAll(bob)
        self.assertEqual(lines[4:], history + ["alice: meanwhile", "*** carol joined lobby"])

    def test_whatIsSaidMeanwhileCountsAgainstMaxOutput(self) -> None:
        """
        A client that takes nothing while the room talks is still a slow
        reader: what is said meanwhile is held for it and counted.
        """
        self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        self.clients[0].send(*["m" * 90] * 11)
        self.clock.advance(_SLOW_GRACE)
        self.assertTrue(bob.transport.disconnected)
        self.assertEqual(self.factory.stats.counters["slow_readers"], 1)

    def test_joiningElsewhereDropsTheRest(self) -> None:
        """
        A client that moves to another room during the replay gets what was
        said meanwhile, then the new room's lines; not the rest of the old
        room's history.
        """
        history = self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        bob.send("/join dev")
        lines = readAll(bob)
        replayed = [line for line in lines if line.startswith("[history] ")]
        self.assertLess(len(replayed), len(history))
        self.assertEqual(replayed, history[: len(replayed)])
        self.assertEqual(lines[-1], "*** you are in dev with 0 others")

    def test_quitDuringTheReplay(self) -> None:
        self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        bob.send("/quit")
        lines = readAll(bob)
        self.assertEqual(lines[-1], "*** bye")
        self.assertLess(len([line for line in lines if line.startswith("[history] ")]), 200)
        self.assertTrue(bob.transport.disconnecting)

    def test_closeGracefullyDuringTheReplay(self) -> None:
        self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        bob.protocol.closeGracefully()
        self.assertEqual(readAll(bob)[-1], "*** the server is shutting down; bye")

    def test_inputEndedWithTheName(self) -> None:
        """
        A client that sends its name and ends its input at once (in one
        read: C{shutdown(SHUT_WR)}, a TLS close_notify) gets the room's
        history, then the close; the room is told it left at once.  The
        end of input dropped the history not yet sent: over sockets, such
        a client got none of it 5 times in 20 over TCP, 16 over TLS.
        """
        self.makeFactory(rate=0)
        alice = self.named("alice")
        alice.send("one", "two")
        self.drain()
        bob = self.connect()
        bob.send("bob")
        bob.protocol.readConnectionLost()
        self.assertEqual(alice.received(), ["*** bob joined lobby", "*** bob left (connection closed)"])
        self.assertIsNone(self.factory.hub.find("bob"))
        self.assertEqual(
            bob.received()[-3:],
            ["*** you are in lobby with 1 other", "[history] alice: one", "[history] alice: two"],
        )
        self.assertTrue(bob.transport.disconnecting)

    def test_inputEndedDuringTheReplay(self) -> None:
        """
        A long history is still sent as the client takes it once its input
        has ended, then the close; a client that does not take it within
        the close's grace, counted from the end of its input, is aborted.
        """
        history = self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        bob.protocol.readConnectionLost()
        self.assertFalse(bob.closing)
        lines = readAll(bob)
        self.assertEqual(lines[4:], history)
        self.assertTrue(bob.transport.disconnecting)
        self.assertEqual(self.clients[0].received()[-1], "*** bob left (connection closed)")
        carol = self.joinFilling("carol")
        self.clock.advance(0)
        carol.protocol.readConnectionLost()
        self.clock.advance(_CLOSE_GRACE - 0.1)
        self.assertFalse(carol.closing)
        self.clock.advance(0.1)
        self.assertTrue(carol.transport.disconnected)

    def test_inputEndedDuringTheReplayTellsTheRoomAtOnce(self) -> None:
        """
        When a client's input ends during the replay, the room is told at
        once, not when the history is sent, and the idle timeout no longer
        runs: the close's grace alone bounds the wait.
        """
        self.makeFactory(**{**self.settings, "idleTimeout": 1.0})
        self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        bob.protocol.readConnectionLost()
        self.assertEqual(self.clients[0].received(), ["*** bob joined lobby", "*** bob left (connection closed)"])
        self.clock.advance(_CLOSE_GRACE - 0.1)
        self.assertFalse(bob.closing)
        self.clock.advance(0.1)
        self.assertTrue(bob.transport.disconnected)

    def test_oneReplayTurnAtATime(self) -> None:
        """
        One call of the reactor sends the next piece of the history,
        however often the client takes what it was sent or joins a room.
        """
        self.fillHistory()
        bob = self.joinFilling("bob")
        bob.send("/join dev", "/join lobby")

        def turns() -> int:
            return len([call for call in self.clock.getDelayedCalls() if call.func == bob.protocol._replayTurn])

        self.assertEqual(turns(), 1)
        for _ in range(20):
            self.clock.advance(0)
            bob.transport.take()
            bob.transport.take()
            self.assertLessEqual(turns(), 1)

    def test_pieceOfHistoryUpTo64KiB(self) -> None:
        """
        The history goes out in pieces of 64 KiB: lines that make exactly
        that are one piece.
        """
        alice = self.named("alice")
        # 64 lines of 1 KiB as they are replayed ("[history] alice: " and CRLF).
        alice.send(*[f"{n:02d}" + "h" * 1003 for n in range(70)])
        self.drain()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        sent = bob.transport.value()
        self.assertEqual(len(sent) - sent.index(b"[history] "), 64 * 1024)

    def test_whatWasSaidMeanwhileNoLongerCounted(self) -> None:
        """
        Once what was said during the replay is sent, it no longer counts
        as waiting for the client: a line the client sends while its
        transport is full is still read (it was held, as if more than
        C{maxOutput} of its answers waited).
        """
        self.fillHistory()
        bob = self.joinFilling("bob")
        self.clock.advance(0)
        self.clients[0].send("m" * 600, "n" * 600)
        takeAll(bob)
        bob.protocol.pauseProducing()
        bob.send("hello")
        self.assertEqual(self.clients[0].received()[-1], "bob: hello")

    def test_goneDuringTheReplay(self) -> None:
        self.fillHistory()
        bob = self.joinFilling("bob")
        # Not bob.disconnect(): its clock.advance(0) would run the turn.
        bob.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if call.func == bob.protocol._replayTurn], []
        )


class LineLengthTests(ChatTestCase):
    """
    Over-long lines are refused, dropped and never buffered beyond the limit.
    """

    settings = {"maxLine": 10}
    TOO_LONG = "! line too long (over 10 bytes); it was dropped"

    def test_overlongLineRefusedAndDropped(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("x" * 11)
        self.assertEqual(alice.received(), [self.TOO_LONG])
        self.assertEqual(bob.received(), [])
        self.assertFalse(alice.closing)
        alice.send("y" * 10)
        self.assertEqual(bob.received(), ["alice: " + "y" * 10])
        self.assertEqual(alice.received(), [])

    def test_replacedInvalidBytesCount(self) -> None:
        """
        The limit holds for the line as it goes out: each invalid byte
        becomes U+FFFD, three bytes (a line of 4096 invalid bytes went out
        as 12 KB).
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"ab\xff\xff\xff\r\n")  # 5 bytes in, 11 out
        self.assertEqual(
            alice.received(), ["! line too long (over 10 bytes once its invalid UTF-8 is replaced); it was dropped"]
        )
        self.assertEqual(bob.received(), [])
        alice.sendRaw(b"a\xff\xff\xff\r\n")  # 10 out
        self.assertEqual(bob.received(), ["alice: a" + "\ufffd" * 3])
        self.assertEqual(self.factory.stats.counters["long_lines"], 1)

    def test_limitCountsBytesNotCharacters(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("\u00e9" * 6)
        self.assertEqual(alice.received(), [self.TOO_LONG])
        alice.send("\u00e9" * 5)
        self.assertEqual(bob.received(), ["alice: " + "\u00e9" * 5])

    def test_overlongLineAmongOthersInOneRead(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"one\r\n" + b"z" * 50 + b"\r\ntwo\n")
        self.assertEqual(alice.received(), [self.TOO_LONG])
        self.assertEqual(bob.received(), ["alice: one", "alice: two"])

    def test_overlongLineSplitAcrossReads(self) -> None:
        """
        A long line arriving in several pieces gets one error; the rest of
        it is dropped up to its line ending, and the next line goes through.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        for piece in [b"abcdefgh", b"ijklmnop", b"qrstuv", b"wxyz12345", b"67"]:
            alice.sendRaw(piece)
            self.assertLessEqual(len(alice.protocol._buffer), 10)
        alice.sendRaw(b"890\r\nafter\r\n")
        self.assertEqual(alice.received(), [self.TOO_LONG])
        self.assertEqual(bob.received(), ["alice: after"])

    def test_bytesBeyondTheLimitAreNotBuffered(self) -> None:
        self.makeFactory(maxLine=10, rate=0)  # (200 KB of one line is an excess flood)
        alice = self.named("alice")
        for i in range(200):
            alice.sendRaw(b"q" * 1000)
            self.assertLessEqual(len(alice.protocol._buffer), 10)
        self.assertEqual(alice.received(), [self.TOO_LONG])
        alice.sendRaw(b"q\n/who\n")
        self.assertEqual(alice.received(), ["*** in lobby: alice"])

    def test_byteAtATime(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        for byte in b"x" * 30 + b"\r\nok\r\n":
            alice.sendRaw(bytes([byte]))
            self.assertLessEqual(len(alice.protocol._buffer), 10)
        self.assertEqual(alice.received(), [self.TOO_LONG])
        self.assertEqual(bob.received(), ["alice: ok"])

    def test_lineOfMaximumLengthWhoseCRLFIsSplit(self) -> None:
        """
        A line of exactly C{maxLine} bytes is accepted whether its CRLF
        arrives with it or its LF arrives in the next read.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"0123456789\r\n")
        self.assertEqual(bob.received(), ["alice: 0123456789"])
        alice.sendRaw(b"abcdefghij\r")
        alice.sendRaw(b"\n")
        self.assertEqual(alice.received(), [])
        self.assertEqual(bob.received(), ["alice: abcdefghij"])

    def test_lineOfMaximumLengthAfterCRNUL(self) -> None:
        """
        A line of exactly C{maxLine} bytes is accepted after telnet's CR
        NUL ended the one before (the NUL was taken for its first byte),
        and when its line end comes whole in the next read.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"one\r\x00")
        alice.sendRaw(b"0123456789\r\x00")
        alice.sendRaw(b"abcdefghij")
        alice.sendRaw(b"\r\n")
        self.assertEqual(alice.received(), [])
        self.assertEqual(bob.received(), ["alice: one", "alice: 0123456789", "alice: abcdefghij"])

    def test_overlongNameLine(self) -> None:
        client = self.connect()
        client.received()
        client.send("n" * 11)
        self.assertEqual(client.received(), [self.TOO_LONG])
        client.send("alice")
        self.assertEqual(client.protocol.name, "alice")

    def test_longLinesCounted(self) -> None:
        alice = self.named("alice")
        alice.send("x" * 11, "y" * 20)
        self.assertEqual(self.factory.stats.counters["long_lines"], 2)


class CleaningTests(ChatTestCase):
    """
    Terminal escapes and control characters never reach anyone's terminal;
    bytes that are not UTF-8 never break anything.
    """

    settings = {"rate": 0}

    def assertClean(self, data: bytes) -> None:
        for byte in data:
            self.assertFalse(
                byte < 0x20 and byte not in b"\r\n" or byte == 0x7F, f"control byte in {data!r}"
            )
        text = data.decode("utf-8")
        self.assertFalse(any(0x80 <= ord(c) <= 0x9F for c in text), f"C1 control in {text!r}")

    def test_escapesStrippedFromMessages(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        cases = [
            ("\x1b[31mred\x1b[0m text", "red text"),
            ("\x1b[1;38;5;196mbold\x1b[m", "bold"),
            ("\x1b[2J\x1b[Hcleared \x1b[10;20Hmoved \x1b[Aup", "cleared moved up"),
            ("\x1b]0;pwned\x07title", "title"),
            ("\x1b]2;pwned\x1b\\title", "title"),
            ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("bare \x1b", "bare"),
            ("reset \x1bc now", "reset  now"),
            ("\x1bP1$r stuff\x1b\\dcs", "dcs"),
            ("c1 \u009b31mcsi", "c1 csi"),
            ("c1 \u009d0;t\u0007 osc", "c1 0;t osc"),
            ("nul\x00 bel\x07 bs\x08 del\x7f vt\x0b ff\x0c", "nul bel bs del vt ff"),
            ("\x85next \u0090x", "next x"),
            ("tab\there", "tab here"),
        ]
        for sent, shown in cases:
            alice.send(sent)
            data = bob.receivedBytes()
            self.assertClean(data)
            self.assertEqual(data, ("alice: " + shown).encode("utf-8") + b"\r\n", repr(sent))

    def test_escapesStrippedFromActionsAndPrivate(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("/me \x1b[5mblinks\x1b[0m")
        self.assertEqual(bob.received(), ["* alice blinks"])
        alice.send("/msg bob \x1b]0;x\x07hi\u009b2J")
        self.assertEqual(bob.received(), ["[private] alice: hi"])

    def test_onlyEscapesIsABlankLine(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("\x1b[31m\x1b[0m\x07")
        self.assertEqual(bob.received(), [])

    def test_escapesStrippedFromNames(self) -> None:
        client = self.connect()
        client.received()
        client.send("\x1b[1;31mal\x00ice\x1b[0m\x07")
        self.assertEqual(client.received()[0], "*** hello alice; /help lists the commands")
        self.assertEqual(client.protocol.name, "alice")

    def test_escapesStrippedFromNick(self) -> None:
        alice = self.named("alice")
        alice.send("/nick \x1b[32mgreen\x1b[0m")
        self.assertEqual(alice.received(), ["*** alice is now known as green"])

    def test_invalidUtf8Replaced(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"caf\xe9 \xff\xfe ok \xc3\r\n")
        self.assertEqual(bob.received(), ["alice: caf\ufffd \ufffd\ufffd ok \ufffd"])
        alice.sendRaw(b"\x9b31mraw c1\r\n")
        self.assertEqual(bob.received(), ["alice: \ufffd31mraw c1"])

    def test_invalidUtf8InName(self) -> None:
        client = self.connect()
        client.received()
        client.sendRaw(b"al\xffice\r\n")
        self.assertEqual(client.received(), [f"! {NAME_RULES}; try another (2 left)"])
        client.send("alice")
        self.assertEqual(client.protocol.name, "alice")

    def test_cleanText(self) -> None:
        self.assertEqual(cleanText("  \x1b[0ma\tb\x1b]0;t\x07  "), "a b")
        self.assertEqual(cleanText("\u009b1;2Hx\u009c"), "x")

    def test_lineSeparatorsCannotForgeALine(self) -> None:
        """
        U+2028 and U+2029 start a new line in many clients (and in Python's
        C{splitlines}): inside a message they would let a member make a line
        that looks like the server's.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send("ok\u2028* carol left (quit)")
        alice.send("fine\u2029! you are banned; bye")
        received = bob.received()
        self.assertEqual(received, ["alice: ok* carol left (quit)", "alice: fine! you are banned; bye"])
        for line in received:
            self.assertEqual(line.splitlines(), [line])


class FloodTests(ChatTestCase):
    """
    A token bucket of lines per client; with no queue (C{lineQueue} 0),
    lines past it are dropped (see L{LineQueueTests}).
    """

    settings = {"rate": 5.0, "burst": 10.0, "lineQueue": 0}
    SLOW = "! slow down: that line was dropped; you may speak again in 0.2 s"

    def test_burstThenSlowDown(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[f"line {i}" for i in range(11)])
        self.assertEqual(bob.received(), [f"alice: line {i}" for i in range(10)])
        self.assertEqual(alice.received(), [self.SLOW])
        self.assertFalse(alice.closing)
        self.assertEqual(self.factory.stats.counters["dropped_lines"], 1)

    def test_excessFloodDisconnects(self) -> None:
        """
        A client that goes on sending after L{_EXCESS_FLOOD} lines were
        dropped in a row is told so and disconnected (it kept the server
        busy answering each dropped line: 100% CPU, 300 MB of errors); a
        line let through in between starts the count again.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*["x"] * 10)
        alice.send(*["y"] * (_EXCESS_FLOOD - 1))
        self.clock.advance(0.2)
        alice.send("let through")
        alice.send(*["z"] * (_EXCESS_FLOOD - 1))
        self.assertFalse(alice.closing)
        self.assertEqual(bob.received()[-1], "alice: let through")
        alice.send("z")
        self.assertTrue(alice.closing)
        self.assertEqual(
            alice.received()[-1], f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye"
        )
        alice.disconnect()
        self.assertEqual(bob.received(), ["*** alice left (excess flood)"])

    def test_clientsFromOneAddressShareALimit(self) -> None:
        """
        All clients from one address together may send C{hostRate} lines a
        second (bursts of twice that, or C{burst} if more): forty connections from one address
        at 5 lines a second each could bury a room under 800 KB/s and have
        its slower readers cut off.  Other addresses are not held back.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=4.0)  # bursts of 10
        flooders = [self.named(f"f{n}", host="192.0.2.7") for n in range(4)]
        bob = self.named("bob", host="198.51.100.1")
        for flooder in flooders:
            flooder.send("one", "two", "three")
        # Their four joins took four lines of the ten.
        self.assertEqual(len(bob.received()), 6)
        self.assertEqual(
            flooders[3].received()[-1],
            "! slow down: that line was dropped; your address sends more than 4 lines a second in all; "
            "you may speak again in 0.2 s",
        )
        carol = self.named("carol", host="198.51.100.2")
        carol.send("still heard")
        self.assertEqual(bob.received(), ["carol: still heard"])
        self.clock.advance(0.25)
        flooders[0].send("again")
        self.assertEqual(bob.received(), ["f0: again"])
        self.assertEqual(self.factory.stats.counters["dropped_lines"], 6)

    def test_addressLimitKeptUntilRefilled(self) -> None:
        """
        An address's budget outlives its last client until it has
        refilled (it was forgotten with the last client, so a client
        leaving and coming back had a new one each time); then it is
        forgotten.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=4.0)
        alice = self.named("alice", host="192.0.2.7")
        alice.send(*["x"] * 8)  # with the join, 9 of 10
        alice.disconnect()
        self.assertIn("192.0.2.7", self.factory._hostBuckets)
        again = self.named("alice", host="192.0.2.7")  # the 10th
        again.send("x")
        self.assertEqual(
            again.received(),
            ["! slow down: that line was dropped; your address sends more than 4 lines a second in all; "
             "you may speak again in 0.2 s"],
        )
        self.clock.advance(2.5)  # refilled
        again.disconnect()
        self.assertEqual(self.factory._hostBuckets, {})
        # Many addresses come and go: none is kept once refilled.
        for n in range(50):
            self.named(f"c{n}", host=f"192.0.2.{n}").send("x", "y")
            self.clients[-1].disconnect()
        self.assertEqual(len(self.factory._hostBuckets), 50)
        self.clock.advance(2.5)
        for _ in range(25):  # each client gone looks at two
            self.connect("198.51.100.9").disconnect()
        self.assertEqual(self.factory._hostBuckets, {})
        self.assertEqual(self.factory._quiet, {})

    def test_addressLimitsForgottenWhileOneLoops(self) -> None:
        """
        An address joining and leaving in a loop, its budget never
        refilled, does not keep the others' from being forgotten (the
        oldest waiting budget was looked at first, so one never refilled
        held every one after it: 10,000 kept after 15,000 loops).
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=4.0)
        for n in range(2000):
            self.clock.advance(0.05)
            for host in ("192.0.2.1", f"10.{n // 250}.{n % 250}.1"):
                client = self.connect(host)
                client.send("loop" if host == "192.0.2.1" else f"c{n}")
                client.disconnect()
        # Addresses of the last 2.5 s (their budgets still refill), or so.
        self.assertLess(len(self.factory._hostBuckets), 120)
        self.assertLess(len(self.factory._quiet), 120)

    def test_joinLeaveLoopHeldToTheAddressLimit(self) -> None:
        """
        A join counts as a line of its address's budget: a client joining
        and leaving in a loop flooded a room with notices (2,000 a second
        from one address).  One refused is told when to send its name
        again, and may.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=4.0)
        bob = self.named("bob", host="198.51.100.1")
        refused = []
        for _ in range(30):
            looper = self.connect("192.0.2.7")
            looper.received()
            looper.send("loop")
            if self.factory.hub.find("loop") is None:
                refused.append(looper.received())
            looper.disconnect()
        joins = [line for line in bob.received() if line.startswith("*** loop joined")]
        self.assertEqual(len(joins), 10)
        self.assertEqual(len(refused), 20)
        self.assertEqual(
            refused[0],
            ["! your address sends more than 4 lines and joins a second in all; send your name again in 0.2 s"],
        )
        self.assertEqual(self.factory.stats.counters["refused_joins"], 20)
        looper = self.connect("192.0.2.7")
        looper.send("loop")
        self.assertIsNone(self.factory.hub.find("loop"))
        self.clock.advance(0.25)
        looper.send("loop")
        self.assertIsNotNone(self.factory.hub.find("loop"))

    def test_joinRefusedForItsAddressCostsNoTryWhenWaitedFor(self) -> None:
        """
        A join refused for its address's budget (spent by others behind the
        same address) costs the client none of its name tries when it waits
        as it was told before sending its name again: it cost one, and the
        third such refusal disconnected a client whose name was fine.  One
        that sends its name again sooner spends its tries as before.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=1.0, nameTries=3)
        mate = self.named("mate", host="192.0.2.7")
        patient = self.connect("192.0.2.7")
        patient.received()
        for _ in range(5):
            mate.send(*["x"] * 12)  # the address's budget, spent by its mate
            patient.send("patient")
            [refusal] = patient.received()
            self.assertTrue(refusal.endswith(" s"), refusal)  # no tries counted down
            wait = float(refusal.rsplit(" ", 2)[-2])
            self.clock.advance(wait)
        self.assertFalse(patient.transport.disconnecting)
        self.clock.advance(5)
        patient.send("patient")
        self.assertIs(self.factory.hub.find("patient"), patient.protocol)
        hasty = self.connect("192.0.2.7")
        hasty.received()
        mate.send(*["x"] * 12)
        hasty.send("hasty")  # the first refusal is free
        for left in ("2 left", "1 left"):
            hasty.send("hasty")
            self.assertIn(left, hasty.received()[-1])
        hasty.send("hasty")
        self.assertIn("too many tries, bye", hasty.received()[-1])
        self.assertTrue(hasty.transport.disconnecting)

    def test_waitingAsToldCountsWhateverTheRounding(self) -> None:
        """
        The wait a refusal names is rounded to a tenth of a second (a delay
        of 0.333 s is "0.3 s"): a client that waits just that is not
        charged either.  One that waited once, then sends again at once
        after its next refusal, is.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=3.0, nameTries=3)
        mate = self.named("mate", host="192.0.2.7")
        patient = self.connect("192.0.2.7")
        patient.received()
        for _ in range(4):
            mate.send(*["x"] * 12)
            patient.send("patient")
            [refusal] = patient.received()
            self.assertTrue(refusal.endswith(" s"), refusal)
            self.clock.advance(float(refusal.rsplit(" ", 2)[-2]))
        self.assertFalse(patient.transport.disconnecting)
        mate.send(*["x"] * 12)
        patient.send("patient")
        self.assertTrue(patient.received()[-1].endswith(" s"))
        patient.send("patient")
        self.assertIn("(2 left)", patient.received()[-1])

    def test_refusedForItsAddressNotChargedToTheClient(self) -> None:
        """
        A line refused for the address's budget is not taken from the
        client's own as well: it was, so a client whose address-mates had
        used the budget was then held back for lines it never said.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=4.0)
        alice = self.named("alice", host="192.0.2.7")
        bob = self.named("bob", host="192.0.2.7")
        alice.send(*["x"] * 8)  # with the two joins, the address's ten
        bob.send(*["y"] * 10)
        self.assertEqual(len(bob.received()), 18)  # alice's eight, ten refusals
        self.assertTrue(bob.protocol._bucket.isFull())

    def test_longLinesUnderFloodControl(self) -> None:
        """
        Lines refused as too long come out of the flood budget like any
        other: each got its answer, for ever, and the sender was never
        cut off for an excess flood.
        """
        self.makeFactory(rate=5.0, burst=10.0, maxLine=10)
        alice = self.named("alice")
        alice.send(*["x" * 11] * 10)
        self.assertEqual(alice.received(), ["! line too long (over 10 bytes); it was dropped"] * 10)
        alice.send(*["x" * 11] * (_EXCESS_FLOOD - 1))
        self.assertFalse(alice.closing)
        self.clock.advance(0.2)
        alice.send("x" * 11)  # answered: not dropped by flood control
        alice.send(*["x" * 11] * (_EXCESS_FLOOD - 1))
        self.assertFalse(alice.closing)
        alice.send("x" * 11)
        self.assertTrue(alice.closing)
        self.assertEqual(alice.received()[-1], f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye")
        self.assertEqual(self.factory.stats.counters["excess_floods"], 1)
        # Cut off in the middle of a read: the rest of it (an unended long
        # line) is not counted again.
        bob = self.named("bob")
        bob.sendRaw((b"x" * 11 + b"\n") * (10 + _EXCESS_FLOOD) + b"y" * 50)
        self.assertTrue(bob.closing)
        self.assertEqual(self.factory.stats.counters["excess_floods"], 2)

    def test_endlessLineIsAnExcessFlood(self) -> None:
        """
        Each C{maxLine} bytes dropped of a line refused as too long is a
        line of the flood budget, taken without an answer: a client
        streaming a line without end is cut off as an excess flood once 100
        of them were over the budget (it got one C{! line too long} and was
        read at 724 MB/s until its idle timeout).  One streaming within the
        budget stays, and so does one whose long line ends.
        """
        self.makeFactory(rate=5.0, burst=10.0, maxLine=10)
        alice = self.named("alice")
        alice.sendRaw(b"x" * 11)  # a line of the budget, answered
        self.assertEqual(alice.received(), ["! line too long (over 10 bytes); it was dropped"])
        alice.sendRaw(b"x" * 89)  # nine more, the burst spent
        alice.sendRaw(b"x" * 10 * (_EXCESS_FLOOD - 1))
        self.assertFalse(alice.closing)
        self.assertEqual(alice.received(), [])
        alice.sendRaw(b"x" * 10)
        self.assertTrue(alice.closing)
        self.assertEqual(alice.received(), [f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye"])
        self.assertEqual(self.factory.stats.counters["excess_floods"], 1)
        # The same in one read that ends the line.
        bob = self.named("bob")
        bob.sendRaw(b"y" * 10 * (11 + _EXCESS_FLOOD) + b"\n")
        self.assertTrue(bob.closing)
        # Within the budget: never cut off.
        carol = self.named("carol")
        for _ in range(2 * _EXCESS_FLOOD):
            carol.sendRaw(b"z" * 10)
            self.clock.advance(0.2)
        carol.sendRaw(b"\nstill here\n")
        self.assertFalse(carol.closing)
        self.assertEqual(carol.received(), ["! line too long (over 10 bytes); it was dropped"])
        self.assertEqual(self.factory.stats.counters["excess_floods"], 2)

    def test_lineEndsAfterACRAreLinesOfTheBudget(self) -> None:
        """
        After a CR, only one LF or NUL (CRLF, CR NUL), or a second CR and
        one of them (CR CR LF), belong to its line end: each further LF or
        CR is an empty line and each C{maxLine} NULs a line being dropped,
        every one past the first few empty lines a line of the flood
        budget, so a stream of them after a CR ends in an excess flood, in
        one read or many (the empty lines without a "slow down" each).
        Every such byte was skipped, one at a time in Python, uncounted: a
        CR followed by NULs without end kept a CPU busy (224 MB in 20 s)
        until the idle timeout.
        """
        self.makeFactory(rate=5.0, burst=10.0, maxLine=10)
        flood = 11 + _FREE_EMPTY_LINES + _EXCESS_FLOOD
        for n, (after, size) in enumerate([(b"\n", flood), (b"\r", flood), (b"\x00", 10 * flood)]):
            alice = self.named(f"alice{n}", host=f"192.0.2.{n}")
            alice.sendRaw(b"x\r" + after * size)
            self.assertTrue(alice.closing, after)
            received = alice.received()
            self.assertEqual(received[-1], f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye", after)
            if after != b"\x00":
                self.assertEqual(len(received), 1, after)
            bob = self.named(f"bob{n}", host=f"198.51.100.{n}")
            bob.sendRaw(b"x\r")
            for _ in range(size):
                bob.sendRaw(after)
            self.assertTrue(bob.closing, after)
        self.assertEqual(self.factory.stats.counters["excess_floods"], 6)

    def test_droppedBytesChargedExactly(self) -> None:
        """
        Each C{maxLine} bytes dropped of a line refused as too long is a
        line of the budget, counted over the reads that bring it, to its
        line end, and afresh for each long line: 1 + 8 bytes dropped take
        none, 1 + 89 take nine.
        """
        self.makeFactory(rate=5.0, burst=10.0, maxLine=10)
        alice = self.named("alice")
        bob = self.named("bob")
        tooLong = "! line too long (over 10 bytes); it was dropped"
        for first, second in ((b"x", b"y"), (b"z", b"w")):
            alice.sendRaw(first * 11)  # one line of the budget: the answer
            alice.sendRaw(first * 8 + b"\n")
            alice.send(*[f"{first.decode()}{n}" for n in range(9)])
            self.assertEqual(bob.received(), [f"alice: {first.decode()}{n}" for n in range(9)])
            self.assertEqual(alice.received(), [tooLong])
            self.clock.advance(2)
        alice.sendRaw(b"v" * 11)
        alice.sendRaw(b"v" * 89 + b"\n")
        alice.send("dropped")
        self.assertEqual(bob.received(), [])
        self.assertEqual(alice.received(), [tooLong, "! slow down: that line was dropped; you may speak again in 0.2 s"])

    def test_droppedBytesWithinTheBudgetEndAFlood(self) -> None:
        """
        Bytes of a long line dropped within the budget end a run of lines
        dropped by flood control, as a line let through does.
        """
        self.makeFactory(rate=5.0, burst=10.0, maxLine=10)
        alice = self.named("alice")
        alice.send(*["x"] * 10)
        alice.send(*["y"] * (_EXCESS_FLOOD - 2))
        alice.sendRaw(b"z" * 11)  # refused, its answer dropped too
        self.clock.advance(0.2)
        alice.sendRaw(b"z" * 9 + b"\n")  # a line of the budget, within it
        alice.send("dropped")
        self.assertFalse(alice.closing)
        self.assertEqual(self.factory.stats.counters.get("excess_floods", 0), 0)

    def test_noAddressLimitWithoutFloodControl(self) -> None:
        """
        C{rate} 0 turns all flood control off, the limit per address too;
        C{hostRate} 0 turns off only that one.
        """
        for settings in ({"rate": 0, "hostRate": 4.0}, {"rate": 5.0, "burst": 10.0, "hostRate": 0}):
            self.makeFactory(**settings)
            clients = [self.named(f"c{n}", host="192.0.2.7") for n in range(3)]
            bob = self.named("bob", host="198.51.100.1")
            for client in clients:
                client.send(*["x"] * 10)
            self.assertEqual(len(bob.received()), 30)

    def test_speaksAgainAfterWaiting(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*["x"] * 10)
        bob.received()
        self.clock.advance(0.1)
        alice.send("too soon")
        self.assertEqual(
            alice.received(), ["! slow down: that line was dropped; you may speak again in 0.1 s"]
        )
        self.clock.advance(0.1)
        alice.send("now")
        self.assertEqual(bob.received(), ["alice: now"])
        self.assertEqual(alice.received(), [])
        alice.send("again")
        self.assertEqual(alice.received(), [self.SLOW])
        self.clock.advance(2)
        alice.send(*[f"r{i}" for i in range(10)])
        self.assertEqual(bob.received(), [f"alice: r{i}" for i in range(10)])

    def test_commandsCountToo(self) -> None:
        alice = self.named("alice")
        alice.send(*["/who"] * 10)
        alice.received()
        alice.send("/who")
        self.assertEqual(alice.received(), [self.SLOW])

    def test_bucketsArePerClient(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*["x"] * 11)
        self.drain()
        bob.send("fine")
        self.assertEqual(alice.received(), ["bob: fine"])

    def test_nameDoesNotCount(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[str(i) for i in range(10)])
        self.assertEqual(len(bob.received()), 10)

    def test_rateConfigurable(self) -> None:
        self.makeFactory(rate=1.0, burst=2.0)
        alice = self.named("alice")
        alice.send("a", "b", "c")
        self.assertEqual(
            alice.received(), ["! slow down: that line was dropped; you may speak again in 1.0 s"]
        )

    def test_rateZeroDisables(self) -> None:
        self.makeFactory(rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[str(i) for i in range(100)])
        self.assertEqual(bob.received(), [f"alice: {i}" for i in range(100)])
        self.assertEqual(alice.received(), [])
        self.assertNotIn("dropped_lines", self.factory.stats.counters)


class LineQueueTests(ChatTestCase):
    """
    Lines past a client's flood budget wait their turn, up to
    C{lineQueue} lines or L{QUEUE_BYTES}, and are handled at the budget's
    rate, as IRC servers' "fake lag"; past that, they are dropped.
    """

    settings = {"rate": 5.0, "burst": 10.0}

    def queued(self, client: ChatClient) -> Any:
        return client.protocol._queueCall

    def wait(self, seconds: float) -> None:
        """
        Let C{seconds} pass, a reactor's turn each 10 ms.
        """
        for _ in range(round(seconds * 100)):
            self.clock.advance(0.01)

    def test_pasteWaitsItsTurn(self) -> None:
        """
        A pasted 30 lines all reach the room, in order: 10 at once, then 5
        a second; the client gets no error (20 were dropped, each with a
        C{! slow down}).
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"".join(b"line %d\r\n" % (n,) for n in range(30)))
        self.assertEqual(bob.received(), [f"alice: line {n}" for n in range(10)])
        self.clock.advance(1.01)
        self.assertEqual(bob.received(), [f"alice: line {n}" for n in range(10, 15)])
        for _ in range(40):
            self.clock.advance(0.1)
        self.assertEqual(bob.received(), [f"alice: line {n}" for n in range(15, 30)])
        self.assertEqual(alice.received(), [])
        self.assertNotIn("dropped_lines", self.factory.stats.counters)
        self.assertEqual(self.factory.stats.counters["queued_lines"], 20)
        self.assertIsNone(self.queued(alice))

    def test_newLinesGoAfterThoseWaiting(self) -> None:
        """
        A line sent while others wait goes after them, even when the
        budget has a line for it by then (the reactor reads it before the
        call that serves the next line waiting runs).
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[f"a{n}" for n in range(12)])
        self.clock.advance(0.21)
        self.assertEqual(bob.received(), [f"alice: a{n}" for n in range(11)])
        self.clock.rightNow += 0.5  # (the call not run yet)
        alice.send("new")
        self.assertEqual(bob.received(), ["alice: a11", "alice: new"])

    def test_fullQueueDrops(self) -> None:
        """
        Past C{lineQueue} lines waiting, a line is dropped with a
        C{! slow down} that says so, and counts towards an excess flood.
        """
        self.makeFactory(rate=5.0, burst=10.0, lineQueue=3)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*[f"x{n}" for n in range(15)])
        self.assertEqual(
            alice.received(),
            ["! slow down: that line was dropped; 3 lines wait their turn; you may speak again in 0.2 s"] * 2,
        )
        self.assertEqual(self.factory.stats.counters["dropped_lines"], 2)
        alice.sendRaw(b"\r\n" * (_FREE_EMPTY_LINES + 3))  # dropped quietly
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters["dropped_lines"], 5)
        self.clock.advance(1)
        self.assertEqual(bob.received(), [f"alice: x{n}" for n in range(13)])
        # A line that waits, as one said, starts the count of lines
        # dropped in a row (towards an excess flood) again.
        self.clock.advance(10)
        alice.send(*["y"] * 13, *["z"] * (_EXCESS_FLOOD - 1))  # 10 said, 3 wait
        self.clock.advance(0.21)  # (one more said: room for one)
        alice.send("w", *["z"] * (_EXCESS_FLOOD - 1))
        self.assertFalse(alice.closing)
        alice.send("z")
        self.assertTrue(alice.closing)

    def test_queueBytesBounded(self) -> None:
        """
        Lines wait up to L{QUEUE_BYTES} bytes in all (a client may not park
        C{lineQueue} lines of C{maxLine} bytes each), or one line of
        C{maxLine} where that is more.
        """
        self.makeFactory(rate=5.0, burst=1.0)
        alice = self.named("alice")
        bob = self.named("bob")
        self.clock.advance(1)
        long = "y" * (QUEUE_BYTES // 2)
        alice.send("first", long, long, "z")
        self.assertEqual(alice.received(), [
            "! slow down: that line was dropped; 2 lines wait their turn; you may speak again in 0.2 s"
        ])
        self.wait(1)
        self.assertEqual(bob.received(), ["alice: first", f"alice: {long}", f"alice: {long}"])
        alice.send("again", long, long)  # (the queue is empty again)
        self.assertEqual(alice.received(), [])
        self.makeFactory(rate=5.0, burst=1.0, maxLine=QUEUE_BYTES * 2)
        carol = self.named("carol")
        self.clock.advance(1)
        longer = "w" * (QUEUE_BYTES * 2)
        carol.send("first", longer)
        self.assertEqual(carol.received(), [])
        self.clock.advance(0.21)
        self.assertIsNone(self.queued(carol))
        self.assertEqual(self.factory.stats.counters["queued_lines"], 1)

    def test_commandsWaitTooAndQuitEndsTheQueue(self) -> None:
        """
        A command waits its turn as any line, and is answered in it; lines
        after a C{/quit} are never said.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*["hi"] * 10)
        bob.received()
        alice.send("/who", "one", "/quit", "two")
        self.assertEqual(alice.received(), [])
        self.clock.advance(0.21)
        self.assertEqual(alice.received(), ["*** in lobby: alice, bob"])
        self.clock.advance(0.42)
        self.assertEqual(bob.received(), ["alice: one", "*** alice left (quit)"])
        self.assertTrue(alice.closing)
        self.assertEqual(alice.received(), ["*** bye"])
        self.clock.advance(1)
        self.assertEqual(bob.received(), [])
        self.assertIsNone(self.queued(alice))

    def test_endOfInputWaitsForTheQueue(self) -> None:
        """
        A client that pastes and ends its input (C{nc -N}, a script) has
        every line said before the connection closes.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.sendRaw(b"".join(b"p%d\n" % (n,) for n in range(14)) + b"last")
        alice.protocol.readConnectionLost()
        self.assertFalse(alice.closing)
        for _ in range(10):
            self.clock.advance(0.21)
        self.assertEqual(bob.received(), [f"alice: p{n}" for n in range(14)] + ["alice: last", "*** alice left (connection closed)"])
        self.assertTrue(alice.closing)
        carol = self.named("carol")  # (her last line ended)
        carol.sendRaw(b"".join(b"q%d\n" % (n,) for n in range(12)))
        carol.protocol.readConnectionLost()
        self.assertFalse(carol.closing)
        for _ in range(5):
            self.clock.advance(0.21)
        self.assertEqual(bob.received()[-3:], ["carol: q10", "carol: q11", "*** carol left (connection closed)"])

    def test_lostConnectionDropsTheQueue(self) -> None:
        """
        Lines waiting when the connection is lost are never said, and
        nothing stays scheduled for them.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.send(*["hi"] * 12)
        bob.received()
        call = self.queued(alice)
        alice.disconnect()
        self.assertFalse(call.active())
        self.clock.advance(1)
        self.assertEqual(bob.received(), ["*** alice left (connection closed)"])

    def test_addressBudgetQueuesToo(self) -> None:
        """
        A line refused for its address's budget waits its turn as well,
        until the address's budget has a line.
        """
        self.makeFactory(rate=5.0, burst=10.0, hostRate=1.0)  # bursts of 10
        alice = self.named("alice", host="192.0.2.7")
        bob = self.named("bob")
        self.clock.advance(10)
        alice.send(*[f"x{n}" for n in range(11)])
        self.assertEqual(len(bob.received()), 10)
        self.assertEqual(alice.received(), [])
        self.clock.advance(0.5)
        self.assertEqual(bob.received(), [])
        self.clock.advance(0.51)
        self.assertEqual(bob.received(), ["alice: x10"])

    def calls(self, name: str) -> int:
        """
        How many calls of methods called C{name} are scheduled.
        """
        return sum(getattr(call.func, "__name__", "") == name for call in self.clock.getDelayedCalls())

    def test_oneCallPerClient(self) -> None:
        """
        However many lines wait, one call serves them.
        """
        alice = self.named("alice")
        alice.send(*["hi"] * 30)
        self.assertEqual(self.calls("_serveQueue"), 1)
        alice.protocol.resumeProducing()  # (as the transport would)
        self.assertEqual(self.calls("_serveQueue"), 1)
        self.wait(1)
        self.assertEqual(self.calls("_serveQueue"), 1)

    def test_addressLinesTakeTurns(self) -> None:
        """
        Clients whose lines wait for their address's budget take turns, a
        line each as it refills, with one call for them all: each woke at
        every refill, and one had the line (50 clients of one address
        pasting: 48 calls for each line said, and some waited 15 s for
        their first).
        """
        self.makeFactory(rate=100.0, burst=10.0, hostRate=2.0)  # bursts of 10
        flooders = [self.named(f"f{n}", host="192.0.2.7") for n in range(5)]
        bob = self.named("bob", host="198.51.100.1")
        self.clock.advance(10)
        for n, flooder in enumerate(flooders):
            flooder.send(*[f"{n}.{k}" for k in range(4)])
        self.assertEqual(len(bob.received()), 10)
        self.clock.advance(0.01)  # (each finds its address's budget spent)
        self.assertEqual(self.calls("_serveQueue"), 0)
        self.assertEqual(self.calls("_addressTurn"), 1)
        flooders[3].protocol.resumeProducing()  # (its turn is kept, not taken twice)
        self.assertEqual(len(self.factory._addressLines["192.0.2.7"]), 3)
        said = []
        for _ in range(100):
            self.clock.advance(0.1)
            said.extend(line.split(": ")[1] for line in bob.received())
        self.assertEqual(said, ["2.2", "3.0", "4.0", "2.3", "3.1", "4.1", "3.2", "4.2", "3.3", "4.3"])
        self.assertEqual(self.factory._addressLines, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Once served, a client's lines wait again as before.
        self.clock.advance(10)
        flooders[3].send(*["late"] * 12)
        self.wait(2)
        self.assertEqual(bob.received(), ["f3: late"] * 12)

    def test_stoppingCancelsAddressTurns(self) -> None:
        """
        Nothing stays scheduled for lines waiting for their address's
        budget once the factory stops.
        """
        self.makeFactory(rate=100.0, burst=10.0, hostRate=2.0)
        flooder = self.named("f", host="192.0.2.7")
        self.clock.advance(10)
        flooder.send(*["x"] * 12)
        self.clock.advance(0.02)
        self.assertEqual(self.calls("_addressTurn"), 1)
        self.factory.stopFactory()
        self.assertEqual(self.calls("_addressTurn"), 0)

    def test_addressTurnSkipsClientsGone(self) -> None:
        """
        A client gone, or one whose own budget is spent, while it waited
        for its address's turn gives its turn to the next.
        """
        self.makeFactory(rate=100.0, burst=10.0, hostRate=2.0)
        flooders = [self.named(f"f{n}", host="192.0.2.7") for n in range(3)]
        bob = self.named("bob", host="198.51.100.1")
        self.clock.advance(10)
        flooders[0].send(*["a"] * 10)
        flooders[1].send("b")
        flooders[2].send("c")
        bob.received()
        self.clock.advance(0.01)
        flooders[1].disconnect()
        bob.received()
        self.clock.advance(0.5)
        self.assertEqual(bob.received(), ["f2: c"])

    def test_refusalsWaitTheirTurn(self) -> None:
        """
        A line refused as too long while lines wait is told so in its
        turn, after the answers to the lines before it (it got a
        C{! slow down} at once, ahead of them); blank lines past the free
        ones, and a line being refused, wait their turn too rather than
        take the budget ahead of the lines waiting.
        """
        alice = self.named("alice")
        alice.send(*["/help"] * 10)
        alice.received()
        alice.send("/who", "x" * 5000)
        self.assertEqual(alice.received(), [])
        self.wait(0.5)
        self.assertEqual(alice.received(), [
            "*** in lobby: alice",
            "! line too long (over 4096 bytes); it was dropped",
        ])
        alice.sendRaw(b"/who\r\n" + b"\r\n" * (_FREE_EMPTY_LINES + 2) + b"/who\r\n")
        self.assertEqual(self.factory.stats.counters["queued_lines"], 2 + 1 + 2 + 1)
        self.wait(1.5)
        self.assertEqual(alice.received(), ["*** in lobby: alice"] * 2)
        self.assertNotIn("dropped_lines", self.factory.stats.counters)

    def test_queueWaitsForAClientNotReading(self) -> None:
        """
        Lines waiting are not handled while more than C{maxOutput} bytes
        wait for the client: their answers would pile up for it.
        """
        self.makeFactory(rate=5.0, burst=3.0, maxOutput=500)
        alice = self.connect(transport=FillingTransport)
        alice.send("alice")
        bob = self.named("bob")
        takeAll(alice)
        alice.transport.bufferSize = 0
        self.clock.advance(1)
        alice.send("a", "b", "c", "/nick carol")
        bob.send("x" * 600)
        self.clock.advance(0)  # (alice's transport is full)
        bob.send("y" * 600)
        self.assertTrue(alice.protocol._paused)
        self.wait(1)
        self.assertEqual(alice.protocol.name, "alice")
        takeAll(alice)
        self.assertEqual(alice.protocol.name, "carol")

    def test_noQueue(self) -> None:
        """
        With C{lineQueue} 0, lines past the budget are dropped at once, as
        before (L{FloodTests}).
        """
        self.makeFactory(rate=5.0, burst=1.0, lineQueue=0)
        alice = self.named("alice")
        self.clock.advance(1)
        alice.send("one", "two")
        self.assertEqual(alice.received(), ["! slow down: that line was dropped; you may speak again in 0.2 s"])
        self.assertIsNone(self.queued(alice))


class SlowReaderTests(ChatTestCase):
    """
    A client that does not read what it is sent is disconnected before its
    output grows past C{maxOutput}; the others are not held up.
    """

    settings = {"maxOutput": 1000, "rate": 0}

    def test_pausedClientGetsHeldOutputOnResume(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        alice.protocol.pauseProducing()
        bob.send("one", "two", "three")
        self.assertEqual(alice.received(), [])
        alice.protocol.resumeProducing()
        self.assertEqual(alice.received(), ["bob: one", "bob: two", "bob: three"])
        bob.send("four")
        self.assertEqual(alice.received(), ["bob: four"])

    def test_slowReaderDisconnected(self) -> None:
        """
        A client holding more than C{maxOutput} bytes, its transport not
        draining for L{_SLOW_GRACE} seconds, is disconnected.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        carol = self.named("carol")
        alice.protocol.pauseProducing()
        line = "m" * 93  # 100 bytes with "bob: " and CRLF
        bob.send(*[line] * 10)
        self.clock.advance(0)
        self.assertFalse(alice.closing)
        bob.send(line)
        self.clock.advance(_SLOW_GRACE - 0.1)
        self.assertFalse(alice.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(alice.transport.disconnected)
        self.assertEqual(carol.received(), ["bob: " + line] * 11)
        bob.send("still going")
        self.assertEqual(carol.received(), ["bob: still going"])
        self.assertEqual(alice.received(), [])
        self.assertEqual(self.factory.stats.counters["slow_readers"], 1)
        alice.disconnect(ConnectionAborted())
        self.assertEqual(bob.received(), ["*** alice left (not reading)"])
        self.assertEqual(carol.received(), ["*** alice left (not reading)"])
        self.assertIsNone(self.factory.hub.find("alice"))

    def test_burstBeforeTheTransportCouldSendIsNotSlowReading(self) -> None:
        """
        A burst over C{maxOutput} that fills the transport's buffer within
        one reactor pass (over TLS nothing is sent before the pass ends) is
        no proof of a client not reading: when the transport drains within
        L{_SLOW_GRACE}, the client gets it all and stays (it was
        disconnected at once, having been sent nothing: any three users
        could kick a TLS user so).
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.protocol.pauseProducing()
        line = "m" * 93
        bob.send(*[line] * 30)  # 3 KB waiting, 3 maxOutputs
        self.clock.advance(_SLOW_GRACE / 2)
        alice.protocol.resumeProducing()
        self.clock.advance(_SLOW_GRACE)
        self.assertFalse(alice.transport.disconnecting)
        self.assertEqual(alice.received(), ["bob: " + line] * 30)
        self.assertEqual(self.factory.stats.counters.get("slow_readers", 0), 0)
        # Paused again and never drained: out after the grace.
        alice.protocol.pauseProducing()
        bob.send(*[line] * 11)
        self.clock.advance(_SLOW_GRACE)
        self.assertTrue(alice.transport.disconnected)

    def test_outputPastTheHardBoundDisconnectsAtOnce(self) -> None:
        """
        During the grace, what waits for a client stays bounded: past
        L{_HARD_OUTPUT} times C{maxOutput} it is disconnected at once.
        """
        alice = self.named("alice")
        bob = self.named("bob")
        alice.protocol.pauseProducing()
        line = "m" * 93
        bob.send(*[line] * (_HARD_OUTPUT * 10))
        self.assertFalse(alice.transport.disconnected)
        bob.send(line)
        self.clock.advance(0)
        self.assertTrue(alice.transport.disconnected)
        self.assertEqual(self.factory.stats.counters["slow_readers"], 1)

    def test_burstToAReadingClientIsNotSlowReading(self) -> None:
        """
        A burst far over C{maxOutput} within one reactor pass, to a client
        whose transport takes it, is sent as it grows (in pieces of at most
        64 KiB), not held and counted against the client.
        """
        self.makeFactory(maxOutput=100_000, rate=0, roomRate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        line = "m" * 93
        bob.sendRaw(b"".join(line.encode() + b"\r\n" for _ in range(3000)))  # 300 KB
        self.assertFalse(alice.transport.disconnecting)
        self.assertGreater(len(alice.transport.value()), 200_000)  # before the pass ends
        self.assertLessEqual(alice.protocol._outBytes, 65536)
        self.assertEqual(alice.received(), ["bob: " + line] * 3000)
        self.assertEqual(self.factory.stats.counters.get("slow_readers", 0), 0)

    def test_maxOutputConfigurable(self) -> None:
        self.makeFactory(maxOutput=100_000, rate=0)
        alice = self.named("alice")
        bob = self.named("bob")
        alice.protocol.pauseProducing()
        bob.send(*["m" * 90] * 500)
        self.clock.advance(0)
        self.assertFalse(alice.closing)
        alice.protocol.resumeProducing()
        self.assertEqual(len(alice.received()), 500)

    def test_unpausedClientNeverDisconnected(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        for i in range(30):
            bob.send("m" * 90)
            self.clock.advance(0)
        self.assertFalse(alice.closing)
        self.assertEqual(len(alice.received()), 30)


class IdleTests(ChatTestCase):
    """
    Clients without a name, and silent named ones, are closed in time.
    """

    settings = {"idleTimeout": 100.0}

    def test_nameTimeoutDefault(self) -> None:
        self.assertEqual(ChatSettings().nameTimeout, 30.0)
        client = self.connect()
        client.received()
        self.clock.advance(29.9)
        self.assertFalse(client.closing)
        self.clock.advance(0.1)
        self.assertEqual(client.received(), ["! no name given in time; bye"])
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(self.factory.stats.counters["idle_timeouts"], 1)

    def test_nameTimeoutConfigurable(self) -> None:
        self.makeFactory(nameTimeout=5.0)
        client = self.connect()
        self.clock.advance(5)
        self.assertTrue(client.transport.disconnecting)

    def test_zeroNameTimeoutNeverCloses(self) -> None:
        """
        0 means no limit, as for the other timeouts (it used to close every
        client at once).
        """
        self.makeFactory(nameTimeout=0)
        client = self.connect()
        self.clock.advance(10**6)
        self.assertFalse(client.closing)
        client.send("alice")
        self.assertEqual(client.protocol.name, "alice")

    def test_refusedLinesDoNotHoldANamelessClient(self) -> None:
        """
        Before a name is given the timer runs from the connection: lines
        refused without using a try (too long once invalid UTF-8 is
        replaced) restarted it, and held a nameless connection for ever.
        """
        self.makeFactory(nameTimeout=5.0)
        client = self.connect()
        for _ in range(4):
            self.clock.advance(2)
            if client.transport.disconnecting:
                break
            client.sendRaw(b"\xff" * 1400 + b"\n")
        self.assertTrue(client.transport.disconnecting)
        self.assertIn("! no name given in time; bye", client.received())

    def test_partialLineIsNotActivity(self) -> None:
        client = self.connect()
        self.clock.advance(20)
        client.sendRaw(b"ali")
        self.clock.advance(10)
        self.assertTrue(client.transport.disconnecting)

    def test_namedClientIdleTimeout(self) -> None:
        alice = self.named("alice")
        self.clock.advance(99)
        self.assertFalse(alice.closing)
        self.clock.advance(1)
        self.assertEqual(alice.received(), ["! idle for too long; bye"])
        self.assertTrue(alice.transport.disconnecting)
        self.assertEqual(self.factory.stats.counters["idle_timeouts"], 1)

    def test_idleLeaveNotice(self) -> None:
        alice = self.named("alice")
        self.clock.advance(50)
        bob = self.named("bob")
        self.clock.advance(50)
        alice.disconnect()
        self.assertEqual(bob.received(), ["*** alice left (idle)"])

    def test_namedClientNotClosedAtNameTimeout(self) -> None:
        alice = self.named("alice")
        self.clock.advance(60)
        self.assertFalse(alice.closing)

    def test_activityResetsIdleTimeout(self) -> None:
        alice = self.named("alice")
        self.clock.advance(60)
        alice.send("/who")
        self.clock.advance(60)
        self.assertFalse(alice.closing)
        alice.send("hello")
        self.clock.advance(99)
        self.assertFalse(alice.closing)
        self.clock.advance(1)
        self.assertTrue(alice.transport.disconnecting)

    def test_receivingIsNotActivity(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        for i in range(10):
            self.clock.advance(10)
            bob.send("talk")
        self.assertTrue(alice.transport.disconnecting)
        self.assertFalse(bob.closing)

    def test_zeroIdleTimeoutNeverCloses(self) -> None:
        """
        With C{idleTimeout} 0, the default (IRC servers keep a client that
        only reads), a named client may stay silent for ever.
        """
        self.assertEqual(ChatSettings().idleTimeout, 0)
        self.makeFactory(idleTimeout=0)
        alice = self.named("alice")
        self.clock.advance(10**6)
        self.assertFalse(alice.closing)


class ConnectionLimitTests(ChatTestCase):
    """
    Connections in all and from one address.
    """

    settings = {"maxClients": 3, "maxClientsPerHost": 2}
    FULL = b"! the chat is full (3 clients); try again later\r\n"
    PER_HOST = b"! too many connections from your address (at most 2); try again later\r\n"

    def test_perHostLimit(self) -> None:
        first = self.connect("10.0.0.1")
        self.connect("10.0.0.1")
        refused = self.connect("10.0.0.1")
        self.assertEqual(refused.receivedBytes(), self.PER_HOST)
        self.assertTrue(refused.transport.disconnecting)
        other = self.connect("10.0.0.2")
        self.assertEqual(other.received(), GREETING)
        self.assertFalse(other.closing)
        self.assertEqual(self.factory.stats.counters["refused"], 1)
        refused.disconnect()
        first.disconnect()
        again = self.connect("10.0.0.1")
        self.assertEqual(again.received(), GREETING)
        self.assertFalse(again.closing)

    def test_perHostLimitCountsAnIPv6ClientByItsSlash64(self) -> None:
        first = self.connect("2001:db8::1")
        self.connect("2001:db8::2")
        refused = self.connect("2001:db8::3")
        self.assertEqual(refused.receivedBytes(), self.PER_HOST)
        refused.disconnect()
        first.disconnect()
        self.assertEqual(self.connect("2001:db8::4").received(), GREETING)

    def test_totalLimit(self) -> None:
        first = self.connect("10.0.0.1")
        self.connect("10.0.0.2")
        self.connect("10.0.0.3")
        refused = self.connect("10.0.0.4")
        self.assertEqual(refused.receivedBytes(), self.FULL)
        self.assertTrue(refused.transport.disconnecting)
        refused.disconnect()
        # The refused client's leaving frees nothing: it was never counted.
        self.assertEqual(self.connect("10.0.0.5").receivedBytes(), self.FULL)
        first.disconnect()
        admitted = self.connect("10.0.0.6")
        self.assertEqual(admitted.received(), GREETING)
        self.assertEqual(self.connect("10.0.0.7").receivedBytes(), self.FULL)

    def test_refusedClientIsIgnored(self) -> None:
        for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"]:
            self.named(f"u{host[-1]}", host)
        refused = self.connect("10.0.0.4")
        refused.receivedBytes()
        refused.send("mallory", "hello")
        self.assertEqual(refused.receivedBytes(), b"")
        self.assertIsNone(self.factory.hub.find("mallory"))

    def test_namedClientLeavingFreesSlot(self) -> None:
        alice = self.named("alice", "10.0.0.1")
        self.named("bob", "10.0.0.1")
        alice.send("/quit")
        alice.disconnect()
        self.assertEqual(self.connect("10.0.0.1").received(), GREETING)

    def test_limitsDisabledWithZero(self) -> None:
        self.makeFactory(maxClients=0, maxClientsPerHost=0)
        for i in range(20):
            client = self.connect("10.0.0.1")
            self.assertEqual(client.received(), GREETING)


class CloseTests(ChatTestCase):
    """
    Closing from the server's side.
    """

    def test_closeGracefully(self) -> None:
        alice = self.named("alice")
        bob = self.named("bob")
        bob.send("bye all")
        alice.protocol.closeGracefully()
        self.assertEqual(
            alice.transport.value(), b"bob: bye all\r\n*** the server is shutting down; bye\r\n"
        )
        self.assertTrue(alice.transport.disconnecting)
        self.assertFalse(alice.transport.disconnected)
        self.assertEqual(bob.received(), [])
        self.assertIsNone(self.factory.hub.find("alice"))

    def test_stopTellsEachClientOnce(self) -> None:
        """
        When the service stops, each client gets its own goodbye and no
        notice of the others leaving: each client closed in turn was
        announced to all those not closed yet (900 clients were sent
        405,000 lines, 15 MB, with 0.4 s of the server's CPU).
        """
        clients = [self.named(f"c{n}", host=f"10.0.0.{n}") for n in range(20)]
        for client in clients[10:]:
            client.send("/join dev")
        self.drain()
        for client in clients:
            client.protocol.closeGracefully()
        for client in clients:
            self.assertEqual(client.received(), ["*** the server is shutting down; bye"])
            self.assertTrue(client.closing)
        self.assertEqual(self.factory.hub.snapshot(), {"users": 0, "rooms": 1})
        self.assertEqual(self.factory.hub.rooms["lobby"].members, {})

    def test_closeGracefullyWhilePausedStillTellsClient(self) -> None:
        alice = self.named("alice")
        alice.protocol.pauseProducing()
        alice.protocol.closeGracefully()
        self.assertEqual(alice.received(), ["*** the server is shutting down; bye"])

    def test_hostileClientsAreNotReadOn(self) -> None:
        """
        A client cut off as an excess flood, or for spending its name
        tries, is closed without reading it on (its listener's
        C{closeWithoutReading}, with L{_HOSTILE_GRACE}), after its error
        line; other closes (C{/quit}, an idle timeout) read on until the
        client closes, a lingering close.  Lines waiting their turn do not
        hold that off.
        """
        self.makeFactory(rate=5.0, burst=10.0)
        flooder = self.connect(transport=RefusingTransport)
        flooder.send("flooder")
        flooder.sendRaw(b"x\n" * (10 + self.factory.settings.lineQueue + _EXCESS_FLOOD))
        self.assertEqual(flooder.transport.refused, [_HOSTILE_GRACE])
        self.assertFalse(flooder.transport.disconnecting)
        self.assertEqual(flooder.received()[-1], f"! excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye")
        guesser = self.connect(host="192.0.2.1", transport=RefusingTransport)
        guesser.send("a b", "c d", "e f")
        self.assertEqual(guesser.transport.refused, [_HOSTILE_GRACE])
        self.assertEqual(guesser.received()[-1], f"! {NAME_RULES}; too many tries, bye")
        quitter = self.connect(host="192.0.2.2", transport=RefusingTransport)
        quitter.send("quitter", "/quit")
        idle = self.connect(host="192.0.2.3", transport=RefusingTransport)
        self.clock.advance(self.factory.settings.nameTimeout)
        for client in quitter, idle:
            self.assertEqual(client.transport.refused, [])
            self.assertTrue(client.transport.disconnecting)

    def test_closeAbortsClientThatDoesNotTakeIt(self) -> None:
        alice = self.named("alice")
        alice.protocol.closeGracefully()
        self.clock.advance(9.9)
        self.assertFalse(alice.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(alice.transport.disconnected)

    def test_closedConnectionCancelsAbort(self) -> None:
        alice = self.named("alice")
        alice.protocol.closeGracefully()
        alice.disconnect()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeUnregistersProducerSoCloseCanFinish(self) -> None:
        """
        A TCP transport that paused its producer resumes it, instead of
        closing, once its buffer drains: a closing connection must
        unregister its producer, or the close waits for the abort.
        """
        alice = self.named("alice")
        alice.send("/quit")
        self.assertIsNone(alice.transport.producer)
        bob = self.named("bob")
        bob.protocol.closeGracefully()
        self.assertIsNone(bob.transport.producer)


@implementer(IMember)
class FakeMember:
    """
    A member that keeps what it is delivered.
    """

    name: Optional[str] = None
    room: Any = None

    def __init__(self) -> None:
        self.lines: List[Line] = []

    def deliver(self, line: Line) -> None:
        self.lines.append(line)

    def replay(self, lines: Sequence[Line]) -> None:
        self.lines.extend(lines)

    def texts(self) -> List[str]:
        texts = [line.text for line in self.lines]
        del self.lines[:]
        return texts


class HubTests(SynchronousTestCase):
    """
    L{ChatHub} with fake members, no protocol.
    """

    def setUp(self) -> None:
        self.stats = ServiceStats("chat")
        self.now = 1000.0
        self.hub = ChatHub(historySize=5, maxRooms=3, stats=self.stats, clock=lambda: self.now)

    def member(self, name: str) -> FakeMember:
        member = FakeMember()
        self.hub.register(member, name)
        return member

    def test_fakeMemberProvidesIMember(self) -> None:
        verifyObject(IMember, self.member("alice"))

    def test_historySizeBounded(self) -> None:
        """
        A history longer than L{netsuite.rooms.MAX_HISTORY} lines is a
        C{ValueError} that says so, when the hub is made: 2**63 lines was an
        C{OverflowError} from the lobby's C{deque}.
        """
        from netsuite import rooms

        most = rooms.MAX_HISTORY
        self.assertEqual(ChatHub(historySize=most).rooms[LOBBY].history.maxlen, most)
        for size in (most + 1, 2**63):
            error = self.assertRaises(ValueError, ChatHub, historySize=size)
            self.assertEqual(str(error), f"a room's history holds at most {most} lines")

    def test_chatProtocolProvidesIMember(self) -> None:
        """
        What the hub holds for a real connection is an L{IMember} (and the
        push producer its transport is paced by).
        """
        client = ChatClient(ChatFactory(MemoryReactorClock()), MemoryReactorClock(), "127.0.0.1")
        verifyObject(IMember, client.protocol)
        verifyObject(IPushProducer, client.protocol)

    def test_oneLineObjectEncodedOnce(self) -> None:
        alice, bob, carol = self.member("alice"), self.member("bob"), self.member("carol")
        for m in (alice, bob, carol):
            m.lines.clear()
        line = self.hub.say(alice, "hi all")
        self.assertEqual(alice.lines, [])
        self.assertIs(bob.lines[0], line)
        self.assertIs(carol.lines[0], line)
        encoded = bob.lines[0].encoded
        self.assertEqual(encoded, b"alice: hi all\r\n")
        self.assertIs(carol.lines[0].encoded, encoded)
        self.assertEqual(line.kind, "message")
        self.assertEqual(line.room, LOBBY)
        self.assertEqual(line.sender, "alice")
        self.assertEqual(line.when, 1000.0)

    def test_actionSameObjectIncludingSender(self) -> None:
        alice, bob = self.member("alice"), self.member("bob")
        alice.lines.clear()
        bob.lines.clear()
        line = self.hub.act(alice, "waves")
        self.assertIs(alice.lines[0], line)
        self.assertIs(bob.lines[0], line)
        self.assertEqual(line.encoded, b"* alice waves\r\n")

    def test_noticeEncodedOnceForAll(self) -> None:
        alice, bob = self.member("alice"), self.member("bob")
        self.member("carol")
        self.assertIs(alice.lines[-1], bob.lines[-1])
        self.assertIs(alice.lines[-1].encoded, bob.lines[-1].encoded)

    def test_encodedIsUtf8WithCRLF(self) -> None:
        line = Line("caf\u00e9 \u2713", "message")
        self.assertEqual(line.encoded, "caf\u00e9 \u2713".encode("utf-8") + b"\r\n")
        self.assertIs(line.encoded, line.encoded)

    def test_registerErrors(self) -> None:
        self.member("alice")
        with self.assertRaises(ChatError) as e:
            self.hub.register(FakeMember(), "Alice")
        self.assertEqual(e.exception.message, "the name Alice is taken")
        with self.assertRaises(ChatError):
            self.hub.register(FakeMember(), "no spaces")

    def test_maxRooms(self) -> None:
        alice, bob, carol = self.member("alice"), self.member("bob"), self.member("carol")
        self.hub.join(alice, "one")
        self.hub.join(bob, "two")
        with self.assertRaises(ChatError) as e:
            self.hub.join(carol, "three")
        self.assertEqual(e.exception.message, "there are already 3 rooms; join one of them")
        self.hub.join(carol, "ONE")
        self.hub.part(bob)
        self.assertNotIn("two", self.hub.rooms)
        self.hub.join(bob, "three")
        self.assertEqual([room.name for room in self.hub.roomList()], ["lobby", "one", "three"])

    def test_maxRoomsCountsTheRoomBeingLeft(self) -> None:
        """
        A member alone in its room may move to a new room at the limit: its
        old room goes away as it leaves.
        """
        alice, bob = self.member("alice"), self.member("bob")
        self.hub.join(alice, "one")
        self.hub.join(bob, "two")
        self.hub.join(bob, "three")
        self.assertEqual([room.name for room in self.hub.roomList()], ["lobby", "one", "three"])
        carol = self.member("carol")
        with self.assertRaises(ChatError):
            self.hub.join(carol, "four")  # carol leaves the lobby, which stays

    def test_gauges(self) -> None:
        self.assertEqual(self.stats.gauges, {"users": 0, "rooms": 1})
        alice, bob = self.member("alice"), self.member("bob")
        self.assertEqual(self.stats.gauges, {"users": 2, "rooms": 1})
        self.hub.join(alice, "dev")
        self.hub.join(bob, "ops")
        self.assertEqual(self.stats.gauges, {"users": 2, "rooms": 3})
        self.hub.leave(alice)
        self.assertEqual(self.stats.gauges, {"users": 1, "rooms": 2})
        self.hub.part(bob)
        self.assertEqual(self.stats.gauges, {"users": 1, "rooms": 1})
        self.hub.leave(bob, "bye")
        self.assertEqual(self.stats.gauges, {"users": 0, "rooms": 1})
        self.assertEqual(self.hub.snapshot(), {"users": 0, "rooms": 1})

    def test_linesOutCounter(self) -> None:
        alice, carol = self.member("alice"), self.member("carol")
        self.member("bob")
        before = self.stats.counters["lines_out"]
        self.hub.say(alice, "hi")  # to 2
        self.hub.act(alice, "waves")  # to 3
        self.hub.tell(alice, "bob", "psst")  # to 1
        self.assertEqual(self.stats.counters["lines_out"], before + 6)
        self.hub.join(carol, "dev")  # "left lobby" to 2
        self.assertEqual(self.stats.counters["lines_out"], before + 8)

    def test_leaveQuietly(self) -> None:
        """
        A member leaving quietly is removed, its room not told; an empty
        room goes.
        """
        alice, bob, carol = self.member("alice"), self.member("bob"), self.member("carol")
        self.hub.join(carol, "dev")
        bob.texts()
        self.hub.leave(alice, "server shutting down", quietly=True)
        self.hub.leave(carol, "server shutting down", quietly=True)
        self.assertEqual(bob.texts(), [])
        self.assertIsNone(self.hub.find("alice"))
        self.assertIsNone(alice.room)
        self.assertEqual(list(self.hub.rooms), ["lobby"])
        self.assertEqual(self.hub.snapshot(), {"users": 1, "rooms": 1})

    def test_leaveTwiceAndUnregisteredHarmless(self) -> None:
        alice, bob = self.member("alice"), self.member("bob")
        bob.texts()
        self.hub.leave(FakeMember())
        self.hub.leave(alice, "gone")
        self.hub.leave(alice, "gone")
        self.assertEqual(bob.texts(), ["*** alice left (gone)"])

    def test_historyWithTimes(self) -> None:
        alice = self.member("alice")
        self.hub.say(alice, "early")
        self.now = 2000.0
        bob = self.member("bob")
        history = bob.lines[-1]
        self.assertEqual(history.text, "[history] alice: early")
        self.assertEqual(history.kind, "history")
        self.assertEqual(history.when, 1000.0)

    def test_historyBounded(self) -> None:
        alice = self.member("alice")
        for i in range(8):
            self.hub.say(alice, str(i))
        bob = self.member("bob")
        self.assertEqual(
            [line.text for line in bob.lines if line.kind == "history"],
            [f"[history] alice: {i}" for i in range(3, 8)],
        )


class HistoryBytesTests(SynchronousTestCase):
    """
    A room's history is bounded in bytes as well as in lines.
    """

    def replayed(self, hub: ChatHub) -> List[str]:
        bob = FakeMember()
        hub.register(bob, "bob")
        texts = [line.text for line in bob.lines if line.kind == "history"]
        hub.leave(bob)
        return texts

    def test_oldestLinesMakeRoom(self) -> None:
        # "[history] alice: N" + 90 x + CRLF: 111 bytes for N < 10.
        hub = ChatHub(historySize=100, historyBytes=350)
        alice = FakeMember()
        hub.register(alice, "alice")
        for n in range(6):
            hub.say(alice, f"{n} " + "x" * 90)
        self.assertEqual(self.replayed(hub), [f"[history] alice: {n} " + "x" * 90 for n in (3, 4, 5)])

    def test_linesAndBytesBothCount(self) -> None:
        """
        Lines dropped for the line count no longer count in bytes: after
        many short lines, a long one still fits.
        """
        hub = ChatHub(historySize=2, historyBytes=300)
        alice = FakeMember()
        hub.register(alice, "alice")
        for n in range(50):
            hub.say(alice, str(n))
        hub.say(alice, "y" * 250)
        self.assertEqual(self.replayed(hub), ["[history] alice: 49", "[history] alice: " + "y" * 250])

    def test_lineLongerThanTheWholeHistoryNotKept(self) -> None:
        hub = ChatHub(historySize=10, historyBytes=100)
        alice = FakeMember()
        hub.register(alice, "alice")
        hub.say(alice, "short")
        hub.say(alice, "z" * 200)
        self.assertEqual(self.replayed(hub), ["[history] alice: short"])

    def test_bytesCountedEncoded(self) -> None:
        """
        The bound is on UTF-8 bytes, not characters: a replacement
        character (what an invalid byte becomes) is three.
        """
        hub = ChatHub(historySize=10, historyBytes=3 * 100 + 40)
        alice = FakeMember()
        hub.register(alice, "alice")
        hub.say(alice, "\ufffd" * 100)
        hub.say(alice, "\ufffd" * 100)
        self.assertEqual(self.replayed(hub), ["[history] alice: " + "\ufffd" * 100])

    def test_defaultKeepsTwentyLinesOfThreeTimesTheLimit(self) -> None:
        """
        By default 20 lines of 12 KB (three times the longest line the
        protocol lets through) are kept whole.
        """
        self.assertEqual(ChatSettings().historyBytes, HISTORY_BYTES)
        hub = ChatHub(roomRate=0)
        alice = FakeMember()
        hub.register(alice, "alice")
        for n in range(25):
            hub.say(alice, "\ufffd" * 4096)
        self.assertEqual(len(self.replayed(hub)), 20)


class ProtocolStatsTests(ChatTestCase):
    """
    The protocol and the hub count into the factory's stats.
    """

    settings = {"rate": 1.0, "burst": 2.0, "lineQueue": 1}

    def test_counters(self) -> None:
        alice = self.named("alice")
        self.named("bob")
        self.assertNotIn("lines_in", self.factory.stats.counters)
        out = self.factory.stats.counters["lines_out"]
        alice.send("one", "/me two", "three")
        counters = self.factory.stats.counters
        self.assertEqual(counters["lines_in"], 3)
        self.assertEqual(counters["queued_lines"], 1)
        self.assertEqual(counters["lines_out"], out + 1 + 2)
        self.clock.advance(1)
        self.assertEqual(counters["lines_out"], out + 1 + 2 + 1)
        alice.send(*["four"] * 3)  # one waits, two are dropped
        self.assertEqual(counters["queued_lines"], 2)
        self.assertEqual(counters["dropped_lines"], 2)
        self.assertEqual(self.factory.stats.gauges, {"users": 2, "rooms": 1})
