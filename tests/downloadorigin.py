"""
A real, deliberately misbehaving HTTP origin for the downloader's tests.

L{Origin} is a C{twisted.web} resource tree served on a loopback port (plain
or TLS).  Its files are deterministic bytes made on demand
(L{fileContent}), so a 200 MiB file needs no 200 MiB anywhere: bodies are
written by a push producer paced by the connection, a block at a time.
Every request is recorded (L{Recorded}) so a test can assert what the client
sent, and how many responses were in progress at once.

Paths (the query selects the misbehaviour; parameters combine):

    /file/NAME      the file NAME (any name; the query may give size=BYTES,
                    default 1 MiB, and seed=INT), Range honoured with
                    Accept-Ranges, ETag and Last-Modified; If-Range that
                    matches neither gets the full 200.  Its version (and so
                    its bytes, ETag and Last-Modified) changes with
                    L{Origin.bump}.
        ranges=0        Range ignored: always 200 and the whole body.
        lie=start       a Range from a non-zero start is answered from 0 with
                        C{Content-Range: bytes 0-...}: not what was asked.
        lie=total       206 whose Content-Range claims another total size.
        lie=end         206 whose Content-Range ends a byte before the last
                        byte sent (Content-Length counts them all).
        lie=whole       every GET, with a Range or without, is answered 206
                        with the whole file and C{Content-Range: bytes
                        0-(SIZE-1)/SIZE}.
        later=1         ranges=0 and lie= only for a Range that starts
                        after byte 0 (the pieces a split adds): the first
                        request, from byte 0, gets an honest 206.
        ifRange=0       If-Range ignored: the Range is answered (206) even
                        when the file changed since the validator.
        grow=BYTES      each version (see L{Origin.bump}) is BYTES longer
                        than the one before.
        etag=0, lm=0    no ETag / no Last-Modified.
        etagEach=1      each GET gets an ETag of its own (mirrors behind
                        one name, each with its own), the bytes the same.
        controls=1      an ETag and a Last-Modified with a control
                        character in them.
        bumped=none     once the file changed (L{Origin.bump}), no ETag;
        bumped=weak     ... a weak one.
        length=0        no Content-Length (chunked).
        cd=VALUE        this Content-Disposition, as given.
        status=CODE     always answer CODE (e.g. 404) with a short body.
        fail=N          the first N requests to the path get failStatus
                        (default 500); with retryAfter=SECONDS a Retry-After.
        failFrom=M      ... the N requests after the first M instead.
        busy=CODE       a request while another response of the origin is
                        in progress gets CODE (a server allowing one
                        connection at a time).
        drip=N          the body stops after N bytes and the response stalls
                        (connection left open) ...
        dripTimes=K     ... for the first K GETs only (default: all).
        rate=BPS        the body trickles at BPS bytes per second.
        reset=N         the connection is aborted (TCP RST) after N body
                        bytes were delivered ...
        resetTimes=K    ... for the first K GETs only (default: all).
        hang=1          the request is never answered (no head at all).
        end=HOW         how a response goes on after its last body byte,
                        with length=0 (chunked: with a Content-Length the
                        client knows the end by itself): hold = never ends
                        (no last chunk, the connection left open), reset =
                        the connection is aborted (TCP RST) instead of the
                        last chunk ...
        endTimes=K      ... for the first K GETs only (default: all).
        star=N          a Range is answered with at most N bytes and a
                        Content-Range total of C{*} (the size never said);
                        one past the end gets a 416 with C{bytes */*} ...
        starTimes=K     ... for the first K GETs only (default: all; later
                        ones are answered as usual).
        multipart=1     a Range is answered with a multipart/byteranges
                        body (one part, chunked) although the head also
                        carries that part's Content-Range, as a broken
                        server may: the body is longer than the range.
    /gzip/NAME      real gzip bytes sent with C{Content-Encoding: gzip}
                    (L{GZIPPED}); a client must save them verbatim.
    /hop?n=N&to=URL a chain of N redirects (code=301/302/303/307/308, default
                    302) ending at URL (relative or absolute, any scheme).
    /loop           redirects to itself forever.
    /sign/NAME?...  redirects (302) to a new link to C{/file/NAME?...}
                    (the same query, plus C{link=K}; of the origin
                    L{Origin.linksTo} when set), as release assets
                    and pre-signed URLs do.  A link that expired answers
                    C{expired} (default 403); a request under way goes on.
        uses=N          a link expires once it answered N GETs.
        life=SECONDS    ... that long after it was made.
        newer=N         ... once N newer links to the origin were made
                        (counted, not timed: redirects that run that far
                        ahead of their files).
        mirrors=1       each link has an ETag of its own (each a mirror),
                        the bytes the same.
        links=N         only the first N links work: later ones have
                        expired when made (the redirect no help).
        lasting=N       links from the N-th on (counted from 0) never
                        expire.
        change=1        the links after the first are to a changed file
                        (L{Origin.bump} once, as the second is made).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import weakref
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from twisted.internet import defer, reactor as globalReactor
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

#: Bytes one generated block holds (and the most one write carries).
BLOCK = 64 * 1024

#: The default size of a file.
DEFAULT_SIZE = 2**20

#: The plain text behind L{GZIPPED}.
PLAIN = b"".join(b"line %d of a compressible text file\n" % (i,) for i in range(5000))

#: What C{/gzip/NAME} sends, with C{Content-Encoding: gzip}.
GZIPPED = gzip.compress(PLAIN, mtime=0)

_BASE_TIME = 1_700_000_000

#: Reason phrases Twisted does not know.
_REASONS = {429: b"Too Many Requests"}


def fileKey(path: str, seed: int = 0, version: int = 0) -> bytes:
    """
    The key the bytes of file C{path} (its seed and version) derive from.
    """
    return b"%s|%d|%d|" % (path.encode("utf-8"), seed, version)


def _block(key: bytes, index: int) -> bytes:
    return hashlib.shake_128(key + b"%d" % (index,)).digest(BLOCK)


def fileContent(key: bytes, start: int, length: int) -> bytes:
    """
    C{length} bytes of the file C{key} from offset C{start}.
    """
    pieces = []
    end = start + length
    position = start
    while position < end:
        index, offset = divmod(position, BLOCK)
        piece = _block(key, index)[offset : offset + (end - position)]
        pieces.append(piece)
        position += len(piece)
    return b"".join(pieces)


def fileDigest(key: bytes, size: int, start: int = 0) -> str:
    """
    The hex SHA-256 of bytes C{start} to C{size} of the file C{key},
    computed a block at a time.
    """
    digest = hashlib.sha256()
    position = start
    while position < size:
        piece = fileContent(key, position, min(BLOCK - position % BLOCK, size - position))
        digest.update(piece)
        position += len(piece)
    return digest.hexdigest()


def fileSHA256(path: str | os.PathLike[str]) -> str:
    """
    The hex SHA-256 of a local file, read a block at a time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            piece = f.read(1 << 20)
            if not piece:
                return digest.hexdigest()
            digest.update(piece)


