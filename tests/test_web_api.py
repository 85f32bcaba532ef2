"""
Tests for L{netsuite.web.api} (the JSON API and C{/healthz}) and
L{netsuite.web.metrics} (C{/metrics}), over real loopback sockets.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Dict, List, NoReturn, Tuple
from urllib.parse import quote_from_bytes

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from netsuite import __version__
from netsuite.stats import StatsRegistry
from netsuite.status import ListenerInfo, SimpleStatus
from netsuite.web import api
from netsuite.web.api import (
    APIError,
    APIResource,
    HealthResource,
    JSONResource,
    _parseContentType,
)
from netsuite.web.metrics import HTTPMetrics
from tests.helpers import codecSearch, connectInMemory

#: A POSIX time the fake clock runs from (2023-11-14T22:13:20Z).
STARTED = 1_700_000_000.0


class FakeListener:
    """
    Stands in for a listener service: C{info()} says what the test sets.
    """

    def __init__(self, info: ListenerInfo) -> None:
        self.listenerInfo = info

    def info(self) -> ListenerInfo:
        return self.listenerInfo


class ServerTestCase(TestCase):
    """
    Serves C{/api}, C{/healthz} and C{/metrics} on 127.0.0.1 and talks to
    them with treq through a non-persistent pool.
    """

    maxBody = 1024 * 1024

    def setUp(self) -> None:
        self.stats = StatsRegistry()
        self.status = SimpleStatus(self.stats)
        self.status.started = STARTED
        self.clock = Clock()
        self.clock.advance(STARTED + 42.5)
        self.httpListener = FakeListener(
            ListenerInfo("http", "tcp:8080", "tcp 127.0.0.1:8080", False)
        )
        self.status.add(self.httpListener)
        self.api = APIResource(self.status, maxBody=self.maxBody, clock=self.clock)
        self.metrics = HTTPMetrics(self.stats)
        root = Resource()
        root.putChild(b"api", self.api)
        root.putChild(b"healthz", HealthResource(self.status))
        root.putChild(b"metrics", self.metrics.resource())
        port = reactor.listenTCP(
            0, Site(root, parsePOSTFormSubmission=False), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.client = HTTPClient(Agent(reactor, pool=pool))

    async def request(
        self, method: str, path: str, **kwargs: object
    ) -> Tuple[object, bytes]:
        response = await self.client.request(method, self.base + path, **kwargs)
        body = await treq.content(response)
        return response, body

    async def requestJSON(self, method: str, path: str, **kwargs: object) -> Tuple[object, object]:
        """
        Make a request and check it was answered with the API's headers and
        a JSON body; return the response and the parsed body.
        """
        response, body = await self.request(method, path, **kwargs)
        headers = response.headers
        self.assertEqual(
            headers.getRawHeaders(b"Content-Type"), [b"application/json; charset=utf-8"]
        )
        self.assertEqual(headers.getRawHeaders(b"X-Content-Type-Options"), [b"nosniff"])
        self.assertEqual(headers.getRawHeaders(b"Cache-Control"), [b"no-store"])
        return response, json.loads(body.decode("utf-8"))

    async def assertJSONError(
        self, code: int, method: str, path: str, **kwargs: object
    ) -> Dict[str, object]:
        """
        Make a request, check it gets a JSON error with status C{code} and
        return the error body.
        """
        response, body = await self.requestJSON(method, path, **kwargs)
        self.assertEqual(response.code, code, body)
        self.assertEqual(body["status"], code)
        self.assertIsInstance(body["error"], str)
        self.assertNotIn("Traceback", body["error"])
        return body

    def postJSONBytes(self, data: bytes, contentType: bytes = b"application/json") -> Dict[str, object]:
        return {"data": data, "headers": {b"Content-Type": [contentType]}}


class EchoTests(ServerTestCase):
    async def test_getEchoesQueryAndRepeatedHeaders(self) -> None:
        headers = Headers()
        headers.setRawHeaders(b"X-Thing", [b"one", b"two"])
        headers.setRawHeaders(b"Cookie", [b"a=1", b"b=2"])
        headers.setRawHeaders(b"X-Utf8", ["h\u00e9".encode("utf-8")])
        response, body = await self.requestJSON(
            "GET",
            "/api/echo?a=1&a=2&caf%C3%A9=%E2%82%AC&empty=&bad=%FF",
            headers=headers,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["method"], "GET")
        self.assertEqual(body["path"], "/api/echo")
        self.assertEqual(
            body["query"],
            {"a": ["1", "2"], "caf\u00e9": ["\u20ac"], "empty": [""], "bad": ["\ufffd"]},
        )
        self.assertEqual(body["headers"]["x-thing"], "one, two")
        self.assertEqual(body["headers"]["cookie"], "a=1; b=2")
        self.assertEqual(body["headers"]["x-utf8"], "h\u00e9")
        self.assertIn("host", body["headers"])
        self.assertIsNone(body["body"])

    async def test_pathIsDecoded(self) -> None:
        response, body = await self.requestJSON("GET", "/api/echo%20")
        # "/api/echo%20" is another resource: a 404 naming the decoded path.
        self.assertEqual(response.code, 404)
        self.assertIn("/api/echo ", body["error"])

    async def test_headIsGetWithoutBody(self) -> None:
        response, body = await self.request("HEAD", "/api/echo?x=1")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(
            response.headers.getRawHeaders(b"Content-Type"), [b"application/json; charset=utf-8"]
        )
        length = int(response.headers.getRawHeaders(b"Content-Length")[0])
        self.assertGreater(length, 0)

    async def test_postJSON(self) -> None:
        document = {"n": [1, 2.5, True, None], "s": "\u00e9\u20ac", "big": 10**40}
        response, body = await self.requestJSON(
            "POST", "/api/echo?q=1", json=document
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["method"], "POST")
        self.assertEqual(body["query"], {"q": ["1"]})
        self.assertEqual(body["body"], document)

    async def test_postJSONSuffixType(self) -> None:
        response, body = await self.requestJSON(
            "POST",
            "/api/echo",
            **self.postJSONBytes(b'{"op": "add"}', b"application/json-patch+json; charset=UTF-8"),
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["body"], {"op": "add"})

    async def test_postUrlencodedForm(self) -> None:
        response, body = await self.requestJSON(
            "POST",
            "/api/echo",
            data=[("name", "caf\u00e9"), ("name", "b c"), ("x", "")],
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["body"], {"name": ["caf\u00e9", "b c"], "x": [""]})

    async def test_postUrlencodedLatin1(self) -> None:
        response, body = await self.requestJSON(
            "POST",
            "/api/echo",
            **self.postJSONBytes(
                b"name=caf%E9", b"application/x-www-form-urlencoded; charset=iso-8859-1"
            ),
        )
        self.assertEqual(body["body"], {"name": ["caf\u00e9"]})

    async def test_postMultipartForm(self) -> None:
        response, body = await self.requestJSON(
            "POST",
            "/api/echo",
            data={"field": "caf\u00e9"},
            files={"upload": ("r\u00e9sum\u00e9.txt", "text/plain", b"x" * 1234)},
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["body"]["field"], ["caf\u00e9"])
        self.assertEqual(
            body["body"]["upload"],
            [{"filename": "r\u00e9sum\u00e9.txt", "content_type": "text/plain", "size": 1234}],
        )
        self.assertTrue(body["headers"]["content-type"].startswith("multipart/form-data"))

    async def test_multipartRawParts(self) -> None:
        """
        Non-ASCII names and file names are read as UTF-8, C{filename*} is
        honoured, a field's charset is used, and files show no content.
        """
        data = (
            b"--XyZ\r\n"
            b'Content-Disposition: form-data; name="caf\xc3\xa9"\r\n'
            b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
            b"\xe9t\xe9\r\n"
            b"--XyZ\r\n"
            b"Content-Disposition: form-data; name=f; filename=\"a.bin\"; "
            b"filename*=UTF-8''%E2%82%AC.bin\r\n\r\n"
            b"\x00\xffsecret\r\n"
            b"--XyZ--\r\n"
        )
        response, body = await self.requestJSON(
            "POST",
            "/api/echo",
            **self.postJSONBytes(data, b'multipart/form-data; boundary="XyZ"'),
        )
        self.assertEqual(response.code, 200, body)
        self.assertEqual(
            body["body"],
            {
                "caf\u00e9": ["\u00e9t\u00e9"],
                "f": [{"filename": "\u20ac.bin", "content_type": "text/plain", "size": 8}],
            },
        )

    async def test_multipartPartWithoutName(self) -> None:
        data = b"--XyZ\r\nContent-Disposition: form-data\r\n\r\n1\r\n--XyZ--\r\n"
        body = await self.assertJSONError(
            400,
            "POST",
            "/api/echo",
            **self.postJSONBytes(data, b"multipart/form-data; boundary=XyZ"),
        )
        self.assertIn("name", body["error"])

    async def test_multipartWithoutCloseBoundary(self) -> None:
        data = b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
        await self.assertJSONError(
            400,
            "POST",
            "/api/echo",
            **self.postJSONBytes(data, b"multipart/form-data; boundary=XyZ"),
        )

    async def test_multipartWithoutBoundary(self) -> None:
        body = await self.assertJSONError(
            400, "POST", "/api/echo", **self.postJSONBytes(b"--x\r\n", b"multipart/form-data")
        )
        self.assertIn("boundary", body["error"])

    async def test_charsetThatCannotReplace(self) -> None:
        """
        A charset Python knows but that cannot decode with replacement
        (C{idna}), for a form body or a multipart field, is a 400, not a
        500 with a traceback in the log.
        """
        part = (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n'
            b"Content-Type: text/plain; charset=idna\r\n\r\nv\r\n--XyZ--\r\n"
        )
        for data, contentType in (
            (b"a=%41", b"application/x-www-form-urlencoded; charset=idna"),
            (part, b"multipart/form-data; boundary=XyZ"),
        ):
            body = await self.assertJSONError(
                400, "POST", "/api/echo", **self.postJSONBytes(data, contentType)
            )
            self.assertIn("idna", body["error"])

    async def test_malformedJSON(self) -> None:
        body = await self.assertJSONError(
            400, "POST", "/api/echo", **self.postJSONBytes(b'{"a": 1,\n "b" 2}')
        )
        self.assertIn("malformed JSON", body["error"])
        self.assertEqual((body["line"], body["column"]), (2, 6))

    async def test_invalidUTF8(self) -> None:
        body = await self.assertJSONError(
            400, "POST", "/api/echo", **self.postJSONBytes(b'{"a": "\xff"}')
        )
        self.assertIn("UTF-8", body["error"])
        self.assertIn("0xff", body["error"])

    async def test_deepNesting(self) -> None:
        body = await self.assertJSONError(
            400, "POST", "/api/echo", **self.postJSONBytes(b"[" * 100000 + b"]" * 100000)
        )
        self.assertIn("nested too deeply", body["error"])

    async def test_hugeNumbers(self) -> None:
        for data in (b"1" * 5000, b"1e999", b"[NaN]", b"-Infinity"):
            await self.assertJSONError(400, "POST", "/api/echo", **self.postJSONBytes(data))

    async def test_nonUTF8CharsetForJSON(self) -> None:
        body = await self.assertJSONError(
            400, "POST", "/api/echo", **self.postJSONBytes(b"{}", b"application/json; charset=latin-1")
        )
        self.assertIn("UTF-8", body["error"])

    async def test_badContentTypes(self) -> None:
        for contentType in (
            b"json",
            b"application/json; charset",
            b"application/json; a=1; a=2",
            b'application/json; charset="utf-8',
            b"application/x-www-form-urlencoded; charset=nonesuch",
            b"application/x-www-form-urlencoded; charset=base64",
        ):
            await self.assertJSONError(
                400, "POST", "/api/echo", **self.postJSONBytes(b"a=1", contentType)
            )

    async def test_twoContentTypes(self) -> None:
        body = await self.assertJSONError(
            400,
            "POST",
            "/api/echo",
            data=b"{}",
            headers={b"Content-Type": [b"application/json", b"text/plain"]},
        )
        self.assertIn("more than one Content-Type", body["error"])

    async def test_loneSurrogateInJSON(self) -> None:
        response, body = await self.requestJSON(
            "POST", "/api/echo", **self.postJSONBytes(b'["\\ud800"]')
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["body"], ["\ud800"])

    async def test_unknownContentType(self) -> None:
        body = await self.assertJSONError(
            415, "POST", "/api/echo", **self.postJSONBytes(b"hello", b"text/plain")
        )
        self.assertIn("text/plain", body["error"])

    async def test_bodyWithoutContentType(self) -> None:
        await self.assertJSONError(415, "POST", "/api/echo", data=b"hello")

    async def test_putIsNotAllowed(self) -> None:
        response, body = await self.requestJSON("PUT", "/api/echo", data=b"x")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET, HEAD, POST"])
        self.assertEqual(body["status"], 405)
        self.assertEqual(body["allow"], ["GET", "HEAD", "POST"])

    async def test_unknownPathsAreJSON404(self) -> None:
        for path in ("/api/x", "/api/x/y", "/api", "/api/", "/api/echo/more", "/api/status/x"):
            await self.assertJSONError(404, "GET", path)
        body = await self.assertJSONError(404, "DELETE", "/api/x")
        self.assertIn("'/api/x'", body["error"])

    async def test_addedChildIsServed(self) -> None:
        class Jobs(JSONResource):
            def json_GET(self, request):
                return {"jobs": []}

        self.api.putChild(b"jobs", Jobs())
        response, body = await self.requestJSON("GET", "/api/jobs")
        self.assertEqual((response.code, body), (200, {"jobs": []}))
        await self.assertJSONError(404, "GET", "/api/jobs/1")


    async def test_unexpectedErrorIsJSON500(self) -> None:
        """
        A child that fails unexpectedly answers a JSON 500 without a
        traceback, and the failure is logged.
        """

        class Broken(JSONResource):
            def json_GET(self, request):
                raise KeyError("secret detail")

        self.api.putChild(b"broken", Broken())
        body = await self.assertJSONError(500, "GET", "/api/broken")
        self.assertNotIn("secret", json.dumps(body))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


    async def test_deferredAnswers(self) -> None:
        """
        A handler may answer later, through a L{Deferred}: with a value, an
        L{api.Answer} for another status code, an L{APIError}, or an
        unexpected failure (a JSON 500, logged, no traceback sent).
        """
        later = _Later()
        waiting = later.waiting
        self.api.putChild(b"later", later)
        outcomes = [
            ({"a": 1}, 200, {"a": 1}),
            (api.Answer(201, {"made": True}), 201, {"made": True}),
            (Failure(APIError(409, "taken")), 409, {"error": "taken", "status": 409}),
            (Failure(KeyError("secret detail")), 500, {"error": "internal error", "status": 500}),
        ]
        for result, code, expected in outcomes:
            asked = ensureDeferred(self.requestJSON("GET", "/api/later"))
            while not waiting:
                await deferLater(reactor, 0.01, lambda: None)
            self.assertNoResult(asked)
            if isinstance(result, Failure):
                waiting.pop().errback(result)
            else:
                waiting.pop().callback(result)
            response, body = await asked
            self.assertEqual((response.code, body), (code, expected))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class _Later(JSONResource):
    """
    Answers GET through a L{Deferred} the test fires (from C{waiting}).
    """

    def __init__(self) -> None:
        JSONResource.__init__(self)
        self.waiting: List[Deferred] = []

    def json_GET(self, request):
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d


class DeferredAnswerTests(SynchronousTestCase):
    """
    A handler's L{Deferred} that fires after the client has gone writes
    nothing.
    """

    def asked(self) -> tuple[_Later, object, object]:
        """
        A L{_Later} served in memory, asked for once: it, the channel and
        the transport.
        """
        later = _Later()
        root = Resource()
        root.putChild(b"later", later)
        site = Site(root)
        site.timeOut = None
        channel, transport = connectInMemory(site)
        channel.dataReceived(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        return later, channel, transport

    def test_clientGone(self) -> None:
        later, channel, transport = self.asked()
        waiting = later.waiting
        self.assertEqual(len(waiting), 1)
        self.assertEqual(transport.value(), b"")
        channel.connectionLost(Failure(ConnectionDone()))
        waiting[0].callback({"late": True})
        self.assertIsNone(self.successResultOf(waiting[0]))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_answerThatCannotBeSentClosesTheConnection(self) -> None:
        """
        A late answer whose sending fails (a bug: Twisted's own writing
        raised) is logged and the connection closed: it waited, open, for
        the client's timeout, and the failure went unhandled.
        """
        later, channel, transport = self.asked()
        [request] = channel._channel.requests  # type: ignore[attr-defined]

        def broken(data: bytes) -> None:
            raise NameError("a bug")

        request.write = broken
        later.waiting[0].callback({"late": True})
        self.assertIsNone(self.successResultOf(later.waiting[0]))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(NameError)), 1)


class SmallBodyTests(ServerTestCase):
    maxBody = 64

    async def test_bodyOverLimit(self) -> None:
        body = await self.assertJSONError(
            413, "POST", "/api/echo", **self.postJSONBytes(b"[" + b"1," * 40 + b"1]")
        )
        self.assertIn("64", body["error"])

    async def test_bodyAtLimit(self) -> None:
        data = b'"' + b"a" * 62 + b'"'
        response, body = await self.requestJSON("POST", "/api/echo", **self.postJSONBytes(data))
        self.assertEqual(response.code, 200)
        self.assertEqual(body["body"], "a" * 62)


class StatusTests(ServerTestCase):
    async def test_status(self) -> None:
        echo = self.stats.forService("echo")
        echo.connectionsOpen = 2
        echo.connectionsTotal = 7
        echo.count("timeouts", 3)
        self.status.add(
            FakeListener(ListenerInfo("echo", "tcp:7", "tcp 127.0.0.1:7", False))
        )
        self.api.addSection("chat", lambda: {"rooms": 2})
        response, body = await self.requestJSON("GET", "/api/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["version"], __version__)
        self.assertEqual(body["started"], "2023-11-14T22:13:20.000Z")
        self.assertEqual(body["uptime_seconds"], 42.5)
        self.assertEqual(body["chat"], {"rooms": 2})
        self.assertEqual(sorted(body["services"]), ["echo", "http"])
        self.assertEqual(
            body["services"]["echo"],
            {
                "connections_open": 2,
                "connections_total": 7,
                "bytes_in": 0,
                "bytes_out": 0,
                "errors": 0,
                "timeouts": 3,
                "listeners": [
                    {
                        "service": "echo",
                        "endpoint": "tcp:7",
                        "address": "tcp 127.0.0.1:7",
                        "tls": False,
                        "listening": True,
                    }
                ],
            },
        )
        # A service with listeners but no stats gets zero counters.
        self.assertEqual(body["services"]["http"]["connections_open"], 0)
        self.assertEqual(len(body["services"]["http"]["listeners"]), 1)

        self.clock.advance(10)
        response, body = await self.requestJSON("GET", "/api/status")
        self.assertEqual(body["uptime_seconds"], 52.5)

    async def test_failingSectionIsReported(self) -> None:
        self.api.addSection("broken", lambda: 1 // 0)
        self.api.addSection("notJSON", lambda: {"x": object()})
        response, body = await self.requestJSON("GET", "/api/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["broken"], {"error": "unavailable"})
        self.assertEqual(body["notJSON"], {"error": "unavailable"})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_sectionNamesAreUnique(self) -> None:
        self.api.addSection("chat", dict)
        self.assertRaises(ValueError, self.api.addSection, "chat", dict)
        self.assertRaises(ValueError, self.api.addSection, "services", dict)

    async def test_postIsNotAllowed(self) -> None:
        response, body = await self.requestJSON("POST", "/api/status", data=b"")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET, HEAD"])


class HealthTests(ServerTestCase):
    async def test_healthy(self) -> None:
        response, body = await self.request("GET", "/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"ok\n")
        self.assertEqual(
            response.headers.getRawHeaders(b"Content-Type"), [b"text/plain; charset=utf-8"]
        )
        self.assertEqual(response.headers.getRawHeaders(b"Cache-Control"), [b"no-store"])

    async def test_listenerDown(self) -> None:
        self.status.add(FakeListener(ListenerInfo("chat", "tcp:6667", None, False)))
        response, body = await self.request("GET", "/healthz")
        self.assertEqual(response.code, 503)
        self.assertEqual(body, b"not listening:\nchat tcp:6667\n")
        self.assertEqual(response.headers.getRawHeaders(b"Cache-Control"), [b"no-store"])

    async def test_head(self) -> None:
        response, body = await self.request("HEAD", "/healthz")
        self.assertEqual((response.code, body), (200, b""))

    async def test_postIsNotAllowed(self) -> None:
        response, body = await self.request("POST", "/healthz")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET, HEAD"])


def samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """
    Parse a scrape into (sample name, sorted labels) -> value.
    """
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return result


class MetricsTests(ServerTestCase):
    async def scrape(self) -> Tuple[object, Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]]:
        response, body = await self.request("GET", "/metrics")
        self.assertEqual(response.code, 200)
        return response, samples(body.decode("utf-8"))

    async def test_metrics(self) -> None:
        self.metrics.observe(b"GET", 200, 0.0005, 100)
        self.metrics.observe(b"GET", 200, 0.02, 50)
        self.metrics.observe("POST", 413, 3.0, 10)
        self.metrics.observe(b"BREW", 200, 20.0, 0)
        self.metrics.observe(b"get", 999, 0.0, 0)
        echo = self.stats.forService("echo")
        echo.connectionsOpen = 3
        echo.connectionsTotal = 9
        echo.bytesIn = 11
        echo.bytesOut = 12
        echo.countError("timeouts")
        self.stats.forService("chat").count("messages", 5)
        self.stats.forService("chat").gauges["users"] = 7

        response, found = await self.scrape()
        contentType = response.headers.getRawHeaders(b"Content-Type")[0]
        self.assertTrue(contentType.startswith(b"text/plain; version=0.0.4"), contentType)

        def value(name: str, **labels: str) -> float:
            return found[name, tuple(sorted(labels.items()))]

        requests = "netsuite_http_requests_total"
        self.assertEqual(value(requests, method="GET", status="200"), 2)
        self.assertEqual(value(requests, method="POST", status="413"), 1)
        self.assertEqual(value(requests, method="other", status="200"), 1)
        self.assertEqual(value(requests, method="other", status="other"), 1)
        self.assertNotIn((requests, (("method", "BREW"), ("status", "200"))), found)

        bucket = "netsuite_http_request_duration_seconds_bucket"
        self.assertEqual(value(bucket, le="0.001"), 2)
        self.assertEqual(value(bucket, le="0.025"), 3)
        self.assertEqual(value(bucket, le="5.0"), 4)
        self.assertEqual(value(bucket, le="10.0"), 4)
        self.assertEqual(value(bucket, le="+Inf"), 5)
        self.assertEqual(value("netsuite_http_request_duration_seconds_count"), 5)
        self.assertAlmostEqual(value("netsuite_http_request_duration_seconds_sum"), 23.0205)
        self.assertEqual(value("netsuite_http_response_bytes_total"), 160)

        self.assertEqual(value("netsuite_connections_open", service="echo"), 3)
        self.assertEqual(value("netsuite_connections_open", service="chat"), 0)
        self.assertEqual(value("netsuite_connections_total", service="echo"), 9)
        self.assertEqual(value("netsuite_received_bytes_total", service="echo"), 11)
        self.assertEqual(value("netsuite_sent_bytes_total", service="echo"), 12)
        self.assertEqual(value("netsuite_errors_total", service="echo"), 1)
        events = "netsuite_service_events_total"
        self.assertEqual(value(events, service="echo", event="timeouts"), 1)
        self.assertEqual(value(events, service="chat", event="messages"), 5)
        self.assertEqual(found["netsuite_service_gauge", (("name", "users"), ("service", "chat"))], 7)

    async def test_statsAreReadAtScrapeTime(self) -> None:
        echo = self.stats.forService("echo")
        echo.connectionsOpen = 1
        _, found = await self.scrape()
        self.assertEqual(found["netsuite_connections_open", (("service", "echo"),)], 1)
        echo.connectionsOpen = 4
        _, found = await self.scrape()
        self.assertEqual(found["netsuite_connections_open", (("service", "echo"),)], 4)

    async def test_headAndOtherMethods(self) -> None:
        response, body = await self.request("HEAD", "/metrics")
        self.assertEqual((response.code, body), (200, b""))
        self.assertTrue(
            response.headers.getRawHeaders(b"Content-Type")[0].startswith(b"text/plain; version=0.0.4")
        )
        response, body = await self.request("POST", "/metrics", data=b"x")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET, HEAD"])

    async def test_openMetricsOnRequest(self) -> None:
        response, body = await self.request(
            "GET", "/metrics", headers={b"Accept": [b"application/openmetrics-text; version=1.0.0"]}
        )
        self.assertEqual(response.code, 200)
        contentType = response.headers.getRawHeaders(b"Content-Type")[0]
        self.assertTrue(contentType.startswith(b"application/openmetrics-text"), contentType)
        self.assertTrue(body.endswith(b"# EOF\n"))

    async def test_openMetricsRefused(self) -> None:
        """
        OpenMetrics named with C{q=0} (not acceptable) gets the text
        format; it got OpenMetrics.
        """
        response, body = await self.request(
            "GET", "/metrics", headers={b"Accept": [b"application/openmetrics-text; version=1.0.0; q=0, text/plain"]}
        )
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"text/plain; version=0.0.4; charset=utf-8"])
        self.assertFalse(body.endswith(b"# EOF\n"))

    def test_registriesAreSeparate(self) -> None:
        """
        Two L{HTTPMetrics} do not share (or collide in) a registry.
        """
        other = HTTPMetrics(StatsRegistry())
        other.observe(b"GET", 200, 0.1, 1)
        self.assertIsNot(other.registry, self.metrics.registry)
        self.assertEqual(
            self.metrics.registry.get_sample_value(
                "netsuite_http_requests_total", {"method": "GET", "status": "200"}
            ),
            0,
        )


class ContentTypeTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            _parseContentType('Multipart/Form-Data ; Boundary="a \\"b\\" c";;x=y'),
            ("multipart/form-data", {"boundary": 'a "b" c', "x": "y"}),
        )

    def test_malformed(self) -> None:
        for value in ("", "text", "text/", "text/plain x", "text/plain; =x", "te xt/plain"):
            error = self.assertRaises(APIError, _parseContentType, value)
            self.assertEqual(error.code, 400)


def multipart(parts: List[bytes], boundary: bytes = b"B") -> bytes:
    """
    A multipart body of C{parts} (each its headers, an empty line, content).
    """
    return b"".join(b"--%s\r\n%s\r\n" % (boundary, part) for part in parts) + b"--%s--\r\n" % (
        boundary,
    )


def field(name: bytes, value: bytes, *headers: bytes) -> bytes:
    lines = (b"Content-Disposition: form-data; name=" + name,) + headers
    return b"\r\n".join(lines) + b"\r\n\r\n" + value


class InMemoryEchoTests(SynchronousTestCase):
    """
    C{/api/echo} driven in memory: a real L{Site} and HTTP/1.1 channel over a
    L{StringTransport}.
    """

    def post(self, body: bytes, contentType: bytes) -> Tuple[int, Dict[str, object]]:
        """
        POST C{body} to C{/api/echo}; return the status and the parsed JSON.
        """
        root = Resource()
        root.putChild(b"api", APIResource(SimpleStatus(StatsRegistry()), clock=Clock()))
        site = Site(root, parsePOSTFormSubmission=False, reactor=MemoryReactorClock())
        channel, transport = connectInMemory(site)
        channel.dataReceived(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (contentType, len(body), body)
        )
        channel.connectionLost(Failure(ConnectionDone()))
        head, _, payload = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Type: application/json; charset=utf-8", head)
        return int(head.split(b" ", 2)[1]), json.loads(payload)

    def postMultipart(self, parts: List[bytes]) -> Tuple[int, Dict[str, object]]:
        return self.post(multipart(parts), b"multipart/form-data; boundary=B")

    def assertError(self, code: int, answer: Tuple[int, Dict[str, object]], *words: str) -> str:
        """
        Check that C{answer} is a JSON error with status C{code}, short, and
        naming each of C{words}; return its message.
        """
        status, body = answer
        self.assertEqual((status, body.get("status")), (code, code), str(body)[:200])
        self.assertLess(len(body["error"]), 200)
        for word in words:
            self.assertIn(word, body["error"])
        return body["error"]

    def test_headerParametersAreBounded(self) -> None:
        """
        A part's C{Content-Type} or C{Content-Disposition} with more than 64
        parameters (every C{;} counts) is a 400 naming the limit: a body of
        C{;} was read by Python's email package in time quadratic in their
        number (14 s for 1 MiB).  64 are still read.
        """
        semicolons = b"text/plain" + b";" * 65536
        self.assertError(
            400,
            self.postMultipart([field(b"a", b"v", b"Content-Type: " + semicolons)]),
            "Content-Type",
            "64 parameters",
        )
        params = b"".join(b"; p%d=v" % (i,) for i in range(63))
        self.assertError(
            400,
            self.postMultipart([field(b"a" + params + b"; q=v", b"v")]),
            "Content-Disposition",
            "64 parameters",
        )
        status, body = self.postMultipart([field(b"a" + params, b"v")])
        self.assertEqual((status, body["body"]), (200, {"a": ["v"]}))
        self.assertError(
            400, self.post(b"a=1", b"application/x-www-form-urlencoded" + b";" * 65), "64 parameters"
        )

    def test_partsAreBounded(self) -> None:
        """
        A multipart body of more than 1000 parts is a 413 (1 MiB holds
        20,000 tiny parts); 1000 are read.
        """
        parts = [field(b"a", b"%d" % (i,)) for i in range(1000)]
        status, body = self.postMultipart(parts)
        self.assertEqual(status, 200)
        self.assertEqual(body["body"]["a"], [str(i) for i in range(1000)])
        self.assertError(413, self.postMultipart(parts + [field(b"b", b"")]), "1000 parts")

    def test_emailPackageNotUsed(self) -> None:
        """
        Multipart bodies are parsed without Python's email package, whose
        parameter parser takes time quadratic in a header's length: one
        part's C{Content-Type} of 1 MiB of C{;} held the server 14 s (quoted,
        11 minutes); C{benchmarks/parse_bench.py} measures it.
        """
        import email.feedparser
        import email.message

        used = []

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            used.append(True)
            raise AssertionError("the email package was used")

        self.patch(email.message, "_parseparam", refuse)
        self.patch(email.feedparser.FeedParser, "feed", refuse)
        cd = b"Content-Disposition: form-data; name=a"
        for body in (
            multipart([field(b"a", b"v", b"Content-Type: text/plain" + b";" * 1000)]),
            multipart([field(b"a", b"v", b'Content-Type: text/plain; charset=utf-8; x="' + b";" * 1000 + b'"')]),
            multipart([field(b"a", b"", b'Content-Type: multipart/mixed; boundary=C; x="' + b";" * 100 + b'"')]),
            multipart([b'Content-Disposition: form-data; name="' + b'\\"' * 100 + b'"\r\n\r\nv']),
            multipart([cd + b"\r\nX: y" + b"\r\n z" * 100 + b"\r\n\r\nv"]),
            multipart([field(b"f", b"data", b"Content-Type: text/plain; charset=latin-1")]),
        ):
            try:
                api._parseMultipart(body, {"boundary": "B"})
            except APIError:
                pass
        self.assertEqual(used, [])

    def test_formFieldsBounded(self) -> None:
        """
        A form of more than 1000 fields is a 413, before it is parsed
        (Python's parser held the reactor a second for a 1 MiB form of
        empty fields); 1000 are taken.
        """
        form = b"application/x-www-form-urlencoded"
        status, body = self.post(b"a&" * 999 + b"a", form)
        self.assertEqual((status, len(body["body"]["a"])), (200, 1000))  # type: ignore[index]
        self.assertError(413, self.post(b"a&" * 1000, form), "1000 fields")

    def test_multipartBoundaryCopiesCostNothing(self) -> None:
        """
        The boundary's bytes inside a line cost no turn of the parser's
        loop (each copy of C{--B} in a part cost one: 0.42 s a MiB); lines
        that begin with it without being delimiters (RFC 2046 forbids them)
        are a 400 past 1000.
        """
        matched: List[int] = []
        end = api._DELIMITER_END

        class Counting:
            def match(self, *args: Any) -> Any:
                matched.append(1)
                return end.match(*args)

        self.patch(api, "_DELIMITER_END", Counting())
        body = multipart([field(b"a", b"x--B" * 10000)])
        self.assertEqual(api._splitMultipart(body, b"B"), [field(b"a", b"x--B" * 10000)])
        self.assertLessEqual(len(matched), 3)
        self.patch(api, "_DELIMITER_END", end)
        inside = multipart([field(b"a", b"x\r\n--Bx" * 1001)])
        self.assertError(400, self.post(inside, b"multipart/form-data; boundary=B"), "boundary")
        kept = multipart([field(b"a", b"x\r\n--Bx" * 1000)])
        self.assertEqual(self.post(kept, b"multipart/form-data; boundary=B")[0], 200)

    def test_multipartShapes(self) -> None:
        """
        Nested multiparts are refused, a C{message/rfc822} part is text,
        base64 and quoted-printable parts are decoded, malformed header lines
        are a 400, and what an error quotes is cut short.
        """
        nested = multipart(
            [field(b"a", b"--C\r\n\r\nv\r\n--C--", b"Content-Type: multipart/mixed; boundary=C")]
        )
        self.assertError(400, self.post(nested, b"multipart/form-data; boundary=B"), "nested")
        status, body = self.postMultipart(
            [
                field(b"m", b"Content-Type: message/rfc822\r\n\r\nx", b"Content-Type: message/rfc822"),
                field(b"b", b"w6l0w6k=", b"Content-Transfer-Encoding: base64"),
                field(b"q", b"=C3=A9t=C3=A9", b"Content-Transfer-Encoding: Quoted-Printable"),
            ]
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(
            body["body"],
            {
                "m": ["Content-Type: message/rfc822\r\n\r\nx"],
                "b": ["\u00e9t\u00e9"],
                "q": ["\u00e9t\u00e9"],
            },
        )
        self.assertError(400, self.postMultipart([field(b"a", b"v", b"not a header")]), "header")
        for contentType, word in (
            (b"Content-Type: text/plain; charset=" + b"u" * 65536, "charset"),
            (b"Content-Type: text/plain; x=" + b"\xff" * 65536, "Content-Type"),
        ):
            self.assertError(400, self.postMultipart([field(b"a", b"v", contentType)]), word)

    def assertBothRefuse(self, charset: bytes, value: bytes) -> None:
        """
        A form body and a multipart field holding C{value} in C{charset}
        each get a 400 naming the charset.
        """
        named = charset.decode("ascii")
        form = b"a=" + quote_from_bytes(value, safe="").encode("ascii")
        self.assertError(400, self.post(form, b"application/x-www-form-urlencoded; charset=" + charset), named)
        part = field(b"a", value, b"Content-Type: text/plain; charset=" + charset)
        self.assertError(400, self.postMultipart([part]), named)

    def test_punycodeIsRefused(self) -> None:
        """
        C{punycode} fails on any non-ASCII byte even when told to replace (a
        500 with a traceback in the log), and takes time quadratic in what
        it decodes: for a form body or a multipart field it is a 400 naming
        it, like C{idna}.
        """
        self.assertBothRefuse(b"punycode", b"\xff")

    def test_unknownCharsetNamesAreNotLookedUp(self) -> None:
        """
        Only the names of Python's own codecs are looked up: Python keeps
        every name it is asked for, unknown ones too, so a client sending
        new names would grow the server's memory without bound.  Spellings
        of a known name are looked up by its normal form.
        """
        asked = codecSearch(self)
        unknown = [b"nonesuch-4711", b"x" * 1000, b"utf-8-x"]
        answers = [
            self.post(b"a=1", b"application/x-www-form-urlencoded; charset=" + charset)
            for charset in unknown
        ]
        self.assertEqual([name for name in asked if "nonesuch" in name or "x" in name], [])
        for answer in answers:
            self.assertError(400, answer, "charset")
        status, body = self.post(b"a=%e9", b"application/x-www-form-urlencoded; charset=ISO--8859--1")
        self.assertEqual((status, body["body"]), (200, {"a": ["\u00e9"]}))

    def test_codecFailingAnywayIsA400(self) -> None:
        """
        A codec that fails while decoding even when told to replace makes a
        400 naming it, not a 500, should Python ever have one that passes
        the check.
        """

        def decode(data: bytes, errors: str = "strict") -> Tuple[str, int]:
            if b"!" in bytes(data):
                raise UnicodeDecodeError("failing", bytes(data), 0, 1, "fails on !")
            return bytes(data).decode("latin-1"), len(data)

        info = codecs.CodecInfo(codecs.latin_1_encode, decode, name="failing")
        codecSearch(self, lambda name: info if name == "failing" else None)
        from netsuite import charsets

        self.patch(charsets, "_CODEC_NAMES", charsets._CODEC_NAMES | {"failing"})
        self.assertBothRefuse(b"failing", b"!")

