"""
Reusable guards: token buckets, idle timeouts, the key that limits per
address count under, and the output a peer has not taken yet.

Both read time from an L{IReactorTime} so that tests drive them with
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable, Generic, Hashable, Optional, TypeVar

from twisted.internet import abstract
from twisted.internet.interfaces import IDelayedCall, IReactorTime

try:
    import fcntl
    import termios

    #: The ioctl that tells the bytes in a socket's send queue (Linux's
    #: SIOCOUTQ); L{None} where there is none.
    _OUTQ: int | None = termios.TIOCOUTQ if sys.platform.startswith("linux") else None
except ImportError:  # Windows
    _OUTQ = None


def decimal(digits: bytes, cap: int) -> int:
    """
    The number ASCII C{digits} (checked by the caller) write, or C{cap} if
    it is larger: leading zeros do not count, and a number of thousands of
    digits is read (C{int()} refuses over 4,300, a traceback where a
    request wanted an answer).
    """
    significant = digits.lstrip(b"0")
    if len(significant) > len(str(cap)):
        return cap
    return min(int(significant or b"0"), cap)


def hostKey(host: str) -> str:
    """
    What limits per address count C{host} under: an IPv4 address as it is,
    an IPv6 address as its /64 network (one subscriber usually holds a
    whole /64, so counting each address would let one client take 2**64
    places), an IPv4-mapped IPv6 address as its IPv4 address.  Anything
    else (a UNIX socket's name) as it is.
    """
    if ":" not in host:
        return host
    return _ipv6Key(host)


@lru_cache(maxsize=4096)
def _ipv6Key(host: str) -> str:
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class TokenBucket:
    """
    A token bucket: C{rate} tokens a second, holding at most C{burst}.

    Refills lazily when asked, so an idle bucket costs nothing.
    """

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, clock: IReactorTime) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def _refill(self) -> float:
        now = self._clock.seconds()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = now
        return self._tokens

    def take(self, amount: float = 1.0) -> bool:
        """
        Take C{amount} tokens if there are that many; say whether it did.
        """
        if self._refill() >= amount:
            self._tokens -= amount
            return True
        return False

    def delay(self, amount: float = 1.0) -> float:
        """
        Seconds until C{amount} tokens will be available (0 if they are now).
        """
        missing = amount - self._refill()
        return max(0.0, missing / self.rate)

    def spend(self, amount: float, floor: Optional[float] = None) -> float:
        """
        Take C{amount} tokens, going into debt if there are not that many
        (bytes already received must be paid for), but not below C{floor}
        tokens if given; return the seconds until the debt is paid off,
        which is how long the spender should pause.
        """
        self._tokens = self._refill() - amount
        if floor is not None and self._tokens < floor:
            self._tokens = floor
        return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def give(self, amount: float) -> None:
        """
        Add C{amount} tokens, up to C{burst}: a credit for work after which
        more takes are to be expected.
        """
        self._tokens = min(self.burst, self._refill() + amount)

    def isFull(self) -> bool:
        """
        Whether the bucket has refilled completely (its owner was quiet).
        """
        return self._refill() >= self.burst


K = TypeVar("K", bound=Hashable)


class BucketTable(Generic[K]):
    """
    Token buckets keyed by peer, at most C{maxKeys} of them.

    The least recently used bucket is forgotten first, so memory stays bounded
    however many peers (or spoofed addresses) appear; pair it with a global
    bucket so that forgetting cannot be used to get around the limit.

    With C{keepUntilFull}, a bucket is forgotten only once it has refilled:
    while the least recently used one has not, a key not seen has an empty
    bucket (nothing to take), and no place is made for it.  Pushing a key
    out by taking from many others then never gives it a fresh burst (one
    address whose bucket was spent got a full one back by sending from
    4,096 others), at the cost of refusing new keys while C{maxKeys} were
    all used within the time a bucket takes to refill.
    """

    def __init__(
        self, rate: float, burst: float, clock: IReactorTime, maxKeys: int = 4096, *, keepUntilFull: bool = False
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._maxKeys = maxKeys
        self._keepUntilFull = keepUntilFull
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def available(self, key: K) -> float:
        """
        The tokens in C{key}'s bucket now (for a key not seen, a full
        bucket, or none while C{keepUntilFull} keeps it out), taking none.
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            return bucket._refill()
        return 0.0 if self._blocking() is not None else self.burst

    def delay(self, key: K, amount: float = 1.0) -> float:
        """
        Seconds until C{key}'s bucket holds C{amount} tokens (0 if it does
        now, or for a key not seen while there is room for it), taking
        none.
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            return bucket.delay(amount)
        blocking = self._blocking()
        return 0.0 if blocking is None else blocking.delay(blocking.burst)

    def _blocking(self) -> Optional[TokenBucket]:
        """
        With C{keepUntilFull}, the bucket that keeps a new key out (the
        least recently used, not yet refilled, in a full table); else
        L{None}.
        """
        if not self._keepUntilFull or len(self._buckets) < self._maxKeys:
            return None
        oldest = next(iter(self._buckets.values()))
        return None if oldest.isFull() else oldest

    def take(self, key: K, amount: float = 1.0) -> bool:
        """
        Take C{amount} tokens from C{key}'s bucket; say whether it could.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            if self._blocking() is not None:
                return False
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
            if len(self._buckets) > self._maxKeys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(amount)