def parseRange(value: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int]]]:
    """
    The first range of a C{Range: bytes=...} header as C{(first, last)}
    (inclusive; C{(None, n)} for a suffix C{-n}, C{(n, None)} for C{n-}),
    or L{None} when absent or not a byte range.
    """
    if not value or not value.strip().lower().startswith("bytes="):
        return None
    spec = value.split("=", 1)[1].split(",")[0].strip()
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    try:
        return (int(first) if first.strip() else None, int(last) if last.strip() else None)
    except ValueError:
        return None


@dataclass
class Recorded:
    """
    One request as the origin saw it.

    @ivar origin: the name of the origin that received it.
    @ivar headers: lower-case header names to their last value.
    @ivar rawHeaders: lower-case header names to every value sent.
    @ivar range: the parsed C{Range} header (see L{parseRange}).
    @ivar rawRange: the C{Range} header as sent.
    @ivar time: the reactor's C{seconds()} when it arrived.
    @ivar ended: when its response ended or its connection was lost (L{None}
        while in progress).
    @ivar status: the status answered (0 while none).
    @ivar sent: body bytes written for it.
    @ivar peer: the client's C{(host, port)}.
    @ivar reused: whether it came on a connection that carried one before.
    """

    origin: str
    method: str
    path: str
    uri: str
    headers: Dict[str, str]
    range: Optional[Tuple[Optional[int], Optional[int]]]
    rawRange: Optional[str]
    ifRange: Optional[str]
    time: float
    peer: Tuple[str, int]
    rawHeaders: Dict[str, List[str]] = field(default_factory=dict)
    status: int = 0
    sent: int = 0
    ended: Optional[float] = None
    reused: bool = False

    @property
    def rangeStart(self) -> Optional[int]:
        """
        Where the asked range starts (L{None} without a range).
        """
        return None if self.range is None else self.range[0]


