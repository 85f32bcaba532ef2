"""
The download engine: a L{Downloader} fetches many files at once with treq,
each into C{NAME.part} beside a JSON resume state, split across several
connections when the server allows ranges, retried with backoff, and
renamed to its final name only when it is complete and verified.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import os
import random
import re
import stat
import time
from collections import deque
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, Iterable, Optional, Union
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

try:
    import fcntl
except ImportError:  # Windows: .part files are not locked
    fcntl = None  # type: ignore[assignment]

from hyperlink import EncodedURL, URLParseError
from twisted.internet import defer, error as netError, task, threads
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client as webClient
from twisted.web._newclient import BadHeaders, ParseError, ResponseNeverReceived
from twisted.web.client import HTTPConnectionPool, PotentialDataLoss, ResponseDone, ResponseFailed

from OpenSSL.SSL import Error as TLSError
from service_identity.exceptions import CertificateError, VerificationError
from treq.client import HTTPClient

from .. import __version__
from ..chunked import MalformedChunkedBody
from ..limits import TokenBucket
from ..text import visibleText
from . import names
from .agent import (
    PHRASE_LENGTH,
    BoundedClientProtocol,
    CertificateRefused,
    DestinationRefused,
    ProxyError,
    ResponseHeadTooLarge,
    basicAuthorization,
    buildAgent,
    tlsProblem,
)
from .errors import (
    BadURL,
    ChecksumMismatch,
    ConnectionFailed,
    DownloadError,
    DownloadTimeout,
    HTTPStatusError,
    LocalFileError,
    RedirectError,
    RemoteChanged,
    TooLarge,
)
from .state import (
    PART_SUFFIX,
    STATE_SUFFIX,
    DownloadState,
    addRange,
    clipRanges,
    dataExtents,
    intersectRanges,
    covered,
    gaps,
    isHeaderValue,
    loadState,
    mergeRanges,
    statePathFor,
)
from .values import (
    HEADER_NAME,
    RESERVED_HEADERS,
    asciiHostName,
    asciiProxyURL,
    asFetched,
    bracketedHostProblem,
    fetchHostProblem,
    isText,
    parseChecksum,
    redact,
    slashesAsBrowsersRead,
    unreadableURLReason,
)

log = Logger()

MiB = 2**20

#: Redirect statuses that are followed.
REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: A failure after at least this much resumable progress does not count
#: towards the retry limit (the download is moving, just not steadily).
PROGRESS_FORGIVES = 256 * 1024

#: How many times a download may start over (remote file changed, ranges
#: misreported) before it fails.
MAX_RESTARTS = 3

#: A C{.part} holding more bytes than this is emptied (a download starting
#: over) by a new empty file put in its place, the old one's blocks freed
#: as its descriptor closes in a thread: truncating it froze the reactor,
#: and every service, 0.64 s for 2 GiB on ext4.
TRUNCATE_IN_PLACE = 16 * MiB

#: Seconds between state-file writes of a running download.
STATE_INTERVAL = 1.0

#: Bytes read per step when a finished file is hashed.
HASH_CHUNK = MiB

#: The largest size a file can have (a signed 64-bit offset): a server
#: that announces more is not believed.
MAX_FILE_SIZE = 2**63 - 1

# Numbers of at most 30 digits: int() of a longer one is refused by Python
# (and means nothing here).
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d{1,30})-(\d{1,30})/(\d{1,30}|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d{1,30}|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class DownloadSettings:
    """
    How a L{Downloader} behaves; every field has a sensible default.

    @ivar maxConnections: HTTP connections in all.
    @ivar maxPerHost: connections to one (scheme, host, port).
    @ivar segments: connections one file may use.
    @ivar minSplitSize: files smaller than this are never split.
    @ivar connectTimeout: seconds to connect.
    @ivar headerTimeout: seconds from sending a request to its response head.
    @ivar stallTimeout: seconds without a body byte before the transfer
        counts as failed (and is retried).
    @ivar lowestSpeed: bytes per second a connection must average over
        each C{stallTimeout} seconds of its body, or L{None}; a slower one
        counts as failed (and is retried).  Windows in which the rate limit
        held the connection back are not judged.
    @ivar totalTimeout: seconds one download may take in all, or L{None}.
    @ivar retries: further attempts after failures in a row.
    @ivar retryWait: the first backoff in seconds; it doubles, with jitter.
    @ivar maxRetryWait: the longest backoff, and the longest C{Retry-After}
        honoured.
    @ivar maxRedirects: redirects followed per request.
    @ivar caFile: a PEM file of trust roots to use instead of the system's.
    @ivar insecure: check no certificate at all.
    @ivar proxy: an C{http://[user:password@]host:port} proxy, or L{None};
        a host that is not ASCII is converted as a download's is.
    @ivar rateLimit: bytes per second for all downloads together, or
        L{None}.
    @ivar maxSize: the largest file accepted, in bytes, or L{None}.
    @ivar userAgent: the C{User-Agent} sent.
    @ivar progressInterval: seconds between progress events.
    @ivar sync: write a finished file through to the disk (in a thread)
        before it gets its final name, so that a power cut or an operating
        system crash cannot leave the final name on a file whose bytes were
        never written.
    """

    maxConnections: int = 8
    maxPerHost: int = 4
    segments: int = 4
    minSplitSize: int = 4 * MiB
    connectTimeout: float = 30.0
    headerTimeout: float = 30.0
    stallTimeout: float = 30.0
    lowestSpeed: Optional[int] = None
    totalTimeout: Optional[float] = None
    retries: int = 5
    retryWait: float = 1.0
    maxRetryWait: float = 60.0
    maxRedirects: int = 10
    caFile: Optional[str] = None
    insecure: bool = False
    proxy: Optional[str] = None
    rateLimit: Optional[int] = None
    maxSize: Optional[int] = None
    userAgent: str = f"netsuite-get/{__version__}"
    progressInterval: float = 0.5
    sync: bool = True

    def __post_init__(self) -> None:
        for name in ("maxConnections", "maxPerHost", "segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("connectTimeout", "headerTimeout", "stallTimeout", "progressInterval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds")
        if self.totalTimeout is not None and not self.totalTimeout > 0:
            raise ValueError("totalTimeout must be more than 0 seconds")
        if self.retries < 0 or self.maxRedirects < 0 or self.retryWait < 0 or self.maxRetryWait < 0:
            raise ValueError("retries, maxRedirects, retryWait and maxRetryWait cannot be negative")
        if self.rateLimit is not None and self.rateLimit < 1:
            raise ValueError("rateLimit must be at least 1 byte per second")
        if self.lowestSpeed is not None and self.lowestSpeed < 1:
            raise ValueError("lowestSpeed must be at least 1 byte per second")
        if self.maxSize is not None and self.maxSize < 0:
            raise ValueError("maxSize cannot be negative")


@dataclass
class DownloadRequest:
    """
    One file to download.

    @ivar url: an http or https URL (credentials in it are sent, as Basic
        authorization, to its own origin only).
    @ivar directory: where the file goes.
    @ivar name: the wanted file name (still sanitised), or L{None} for the
        server's or the URL's.
    @ivar checksum: C{"sha256=HEX"} (or another algorithm) the file must
        match.
    @ivar headers: extra request headers (C{Authorization} among them goes
        to the URL's origin only), values sent as UTF-8; one that cannot
        be sent fails the job at once.
    @ivar overwrite: replace an existing file instead of choosing
        C{name.1}, C{name.2}, ...
    @ivar continueExisting: a file already under the final name, without a
        state file, counts as the download's first bytes (C{wget -c}).  It
        is never cut below its own length: when the server cannot continue
        it, the download fails and the file stays as it was; one that fails
        after appending is cut back and given back its name, unless the
        transfer broke or was interrupted (its C{.part} is then resumed by
        a later run, as any other).
    @ivar partName: the C{.part} file (a plain name in C{directory}) an
        earlier run of this download chose, tried first when resuming (it
        may be C{NAME.1.part} when C{name} was taken).  Taken only when its
        state file names the same URL.
    """

    url: str
    directory: Union[str, Path] = "."
    name: Optional[str] = None
    checksum: Optional[str] = None
    headers: Optional[dict[str, str]] = None
    overwrite: bool = False
    continueExisting: bool = False
    partName: Optional[str] = None


@dataclass(frozen=True)
class DownloadResult:
    """
    A finished download.

    @ivar url: the URL asked for.
    @ivar path: the file, under its final name.
    @ivar size: its size in bytes.
    @ivar seconds: how long it took.
    @ivar resumedFrom: bytes already on disk when this run began.
    @ivar segments: the most connections it used at once.
    """

    url: str
    path: Path
    size: int
    seconds: float
    resumedFrom: int = 0
    segments: int = 1


@dataclass
class Job:
    """
    A download the L{Downloader} has been given.

    @ivar id: its identifier, unique in its downloader.
    @ivar deferred: fires with a L{DownloadResult} or fails with a
        L{DownloadError} (or L{CancelledError} once cancelled).
    @ivar error: why it failed; while it is C{retrying}, why its last
        attempt failed.
    """

    id: str
    request: DownloadRequest
    deferred: Deferred = field(repr=False, default=None)
    state: str = "queued"
    name: Optional[str] = None
    path: Optional[str] = None
    done: int = 0
    size: Optional[int] = None
    speed: float = 0.0
    error: Optional[str] = None
    attempts: int = 0
    #: Why the last attempt that is retried failed.
    _retried: Optional[str] = field(default=None, repr=False)
    _lastDone: int = field(default=0, repr=False)
    _download: Optional["_Download"] = field(default=None, repr=False)

    def snapshot(self) -> dict:
        """
        The job as a JSON-ready dict.
        """
        return {
            "id": self.id,
            "url": redact(self.request.url),
            "name": self.name,
            "path": self.path,
            "state": self.state,
            "done": self.done,
            "size": self.size,
            "speed": round(self.speed, 1),
            "error": self._retried if self.state == "retrying" and self.error is None else self.error,
            "attempts": self.attempts,
        }


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def controlsEncoded(url: str) -> str:
    """
    C{url} with the spaces and control characters of its path and query
    percent-encoded (the fragment dropped, as L{splitURL} drops it), as
    browsers and curl send a redirect's C{Location} (C{/my file.txt} as
    C{/my%20file.txt}).  Tabs and line breaks are dropped (the URL
    Standard), and those of a host are left for L{splitURL} to refuse.
    """
    if _CONTROL_OR_SPACE.search(url) is None:
        return url  # as given (urlunsplit drops an empty query's "?")
    parts = urlsplit(url)

    def encoded(text: str) -> str:
        return _CONTROL_OR_SPACE.sub(lambda match: "%%%02X" % ord(match.group()), text)

    return urlunsplit((parts.scheme, parts.netloc, encoded(parts.path), encoded(parts.query), ""))


def splitURL(url: str) -> tuple[str, Optional[str]]:
    """
    C{url} without its credentials, and the Basic C{Authorization} value
    they make (or L{None}).

    @raise BadURL: when C{url} is not an http or https URL with a host a
        resolver can take and a port other than 0, or is not text.
    """
    try:
        parts = urlsplit(asFetched(url))
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise BadURL(f"{redact(url)}: not a valid URL ({unreadableURLReason(e)})") from None
    shown = redact(url)  # messages never show the password
    if parts.scheme.lower() not in ("http", "https"):
        scheme = parts.scheme or "(none)"
        raise BadURL(f"{shown}: only http and https URLs can be downloaded, not {scheme}")
    if not parts.hostname:
        raise BadURL(f"{shown}: the URL has no host")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url.strip()):
        raise BadURL(f"{shown!r}: the URL contains spaces or control characters")
    if not isText(url):
        raise BadURL(f"{shown!r}: the URL is not valid text (it holds a lone surrogate)")
    if parts.port == 0:
        raise BadURL(f"{shown}: port 0 cannot be connected to")
    authorization = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        authorization = basicAuthorization(user, password).decode("ascii")
    # Non-ASCII in paths is percent-encoded; non-ASCII hosts use IDNA.  A
    # name no resolver can take is refused here: getaddrinfo would raise
    # inside Twisted's resolver, which then never answers.
    host = parts.hostname
    bracketed = bracketedHostProblem(parts.netloc)
    if bracketed is not None:
        raise BadURL(f"{shown}: {bracketed}")
    try:
        asciiHost = asciiHostName(host)
    except ValueError as e:
        raise BadURL(f"{shown}: {e}") from None
    if not netloc.isascii():
        # Built anew: the host urlsplit gives is lower-cased (Exämple,
        # the Kelvin sign), so it may not be found in the netloc as given.
        netloc = asciiHost if parts.port is None else f"{asciiHost}:{parts.port}"
    if netloc.endswith(":"):
        netloc = netloc[:-1]  # an empty port is the default one (RFC 3986 3.2.3)
    # Bytes given that were not UTF-8 (surrogates) are sent as they were.
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._", errors="surrogateescape")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=?~-._", errors="surrogateescape")
    clean = urlunsplit((parts.scheme.lower(), netloc, path, query, ""))
    try:
        EncodedURL.from_text(clean)  # what treq parses it with
    except (URLParseError, ValueError):
        raise BadURL(f"{shown}: not a valid URL") from None
    return clean, authorization


def isPartName(name: str) -> bool:
    """
    Whether C{name} is the plain name of a C{.part} file the downloader
    could have chosen: C{NAME.part}, with no separator and no leading dot.
    """
    return (
        name.endswith(PART_SUFFIX)
        and len(name) > len(PART_SUFFIX)
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
    )


class _ReadyURL(EncodedURL):
    """
    A URL L{splitURL} made: already a URI (ASCII, IDNA host names,
    percent-encoded path and query), so converting it again is a no-op.
    treq converts every URL it is given, and hyperlink's conversion fails
    on IPv6 literals (python-hyper/hyperlink#68) and on host names IDNA
    refuses, which DNS should be the one to refuse.
    """

    def to_uri(self) -> "_ReadyURL":
        return self


def origin(url: str) -> tuple[str, str, int]:
    """
    The (scheme, host, port) of C{url}.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def retryAfterSeconds(value: Optional[bytes], now: float) -> Optional[float]:
    """
    The seconds a C{Retry-After} header value asks for (a number, or an
    HTTP date), or L{None} when it is missing or unreadable.
    """
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isascii() and text.isdigit():  # not "²", which isdigit() takes
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def _describe(failure: Failure) -> str:
    """
    One phrase for a low-level connection failure.
    """
    value = failure.value
    if isinstance(value, (ResponseFailed, ResponseNeverReceived)) and value.reasons:
        return _describe(value.reasons[0])
    if failure.check(netError.DNSLookupError):
        return "the host name could not be resolved"
    if failure.check(netError.ConnectionRefusedError):
        return "the connection was refused"
    if failure.check(netError.TimeoutError):
        return "connecting timed out"
    if failure.check(netError.ConnectionLost, netError.ConnectionDone):
        return "the connection was closed"
    if failure.check(netError.ConnectError):
        text = str(value.args[0]) if getattr(value, "args", None) and value.args and value.args[0] else str(value)
        return text or "the connection failed"
    if failure.check(VerificationError, CertificateError):
        return "the server's certificate is not for this host name"
    if failure.check(CertificateRefused):
        return value.reason
    if failure.check(TLSError):
        return tlsProblem(value)
    # Not Python's words (an AttributeError's "'NoneType' object has no
    # attribute 'append'" was shown): a fixed phrase that names the kind.
    return f"an unexpected error in the HTTP client ({value.__class__.__name__})"


def _garbled(failure: Failure) -> Optional[Failure]:
    """
    The reason a response that began to arrive could not be parsed (what
    Twisted's parser raised: a L{ParseError}, or a C{ValueError} or
    C{KeyError} for a bad length or transfer coding), or L{None}.  Only
    failures inside L{ResponseFailed} count: a C{ValueError} before any
    answer (an invalid host name) is a connection problem.
    """
    if isinstance(failure.value, ResponseFailed):
        for reason in failure.value.reasons:
            if reason.check(ParseError, BadHeaders, ValueError, KeyError):
                return reason
    return None


def _parseDetail(failure: Failure) -> str:
    """
    What Twisted's parser said was wrong, as C{" (reason)"} when it said
    it in words (a L{ParseError}'s first argument), else nothing.
    """
    args = getattr(failure.value, "args", ())
    if failure.check(ParseError) and args and isinstance(args[0], str) and re.fullmatch(r"[\w ,.'-]{1,80}", args[0]):
        return f" ({args[0]})"
    return ""


def _cause(failure: Failure, *kinds: type) -> Optional[Failure]:
    """
    C{failure} or the first failure inside it (Twisted wraps connection and
    TLS errors in L{ResponseFailed} / L{ResponseNeverReceived}) that is one
    of C{kinds}, or L{None}.
    """
    if failure.check(*kinds):
        return failure
    value = failure.value
    if isinstance(value, (ResponseFailed, ResponseNeverReceived)):
        for reason in value.reasons:
            found = _cause(reason, *kinds)
            if found is not None:
                return found
    return None


class _Slots:
    """
    Connection slots: at most C{total} at once, at most C{perHost} for one
    origin; waiters are served first come, first served.

    Waiters are queued per origin, and the first waiter of each origin
    with room is kept in a heap by its place in line: a freed slot costs
    O(log n) in the origins waiting, whether thousands of jobs wait for one
    full origin or for thousands of origins.

    A connection redirected to another origin keeps its place in C{total}
    and waits only for room at the new origin (L{move}): while it waits,
    the redirecting origin's room goes to others, but no other file starts
    in its place, so the files redirected and not yet fetched are at most
    C{total} (a redirect's link may expire).  This cannot deadlock: room at
    an origin is only held by requests to it under way, never by a waiter.
    """

    _waking = False
    _slack = 64

    def __init__(self, total: int, perHost: int) -> None:
        self.total = total
        self.perHost = perHost
        self.used = 0
        self._byHost: dict[tuple, int] = {}
        # Per origin, its waiters in arrival order as [number, Deferred]; a
        # cancelled waiter's Deferred is None, and it is dropped when it
        # reaches the front (a queue's first entry is always a live one).
        self._queues: dict[tuple, deque[list]] = {}
        # The same for connections moving to an origin (L{move}), which hold
        # a slot of C{total} already; in the order of their numbers.
        self._moving: dict[tuple, deque[list]] = {}
        # For each of those, a heap of (number, tiebreak, origin): the first
        # waiter of every origin with room is in it.  Entries are checked
        # when they come to the top (an origin filled since, a waiter gone:
        # passed over); _listed holds the entry each origin waiting was
        # last pushed with, so an origin is not pushed twice for one
        # waiter.  Entries left behind by waiters gone (cancelled while
        # every slot is busy, when nothing comes to the top) are dropped
        # once they outnumber the listed ones by _slack (L{_rebuild}).
        self._heaps: dict[int, list[tuple]] = {id(self._queues): [], id(self._moving): []}
        self._listed: dict[int, dict[tuple, tuple]] = {id(self._queues): {}, id(self._moving): {}}
        self._pushes = 0
        self._arrivals = 0

    def arrival(self) -> int:
        """
        A new arrival number, later than every one given before.
        """
        self._arrivals += 1
        return self._arrivals

    def acquire(self, key: tuple, number: Optional[int] = None) -> Deferred:
        """
        Wait for a slot for C{key}: one of C{total} and room at C{key}.
        C{number} is the waiter's place in line (L{arrival}; a new one by
        default).
        """
        # A free slot with no one waiting for this origin is taken at once,
        # whatever waits for other, full origins (they cannot use it; the
        # loop serving releases queues it, to keep the order).
        if not self._waking and key not in self._queues and key not in self._moving and self._free(key):
            self._take(key)
            return defer.succeed(None)
        return self._queue(self._queues, key, self.arrival() if number is None else number)

    def move(self, old: Optional[tuple], new: tuple, number: int) -> Deferred:
        """
        Move a slot held from origin C{old} (L{None} if it has left it
        already) to C{new}: C{old}'s room is given back at once, and room at
        C{new} waited for, keeping the slot of C{total}.  C{number} is the
        mover's place in line among those waiting for C{new}: the number it
        first came with (L{arrival}).
        """
        if old is not None:
            self._leave(old)
        # Queued even when there is room: someone earlier may be waiting
        # for it (L{_wake} serves the earliest that can go).
        d = self._queue(self._moving, new, number)
        self._wake()
        return d

    def release(self, key: Optional[tuple]) -> None:
        """
        Give back a slot held for origin C{key} (L{None} for one that was
        moving and holds no room at any origin).
        """
        self.used -= 1
        if key is not None:
            self._leave(key)
        self._wake()

    def _queue(self, queues: dict[tuple, deque[list]], key: tuple, number: int) -> Deferred:
        entry: list = [number, None]
        d: Deferred = Deferred(lambda d: self._forget(queues, key, entry))
        entry[1] = d
        queue = queues.setdefault(key, deque())
        if queue and queue[-1][0] > number:
            # A mover with an early number goes in its place (movers are
            # few: each holds one of the total).
            index = next(i for i, waiting in enumerate(queue) if waiting[0] > number)
            queue.insert(index, entry)
        else:
            queue.append(entry)
        self._list(queues, key)
        return d

    def _list(self, queues: dict[tuple, deque[list]], key: tuple) -> None:
        """
        Put the first waiter of C{key} in C{queues} in its heap, if it may
        go (there is room at C{key}) and is not there yet.
        """
        queue = queues.get(key)
        if not queue or self._byHost.get(key, 0) >= self.perHost:
            return
        number = queue[0][0]
        listed = self._listed[id(queues)]
        entry = listed.get(key)
        if entry is None or entry[0] != number:
            self._pushes += 1
            entry = listed[key] = (number, self._pushes, key)
            heap = self._heaps[id(queues)]
            heapq.heappush(heap, entry)
            if len(heap) > 2 * len(listed) + self._slack:
                self._rebuild(queues)

    def _rebuild(self, queues: dict[tuple, deque[list]]) -> None:
        """
        Make the heap of C{queues} anew from the entries listed for origins
        with room, dropping those left behind: the cost is paid for by the
        pushes that made them.  (An origin full now is listed again when
        it has room, by L{_leave}.)
        """
        listed = self._listed[id(queues)]
        for key in [key for key in listed if self._byHost.get(key, 0) >= self.perHost]:
            del listed[key]
        heap = self._heaps[id(queues)]
        heap[:] = listed.values()
        heapq.heapify(heap)

    def _first(self, queues: dict[tuple, deque[list]]) -> Optional[tuple]:
        """
        The origin whose first waiter in C{queues} is the earliest of those
        that may go, or L{None}; entries found stale on the way are dropped.
        """
        heap, listed = self._heaps[id(queues)], self._listed[id(queues)]
        while heap:
            entry = heap[0]
            number, _, key = entry
            queue = queues.get(key)
            if queue and queue[0][0] == number and self._byHost.get(key, 0) < self.perHost:
                return key
            heapq.heappop(heap)
            if listed.get(key) == entry:
                del listed[key]
        return None

    def _leave(self, key: tuple) -> None:
        left = self._byHost[key] - 1
        if left:
            self._byHost[key] = left
        else:
            del self._byHost[key]
        # Room at key: its first waiters may go.
        self._list(self._moving, key)
        self._list(self._queues, key)

    def _forget(self, queues: dict[tuple, deque[list]], key: tuple, entry: list) -> None:
        entry[1] = None
        self._dropCancelled(queues, key)

    def _dropCancelled(self, queues: dict[tuple, deque[list]], key: tuple) -> None:
        queue = queues[key]
        while queue and queue[0][1] is None:
            queue.popleft()
        if not queue:
            del queues[key]
            # Its entry, if any, is left behind (see _rebuild).
            self._listed[id(queues)].pop(key, None)
        else:
            self._list(queues, key)

    def _wake(self) -> None:
        # A woken waiter runs at once and may take or release slots itself:
        # look at the queues afresh after each one.  A release by a woken
        # waiter is served by this loop, not by a nested one (a queue of
        # waiters that each released at once went one stack level deeper
        # each: RecursionError past about a hundred).
        if self._waking:
            return
        self._waking = True
        try:
            while True:
                # Movers need only room at their origin; others a slot of
                # total too.  The earliest number that can go goes.
                first, queues = self._first(self._moving), self._moving
                if self.used < self.total:
                    waiting = self._first(self._queues)
                    if waiting is not None and (first is None or self._queues[waiting][0][0] < self._moving[first][0][0]):
                        first, queues = waiting, self._queues
                if first is None:
                    return
                d = queues[first].popleft()[1]
                self._dropCancelled(queues, first)
                if queues is self._moving:
                    self._enter(first)
                else:
                    self._take(first)
                d.callback(None)
        finally:
            self._waking = False

    def _free(self, key: tuple) -> bool:
        return self.used < self.total and self._byHost.get(key, 0) < self.perHost

    def _take(self, key: tuple) -> None:
        self.used += 1
        self._enter(key)

    def _enter(self, key: tuple) -> None:
        # (Less room at key: its heap entries are checked when they come up.)
        self._byHost[key] = self._byHost.get(key, 0) + 1


class _HeldSlot:
    """
    The slot of L{_Slots} one connection holds, counted under the origin it
    is connected to: a request's redirects move it to each new origin
    (L{_Slots.move}), keeping its place in the total.

    @ivar held: whether it holds one of the total.
    @ivar key: the origin it is counted under, or L{None} while it holds
        nothing or is between two origins.
    """

    def __init__(self, slots: _Slots) -> None:
        self._slots = slots
        self.held = False
        self.key: Optional[tuple] = None
        self._number = 0

    def take(self, key: tuple) -> Deferred:
        """
        Wait for a slot for C{key} (when none is held), in a new place in
        line.
        """
        self._number = self._slots.arrival()

        def taken(result: None) -> None:
            self.held, self.key = True, key

        return self._slots.acquire(key, self._number).addCallback(taken)

    async def holdFor(self, key: tuple) -> None:
        """
        Hold a slot for C{key}: the one held if it is for C{key}; else the
        one held is moved there (waiting for room at C{key} in the place in
        line it first took, its room at the origin it leaves given back at
        once); else a new one is waited for.
        """
        if self.key == key:
            return
        if not self.held:
            await self.take(key)
            return
        old, self.key = self.key, None
        await self._slots.move(old, key, self._number)
        self.key = key

    def release(self) -> None:
        """
        Give back the slot held, if any.
        """
        if self.held:
            key, self.key, self.held = self.key, None, False
            self._slots.release(key)


class _Piece:
    """
    A byte range one connection fills: C{[start, end)}, filled up to
    C{pos}.  C{end} is L{None} while the size is unknown.
    """

    def __init__(self, start: int, end: Optional[int]) -> None:
        self.start = start
        self.pos = start
        self.end = end
        self.validating = False  # only checks the remote file; no body wanted

    @property
    def remaining(self) -> int:
        return (self.end - self.pos) if self.end is not None else 0

    @property
    def complete(self) -> bool:
        return self.end is not None and self.pos >= self.end

    def __repr__(self) -> str:
        return f"<_Piece {self.start}..{self.pos}..{self.end}>"


class _Restart(Exception):
    """
    The download must start over from byte zero (the remote file changed,
    or the server misreported ranges).
    """

    def __init__(self, reason: str, rangesSupported: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rangesSupported = rangesSupported


class _CannotContinue(DownloadError):
    """
    A file adopted with C{continueExisting} cannot be continued from this
    server: it is given back as it was.
    """


#: Body bytes a body reader holds back in one pass of the reactor before
#: it writes them at once (see L{_BodyReader}).
BODY_BATCH_BYTES = 64 * 1024


class _BodyReader(Protocol):
    """
    Writes a response body into the file at its piece's position, stops
    at the piece's end, pauses for the rate limit and fails when the body
    stalls or is slower than the lowest speed.

    The first piece of body in a pass of the reactor is taken at once; the
    rest that comes in the same pass is taken together at its end (or at
    L{BODY_BATCH_BYTES}).  Twisted gives each chunk of a chunked body on its
    own: a server sending 1-byte chunks cost a write to the disk and the
    checks for each byte, 9 microseconds, and one read of 64 KiB held the
    reactor for 100 ms.
    """

    def __init__(self, download: "_Download", piece: _Piece, expected: Optional[int]) -> None:
        self.download = download
        self.piece = piece
        self.expected = expected  # body bytes the response framing promises
        self.received = 0  # body bytes written
        self._arrived = 0  # body bytes that came, written or not
        self.finished: Deferred = Deferred(self._cancel)
        self._stallTimer = None
        self._resumeTimer = None
        self._speedTimer = None
        self._windowStart = 0  # self.received when the speed window began
        self._heldBack = False  # the rate limit paused us in this window
        self._cut = False
        self._batchCall = None  # ends the pass's batch
        self._batch: list[bytes] = []
        self._batchBytes = 0

    def connectionMade(self) -> None:
        self._armStall()
        self._armSpeedCheck()

    def _armSpeedCheck(self) -> None:
        if self.download.settings.lowestSpeed is None:
            return
        self._windowStart = self.received
        self._heldBack = self._resumeTimer is not None and self._resumeTimer.active()
        self._speedTimer = self.download.clock.callLater(self.download.settings.stallTimeout, self._checkSpeed)

    def _checkSpeed(self) -> None:
        settings = self.download.settings
        got = self.received - self._windowStart
        if not self._heldBack and got < settings.lowestSpeed * settings.stallTimeout:
            self._stop(
                DownloadTimeout(
                    f"{self.download.url}: slower than the lowest speed of {settings.lowestSpeed} bytes a second"
                    f" ({got} bytes in {settings.stallTimeout:g} seconds)"
                )
            )
            return
        self._armSpeedCheck()

    def _armStall(self) -> None:
        clock = self.download.clock
        timeout = self.download.settings.stallTimeout
        if self._stallTimer is not None and self._stallTimer.active():
            self._stallTimer.reset(timeout)
        else:
            self._stallTimer = clock.callLater(timeout, self._stalled)

    def _stalled(self) -> None:
        seconds = self.download.settings.stallTimeout
        self._stop(DownloadTimeout(f"{self.download.url}: no data for {seconds:g} seconds"))

    def _disarm(self) -> None:
        for timer in (self._stallTimer, self._resumeTimer, self._speedTimer, self._batchCall):
            if timer is not None and timer.active():
                timer.cancel()
        self._batchCall = None
        self._batch = []
        self._batchBytes = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        if self._batchCall is None:
            self._batchCall = self.download.clock.callLater(0, self._endBatch)
            self._take(data)
            return
        self._batch.append(data)
        self._batchBytes += len(data)
        if self._batchBytes >= BODY_BATCH_BYTES:
            self._takeBatch()

    def _endBatch(self) -> None:
        self._batchCall = None
        self._takeBatch()

    def _takeBatch(self) -> None:
        """
        Take the body held back in this pass, if any.
        """
        batch = self._batch
        if batch and not self.finished.called:
            self._batch, self._batchBytes = [], 0
            self._take(batch[0] if len(batch) == 1 else b"".join(batch))

    def _take(self, data: bytes) -> None:
        """
        Write C{data}, the body's next bytes, and check what must be.
        """
        self._arrived += len(data)
        if self.expected is not None and self._arrived > self.expected:
            # A chunked or close-delimited body longer than its Content-Range
            # (a multipart answer, say): what it holds cannot be trusted.
            self._stop(_Restart("the server sent more than the range it named", rangesSupported=False))
            return
        piece = self.piece
        if piece.end is not None and piece.pos + len(data) > piece.end:
            data = data[: max(0, piece.end - piece.pos)]
        if data:
            try:
                self.download.write(data, piece.pos)
            except DownloadError as e:
                self._stop(e)
                return
            piece.pos += len(data)
            self.received += len(data)
            self.download.job.done += len(data)
        maxSize = self.download.settings.maxSize
        if maxSize is not None and piece.pos > maxSize:
            self._stop(TooLarge(f"{self.download.url}: the file is larger than the limit of {maxSize} bytes"))
            return
        if piece.complete:
            if self.expected is not None and self.received >= self.expected:
                # The response ends here too: its connection is kept, unless
                # its end does not come (a chunked body's last chunk, say).
                self._disarm()
                self._stallTimer = self.download.clock.callLater(self.download.settings.stallTimeout, self._stop, None)
                return
            # The piece is full (a split shortened it): the rest of this
            # response is another connection's.
            self._stop(None)
            return
        limiter = self.download.downloader._rateLimit
        delay = limiter.spend(len(data)) if limiter is not None and data else 0.0
        if delay > 0:
            if self._resumeTimer is not None and self._resumeTimer.active():
                # More of one read came while paused: the debt grew.
                self._resumeTimer.reset(delay)
                return
            if self._stallTimer is not None and self._stallTimer.active():
                self._stallTimer.cancel()
            self._heldBack = True
            self.transport.pauseProducing()
            self._resumeTimer = self.download.clock.callLater(delay, self._resume)
        else:
            self._armStall()

    def _resume(self) -> None:
        if not self.finished.called:
            self._armStall()
            self.transport.resumeProducing()

    def _stop(self, error: Optional[Exception]) -> None:
        self._disarm()
        if self.finished.called:
            return
        if error is None:
            # Cut short on purpose: done once the connection is really gone
            # (connectionLost), so its slot is not reused before it closes.
            self._cut = True
            self.transport.stopProducing()
            return
        self.transport.stopProducing()
        self.finished.errback(error)

    def _cancel(self, d: Deferred) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:
        self._takeBatch()
        self._disarm()
        if self.finished.called:
            return
        ended = reason.check(ResponseDone, PotentialDataLoss)
        allCame = self.expected is not None and self.received >= self.expected
        if self._cut or (self.piece.complete and (ended or allCame)):
            # A reset after the last byte loses nothing.
            self.finished.callback(None)
            return
        if ended:
            if self.expected is not None and self.received < self.expected and not self.piece.complete:
                self.finished.errback(
                    ConnectionFailed(f"{self.download.url}: the body ended after {self.received} of {self.expected} bytes")
                )
            elif reason.check(PotentialDataLoss) and self.piece.end is not None and not self.piece.complete:
                self.finished.errback(ConnectionFailed(f"{self.download.url}: the connection closed before the body was complete"))
            else:
                self.finished.callback(None)
            return
        if _cause(reason, MalformedChunkedBody) is not None:
            # Not a passing fault: a retry would read the same.
            self.finished.errback(
                DownloadError(f"{self.download.url}: the server's answer is not valid HTTP (a malformed chunked body)")
            )
            return
        self.finished.errback(
            ConnectionFailed(f"{self.download.url}: the transfer broke after {self.received} bytes ({_describe(reason)})")
        )


def _encodeHeaders(given: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """
    A request's extra headers as sent: lower-case names, values as the
    bytes given (UTF-8, and bytes that were not UTF-8 as they came, as
    curl sends an argument); those the downloader sets itself left out.

    @raise ValueError: a name that is not a token, or a value holding a
        line break, another control character or a lone surrogate.
    """
    encoded = []
    for name, value in given.items():
        lowered = name.strip().lower()
        if not HEADER_NAME.fullmatch(lowered):
            raise ValueError(f"{name!r} is not a header name")
        if lowered in RESERVED_HEADERS:
            continue
        try:
            raw = value.strip().encode("utf-8", "surrogateescape")
        except (AttributeError, UnicodeEncodeError):
            raise ValueError(f"the value of the header {name!r} is not text") from None
        if any(byte < 0x20 and byte != 0x09 or byte == 0x7F for byte in raw):
            raise ValueError(f"the value of the header {name!r} holds a control character")
        encoded.append((lowered.encode("ascii"), raw))
    return encoded


class _GaveBack(Exception):
    """
    A connection left the rest of its range to the others, and ends.
    """


class _Download:
    """
    One job's download: finds its resume state, asks for the file (in
    pieces when it can), keeps the state file up to date, verifies and
    renames.
    """

    def __init__(self, downloader: "Downloader", job: Job) -> None:
        self.downloader = downloader
        self.settings = downloader.settings
        self.clock = downloader.clock
        self.job = job
        self.request = job.request
        self.directory = Path(self.request.directory)
        self.url, self.authorization = splitURL(self.request.url)
        problem = self._hostProblem(self.url)
        if problem is not None:
            raise BadURL(f"{redact(self.request.url)}: {problem}")
        if "\0" in str(self.directory):
            raise ValueError("the directory name holds a NUL character")
        self.checksum = parseChecksum(self.request.checksum) if self.request.checksum else None
        self.extraHeaders = _encodeHeaders(self.request.headers or {})
        self.state = DownloadState(url=self.url, finalUrl=self.url, checksum=self.request.checksum)
        self.partPath: Optional[Path] = None
        self.finalPath: Optional[Path] = None
        self.fd: Optional[int] = None
        self.pieces: list[_Piece] = []
        self.pending: list[_Piece] = []
        self.workers: set[Deferred] = set()
        self.mostWorkers = 0
        self.resumedFrom = 0
        # With continueExisting: the length of the user's file this download
        # continues.  Nothing below it is ever dropped, and it is given back
        # under its own name when the download cannot go on.
        self.adopted: Optional[int] = None
        self.started = False
        self._transferDone: Optional[Deferred] = None
        self._error: Optional[Failure] = None
        self._slotKey = origin(self.url)
        # While one connection follows the redirects again for a link that
        # expired (L{_nextLink}): the others waiting for the link it gets.
        self._following: Optional[list[Deferred]] = None
        self._lastSave = 0.0
        self._noRanges = False
        #: The .part was found removed or replaced (said once), and the
        #: state file this download last wrote (device, inode).
        self._lostPart = False
        self._stateIdentity: Optional[tuple[int, int]] = None
        self._stopping = False
        self.discardOnCancel = False
        self._idle: set[Deferred] = set()
        self.displayUrl = redact(self.request.url)

    # -- the whole download ------------------------------------------------

    async def run(self) -> DownloadResult:
        began = self.clock.seconds()
        self.directory.mkdir(parents=True, exist_ok=True)
        await self._findResume()
        restarts = 0
        try:
            while True:
                try:
                    await self._transfer()
                    break
                except _Restart as restart:
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        raise RemoteChanged(f"{self.url}: {restart.reason}, {restarts} times; giving up") from None
                    log.info("{url}: starting over: {reason}", url=self.url, reason=restart.reason)
                    self._startOver(restart.reason, restart.rangesSupported)
            size = self._finish()
            self.job.state = "verifying"
            await self._verify()
            await self._sync()
            self._rename()
        except CancelledError:
            if self.adopted is not None and (self.discardOnCancel or not self._appended()):
                self._giveBack()
            elif self.discardOnCancel:
                self._discard()
                self.job.done = 0
            else:
                self._saveState()
                self._close()
            raise
        except DownloadError as e:
            self._failed(e)
            raise
        except OSError as e:
            # A rename's error may be its destination's (a directory in the way).
            destination = e.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST)
            where = (e.filename2 if destination else None) or e.filename or self.directory
            problem = LocalFileError(f"{self.url}: cannot write {where}: {e.strerror}")
            self._failed(problem)
            raise problem from None
        return DownloadResult(
            url=self.request.url,
            path=self.finalPath,
            size=size,
            seconds=self.clock.seconds() - began,
            resumedFrom=self.resumedFrom,
            segments=self.mostWorkers,
        )

    def _failed(self, e: DownloadError) -> None:
        if self.adopted is not None and not (e.retryable and self._appended()):
            # Only a transfer that broke keeps what it added, for a later
            # run to resume; anything else puts the user's file back.
            self._giveBack()
        elif isinstance(e, (ChecksumMismatch, TooLarge)) or (self.fd is not None and not self.state.done):
            # Nothing worth resuming: no stray .part is left behind.
            self._discard()
            self.job.done = 0
        else:
            self._saveState()
            self._close()
            self.job.done = covered(self.state.done)  # what a later run resumes from

    # -- finding what is already on disk ----------------------------------

    async def _findResume(self) -> None:
        """
        Pick up a state file of this URL (by the C{.part} an earlier run
        chose, the wanted name, the URL's name, or any state file in the
        directory naming this URL, listed in a thread), or with
        C{continueExisting} a file already under the final name.
        """
        earlier = self.request.partName
        wanted = names.sanitiseName(self.request.name) if self.request.name else None
        # The name it is saved under (see _start): never one of ours.
        guess = names.avoidReserved(wanted or names.chooseName(self.url))
        part = self.directory / (guess + PART_SUFFIX)
        tried: set[Path] = set()  # each .part looked at once (a warning about it said once)

        def resumed(candidate: Path) -> bool:
            if candidate in tried:
                return False
            tried.add(candidate)
            state = loadState(statePathFor(candidate))
            if state is not None and state.url == self.url and self._claim(candidate):
                self._resumeFrom(candidate, state)
                return True
            return False

        if earlier and isPartName(earlier) and resumed(self.directory / earlier):
            return
        if resumed(part):
            return
        if not wanted:
            for statePath in await self.downloader._statesNaming(self.directory, self.url):
                if resumed(statePath.with_name(statePath.name[: -len(STATE_SUFFIX)])):
                    return
        if self.request.continueExisting:
            existing = self.directory / guess
            if existing.is_file() and not existing.is_symlink() and not part.exists() and self._claim(existing):
                try:
                    os.rename(existing, part)
                except OSError as e:
                    self._close()
                    raise LocalFileError(f"{self.url}: cannot rename {existing}: {e.strerror}") from None
                size = os.fstat(self.fd).st_size
                state = DownloadState(
                    url=self.url,
                    finalUrl=self.url,
                    done=[(0, size)] if size else [],
                    checksum=self.request.checksum,
                    adopted=size,
                )
                self._resumeFrom(part, state)
                self._saveState()  # a crash now leaves a .part a later run resumes, never truncates

    def _claim(self, part: Path) -> bool:
        """
        Open and lock an existing C{.part} file for this download.

        @return: whether it is now ours: C{False} when it is gone, when
            another download (of this process or another) is writing it, or
            when it is not a file of its own (a hard link to a file
            elsewhere, a symbolic link, a FIFO, a directory), which is left
            as it is.
        """
        try:
            fd = _openPart(part, create=False)
        except FileNotFoundError:
            return False
        except OSError as e:
            # Planted or made by hand: a hard link, a FIFO, a directory, a
            # symbolic link (refused by O_NOFOLLOW: ELOOP, EMLINK on
            # FreeBSD).  Left as it is.
            if isinstance(e, _NotOwnFile) or e.errno in (errno.ELOOP, errno.EMLINK, errno.EISDIR):
                why = {errno.ELOOP: "it is a symbolic link", errno.EISDIR: "it is a directory"}.get(
                    e.errno or 0, e.strerror
                )
                log.warn("{url}: not resuming {part}: {why}", url=self.url, part=visibleText(str(part)), why=why)
                return False
            raise LocalFileError(f"{self.url}: cannot open {part}: {e.strerror}") from None
        if fd is None:
            log.info("{url}: not resuming {part}: another download is writing it", url=self.url, part=visibleText(str(part)))
            return False
        self.fd = fd
        return True

    def _claimNew(self, name: str) -> None:
        """
        Choose the final name and open and lock a new C{.part} file for it,
        passing over names another download is writing.
        """
        while True:
            final = names.freePath(
                self.directory,
                name,
                overwrite=self.request.overwrite,
                partSuffix=PART_SUFFIX,
                hints=self.downloader._freeNames,
            )
            part = final.with_name(final.name + PART_SUFFIX)
            if not names.isInside(self.directory, part):  # never expected: names are plain
                raise LocalFileError(f"{self.url}: refusing to write outside {self.directory}")
            try:
                fd = _openPart(part, create=True, exclusive=not self.request.overwrite)
            except FileExistsError:
                continue  # made since freePath looked: freePath now passes over it
            except OSError as e:
                raise LocalFileError(f"{self.url}: cannot open {part}: {e.strerror}") from None
            if fd is not None:
                self.finalPath, self.partPath, self.fd = final, part, fd
                return
            if self.request.overwrite:
                raise LocalFileError(f"{self.url}: another download is writing {part}")
            # Another download took this name since freePath looked: its
            # .part now exists, so freePath passes over it.

    def _resumeFrom(self, part: Path, state: DownloadState) -> None:
        self.partPath = part
        self.finalPath = part.with_name(part.name[: -len(PART_SUFFIX)])
        self.state = state
        self.state.url = self.url
        self.state.checksum = self.request.checksum
        # Bytes past the .part's end, or in its holes (a segmented
        # download's .part is sparse), are not on disk, whatever the state
        # says (a crash before they were written out, a planted state).
        onDisk = os.fstat(self.fd).st_size
        clipped = intersectRanges(clipRanges(state.done, onDisk), dataExtents(self.fd, onDisk))
        if clipped != state.done:
            log.warn(
                "{url}: {part} holds {size} of the bytes its state file says; only those are kept",
                url=self.url,
                part=visibleText(str(part)),
                size=covered(clipped),
            )
            self.state.done = clipped
        if state.adopted is not None:
            self.adopted = self.state.adopted = min(state.adopted, onDisk)
            self.state.done = addRange(self.state.done, 0, self.adopted)
        elif state.size is not None and not state.rangesSupported:
            # Bytes of a server without ranges cannot be continued.
            self.state.done = []
        if state.size is None:
            # Ranges are asked for once the size is known: before, only
            # the first bytes can have come.  Others are damaged or planted.
            prefix = self.state.done[:1] if self.state.done and self.state.done[0][0] == 0 else []
            if prefix != self.state.done:
                log.warn(
                    "{url}: the state file of {part} claims bytes past a gap; only the first {size} are kept",
                    url=self.url,
                    part=visibleText(str(part)),
                    size=covered(prefix),
                )
                self.state.done = prefix
        self.resumedFrom = covered(self.state.done)
        self.job.name = self.finalPath.name
        self.job.path = str(self.finalPath)
        self.job.size = state.size
        self.job.done = self.resumedFrom
        log.info("{url}: resuming with {done} bytes on disk", url=self.url, done=self.resumedFrom)

    # -- transfer orchestration -------------------------------------------

    def _transfer(self) -> Deferred:
        """
        Run workers until every byte is on disk; fails with the first
        worker's error (the others are stopped).
        """
        # A worker that fails at once settles (and forgets) _transferDone
        # inside _spawn: what is returned is this local reference.
        done = self._transferDone = Deferred(self._cancelTransfer)
        self._error = None
        self._stopping = False
        self.pieces = []
        self.pending = []
        if self.state.size is not None and self.state.rangesSupported and self.state.done:
            missing = gaps(self.state.done, self.state.size)
            if not missing:
                # Everything is on disk already; a one-byte request still
                # checks the remote file has not changed.
                first = _Piece(self.state.size - 1, self.state.size) if self.state.size else _Piece(0, None)
                first.validating = True
                self._spawn(first)
                return done
            first = _Piece(*missing[0])
            self.pending = [_Piece(*gap) for gap in missing[1:]]
        elif self.state.done and self.state.size is None:
            # Continuing a plain file of unknown size (wget -c).
            first = _Piece(self.state.done[0][1], None)
        else:
            first = _Piece(0, None)
        self._spawn(first)
        return done

    def _spawn(self, piece: Optional[_Piece]) -> None:
        d = Deferred.fromCoroutine(self._work(piece))
        self.workers.add(d)
        d.addBoth(self._workerEnded, d)

    def _workerEnded(self, result, d: Deferred) -> None:
        self.workers.discard(d)
        if isinstance(result, Failure) and not result.check(CancelledError) and self._error is None:
            self._error = result
            self._stopWorkers()
        if not self.workers and self._transferDone is not None and not self._transferDone.called:
            done, self._transferDone = self._transferDone, None
            if self._error is not None:
                done.errback(self._error)
            else:
                done.callback(None)

    def _cancelTransfer(self, d: Deferred) -> None:
        self._transferDone = None  # Deferred.cancel fails it with CancelledError
        self._stopWorkers()

    def _stopWorkers(self) -> None:
        self._stopping = True  # a worker that swallowed its cancellation stops at its next step
        for worker in list(self.workers):
            worker.cancel()

    def _workLeft(self) -> bool:
        """
        Whether L{_nextPiece} would find work.
        """
        return bool(self.pending) or self._victim() is not None

    def _victim(self) -> Optional[_Piece]:
        """
        The active piece with the most left, if it is worth splitting.
        """
        if not self.state.rangesSupported or self.state.size is None:
            return None
        active = [p for p in self.pieces if p.end is not None and not p.complete]
        if not active:
            return None
        victim = max(active, key=lambda p: p.remaining)
        smallest = max(256 * 1024, self.settings.minSplitSize // 4)
        return victim if victim.remaining >= 2 * smallest else None

    def _nextPiece(self) -> Optional[_Piece]:
        """
        Work for an idle connection: a pending range, or the second half of
        the active piece with the most left (work stealing, so that every
        connection finishes at about the same time).
        """
        if self.pending:
            return self.pending.pop(0)
        victim = self._victim()
        if victim is None:
            return None
        middle = victim.pos + victim.remaining // 2
        middle -= middle % (64 * 1024) if middle % (64 * 1024) < victim.remaining // 4 else 0
        stolen = _Piece(middle, victim.end)
        victim.end = middle
        return stolen

    def _split(self, first: _Piece) -> None:
        """
        Once the size is known and ranges work (and have not failed this
        run), start more connections, as
        C{segments} and the limits allow.  They join as slots come free and
        each takes a pending range or half of the piece with the most left
        (see L{_nextPiece}), so nothing is cut up for a connection that
        never comes.
        """
        size = self.state.size
        if self.settings.segments <= 1 or size is None or size < self.settings.minSplitSize or self._noRanges:
            # (Once fallen back to one stream, never split again.)
            return
        left = size - covered(self.state.done)
        count = min(
            self.settings.segments,
            self.settings.maxPerHost,
            self.settings.maxConnections,
            max(1, left // (256 * 1024)),
        )
        for _ in range(count - 1):
            self._spawn(None)

    async def _work(self, piece: Optional[_Piece]) -> None:
        """
        One connection's loop: take a piece once a slot is free, fetch it
        (retrying), repeat while there is work.
        """
        while True:
            slot = _HeldSlot(self.downloader._slots)
            if piece is None:
                waiting = slot.take(self._slotKey)
                self._idle.add(waiting)
                try:
                    await waiting
                finally:
                    self._idle.discard(waiting)
                piece = self._nextPiece()
                if piece is None:
                    slot.release()
                    return
            self.pieces.append(piece)
            self.mostWorkers = max(self.mostWorkers, len(self.pieces))
            try:
                try:
                    await self._fetchWithRetries(piece, slot)
                finally:
                    self.pieces.remove(piece)
                    self._record(piece)
            except _GaveBack:
                return
            piece = None
            if not self.pieces and not self.pending:
                # Nothing left to share: workers still queued for a slot
                # need not wait for one.
                for waiting in list(self._idle):
                    waiting.cancel()
            if not self._workLeft():
                # Finished here: not queued for a slot behind every job not
                # started yet only to find no work (the file waited unnamed,
                # its descriptor open, until the whole list had started).
                return

    def _record(self, piece: _Piece) -> None:
        if piece.pos > piece.start:
            self.state.done = addRange(self.state.done, piece.start, piece.pos)

    async def _fetchWithRetries(self, piece: _Piece, slot: _HeldSlot) -> None:
        """
        Fetch C{piece}, retrying with backoff, with C{slot} (already taken
        for the first attempt, or not).
        """
        failures = 0
        while True:
            if self._stopping:
                slot.release()
                raise CancelledError()
            before = piece.pos
            if not slot.held:
                await slot.take(self._slotKey)
            try:
                self.job.attempts += 1
                self.job.state = "running"
                await self._fetchOnce(piece, slot)
            except DownloadError as e:
                problem = e
            else:
                problem = None
            finally:
                # Whichever origin the request ended on (see _request).
                slot.release()
            if problem is None:
                if piece.complete or piece.validating or (piece.end is None and not self._endUnknown):
                    if piece.end is None:
                        piece.end = piece.pos
                    return
                if piece.pos > before:
                    # A shorter range than asked for, or one of a file whose
                    # end is not known yet: ask for the rest.
                    continue
                problem = ConnectionFailed(f"{self.displayUrl}: the server sent an empty range")
            if self._stopping:
                # Stopped meanwhile: what the cancelled step failed with
                # (a name lookup's DNS error) is no reason to retry.
                raise CancelledError()
            if not problem.retryable:
                raise problem
            progressed = piece.pos - before
            if self.state.rangesSupported and progressed >= PROGRESS_FORGIVES:
                failures = 0
            failures += 1
            if failures > self.settings.retries:
                if self._othersGoOn(piece):
                    # One connection too many for this server (503s past a
                    # limit of connections, resets): the rest of its range
                    # goes to the connections that work, as aria2 does.
                    self.pending.append(_Piece(piece.pos, piece.end))
                    log.info(
                        "{url}: one connection fewer, its {left} bytes left to the others: {reason}",
                        url=self.displayUrl,
                        left=piece.remaining,
                        reason=str(problem),
                    )
                    piece.end = piece.pos
                    raise _GaveBack()
                raise problem
            if self.started and not self.state.rangesSupported and piece.pos > 0:
                # Without ranges a retry starts from zero.  (Before the first
                # answer nobody knows: bytes on disk are asked for again.)
                self.job.done -= piece.pos - piece.start
                piece.pos = piece.start = 0
                if self.state.done:
                    self.job.done -= covered(self.state.done)
                    self.state.done = []
            delay = self._backoff(failures, problem.retryAfter)
            self.job.state = "retrying"
            self.job._retried = str(problem)
            self.downloader._emit(
                {"event": "retry", "job": self.job.id, "attempt": failures, "delay": round(delay, 3), "reason": str(problem)}
            )
            log.info("{url}: retry {n} in {delay:.1f}s: {reason}", url=self.displayUrl, n=failures, delay=delay, reason=str(problem))
            await task.deferLater(self.clock, delay, lambda: None)

    def _othersGoOn(self, piece: _Piece) -> bool:
        """
        Whether C{piece}, whose retries are spent, can be left to the other
        connections: they fetch ranges of a file of known size, and one of
        them is fetching now.
        """
        if not self.state.rangesSupported or piece.end is None or piece.validating:
            return False
        return any(other is not piece and not other.complete for other in self.pieces)

    def _backoff(self, failures: int, retryAfter: Optional[float]) -> float:
        if retryAfter is not None:
            return min(retryAfter, self.settings.maxRetryWait)
        ceiling = min(self.settings.maxRetryWait, self.settings.retryWait * 2 ** min(failures - 1, 64))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    # -- one request --------------------------------------------------------

    def _headers(self, url: str) -> dict[bytes, list[bytes]]:
        headers: dict[bytes, list[bytes]] = {
            b"user-agent": [self.settings.userAgent.encode("latin-1", "replace")],
            b"accept": [b"*/*"],
        }
        sameOrigin = origin(url) == origin(self.url)
        for name, value in self.extraHeaders:
            if name in (b"authorization", b"cookie", b"proxy-authorization") and not sameOrigin:
                continue
            headers[name] = [value]  # in place of a default (User-Agent, Accept)
        if sameOrigin and self.authorization and b"authorization" not in headers:
            headers[b"authorization"] = [self.authorization.encode("ascii")]
        return headers

    async def _request(self, url: str, headers: dict[bytes, list[bytes]], slot: _HeldSlot):
        """
        GET C{url}, following redirects (http and https only, at most
        C{maxRedirects}, credentials only to the first origin); returns the
        final response and its URL.  C{slot} is moved to each origin asked
        before it is asked, so C{maxPerHost} holds for the origins really
        connected to.
        """
        client = self.downloader._client
        hops = 0
        while True:
            await slot.holdFor(origin(url))
            hopHeaders = self._headers(url)
            for name in (b"range", b"if-range"):
                if name in headers:
                    hopHeaders[name] = headers[name]
            d = client.request("GET", _ReadyURL.from_text(url), headers=hopHeaders, allow_redirects=False, unbuffered=True)
            limit = self.settings.headerTimeout
            timedOut = []
            timer = self.clock.callLater(limit, lambda: (timedOut.append(True), d.cancel()))
            try:
                response = await d
            except CancelledError:
                if timedOut:
                    raise DownloadTimeout(f"{url}: no response within {limit:g} seconds") from None
                raise
            except Exception:
                failure = Failure()
                if timedOut:
                    # Whatever the cancelled step failed with (Twisted
                    # fails a cancelled name lookup as a DNS error).
                    raise DownloadTimeout(f"{url}: no response within {limit:g} seconds") from None
                if _cause(failure, CancelledError, netError.ConnectingCancelledError):
                    # Cancelled while connecting or waiting for the head:
                    # Twisted wraps the CancelledError.
                    if timedOut:
                        raise DownloadTimeout(f"{url}: no response within {limit:g} seconds") from None
                    raise CancelledError() from None
                refused = _cause(failure, DestinationRefused)
                if refused is not None:
                    raise DownloadError(f"{url}: refused: {refused.value.args[0]}") from None
                garbled = _garbled(failure)
                if garbled is not None:
                    # Not a passing fault: a retry would read the same.
                    raise DownloadError(f"{url}: the server's answer is not valid HTTP{_parseDetail(garbled)}") from None
                tooLarge = _cause(failure, ResponseHeadTooLarge)
                if tooLarge is not None:
                    # A server that does this is broken or hostile: no retry.
                    raise DownloadError(f"{url}: {tooLarge.value}") from None
                if _cause(failure, TLSError, VerificationError, CertificateError):
                    # A certificate that does not check out will not check
                    # out on a retry either.
                    raise DownloadError(f"{url}: {_describe(failure)}") from None
                described = _describe(failure)
                if (
                    self.settings.proxy
                    and failure.check(netError.ConnectError, netError.DNSLookupError)
                    and not failure.check(ProxyError)
                ):
                    # No connection was made: the one to the proxy failed
                    # (a ProxyError is the proxy's own answer).
                    described = f"cannot connect to the proxy {redact(self.settings.proxy)}: {described}"
                if _cause(failure, netError.TimeoutError):
                    raise DownloadTimeout(f"{url}: {described}") from None
                raise ConnectionFailed(f"{url}: {described}") from None
            finally:
                if timer.active():
                    timer.cancel()
            if response.code not in REDIRECTS:
                return response, url
            location = response.headers.getRawHeaders(b"location")
            _discard(response)
            if not location or not location[0].strip():
                raise HTTPStatusError(f"{url}: the server redirected without saying where to", response.code)
            hops += 1
            if hops > self.settings.maxRedirects:
                raise RedirectError(f"{self.url}: more than {self.settings.maxRedirects} redirects")
            try:
                # UTF-8, as browsers and curl read it; other bytes are
                # sent as they came (splitURL).
                reference = location[0].decode("utf-8", "surrogateescape").strip()
                target = controlsEncoded(urljoin(url, slashesAsBrowsersRead(reference)))
                scheme = urlsplit(target).scheme.lower()
            except ValueError:  # e.g. an unclosed IPv6 bracket
                raise RedirectError(f"{url}: redirected to an unusable URL") from None
            if scheme not in ("http", "https"):
                raise RedirectError(f"{url}: redirected to a {scheme or 'scheme-less'} URL; only http and https are followed")
            try:
                nextURL, _ = splitURL(target)  # credentials in a Location are never used
            except BadURL as e:
                raise RedirectError(f"{url}: redirected to an unusable URL ({e})") from None
            problem = self._hostProblem(nextURL)
            if problem is not None:
                raise RedirectError(f"{url}: redirected to {nextURL}, which cannot be fetched: {problem}")
            url = nextURL

    def _hostProblem(self, url: str) -> Optional[str]:
        """
        Why C{url} (as L{splitURL} gives it) cannot be fetched without a
        proxy when none is set, or with its certificate checked over
        C{https}; or L{None}.
        """
        return fetchHostProblem(url, self.settings.proxy is not None, not self.settings.insecure)

    async def _fetchOnce(self, piece: _Piece, slot: _HeldSlot) -> None:
        headers: dict[bytes, list[bytes]] = {}
        askedFrom = piece.pos
        fresh = not self.started and not self.state.done
        ranged = not self._noRanges and (fresh or self.state.rangesSupported or bool(self.state.done))
        if ranged:
            # A fresh download asks for everything as a range: one request
            # tells whether ranges work and how big the file is.
            last = "" if fresh or piece.end is None else str(piece.end - 1)
            headers[b"range"] = [f"bytes={piece.pos}-{last}".encode("ascii")]
            validator = self.state.etag or self.state.lastModified
            if validator and not fresh:
                headers[b"if-range"] = [validator.encode("latin-1")]
        # Once started, straight to where the redirects led; a link that
        # has expired since (pre-signed URLs and release assets live for
        # minutes) is followed to again from the URL given (_nextLink).
        url = self.state.finalUrl if self.started and self.state.finalUrl else self.url
        tried = {url}
        following = False
        try:
            while True:
                response, finalUrl = await self._request(url, headers, slot)
                try:
                    expected = self._accept(response, piece, askedFrom, ranged, finalUrl)
                except HTTPStatusError as e:
                    _discard(response)
                    if url == self.url or e.retryable or not 400 <= e.status < 500:
                        raise
                    url, following = await self._nextLink(tried)
                    if url is None:
                        raise
                    tried.add(url)
                    if following:
                        log.info("{url}: {answer}; following the redirect again", url=self.displayUrl, answer=str(e))
                    continue
                except BaseException:
                    _discard(response)
                    raise
                break
            if following:
                # A new link: the connections that follow go to it.
                self.state.finalUrl = finalUrl
                self._slotKey = origin(finalUrl)
        finally:
            if following:
                waiting, self._following = self._following or [], None
                for d in list(waiting):
                    if not d.called:
                        d.callback(None)
        if piece.validating:
            _discard(response)
            return
        reader = _BodyReader(self, piece, expected)
        response.deliverBody(reader)
        await reader.finished

    async def _nextLink(self, tried: set[str]) -> tuple[Optional[str], bool]:
        """
        After a link of the file answered a 4xx: the URL to ask next (none
        of C{tried}), and whether this connection is to follow the
        redirects from the URL given again for the whole file.  A link
        another connection got since comes first; while one follows the
        redirects again, the others wait for the link it gets; a
        connection follows them again at most once; L{None}: nothing left
        to try.  (Each connection following them on its own asked for as
        many new links, and a server that revokes a link when it makes a
        new one revoked the links the others had just got.)
        """
        while True:
            latest = self.state.finalUrl
            if latest != self.url and latest not in tried:
                return latest, False
            if self._following is None:
                if self.url in tried:
                    return None, False
                self._following = []
                return self.url, True
            waiters = self._following
            waiting: Deferred = Deferred(lambda d: waiters.remove(d))
            waiters.append(waiting)
            await waiting

    def _accept(self, response, piece: _Piece, askedFrom: int, ranged: bool, finalUrl: str) -> Optional[int]:
        """
        Check a response against what was asked and what is known; start
        the file on the first good one.  Returns how many body bytes the
        response promises (or L{None}).
        """
        code = response.code
        headers = response.headers

        def header(name: bytes) -> Optional[str]:
            values = headers.getRawHeaders(name)
            return values[-1].decode("latin-1") if values else None

        # A validator that may not be sent back in If-Range (RFC 9110 5.5:
        # control characters) is none: kept, it made the state file
        # unreadable, and the download could never resume.
        etag = header(b"etag")
        etag = etag if isHeaderValue(etag) else None
        strongETag = etag if etag and not etag.startswith("W/") else None
        lastModified = header(b"last-modified")
        lastModified = lastModified if isHeaderValue(lastModified) else None
        # A server that answers although If-Range named what we have (it
        # ignores If-Range) shows a change only by these.  Without the
        # strong ETag on record (none, or a weak one) the bytes cannot be
        # told the same (RFC 9110 13.1.5): a date then decides.
        newETag = bool(self.state.etag and strongETag and strongETag != self.state.etag)
        sameETag = bool(self.state.etag and strongETag == self.state.etag)
        lostETag = bool(self.state.etag and not strongETag)
        newDate = bool(
            not sameETag and self.state.lastModified and lastModified and lastModified != self.state.lastModified
        )

        if code == 416 and ranged:
            unsatisfied = _UNSATISFIED_RANGE.match(header(b"content-range") or "")
            total = unsatisfied.group(1) if unsatisfied else None
            total = None if total in (None, "*") else int(total)
            if self._endUnknown and askedFrom == piece.pos and total in (None, askedFrom) and not (newETag or newDate):
                # Nothing follows the bytes received: the end, at last.
                self.state.size = self.job.size = askedFrom
                if not self.started:
                    self._start(response, finalUrl)
                piece.end = piece.pos
                piece.validating = True
                return 0
            if (
                total is not None
                and total == askedFrom == covered(self.state.done)
                and self.state.size in (None, askedFrom)
                and not (newETag or newDate)
            ):
                # Everything was on disk already (wget -c of a whole file).
                self.state.size = askedFrom
                if not self.started:
                    self._start(response, finalUrl)
                piece.end = piece.pos
                piece.validating = True
                return 0
            if total is not None and total < askedFrom:
                raise _Restart(f"the remote file is {total} bytes, fewer than those on disk", rangesSupported=False)
            raise _Restart("the server cannot send the range on disk", rangesSupported=False)
        # After a redirect, the URL that answered is named too.
        redirected = "" if finalUrl == self.url else f"redirected to {finalUrl}, "
        if not 100 <= code <= 599:
            # No such status (RFC 9110 15): a retry would read the same.
            whose = f"{redirected}whose" if redirected else "the server's"
            raise DownloadError(f"{self.url}: {whose} answer is not valid HTTP (status {code})")
        if code >= 400:
            retryAfter = retryAfterSeconds(headers.getRawHeaders(b"retry-after", [None])[-1], time.time())
            phrase = response.phrase[:PHRASE_LENGTH].decode("latin-1", "replace") if response.phrase else ""
            who = f"{redirected}which" if redirected else "the server"
            raise HTTPStatusError(f"{self.url}: {who} answered {code} {phrase}".rstrip(), code, retryAfter)
        if code not in (200, 206):
            what = f"{redirected}which sent an unexpected answer" if redirected else "unexpected answer"
            raise HTTPStatusError(f"{self.url}: {what} {code}", code)

        length = response.length if isinstance(response.length, int) else None
        if length is not None:
            self._believable(length)

        if code == 206:
            multipart = (header(b"content-type") or "").strip().lower().startswith("multipart/")
            match = _CONTENT_RANGE.match(header(b"content-range") or "")
        if code == 206 and not ranged:
            if (
                match is not None
                and int(match.group(1)) == 0
                and match.group(3) != "*"
                and int(match.group(2)) + 1 == int(match.group(3))
                and length in (None, int(match.group(3)))
                and not multipart
            ):
                # No range was asked, and the whole file came as a 206 (a
                # server that answers every request so): a 200 in all but
                # its status.  Taken as ranges working, it split the file
                # again, and failed after 4 restarts.
                code, length = 200, int(match.group(3))
                self._believable(length)
        if code == 206:
            if multipart:
                raise _Restart("the server answered one range with several parts", rangesSupported=False)
            if not match:
                raise _Restart("the server sent a partial answer without a usable Content-Range", rangesSupported=False)
            rangeStart, rangeEnd, total = int(match.group(1)), int(match.group(2)), match.group(3)
            total = None if total == "*" else int(total)
            self._believable(max(rangeEnd + 1, total or 0))
            if (
                rangeStart != askedFrom
                or rangeEnd < rangeStart
                or (total is not None and rangeEnd >= total)
                or (length is not None and length != rangeEnd - rangeStart + 1)
            ):
                raise _Restart("the server's Content-Range does not match the range asked for", rangesSupported=False)
            if self.started or self.state.done:
                if newETag:
                    # Within one run, one stream: mirrors behind one name may
                    # each have an ETag of their own (aria2 compares none),
                    # and a file that did change comes whole either way.
                    raise _Restart("the remote file changed (new ETag)", rangesSupported=not self.started)
                if self.state.size is not None and total != self.state.size:
                    if newDate:
                        raise _Restart("the remote file changed (new size and date)", rangesSupported=True)
                    # Same file, two sizes: its ranges cannot be trusted.
                    raise _Restart("the server's ranges disagree on the file's size", rangesSupported=False)
                if newDate:
                    # A date alone may change at every request: the whole
                    # file as one stream is right in every case.
                    raise _Restart("the remote file changed (new Last-Modified)", rangesSupported=False)
                if lostETag:
                    # Nothing ties these bytes to those on disk.
                    raise _Restart("the server no longer sends the file's ETag", rangesSupported=False)
            if not self.started:
                # With a total of "*" the end is found by asking on (see
                # _endUnknown).
                self.state.size = total
                self.state.rangesSupported = True
                self._remember(strongETag, lastModified, finalUrl)
                self._start(response, finalUrl)
                if piece.end is None and total is not None:
                    piece.end = total
                if not piece.validating:
                    self._split(piece)
            elif self._endUnknown and total is not None:
                # The server names the size after all: carry on as usual.
                self._checkSize(total)
                self.state.size = self.job.size = piece.end = total
                self._split(piece)
            return rangeEnd - rangeStart + 1

        # 200: the whole file, from byte zero.
        if ranged and (askedFrom > 0 or self.started or self.state.done):
            if len(self.pieces) > 1:
                raise _Restart("the server ignored a range request", rangesSupported=False)
            # Ranges ignored, or If-Range found the file changed: this
            # answer is the whole file; take it as one stream from zero.
            validated = bool(self.state.etag or self.state.lastModified)  # If-Range was sent
            self._resetBytes("the remote file changed" if validated else "it ignores Range")
            self.pending = []
            piece.start = piece.pos = 0
            piece.end = None
            piece.validating = False
        self.state.size = length
        self.state.rangesSupported = False
        self.state.done = []
        self._remember(strongETag, lastModified, finalUrl)
        if not self.started or askedFrom > 0:
            self._start(response, finalUrl)
        if length is not None:
            piece.end = length
        return length

    def _believable(self, size: int) -> None:
        """
        @raise TooLarge: C{size} is more than any file can hold.
        """
        if size > MAX_FILE_SIZE:
            raise TooLarge(f"{self.url}: the server announces {size} bytes, more than any file can hold")

    def _remember(self, etag: Optional[str], lastModified: Optional[str], finalUrl: str) -> None:
        self.state.etag = etag
        self.state.lastModified = lastModified
        self.state.finalUrl = finalUrl
        self._slotKey = origin(finalUrl)

    @property
    def _endUnknown(self) -> bool:
        """
        Whether the file's end is still to be found: the server answers
        ranges but has not said the size (a 206 with a total of C{*}).  The
        next range is then asked for from the end of the last one, until a
        416 says there is no more.
        """
        return self.state.rangesSupported and self.state.size is None

    def _checkSize(self, size: Optional[int]) -> None:
        """
        @raise TooLarge: C{size} is over the C{maxSize} cap.
        """
        maxSize = self.settings.maxSize
        if size is not None and maxSize is not None and size > maxSize:
            raise TooLarge(f"{self.url}: the file is {size} bytes, over the limit of {maxSize}")

    def _start(self, response, finalUrl: str) -> None:
        """
        The first good response: check the size, choose the name, open the
        C{.part} file, announce the download.
        """
        size = self.state.size
        self._checkSize(size)
        if self._stopping:
            raise CancelledError()
        if self.partPath is None:
            wanted = self.request.name
            if wanted:
                name = names.sanitiseName(wanted)
            else:
                disposition = response.headers.getRawHeaders(b"content-disposition")
                # Bytes that are not UTF-8 are kept, percent-encoded in the name (names.percentUndecoded).
                value = disposition[-1].decode("utf-8", "surrogateescape") if disposition else None
                name = names.chooseName(finalUrl, value)
                if not value and names.nameFromURL(finalUrl) is None:
                    name = names.chooseName(self.url)
            self._claimNew(names.avoidReserved(name))
        if not self.state.done:
            self._emptyPart()
        if size is not None and self.state.rangesSupported and self.settings.segments > 1 and size >= self.settings.minSplitSize:
            try:
                os.ftruncate(self.fd, size)  # one sparse file the pieces are written into
            except OSError as e:
                raise LocalFileError(f"{self.url}: cannot make {self.partPath} {size} bytes long: {e.strerror}") from None
        self.started = True
        self.job.name = self.finalPath.name
        self.job.path = str(self.finalPath)
        self.job.size = size
        self.job.done = covered(self.state.done)
        self.job.state = "running"
        self._saveState()
        self.downloader._emit(
            {
                "event": "start",
                "job": self.job.id,
                "url": self.displayUrl,
                "name": self.finalPath.name,
                "path": str(self.finalPath),
                "size": size,
                "resumed": self.job.done,
            }
        )

    def _resetBytes(self, reason: str) -> None:
        """
        Drop every byte on disk, because of C{reason}.

        @raise _CannotContinue: some are a file of the user's (C{-c}).
        """
        if self.adopted:
            if self.request.continueExisting:
                how = "remove it or run without -c"
            else:  # continued with -c by an earlier run
                how = "remove it, or run again to get the new file under another name"
            raise _CannotContinue(
                f"{self.url}: the server cannot resume {self.finalPath.name}: {reason};"
                f" the file is left as it was; {how}"
            )
        self.state.done = []
        self.resumedFrom = 0
        self.job.done = 0
        if self.fd is not None:
            self._emptyPart()

    def _emptyPart(self) -> None:
        """
        Make the C{.part} file empty.  A large one is replaced by a new
        empty file (see L{TRUNCATE_IN_PLACE}), made and locked under a
        hidden name, then renamed over it; where that cannot be done, or
        the name no longer holds this download's file, it is truncated.
        """
        fd = self.fd
        if os.fstat(fd).st_blocks * 512 > TRUNCATE_IN_PLACE and self._stillOurs():
            part = self.partPath
            fresh = part.with_name(f".{part.name}.{random.getrandbits(32):08x}")
            try:
                newFd = _openPart(fresh, create=True, exclusive=True)
            except OSError:
                newFd = None
            if newFd is not None:
                try:
                    os.rename(fresh, part)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(fresh)
                    os.close(newFd)
                else:
                    self.fd = newFd
                    closeInThread(self.downloader.reactor, fd)
                    return
        os.ftruncate(fd, 0)

    def _startOver(self, reason: str, rangesSupported: bool) -> None:
        self._resetBytes(reason)
        self.state = DownloadState(url=self.url, finalUrl=self.url, checksum=self.request.checksum, adopted=self.adopted)
        self.started = False
        self.resumedFrom = 0
        self._slotKey = origin(self.url)
        self._noRanges = self._noRanges or not rangesSupported

    def write(self, data: bytes, offset: int) -> None:
        """
        Write C{data} at C{offset} of the C{.part} file.

        @raise LocalFileError: when the disk refuses any of it.
        """
        view = memoryview(data)
        try:
            while view:
                # A full disk or a file size limit writes only part of a
                # chunk first; the error comes with the next call.
                written = os.pwrite(self.fd, view, offset)
                if written <= 0:
                    raise OSError(errno.EIO, "the file takes no more bytes")
                view = view[written:]
                offset += written
        except OSError as e:
            raise LocalFileError(f"{self.url}: cannot write {self.partPath}: {e.strerror}") from None

    # -- the end --------------------------------------------------------------

    def _finish(self) -> int:
        """
        Check every byte is there; trim the file to its size; returns it.
        """
        size = self.state.size
        if size is None:
            size = max((e for _, e in self.state.done), default=0)
            self.state.size = size
        missing = gaps(self.state.done, size)
        if missing:
            raise ConnectionFailed(f"{self.url}: {covered(missing)} bytes are missing at the end")
        if self.fd is None:
            raise ConnectionFailed(f"{self.url}: no data arrived")
        os.ftruncate(self.fd, size)
        self.job.size = size
        self.job.done = size
        return size

    async def _verify(self) -> None:
        if self.checksum is None:
            return
        algorithm, expected = self.checksum
        digest = hashlib.new(algorithm)
        fd = self.fd

        def chunks():
            offset = 0
            # (Cancelled: the descriptor is closed, or being closed in a
            # thread, and its number may soon be another file's.)
            while self.fd == fd:
                chunk = os.pread(fd, HASH_CHUNK, offset)
                if not chunk:
                    return
                digest.update(chunk)
                offset += len(chunk)
                yield None

        await task.cooperate(chunks()).whenDone()
        if self.fd != fd:
            raise CancelledError()
        if digest.hexdigest() != expected:
            raise ChecksumMismatch(
                f"{self.url}: the {algorithm} checksum does not match (expected {expected}, got {digest.hexdigest()})"
            )

    async def _sync(self) -> None:
        """
        Write the file through to the disk, in a thread of the reactor's
        pool so that the other downloads go on meanwhile.  The thread syncs
        its own duplicate of the descriptor: a cancelled download may close
        its own at once.
        """
        if not self.downloader.settings.sync:
            return
        fd = os.dup(self.fd)

        def sync() -> None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        reactor = self.downloader.reactor
        await threads.deferToThreadPool(reactor, reactor.getThreadPool(), sync)

    def _rename(self) -> None:
        """
        Give the verified file its final name, never replacing a file that
        appeared meanwhile unless asked.  The C{.part} stays locked until
        it and its state file are gone, so no other download resumes it.
        """
        if not self._stillOurs():
            self._partLost()
            raise LocalFileError(
                f"{self.url}: {self.partPath} was removed or replaced while it downloaded; the download is not saved"
            )
        final = self.finalPath
        hints = self.downloader._freeNames
        if self.request.overwrite:
            os.replace(self.partPath, final)
        else:
            while True:
                try:
                    os.link(self.partPath, final)
                except FileExistsError:
                    final = names.freePath(self.directory, self.finalPath.name, partSuffix=PART_SUFFIX, hints=hints)
                    if final == self.finalPath:  # only our own .part was in the way
                        final = names.freePath(
                            self.directory, self.finalPath.name + ".1", partSuffix=PART_SUFFIX, hints=hints
                        )
                    continue
                except OSError:
                    # No hard links here (some shared file systems): check, then rename.
                    if os.path.lexists(final):
                        final = names.freePath(self.directory, final.name, partSuffix=PART_SUFFIX, hints=hints)
                        continue
                    os.rename(self.partPath, final)
                    break
                os.unlink(self.partPath)
                break
        self.finalPath = final
        self.job.name = final.name
        self.job.path = str(final)
        try:
            os.unlink(statePathFor(self.partPath))
        except FileNotFoundError:
            pass
        self._close()

    def _partLost(self) -> None:
        """
        The C{.part} was removed or replaced: say so once, and delete the
        state file this download wrote beside it, if it is still there, so
        that no later run resumes what took the C{.part}'s place from it
        (a file of other bytes was saved under the final name, its hash
        wrong).
        """
        if self._lostPart or self.partPath is None:
            return
        self._lostPart = True
        log.warn("{url}: {part} was removed or replaced; its resume state is not kept",
                 url=self.url, part=visibleText(str(self.partPath)))
        statePath = statePathFor(self.partPath)
        try:
            there = os.lstat(statePath)
            if (there.st_dev, there.st_ino) == self._stateIdentity:
                os.unlink(statePath)
        except OSError:
            pass

    def _stillOurs(self) -> bool:
        """
        Whether the C{.part} path still names the file this download
        writes: another program (or user) may have removed or replaced it,
        and what is there now is not ours to name, save state for, or
        delete.
        """
        if self.partPath is None or self.fd is None:
            return False
        try:
            there = os.lstat(self.partPath)
        except OSError:
            return False
        ours = os.fstat(self.fd)
        return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)

    def _saveState(self) -> None:
        if self.partPath is None or self.fd is None or not (self.started or self.adopted is not None):
            return
        if not self._stillOurs():
            self._partLost()
            return
        done = list(self.state.done)
        for piece in self.pieces:
            if piece.pos > piece.start:
                done.append((piece.start, piece.pos))
        state = replace(self.state, done=mergeRanges(done))
        try:
            state.save(statePathFor(self.partPath))
            saved = os.lstat(statePathFor(self.partPath))
            self._stateIdentity = (saved.st_dev, saved.st_ino)
        except OSError as e:
            log.warn("{url}: cannot save the resume state: {error}", url=self.url, error=e.strerror)
        self._lastSave = self.clock.seconds()

    def _close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            if self.partPath is not None and self._lostPart:
                # Removed meanwhile: the last close frees its blocks.
                closeInThread(self.downloader.reactor, fd)
            else:
                os.close(fd)

    def _appended(self) -> bool:
        """
        Whether bytes were added to an adopted file (a later run can resume
        them).
        """
        inFlight = [(piece.start, piece.pos) for piece in self.pieces]
        return self.adopted is not None and covered(mergeRanges([*self.state.done, *inFlight])) > self.adopted

    def _giveBack(self) -> None:
        """
        Put a file adopted with C{continueExisting} back as it was: cut to
        its own length, under its own name, without a state file.
        """
        part, own = self.partPath, self.finalPath
        if not self._stillOurs():
            log.warn("{url}: cannot give {own} back its name: {part} was removed or replaced", url=self.url,
                     own=visibleText(str(own)), part=visibleText(str(part)))
            self._partLost()
            self._close()
            return
        try:
            os.ftruncate(self.fd, self.adopted)
            try:
                os.link(part, own)  # never over a file that appeared meanwhile
            except FileExistsError:
                raise
            except OSError:
                # No hard links here (some shared file systems): check, then rename.
                if own.exists():
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)) from None
                os.rename(part, own)
            else:
                os.unlink(part)
        except OSError as e:
            # Its state says what is the user's: a later run never cuts that.
            log.warn("{url}: cannot give {own} back its name, it stays {part}: {error}", url=self.url, own=visibleText(str(own)),
                     part=visibleText(str(part)), error=e.strerror)
        else:
            with contextlib.suppress(OSError):
                os.unlink(statePathFor(part))
        self._close()
        self.job.done = self.adopted

    def _discard(self) -> None:
        if not self._stillOurs():  # what is there now is another's
            self._partLost()
            self._close()
            return
        # Unlinked before the lock goes with the descriptor, so that no
        # other download can claim the .part in between.
        for path in (self.partPath, statePathFor(self.partPath) if self.partPath else None):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warn("cannot delete {path}: {error}", path=visibleText(str(path)), error=e.strerror)
        fd, self.fd = self.fd, None
        if fd is not None:
            closeInThread(self.downloader.reactor, fd)


def closeInThread(reactor: object, fd: int) -> None:
    """
    Close C{fd} in a thread of C{reactor}'s pool (where it has one): the
    last close of a file already unlinked frees its blocks, which took the
    reactor 0.5 s for 1.5 GB (1.76 s for 6 GB), every service waiting.
    """
    if IReactorThreads.providedBy(reactor):
        reactor.callInThread(os.close, fd)  # type: ignore[attr-defined]
    else:
        os.close(fd)


def discardPart(part: Path, url: str, reactor: Optional[object] = None) -> bool:
    """
    Delete the C{.part} file C{part} and its state file, when that says it
    is a download of C{url} and no download (of this process or another)
    is writing it: the name may have gone to another download since.

    @param reactor: whose thread pool closes the file (see
        L{closeInThread}); by default it is closed here.
    @return: whether they were deleted.
    """
    try:
        fd = _openPart(part, create=False)
    except OSError:
        return False
    if fd is None:
        return False
    state = loadState(statePathFor(part))
    if state is None or state.url != url:
        os.close(fd)
        return False
    try:
        for path in (part, statePathFor(part)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    except OSError as e:
        log.warn("cannot delete {path}: {error}", path=visibleText(str(path)), error=e.strerror)
        os.close(fd)
        return False
    closeInThread(reactor, fd)
    return True


class _NotOwnFile(OSError):
    """
    A C{.part} that is not a regular file of its own: a hard link to a file
    elsewhere, a FIFO, a device.
    """


def _openPart(path: Path, create: bool, exclusive: bool = False) -> Optional[int]:
    """
    Open a C{.part} file for reading and writing (never through a symbolic
    link, nor a file with other names: a hard link planted there would have
    the download write into a file elsewhere) and lock it, so that two
    downloads never write one file.

    @param exclusive: with C{create}, the file must not exist yet.
    @return: the descriptor, or L{None} when another download holds the
        lock.  Where the file system has no locks, the file is opened
        unlocked.
    @raise _NotOwnFile: it is not a regular file of its own, or belongs to
        another user (a file planted in a shared directory, which would be
        resumed as the download, and given its final name, still theirs).
    @raise FileExistsError: C{exclusive}, and it exists.
    @raise OSError: it cannot be opened.
    """
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if create:
        flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
    fd = os.open(path, flags, 0o644)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise _NotOwnFile(errno.EINVAL, "not a regular file")
    # (One made here is ours whoever the file system says owns it: NFS with
    # root_squash, a vfat or CIFS mount's uid=.)
    if status.st_uid != os.geteuid() and not (create and exclusive):
        os.close(fd)
        raise _NotOwnFile(errno.EPERM, "it belongs to another user")
    if status.st_nlink != 1:
        os.close(fd)
        raise _NotOwnFile(errno.EMLINK, "it has other names (hard links) too")
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        pass  # no locks here (ENOLCK, some network file systems)
    return fd


def _discard(response) -> None:
    """
    Throw away a response's body without reading it (its connection is
    closed rather than drained).
    """

    class Drop(Protocol):
        def connectionMade(self) -> None:
            self.transport.stopProducing()

    try:
        response.deliverBody(Drop())
    except Exception:  # already delivered
        pass


class _QuietFactory(webClient._HTTP11ClientFactory):
    noisy = False  # no "Starting factory" log line per connection

    def buildProtocol(self, addr):
        return BoundedClientProtocol(self._quiescentCallback)


def _closing(transport) -> bool:
    """
    Whether C{transport}, or one it runs over (TLS over TCP), is closing
    (see L{_QuietPool._putConnection}).
    """
    for _ in range(8):  # a few layers at most: never a loop
        if transport is None:
            return False
        if getattr(transport, "disconnecting", False):
            return True
        transport = getattr(transport, "transport", None)
    return False


class _QuietPool(HTTPConnectionPool):
    """
    The downloader's pool: closes connections handed back after L{stop},
    keeps none that is being closed, and keeps at most C{maxIdle} idle
    connections in all (Twisted caps them per host only), closing the one
    idle longest past that, so that a list of files on many hosts does not
    run out of file descriptors.

    Twisted's own retry stays: a GET that failed on a reused connection
    before any answer is sent once more on a new one, uncounted, as curl
    does.  It is what makes a server that closes its connection after an
    answer, without saying so, cost no retry (the request on the closing
    connection was never read).
    """

    _factory = _QuietFactory
    closed = False
    maxIdle = 8

    def _putConnection(self, key, connection) -> None:
        # A connection being closed is not kept: an answer whose body, come
        # in the read of its head, was thrown away (_discard), is handed
        # back by Twisted all the same, and a request sent on it before the
        # close was seen reached the server, failed, and was sent again.
        if self.closed or _closing(connection.transport):
            connection.transport.loseConnection()
            return
        HTTPConnectionPool._putConnection(self, key, connection)
        while len(self._timeouts) > self.maxIdle:
            oldest = next(iter(self._timeouts))  # put back first, idle longest
            self._timeouts[oldest].cancel()
            oldestKey = next(k for k, idle in self._connections.items() if oldest in idle)
            self._removeConnection(oldestKey, oldest)

    def _removeConnection(self, key, connection) -> None:
        HTTPConnectionPool._removeConnection(self, key, connection)
        if not self._connections.get(key):
            self._connections.pop(key, None)  # no empty list left per host ever seen


def _outcome(d: Deferred) -> Deferred:
    """
    A Deferred that fires with a one-item list of C{d}'s result (a
    L{Failure} included: a list, so it is a value), and leaves C{d}'s own
    result alone.
    """
    outcome: Deferred = Deferred()

    def settle(result):
        outcome.callback([result])
        return result

    d.addBoth(settle)
    return outcome


def _indexStates(
    directory: Path, known: dict[str, tuple[tuple[int, int, int], Optional[str]]]
) -> dict[str, tuple[tuple[int, int, int], Optional[str]]]:
    """
    List and index the state files in C{directory} (in a thread): name ->
    (inode, size, modification time; the URL it names, or L{None}), reading
    again only those new or changed since C{known}.
    """
    index = {}
    try:
        with os.scandir(directory) as entries:
            found = [e for e in entries if e.name.endswith(PART_SUFFIX + STATE_SUFFIX) and not e.name.startswith(".")]
    except OSError:
        found = []
    for entry in found:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        key = (info.st_ino, info.st_size, info.st_mtime_ns)
        seen = known.get(entry.name)
        if seen is None or seen[0] != key:
            state = loadState(Path(entry.path))
            seen = (key, state.url if state is not None else None)
        index[entry.name] = seen
    return index


class _Shared:
    """
    One result, given to everyone who waits for it (before or after it
    came).
    """

    #: Whether others may still come to wait for it.
    open = True

    def __init__(self) -> None:
        self._waiting: list[Deferred] = []
        self._result: Optional[dict] = None

    def wait(self) -> Deferred:
        if self._result is not None:
            return defer.succeed(self._result)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: dict) -> None:
        self._result = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)


class Downloader:
    """
    Downloads many files at once over its own bounded connection pool.

    @param reactor: the reactor (the global one when L{None}).
    @param settings: limits, timeouts, TLS, proxy; L{DownloadSettings}
        defaults when L{None}.
    @param observer: called with each event dict (C{start}, C{progress},
        C{retry}, C{done}, C{error}).
    @param rules: a L{netsuite.proxyrules.ProxyRules} whose destination
        checks every connection must pass (after DNS resolution), or
        L{None} to allow any destination.  Not used through a proxy.

    @raise ValueError: with a readable sentence when C{settings} names a CA
        file or proxy that cannot be used (a proxy whose host
        L{asciiProxyURL} refuses among them).
    """

    def __init__(
        self,
        reactor=None,
        settings: Optional[DownloadSettings] = None,
        observer: Optional[Callable[[dict], None]] = None,
        rules=None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.clock = self.reactor = reactor
        self.settings = settings or DownloadSettings()
        self.observer = observer
        self._pool = _QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = self.settings.maxPerHost
        self._pool.cachedConnectionTimeout = 30
        self._pool.maxIdle = self.settings.maxConnections
        proxy = self.settings.proxy
        if proxy:
            try:
                proxy = asciiProxyURL(proxy)
            except ValueError as e:
                raise ValueError(f"the proxy {redact(proxy)} cannot be used: {e}") from None
        agent = buildAgent(
            reactor,
            self._pool,
            connectTimeout=self.settings.connectTimeout,
            caFile=self.settings.caFile,
            insecure=self.settings.insecure,
            proxy=proxy,
            rules=rules,
        )
        self._client = HTTPClient(agent)
        self._slots = _Slots(self.settings.maxConnections, self.settings.maxPerHost)
        rate = self.settings.rateLimit
        # Bursts of a quarter of a second's worth, and at least about one
        # read's, so that a low rate still lets whole reads through.
        self._rateLimit = TokenBucket(rate, max(rate / 4, 16 * 1024), reactor) if rate else None
        self._jobs: dict[str, Job] = {}
        self._count = 0
        self._ticker: Optional[task.LoopingCall] = None
        self._lastTick = 0.0
        # Per directory: state file name -> (its inode, size, mtime; the URL
        # it names, or None).
        self._stateIndex: dict[str, dict[str, tuple[tuple[int, int, int], Optional[str]]]] = {}
        # Per directory: its listing, being made or made in this pass of
        # the reactor.
        self._listings: dict[str, _Shared] = {}
        self._freeNames = names.FreeNameHints()

    # -- public API -------------------------------------------------------

    def submit(self, request: Union[DownloadRequest, str]) -> Job:
        """
        Queue C{request}; returns its L{Job}, whose C{deferred} fires when
        it is done (the downloader then forgets it: see L{jobs}).  A bad
        URL or checksum fails the job's Deferred with L{BadURL} or
        L{DownloadError} at once.
        """
        if isinstance(request, str):
            request = DownloadRequest(url=request)
        self._count += 1
        job = Job(id=str(self._count), request=request)
        self._jobs[job.id] = job
        try:
            download = _Download(self, job)
        except ValueError as e:
            job.deferred = defer.fail(DownloadError(f"{redact(request.url)}: {e}"))
        except DownloadError as e:
            job.deferred = defer.fail(e)
        else:
            job._download = download
            job.deferred = Deferred.fromCoroutine(download.run())
            if self.settings.totalTimeout is not None:
                self._limitTime(job)
        job.deferred.addBoth(self._ended, job)
        self._tick()
        return job

    def download(self, url: str, directory: Union[str, Path] = ".", **fields) -> Deferred:
        """
        Download C{url} into C{directory}; C{fields} are those of
        L{DownloadRequest}.  Fires with a L{DownloadResult}.
        """
        return self.submit(DownloadRequest(url=url, directory=directory, **fields)).deferred

    def downloadAll(self, requests: Iterable[Union[DownloadRequest, str]]) -> Deferred:
        """
        Download every request, as many at once as the limits allow.  Fires
        with one entry per request, in order: a L{DownloadResult} or the
        L{Failure} it ended with.  Never fails.
        """
        outcomes = []
        for request in requests:
            d = self.submit(request).deferred
            outcomes.append(_outcome(d))
            d.addErrback(lambda failure: None)  # handed to the caller in the list
        return defer.gatherResults(outcomes).addCallback(lambda results: [r[0] for r in results])

    download_all = downloadAll

    def cancel(self, jobId: str, discard: bool = False) -> bool:
        """
        Stop job C{jobId}.  Its C{.part} and state stay, so that a later run
        resumes it, unless C{discard} is true.  Returns whether the job was
        still running.
        """
        job = self._jobs.get(jobId)
        if job is None or job.deferred.called:
            return False
        if job._download is not None:
            job._download.discardOnCancel = discard
        job.deferred.cancel()
        return True

    def jobs(self) -> list[dict]:
        """
        A snapshot of every job not finished yet, in the order they were
        given.  A job is forgotten here once its C{deferred} has fired (so
        that a long-running downloader does not grow); its final state
        stays on the L{Job} that L{submit} returned (C{job.snapshot()}).
        """
        return [job.snapshot() for job in self._jobs.values()]

    def stop(self) -> Deferred:
        """
        Cancel every download (their states are saved) and close the pool.
        """
        running = [job.deferred for job in self._jobs.values() if not job.deferred.called]
        waited = defer.gatherResults([_outcome(d) for d in running])
        for d in running:
            d.cancel()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()

        def close(_):
            self._pool.closed = True  # a connection handed back later is closed, not kept
            return self._pool.closeCachedConnections()

        return waited.addCallback(close)

    # -- internals ------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        if self.observer is not None:
            try:
                self.observer(event)
            except Exception:
                log.failure("download observer failed on {event}", event=event)

    async def _statesNaming(self, directory: Path, url: str) -> list[Path]:
        """
        The state files in C{directory} (by name) that name C{url}.  What
        each one names is remembered with its inode, size and modification
        time, so only new or changed ones are read again: a directory of
        thousands of stale state files costs a listing and a C{stat} each
        per download, not thousands of reads.  (A caller still reads the
        ones returned, and checks them.)
        """
        index = await self._listing(directory)
        return [directory / name for name in sorted(index) if index[name][1] == url]

    def _listing(self, directory: Path) -> Deferred:
        """
        The index of the state files in C{directory} (see
        L{_statesNaming}), made in a thread of the reactor's pool (a
        directory of 30,000 files held the reactor, and every service, for
        35 ms a download), once for every download that asks in the pass of
        the reactor it began in: a service resuming 1,000 jobs into such a
        directory listed it 1,000 times, and answered nothing for 33 s.
        One asking later gets a listing of its own, which sees what was
        written since.
        """
        key = str(directory)
        listing = self._listings.get(key)
        if listing is None or not listing.open:
            # Joined only in the pass it starts in: a listing already under
            # way may have missed a state file written since.
            listing = self._listings[key] = _Shared()
            self.clock.callLater(0, setattr, listing, "open", False)
            known = dict(self._stateIndex.get(key, {}))
            reactor = self.reactor
            if IReactorThreads.providedBy(reactor):
                made = threads.deferToThreadPool(reactor, reactor.getThreadPool(), _indexStates, directory, known)
            else:  # a test's clock
                made = defer.maybeDeferred(_indexStates, directory, known)

            def listed(index: dict) -> None:
                self._stateIndex[key] = index
                listing.fire(index)
                if self._listings.get(key) is listing:
                    del self._listings[key]

            def failed(failure: Failure) -> None:
                log.failure("listing {directory}", failure, directory=str(directory))
                if self._listings.get(key) is listing:
                    del self._listings[key]
                listing.fire({})

            made.addCallbacks(listed, failed)
        return listing.wait()

    def _limitTime(self, job: Job) -> None:
        seconds = self.settings.totalTimeout
        timedOut = []
        timer = self.clock.callLater(seconds, lambda: (timedOut.append(True), job.deferred.cancel()))

        def ended(result):
            if timer.active():
                timer.cancel()
            if timedOut and isinstance(result, Failure) and result.check(CancelledError):
                return Failure(DownloadTimeout(f"{job.request.url}: not finished within {seconds:g} seconds", retryable=False))
            return result

        job.deferred.addBoth(ended)

    def _ended(self, result, job: Job):
        if isinstance(result, Failure):
            if result.check(CancelledError):
                job.state = "cancelled"
            else:
                job.state = "failed"
                if result.check(DownloadError):
                    job.error = str(result.value)
                else:
                    log.failure("download of {url} failed unexpectedly", result, url=redact(job.request.url))
                    job.error = f"{redact(job.request.url)}: internal error ({result.value.__class__.__name__})"
                    result = Failure(DownloadError(job.error))
                self._emit(
                    {"event": "error", "job": job.id, "url": redact(job.request.url), "message": job.error, "done": job.done}
                )
        else:
            job.state = "done"
            job.speed = 0.0
            self._emit(
                {
                    "event": "done",
                    "job": job.id,
                    "url": redact(job.request.url),
                    "path": str(result.path),
                    "size": result.size,
                    "seconds": round(result.seconds, 3),
                }
            )
        job._download = None
        self._jobs.pop(job.id, None)
        return result

    def _tick(self) -> None:
        if self._ticker is None or not self._ticker.running:
            self._ticker = task.LoopingCall(self._progress)
            self._ticker.clock = self.clock
            self._lastTick = self.clock.seconds()
            self._ticker.start(self.settings.progressInterval, now=False)

    def _progress(self) -> None:
        now = self.clock.seconds()
        elapsed = max(now - self._lastTick, 1e-6)
        self._lastTick = now
        active = False
        for job in list(self._jobs.values()):  # an observer may end a job
            download = job._download
            if download is None:
                continue
            active = True
            if not download.started:
                continue
            rate = max(0, job.done - job._lastDone) / elapsed
            job._lastDone = job.done
            job.speed = rate if job.speed == 0 else 0.7 * job.speed + 0.3 * rate
            self._emit({"event": "progress", "job": job.id, "done": job.done, "size": job.size, "speed": round(job.speed, 1)})
            if now - download._lastSave >= STATE_INTERVAL:
                download._saveState()
        if not active and self._ticker is not None and self._ticker.running:
            self._ticker.stop()