def cancelIfActive(call: Optional[IDelayedCall]) -> None:
    """
    Cancel C{call} unless it is L{None}, has run or was cancelled already
    (where C{cancel} would raise).
    """
    if call is not None and call.active():
        call.cancel()


class IdleTimeout:
    """
    Calls C{onTimeout} once nothing has called L{touch} for C{timeout}
    seconds.

    L{touch} only stores a timestamp; the timer re-arms itself for the time
    that is left when it fires, so busy connections cost no timer work per
    read.
    """

    def __init__(
        self, clock: IReactorTime, timeout: float, onTimeout: Callable[[], object]
    ) -> None:
        self._clock = clock
        self.timeout = timeout
        self._onTimeout = onTimeout
        self._last = self.started = clock.seconds()
        self._call: IDelayedCall | None = clock.callLater(timeout, self._check)

    def touch(self) -> None:
        """
        Note activity now.
        """
        self._last = self._clock.seconds()

    @property
    def last(self) -> float:
        """
        When activity was last noted (or the timer started, at
        C{started}).
        """
        return self._last

    def cancel(self) -> None:
        """
        Stop watching; L{onTimeout} will not be called.
        """
        cancelIfActive(self._call)
        self._call = None

    def _check(self) -> None:
        left = self._last + self.timeout - self._clock.seconds()
        if left > 0:
            self._call = self._clock.callLater(left, self._check)
        else:
            self._call = None
            self._onTimeout()


def heldBytes(transport: abstract.FileDescriptor) -> int:
    """
    The bytes a Twisted transport that writes to a socket holds, not yet
    handed to the system.  Private names of Twisted's a later release has
    moved count as nothing held (C{tests.test_upstream} names them).
    """
    buffered = getattr(transport, "dataBuffer", b"")
    return len(buffered) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)  # type: ignore[no-any-return]


def descriptorOf(transport: Any) -> abstract.FileDescriptor | None:
    """
    The transport that owns the socket under C{transport} (under netsuite's
    tracking wrapper, TLS ...), if there is one.
    """
    for _ in range(8):
        if transport is None or isinstance(transport, abstract.FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def peerReset(transport: Any) -> bool:
    """
    Whether the TCP connection under C{transport} was reset by its peer
    (or timed out): a socket the reactor does not read from reports
    nothing until it is written to or read again.  On Linux its state says
    so, and a soft error (one ICMP "host unreachable", which TCP rides out)
    does not; elsewhere a pending C{ECONNRESET}, C{EPIPE} or C{ETIMEDOUT}
    does, and is taken (a second call says no): whoever asks closes the
    connection when told yes.
    """
    descriptor = descriptorOf(transport)
    sock = getattr(descriptor, "socket", None)
    if sock is None:
        return False
    try:
        if sys.platform.startswith("linux") and sock.family in (socket.AF_INET, socket.AF_INET6):
            # The connection's state, not SO_ERROR: that also gives (and
            # takes) a soft error, such as an ICMP host unreachable, which
            # TCP itself rides out.  TCP_CLOSE (7): reset, or timed out.
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 7
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT)
    except (OSError, ValueError):
        return False


def unsentBytes(transport: Any) -> int:
    """
    The bytes written to C{transport} that its peer has not taken yet: in
    the buffer of the transport that writes to the socket (under netsuite's
    tracking wrapper, TLS ...) and, where the system tells, in the kernel's
    send queue.
    """
    transport = descriptorOf(transport)
    if transport is None:
        return 0
    unsent = heldBytes(transport)
    sock = getattr(transport, "socket", None)
    if _OUTQ is not None and sock is not None:
        try:
            unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            pass
    return unsent


