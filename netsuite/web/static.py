"""
Static files for netsuite's HTTP server.

L{StaticFolder} serves one directory tree the way a user of nginx expects:
C{GET} and C{HEAD}; MIME types with C{charset=utf-8} for text; strong ETags,
C{Last-Modified} and conditional requests (C{If-None-Match},
C{If-Modified-Since}, C{If-Match}, C{If-Unmodified-Since}); single byte
ranges with C{If-Range}; gzip for compressible types and precompressed
C{NAME.gz} siblings; C{index.html}, a redirect to the slash form of a
directory URL, and HTML or JSON directory listings.

Small files are kept in memory (their bytes, gzip bytes, ETag and headers),
checked against the disk at most every C{cacheSeconds} (an C{os.stat} of the
file and of its C{.gz} sibling, and its real path); large files are streamed
by a push producer that follows the client's pace (C{os.sendfile} on plain
TCP; over HTTP/2 the socket's, whatever flow-control window the client
announces), reads at most one chunk a reactor turn, and closes the file
however the response ends.

Embedding::

    from twisted.internet import reactor
    from twisted.web.pages import notFound
    from netsuite.web.static import StaticFolder

    folder = StaticFolder("/srv/www", notFound=notFound(), clock=reactor)
"""

from __future__ import annotations

import datetime
import email.utils
import errno
import html
import json
import mimetypes
import os
import re
import stat
import sys
import time
import zlib
from collections import OrderedDict
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import quote

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IPushProducer, IReactorTime
from twisted.internet.task import cooperate
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from netsuite.limits import SendStall, hostKey, unsentBytes
from netsuite.listen import plainSocketTransport
from netsuite.web.pages import PAGE_HEADERS

try:
    from h2.exceptions import ProtocolError as _H2Error
except ImportError:  # no HTTP/2 here, so no HTTP/2 stream to read for
    _H2Error = ()  # type: ignore[assignment, misc]

__all__ = [
    "StaticFolder",
    "UNSATISFIABLE",
    "clientKey",
    "contentTypeFor",
    "parseAcceptsGzip",
    "parseHTTPDate",
    "parseRange",
    "prefersJSON",
    "withoutRefused",
]

#: Bytes read from disk at once when streaming a large file.
CHUNK_SIZE = 256 * 1024

#: Files being sent at once by a folder (each holds a file descriptor);
#: past them a request for a file gets a 503.
SERVED_FILES = 1024

#: Files sent at once to one client address (an IPv6 client's /64): its
#: share of L{SERVED_FILES}, past which it gets a 503.  One address could
#: hold them all over HTTP/2 (128 connections of 8 files reading nothing),
#: and four over HTTP/1 (256 connections each), and every other client's
#: large files got a 503.
SERVED_FILES_PER_HOST = SERVED_FILES // 8

#: Files one HTTP/2 connection is sent at once; its other requests for
#: files wait for one of them to end.  Each stream of a connection held
#: one (64 of them once its answers filled its queue), counted nowhere: 16
#: connections from one address took 1,024 descriptors.
H2_OPEN_FILES = 8

#: Most bytes read at once for an HTTP/2 stream: what netsuite's HTTP/2
#: connection sends in a reactor turn (C{H2_TURN_BYTES}).  Less when the
#: client's flow-control window holds less, but at least
#: L{H2_MIN_CHUNK_SIZE}: more would only wait in the connection's queue.
H2_CHUNK_SIZE = 256 * 1024

#: Least bytes read at once for an HTTP/2 stream (one frame of the
#: smallest size a client may allow).
H2_MIN_CHUNK_SIZE = 16 * 1024

#: At most this much goes out with C{os.sendfile} in one reactor turn (to a
#: client that takes everything at once) before the other connections' turn.
SENDFILE_TURN_BYTES = 4 * 1024 * 1024

#: zlib level for gzip made here (cached once for small files, streamed for
#: large ones).
GZIP_LEVEL = 6

#: What one cache entry costs besides its key, path and representations
#: (the entry, the cache's own bookkeeping).
_ENTRY_OVERHEAD = 512

#: What one representation of a file costs besides its bytes (its headers,
#: validators and paths), as measured.
_REPRESENTATION_OVERHEAD = 1024

_MISSING = 0
_FILE = 1
_DIR = 2

_ALLOWED_METHODS = b"GET, HEAD"

#: An entry's C{checked} that makes the next lookup look at the disk.
_STALE = float("-inf")

# Request headers a file's answer depends on (in Headers' canonical case).
#: Request paths L{StaticFolder.quickAnswer} remembers (all are forgotten
#: when more come), and the longest it remembers.
_QUICK_LIMIT = 1024
_QUICK_PATH_LIMIT = 1024

_CONDITIONAL_HEADERS = frozenset(
    [
        b"Range",
        b"If-Range",
        b"Accept-Encoding",
        b"If-Match",
        b"If-None-Match",
        b"If-Modified-Since",
        b"If-Unmodified-Since",
    ]
)

# MIME types that differ between systems' mime.types files, or are missing
# from some of them, pinned for the web.
_MIME_OVERRIDES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".xml": "application/xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}

# A file whose name says it is compressed ("a.tar.gz") is sent as the
# compressed file it is, never with Content-Encoding.
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}

_TEXT_APPLICATION_TYPES = frozenset(
    [
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/xhtml+xml",
        "image/svg+xml",
    ]
)

_RANGE_SPEC = re.compile(rb"^[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*$")
#: Folder entries scanned per reactor turn, and listing entries written
#: per part: a folder of 100,000 is listed in steps, never in one go.
_LIST_STEP = 1000

#: Scanned listings kept (each for C{cacheSeconds}).
_LISTINGS_KEPT = 16

