"""
Tests for L{netsuite.web.site} and L{netsuite.web.pages}: request limits and
deadlines (in memory, fake clock), and over real sockets the pages,
pipelining, slowloris resistance, the access log and HTTP/2 over TLS.
"""

from __future__ import annotations

import errno
import gzip
import http.client
import io
import json
import os
import re
import select
import shutil
import socket
import ssl
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import trustme
from twisted.internet import reactor, threads
from twisted.internet.utils import getProcessOutputAndValue
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.http import H2_ENABLED
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from netsuite.stats import StatsRegistry
from netsuite.status import ListenerInfo, SimpleStatus
from netsuite.web import site as siteModule
from netsuite.web.api import APIError, EchoResource, JSONResource
from netsuite.web.site import Limits, makeHTTPService, makeSite
from tests.helpers import connectInMemory, rawExchange, recvUntil, startListener
from tests.tlshelpers import SOCKET_TIMEOUT, closeNotifyClient, makeServerOptions


def inMemory(limits: Limits | None = None, **kwargs):
    """
    A site on a fake clock, and a function connecting a client to it.
    """
    clock = MemoryReactorClock()
    status = SimpleStatus(StatsRegistry())
    stats = status.stats.forService("http")
    site = makeSite(status, reactor=clock, stats=stats, limits=limits, **kwargs)
    site.startFactory()

    return clock, site, lambda: connectInMemory(site)


def statusLine(transport: StringTransport) -> bytes:
    return transport.value().split(b"\r\n", 1)[0]


class LimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.site, self.connect = inMemory(
            Limits(maxBody=100, maxRequestLine=200, maxHeaderBytes=1000, maxHeaders=5,
                   headerTimeout=10, idleTimeout=30)
        )
        self.addCleanup(self.site.stopFactory)

    def test_headersMustArriveBeforeDeadline(self) -> None:
        """
        A client that trickles its headers (slowloris) gets 408 and is closed
        when the head deadline passes, although it keeps sending.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        for i in range(9):
            self.clock.advance(1)
            protocol.dataReceived(b"X-Slow-%d: y\r\n" % i if i < 3 else b"X")
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(statusLine(transport), b"HTTP/1.1 408 Request Time-out")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.site.stats.counters["header_timeouts"], 1)

    def test_emptyLinesBeforeRequestLine(self) -> None:
        """
        Empty lines before a request line are skipped, any number of them
        as nginx does (Twisted skipped one, and answered a second with a
        400); they do not count against the header fields' size; more of
        them than the head may hold get a 400; they do not move the head's
        deadline.
        """
        protocol, transport = self.connect()
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 190) for i in range(4))  # 797 bytes with Host
        protocol.dataReceived(b"\r\n" * 110 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        protocol.dataReceived(b"\r\n" * 3 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200", b"200"])
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"\r\n" * 500)
        self.assertEqual(statuses(transport), [b"200", b"200"])
        protocol.dataReceived(b"\r\n")
        self.assertEqual(statuses(transport), [b"200", b"200", b"400"])
        self.assertTrue(transport.disconnecting)

        protocol, transport = self.connect()
        for _ in range(10):
            protocol.dataReceived(b"\r\n")
            self.clock.advance(1)
        self.assertEqual(statusLine(transport), b"HTTP/1.1 408 Request Time-out")

    def test_connectionCloseAmongOtherTokens(self) -> None:
        """
        C{Connection: close, x} closes the connection after the answer, as
        a bare C{close} does (Twisted only splits on spaces).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close, X-Other\r\n\r\n")
        self.clock.advance(0)
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_deadlineRestartsForEachRequest(self) -> None:
        """
        On a keep-alive connection every request gets the whole head deadline
        from its own first byte.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(8)
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n")
        self.clock.advance(9)
        self.assertNotIn(b"408", transport.value())
        self.clock.advance(1)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_silentConnectionTimesOut(self) -> None:
        """
        A connection that sends nothing is closed after the idle timeout.
        """
        protocol, transport = self.connect()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_keepAliveIdleTimeout(self) -> None:
        """
        After a complete exchange, the connection stays open for the idle
        timeout, then closes; no head deadline is left running.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)  # the site sends at the end of the reactor's pass
        self.assertEqual(statusLine(transport), b"HTTP/1.1 200 OK")
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_idleAfterPausedAnswerGetsNo408(self) -> None:
        """
        A request answered while the client's buffer was full (the channel
        paused at its end), then taken: the connection is idle, not in a
        head, until the client's next byte.  Resuming ran the head deadline
        for zero bytes, and an unasked 408 went out one head timeout later,
        to be read as the answer to the next request.
        """
        protocol, transport = self.connect()
        protocol._channel.pauseProducing()  # the client's buffer is full
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        protocol._channel.resumeProducing()  # and the client took it
        answered = transport.value()
        self.assertEqual(statuses(transport), [b"200"])
        self.clock.advance(10)
        self.assertEqual(transport.value(), answered)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200", b"200"])
        self.clock.advance(30)  # idle: closed quietly
        self.assertTrue(transport.disconnecting)
        self.assertEqual(statuses(transport), [b"200", b"200"])
        self.assertNotIn("header_timeouts", self.site.stats.counters)

    def test_pipelinedHeldWhilePausedGetsNo408(self) -> None:
        """
        Requests pipelined behind one still being answered, which ends
        while the client's buffer is full, are held unread; their head
        deadline runs from when they are read, not while the server holds
        them (a complete request got a 408 when the client took over the
        head timeout to read the answer before it).
        """
        hanging = Hanging()
        clock, site, connect = inMemory(Limits(headerTimeout=10), api={b"hang": hanging})
        self.addCleanup(site.stopFactory)
        protocol, transport = connect()
        protocol.dataReceived(b"GET /api/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET /healthz HTTP/1.1\r\n")
        clock.advance(0)
        protocol._channel.pauseProducing()  # the client's buffer is full
        [request] = hanging.requests
        request.setHeader(b"content-length", b"2")
        request.write(b"ok")
        request.finish()
        clock.advance(0)
        self.assertTrue(protocol._channel.paused)
        clock.advance(20)
        self.assertEqual(statuses(transport), [b"200"])
        protocol._channel.resumeProducing()  # and the client took it
        clock.advance(0)
        self.assertEqual(statuses(transport), [b"200", b"200", b"200"])
        # The unfinished head is timed from then.
        clock.advance(9)
        self.assertEqual(statuses(transport), [b"200", b"200", b"200"])
        clock.advance(1)
        self.assertEqual(statuses(transport), [b"200", b"200", b"200", b"408"])

    def test_requestLineTooLong(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n")
        self.assertEqual(statusLine(transport), b"HTTP/1.1 414 Request-URI Too Long")
        self.assertTrue(transport.disconnecting)
        head, body = transport.value().split(b"\r\n\r\n", 1)
        self.assertEqual(json.loads(body)["status"], 414)
        # Dated, as RFC 9110 6.6.1 wants of a 4xx (it had no date).
        self.assertRegex(head, rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} [\d:]{8} GMT\r\n")
        self.assertIn(b"\r\nServer: ", head)

    def test_headerLineTooLong(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n")
        self.assertTrue(statusLine(transport).startswith(b"HTTP/1.1 431 "))

    def test_tooManyHeaders(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(6)))
        self.assertTrue(statusLine(transport).startswith(b"HTTP/1.1 431 "))

    def test_headerBlockTooLarge(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"y" * 195) for i in range(5)))
        self.assertTrue(statusLine(transport).startswith(b"HTTP/1.1 431 "))

    def test_fiveHeadersAllowed(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(4)) + b"\r\n"
        )
        self.clock.advance(0)
        self.assertEqual(statusLine(transport), b"HTTP/1.1 200 OK")

    def test_declaredBodyTooLarge(self) -> None:
        """
        A Content-Length over the limit is refused with 413 before the body
        is read (and before any 100 Continue).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 101\r\n\r\n"
        )
        self.assertEqual(statusLine(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_chunkedBodyTooLarge(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(3):
            protocol.dataReceived(b"28\r\n" + b"x" * 40 + b"\r\n")
        self.assertEqual(statusLine(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertTrue(transport.disconnecting)

    def test_conflictingLengthsRejected(self) -> None:
        """
        Content-Length together with Transfer-Encoding (request smuggling)
        is a 400, in either order, and so are two Content-Lengths.
        """
        for headers in (
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            b"Content-Length: 5\r\nContent-Length: 6\r\n",
            b"Content-Length: +5\r\n",
            b"Transfer-Encoding: gzip, chunked\r\n",
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(b"POST /api/echo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nhello")
            self.assertEqual(statusLine(transport), b"HTTP/1.1 400 Bad Request", headers)


class Guarded(JSONResource):
    """
    Wants C{Authorization: yes} and bodies of at most 10 bytes, checked
    from the head; records the lengths its head check saw, and answers a
    POST with the body's length.
    """

    def __init__(self, fail: bool = False) -> None:
        JSONResource.__init__(self)
        self.checked: list[int | None] = []
        self.fail = fail

    def checkHead(self, request, length) -> None:
        self.checked.append(length)
        if self.fail:
            raise ValueError("a bug")
        if request.getHeader(b"authorization") != b"yes":
            request.setHeader(b"WWW-Authenticate", b'Basic realm="x"')
            raise APIError(401, "say yes")
        if length is not None and length > 10:
            raise APIError(413, f"{length} bytes is too many")

    def json_POST(self, request) -> dict:
        return {"length": len(request.content.read())}


class HeadCheckTests(SynchronousTestCase):
    """
    A resource's C{checkHead} refuses a request with a body from its head
    (before the 100 Continue and before the body is read), as nginx
    answers a 401 or a 413; a request it lets pass goes on as before.
    """

    def setUp(self) -> None:
        self.guarded = Guarded()
        self.clock, self.site, self.connect = inMemory(api={b"guarded": self.guarded})

    def test_refusedFromTheHead(self) -> None:
        for head, status in (
            (b"Content-Length: 5\r\n", b"401 Unauthorized"),
            (b"Authorization: yes\r\nContent-Length: 11\r\n", b"413 Request Entity Too Large"),
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + head + b"\r\n"
            )
            self.assertEqual(statusLine(transport), b"HTTP/1.1 " + status)
            self.assertNotIn(b"100 Continue", transport.value())
            self.assertTrue(transport.disconnecting)
            head, _, body = transport.value().partition(b"\r\n\r\n")
            self.assertIn(b"\r\nContent-Type: application/json; charset=utf-8\r\n", head)
            self.assertIn(b"\r\nCache-Control: no-store\r\n", head)
            self.assertEqual(head.count(b"\r\nContent-Type:"), 1)
            self.assertEqual(json.loads(body)["status"], int(status[:3]))
        self.assertEqual(self.guarded.checked, [5, 11])

    def test_challengeSent(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        self.assertIn(b'\r\nWWW-Authenticate: Basic realm="x"\r\n', transport.value())
        self.assertEqual(self.site.stats.counters.get("refused_401"), 1)

    def test_passedGoesOn(self) -> None:
        """
        A head the resource lets pass gets its 100 Continue, and its body
        is read and answered; a chunked body's length is not known
        (L{None}); a request without a body is not checked from its head.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n"
            b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        self.clock.advance(0)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        protocol.dataReceived(b"hello")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"100", b"200"])
        self.assertTrue(transport.value().endswith(b'{"length": 5}'))
        protocol.dataReceived(
            b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"100", b"200", b"200", b"200"])
        self.assertEqual(self.guarded.checked, [5, None])

    def test_otherPathsAndBadTargetsNotChecked(self) -> None:
        """
        Only the resource the request goes to is asked; a target that is
        not one is left to the usual 400.
        """
        for target, status in ((b"/api/echo", b"200"), (b"/api/guarded/below", b"404"), (b"api/guarded", b"400")):
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b"
            )
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [status], target)
        self.assertEqual(self.guarded.checked, [])

    def test_everySpellingOfThePathChecked(self) -> None:
        """
        A path the site reads as the resource's (C{//api/x}, C{/api/./x})
        is checked from its head as the resource's: it went round the
        check, and a resource that checked only there was open.
        """
        for target in (b"//api/guarded", b"/api//guarded", b"/api/./guarded", b"/./api/guarded"):
            protocol, transport = self.connect()
            protocol.dataReceived(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            self.assertEqual(statusLine(transport), b"HTTP/1.1 401 Unauthorized", target)
        self.assertEqual(len(self.guarded.checked), 4)

    def test_headRefusedWithoutABody(self) -> None:
        """
        A HEAD refused from its head (or for its declared length) gets the
        head of the refusal only: an answer to a HEAD has no body.
        """
        for head in (b"Content-Length: 5\r\n", b"Authorization: yes\r\nContent-Length: 2000000\r\n"):
            protocol, transport = self.connect()
            protocol.dataReceived(b"HEAD /api/guarded HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            answer = transport.value()
            self.assertIn(answer[9:12], (b"401", b"413"))
            self.assertTrue(answer.endswith(b"\r\n\r\n"), answer)
            self.assertIn(b"\r\nContent-Length: ", answer)

    def test_nothingTheCheckSetStays(self) -> None:
        """
        Headers and a status a check sets before it lets a request pass
        are not on the answer.
        """

        def setsAndPasses(request, length) -> None:
            request.setHeader(b"WWW-Authenticate", b'Basic realm="x"')
            request.setResponseCode(401)

        self.guarded.checkHead = setsAndPasses
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200"])
        self.assertNotIn(b"WWW-Authenticate", transport.value())

    def test_statusSetByAPassingCheckDoesNotStay(self) -> None:
        """
        A resource that never sets its status answers 200 after a check
        that set one and let the request pass.
        """

        class Plain(Resource):
            isLeaf = True

            def checkHead(self, request, length) -> None:
                request.setResponseCode(401)

            def render_POST(self, request) -> bytes:
                return b"ran\n"

        self.clock, self.site, self.connect = inMemory(api={b"plain": Plain()})
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /api/plain HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200"])

    def test_malformedHostLeftToThe400(self) -> None:
        """
        A request whose C{Host} is malformed is not checked: it gets the
        usual 400.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /api/guarded HTTP/1.1\r\nHost: a b\r\nContent-Length: 2\r\n\r\nhi")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"400"])
        self.assertEqual(self.guarded.checked, [])

    def test_echoRefusesOverItsOwnLimitFromTheHead(self) -> None:
        """
        An C{EchoResource} with a limit below the site's refuses a longer
        declared body from its head.
        """
        self.clock, self.site, self.connect = inMemory(api={b"small": EchoResource(maxBody=10)})
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"POST /api/small HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        )
        self.assertEqual(statusLine(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertNotIn(b"100 Continue", transport.value())

    def test_failingCheckLoggedAndPassed(self) -> None:
        """
        A head check that fails unexpectedly is logged, and the request
        goes on (the resource answers it as it would have).
        """
        self.guarded.fail = True
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /api/guarded HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class Probe(Resource):
    """
    Records every request that reaches it (any method) and answers
    C{ran}.
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.requests: list[tuple[bytes, bytes, bytes | None]] = []

    def render(self, request) -> bytes:
        self.requests.append((request.method, request.path, request.getHeader(b"host")))
        return b"ran\n"


async def waitForNoConnections(testCase: TestCase, service) -> None:
    """
    Wait until C{service} has seen every connection end; fail C{testCase}
    after 5 s.
    """
    for _ in range(500):
        if service.stats.connectionsOpen == 0:
            return
        await deferLater(reactor, 0.01, lambda: None)
    testCase.fail("the server kept a connection open")


@contextmanager
def tlsClient(port: int, cadata: str) -> Iterator[ssl.SSLSocket]:
    """
    A blocking stdlib TLS connection to C{127.0.0.1:port}, verifying
    C{localhost} against C{cadata}; every socket operation times out.
    """
    context = ssl.create_default_context(cadata=cadata)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            yield tls


def statuses(transport: StringTransport) -> list[bytes]:
    return re.findall(rb"HTTP/1\.[01] (\d+)", transport.value())


class RefusalTests(SynchronousTestCase):
    """
    A refused request is never run, whatever the client sends after it.
    Over TLS the connection goes on reading after it is closed (it waits
    for the peer's close_notify): a L{StringTransport}, which takes more
    input after C{loseConnection}, shows the same.
    """

    def setUp(self) -> None:
        self.probe = Probe()
        self.clock, self.site, self.connect = inMemory(
            Limits(maxBody=100, maxRequestLine=200, maxHeaderBytes=1000, maxHeaders=5),
            api={b"probe": self.probe},
        )
        self.addCleanup(self.site.stopFactory)

    def test_contentLengthOfThousandsOfDigits(self) -> None:
        """
        A Content-Length of more digits than int() takes (4,300) is read
        as its number with its leading zeros gone, or is a 413 when no body
        could be that long: Twisted's int() raised, the request went
        unanswered and the log got a traceback.
        """
        clock, site, connect = inMemory(api={b"probe": self.probe})  # lines of 5,000 bytes allowed
        self.addCleanup(site.stopFactory)
        protocol, transport = connect()
        protocol.dataReceived(
            b"POST /api/probe HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 5000 + b"3\r\n\r\nabc"
        )
        clock.advance(0)
        self.assertEqual(statusLine(transport), b"HTTP/1.1 200 OK")
        self.assertEqual(len(self.probe.requests), 1)
        protocol, transport = connect()
        protocol.dataReceived(b"POST /api/probe HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
        clock.advance(0)
        self.assertEqual(statusLine(transport), b"HTTP/1.1 413 Request Entity Too Large")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_obsoleteLineFoldingRefused(self) -> None:
        """
        A header line continued on the next (obsolete line folding) is a
        400, as in nginx (RFC 9112, 5.2), and nothing after it is read:
        Twisted joined it to the header above, so a folded Content-Length
        of thousands of digits reached its int() (a traceback, and no
        answer).
        """
        clock, site, connect = inMemory(api={b"probe": self.probe})  # lines of 5,000 bytes allowed
        self.addCleanup(site.stopFactory)
        for folded in (
            b"Content-Length:\r\n " + b"0" * 5000 + b"2",
            b"Content-Length:\r\n\t" + b"9" * 4400,
            b"X-Long: a\r\n  continued",
        ):
            protocol, transport = connect()
            protocol.dataReceived(b"POST /api/probe HTTP/1.1\r\nHost: x\r\n" + folded + b"\r\n\r\n{}")
            protocol.dataReceived(b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n")
            clock.advance(0)
            self.assertEqual(statuses(transport), [b"400"], folded)
            self.assertIn(b"obsolete line folding", transport.value())
            self.assertTrue(transport.disconnecting)
        # The first header line too (folded onto the request line).
        protocol, transport = connect()
        protocol.dataReceived(b"GET /api/probe HTTP/1.1\r\n\tHost: x\r\n\r\n")
        clock.advance(0)
        self.assertEqual(statuses(transport), [b"400"])
        self.assertIn(b"obsolete line folding", transport.value())
        self.assertEqual(self.probe.requests, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_badHeaderLineThenMoreInput(self) -> None:
        """
        A malformed header line that is not the last one gets a 400, and
        the request is not run when more bytes come (Twisted went on
        parsing, and ran the DELETE it had refused).
        """
        for bad in (b"Bad Header Without Colon", b"Sp ace: x", b"X-Nul: a\x00b"):
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"DELETE /api/probe HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n"
                b"Authorization: Bearer secret\r\n\r\n"
            )
            self.assertTrue(transport.disconnecting)
            for more in (b"\r\n", b"x", b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n"):
                protocol.dataReceived(more)
            self.clock.advance(0)
            self.assertEqual(self.probe.requests, [], bad)
            self.assertEqual(statuses(transport), [b"400"], bad)
            body = transport.value().split(b"\r\n\r\n", 1)[1]
            self.assertEqual(json.loads(body)["status"], 400)

    def test_badRequestLineThenMoreInput(self) -> None:
        """
        After a malformed request line, more lines are ignored (Twisted
        parsed them as that request's headers and failed with an
        AttributeError at their end).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.x\r\nHost: x\r\n\r\n")
        for _ in range(3):
            protocol.dataReceived(b"X: y\r\n\r\n")
        self.assertEqual(statuses(transport), [b"400"])
        self.assertTrue(transport.disconnecting)

    def test_transferEncodingOtherThanChunked(self) -> None:
        """
        Any Transfer-Encoding but C{chunked} is a 400 that closes the
        connection (RFC 9112, 6.3), with or without a Content-Length:
        C{identity} was accepted, and without a length its body was read as
        the next request.
        """
        for value in (b"identity", b"Identity", b"gzip"):
            for length in (b"Content-Length: 7\r\n", b""):
                protocol, transport = self.connect()
                protocol.dataReceived(
                    b"POST /api/probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + value
                    + b"\r\n" + length + b"\r\nGET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                self.clock.advance(0)
                self.assertEqual(statuses(transport), [b"400"], (value, length))
                self.assertTrue(transport.disconnecting)
        self.assertEqual(self.probe.requests, [])

    def test_transferEncodingInHTTP10(self) -> None:
        """
        An HTTP/1.0 request with C{Transfer-Encoding} has faulty framing
        (RFC 9112, 6.1): a 400 that closes the connection, the request not
        run (its body was decoded as chunked and the request run).  The
        same request in HTTP/1.1 is run.
        """
        for version, expected in ((b"HTTP/1.0", [b"400"]), (b"HTTP/1.1", [b"200"])):
            protocol, transport = self.connect()
            protocol.dataReceived(
                b"POST /api/probe " + version + b"\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n"
            )
            self.clock.advance(0)
            self.assertEqual(statuses(transport), expected, version)
        self.assertEqual(len(self.probe.requests), 1)
        protocol, transport = self.connect()
        protocol.dataReceived(b"POST /api/probe HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        body = transport.value().split(b"\r\n\r\n", 1)[1]
        self.assertEqual(json.loads(body), {"error": "Transfer-Encoding in an HTTP/1.0 request", "status": 400})

    def test_bareLineFeed(self) -> None:
        """
        A head whose lines end with a bare LF gets a 400 at once, whether
        every line does (the client waited 15 s for the 408) or one line
        among CRLF-ended ones; the request is not run.  CRLF split across
        reads, and pipelined requests, are still read.
        """
        for head in (
            b"GET /api/probe HTTP/1.1\nHost: x\n\n",
            b"GET /api/probe HTTP/1.1\n",
            b"GET /api/probe HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
            b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\n",
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(head)
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [b"400"], head)
            self.assertIn(b"bare LF", transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.probe.requests, [])

        protocol, transport = self.connect()
        request = b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n"
        for data in (request[:15], request[15:24], request[24:] + request):
            protocol.dataReceived(data)
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200", b"200"])
        self.assertFalse(transport.disconnecting)

    def test_pipelinedRequestGetsTheSameChecks(self) -> None:
        """
        A request that comes in the same read as the one before it gets
        the checks a request alone gets: Transfer-Encoding other than
        chunked (it was smuggled through: its "body" ran as a request), the
        header limits, bare LF, and the head deadline.
        """
        answered = b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n"
        for second, status in (
            (b"POST /api/probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"
             b"DELETE /api/probe HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
            (b"GET /api/probe HTTP/1.1\r\nHost: x\r\n"
             + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 190) for i in range(6)) + b"\r\n", b"431"),
            (b"GET /api/probe HTTP/1.1\nHost: x\n\n", b"400"),
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(answered + second)
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [b"200", status], second)
            self.assertTrue(transport.disconnecting)
        self.assertEqual([method for method, _, _ in self.probe.requests], [b"GET"] * 3)

        protocol, transport = self.connect()
        protocol.dataReceived(answered + b"GET /api/probe HTTP/1.1\r\nHo")
        self.clock.advance(15)
        self.assertEqual(statuses(transport), [b"200", b"408"])

    def test_pipelinedAfterBody(self) -> None:
        """
        A request in the same read after a request's body (a length or
        chunked) is answered: its CRLFs, not yet parsed when the body
        ended, are not taken for bare LFs.
        """
        for first in (
            b"POST /api/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /api/probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(first + b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n")
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [b"200", b"200"], first)
            self.assertFalse(transport.disconnecting)

    def test_chunkedBodyRefusedAtOnce(self) -> None:
        """
        A chunked body is refused on the line that is wrong, not after the
        idle timeout (Twisted waited for a CRLF, or for a chunk's bytes):
        a bare LF ending a chunk-size line, a chunk or a trailer line gets
        a 400; chunk sizes adding up to more than the body limit (28 hex
        digits, for one) a 413, before their bytes.  The request is not
        run.  A well-formed body split across reads at every byte is read.
        """
        head = b"POST /api/probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body, status in (
            (b"5\n", b"400"),
            (b"5;ext=1\nhello\r\n", b"400"),
            (b"\n", b"400"),
            (b"5\r\nhello\n", b"400"),
            (b"5\r\nhelloX", b"400"),
            (b"0\r\nX-Trailer: 1\n", b"400"),
            (b"0\r\n\n", b"400"),
            (b"1" * 28 + b"\r\n", b"413"),
            (b"65\r\n", b"413"),
            (b"32\r\n" + b"x" * 50 + b"\r\n33\r\n", b"413"),
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(head + body)
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [status], body)
            self.assertTrue(transport.disconnecting, body)
            if status == b"400":
                self.assertIn(b"chunked body", transport.value(), body)
        self.assertEqual(self.probe.requests, [])

        protocol, transport = self.connect()
        request = head + b"32\r\n" + b"x" * 50 + b"\r\n32;a=b\r\n" + b"y" * 50 + b"\r\n0\r\nX-T: 1\r\n\r\n"
        for i in range(len(request)):
            protocol.dataReceived(request[i : i + 1])
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200"])
        self.assertEqual(len(self.probe.requests), 1)
        self.assertFalse(transport.disconnecting)

    def test_nothingReadAfterIdleTimeout(self) -> None:
        """
        A request sent after the idle timeout closed the connection is not
        run (over TLS it was, a line a read).
        """
        protocol, transport = self.connect()
        self.clock.advance(60)
        self.assertTrue(transport.disconnecting)
        for line in (b"DELETE /api/probe HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n", b"x"):
            protocol.dataReceived(line)
        self.clock.advance(0)
        self.assertEqual(self.probe.requests, [])
        self.assertEqual(transport.value(), b"")

    def test_refusalTimerEndsWithTheConnection(self) -> None:
        """
        A refused connection is aborted 10 s later if the peer has not
        taken its answer; once it is closed, nothing is left to fire (the
        timer aborted a TLS connection already gone: a traceback).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n")
        self.assertEqual(statuses(transport), [b"431"])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if getattr(call.func, "__name__", "") == "_abortUntaken"],
            [],
        )

        self.patch(siteModule, "unsentBytes", lambda transport: 100)
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n")
        self.clock.advance(9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_refusalTakenIsLeftToTheListener(self) -> None:
        """
        A refused client that took its answer is not aborted 10 s later:
        netsuite's listener ends its connection once it closes too, or
        lingers no more (an upload over the limit may still be coming, and
        a reset could lose the answer before the client read it).
        """
        self.patch(siteModule, "unsentBytes", lambda transport: 0)
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n")
        self.assertEqual(statuses(transport), [b"431"])
        self.clock.advance(30)
        self.assertFalse(transport.disconnected)
        self.assertNotIn("_abortUntaken", [getattr(call.func, "__name__", "") for call in self.clock.getDelayedCalls()])

    def test_hostRequired(self) -> None:
        """
        An HTTP/1.1 request without a Host, or any request with two Host
        lines or a malformed one, is a 400 (RFC 9112, 3.2); HTTP/1.0 may
        go without.
        """
        for head in (
            b"GET /api/probe HTTP/1.1\r\n",
            b"GET /api/probe HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
            b"GET /api/probe HTTP/1.0\r\nHost: a\r\nHost: a\r\n",
            b"GET /api/probe HTTP/1.1\r\nHost: a/b\r\n",
            b"GET /api/probe HTTP/1.1\r\nHost: u@a\r\n",
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(head + b"\r\n")
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [b"400"], head)
            self.assertIn(b"Host", transport.value())
        self.assertEqual(self.probe.requests, [])
        # The refusal closes the connection, as the others do (the next
        # pipelined request was served).
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET /api/probe HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /api/probe HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"400"])
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.probe.requests, [])
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/probe HTTP/1.0\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200"])

    def test_absoluteFormTarget(self) -> None:
        """
        An absolute URL as the target (which servers must accept, RFC 9112,
        3.2.2) is served as its path, with its authority as the Host (the
        first character of the path was dropped: a 404).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            b"GET HTTP://example.com:8080/api/probe?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"
            b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        self.clock.advance(0)
        self.assertEqual(statuses(transport), [b"200", b"200"])
        self.assertEqual(self.probe.requests, [(b"GET", b"/api/probe", b"example.com:8080")])
        self.assertIn(b"<title>netsuite</title>", transport.value())

    def test_malformedTarget(self) -> None:
        """
        A target that is neither a path, C{*} nor an absolute http(s) URL
        is a 400 (C{x/api/probe} was served as C{/api/probe}).
        """
        for target in (
            b"x/api/probe",
            b"http://u@x/api/probe",
            b"http:///api/probe",
            b"ftp://x/api/probe",
            # Not visible ASCII; Twisted refuses 0xB1 and above itself.
            b"/api/probe\x7f",
            b"/api/probe\x80",
            b"/api/probe\xb0",
        ):
            protocol, transport = self.connect()
            protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            self.clock.advance(0)
            self.assertEqual(statuses(transport), [b"400"], target)
        self.assertEqual(self.probe.requests, [])


class Hanging(Resource):
    """
    Answers nothing (C{/api/hang}), or a head and C{b"partial"} of a body it
    never ends (C{/api/hang?partial=1}); keeps every request in C{requests},
    for a test to answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)
        self.requests: list = []

    def render(self, request):
        self.requests.append(request)
        if request.args.get(b"partial") is not None:
            request.setHeader(b"content-length", b"100")
            request.write(b"partial")
        return NOT_DONE_YET


