"""
Tests for L{netsuite.download.service}: C{/api/downloads} served by
netsuite's real site on a loopback port, downloading from a real
C{twisted.web} origin on another loopback port, checked by the bytes that
land in the download directory.  Also the download options of
L{netsuite.tap} and one C{twistd -n netsuite} run that downloads from
itself.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urljoin

import treq
from treq.client import HTTPClient
from twisted.internet import defer, reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File
from twisted.web.test.requesthelper import DummyRequest

from netsuite.download import service as serviceModule
from netsuite.download.engine import DownloadSettings
from netsuite.download.service import (
    JOBS_FILE,
    MAX_BODY,
    MAX_ERROR,
    MAX_FINISHED,
    MAX_JOB_BYTES,
    MAX_JOBS_VALUES,
    MAX_PENDING,
    MAX_SKIP_WARNINGS,
    SAVE_PAUSE,
    DownloadResource,
    DownloadService,
)
from netsuite.download.values import MAX_URL
from netsuite.listen import StreamListener
from netsuite.proxyrules import ProxyRules
from netsuite.status import SimpleStatus
from netsuite import tap as tapModule
from netsuite.tap import ConfigError, Options, makeService
from netsuite.web import api as apiModule
from netsuite.web.api import APIError
from netsuite.web.site import makeHTTPService
from tests.helpers import recvUntil
from tests.test_twistd import TWISTD, Running, spawn

#: The token the tests' services want.
TOKEN = "correct-horse-battery-staple-42"

#: A small file the origin serves from its folder.
HELLO = b"hello from the origin\n" * 300

#: The file the origin serves slowly: its first request gets L{HOLD_AFTER}
#: bytes, then nothing until the client goes away.
SLOW = bytes(range(256)) * 800
HOLD_AFTER = 50_000

#: The slow file's (strong) ETag.
ETAG = b'"slow-v1"'

#: Settings whose retries come quickly, and how long to wait to be sure a
#: retry would have come.
QUICK_RETRY = DownloadSettings(retryWait=0.05, maxRetryWait=0.1)
RETRY_WINDOW = 0.6

#: States a job does not leave.
FINISHED = ("done", "failed", "cancelled")


#: The API token's header, and the type of what is posted.
AUTH = {b"Authorization": [b"Bearer " + TOKEN.encode()], b"Content-Type": [b"application/json"]}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(directory: Path) -> list[str]:
    """
    The names in C{directory}, sorted.
    """
    return sorted(os.listdir(directory))


class HoldingFile(Resource):
    """
    Serves L{SLOW} with ranges (C{Accept-Ranges}, C{ETag}, C{If-Range}).
    The first request gets its head and L{HOLD_AFTER} body bytes, then the
    response stalls until the client closes the connection; later requests
    get their whole range at once.

    @ivar holds: how many requests, from the first, stall so.
    @ivar ranges: the C{Range} header of every request (L{None} for none).
    @ivar ifRanges: the C{If-Range} header of every request.
    @ivar held: requests stalled now.
    @ivar dropped: fires when a stalled request's connection goes away.
    """

    isLeaf = True
    holds = 1

    def __init__(self) -> None:
        Resource.__init__(self)
        self.ranges: list[Optional[bytes]] = []
        self.ifRanges: list[Optional[bytes]] = []
        self.held: list[Any] = []
        self.dropped: defer.Deferred[None] = defer.Deferred()

    def render_GET(self, request) -> Any:
        rangeHeader = request.getHeader(b"range")
        ifRange = request.getHeader(b"if-range")
        self.ranges.append(rangeHeader)
        self.ifRanges.append(ifRange)
        total = len(SLOW)
        start, end = 0, total - 1
        request.setHeader(b"ETag", ETAG)
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"Content-Type", b"application/octet-stream")
        match = re.fullmatch(rb"bytes=(\d+)-(\d*)", rangeHeader or b"")
        if match and (ifRange is None or ifRange == ETAG):
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)), total - 1)
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (start, end, total))
        body = SLOW[start : end + 1]
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        if len(self.ranges) > self.holds:
            return body
        request.write(body[:HOLD_AFTER])
        self.held.append(request)

        def gone(result: object) -> None:
            self.held.remove(request)
            if not self.dropped.called:
                self.dropped.callback(None)

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET


class SilentFirst(Resource):
    """
    Never answers its first request (no status line, no headers: the
    connection stays open until the client closes it); later requests get
    L{HELLO}.

    @ivar count: requests seen.
    @ivar arrived: fires when the first request arrives.
    @ivar dropped: fires when the first request's connection goes away.
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.count = 0
        self.arrived: defer.Deferred[None] = defer.Deferred()
        self.dropped: defer.Deferred[None] = defer.Deferred()

    def render_GET(self, request) -> Any:
        self.count += 1
        if self.count > 1:
            return HELLO
        request.notifyFinish().addBoth(lambda _: self.dropped.callback(None))
        self.arrived.callback(None)
        return NOT_DONE_YET


class Busy(Resource):
    """
    Always C{503} with C{Retry-After: 30}.
    """

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setResponseCode(503)
        request.setHeader(b"Retry-After", b"30")
        return b"busy\n"