def _pendingWrites(transport: Any) -> int:
    """
    Bytes still waiting to be written by a (possibly wrapped) transport.
    """
    pending = 0
    while transport is not None:
        if hasattr(transport, "dataBuffer"):
            return pending + len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        buffered = getattr(transport, "_appSendBuffer", None)  # TLS
        if buffered:
            pending += sum(len(b) for b in buffered)
        transport = getattr(transport, "transport", None)
    return pending


class _Body:
    """
    A push producer writing bytes C{start} to C{end} (exclusive) of a file
    to a request, one block at a time, paced by the connection; it can
    trickle (C{rate}), stall after some bytes (C{stallAfter}), or abort the
    connection after some bytes (C{abortAfter}).
    """

    def __init__(
        self,
        origin: "Origin",
        request: server.Request,
        record: Recorded,
        key: bytes,
        start: int,
        end: int,
        rate: Optional[float] = None,
        stallAfter: Optional[int] = None,
        abortAfter: Optional[int] = None,
        content: Optional[bytes] = None,
        ending: Optional[str] = None,
    ) -> None:
        self.origin = origin
        self.request: Optional[server.Request] = request
        self.record = record
        self.key = key
        self.position = start
        self.end = end
        self.rate = rate
        self.stallAfter = stallAfter
        self.abortAfter = abortAfter
        self.content = content
        self.ending = ending
        self.paused = False
        self.timer: Any = None
        self.stalled = False

    def start(self) -> None:
        """
        Begin writing (on the next reactor turn).
        """
        assert self.request is not None
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addBoth(self._gone)
        self._later(0)

    def _later(self, delay: float) -> None:
        self.timer = self.origin.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self._produce()

    def _gone(self, result: object) -> None:
        self.stopProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.timer is None and self.request is not None:
            self._produce()

    def stopProducing(self) -> None:
        self.request = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _read(self, start: int, length: int) -> bytes:
        if self.content is not None:
            return self.content[start : start + length]
        return fileContent(self.key, start, length)

    def _produce(self) -> None:
        while not self.paused and self.request is not None and not self.stalled:
            if self.position >= self.end:
                self._finish()
                return
            length = min(BLOCK - self.position % BLOCK, self.end - self.position)
            for limit in (self.stallAfter, self.abortAfter):
                if limit is not None:
                    length = min(length, limit - self.record.sent)
            if self.rate is not None:
                length = min(length, max(1, int(self.rate * 0.02)))
            if length <= 0:
                if self.stallAfter is not None and self.record.sent >= self.stallAfter:
                    self.stalled = True  # and nothing more, ever
                    return
                self._abortWhenFlushed()
                return
            data = self._read(self.position, length)
            self.position += len(data)
            self.record.sent += len(data)
            self.origin.sentBytes += len(data)
            self.request.write(data)
            if self.position >= self.end:
                self._finish()  # at once: the response ends with its last byte
                return
            if self.rate is not None:
                self._later(len(data) / self.rate)
                return

    def _finish(self) -> None:
        request = self.request
        if request is None:
            return
        if self.ending == "hold":
            self.stalled = True  # the last chunk never comes
            return
        if self.ending == "reset":
            self.abortAfter = self.record.sent
            self._abortWhenFlushed()
            return
        self.request = None
        request.unregisterProducer()
        request.finish()

    def _abortWhenFlushed(self, waited: float = 0.0) -> None:
        """
        Abort the connection once what was written reached the client (so
        the client holds exactly C{abortAfter} bytes), with a TCP reset.
        """
        request = self.request
        if request is None or request.channel is None:
            return
        self.stalled = True
        transport = request.channel.transport
        if _pendingWrites(transport) > 0 and waited < 5.0:
            self.timer = self.origin.reactor.callLater(0.01, self._abortWhenFlushed, waited + 0.01)
            return
        self.timer = self.origin.reactor.callLater(0.05, self._abort)

    def _abort(self) -> None:
        self.timer = None
        request, self.request = self.request, None
        if request is not None and request.channel is not None:
            self.origin.resets += 1
            request.channel.transport.abortConnection()


