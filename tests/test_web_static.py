"""
Tests for L{netsuite.web.static}: the parsers, the cache's memory and
streaming a turn at a time in memory, everything else over real loopback
sockets with a raw HTTP client (so that paths such as C{/../} reach the
server exactly as written) and treq.
"""

from __future__ import annotations

import email.utils
import errno
import gzip
import json
import os
import re
import shutil
import socket
import time
import tracemalloc
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import trustme
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest
from treq.client import HTTPClient

from netsuite.limits import SendStall
from netsuite.listen import StreamListener
from netsuite.tls import loadPEM, serverOptions
from netsuite.web import static
from netsuite.web.pages import PAGE_HEADERS
from netsuite.web.static import (
    CHUNK_SIZE,
    SENDFILE_TURN_BYTES,
    StaticFolder,
    contentTypeFor,
    parseAcceptsGzip,
    parseHTTPDate,
    parseRange,
    prefersJSON,
)
from tests.helpers import Collector, TakingTransport, waitUntil
from tests.tlshelpers import trustRootOf, twistedTLSClient, writeLeaf

NOT_FOUND_PAGE = b"<!DOCTYPE html><html><body><h1>No such page</h1></body></html>"

HELLO = b"hello, static world\n" * 150  # 3000 bytes, compresses well
PAGE = b"<!DOCTYPE html><html><body><p>the page</p></body></html>\n" * 20
SUB_INDEX = b"<!DOCTYPE html><title>sub</title><p>sub index</p>\n"
CSS = b"body { color: black; background: white; }\n" * 40
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
DOT_SECRET = b"DOTFILE-SECRET"
EVIL_NAME = "<script>alert(1)<script>&\"x'.txt"