class RefusalLogTests(SynchronousTestCase):
    """
    A request refused while it is being received gets its access-log line
    with the status it was answered (as nginx logs its 400, 408 and 413;
    there was no line), and a body that stops coming gets a 408 (the
    connection was closed without an answer).
    """

    def setUp(self) -> None:
        self.accessLog = os.path.abspath(self.mktemp())
        self.clock, self.site, self.connect = inMemory(
            Limits(maxBody=100, idleTimeout=30), accessLog=self.accessLog
        )
        self.addCleanup(self.site.stopFactory)

    def refused(self, data: bytes, wait: float = 0) -> tuple[bytes, str]:
        """
        Send C{data} on a new connection, let C{wait} seconds pass: the
        answer, and the one access-log line written.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        self.clock.advance(wait)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(1)  # the access log is written once a second
        with open(self.accessLog) as f:
            [line] = f.read().splitlines()
        return transport.value(), line

    def test_bodyTooLarge(self) -> None:
        answer, line = self.refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "))
        self.assertIn('"POST /api/echo HTTP/1.1" 413 ', line)

    def test_bodyStalled(self) -> None:
        answer, line = self.refused(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
            b"Content-Type: application/json\r\nUser-Agent: t\r\n\r\nabc",
            wait=31,
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "))
        self.assertIn(b"stopped coming", answer)
        self.assertIn('"POST /api/echo HTTP/1.1" 408 ', line)
        self.assertIn('"t"', line)

    def test_malformedChunk(self) -> None:
        answer, line = self.refused(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "))
        self.assertIn('"POST /api/echo HTTP/1.1" 400 ', line)

    def test_malformedHeader(self) -> None:
        answer, line = self.refused(b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "))
        self.assertIn('"GET /x HTTP/1.1" 400 ', line)

    def test_malformedRequestLine(self) -> None:
        """
        A request line that does not parse is logged as it came, escaped
        as Twisted escapes log fields (nginx logs C{"GARBAGE" 400}); there
        was no line.
        """
        answer, line = self.refused(b'GARBAGE \x16\x03 "q" \\\r\nHost: x\r\n\r\n')
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "))
        self.assertRegex(line, r'^"192\.168\.1\.1" - - \[[^]]+\] "GARBAGE \\x16\\x03 \\"q\\" \\\\" 400 \d+ "-" "-"$')

    def test_notAnHTTPRequest(self) -> None:
        """
        Bytes that cannot begin a method (a TLS handshake sent to the plain
        port) are refused at once with a 400, not held until the header
        timeout's 408, and logged as they came; so is a request line cut
        by a bare LF.
        """
        clientHello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))
        for data in (clientHello, b"GET /lf HTTP/1.1\nHost: x\n\n"):
            protocol, transport = self.connect()
            protocol.dataReceived(data)
            self.assertEqual(statuses(transport), [b"400"], data)
            protocol.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(1)
        with open(self.accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'\] "\\x16\\x03\\x01\\x02\\x00[^"]*" 400 ')
        self.assertRegex(lines[1], r'\] "GET /lf HTTP/1\.1" 400 ')

    def test_requestLineTooLong(self) -> None:
        """
        A request line over the limit is logged with its 414, as it came up
        to the limit (as nginx logs its 414), and counted among the
        requests in C{/metrics}; it had no line, and only an event count.
        """
        answer, line = self.refused(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 414 "))
        self.assertRegex(line, r'\] "GET /a{8187}" 414 \d+ "-" "-"$')
        counted = {key: n for key, n in self.site.metrics._requests.items() if n}
        self.assertEqual(counted, {("GET", "414"): 1})

    def test_malformedRequestLineAfterAnAnswer(self) -> None:
        """
        On a kept-alive connection, a malformed request line after an
        answered request is logged as itself, not as the request before.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\nNOT A REQUEST LINE\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(1)
        with open(self.accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn('"GET /x HTTP/1.1" 404 ', lines[0])
        self.assertIn('"NOT A REQUEST LINE" 400 ', lines[1])

    def test_slowAnswerIsNotABodyStall(self) -> None:
        """
        A request whose body is complete and whose answer is slow is not
        refused with a 408 at the idle timeout.
        """
        self.site.resource.putChild(b"hang", Hanging())
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(31)
        self.assertNotIn(b"408", transport.value())


class AbortedRequestLogTests(SynchronousTestCase):
    """
    A request whose client goes away before the answer is finished gets
    its access-log line and metrics as nginx writes them: 499 when nothing
    was sent, else the status and the bytes sent (there was no line).
    """

    def setUp(self) -> None:
        self.accessLog = os.path.abspath(self.mktemp())
        self.clock, self.site, self.connect = inMemory(accessLog=self.accessLog, api={b"hang": Hanging()})
        self.addCleanup(self.site.stopFactory)

    def logged(self) -> list[str]:
        self.clock.advance(1)  # the access log is written once a second
        with open(self.accessLog) as f:
            return f.read().splitlines()

    def test_goneBeforeTheAnswer(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/hang HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n")
        self.clock.advance(0)
        self.assertEqual(self.logged(), [])
        protocol.connectionLost(Failure(ConnectionDone()))
        [line] = self.logged()
        self.assertIn('"GET /api/hang HTTP/1.1" 499 - "-" "t"', line)
        self.assertEqual(self.site.stats.counters["requests"], 1)
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        self.assertIn(b'netsuite_http_requests_total{method="GET",status="499"} 1.0', transport.value())

    def test_goneInTheMiddleOfTheAnswer(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/hang?partial=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        self.assertIn(b"partial", transport.value())
        protocol.connectionLost(Failure(ConnectionDone()))
        [line] = self.logged()
        self.assertIn('"GET /api/hang?partial=1 HTTP/1.1" 200 7 ', line)

    def test_finishedAnswersLoggedOnce(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        protocol.connectionLost(Failure(ConnectionDone()))
        [line] = self.logged()
        self.assertIn('"GET /healthz HTTP/1.1" 200 ', line)


class GracefulCloseTests(SynchronousTestCase):
    """
    A stopping service asks each HTTP connection to close gracefully: an
    idle one closes at once, one with an answer in hand after that answer.
    """

    def setUp(self) -> None:
        self.held = Hanging()
        self.clock, self.site, self.connect = inMemory(api={b"hang": self.held})
        self.addCleanup(self.site.stopFactory)

    def test_http1AnswerInHandIsFinishedFirst(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        protocol.closeGracefully()
        self.assertFalse(transport.disconnecting)
        [request] = self.held.requests
        request.write(b"done")
        request.finish()
        self.clock.advance(0)
        self.assertTrue(transport.value().endswith(b"done\r\n0\r\n\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_http1IdleClosesAtOnce(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        protocol.closeGracefully()
        self.assertTrue(transport.disconnecting)


class Unsized(Resource):
    """
    Answers C{some body} written, not returned: no C{Content-Length}.
    """

    isLeaf = True

    def render(self, request):
        request.write(b"some body")
        request.finish()
        return NOT_DONE_YET


class HalfCloseTests(SynchronousTestCase):
    """
    The end of a client's input, in memory (see the socket tests too).
    """

    def test_pausedPipelinedThenEndOfInput(self) -> None:
        """
        Requests pipelined while the client did not read, then the end of
        its input: each is answered once it reads again, then the
        connection closes (not before).
        """
        clock, site, connect = inMemory()
        self.addCleanup(site.stopFactory)
        protocol, transport = connect()
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(0)
        protocol._channel.pauseProducing()  # the client stops reading
        protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        clock.advance(0)
        protocol.readConnectionLost()
        clock.advance(0)
        self.assertFalse(transport.disconnecting)
        protocol._channel.resumeProducing()
        clock.advance(0)
        self.assertEqual(transport.value().count(b"200 OK"), 4)
        self.assertTrue(transport.disconnecting)

    def test_idleOrUnfinishedEndOfInput(self) -> None:
        """
        The end of input of an idle connection, or in the middle of a
        request head, closes at once.
        """
        for sent in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHo"):
            clock, site, connect = inMemory()
            self.addCleanup(site.stopFactory)
            protocol, transport = connect()
            protocol.dataReceived(sent)
            clock.advance(0)
            protocol.readConnectionLost()
            self.assertTrue(transport.disconnecting, sent)


class BodyFilesTests(SynchronousTestCase):
    """
    Request bodies are kept in memory up to L{site.BODY_IN_MEMORY}; a
    larger one goes to a temporary file, one of at most L{site.BODY_FILES}
    at once (each a file descriptor no connection limit counts); past them
    a larger body is refused, 503.  Twisted gave every body of 100,000
    bytes or more, and every chunked one, a temporary file: 100 streams of
    an HTTP/2 connection took 100 descriptors, and 200 connections ran the
    process out of them.
    """

    def setUp(self) -> None:
        self.patch(siteModule, "BODY_FILES", 2)
        self.hanging = Hanging()
        self.clock, self.site, self.connect = inMemory(api={b"hang": self.hanging})
        self.addCleanup(self.site.stopFactory)

    def upload(self, body: bytes, chunked: bool = False) -> tuple[object, StringTransport]:
        protocol, transport = self.connect()
        if chunked:
            head = b"POST /api/hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            protocol.dataReceived(head + b"%x\r\n" % len(body) + body + b"\r\n")
        else:
            head = b"POST /api/hang HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (len(body) + 10)
            protocol.dataReceived(head + body)
        self.clock.advance(0)
        return protocol, transport

    def test_smallBodiesInMemory(self) -> None:
        for chunked in (False, True):
            protocol, transport = self.upload(b"x" * siteModule.BODY_IN_MEMORY, chunked)
            self.assertIsInstance(protocol._channel.requests[-1].content, io.BytesIO)
        self.assertEqual(self.site.bodyFiles, 0)

    def test_largeBodiesInFilesAtMostSoMany(self) -> None:
        large = b"x" * (siteModule.BODY_IN_MEMORY + 1)
        first, _ = self.upload(large)
        self.upload(large, chunked=True)
        self.assertEqual(self.site.bodyFiles, 2)
        _, refused = self.upload(large)
        self.assertTrue(statusLine(refused).startswith(b"HTTP/1.1 503 "), refused.value()[:100])
        self.assertIn(b"Retry-After: 1", refused.value())
        self.assertEqual(self.site.bodyFiles, 2)
        self.assertEqual(self.site.stats.counters["body_files_refused"], 1)
        # A body complete in its file is read whole; closing it frees its place.
        request = first._channel.requests[-1]
        first.dataReceived(b"y" * 10)
        self.clock.advance(0)
        [received] = [r for r in self.hanging.requests if r is request]
        self.assertEqual(received.content.read(), large + b"y" * 10)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.site.bodyFiles, 1)
        self.upload(large)
        self.assertEqual(self.site.bodyFiles, 2)

    def test_atMostSoManyForOneAddress(self) -> None:
        """
        One client address gets at most L{site.BODY_FILES_PER_HOST} of
        them: one client that stopped its bodies held all 64, and every
        other client's large upload got a 503.
        """
        self.patch(siteModule, "BODY_FILES", 4)
        self.patch(siteModule, "BODY_FILES_PER_HOST", 2)
        large = b"x" * (siteModule.BODY_IN_MEMORY + 1)
        self.upload(large)
        self.upload(large)
        _, refused = self.upload(large)
        self.assertTrue(statusLine(refused).startswith(b"HTTP/1.1 503 "), refused.value()[:100])
        self.assertIn(b"more than 2 request bodies are being received from your address", refused.value())
        other = IPv4Address("TCP", "10.0.0.2", 40000)
        protocol = self.site.buildProtocol(other)
        protocol.makeConnection(StringTransport(peerAddress=other))
        protocol.dataReceived(b"POST /api/hang HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(large) + large)
        self.clock.advance(0)
        self.assertEqual(self.site.bodyFiles, 3)
        self.assertEqual(self.site.bodyFilesByHost, {"192.168.1.1": 2, "10.0.0.2": 1})
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.site.bodyFilesByHost, {"192.168.1.1": 2})

    def test_noTemporaryFile(self) -> None:
        """
        A temporary file that cannot be made (out of descriptors, or of
        disk) is a 503 too, not an unhandled error.
        """

        def cannot() -> None:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        self.patch(siteModule.tempfile, "TemporaryFile", cannot)
        _, refused = self.upload(b"x" * (siteModule.BODY_IN_MEMORY + 1))
        self.assertTrue(statusLine(refused).startswith(b"HTTP/1.1 503 "), refused.value()[:100])
        self.assertIn(b"Too many open files", refused.value())
        self.assertEqual(self.site.bodyFiles, 0)


class VersionTests(SynchronousTestCase):
    """
    Every HTTP/1.x answer says C{HTTP/1.1} (RFC 9110, 6.2: the server's own
    version), and its C{Connection} header says whether the connection
    goes on, as nginx writes them; an HTTP/1.0 client keeps its connection
    with C{Connection: keep-alive} (as C{ab -k} asks).
    """

    def setUp(self) -> None:
        self.held = Hanging()
        self.probe = Probe()
        self.clock, self.site, self.connect = inMemory(api={b"hang": self.held, b"probe": self.probe})
        self.addCleanup(self.site.stopFactory)

    def exchange(self, data: bytes) -> tuple[bytes, StringTransport]:
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        self.clock.advance(0)
        return transport.value(), transport

    def test_http10AnsweredAsHTTP11ThenClosed(self) -> None:
        """
        An HTTP/1.0 request without C{keep-alive} is answered with an
        HTTP/1.1 status line and C{Connection: close} (it had an HTTP/1.0
        one and no C{Connection}), then the connection closes.
        """
        for connection in (b"", b"Connection: close\r\n", b"Connection: keep-alive, close\r\n"):
            answer, transport = self.exchange(b"GET /api/probe HTTP/1.0\r\n" + connection + b"\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
            self.assertIn(b"\r\nConnection: close\r\n", answer)
            self.assertTrue(transport.disconnecting, connection)

    def test_http10KeepAlive(self) -> None:
        """
        An HTTP/1.0 request with C{Connection: keep-alive} gets it back,
        and the connection takes the next request (each was closed).
        """
        protocol, transport = self.connect()
        for path in (b"/api/probe", b"/nothing-here", b"/healthz"):
            transport.clear()
            protocol.dataReceived(b"GET " + path + b" HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            self.clock.advance(0)
            answer = transport.value()
            self.assertTrue(answer.startswith(b"HTTP/1.1 "), answer)
            self.assertIn(b"\r\nConnection: keep-alive\r\n", answer)
            self.assertIn(b"\r\nContent-Length: ", answer)
            self.assertFalse(transport.disconnecting, path)
        self.assertEqual(len(self.probe.requests), 1)

    def test_http10KeepAliveWithoutLengthCloses(self) -> None:
        """
        An answer to an HTTP/1.0 client with a body and no
        C{Content-Length} can only end with the connection (no chunks in
        HTTP/1.0): it says C{Connection: close}, even to C{keep-alive}, and
        the connection closes once it is sent.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/hang HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.clock.advance(0)
        [request] = self.held.requests
        request.write(b"some")
        request.write(b" body")
        request.finish()
        self.clock.advance(0)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertNotIn(b"chunked", answer)
        self.assertTrue(answer.endswith(b"\r\n\r\nsome body"), answer)
        self.assertTrue(transport.disconnecting)

    def test_http10KeepAliveWithoutABody(self) -> None:
        """
        An answer with no body (a 204, a 304, one to a HEAD) needs no
        length: an HTTP/1.0 client's keep-alive connection goes on after it.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/hang HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.clock.advance(0)
        [request] = self.held.requests
        request.setResponseCode(204)
        request.finish()
        self.clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 204 "), transport.value())
        self.assertIn(b"\r\nConnection: keep-alive\r\n", transport.value())
        self.assertFalse(transport.disconnecting)
        # Nor does the answer to a HEAD, whatever its length (it closed).
        transport.clear()
        protocol.dataReceived(b"HEAD /api/hang HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.clock.advance(0)
        request = self.held.requests[-1]
        request.write(b"some body")
        request.finish()
        self.clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value())
        self.assertIn(b"\r\nConnection: keep-alive\r\n", transport.value())
        self.assertTrue(transport.value().endswith(b"\r\n\r\n"), transport.value())
        self.assertFalse(transport.disconnecting)

    def test_http11ClosedByTheServerSaysSo(self) -> None:
        """
        An HTTP/1.1 answer after which the server closes (it is stopping)
        says C{Connection: close}, as nginx does; it said nothing.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /api/hang HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0)
        protocol.closeGracefully()
        [request] = self.held.requests
        request.write(b"done")
        request.finish()
        self.clock.advance(0)
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_laterHTTP1ReadAsHTTP11(self) -> None:
        """
        A request of a later HTTP/1 minor version is read as HTTP/1.1, the
        highest this server knows (RFC 9110, 6.2), as nginx reads it: it was
        a 400.  The access log shows its request line as sent (it said
        HTTP/1.1).
        """
        accessLog = os.path.abspath(self.mktemp())
        self.clock, self.site, self.connect = inMemory(accessLog=accessLog, api={b"probe": self.probe})
        self.addCleanup(self.site.stopFactory)
        for version in (b"HTTP/1.2", b"HTTP/1.9"):
            protocol, transport = self.connect()
            protocol.dataReceived(b"GET /api/probe " + version + b"\r\nHost: x\r\n\r\n")
            self.clock.advance(0)
            self.assertEqual(statusLine(transport), b"HTTP/1.1 200 OK", version)
            self.assertFalse(transport.disconnecting, version)
            protocol.dataReceived(b"GET /api/probe " + version + b"\r\n\r\n")
            self.clock.advance(0)
            self.assertIn(b"without a Host header", transport.value())  # as HTTP/1.1 wants
        self.assertEqual(len(self.probe.requests), 2)
        self.clock.advance(1)  # the access log is written once a second
        with open(accessLog) as f:
            logged = re.findall(r'"GET /api/probe (HTTP/[0-9.]+)" (\d+)', f.read())
        self.assertEqual(
            logged, [("HTTP/1.2", "200"), ("HTTP/1.2", "400"), ("HTTP/1.9", "200"), ("HTTP/1.9", "400")]
        )
        # Also when a field must be escaped (Twisted's formatter writes it).
        protocol, transport = self.connect()
        protocol.dataReceived(b'GET /api/probe HTTP/1.2\r\nHost: x\r\nUser-Agent: a"b\r\n\r\n')
        self.clock.advance(1)
        with open(accessLog) as f:
            self.assertIn('"GET /api/probe HTTP/1.2" 200', f.read().splitlines()[-1])

    def test_otherMajorVersionRefused(self) -> None:
        """
        A request line of another major version is a 505 that closes the
        connection, as in nginx (it was a 400 that named nothing).
        """
        for version in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.1", b"HTTP/9.9"):
            answer, transport = self.exchange(b"GET /api/probe " + version + b"\r\nHost: x\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer)
            self.assertIn(b"HTTP version " + version[5:] + b" not supported", answer)
            self.assertTrue(transport.disconnecting)
        for malformed in (b"HTTP/1.10", b"HTTP/11.1", b"HTTP/1", b"http/1.1"):
            answer, transport = self.exchange(b"GET /api/probe " + malformed + b"\r\nHost: x\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (malformed, answer))
        self.assertEqual(self.probe.requests, [])


class QuickStaticTests(SynchronousTestCase):
    """
    A small static file asked for again is answered from the folder's cache
    without resource traversal (L{StaticFolder.quickAnswer}), with exactly
    the answer the usual way gives.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "sub"))
        self.write("hello.txt", b"hello\n")
        self.write("sub/index.html", b"<p>sub</p>")
        self.accessLog = os.path.abspath(self.mktemp())
        self.clock, self.site, self.connect = inMemory(root=self.root, accessLog=self.accessLog)
        self.addCleanup(self.site.stopFactory)
        self.rendered = 0
        render = self.site.static.render

        def counting(request):
            self.rendered += 1
            return render(request)

        self.site.static.render = counting

    def write(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)

    def exchange(self, data: bytes) -> tuple[bytes, StringTransport]:
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        self.clock.advance(0)
        return transport.value(), transport

    def withoutDate(self, response: bytes) -> bytes:
        return re.sub(rb"\r\nDate: [^\r]*", b"", response)

    def test_sameAnswerWithoutTraversal(self) -> None:
        for request in (
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /hello.txt HTTP/1.0\r\n\r\n",
            b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /sub/?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            self.site.static._quick.clear()  # the first answer is the usual way's
            rendered = self.rendered
            first, _ = self.exchange(request)
            self.assertEqual(self.rendered, rendered + 1, request)
            before = self.rendered
            second, transport = self.exchange(request)
            self.assertEqual(self.rendered, before, request)
            self.assertEqual(self.withoutDate(second), self.withoutDate(first))
            self.assertIn(b"\r\nDate: ", second)
            self.assertEqual(transport.disconnecting, b"close" in request or request.endswith(b"1.0\r\n\r\n"))
            self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"), second)
        self.assertTrue(first.endswith(b"<p>sub</p>"))

    def test_loggedAndCounted(self) -> None:
        self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n")
        self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n")
        self.assertEqual(self.rendered, 1)
        self.assertEqual(self.site.stats.counters["requests"], 2)
        metrics, _ = self.exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b'netsuite_http_requests_total{method="GET",status="200"} 2.0', metrics)
        self.clock.advance(1)  # the access log is written once a second
        with open(self.accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], lines[1])
        self.assertIn('"GET /hello.txt HTTP/1.1" 200 6 "-" "t"', lines[1])

    def test_conditionalAndRangedGoTheUsualWay(self) -> None:
        first, _ = self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        etag = re.search(rb"ETag: ([^\r]*)", first).group(1)
        for extra, status in (
            (b"If-None-Match: " + etag, b"304"),
            (b"Range: bytes=0-1", b"206"),
            (b"Accept-Encoding: gzip", b"200"),
            (b"If-Match: \"other\"", b"412"),
        ):
            response, _ = self.exchange(
                b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n\r\n"
            )
            self.assertTrue(response.startswith(b"HTTP/1.1 " + status), response[:40])
        self.assertEqual(self.rendered, 5)
        post, _ = self.exchange(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(post.startswith(b"HTTP/1.1 405"))

    def test_changedFileSeenAfterCacheSeconds(self) -> None:
        self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.write("hello.txt", b"changed, and longer\n")
        response, _ = self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(response.endswith(b"hello\n"))  # within the cache's second
        self.clock.advance(1.5)
        response, _ = self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(response.endswith(b"changed, and longer\n"))
        os.remove(os.path.join(self.root, "hello.txt"))
        self.clock.advance(1.5)
        response, _ = self.exchange(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 404"))

    def test_rememberedPathsBounded(self) -> None:
        """
        Many spellings of one path (percent-encoded in different ways) do
        not make the folder remember without bound.
        """
        import itertools

        self.write("abcdefghijk", b"letters\n")
        spellings = itertools.product(*[(bytes([c]), b"%%%02x" % c) for c in b"abcdefghijk"])
        remembered = 0
        for parts in itertools.islice(spellings, 1100):
            path = b"/" + b"".join(parts)
            response, _ = self.exchange(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(response.endswith(b"letters\n"))
            remembered = max(remembered, len(self.site.static._quick))
        self.assertEqual(remembered, 1024)
        self.assertLess(len(self.site.static._quick), 1024)

    def test_headOfMissingFileHasTheLength(self) -> None:
        """
        A C{HEAD} of a missing file under the served folder says the length
        of the 404 page a C{GET} gets (it said 0 once the page answered a
        C{HEAD} itself).
        """
        get, _ = self.exchange(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = self.exchange(b"HEAD /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        getHead, body = get.split(b"\r\n\r\n", 1)
        self.assertIn(b" 404 ", head.split(b"\r\n", 1)[0])
        self.assertIn(b"\r\nContent-Length: %d\r\n" % (len(body),), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"))


class AccessLogLineTests(SynchronousTestCase):
    """
    L{accessLogLine} writes exactly what Twisted's combined-log formatter
    writes, for ordinary and hostile requests alike.
    """

    def request(self, method=b"GET", uri=b"/", proto=b"HTTP/1.1", referer=None,
                agent=None, code=200, sent=10, address=None):
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        request.method, request.uri, request.clientproto = method, uri, proto
        request.code, request.sentLength = code, sent
        if referer is not None:
            request.requestHeaders.setRawHeaders(b"referer", [referer])
        if agent is not None:
            request.requestHeaders.setRawHeaders(b"user-agent", [agent])
        request.client = address or IPv4Address("TCP", "127.0.0.1", 40000)
        return request

    def assertSameLine(self, request) -> None:
        from twisted.web.http import combinedLogFormatter

        from netsuite.web.site import accessLogLine

        stamp = "[21/Nov/2026:08:00:00 +0000]"
        self.assertEqual(accessLogLine(stamp, request), combinedLogFormatter(stamp, request))

    def test_ordinary(self) -> None:
        self.assertSameLine(self.request())
        self.assertSameLine(self.request(uri=b"/a?b=c&d=%22e%22", referer=b"http://x/", agent=b"curl/8.0 'q'"))
        self.assertSameLine(self.request(code=404, sent=0))
        self.assertSameLine(self.request(address=IPv6Address("TCP", "::1", 40000)))
        self.assertSameLine(self.request(address=UNIXAddress(b"/tmp/sock")))

    def test_everyByte(self) -> None:
        for byte in range(256):
            one = bytes([byte])
            self.assertSameLine(self.request(uri=b"/x" + one + b"y"))
            self.assertSameLine(self.request(method=b"G" + one))
            self.assertSameLine(self.request(proto=b"HTTP/1.1" + one))
            self.assertSameLine(self.request(referer=b"r" + one, agent=one + b"a"))

    def test_quotesAndBackslashes(self) -> None:
        for text in (b'"', b"\\", b"'", b"'\"", b"\\'", b'\\"', "\u00e9".encode("utf-8")):
            self.assertSameLine(self.request(uri=b"/" + text, referer=text, agent=text))


class PageTests(SynchronousTestCase):
    def request(self, path: bytes, method: bytes = b"GET") -> tuple[bytes, dict, bytes]:
        clock, site, connect = inMemory()
        site.stats.count("requests", 0)
        protocol, transport = connect()
        protocol.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(0)
        head, body = transport.value().split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, value = line.split(b": ", 1)
            headers[name.lower()] = value
        site.stopFactory()
        return lines[0], headers, body

    def test_notFoundEscapesPath(self) -> None:
        status, headers, body = self.request(b"/%3Cscript%3Ealert(1)%3C/script%3E")
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        self.assertNotIn(b"<script>", body)
        self.assertIn(b"&lt;script&gt;", body)
        self.assertEqual(headers[b"content-type"], b"text/html; charset=utf-8")
        self.assertEqual(headers[b"x-content-type-options"], b"nosniff")
        self.assertIn(b"default-src 'none'", headers[b"content-security-policy"])

    def test_healthzAndMetricsOnlyAtTheirPaths(self) -> None:
        """
        C{/healthz} and C{/metrics} answer at their own paths (a query
        string is fine); a path below them is the 404 page, where it got
        the same answer.
        """
        for path in (b"/healthz", b"/metrics", b"/metrics?name=x"):
            self.assertEqual(self.request(path)[0], b"HTTP/1.1 200 OK", path)
        for path in (b"/healthz/", b"/healthz/x", b"/metrics/", b"/metrics/anything?x=1"):
            status, headers, body = self.request(path)
            self.assertEqual(status, b"HTTP/1.1 404 Not Found", path)
            self.assertIn(b"<h1>404 Not Found</h1>", body)

    def test_homePageHasSecurityHeaders(self) -> None:
        for path in (b"/", b"/_netsuite/"):
            status, headers, body = self.request(path)
            self.assertEqual(status, b"HTTP/1.1 200 OK")
            self.assertIn(b"<title>netsuite</title>", body)
            self.assertIn(b"script-src 'self'", headers[b"content-security-policy"])
            self.assertEqual(headers[b"x-content-type-options"], b"nosniff")
            self.assertNotIn(b"<script>", body)  # no inline script

    def test_headHasNoBody(self) -> None:
        """
        A C{HEAD} of a built-in page gets its head, with the length of the
        page a C{GET} gets, and no warning in the log (every one wrote
        Twisted's "returning a message body. I think I'll eat it.").
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for path in (b"/", b"/_netsuite/", b"/_netsuite/x", b"/nothing", b"/_netsuite/style.css"):
            status, headers, body = self.request(path, b"HEAD")
            getStatus, _, getBody = self.request(path)
            self.assertEqual(status, getStatus)
            self.assertEqual(body, b"")
            self.assertEqual(int(headers[b"content-length"]), len(getBody), path)
        self.assertEqual([formatEvent(e) for e in events if "message body" in formatEvent(e)], [])

    def test_otherMethodsOnBuiltinPages(self) -> None:
        """
        Methods other than GET and HEAD on the built-in pages get a 405
        with C{Allow} and the pages' security headers (not Twisted's "501
        Huh?" page, or its bare 405 for POST).
        """
        for path in (b"/", b"/_netsuite/", b"/_netsuite", b"/_netsuite/style.css"):
            for method in (b"POST", b"PUT", b"DELETE", b"FOO"):
                status, headers, body = self.request(path, method)
                self.assertEqual(status, b"HTTP/1.1 405 Method Not Allowed", (path, method))
                self.assertEqual(headers[b"allow"], b"GET, HEAD")
                self.assertEqual(headers[b"x-content-type-options"], b"nosniff")
                self.assertIn(b"default-src 'none'", headers[b"content-security-policy"])
                self.assertIn(b"405 Method Not Allowed", body)

    def test_assets(self) -> None:
        status, headers, body = self.request(b"/_netsuite/style.css")
        self.assertEqual(headers[b"content-type"], b"text/css; charset=utf-8")
        status, headers, body = self.request(b"/_netsuite/home.js")
        self.assertIn(b"/api/status", body)
        status, headers, body = self.request(b"/_netsuite/nothing")
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")


class FakeListener:
    def __init__(self, info: ListenerInfo) -> None:
        self._info = info

    def info(self) -> ListenerInfo:
        return self._info


class SocketTests(TestCase):
    timeout = 30

    async def startHTTP(self, grace: float = 1, **kwargs) -> tuple[int, object, SimpleStatus]:
        status = SimpleStatus(StatsRegistry())
        service = makeHTTPService("tcp:0:interface=127.0.0.1", status=status, grace=grace, **kwargs)
        status.add(service)
        port = await startListener(self, service)
        return port, service, status

    async def startTLS(self, **kwargs) -> tuple[int, object, str]:
        """
        Start an HTTPS listener (HTTP/1.1 only); return its port, the
        service and the CA certificate to trust, as PEM text.
        """
        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"http/1.1"])
        port, service, status = await self.startHTTP(tls=options, **kwargs)
        return port, service, ca.cert_pem.bytes().decode()

    def bigFolder(self) -> tuple[str, bytes]:
        """
        A folder holding C{big.bin}, of 3 MB; the folder and the bytes.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        data = os.urandom(3_000_000)
        with open(os.path.join(folder, "big.bin"), "wb") as f:
            f.write(data)
        return folder, data

    async def test_idleAfterLargeAnswerGetsNo408(self) -> None:
        """
        Over real sockets, a keep-alive connection left idle for longer
        than the head timeout after a large answer has its next request
        answered: over TLS, and over plain TCP with gzip made here (sent by
        reads, not C{sendfile}).  An unasked 408 went out one head timeout
        after the answer, and was read as the answer to the next request.
        """
        folder, data = self.bigFolder()
        text = os.urandom(1_500_000).hex().encode()  # 3 MB; its gzip about 1.6 MB
        with open(os.path.join(folder, "big.txt"), "wb") as f:
            f.write(text)
        limits = Limits(headerTimeout=0.3)
        for tls in (True, False):
            if tls:
                port, service, cadata = await self.startTLS(root=folder, limits=limits)
                path, headers, expected = "/big.bin", {}, data
            else:
                port, service, status = await self.startHTTP(root=folder, limits=limits)
                path, headers, expected = "/big.txt", {"Accept-Encoding": "gzip"}, text

            def exchange() -> tuple[bytes, int, bytes]:
                with ExitStack() as stack:
                    if tls:
                        sock = stack.enter_context(tlsClient(port, cadata))
                    else:
                        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
                    connection = http.client.HTTPConnection("127.0.0.1", port)
                    connection.sock = sock
                    connection.request("GET", path, headers=headers)
                    response = connection.getresponse()
                    body = response.read()
                    if response.getheader("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    time.sleep(1)  # over three head timeouts
                    connection.request("GET", "/healthz")
                    second = connection.getresponse()
                    return body, second.status, second.read()

            body, status, answer = await threads.deferToThread(exchange)
            self.assertEqual(body, expected)
            self.assertEqual((status, answer), (200, b"ok\n"), tls)
            self.assertNotIn("header_timeouts", service.stats.counters)

    async def test_halfCloseGetsEveryAnswer(self) -> None:
        """
        A client that sends its requests and shuts its side (C{nc -N}) gets
        every answer, a 3 MB file among them, then the server closes.
        twisted.web dropped what was not sent yet: any answer written a
        part at a time (a file over 64 KiB) came to nothing, not even its
        status line.  A request left unfinished is not run.
        """
        folder, data = self.bigFolder()
        probe = Probe()
        port, service, status = await self.startHTTP(root=folder, api={b"probe": probe})

        def halfClosed(request: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(request)
                client.shutdown(socket.SHUT_WR)
                return recvUntil(client)

        received = await threads.deferToThread(halfClosed, b"GET /big.bin HTTP/1.0\r\n\r\n")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:100])
        self.assertTrue(received.endswith(b"\r\n\r\n" + data))
        pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 2
        received = await threads.deferToThread(halfClosed, pipelined)
        self.assertEqual(received.count(b"HTTP/1.1 200 OK\r\n"), 3)
        self.assertTrue(received.endswith(b"\r\n\r\n" + data))
        self.assertEqual(len(received) - received.rindex(b"\r\n\r\n" + data), len(data) + 4)
        for unfinished in (
            b"POST /api/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
            b"GET /big.bin HTTP/1.1\r\nHost:",
        ):
            self.assertEqual(await threads.deferToThread(halfClosed, unfinished), b"")
        self.assertEqual(probe.requests, [])
        await waitForNoConnections(self, service)

    async def test_largeBodiesOverASocket(self) -> None:
        """
        Over a real socket, a body past what is kept in memory is read
        whole from its temporary file; with no temporary file to be had,
        it gets a 503 with Retry-After.
        """
        port, service, status = await self.startHTTP()
        body = b'"' + b"x" * (siteModule.BODY_IN_MEMORY * 2) + b'"'
        upload = (
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (len(body),) + body
        )
        answer = await threads.deferToThread(rawExchange, port, upload)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["body"], json.loads(body))
        self.patch(siteModule, "BODY_FILES", 0)
        answer = await threads.deferToThread(rawExchange, port, upload)
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer[:100])
        self.assertIn(b"Retry-After: 1", answer)

    async def test_closeNotifyGetsEveryAnswer(self) -> None:
        """
        Over TLS, a client's close_notify after its request is the end of
        its input, as a TCP half-close is: it gets the whole answer (3 MB),
        then the server's close_notify.
        """
        folder, data = self.bigFolder()
        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"http/1.1"])
        port, service, status = await self.startHTTP(tls=options, root=folder)
        received, how = await threads.deferToThread(
            closeNotifyClient, port, ca, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(how, "close_notify")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:100])
        self.assertTrue(received.endswith(b"\r\n\r\n" + data))
        await waitForNoConnections(self, service)

    async def test_malformedChunkedBodyAnsweredAtOnce(self) -> None:
        """
        Over a real socket, a chunk-size line ending in a bare LF gets its
        400 and the connection is closed at once (the client waited for the
        idle timeout); the request is not run.
        """
        probe = Probe()
        port, service, status = await self.startHTTP(api={b"probe": probe})

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(
                    b"POST /api/probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\n"
                )
                return recvUntil(client)  # times out if the server waits

        response = await threads.deferToThread(exchange)
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+)", response), [b"400"])
        self.assertIn(b"bare LF", response)
        self.assertEqual(probe.requests, [])

    async def test_obsoleteLineFoldingRefused(self) -> None:
        """
        Over a real socket, a header line continued on the next (obsolete
        line folding) gets its 400 and the end of the connection; neither
        it nor the request pipelined after it is run (Twisted joined the
        fold to the header above, and ran both).
        """
        probe = Probe()
        port, service, status = await self.startHTTP(api={b"probe": probe})

        def exchange(folded: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(
                    b"POST /api/probe HTTP/1.1\r\nHost: x\r\n" + folded + b"\r\n\r\n{}"
                    b"GET /api/probe HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                return recvUntil(client)  # times out unless the server closes

        for folded in (b"Content-Length:\r\n 2", b"X-Long: a\r\n\tcontinued"):
            response = await threads.deferToThread(exchange, folded)
            self.assertEqual(re.findall(rb"HTTP/1.1 (\d+)", response), [b"400"], response)
            self.assertIn(b"obsolete line folding", response)
        self.assertEqual(probe.requests, [])

    async def test_http10KeepAlive(self) -> None:
        """
        Over a real socket, an HTTP/1.0 client asking for keep-alive (as
        C{ab -k} does) gets three answers on one connection, each with an
        HTTP/1.1 status line and C{Connection: keep-alive}, and the
        connection closes after a request without it.
        """
        port, service, status = await self.startHTTP()

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                for _ in range(3):
                    client.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                    answer = recvUntil(client, lambda r: r.endswith(b"ok\n"))
                    self.assertIn(b"\r\nConnection: keep-alive\r\n", answer)
                client.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                return answer + recvUntil(client)

        answers = await threads.deferToThread(exchange)
        self.assertEqual(answers.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertTrue(answers.endswith(b"ok\n"), answers)
        self.assertEqual(answers.count(b"Connection: close"), 1)

    async def test_http10KeepAliveAfterAHeadWithoutLength(self) -> None:
        """
        Over a real socket, an HTTP/1.0 keep-alive connection goes on after
        the answer to a HEAD that has no C{Content-Length} (it has no body
        the end of the connection must end): the next request on it is
        answered (the connection was closed after the HEAD).
        """
        port, service, status = await self.startHTTP(api={b"unsized": Unsized()})

        def exchange() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as client:
                client.sendall(b"HEAD /api/unsized HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                head = recvUntil(client, lambda r: b"\r\n\r\n" in r)
                try:
                    client.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    return head, recvUntil(client)
                except ConnectionError as e:
                    return head, repr(e).encode()

        head, second = await threads.deferToThread(exchange)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertNotIn(b"\r\nContent-Length: ", head)
        self.assertIn(b"\r\nConnection: keep-alive\r\n", head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"), second)
        self.assertTrue(second.endswith(b"\r\n\r\nok\n"), second)

    async def test_stalledBodyGets408(self) -> None:
        """
        Over a real socket, a body that stops coming gets a 408 at the idle
        timeout (the connection was closed without an answer).
        """
        port, service, status = await self.startHTTP(limits=Limits(idleTimeout=1))

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(
                    b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 50\r\n\r\n{"
                )
                return recvUntil(client)

        response = await threads.deferToThread(exchange)
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+)", response), [b"408"])
        self.assertIn(b"stopped coming", response)

    async def test_refusedRequestNeverRunsOverTLS(self) -> None:
        """
        Over TLS, a request refused for a malformed header line is not run
        when the client sends one more byte after the 400 (TLS reads on
        after the refusal, waiting for close_notify, and Twisted went on
        parsing: the refused DELETE ran).
        """
        probe = Probe()
        port, service, cadata = await self.startTLS(api={b"probe": probe})

        def exchange() -> bytes:
            with tlsClient(port, cadata) as tls:
                tls.sendall(
                    b"DELETE /api/probe HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n"
                    b"Authorization: Bearer secret\r\n\r\n"
                )
                received = recvUntil(tls)
                tls.sendall(b"x")  # a TLS record of its own, read later
                return received

        response = await threads.deferToThread(exchange)
        await waitForNoConnections(self, service)
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+)", response), [b"400"])
        self.assertEqual(probe.requests, [])

    async def test_refusalOverTLSClosesAtOnce(self) -> None:
        """
        A refusal over TLS ends the connection at once (close_notify), not
        when the 10 s abort timer fires.
        """
        port, service, cadata = await self.startTLS()

        def exchange() -> bytes:
            with tlsClient(port, cadata) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
                return recvUntil(tls)  # times out if the server waits

        response = await threads.deferToThread(exchange)
        self.assertTrue(response.startswith(b"HTTP/1.1 431 "), response[:100])
        await waitForNoConnections(self, service)

    async def test_largeAnswerWithCloseOverTLSEndsAtOnce(self) -> None:
        """
        Over TLS, a client that reads a large answer to a request with
        C{Connection: close} and answers the server's close_notify has its
        connection ended at once: the channel had stopped reading while it
        answered, so the close_notify and the end of input were never read,
        and the connection stayed until the service stopped.
        """
        port, service, cadata = await self.startTLS()
        body = b'"' + b"x" * (600 * 1024) + b'"'

        def exchange() -> bytes:
            with tlsClient(port, cadata) as tls:
                tls.sendall(
                    b"POST /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                )
                received = recvUntil(tls)  # to the server's close_notify
                tls.unwrap()
                return received

        response = await threads.deferToThread(exchange)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response[:100])
        self.assertGreater(len(response), len(body))
        await waitForNoConnections(self, service)

    async def test_dataAfterTheCloseOverTLSIsDropped(self) -> None:
        """
        Over TLS, what a client sends after the server closed (while it
        waits for the client's close_notify) is dropped, as TCP reads
        nothing after a close: a request sent then is not answered.
        """
        probe = Probe()
        port, service, cadata = await self.startTLS(api={b"probe": probe})

        def exchange() -> bytes:
            with tlsClient(port, cadata) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                received = recvUntil(tls, lambda r: r.endswith(b"\n") and b"\r\n\r\n" in r)
                tls.sendall(b"GET /api/probe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n")
                received = recvUntil(tls, received=received)
                tls.unwrap()
                return received

        response = await threads.deferToThread(exchange)
        self.assertEqual(re.findall(rb"HTTP/1.1 (\d+)", response), [b"200"])
        await waitForNoConnections(self, service)
        self.assertEqual(probe.requests, [])

    async def test_clientNotClosingOverTLSIsAborted(self) -> None:
        """
        A client that takes its answer but neither answers the close_notify
        nor closes is closed after the linger timeout, counted as a
        C{close_timeouts} (it kept its connection for as long as it
        liked).  It took everything: an idle timeout shorter than the
        linger timeout no longer aborts it as one that took nothing
        (C{client_timeouts}).
        """
        port, service, cadata = await self.startTLS(limits=Limits(idleTimeout=0.2), lingerTimeout=0.5)

        def exchange() -> tuple[bytes, float]:
            with tlsClient(port, cadata) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                received = recvUntil(tls)  # the server's close_notify
                started = time.monotonic()
                # No close_notify back: wait for the server to end it.
                select.select([tls], [], [], 5)
                return received, time.monotonic() - started

        response, waited = await threads.deferToThread(exchange)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response[:100])
        self.assertLess(waited, 4)
        await waitForNoConnections(self, service)
        self.assertEqual(service.stats.counters.get("close_timeouts"), 1, service.stats.counters)
        self.assertNotIn("client_timeouts", service.stats.counters)

    async def test_homePageListsListenersAndCounters(self) -> None:
        port, service, status = await self.startHTTP()
        status.add(FakeListener(ListenerInfo("echo", "tcp:7:interface=127.0.0.1", "tcp 127.0.0.1:7", False)))
        status.add(FakeListener(ListenerInfo("chat", "tcp:8023", None, True)))
        status.stats.forService("echo").bytesIn = 12345
        response = await threads.deferToThread(rawExchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", response)
        self.assertIn(f"tcp 127.0.0.1:{port}".encode(), response)
        self.assertIn(b"tcp 127.0.0.1:7", response)
        self.assertIn(b"not listening", response)
        self.assertIn(b'data-service="echo" data-key="bytes_in">12345<', response)
        for link in (b'href="/api/status"', b'href="/api/echo"', b'href="/healthz"', b'href="/metrics"'):
            self.assertIn(link, response)

    async def test_routingWithStaticFolder(self) -> None:
        """
        With a folder: its files are served at /, the home page answers / only
        while the folder has no index.html, /_netsuite/ is always the home
        page, and reserved names win over the folder's own files.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(folder, "api"))
        with open(os.path.join(folder, "api", "status"), "w") as f:
            f.write("shadow")
        with open(os.path.join(folder, "hello.txt"), "w") as f:
            f.write("hello from the folder")
        port, service, status = await self.startHTTP(root=folder)

        async def get(path: bytes) -> bytes:
            return await threads.deferToThread(
                rawExchange, port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )

        self.assertIn(b"hello from the folder", await get(b"/hello.txt"))
        self.assertIn(b"<title>netsuite</title>", await get(b"/"))
        status = await get(b"/api/status")
        self.assertIn(b'"version"', status)
        self.assertNotIn(b"shadow", status)
        self.assertIn(b"404 Not Found", await get(b"/missing"))
        # Empty and "." segments are merged away before routing (nginx's
        # merge_slashes): no spelling lists the folder instead of the home
        # page, or reaches its files under a reserved name.
        for path in (b"//", b"/./", b"/.", b"//./"):
            page = await get(path)
            self.assertIn(b"<title>netsuite</title>", page, path)
            self.assertNotIn(b"Index of", page, path)
        for path in (b"//api/status", b"/./api//status", b"/api/./status"):
            page = await get(path)
            self.assertIn(b'"version"', page, path)
            self.assertNotIn(b"shadow", page, path)
        self.assertIn(b"200 OK", await get(b"//healthz"))
        self.assertIn(b"# TYPE", await get(b"/./metrics"))
        self.assertIn(b"<title>netsuite</title>", await get(b"//_netsuite/"))
        self.assertIn(b"hello from the folder", await get(b"//.//hello.txt"))

        folder2 = os.path.abspath(self.mktemp())
        os.makedirs(folder2)
        with open(os.path.join(folder2, "index.html"), "w") as f:
            f.write("<p>my own index</p>")
        port, service, status = await self.startHTTP(root=folder2)
        self.assertIn(b"my own index", await get(b"/"))
        self.assertIn(b"<title>netsuite</title>", await get(b"/_netsuite/"))

    async def test_pipelinedRequestsAnsweredInOrder(self) -> None:
        """
        Several requests sent at once get their answers in the same order.
        """
        port, service, status = await self.startHTTP()
        requests = b"".join(
            b"GET /api/echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(5)
        ) + b"GET /api/echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        response = await threads.deferToThread(rawExchange, port, requests, 6)
        order = re.findall(rb'"n": \["([^"]+)"\]', response)
        self.assertEqual(order, [b"0", b"1", b"2", b"3", b"4", b"last"])

    async def test_pipelinedSmallAndLargeFiles(self) -> None:
        """
        Small answers and a large file streamed with C{sendfile}, pipelined
        on one plain TCP connection, arrive whole and in order.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        large = bytes(range(256)) * 8192  # 2 MiB: streamed, not cached
        with open(os.path.join(folder, "large.bin"), "wb") as f:
            f.write(large)
        with open(os.path.join(folder, "small.txt"), "wb") as f:
            f.write(b"small\n")
        port, service, status = await self.startHTTP(root=folder)
        requests = (
            b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /large.bin HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /small.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        response = await threads.deferToThread(rawExchange, port, requests, 3)
        bodies = []
        rest = response
        for _ in range(3):
            head, rest = rest.split(b"\r\n\r\n", 1)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), head)
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            bodies.append(rest[:length])
            rest = rest[length:]
        self.assertEqual(bodies, [b"small\n", large, b"small\n"])
        self.assertEqual(rest, b"")

    async def test_pipelinedRequestsOfAClientNotReading(self) -> None:
        """
        A client that pipelines many requests for a 60 KiB file and reads
        nothing does not make the server buffer their answers (Twisted alone
        answers everything it has read: 60 KB of requests became 100 MB);
        once it reads, every answer comes, whole and in order.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        body = bytes(range(256)) * 240  # 60 KiB: cached, answered quickly
        with open(os.path.join(folder, "f.bin"), "wb") as f:
            f.write(body)
        port, service, status = await self.startHTTP(root=folder)
        count = 300
        requests = b"".join(
            b"GET /f.bin?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(count)
        )
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        self.addCleanup(client.close)
        client.sendall(requests)
        await deferLater(reactor, 0.5, lambda: None)
        [wrapper] = service.tracker.protocols
        channel = wrapper.wrappedProtocol._channel
        raw = channel._raw
        queued = len(raw.dataBuffer) - raw.offset + raw._tempDataLen + channel._outBytes
        self.assertLess(queued, 256 * 1024)
        self.assertTrue(channel.paused)

        def readAll() -> list[tuple[bytes, bytes]]:
            client.settimeout(10)
            received = b""
            answers = []
            while len(answers) < count:
                if b"\r\n\r\n" in received:
                    head, rest = received.split(b"\r\n\r\n", 1)
                    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
                    if len(rest) >= length:
                        answers.append((head, rest[:length]))
                        received = rest[length:]
                        continue
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
            return answers

        answers = await threads.deferToThread(readAll)
        self.assertEqual(len(answers), count)
        for n, (head, answer) in enumerate(answers):
            self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), (n, head[:50]))
            self.assertEqual(answer, body)

    async def test_pipelinedThenMalformed(self) -> None:
        """
        A malformed request after pipelined good ones: the good ones are
        answered first, in order, then the 400, then the connection closes.
        """
        port, service, status = await self.startHTTP()
        requests = b"".join(
            b"GET /api/echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(3)
        ) + b"GET /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        response = await threads.deferToThread(rawExchange, port, requests, 10)
        self.assertEqual(re.findall(rb'"n": \["([^"]+)"\]', response), [b"0", b"1", b"2"])
        self.assertEqual(
            re.findall(rb"HTTP/1.1 (\d+)", response), [b"200", b"200", b"200", b"400"]
        )

    async def test_pipelinedThenExpectContinue(self) -> None:
        """
        The C{100 Continue} for a pipelined request comes after the answer
        to the request before it.
        """
        port, service, status = await self.startHTTP()

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(
                    b"GET /api/echo?n=first HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /api/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
                )
                received = recvUntil(s, lambda r: b"100 Continue\r\n\r\n" in r)
                s.sendall(b"{}")
                return recvUntil(
                    s, lambda r: r.count(b"HTTP/1.1 200") >= 2 and r.endswith(b"}"), received
                )

        response = await threads.deferToThread(exchange)
        self.assertEqual(
            re.findall(rb"HTTP/1.1 (\d+)", response), [b"200", b"100", b"200"]
        )
        self.assertIn(b'"n": ["first"]', response.split(b"100 Continue")[0])

    async def test_silentConnectionsDoNotStopNewClients(self) -> None:
        """
        200 connections that send half a request head and stall do not stop
        a new client being served at once.
        """
        port, service, status = await self.startHTTP()

        def stall() -> list[socket.socket]:
            sockets = []
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                sockets.append(s)
            return sockets

        stalled = await threads.deferToThread(stall)
        self.addCleanup(lambda: [s.close() for s in stalled])
        response = await threads.deferToThread(
            rawExchange, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b"HTTP/1.1 200 OK", response)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(service.stats.connectionsOpen, 200)

    async def test_accessLogInCombinedFormat(self) -> None:
        path = os.path.abspath(self.mktemp())
        port, service, status = await self.startHTTP(accessLog=path)
        await threads.deferToThread(
            rawExchange,
            port,
            b"GET /nothing?x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: tester/1\r\n"
            b"Referer: http://r.example/\r\nConnection: close\r\n\r\n",
        )
        await service.stopService()
        with open(path) as f:
            line = f.read().strip()
        self.assertRegex(
            line,
            r'^"?127\.0\.0\.1"? - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
            r'"GET /nothing\?x=1 HTTP/1\.1" 404 \d+ "http://r\.example/" "tester/1"$',
        )

    async def test_accessLogShowsALaterHTTP1VersionAsSent(self) -> None:
        """
        Over a real socket, a request line of C{HTTP/1.2}, served as
        HTTP/1.1, is logged with its version as sent, as nginx logs it (it
        was logged as C{HTTP/1.1}).
        """
        path = os.path.abspath(self.mktemp())
        port, service, status = await self.startHTTP(accessLog=path)
        answer = await threads.deferToThread(
            rawExchange, port, b"GET /healthz HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        await service.stopService()  # writes the log out
        with open(path) as f:
            [line] = f.read().splitlines()
        self.assertIn('"GET /healthz HTTP/1.2" 200 ', line)

    async def test_clientGoneMidBodyLogged(self) -> None:
        """
        A client that leaves in the middle of its request body is logged
        and counted, as nginx logs it: 400 (it was in no log, and not in
        C{/metrics}).
        """
        path = os.path.abspath(self.mktemp())
        port, service, status = await self.startHTTP(accessLog=path)

        def leave(data: bytes) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                time.sleep(0.2)

        # In the middle of the head, its length already said: not logged,
        # as a head never finished is not (nginx logs neither).
        await threads.deferToThread(leave, b"POST /api/echo?head HTTP/1.1\r\nContent-Length: 1000\r\nHost: x\r\nAcc")
        await threads.deferToThread(leave, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 500)
        line = await self.onlyLogLine(service, path)
        self.assertIn('"POST /api/echo HTTP/1.1" 400 - ', line)

    async def onlyLogLine(self, service: Any, path: str) -> str:
        """
        Once C{service} has logged a request, stop it and return the one
        line of its access log file C{path}.
        """
        for _ in range(100):
            if service.stats.counters.get("requests"):
                break
            await deferLater(reactor, 0.05, lambda: None)
        await service.stopService()
        with open(path) as f:
            [line] = f.read().splitlines()
        return line

    async def test_clientGoneMidAnswerLogged(self) -> None:
        """
        A client that reads part of a large file and closes gets an
        access-log line with the status and the bytes sent (there was none;
        nginx writes one).
        """
        folder = self.mktemp()
        os.makedirs(folder)
        size = 64 * 1024 * 1024
        with open(os.path.join(folder, "big.bin"), "wb") as f:
            f.truncate(size)
        path = os.path.abspath(self.mktemp())
        port, service, status = await self.startHTTP(accessLog=path, root=folder)

        def readSomeAndGo() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                return recvUntil(s, lambda data: len(data) > 100_000)

        self.assertIn(b" 200 OK", await threads.deferToThread(readSomeAndGo))
        line = await self.onlyLogLine(service, path)
        match = re.search(r'"GET /big\.bin HTTP/1\.1" 200 (\d+) ', line)
        self.assertIsNotNone(match, line)
        self.assertLess(int(match.group(1)), size)

    async def test_answerEndingInTheGracePeriodLogged(self) -> None:
        """
        A download that ends in the grace period after the stop (the
        listener no longer listening) is logged to the access log file, at
        the time it ended; it went to the twistd log, its time frozen at
        the stop (Twisted closes the log when the last listener stops).
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        size = 64_000_000  # more than the kernel's buffers hold
        with open(os.path.join(folder, "big.bin"), "wb") as f:
            f.truncate(size)
        path = os.path.abspath(self.mktemp())
        port, service, status = await self.startHTTP(grace=20, accessLog=path, root=folder)
        started = threading.Event()
        go = threading.Event()

        def download() -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
                s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                received = len(s.recv(1000))
                started.set()
                go.wait(20)
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        return received
                    received += len(chunk)

        answer = threads.deferToThread(download)
        await threads.deferToThread(started.wait, 20)
        stopping = service.stopService()
        await deferLater(reactor, 1.1, lambda: None)  # the log's clock would have stopped
        go.set()
        self.assertGreater(await answer, size)
        await stopping
        with open(path) as f:
            [line] = f.read().splitlines()
        self.assertIn('"GET /big.bin HTTP/1.1" 200 64000000 ', line)

    async def test_statusShowsNoFileNames(self) -> None:
        """
        The public status pages (C{/api/status}, the home page, C{/healthz})
        show a listener's endpoint without its key and certificate file
        names (they showed the private key's path to anyone), and an C{ssl:}
        endpoint as TLS.
        """
        port, service, status = await self.startHTTP()
        secret = "/srv/keys/secret-key.pem"

        class SSLListener:
            def __init__(self, description: str) -> None:
                self.description = description

            def info(self) -> ListenerInfo:
                return ListenerInfo("echo", self.description, None, False)

        status.add(SSLListener(f"ssl:8443:interface=127.0.0.1:privateKey={secret}:certKey=/c.pem"))
        # The key's file given as the second positional argument (it was shown).
        status.add(SSLListener(f"ssl:8444:{secret}:interface=127.0.0.1"))
        for path in (b"/api/status", b"/", b"/healthz"):
            response = await threads.deferToThread(
                rawExchange, port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            self.assertNotIn(secret.encode(), response, path)
            self.assertNotIn(b"/c.pem", response, path)
            self.assertIn(b"ssl:8443:interface=127.0.0.1", response, path)
            self.assertIn(b"ssl:8444:interface=127.0.0.1", response, path)
        body = await threads.deferToThread(
            rawExchange, port, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        services = json.loads(body.split(b"\r\n\r\n", 1)[1])["services"]
        echoes = [info for section in services.values() for info in section["listeners"] if info["service"] == "echo"]
        self.assertEqual([echo["tls"] for echo in echoes], [True, True])

    async def test_metricsCountRequests(self) -> None:
        port, service, status = await self.startHTTP()
        await threads.deferToThread(rawExchange, port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await threads.deferToThread(
            rawExchange, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertRegex(response, rb'netsuite_http_requests_total\{method="GET",status="404"\} 1\.0')
        self.assertEqual(service.stats.counters["requests"], 2)  # /nope and /metrics

    async def test_requestLineTooLongLoggedAndCounted(self) -> None:
        """
        Over a real socket, a request line over the limit gets its 414 and
        is counted among the requests (in C{/metrics}), as any request.
        """
        port, service, status = await self.startHTTP()
        answer = await threads.deferToThread(rawExchange, port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 414 "), answer[:80])
        self.assertEqual(service.stats.counters.get("requests"), 1)
        metrics = await threads.deferToThread(
            rawExchange, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertRegex(metrics, rb'netsuite_http_requests_total\{method="GET",status="414"\} 1\.0')

    async def test_http2OverTLS(self) -> None:
        """
        A client that offers h2 by ALPN gets HTTP/2, and the response is the
        home page.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"h2", b"http/1.1"])
        port, service, status = await self.startHTTP(tls=options)
        cadata = ca.cert_pem.bytes().decode()
        protocol, headers, body = await threads.deferToThread(h2Get, port, cadata, "/healthz")
        self.assertEqual(protocol, "h2")
        self.assertEqual(headers[":status"], "200")
        self.assertEqual(body, b"ok\n")

    async def test_http2OverAnSSLEndpoint(self) -> None:
        """
        An C{ssl:} endpoint string serves HTTP/2 to a client offering it by
        ALPN (the handshake failed with an internal_error alert: TLS asked
        netsuite's connection-counting factory, which named no protocols).
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        leaf.private_key_pem.write_to_path(key)
        leaf.cert_chain_pems[0].write_to_path(cert)
        status = SimpleStatus(StatsRegistry())
        service = makeHTTPService(
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}", status=status, grace=1
        )
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        port = await startListener(self, service)
        protocol, headers, body = await threads.deferToThread(h2Get, port, ca.cert_pem.bytes().decode(), "/healthz")
        self.assertEqual((protocol, headers[":status"], body), ("h2", "200", b"ok\n"))
        # Its start-up line says TLS, as --tls listeners' do.
        self.assertIn(f"http listening on tcp 127.0.0.1:{port} (TLS)", [formatEvent(e) for e in events])

    async def stopWithIdleTLSClient(self, protocols: list[bytes], exchange) -> tuple[str, float]:
        """
        Start HTTPS (grace 20 s) offering C{protocols}; have C{exchange(tls)}
        make one request on a keep-alive connection, then stop the service
        while that connection is idle.  Return how the client saw the
        connection end, and how long the stop took.
        """
        ca = trustme.CA()
        port, service, _ = await self.startHTTP(grace=20, tls=makeServerOptions(self.mktemp(), ca, protocols))
        context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        context.set_alpn_protocols([p.decode() for p in protocols])
        ready = threading.Event()

        def client() -> str:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    exchange(tls)
                    ready.set()
                    try:
                        while tls.recv(65536):
                            pass
                    except (ssl.SSLError, OSError):
                        return "cut"
                    return "closed"

        ended = threads.deferToThread(client)
        while not ready.is_set():
            await deferLater(reactor, 0.01, lambda: None)
        started = time.monotonic()
        await service.stopService()
        return await ended, time.monotonic() - started

    async def test_stopClosesIdleTLSConnectionAtOnce(self) -> None:
        """
        Stopping closes an idle keep-alive HTTPS connection at once, with
        TLS's close_notify (it waited out the whole grace period, then was
        aborted: the HTTP channel stayed the transport's producer).
        """

        def exchange(tls: ssl.SSLSocket) -> None:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            recvUntil(tls, lambda r: r.endswith(b"ok\n"))

        how, seconds = await self.stopWithIdleTLSClient([b"http/1.1"], exchange)
        self.assertEqual(how, "closed")
        self.assertLess(seconds, 10)

    async def test_stopClosesIdleHTTP2ConnectionAtOnce(self) -> None:
        """
        The same over HTTP/2: a GOAWAY, then the close.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        import h2.config
        import h2.connection
        import h2.events

        def exchange(tls: ssl.SSLSocket) -> None:
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            connection.send_headers(
                1, [(":method", "GET"), (":path", "/healthz"), (":scheme", "https"), (":authority", "x")],
                end_stream=True,
            )
            tls.sendall(connection.data_to_send())
            ended = False
            while not ended:
                for event in connection.receive_data(tls.recv(65536)):
                    ended = ended or isinstance(event, h2.events.StreamEnded)
                tls.sendall(connection.data_to_send())

        how, seconds = await self.stopWithIdleTLSClient([b"h2", b"http/1.1"], exchange)
        self.assertEqual(how, "closed")
        self.assertLess(seconds, 10)

    async def twistdHTTPS(self) -> tuple[int, str]:
        """
        Start the HTTPS listener that C{twistd netsuite --tls} builds (with
        its generated certificate); skip where HTTP/2 cannot be spoken.

        @return: its port, and the certificate to trust.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        from netsuite.tap import Options, makeService

        options = Options()
        dataDir = os.path.abspath(self.mktemp())
        options.parseOptions(
            ["--no-echo", "--no-daytime", "--tls", "--data-dir", dataDir,
             "--http", "tcp:0:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1"]
        )
        root = makeService(options, reactor)
        port = await startListener(self, root.getServiceNamed("http+tls tcp:0:interface=127.0.0.1"))
        with open(os.path.join(dataDir, "tls", "localhost.pem")) as f:
            return port, f.read()

    async def test_http2ThroughTwistdOptions(self) -> None:
        """
        The HTTPS listener that C{twistd netsuite --tls} builds offers HTTP/2.
        """
        port, cadata = await self.twistdHTTPS()
        protocol, headers, body = await threads.deferToThread(h2Get, port, cadata, "/api/status")
        self.assertEqual(protocol, "h2")
        self.assertEqual(headers[":status"], "200")
        self.assertIn("http", json.loads(body)["services"])

    async def test_malformedHTTP2RequestRefusedOnItsStream(self) -> None:
        """
        Over a real TLS connection, a malformed HTTP/2 request (an
        upper-case field name) gets a 400 on its stream, and the requests
        beside it on the connection are answered (h2 ended the connection).
        """
        port, cadata = await self.twistdHTTPS()
        head = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"localhost")]
        answers = await threads.deferToThread(h2Requests, port, cadata, [head, head + [(b"X-Up", b"1")], head])
        self.assertEqual([status for status, body in answers], [b"200", b"400", b"200"])
        self.assertIn(b"malformed request", answers[1][1])

    async def test_plainAndTLSListenersShareOneSite(self) -> None:
        """
        The plain and the TLS listener that C{twistd netsuite --tls} builds
        serve one site: C{/metrics} on either counts the requests of both
        (each had its own, so a scrape of the plain port missed every HTTPS
        and HTTP/2 request), and there is one static file cache.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        from netsuite.tap import Options, makeService

        options = Options()
        dataDir = os.path.abspath(self.mktemp())
        options.parseOptions(
            ["--no-echo", "--no-daytime", "--no-chat", "--no-proxy", "--no-downloads", "--tls",
             "--data-dir", dataDir, "--http", "tcp:0:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1"]
        )
        root = makeService(options, reactor)
        plain = root.getServiceNamed("http tcp:0:interface=127.0.0.1")
        https = root.getServiceNamed("http+tls tcp:0:interface=127.0.0.1")
        plainPort = await startListener(self, plain)
        tlsPort = await startListener(self, https)
        with open(os.path.join(dataDir, "tls", "localhost.pem")) as f:
            cadata = f.read()
        for _ in range(3):
            protocol, headers, _body = await threads.deferToThread(h2Get, tlsPort, cadata, "/nothing-here")
            self.assertEqual((protocol, headers[":status"]), ("h2", "404"))
        metrics = await threads.deferToThread(
            rawExchange, plainPort, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b'netsuite_http_requests_total{method="GET",status="404"} 3.0', metrics)

    async def test_listenersGivenOneSite(self) -> None:
        """
        Listeners that L{makeHTTPService} is given one site (an embedding
        application's plain and TLS pair) count their requests in one
        C{/metrics}; the site's pages list the listeners added to its status.
        """
        status = SimpleStatus(StatsRegistry())
        site = makeSite(status, reactor=reactor, stats=status.stats.forService("http"))
        one = makeHTTPService("tcp:0:interface=127.0.0.1", site=site, grace=1)
        two = makeHTTPService("tcp:0:interface=127.0.0.1", site=site, grace=1)
        status.add(one)
        status.add(two)
        portOne = await startListener(self, one)
        portTwo = await startListener(self, two)
        await threads.deferToThread(rawExchange, portOne, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await threads.deferToThread(
            rawExchange, portTwo, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b'netsuite_http_requests_total{method="GET",status="404"} 1.0', answer)
        answer = await threads.deferToThread(
            rawExchange, portOne, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        listeners = json.loads(answer.split(b"\r\n\r\n", 1)[1])["services"]["http"]["listeners"]
        self.assertEqual(len(listeners), 2)

    async def test_curlHTTP2(self) -> None:
        """
        C{curl --http2} negotiates HTTP/2 (when curl is installed).
        """
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed")
        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"h2", b"http/1.1"])
        port, service, status = await self.startHTTP(tls=options)
        caPath = os.path.abspath(self.mktemp())
        ca.cert_pem.write_to_path(caPath)
        out, err, code = await getProcessOutputAndValue(
            curl,
            ["-sS", "--http2", "--cacert", caPath, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             f"https://localhost:{port}/healthz", "--resolve", f"localhost:{port}:127.0.0.1"],
        )
        self.assertEqual((out, code), (b"2 200", 0), err)

    async def test_http2UploadOverTheLimitAnsweredBeforeItsReset(self) -> None:
        """
        Over HTTP/2 and TLS, an upload over the body limit gets its 413 in a
        TLS record of its own, and the RST_STREAM (C{NO_ERROR}) that stops
        the upload in a later one.  Both came in one record, and curl 7.88,
        which handled the reset first, reported a framing error (exit 92)
        instead of the 413.  Body frames still on their way are ignored.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        import h2.errors

        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"h2", b"http/1.1"])
        port, service, status = await self.startHTTP(tls=options, limits=Limits(maxBody=1000))
        records, after = await threads.deferToThread(h2RefusedUpload, port, ca.cert_pem.bytes().decode())
        answer = [i for i, events in enumerate(records) if "StreamEnded" in events]
        reset = [i for i, events in enumerate(records) if "StreamReset" in events]
        self.assertEqual(len(answer), 1, records)
        self.assertEqual(len(reset), 1, records)
        self.assertLess(answer[0], reset[0], records)
        self.assertEqual(records[reset[0]]["StreamReset"], h2.errors.ErrorCodes.NO_ERROR)
        self.assertEqual(records[answer[0]].get("status"), "413")
        self.assertEqual(service.stats.counters.get("requests"), 1)  # logged and counted
        # Body frames sent before the client saw the reset are ignored (h2
        # answered each with a RST_STREAM, STREAM_CLOSED); only the
        # connection's window may be given back.
        self.assertEqual([frame for frame in after if frame != ("WindowUpdateFrame", 0)], [])

    async def test_curlHTTP2UploadOverTheLimit(self) -> None:
        """
        C{curl --http2 -T} of a file over the body limit gets the 413 (curl
        7.88 exited 92 before); skipped where curl is not installed.
        """
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed")
        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"h2", b"http/1.1"])
        port, service, status = await self.startHTTP(tls=options, limits=Limits(maxBody=100_000))
        caPath, upload = os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp())
        ca.cert_pem.write_to_path(caPath)
        with open(upload, "wb") as f:
            f.write(b"x" * 3_000_000)
        out, err, code = await getProcessOutputAndValue(
            curl,
            ["-sS", "--http2", "--cacert", caPath, "-T", upload, "-w", "\n%{http_version} %{http_code}",
             f"https://localhost:{port}/upload", "--resolve", f"localhost:{port}:127.0.0.1"],
        )
        self.assertEqual((out.rsplit(b"\n", 1)[-1], code), (b"2 413", 0), err)
        self.assertIn(b"over 100000 bytes", out)


def h2Requests(port: int, cadata: str, heads: list[list[tuple[bytes, bytes]]]) -> list[tuple[bytes, bytes]]:
    """
    Send request C{heads} (unchecked: they may be malformed) on one HTTP/2
    connection with the h2 library over stdlib TLS (runs in a thread);
    return each one's status and body.
    """
    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context(cadata=cadata)
    context.set_alpn_protocols(["h2"])
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    answers: dict[int, list] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            connection = h2.connection.H2Connection(config)
            connection.initiate_connection()
            streams = []
            for head in heads:
                streamID = connection.get_next_available_stream_id()
                connection.send_headers(streamID, head, end_stream=True)
                answers[streamID] = [b"", b"", False]
                streams.append(streamID)
            tls.sendall(connection.data_to_send())
            while not all(answer[2] for answer in answers.values()):
                data = tls.recv(65536)
                if not data:
                    break
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        answers[event.stream_id][0] = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        answers[event.stream_id][1] += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        answers[event.stream_id][2] = True
                tls.sendall(connection.data_to_send())
    return [(answers[streamID][0], answers[streamID][1]) for streamID in streams]


def h2Get(port: int, cadata: str, path: str) -> tuple[str, dict, bytes]:
    """
    One HTTP/2 GET with the h2 library over stdlib TLS (runs in a thread).
    """
    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context(cadata=cadata)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            negotiated = tls.selected_alpn_protocol()
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            connection.send_headers(
                1,
                [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "localhost")],
                end_stream=True,
            )
            tls.sendall(connection.data_to_send())
            headers: dict = {}
            body = b""
            done = False
            while not done:
                data = tls.recv(65536)
                if not data:
                    break
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        headers = {
                            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                            for k, v in event.headers
                        }
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        done = True
                tls.sendall(connection.data_to_send())
            return negotiated, headers, body


def h2RefusedUpload(port: int, cadata: str) -> tuple[list[dict], list[tuple[str, int]]]:
    """
    Start an HTTP/2 upload of 64 KiB, declared as 50 MB, with the h2 library
    over stdlib TLS (runs in a thread), and read what the server sends until
    the stream is reset.  Return, for each TLS record read (the stdlib reads
    one at a time), the names of the h2 events it held for stream 1, with
    the C{:status} of a response and the error code of a reset; and what
    L{framesAfterReset} returns.
    """
    import h2.config
    import h2.connection
    import h2.events

    context = ssl.create_default_context(cadata=cadata)
    context.set_alpn_protocols(["h2"])
    records: list[dict] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            connection.send_headers(
                1,
                [(":method", "PUT"), (":path", "/upload"), (":scheme", "https"), (":authority", "localhost"),
                 ("content-length", "50000000")],
            )
            for _ in range(4):
                connection.send_data(1, b"x" * 16383)
            tls.sendall(connection.data_to_send())
            while not any("StreamReset" in events for events in records):
                data = tls.recv(65536)
                if not data:
                    break
                events: dict = {}
                for event in connection.receive_data(data):
                    if getattr(event, "stream_id", None) != 1:
                        continue
                    events[type(event).__name__] = True
                    if isinstance(event, h2.events.ResponseReceived):
                        events["status"] = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.StreamReset):
                        events["StreamReset"] = event.error_code
                if events:
                    records.append(events)
                tls.sendall(connection.data_to_send())
            after = framesAfterReset(tls)
    return records, after


def framesAfterReset(tls: ssl.SSLSocket) -> list[tuple[str, int]]:
    """
    Send three more DATA frames on stream 1, as a client does that sent
    them before it saw the stream's reset, then a PING; return the frames
    the server sends up to its PING ACK, as (type name, stream).
    """
    from hyperframe.frame import DataFrame, Frame, PingFrame

    frames = b""
    for _ in range(3):
        data = DataFrame(1)
        data.data = b"x" * 1000
        frames += data.serialize()
    ping = PingFrame(0)
    ping.opaque_data = b"netsuite"
    tls.sendall(frames + ping.serialize())
    seen: list[tuple[str, int]] = []
    buffer = b""
    while True:
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            if isinstance(frame, PingFrame) and "ACK" in frame.flags:
                return seen
            seen.append((type(frame).__name__, frame.stream_id))
        data = tls.recv(65536)
        if not data:
            return seen
        buffer += data