class Origin:
    """
    A real HTTP origin on 127.0.0.1: C{/files/NAME} from a folder (with
    ranges, as L{File} serves them), C{/slow.bin} (L{HoldingFile}),
    C{/silent.bin} (L{SilentFirst}) and C{/busy.bin} (L{Busy}).
    """

    def __init__(self, testCase: TestCase) -> None:
        folder = Path(testCase.mktemp())
        folder.mkdir()
        (folder / "hello.txt").write_bytes(HELLO)
        self.slow = HoldingFile()
        root = Resource()
        root.putChild(b"files", File(str(folder)))
        root.putChild(b"slow.bin", self.slow)
        self.silent = SilentFirst()
        root.putChild(b"silent.bin", self.silent)
        root.putChild(b"busy.bin", Busy())
        self.listener = StreamListener("origin", "tcp:0:interface=127.0.0.1", Site(root), grace=0.5)
        self.listener.startService()
        testCase.addCleanup(self.listener.stopService)
        self.port = self.listener.port.getHost().port

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class ServiceTestCase(TestCase):
    """
    Runs L{DownloadService}s mounted at C{/api/downloads} of netsuite's site
    on 127.0.0.1, downloading from an L{Origin}; talks to them with treq
    through a non-persistent pool.
    """

    timeout = 20

    def setUp(self) -> None:
        self.origin = Origin(self)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.client = HTTPClient(Agent(reactor, pool=pool))
        self.directory = Path(self.mktemp()) / "downloads"

    def startService(
        self,
        directory: Optional[Path] = None,
        token: Optional[str] = TOKEN,
        rules: Any = "loopback",
        settings: Optional[DownloadSettings] = None,
    ) -> DownloadService:
        """
        Start a download service into C{directory} (the test's by default)
        and serve its API; C{self.base} is then the API's URL.  Both stop
        when the test ends.
        """
        if rules == "loopback":
            rules = ProxyRules(allowLoopback=True)
        service = DownloadService(
            directory or self.directory, reactor=reactor, token=token, rules=rules, settings=settings
        )
        service.startService()
        self.service = service
        self.addCleanup(lambda: service.stopService() if service.running else None)
        http = makeHTTPService(
            "tcp:0:interface=127.0.0.1",
            reactor,
            status=SimpleStatus(),
            api={b"downloads": service.resource()},
            grace=0.5,
        )
        http.startService()
        self.addCleanup(http.stopService)
        self.root = f"http://127.0.0.1:{http.port.getHost().port}"
        self.base = self.root + "/api/downloads"
        return service

    def auth(self, token: str = TOKEN) -> dict[bytes, list[bytes]]:
        return {b"Authorization": [b"Bearer " + token.encode("ascii")]}

    async def call(
        self,
        method: str,
        path: str = "",
        *,
        token: Optional[str] = TOKEN,
        headers: Optional[dict[bytes, list[bytes]]] = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """
        Make a request to C{self.base + path}; return the response and its
        JSON body (every answer of the API is JSON).
        """
        sent = dict(self.auth(token) if token is not None else {})
        sent.update(headers or {})
        response = await self.client.request(method, self.base + path, headers=sent, **kwargs)
        body = await treq.content(response)
        self.assertEqual(
            response.headers.getRawHeaders(b"Content-Type"),
            [b"application/json; charset=utf-8"],
            body,
        )
        return response, json.loads(body.decode("utf-8"))

    async def post(self, document: Any, **kwargs: Any) -> tuple[Any, Any]:
        data = document if isinstance(document, bytes) else json.dumps(document).encode("utf-8")
        headers = kwargs.pop("headers", {b"Content-Type": [b"application/json"]})
        return await self.call("POST", data=data, headers=headers, **kwargs)

    async def assertError(self, code: int, method: str, path: str = "", **kwargs: Any) -> dict:
        """
        Check a request gets a JSON error C{code} whose message is one
        sentence; return the error body.
        """
        if method == "POST":
            response, body = await self.post(kwargs.pop("document"), **kwargs)
        else:
            response, body = await self.call(method, path, **kwargs)
        self.assertEqual(response.code, code, body)
        self.assertEqual(body["status"], code, body)
        message = body["error"]
        self.assertIsInstance(message, str)
        self.assertTrue(message, body)
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)
        return body

    async def queue(self, document: dict) -> dict:
        """
        POST C{document}; check it was queued; return the job.
        """
        response, job = await self.post(document)
        self.assertEqual(response.code, 201, job)
        return job

    async def waitFor(self, jobId: str, until: Any = None, seconds: float = 8.0) -> dict:
        """
        Poll C{GET /api/downloads/ID} until C{until(job)} (by default: until
        the job is finished); return the job.
        """
        until = until or (lambda job: job["state"] in FINISHED)
        deadline = time.monotonic() + seconds
        while True:
            response, job = await self.call("GET", "/" + jobId)
            self.assertEqual(response.code, 200, job)
            if until(job):
                return job
            if time.monotonic() > deadline:
                self.fail(f"job {jobId} never got there: {job}")
            await deferLater(reactor, 0.02, lambda: None)

    async def runningSlowJob(self) -> dict:
        """
        Queue C{/slow.bin} and wait until it holds L{HOLD_AFTER} bytes.
        """
        job = await self.queue({"url": self.origin.url("/slow.bin")})
        return await self.waitFor(job["id"], lambda job: job["done"] >= HOLD_AFTER or job["state"] in FINISHED)

    async def listed(self) -> list[dict]:
        response, body = await self.call("GET")
        self.assertEqual(response.code, 200, body)
        return body["downloads"]

    async def written(self, service: DownloadService) -> None:
        """
        Wait until C{service} has written its latest changes to its job
        list (it gathers them, and writes in a thread), or failed to and
        waits to try again.
        """
        while service._writing or (
            service._saveCall is not None and service._saveCall.active() and not service._saveFailures
        ):
            await deferLater(reactor, 0.02, lambda: None)

    async def files(self, directory: Optional[Path] = None) -> list[str]:
        """
        The names in C{directory} (the test's by default), sorted, once the
        service last started has written its latest changes.
        """
        await self.written(self.service)
        return listing(directory or self.directory)

    async def startOnJobList(self, content: bytes) -> tuple[Path, EventLoggingObserver]:
        """
        Start the service in a new directory whose job list holds
        C{content}; check it runs with no job listed.  Return the directory,
        and the log events from before the start on.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / JOBS_FILE).write_bytes(content)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.startService(directory)
        self.assertTrue(service.running)
        self.assertEqual(await self.listed(), [], content[:100])
        return directory, events

    async def savedJobs(self, service: DownloadService) -> dict:
        """
        The job list on disk, once C{service} has written its latest changes.
        """
        await self.written(service)
        return json.loads(service.jobsFile.read_text())


class TokenTests(ServiceTestCase):
    """
    Every method of C{/api/downloads} and C{/api/downloads/ID} wants the
    bearer token.
    """

    async def test_noTokenIs401WithBearerChallenge(self) -> None:
        self.startService()
        for method, path in (("GET", ""), ("GET", "/1"), ("DELETE", "/1"), ("GET", "/nonexistent")):
            response, body = await self.call(method, path, token=None)
            self.assertEqual(response.code, 401, (method, path, body))
            self.assertEqual(body["status"], 401)
            [challenge] = response.headers.getRawHeaders(b"WWW-Authenticate")
            self.assertTrue(challenge.startswith(b"Bearer"), challenge)
        response, body = await self.post({"url": self.origin.url("/files/hello.txt")}, token=None)
        self.assertEqual(response.code, 401, body)
        self.assertEqual(await self.listed(), [])
        self.assertFalse((self.directory / "hello.txt").exists())

    async def test_refusedFromTheHead(self) -> None:
        """
        Over a real socket, a POST that asks for C{100 Continue} gets its
        401 (no token), 413 (a body over 64 KiB) or 415 (not JSON) from its
        head, before any C{100 Continue}, and its body is never sent for
        nothing, as from nginx; a good one gets its C{100 Continue}, then
        its 201.  The C{100 Continue} came without the token, and the body
        was read up to the site's limit (1 MiB) before its 413.
        """
        self.startService()
        port = int(self.root.rsplit(":", 1)[1])
        document = json.dumps({"url": self.origin.url("/files/hello.txt")}).encode()

        def head(*lines: bytes, length: int = len(document)) -> bytes:
            return b"\r\n".join(
                [
                    b"POST /api/downloads HTTP/1.1",
                    b"Host: x",
                    b"Expect: 100-continue",
                    b"Content-Length: %d" % (length,),
                    *lines,
                    b"",
                    b"",
                ]
            )

        def exchange(data: bytes, follow: bool = True) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                answer = recvUntil(s, lambda got: b"\r\n\r\n" in got)
                if follow and answer.startswith(b"HTTP/1.1 100 "):
                    s.sendall(document)
                    answer = recvUntil(s, received=answer)  # until it closes, after the answer
                return answer

        bearer = b"Authorization: Bearer " + TOKEN.encode()
        for data, status in (
            (head(b"Content-Type: application/json"), b"401"),
            (head(b"Content-Type: application/json", bearer, length=MAX_BODY + 1), b"413"),
            (head(b"Content-Type: application/xml", bearer), b"415"),
        ):
            answer = await threads.deferToThread(exchange, data)
            self.assertTrue(answer.startswith(b"HTTP/1.1 " + status + b" "), answer)
            self.assertIn(b"\r\nContent-Type: application/json; charset=utf-8\r\n", answer)
        self.assertIn(b'\r\nWWW-Authenticate: Bearer realm="netsuite"\r\n', await threads.deferToThread(exchange, head()))
        for spelling in (b"//api/downloads", b"/api//downloads", b"/api/./downloads"):
            # Paths the site reads as /api/downloads (they went round it).
            answer = await threads.deferToThread(exchange, head().replace(b" /api/downloads ", b" " + spelling + b" "))
            self.assertTrue(answer.startswith(b"HTTP/1.1 401 "), (spelling, answer))
        # 64 KiB is not over the limit; a GET's body is not a job's (no 415).
        answer = await threads.deferToThread(
            exchange, head(b"Content-Type: application/json", bearer, length=MAX_BODY), False
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 100 Continue\r\n"), answer)
        answer = await threads.deferToThread(
            exchange, head(b"Content-Type: application/xml", bearer).replace(b"POST ", b"GET "), False
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 100 Continue\r\n"), answer)
        answer = await threads.deferToThread(
            exchange, head(b"Content-Type: application/json", bearer, b"Connection: close")
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 "), answer)
        self.assertEqual(len(await self.listed()), 1)

    async def test_wrongTokenIs401(self) -> None:
        self.startService()
        for value in (
            b"Bearer " + b"x" * len(TOKEN),
            b"Bearer " + TOKEN[:-1].encode(),
            b"Bearer " + TOKEN.encode() + b"x",
            b"Basic " + TOKEN.encode(),
            TOKEN.encode(),
            b"Bearer",
        ):
            response, body = await self.call("GET", token=None, headers={b"Authorization": [value]})
            self.assertEqual(response.code, 401, (value, body))
            self.assertTrue(response.headers.getRawHeaders(b"WWW-Authenticate")[0].startswith(b"Bearer"))

    async def test_guessingTheTokenIsLimited(self) -> None:
        """
        Over real sockets: one keep-alive connection sending wrong tokens
        gets C{401} for the first C{TOKEN_FAILURE_BURST}, then C{429} with
        C{Retry-After} (any number were checked: 3,000 took 2.8 s, each a
        401); its address's right token is refused so too, from a request's
        head as well, but the connection that sent it before goes on, until
        it sends a wrong one; another address of 127/8 counts as the same.
        """
        self.startService()
        port = int(self.root.rsplit(":", 1)[1])
        burst = serviceModule.TOKEN_FAILURE_BURST

        def request(sock: socket.socket, token: str, method: bytes = b"GET") -> tuple[bytes, bytes]:
            body = b'{"url": "http://example.com/"}' if method == b"POST" else b""
            sock.sendall(
                b"%s /api/downloads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (method, token.encode(), len(body), body)
            )
            head = recvUntil(sock, lambda got: b"\r\n\r\n" in got)
            head, _, rest = head.partition(b"\r\n\r\n")
            length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
            recvUntil(sock, lambda got: len(got) >= length, rest)
            return head.split(b" ")[1], head

        def guess() -> list[Any]:
            seen: list[Any] = []
            with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
                seen.append(request(kept, TOKEN)[0])
                with socket.create_connection(("127.0.0.1", port), timeout=10) as guesser:
                    seen.append([request(guesser, "x" * len(TOKEN))[0] for _ in range(burst + 2)])
                    status, head = request(guesser, TOKEN)
                    seen.append((status, b"\r\nRetry-After: 1\r\n" in head, b"WWW-Authenticate" in head))
                with socket.create_connection(("127.0.0.1", port), timeout=10) as other:
                    seen.append(request(other, TOKEN, b"POST")[0])  # refused from its head
                seen.append(request(kept, TOKEN)[0])
                # A wrong token there is counted as any other, and the
                # right one then has to wait for the address's limit too.
                seen.append([request(kept, token)[0] for token in ("y" * len(TOKEN), TOKEN)])
            # All of 127/8 counts as one address.
            with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)) as other:
                seen.append(request(other, TOKEN)[0])
            return seen

        self.assertEqual(
            await threads.deferToThread(guess),
            [b"200", [b"401"] * burst + [b"429"] * 2, (b"429", True, False), b"429", b"200", [b"429"] * 2, b"429"],
        )

    async def test_rightTokenWorks(self) -> None:
        self.startService()
        response, body = await self.call("GET")
        self.assertEqual((response.code, body), (200, {"downloads": [], "next": None}))
        # The scheme is case-insensitive (RFC 9110, section 11.1).
        response, body = await self.call("GET", token=None, headers={b"Authorization": [b"bearer " + TOKEN.encode()]})
        self.assertEqual(response.code, 200, body)

    async def test_generatedTokenIsLongRandomAndLogged(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        first = self.startService(token=None)
        other = DownloadService(Path(self.mktemp()), token=None)
        self.assertGreaterEqual(len(first.token), 32)
        self.assertNotEqual(first.token, other.token)
        self.assertTrue(first.generatedToken)
        logged = [formatEvent(e) for e in events if first.token in formatEvent(e)]
        self.assertEqual(len(logged), 1, [formatEvent(e) for e in events])
        self.assertIn("token", logged[0])
        response, body = await self.call("GET", token=first.token)
        self.assertEqual(response.code, 200, body)
        response, body = await self.call("GET", token=other.token)
        self.assertEqual(response.code, 401, body)

    async def test_chosenTokenIsNotLogged(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.startService()
        self.assertFalse(service.generatedToken)
        self.assertEqual([formatEvent(e) for e in events if TOKEN in formatEvent(e)], [])


class _Connection:
    """
    A stand-in for the connection a request came on.
    """


class _Stream:
    """
    A stand-in for an HTTP/2 stream (a request's channel there), on the
    connection C{_conn}.
    """

    def __init__(self, connection: _Connection, streamID: int) -> None:
        self._conn = connection
        self.streamID = streamID


class TokenLimitTests(SynchronousTestCase):
    """
    Wrong API tokens are counted by client address (L{hostKey}, all of
    127/8 as one) and for all addresses together: after
    C{TOKEN_FAILURE_BURST} of an address's, one a second, and after
    C{TOKEN_FAILURE_OVERALL_BURST} of all, two a second (but for addresses
    that sent the right token); past that, a token gets C{429} without
    being checked, but the right one on a connection that sent it before.
    Any number of guesses was checked: 3,000 on one keep-alive connection
    took 2.8 s; then 83,100 from 4,200 addresses of 127/8 in 59.5 s.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.service = self.newService()

    def newService(self) -> DownloadService:
        """
        A download service (not started) on the test's clock.
        """
        return DownloadService(Path(self.mktemp()), reactor=self.clock, token=TOKEN)

    def check(self, token: Optional[str], host: str = "192.0.2.1", connection: Any = None) -> int:
        """
        The status C{checkToken} gives a request from C{host} on
        C{connection} (a new one by default) carrying C{token}; 200 when it
        passes.  A 429's C{Retry-After} is kept in C{retryAfter}.
        """
        request = DummyRequest([b""])
        request.client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)
        request.channel = connection if connection is not None else _Connection()
        if token is not None:
            request.requestHeaders.setRawHeaders(b"Authorization", [b"Bearer " + token.encode()])
        try:
            self.service.checkToken(request)
        except apiModule.APIError as e:
            if e.code == 429:
                [retryAfter] = request.responseHeaders.getRawHeaders(b"Retry-After")
                self.retryAfter = int(retryAfter)
                self.assertGreaterEqual(self.retryAfter, 1)
                self.assertIsNone(request.responseHeaders.getRawHeaders(b"WWW-Authenticate"))
            return e.code
        return 200

    def test_wrongTokensLimitedPerAddress(self) -> None:
        self.patch(serviceModule, "TOKEN_FAILURE_OVERALL_BURST", 1000)
        self.service = self.newService()
        wrong = "x" * len(TOKEN)
        burst = serviceModule.TOKEN_FAILURE_BURST
        self.assertEqual([self.check(wrong) for _ in range(burst)], [401] * burst)
        self.assertEqual((self.check(wrong), self.retryAfter), (429, 1))
        # The right token is not checked either: the answer would tell it.
        self.assertEqual(self.check(TOKEN), 429)
        # No token at all is no guess: 401, as before, and not counted.
        self.assertEqual(self.check(None), 401)
        # Other addresses are not affected; an IPv6 client counts by its /64.
        self.assertEqual(self.check(TOKEN, "192.0.2.2"), 200)
        self.assertEqual(self.check(wrong, "192.0.2.2"), 401)
        self.assertEqual([self.check(wrong, f"2001:db8::{n}") for n in range(1, burst + 2)], [401] * burst + [429])
        self.assertEqual(self.check(TOKEN, "2001:db8::ffff"), 429)
        self.assertEqual(self.check(TOKEN, "2001:db8:0:1::1"), 200)
        # Then one guess a second.
        self.clock.advance(1.0 / serviceModule.TOKEN_FAILURES_PER_SECOND)
        self.assertEqual((self.check(wrong), self.check(wrong)), (401, 429))
        self.clock.advance(1.0 / serviceModule.TOKEN_FAILURES_PER_SECOND)
        self.assertEqual(self.check(TOKEN), 200)

    def test_requestsWithoutATokenAreNotCounted(self) -> None:
        """
        Requests without a token (or with another scheme) get C{401} and
        are not counted: a client that has not sent a token yet guessed
        nothing.
        """
        burst = serviceModule.TOKEN_FAILURE_BURST
        self.assertEqual([self.check(None) for _ in range(burst + 1)], [401] * (burst + 1))
        self.assertEqual(self.check("x" * len(TOKEN)), 401)
        self.assertEqual(self.check(TOKEN), 200)

    def test_wrongTokensLimitedOverall(self) -> None:
        """
        Guesses spread over many addresses (each within its own limit) get
        C{TOKEN_FAILURE_OVERALL_BURST} checked, then two a second: 4,200
        addresses had 83,100 checked in 59.5 s, and 4,097 IPv6 /64s 122,910.
        Addresses that sent the right token before are not held up by it
        (their own limit holds), so guessers elsewhere do not lock out the
        owner's new connections from there.
        """
        wrong = "x" * len(TOKEN)
        overall = serviceModule.TOKEN_FAILURE_OVERALL_BURST
        self.assertEqual(self.check(TOKEN, "198.51.100.7"), 200)  # the owner, before
        statuses = [self.check(wrong, f"2001:db8:{n:x}::1") for n in range(4097)]
        self.assertEqual(statuses, [401] * overall + [429] * (4097 - overall))
        self.assertEqual(self.retryAfter, 1)
        # Not checked from a new address, the right token either.
        self.assertEqual(self.check(TOKEN, "192.0.2.9"), 429)
        # The owner's address: its new connections pass, and its own wrong
        # tokens count only against its own limit.
        self.assertEqual(self.check(TOKEN, "198.51.100.7"), 200)
        self.assertEqual(self.check(wrong, "198.51.100.7"), 401)
        # Then two guesses a second from all the others.
        self.clock.advance(1.0 / serviceModule.TOKEN_FAILURES_OVERALL_PER_SECOND)
        self.assertEqual([self.check(wrong, f"192.0.2.{n}") for n in range(10, 13)], [401, 429, 429])
        self.clock.advance(1.0 / serviceModule.TOKEN_FAILURES_OVERALL_PER_SECOND)
        self.assertEqual(self.check(TOKEN, "192.0.2.9"), 200)

    def test_loopbackCountsAsOneAddress(self) -> None:
        """
        Any local user may send from any address of 127/8: they count as
        one, an IPv4-mapped one too (4,200 of them had 83,100 wrong tokens
        checked in 59.5 s).
        """
        wrong = "x" * len(TOKEN)
        burst = serviceModule.TOKEN_FAILURE_BURST
        statuses = [self.check(wrong, f"127.1.{n // 256}.{n % 256}") for n in range(4200)]
        self.assertEqual(statuses, [401] * burst + [429] * (4200 - burst))
        self.assertEqual(self.check(TOKEN, "127.0.0.1"), 429)
        self.assertEqual(self.check(TOKEN, "::ffff:127.0.0.1"), 429)
        self.assertEqual(self.check(TOKEN, "192.0.2.1"), 200)

    def test_connectionThatSentTheRightTokenGoesOn(self) -> None:
        """
        A connection that sent the right token goes on working while a
        guesser at the same address (behind the same NAT) has spent its
        tries.
        """
        keptAlive = _Connection()
        self.assertEqual(self.check(TOKEN, connection=keptAlive), 200)
        for _ in range(serviceModule.TOKEN_FAILURE_BURST):
            self.check("x" * len(TOKEN))
        self.assertEqual(self.check(TOKEN), 429)
        self.assertEqual(self.check(TOKEN, connection=keptAlive), 200)

    def test_wrongTokenOnAConnectionThatSentTheRightOneIsCounted(self) -> None:
        """
        Only the right token passes on a connection that sent it before: a
        wrong one is counted as any other, and the connection has to send
        the right one again, within its address's limit, to pass so.  A
        connection may be shared by several clients (a proxy's, pooled):
        through netsuite's proxy, a second client had 2,000 wrong tokens
        checked in 1.3 s after the owner had sent the right one once.
        """
        burst = serviceModule.TOKEN_FAILURE_BURST
        shared = _Connection()
        self.assertEqual(self.check(TOKEN, connection=shared), 200)
        statuses = [self.check(f"{n:x}" * len(TOKEN), connection=shared) for n in range(burst + 2)]
        self.assertEqual(statuses, [401] * burst + [429] * 2)
        self.assertEqual(self.check(TOKEN, connection=shared), 429)
        self.clock.advance(1.0 / serviceModule.TOKEN_FAILURES_PER_SECOND)
        self.assertEqual(self.check(TOKEN, connection=shared), 200)
        self.assertEqual(self.check(TOKEN, connection=shared), 200)  # proved again

    def test_http2StreamsShareTheirConnectionsProof(self) -> None:
        """
        Over HTTP/2 a request's channel is its stream: the right token sent
        on one stream lets the connection's later streams pass while the
        address is over its limit.
        """
        connection = _Connection()
        self.assertEqual(self.check(TOKEN, connection=_Stream(connection, 1)), 200)
        for _ in range(serviceModule.TOKEN_FAILURE_BURST):
            self.check("x" * len(TOKEN))
        self.assertEqual(self.check(TOKEN, connection=_Stream(_Connection(), 1)), 429)
        self.assertEqual(self.check(TOKEN, connection=_Stream(connection, 3)), 200)

    def test_pushingAnAddressOutGivesItNoFreshBurst(self) -> None:
        """
        An address's count is forgotten only once it has refilled: one
        IPv4 address whose tries were spent had a fresh burst of them
        after sending from 4,096 /64s; while every address counted has
        tries spent, a new one gets C{429}.
        """
        self.patch(serviceModule, "TOKEN_FAILURE_ADDRESSES", 50)
        self.patch(serviceModule, "TOKEN_FAILURE_OVERALL_BURST", 10000)
        self.service = self.newService()
        wrong = "x" * len(TOKEN)
        burst = serviceModule.TOKEN_FAILURE_BURST
        self.assertEqual([self.check(wrong) for _ in range(burst + 1)], [401] * burst + [429])
        statuses = [self.check(wrong, f"2001:db8:{n:x}::1") for n in range(100)]
        self.assertEqual(statuses, [401] * 49 + [429] * 51)
        self.assertEqual((self.check(wrong), self.check(TOKEN)), (429, 429))
        self.assertEqual(len(self.service._tokenFailures), 50)

    def test_addressesCountedAreBounded(self) -> None:
        """
        At most C{TOKEN_FAILURE_ADDRESSES} addresses are counted: those
        whose tries have refilled are forgotten, the least recently wrong
        first.
        """
        self.patch(serviceModule, "TOKEN_FAILURE_ADDRESSES", 50)
        self.patch(serviceModule, "TOKEN_FAILURE_OVERALL_BURST", 10000)
        self.service = self.newService()
        statuses = []
        for n in range(1000):
            if n % 50 == 0:
                self.clock.advance(1.0 / serviceModule.TOKEN_FAILURES_PER_SECOND)
            statuses.append(self.check("x" * len(TOKEN), f"10.0.{n // 256}.{n % 256}"))
        self.assertEqual(statuses, [401] * 1000)
        self.assertEqual(len(self.service._tokenFailures), 50)


