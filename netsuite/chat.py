"""
A line-based chat server anyone can use with C{nc}, C{telnet} or
C{openssl s_client}.

The first line a client sends is its name; after that, a plain line goes to
the others in its room as C{name: text}, and lines starting with C{/} are
commands (L{ChatProtocol.commands}).  Server lines start with C{*** }
(notices and information, as IRC servers' notices), C{* name } (someone's
C{/me} action), C{[history] } (a room's recent lines, replayed on joining),
C{[private] } (a private message), C{name: } (someone's message); every
error is one line starting with C{! }.

Rooms, names and history live in a L{netsuite.rooms.ChatHub}, which knows
nothing of lines and sockets, so that other front ends can share it.

Limits, each a L{ChatSettings} field: line length (an over-long line is
refused and dropped, and never buffered beyond the limit), a token bucket of
lines per client (a client over it is told when it may speak again), pending
output per client (a client that does not read is disconnected), idle time
with and without a name, and connections in all and per address (a refused
client gets one line saying why).

Output is collected per connection and sent once per reactor pass, straight
to the socket on plain TCP: a line for a thousand members is encoded once and
costs each of them an C{append}, not a C{write}.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields, replace
from itertools import chain
from operator import attrgetter
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netsuite.limits import IdleTimeout, TokenBucket, cancelIfActive, hostKey, unsentBytes
from netsuite.listen import (
    ConnectionBudget,
    FlushBatch,
    StreamListener,
    _reactor,
    keepAlive,
    limitSendBuffer,
    plainSocketTransport,
    sendOrQueue,
)
from netsuite.rooms import (
    HISTORY_BYTES,
    NOTICE_RATE,
    PRIVATE_RATE,
    ROOM_RATE,
    ChatError,
    ChatHub,
    IMember,
    Line,
    Room,
    cleanText,
    memberNames,
)
from netsuite.stats import ServiceStats

__all__ = ["ChatFactory", "ChatProtocol", "ChatSettings", "makeChatService", "DEFAULT_CHAT"]

DEFAULT_CHAT = "tcp:8023:interface=127.0.0.1"

#: Bytes of output collected for a client within one reactor pass before
#: they are sent anyway.
_HOLD_LIMIT = 65536

#: Seconds a closing connection gets to take its last lines before it is
#: aborted.
_CLOSE_GRACE = 10.0

#: Seconds a connection closed on a hostile client (an excess flood, its
#: name tries spent), which is not read any more, gets to take its last
#: line before it ends.
_HOSTILE_GRACE = 2.0

#: Seconds a client may keep more than C{maxOutput} bytes waiting, without
#: its transport draining once, before it is taken for one that does not
#: read.  A burst written within one reactor pass (a busy room, C{/rooms})
#: fills TLS's buffer before any of it could be sent: that is no proof.
_SLOW_GRACE = 2.0

#: Bytes waiting, in C{maxOutput}s, past which a client is disconnected at
#: once (what waits for one client stays bounded during the grace).
_HARD_OUTPUT = 8

#: Lines dropped in a row by flood control after which a client is
#: disconnected (reading and refusing a flood costs the server CPU).
_EXCESS_FLOOD = 100

#: Seconds a connection may be silent both ways before TCP asks whether
#: its client is still there, seconds between asks, and asks unanswered
#: before it is dropped: a client that vanished (a laptop shut, a NAT that
#: forgot it) leaves, and its name is free, within 2 minutes, not at the
#: idle timeout an hour on (IRC servers PING for the same).
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 6

#: Bytes the system may hold for a client beyond what chat holds itself
#: (L{ChatSettings.maxOutput}); Linux doubles it.  Left to the system, a
#: client that does not read took up to 4 MiB more; IRC servers bound
#: theirs too (ircu: 61440 bytes).
SEND_BUFFER = 64 * 1024

#: The byte after a CR that belongs to its line end: CRLF's LF, telnet's
#: CR NUL (also after a second CR: Windows' text mode writes CRLF as CR CR
#: LF).
_AFTER_CR = (0x0A, 0x00)
_CR = 0x0D

#: Empty lines in a row that cost no line of the flood budget: a blank
#: line between pasted lines, CRLF CRLF, is common.  Those after them are
#: taken from the budget, quietly, so a stream of line ends is still cut
#: off as an excess flood.
_FREE_EMPTY_LINES = 2

#: Bytes of lines that may wait their turn for one client (see
#: L{ChatSettings.lineQueue}); at least one line of C{maxLine}.
QUEUE_BYTES = 8192

class _Refusal(str):
    """
    An error line for a client, told in its turn among its lines that wait
    (see L{ChatProtocol._enqueue}).
    """


#: Characters a room's topic may have.
MAX_TOPIC = 300

#: Names in one line of C{/who}'s answer.
_WHO_NAMES = 50


@dataclass
class ChatSettings:
    """
    The chat service's limits.

    @ivar historySize: lines of a room replayed on joining it (0: none).
    @ivar historyBytes: bytes of a room's lines kept for that, at most.
    @ivar maxLine: bytes in one line (without its line ending).
    @ivar rate: lines a second a client may send (0: no limit).
    @ivar privateRate: bytes a second of private messages a client may be
        sent, by everyone together (0: no limit).
    @ivar roomRate: bytes a second of lines one room may be sent, by its
        members together (0: no limit).
    @ivar noticeRate: join, leave and new-name notices a second one room
        is sent one by one (0: no limit); past it, they are told in one
        line a second.
    @ivar burst: lines a client may send at once before C{rate} applies.
    @ivar lineQueue: lines a client sends past its budget that wait their
        turn, handled at C{rate} (as IRC servers' "fake lag"), rather than
        dropped; past that many, or L{QUEUE_BYTES}, lines are dropped (0:
        none wait).
    @ivar hostRate: lines a second all clients from one address may send
        together (0: no limit; none either when C{rate} is 0), in bursts of
        twice that (at least C{burst}).
    @ivar maxOutput: bytes waiting to be sent to one client before it is
        disconnected as a reader that does not keep up.
    @ivar nameTimeout: seconds a client may take to give its name (0:
        forever).
    @ivar idleTimeout: seconds a named client may stay silent (0: forever,
        as on IRC servers; TCP keepalive drops a client that vanished).
    @ivar maxClients: connections at once (0: no limit).
    @ivar maxClientsPerHost: connections at once from one address (0: no
        limit).
    @ivar maxRooms: rooms that may exist at once.
    @ivar nameTries: names a client may try before it is disconnected.
    """

    historySize: int = 20
    historyBytes: int = HISTORY_BYTES
    maxLine: int = 4096
    rate: float = 5.0
    privateRate: float = PRIVATE_RATE
    roomRate: float = ROOM_RATE
    noticeRate: float = NOTICE_RATE
    hostRate: float = 20.0
    burst: float = 10.0
    lineQueue: int = 50
    maxOutput: int = 256 * 1024
    nameTimeout: float = 30.0
    idleTimeout: float = 0.0
    maxClients: int = 1000
    maxClientsPerHost: int = 50
    maxRooms: int = 1000
    nameTries: int = 3


_HELP = [
    "*** commands:",
    "***   /help              this list",
    "***   /nick NAME         change your name",
    "***   /join ROOM         go to ROOM (made if it does not exist)",
    "***   /part              go back to the lobby",
    "***   /rooms             rooms and how many are in each",
    "***   /who               who is in your room",
    "***   /msg NAME TEXT     a private message",
    "***   /me ACTION         say what you do",
    "***   /topic [TEXT]      show, or set, your room's topic (-delete clears it)",
    "***   /quit [REASON]     leave",
    "*** anything else you type goes to your room (start it with // to say a line that starts with /)",
]


@implementer(IMember, IPushProducer, IHalfCloseableProtocol)
class ChatProtocol(Protocol):
    """
    One chat client: reads its lines, sends it lines.

    @ivar name: its name once it has one (set by the hub).
    @ivar room: its L{Room} (set by the hub).
    """

    factory: "ChatFactory"
    name: Optional[str] = None
    room: Any = None
    log = Logger()

    _buffer = b""
    _discarding = False
    #: Bytes of the line being discarded not yet charged (see L{_discard}).
    _discardedBytes = 0
    #: Whether the last read ended with a CR (see L{dataReceived}).
    _afterCR = False
    #: Empty lines since the last line that was not (see L{lineReceived}).
    _emptyLines = 0
    _closed = False
    _paused = False
    #: Whether the client's lines wait (in C{_buffer}) until it takes
    #: what waits for it, its transport paused.
    _held = False
    #: Whether the client's input ended while its lines were held.
    _inputEnded = False
    _slowCheck: Any = None
    #: What the client had not taken yet when the check was set.
    _slowFrom = 0
    _dropped = 0
    _out: Optional[List[bytes]] = None
    _outBytes = 0
    #: Lines sent as the client takes them (see L{replay}, L{_answer}).
    _replay: Optional[Iterator[bytes]] = None
    _replayCall: Any = None
    #: Whether C{_replay} holds an answer to the client's command, which
    #: its next lines wait for.
    _answering = False
    _after: Optional[List[bytes]] = None
    _raw: Any = None
    _rawStats: Optional[ServiceStats] = None
    _idle: Optional[IdleTimeout] = None
    _bucket: Optional[TokenBucket] = None
    _counted = False
    _host = ""
    _quitReason = ""
    #: What the client said with its C{/quit}.
    _quitWords = ""
    #: When a join refused for its address's budget was told to send its
    #: name again.
    _joinAgainAt = 0.0
    #: Lines past the flood budget waiting their turn (see L{_enqueue}),
    #: their bytes, and the call that handles the next.
    _queue: Optional[Deque[str]] = None
    _queueBytes = 0
    _queueCall: Any = None
    #: Whether the lines waiting wait for the address's budget, in line
    #: with its other clients (see L{ChatFactory.waitForAddress}).
    _waitingForAddress = False

    # Connection

    def connectionMade(self) -> None:
        factory = self.factory
        self._host = _hostOf(self.transport.getPeer())
        refusal = factory.admit(self._host)
        if refusal is not None:
            self.factory.stats.count("refused")
            self.transport.write(b"! " + refusal.encode("utf-8") + b"\r\n")
            self._close()
            return
        self._counted = True
        self._raw, self._rawStats = plainSocketTransport(self.transport)
        keepAlive(self.transport, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        limitSendBuffer(self.transport, SEND_BUFFER)
        self.transport.registerProducer(self, True)
        settings = factory.settings
        if settings.rate > 0:
            self._bucket = TokenBucket(settings.rate, settings.burst, factory.reactor)
        self._tries = settings.nameTries
        if settings.nameTimeout > 0:
            self._idle = IdleTimeout(factory.reactor, settings.nameTimeout, self._timedOut)
        self.info("*** welcome to netsuite chat")
        self.info("*** what is your name? (1-32 letters, digits, '_', '-' or '.')")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self._out = None
        self._replay = self._after = None
        if self._replayCall is not None and self._replayCall.active():
            self._replayCall.cancel()
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        self._cancelQueue()
        self._cancelSlowCheck()
        if self._idle is not None:
            self._idle.cancel()
        if self._counted:
            self._counted = False
            self.factory.release(self._host)
            self.factory.hub.leave(self, self._quitReason or "connection closed", self._quitWords)

    def readConnectionLost(self) -> None:
        """
        The client has sent all it will (C{nc -N}, C{shutdown(SHUT_WR)}):
        it still gets what is waiting for it, then the connection closes;
        lines of its held until it takes its answers, or waiting their
        turn (L{_enqueue}), are answered first, and so is a last line
        without a line end.
        """
        if self._held or self._queue:
            self._inputEnded = True
            return
        if (self._buffer or self._discarding) and not self._closed:
            # The end of input ends a last line sent without a line end, as
            # the end of a file does (IRC servers drop it; an nc user or a
            # script meant it said).
            self.dataReceived(b"\n")
            if self._held or self._queue:
                self._inputEnded = True  # (its answer waits to be taken)
                return
        self._quitReason = self._quitReason or "connection closed"
        if self._replay is not None and not self._closing:
            # The room's history being replayed (to a client that sent its
            # name and ended its input at once, often in one read) is sent
            # first, as the client takes it; the close then.  The room is
            # told now, and the close's grace runs from now.
            self._closeAfterReplay = True
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._counted:
                self.factory.hub.leave(self, self._quitReason, self._quitWords)
            self._abortCall = self.factory.reactor.callLater(_CLOSE_GRACE, self.transport.abortConnection)
            return
        self._close()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def closeGracefully(self) -> None:
        """
        netsuite is stopping: say so, and close.  The room is not told:
        everyone in it is being told the same.
        """
        self._stopping = True
        self._quitReason = self._quitReason or "server shutting down"
        self.info("*** the server is shutting down; bye")
        self._close()

    # Input

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        maxLine = self.factory.settings.maxLine
        buffer = self._buffer + data if self._buffer else data
        if self._held:
            # (What came in the read the transport was paused in.)
            self._buffer = buffer
            return
        start = 0
        size = len(buffer)
        if self._afterCR and size:
            # The rest of a line end whose CR ended the last read: an LF or
            # a NUL, or a CR and one of them; the line has ended already.
            first = buffer[0]
            if first in _AFTER_CR:
                start = 1
            elif first == _CR:
                if size == 1:
                    self._buffer = buffer  # CR CR, maybe CR CR LF
                    return
                if buffer[1] in _AFTER_CR:
                    start = 2
                # (Else that CR ends an empty line.)
            self._afterCR = False
        # The next LF and the next CR (size: none), each looked for again
        # only once passed, so a read of many lines is scanned once.
        lf = cr = -1
        waitCR = False
        while not self._closed:
            if self._answering or (self._paused and self._outBytes > self.factory.settings.maxOutput):
                # The client has not taken its answers yet: the rest of
                # what it sent waits until it has (see L{_release}), so
                # its own commands cannot pile up answers for it.
                self._held = True
                self._buffer = buffer[start:]
                self.transport.pauseProducing()
                return
            if waitCR:
                break
            if lf < start:
                lf = buffer.find(b"\n", start)
                if lf < 0:
                    lf = size
            if cr < start:
                cr = buffer.find(b"\r", start)
                if cr < 0:
                    cr = size
            end = min(lf, cr)
            if end == size:
                break
            after = end + 1
            # CR ends a line, as IRC servers take it; so do CRLF, CR NUL and
            # CR CR LF, even split between reads.  Any other byte after them
            # is the next line's: more LFs or CRs are empty lines, free only
            # while few (see L{lineReceived}; they were all skipped, for
            # nothing, a byte at a time).
            if end == cr:
                if after == size:
                    self._afterCR = True
                elif buffer[after] in _AFTER_CR:
                    after += 1
                elif buffer[after] == _CR:
                    if after + 1 == size:
                        self._afterCR = waitCR = True  # kept: CR CR, maybe CR CR LF
                    elif buffer[after + 1] in _AFTER_CR:
                        after += 2
            if self._discarding:
                self._discarding = False  # the end of a line already refused
                self._discard(end - start)
            else:
                line = buffer[start:end]
                if len(line) > maxLine:
                    self._discardedBytes = 0
                    self._tooLong()
                    self._discard(len(line) - maxLine)
                else:
                    self.lineReceived(line)
            start = after
        rest = buffer[start:]
        if self._discarding:
            self._discard(len(rest))
            rest = b""
        elif len(rest) > maxLine:
            # No line ending in sight: refuse the line now, drop what came.
            self._discarding = True
            self._discardedBytes = 0
            self._tooLong()
            self._discard(len(rest) - maxLine)
            rest = b""
        self._buffer = rest

    def _discard(self, size: int) -> None:
        """
        Drop C{size} more bytes of a line refused as too long.  Each
        C{maxLine} bytes of it is a line of the flood budgets, silently
        taken, and counts towards an excess flood once they are spent: a
        client streaming a line without end was read at hundreds of MB/s
        until its idle timeout.
        """
        maxLine = self.factory.settings.maxLine
        self._discardedBytes += size
        while self._discardedBytes >= maxLine and not self._closed:
            self._discardedBytes -= maxLine
            self._chargeQuietly()

    def lineReceived(self, raw: bytes) -> None:
        """
        Handle one line (without its line ending).
        """
        if self._idle is not None and self.name is not None:
            # Before the name, the timer runs from the connection: lines it
            # refuses (too long) held a nameless connection for ever.
            self._idle.touch()
        if not raw:
            # A blank line between lines (CRLF CRLF), or a line end more
            # than one, as IRC servers skip them: free while they are few,
            # never answered, and a stream of them counts towards an excess
            # flood (each cost a line, with a "slow down" of its own).
            if self.name is not None:
                self.factory.stats.count("lines_in")
            self._emptyLines += 1
            if self._emptyLines > _FREE_EMPTY_LINES:
                self._chargeQuietly()
            return
        self._emptyLines = 0
        try:
            text = cleanText(raw.decode("utf-8"))
        except UnicodeDecodeError:
            # Each invalid byte becomes U+FFFD, three bytes out: the line
            # must still be within the limit once they are replaced.
            text = cleanText(raw.decode("utf-8", "replace"))
            if len(text.encode("utf-8")) > self.factory.settings.maxLine:
                self._tooLong(" once its invalid UTF-8 is replaced")
                return
        if self.name is None:
            if not text:
                # Spaces before the name: no try spent, but a line of the
                # flood budget, as a named client's blank line.
                if self._withinFloodLimits():
                    self._dropped = 0
                return
            command, _, argument = text.partition(" ")
            if command.lower() == "/quit":  # leaving before giving a name, as IRC's QUIT
                self.do_quit(argument.strip())
                return
            if text.startswith("/"):
                # No name starts with "/": no try spent (one was, on
                # "/help" at the prompt), but a line of the flood budget.
                if self._withinFloodLimits():
                    self._dropped = 0
                    if command.lower() == "/help":
                        self.do_help(argument)
                    else:
                        self.error("give your name first; commands work once you have one")
                return
            self._chooseName(text)
            return
        self.factory.stats.count("lines_in")
        if self._queue:
            self._enqueue(text, None)  # after those waiting already
            return
        when = self._takeLine()
        if when is not None:
            self._enqueue(text, when)
            return
        self._dropped = 0
        self._handle(text)

    def _handle(self, text: str) -> None:
        """
        Handle a named client's line, within its flood budget: a command,
        or a line for its room.
        """
        if not text:
            return
        try:
            if not text.startswith("/") or text.startswith("//"):
                # "//" says a line that starts with "/", as IRC clients do.
                self.factory.hub.say(self, text[1:] if text.startswith("//") else text)
                return
            command, _, argument = text[1:].partition(" ")
            handler = self.commands.get(command.lower())
            if handler is None:
                self.error(f"unknown command /{command}; /help lists them")
                return
            handler(self, argument.strip())
        except ChatError as e:
            self.error(e.message)

    def _withinFloodLimits(self, quietly: bool = False) -> bool:
        """
        Take a line from the client's flood budget and its address's; if
        either is spent, the line is dropped (see L{_droppedLine}).

        @param quietly: whether a dropped line goes without its error.
        @return: whether the line may be answered.
        """
        when = self._takeLine()
        if when is None:
            return True
        self._droppedLine(when, quietly)
        return False

    def _takeLine(self) -> Optional[str]:
        """
        Take a line from the client's flood budget and its address's.

        @return: L{None} if both had one; else when the client may speak
            again, in words (and neither budget is charged).
        """
        bucket = self._bucket
        if bucket is not None and not bucket.take():
            return f"you may speak again in {max(bucket.delay(), 0.1):.1f} s"
        shared = self.factory.hostBucket(self._host)
        if shared is not None and not shared.take():
            if bucket is not None:
                bucket.give(1)  # not said: the client's own budget keeps it
            return (
                f"your address sends more than {shared.rate:g} lines a second in all; "
                f"you may speak again in {max(shared.delay(), 0.1):.1f} s"
            )
        return None

    def _enqueue(self, text: str, when: Optional[str], quietly: bool = False) -> None:
        """
        Keep a line past the flood budget to be handled in its turn, at
        the budget's rate (as IRC servers' "fake lag"): a pasted 30 lines
        lost 20, each with a C{! slow down}.  Past L{ChatSettings.lineQueue}
        lines or L{QUEUE_BYTES} bytes waiting, it is dropped as before, so
        a flood is still cut off as an excess flood.

        @param text: the line, or a L{_Refusal} to tell in its turn.
        @param when: when the client may speak again, in words, if the
            budget has just refused this line (L{None}: lines wait already).
        @param quietly: whether a line dropped goes without its error.
        """
        settings = self.factory.settings
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        size = len(text.encode("utf-8"))
        if len(queue) >= settings.lineQueue or self._queueBytes + size > max(QUEUE_BYTES, settings.maxLine):
            if when is None:
                when = (
                    f"{len(queue)} lines wait their turn; "
                    f"you may speak again in {max(self._queueDelay(), 0.1):.1f} s"
                )
            self._droppedLine(when, quietly)
            return
        self._dropped = 0
        self.factory.stats.count("queued_lines")
        queue.append(text)
        self._queueBytes += size
        if self._queueCall is None and not self._waitingForAddress:
            self._queueCall = self.factory.reactor.callLater(self._ownDelay(), self._serveQueue)

    def _ownDelay(self) -> float:
        """
        Seconds until the client's own flood budget has a line again.
        """
        return max(self._bucket.delay() if self._bucket is not None else 0.0, 0.01)

    def _queueDelay(self) -> float:
        """
        Seconds, about, until the next line waiting is handled.
        """
        if self._queueCall is not None:
            return self._queueCall.getTime() - self.factory.reactor.seconds()
        shared = self.factory.hostBucket(self._host)
        return shared.delay() if shared is not None else 0.0

    def _serveQueue(self) -> None:
        """
        Handle the lines waiting their turn, as the flood budgets allow;
        not while the client has answers or more than C{maxOutput} bytes
        still to take (L{_release} serves on then).  Past its own budget,
        the client is called again when that has a line; past its
        address's, it waits in line with the address's other clients
        (L{ChatFactory.waitForAddress}).
        """
        self._queueCall = None
        queue = self._queue
        while queue and not self._closed:
            if self._answering or (self._paused and self._outBytes > self.factory.settings.maxOutput):
                return
            bucket = self._bucket
            if bucket is not None and bucket.delay() > 0:
                self._queueCall = self.factory.reactor.callLater(self._ownDelay(), self._serveQueue)
                return
            if self._takeLine() is not None:
                self._waitingForAddress = True
                self.factory.waitForAddress(self._host, self)
                return
            text = queue.popleft()
            self._queueBytes -= len(text.encode("utf-8"))
            if isinstance(text, _Refusal):
                self.error(text)
            else:
                self._handle(text)
        if not queue and self._inputEnded and not self._held and not self._closed:
            self.readConnectionLost()

    def addressTurn(self) -> None:
        """
        Its address's flood budget has a line for this client, which
        waited for it (see L{ChatFactory.waitForAddress}).
        """
        self._waitingForAddress = False
        self._serveQueueIfIdle()

    def _serveQueueIfIdle(self) -> None:
        """
        Serve the lines waiting their turn, unless a call or the address's
        turn is to serve them (L{_serveQueue} set them).
        """
        if self._queue and self._queueCall is None and not self._waitingForAddress and not self._closed:
            self._serveQueue()

    def _cancelQueue(self) -> None:
        self._queue = None
        self._queueBytes = 0
        cancelIfActive(self._queueCall)
        self._queueCall = None

    def _droppedLine(self, when: str, quietly: bool = False) -> None:
        """
        Flood control dropped a line: say so (unless C{quietly}), or
        disconnect a client that goes on.
        """
        self.factory.stats.count("dropped_lines")
        self._dropped += 1
        if self._dropped >= _EXCESS_FLOOD:
            self.factory.stats.count("excess_floods")
            self._quitReason = "excess flood"
            self.error(f"excess flood: {_EXCESS_FLOOD} lines dropped in a row; bye")
            self._close(hostile=True)
        elif not quietly:
            self.error(f"slow down: that line was dropped; {when}")

    def _chooseName(self, name: str) -> None:
        hub = self.factory.hub
        retry = "try another"
        costs = True
        try:
            hub.checkName(name)
            if hub.find(name) is not None:
                raise ChatError(f"the name {name} is taken")
            # A join (and the leave after it) is a line to the room: a
            # client joining and leaving in a loop flooded it with notices.
            shared = self.factory.hostBucket(self._host)
            if shared is not None and not shared.take():
                self.factory.stats.count("refused_joins")
                # A try only for a client that did not wait as it was told:
                # others of its address (a class behind one NAT) used the
                # budget, not it.
                now = self.factory.reactor.seconds()
                costs = now < self._joinAgainAt
                said = f"{max(shared.delay(), 0.1):.1f}"
                # As said (rounded), less a margin for the clock's arithmetic.
                self._joinAgainAt = now + float(said) - 0.001
                retry = f"send your name again in {said} s"
                raise ChatError(f"your address sends more than {shared.rate:g} lines and joins a second in all")
        except ChatError as e:
            if not costs:
                self.error(f"{e.message}; {retry}")
                return
            self._tries -= 1
            if self._tries <= 0:
                self.error(f"{e.message}; too many tries, bye")
                self._close(hostile=True)
            else:
                self.error(f"{e.message}; {retry} ({self._tries} left)")
            return
        self.info(f"*** hello {name}; /help lists the commands")
        hub.register(self, name)
        idle = self.factory.settings.idleTimeout
        if self._idle is not None:
            self._idle.cancel()
        self._idle = IdleTimeout(self.factory.reactor, idle, self._timedOut) if idle > 0 else None

    def _tooLong(self, how: str = "") -> None:
        """
        Refuse a line over the length limit.  Each answer is a line from
        the flood budget: a stream of long lines got one each, for ever,
        and never counted towards an excess flood.
        """
        if self._closed:
            return  # the rest of a read after an excess flood
        self.factory.stats.count("long_lines")
        refusal = _Refusal(f"line too long (over {self.factory.settings.maxLine} bytes{how}); it was dropped")
        if self._queue:
            self._enqueue(refusal, None)  # told in its turn, after the answers before it
        elif self._withinFloodLimits():
            self._dropped = 0  # not dropped by flood control
            self.error(refusal)

    def _chargeQuietly(self) -> None:
        """
        Take a line from the flood budgets for input that is not answered
        (blank lines past the first few, each C{maxLine} bytes of a line
        refused as too long), or drop it quietly; while lines wait their
        turn, it waits its own after them.
        """
        if self._queue:
            self._enqueue("", None, quietly=True)
        elif self._withinFloodLimits(quietly=True):
            self._dropped = 0

    def _timedOut(self) -> None:
        self._idle = None
        if self.name is None:
            self.error("no name given in time; bye")
        else:
            self.error("idle for too long; bye")
        self.factory.stats.count("idle_timeouts")
        self._quitReason = "idle"
        self._close()

    # Commands

    def do_help(self, argument: str) -> None:
        for line in _HELP:
            self.info(line)

    def do_nick(self, argument: str) -> None:
        if not argument:
            raise ChatError("usage: /nick NAME")
        self.factory.hub.rename(self, argument)

    def do_join(self, argument: str) -> None:
        if not argument:
            raise ChatError("usage: /join ROOM")
        self.factory.hub.join(self, argument)

    def do_part(self, argument: str) -> None:
        self.factory.hub.part(self)

    def do_rooms(self, argument: str) -> None:
        # Names, not rooms: a room deleted meanwhile is freed, history and
        # all, while a client that does not read holds its answer.
        self._answer(_roomLines(self.factory.hub.rooms, [room.name for room in self.factory.hub.roomList()]))

    def do_who(self, argument: str) -> None:
        self._answer(_whoLines(self.room.name, memberNames(self.room.members.values())))

    def do_msg(self, argument: str) -> None:
        target, _, text = argument.partition(" ")
        text = text.strip()
        if not target or not text:
            raise ChatError("usage: /msg NAME TEXT")
        recipient = self.factory.hub.tell(self, target, text)
        self.info(f"[private to {recipient.name}] {text}")  # type: ignore[attr-defined]

    def do_me(self, argument: str) -> None:
        if not argument:
            raise ChatError("usage: /me ACTION")
        self.factory.hub.act(self, argument)

    def do_topic(self, argument: str) -> None:
        if argument == "-delete":
            self.factory.hub.setTopic(self, "")
        elif argument:
            if len(argument) > MAX_TOPIC:
                raise ChatError(f"a topic is at most {MAX_TOPIC} characters")
            self.factory.hub.setTopic(self, argument)
        elif self.room.topic:
            self.info(f"*** topic of {self.room.name}: {self.room.topic}")
        else:
            self.info(f"*** {self.room.name} has no topic")

    def do_quit(self, argument: str) -> None:
        self._quitReason = "quit"
        self._quitWords = argument
        self.info("*** bye")
        self._close()

    #: Commands by name (after the C{/}).
    commands: Dict[str, Callable[["ChatProtocol", str], None]] = {
        "help": do_help,
        "nick": do_nick,
        "join": do_join,
        "part": do_part,
        "rooms": do_rooms,
        "who": do_who,
        "msg": do_msg,
        "me": do_me,
        "topic": do_topic,
        "quit": do_quit,
    }

    # Output

    def deliver(self, line: Line) -> None:
        """
        Send C{line} to this client (L{IMember}).
        """
        self._write(line.encoded)

    def replay(self, lines: Sequence[Line]) -> None:
        """
        Send C{lines}, a room's history, as the client takes them
        (L{IMember}): a few at a time while its transport is not full, what
        is said meanwhile after them.  Only what is said meanwhile counts
        against C{maxOutput}: the history is as long as the room's, however
        slow the client.  What is left of an earlier replay (the client has
        moved to another room) is dropped.
        """
        if self._closed:
            return
        if self._replay is not None and not self._answering:
            self._endReplay()
        if lines:
            self._sendLazily(map(attrgetter("encoded"), lines))

    def _answer(self, lines: Iterable[bytes]) -> None:
        """
        Answer a command with C{lines} (encoded, with CRLF), made and sent
        as the client takes them, as a room's history is (L{replay}): an
        answer that grows with the server (C{/rooms}, C{/who}) cannot pile
        up for a client that does not read.  The client's next lines wait
        until it is all sent (IRC servers send their C{LIST} so).
        """
        if self._closed:
            return
        lines = iter(lines)
        if self._replay is None and not self._paused:
            # Its first L{_HOLD_LIMIT} bytes (most answers whole) go as any
            # other output.
            size = 0
            while size < _HOLD_LIMIT:
                encoded = next(lines, None)
                if encoded is None:
                    return
                self._write(encoded)
                size += len(encoded)
        self._answering = True
        self._sendLazily(lines)

    def _sendLazily(self, lines: Iterable[bytes]) -> None:
        """
        Send C{lines} as the client takes them, after what is being sent so.
        """
        replay = self._replay
        self._replay = iter(lines) if replay is None else chain(replay, lines)
        if self._replayCall is None:
            self._replayCall = self.factory.reactor.callLater(0, self._replayTurn)

    def _endReplay(self) -> None:
        """
        Drop what is left of the lines being sent as the client takes them;
        what was written after them waits to be sent next.
        """
        self._replay = None
        self._answering = False
        after, self._after = self._after, None
        if after:
            if self._out is None:
                self._out = after
                self.factory.batch.add(self)
            else:
                self._out.extend(after)

    def info(self, text: str) -> None:
        """
        Send this client one line of C{text} (a notice, an answer).
        """
        self._write(text.encode("utf-8") + b"\r\n")

    def error(self, message: str) -> None:
        """
        Send this client an error line: C{! message}.
        """
        self._write(b"! " + message.encode("utf-8") + b"\r\n")

    def _write(self, data: bytes) -> None:
        if self._closed:
            return
        if self._replay is None:
            out = self._out
            if out is None:
                # (Nothing waits: neither here, nor after a replay.)
                self._out = [data]
                self._outBytes = len(data)
                self.factory.batch.add(self)
                return
            out.append(data)
        elif self._after is None:  # after the history being replayed
            self._after = [data]
        else:
            self._after.append(data)
        self._outBytes += len(data)
        if self._paused:
            # The transport is full: this is what the client is not taking.
            maxOutput = self.factory.settings.maxOutput
            if self._outBytes > maxOutput:
                if self._outBytes > _HARD_OUTPUT * maxOutput:
                    self._slowReader()
                elif self._slowCheck is None:
                    self._slowFrom = unsentBytes(self.transport)
                    self._slowCheck = self.factory.reactor.callLater(_SLOW_GRACE, self._checkSlow)
        elif self._outBytes > _HOLD_LIMIT:
            # A big burst within one reactor pass: send it now rather than
            # hold it all until the end of the pass.
            self.flushOutput()

    def flushOutput(self) -> None:
        """
        Give what was written for this client to the transport, unless the
        transport's buffer is full: then it waits here, and a client with
        more than C{maxOutput} bytes waiting is disconnected.  Then, while
        the transport takes it, the next piece of a history being replayed.
        """
        if self._paused or self._closed:
            return
        out = self._out
        if out:
            self._out = None
            data = b"".join(out)
            self._outBytes -= len(data)
            self._send(data)
        if self._replay is not None and not self._paused and not self._closed:
            self._replayMore()

    def _replayMore(self) -> None:
        """
        Send the next lines of the history being replayed (or of an
        answer), up to L{_HOLD_LIMIT} bytes; after its last line, what was
        written meanwhile.  Called again next pass until the history is
        sent, or on C{resumeProducing} when the transport filled.
        """
        lines = self._replay
        assert lines is not None
        chunk = []
        size = 0
        while size < _HOLD_LIMIT:
            encoded = next(lines, None)
            if encoded is None:
                self._replay = None
                self._answering = False  # the client's lines wait for the next turn
                after, self._after = self._after, None
                if after:
                    chunk.extend(after)
                    self._outBytes -= sum(map(len, after))
                break
            chunk.append(encoded)
            size += len(encoded)
        if (self._replay is not None or self._held) and self._replayCall is None:
            self._replayCall = self.factory.reactor.callLater(0, self._replayTurn)
        if chunk:
            self._send(b"".join(chunk))
        if self._replay is None and self._closeAfterReplay:
            self._close()

    def _replayTurn(self) -> None:
        self._replayCall = None
        self.flushOutput()
        self._release()

    def _send(self, data: bytes) -> None:
        raw = self._raw
        if raw is None:
            self.transport.write(data)
        else:
            sendOrQueue(raw, self._rawStats, data)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancelSlowCheck()  # it reads
        if self._out or self._replay is not None:
            self.flushOutput()
        self._release()

    def _release(self) -> None:
        """
        Handle the client's lines that wait (see L{dataReceived}), and read
        on, once what they waited for is sent.
        """
        self._serveQueueIfIdle()
        if self._held and not self._paused and not self._closed and not self._answering:
            self._held = False
            self.transport.resumeProducing()
            self.dataReceived(b"")
            if self._inputEnded and not self._held:
                self.readConnectionLost()

    def _checkSlow(self) -> None:
        self._slowCheck = None
        if self._paused and not self._closed and self._outBytes > self.factory.settings.maxOutput:
            # Taking any of what the transport and the system hold counts
            # as reading (as nginx's send_timeout): the transport's buffer
            # may take longer than the grace to empty for a client that
            # reads slowly, with the system holding 128 KiB for it.
            unsent = unsentBytes(self.transport)
            if unsent < self._slowFrom:
                self._slowFrom = unsent
                self._slowCheck = self.factory.reactor.callLater(_SLOW_GRACE, self._checkSlow)
                return
            self._slowReader()

    def _cancelSlowCheck(self) -> None:
        if self._slowCheck is not None:
            if self._slowCheck.active():
                self._slowCheck.cancel()
            self._slowCheck = None

    def stopProducing(self) -> None:
        self._closed = True

    def _slowReader(self) -> None:
        self.log.info(
            "chat: disconnecting {who} ({host}): it does not read what it is sent "
            "({waiting} bytes waiting)",
            who=self.name or "a client without a name",
            host=self._host,
            waiting=self._outBytes,
        )
        self.factory.stats.count("slow_readers")
        self._quitReason = "not reading"
        self._closed = True
        self._out = None
        self._replay = self._after = None
        # Not from inside a broadcast: the room is being iterated.
        self.factory.reactor.callLater(0, self.transport.abortConnection)

    _closing = False
    #: Whether the service is stopping (see L{closeGracefully}).
    _stopping = False
    #: Whether the client's input ended while the room's history was
    #: being replayed to it: the close comes after the replay.
    _closeAfterReplay = False
    _abortCall: Any = None

    def _close(self, hostile: bool = False) -> None:
        """
        Send what is waiting, then close; abort if the client does not take
        it within L{_CLOSE_GRACE} seconds.

        @param hostile: whether the client proved hostile (a flood): then
            nothing more is read from it, where the listener lets it (see
            L{netsuite.listen._TrackedProtocol.closeWithoutReading}), and
            the connection ends L{_HOSTILE_GRACE} seconds after.  Read on
            until the client closes, as other closes are, a flood was read
            and dropped at full speed for the whole grace (10.5 GB in 10 s,
            7.1 s of CPU), again each time the client reconnected.
        """
        if self._closing:
            return
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._paused = False
        if self._replay is not None:
            self._endReplay()  # the rest of the history would only delay the last lines
        self.flushOutput()
        self._closed = True
        if self._counted:
            # A paused producer would be resumed instead of closing.
            self.transport.unregisterProducer()
            # The room is told now, and the name is free now, as an IRC
            # server's QUIT: the close itself may wait on the client (over
            # TLS, for its close_notify, up to the grace below).
            self.factory.hub.leave(
                self, self._quitReason or "connection closed", self._quitWords, quietly=self._stopping
            )
        closeWithoutReading = getattr(self.transport, "closeWithoutReading", None) if hostile else None
        if closeWithoutReading is not None:
            closeWithoutReading(_HOSTILE_GRACE)
        else:
            self.transport.loseConnection()
        if self._abortCall is None:
            self._abortCall = self.factory.reactor.callLater(_CLOSE_GRACE, self.transport.abortConnection)


class ChatFactory(Factory):
    """
    Makes L{ChatProtocol}s for one chat service (any number of listeners):
    one L{ChatHub}, one set of limits.

    @ivar hub: the rooms and members.
    @ivar settings: the L{ChatSettings}.
    @ivar stats: the service's counters.
    @ivar batch: sends every client's collected output once a reactor pass.
    """

    protocol = ChatProtocol
    noisy = False
    #: Bytes a client may still send once its connection is closing (after
    #: C{/quit}, a timeout, a refusal) before nothing more is read (see
    #: L{netsuite.listen.StreamListener}): a chat has no upload whose end
    #: to wait for, and a flood after C{/quit} was read for the whole
    #: close's grace (3 GB, 3 CPU-seconds, again at each connection).
    lingerBytes = 64 * 1024

    def __init__(
        self,
        reactor: Any = None,
        *,
        settings: Optional[ChatSettings] = None,
        stats: Optional[ServiceStats] = None,
        hub: Optional[ChatHub] = None,
    ) -> None:
        self.reactor = _reactor(reactor)
        self.settings = settings or ChatSettings()
        self.stats = stats if stats is not None else ServiceStats("chat")
        self.hub = hub if hub is not None else ChatHub(
            historySize=self.settings.historySize,
            historyBytes=self.settings.historyBytes,
            privateRate=self.settings.privateRate,
            roomRate=self.settings.roomRate,
            noticeRate=self.settings.noticeRate,
            maxRooms=self.settings.maxRooms,
            stats=self.stats,
            reactor=self.reactor,
        )
        self.batch = FlushBatch(self.reactor)
        self._budget = ConnectionBudget()
        self._hostBuckets: Dict[str, TokenBucket] = {}
        #: Addresses whose last client went, their budget kept, in the
        #: order they are looked at (see L{_sweep}).
        self._quiet: Dict[str, None] = {}
        #: Clients whose lines wait for their address's budget, in turn,
        #: and the call that gives the next its turn, by address.
        self._addressLines: Dict[str, Deque[ChatProtocol]] = {}
        self._addressCalls: Dict[str, Any] = {}

    def startFactory(self) -> None:
        self.hub.startFolding()

    def stopFactory(self) -> None:
        # Nothing may stay scheduled once the last listener has stopped.
        self.hub.stopFolding()
        for call in self._addressCalls.values():
            cancelIfActive(call)
        self._addressCalls.clear()
        self._addressLines.clear()

    def waitForAddress(self, host: str, protocol: "ChatProtocol") -> None:
        """
        C{protocol}'s lines wait for the flood budget of C{host}, its
        address: its clients take turns, a client at a time as the budget
        refills, with one call for them all.  Each scheduled its own, so
        all woke at each refill and one had the line: 1,000 clients of 20
        addresses pasting at once cost 44% of a CPU.
        """
        key = hostKey(host)
        self._addressLines.setdefault(key, deque()).append(protocol)
        if key not in self._addressCalls:
            self._nextAddressTurn(key)

    def _nextAddressTurn(self, key: str) -> None:
        bucket = self._hostBuckets.get(key)
        delay = bucket.delay() if bucket is not None else 0.0
        self._addressCalls[key] = self.reactor.callLater(max(delay, 0.01), self._addressTurn, key)

    def _addressTurn(self, key: str) -> None:
        del self._addressCalls[key]
        waiting = self._addressLines.get(key)
        while waiting:
            # (One with more lines waiting goes last again.)
            waiting.popleft().addressTurn()
            bucket = self._hostBuckets.get(key)
            if bucket is None or bucket.delay() > 0:
                break
        if not waiting:
            self._addressLines.pop(key, None)
        elif key not in self._addressCalls:
            self._nextAddressTurn(key)

    def hostBucket(self, host: str) -> Optional[TokenBucket]:
        """
        The lines all clients from C{host} may still send together (a
        join counts as a line), or L{None} for no limit.
        """
        rate = self.settings.hostRate
        if rate <= 0 or self.settings.rate <= 0:
            return None  # (--chat-rate 0 turns all flood control off)
        key = hostKey(host)
        bucket = self._hostBuckets.get(key)
        if bucket is None:
            burst = max(2 * rate, self.settings.burst)
            bucket = self._hostBuckets[key] = TokenBucket(rate, burst, self.reactor)
        return bucket

    @property
    def clients(self) -> int:
        """
        Clients counted by L{admit} and not yet released.
        """
        return self._budget.total

    def admit(self, host: str) -> Optional[str]:
        """
        Count a new client from C{host}, or say why it is refused.
        """
        settings = self.settings
        host = hostKey(host)
        budget = self._budget
        # Read at each client, as the other settings are.
        budget.maxTotal = settings.maxClients or None
        budget.maxPerHost = settings.maxClientsPerHost or None
        if budget.full(None):
            return f"the chat is full ({settings.maxClients} clients); try again later"
        if budget.full(host):
            return (
                f"too many connections from your address (at most "
                f"{settings.maxClientsPerHost}); try again later"
            )
        budget.opened(host)
        return None

    def release(self, host: str) -> None:
        """
        A client counted by L{admit} has gone.  Its address's line budget
        (L{hostBucket}) is forgotten once the address has no client and the
        budget has refilled.
        """
        host = hostKey(host)
        budget = self._budget
        budget.closed(host)
        if not budget.fromHost(host) and host in self._hostBuckets:
            # Kept until full: forgotten with the last client, a client
            # joining and leaving in a loop had a fresh budget each time.
            self._quiet.setdefault(host)
        self._sweep()

    def _sweep(self) -> None:
        """
        Look at the two addresses without a client that waited longest:
        forget a budget that has refilled, and put one still refilling
        last.  Each release adds at most one address, so those whose
        budgets refilled go at least as fast as addresses come, whatever
        an address joining and leaving in a loop does.
        """
        quiet, budget = self._quiet, self._budget
        for _ in range(2):
            if not quiet:
                return
            host = next(iter(quiet))
            del quiet[host]
            bucket = self._hostBuckets.get(host)
            if bucket is None or budget.fromHost(host):
                continue  # a client again: looked at once its last goes
            if bucket.isFull():
                del self._hostBuckets[host]
            else:
                quiet[host] = None


def _roomLines(rooms: Dict[str, Room], listed: List[str]) -> Iterator[bytes]:
    """
    The answer to C{/rooms}: how many rooms there are, then the rooms named
    C{listed}, each as it is when its line is made (one gone from C{rooms}
    by then is left out, though the first line, made at once, counted it).
    """
    yield f"*** {len(listed)} room{'s' if len(listed) != 1 else ''}:\r\n".encode("utf-8")
    for name in listed:
        room = rooms.get(name.casefold())
        if room is None:
            continue
        count = len(room.members)
        topic = f"; topic: {room.topic}" if room.topic else ""
        yield f"***   {room.name} ({count} member{'s' if count != 1 else ''}){topic}\r\n".encode("utf-8")


def _whoLines(room: str, names: List[str]) -> Iterator[bytes]:
    """
    The answer to C{/who} in C{room}: one line of C{names}, or, past
    L{_WHO_NAMES} of them, how many there are, then lines of that many.
    """
    if len(names) <= _WHO_NAMES:
        yield f"*** in {room}: {', '.join(names)}\r\n".encode("utf-8")
        return
    yield f"*** {len(names)} in {room}:\r\n".encode("utf-8")
    for start in range(0, len(names), _WHO_NAMES):
        yield f"***   {', '.join(names[start:start + _WHO_NAMES])}\r\n".encode("utf-8")


def _hostOf(address: IAddress) -> str:
    return str(getattr(address, "host", "") or "local")


def makeChatService(
    endpoint: str = DEFAULT_CHAT,
    reactor: Any = None,
    *,
    factory: Optional[ChatFactory] = None,
    settings: Optional[ChatSettings] = None,
    stats: Optional[ServiceStats] = None,
    **options: Any,
) -> StreamListener:
    """
    A service running the chat on C{endpoint}.

    @param factory: a L{ChatFactory} to share with other listeners (plain
        and TLS on one set of rooms); by default a new one.
    @param settings: limits for a new factory.
    @param stats: the service's counters (by default the factory's).
    @param options: L{ChatSettings} fields for a new factory (e.g.
        C{historySize=50, rate=2}), and keyword arguments of
        L{StreamListener} (C{tls}, C{grace}, C{maxConnections},
        C{maxPerHost}, C{handshakeTimeout}, C{lingerTime}, C{lingerTimeout}).
    """
    reactor = _reactor(reactor)
    chosen = {name: options.pop(name) for name in list(options) if name in _SETTING_NAMES}
    if factory is None:
        if chosen:
            settings = replace(settings or ChatSettings(), **chosen)
        factory = ChatFactory(reactor, settings=settings, stats=stats)
    elif chosen or settings is not None:
        raise TypeError("give either a factory or settings for a new one, not both")
    return StreamListener(
        "chat", endpoint, factory, reactor=reactor, stats=stats or factory.stats, **options
    )


_SETTING_NAMES = frozenset(field.name for field in fields(ChatSettings))
