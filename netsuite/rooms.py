"""
Chat rooms, independent of any wire protocol.

A L{ChatHub} holds named members and rooms.  A front end (the line protocol
in L{netsuite.chat}, or later a WebSocket one) gives each connection an
object providing L{IMember} and calls the hub's methods on its behalf; the
hub delivers L{Line}s back through L{IMember.deliver}.

Every line is made once and handed to every recipient as the same object;
L{Line.encoded} caches its bytes, so a message to a room of a thousand
members is encoded once, not a thousand times.

Errors a member can cause (a taken name, an unknown room) raise
L{ChatError}, whose message is one sentence for the member.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Callable, Deque, Dict, Iterable, List, Optional, Sequence

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Attribute, Interface

from netsuite.limits import TokenBucket
from netsuite.stats import ServiceStats

__all__ = [
    "ChatError",
    "ChatHub",
    "IMember",
    "Line",
    "Room",
    "LOBBY",
    "MAX_HISTORY",
    "HISTORY_BYTES",
    "NOTICE_RATE",
    "PRIVATE_RATE",
    "NAME_PATTERN",
    "cleanText",
]

#: The room every member starts in, and goes back to with C{part}.
LOBBY = "lobby"

#: The most lines a room's history may keep (a larger C{deque} length
#: overflows, and replaying more to each joining member would make no sense).
MAX_HISTORY = 10000

#: The bytes a room's history keeps by default (its lines in UTF-8 with
#: CRLF, as replayed): 20 lines of three times the default line limit fit,
#: and memory is bounded whatever the number of lines.
HISTORY_BYTES = 256 * 1024

#: Bytes a second of private messages one member may receive by default,
#: from everyone together (in bursts of L{_PRIVATE_BURST} seconds' worth):
#: many senders cannot bury a member under more than it reads.
PRIVATE_RATE = 16 * 1024

#: Seconds of C{privateRate} a member may receive at once.
_PRIVATE_BURST = 4.0

#: Bytes a second of lines one room may be sent by default, from all its
#: members together (in bursts of L{_ROOM_BURST} seconds' worth): members
#: from many addresses cannot make a room send each member more than it
#: reads, nor the server hold that much for each.
ROOM_RATE = 64 * 1024

#: Seconds of C{roomRate} a room may be sent at once.
_ROOM_BURST = 4.0

#: Join, leave and new-name notices a second one room is sent one by one by
#: default, in bursts of L{_NOTICE_BURST}: past that, they are counted, and
#: told in one line a second (C{*** lobby, last second: 41 joined, 39
#: left}), so that clients of many addresses joining and leaving in a loop,
#: each within its address's limit, cannot bury a room under notices.
NOTICE_RATE = 2.0

#: Notices one room may be sent one by one at once, above C{noticeRate}: 20
#: joins at once, then 2 a second, are each named.
_NOTICE_BURST = 20.0

#: Seconds notices past the rate are counted before one line tells them.
_FOLD_PERIOD = 1.0

#: How the line telling folded notices names each kind, for one and for
#: more.
_FOLDED_KINDS = (
    ("joined", "joined", "joined"),
    ("left", "left", "left"),
    ("renamed", "changed name", "changed names"),
)

#: Characters of a member's C{/quit} message its room is shown (as IRC's
#: QUITLEN).
MAX_QUIT = 300

#: Member and room names: 1-32 ASCII letters, digits, C{_}, C{-}, C{.}.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,32}")

#: ANSI/VT escape sequences (CSI, OSC, and two-character escapes), then any
#: remaining C0/C1 control character or DEL.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC ... ST
    r"|\x1b[\x20-\x7e]?"  # other escapes
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # 8-bit CSI
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f]"
    # Bidirectional controls make a line display out of order; the line
    # and paragraph separators start a new line for many clients.
    r"|[\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
)


def cleanText(text: str) -> str:
    """
    C{text} without terminal escape sequences, control characters or
    bidirectional controls (a tab becomes a space), and without surrounding
    whitespace: safe to print on anyone's terminal.
    """
    return _ESCAPES.sub("", text).replace("\t", " ").strip()


class ChatError(Exception):
    """
    Something a member asked for cannot be done; the message says why, in
    one sentence.
    """

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.message = message


class Line:
    """
    One line of chat output, made once for all its recipients.

    @ivar text: the line, without a line ending.
    @ivar kind: what it is: C{"message"}, C{"action"}, C{"notice"},
        C{"private"}, C{"history"}, C{"error"} or C{"info"}.
    @ivar room: the room it belongs to, if any.
    @ivar sender: the member name it comes from, if any.
    @ivar when: POSIX time it was made.
    """

    __slots__ = ("text", "kind", "room", "sender", "when", "_encoded")

    def __init__(
        self,
        text: str,
        kind: str,
        room: Optional[str] = None,
        sender: Optional[str] = None,
        when: float = 0.0,
    ) -> None:
        self.text = text
        self.kind = kind
        self.room = room
        self.sender = sender
        self.when = when
        self._encoded: Optional[bytes] = None

    @property
    def encoded(self) -> bytes:
        """
        The line in UTF-8 with CRLF, made the first time it is asked for.
        """
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = self.text.encode("utf-8") + b"\r\n"
        return encoded

    def __repr__(self) -> str:
        return f"<Line {self.kind} {self.text!r}>"


class _KeptLine(Line):
    """
    A line as a room's history keeps it: its bytes only (as it is replayed,
    C{[history] } and all); its text is made again when asked for.
    """

    __slots__ = ()

    def __init__(self, encoded: bytes, room: Optional[str], sender: Optional[str], when: float) -> None:
        self.kind = "history"
        self.room = room
        self.sender = sender
        self.when = when
        self._encoded = encoded

    @property  # type: ignore[override]
    def text(self) -> str:  # type: ignore[override]
        return self.encoded[:-2].decode("utf-8")


class IMember(Interface):
    """
    One participant of a L{ChatHub}, as a front end presents it.
    """

    name = Attribute("The member's name (set by the hub), or None before registering.")
    room = Attribute("The L{Room} the member is in (set by the hub), or None.")

    def deliver(line: Line) -> None:
        """
        Send C{line} to this member.  Must not raise and must not block; a
        member that cannot keep up is the front end's to drop.
        """

    def replay(lines: Sequence[Line]) -> None:
        """
        Send C{lines}, the history of the room the member has just entered
        (maybe none), before anything delivered after this call.  The front
        end may send them as the member takes them, and drop what is left of
        an earlier replay: the member has left that room.
        """


class Room:
    """
    A named room: its members, topic and recent history.

    @ivar name: the name as it was first written.
    @ivar members: members by case-folded name, in joining order.
    @ivar topic: the topic, or C{""}.
    @ivar history: the last lines said in it, as they are replayed
        (C{[history] alice: text}): at most C{historySize} lines of at most
        C{historyBytes} bytes in all.
    @ivar historyBytes: the bytes the history may hold.
    @ivar budget: the bytes of lines it may still be sent now (L{None}: no
        limit).
    @ivar notices: the join, leave and new-name notices it may still be
        sent one by one now (L{None}: no limit).
    @ivar folded: the notices counted instead of sent, by kind, until the
        line telling them (L{None}: none are being counted).
    """

    budget: Optional[TokenBucket] = None
    notices: Optional[TokenBucket] = None
    folded: Optional[Dict[str, int]] = None
    _foldCall: Optional[IDelayedCall] = None

    def __init__(self, name: str, historySize: int, historyBytes: int = HISTORY_BYTES) -> None:
        self.name = name
        self.members: Dict[str, object] = {}
        self.topic = ""
        self.history: Deque[Line] = deque(maxlen=max(historySize, 0))
        self.historyBytes = historyBytes
        self._kept = 0  # bytes in history

    def remember(self, line: Line) -> None:
        """
        Keep C{line} in the history, as it will be replayed; the oldest
        lines make room for it.
        """
        history = self.history
        if not history.maxlen:
            return
        kept = _KeptLine(b"[history] " + line.encoded, line.room, line.sender, line.when)
        size = len(kept.encoded)
        if size > self.historyBytes:
            return  # longer than the whole history may be
        if len(history) == history.maxlen:
            self._kept -= len(history.popleft().encoded)
        while history and self._kept + size > self.historyBytes:
            self._kept -= len(history.popleft().encoded)
        history.append(kept)
        self._kept += size

    def broadcast(self, line: Line, exclude: object = None, remember: bool = True) -> int:
        """
        Deliver C{line} to every member but C{exclude}; keep it in the
        history when C{remember}.  Returns how many members it went to.
        """
        if remember:
            self.remember(line)
        sent = 0
        for member in list(self.members.values()):
            if member is not exclude:
                member.deliver(line)  # type: ignore[attr-defined]
                sent += 1
        return sent


class ChatHub:
    """
    Members and rooms of one chat service, shared by all its listeners (and
    by any other front end).

    @ivar rooms: rooms by case-folded name; C{lobby} always exists, other
        rooms are removed when their last member leaves.
    @ivar members: registered members by case-folded name.
    """

    def __init__(
        self,
        *,
        historySize: int = 20,
        historyBytes: int = HISTORY_BYTES,
        privateRate: float = PRIVATE_RATE,
        roomRate: float = ROOM_RATE,
        noticeRate: float = NOTICE_RATE,
        maxRooms: int = 1000,
        stats: Optional[ServiceStats] = None,
        clock: Optional[Callable[[], float]] = None,
        reactor: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param historySize: lines replayed to a member joining a room (0:
            none; at most L{MAX_HISTORY}).
        @param historyBytes: the most bytes a room's history keeps (its
            lines as replayed, in UTF-8 with CRLF).
        @param privateRate: bytes a second of private messages one member
            may receive, from everyone together (0: no limit).
        @param roomRate: bytes a second of lines one room may be sent,
            from all its members together (0: no limit): past it, what
            they say is refused; notices go out, and come out of it.
        @param noticeRate: join, leave and new-name notices a second one
            room is sent one by one, in bursts of L{_NOTICE_BURST} (0: no
            limit): past it, they are counted and told in one line a
            second.
        @param maxRooms: rooms that may exist at once.
        @param stats: counters (lines in and out, users, rooms).
        @param clock: the time for lines' C{when} (by default
            C{reactor}'s, or the system's).
        @param reactor: what schedules the line telling folded notices
            (by default the global reactor).
        """
        if historySize > MAX_HISTORY:
            raise ValueError(f"a room's history holds at most {MAX_HISTORY} lines")
        self.historySize = historySize
        self.historyBytes = historyBytes
        self.privateRate = privateRate
        self.roomRate = roomRate
        self.noticeRate = noticeRate
        self.maxRooms = maxRooms
        self.stats = stats if stats is not None else ServiceStats("chat")
        if clock is None:
            clock = reactor.seconds if reactor is not None else time.time
        self.clock = clock
        self._reactor = reactor
        self._folding = True
        self._frontEnds = 0  # started (startFolding) and not stopped
        self.members: Dict[str, object] = {}
        self.rooms: Dict[str, Room] = {}
        self._inboxes: Dict[object, TokenBucket] = {}
        self._room(LOBBY)
        self._gauges()

    # Reading

    def roomList(self) -> List[Room]:
        """
        Every room, lobby first, then by name.
        """
        lobby = self.rooms[LOBBY]
        others = sorted(
            (room for key, room in self.rooms.items() if key != LOBBY),
            key=lambda room: room.name.casefold(),
        )
        return [lobby, *others]

    def find(self, name: str) -> Optional[object]:
        """
        The member called C{name} (case-insensitively), or L{None}.
        """
        return self.members.get(name.casefold())

    def snapshot(self) -> Dict[str, object]:
        """
        Counts for a status page: users, rooms.
        """
        return {"users": len(self.members), "rooms": len(self.rooms)}

    # Membership

    def checkName(self, name: str) -> None:
        """
        @raise ChatError: C{name} is not a valid member name.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise ChatError(
                "names are 1-32 characters: letters, digits, '_', '-' and '.'"
            )

    def register(self, member: object, name: str) -> None:
        """
        Give C{member} its name and put it in the lobby (with the lobby's
        history).

        @raise ChatError: the name is invalid or taken.
        """
        self.checkName(name)
        key = name.casefold()
        if key in self.members:
            raise ChatError(f"the name {name} is taken")
        member.name = name  # type: ignore[attr-defined]
        member.room = None  # type: ignore[attr-defined]
        self.members[key] = member
        self._gauges()
        self._enter(member, self.rooms[LOBBY])

    def rename(self, member: object, new: str) -> None:
        """
        Change C{member}'s name, telling its room.

        @raise ChatError: the new name is invalid or taken by someone else.
        """
        self.checkName(new)
        old: str = member.name  # type: ignore[attr-defined]
        key = new.casefold()
        holder = self.members.get(key)
        if holder is not None and holder is not member:
            raise ChatError(f"the name {new} is taken")
        if new == old:
            raise ChatError(f"you are already called {new}")
        del self.members[old.casefold()]
        self.members[key] = member
        member.name = new  # type: ignore[attr-defined]
        room: Optional[Room] = member.room  # type: ignore[attr-defined]
        if room is not None:
            del room.members[old.casefold()]
            room.members[key] = member
            self._notice(room, f"{old} is now known as {new}", "renamed")

    def leave(self, member: object, reason: str = "", words: str = "", quietly: bool = False) -> None:
        """
        Remove C{member} from the hub (it disconnected or quit), telling its
        room unless C{quietly} (the server is stopping: each client is told
        once, of its own end).  Harmless for a member that never registered
        or already left.

        @param reason: why it left, shown in the notice (C{quit}).
        @param words: what it said as it left (its C{/quit} message): at
            most L{MAX_QUIT} characters of it are shown, if the room's
            budget can take them (the notice goes out without them else).
        @param quietly: whether its room is not told (the service is
            stopping, and everyone is leaving: each of N members told of
            the others is N squared lines).
        """
        name: Optional[str] = getattr(member, "name", None)
        if name is None or self.members.get(name.casefold()) is not member:
            return
        del self.members[name.casefold()]
        self._inboxes.pop(member, None)
        room: Optional[Room] = member.room  # type: ignore[attr-defined]
        if room is not None and quietly:
            self._exit(member, room, None)
        elif room is not None:
            text = f"*** {name} left" + (f" ({reason})" if reason else "")
            if words:
                said = f"*** {name} left ({reason}: {words[:MAX_QUIT]})"
                # (The notice takes it from the budget.)
                if room.budget is None or not room.budget.delay(len(self._line(room, said).encoded)):
                    text = said
            self._exit(member, room, text)
        self._gauges()

    # Rooms

    def join(self, member: object, roomName: str) -> Room:
        """
        Move C{member} to the room C{roomName} (a leading C{#} is ignored),
        making it if it does not exist.

        @raise ChatError: the name is invalid, the member is already there,
            or there are too many rooms.
        """
        name = roomName[1:] if roomName.startswith("#") else roomName
        if not NAME_PATTERN.fullmatch(name):
            raise ChatError(
                "room names are 1-32 characters: letters, digits, '_', '-' and '.'"
            )
        current: Optional[Room] = member.room  # type: ignore[attr-defined]
        key = name.casefold()
        if current is not None and current.name.casefold() == key:
            raise ChatError(f"you are already in {current.name}")
        room = self.rooms.get(key)
        if room is None:
            # The member's own room goes away if it is alone there.
            freed = (
                current is not None
                and len(current.members) == 1
                and current.name.casefold() != LOBBY
            )
            if len(self.rooms) - freed >= self.maxRooms:
                if self.maxRooms <= 1:
                    raise ChatError("no room but the lobby may be made here")
                raise ChatError(f"there are already {self.maxRooms} rooms; join one of them")
            room = self._room(name)
        if current is not None:
            self._exit(member, current, f"*** {member.name} left {current.name}")  # type: ignore[attr-defined]
        self._enter(member, room)
        return room

    def part(self, member: object) -> Room:
        """
        Move C{member} back to the lobby.

        @raise ChatError: it is in the lobby already.
        """
        current: Optional[Room] = member.room  # type: ignore[attr-defined]
        if current is not None and current.name.casefold() == LOBBY:
            raise ChatError("you are in the lobby already; /quit to leave the chat")
        return self.join(member, LOBBY)

    def setTopic(self, member: object, topic: str) -> None:
        """
        Set the topic of C{member}'s room and tell the room.
        """
        room: Room = member.room  # type: ignore[attr-defined]
        topic = cleanText(topic)
        if not topic and not room.topic:
            raise ChatError(f"{room.name} has no topic")
        if topic:
            line = self._line(room, f"*** {member.name} set the topic of {room.name}: {topic}")  # type: ignore[attr-defined]
        else:
            line = self._line(room, f"*** {member.name} cleared the topic of {room.name}")  # type: ignore[attr-defined]
        self._sendToRoom(room, line)
        room.topic = topic
        self._announce(room, line)

    # Speaking

    def say(self, member: object, text: str) -> Line:
        """
        Send C{text} from C{member} to the others in its room, as
        C{name: text}.
        """
        return self._speak(member, "message", f"{member.name}: {text}")  # type: ignore[attr-defined]

    def act(self, member: object, text: str) -> Line:
        """
        Send an action (C{/me}) to C{member}'s whole room, as C{* name text}.
        """
        return self._speak(member, "action", f"* {member.name} {text}", toSender=True)  # type: ignore[attr-defined]

    def tell(self, member: object, target: str, text: str) -> object:
        """
        Send C{text} privately from C{member} to the member called
        C{target}; returns the recipient.

        @raise ChatError: there is no such member, it is the sender, or it
            has been sent more private messages than C{privateRate} lately.
        """
        recipient = self.find(target)
        if recipient is None:
            raise ChatError(f"nobody is called {target}")
        if recipient is member:
            raise ChatError("that is you")
        sender: str = member.name  # type: ignore[attr-defined]
        line = Line(f"[private] {sender}: {text}", "private", None, sender, self.clock())
        if self.privateRate > 0:
            inbox = self._inboxes.get(recipient)
            if inbox is None:
                rate = self.privateRate
                inbox = self._inboxes[recipient] = TokenBucket(rate, rate * _PRIVATE_BURST, _Clock(self.clock))
            cost = min(len(line.encoded), inbox.burst)  # a line over the burst takes all of it
            if not inbox.take(cost):
                self.stats.count("private_refused")
                raise ChatError(
                    f"{recipient.name} is being sent too many private messages; "  # type: ignore[attr-defined]
                    f"try again in {max(inbox.delay(cost), 0.1):.1f} s"
                )
        recipient.deliver(line)  # type: ignore[attr-defined]
        self.stats.count("lines_out")
        return recipient

    # Internals

    def _speak(self, member: object, kind: str, text: str, toSender: bool = False) -> Line:
        room: Room = member.room  # type: ignore[attr-defined]
        line = Line(text, kind, room.name, member.name, self.clock())  # type: ignore[attr-defined]
        self._sendToRoom(room, line)
        sent = room.broadcast(line, exclude=None if toSender else member)
        self.stats.count("lines_out", sent)
        return line

    def _sendToRoom(self, room: Room, line: Line) -> None:
        """
        Take C{line}, said by a member, from C{room}'s budget.

        @raise ChatError: the room has been sent more than C{roomRate}
            lately; the line is not to be sent.
        """
        budget = room.budget
        if budget is None:
            return
        cost = min(len(line.encoded), budget.burst)  # a line over the burst takes all of it
        if not budget.take(cost):
            self.stats.count("room_refused")
            raise ChatError(
                f"{room.name} is being sent too much at once; that line was dropped; "
                f"try again in {max(budget.delay(cost), 0.1):.1f} s"
            )

    def _line(self, room: Room, text: str) -> Line:
        """
        A notice to C{room}: C{text}, which starts with C{***}.
        """
        return Line(text, "notice", room.name, None, self.clock())

    def _room(self, name: str) -> Room:
        room = self.rooms[name.casefold()] = Room(name, self.historySize, self.historyBytes)
        if self.roomRate > 0:
            rate = self.roomRate
            room.budget = TokenBucket(rate, rate * _ROOM_BURST, _Clock(self.clock))
        if self.noticeRate > 0:
            rate = self.noticeRate
            room.notices = TokenBucket(rate, max(rate, _NOTICE_BURST), _Clock(self.clock))
        self._gauges()
        return room

    def _enter(self, member: object, room: Room) -> None:
        name: str = member.name  # type: ignore[attr-defined]
        self._notice(room, f"*** {name} joined {room.name}", "joined", prefixed=True)
        room.members[name.casefold()] = member
        member.room = room  # type: ignore[attr-defined]
        count = len(room.members)
        others = count - 1
        info = f"*** you are in {room.name} with {others} other{'s' if others != 1 else ''}"
        member.deliver(Line(info, "info", room.name))  # type: ignore[attr-defined]
        if room.topic:
            member.deliver(Line(f"*** topic: {room.topic}", "info", room.name))  # type: ignore[attr-defined]
        member.replay(list(room.history))  # type: ignore[attr-defined]

    def _exit(self, member: object, room: Room, text: Optional[str]) -> None:
        """
        Take C{member} out of C{room}, telling the room C{text} (none if
        L{None}).
        """
        del room.members[member.name.casefold()]  # type: ignore[attr-defined]
        member.room = None  # type: ignore[attr-defined]
        if text is not None:
            self._notice(room, text, "left", prefixed=True)
        if not room.members and room.name.casefold() != LOBBY:
            del self.rooms[room.name.casefold()]
            if room._foldCall is not None:
                room._foldCall.cancel()  # nobody is left to tell
                room._foldCall = room.folded = None
            self._gauges()

    def _notice(self, room: Room, text: str, kind: str, prefixed: bool = False) -> None:
        """
        Tell C{room} C{text}, a notice of C{kind} (C{"joined"}, C{"left"} or
        C{"renamed"}), or count it in the room's next line of folded
        notices when the room has been sent more than C{noticeRate} lately.
        """
        if self._fold(room, kind):
            return
        self._sendNotice(room, self._line(room, text if prefixed else f"*** {text}"))

    def _fold(self, room: Room, kind: str) -> bool:
        """
        Count a notice of C{kind} to C{room} instead of sending it, if the
        room's notice rate is spent or notices are being counted already
        (those sent one by one come before the line that tells the
        others).  Returns whether it was counted.
        """
        folded = room.folded
        if folded is None:
            bucket = room.notices
            if bucket is None or not self._folding or bucket.take(1.0):
                return False
            folded = room.folded = {}
            room._foldCall = self._scheduler().callLater(_FOLD_PERIOD, self._tellFolded, room)
        folded[kind] = folded.get(kind, 0) + 1
        self.stats.count("notices_folded")
        return True

    def _tellFolded(self, room: Room) -> None:
        """
        Tell C{room} the notices counted instead of sent, in one line.
        """
        folded = room.folded or {}
        room.folded = room._foldCall = None
        parts = []
        for kind, one, more in _FOLDED_KINDS:
            count = folded.get(kind, 0)
            if count:
                parts.append(f"{count} {one if count == 1 else more}")
        if parts:
            text = f"*** {room.name}, last second: {', '.join(parts)} (too many to name; /who lists who is here)"
            self._sendNotice(room, self._line(room, text))

    def _scheduler(self) -> IReactorTime:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor  # type: ignore[assignment]
        return self._reactor  # type: ignore[return-value]

    def stopFolding(self) -> None:
        """
        A front end that called L{startFolding} stops.  When it was the
        last, tell every room the notices being counted now, and send
        notices one by one from now on until L{startFolding}: the service
        is stopping, and nothing may be left scheduled.
        """
        self._frontEnds = max(self._frontEnds - 1, 0)
        if self._frontEnds:
            return  # another front end still serves the rooms
        self._folding = False
        for room in list(self.rooms.values()):
            call = room._foldCall
            if call is not None and call.active():
                call.cancel()
                self._tellFolded(room)

    def startFolding(self) -> None:
        """
        A front end starts: count notices past C{noticeRate} (again, after
        L{stopFolding}).  Each call is matched by one of L{stopFolding}.
        """
        self._frontEnds += 1
        self._folding = True

    def _sendNotice(self, room: Room, line: Line) -> None:
        """
        Send C{room} the notice C{line}, taking it from the room's budget.
        """
        budget = room.budget
        if budget is not None:
            # Sent whatever the budget: what members say waits for it, at
            # most 4 s (the burst) after a flood of notices.
            budget.spend(len(line.encoded), floor=-budget.burst)
        self._announce(room, line)

    def _announce(self, room: Room, line: Line) -> None:
        """
        Send the notice C{line} to everyone in C{room}.
        """
        sent = room.broadcast(line, remember=False)
        self.stats.count("lines_out", sent)

    def _gauges(self) -> None:
        gauges = self.stats.gauges
        gauges["users"] = len(self.members)
        gauges["rooms"] = len(self.rooms)


class _Clock:
    """
    The hub's clock as a L{TokenBucket} wants it.
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: Callable[[], float]) -> None:
        self.seconds = seconds


def memberNames(members: Iterable[object]) -> List[str]:
    """
    The names of C{members}, sorted case-insensitively.
    """
    return sorted((m.name for m in members), key=str.casefold)  # type: ignore[attr-defined]