class DownloadTests(ServiceTestCase):
    """
    Queuing, listing, showing and removing downloads.
    """

    async def test_postQueuesAndDownloads(self) -> None:
        self.startService()
        url = self.origin.url("/files/hello.txt")
        response, job = await self.post({"url": url})
        self.assertEqual(response.code, 201, job)
        self.assertEqual(response.headers.getRawHeaders(b"Location"), [f"/api/downloads/{job['id']}".encode()])
        self.assertEqual(job["url"], url)
        self.assertIn(job["state"], ("queued", "running", "done"))
        finished = await self.waitFor(job["id"])
        self.assertEqual(finished["state"], "done", finished)
        self.assertEqual((self.directory / "hello.txt").read_bytes(), HELLO)
        [listed] = await self.listed()
        self.assertEqual(listed["id"], job["id"])
        self.assertEqual(listed["state"], "done")
        self.assertEqual(listed["size"], len(HELLO))
        self.assertEqual(listed["done"], len(HELLO))
        self.assertEqual(listed["path"], "hello.txt")
        self.assertEqual(listed["error"], None)
        location = response.headers.getRawHeaders(b"Location")[0].decode()
        one = await self.client.get(self.root + location, headers=self.auth())
        self.assertEqual(json.loads(await treq.content(one)), listed)
        self.assertEqual(await self.files(), [JOBS_FILE, "hello.txt"])

    async def test_secondJobGetsItsOwnIdAndFile(self) -> None:
        """
        Two downloads of the same URL get different ids and files: the
        second never replaces the first.
        """
        self.startService()
        url = self.origin.url("/files/hello.txt")
        first = await self.queue({"url": url})
        await self.waitFor(first["id"])
        second = await self.queue({"url": url})
        self.assertNotEqual(first["id"], second["id"])
        done = await self.waitFor(second["id"])
        self.assertEqual(done["state"], "done", done)
        self.assertNotEqual(done["path"], "hello.txt")
        self.assertEqual((self.directory / done["path"]).read_bytes(), HELLO)
        self.assertEqual((self.directory / "hello.txt").read_bytes(), HELLO)

    async def test_unknownIdIs404(self) -> None:
        self.startService()
        body = await self.assertError(404, "GET", "/12345")
        self.assertIn("12345", body["error"])

    async def test_notAJSONObjectIs400(self) -> None:
        self.startService()
        for document in (b"not json", b'{"url": ', b"[]", b'["http://example.com/"]', b'"http://example.com/"', b"", b"null"):
            await self.assertError(400, "POST", document=document)
        self.assertEqual(await self.listed(), [])

    async def test_badFieldsAre400(self) -> None:
        self.startService()
        url = self.origin.url("/files/hello.txt")
        cases = [
            ({}, "url"),
            ({"name": "x"}, "url"),
            ({"url": None}, "url"),
            ({"url": 42}, "url"),
            ({"url": ["http://example.com/"]}, "url"),
            ({"url": ""}, "url"),
            ({"url": "file:///etc/passwd"}, "file"),
            ({"url": "ftp://example.com/file"}, "ftp"),
            ({"url": "data:text/plain,hello"}, "data"),
            ({"url": "http:///no-host"}, "host"),
            # 8192 bytes at most, not characters: 2049 x 4 bytes is over.
            ({"url": "http://example.com/" + "\U0001d4b3" * 2049}, "'url' is longer than 8192 bytes"),
            ({"url": url, "headers": {}}, "'headers'"),
            ({"url": url, "overwrite": True}, "'overwrite'"),
            ({"url": url, "checksum": "sha256=1234"}, "sha256"),
            ({"url": url, "checksum": "crc99=00"}, "checksum"),
            ({"url": url, "checksum": 7}, "checksum"),
            ({"url": url, "name": "..."}, "name"),
            ({"url": url, "name": ""}, "name"),
            ({"url": url, "name": "a/"}, "name"),
            ({"url": url, "name": 5}, "name"),
        ]
        for document, fragment in cases:
            body = await self.assertError(400, "POST", document=document)
            self.assertIn(fragment, body["error"], document)
        # What was sent is quoted cut short: the whole of it came back.
        for document in ({"url": url, "checksum": "sha256=" + "a" * 60_000}, {"k" * 60_000: 1, "url": url}):
            body = await self.assertError(400, "POST", document=document)
            self.assertLess(len(body["error"]), 300)
            self.assertIn("characters)", body["error"])
        self.assertEqual(await self.listed(), [])
        self.assertEqual(await self.files(), [])

    async def test_urlKeptAsItIsFetched(self) -> None:
        """
        A job's URL is kept and shown as it is fetched: white space around
        it dropped, backslashes before its query read as slashes.  One with
        C{\\@} was shown as another host's, its port hidden as a password.
        """
        self.startService()
        base = self.origin.url("")
        job = await self.queue({"url": f"  {base}\\@evil.example\\files\\hello.txt?x=\\ \n"})
        self.assertEqual(job["url"], f"{base}/@evil.example/files/hello.txt?x=\\")
        ended = await self.waitFor(job["id"])
        self.assertEqual(ended["url"], job["url"])

    async def test_wrongContentTypeIs415(self) -> None:
        self.startService()
        data = json.dumps({"url": self.origin.url("/files/hello.txt")}).encode()
        response, body = await self.post(data, headers={b"Content-Type": [b"image/png"]})
        self.assertEqual(response.code, 415, body)
        self.assertEqual(await self.listed(), [])
        # curl -d sends a form type: the body is JSON all the same; and
        # application/*+json is JSON (it was a 415).
        for kind in (b"application/x-www-form-urlencoded", b"application/vnd.example+json; charset=utf-8"):
            response, body = await self.post(data, headers={b"Content-Type": [kind]})
            self.assertEqual(response.code, 201, (kind, body))
            done = await self.waitFor(body["id"])
            self.assertEqual(done["state"], "done", done)

    async def test_retryingJobSaysWhy(self) -> None:
        """
        A job waiting to retry shows why its last attempt failed as its
        C{error} (it showed none); once cancelled, its error is gone.
        """
        self.startService()
        job = await self.queue({"url": self.origin.url("/busy.bin")})
        job = await self.waitFor(job["id"], lambda job: job["state"] == "retrying")
        self.assertIn("503", job["error"])
        response, job = await self.call("DELETE", "/" + job["id"])
        self.assertEqual((job["state"], job.get("error")), ("cancelled", None))

    async def test_bodyOver64KiBIs413(self) -> None:
        self.startService()
        padding = "x" * MAX_BODY
        document = json.dumps({"url": self.origin.url("/files/hello.txt?" + padding)}).encode()
        self.assertGreater(len(document), 64 * 1024)
        await self.assertError(413, "POST", document=document)
        self.assertEqual(await self.listed(), [])

    async def test_hostsNoResolverTakesAndPortZeroAre400(self) -> None:
        """
        A host name with an empty label, a label over 63 characters or over
        253 characters in all is refused at once (getaddrinfo would raise
        inside Twisted's resolver, which then never answers, and the job
        would hold a connection for minutes); so is port 0.
        """
        self.startService()
        for url in (
            "http://a..example/x",
            f"http://{'a' * 64}.example/x",
            "http://" + "a." * 127 + "a/x",
            "http://198.51.100.7:0/x",
            "http://example.com:0/x",
        ):
            await self.assertError(400, "POST", document={"url": url})
        self.assertEqual(await self.listed(), [])

    async def test_namesTwistedCannotConnectToAre400(self) -> None:
        """
        A host name IDNA 2008 refuses (Twisted cannot connect to it: the
        job failed after its retries), an IPv6 zone ID and an IPvFuture
        literal (C{[v1.x]}, which was looked up as the name C{v1.x}) are a
        400 at once, with nothing queued.
        """
        self.startService()
        for url, fragment in (
            ("http://a_b.example/x", "the host name 'a_b.example' is not a valid IDNA name"),
            ("http://u:secret@-a-.example/x", "http://u:***@-a-.example/x: the host name '-a-.example'"),
            ("http://[fe80::1%25eth0]/x", "an IPv6 zone ID"),
            ("http://u:secret@[v1.x]/x", "http://u:***@[v1.x]/x: [v1.x] is not an IPv6 address (an IPvFuture"),
        ):
            body = await self.assertError(400, "POST", document={"url": url})
            self.assertIn(fragment, body["error"])
            self.assertNotIn("secret", body["error"])
        self.assertEqual(await self.listed(), [])

    async def test_loneSurrogateIs400(self) -> None:
        """
        A URL holding a lone surrogate (JSON C{"\\ud800"}) in its path,
        query, password or host is a 400 saying it is not text, with nothing
        logged as a failure.  One standing for a byte that was not UTF-8
        (as a command line gives them) is still sent as that byte.
        """
        self.startService()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for url in (
            "http://198.51.100.7/\ud800",
            "http://198.51.100.7/x?\ud800",
            "http://u:\ud800@198.51.100.7/x",
            "http://\ud800.example/x",
        ):
            body = await self.assertError(400, "POST", document={"url": url})
            self.assertIn("not valid text", body["error"])
        self.assertEqual([formatEvent(e) for e in events if "log_failure" in e], [])
        self.assertEqual(await self.listed(), [])
        job = await self.queue({"url": self.origin.url("/files/hello.txt?caf\udce9")})
        ended = await self.waitFor(job["id"])
        self.assertEqual(ended["state"], "done", ended)

    async def test_literalRefusedAddressIs403AtOnce(self) -> None:
        """
        A URL whose host is an address the rules refuse is a 403 at once,
        and no job.
        """
        self.startService()
        for url in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://0.0.0.0/"):
            body = await self.assertError(403, "POST", document={"url": url})
            self.assertIn("refused", body["error"])
        self.assertEqual(await self.listed(), [])

    async def test_loopbackLiteralRefusedByDefaultRules(self) -> None:
        """
        Without C{allowLoopback}, a literal loopback address (written as
        IPv4 or IPv4-mapped IPv6) is refused at once.
        """
        self.startService(rules=ProxyRules())
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"):
            body = await self.assertError(403, "POST", document={"url": self.origin.url("/slow.bin", host)})
            self.assertIn("loopback", body["error"])
        # Other forms the resolver reads as the address (they were queued,
        # then failed as refused when connecting).
        for host in ("127.1", "0x7f.1", "2130706433", "017700000001", "\uff11\uff12\uff17.0.0.1", "127\u30020\u30020\u30021"):
            body = await self.assertError(403, "POST", document={"url": self.origin.url("/slow.bin", host)})
            self.assertIn("the destination 127.0.0.1 is a loopback address", body["error"])
        self.assertEqual(await self.listed(), [])
        self.assertEqual(self.origin.slow.ranges, [])

    async def test_nameResolvingToLoopbackFails(self) -> None:
        """
        A host name that resolves to loopback is queued (names are checked
        when they are resolved) and then fails as refused; the origin sees
        no request and no file is made.
        """
        self.startService(rules=ProxyRules())
        job = await self.queue({"url": self.origin.url("/slow.bin", "localhost")})
        failed = await self.waitFor(job["id"])
        self.assertEqual(failed["state"], "failed", failed)
        self.assertIn("refused", failed["error"])
        self.assertIn("loopback", failed["error"])
        self.assertEqual(self.origin.slow.ranges, [])
        self.assertEqual(await self.files(), [JOBS_FILE])
        [listed] = await self.listed()
        self.assertEqual(listed["state"], "failed")

    async def test_matchingChecksumIsDone(self) -> None:
        self.startService()
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "checksum": "sha256=" + sha256(HELLO)})
        self.assertEqual(job["checksum"], "sha256=" + sha256(HELLO))
        done = await self.waitFor(job["id"])
        self.assertEqual(done["state"], "done", done)
        self.assertEqual((self.directory / "hello.txt").read_bytes(), HELLO)

    async def test_mismatchingChecksumFailsWithoutFile(self) -> None:
        self.startService()
        wrong = sha256(b"something else")
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "checksum": "sha256=" + wrong})
        failed = await self.waitFor(job["id"])
        self.assertEqual(failed["state"], "failed", failed)
        self.assertIn("checksum", failed["error"])
        self.assertFalse((self.directory / "hello.txt").exists())
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_hostileNameStaysInside(self) -> None:
        """
        A name with directories lands as a plain file in the download
        directory; a name like the job list's does not replace it.
        """
        service = self.startService()
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "name": "../../etc/passwd"})
        done = await self.waitFor(job["id"])
        self.assertEqual(done["state"], "done", done)
        self.assertEqual(done["path"], "passwd")
        self.assertEqual((self.directory / "passwd").read_bytes(), HELLO)
        self.assertFalse((self.directory.parent.parent / "etc").exists())
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "name": JOBS_FILE})
        done = await self.waitFor(job["id"])
        self.assertEqual(done["state"], "done", done)
        self.assertNotEqual(done["path"], JOBS_FILE)
        self.assertEqual((self.directory / done["path"]).read_bytes(), HELLO)
        saved = await self.savedJobs(service)
        self.assertEqual([j["id"] for j in saved["jobs"]], ["1", "2"])

    async def test_deleteRunningJobCancels(self) -> None:
        """
        DELETE of a running job stops it and deletes its partial file; the
        answer shows the job as it ended, under the name it really had, and
        with no path (it showed the path of a file that never came to be).
        """
        service = self.startService()
        running = await self.runningSlowJob()
        self.assertEqual(running["state"], "running", running)
        self.assertEqual(running["size"], len(SLOW))
        self.assertEqual(running["path"], "slow.bin")
        self.assertIn("slow.bin.part", await self.files())
        response, body = await self.call("DELETE", "/" + running["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body["state"], "cancelled", body)
        self.assertEqual((body["name"], body["path"], body["size"]), ("slow.bin", None, len(SLOW)), body)
        await self.origin.slow.dropped  # the transfer really stopped
        self.assertEqual(await self.files(), [JOBS_FILE])
        self.assertEqual(await self.listed(), [])
        await self.assertError(404, "GET", "/" + running["id"])
        saved = await self.savedJobs(service)
        self.assertEqual(saved["jobs"], [])
        # Nothing comes back a moment later (a late state save, say).
        await deferLater(reactor, 1.2, lambda: None)
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_deleteJobWaitingForResponseCancels(self) -> None:
        """
        A job cancelled while its request waits for the response head stops
        for good: no retry reaches the origin later, and no C{.part} file
        appears.
        """
        self.startService(settings=QUICK_RETRY)
        job = await self.queue({"url": self.origin.url("/silent.bin")})
        await self.origin.silent.arrived
        response, body = await self.call("DELETE", "/" + job["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body["state"], "cancelled", body)
        await self.origin.silent.dropped
        await deferLater(reactor, RETRY_WINDOW, lambda: None)
        self.assertEqual(
            (self.origin.silent.count, await self.files()),
            (1, [JOBS_FILE]),
            "the cancelled download asked again and wrote files",
        )

    async def test_deleteFinishedJobKeepsFile(self) -> None:
        self.startService()
        job = await self.queue({"url": self.origin.url("/files/hello.txt")})
        await self.waitFor(job["id"])
        response, body = await self.call("DELETE", "/" + job["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body["state"], "done", body)
        self.assertEqual(await self.listed(), [])
        self.assertEqual((self.directory / "hello.txt").read_bytes(), HELLO)
        await self.assertError(404, "DELETE", "/" + job["id"])

    async def test_givenNameShownBeforeTheFirstAnswer(self) -> None:
        """
        A job queued with a name shows it while it waits for the origin's
        answer (it showed null until the engine chose one).
        """
        self.startService()
        job = await self.queue({"url": self.origin.url("/silent.bin"), "name": "given.bin"})
        self.assertEqual(job["name"], "given.bin")
        await self.origin.silent.arrived
        response, body = await self.call("GET", "/" + job["id"])
        self.assertEqual(body["name"], "given.bin", body)

    async def test_reservedNameShownAsSaved(self) -> None:
        """
        A name ending like the downloader's own files (C{x.part}) is shown
        as it will be saved, C{x.part_}, from the start: the answer to the
        POST showed C{x.part}.
        """
        self.startService()
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "name": "x.part"})
        self.assertEqual(job["name"], "x.part_")
        done = await self.waitFor(job["id"])
        self.assertEqual((done["name"], done["path"]), ("x.part_", "x.part_"), done)
        self.assertEqual((self.directory / "x.part_").read_bytes(), HELLO)
        # One at the longest a name may be: still within it, the same.
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "name": "a" * 195 + ".part"})
        self.assertEqual(job["name"], "a" * 194 + ".part_")
        done = await self.waitFor(job["id"])
        self.assertEqual((done["name"], done["path"]), (job["name"], job["name"]), done)

    async def test_failedJobKeepsItsPartUntilDeleted(self) -> None:
        """
        A job that fails after writing bytes shows the name it was saved
        under, and its C{.part} stays (a new job for the URL resumes it);
        DELETE of the failed job deletes that C{.part} and its state file
        (the client could neither see nor remove them), also when its URL
        holds credentials (which its state file does not).
        """
        self.startService(settings=DownloadSettings(stallTimeout=0.3, retries=0))
        job = await self.queue({"url": self.origin.url("/slow.bin", "user:secret@127.0.0.1")})
        failed = await self.waitFor(job["id"])
        self.assertEqual(failed["state"], "failed", failed)
        self.assertEqual(failed["name"], "slow.bin", failed)
        self.assertEqual(await self.files(), [JOBS_FILE, "slow.bin.part", "slow.bin.part.json"])
        # Its file is closed in a thread (the last close frees a large
        # file's blocks, which held the reactor 0.5 s for 1.5 GB).
        inThreads: list = []
        callInThread = reactor.callInThread
        self.patch(reactor, "callInThread", lambda f, *a, **kw: inThreads.append(f) or callInThread(f, *a, **kw))
        response, body = await self.call("DELETE", "/" + job["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body["state"], "failed", body)
        self.assertEqual(await self.files(), [JOBS_FILE])
        self.assertIn(os.close, inThreads)

    async def test_failedJobResumedByANewJob(self) -> None:
        """
        A new job for the URL of a failed one resumes the C{.part} it left.
        """
        self.startService(settings=DownloadSettings(stallTimeout=0.3, retries=0))
        job = await self.queue({"url": self.origin.url("/slow.bin")})
        self.assertEqual((await self.waitFor(job["id"]))["state"], "failed")
        again = await self.queue({"url": self.origin.url("/slow.bin")})
        done = await self.waitFor(again["id"])
        self.assertEqual((done["state"], done["path"]), ("done", "slow.bin"), done)
        self.assertEqual((self.directory / "slow.bin").read_bytes(), SLOW)
        self.assertTrue(self.origin.slow.ranges[-1].startswith(b"bytes=%d-" % (HOLD_AFTER,)))

    async def test_deletingAFailedJobKeepsAPartResumedSince(self) -> None:
        """
        DELETE of a failed job leaves its C{.part} alone once a later job of
        the URL has resumed it (and failed too): it deleted that job's
        bytes.  DELETE of the later job deletes it.
        """
        self.startService(settings=DownloadSettings(stallTimeout=0.3, retries=0))
        self.origin.slow.holds = 2
        first = await self.queue({"url": self.origin.url("/slow.bin")})
        self.assertEqual((await self.waitFor(first["id"]))["state"], "failed")
        second = await self.queue({"url": self.origin.url("/slow.bin")})
        failed = await self.waitFor(second["id"])
        self.assertEqual((failed["state"], failed["done"]), ("failed", 2 * HOLD_AFTER), failed)
        response, body = await self.call("DELETE", "/" + first["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(await self.files(), [JOBS_FILE, "slow.bin.part", "slow.bin.part.json"])
        self.assertEqual(os.path.getsize(self.directory / "slow.bin.part"), 2 * HOLD_AFTER)
        response, body = await self.call("DELETE", "/" + second["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_deletingAFailedJobKeepsAnotherURLsPart(self) -> None:
        """
        A failed job whose download deleted its C{.part} (its checksum did
        not match) no longer names it, and DELETE of it leaves alone the
        C{.part} of that name another URL's job has left since: it deleted
        it, and the other job could resume nothing.
        """
        service = self.startService(settings=DownloadSettings(stallTimeout=0.3, retries=0))
        wrong = "sha256=" + sha256(b"something else")
        first = await self.queue({"url": self.origin.url("/files/hello.txt"), "name": "shared", "checksum": wrong})
        self.assertEqual((await self.waitFor(first["id"]))["state"], "failed")
        [saved] = (await self.savedJobs(service))["jobs"]
        self.assertNotIn("part", saved)
        second = await self.queue({"url": self.origin.url("/slow.bin"), "name": "shared"})
        self.assertEqual((await self.waitFor(second["id"]))["state"], "failed")
        self.assertEqual(await self.files(), [JOBS_FILE, "shared.part", "shared.part.json"])
        response, body = await self.call("DELETE", "/" + first["id"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(await self.files(), [JOBS_FILE, "shared.part", "shared.part.json"])
        response, body = await self.call("DELETE", "/" + second["id"])
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_deleteUnknownIs404(self) -> None:
        self.startService()
        body = await self.assertError(404, "DELETE", "/99")
        self.assertIn("99", body["error"])


class ListingTests(ServiceTestCase):
    """
    C{GET /api/downloads} answers a page at a time: C{?limit=} jobs (100
    unless asked), those after job C{?after=}, in C{?state=} states; the
    answer's C{next} (and its C{Link} header) is the next page's path.
    """

    async def queueDone(self, count: int, url: Optional[str] = None) -> list[str]:
        """
        Queue C{count} downloads of C{url} (C{hello.txt} by default) and
        wait until each is done; return their ids.
        """
        ids = []
        for number in range(count):
            job = await self.queue({"url": url or self.origin.url("/files/hello.txt"), "name": f"h{number}.txt"})
            ids.append(job["id"])
        for jobId in ids:
            self.assertEqual((await self.waitFor(jobId))["state"], "done")
        return ids

    async def test_pagesFollowNextToTheEnd(self) -> None:
        self.startService()
        ids = await self.queueDone(5)
        seen = []
        path = "?limit=2"
        pages = 0
        while path is not None:
            response, body = await self.call("GET", path)
            self.assertEqual(response.code, 200, body)
            self.assertLessEqual(len(body["downloads"]), 2)
            seen += [job["id"] for job in body["downloads"]]
            following = body["next"]
            if following is None:
                self.assertIsNone(response.headers.getRawHeaders(b"Link"))
                path = None
            else:
                self.assertEqual(
                    response.headers.getRawHeaders(b"Link"), [b'<%s>; rel="next"' % following.encode("ascii")]
                )
                self.assertTrue(following.startswith("/api/downloads?"), following)
                path = following[len("/api/downloads") :]
            pages += 1
        self.assertEqual(seen, ids)
        self.assertEqual(pages, 3)

    async def test_nextIsAPathOnThisHost(self) -> None:
        """
        The list asked for as C{//api/downloads} (which reaches it) gives
        C{next} as C{/api/downloads?...}: it was C{//api/downloads?...}, a
        network-path reference to the host C{api}, where a client paging
        on would send its token.
        """
        self.startService()
        await self.queueDone(2)
        for path in ("//api/downloads", "///api/downloads"):
            response = await self.client.get(self.root + path + "?limit=1", headers=self.auth())
            body = json.loads(await treq.content(response))
            self.assertEqual(response.code, 200, body)
            following = body["next"]
            self.assertTrue(following.startswith("/api/downloads?after="), following)
            self.assertEqual(response.headers.getRawHeaders(b"Link"), [b'<%s>; rel="next"' % following.encode("ascii")])
            self.assertEqual(urljoin(self.root + path, following), self.base + following[len("/api/downloads") :])

    async def test_pageHoldsAtMostMaxPageBytes(self) -> None:
        """
        A page holds no more than L{MAX_PAGE_BYTES} of jobs, however many
        C{?limit=} asks for (one job at least); C{next} goes on from there.
        """
        self.patch(serviceModule, "MAX_PAGE_BYTES", 2500)
        self.startService()
        ids = await self.queueDone(5, self.origin.url("/files/hello.txt") + "?" + "q" * 900)
        seen, path, sizes = [], "?limit=100", []
        while path is not None:
            response, body = await self.call("GET", path)
            self.assertEqual(response.code, 200, body)
            sizes.append(len(body["downloads"]))
            seen += [job["id"] for job in body["downloads"]]
            path = body["next"] and body["next"][len("/api/downloads") :]
        self.assertEqual(seen, ids)
        self.assertEqual(sizes, [2, 2, 1])
        self.patch(serviceModule, "MAX_PAGE_BYTES", 10)
        response, body = await self.call("GET", "?limit=100")
        self.assertEqual([job["id"] for job in body["downloads"]], ids[:1])

    async def test_pageEncodesEachJobOnce(self) -> None:
        """
        A page's jobs are encoded once each, as its size is measured, and
        sent as they were encoded (they were encoded again with the page):
        the body is the JSON of the page, exactly.
        """
        self.startService()
        await self.queueDone(3)
        encoded: list[int] = []
        encoder = apiModule._ENCODER

        class Counting:
            def encode(self, value: Any) -> str:
                text = encoder.encode(value)
                encoded.append(len(text))
                return text

        self.patch(apiModule, "_ENCODER", Counting())
        response = await self.client.get(self.base, headers=self.auth())
        body = await treq.content(response)
        self.assertEqual(body, json.dumps(json.loads(body), ensure_ascii=False).encode("utf-8"))
        self.assertEqual(len(json.loads(body)["downloads"]), 3)
        self.assertEqual(len(encoded), 4)  # the 3 jobs, then "next"
        self.assertLessEqual(sum(encoded), len(body))

    async def test_defaultPageSize(self) -> None:
        self.patch(serviceModule, "PAGE_SIZE", 3)
        self.startService()
        ids = await self.queueDone(4)
        response, body = await self.call("GET")
        self.assertEqual([job["id"] for job in body["downloads"]], ids[:3])
        self.assertEqual(body["next"], f"/api/downloads?after={ids[2]}&limit=3")

    async def test_stateFilterKeptOnEveryPage(self) -> None:
        self.startService()
        done = await self.queueDone(3)
        running = await self.runningSlowJob()
        self.assertEqual(running["state"], "running")
        response, body = await self.call("GET", "?state=running")
        self.assertEqual([job["id"] for job in body["downloads"]], [running["id"]])
        self.assertIsNone(body["next"])
        response, body = await self.call("GET", "?state=done,failed&limit=2")
        self.assertEqual([job["id"] for job in body["downloads"]], done[:2])
        self.assertEqual(body["next"], f"/api/downloads?after={done[1]}&limit=2&state=done%2Cfailed")
        response, body = await self.call("GET", body["next"][len("/api/downloads") :])
        self.assertEqual([job["id"] for job in body["downloads"]], done[2:])
        self.assertIsNone(body["next"])

    async def test_afterADeletedJob(self) -> None:
        """
        A page asked for after a job deleted since goes on with the jobs of
        higher numbers.
        """
        self.startService()
        ids = await self.queueDone(4)
        response, body = await self.call("DELETE", "/" + ids[1])
        self.assertEqual(response.code, 200, body)
        response, body = await self.call("GET", "?after=" + ids[1])
        self.assertEqual([job["id"] for job in body["downloads"]], ids[2:])
        response, body = await self.call("GET", "?after=999")
        self.assertEqual(body["downloads"], [])
        response, body = await self.call("GET", "?after=0")
        self.assertEqual([job["id"] for job in body["downloads"]], [ids[0], *ids[2:]])

    async def test_badParametersAre400(self) -> None:
        self.startService()
        for query, fragment in (
            ("?limit=0", "'limit'"),
            ("?limit=1001", "'limit'"),
            ("?limit=-1", "'limit'"),
            ("?limit=abc", "'limit'"),
            ("?limit=" + "9" * 5000, "'limit'"),
            ("?limit=%C2%B2", "'limit'"),
            ("?limit=1&limit=2", "once"),
            ("?state=bogus", "'bogus'"),
            ("?state=done,", "''"),
            ("?page=2", "'page'"),
            ("?after=nope", "'nope'"),
        ):
            body = await self.assertError(400, "GET", query)
            self.assertIn(fragment, body["error"], query)


class RestartTests(ServiceTestCase):
    """
    The job list survives a restart; unfinished jobs resume.
    """

    async def test_unfinishedJobResumesAfterRestart(self) -> None:
        first = self.startService()
        done = await self.queue({"url": self.origin.url("/files/hello.txt")})
        await self.waitFor(done["id"])
        running = await self.runningSlowJob()
        self.assertEqual(running["state"], "running", running)
        self.assertEqual(running["done"], HOLD_AFTER)
        self.assertEqual((running["path"], running["name"]), ("slow.bin", "slow.bin"))
        await first.stopService()
        await self.origin.slow.dropped
        saved = json.loads((self.directory / JOBS_FILE).read_text())
        self.assertEqual([(j["id"], j["state"]) for j in saved["jobs"]], [(done["id"], "done"), (running["id"], "queued")])
        self.assertEqual(
            await self.files(), [JOBS_FILE, "hello.txt", "slow.bin.part", "slow.bin.part.json"]
        )
        self.assertEqual((self.directory / "slow.bin.part").read_bytes()[:HOLD_AFTER], SLOW[:HOLD_AFTER])

        self.startService()
        finished = await self.waitFor(running["id"])
        self.assertEqual(finished["state"], "done", finished)
        self.assertEqual(finished["path"], "slow.bin")
        self.assertEqual(sha256((self.directory / "slow.bin").read_bytes()), sha256(SLOW))
        self.assertEqual(len(self.origin.slow.ranges), 2, self.origin.slow.ranges)
        self.assertEqual(self.origin.slow.ranges[0], b"bytes=0-")
        self.assertTrue(self.origin.slow.ranges[1].startswith(b"bytes=%d-" % (HOLD_AFTER,)), self.origin.slow.ranges)
        self.assertEqual(self.origin.slow.ifRanges[1], ETAG)
        self.assertEqual(await self.files(), [JOBS_FILE, "hello.txt", "slow.bin"])
        listed = {job["id"]: job for job in await self.listed()}
        self.assertEqual(listed[done["id"]]["state"], "done")
        self.assertEqual(listed[done["id"]]["path"], "hello.txt")
        # A new job does not reuse an old id.
        third = await self.queue({"url": self.origin.url("/files/hello.txt")})
        self.assertNotIn(third["id"], (done["id"], running["id"]))
        await self.waitFor(third["id"])

    async def test_stopWhileWaitingForResponseStopsForGood(self) -> None:
        """
        Stopping the service while a request waits for its response head
        leaves nothing running: no retry reaches the origin after the stop
        and no file appears; the job is still listed to resume.
        """
        first = self.startService(settings=QUICK_RETRY)
        job = await self.queue({"url": self.origin.url("/silent.bin")})
        await self.origin.silent.arrived
        await first.stopService()
        await self.origin.silent.dropped
        await deferLater(reactor, RETRY_WINDOW, lambda: None)
        self.assertEqual(
            (self.origin.silent.count, await self.files()),
            (1, [JOBS_FILE]),
            "the stopped service's download asked again and wrote files",
        )
        saved = json.loads((self.directory / JOBS_FILE).read_text())
        self.assertEqual([(j["id"], j["state"]) for j in saved["jobs"]], [(job["id"], "queued")])

    async def test_cancelledJobDoesNotComeBack(self) -> None:
        first = self.startService()
        running = await self.runningSlowJob()
        response, body = await self.call("DELETE", "/" + running["id"])
        self.assertEqual(response.code, 200, body)
        await first.stopService()
        self.startService()
        self.assertEqual(await self.listed(), [])
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(self.origin.slow.ranges), 1)
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_waitingJobForAnAddressNowRefusedFailsAtStart(self) -> None:
        """
        A waiting job of the job list whose host is an address the rules
        now refuse (they changed since it was queued), in any form the
        resolver reads as one, fails at start with the reason the API
        gives for a 403, with a warning, before any connection; a job for a
        name is started, as the API queues it.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        hosts = ("127.1", "0x7f.1", "[::1]")
        jobs = [{"id": str(n), "url": self.origin.url("/slow.bin", host), "state": "queued"} for n, host in enumerate(hosts, 1)]
        # A name is checked when it is resolved, as for the API.
        jobs.append({"id": "4", "url": self.origin.url("/slow.bin", "localhost"), "state": "queued"})
        (directory / JOBS_FILE).write_text(json.dumps({"version": 1, "jobs": jobs}))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.startService(directory, rules=ProxyRules(allowPrivate=True, allowLoopback=False))
        for n in "123":
            job = service.get(n)
            self.assertEqual(job["state"], "failed", job)
            self.assertIn("refused", job["error"])
            self.assertIn("is a loopback address", job["error"])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 3, warnings)
        self.assertIn("job 1: " + self.origin.url("/slow.bin", "127.1") + ": refused:", warnings[0])
        self.assertIn(service.get("4")["state"], ("queued", "running"))
        saved = await self.savedJobs(service)
        self.assertEqual([job["state"] for job in saved["jobs"][:3]], ["failed"] * 3)
        self.assertEqual(self.origin.slow.ranges, [])

    async def test_garbageJobListIsIgnoredWithWarning(self) -> None:
        for garbage in (b"\x00not json{", b'["a", "list"]', b'{"jobs": [1, {"id": 2}, {"id": "3", "url": "ftp://x/"}]}'):
            directory, events = await self.startOnJobList(garbage)
            if garbage.startswith(b'{"jobs"'):
                continue  # a job list whose entries are unusable: they are skipped
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1, [formatEvent(e) for e in events])
            self.assertIn(JOBS_FILE, warnings[0])
            # The service works all the same.
            job = await self.queue({"url": self.origin.url("/files/hello.txt")})
            self.assertEqual(job["id"], "1")
            await self.waitFor(job["id"])
            self.assertEqual((directory / "hello.txt").read_bytes(), HELLO)

    def plantedJobList(self) -> tuple[Path, bytes]:
        """
        A new directory holding a job list with one waiting job, and that
        list; the list will seem another user's to the service started
        next (as a list planted in a shared directory is).
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        jobs = [{"id": "7", "url": self.origin.url("/files/hello.txt"), "state": "queued", "name": "planted.txt"}]
        planted = json.dumps({"version": 1, "next": 8, "jobs": jobs}).encode("utf-8")
        (directory / JOBS_FILE).write_bytes(planted)
        uid = os.geteuid()
        self.patch(os, "geteuid", lambda: uid + 1)
        return directory, planted

    async def test_jobListOfAnotherUserIsNotRun(self) -> None:
        """
        A job list that belongs to another user (planted in a shared
        download directory) is not read, with one warning, and set aside
        where the directory lets this user rename it: its jobs ran, from
        this service's network position, their files readable by the
        planter.  The service works on with a list of its own.
        """
        directory, planted = self.plantedJobList()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.startService(directory)
        self.assertEqual(service.list(), [])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"ignoring the job list {directory / JOBS_FILE}: it belongs to another user; kept it as", warnings[0])
        [kept] = [name for name in os.listdir(directory) if name.startswith(JOBS_FILE + ".bad-")]
        self.assertEqual((directory / kept).read_bytes(), planted)
        self.patch(os, "geteuid", os.getuid)  # the new list is this user's
        job = await self.queue({"url": self.origin.url("/files/hello.txt")})
        self.assertEqual(job["id"], "1")  # the planted list's "next" is not taken either
        self.assertEqual((await self.waitFor(job["id"]))["state"], "done")
        self.assertFalse((directory / "planted.txt").exists())

    async def test_jobListOfAnotherUserThatCannotBeMoved(self) -> None:
        """
        Another user's job list in a sticky directory (C{/tmp}), which this
        user may neither rename nor replace, is left as it is; the warning
        says no job can be saved until it is removed, and so does each
        C{503} then (not only "Operation not permitted").
        """
        directory, planted = self.plantedJobList()

        def refused(source: Any, destination: Any) -> None:
            raise PermissionError(1, "Operation not permitted")

        self.patch(os, "rename", refused)
        self.patch(os, "replace", refused)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.startService(directory)
        self.assertEqual(service.list(), [])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(
            "it belongs to another user; it cannot be set aside (Operation not permitted): "
            "no job can be saved until it is removed",
            warnings[0],
        )
        body = await self.assertError(503, "POST", document={"url": self.origin.url("/files/hello.txt")})
        self.assertEqual(
            body["error"],
            "the download was not queued: cannot save the job list (Operation not permitted; "
            f"{JOBS_FILE} there belongs to another user: remove it)",
        )
        self.assertEqual((directory / JOBS_FILE).read_bytes(), planted)
        self.assertEqual(sorted(os.listdir(directory)), [JOBS_FILE])

    async def oneJobDone(self) -> tuple[Path, DownloadService, dict]:
        """
        Start a service in a new directory and have it download one file;
        return the directory, the service and the job, once its job list
        is written.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        service = self.startService(directory)
        job = await self.queue({"url": self.origin.url("/files/hello.txt")})
        await self.waitFor(job["id"])
        await self.written(service)
        return directory, service, job

    async def test_jobListIsPrivateAndAFailedSaveLeavesNoTemporary(self) -> None:
        """
        The job list is readable by its owner only.  When it cannot be
        saved, the service warns, keeps working, and leaves no temporary
        file behind.
        """
        directory, service, job = await self.oneJobDone()
        self.assertEqual(stat.S_IMODE(os.stat(directory / JOBS_FILE).st_mode), 0o600)

        (directory / JOBS_FILE).unlink()
        (directory / JOBS_FILE).mkdir()  # nothing can be saved under that name now
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        response, body = await self.post({"url": self.origin.url("/files/hello.txt"), "name": "second.txt"})
        self.assertEqual(response.code, 503, body)
        self.assertEqual(body["error"], "the download was not queued: cannot save the job list (Is a directory)")
        self.assertEqual([shown["id"] for shown in await self.listed()], [job["id"]])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn(JOBS_FILE, warnings[0])
        self.assertEqual(warnings[1], "download 2 not queued: the job list could not be written")
        await self.written(service)
        self.assertEqual(sorted(os.listdir(directory)), [JOBS_FILE, "hello.txt"])

        (directory / JOBS_FILE).rmdir()
        job = await self.queue({"url": self.origin.url("/files/hello.txt"), "name": "second.txt"})
        self.assertEqual(job["id"], "3")
        self.assertEqual((await self.waitFor(job["id"]))["state"], "done")
        self.assertEqual((directory / "second.txt").read_bytes(), HELLO)
        self.assertEqual(await self.files(directory), [JOBS_FILE, "hello.txt", "second.txt"])

    async def test_errorsQuoteInputCutShort(self) -> None:
        """
        Error messages quote what was sent cut short, as the README says
        (60 characters; a URL 200): they quoted whole ids, parameters and
        URLs of 7 to 8 KB.
        """
        self.startService(Path(self.mktemp()))
        long = "9" * 7000
        for path, fragment in [
            ("/" + long, "no download with id '9999"),
            ("?x" + long + "=1", "unknown parameter 'x999"),
            ("?state=x" + long, "no state 'x999"),
            ("?after=x" + long, "no download with id 'x999"),
        ]:
            response, body = await self.call("GET", path)
            self.assertIn(fragment, body["error"])
            self.assertLess(len(body["error"]), 300, path[:20])
        response, body = await self.post({"url": "http://169.254.169.254/" + "p" * 8000})
        self.assertLess(len(body["error"]), 400)
        self.assertIn("(8023 characters): refused", body["error"])
        response, body = await self.post({"url": "ftp://user:pw@x/" + "p" * 8000})
        self.assertEqual(response.code, 400)
        self.assertLess(len(body["error"]), 400)

    async def test_failedSaveTriedAgain(self) -> None:
        """
        A job list that could not be saved is saved again once it can be,
        at growing intervals (from 1 s), with nothing else changing: a
        DELETE answered while the disk was full came undone in a crash
        once the disk had room again.  The DELETE is answered once it is
        saved.  One warning, and a line when it is saved again.
        """
        directory, service, job = await self.oneJobDone()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        (directory / JOBS_FILE).unlink()
        (directory / JOBS_FILE).mkdir()  # nothing can be saved under that name now
        deleting = defer.ensureDeferred(self.call("DELETE", "/" + job["id"]))
        await deferLater(reactor, 2.5, lambda: None)  # tried again at 1 s and 3 s
        self.assertGreaterEqual(service._saveFailures, 2)
        # Answered once the list saying so is on the disk, not before.
        self.assertNoResult(deleting)
        (directory / JOBS_FILE).rmdir()
        response, deleted = await deleting
        self.assertEqual((response.code, deleted["id"]), (200, job["id"]))
        self.assertTrue((directory / JOBS_FILE).is_file())
        await self.written(service)
        with open(directory / JOBS_FILE) as f:
            self.assertEqual(json.load(f)["jobs"], [])
        logged = [formatEvent(e) for e in events if "job list" in formatEvent(e)]
        self.assertEqual(len(logged), 2, logged)
        self.assertIn("cannot save the job list", logged[0])
        self.assertIn("is saved again", logged[1])
        # Days of failures in a row (2**2000 seconds overflowed a float, and
        # no retry came after it) still give a wait of at most a minute.
        service._saveFailures = 2000
        service._written(([], "No space left on device"), [], service.reactor.seconds())
        self.assertLessEqual(service._nextSave - service.reactor.seconds(), 60)
        service._saveCall.cancel()
        service._saveFailures, service._dirty = 0, False

    async def test_plantedLinkAtTheJobListTemporaryIsNotFollowed(self) -> None:
        """
        A symbolic link planted where the job list's temporary copy goes is
        replaced, never written through.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        victim = Path(self.mktemp())
        victim.write_bytes(b"precious\n")
        os.symlink(victim.resolve(), directory / (JOBS_FILE + ".tmp"))
        self.startService(directory)
        job = await self.queue({"url": self.origin.url("/files/hello.txt")})
        await self.waitFor(job["id"])
        self.assertEqual(victim.read_bytes(), b"precious\n")
        self.assertEqual(await self.files(directory), [JOBS_FILE, "hello.txt"])
        self.assertEqual(json.loads((directory / JOBS_FILE).read_text())["jobs"][0]["id"], job["id"])

    async def test_fifoOrLinkAsJobListIsIgnoredWithWarning(self) -> None:
        """
        A FIFO under the job list's name (a plain open would wait for a
        writer for ever) or a link to a device without end is ignored with
        a warning; the service starts and works.
        """
        for plant, why in ((os.mkfifo, "not a regular file"), (lambda p: os.symlink("/dev/zero", p), "symbolic links")):
            directory = Path(self.mktemp())
            directory.mkdir()
            plant(directory / JOBS_FILE)
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            service = self.startService(directory)
            self.assertTrue(service.running)
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1, warnings)
            self.assertIn(why, warnings[0])
            self.assertEqual(await self.listed(), [])
            await service.stopService()

    async def test_jobWhoseNameWasTakenResumesItsOwnPart(self) -> None:
        """
        A job whose name is taken writes C{NAME.1.part}.  The job list
        names that file as soon as it is chosen, so after a restart, even
        one without a clean stop (the job list as it was while the job
        ran), the job resumes it, instead of starting over as C{NAME.2} and
        leaving C{NAME.1.part} behind for ever.
        """
        self.directory.mkdir(parents=True)
        (self.directory / "slow.bin").write_bytes(b"an older file\n")
        first = self.startService()
        job = await self.queue({"url": self.origin.url("/slow.bin"), "name": "slow.bin"})
        running = await self.waitFor(job["id"], lambda job: job["done"] >= HOLD_AFTER or job["state"] in FINISHED)
        self.assertEqual((running["state"], running["name"]), ("running", "slow.bin.1"), running)
        await self.written(first)
        whileRunning = (self.directory / JOBS_FILE).read_bytes()
        self.assertNotIn("part", running)  # only the job list keeps it
        await first.stopService()
        await self.origin.slow.dropped
        (self.directory / JOBS_FILE).write_bytes(whileRunning)

        self.startService()
        finished = await self.waitFor(job["id"])
        self.assertEqual((finished["state"], finished["path"]), ("done", "slow.bin.1"), finished)
        self.assertEqual(sha256((self.directory / "slow.bin.1").read_bytes()), sha256(SLOW))
        self.assertEqual(await self.files(), [JOBS_FILE, "slow.bin", "slow.bin.1"])
        self.assertEqual(len(self.origin.slow.ranges), 2, self.origin.slow.ranges)
        self.assertTrue(self.origin.slow.ranges[1].startswith(b"bytes=%d-" % (HOLD_AFTER,)), self.origin.slow.ranges)

    async def test_damagedJobListNeitherStopsNorBreaksTheService(self) -> None:
        """
        An old, hand-edited or damaged job list never stops the service
        from starting nor breaks C{GET}: a job lacking fields it can do
        without gets their defaults; one that cannot be used is skipped with
        a warning each, and the list as it was is kept aside as
        C{JOBS_FILE.bad-TIMESTAMP}.
        """
        url = self.origin.url("/files/hello.txt")
        jobs = [
            {"id": "1", "url": url, "state": "queued"},
            {"id": "2", "url": url, "state": "done", "name": "old.txt", "path": "old.txt", "size": "big"},
            {"id": "\u00b2", "url": url, "state": "failed", "error": "gone"},
            {"id": "4", "url": url, "state": "queued", "checksum": 5},
            {"id": "5", "url": 7, "state": "queued"},
            {"id": "6", "url": url, "state": "queued", "name": ["x"]},
            {"id": "7", "url": "http://a..example/x", "state": "queued"},
            {"id": "1", "url": url, "state": "done"},
            "not a job",
        ]
        self.directory.mkdir(parents=True)
        planted = json.dumps({"version": 1, "jobs": jobs}).encode()
        (self.directory / JOBS_FILE).write_bytes(planted)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = self.startService()
        self.assertTrue(service.running)
        listed = {job["id"]: job for job in await self.listed()}
        self.assertEqual(sorted(listed), ["1", "2", "\u00b2"])
        self.assertEqual((listed["2"]["state"], listed["2"]["checksum"], listed["2"]["size"]), ("done", None, None))
        self.assertEqual((await self.waitFor("1"))["state"], "done")
        self.assertEqual((self.directory / "hello.txt").read_bytes(), HELLO)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 7, warnings)
        self.assertTrue(all(JOBS_FILE in warning for warning in warnings), warnings)
        self.assertEqual([formatEvent(e) for e in events if "log_failure" in e], [])
        [bad] = [name for name in await self.files() if name.startswith(JOBS_FILE + ".bad-")]
        self.assertIn(f"kept it as {bad}", warnings[-1])
        self.assertEqual((self.directory / bad).read_bytes(), planted)
        saved = await self.savedJobs(service)
        self.assertEqual([job["id"] for job in saved["jobs"]], ["1", "2", "\u00b2"])
        # A new job gets the next number.
        self.assertEqual((await self.queue({"url": url}))["id"], "3")

    async def test_unreadableJobListIsKeptAside(self) -> None:
        """
        A job list that cannot be read at all (cut short, nested too deeply
        for the parser, not UTF-8) is renamed to C{JOBS_FILE.bad-TIMESTAMP}
        with one warning, so that the next save does not overwrite it; the
        service starts empty and works, giving no id the list shows again.
        """
        for planted in (b'{"version": 1, "jobs": [{"id": "1", ', b"[" * 100_000, b"\xff\xfe"):
            directory, events = await self.startOnJobList(planted)
            service = self.service
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1, warnings)
            [bad] = [name for name in await self.files(directory) if name.startswith(JOBS_FILE + ".bad-")]
            self.assertIn(f"ignoring the unreadable job list {directory / JOBS_FILE}", warnings[0])
            self.assertIn(f"kept it as {bad}", warnings[0])
            self.assertEqual((directory / bad).read_bytes(), planted)
            job = await self.queue({"url": self.origin.url("/files/hello.txt")})
            await self.waitFor(job["id"])
            await service.stopService()
            self.assertEqual((directory / bad).read_bytes(), planted)
            following = "2" if b'"id": "1"' in planted else "1"
            self.assertEqual([j["id"] for j in json.loads((directory / JOBS_FILE).read_text())["jobs"]], [following])

    async def test_idsAreNotReusedAfterRestart(self) -> None:
        """
        Ids of jobs that were deleted are not given again after a restart:
        the job list keeps the next id.
        """
        first = self.startService()
        ids = []
        for _ in range(3):
            job = await self.queue({"url": self.origin.url("/files/hello.txt")})
            await self.waitFor(job["id"])
            response, body = await self.call("DELETE", "/" + job["id"])
            self.assertEqual(response.code, 200, body)
            ids.append(job["id"])
        await first.stopService()
        self.startService()
        job = await self.queue({"url": self.origin.url("/files/hello.txt")})
        self.assertNotIn(job["id"], ids)
        self.assertEqual(job["id"], "4")
        await self.waitFor(job["id"])

    async def test_jobListWrittenInAThread(self) -> None:
        """
        The job list is written in a thread, so the API answers while a
        long write is under way (the reactor waited for it); a POST is
        answered once the list holding its job is written, and the job is
        neither shown nor started before; stopping waits for a write under
        way and writes last.
        """
        threads: list[threading.Thread] = []
        started = threading.Event()
        release = self.stuckDisk(saveTimeout=None, started=started, threads=threads)
        service = self.startService()

        async def waitForWrite() -> None:
            while not started.is_set():
                await deferLater(reactor, 0.01, lambda: None)
            started.clear()

        posting = defer.ensureDeferred(self.post({"url": self.origin.url("/files/hello.txt"), "name": "first.txt"}))
        await waitForWrite()
        self.assertEqual(await self.listed(), [])
        self.assertNoResult(posting)
        self.assertEqual(listing(self.directory), [])
        self.assertIsNot(threads[0], threading.main_thread())
        release.set()
        response, first = await posting
        self.assertEqual(response.code, 201, first)
        self.assertEqual(json.loads(service.jobsFile.read_text())["jobs"][0]["id"], first["id"])
        await self.waitFor(first["id"])
        await self.written(service)

        release.clear()
        started.clear()
        posting = defer.ensureDeferred(self.post({"url": self.origin.url("/files/hello.txt"), "name": "second.txt"}))
        await waitForWrite()
        stopped = service.stopService()
        await deferLater(reactor, 0.1, lambda: None)
        self.assertNoResult(stopped)
        release.set()
        await stopped
        response, second = await posting
        self.assertEqual(response.code, 201, second)
        saved = json.loads(service.jobsFile.read_text())
        self.assertEqual([job["id"] for job in saved["jobs"]], [first["id"], second["id"]])
        self.assertEqual([job["state"] for job in saved["jobs"]], ["done", "queued"])
        self.assertNotIn(threading.main_thread(), threads)

    def stuckDisk(
        self,
        saveTimeout: float | None = 0.3,
        started: threading.Event | None = None,
        threads: list[threading.Thread] | None = None,
    ) -> threading.Event:
        """
        Make every write of the job list wait, in its thread, until the
        event returned is set.

        @param saveTimeout: what C{SAVE_TIMEOUT} is made, or L{None} to
            leave it.
        @param started: set as each write starts.
        @param threads: the thread of each write is added to it.
        """
        release = threading.Event()
        write = serviceModule.writeAtomically

        def stuck(path: Path, data: bytes, mode: int = 0o666, sync: bool = False) -> None:
            if threads is not None:
                threads.append(threading.current_thread())
            if started is not None:
                started.set()
            release.wait(10)
            write(path, data, mode, sync)

        self.patch(serviceModule, "writeAtomically", stuck)
        if saveTimeout is not None:
            self.patch(serviceModule, "SAVE_TIMEOUT", saveTimeout)
        self.addCleanup(release.set)
        return release

    async def test_stuckDiskAnswered202(self) -> None:
        """
        A POST whose job list write has not ended after C{SAVE_TIMEOUT} is
        answered C{202} with the job (it was held as long as the disk);
        the job is shown from then on, and starts once the write ends.
        """
        release = self.stuckDisk()
        service = self.startService()
        response, job = await self.post({"url": self.origin.url("/files/hello.txt"), "name": "late.txt"})
        self.assertEqual(response.code, 202, job)
        self.assertEqual(response.headers.getRawHeaders(b"Location"), [b"/api/downloads/" + job["id"].encode()])
        self.assertEqual(job["state"], "queued")
        self.assertEqual((await self.waitFor(job["id"], lambda job: True))["state"], "queued")
        self.assertEqual([shown["id"] for shown in await self.listed()], [job["id"]])
        self.assertEqual(listing(self.directory), [])
        release.set()
        self.assertEqual((await self.waitFor(job["id"]))["state"], "done")
        self.assertEqual((self.directory / "late.txt").read_bytes(), HELLO)
        await self.written(service)
        self.assertEqual(json.loads(service.jobsFile.read_text())["jobs"][0]["state"], "done")

    async def test_stuckDiskThenFailedWrite(self) -> None:
        """
        A job answered C{202} whose write then fails is kept as failed,
        saying why, and written as such once the list can be.
        """
        release = self.stuckDisk()
        service = self.startService()
        response, job = await self.post({"url": self.origin.url("/files/hello.txt")})
        self.assertEqual(response.code, 202, job)
        service.jobsFile.mkdir()  # the write under way fails
        release.set()
        failed = await self.waitFor(job["id"])
        self.assertEqual(failed["state"], "failed")
        self.assertEqual(failed["error"], "not queued: cannot save the job list (Is a directory)")
        service.jobsFile.rmdir()
        # This write waits as long as the last took (SAVE_PAUSE).
        self.patch(serviceModule, "SAVE_TIMEOUT", 30.0)
        response, other = await self.post({"url": self.origin.url("/files/hello.txt"), "name": "other.txt"})
        self.assertEqual(response.code, 201, other)
        await self.waitFor(other["id"])
        await self.written(service)
        saved = json.loads(service.jobsFile.read_text())["jobs"]
        self.assertEqual([(j["id"], j["state"]) for j in saved], [(job["id"], "failed"), (other["id"], "done")])
        self.assertEqual(await self.files(), [JOBS_FILE, "other.txt"])

    async def test_stuckDiskThenDelete(self) -> None:
        """
        A job answered C{202} and deleted before its write ends is
        cancelled: it never starts, and the list says so.
        """
        release = self.stuckDisk()
        service = self.startService()
        response, job = await self.post({"url": self.origin.url("/files/hello.txt")})
        self.assertEqual(response.code, 202, job)
        response, cancelled = await self.call("DELETE", "/" + job["id"])
        self.assertEqual(response.code, 202, cancelled)  # not on the disk yet either
        self.assertEqual(cancelled["state"], "cancelled")
        release.set()
        await self.written(service)
        await deferLater(reactor, 0.1, lambda: None)  # time to start, were it to
        self.assertEqual((await self.waitFor(job["id"]))["state"], "cancelled")
        await self.written(service)
        self.assertEqual(json.loads(service.jobsFile.read_text())["jobs"][0]["state"], "cancelled")
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_stuckDiskThenDeleteTwice(self) -> None:
        """
        A job answered C{202}, then cancelled, and deleted again before its
        write ends is forgotten, as a finished job is: not shown at once,
        and gone from the list once the write ends.
        """
        release = self.stuckDisk()
        service = self.startService()
        response, job = await self.post({"url": self.origin.url("/files/hello.txt")})
        self.assertEqual(response.code, 202, job)
        await self.call("DELETE", "/" + job["id"])
        response, forgotten = await self.call("DELETE", "/" + job["id"])
        self.assertEqual(response.code, 202, forgotten)
        self.assertEqual(forgotten["state"], "cancelled")
        response, body = await self.call("GET", "/" + job["id"])
        self.assertEqual(response.code, 404, body)
        self.assertEqual(await self.listed(), [])
        response, body = await self.call("DELETE", "/" + job["id"])
        self.assertEqual(response.code, 404, body)
        release.set()
        await self.written(service)
        await deferLater(reactor, 0.1, lambda: None)  # time to start, were it to
        await self.written(service)
        self.assertEqual(await self.listed(), [])
        self.assertEqual(json.loads(service.jobsFile.read_text())["jobs"], [])
        self.assertEqual(await self.files(), [JOBS_FILE])

    async def test_deleteAnsweredOnceSaved(self) -> None:
        """
        A C{DELETE} is answered once the job list without the job is on
        the disk, as a C{POST} once its job is: it was answered first, and
        a crash (C{kill -9}) right after the answer left the job listed as
        queued, so that it downloaded again from 0 (its C{.part} was gone)
        at the next start.  A disk that takes longer than C{SAVE_TIMEOUT}
        gets a C{202}, the job as it ended, and the list says so once the
        write ends.
        """
        service = self.startService()
        running = await self.runningSlowJob()
        await self.written(service)
        started = threading.Event()
        release = self.stuckDisk(saveTimeout=None, started=started)
        deleting = defer.ensureDeferred(self.call("DELETE", "/" + running["id"]))
        while not started.is_set():
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.1, lambda: None)  # time to answer, were it to
        self.assertNoResult(deleting)
        # What a crash now would leave (the write has not ended).
        saved = json.loads(service.jobsFile.read_text())["jobs"]
        self.assertEqual([(job["id"], job["state"]) for job in saved], [(running["id"], "queued")])
        release.set()
        response, deleted = await deleting
        self.assertEqual((response.code, deleted["state"]), (200, "cancelled"), deleted)
        self.assertEqual(json.loads(service.jobsFile.read_text())["jobs"], [])

        job = await self.queue({"url": self.origin.url("/files/hello.txt")})
        await self.waitFor(job["id"])
        await self.written(service)
        self.patch(serviceModule, "SAVE_TIMEOUT", 0.3)
        release.clear()
        started.clear()
        response, forgotten = await self.call("DELETE", "/" + job["id"])
        self.assertEqual((response.code, forgotten["state"]), (202, "done"), forgotten)
        self.assertTrue(started.is_set())
        self.assertEqual(service._savedWaiters + service._savingWaiters, [])  # no longer waited for
        self.assertEqual(len(json.loads(service.jobsFile.read_text())["jobs"]), 1)
        release.set()
        self.assertEqual((await self.savedJobs(service))["jobs"], [])

    async def test_stopWithNothingRunningIsQuickAndHarmless(self) -> None:
        service = self.startService()
        self.assertIsNone(await service.stopService())
        self.assertFalse(service.running)
        self.assertEqual(json.loads((self.directory / JOBS_FILE).read_text())["jobs"], [])
        self.assertIsNone(self.successResultOf(service.stopService()))
        never = DownloadService(Path(self.mktemp()), token=TOKEN)
        self.assertIsNone(self.successResultOf(never.stopService()))
        self.assertFalse(Path(never.directory).exists())
        # A stopped service queues nothing.
        response, body = await self.post({"url": self.origin.url("/files/hello.txt")})
        self.assertEqual(response.code, 503, body)


class TapOptionTests(SynchronousTestCase):
    """
    The download options of C{twistd netsuite}.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def assertRefused(self, args: list[str], *fragments: str) -> None:
        error = self.assertRaises(ConfigError, self.parse, *args)
        self.assertEqual(len(str(error).splitlines()), 1, str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_shortTokenRefused(self) -> None:
        self.assertRefused(["--api-token", "x" * 15], "--api-token", "16")
        self.assertRefused(["--api-token", "x" * 10 + " " + "y" * 10], "--api-token")

    def test_zeroConnectionsRefused(self) -> None:
        self.assertRefused(["--download-connections", "0"], "--download-connections")
        self.assertRefused(["--download-per-host", "0"], "--download-per-host")
        self.assertRefused(["--download-segments", "0"], "--download-segments")

    def test_optionsReachTheService(self) -> None:
        directory = self.mktemp()
        root = makeService(
            self.parse(
                "--api-token", "x" * 16, "--download-dir", directory, "--download-connections", "3",
                "--download-lowest-speed", "4096", "--download-allow-loopback", "--no-echo", "--no-chat", "--no-daytime", "--no-proxy",
            ),
            MemoryReactorClock(),
        )
        service = root.getServiceNamed("downloads")
        self.assertIs(service, root.downloads)
        self.assertEqual(service.token, "x" * 16)
        self.assertFalse(service.generatedToken)
        self.assertEqual(service.directory, Path.cwd() / directory)
        self.assertEqual(service.settings.maxConnections, 3)
        self.assertEqual(service.settings.lowestSpeed, 4096)
        self.assertTrue(service.rules.allowLoopback)
        self.assertFalse(ProxyRules().allowLoopback)

    def test_fileWhereADirectoryGoesRefused(self) -> None:
        """
        A download or data directory that is a file (or lies under one) is
        refused in one line when the options are read, not with a traceback
        when the service starts.
        """
        blocker = Path(self.mktemp())
        blocker.write_text("a file\n")
        self.assertRefused(["--download-dir", str(blocker)], "--download-dir", "is not a directory")
        self.assertRefused(["--data-dir", str(blocker)], "--data-dir", "is not a directory")
        self.assertRefused(["--data-dir", str(blocker / "sub")], "--data-dir", "cannot be created", "is not a directory")
        self.assertRefused(["--download-dir", str(blocker / "a" / "b")], "--download-dir", "cannot be created")
        self.parse("--no-downloads", "--download-dir", str(blocker))  # not used, so not checked
        self.parse("--download-dir", str(blocker.parent / "new" / "dir"))  # created at start

    def test_downloadDirectoryInTheDataDirectoryRefused(self) -> None:
        """
        A download directory that is the data directory (under any name),
        or lies inside it other than in its C{downloads} subdirectory, is
        refused in one line: the data directory keeps the API token by
        name, and a server's C{Content-Disposition: filename="api-token"}
        saved one there, which became the token at the next start without
        C{--api-token}.  One that holds the data directory further down is
        accepted (files are saved in it, never below it).
        """
        data = Path(self.mktemp()).resolve()
        (data / "tls").mkdir(parents=True)
        os.symlink(data, data.parent / "link")
        common = ["--no-echo", "--no-chat", "--no-daytime", "--no-proxy", "--data-dir", str(data)]
        for given in (data, str(data) + "/", data / "downloads" / "..", data.parent / "link"):
            self.assertRefused(
                [*common, "--download-dir", str(given)], "--download-dir", "is the data directory", "api-token"
            )
        for given in (data / "tls", data / "new" / "dir", data.parent / "link" / "tls"):
            self.assertRefused([*common, "--download-dir", str(given)], "--download-dir", "is inside the data directory")
        self.assertFalse((data / "new").exists())
        for given in (data / "downloads", data / "downloads" / "music", data.parent, data.parent / "elsewhere"):
            self.assertEqual(self.parse(*common, "--download-dir", str(given))["download-dir"], str(given))
        self.parse(*common, "--download-dir", str(data), "--no-downloads")  # not used, so not checked
        # The default data directory likewise.
        self.patch(tapModule, "defaultDataDirectory", lambda: data)
        self.assertRefused(
            ["--no-echo", "--no-chat", "--no-daytime", "--no-proxy", "--download-dir", str(data)],
            "is netsuite's default data directory",
        )

    def test_dataDirectoryThroughALinkRefused(self) -> None:
        """
        A data directory given through a link, with the download directory
        given as the real path (or inside it), is refused as well: both are
        compared with their links followed.
        """
        real = Path(self.mktemp()).resolve()
        real.mkdir(parents=True)
        link = real.parent / "data-link"
        os.symlink(real, link)
        common = ["--no-echo", "--no-chat", "--no-daytime", "--no-proxy", "--data-dir", str(link)]
        self.assertRefused([*common, "--download-dir", str(real)], "is the data directory")
        self.assertRefused([*common, "--download-dir", str(real / "tls")], "is inside the data directory")
        self.parse(*common, "--download-dir", str(real / "downloads"))

    def test_refusedBeforeTheDataDirectoryIsMade(self) -> None:
        """
        A download directory refused for lying in the data directory is
        refused before the data directory, or its lock file, is made.
        """
        data = Path(self.mktemp()).resolve() / "data"
        common = ["--no-echo", "--no-chat", "--no-daytime", "--no-proxy", "--data-dir", str(data)]
        self.assertRefused([*common, "--download-dir", str(data / "tls")], "is inside the data directory")
        self.assertFalse(data.exists())
        self.assertRefused([*common, "--download-dir", str(data)], "is the data directory")
        self.assertFalse(data.exists())

    def test_noDownloadsHasNoService(self) -> None:
        root = makeService(
            self.parse("--no-downloads", "--no-echo", "--no-chat", "--no-daytime", "--no-proxy"), MemoryReactorClock()
        )
        self.assertIsNone(root.downloads)
        self.assertRaises(KeyError, root.getServiceNamed, "downloads")


async def getDownloads(testCase: TestCase, root: Any, token: str) -> Any:
    """
    The answer to C{GET /api/downloads} with C{token}, from the HTTP
    listener of the started service tree C{root}.
    """
    [http] = [child for child in root if getattr(child, "serviceName", None) == "http"]
    pool = HTTPConnectionPool(reactor, persistent=False)
    testCase.addCleanup(pool.closeCachedConnections)
    client = HTTPClient(Agent(reactor, pool=pool))
    return await client.get(
        f"http://127.0.0.1:{http.port.getHost().port}/api/downloads",
        headers={b"Authorization": [b"Bearer " + token.encode()]},
    )


class TapServiceTests(TestCase):
    """
    The service tree C{makeService} builds, listening for real.
    """

    async def apiStatus(self, *args: str) -> tuple[int, Any]:
        options = Options()
        options.parseOptions(
            ["--http", "tcp:0:interface=127.0.0.1", "--no-echo", "--no-chat", "--no-daytime", "--no-proxy",
             "--data-dir", self.mktemp(), "--api-token", TOKEN, *args]
        )
        root = makeService(options, reactor)
        root.startService()
        self.addCleanup(root.stopService)
        response = await getDownloads(self, root, TOKEN)
        return response.code, json.loads(await treq.content(response))

    async def test_noDownloadsMeansNoEndpoint(self) -> None:
        code, body = await self.apiStatus("--no-downloads")
        self.assertEqual((code, body["status"]), (404, 404), body)

    async def test_downloadsEndpointByDefault(self) -> None:
        code, body = await self.apiStatus()
        self.assertEqual((code, body), (200, {"downloads": [], "next": None}))


class TokenFileTests(TestCase):
    """
    Without C{--api-token}, C{twistd netsuite} generates a token once and
    keeps it in C{api-token} in the data directory (its owner's only): it
    stays the same from one start to the next, and the log names the file
    instead of showing it (the log is often readable by all).
    """

    def build(self, dataDirectory: Path) -> Any:
        options = Options()
        options.parseOptions(
            ["--http", "tcp:0:interface=127.0.0.1", "--no-echo", "--no-chat", "--no-daytime", "--no-proxy",
             "--data-dir", str(dataDirectory)]
        )
        return makeService(options, reactor)

    async def test_generatedOnceKeptAndNotLogged(self) -> None:
        dataDirectory = Path(self.mktemp())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        root = self.build(dataDirectory)
        token = root.downloads.token
        tokenFile = dataDirectory / "api-token"
        self.assertEqual(tokenFile.read_text(), token + "\n")
        self.assertGreaterEqual(len(token), 32)
        self.assertEqual(stat.S_IMODE(os.stat(tokenFile).st_mode), 0o600)
        root.startService()
        self.addCleanup(root.stopService)
        logged = [formatEvent(e) for e in events]
        self.assertEqual([line for line in logged if token in line], [])
        self.assertEqual(len([line for line in logged if str(tokenFile) in line and "token" in line]), 1, logged)
        response = await getDownloads(self, root, tokenFile.read_text().strip())
        self.assertEqual(response.code, 200, await treq.content(response))
        self.assertEqual(self.build(dataDirectory).downloads.token, token)

    def test_handWrittenTokenKept(self) -> None:
        dataDirectory = Path(self.mktemp())
        dataDirectory.mkdir(mode=0o700)
        (dataDirectory / "api-token").write_text("  my-own-token-of-20-chars \n\n")
        os.chmod(dataDirectory / "api-token", 0o600)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual(self.build(dataDirectory).downloads.token, "my-own-token-of-20-chars")
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])

    def test_tokenFileOthersCanReadIsWarnedOf(self) -> None:
        """
        A token file that other users may read is used, with a warning
        saying so and how to mend it (it was used silently).
        """
        dataDirectory = Path(self.mktemp())
        dataDirectory.mkdir(mode=0o700)
        tokenFile = dataDirectory / "api-token"
        tokenFile.write_text("my-own-token-of-20-chars\n")
        for mode in (0o644, 0o640, 0o620):
            os.chmod(tokenFile, mode)
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            self.assertEqual(self.build(dataDirectory).downloads.token, "my-own-token-of-20-chars")
            [warning] = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            self.assertIn(f"{tokenFile} is open to other users (mode 0{mode:o})", warning)
            self.assertIn("chmod 600", warning)
            self.assertNotIn("my-own-token", warning)

    def test_unusableTokenFileRefusedInOneLine(self) -> None:
        """
        A token file that is too short, holds spaces or bytes that are not
        UTF-8, is too long, or is not a file, is refused at start in one
        line naming it (nothing is overwritten).
        """
        for content in (b"short\n", b"two words of sixteen plus\n", b"\xff" * 20, b"x" * 5000, None):
            dataDirectory = Path(self.mktemp())
            dataDirectory.mkdir()
            tokenFile = dataDirectory / "api-token"
            if content is None:
                tokenFile.mkdir()
            else:
                tokenFile.write_bytes(content)
            error = self.assertRaises(ConfigError, self.build, dataDirectory)
            self.assertEqual(len(str(error).splitlines()), 1, str(error))
            self.assertIn(str(tokenFile), str(error))
            if content is not None:
                self.assertEqual(tokenFile.read_bytes(), content)

    def test_chosenTokenMakesNoFile(self) -> None:
        dataDirectory = Path(self.mktemp())
        options = Options()
        options.parseOptions(["--no-echo", "--no-chat", "--no-daytime", "--no-proxy",
                              "--data-dir", str(dataDirectory), "--api-token", TOKEN])
        root = makeService(options, MemoryReactorClock())
        self.assertEqual(root.downloads.token, TOKEN)
        self.assertFalse((dataDirectory / "api-token").exists())


class TwistdDownloadTests(TestCase):
    """
    C{twistd -n netsuite} downloads, through its own API, a file its own
    HTTP server serves.
    """

    timeout = 30

    def start(self, home: str, *args: str) -> tuple[Running, Any]:
        """
        Start C{twistd -n netsuite} in C{home}, serving HTTP only, with
        downloads into C{home/downloads}; it is killed at the end of the
        test if still running.
        """
        process = Running(expected=1)
        transport = spawn(
            self, process, home,
            "-c", TWISTD, "-n", "--pidfile=", "netsuite",
            "--http", "tcp:0:interface=127.0.0.1",
            "--no-chat", "--no-echo", "--no-daytime", "--no-proxy",
            "--download-dir", os.path.join(home, "downloads"),
            "--api-token", TOKEN,
            "--download-allow-loopback",
            *args,
        )
        return process, transport

    def client(self) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        return HTTPClient(Agent(reactor, pool=pool))

    async def post(self, client: HTTPClient, api: str, body: dict) -> dict:
        """
        Queue a job through the API at C{api}; it must be answered C{201}.
        """
        response = await client.post(api, data=json.dumps(body).encode(), headers=AUTH)
        job = json.loads(await treq.content(response))
        self.assertEqual(response.code, 201, job)
        return job

    async def test_twistdDownloadsFromItself(self) -> None:
        home = os.path.abspath(self.mktemp())
        served = os.path.join(home, "www")
        downloads = os.path.join(home, "downloads")
        os.makedirs(served)
        content = os.urandom(300_000)
        with open(os.path.join(served, "blob.bin"), "wb") as f:
            f.write(content)
        process, transport = self.start(home, "--http-root", served)
        [(service, kind, port, tls)] = await process.listening
        self.assertEqual(service, "http")
        client = self.client()
        api = f"http://127.0.0.1:{port}/api/downloads"
        job = await self.post(client, api, {"url": f"http://127.0.0.1:{port}/blob.bin"})
        deadline = time.monotonic() + 15
        while job["state"] not in FINISHED and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
            response = await client.get(f"{api}/{job['id']}", headers=AUTH)
            job = json.loads(await treq.content(response))
        self.assertEqual(job["state"], "done", job)
        with open(os.path.join(downloads, "blob.bin"), "rb") as f:
            self.assertEqual(sha256(f.read()), sha256(content))
        self.assertNotIn(TOKEN.encode(), process.output)
        transport.signalProcess("TERM")
        await process.ended
        self.assertNotIn(b"Traceback", process.output)

    async def test_acceptedJobsOutliveAKill(self) -> None:
        """
        A job answered C{201} is on the disk: killed (SIGKILL) right after
        the answer, netsuite has it again when it starts, and gives its id
        to no other job.  The job list was written at most once a second,
        so a second job queued within a second of the first was lost, and
        its id given again.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        client = self.client()
        nowhere = "http://127.0.0.1:1/never.bin"  # refused: the jobs retry, unfinished

        async def post(api: str, name: str) -> dict:
            return await self.post(client, api, {"url": nowhere, "name": name})

        process, transport = self.start(home)
        [(_, _, port, _)] = await process.listening
        api = f"http://127.0.0.1:{port}/api/downloads"
        first = await post(api, "first.bin")
        second = await post(api, "second.bin")
        transport.signalProcess("KILL")
        await process.ended

        process, transport = self.start(home)
        [(_, _, port, _)] = await process.listening
        api = f"http://127.0.0.1:{port}/api/downloads"
        response = await client.get(api, headers=AUTH)
        listed = json.loads(await treq.content(response))["downloads"]
        self.assertEqual([(job["id"], job["name"]) for job in listed], [(first["id"], "first.bin"), (second["id"], "second.bin")])
        third = await post(api, "third.bin")
        self.assertEqual([first["id"], second["id"], third["id"]], ["1", "2", "3"])
        transport.signalProcess("TERM")
        await process.ended
        self.assertNotIn(b"Traceback", process.output)


class _RaisingResolver:
    """
    A name resolver that raises instead of answering.
    """

    def resolveHostName(self, receiver: Any, host: str, port: int = 0, *args: Any, **kwargs: Any) -> None:
        raise UnicodeError("label empty or too long")


class SaveTests(SynchronousTestCase):
    """
    The job list is written once for a burst of changes (many POSTs, many
    jobs ending at once), compactly, and always at stop.  On a memory
    reactor whose resolver raises, so every download fails at once.
    """

    def startService(self, jobs: Optional[list] = None) -> tuple[DownloadService, MemoryReactorClock, list[bytes]]:
        directory = Path(self.mktemp())
        directory.mkdir()
        if jobs is not None:
            (directory / JOBS_FILE).write_text(json.dumps({"version": 1, "jobs": jobs}))
        writes: list[bytes] = []
        write = serviceModule.writeAtomically
        clock = MemoryReactorClock()
        #: How long each write takes, on the clock.
        self.writeTime = 0.0

        def counted(path: Path, data: bytes, mode: int = 0o666, sync: bool = False) -> None:
            self.assertTrue(sync)
            writes.append(data)
            write(path, data, mode)
            clock.rightNow += self.writeTime

        self.patch(serviceModule, "writeAtomically", counted)
        clock.nameResolver = _RaisingResolver()
        service = DownloadService(directory, reactor=clock, token=TOKEN, settings=DownloadSettings(retries=0))
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service, clock, writes

    def test_burstOfChangesIsOneWrite(self) -> None:
        """
        Many jobs added in one reactor turn are written in one go at the
        next turn, and shown and started only then; the changes they make
        (here: all fail at once) go in one more write.  After a write that
        took long, the next waits L{SAVE_PAUSE} times as long.  Stopping
        writes what is left, and nothing after.
        """
        service, clock, writes = self.startService()
        added = [service.add(f"http://example.com/{number}") for number in range(100)]
        self.assertEqual([job["id"] for job in added], [str(n) for n in range(1, 101)])
        self.assertEqual(writes, [])
        self.assertEqual(service.list(), [])
        self.assertIsNone(service.get("1"))
        clock.advance(0)
        self.assertEqual(len(writes), 2)
        saved = json.loads(writes[0])
        self.assertEqual([job["state"] for job in saved["jobs"]], ["queued"] * 100)
        self.assertEqual(saved["next"], 101)
        self.assertNotIn(b"\n ", writes[0])  # compact, not indented
        self.assertEqual(len(service.list()), 100)
        self.assertEqual({job["state"] for job in json.loads(writes[1])["jobs"]}, {"failed"})

        self.writeTime = 2.0
        service.add("http://example.com/slow")
        clock.advance(0)
        self.assertEqual(len(writes), 3)  # took 2 s; the job failed meanwhile
        clock.advance(2.0 * SAVE_PAUSE - 0.1)
        self.assertEqual(len(writes), 3)
        clock.advance(0.1)
        self.assertEqual(len(writes), 4)
        self.assertEqual(service.get("101")["state"], "failed")

        self.writeTime = 0.0
        service.add("http://example.com/last")
        self.successResultOf(service.stopService())
        self.assertEqual(len(writes), 5)
        self.assertEqual(json.loads(writes[4])["jobs"][-1]["url"], "http://example.com/last")
        self.assertEqual(service.get("102")["state"], "queued")
        clock.advance(10)
        self.assertEqual(len(writes), 5)

    def heldWrites(self) -> list[Callable[[], None]]:
        """
        Make each write of the job list from now on wait until the test
        ends it: as each starts, what ends it (writing) is listed.
        """
        held: list[Callable[[], None]] = []
        write = serviceModule._writeJobList

        def hold(*args: Any) -> Deferred:
            d: Deferred = Deferred()
            held.append(lambda: d.callback(write(*args)))
            return d

        self.patch(serviceModule, "_writeJobList", hold)
        return held

    def test_deleteAnsweredByAWriteStartedAfterIt(self) -> None:
        """
        A C{DELETE} that comes while a write of the job list is under way
        is answered once the next write, which has the job deleted, ends:
        not by the one under way, which was started before it (a crash then
        left the job listed).
        """
        service, clock, writes = self.startService()
        job = service.add("http://example.com/gone")
        clock.advance(0)
        self.assertEqual(service.get(job["id"])["state"], "failed")
        held = self.heldWrites()
        service.add("http://example.com/other")
        clock.advance(0)
        self.assertEqual(len(held), 1)  # under way
        deleting = DownloadResource(service, job["id"]).json_DELETE(DummyRequest([b""]))
        held.pop()()
        self.assertIn(job["id"], [saved["id"] for saved in json.loads(service.jobsFile.read_text())["jobs"]])
        self.assertNoResult(deleting)
        clock.advance(SAVE_PAUSE)
        self.assertEqual(len(held), 1)  # the next write, with the job deleted
        self.assertNoResult(deleting)
        held.pop()()
        self.assertEqual(self.successResultOf(deleting)["id"], job["id"])
        self.assertNotIn(job["id"], [saved["id"] for saved in json.loads(service.jobsFile.read_text())["jobs"]])

    def test_deleteWhenStoppedIs503(self) -> None:
        """
        A C{DELETE} that comes once the service stopped (the HTTP
        listener's keep-alive connections live on for the stop's grace)
        gets C{503} at once, and the job stays as it was, as a C{POST} then
        gets C{503}: the job list is not written again, and the C{DELETE}
        was held 30 s, then answered C{202}, the job still listed as queued.
        """
        service, clock, writes = self.startService()
        job = service.add("http://example.com/kept")
        clock.advance(0)
        self.successResultOf(service.stopService())
        written = len(writes)
        with self.assertRaises(APIError) as raised:
            DownloadResource(service, job["id"]).json_DELETE(DummyRequest([b""]))
        self.assertEqual((raised.exception.code, raised.exception.message), (503, "the download service is not running"))
        self.assertEqual(service.get(job["id"])["state"], "failed")
        clock.advance(60)
        self.assertEqual(len(writes), written)

    def test_deleteWaitingWhenTheLastWriteFailsIs503(self) -> None:
        """
        A C{DELETE} still waiting for its write when the service stops,
        and the stop's last write fails (a full disk), gets C{503}: no
        other write comes (it waited for one, and got C{202} 30 s later).
        """
        service, clock, writes = self.startService()
        job = service.add("http://example.com/gone")
        clock.advance(0)

        def full(path: Path, data: bytes, mode: int = 0o666, sync: bool = False) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(serviceModule, "writeAtomically", full)
        deleting = DownloadResource(service, job["id"]).json_DELETE(DummyRequest([b""]))
        clock.advance(0)  # (its write fails, and is tried again later)
        self.assertNoResult(deleting)
        self.successResultOf(service.stopService())
        failure = self.failureResultOf(deleting, APIError)
        self.assertEqual(failure.value.code, 503)
        self.assertIn("stopped before the job list could be written", failure.value.message)

    def test_longestJobFitsItsShare(self) -> None:
        """
        A job as long as a request can make it (a URL of 8192 bytes, in
        characters of 4 bytes each, failing, so its error repeats the URL
        percent-encoded; a checksum padded with spaces) is written in at
        most L{MAX_JOB_BYTES}, the share of the job list read back at start
        (it took 4 times a request body: escapes, the whole error, the
        padding), also when a byte that is not UTF-8 in its URL has every
        character escaped (12 bytes for each of 4).
        """
        service, clock, writes = self.startService()
        url = "http://example.com/" + "a" * ((MAX_URL - 19) % 4) + "\U0001d4b3" * ((MAX_URL - 19) // 4)
        self.assertEqual(len(url.encode()), MAX_URL)
        service.add(url, checksum="sha256=" + "a" * 64 + "\u3000" * 10000)
        clock.advance(0)
        self.assertEqual(service.get("1")["state"], "failed")
        self.assertEqual(service.get("1")["checksum"], "sha256=" + "a" * 64)
        self.assertLessEqual(len(writes[-1]), MAX_JOB_BYTES)
        self.assertEqual(json.loads(writes[-1])["jobs"][0]["url"], url)
        escaped = "http://example.com/\udce9" + "a" * ((MAX_URL - 22) % 4) + "\U0001d4b3" * ((MAX_URL - 22) // 4)
        self.assertEqual(len(escaped.encode("utf-8", "surrogatepass")), MAX_URL)
        service.add(escaped, name="\U0001d4b3" * 50)
        clock.advance(0)
        self.assertEqual(service.get("2")["state"], "failed")
        saved = json.loads(writes[-1])["jobs"][1]
        self.assertEqual(saved["url"], escaped)
        self.assertGreater(len(serviceModule._encodeJob(saved)), 3 * MAX_URL)
        self.assertLessEqual(len(serviceModule._encodeJob(saved)), MAX_JOB_BYTES)
        # The error is cut in its middle, so that the reason stays.
        error = service.get("1")["error"]
        self.assertEqual(len(error), MAX_ERROR)
        self.assertTrue(error.startswith("http://example.com/"), error[:50])
        self.assertTrue(error.endswith(": example.com could not be resolved (label empty or too long)"), error[-80:])

    def test_pageOfLongestJobsIsBounded(self) -> None:
        """
        A page of the longest jobs (URLs of 8192 bytes) asked with the
        highest C{?limit=} is at most L{MAX_PAGE_BYTES} and a job: a
        thousand of them made a page of 34 MB, built whole.
        """
        service, clock, writes = self.startService()
        for number in range(300):
            url = f"http://example.com/{number:03}/" + "a" * ((MAX_URL - 23) % 4) + "\U0001d4b3" * ((MAX_URL - 23) // 4)
            self.assertEqual(len(url.encode()), MAX_URL)
            service.add(url)
        clock.advance(0)
        jobs, more = service.page(limit=1000)
        self.assertTrue(more)
        size = len(json.dumps(jobs, ensure_ascii=False).encode("utf-8"))
        self.assertLessEqual(size, serviceModule.MAX_PAGE_BYTES)
        self.assertGreater(size, serviceModule.MAX_PAGE_BYTES - 20_000)
        following, more = service.page(limit=1000, after=jobs[-1]["id"])
        self.assertEqual(int(following[0]["id"]), int(jobs[-1]["id"]) + 1)

    def test_listLongerThanItsLimitForgetsOldestFinished(self) -> None:
        """
        A job list that would be longer than the service reads back at
        start forgets the oldest finished jobs, with one warning each, so
        that a restart reads it (it was set aside as unreadable: every
        unfinished job lost, ids given again).
        """
        self.patch(serviceModule, "MAX_JOBS_FILE", 20_000)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service, clock, writes = self.startService()
        for number in range(30):
            service.add(f"http://example.com/{number}/" + "x" * 400)
        clock.advance(0)
        self.assertLessEqual(len(writes[-1]), 20_000)
        saved = json.loads(writes[-1])
        ids = [job["id"] for job in saved["jobs"]]
        self.assertEqual(ids[-1], "30")
        self.assertGreater(len(ids), 10)
        self.assertEqual(ids, [str(n) for n in range(31 - len(ids), 31)])
        self.assertEqual(saved["next"], 31)
        self.assertEqual([job["id"] for job in service.list()], ids)
        service.add("http://example.com/more")
        clock.advance(0)
        ids = [job["id"] for job in json.loads(writes[-1])["jobs"]]
        self.assertEqual(ids[-1], "31")
        forgotten = [e for e in events if e["log_level"] == LogLevel.warn and "forgetting" in formatEvent(e)]
        self.assertEqual(len(forgotten), 31 - len(ids))
        self.successResultOf(service.stopService())
        again = DownloadService(service.directory, reactor=clock, token=TOKEN)
        again.startService()
        self.addCleanup(again.stopService)
        self.assertEqual([job["id"] for job in again.list()], ids)
        self.assertEqual(again.add("http://example.com/next")["id"], "32")

    def test_jobListReadAsTheAPIWouldTakeIt(self) -> None:
        """
        A job list read at start holds no more than the API lets in: a job
        whose host Twisted cannot connect to is skipped (it failed at once
        instead, as the API answers 400 for it); an error is cut to
        L{MAX_ERROR} characters; a path that is not a plain file name is
        not shown.  Nothing is lost: the list as it was is kept aside.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        jobs = [
            {"id": "1", "url": "http://a_b.example/x", "state": "queued"},
            {"id": "2", "url": "http://xn--/x", "state": "queued"},
            {"id": "3", "url": "http://example.com/3", "state": "failed", "error": "e" * 5000},
            {"id": "4", "url": "http://example.com/4", "state": "done", "path": "/etc/passwd"},
            {"id": "5", "url": "http://example.com/5", "state": "done", "path": ".."},
            {"id": "6", "url": "http://example.com/6", "state": "done", "path": "report.1.pdf"},
        ]
        service, clock, writes = self.startService(jobs)
        self.assertEqual([job["id"] for job in service.list()], ["3", "4", "5", "6"])
        self.assertEqual(len(service.get("3")["error"]), MAX_ERROR)
        self.assertEqual([service.get(n)["path"] for n in "456"], [None, None, "report.1.pdf"])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("skipping job 1: http://a_b.example/x: the host name 'a_b.example' is not a valid IDNA name", warnings[0])
        self.assertIn("skipping job 2: http://xn--/x:", warnings[1])
        self.assertIn("kept it as", warnings[-1])
        self.assertEqual(len(warnings), 3)

    def test_jobListOfTooManyValuesIsSetAside(self) -> None:
        """
        A job list holding more values than any job list
        (L{MAX_JOBS_VALUES}) is set aside as unreadable, with one warning,
        before they are built: 126 MiB of C{{},} took 3.3 GB and 40 s to
        read.  Commas, brackets and braces in strings do not count: a list
        of URLs full of them is read.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / JOBS_FILE).write_bytes(b'{"version":1,"next":1,"jobs":[' + b"{}," * MAX_JOBS_VALUES + b"{}]}")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        loads, realLoads = [], json.loads
        self.patch(json, "loads", lambda *a, **k: loads.append(a) or realLoads(*a, **k))
        service = DownloadService(directory, reactor=MemoryReactorClock(), token=TOKEN)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual((service.list(), loads), ([], []))
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"it holds more than {MAX_JOBS_VALUES} values, more than any job list; kept it as", warnings[0])

        url = "http://example.com/" + ",[{" * 2000
        jobs = [{"id": str(n), "url": f"{url}{n}", "state": "done"} for n in range(1, MAX_JOBS_VALUES // 6000 + 2)]
        service, clock, writes = self.startService(jobs)
        self.assertGreater(sum(json.dumps(jobs).count(c) for c in ",[{"), MAX_JOBS_VALUES)
        self.assertEqual(len(service.list()), len(jobs))

    def test_idsNotGivenAgainAfterAnUnreadableList(self) -> None:
        """
        A job list that cannot be read (cut short, not a job list, too
        long) is set aside, and the ids it gave are not given again: the
        next id is past its C{"next"} and its jobs' ids, and is written at
        once (a start after it, with no job added, knows it too).  Ids
        started at 1 again.
        """
        self.patch(serviceModule, "_ID_SCAN", 600)
        self.patch(serviceModule, "MAX_JOBS_FILE", 5000)
        clock = MemoryReactorClock()
        clock.nameResolver = _RaisingResolver()
        for spoil in (
            lambda data: data[:-5],
            lambda data: data.replace(b'"jobs":', b'"jabs":'),
            # Only the last job's id, at the end, tells.
            lambda data: data.replace(b'"next":4,"jobs":[', b'"next":2,"jobs":[' + b" " * 5000),
            # A "next" of more digits than an id has is no "next" (its first
            # digits are not one either).
            lambda data: data.replace(b'"next":4', b'"next":12345678901234567890')[:-5],
        ):
            directory = Path(self.mktemp())
            service = DownloadService(directory, reactor=clock, token=TOKEN, settings=DownloadSettings(retries=0))
            service.startService()
            for number in range(3):
                service.add(f"http://example.com/{number}")
            clock.advance(0)
            self.successResultOf(service.stopService())
            path = directory / JOBS_FILE
            path.write_bytes(spoil(path.read_bytes()))
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            again = DownloadService(directory, reactor=clock, token=TOKEN)
            again.startService()
            self.assertEqual(again.list(), [])
            self.assertIn("kept it as", formatEvent([e for e in events if e["log_level"] == LogLevel.warn][0]))
            clock.advance(0)
            self.assertEqual(json.loads(path.read_bytes()), {"version": 1, "next": 4, "jobs": []})  # before the stop
            self.successResultOf(again.stopService())
            self.assertEqual(json.loads(path.read_bytes()), {"version": 1, "next": 4, "jobs": []})
            last = DownloadService(directory, reactor=clock, token=TOKEN)
            last.startService()
            self.addCleanup(last.stopService)
            self.assertEqual(last.add("http://example.com/new")["id"], "4")

    def test_linkedJobListGivesNoIds(self) -> None:
        """
        A job list that is a symbolic link is set aside unread, and the
        file it leads to gives no ids: it is not the service's (its
        C{"next"} of 500 was taken).
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        other = Path(self.mktemp()).absolute()
        other.write_bytes(b'{"version":1,"next":500,"jobs":[]}')
        os.symlink(other, directory / JOBS_FILE)
        clock = MemoryReactorClock()
        clock.nameResolver = _RaisingResolver()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service = DownloadService(directory, reactor=clock, token=TOKEN, settings=DownloadSettings(retries=0))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIn("symbolic links", formatEvent([e for e in events if e["log_level"] == LogLevel.warn][0]))
        self.assertEqual(service.add("http://example.com/new")["id"], "1")

    def test_jobListOverTheLimitsIsCut(self) -> None:
        """
        A job list holding more unfinished jobs than the queue takes
        (L{MAX_PENDING}) starts the first of them only, and keeps the
        newest L{MAX_FINISHED} finished ones; a list of 50,000 queued jobs
        started them all, at full CPU and 760 MB.  The skipped jobs get one
        warning each up to L{MAX_SKIP_WARNINGS}, then one for the rest, and
        the list as it was is kept aside.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        jobs = [{"id": f"d{n}", "url": f"http://example.com/{n}", "state": "done"} for n in range(MAX_FINISHED + 5)]
        jobs += [{"id": str(n), "url": f"http://example.com/{n}", "state": "queued"} for n in range(MAX_PENDING + 50)]
        service, clock, writes = self.startService(jobs)
        # The first 1000 waiting jobs were started, and failed at once here
        # (no resolver): the newest 1000 finished jobs are theirs.
        listed = [job["id"] for job in service.list()]
        self.assertEqual(listed, [str(n) for n in range(MAX_PENDING)])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), MAX_SKIP_WARNINGS + 3, warnings[-3:])
        self.assertIn(f"skipping job {MAX_FINISHED + 5 + MAX_PENDING + 1}: more than {MAX_PENDING} downloads would wait", warnings[0])
        self.assertIn(f"skipping {50 - MAX_SKIP_WARNINGS} more jobs that cannot be used", warnings[-3])
        self.assertIn(f"forgetting the 5 oldest finished jobs (at most {MAX_FINISHED} are kept)", warnings[-2])
        self.assertIn("kept it as", warnings[-1])

    def test_jobsFinishingAfterAStartKeepTheListInItsLimit(self) -> None:
        """
        Jobs that finish keep at most L{MAX_FINISHED} finished jobs in the
        list, the newest: the list a start read back (its waiting jobs
        finishing later) grew past it, and the next start set the list
        aside as bad.
        """
        self.patch(serviceModule, "MAX_FINISHED", 3)
        jobs = [{"id": str(n), "url": f"http://example.com/{n}", "state": "done"} for n in range(1, 4)]
        jobs += [{"id": str(n), "url": f"http://example.com/{n}", "state": "queued"} for n in range(4, 7)]
        service, clock, writes = self.startService(jobs)
        clock.advance(0)
        self.assertEqual([job["id"] for job in service.list()], ["4", "5", "6"])
        self.assertEqual([job["id"] for job in json.loads(writes[-1])["jobs"]], ["4", "5", "6"])

    def test_hugeIdInJobListIsHarmless(self) -> None:
        """
        A hand-edited job id of thousands of digits starts the service
        (int() refused it with a traceback and twistd stopped); such an id
        does not count for the next one.
        """
        jobs = [
            {"id": "9" * 5000, "url": "http://example.com/a", "state": "done"},
            {"id": "7", "url": "http://example.com/b", "state": "done"},
        ]
        service, clock, writes = self.startService(jobs)
        self.assertTrue(service.running)
        self.assertEqual(len(service.list()), 2)
        self.assertEqual(service.add("http://example.com/c")["id"], "8")

    def test_jobsFailingAtStartAreOneWrite(self) -> None:
        """
        A restart with many queued jobs that all fail at once (here: a
        resolver that raises, which fails each attempt at once and in
        words) writes the job list once, not once per job.
        """
        jobs = [
            {"id": str(n), "url": f"http://example.com/{n}", "name": None, "checksum": None, "state": "queued"}
            for n in range(1, 201)
        ]
        service, clock, writes = self.startService(jobs)
        self.assertEqual(writes, [])
        clock.advance(0)
        self.assertEqual(len(writes), 1)
        saved = json.loads(writes[0])
        self.assertEqual({job["state"] for job in saved["jobs"]}, {"failed"})
        self.assertEqual(saved["next"], 201)
        error = service.get("1")["error"]
        self.assertEqual(error, "http://example.com/1: example.com could not be resolved (label empty or too long)")

    def test_jobListWrittenUpToItsLimitExactly(self) -> None:
        """
        The jobs a job list holds take up to L{MAX_JOBS_FILE} less 100
        bytes (the rest is for the list's head and end), each counted with
        a comma: a list of exactly that keeps every job, one byte less
        forgets the oldest finished job, and so on, one job at a time.  A
        waiting job is never forgotten, even the oldest.
        """
        jobs = [{"id": "1", "url": "http://example.com/1", "state": "queued"}]
        jobs += [{"id": str(n), "url": f"http://example.com/{n}", "state": "done"} for n in range(2, 5)]
        lengths = [len(serviceModule._encodeJob(job)) + 1 for job in jobs]
        self.assertEqual(len(set(lengths[1:])), 1)
        full, finished = sum(lengths), lengths[1]
        path = Path(self.mktemp())
        for room, forgotten in [
            (full, []),
            (full - 1, ["2"]),
            (full - finished, ["2"]),
            (full - finished - 1, ["2", "3"]),
            (full - 3 * finished, ["2", "3", "4"]),
            (full - 3 * finished - 1, ["2", "3", "4"]),
        ]:
            self.patch(serviceModule, "MAX_JOBS_FILE", room + 100)
            self.assertEqual(serviceModule._writeJobList(path, 5, jobs), (forgotten, None), room)
            document = path.read_bytes()
            self.assertLessEqual(len(document), room + 100)
            written = [job["id"] for job in json.loads(document)["jobs"]]
            self.assertEqual(written, [job["id"] for job in jobs if job["id"] not in forgotten])

    def test_valuesOfEachKindCountExactly(self) -> None:
        """
        A job list of exactly L{MAX_JOBS_VALUES} values is read, and one of
        a value more is refused, whether the values are objects, arrays or
        strings (each counted once, with the commas between them), or
        strings holding commas, brackets and braces (which do not count).
        """
        for value in (b"{}", b"[]", b'""', b'"a,[{b"'):

            def jobList(count: int, nested: bool) -> bytes:
                values = b",".join([value] * count)
                if nested:
                    values = b"[" + values + b"]"
                return b'{"version":1,"next":1,"jobs":[],"pad":[' + values + b"]}"

            # Outside the values: 4 strings, 3 commas, 2 brackets and a
            # brace; then each value and a comma, but the first; and one
            # bracket more for the nested list.
            most = jobList((MAX_JOBS_VALUES - 10) // 2, nested=True)
            self.assertEqual(serviceModule._parseJobList(most)["jobs"], [], value)
            over = jobList((MAX_JOBS_VALUES - 8) // 2, nested=False)
            self.assertEqual(len(over), len(most) - 2 + len(value) + 1)
            error = self.assertRaises(ValueError, serviceModule._parseJobList, over)
            self.assertEqual(str(error), f"it holds more than {MAX_JOBS_VALUES} values, more than any job list")

    def test_nextOfTheJobListTakenWithinIds(self) -> None:
        """
        A job list's C{"next"} is taken when it is a whole number of at
        most 15 digits (ids stay numbers JavaScript clients read exactly,
        and ids an unreadable list shows are found again: a "next" of 16
        digits gave ids the list's scan did not find); any other is
        ignored, and starts no traceback.
        """
        for following, expected in [
            (12, "12"),
            (10**15 - 1, str(10**15 - 1)),
            (10**15, "1"),
            (2**53 - 1, "1"),
            (2**53, "1"),
            (2**64, "1"),
            (5.5, "1"),
            ("12", "1"),
            (None, "1"),
        ]:
            directory = Path(self.mktemp())
            directory.mkdir()
            (directory / JOBS_FILE).write_text(json.dumps({"version": 1, "next": following, "jobs": []}))
            service = DownloadService(directory, reactor=MemoryReactorClock(), token=TOKEN)
            service.startService()
            self.addCleanup(service.stopService)
            self.assertEqual(service.add("http://example.com/new")["id"], expected, following)

    def test_idsUsedUpAreNotGivenAgain(self) -> None:
        """
        Once the 15-digit ids are used up, a new job is refused with a 503
        that says so, across a restart too: the next id was 16 digits,
        found neither in the job list's "next" nor as an id, so after a
        restart it was given again, and the job that held it was lost.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / JOBS_FILE).write_text(json.dumps({"version": 1, "next": 10**15 - 1, "jobs": []}))
        service = DownloadService(directory, reactor=MemoryReactorClock(), token=TOKEN)
        service.startService()
        self.assertEqual(service.add("http://example.com/a")["id"], str(10**15 - 1))
        for _ in range(2):
            error = self.assertRaises(apiModule.APIError, service.add, "http://example.com/b")
            self.assertEqual((error.code, error.message), (503, "no job id is left: ids have at most 15 digits"))
            self.successResultOf(service.stopService())
            service = DownloadService(directory, reactor=MemoryReactorClock(), token=TOKEN)
            service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([job["url"] for job in service.list()], ["http://example.com/a"])

    def test_idsOfAnUnreadableListWrittenByHand(self) -> None:
        """
        The ids of a job list that cannot be read are found as JSON may
        write them (with spaces around the colon), past a C{"next"} higher
        than every id, and only for numbers an id can be (of at most 15
        digits, the one of a C{"id"} in its quotes).
        """
        url = '"url": "http://example.com/x", "state": "done"'
        for text, expected in [
            ('{"version": 1, "next": 9, "jobs": [{"id": "2", %s}, {"id": "3", %s' % (url, url), "9"),
            ('{"version":1,"next":2,"jobs":[{"id" :  "5", %s}, {"id"\n:\n"6"' % url, "7"),
            ('{"version":1,"next":9999999999999999,"jobs":[{"id":"3",%s' % url, "4"),
            ('{"version":1,"next":2,"jobs":[{"id":"1234567890123456",%s' % url, "2"),
        ]:
            directory = Path(self.mktemp())
            directory.mkdir()
            (directory / JOBS_FILE).write_text(text)
            service = DownloadService(directory, reactor=MemoryReactorClock(), token=TOKEN)
            service.startService()
            self.addCleanup(service.stopService)
            self.assertEqual(service.list(), [])
            self.assertEqual(service.add("http://example.com/new")["id"], expected, text)

    def test_unreadableListOfAnotherUserGivesNoIds(self) -> None:
        """
        A job list that is not this user's gives no ids when looked
        through after it could not be read (it became another's meanwhile).
        """
        path = Path(self.mktemp())
        path.write_bytes(b'{"version":1,"next":500,"jobs":[')
        self.assertEqual(serviceModule._nextIdIn(path), 500)
        uid = os.geteuid()
        self.patch(os, "geteuid", lambda: uid + 1)
        self.assertEqual(serviceModule._nextIdIn(path), 1)

    def test_jobListNotInUTF8IsRefused(self) -> None:
        """
        A job list in another encoding than UTF-8 (which the service
        writes), even one JSON allows, is refused as unreadable.
        """
        document = json.dumps({"version": 1, "next": 9, "jobs": []})
        self.assertEqual(serviceModule._parseJobList(document.encode("utf-8"))["next"], 9)
        for encoding in ("utf-16", "utf-32-le", "utf-8-sig"):
            self.assertRaises(ValueError, serviceModule._parseJobList, document.encode(encoding))