_ENTITY_TAG = re.compile(rb'(W/)?("[^"]*")')
#: A whole If-Match / If-None-Match list (RFC 9110 8.8.3, 5.6.1: empty
#: elements allowed); anything else matches nothing.
_ENTITY_TAGS = re.compile(
    rb'[ \t]*(?:(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"[ \t]*)?'
    rb'(?:,[ \t]*(?:(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"[ \t]*)?)*'
)
_QVALUE = re.compile(rb"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


def contentTypeFor(name: bytes) -> tuple[bytes, bool]:
    """
    The C{Content-Type} for a file name, and whether such a file is worth
    compressing.

    Text types (C{text/*}, JSON, JavaScript, XML, SVG) get
    C{; charset=utf-8}; unknown types are C{application/octet-stream}.
    """
    fsName = os.fsdecode(name)
    extension = os.path.splitext(fsName)[1].lower()
    mimeType = _MIME_OVERRIDES.get(extension)
    if mimeType is None:
        mimeType, encoding = mimetypes.guess_type(fsName, strict=False)
        if encoding is not None:
            mimeType = _ENCODING_TYPES.get(encoding, "application/octet-stream")
        elif mimeType is None:
            mimeType = "application/octet-stream"
    textual = (
        mimeType.startswith("text/")
        or mimeType in _TEXT_APPLICATION_TYPES
        or mimeType.endswith("+json")
        or mimeType.endswith("+xml")
    )
    if textual:
        return (mimeType + "; charset=utf-8").encode("ascii"), True
    return mimeType.encode("ascii"), False


def parseAcceptsGzip(value: bytes) -> bool:
    """
    Whether an C{Accept-Encoding} value lets us send gzip: C{gzip} (or
    C{x-gzip}) with a non-zero q, or C{*} with a non-zero q when gzip is not
    named.  A malformed q counts as zero.
    """
    gzipQ: float | None = None
    starQ: float | None = None
    for item in value.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = _qvalue(params)
        if coding in (b"gzip", b"x-gzip"):
            gzipQ = q if gzipQ is None else max(gzipQ, q)
        elif coding == b"*":
            starQ = q if starQ is None else max(starQ, q)
    if gzipQ is not None:
        return gzipQ > 0
    return starQ is not None and starQ > 0


def prefersJSON(accept: bytes | None) -> bool:
    """
    Whether an C{Accept} value ranks C{application/json} above C{text/html}
    (each ranked by the most specific media range that matches it).
    """
    if not accept:
        return False
    ranks = {b"application/json": (0, 0.0), b"text/html": (0, 0.0)}
    for item in accept.split(b","):
        mediaRange, _, params = item.partition(b";")
        mediaRange = mediaRange.strip().lower()
        if not mediaRange:
            continue
        q = _qvalue(params)
        for target in ranks:
            if mediaRange == target:
                specificity = 3
            elif mediaRange == target.split(b"/")[0] + b"/*":
                specificity = 2
            elif mediaRange == b"*/*":
                specificity = 1
            else:
                continue
            if specificity > ranks[target][0]:
                ranks[target] = (specificity, q)
    return ranks[b"application/json"][1] > ranks[b"text/html"][1]


def _qvalue(params: bytes) -> float:
    """
    The q parameter in C{;}-separated C{params}: 1 when absent, 0 when
    malformed.
    """
    if not params:
        return 1.0
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            value = value.strip()
            if _QVALUE.match(value):
                return float(value)
            return 0.0
    return 1.0


def withoutRefused(value: bytes) -> bytes:
    """
    The items of an C{Accept}-like value whose q is above 0: what the
    client takes (C{q=0} says "not this", RFC 9110 12.4.2).
    """
    return b",".join(item for item in value.split(b",") if _qvalue(item.partition(b";")[2]) > 0)


#: What L{parseRange} returns for a range that starts past the end.
UNSATISFIABLE = object()


def parseRange(value: bytes, size: int) -> tuple[int, int] | object | None:
    """
    Parse a C{Range} value for a representation of C{size} bytes.

    @return: C{(first, last)} (inclusive) for exactly one satisfiable range;
        L{UNSATISFIABLE} for one unsatisfiable range; L{None} when the header
        is to be ignored (another unit, bad syntax, or several ranges: those
        get the whole file, never a multipart body or overlapping copies).
    """
    unit, sep, specs = value.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes":
        return None
    items = [item for item in specs.split(b",") if item.strip()]
    if len(items) != 1:
        return None
    match = _RANGE_SPEC.match(items[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = _bigInt(first)
        if last:
            end = _bigInt(last)
            if end < start:
                return None
        else:
            end = size - 1
        if start >= size:
            return UNSATISFIABLE
        return start, min(end, size - 1)
    if last:
        suffix = _bigInt(last)
        if suffix == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    return None


def _bigInt(digits: bytes) -> int:
    """
    Decimal digits as an int, saturating far beyond any file size.
    """
    if len(digits) > 18:
        return 10**18
    return int(digits)


def parseHTTPDate(value: bytes) -> int | None:
    """
    An HTTP date as seconds since the epoch, or L{None} if it is not one
    (a day, hour, minute or second out of range too: C{99 Nov} is not the
    9th of February, RFC 9110 13.1.3).
    """
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
        if parsed is None:
            return None
        year, month, day, hour, minute, second = parsed[:6]
        if not 0 <= second <= 60:  # 60: a leap second
            return None
        datetime.datetime(year, month, day, hour, minute)  # ValueError if out of range
        return int(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


def _etagMatches(header: bytes, etag: bytes, weak: bool) -> bool:
    """
    Whether an C{If-Match}/C{If-None-Match} value names C{etag} (a strong,
    quoted tag); C{weak} comparison also accepts C{W/} tags.  A value that
    is not C{*} or a list of entity tags names nothing (C{x"tag"} did).
    """
    if header.strip(b" \t") == b"*":
        return True
    if _ENTITY_TAGS.fullmatch(header) is None:
        return False
    for match in _ENTITY_TAG.finditer(header):
        if match.group(1) and not weak:
            continue
        if match.group(2) == etag:
            return True
    return False


def _ifRangeHolds(
    ifRange: Sequence[bytes] | None, representation: "_Representation"
) -> bool:
    """
    Whether a C{Range} may be honoured: no C{If-Range}, or one that is the
    representation's (strong) ETag or exactly its modification date (not
    two, which say nothing).
    """
    if ifRange is None:
        return True
    if len(ifRange) != 1:
        return False
    value = ifRange[0].strip()
    if value.startswith(b'"'):
        return value == representation.etag
    if value.startswith(b"W/"):
        return False
    return parseHTTPDate(value) == representation.modified


def _httpDate(seconds: float) -> bytes:
    """
    An HTTP date, for any time a file system can hold (clamped to years
    1970 to 9999).
    """
    seconds = min(max(seconds, 0), 253402300799)
    return email.utils.formatdate(seconds, usegmt=True).encode("ascii")


class _Representation:
    """
    One way of sending a file: its bytes as they are on disk, gzip bytes made
    here, gzip streamed from a large file, or a C{NAME.gz} sibling.

    @ivar path: The file to read when C{body} is L{None}.
    @ivar size: Length of what is sent, or L{None} when streamed compressed.
    @ivar signature: L{_signature} of the file at C{path}; a file opened
        later must still match it.
    @ivar headers: Headers for a 200 or 206 response (no C{Content-Length}).
    @ivar headers304: Headers for a 304 response.
    """

    __slots__ = (
        "path",
        "body",
        "size",
        "signature",
        "etag",
        "modified",
        "headers",
        "headers304",
        "streamGzip",
        "_variant",
        "_contentType",
        "_vary",
        "_encoding",
        "quickHead",
    )

    def __init__(
        self,
        path: bytes,
        body: bytes | None,
        size: int | None,
        signature: tuple[int, int, int],
        variant: bytes,
        modified: int,
        contentType: bytes,
        vary: bool,
        encoding: bytes | None = None,
        streamGzip: bool = False,
    ) -> None:
        self.path = path
        self.body = body
        self.size = size
        self.signature = signature
        self.etag = etag = _etag(signature, variant)
        # A time still to come is sent as now (RFC 9110 8.8.2.1: never
        # later than the answer's Date), as Apache does: after an archive
        # from a fast clock, it was sent as it was, and sent back in
        # If-Modified-Since it never matched.
        self.modified = modified = min(modified, int(_wallClock()))
        self.streamGzip = streamGzip
        self._variant = variant
        self._contentType = contentType
        self._vary = vary
        self._encoding = encoding
        lastModified = _httpDate(modified)
        validators = [(b"ETag", etag), (b"Last-Modified", lastModified)]
        if vary:
            validators.append((b"Vary", b"Accept-Encoding"))
        headers = [(b"Content-Type", contentType), (b"Accept-Ranges", b"bytes")]
        if encoding is not None:
            headers.append((b"Content-Encoding", encoding))
        self.headers = tuple(headers + validators)
        self.headers304 = tuple(validators)
        #: The header lines of a whole 200 answer, made by L{quickAnswer}.
        self.quickHead: bytes | None = None

    def changedTo(self, st: os.stat_result) -> _Representation:
        """
        This representation of a file streamed from disk, for the version
        of the file whose C{fstat} is C{st}.
        """
        signature = _signature(st)
        return _Representation(
            self.path,
            None,
            None if self.streamGzip else st.st_size,
            signature,
            self._variant,
            int(st.st_mtime),
            self._contentType,
            self._vary,
            self._encoding,
            self.streamGzip,
        )


#: The time a modification time is checked against (L{_Representation}).
_wallClock = time.time


class _Entry:
    """
    What one request path (the raw C{postpath}) resolved to when last
    checked.

    @ivar kind: L{_MISSING} (absent or refused), L{_FILE} or L{_DIR}.
    @ivar checked: C{clock.seconds()} of the last check against the disk.
    @ivar identity: For a file, its bytes as they are.
    @ivar gzipped: For a file, the representation for clients that accept
        gzip, or L{None}; C{gzipPending} when small gzip bytes are yet to be
        made.
    @ivar cost: Bytes this entry counts against the cache's limit.
    """

    __slots__ = (
        "kind",
        "path",
        "checked",
        "identity",
        "gzipped",
        "gzipPending",
        "vary",
        "contentType",
        "cost",
    )

    def __init__(self, kind: int, path: bytes, checked: float) -> None:
        self.kind = kind
        self.path = path
        self.checked = checked
        self.identity: _Representation | None = None
        self.gzipped: _Representation | None = None
        self.gzipPending = False
        self.vary = False
        self.contentType = b""
        self.cost = _ENTRY_OVERHEAD


def _representationCost(representation: _Representation) -> int:
    """
    What a cached representation takes in memory: its bytes, headers and
    path.
    """
    body = representation.body
    return (
        _REPRESENTATION_OVERHEAD
        + (len(body) if body is not None else 0)
        + sys.getsizeof(representation.path)
    )


def _hidden(name: bytes) -> bool:
    """
    Whether a path segment names a dotfile or dot-directory, which is
    neither served nor listed; C{.well-known} (RFC 8615: ACME challenges,
    security.txt) is the exception.
    """
    return name[:1] == b"." and name != b".well-known"


class StaticFolder(Resource):
    """
    Serve the files under C{root}: the resource for every path below the
    place where it is mounted (it reads C{request.postpath} itself).

    Refused, with the C{notFound} page (404), never an error: anything that
    does not exist; names starting with C{.} (dotfiles and dot-directories
    are neither served nor listed, as in many static servers; except
    C{.well-known}, for ACME challenges and security.txt); C{..};
    segments with a backslash, NUL or an encoded C{/}; special files (FIFOs,
    devices, sockets); and symbolic links that lead outside C{root} (unless
    C{followSymlinks}).  Every segment is decoded once, by C{twisted.web}:
    C{%252e} is the literal name C{%2e}.

    Directories: C{index.html} when there is one, otherwise a listing,
    directories first then by name, as HTML or, for clients whose C{Accept}
    prefers it, JSON (C{[{"name", "size", "mtime", "is_dir"}]}; C{size} is 0
    for directories, C{mtime} seconds since the epoch).  A directory URL
    without its final slash is redirected (301) to the slash form, by an
    absolute path.

    Files of at most C{maxCachedFileSize} bytes are kept in memory (up to
    C{maxCacheBytes} in all, least recently used first out); every cached
    answer, about a file or a directory or a missing name, is checked against
    the disk again when it is more than C{cacheSeconds} old.
    """

    isLeaf = True
    log = Logger()

    #: Seconds a client may take no part of a streamed file before it is
    #: disconnected (the clock's C{callLater} times it).
    stallTimeout = 60.0

    def __init__(
        self,
        root: str,
        *,
        notFound: IResource,
        clock: IReactorTime,
        followSymlinks: bool = False,
        cacheSeconds: float = 1.0,
        maxCachedFileSize: int = 64 * 1024,
        maxCacheBytes: int = 32 * 1024 * 1024,
    ) -> None:
        """
        @param root: The directory to serve.
        @param notFound: Rendered for anything missing or refused.
        @param clock: Whose C{seconds()} times the cache, and whose
            C{callLater} times out clients that stop reading.
        @param followSymlinks: Serve symbolic links that lead outside C{root}.
        @param cacheSeconds: How long a cached answer is trusted without
            looking at the disk again.
        @param maxCachedFileSize: Files up to this size are kept in memory.
        @param maxCacheBytes: Bound on the memory the cache holds.
        """
        Resource.__init__(self)
        self._root = os.fsencode(os.path.abspath(root))
        self._rootReal = os.path.realpath(self._root)
        self._rootPrefix = (
            self._rootReal if self._rootReal.endswith(b"/") else self._rootReal + b"/"
        )
        self._notFound = notFound
        self._clock = clock
        self._followSymlinks = followSymlinks
        self._cacheSeconds = cacheSeconds
        self._maxCachedFileSize = maxCachedFileSize
        self._maxCacheBytes = maxCacheBytes
        self._cache: OrderedDict[tuple[bytes, ...], _Entry] = OrderedDict()
        self._cacheBytes = 0
        self._acceptsGzip: dict[bytes, bool] = {}
        self._producers: set[_FileProducer] = set()
        #: At most this many files sent at once (L{SERVED_FILES}; L{None}:
        #: no limit); netsuite's twistd plugin fits it to the open-file
        #: limit.
        self.maxOpenFiles: int | None = SERVED_FILES
        #: At most this many of them to one client address
        #: (L{SERVED_FILES_PER_HOST}; L{None}: no limit).
        self.maxOpenFilesPerHost: int | None = SERVED_FILES_PER_HOST
        #: Files being sent, by client address (L{hostKey}).
        self._filesByHost: dict[str, int] = {}
        #: Files being sent to each HTTP/2 connection, and its requests
        #: waiting for one of them to end, in order (a request that is
        #: lost leaves at once).
        self._h2Files: dict[Any, int] = {}
        self._h2Waiting: dict[Any, dict[Any, tuple[tuple[bytes, ...], _Entry]]] = {}
        self._quick: dict[bytes, tuple[bytes, ...]] = {}
        self._listings: dict[bytes, _Listing] = {}

    # Public API

    def hasIndex(self) -> bool:
        """
        Whether C{root/index.html} exists (answered from the cache).
        """
        return self._lookup((b"index.html",)).kind == _FILE

    def render(self, request: IRequest) -> bytes | int:
        """
        Answer a C{GET} or C{HEAD} request for C{request.postpath}; any other
        method gets 405 with C{Allow: GET, HEAD}.
        """
        setHeader = request.responseHeaders.setRawHeaders
        setHeader(b"X-Content-Type-Options", [b"nosniff"])
        method = request.method
        if method != b"GET" and method != b"HEAD":
            return self._notAllowed(request)
        try:
            return self._renderPath(request)
        except _Unavailable as e:
            return self._unavailable(request, e)

    def _unavailable(self, request: IRequest, e: _Unavailable) -> bytes:
        # Out of descriptors (a flood): every file answered 404, the
        # missing ones cached as such.
        request.setResponseCode(http.SERVICE_UNAVAILABLE)
        request.responseHeaders.setRawHeaders(b"Retry-After", [b"1"])
        request.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
        body = f"the server cannot open files now ({e.args[0]}); try again\n".encode("utf-8")
        request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
        return b"" if request.method == b"HEAD" else body

    def _renderPath(self, request: IRequest) -> bytes | int:
        """
        L{render} for a C{GET} or C{HEAD}.

        @raise _Unavailable: the system could not open what it needed.
        """
        postpath = request.postpath
        if not postpath:
            # The folder itself, without its slash.
            return self._redirectToSlash(request, ())
        # Empty and "." segments name nothing ("//a/./b" is "/a/b", as in
        # nginx), so that they neither make another cache entry nor fill one.
        key = tuple(segment for segment in postpath if segment != b"" and segment != b".")
        entry = self._lookup(key)
        kind = entry.kind
        trailingSlash = postpath[-1] in (b"", b".")
        if kind == _FILE:
            if trailingSlash:
                return self._renderNotFound(request)
            return self._renderFile(request, key, entry)
        if kind == _DIR:
            if not trailingSlash:
                return self._redirectToSlash(request, key)
            indexKey = key + (b"index.html",)
            index = self._lookup(indexKey)
            if index.kind == _FILE:
                return self._renderFile(request, indexKey, index)
            return self._renderListing(request, key, entry)
        return self._renderNotFound(request)

    def quickAnswer(self, request: IRequest) -> tuple[bytes, bytes] | None:
        """
        The answer to a plain C{GET} or C{HEAD} of a small file this folder
        has answered at the same request path before, while its cached copy
        is fresh: C{(header lines, body)} of the same 200 response the
        folder would give, without resource traversal.  L{None} for
        anything else (a conditional, ranged or gzip-accepting request, a
        path not seen, a stale or evicted file), which goes the usual way.

        The header lines are C{X-Content-Type-Options}, the file's headers
        and C{Content-Length}, each ending in CRLF; the caller adds the
        status line and its own headers.
        """
        key = self._quick.get(request.path)
        if key is None:
            return None
        method = request.method
        if method != b"GET" and method != b"HEAD":
            return None
        entry = self._cache.get(key)
        if entry is None or entry.kind != _FILE:
            return None
        if not 0 <= self._clock.seconds() - entry.checked < self._cacheSeconds:
            return None
        representation = entry.identity
        if representation is None or representation.body is None:
            return None
        for name, _ in request.requestHeaders.getAllRawHeaders():
            if name in _CONDITIONAL_HEADERS:
                return None
        head = representation.quickHead
        if head is None:
            headers = Headers()
            headers.setRawHeaders(b"X-Content-Type-Options", [b"nosniff"])
            for name, value in representation.headers:
                headers.setRawHeaders(name, [value])
            headers.setRawHeaders(b"Content-Length", [b"%d" % (representation.size,)])
            head = representation.quickHead = b"".join(
                b"%s: %s\r\n" % (name, value)
                for name, values in headers.getAllRawHeaders()
                for value in values
            )
        self._cache.move_to_end(key)
        return head, (representation.body if method == b"GET" else b"")

    def _rememberQuick(self, path: bytes, key: tuple[bytes, ...]) -> None:
        """
        Let L{quickAnswer} answer C{path} from the cache entry C{key}.
        """
        quick = self._quick
        if len(path) > _QUICK_PATH_LIMIT:
            return
        if len(quick) >= _QUICK_LIMIT and path not in quick:
            quick.clear()
        quick[path] = key

    # The cache

    def _lookup(self, key: tuple[bytes, ...]) -> _Entry:
        """
        The entry for a path (its segments, without empty or C{.} ones),
        from the cache when it is fresh enough.
        """
        now = self._clock.seconds()
        cache = self._cache
        entry = cache.get(key)
        if entry is not None:
            age = now - entry.checked
            if 0 <= age < self._cacheSeconds:
                cache.move_to_end(key)
                return entry
            del cache[key]
            self._cacheBytes -= entry.cost
        entry = self._resolve(key, now, entry)
        # What the key and paths really take (sys.getsizeof counts a
        # shared object once per use: rather too much than too little).
        entry.cost += (
            sys.getsizeof(key)
            + sum(sys.getsizeof(part) for part in key)
            + sys.getsizeof(entry.path)
        )
        cache[key] = entry
        self._cacheBytes += entry.cost
        self._evict()
        return entry

    def _evict(self) -> None:
        cache = self._cache
        while self._cacheBytes > self._maxCacheBytes and len(cache) > 1:
            _, old = cache.popitem(last=False)
            self._cacheBytes -= old.cost

    def _resolve(
        self, key: tuple[bytes, ...], now: float, old: _Entry | None
    ) -> _Entry:
        """
        Look at the disk: what C{key} names, if it may be served.
        """
        segments = []
        for segment in key:
            if segment == b"" or segment == b".":
                continue
            if (
                _hidden(segment)
                or b"/" in segment
                or b"\\" in segment
                or b"\x00" in segment
            ):
                return _Entry(_MISSING, b"", now)
            segments.append(segment)
        path = os.path.join(self._root, *segments) if segments else self._root
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return _Entry(_MISSING, path, now)
        if not self._inside(path):
            return _Entry(_MISSING, path, now)
        if stat.S_ISDIR(st.st_mode):
            return _Entry(_DIR, path, now)
        if not stat.S_ISREG(st.st_mode):
            return _Entry(_MISSING, path, now)
        try:
            return self._fileEntry(path, st, now, old)
        except OSError:
            return _Entry(_MISSING, path, now)

    def _inside(self, path: bytes) -> bool:
        """
        Whether C{path} may be served: its real path is inside the root with
        no dot-name on the way (a link to C{.git/config} is refused too), or
        it leads outside and links are followed.
        """
        return self._realInside(os.path.realpath(path))

    def _realInside(self, real: bytes) -> bool:
        """
        L{_inside} for a path with no symbolic link left in it.
        """
        if real == self._rootReal:
            return True
        if real.startswith(self._rootPrefix):
            relative = real[len(self._rootPrefix) :]
            return not any(_hidden(part) for part in relative.split(b"/"))
        return self._followSymlinks

    def _open(self, path: bytes, flags: int = 0) -> tuple[int, os.stat_result, bytes] | None:
        """
        Open C{path} (a regular file, or a directory with C{O_DIRECTORY}):
        C{(fd, fstat, real path)}, or L{None} if it is gone or may not be
        served.

        What was opened is checked, not only what the path named before: a
        name swapped for a link to outside the root between the check and
        the open (or while its entry was cached) is refused.
        """
        opened = _openRegular(path, flags)
        if opened is None:
            return None
        fd, st = opened
        try:
            real = os.readlink(b"/proc/self/fd/%d" % (fd,))
        except OSError:
            # No /proc: the path's real path must be inside and be what
            # was opened.
            real = os.path.realpath(path)
            try:
                again = os.stat(real)
                same = (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino)
            except (OSError, ValueError):
                same = False
            if not same and not self._followSymlinks:
                os.close(fd)
                return None
        if not self._realInside(real):
            os.close(fd)
            return None
        return fd, st, real

    def _fileEntry(
        self, path: bytes, st: os.stat_result, now: float, old: _Entry | None
    ) -> _Entry:
        entry = _Entry(_FILE, path, now)
        contentType, compressible = contentTypeFor(os.path.basename(path))
        entry.contentType = contentType
        signature = _signature(st)
        sibling = self._siblingStat(path, st)
        entry.vary = compressible or sibling is not None
        reuse = (
            old is not None
            and old.kind == _FILE
            and old.path == path
            and old.vary == entry.vary
            and old.identity is not None
            and old.identity.signature == signature
        )
        if reuse:
            assert old is not None
            entry.identity = old.identity
        else:
            entry.identity = self._fromDisk(path, st, contentType, entry.vary)
        identity = entry.identity
        assert identity is not None
        entry.cost += _representationCost(identity)
        if sibling is not None:
            previous = old.gzipped if reuse and old is not None else None
            siblingSignature = _signature(sibling)
            if (
                previous is not None
                and previous.path == path + b".gz"
                and previous.signature == siblingSignature
            ):
                entry.gzipped = previous
            else:
                entry.gzipped = self._fromDisk(
                    path + b".gz", sibling, contentType, True, b"gzs", b"gzip"
                )
        elif compressible:
            if identity.body is None:
                entry.gzipped = _Representation(
                    path,
                    None,
                    None,
                    identity.signature,
                    b"gz",
                    identity.modified,
                    contentType,
                    True,
                    encoding=b"gzip",
                    streamGzip=True,
                )
            elif (
                reuse
                and old is not None
                and not old.gzipPending
                and (old.gzipped is None or old.gzipped.path == path)
            ):
                # The gzip bytes made here for this very version (or the
                # finding that gzip does not make it smaller).
                entry.gzipped = old.gzipped
            else:
                entry.gzipPending = True
        if entry.gzipped is not None:
            entry.cost += _representationCost(entry.gzipped)
        return entry

    def _cacheable(self, size: int) -> bool:
        return (
            size <= self._maxCachedFileSize
            and 2 * size + _ENTRY_OVERHEAD <= self._maxCacheBytes
        )

    def _fromDisk(
        self,
        path: bytes,
        st: os.stat_result,
        contentType: bytes,
        vary: bool,
        tag: bytes = b"",
        encoding: bytes | None = None,
    ) -> _Representation:
        """
        The representation of the file at C{path} (the file itself, or its
        C{.gz} sibling with C{tag} and C{encoding}), its bytes read now if it
        is small enough to cache.
        """
        body = None
        signature = _signature(st)
        modified = int(st.st_mtime)
        if self._cacheable(st.st_size):
            opened = self._open(path)
            if opened is None:
                raise FileNotFoundError(path)
            body, signature, modified = _readSmall(opened[0], opened[1])
        extra = {} if encoding is None else {"encoding": encoding}
        return _Representation(
            path, body, signature[0], signature, tag, modified, contentType, vary, **extra
        )

    def _siblingStat(self, path: bytes, st: os.stat_result) -> os.stat_result | None:
        """
        The C{os.stat} of C{path + ".gz"} if it may be sent instead of
        C{path}: a regular file inside the root, not older than C{path}.
        """
        sibling = path + b".gz"
        try:
            siblingStat = os.stat(sibling)
        except (OSError, ValueError):
            return None
        if (
            not stat.S_ISREG(siblingStat.st_mode)
            or siblingStat.st_mtime_ns < st.st_mtime_ns
            or not self._inside(sibling)
        ):
            return None
        return siblingStat

    def _gzipOf(self, key: tuple[bytes, ...], entry: _Entry) -> _Representation | None:
        """
        The gzip representation of C{entry}, made (once) if it is pending;
        L{None} when gzip would not be smaller.
        """
        if entry.gzipPending:
            entry.gzipPending = False
            identity = entry.identity
            assert identity is not None and identity.body is not None
            compressed = _gzip(identity.body)
            if len(compressed) < len(identity.body):
                entry.gzipped = _Representation(
                    identity.path,
                    compressed,
                    len(compressed),
                    identity.signature,
                    b"gz",
                    identity.modified,
                    entry.contentType,
                    True,
                    encoding=b"gzip",
                )
                cost = _representationCost(entry.gzipped)
                entry.cost += cost
                if self._cache.get(key) is entry:
                    self._cacheBytes += cost
                    self._evict()
        return entry.gzipped

    # Responses

    def _renderFile(self, request, key: tuple[bytes, ...], entry: _Entry) -> bytes | int:
        found: dict[bytes, Sequence[bytes]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name in _CONDITIONAL_HEADERS:
                found[name] = values
        if request.method != b"GET":
            found.pop(b"Range", None)
        representation = entry.identity
        assert representation is not None
        if entry.vary and b"Range" not in found:
            acceptEncoding = found.get(b"Accept-Encoding")
            if acceptEncoding is not None and self._clientAcceptsGzip(
                b",".join(acceptEncoding)
            ):
                gzipped = self._gzipOf(key, entry)
                if gzipped is not None and (
                    # A body of unknown length needs chunks (or HTTP/2).
                    not gzipped.streamGzip
                    or request.clientproto in (b"HTTP/1.1", b"HTTP/2")
                ):
                    representation = gzipped

        fd = None
        if representation.body is None:
            connection = _h2Connection(request.channel)
            if (
                connection is not None
                and self._h2Files.get(connection, 0) >= H2_OPEN_FILES
                and self._sendsTheFile(request, representation, found)
            ):
                return self._waitForFile(connection, request, key, entry)
            # What sends no file holds one only while it is answered (one
            # of the files kept aside for the process, see tap.py).
            if self._folderFull() and self._sendsTheFile(request, representation, found):
                raise self._folderUnavailable()
            if self._hostFull(request) and self._sendsTheFile(request, representation, found):
                raise self._hostUnavailable()
            opened = self._open(representation.path)
            if opened is None:
                entry.checked = _STALE
                return self._renderNotFound(request)
            fd, st, _ = opened
            if _signature(st) != representation.signature:
                # Changed since it was cached: answer from what was opened,
                # and look at the disk again next time.
                entry.checked = _STALE
                before = self._sendsTheFile(request, representation, found)
                representation = representation.changedTo(st)
                if not before and self._sendsTheFile(request, representation, found):
                    # A 304 by what was cached (an old ETag) that is a 200
                    # now: within the limits like any other.
                    if connection is not None and self._h2Files.get(connection, 0) >= H2_OPEN_FILES:
                        os.close(fd)
                        return self._waitForFile(connection, request, key, entry)
                    if self._folderFull():
                        os.close(fd)
                        raise self._folderUnavailable()
                    if self._hostFull(request):
                        os.close(fd)
                        raise self._hostUnavailable()
        try:
            plan = self._respond(request, representation, found)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        if (
            not found
            and type(plan) is bytes
            and representation is entry.identity
            and representation.body is not None
            and request.code == http.OK
        ):
            self._rememberQuick(request.path, key)
        if type(plan) is not tuple:
            if fd is not None:
                os.close(fd)
            return plan  # type: ignore[return-value]
        assert fd is not None
        start, length = plan
        _FileProducer(self, request, fd, start, length, representation.streamGzip).start()
        return NOT_DONE_YET

    def _waitForFile(self, connection: Any, request, key: tuple[bytes, ...], entry: _Entry) -> int:
        """
        Have C{request} wait until one of its HTTP/2 C{connection}'s files
        ends (L{H2_OPEN_FILES}); it leaves at once if it is lost.
        """
        self._h2Waiting.setdefault(connection, {})[request] = (key, entry)
        request.notifyFinish().addErrback(self._waitingLost, connection, request)
        return NOT_DONE_YET

    def _folderFull(self) -> bool:
        """
        Whether the folder sends as many files as it may at once
        (L{maxOpenFiles}).
        """
        return self.maxOpenFiles is not None and len(self._producers) >= self.maxOpenFiles

    def _folderUnavailable(self) -> _Unavailable:
        return _Unavailable(f"{self.maxOpenFiles} files are being sent")

    def _hostUnavailable(self) -> _Unavailable:
        return _Unavailable(f"{self.maxOpenFilesPerHost} files are being sent to your address")

    def _hostFull(self, request) -> bool:
        """
        Whether C{request}'s client address has its share of the files
        being sent (L{maxOpenFilesPerHost}); never for a client without an
        address (a UNIX socket's).
        """
        perHost = self.maxOpenFilesPerHost
        host = clientKey(request)
        return perHost is not None and bool(host) and self._filesByHost.get(host, 0) >= perHost

    def _sendsTheFile(self, request, representation: _Representation, found: dict[bytes, Sequence[bytes]]) -> bool:
        """
        Whether C{request} would be sent the file's bytes, by what is
        known of it: not a C{HEAD}, a C{304} or C{412}, or a C{416}, which
        hold the file only while they are answered, and so never wait
        behind a connection's files.
        """
        if request.method == b"HEAD" or self._preconditions(representation, found) is not None:
            return False
        rangeValue = found.get(b"Range")
        if rangeValue is not None and representation.size:
            byteRange = parseRange(b",".join(rangeValue), representation.size)
            if byteRange is UNSATISFIABLE and _ifRangeHolds(found.get(b"If-Range"), representation):
                return False
        return True

    def _waitingLost(self, failure: Failure, connection: Any, request) -> None:
        """
        A request waiting for one of its HTTP/2 connection's files was
        lost (its stream reset, or the connection gone): it stops waiting.
        """
        waiting = self._h2Waiting.get(connection)
        if waiting is not None:
            waiting.pop(request, None)
            if not waiting:
                del self._h2Waiting[connection]

    def _h2FileDone(self, connection: Any, stalledFor: float | None = None) -> None:
        """
        A file sent to HTTP/2 C{connection} ended: a request of that
        connection waiting for one goes on, unless the connection is
        ending (its requests are lost, or about to be: Twisted tells its
        streams one at a time), or, the file reset by its stall timeout
        after C{stalledFor} seconds, times out now, its idle timeout due.
        A waiting request whose stream h2 has closed or forgotten (the
        client reset it in the input being read, Twisted hears of it next)
        is passed over: its reset, to come, ends it (logged 499).  It was
        started on the forgotten stream, and h2 raised (a critical error,
        the request logged and counted as a 500).
        """
        left = self._h2Files.get(connection, 1) - 1
        if left > 0:
            self._h2Files[connection] = left
        else:
            self._h2Files.pop(connection, None)
        waiting = self._h2Waiting.get(connection)
        if waiting is None:
            return
        timeOutIfDue = getattr(connection, "timeOutIfDue", None)  # netsuite's connection's
        if stalledFor is not None and timeOutIfDue is not None:
            timeOutIfDue(stalledFor)  # then closed: none starts
        if not _h2Open(connection):
            del self._h2Waiting[connection]
            return
        while waiting and self._h2Files.get(connection, 0) < H2_OPEN_FILES:
            request = next((r for r in waiting if not _h2StreamGone(connection, r)), None)
            if request is None:
                break
            key, entry = waiting.pop(request)
            if not getattr(request, "_disconnected", False) and not getattr(request, "finished", False):
                self._renderLater(request, key, entry)
        if not waiting:
            self._h2Waiting.pop(connection, None)

    def _renderLater(self, request, key: tuple[bytes, ...], entry: _Entry) -> None:
        """
        Answer a request for a file that waited (see L{H2_OPEN_FILES}).
        """
        try:
            body = self._renderFile(request, key, entry)
        except _Unavailable as e:
            body = self._unavailable(request, e)
        except Exception:
            self.log.failure("answering {path!r}", path=request.path)
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            body = b""
        if body is NOT_DONE_YET:
            return
        if body:
            request.write(body)
        request.finish()

    def _respond(
        self,
        request,
        representation: _Representation,
        found: dict[bytes, Sequence[bytes]],
    ) -> bytes | int | tuple[int, int]:
        """
        Answer with C{representation}, after preconditions and ranges: the
        response (bytes, or C{NOT_DONE_YET} when already finished), or
        C{(offset, length)} to stream from its file.
        """
        setHeader = request.responseHeaders.setRawHeaders
        status = self._preconditions(representation, found)
        if status is not None:
            request.setResponseCode(status)
            if status == http.NOT_MODIFIED:
                for name, value in representation.headers304:
                    setHeader(name, [value])
            else:
                setHeader(b"Content-Length", [b"0"])
            request.write(b"")
            request.finish()
            return NOT_DONE_YET

        for name, value in representation.headers:
            setHeader(name, [value])

        size = representation.size
        start = 0
        length = size
        rangeValue = found.get(b"Range")
        if rangeValue is not None and size:
            # Two Range lines are one list of ranges (RFC 9110 5.3).
            byteRange = parseRange(b",".join(rangeValue), size)
            if byteRange is not None and not _ifRangeHolds(
                found.get(b"If-Range"), representation
            ):
                byteRange = None
            if byteRange is UNSATISFIABLE:
                request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
                request.responseHeaders.removeHeader(b"Content-Type")
                setHeader(b"Content-Range", [b"bytes */%d" % (size,)])
                setHeader(b"Content-Length", [b"0"])
                request.write(b"")
                request.finish()
                return NOT_DONE_YET
            if byteRange is not None:
                first, last = byteRange  # type: ignore[misc]
                start, length = first, last - first + 1
                request.setResponseCode(http.PARTIAL_CONTENT)
                setHeader(
                    b"Content-Range", [b"bytes %d-%d/%d" % (first, last, size)]
                )

        if length is not None:
            setHeader(b"Content-Length", [b"%d" % (length,)])
        if request.method == b"HEAD":
            return b""
        body = representation.body
        if body is not None:
            if length == size:
                return body
            return body[start : start + length]
        return (start, length if length is not None else representation.signature[0])

    def _preconditions(
        self, representation: _Representation, found: dict[bytes, Sequence[bytes]]
    ) -> int | None:
        """
        412 or 304 when the request's preconditions say so (RFC 9110 13.2.2),
        otherwise L{None}.
        """
        ifMatch = found.get(b"If-Match")
        if ifMatch is not None:
            if not _etagMatches(b",".join(ifMatch), representation.etag, weak=False):
                return http.PRECONDITION_FAILED
        else:
            ifUnmodified = found.get(b"If-Unmodified-Since")
            if ifUnmodified is not None and len(ifUnmodified) == 1:  # 13.1.4
                date = parseHTTPDate(ifUnmodified[0])
                if date is not None and representation.modified > date:
                    return http.PRECONDITION_FAILED
        ifNoneMatch = found.get(b"If-None-Match")
        if ifNoneMatch is not None:
            if _etagMatches(b",".join(ifNoneMatch), representation.etag, weak=True):
                return http.NOT_MODIFIED
            return None
        ifModified = found.get(b"If-Modified-Since")
        if ifModified is not None and len(ifModified) == 1:  # 13.1.3
            date = parseHTTPDate(ifModified[0])
            # A date still to come is no date the file had (as Apache).
            if date is not None and representation.modified <= date <= self._clock.seconds():
                return http.NOT_MODIFIED
        return None

    def _clientAcceptsGzip(self, value: bytes) -> bool:
        memo = self._acceptsGzip
        accepted = memo.get(value)
        if accepted is None:
            accepted = parseAcceptsGzip(value)
            if len(memo) >= 256:
                memo.clear()
            memo[value] = accepted
        return accepted

    def _renderNotFound(self, request) -> bytes | int:
        body = self._notFound.render(request)
        # (A page that answers a HEAD itself has set its length already.)
        if request.method == b"HEAD" and isinstance(body, bytes) and body:
            request.responseHeaders.setRawHeaders(
                b"Content-Length", [b"%d" % (len(body),)]
            )
            return b""
        return body

    def _notAllowed(self, request) -> bytes:
        request.setResponseCode(http.NOT_ALLOWED)
        request.responseHeaders.setRawHeaders(b"Allow", [_ALLOWED_METHODS])
        _pageHeaders(request)
        return (
            b"<!DOCTYPE html>\n<html><head><title>405 Method Not Allowed</title>"
            b"</head><body><h1>Method Not Allowed</h1></body></html>\n"
        )

    def _urlPath(self, request, key: Iterable[bytes]) -> list[bytes]:
        """
        The decoded segments of the URL path of C{key}: the non-empty
        C{prepath} segments then C{key}'s, without empty or C{.} segments.
        """
        return [
            segment
            for segment in [*request.prepath, *key]
            if segment not in (b"", b".")
        ]

    def _redirectToSlash(self, request, key: tuple[bytes, ...]) -> bytes | int:
        """
        301 to the slash form of a directory URL: an absolute path, built
        again from the decoded segments (so never C{//host}), query kept.
        """
        segments = self._urlPath(request, key)
        location = b"".join(b"/" + _quoteSegment(s) for s in segments) + b"/"
        query = request.uri.partition(b"?")[2]
        if query:
            location += b"?" + quote(query, safe="/?:@!$&'()*+,;=%~").encode("ascii")
        request.setResponseCode(http.MOVED_PERMANENTLY)
        request.responseHeaders.setRawHeaders(b"Location", [location])
        _pageHeaders(request)
        escaped = html.escape(location.decode("ascii")).encode("ascii")
        body = (
            b"<!DOCTYPE html>\n<html><head><title>301 Moved Permanently</title>"
            b'</head><body><a href="' + escaped + b'">' + escaped + b"</a>"
            b"</body></html>\n"
        )
        return self._sendBytes(request, body)

    def _sendBytes(self, request, body: bytes) -> bytes:
        request.responseHeaders.setRawHeaders(
            b"Content-Length", [b"%d" % (len(body),)]
        )
        if request.method == b"HEAD":
            return b""
        return body

    def _renderListing(self, request, key: tuple[bytes, ...], entry: _Entry) -> bytes | int:
        """
        List the folder C{entry}: at once when it is small (its scan took
        one step) or was scanned lately; otherwise when its scan is done.
        """
        made = self._listing(entry.path)
        if made is None:
            return self._renderNotFound(request)
        if not isinstance(made, Deferred):
            return self._answerListing(request, key, made)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)

        def answer(items: list[tuple[bytes, int, float, bool]] | None) -> None:
            if finished.called:  # the client went away meanwhile
                return
            body = self._renderNotFound(request) if items is None else self._answerListing(request, key, items)
            if body is not NOT_DONE_YET:
                request.write(body)
                request.finish()

        made.addCallback(answer)
        return NOT_DONE_YET

    def _answerListing(
        self, request, key: tuple[bytes, ...], items: list[tuple[bytes, int, float, bool]]
    ) -> bytes | int:
        """
        The listing of C{items}, in JSON or HTML: whole, with its
        C{Content-Length}, up to L{_LIST_STEP} entries; above, written a
        part at a time as the client takes it (chunked).
        """
        setHeader = request.responseHeaders.setRawHeaders
        setHeader(b"Vary", [b"Accept"])
        accept = request.requestHeaders.getRawHeaders(b"Accept")
        if prefersJSON(b",".join(accept) if accept else None):
            setHeader(b"Content-Type", [b"application/json; charset=utf-8"])
            parts = _jsonListing(items)
        else:
            _pageHeaders(request)
            segments = self._urlPath(request, key)
            parts = _htmlListing(items, segments, self._urlPath(request, ()) != segments)
        if len(items) <= _LIST_STEP:
            return self._sendBytes(request, b"".join(parts))
        if request.method == b"HEAD":
            return b""
        _PartsProducer(self, request, parts).start()
        return NOT_DONE_YET

    def _listing(
        self, path: bytes
    ) -> list[tuple[bytes, int, float, bool]] | None | Deferred[list[tuple[bytes, int, float, bool]] | None]:
        """
        What a listing of C{path} shows: C{(name, size, mtime, isDir)}, only
        what would be served, directories first, then by name; L{None} if it
        cannot be listed; a L{Deferred} of either while it is scanned.

        A folder is scanned L{_LIST_STEP} entries per reactor turn, once for
        all the requests that want it meanwhile, and what it holds is kept
        for C{cacheSeconds}.
        """
        listings = self._listings
        known = listings.get(path)
        if known is not None:
            if known.items is None:
                waiting: Deferred[list[tuple[bytes, int, float, bool]] | None] = Deferred()
                known.waiting.append(waiting)
                return waiting
            if 0 <= self._clock.seconds() - known.made < self._cacheSeconds:
                return known.items
            del listings[path]
        opened = self._open(path, os.O_DIRECTORY)
        if opened is None:
            return None
        fd, _, real = opened
        found: list[tuple[bool, bytes, int, float]] = []
        steps = self._scan(fd, real, found)
        listing = _Listing()
        try:
            next(steps)
        except StopIteration:
            return self._listed(path, found, listing)
        except OSError:
            return None
        listings[path] = listing

        def scanned(result: object) -> None:
            if isinstance(result, Failure):
                del listings[path]
                items = None
            else:
                items = self._listed(path, found, listing)
            for d in listing.waiting:
                d.callback(items)

        cooperate(steps).whenDone().addBoth(scanned)
        waiting = Deferred()
        listing.waiting.append(waiting)
        return waiting

    def _listed(
        self, path: bytes, found: list[tuple[bool, bytes, int, float]], listing: _Listing
    ) -> list[tuple[bytes, int, float, bool]]:
        """
        Make C{listing} from the entries scanned, kept for later requests.
        """
        found.sort()
        listing.items = [(name, size, mtime, not isFile) for isFile, name, size, mtime in found]
        listing.made = self._clock.seconds()
        listings = self._listings
        listings[path] = listing
        for old in [p for p, other in listings.items() if other.items is not None]:
            if len(listings) <= _LISTINGS_KEPT:
                break
            del listings[old]
        return listing.items

    def _scan(
        self, fd: int, real: bytes, found: list[tuple[bool, bytes, int, float]]
    ) -> Iterator[None]:
        """
        Put what may be listed of the folder open at C{fd} (closed here)
        into C{found}, pausing after every L{_LIST_STEP} entries.
        """
        try:
            with os.scandir(fd) as scan:  # reads a copy of fd; names are str
                for count, dirEntry in enumerate(scan, 1):
                    if count % _LIST_STEP == 0:
                        yield None
                    name = os.fsencode(dirEntry.name)
                    if _hidden(name) or b"\\" in name:
                        continue
                    try:
                        st = dirEntry.stat()
                        if dirEntry.is_symlink() and not self._inside(os.path.join(real, name)):
                            continue
                    except OSError:
                        continue
                    isDir = stat.S_ISDIR(st.st_mode)
                    if not isDir and not stat.S_ISREG(st.st_mode):
                        continue
                    found.append((not isDir, name, 0 if isDir else st.st_size, st.st_mtime))
        finally:
            os.close(fd)


class _Listing:
    """
    A folder's listing, being scanned (C{items} is L{None}; C{waiting} are
    the requests that want it) or scanned at C{made}.
    """

    def __init__(self) -> None:
        self.items: list[tuple[bytes, int, float, bool]] | None = None
        self.made = 0.0
        self.waiting: list[Deferred[list[tuple[bytes, int, float, bool]] | None]] = []


def _jsonListing(items: list[tuple[bytes, int, float, bool]]) -> Iterator[bytes]:
    """
    A JSON listing, L{_LIST_STEP} entries a part.  Each entry's C{href}
    is its name percent-encoded (with a C{/} for a folder), as the HTML
    listing links it: a name that is not UTF-8 is shown with U+FFFD in
    C{name}, and could not be fetched from it.
    """
    encode = json.JSONEncoder(ensure_ascii=False).encode
    yield b"["
    for start in range(0, len(items), _LIST_STEP):
        yield (", " if start else "").encode() + ", ".join(
            encode(
                {
                    "name": name.decode("utf-8", "replace"),
                    "href": quote(name, safe="") + ("/" if isDir else ""),
                    "size": size,
                    "mtime": mtime,
                    "is_dir": isDir,
                }
            )
            for name, size, mtime, isDir in items[start : start + _LIST_STEP]
        ).encode("utf-8")
    yield b"]"


def _htmlListing(
    items: list[tuple[bytes, int, float, bool]], segments: list[bytes], up: bool
) -> Iterator[bytes]:
    """
    An HTML listing of the folder at URL path C{segments}, L{_LIST_STEP}
    rows a part; C{up}: with a C{../} row.
    """
    shown = "".join("/" + s.decode("utf-8", "replace") for s in segments) + "/"
    title = html.escape(shown)
    yield (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n"
        "<table>\n<tr><th>Name</th><th>Size</th><th>Modified (GMT)</th></tr>\n"
        + ('<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n' if up else "")
    ).encode("utf-8")
    for start in range(0, len(items), _LIST_STEP):
        rows = []
        for name, size, mtime, isDir in items[start : start + _LIST_STEP]:
            slash = "/" if isDir else ""
            href = html.escape(quote(name, safe="") + slash)
            label = html.escape(name.decode("utf-8", "replace") + slash)
            when = _httpDate(mtime).decode("ascii")[5:-4]
            rows.append(
                f'<tr><td><a href="{href}">{label}</a></td>'
                f"<td>{'-' if isDir else size}</td><td>{when}</td></tr>\n"
            )
        yield "".join(rows).encode("utf-8")
    yield b"</table>\n</body></html>\n"


def _abortRequest(request: Any) -> None:
    """
    End the answer to C{request} short: its connection is aborted, or its
    HTTP/2 stream reset (RST_STREAM; a stream has no transport of its own),
    never ended as if the body were complete.
    """
    if getattr(request, "_disconnected", False):
        return
    request.unregisterProducer()
    channel = request.channel
    transport = getattr(channel, "transport", None)
    abort = getattr(transport if transport is not None else channel, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        request.loseConnection()


@implementer(IPullProducer)
class _PartsProducer:
    """
    Write the parts of a body one at a time, each when the client has
    taken the one before, then finish the request.

    A client that takes nothing for the folder's C{stallTimeout} seconds is
    disconnected, or its HTTP/2 stream reset, as L{_FileProducer} does: a
    listing of 60,000 names to a client that stopped reading held its
    connection, and its own copy of the listing, for good.  Asking for the
    next slice, or the transport's buffer shrinking, is progress (see
    L{SendStall}).
    """

    log = Logger()

    #: Bytes written at a time: the stall timer starts again as each is
    #: taken, so a slow client that reads on is not cut off in the middle
    #: of a part (a thousand entries, half a megabyte of long names).
    SLICE = 16 * 1024

    def __init__(self, folder: "StaticFolder", request: IRequest, parts: Iterator[bytes]) -> None:
        self._folder = folder
        self._request: IRequest | None = request
        self._parts = parts
        self._stall = SendStall(
            folder._clock, folder.stallTimeout, lambda: _unsentOf(self._request), self._stalled
        )
        #: What is left of the part being written.
        self._left = memoryview(b"")

    def start(self) -> None:
        request = self._request
        assert request is not None
        request.notifyFinish().addBoth(lambda _: self._done())
        self._stall.watch()
        request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        request = self._request
        if request is None:
            return
        self._stall.progressed()
        if not self._left:
            part = next(self._parts, None)
            if part is None:
                self._done()
                request.unregisterProducer()
                request.finish()
                return
            self._left = memoryview(part)
        piece, self._left = self._left[: self.SLICE], self._left[self.SLICE :]
        request.write(bytes(piece))

    def stopProducing(self) -> None:
        self._done()

    def _done(self) -> None:
        """
        Nothing more to write: the listing the parts come from is let go.
        """
        self._request = None
        self._parts = iter(())
        self._left = memoryview(b"")
        self._stall.cancel()

    def _stalled(self) -> None:
        request = self._request
        if request is None:
            return
        self.log.info(
            "client took nothing of the listing of {path!r} for {seconds} seconds: disconnecting",
            path=request.path,
            seconds=self._folder.stallTimeout,
        )
        self._done()
        _abortRequest(request)


@implementer(IPushProducer)
class _FileProducer:
    """
    Stream C{length} bytes of an open file from C{offset} to a request,
    pausing while the client's buffers are full; gzip on the way when
    C{compress}.  The file is closed when the body is done, when the
    connection is lost, and on any error.

    On plain TCP, whenever the transport has nothing queued, the file goes
    to the socket with C{os.sendfile} (no copy through Python); when the
    socket is full (or the headers are queued), one read just big enough to
    fill the transport's buffer goes through it, so that the transport pauses
    this producer until the socket takes more.  Everywhere else (TLS,
    HTTP/2, compressed bodies) every chunk is a L{CHUNK_SIZE} read
    (over HTTP/2, what the client's flow-control window takes, between
    L{H2_MIN_CHUNK_SIZE} and L{H2_CHUNK_SIZE}) written to the request.

    At most one read, or L{SENDFILE_TURN_BYTES} of C{sendfile}, is done in
    one reactor turn; the rest follows in the next turn, so that a file that
    compresses to almost nothing (which never fills a transport's buffer)
    does not hold up the other connections.

    Over HTTP/2, Twisted pauses a stream's producer only when the client's
    flow-control window is used up, and a client can make that 2 GiB; so a
    stream reads only once its HTTP/2 connection has sent what the stream
    gave it before and while the connection's transport takes data: the
    file goes at the socket's pace, whatever window the client announces.

    A client that takes nothing for the folder's C{stallTimeout} seconds is
    disconnected, or its HTTP/2 stream reset (twisted.web does not time out
    a request being answered), so that it cannot hold the file and the
    connection forever.  What it takes while this producer waits counts
    (L{SendStall}): timing the wait alone cut off a client reading slowly
    but steadily (3 KB/s over TLS, a 20 MB file, after 127 s).  A body
    that cannot be sent whole (the file shrank) ends the same way, never
    as if it were complete.
    """

    log = Logger()

    def __init__(
        self,
        folder: StaticFolder,
        request,
        fd: int,
        offset: int,
        length: int,
        compress: bool,
    ) -> None:
        self._folder = folder
        self._request = request
        self._fd: int | None = fd
        self.offset = offset
        self.remaining = length
        self._compressor = (
            zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if compress else None
        )
        self._socket: tcp.Server | None = None
        self._stats: object | None = None
        self._paused = False
        self._producing = False
        self._stall = SendStall(folder._clock, folder.stallTimeout, self._unsent, self._stalled)
        self.done = False
        #: The client address it counts under, once started.
        self._host = ""
        channel = request.channel
        # The reactor that runs the connection (the folder's clock need not
        # be one) gives the next turn.
        reactor = getattr(getattr(request, "site", None), "reactor", None)
        self._reactor: IReactorTime = reactor if reactor is not None else folder._clock
        self._h2 = _h2Connection(channel)
        self._streamID = getattr(channel, "streamID", None)
        #: The call that goes on in the next turn.
        self._next: IDelayedCall | None = None
        #: Waiting for the HTTP/2 connection's transport to take data again,
        #: or for the connection to send what this stream gave it.
        self._waitingForTransport = False

    def start(self) -> None:
        """
        Send the headers, then the body as fast as the client takes it.
        From here on the file is this producer's to close.
        """
        request = self._request
        if getattr(request, "_disconnected", False):
            self._close()
            return
        self._folder._producers.add(self)
        host = self._host = clientKey(request)
        self._folder._filesByHost[host] = self._folder._filesByHost.get(host, 0) + 1
        if self._h2 is not None:
            self._folder._h2Files[self._h2] = self._folder._h2Files.get(self._h2, 0) + 1
            holdTails = getattr(self._h2, "holdTails", None)
            if holdTails is not None:
                # Each chunk's last sliver waits for the next chunk.
                holdTails(self._streamID)
        try:
            request.notifyFinish().addBoth(self._requestDone)
            request.registerProducer(self, True)
            request.write(b"")
            if self._compressor is None and not getattr(request, "chunked", True):
                self._socket, self._stats = plainSocketTransport(
                    getattr(request.channel, "transport", None)
                )
                # The headers may still be held by the channel.
                flush = getattr(request.channel, "flushOutput", None)
                if flush is not None:
                    flush()
        except BaseException:
            if getattr(request, "producer", None) is self:
                # Or the caller's answer (a 500) fails in its turn.
                request.unregisterProducer()
            self._close()
            raise
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True
        self._watchStall()

    def resumeProducing(self) -> None:
        self._paused = False
        self._watchStall()
        if self._next is None:
            self._run()

    def stopProducing(self) -> None:
        self._close()

    def _run(self) -> None:
        if self._producing or self.done or self._paused or self._waitingForTransport:
            return
        self._producing = True
        try:
            self._produce()
        except Exception:
            self.log.failure("streaming {path!r}", path=self._request.path)
            self._abort()
        finally:
            self._producing = False

    def _later(self) -> None:
        """
        Go on in the next reactor turn (unless paused by then).
        """
        if self._next is None and not self.done:
            self._next = self._reactor.callLater(0, self._continue)

    def _continue(self) -> None:
        self._next = None
        self._run()

    def _watchStall(self) -> None:
        """
        Time the client out while it takes nothing: while this producer is
        paused, or waits for a full HTTP/2 connection.
        """
        if (self._paused or self._waitingForTransport) and not self.done:
            self._stall.watch()
        else:
            self._stall.stop()

    def _unsent(self) -> int:
        """
        What waits for the client, whose shrinking is progress: over
        HTTP/1, what its transport and the system hold; over HTTP/2, this
        stream's queue, and while the connection's transport is full, what
        that holds too (the client takes the connection's data in turn,
        but another stream's data being taken says nothing of a stream
        whose window it keeps shut).
        """
        connection = self._h2
        if connection is None:
            return _unsentOf(self._request)
        queue = connection._outboundStreamQueues.get(self._streamID)
        size = getattr(queue, "size", None)
        queued = size if isinstance(size, int) else len(queue or ())
        if connection._consumerBlocked is not None and not self._paused:
            # (Not while its window is shut: only its queue is its own.)
            queued += unsentBytes(getattr(connection, "transport", None))
        return queued

    def _produce(self) -> None:
        request = self._request
        sentThisTurn = 0
        while not self._paused and not self.done:
            fd = self._fd
            assert fd is not None
            raw = self._socket
            if (
                raw is not None
                and not raw._tempDataLen
                and raw.offset == len(raw.dataBuffer)
                and not raw.disconnecting
            ):
                # Nothing queued, so sending now keeps the order.
                try:
                    sent = os.sendfile(raw.socket.fileno(), fd, self.offset, self.remaining)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    # A socket the client reset or a file that cannot be
                    # sent so: on through the transport, whose write ends
                    # the connection as lost (not aborted here, counted as
                    # an error) and whose pread finds a broken file.
                    self._socket = raw = None
                    sent = 0
                if sent:
                    self.offset += sent
                    self.remaining -= sent
                    request.sentLength += sent
                    if self._stats is not None:
                        self._stats.bytesOut += sent  # type: ignore[attr-defined]
                    if self.remaining <= 0:
                        self._finish()
                        return
                    sentThisTurn += sent
                    if sentThisTurn >= SENDFILE_TURN_BYTES:
                        self._later()
                        return
                    continue
            if self._h2 is not None and not self._h2Ready():
                return
            size = CHUNK_SIZE if self._h2 is None else self._h2ReadSize()
            if raw is not None:
                # Through the transport: just enough to fill its buffer, so
                # that it pauses us until the socket takes more.
                queued = len(raw.dataBuffer) - raw.offset + raw._tempDataLen
                size = max(1, raw.bufferSize + 1 - queued)
            data = os.pread(fd, min(size, self.remaining), self.offset)
            if not data:
                # The file shrank under us: the promised length cannot be sent.
                self.log.warn("{path!r} shrank while being sent", path=request.path)
                self._abort()
                return
            self.offset += len(data)
            self.remaining -= len(data)
            last = self.remaining <= 0
            if self._compressor is not None:
                data = self._compressor.compress(data)
                if last:
                    data += self._compressor.flush()
            if data:
                request.write(data)
            if last:
                self._finish()
                return
            # One read a turn: the other connections go first.
            self._later()
            return

    def _h2ReadSize(self) -> int:
        """
        How much to read for this HTTP/2 stream: what the client's
        flow-control window takes now, within L{H2_MIN_CHUNK_SIZE} and
        L{H2_CHUNK_SIZE}.
        """
        try:
            window: int = self._h2.conn.local_flow_control_window(self._streamID)
        except _H2Error:  # h2 forgot the stream (a reset): Twisted hears of it next
            window = 0
        return min(H2_CHUNK_SIZE, max(H2_MIN_CHUNK_SIZE, window))

    def _h2Ready(self) -> bool:
        """
        Whether this HTTP/2 stream may give its connection more now: when
        the connection has sent what the stream gave it before, and its
        transport takes data.  Otherwise, try again when that may have
        changed.
        """
        connection = self._h2
        queue = connection._outboundStreamQueues.get(self._streamID)
        if queue is None:
            # The stream is gone without the request being told.
            self._close()
            return False
        blocked = connection._consumerBlocked
        if blocked is not None:
            # The socket is full: wait until it takes data again.
            self._waitingForTransport = True
            self._watchStall()
            blocked.addCallback(self._transportResumed)
            return False
        if queue:
            whenSent = getattr(connection, "whenSent", None)
            if whenSent is None:
                # Twisted's own connection: look again next turn.
                self._later()
                return False
            # Wait until it is sent: a frame a turn, or not at all while
            # the client keeps the flow-control window shut (then the stall
            # timeout resets the stream).  Sent already when all that is
            # left is a tail waiting for the next chunk (holdTails).
            sent = whenSent(self._streamID)
            if not sent.called:
                self._waitingForTransport = True
                self._watchStall()
                sent.addCallback(self._transportResumed)
                return False
        return True

    def _transportResumed(self, result: object) -> object:
        self._waitingForTransport = False
        self._watchStall()
        # After the connection's own sending has had its turn.
        self._later()
        return result

    def _finish(self) -> None:
        self._close()
        request = self._request
        if not getattr(request, "_disconnected", False):
            request.unregisterProducer()
            request.finish()

    def _abort(self, stalledFor: float | None = None) -> None:
        self._close(stalledFor)
        _abortRequest(self._request)

    def _stalled(self) -> None:
        self.log.info(
            "client took nothing of {path!r} for {seconds} seconds: disconnecting",
            path=self._request.path,
            seconds=self._folder.stallTimeout,
        )
        self._abort(stalledFor=self._folder.stallTimeout)

    def _requestDone(self, result: object) -> None:
        # Finished, or the connection was lost: either way the file is done
        # (and a lost connection is no error to report).
        self._close()

    def _close(self, stalledFor: float | None = None) -> None:
        """
        The file is done: close it, and let a waiting request of its
        HTTP/2 connection go on (C{stalledFor}: the seconds the client
        took nothing, when the stall timeout ends it).
        """
        self.done = True
        self._stall.cancel()
        if self._next is not None:
            if self._next.active():
                self._next.cancel()
            self._next = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self in self._folder._producers:
            self._folder._producers.discard(self)
            byHost = self._folder._filesByHost
            left = byHost.pop(self._host, 1) - 1
            if left > 0:
                byHost[self._host] = left
            if self._h2 is not None:
                self._folder._h2FileDone(self._h2, stalledFor)


def clientKey(request) -> str:
    """
    The key a request's client address counts under (L{hostKey}).
    """
    return hostKey(str(getattr(request.getClientAddress(), "host", "")))


def _h2Open(connection: Any) -> bool:
    """
    Whether HTTP/2 C{connection} may still answer: not lost, and not
    closed by a GOAWAY (h2's state machine refuses any frame then).
    """
    if not getattr(connection, "_stillProducing", True):
        return False
    state = getattr(getattr(getattr(connection, "conn", None), "state_machine", None), "state", None)
    return getattr(state, "name", "") != "CLOSED"


def _h2StreamGone(connection: Any, request: Any) -> bool:
    """
    Whether h2 has closed, or forgotten, the stream of C{request} on HTTP/2
    C{connection} (the client reset it in the input being read): nothing
    may be sent on it.
    """
    streams = getattr(getattr(connection, "conn", None), "streams", None)
    if not isinstance(streams, dict):
        return False
    state = streams.get(getattr(request.channel, "streamID", None))
    return state is None or bool(state.closed)


def _unsentOf(request: Any) -> int:
    """
    What the transport of C{request}'s channel and the system hold for the
    client (L{unsentBytes}); 0 where there is no such transport (an HTTP/2
    stream has none of its own).
    """
    return unsentBytes(getattr(getattr(request, "channel", None), "transport", None))


def _h2Connection(channel: object) -> Any:
    """
    The Twisted HTTP/2 connection (C{H2Connection}) of a request's channel
    when it is an HTTP/2 stream (C{H2Stream}) whose connection has what
    L{_FileProducer} paces itself by: its queues of data not sent yet, one
    per stream, and the L{Deferred} that fires when its transport takes
    data again.  L{None} for anything else.
    """
    connection = getattr(channel, "_conn", None)
    if (
        isinstance(getattr(channel, "streamID", None), int)
        and isinstance(getattr(connection, "_outboundStreamQueues", None), dict)
        and hasattr(connection, "_consumerBlocked")
    ):
        return connection
    return None


#: What an open fails with when the system, not the file, is short of
#: something (descriptors, memory): a 503, never a 404.
_UNAVAILABLE = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM))


class _Unavailable(Exception):
    """
    A file could not be opened for want of file descriptors or memory (the
    argument says which); it may well exist.
    """


def _openRegular(path: bytes, flags: int = 0) -> tuple[int, os.stat_result] | None:
    """
    Open a regular file (or, with C{O_DIRECTORY} in C{flags}, a directory)
    for reading, without ever blocking on a FIFO or following into a device:
    C{(fd, fstat)}, or L{None}.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    except OSError as e:
        if e.errno in _UNAVAILABLE:
            raise _Unavailable(e.strerror) from None
        return None
    except ValueError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not (stat.S_ISDIR if flags & os.O_DIRECTORY else stat.S_ISREG)(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _readSmall(fd: int, before: os.stat_result) -> tuple[bytes, tuple[int, int, int], int]:
    """
    The whole content of a small regular file open at C{fd} (closed here),
    with its signature and modification time in seconds, from C{fstat}
    calls before and after reading: a file being written gets a signature
    that matches no C{stat}, so that the next check reads it again.
    """
    try:
        parts = []
        remaining = before.st_size
        while remaining > 0:
            data = os.read(fd, remaining)
            if not data:
                break
            parts.append(data)
            remaining -= len(data)
        body = b"".join(parts)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    signature = _signature(after)
    if len(body) != after.st_size or after.st_mtime_ns != before.st_mtime_ns:
        signature = (len(body), -1, after.st_ino)
    return body, signature, int(after.st_mtime)


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    """
    What tells one version of a file from another: size, modification time
    in nanoseconds and inode (a file replaced by a rename).
    """
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _etag(signature: tuple[int, int, int], variant: bytes) -> bytes:
    size, mtimeNs, _ = signature
    if variant:
        return b'"%x-%x-%s"' % (mtimeNs, size, variant)
    return b'"%x-%x"' % (mtimeNs, size)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _pageHeaders(request: IRequest) -> None:
    """
    Give a page the folder writes itself (a listing, a redirect, a 405)
    the built-in pages' headers: HTML, and their strict
    Content-Security-Policy (a listing shows names anyone who can write
    in the folder chose).
    """
    setHeader = request.responseHeaders.setRawHeaders
    for name, value in PAGE_HEADERS.items():
        setHeader(name, [value])


def _quoteSegment(segment: bytes) -> bytes:
    return quote(segment, safe="!$&'()*+,;=:@").encode("ascii")