class _Tracking(WrappingFactory):
    """
    Keeps every connection of the origin, to count them and to close them
    when a test ends.
    """

    def __init__(self, wrapped: Any) -> None:
        WrappingFactory.__init__(self, wrapped)
        self.accepted = 0
        self.maxOpen = 0
        self.lost: List[defer.Deferred[None]] = []

    def registerProtocol(self, p: Any) -> None:
        WrappingFactory.registerProtocol(self, p)
        self.accepted += 1
        self.maxOpen = max(self.maxOpen, len(self.protocols))

    def unregisterProtocol(self, p: Any) -> None:
        WrappingFactory.unregisterProtocol(self, p)
        if not self.protocols:
            waiting, self.lost = self.lost, []
            for d in waiting:
                d.callback(None)

    def closeAll(self) -> defer.Deferred[None]:
        """
        Abort every open connection; fires once all are gone.
        """
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.lost.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class _Root(resource.Resource):
    """
    Dispatches every request to the L{Origin}.
    """

    isLeaf = True

    def __init__(self, origin: "Origin") -> None:
        resource.Resource.__init__(self)
        self.origin = origin

    def render(self, request: server.Request) -> Any:
        return self.origin.render(request)


def _arg(request: server.Request, name: str, default: Optional[str] = None) -> Optional[str]:
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    return values[0].decode("utf-8", "surrogateescape")


def _intArg(request: server.Request, name: str, default: Optional[int] = None) -> Optional[int]:
    value = _arg(request, name)
    return default if value is None else int(value)