class ClosingWatch:
    """
    Watch a connection being closed (after what is written is sent): abort
    it once its peer has taken none of the output left for C{timeout}
    seconds, as nginx's C{send_timeout} ends a connection.  Without it, a
    peer that stops reading keeps a closed connection, and its file
    descriptor, for ever.  The output is looked at L{LOOKS} times a
    timeout, so the abort comes at most a tenth late, and output taken
    just after the close is seen as taken then, not a timeout later.

    Once the peer has taken it all, the watch ends: what follows is the
    listener's lingering close (see L{netsuite.listen}), with its own
    timeouts.  An idle timeout shorter than the linger timeout aborted a
    client that had taken everything, and blamed it.

    @param aborted: called just before an abort.
    """

    LOOKS = 10

    def __init__(
        self, clock: IReactorTime, transport: Any, timeout: float, aborted: Callable[[], None] | None = None
    ) -> None:
        self._clock = clock
        self._transport = transport
        self._timeout = timeout
        self._aborted = aborted
        self._unsent = unsentBytes(transport)
        #: Whether what is left can be known (else it is taken for none
        #: taken, for as long as the connection lasts).
        self._measured = descriptorOf(transport) is not None
        self._progress = clock.seconds()
        self._call: IDelayedCall | None = clock.callLater(timeout / self.LOOKS, self._look)

    def cancel(self) -> None:
        """
        The connection ended: stop watching.
        """
        cancelIfActive(self._call)
        self._call = None

    def _look(self) -> None:
        self._call = None
        now = self._clock.seconds()
        unsent = unsentBytes(self._transport)
        if not unsent and self._measured:
            return  # all taken
        if unsent < self._unsent:
            self._unsent = unsent
            self._progress = now
        left = self._progress + self._timeout - now
        if left > 0:
            self._call = self._clock.callLater(min(left, self._timeout / self.LOOKS), self._look)
            return
        if self._aborted is not None:
            self._aborted()
        self._transport.abortConnection()


class SendStall:
    """
    nginx's C{send_timeout} for output that waits for a peer: while
    watched (L{watch} to L{stop}), C{stalled} is called once the peer has
    taken none of it for C{timeout} seconds.  What is left to send
    (C{left}, L{unsentBytes} of a transport: what the system and the
    transport hold) is looked at L{LOOKS} times a timeout; any shrinking is
    progress, and the timeout runs again from it, so the end comes at most
    a tenth late.  Timing how long a producer stayed paused instead cut off
    clients that read slowly but steadily: over TLS a file's producer is
    resumed only once all of the transport's buffer (about 320 KiB) is
    taken, and that took a client reading 3 KB/s over a minute.

    L{stop} only notes that the watch is over (a producer that pauses and
    resumes for every buffer it fills costs no timer work); L{cancel}
    removes the pending look.

    @param took: called when a look finds the peer took something, if
        given.
    """

    LOOKS = 10

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        left: Callable[[], int],
        stalled: Callable[[], object],
        took: Callable[[], object] | None = None,
    ) -> None:
        self._clock = clock
        self.timeout = timeout
        self._measure = left
        self._stalled = stalled
        self._took = took
        self._watching = False
        #: When the peer was last seen taking something (or the watch began).
        self._since = 0.0
        #: What was left at the last look of this watch.
        self._left: int | None = None
        #: The next look, while one is pending.
        self.call: IDelayedCall | None = None

    @property
    def watching(self) -> bool:
        """
        Whether output is being watched.
        """
        return self._watching

    def watch(self) -> None:
        """
        Output waits for the peer: the timeout runs from now, unless the
        watch is on already.
        """
        if self._watching:
            return
        self._watching = True
        self._since = self._clock.seconds()
        self._left = None
        if self.call is None:
            self.call = self._clock.callLater(self.timeout / self.LOOKS, self._look)

    def progressed(self) -> None:
        """
        The peer took something (known otherwise): the timeout runs again
        from now.
        """
        self._since = self._clock.seconds()

    def stop(self) -> None:
        """
        Nothing waits for the peer any more.
        """
        self._watching = False

    def cancel(self) -> None:
        """
        Stop for good: no look is left pending.
        """
        self._watching = False
        cancelIfActive(self.call)
        self.call = None

    def _look(self) -> None:
        self.call = None
        if not self._watching:
            return
        now = self._clock.seconds()
        left = self._measure()
        if self._left is not None and left < self._left:
            self._since = now
            if self._took is not None:
                self._took()
        self._left = left
        remaining = self._since + self.timeout - now
        if remaining > 0:
            if self._watching and self.call is None:
                self.call = self._clock.callLater(min(remaining, self.timeout / self.LOOKS), self._look)
            return
        self._watching = False
        self._stalled()