def patterned(size: int) -> bytes:
    """
    C{size} bytes with a prime period, so that an offset error shows.
    """
    period = bytes(range(251))
    return (period * (size // 251 + 1))[:size]


def openFilesFor(path: str) -> int:
    """
    How many of this process's file descriptors are open on C{path}.
    """
    real = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == real:
                count += 1
        except OSError:
            pass
    return count


class ReactorLikeClock(Clock):
    """
    A L{Clock} whose C{advance} is one reactor turn: it runs the calls due
    when it starts, once; a call made for now during the turn waits for the
    next one, as in a reactor.  (C{Clock.advance} would run it at once, and
    Twisted's HTTP/2 sending loop calls itself again with C{callLater(0)}
    while a stream has data queued, so C{advance(0)} would never return.)
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = [call for call in self.calls if call.getTime() <= self.rightNow]
        for call in due:
            if call in self.calls:  # not cancelled by an earlier one
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class SocketLikeTransport(StringTransport):
    """
    A L{StringTransport} that, like a TCP transport, pauses its producer
    while more than C{bufferSize} bytes wait to be sent, until L{drain}.
    """

    bufferSize = 64 * 1024
    producerPaused = False

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        if (
            self.producer is not None
            and not self.producerPaused
            and len(self.io.getvalue()) > self.bufferSize
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        What waits to be sent, taken by the peer: the producer may go on.
        """
        data = self.value()
        self.clear()
        if self.producerPaused:
            self.producerPaused = False
            if self.producer is not None:  # not unregistered by a close meanwhile
                self.producer.resumeProducing()
        return data


class TakingSocketTransport(SocketLikeTransport, TakingTransport):
    """
    A L{SocketLikeTransport} whose peer may take part of what waits
    (L{TakingTransport.take}) without its producer being resumed.
    """


class NotFound(Resource):
    """
    The site's 404 page.
    """

    isLeaf = True

    def render(self, request):
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return NOT_FOUND_PAGE


class Response:
    """
    One parsed HTTP response.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.statusLine = lines[0]
        self.status = int(lines[0].split(b" ")[1])
        self.headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if self.header(b"transfer-encoding") == b"chunked":
            body = dechunk(body)
        self.body = body

    def header(self, name: bytes) -> Optional[bytes]:
        values = self.headers.get(name.lower())
        if not values:
            return None
        assert len(values) == 1, (name, values)
        return values[0]


def dechunk(body: bytes) -> bytes:
    parts = []
    while True:
        line, _, rest = body.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return b"".join(parts)
        parts.append(rest[:size])
        body = rest[size + 2 :]


class RawClient(Collector):
    """
    Sends bytes as they are, collects everything until the connection ends.
    """

    def body(self) -> bytes:
        return b"".join(self.received)


class ServerMixin:
    """
    A tree of files, and a L{StaticFolder} for it on a loopback port.
    """

    def makeTree(self: TestCase) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.root = os.path.join(self.base, "www")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        os.makedirs(os.path.join(self.outside, "dir"))
        self.write("outside/secret.txt", SECRET)
        self.write("outside/dir/secret.txt", SECRET)
        self.write("www/index.html", PAGE)
        self.write("www/hello.txt", HELLO)
        self.write("www/data.bin", patterned(5000))
        self.write("www/image.png", b"\x89PNG\r\n\x1a\n" + patterned(100))
        self.write("www/app.json", b'{"answer": 42}\n' * 50)
        self.write("www/sub/index.html", SUB_INDEX)
        self.write("www/list/b.txt", b"bee")
        self.write("www/list/a.txt", b"ay!")
        self.write("www/list/z/inner.txt", b"inner")
        self.write("www/list/.hidden", DOT_SECRET)
        self.write("www/list/" + EVIL_NAME, b"evil but harmless")
        self.write("www/empty/.keep", b"")
        self.write("www/.secret", DOT_SECRET)
        self.write("www/.git/config", DOT_SECRET)
        self.write("www/%2e%2e", b"a file literally named %2e%2e")
        os.makedirs(os.path.join(self.root, "evil.example"))
        os.symlink(
            os.path.join(self.outside, "secret.txt"), os.path.join(self.root, "link.txt")
        )
        os.symlink(os.path.join(self.outside, "dir"), os.path.join(self.root, "linkdir"))
        os.symlink("hello.txt", os.path.join(self.root, "inlink.txt"))
        os.symlink(".secret", os.path.join(self.root, "dotlink.txt"))

    def write(self, relative: str, data: bytes, mtime: Optional[float] = None) -> str:
        path = os.path.join(self.base, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def startServer(self: TestCase, resource: Optional[Resource] = None, **kwargs) -> int:
        """
        Serve C{self.root} (or C{resource}, which mounts C{self.folder}) with
        a bare C{Site} on a loopback port.
        """
        self.clock = Clock()
        self.clock.advance(time.time())  # a date in the future is one to come
        self.folder = StaticFolder(
            self.root, notFound=NotFound(), clock=self.clock, **kwargs
        )
        site = Site(resource if resource is not None else self.folder)
        site.displayTracebacks = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        return self.port

    async def connectRaw(self: TestCase, port: Optional[int] = None) -> RawClient:
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port or self.port)
        await connectProtocol(endpoint, client)
        self.addCleanup(lambda: client.closed)
        self.addCleanup(client.transport.abortConnection)
        return client

    async def exchange(self, data: bytes, port: Optional[int] = None) -> Response:
        """
        Send C{data} as it is; the server closes when done.
        """
        client = await self.connectRaw(port)
        client.transport.write(data)
        await client.closed
        return Response(client.body())

    async def get(
        self,
        path: bytes,
        headers: Sequence[Tuple[bytes, bytes]] = (),
        method: bytes = b"GET",
        version: bytes = b"HTTP/1.1",
        port: Optional[int] = None,
    ) -> Response:
        lines = [method + b" " + path + b" " + version, b"Host: localhost"]
        lines += [name + b": " + value for name, value in headers]
        lines.append(b"Connection: close")
        return await self.exchange(b"\r\n".join(lines) + b"\r\n\r\n", port)

    def assertNotFound(self: TestCase, response: Response) -> None:
        self.assertEqual(response.status, 404, response.raw[:300])
        self.assertEqual(response.body, NOT_FOUND_PAGE)
        self.assertNotIn(SECRET, response.raw)
        self.assertNotIn(DOT_SECRET, response.raw)
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")


class ParserTests(SynchronousTestCase):
    """
    The header parsers.
    """

    def test_rangeForms(self) -> None:
        self.assertEqual(parseRange(b"bytes=0-9", 100), (0, 9))
        self.assertEqual(parseRange(b"bytes=10-19", 100), (10, 19))
        self.assertEqual(parseRange(b"bytes=-30", 100), (70, 99))
        self.assertEqual(parseRange(b"bytes=-300", 100), (0, 99))
        self.assertEqual(parseRange(b"bytes=90-", 100), (90, 99))
        self.assertEqual(parseRange(b"bytes=90-1000", 100), (90, 99))
        self.assertEqual(parseRange(b"Bytes = 1-2", 100), (1, 2))
        self.assertEqual(parseRange(b"bytes=5-5, ", 100), (5, 5))

    def test_rangeIgnored(self) -> None:
        for value in [
            b"bytes=0-1,3-4",
            b"bytes=0-1,0-1,0-1",
            b"items=0-1",
            b"bytes=abc",
            b"bytes=5-1",
            b"bytes=-",
            b"bytes=",
            b"0-5",
            b"bytes=1-2-3",
            b"bytes=+1-2",
        ]:
            self.assertIsNone(parseRange(value, 100), value)

    def test_rangeUnsatisfiable(self) -> None:
        for value in [b"bytes=100-", b"bytes=100-200", b"bytes=-0", b"bytes=" + b"9" * 5000 + b"-"]:
            result = parseRange(value, 100)
            self.assertIsNotNone(result)
            self.assertNotIsInstance(result, tuple)

    def test_acceptsGzip(self) -> None:
        self.assertTrue(parseAcceptsGzip(b"gzip"))
        self.assertTrue(parseAcceptsGzip(b"gzip, deflate, br"))
        self.assertTrue(parseAcceptsGzip(b"br;q=1.0, GZIP;q=0.5"))
        self.assertTrue(parseAcceptsGzip(b"x-gzip"))
        self.assertTrue(parseAcceptsGzip(b"*"))
        self.assertFalse(parseAcceptsGzip(b""))
        self.assertFalse(parseAcceptsGzip(b"identity"))
        self.assertFalse(parseAcceptsGzip(b"gzip;q=0"))
        self.assertFalse(parseAcceptsGzip(b"gzip; q=0.000"))
        self.assertFalse(parseAcceptsGzip(b"*, gzip;q=0"))
        self.assertFalse(parseAcceptsGzip(b"*;q=0"))
        self.assertFalse(parseAcceptsGzip(b"gzip;q=nan"))
        self.assertFalse(parseAcceptsGzip(b"gzip;q=2"))
        self.assertFalse(parseAcceptsGzip(b"gzipped"))

    def test_prefersJSON(self) -> None:
        self.assertTrue(prefersJSON(b"application/json"))
        self.assertTrue(prefersJSON(b"text/html;q=0.5, application/json"))
        self.assertTrue(prefersJSON(b"application/*"))
        self.assertFalse(prefersJSON(None))
        self.assertFalse(prefersJSON(b"*/*"))
        self.assertFalse(
            prefersJSON(b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        )
        self.assertFalse(prefersJSON(b"application/json;q=0.5, text/html"))
        self.assertFalse(prefersJSON(b"application/json;q=0, */*"))

    def test_contentTypes(self) -> None:
        self.assertEqual(contentTypeFor(b"a.html"), (b"text/html; charset=utf-8", True))
        self.assertEqual(contentTypeFor(b"A.CSS"), (b"text/css; charset=utf-8", True))
        self.assertEqual(contentTypeFor(b"a.js"), (b"text/javascript; charset=utf-8", True))
        self.assertEqual(contentTypeFor(b"a.json"), (b"application/json; charset=utf-8", True))
        self.assertEqual(contentTypeFor(b"a.svg"), (b"image/svg+xml; charset=utf-8", True))
        self.assertEqual(contentTypeFor(b"a.png"), (b"image/png", False))
        self.assertEqual(contentTypeFor(b"noextension"), (b"application/octet-stream", False))
        self.assertEqual(contentTypeFor(b"a.weird-ext"), (b"application/octet-stream", False))
        self.assertEqual(contentTypeFor(b"a.tar.gz"), (b"application/gzip", False))
        self.assertEqual(contentTypeFor(b"a.txt.gz"), (b"application/gzip", False))
        self.assertEqual(contentTypeFor(b"\xff\xfe.txt"), (b"text/plain; charset=utf-8", True))

    def test_httpDates(self) -> None:
        self.assertEqual(parseHTTPDate(b"Sun, 06 Nov 1994 08:49:37 GMT"), 784111777)
        self.assertEqual(parseHTTPDate(b"Sunday, 06-Nov-94 08:49:37 GMT"), 784111777)
        self.assertEqual(parseHTTPDate(b"Sun Nov  6 08:49:37 1994"), 784111777)
        self.assertIsNone(parseHTTPDate(b"yesterday"))
        # Out of range: not a date (RFC 9110 13.1.3), not one days later.
        for invalid in [
            b"Sat, 99 Nov 2026 12:15:46 GMT",
            b"Mon, 30 Feb 2026 10:00:00 GMT",
            b"Mon, 01 Jan 2026 24:00:00 GMT",
            b"Mon, 01 Jan 2026 10:60:00 GMT",
            b"Mon, 01 Jan 2026 10:00:61 GMT",
        ]:
            self.assertIsNone(parseHTTPDate(invalid), invalid)
        self.assertEqual(parseHTTPDate(b"Thu, 29 Feb 2024 00:00:00 GMT"), 1709164800)
        self.assertEqual(parseHTTPDate(b"Wed, 31 Dec 2025 23:59:60 GMT"), 1767225600)
        self.assertIsNone(parseHTTPDate(b""))
        self.assertIsNone(parseHTTPDate(b"\xff\xfe"))


class FileTests(ServerMixin, TestCase):
    """
    Files: types, validators, conditional requests, ranges, HEAD, methods.
    """

    def setUp(self) -> None:
        self.makeTree()
        self.startServer()

    async def test_getTextFile(self) -> None:
        response = await self.get(b"/hello.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, HELLO)
        self.assertEqual(response.header(b"content-type"), b"text/plain; charset=utf-8")
        self.assertEqual(response.header(b"content-length"), b"%d" % len(HELLO))
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
        self.assertEqual(response.header(b"accept-ranges"), b"bytes")
        self.assertEqual(response.header(b"vary"), b"Accept-Encoding")
        self.assertIsNone(response.header(b"content-encoding"))
        etag = response.header(b"etag")
        self.assertTrue(etag.startswith(b'"') and etag.endswith(b'"'), etag)
        self.assertFalse(etag.startswith(b"W/"))
        mtime = int(os.stat(os.path.join(self.root, "hello.txt")).st_mtime)
        self.assertEqual(
            response.header(b"last-modified"),
            email.utils.formatdate(mtime, usegmt=True).encode(),
        )

    async def test_typesAndCharsets(self) -> None:
        binary = await self.get(b"/data.bin")
        self.assertEqual(binary.body, patterned(5000))
        self.assertEqual(binary.header(b"content-type"), b"application/octet-stream")
        self.assertIsNone(binary.header(b"vary"))
        image = await self.get(b"/image.png")
        self.assertEqual(image.header(b"content-type"), b"image/png")
        data = await self.get(b"/app.json")
        self.assertEqual(data.header(b"content-type"), b"application/json; charset=utf-8")
        page = await self.get(b"/index.html")
        self.assertEqual(page.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertEqual(page.body, PAGE)
        literal = await self.get(b"/%252e%252e")
        self.assertEqual(literal.header(b"content-type"), b"application/octet-stream")

    async def test_headHasHeadersButNoBody(self) -> None:
        for path in [b"/hello.txt", b"/data.bin", b"/sub/", b"/list/", b"/nope"]:
            get = await self.get(path)
            head = await self.get(path, method=b"HEAD")
            self.assertEqual(head.status, get.status)
            self.assertEqual(head.body, b"", path)
            self.assertEqual(head.header(b"content-length"), b"%d" % len(get.body), path)
            for name in [b"content-type", b"etag", b"last-modified", b"vary"]:
                self.assertEqual(head.header(name), get.header(name), (path, name))

    async def test_otherMethodsNotAllowed(self) -> None:
        for method in [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]:
            response = await self.get(b"/hello.txt", method=method)
            self.assertEqual(response.status, 405, method)
            self.assertEqual(response.header(b"allow"), b"GET, HEAD")
            self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
            self.assertNotIn(HELLO[:20], response.body)

    async def test_rangeFirstMiddleSuffixOpen(self) -> None:
        size = len(HELLO)
        for value, first, last in [
            (b"bytes=0-9", 0, 9),
            (b"bytes=100-199", 100, 199),
            (b"bytes=-500", size - 500, size - 1),
            (b"bytes=2500-", 2500, size - 1),
            (b"bytes=2990-99999", 2990, size - 1),
        ]:
            response = await self.get(
                b"/hello.txt", [(b"Range", value), (b"Accept-Encoding", b"gzip")]
            )
            self.assertEqual(response.status, 206, value)
            self.assertEqual(response.body, HELLO[first : last + 1], value)
            self.assertEqual(
                response.header(b"content-range"), b"bytes %d-%d/%d" % (first, last, size)
            )
            self.assertEqual(response.header(b"content-length"), b"%d" % (last - first + 1))
            # Ranges are of the identity encoding.
            self.assertIsNone(response.header(b"content-encoding"))

    async def test_severalRangesGetTheWholeFileOnce(self) -> None:
        response = await self.get(
            b"/hello.txt", [(b"Range", b"bytes=0-1000,0-1000,0-1000,-3000,5-")]
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, HELLO)
        self.assertIsNone(response.header(b"content-range"))
        self.assertNotIn(b"multipart", response.raw)

    async def test_unsatisfiableRange(self) -> None:
        for value in [b"bytes=3000-", b"bytes=5000-6000", b"bytes=-0"]:
            response = await self.get(b"/hello.txt", [(b"Range", value)])
            self.assertEqual(response.status, 416, value)
            self.assertEqual(response.header(b"content-range"), b"bytes */3000")
            self.assertEqual(response.body, b"")

    async def test_invalidRangeIgnored(self) -> None:
        response = await self.get(b"/hello.txt", [(b"Range", b"bytes=zz-top")])
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, HELLO)

    async def test_lastModifiedNeverAfterDate(self) -> None:
        """
        A file modified in the future (unpacked from an archive made on a
        fast clock) is sent as modified now, never after the answer's
        C{Date} (RFC 9110 8.8.2.1), and that date sent back in
        C{If-Modified-Since} gets a 304.  It was sent as it was, and never
        matched (a date still to come is no date the file had).
        """
        self.write("www/future.txt", b"from 2100", mtime=4102444800)
        full = await self.get(b"/future.txt")
        lastModified = parseHTTPDate(full.header(b"last-modified"))
        self.assertLessEqual(lastModified, parseHTTPDate(full.header(b"date")))
        again = await self.get(b"/future.txt", [(b"If-Modified-Since", full.header(b"last-modified"))])
        self.assertEqual(again.status, 304)

    async def test_ifRange(self) -> None:
        full = await self.get(b"/hello.txt")
        etag = full.header(b"etag")
        lastModified = full.header(b"last-modified")
        rangeHeader = (b"Range", b"bytes=10-19")
        matched = await self.get(b"/hello.txt", [rangeHeader, (b"If-Range", etag)])
        self.assertEqual(matched.status, 206)
        self.assertEqual(matched.body, HELLO[10:20])
        other = await self.get(b"/hello.txt", [rangeHeader, (b"If-Range", b'"other"')])
        self.assertEqual(other.status, 200)
        self.assertEqual(other.body, HELLO)
        weak = await self.get(b"/hello.txt", [rangeHeader, (b"If-Range", b"W/" + etag)])
        self.assertEqual(weak.status, 200)
        byDate = await self.get(b"/hello.txt", [rangeHeader, (b"If-Range", lastModified)])
        self.assertEqual(byDate.status, 206)
        self.assertEqual(byDate.body, HELLO[10:20])
        oldDate = await self.get(
            b"/hello.txt", [rangeHeader, (b"If-Range", b"Sun, 06 Nov 1994 08:49:37 GMT")]
        )
        self.assertEqual(oldDate.status, 200)
        self.assertEqual(oldDate.body, HELLO)
        # Two If-Range lines say nothing: the whole file, as when one fails.
        twice = await self.get(b"/hello.txt", [rangeHeader, (b"If-Range", etag), (b"If-Range", etag)])
        self.assertEqual(twice.status, 200)
        self.assertEqual(twice.body, HELLO)

    async def test_twoRangeLinesAreOneList(self) -> None:
        """
        Two C{Range} lines are one list of ranges (RFC 9110 5.3), and more
        than one range gets the whole file, as one range in two lines does;
        the last line alone was honoured.
        """
        for ranges in ([b"bytes=0-1", b"bytes=10-19"], [b"bytes=10-19", b"bytes=10-19"]):
            response = await self.get(b"/hello.txt", [(b"Range", value) for value in ranges])
            self.assertEqual(response.status, 200, ranges)
            self.assertEqual(response.body, HELLO)

    async def test_ifNoneMatch(self) -> None:
        full = await self.get(b"/hello.txt")
        etag = full.header(b"etag")
        for value in [etag, b'"a", ' + etag + b', "b"', b"*", b"W/" + etag]:
            response = await self.get(b"/hello.txt", [(b"If-None-Match", value)])
            self.assertEqual(response.status, 304, value)
            self.assertEqual(response.body, b"")
            self.assertEqual(response.header(b"etag"), etag)
            self.assertEqual(response.header(b"last-modified"), full.header(b"last-modified"))
            self.assertIn(response.header(b"content-length"), (None, b"%d" % len(HELLO)))
        miss = await self.get(b"/hello.txt", [(b"If-None-Match", b'"nope", "other"')])
        self.assertEqual(miss.status, 200)
        self.assertEqual(miss.body, HELLO)
        # A list that is not a list of entity tags names nothing (as nginx).
        bare = etag[1:-1]
        for value in [
            b"x" + etag,
            etag + b"x",
            b'"a""' + bare + b'"',
            etag + b" " + etag,
            b"W/ " + etag,
            b'"a\x01", ' + etag,
            b"*, " + etag,
        ]:
            response = await self.get(b"/hello.txt", [(b"If-None-Match", value)])
            self.assertEqual(response.status, 200, value)
        # Empty list elements are allowed (RFC 9110 5.6.1).
        for value in [b", " + etag, etag + b" ,, ", b' "a" ,\t' + etag]:
            response = await self.get(b"/hello.txt", [(b"If-None-Match", value)])
            self.assertEqual(response.status, 304, value)

    async def test_ifModifiedSince(self) -> None:
        full = await self.get(b"/data.bin")
        lastModified = full.header(b"last-modified")
        same = await self.get(b"/data.bin", [(b"If-Modified-Since", lastModified)])
        self.assertEqual(same.status, 304)
        self.assertEqual(same.body, b"")
        self.assertEqual(same.header(b"etag"), full.header(b"etag"))
        # A date still to come is not one the file had (as Apache; nginx
        # wants the exact date): the whole file.
        later = email.utils.formatdate(time.time() + 3600, usegmt=True).encode()
        future = await self.get(b"/data.bin", [(b"If-Modified-Since", later)])
        self.assertEqual(future.status, 200)
        self.assertEqual(future.body, patterned(5000))
        # Two dates (RFC 9110 13.1.3: more than one member) are ignored.
        twice = await self.get(
            b"/data.bin", [(b"If-Modified-Since", lastModified), (b"If-Modified-Since", lastModified)]
        )
        self.assertEqual(twice.status, 200)
        old = b"Sun, 06 Nov 1994 08:49:37 GMT"
        older = await self.get(b"/data.bin", [(b"If-Modified-Since", old)])
        self.assertEqual(older.status, 200)
        self.assertEqual(older.body, patterned(5000))
        garbage = await self.get(b"/data.bin", [(b"If-Modified-Since", b"not a date")])
        self.assertEqual(garbage.status, 200)
        # The 99th of November next year is no date (not February after).
        invalid = b"Sat, 99 Nov %d 12:15:46 GMT" % (time.gmtime().tm_year + 1,)
        ignored = await self.get(b"/data.bin", [(b"If-Modified-Since", invalid)])
        self.assertEqual(ignored.status, 200)
        self.assertEqual(ignored.body, patterned(5000))
        # If-None-Match wins over If-Modified-Since.
        both = await self.get(
            b"/data.bin", [(b"If-Modified-Since", lastModified), (b"If-None-Match", b'"x"')]
        )
        self.assertEqual(both.status, 200)

    async def test_ifMatch(self) -> None:
        full = await self.get(b"/data.bin")
        failed = await self.get(b"/data.bin", [(b"If-Match", b'"other"')])
        self.assertEqual(failed.status, 412)
        self.assertEqual(failed.body, b"")
        held = await self.get(b"/data.bin", [(b"If-Match", full.header(b"etag"))])
        self.assertEqual(held.status, 200)
        old = b"Sun, 06 Nov 1994 08:49:37 GMT"
        unmodified = await self.get(b"/data.bin", [(b"If-Unmodified-Since", old)])
        self.assertEqual(unmodified.status, 412)
        # Junk around the right tag does not hold (it did).
        junk = await self.get(b"/data.bin", [(b"If-Match", b"x" + full.header(b"etag"))])
        self.assertEqual(junk.status, 412)
        # Two dates are ignored (RFC 9110 13.1.4).
        twice = await self.get(
            b"/data.bin", [(b"If-Unmodified-Since", old), (b"If-Unmodified-Since", old)]
        )
        self.assertEqual(twice.status, 200)

    async def test_gzipWhenAccepted(self) -> None:
        plain = await self.get(b"/hello.txt")
        zipped = await self.get(b"/hello.txt", [(b"Accept-Encoding", b"deflate, gzip, br")])
        self.assertEqual(zipped.status, 200)
        self.assertEqual(zipped.header(b"content-encoding"), b"gzip")
        self.assertEqual(zipped.header(b"vary"), b"Accept-Encoding")
        self.assertEqual(zipped.header(b"content-type"), b"text/plain; charset=utf-8")
        self.assertEqual(gzip.decompress(zipped.body), HELLO)
        self.assertLess(len(zipped.body), len(HELLO))
        self.assertEqual(zipped.header(b"content-length"), b"%d" % len(zipped.body))
        self.assertNotEqual(zipped.header(b"etag"), plain.header(b"etag"))
        again = await self.get(b"/hello.txt", [(b"Accept-Encoding", b"*")])
        self.assertEqual(again.body, zipped.body)
        # The gzip ETag revalidates the gzip variant.
        revalidated = await self.get(
            b"/hello.txt",
            [(b"Accept-Encoding", b"gzip"), (b"If-None-Match", zipped.header(b"etag"))],
        )
        self.assertEqual(revalidated.status, 304)
        self.assertEqual(revalidated.header(b"vary"), b"Accept-Encoding")

    async def test_gzipRefused(self) -> None:
        for value in [b"gzip;q=0", b"identity", b"br", b"*;q=0", b"gzip;q=0, *"]:
            response = await self.get(b"/hello.txt", [(b"Accept-Encoding", value)])
            self.assertEqual(response.body, HELLO, value)
            self.assertIsNone(response.header(b"content-encoding"))
            self.assertEqual(response.header(b"vary"), b"Accept-Encoding")

    async def test_gzipOnlyForCompressibleTypes(self) -> None:
        response = await self.get(b"/image.png", [(b"Accept-Encoding", b"gzip")])
        self.assertIsNone(response.header(b"content-encoding"))
        self.assertIsNone(response.header(b"vary"))

    async def test_precompressedSibling(self) -> None:
        self.write("www/style.css", CSS)
        sibling = gzip.compress(b"/* the sibling */" + CSS, mtime=0)
        self.write("www/style.css.gz", sibling)
        zipped = await self.get(b"/style.css", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(zipped.status, 200)
        self.assertEqual(zipped.body, sibling)
        self.assertEqual(zipped.header(b"content-encoding"), b"gzip")
        self.assertEqual(zipped.header(b"content-type"), b"text/css; charset=utf-8")
        self.assertEqual(zipped.header(b"vary"), b"Accept-Encoding")
        plain = await self.get(b"/style.css")
        self.assertEqual(plain.body, CSS)
        self.assertIsNone(plain.header(b"content-encoding"))
        self.assertNotEqual(plain.header(b"etag"), zipped.header(b"etag"))
        # The .gz itself is a gzip file, not gzip-encoded text.
        direct = await self.get(b"/style.css.gz", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(direct.body, sibling)
        self.assertEqual(direct.header(b"content-type"), b"application/gzip")
        self.assertIsNone(direct.header(b"content-encoding"))

    async def test_olderSiblingIgnored(self) -> None:
        now = time.time()
        self.write("www/old.js", b"var x = 1;\n" * 300, mtime=now)
        self.write("www/old.js.gz", gzip.compress(b"stale"), mtime=now - 100)
        response = await self.get(b"/old.js", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(response.header(b"content-encoding"), b"gzip")
        self.assertEqual(gzip.decompress(response.body), b"var x = 1;\n" * 300)

    async def test_largeSiblingStreamedAsIs(self) -> None:
        text = b"console.log('x');\n" * 20000
        sibling = gzip.compress(b"// sibling\n" + text, mtime=0) + patterned(200000)
        self.write("www/big.js", text)
        self.write("www/big.js.gz", sibling)
        response = await self.get(b"/big.js", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(response.body, sibling)
        self.assertEqual(response.header(b"content-length"), b"%d" % len(sibling))

    async def test_dotfilesRefused(self) -> None:
        for path in [
            b"/.secret",
            b"/.git/config",
            b"/.git/",
            b"/list/.hidden",
            b"/%2esecret",
            b"/dotlink.txt",
        ]:
            self.assertNotFound(await self.get(path))

    async def test_wellKnownServed(self) -> None:
        """
        C{/.well-known/} (RFC 8615: ACME http-01 challenges, security.txt) is
        the one dot-directory that is served.
        """
        self.write("www/.well-known/acme-challenge/token123", b"token123.key")
        response = await self.get(b"/.well-known/acme-challenge/token123")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"token123.key")
        self.write("www/.well-known/.private", b"no")
        self.assertNotFound(await self.get(b"/.well-known/.private"))

    async def test_fileWithTrailingSlash(self) -> None:
        self.assertNotFound(await self.get(b"/hello.txt/"))

    async def test_specialFilesRefusedWithoutBlocking(self) -> None:
        os.mkfifo(os.path.join(self.root, "pipe.txt"))
        self.assertNotFound(await self.get(b"/pipe.txt"))
        listing = await self.get(b"/", [(b"Accept", b"application/json")])
        self.assertEqual(listing.status, 200)  # index.html
        os.remove(os.path.join(self.root, "index.html"))
        self.clock.advance(2)
        listed = await self.get(b"/", [(b"Accept", b"application/json")])
        names = [e["name"] for e in json.loads(listed.body)]
        self.assertNotIn("pipe.txt", names)

    async def test_hasIndex(self) -> None:
        self.assertTrue(self.folder.hasIndex())
        other = StaticFolder(
            os.path.join(self.root, "list"), notFound=NotFound(), clock=self.clock
        )
        self.assertFalse(other.hasIndex())
        self.write("www/list/index.html", b"now")
        self.assertFalse(other.hasIndex())
        self.clock.advance(1.5)
        self.assertTrue(other.hasIndex())

    async def test_treqClient(self) -> None:
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        response = await client.get(f"http://127.0.0.1:{self.port}/hello.txt")
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), HELLO)
        listing = await client.get(
            f"http://127.0.0.1:{self.port}/list/",
            headers={"Accept": "application/json"},
        )
        self.assertEqual(
            listing.headers.getRawHeaders("content-type"),
            ["application/json; charset=utf-8"],
        )
        self.assertEqual(
            [e["name"] for e in await listing.json()],
            ["z", EVIL_NAME, "a.txt", "b.txt"],
        )


class DirectoryTests(ServerMixin, TestCase):
    """
    Index pages, redirects and listings.
    """

    def setUp(self) -> None:
        self.makeTree()
        self.startServer()

    async def test_indexServed(self) -> None:
        root = await self.get(b"/")
        self.assertEqual(root.status, 200)
        self.assertEqual(root.body, PAGE)
        sub = await self.get(b"/sub/")
        self.assertEqual(sub.body, SUB_INDEX)
        self.assertEqual(sub.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertIsNotNone(sub.header(b"etag"))

    async def test_redirectToSlash(self) -> None:
        response = await self.get(b"/sub")
        self.assertEqual(response.status, 301)
        self.assertEqual(response.header(b"location"), b"/sub/")
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
        withQuery = await self.get(b"/list/z?sort=name&x=%20y")
        self.assertEqual(withQuery.header(b"location"), b"/list/z/?sort=name&x=%20y")
        spaced = await self.get(b"/list/z%20")
        self.assertNotFound(spaced)
        os.makedirs(os.path.join(self.root, "a dir", "<b>"))
        quoted = await self.get(b"/a%20dir/%3Cb%3E")
        self.assertEqual(quoted.header(b"location"), b"/a%20dir/%3Cb%3E/")
        self.assertNotIn(b"<b>", quoted.body)

    async def test_noOpenRedirect(self) -> None:
        for path, location in [
            (b"//evil.example", b"/evil.example/"),
            (b"///evil.example", b"/evil.example/"),
            (b"/./evil.example", b"/evil.example/"),
            (b"//evil.example?x", b"/evil.example/?x"),
        ]:
            response = await self.get(path)
            self.assertEqual(response.status, 301, path)
            self.assertEqual(response.header(b"location"), location, path)
        for path in [b"/%2Fevil.example", b"/%5Cevil.example", b"/\\evil.example"]:
            self.assertNotFound(await self.get(path))

    async def test_redirectUnderAMount(self) -> None:
        self.clock = Clock()
        folder = StaticFolder(self.root, notFound=NotFound(), clock=self.clock)
        root = Resource()
        root.putChild(b"files", folder)
        site = Site(root)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        top = await self.get(b"/files", port=number)
        self.assertEqual(top.status, 301)
        self.assertEqual(top.header(b"location"), b"/files/")
        sub = await self.get(b"/files/sub", port=number)
        self.assertEqual(sub.header(b"location"), b"/files/sub/")
        hello = await self.get(b"/files/hello.txt", port=number)
        self.assertEqual(hello.body, HELLO)
        listing = await self.get(b"/files/list/", port=number)
        self.assertIn(b"Index of /files/list/", listing.body)

    async def test_htmlListingEscaped(self) -> None:
        response = await self.get(b"/list/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertEqual(response.header(b"vary"), b"Accept")
        body = response.body.decode("utf-8")
        self.assertNotIn("<script>", body)
        self.assertIn("&lt;script&gt;alert(1)&lt;script&gt;&amp;&quot;x&#x27;.txt", body)
        href = "%3Cscript%3Ealert%281%29%3Cscript%3E%26%22x%27.txt"
        self.assertIn(f'href="{href}"', body)
        self.assertIn('href="z/"', body)
        self.assertIn('href="../"', body)
        self.assertNotIn(".hidden", body)
        # Directories first, then by name.
        positions = [body.index(f'href="{name}"') for name in ["z/", href, "a.txt", "b.txt"]]
        self.assertEqual(positions, sorted(positions))
        # The href leads to the file.
        evil = await self.get(b"/list/" + href.encode())
        self.assertEqual(evil.body, b"evil but harmless")

    async def test_writtenPagesCarryThePagePolicy(self) -> None:
        """
        The HTML the folder writes itself (a listing, whose names anyone
        who can write in the folder chose; a redirect; a 405) carries the
        built-in pages' headers, their strict Content-Security-Policy among
        them (it had only C{nosniff}).
        """
        for path, method, status in [(b"/list/", b"GET", 200), (b"/sub", b"GET", 301), (b"/hello.txt", b"POST", 405)]:
            response = await self.get(path, method=method)
            self.assertEqual(response.status, status, path)
            for name, value in PAGE_HEADERS.items():
                self.assertEqual(response.header(name.lower()), value, (path, name))

    async def test_jsonListing(self) -> None:
        response = await self.get(b"/list/", [(b"Accept", b"application/json")])
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-type"), b"application/json; charset=utf-8")
        self.assertEqual(response.header(b"vary"), b"Accept")
        entries = json.loads(response.body)
        self.assertEqual([e["name"] for e in entries], ["z", EVIL_NAME, "a.txt", "b.txt"])
        for entry in entries:
            self.assertEqual(set(entry), {"name", "href", "size", "mtime", "is_dir"})
            fetched = await self.get(b"/list/" + entry["href"].encode("ascii"))
            self.assertEqual(fetched.status, 200, entry)
        self.assertEqual(entries[0]["href"], "z/")
        self.assertEqual(entries[0]["is_dir"], True)
        self.assertEqual(entries[0]["size"], 0)
        self.assertEqual(entries[2]["is_dir"], False)
        self.assertEqual(entries[2]["size"], 3)
        mtime = os.stat(os.path.join(self.root, "list", "a.txt")).st_mtime
        self.assertAlmostEqual(entries[2]["mtime"], mtime, places=3)
        browser = await self.get(
            b"/list/",
            [(b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")],
        )
        self.assertIn(b"<!DOCTYPE html>", browser.body)

    async def test_jsonListingLinksNamesThatAreNotUTF8(self) -> None:
        """
        A name that is not UTF-8 is shown with U+FFFD in C{name}, which
        cannot fetch it; its C{href} can, as the HTML listing's link.
        """
        with open(os.path.join(self.root.encode(), b"list", b"bad\xff.txt"), "wb") as f:
            f.write(b"bad")
        self.clock.advance(2)
        entries = json.loads((await self.get(b"/list/", [(b"Accept", b"application/json")])).body)
        [entry] = [e for e in entries if e["name"].startswith("bad")]
        self.assertEqual((entry["name"], entry["href"]), ("bad\ufffd.txt", "bad%FF.txt"))
        self.assertEqual((await self.get(b"/list/bad%FF.txt")).body, b"bad")

    async def test_largeListingInSteps(self) -> None:
        """
        A folder of more entries than one step takes is scanned over several
        reactor turns and its listing written a part at a time (chunked),
        whole and in order, in HTML and JSON; HEAD gets no body.
        """
        self.patch(static, "_LIST_STEP", 10)
        names = sorted(f"f{i:03d}.txt" for i in range(35))
        for name in names:
            self.write("www/big/" + name, name.encode())
        page = await self.get(b"/big/")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.header(b"transfer-encoding"), b"chunked")
        self.assertIsNone(page.header(b"content-length"))
        self.assertEqual(re.findall(rb'href="(f\d+\.txt)"', page.body), [n.encode() for n in names])
        self.assertTrue(page.body.endswith(b"</table>\n</body></html>\n"))
        self.assertEqual(page.header(b"content-security-policy"), PAGE_HEADERS[b"Content-Security-Policy"])
        entries = json.loads((await self.get(b"/big/", [(b"Accept", b"application/json")])).body)
        self.assertEqual([e["name"] for e in entries], names)
        self.assertEqual([e["size"] for e in entries], [8] * 35)
        head = await self.get(b"/big/", method=b"HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")

    async def test_listingScannedOnceMeanwhile(self) -> None:
        """
        Requests for a folder being scanned wait for that scan; what it
        found answers requests for C{cacheSeconds}, then it is scanned again.
        """
        self.patch(static, "_LIST_STEP", 10)
        for i in range(25):
            self.write(f"www/big/f{i:02d}.txt", b"x")
        scans = []
        scan = self.folder._scan

        def counted(*args):
            scans.append(args)
            return scan(*args)

        self.folder._scan = counted  # type: ignore[method-assign]
        pages = await gatherResults([ensureDeferred(self.get(b"/big/")) for _ in range(4)])
        self.assertEqual(len(scans), 1)
        self.assertEqual({page.body for page in pages}, {pages[0].body})
        self.assertEqual(pages[0].body.count(b"<tr><td><a"), 26)  # with ../
        self.write("www/big/new.txt", b"new")
        self.assertNotIn(b"new.txt", (await self.get(b"/big/")).body)
        self.assertEqual(len(scans), 1)
        self.clock.advance(1.5)
        self.assertIn(b"new.txt", (await self.get(b"/big/")).body)
        self.assertEqual(len(scans), 2)

    async def test_clientGoneWhileScanningGetsNothing(self) -> None:
        """
        A request whose client left while its folder was scanned is not
        written to when the scan ends; the scan is kept, and the next client
        (over a socket) gets the listing.
        """
        self.patch(static, "_LIST_STEP", 10)
        for i in range(25):
            self.write(f"www/big/f{i:02d}.txt", b"x")
        request = DummyRequest([b"big", b""])
        self.assertEqual(getChildForRequest(self.folder, request).render(request), NOT_DONE_YET)
        request.processingFailed(Failure(ConnectionLost()))
        scanned = self.folder._listings[os.path.join(self.root, "big").encode()]
        while scanned.items is None:
            await deferLater(reactor, 0, lambda: None)
        await deferLater(reactor, 0, lambda: None)
        self.assertEqual((request.written, request.finished), ([], 0))
        self.assertEqual(len(scanned.items), 25)
        page = await self.get(b"/big/")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.body.count(b"<tr><td><a"), 26)

    async def test_listingEmptyAndRoot(self) -> None:
        empty = await self.get(b"/empty/", [(b"Accept", b"application/json")])
        self.assertEqual(json.loads(empty.body), [])
        os.remove(os.path.join(self.root, "index.html"))
        self.clock.advance(2)
        root = await self.get(b"/")
        self.assertEqual(root.status, 200)
        self.assertIn(b"Index of /</title>", root.body)
        self.assertNotIn(b'href="../"', root.body)
        self.assertNotIn(b"secret", root.body)

    async def test_listingShowsOnlyWhatIsServed(self) -> None:
        os.remove(os.path.join(self.root, "index.html"))
        self.clock.advance(2)
        names = [
            e["name"]
            for e in json.loads((await self.get(b"/", [(b"Accept", b"application/json")])).body)
        ]
        self.assertIn("inlink.txt", names)
        self.assertNotIn("link.txt", names)
        self.assertNotIn("linkdir", names)
        self.assertNotIn("dotlink.txt", names)
        self.assertNotIn(".secret", names)


class OutOfDescriptorsTests(ServerMixin, TestCase):
    """
    A file that cannot be opened because the process is out of file
    descriptors (or memory) gets 503 with C{Retry-After}, and is not
    remembered as missing: it answered 404 (a flood of connections turned
    every file of the site into a 404).
    """

    def setUp(self) -> None:
        self.makeTree()
        self.startServer()

    async def test_503NotMissing(self) -> None:
        realOpen = os.open
        failing = [True]

        def openOrNot(path, *args, **kwargs):
            if failing[0] and isinstance(path, bytes) and path.endswith(b"hello.txt"):
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return realOpen(path, *args, **kwargs)

        self.patch(static.os, "open", openOrNot)
        for method in (b"GET", b"HEAD"):
            response = await self.get(b"/hello.txt", method=method)
            self.assertEqual(response.status, 503, method)
            self.assertEqual(response.header(b"retry-after"), b"1")
        self.assertIn(b"Too many open files", (await self.get(b"/hello.txt")).body)
        failing[0] = False
        response = await self.get(b"/hello.txt")
        self.assertEqual((response.status, response.body), (200, HELLO))


class TraversalTests(ServerMixin, TestCase):
    """
    Nothing outside the root, nothing hidden, never an error.
    """

    def setUp(self) -> None:
        self.makeTree()
        self.startServer()

    async def test_traversalRefused(self) -> None:
        for path in [
            b"/../outside/secret.txt",
            b"/../../../../../../etc/passwd",
            b"/sub/../../outside/secret.txt",
            b"/%2e%2e/outside/secret.txt",
            b"/%2E%2E/outside/secret.txt",
            b"/.%2e/outside/secret.txt",
            b"/%252e%252e/outside/secret.txt",
            b"/..%2foutside%2fsecret.txt",
            b"/..%2Foutside/secret.txt",
            b"/..\\outside\\secret.txt",
            b"/..\\..\\outside\\secret.txt",
            b"/%5c..%5coutside%5csecret.txt",
            b"/sub%5c..%5c..%5coutside%5csecret.txt",
            b"/hello.txt%00.png",
            b"/%00",
            b"/sub/%00/../hello.txt",
            b"/..",
            b"/../",
            b"/...",
            b"/%2e%2e",
            b"/%2e%2e/",
        ]:
            self.assertNotFound(await self.get(path))

    async def test_encodedSlashAndBackslashRefused(self) -> None:
        self.write("www/back\\slash.txt", b"a backslash in a name")
        for path in [
            b"/sub%2Findex.html",
            b"/sub%2findex.html",
            b"/back\\slash.txt",
            b"/back%5Cslash.txt",
            b"/back%5cslash.txt",
        ]:
            self.assertNotFound(await self.get(path))
        self.assertEqual((await self.get(b"/sub/index.html")).body, SUB_INDEX)

    async def test_doubleEncodingIsLiteral(self) -> None:
        response = await self.get(b"/%252e%252e")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"a file literally named %2e%2e")

    async def test_dotAndEmptySegments(self) -> None:
        for path in [b"/./hello.txt", b"//hello.txt", b"/sub/./../hello.txt"]:
            response = await self.get(path)
            if b".." in path:
                self.assertNotFound(response)
            else:
                self.assertEqual(response.body, HELLO, path)

    async def test_symlinkOutsideRefused(self) -> None:
        self.assertNotFound(await self.get(b"/link.txt"))
        self.assertNotFound(await self.get(b"/linkdir/secret.txt"))
        self.assertNotFound(await self.get(b"/linkdir/"))
        inside = await self.get(b"/inlink.txt")
        self.assertEqual(inside.body, HELLO)

    def swapForLink(self, relative: str, target: str) -> None:
        """
        Replace C{www/relative} at once (a rename, as an attacker racing the
        server would) by a link to C{outside/target}.
        """
        path = os.path.join(self.root, relative)
        os.symlink(os.path.join(self.outside, target), path + ".new")
        os.rename(path + ".new", path)

    @contextmanager
    def swappedAfterCheck(self, suffix: bytes, swap: Callable[[], object]) -> Iterator[None]:
        """
        Within it, C{swap()} runs each time the folder has just checked a
        path ending in C{suffix}, before it opens it (an attacker winning
        the race).
        """
        folder = self.folder
        check = folder._inside

        def racedCheck(path: bytes) -> bool:
            answer = check(path)
            if path.endswith(suffix):
                swap()
            return answer

        folder._inside = racedCheck  # type: ignore[method-assign]
        try:
            yield
        finally:
            folder._inside = check  # type: ignore[method-assign]

    async def test_fileSwappedForOutsideLinkWhileCached(self) -> None:
        """
        A file that was served (its entry cached) and then replaced by a
        link to outside is refused, though the entry is still fresh: what
        is opened is checked, not only what was looked at.
        """
        self.startServer(maxCachedFileSize=16)  # hello.txt is opened each time
        self.assertEqual((await self.get(b"/hello.txt")).body, HELLO)
        self.swapForLink("hello.txt", "secret.txt")
        self.assertNotFound(await self.get(b"/hello.txt"))
        self.assertNotFound(await self.get(b"/hello.txt", [(b"Range", b"bytes=0-3")]))

    async def test_folderSwappedBetweenCheckAndOpen(self) -> None:
        """
        A folder swapped for a link to an outside one just after its path
        was checked (before it is scanned) is not listed.
        """
        def swap() -> None:
            shutil.rmtree(os.path.join(self.root, "list"))
            self.swapForLink("list", "dir")

        with self.swappedAfterCheck(b"/list", swap):
            self.assertNotFound(await self.get(b"/list/", [(b"Accept", b"application/json")]))
        self.clock.advance(1.5)
        for accept in (b"text/html", b"application/json"):
            self.assertNotFound(await self.get(b"/list/", [(b"Accept", accept)]))

    async def test_fileSwappedBetweenCheckAndOpen(self) -> None:
        """
        A small file swapped for a link to outside just after its path was
        checked (before it is read into the cache) is refused.
        """
        with self.swappedAfterCheck(b"/data.bin", lambda: self.swapForLink("data.bin", "secret.txt")):
            self.assertNotFound(await self.get(b"/data.bin"))
        self.clock.advance(1.5)
        self.assertNotFound(await self.get(b"/data.bin"))

    async def test_swapsRefusedWithoutProc(self) -> None:
        """
        Where C{/proc} cannot name what was opened, the path's real path is
        checked after the open and must be the file opened: the same swaps
        are refused, and files inside, through inside links too, are served.
        """
        readlink = os.readlink

        def noProc(path, *args, **kwargs):
            if os.fsencode(path).startswith(b"/proc/"):
                raise FileNotFoundError(path)
            return readlink(path, *args, **kwargs)

        self.patch(os, "readlink", noProc)
        await self.test_fileSwappedForOutsideLinkWhileCached()
        os.symlink("list/a.txt", os.path.join(self.root, "in2.txt"))
        self.assertEqual((await self.get(b"/in2.txt")).body, b"ay!")
        self.assertEqual((await self.get(b"/list/a.txt")).body, b"ay!")
        await self.test_folderSwappedBetweenCheckAndOpen()
        await self.test_fileSwappedBetweenCheckAndOpen()

    async def test_symlinkOutsideFollowedWhenAllowed(self) -> None:
        self.startServer(followSymlinks=True)
        response = await self.get(b"/link.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, SECRET)
        nested = await self.get(b"/linkdir/secret.txt")
        self.assertEqual(nested.body, SECRET)
        # Dotfiles inside the root stay refused, through links too.
        self.assertNotFound(await self.get(b"/dotlink.txt"))

    async def test_hostileInputNeverAnError(self) -> None:
        for path in [
            b"/%ff%fe%fd",
            b"/%c0%ae%c0%ae/outside/secret.txt",
            b"/" + b"a" * 3000,
            b"/" + b"a/" * 500,
            b"/%",
            b"/%zz",
            b"/..;/outside/secret.txt",
            b"/hello.txt?../../outside/secret.txt",
            b"/hello.txt#../",
            b"/\xff\xfe",
        ]:
            response = await self.get(path)
            self.assertIn(response.status, (200, 301, 400, 404), path)
            self.assertNotIn(SECRET, response.raw)
        for headers in [
            [(b"Range", b"bytes=" + b"9" * 3000 + b"-" + b"9" * 3000)],
            [(b"Range", b"bytes=" + b"0-0," * 1000 + b"1-1")],
            [(b"If-None-Match", b'"' * 500)],
            [(b"If-Modified-Since", b"\xff" * 100)],
            [(b"If-Range", b"Mon, 99 Foo 99999 99:99:99 GMT"), (b"Range", b"bytes=0-1")],
            [(b"Accept-Encoding", b";;;,,,q=,gzip;q=\xff")],
            [(b"Accept", b";q=;;,*/*;q=-1")],
        ]:
            response = await self.get(b"/hello.txt", headers)
            self.assertIn(response.status, (200, 206, 304, 412, 416), headers)
            listing = await self.get(b"/list/", headers)
            self.assertEqual(listing.status, 200)


class LargeFileTests(ServerMixin, TestCase):
    """
    Large files are streamed, follow the client's pace, and are closed
    however the response ends.
    """

    SIZE = 8 * 1024 * 1024
    timeout = 30

    def setUp(self) -> None:
        self.makeTree()
        self.big = self.write("www/big.bin", patterned(self.SIZE))
        self.startServer()

    async def test_streamedByteExact(self) -> None:
        response = await self.get(b"/big.bin")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-length"), b"%d" % self.SIZE)
        self.assertEqual(len(response.body), self.SIZE)
        self.assertEqual(response.body, patterned(self.SIZE))
        self.assertEqual(openFilesFor(self.big), 0)
        self.assertEqual(self.folder._producers, set())

    async def test_notKeptInMemory(self) -> None:
        await self.get(b"/big.bin")
        entry = self.folder._cache[(b"big.bin",)]
        self.assertIsNone(entry.identity.body)
        self.assertLess(self.folder._cacheBytes, 64 * 1024)

    async def test_pipelinedRequestsKeepTheirOrder(self) -> None:
        client = await self.connectRaw()
        client.transport.write(
            b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999999\r\n\r\n"
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await client.closed
        rest = client.body()
        data = patterned(self.SIZE)
        for status, body in [(200, data), (206, data[1000:2000000])]:
            head, _, rest = rest.partition(b"\r\n\r\n")
            first = Response(head + b"\r\n\r\n")
            self.assertEqual(first.status, status)
            length = int(first.header(b"content-length"))
            self.assertEqual(rest[:length], body)
            rest = rest[length:]
        last = Response(rest)
        self.assertEqual(last.status, 200)
        self.assertEqual(last.body, HELLO)

    async def test_rangeOfLargeFile(self) -> None:
        data = patterned(self.SIZE)
        first = 3 * 1024 * 1024 + 17
        response = await self.get(
            b"/big.bin", [(b"Range", b"bytes=%d-%d" % (first, first + 999999))]
        )
        self.assertEqual(response.status, 206)
        self.assertEqual(response.body, data[first : first + 1000000])
        suffix = await self.get(b"/big.bin", [(b"Range", b"bytes=-70000")])
        self.assertEqual(suffix.body, data[-70000:])
        self.assertEqual(openFilesFor(self.big), 0)

    async def test_headAndConditionalCloseTheFile(self) -> None:
        head = await self.get(b"/big.bin", method=b"HEAD")
        self.assertEqual(head.header(b"content-length"), b"%d" % self.SIZE)
        self.assertEqual(head.body, b"")
        cached = await self.get(b"/big.bin", [(b"If-None-Match", head.header(b"etag"))])
        self.assertEqual(cached.status, 304)
        unsatisfiable = await self.get(b"/big.bin", [(b"Range", b"bytes=%d-" % self.SIZE)])
        self.assertEqual(unsatisfiable.status, 416)
        self.assertEqual(openFilesFor(self.big), 0)

    async def test_clientDisconnectClosesFile(self) -> None:
        client = await self.connectRaw()
        # A small window, so that the file cannot all be in flight already.
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.transport.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(300 * 1024)
        self.assertEqual(len(self.folder._producers), 1)
        (producer,) = self.folder._producers
        # Plain TCP: the file goes to the socket with sendfile.
        self.assertIs(type(producer._socket), tcp.Server)
        self.assertEqual(openFilesFor(self.big), 1)
        client.transport.abortConnection()
        await client.closed
        await waitUntil(lambda: not self.folder._producers)
        self.assertEqual(openFilesFor(self.big), 0)

    async def test_filesBeingSentBounded(self) -> None:
        """
        Past C{maxOpenFiles} files being sent at once, a request for another
        large file gets 503 with C{Retry-After} (a small one, kept in
        memory, is answered); once one ends, files are sent again.
        """
        self.folder.maxOpenFiles = 1
        client = await self.connectRaw()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.transport.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(300 * 1024)
        self.assertEqual(len(self.folder._producers), 1)
        refused = await self.get(b"/big.bin")
        self.assertEqual(refused.status, 503)
        self.assertEqual(refused.header(b"retry-after"), b"1")
        self.assertIn(b"1 files are being sent", refused.body)
        self.assertEqual((await self.get(b"/hello.txt")).status, 200)
        client.transport.abortConnection()
        await client.closed
        await waitUntil(lambda: not self.folder._producers)
        self.assertEqual((await self.get(b"/big.bin")).body, patterned(self.SIZE))

    async def test_filesBeingSentToOneAddressBounded(self) -> None:
        """
        Past C{maxOpenFilesPerHost} files being sent to one client address,
        another request of its for a large file gets 503 with
        C{Retry-After}; a C{HEAD} still gets its answer, and so does
        another address.  One address could take every file the folder may
        send, and every other client's large files got a 503.
        """
        self.folder.maxOpenFilesPerHost = 1
        client = await self.connectRaw()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.transport.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(300 * 1024)
        refused = await self.get(b"/big.bin")
        self.assertEqual((refused.status, refused.header(b"retry-after")), (503, b"1"))
        self.assertIn(b"1 files are being sent to your address", refused.body)
        head = await self.get(b"/big.bin", method=b"HEAD")
        self.assertEqual(head.status, 200)
        for headers, status in (
            ([(b"If-None-Match", head.header(b"etag"))], 304),
            ([(b"If-Match", b'"other"')], 412),
            ([(b"Range", b"bytes=999999999-")], 416),
        ):
            self.assertEqual((await self.get(b"/big.bin", headers)).status, status, headers)
        other = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, bindAddress=("127.0.0.2", 0))
        await connectProtocol(endpoint, other)
        self.addCleanup(lambda: other.closed)
        other.transport.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await other.closed
        self.assertEqual(Response(other.body()).body, patterned(self.SIZE))
        client.transport.abortConnection()
        await client.closed
        await waitUntil(lambda: not self.folder._producers)
        self.assertEqual(self.folder._filesByHost, {})
        self.assertEqual((await self.get(b"/big.bin")).body, patterned(self.SIZE))

    async def test_oldETagOfAChangedFileWithinTheShare(self) -> None:
        """
        A request with the ETag of a file that changed since it was cached
        is a 200 after all: it is held to the address's share like any
        other (let through as a 304, it streamed the file past it).
        """
        self.folder.maxOpenFilesPerHost = 1
        client = await self.connectRaw()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.transport.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.waitFor(300 * 1024)
        etag = (await self.get(b"/big.bin", method=b"HEAD")).header(b"etag")
        with open(os.path.join(self.base, "www", "big.bin"), "ab") as f:
            f.write(b"more")
        refused = await self.get(b"/big.bin", [(b"If-None-Match", etag)])
        self.assertEqual(refused.status, 503)
        self.assertEqual(self.folder._filesByHost, {"127.0.0.1": 1})
        client.transport.abortConnection()
        await client.closed
        await waitUntil(lambda: not self.folder._producers)

    def test_clientsWithoutAnAddressHaveNoShare(self) -> None:
        """
        Clients of a UNIX socket have no address to share: they all counted
        under one empty key, as if one client.
        """
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
        from twisted.web.test.requesthelper import DummyRequest

        self.folder.maxOpenFilesPerHost = 1
        self.folder._filesByHost[""] = 5
        self.folder._filesByHost["10.0.0.1"] = 1
        request = DummyRequest([b""])
        request.client = UNIXAddress(b"/run/netsuite.sock")
        self.assertFalse(self.folder._hostFull(request))
        request.client = IPv4Address("TCP", "10.0.0.1", 1234)
        self.assertTrue(self.folder._hostFull(request))
        # An IPv6 client counts by its /64, as everywhere in netsuite.
        self.folder._filesByHost.clear()
        request.client = IPv6Address("TCP", "2001:db8::1", 1234)
        self.folder._filesByHost[static.clientKey(request)] = 1
        request.client = IPv6Address("TCP", "2001:db8::2:2", 1234)
        self.assertTrue(self.folder._hostFull(request))
        request.client = IPv6Address("TCP", "2001:db8:0:1::1", 1234)
        self.assertFalse(self.folder._hostFull(request))

    async def test_slowReaderPausesProducer(self) -> None:
        size = 24 * 1024 * 1024
        self.write("www/huge.bin", patterned(size))
        client = await self.connectRaw()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        client.transport.pauseProducing()
        client.transport.write(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await waitUntil(lambda: len(self.folder._producers) == 1)
        (producer,) = self.folder._producers
        offsets = []
        for _ in range(30):
            offsets.append(producer.offset)
            if len(offsets) > 3 and offsets[-1] == offsets[-4]:
                break
            await deferLater(reactor, 0.03, lambda: None)
        self.assertEqual(offsets[-1], offsets[-4])
        self.assertLess(producer.offset, size // 2)
        client.transport.resumeProducing()
        await client.closed
        response = Response(client.body())
        self.assertEqual(response.body, patterned(size))
        self.assertEqual(self.folder._producers, set())

    async def test_stalledClientDisconnected(self) -> None:
        client = await self.connectRaw()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        client.transport.pauseProducing()
        client.transport.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await waitUntil(lambda: len(self.folder._producers) == 1)
        (producer,) = self.folder._producers
        await waitUntil(lambda: producer._stall.watching)
        self.clock.advance(self.folder.stallTimeout - 1)
        self.assertEqual(self.folder._producers, {producer})
        self.assertEqual(openFilesFor(self.big), 1)
        self.clock.advance(2)
        self.assertEqual(self.folder._producers, set())
        client.transport.resumeProducing()
        await client.closed
        self.assertLess(client.count, self.SIZE)
        self.assertEqual(openFilesFor(self.big), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_stalledListingDisconnected(self) -> None:
        """
        A client that stops taking a long listing is disconnected after the
        folder's C{stallTimeout}, as for a file, and the listing is let go:
        it held its connection, and a copy of the listing, for good.
        """
        self.patch(static, "_LIST_STEP", 1)
        self.write("www/many/a.txt", b"a")
        self.write("www/many/b.txt", b"b")
        taken = []

        def listing(items, segments, up):
            for n in range(20):
                taken.append(n)
                yield b"x" * 1_000_000

        self.patch(static, "_htmlListing", listing)
        client = await self.connectRaw()
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        client.transport.pauseProducing()
        client.transport.write(b"GET /many/ HTTP/1.1\r\nHost: x\r\n\r\n")
        await waitUntil(lambda: taken)
        while True:  # until the server stops taking parts
            before = len(taken)
            await deferLater(reactor, 0.2, lambda: None)
            if len(taken) == before:
                break
        self.clock.advance(self.folder.stallTimeout - 1)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(client.closed.called)
        self.clock.advance(2)
        client.transport.resumeProducing()
        await client.closed
        self.assertLess(len(taken), 20)
        self.assertLess(client.count, 20_000_000)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_largeCompressibleFileGzipStreamed(self) -> None:
        text = b"".join(b"line %d of a long text\n" % i for i in range(100000))
        path = self.write("www/big.txt", text)
        response = await self.get(b"/big.txt", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-encoding"), b"gzip")
        self.assertEqual(response.header(b"transfer-encoding"), b"chunked")
        self.assertEqual(gzip.decompress(response.body), text)
        plain = await self.get(b"/big.txt")
        self.assertEqual(plain.body, text)
        self.assertNotEqual(plain.header(b"etag"), response.header(b"etag"))
        # HTTP/1.0 has no chunks: identity, with a length.
        old = await self.get(b"/big.txt", [(b"Accept-Encoding", b"gzip")], version=b"HTTP/1.0")
        self.assertIsNone(old.header(b"content-encoding"))
        self.assertEqual(old.body, text)
        self.assertEqual(openFilesFor(path), 0)

    async def test_fileReplacedWhileCachedIsSentAsOpened(self) -> None:
        await self.get(b"/big.bin")
        replacement = patterned(self.SIZE + 1000)[::-1]
        self.write("www/big.bin", replacement)
        # The cache still holds the old size: the answer follows the file
        # actually opened, with a matching length.
        response = await self.get(b"/big.bin")
        self.assertEqual(response.header(b"content-length"), b"%d" % len(replacement))
        self.assertEqual(response.body, replacement)

    def countSendfile(self) -> List[int]:
        """
        Count what goes out with C{os.sendfile} during this test.
        """
        sent: List[int] = []
        real = os.sendfile

        def sendfile(*args):
            count = real(*args)
            sent.append(count)
            return count

        self.patch(os, "sendfile", sendfile)
        return sent

    async def test_plainTCPSendsWithSendfile(self) -> None:
        sent = self.countSendfile()
        response = await self.get(b"/big.bin")
        self.assertEqual(response.body, patterned(self.SIZE))
        # Most of it goes without a copy (what goes through the transport
        # is one buffer's worth each time the socket is full).
        self.assertGreater(sum(sent), self.SIZE // 2)

    async def test_sendfileFailureGoesOnThroughTheTransport(self) -> None:
        """
        When C{sendfile} fails part way (a file system that cannot send so
        says C{EINVAL}), the rest goes through the transport: the client
        still gets the whole file.  Before, the connection was aborted.
        """
        import errno

        real = os.sendfile
        calls: List[int] = []

        def sendfile(out, fd, offset, count):
            calls.append(offset)
            if len(calls) > 1:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(out, fd, offset, min(count, 100000))

        self.patch(os, "sendfile", sendfile)
        response = await self.get(b"/big.bin")
        self.assertEqual(response.body, patterned(self.SIZE))
        self.assertEqual(len(calls), 2)

    async def test_sendfileYieldsToOtherConnections(self) -> None:
        """
        A client that takes everything at once gets at most
        C{SENDFILE_TURN_BYTES} (and one more C{sendfile}) in one reactor
        turn; the rest follows in the next turns.
        """
        size = 64 * 1024 * 1024
        os.truncate(self.write("www/sparse.bin", b""), size)
        sent: List[int] = []
        firstTurn: List[int] = []

        def sendfile(out, fd, offset, count):
            # As if the socket took everything (nothing really goes).
            if not sent:
                reactor.callLater(0, lambda: firstTurn.append(sum(sent)))
            sent.append(min(count, 1024 * 1024))
            return sent[-1]

        self.patch(os, "sendfile", sendfile)
        client = await self.connectRaw()
        client.transport.write(b"GET /sparse.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await waitUntil(lambda: firstTurn)
        self.assertLessEqual(firstTurn[0], SENDFILE_TURN_BYTES + 1024 * 1024)
        await waitUntil(lambda: not self.folder._producers)
        # All of it but what one read put in the transport's buffer.
        self.assertGreater(sum(sent), size - CHUNK_SIZE)

    async def test_trackedPlainListenerCountsBytes(self) -> None:
        listener = StreamListener("web", "tcp:0:interface=127.0.0.1", Site(self.folder), grace=1.0)
        listener.startService()
        self.addCleanup(listener.stopService)
        port = listener.port.getHost().port
        response = await self.get(b"/big.bin", port=port)
        self.assertEqual(response.body, patterned(self.SIZE))
        self.assertGreaterEqual(listener.stats.bytesOut, self.SIZE)
        self.assertLess(listener.stats.bytesOut, self.SIZE + 4096)

    async def test_tlsByteExact(self) -> None:
        sent = self.countSendfile()
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        listener = StreamListener(
            "web",
            "tcp:0:interface=127.0.0.1",
            Site(self.folder),
            tls=serverOptions(*loadPEM(certPath, keyPath)),
            grace=1.0,
        )
        listener.startService()
        self.addCleanup(listener.stopService)
        port = listener.port.getHost().port
        received, _ = await twistedTLSClient(
            port,
            "localhost",
            trustRootOf(ca),
            b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        response = Response(received)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, patterned(self.SIZE))
        self.assertEqual(openFilesFor(self.big), 0)
        self.assertEqual(sent, [])


class CacheTests(ServerMixin, TestCase):
    """
    Small files come from memory, checked against the disk every
    C{cacheSeconds} on the folder's clock.
    """

    def setUp(self) -> None:
        self.makeTree()
        self.startServer()

    async def test_revalidatedAfterCacheSeconds(self) -> None:
        self.assertEqual((await self.get(b"/hello.txt")).body, HELLO)
        self.write("www/hello.txt", b"changed, and longer than before" * 200)
        cached = await self.get(b"/hello.txt")
        self.assertEqual(cached.body, HELLO)
        self.clock.advance(0.5)
        self.assertEqual((await self.get(b"/hello.txt")).body, HELLO)
        self.clock.advance(0.6)
        fresh = await self.get(b"/hello.txt")
        self.assertEqual(fresh.body, b"changed, and longer than before" * 200)
        self.assertNotEqual(fresh.header(b"etag"), cached.header(b"etag"))
        zipped = await self.get(b"/hello.txt", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(gzip.decompress(zipped.body), fresh.body)

    async def test_sameSizeSameSecondChangeSeen(self) -> None:
        path = os.path.join(self.root, "data.bin")
        await self.get(b"/data.bin")
        st = os.stat(path)
        self.write("www/data.bin", patterned(5000)[::-1])
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        self.clock.advance(1.5)
        self.assertEqual((await self.get(b"/data.bin")).body, patterned(5000)[::-1])

    async def test_removedAndCreatedFiles(self) -> None:
        self.assertNotFound(await self.get(b"/new.txt"))
        self.assertEqual((await self.get(b"/hello.txt")).status, 200)
        self.write("www/new.txt", b"new")
        os.remove(os.path.join(self.root, "hello.txt"))
        self.assertEqual((await self.get(b"/hello.txt")).status, 200)
        self.clock.advance(1.5)
        self.assertNotFound(await self.get(b"/hello.txt"))
        self.assertEqual((await self.get(b"/new.txt")).body, b"new")

    async def test_cacheBounded(self) -> None:
        self.startServer(maxCacheBytes=20000, maxCachedFileSize=4096)
        for i in range(40):
            self.write(f"www/many/{i}.bin", patterned(3000 + i))
        for i in range(40):
            response = await self.get(b"/many/%d.bin" % i)
            self.assertEqual(response.body, patterned(3000 + i))
            self.assertLessEqual(self.folder._cacheBytes, 20000)
        # The most recent ones stay; the first went.
        self.assertIn((b"many", b"39.bin"), self.folder._cache)
        self.assertNotIn((b"many", b"0.bin"), self.folder._cache)
        self.assertEqual(
            self.folder._cacheBytes, sum(e.cost for e in self.folder._cache.values())
        )

    async def test_emptyAndDotSegmentsShareOneEntry(self) -> None:
        """
        C{//a/./b} is C{/a/b} (as in nginx): spellings with empty or C{.}
        segments neither make cache entries of their own nor grow one.
        """
        for prefix in [b"/", b"//", b"/" * 3000, b"/./", b"//.//./"]:
            response = await self.get(prefix + b"hello.txt")
            self.assertEqual(response.body, HELLO)
            self.assertNotFound(await self.get(prefix + b"nope%d" % len(prefix)))
        self.assertEqual((await self.get(b"//sub//./")).body, SUB_INDEX)
        self.assertEqual(
            sorted(self.folder._cache),
            sorted(
                [(b"hello.txt",), (b"sub",), (b"sub", b"index.html")]
                + [(b"nope%d" % n,) for n in (1, 2, 3000, 3, 7)]
            ),
        )

    async def test_biggerThanMaxCachedFileSizeStreamed(self) -> None:
        self.startServer(maxCachedFileSize=1000)
        response = await self.get(b"/hello.txt")
        self.assertEqual(response.body, HELLO)
        self.assertIsNone(self.folder._cache[(b"hello.txt",)].identity.body)
        small = await self.get(b"/list/a.txt")
        self.assertEqual(small.body, b"ay!")
        self.assertEqual(self.folder._cache[(b"list", b"a.txt")].identity.body, b"ay!")


class CacheMemoryTests(SynchronousTestCase):
    """
    What the cache holds in memory stays near C{maxCacheBytes}, however
    long the paths it is asked about.
    """

    def test_longPathsCountWhatTheyHold(self) -> None:
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        bound = 1024 * 1024
        folder = StaticFolder(root, notFound=NotFound(), clock=Clock(), maxCacheBytes=bound)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(60):
            # What a request line of 3 KB makes: 1000 segments, a bytes
            # object each (40 KB), and the path they join to.
            path = b"/".join([b"ab"] * 1000 + [b"nope%d" % i])
            folder._lookup(tuple(path.split(b"/")))
        held = tracemalloc.get_traced_memory()[0] - before
        self.assertLessEqual(folder._cacheBytes, bound)
        self.assertLess(held, bound * 1.25)
        self.assertEqual(
            folder._cacheBytes, sum(entry.cost for entry in folder._cache.values())
        )


class InMemoryStreamingTests(SynchronousTestCase):
    """
    A large file streamed over HTTP/1.1 in memory, a reactor turn at a time.
    """

    def test_compressibleFileReadAChunkATurn(self) -> None:
        """
        A file that compresses to almost nothing (which never fills the
        transport's buffer) is read one chunk a reactor turn, so that the
        other connections are served in between.
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        text = b"all work and no play makes jack a dull boy\n" * 200000
        with open(os.path.join(root, "big.txt"), "wb") as f:
            f.write(text)
        clock = ReactorLikeClock()
        folder = StaticFolder(root, notFound=NotFound(), clock=clock)
        channel = Site(folder, reactor=clock).buildProtocol(None)
        transport = SocketLikeTransport()
        channel.makeConnection(transport)
        reads: List[int] = []
        pread = os.pread

        def countingRead(fd: int, size: int, offset: int) -> bytes:
            data = pread(fd, size, offset)
            reads.append(len(data))
            return data

        self.patch(os, "pread", countingRead)
        channel.dataReceived(
            b"GET /big.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
            b"Connection: close\r\n\r\n"
        )
        received = []
        turns = 0
        while True:
            self.assertLessEqual(sum(reads), CHUNK_SIZE, f"read in turn {turns}")
            del reads[:]
            received.append(transport.drain())
            if not folder._producers:
                break
            clock.advance(0)
            turns += 1
        self.assertGreaterEqual(turns, len(text) // CHUNK_SIZE)
        response = Response(b"".join(received))
        self.assertEqual(response.header(b"content-encoding"), b"gzip")
        self.assertEqual(gzip.decompress(response.body), text)

    def test_slowSteadyReaderNotCutOff(self) -> None:
        """
        A client taking a file slowly but steadily, so that its
        transport's buffer never empties and the file stays paused for
        minutes, is not cut off: it was, as one that "took nothing", at the
        stall timeout (a 20 MB file read at 3 KB/s over TLS, where a file
        pauses with 320 KiB waiting, ended after 127 s).  Once it takes
        nothing, it is, a stall timeout later.
        """
        clock, folder, producer, transport = self.pausedFile(TakingSocketTransport())
        self.assertGreater(len(transport.value()), CHUNK_SIZE)
        for _ in range(200):  # 1 KB a second, for over three stall timeouts
            clock.advance(1)
            transport.take(1000)
        self.assertTrue(producer._paused, "the test's client took it all")
        self.assertEqual(folder._producers, {producer})
        self.assertFalse(transport.disconnected)
        for _ in range(int(folder.stallTimeout) - 1):
            clock.advance(1)
        self.assertEqual(folder._producers, {producer})
        for _ in range(int(folder.stallTimeout / 10) + 1):
            clock.advance(1)
        self.assertEqual(folder._producers, set())
        self.assertTrue(transport.disconnected)

    def assertNoLookLeft(self, clock: Clock) -> None:
        """
        No look of a L{SendStall} is left pending on C{clock}.
        """
        looks = [call for call in clock.getDelayedCalls() if getattr(call.func, "__func__", None) is SendStall._look]
        self.assertEqual(looks, [])

    def pausedFile(
        self, transport: Optional[SocketLikeTransport] = None
    ) -> tuple[ReactorLikeClock, StaticFolder, static._FileProducer, Any]:
        """
        A 1 MiB file asked for in memory, its producer paused by the full
        C{transport} (by default a L{SocketLikeTransport}; its stall watch
        on).
        """
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(patterned(1024 * 1024))
        clock = ReactorLikeClock()
        folder = StaticFolder(root, notFound=NotFound(), clock=clock)
        channel = Site(folder, reactor=clock).buildProtocol(None)
        transport = transport if transport is not None else SocketLikeTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(0)
        (producer,) = folder._producers
        self.assertTrue(producer._paused)
        self.assertTrue(producer._stall.watching)
        return clock, folder, producer, transport

    def test_noLookLeftOnceTheFileEnds(self) -> None:
        """
        Once a file is sent whole, its stall watch leaves no look pending
        (stopping it instead of cancelling it left one for up to a tenth of
        the stall timeout, holding the producer and its request).
        """
        clock, folder, producer, transport = self.pausedFile()
        received = []
        while folder._producers:
            received.append(transport.drain())
            clock.advance(0)
        received.append(transport.drain())
        self.assertEqual(Response(b"".join(received)).body, patterned(1024 * 1024))
        self.assertNoLookLeft(clock)

    def test_noLookLeftOnceTheConnectionIsLost(self) -> None:
        """
        A file whose client goes away while it is paused leaves no look of
        its stall watch pending.
        """
        clock, folder, producer, transport = self.pausedFile()
        channel = producer._request.channel
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(folder._producers, set())
        self.assertTrue(producer.done)
        self.assertNoLookLeft(clock)


class _PullingRequest:
    """
    Just enough of a request for a L{static._PartsProducer}: what it is
    given, and a client that takes a slice when the test says.
    """

    path = b"/many/"

    def __init__(self) -> None:
        self.written: List[bytes] = []
        self.finished = False
        self.aborted = False
        self.producer = None
        self._finish: Deferred[None] = Deferred()
        self.channel = self
        self.transport = self

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True

    def notifyFinish(self) -> Deferred[None]:
        return self._finish

    def abortConnection(self) -> None:
        self.aborted = True


class PartsProducerTests(SynchronousTestCase):
    """
    L{static._PartsProducer}, the writer of long listings, in memory.
    """

    def test_slowReaderNotCutOff(self) -> None:
        """
        A client that takes a part slowly, a slice at a time, but goes on
        taking it, is not cut off in the middle of it: the stall timer
        starts again as each slice is taken (it did only as whole parts
        were, half a megabyte of long names, which a slow link takes
        longer than the timeout).
        """
        clock = Clock()
        folder = SimpleNamespace(_clock=clock, stallTimeout=60.0)
        request = _PullingRequest()
        producer = static._PartsProducer(folder, request, iter([b"x" * 100_000, b"y" * 10]))
        producer.start()
        producer.resumeProducing()
        taken = 0
        for _ in range(7):  # 16 KiB a minute: slow, but going on
            clock.advance(59)
            taken += 16 * 1024
            if taken >= sum(map(len, request.written)):
                producer.resumeProducing()  # the transport took what it had
        self.assertFalse(request.aborted)
        while not request.finished:
            producer.resumeProducing()
        self.assertEqual(b"".join(request.written), b"x" * 100_000 + b"y" * 10)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stalledReaderCutOff(self) -> None:
        clock = Clock()
        folder = SimpleNamespace(_clock=clock, stallTimeout=60.0)
        request = _PullingRequest()
        producer = static._PartsProducer(folder, request, iter([b"x" * 100_000]))
        producer.start()
        producer.resumeProducing()
        clock.advance(60)
        self.assertTrue(request.aborted)
        self.assertIsNone(request.producer)
        producer.resumeProducing()  # late: nothing more
        self.assertEqual(len(request.written), 1)

    def test_slowReaderOfASliceNotCutOff(self) -> None:
        """
        A client taking a slice slowly, so that the transport does not ask
        for the next one for longer than the stall timeout, is not cut
        off: what its transport holds shrinking is progress.  Once it
        takes nothing, it is, a stall timeout later.
        """
        clock = Clock()
        folder = SimpleNamespace(_clock=clock, stallTimeout=60.0)
        request = _PullingRequest()
        transport = request.transport = TakingSocketTransport()
        request.write = transport.write  # type: ignore[method-assign]
        producer = static._PartsProducer(folder, request, iter([b"x" * 100_000]))
        producer.start()
        producer.resumeProducing()
        self.assertEqual(len(transport.value()), static._PartsProducer.SLICE)
        for _ in range(150):  # 100 bytes a second, the slice never all taken
            clock.advance(1)
            transport.take(100)
        self.assertFalse(transport.disconnecting)
        self.assertIs(request.producer, producer)
        clock.pump([1] * (int(folder.stallTimeout) - 1))
        self.assertFalse(transport.disconnecting)
        clock.pump([1] * (int(folder.stallTimeout / 10) + 1))
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(request.producer)
        self.assertEqual(clock.getDelayedCalls(), [])