class Origin:
    """
    The misbehaving origin (see the module's docstring for its paths).

    @ivar name: a label kept in each L{Recorded}.
    @ivar requests: every request received, in order.
    @ivar active: responses in progress now; L{maxActive} the most at once.
    @ivar versions: each file path's current version (see L{bump}).
    @ivar sentBytes: body bytes written in all.
    @ivar resets: connections aborted on purpose.
    """

    def __init__(self, name: str = "origin", reactor: Any = None) -> None:
        self.name = name
        self.reactor = reactor or globalReactor
        self.requests: List[Recorded] = []
        self.active = 0
        self.maxActive = 0
        self.versions: Dict[str, int] = {}
        self.sentBytes = 0
        self.resets = 0
        #: Per link to this origin made by C{/sign}: [GETs it answered,
        #: when it was made]; C{/sign} links to L{linksTo} when set.
        self.links: List[List[float]] = []
        self.linksTo: Optional[Origin] = None
        self.scheme = "http"
        self.host = "127.0.0.1"
        self.port = 0
        self.factory = _Tracking(self._site())
        self._listening: Any = None
        #: The connections (HTTP channels) that carried a request.
        self._served: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def _site(self) -> server.Site:
        site = server.Site(_Root(self))
        site.noisy = False
        site.displayTracebacks = False
        return site

    # Starting and stopping.

    def start(
        self, testCase: TestCase, tls: Any = None, host: Optional[str] = None, interface: str = "127.0.0.1"
    ) -> "Origin":
        """
        Listen on a free port of C{interface} (with TLS when C{tls}, server
        options, is given) until C{testCase} ends; URLs then name C{host}
        (the interface by default, C{[::1]} style for IPv6, C{localhost}
        with TLS).
        """
        self.host = f"[{interface}]" if ":" in interface else interface
        if tls is None:
            self._listening = self.reactor.listenTCP(0, self.factory, interface=interface)
        else:
            self._listening = self.reactor.listenSSL(0, self.factory, tls, interface=interface)
            self.scheme = "https"
            self.host = "localhost"
        if host is not None:
            self.host = host
        self.port = self._listening.getHost().port
        testCase.addCleanup(self.stop)
        return self

    async def stop(self) -> None:
        """
        Stop listening and abort every connection still open.
        """
        if self._listening is not None:
            listening, self._listening = self._listening, None
            await listening.stopListening()
        await self.factory.closeAll()

    # What tests use.

    @property
    def base(self) -> str:
        """
        C{scheme://host:port} of this origin.
        """
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str, host: Optional[str] = None, userinfo: str = "") -> str:
        """
        The absolute URL of C{path} (which may carry a query) on this origin.
        """
        at = f"{userinfo}@" if userinfo else ""
        return f"{self.scheme}://{at}{host or self.host}:{self.port}{path}"

    def hopURL(self, hops: int, to: str, code: int = 302, host: Optional[str] = None) -> str:
        """
        The URL of a chain of C{hops} redirects ending at C{to}.
        """
        return self.url(f"/hop?n={hops}&code={code}&to={quote(to, safe='')}", host=host)

    def bump(self, path: str) -> None:
        """
        Change the file at C{path}: new bytes, ETag and Last-Modified.
        """
        self.versions[path] = self.versions.get(path, 0) + 1

    def key(self, path: str, seed: int = 0) -> bytes:
        """
        The content key of the file at C{path} (its current version).
        """
        return fileKey(path, seed, self.versions.get(path, 0))

    def digest(self, path: str, size: int = DEFAULT_SIZE, seed: int = 0) -> str:
        """
        The hex SHA-256 of the file at C{path} as it is now.
        """
        return fileDigest(self.key(path, seed), size)

    def content(self, path: str, start: int, length: int, seed: int = 0) -> bytes:
        """
        C{length} bytes of the file at C{path} from C{start}.
        """
        return fileContent(self.key(path, seed), start, length)

    def etag(self, path: str, seed: int = 0) -> str:
        """
        The ETag the file at C{path} has now.
        """
        return '"%s"' % (hashlib.sha256(self.key(path, seed)).hexdigest()[:20],)

    def lastModified(self, path: str) -> str:
        """
        The Last-Modified date the file at C{path} has now.
        """
        return formatdate(_BASE_TIME + 3600 * self.versions.get(path, 0), usegmt=True)

    def seen(self, path: Optional[str] = None, method: Optional[str] = None) -> List[Recorded]:
        """
        The requests received for C{path} (every path when L{None}), only
        those with C{method} when given.
        """
        return [
            r
            for r in self.requests
            if (path is None or r.path == path) and (method is None or r.method == method)
        ]

    def gets(self, path: Optional[str] = None) -> List[Recorded]:
        """
        The GET requests received for C{path}.
        """
        return self.seen(path, "GET")

    async def waitForSent(self, path: str, size: int, timeout: float = 10.0) -> None:
        """
        Wait until C{size} more body bytes of C{path} were written (counted
        from this call).
        """
        waited = 0.0
        start = sum(r.sent for r in self.seen(path))
        while sum(r.sent for r in self.seen(path)) - start < size:
            if waited > timeout:
                raise AssertionError(f"{path}: the origin never sent {size} bytes")
            await deferLater(self.reactor, 0.01, lambda: None)
            waited += 0.01

    # Serving.

    def render(self, request: server.Request) -> Any:
        path = request.path.decode("utf-8", "surrogateescape")
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        peer = request.getClientAddress()
        record = Recorded(
            origin=self.name,
            method=request.method.decode("ascii", "replace"),
            path=path,
            uri=request.uri.decode("utf-8", "surrogateescape"),
            headers=headers,
            range=parseRange(headers.get("range")),
            rawRange=headers.get("range"),
            ifRange=headers.get("if-range"),
            time=self.reactor.seconds(),
            peer=(getattr(peer, "host", ""), getattr(peer, "port", 0)),
            rawHeaders={
                name.decode("latin-1").lower(): [value.decode("latin-1") for value in values]
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
            reused=request.channel in self._served,
        )
        self._served.add(request.channel)
        earlier = self.seen(path)
        earlierGets = [r for r in earlier if r.method == "GET"]
        self.requests.append(record)
        self.active += 1
        self.maxActive = max(self.maxActive, self.active)

        def ended(result: object) -> None:
            self.active -= 1
            record.ended = self.reactor.seconds()

        request.notifyFinish().addBoth(ended)
        try:
            return self._answer(request, record, path, len(earlier), len(earlierGets))
        except Exception:
            record.status = 500
            request.setResponseCode(500)
            raise

    def _short(self, request: server.Request, record: Recorded, code: int, body: bytes) -> bytes:
        record.status = code
        request.setResponseCode(code, _REASONS.get(code))
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    def _redirect(self, request: server.Request, record: Recorded, code: int, location: str) -> bytes:
        request.setHeader(b"location", location.encode("utf-8"))
        return self._short(request, record, code, b"moved\n")

    def _answer(self, request: server.Request, record: Recorded, path: str, earlier: int, earlierGets: int) -> Any:
        if path == "/loop":
            return self._redirect(request, record, 302, "/loop")
        if path == "/hop":
            hops = _intArg(request, "n", 1) or 1
            to = _arg(request, "to", "/file/hop-end") or "/file/hop-end"
            code = _intArg(request, "code", 302) or 302
            if hops > 1:
                location = f"/hop?n={hops - 1}&code={code}&to={quote(to, safe='')}"
            else:
                location = to
            return self._redirect(request, record, code, location)
        if path.startswith("/gzip/"):
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % (len(GZIPPED),))
            record.status = 200
            if request.method == b"HEAD":
                return b""
            _Body(self, request, record, b"", 0, len(GZIPPED), content=GZIPPED).start()
            return server.NOT_DONE_YET
        if path.startswith("/sign/"):
            files = self.linksTo or self
            target = "/file/" + path[len("/sign/"):]
            if _arg(request, "change") == "1" and len(files.links) == 1:
                files.bump(target)
            files.links.append([0, files.reactor.seconds()])
            query = request.uri.decode("utf-8", "surrogateescape").partition("?")[2]
            link = f"{target}?{query}&link={len(files.links) - 1}".replace("?&", "?")
            return self._redirect(request, record, 302, files.url(link) if self.linksTo else link)
        if not path.startswith("/file/"):
            return self._short(request, record, 404, b"no such thing\n")
        return self._file(request, record, path, earlier, earlierGets)

    def _file(self, request: server.Request, record: Recorded, path: str, earlier: int, earlierGets: int) -> Any:
        link = _intArg(request, "link")
        if link is not None:
            uses, made = self.links[link]
            most, life = _intArg(request, "uses"), _arg(request, "life")
            newer, working = _intArg(request, "newer"), _intArg(request, "links")
            lasting = _intArg(request, "lasting")
            if (lasting is None or link < lasting) and (
                (most is not None and uses >= most)
                or (life is not None and self.reactor.seconds() > made + float(life))
                or (newer is not None and len(self.links) - 1 - link >= newer)
                or (working is not None and link >= working)
            ):
                return self._short(request, record, _intArg(request, "expired", 403) or 403, b"expired\n")
            self.links[link][0] += 1
        status = _intArg(request, "status")
        if status is not None:
            return self._short(request, record, status, b"status %d\n" % (status,))
        busy = _intArg(request, "busy")
        if busy is not None and self.active > 1:
            return self._short(request, record, busy, b"too many connections\n")
        fail = _intArg(request, "fail", 0) or 0
        failFrom = _intArg(request, "failFrom", 0) or 0
        if failFrom <= earlier < failFrom + fail:
            retryAfter = _arg(request, "retryAfter")
            if retryAfter is not None:
                request.setHeader(b"retry-after", retryAfter.encode("ascii"))
            code = _intArg(request, "failStatus", 500) or 500
            return self._short(request, record, code, b"try again later\n")
        if _arg(request, "hang") == "1":
            return server.NOT_DONE_YET

        size = _intArg(request, "size", DEFAULT_SIZE)
        assert size is not None
        size += (_intArg(request, "grow", 0) or 0) * self.versions.get(path, 0)
        seed = _intArg(request, "seed", 0) or 0
        key = self.key(path, seed)
        etag = self.etag(path, seed)
        lastModified = self.lastModified(path)
        ranges = _arg(request, "ranges", "1") != "0"
        lie = _arg(request, "lie")
        star = _intArg(request, "star")
        if star is not None and earlierGets >= (_intArg(request, "starTimes", 1 << 30) or 0):
            star = None
        if _arg(request, "later") == "1" and not (record.rangeStart or 0) > 0:
            ranges, lie = True, None  # the first request is answered honestly

        bumped = _arg(request, "bumped") if self.versions.get(path) else None
        if bumped == "weak":
            etag = "W/" + etag
        if _arg(request, "etagEach") == "1":
            # Each answer its own ETag (mirrors behind one name).
            etag = etag[:-1] + '-%d"' % (earlierGets,)
        if _arg(request, "mirrors") == "1" and link is not None:
            etag = etag[:-1] + '-link%d"' % (link,)
        if _arg(request, "controls") == "1":
            # Validators that may not be sent back (RFC 9110 5.5).
            etag, lastModified = etag[:-1] + '\x01"', lastModified + "\x7f"
        if _arg(request, "etag", "1") != "0" and bumped != "none":
            request.setHeader(b"etag", etag.encode("ascii"))
        else:
            etag = ""
        if _arg(request, "lm", "1") != "0":
            request.setHeader(b"last-modified", lastModified.encode("ascii"))
        else:
            lastModified = ""
        cd = _arg(request, "cd")
        if cd is not None:
            request.setHeader(b"content-disposition", cd.encode("utf-8", "surrogateescape"))
        request.setHeader(b"content-type", b"application/octet-stream")
        if ranges:
            request.setHeader(b"accept-ranges", b"bytes")

        start, end = 0, size  # end exclusive
        wanted = record.range if ranges else None
        if wanted is not None and record.ifRange is not None and _arg(request, "ifRange", "1") != "0":
            if record.ifRange not in (etag, lastModified) or not record.ifRange:
                wanted = None  # the file changed: the whole of it, 200
        partial = False
        if wanted is not None:
            first, last = wanted
            if first is None:
                if last is None or last == 0:
                    wanted = None
                else:
                    first, last = max(0, size - last), size - 1
            if wanted is not None:
                assert first is not None
                if first >= size:
                    request.setHeader(b"content-range", b"bytes */*" if star is not None else b"bytes */%d" % (size,))
                    return self._short(request, record, 416, b"")
                last = size - 1 if last is None else min(last, size - 1)
                if star is not None:
                    last = min(last, first + star - 1)
                start, end, partial = first, last + 1, True
        if lie == "whole":
            start, end, partial = 0, size, True

        content = None
        if partial and _arg(request, "multipart") == "1":
            boundary = b"NETSUITE-TEST-BOUNDARY"
            request.setHeader(b"content-type", b"multipart/byteranges; boundary=" + boundary)
            content = (
                b"--%s\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                % (boundary, start, end - 1, size)
                + fileContent(key, start, end - start)
                + b"\r\n--%s--\r\n" % (boundary,)
            )
        if partial:
            claimedStart, claimedTotal = start, size
            claimedEnd = end - 1
            if lie == "start" and start > 0:
                start, end = 0, end - start  # the right length, from the wrong place
                claimedStart, claimedEnd = 0, end - 1
            elif lie == "total":
                claimedTotal = size + 12345
            elif lie == "end":
                claimedEnd = end - 2  # one byte fewer than the body holds
            request.setResponseCode(206)
            record.status = 206
            total = b"*" if star is not None else b"%d" % (claimedTotal,)
            request.setHeader(b"content-range", b"bytes %d-%d/%s" % (claimedStart, claimedEnd, total))
        else:
            record.status = 200
        if _arg(request, "length", "1") != "0" and content is None:
            request.setHeader(b"content-length", b"%d" % (end - start,))
        if request.method == b"HEAD":
            return b""

        stallAfter = abortAfter = None
        drip = _intArg(request, "drip")
        if drip is not None and earlierGets < (_intArg(request, "dripTimes", 1 << 30) or 0):
            stallAfter = drip
        reset = _intArg(request, "reset")
        if reset is not None and earlierGets < (_intArg(request, "resetTimes", 1 << 30) or 0):
            abortAfter = reset
        endHow = _arg(request, "end")
        if endHow is not None and earlierGets >= (_intArg(request, "endTimes", 1 << 30) or 0):
            endHow = None
        if content is not None:
            start, end = 0, len(content)
        rate = _arg(request, "rate")
        _Body(
            self,
            request,
            record,
            key,
            start,
            end,
            rate=float(rate) if rate else None,
            stallAfter=stallAfter,
            abortAfter=abortAfter,
            content=content,
            ending=endHow,
            ).start()
        return server.NOT_DONE_YET


def startOrigin(testCase: TestCase, name: str = "origin", tls: Any = None, host: Optional[str] = None) -> Origin:
    """
    A new L{Origin} listening on loopback until C{testCase} ends.
    """
    return Origin(name).start(testCase, tls=tls, host=host)


def mostAtOnce(records: List[Recorded]) -> int:
    """
    The most of C{records} (from any origins) whose responses were in
    progress at the same time.
    """
    edges = []
    for r in records:
        edges.append((r.time, 1))
        edges.append((r.ended if r.ended is not None else float("inf"), -1))
    edges.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same time
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most
