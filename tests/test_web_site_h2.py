"""
Tests for HTTP/2 in L{netsuite.web.site}: the site's request limits on
HTTP/2 streams, and a connection that reads nothing more once it is
closing (in memory, fake clock, with the h2 library as the client), and the
same over real TLS connections negotiated by ALPN.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import time

import trustme
from twisted.python.filepath import FilePath
from twisted.internet import threads
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.http import H2_ENABLED
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from netsuite.stats import StatsRegistry
from netsuite.status import SimpleStatus
from netsuite.web import site as siteModule
from netsuite.web.site import H2_TURN_BYTES, Limits, NetsuiteH2Connection, makeHTTPService
from tests.helpers import PLAIN, connectInMemory, rawExchange, startListener
from tests.test_web_site import Guarded, inMemory, statusLine, waitForNoConnections
from tests.tlshelpers import SOCKET_TIMEOUT, makeServerOptions

if H2_ENABLED:
    from twisted.web._http2 import H2Connection as H2ConnectionOfTwisted
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.settings

#: The client's connection preface (RFC 9113, 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, streamID: int, payload: bytes) -> bytes:
    """
    One HTTP/2 frame (RFC 9113, 4.1).
    """
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", streamID) + payload


#: An empty SETTINGS frame; HEADERS for C{GET /} on stream 1 with
#: END_STREAM but without END_HEADERS; and a 16 KiB CONTINUATION frame
#: without END_HEADERS: sent again and again, a CONTINUATION flood.
SETTINGS = frame(4, 0, 0, b"")
OPEN_HEADERS = frame(1, 0x1, 1, b"\x82\x84\x86")
CONTINUATION = frame(9, 0, 1, b"\x00\x03x-a\x7f\x81\x7f" + b"a" * 16376)


def parseFrames(data: bytes) -> list:
    """
    The whole frames in C{data}, parsed by hyperframe (a client library
    reads nothing after a GOAWAY).
    """
    from hyperframe.frame import Frame

    frames = []
    while len(data) >= 9:
        parsed, length = Frame.parse_frame_header(memoryview(data[:9]))
        parsed.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(parsed)
        data = data[9 + length :]
    return frames


def goAwayCodes(data: bytes) -> list[int]:
    """
    The error codes of the GOAWAY frames in C{data}.
    """
    return [parsed.error_code for parsed in parseFrames(data) if parsed.type == 7]


def request(method: str, path: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [(":method", method), (":path", path), (":scheme", "https"), (":authority", "localhost"), *extra]


class Exchange:
    """
    An in-memory HTTP/2 connection to a site on a fake clock: the h2
    library is the client, and what each stream got back is collected.

    @ivar answers: by stream: C{status}, C{body}, C{ended}, C{reset} (the
        RST_STREAM error code, if any).
    @ivar acknowledge: whether the client gives back the flow-control
        window for the data it receives (a reader that stopped reading
        does not).
    """

    acknowledge = True

    def __init__(
        self, limits: Limits, tls: bool = True, trickle: bool = False, handshake: bool = True, **kwargs: object
    ) -> None:
        """
        @param tls: whether the connection is one where ALPN chose HTTP/2;
            else a plain one (HTTP/2 with prior knowledge, if the site
            allows it).
        @param trickle: send the client's first bytes (the preface and its
            SETTINGS) a byte a read.
        @param handshake: exchange the SETTINGS now; else the client's stay
            to be sent with what the test adds, and it knows nothing of the
            server's settings.
        @param kwargs: for L{makeSite}.
        """
        self.clock, self.site, _ = inMemory(limits, **kwargs)
        self.protocol, self.transport = connectInMemory(self.site, b"h2" if tls else PLAIN)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.answers: dict[int, dict] = {}
        self.goaway: int | None = None
        #: The debug data of the server's GOAWAY.
        self.goawayData: bytes | None = None
        if trickle:
            for byte in self.client.data_to_send():
                self.protocol.dataReceived(bytes([byte]))
        if handshake:
            self.pump()

    def send(self, data: bytes) -> None:
        """
        Give the server raw bytes, as one read.
        """
        self.protocol.dataReceived(data)
        self.pump()

    def get(self, path: str) -> int:
        """
        Send a GET of C{path} on a new stream, carry the bytes both ways,
        and return the stream's id.
        """
        streamID = self.client.get_next_available_stream_id()
        self.client.send_headers(streamID, request("GET", path), end_stream=True)
        self.pump()
        return streamID

    def pump(self) -> None:
        """
        Carry bytes both ways until neither side has more to say.
        """
        for _ in range(100):
            data = self.client.data_to_send()
            if data and not self.transport.disconnecting:
                self.protocol.dataReceived(data)
            self.clock.advance(0)
            out = self.transport.value()
            self.transport.clear()
            if out and self.goaway is None:
                self.receive(out)
            elif not data:
                return

    def receive(self, data: bytes) -> None:
        for event in self.client.receive_data(data):
            if isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event.error_code
                self.goawayData = event.additional_data
                continue
            if not isinstance(
                event,
                (
                    h2.events.InformationalResponseReceived,
                    h2.events.ResponseReceived,
                    h2.events.DataReceived,
                    h2.events.StreamEnded,
                    h2.events.StreamReset,
                ),
            ):
                continue
            answer = self.answers.setdefault(
                event.stream_id,
                {"status": None, "body": b"", "ended": False, "reset": None, "interim": [], "headers": {}},
            )
            if isinstance(event, h2.events.InformationalResponseReceived):
                answer["interim"].append(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.ResponseReceived):
                answer["headers"] = dict(event.headers)
                answer["status"] = answer["headers"][b":status"]
            elif isinstance(event, h2.events.DataReceived):
                answer["body"] += event.data
                if self.acknowledge:
                    self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                answer["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                answer["reset"] = event.error_code


class ExchangeTestCase(SynchronousTestCase):
    """
    Tests with an L{Exchange} (C{self.exchange}) to a site with the limits
    L{limits} gives; skipped where Twisted cannot speak HTTP/2.
    """

    def limits(self) -> Limits:
        return Limits()

    def setUp(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        self.exchange = Exchange(self.limits())
        self.addCleanup(self.exchange.site.stopFactory)


class LimitTests(ExchangeTestCase):
    """
    HTTP/2 requests get the answers HTTP/1 requests get at the same
    limits (Twisted's HTTP/2 took 500 headers, and reset the stream of a
    body over the limit instead of answering 413).
    """

    def limits(self) -> Limits:
        return Limits(maxBody=100, maxRequestLine=200, maxHeaderBytes=1000, maxHeaders=5)

    def assertRefused(self, streamID: int, status: bytes) -> dict:
        """
        Stream C{streamID} got C{status} with a JSON error, and the
        connection goes on: another request on it is answered.
        """
        exchange = self.exchange
        answer = exchange.answers[streamID]
        self.assertEqual(answer["status"], status)
        self.assertEqual(json.loads(answer["body"])["status"], int(status))
        self.assertTrue(answer["ended"])
        nextID = exchange.get("/healthz")
        self.assertEqual(exchange.answers[nextID]["status"], b"200")
        self.assertIsNone(exchange.goaway)
        self.assertFalse(exchange.transport.disconnecting)
        return answer

    def test_tooManyHeaders(self) -> None:
        self.exchange.client.send_headers(
            1, request("GET", "/api/echo", *[(f"x-{i}", "y") for i in range(6)]), end_stream=True
        )
        self.exchange.pump()
        self.assertRefused(1, b"431")

    def test_fiveHeadersAllowed(self) -> None:
        """
        Five header lines are allowed: C{:authority} (the Host) and four
        more.
        """
        self.exchange.client.send_headers(
            1, request("GET", "/healthz", *[(f"x-{i}", "y") for i in range(4)]), end_stream=True
        )
        self.exchange.pump()
        self.assertEqual(self.exchange.answers[1]["status"], b"200")

    def test_headerBlockTooLarge(self) -> None:
        self.exchange.client.send_headers(
            1, request("GET", "/api/echo", *[(f"x-{i}", "y" * 195) for i in range(5)]), end_stream=True
        )
        self.exchange.pump()
        self.assertRefused(1, b"431")

    def test_headerLineTooLong(self) -> None:
        self.exchange.client.send_headers(
            1, request("GET", "/api/echo", ("x-big", "a" * 300)), end_stream=True
        )
        self.exchange.pump()
        self.assertRefused(1, b"431")

    def test_headerBlockOverH2BoundEndsConnection(self) -> None:
        """
        A header block that decodes to more than h2's 64 KiB cannot be
        answered on its stream (h2 stops decoding it, so the compression
        state is lost): GOAWAY with ENHANCE_YOUR_CALM, as the README says.
        """
        exchange = self.exchange
        exchange.client.send_headers(
            1, request("GET", "/healthz", *[(f"x-{i}", "y" * 8000) for i in range(10)]), end_stream=True
        )
        exchange.pump()
        self.assertEqual(exchange.goaway, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(exchange.answers, {})
        self.assertTrue(exchange.transport.disconnecting)

    def test_pathTooLong(self) -> None:
        self.exchange.client.send_headers(1, request("GET", "/" + "a" * 300), end_stream=True)
        self.exchange.pump()
        self.assertRefused(1, b"414")

    def test_malformedPath(self) -> None:
        """
        A C{:path} that is not a path is a 400 (C{x/healthz} was served as
        C{/healthz}).
        """
        self.exchange.client.send_headers(1, request("GET", "x/healthz"), end_stream=True)
        self.exchange.pump()
        self.assertRefused(1, b"400")

    def test_targetsRefusedAsOverHTTP1(self) -> None:
        """
        What HTTP/1.1 refuses with 400 is refused over HTTP/2 too: a
        malformed C{:authority}, an absolute URL in C{:path} (RFC 9113 8.3.1: origin-form or C{*}; its host
        took the place of C{:authority}) and bytes that are not visible
        ASCII in it.
        """
        client = self.exchange.client
        client.config.validate_outbound_headers = False
        client.config.normalize_outbound_headers = False
        streams = []
        for headers in (
            [(b":method", b"GET"), (b":path", b"/api/echo"), (b":scheme", b"https"), (b":authority", b"a/b@c")],
            [(b":method", b"GET"), (b":path", b"http://evil/api/echo"), (b":scheme", b"https"), (b":authority", b"a")],
            [(b":method", b"GET"), (b":path", b"/api/echo\x01"), (b":scheme", b"https"), (b":authority", b"a")],
            [(b":method", b"GET"), (b":path", b"/\xff\xfe"), (b":scheme", b"https"), (b":authority", b"a")],
            [(b":method", b"GET"), (b":path", b"/a\x7f"), (b":scheme", b"https"), (b":authority", b"a")],
        ):
            streamID = client.get_next_available_stream_id()
            client.send_headers(streamID, headers, end_stream=True)
            self.exchange.pump()
            streams.append(streamID)
        for streamID in streams:
            self.assertRefused(streamID, b"400")
        streamID = client.get_next_available_stream_id()
        client.send_headers(
            streamID,
            [(b":method", b"GET"), (b":path", b"/api/echo"), (b":scheme", b"https"), (b":authority", b"a"), (b"host", b"a")],
            end_stream=True,
        )
        self.exchange.pump()
        answer = self.exchange.answers[streamID]
        self.assertEqual(answer["status"], b"200")
        # A Host that says what :authority says is one Host.
        self.assertEqual(json.loads(answer["body"])["headers"]["host"], "a")

    def test_malformedHeadsRefusedOnTheirStream(self) -> None:
        """
        A malformed request head (RFC 9113, 8.1.1) is a 400 on its own
        stream, and the connection's other requests go on, as in nginx: h2
        made each a connection error, ending every stream with a GOAWAY.
        """
        client = self.exchange.client
        client.config.validate_outbound_headers = False
        client.config.normalize_outbound_headers = False
        head = [(b":method", b"GET"), (b":path", b"/healthz"), (b":scheme", b"https"), (b":authority", b"a")]
        malformed = {
            "upper-case name": head + [(b"X-Foo", b"1")],
            "te not trailers": head + [(b"te", b"gzip")],
            "connection field": head + [(b"connection", b"keep-alive")],
            "host unlike :authority": head + [(b"host", b"b")],
            "two :path": head + [(b":path", b"/")],
            "no :scheme": head[:2] + head[3:],
            "empty name": head + [(b"", b"1")],
            "unknown pseudo-header": head + [(b":foo", b"1")],
            "pseudo-header after a field": head[:3] + [(b"x-a", b"1"), head[3]],
            "value with a space around": head + [(b"x-a", b" 1")],
            "content-length not a number": head + [(b"content-length", b"5x")],
            "two content-lengths": head + [(b"content-length", b"5"), (b"content-length", b"6")],
        }
        streams = {}
        for why, headers in malformed.items():
            streamID = client.get_next_available_stream_id()
            client.send_headers(streamID, headers, end_stream=True)
            self.exchange.pump()
            streams[why] = streamID
        for why, streamID in streams.items():
            with self.subTest(why):
                answer = self.assertRefused(streamID, b"400")
                self.assertIn("malformed request", json.loads(answer["body"])["error"])

    def test_bodyUnlikeItsLengthRefusedOnItsStream(self) -> None:
        """
        A body longer than its C{content-length}, or ending short of it, is
        a 400 on its stream, not processed; the connection goes on, and its
        flow-control window is given back (h2 ended the connection).
        """
        exchange = self.exchange
        client = exchange.client
        headers = request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "5"))
        client.send_headers(1, headers)
        for _ in range(3):  # the rest after the refusal, in the same read
            client.send_data(1, b"1," * 7000)
        exchange.pump()
        answer = self.assertRefused(1, b"400")
        self.assertIn("longer than its content-length of 5", json.loads(answer["body"])["error"])
        self.assertEqual(client.outbound_flow_control_window, 65535)
        streamID = client.get_next_available_stream_id()
        client.send_headers(streamID, headers)
        client.send_data(streamID, b"[1]", end_stream=True)
        exchange.pump()
        answer = self.assertRefused(streamID, b"400")
        self.assertIn("body of 3 bytes, content-length 5", json.loads(answer["body"])["error"])
        streamID = client.get_next_available_stream_id()
        client.send_headers(streamID, headers)
        client.send_data(streamID, b"[1,2]", end_stream=True)
        exchange.pump()
        self.assertEqual(exchange.answers[streamID]["status"], b"200")

    def test_shortBodyRefusedWithoutAReset(self) -> None:
        """
        A body that ends short of its C{content-length} gets its 400 and
        no reset after it, and its stream is closed: the client had ended
        it (h2 raised before it took the end, and a C{RST_STREAM NO_ERROR}
        followed the answer).
        """
        exchange = self.exchange
        client = exchange.client
        client.send_headers(1, request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "5")))
        client.send_data(1, b"[1]", end_stream=True)
        exchange.protocol.dataReceived(client.data_to_send())
        sent = [(type(each).__name__, sorted(each.flags)) for each in parseFrames(exchange.transport.value())]
        self.assertEqual(sent, [("HeadersFrame", ["END_HEADERS"]), ("DataFrame", ["END_STREAM"])])
        self.assertEqual(exchange.protocol._channel.conn.open_inbound_streams, 0)

    def test_trailersChecked(self) -> None:
        """
        Trailers that end a body short of its C{content-length}, or that
        are malformed (a pseudo-header, an upper-case name), make the
        request a 400 on its stream: h2 checks a declared length only
        against DATA frames that end the stream, and with its checks made
        here, trailers were not checked at all.  Well-formed trailers after
        the whole body are fine.
        """
        exchange = self.exchange
        client = exchange.client
        client.config.validate_outbound_headers = False
        client.config.normalize_outbound_headers = False
        head = request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "5"))
        cases = [
            (b"[1]", [(b"x-t", b"1")], "body of 3 bytes, content-length 5"),
            (b"", [(b"x-t", b"1")], "body of 0 bytes, content-length 5"),
            (b"[1,2]", [(b":path", b"/admin")], "malformed trailers"),
            (b"[1,2]", [(b"X-Up", b"1")], "malformed trailers"),
        ]
        for body, trailers, why in cases:
            streamID = client.get_next_available_stream_id()
            client.send_headers(streamID, head)
            if body:
                client.send_data(streamID, body)
            client.send_headers(streamID, trailers, end_stream=True)
            exchange.pump()
            with self.subTest(why):
                answer = self.assertRefused(streamID, b"400")
                self.assertIn(why, json.loads(answer["body"])["error"])
        streamID = client.get_next_available_stream_id()
        client.send_headers(streamID, head)
        client.send_data(streamID, b"[1,2]")
        client.send_headers(streamID, [(b"x-t", b"1")], end_stream=True)
        exchange.pump()
        self.assertEqual(exchange.answers[streamID]["status"], b"200")

    def test_trailersNotEndingTheStream(self) -> None:
        """
        Trailers that do not end their stream make the request malformed
        (RFC 9113, 8.1), and so do trailers with an informational
        C{:status}: each is a 400 on its stream, the body the client sent
        after them is ignored, and the connection goes on.  h2 made each a
        connection error, ending every stream with a GOAWAY.
        """
        exchange = self.exchange
        client = exchange.client
        head = request("POST", "/api/echo", ("content-type", "application/json"))
        for trailers in ([(b"x-t", b"1")], [(b":status", b"100")]):
            streamID = client.get_next_available_stream_id()
            client.send_headers(streamID, head)
            client.send_data(streamID, b"[1")
            exchange.pump()
            # Raw: h2 will not send trailers without END_STREAM.
            exchange.send(
                frame(1, 0x4, streamID, client.encoder.encode(trailers)) + frame(0, 0x1, streamID, b",2]")
            )
            with self.subTest(trailers=trailers):
                answer = self.assertRefused(streamID, b"400")
                self.assertIn("malformed trailers", json.loads(answer["body"])["error"])

    def test_trailersTwice(self) -> None:
        """
        Trailers that do not end their stream, then more trailers in the
        same read: the request gets its 400 (h2 marked the stream closed
        at the second, and the 400 went unsent, the client left waiting).
        """
        exchange = self.exchange
        client = exchange.client
        client.send_headers(1, request("POST", "/api/echo", ("content-type", "application/json")))
        client.send_data(1, b"[1]")
        exchange.pump()
        exchange.send(
            frame(1, 0x4, 1, client.encoder.encode([(b"x-t", b"1")]))
            + frame(1, 0x5, 1, client.encoder.encode([(b"x-u", b"2")]))
        )
        answer = self.assertRefused(1, b"400")
        self.assertIn("malformed trailers", json.loads(answer["body"])["error"])

    def test_statusInARequestHead(self) -> None:
        """
        A request head with a C{:status}, of any value, is malformed: a 400
        on its stream, and the connection goes on.  h2 took one of C{1xx}
        for the head of an interim answer, and ended the connection.
        """
        exchange = self.exchange
        client = exchange.client
        for streamID, status in ((1, b"100"), (3, b"200")):
            head = [(b":status", status)] + [(name.encode(), value.encode()) for name, value in request("GET", "/")]
            # Raw: h2 will not send it.
            exchange.protocol.dataReceived(frame(1, 0x5, streamID, client.encoder.encode(head)))
            answer = [each for each in parseFrames(exchange.transport.value()) if each.stream_id == streamID]
            exchange.transport.clear()
            with self.subTest(status=status):
                [answerHead, body] = answer
                self.assertEqual(dict(client.decoder.decode(answerHead.data, raw=True))[b":status"], b"400")
                self.assertIn("response-only headers", json.loads(body.data)["error"])
        client.send_headers(5, request("GET", "/healthz"), end_stream=True)
        exchange.pump()
        self.assertEqual(exchange.answers[5]["status"], b"200")
        self.assertIsNone(exchange.goaway)

    def test_cookieCrumbs(self) -> None:
        """
        A C{cookie} before a pseudo-header is malformed (RFC 9113, 8.3):
        h2 moved cookies to the end before checking the order.  Crumbs,
        an empty one among them, are joined for the request (h2 joined
        them into C{a=1; }, refused for its trailing space).
        """
        client = self.exchange.client
        client.config.validate_outbound_headers = False
        client.config.normalize_outbound_headers = False
        head = [(b":method", b"GET"), (b":path", b"/api/echo"), (b":scheme", b"https"), (b":authority", b"a")]
        client.send_headers(1, [(b"cookie", b"a=1")] + head, end_stream=True)
        self.exchange.pump()
        self.assertRefused(1, b"400")
        streamID = client.get_next_available_stream_id()
        client.send_headers(streamID, head + [(b"cookie", b"a=1"), (b"cookie", b""), (b"cookie", b"b=2")], end_stream=True)
        self.exchange.pump()
        answer = self.exchange.answers[streamID]
        self.assertEqual(answer["status"], b"200")
        self.assertEqual(json.loads(answer["body"])["headers"]["cookie"], "a=1; b=2")

    def test_contentLengthOfThousandsOfDigits(self) -> None:
        """
        A C{content-length} of more digits than C{int()} takes (4,300) is
        read as its number, as over HTTP/1: h2 could not read it, and
        ended the connection.
        """
        exchange = Exchange(Limits(maxRequestLine=8000, maxHeaderBytes=16000))
        self.addCleanup(exchange.site.stopFactory)
        headers = request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "0" * 5000 + "2"))
        exchange.client.send_headers(1, headers)
        exchange.client.send_data(1, b"[]", end_stream=True)
        exchange.pump()
        self.assertEqual(exchange.answers[1]["status"], b"200")
        self.assertIsNone(exchange.goaway)
        # The number is held to: a longer body is refused.
        exchange.client.send_headers(3, headers)
        exchange.client.send_data(3, b"[1]", end_stream=True)
        exchange.pump()
        self.assertEqual(exchange.answers[3]["status"], b"400")

    def test_declaredBodyTooLarge(self) -> None:
        """
        A Content-Length over the limit is a 413 before the body is read;
        the stream is then reset with NO_ERROR, as the client is still
        sending (RFC 9113, 8.1).
        """
        self.exchange.client.send_headers(
            1, request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "101"))
        )
        self.exchange.pump()
        answer = self.assertRefused(1, b"413")
        self.assertEqual(answer["reset"], h2.errors.ErrorCodes.NO_ERROR)
        # Dated, as RFC 9110 6.6.1 wants of a 4xx (it had no date).
        self.assertRegex(answer["headers"][b"date"], rb"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} [\d:]{8} GMT$")
        self.assertIn(b"server", answer["headers"])

    def test_declaredBodyMissing(self) -> None:
        """
        A request whose head ends its stream though it declares a body is
        malformed (RFC 9113, 8.1.1): a 400 on its stream, not processed
        (h2 checks a declared length against DATA frames only, and such a
        request was answered as one with an empty body).  One declaring
        no bytes is answered.
        """
        headers = request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "5"))
        self.exchange.client.send_headers(1, headers, end_stream=True)
        self.exchange.pump()
        answer = self.assertRefused(1, b"400")
        self.assertIn("request body of 5 bytes missing", json.loads(answer["body"])["error"])
        headers = request("GET", "/healthz", ("content-length", "0"))
        streamID = self.exchange.client.get_next_available_stream_id()
        self.exchange.client.send_headers(streamID, headers, end_stream=True)
        self.exchange.pump()
        self.assertEqual(self.exchange.answers[streamID]["status"], b"200")

    def test_receivedBodyTooLarge(self) -> None:
        """
        A body without a length that grows over the limit is a 413 as soon
        as it does; what the client had already sent for that stream is
        dropped, and the connection's flow-control window given back.
        """
        exchange = self.exchange
        exchange.client.send_headers(1, request("POST", "/api/echo", ("content-type", "application/json")))
        exchange.client.send_data(1, b"[" + b"1," * 30)
        exchange.pump()
        self.assertEqual(exchange.answers, {})
        exchange.client.send_data(1, b"1," * 30)
        for _ in range(5):  # in the same read, after the refusal
            exchange.client.send_data(1, b"1," * 4000)
        exchange.pump()
        answer = self.assertRefused(1, b"413")
        self.assertEqual(answer["reset"], h2.errors.ErrorCodes.NO_ERROR)
        self.assertEqual(exchange.client.outbound_flow_control_window, 65535)


class HeadCheckTests(SynchronousTestCase):
    """
    Over HTTP/2 too, a resource's C{checkHead} refuses a request with a
    body from its head: the stream is answered (and reset, its body not
    wanted) before any 100 Continue; one it lets pass gets the 100
    Continue it asked for and is answered as before.
    """

    def setUp(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        self.guarded = Guarded()
        self.exchange = Exchange(Limits(), api={b"guarded": self.guarded})
        self.addCleanup(self.exchange.site.stopFactory)

    def post(self, *extra: tuple[str, str]) -> dict:
        exchange = self.exchange
        streamID = exchange.client.get_next_available_stream_id()
        exchange.client.send_headers(
            streamID, request("POST", "/api/guarded", ("expect", "100-continue"), *extra), end_stream=False
        )
        exchange.pump()
        return exchange.answers.setdefault(streamID, {"status": None, "interim": []})

    def test_refusedFromTheHead(self) -> None:
        answer = self.post(("content-length", "5"))
        self.assertEqual((answer["status"], answer["interim"]), (b"401", []))
        self.assertEqual(answer["headers"][b"www-authenticate"], b'Basic realm="x"')
        self.assertEqual(answer["headers"][b"content-type"], b"application/json; charset=utf-8")
        self.assertEqual(json.loads(answer["body"])["status"], 401)
        self.assertTrue(answer["ended"])
        self.assertEqual(answer["reset"], 0, "the body still comes: NO_ERROR says it is not wanted")
        answer = self.post(("authorization", "yes"), ("content-length", "11"))
        self.assertEqual((answer["status"], answer["interim"]), (b"413", []))
        self.assertEqual(self.guarded.checked, [5, 11])

    def test_headRefusedWithoutABody(self) -> None:
        """
        A HEAD refused gets its status and length, no body.
        """
        exchange = self.exchange
        streamID = exchange.client.get_next_available_stream_id()
        exchange.client.send_headers(streamID, request("HEAD", "/api/guarded", ("content-length", "5")), end_stream=False)
        exchange.pump()
        answer = exchange.answers[streamID]
        self.assertEqual((answer["status"], answer["body"], answer["ended"]), (b"401", b"", True))
        self.assertIn(b"content-length", answer["headers"])

    def test_headRefusedInASmallWindow(self) -> None:
        """
        A HEAD refused gets its length even when the client's window is too
        small for the body another request would get (it went without one).
        """
        exchange = self.exchange
        exchange.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
        exchange.pump()
        answers = {}
        for method in ("POST", "HEAD"):
            streamID = exchange.client.get_next_available_stream_id()
            exchange.client.send_headers(streamID, request(method, "/api/guarded", ("content-length", "5")))
            exchange.pump()
            answers[method] = exchange.answers[streamID]
        self.assertEqual((answers["POST"]["status"], answers["POST"]["body"]), (b"401", b""))
        self.assertNotIn(b"content-length", answers["POST"]["headers"])
        self.assertEqual((answers["HEAD"]["status"], answers["HEAD"]["body"]), (b"401", b""))
        self.assertGreater(int(answers["HEAD"]["headers"][b"content-length"]), 10)

    def test_headRefusedForItsLengthWithoutABody(self) -> None:
        """
        The same for a HEAD refused for its declared length, before
        Twisted has a stream for it.
        """
        self.exchange = exchange = Exchange(Limits(maxBody=100), api={b"guarded": self.guarded})
        self.addCleanup(exchange.site.stopFactory)
        streamID = exchange.client.get_next_available_stream_id()
        exchange.client.send_headers(streamID, request("HEAD", "/api/guarded", ("content-length", "2000")), end_stream=False)
        exchange.pump()
        answer = exchange.answers[streamID]
        self.assertEqual((answer["status"], answer["body"], answer["ended"]), (b"413", b"", True))

    def test_otherRequestFactoryPassedOver(self) -> None:
        """
        A site whose request factory has no C{headRefusal} answers a POST
        with a body as before.
        """

        class Other(siteModule.NetsuiteRequest):
            headRefusal = None

        self.patch(siteModule.NetsuiteSite, "requestFactory", Other)
        self.exchange = exchange = Exchange(Limits(), api={b"guarded": self.guarded})
        self.addCleanup(exchange.site.stopFactory)
        streamID = exchange.client.get_next_available_stream_id()
        exchange.client.send_headers(streamID, request("POST", "/api/guarded", ("content-length", "2")), end_stream=False)
        exchange.pump()
        exchange.client.send_data(streamID, b"hi", end_stream=True)
        exchange.pump()
        self.assertEqual(exchange.answers[streamID]["status"], b"200")
        self.assertEqual(self.guarded.checked, [])

    def test_passedGoesOn(self) -> None:
        exchange = self.exchange
        answer = self.post(("authorization", "yes"))
        self.assertEqual((answer["status"], answer["interim"]), (None, [b"100"]))
        exchange.client.send_data(1, b"hello", end_stream=True)
        exchange.pump()
        answer = exchange.answers[1]
        self.assertEqual((answer["status"], answer["body"]), (b"200", b'{"length": 5}'))
        self.assertEqual(self.guarded.checked, [None])

    def test_expectStaysForTheResource(self) -> None:
        """
        The C{expect} held back from Twisted while the head is checked is
        the request's again once it passed (C{/api/echo} shows it).
        """
        exchange = self.exchange
        streamID = exchange.client.get_next_available_stream_id()
        exchange.client.send_headers(
            streamID,
            request("POST", "/api/echo", ("expect", "100-continue"), ("content-type", "application/json")),
            end_stream=False,
        )
        exchange.pump()
        exchange.client.send_data(streamID, b"[1]", end_stream=True)
        exchange.pump()
        answer = exchange.answers[streamID]
        self.assertEqual((answer["status"], answer["interim"]), (b"200", [b"100"]))
        self.assertEqual(json.loads(answer["body"])["headers"]["expect"], "100-continue")


class ResetStreamIgnoredTests(ExchangeTestCase):
    """
    DATA that comes on a stream the server reset (sent before the client
    saw the reset) is ignored, as RFC 9113 (5.1) wants, not answered with a
    RST_STREAM (C{STREAM_CLOSED}) each, as h2 did; it still counts in the
    connection's flow control.
    """

    def limits(self) -> Limits:
        return Limits(maxBody=100)

    def test_uploadAfterThe413(self) -> None:
        from hyperframe.frame import RstStreamFrame, WindowUpdateFrame

        exchange = self.exchange
        client = exchange.client
        client.send_headers(
            1, request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "50000"))
        )
        client.send_data(1, b"x" * 1000)
        exchange.protocol.dataReceived(client.data_to_send())
        exchange.clock.advance(0)
        # More of the body, sent before the client read the 413 and reset.
        for _ in range(5):
            client.send_data(1, b"x" * 8000)
        exchange.protocol.dataReceived(client.data_to_send())
        exchange.clock.advance(0)
        out = exchange.transport.value()
        exchange.transport.clear()
        resets = [(f.stream_id, f.error_code) for f in parseFrames(out) if isinstance(f, RstStreamFrame)]
        self.assertEqual(resets, [(1, h2.errors.ErrorCodes.NO_ERROR)])
        given = sum(
            f.window_increment for f in parseFrames(out) if isinstance(f, WindowUpdateFrame) and f.stream_id == 0
        )
        exchange.receive(out)
        self.assertEqual(exchange.answers[1]["status"], b"413")
        self.assertEqual(exchange.answers[1]["reset"], h2.errors.ErrorCodes.NO_ERROR)
        # The window the ignored frames took is given back (h2 gives it
        # back once half of it is used).
        self.assertGreaterEqual(given, 32768)
        nextID = exchange.get("/healthz")
        self.assertEqual(exchange.answers[nextID]["status"], b"200")


class ClosingTests(ExchangeTestCase):
    """
    Once an HTTP/2 connection is closing (after a protocol error), nothing
    more is read from it: further input aborts it, and a peer that stays
    silent is aborted after 10 s.  (A L{StringTransport} reads on after
    C{loseConnection}, as a transport without C{closeWithoutReading}
    does; netsuite's listeners stop reading instead.)
    """

    def startFlood(self) -> None:
        """
        Send a HEADERS frame without END_HEADERS, then CONTINUATION frames
        until the server closes the connection for a protocol error.
        """
        exchange = self.exchange
        exchange.send(OPEN_HEADERS)
        for sent in range(1, 101):
            exchange.send(CONTINUATION)
            if exchange.transport.disconnecting:
                break
        self.assertTrue(exchange.transport.disconnecting)
        self.assertEqual(exchange.goaway, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertFalse(exchange.transport.disconnected)
        self.sent = sent

    def test_headerBlockBounded(self) -> None:
        """
        A header block being received is held to 64 KiB: the fourth 16 KiB
        CONTINUATION frame ends the connection (h2 took 64 of them, 1 MiB,
        held until the head deadline: 1.2 MB a connection measured).
        """
        self.startFlood()
        self.assertEqual(self.sent, 4)
        buffered = self.exchange.protocol._channel.conn.incoming_buffer
        self.assertLessEqual(sum(len(f.data) for f in buffered._headers_buffer), siteModule.H2_MAX_HEADER_BLOCK)

    def test_headerBlockOfExactly64KiB(self) -> None:
        """
        A header block of exactly 64 KiB as it comes (its HEADERS and
        CONTINUATION frames together), as the README says, is held; one
        byte more ends the connection.
        """
        exchange = self.exchange
        exchange.send(OPEN_HEADERS)
        left = 64 * 1024 - 3
        while left:
            size = min(left, 16384)
            exchange.send(frame(9, 0, 1, b"a" * size))
            left -= size
        self.assertIsNone(exchange.goaway)
        self.assertFalse(exchange.transport.disconnecting)
        exchange.send(frame(9, 0, 1, b"a"))
        self.assertEqual(exchange.goaway, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(exchange.transport.disconnecting)

    def test_eachHeaderBlockHeldToItsOwnBound(self) -> None:
        """
        The bound is each header block's: two blocks of 40 KB (each over
        the site's limit on the head) on one connection each get their
        C{431}, and the connection goes on.
        """
        exchange = self.exchange
        for streamID in (1, 3):
            exchange.client.send_headers(streamID, request("GET", "/healthz", ("x-big", "X" * 40000)), end_stream=True)
            exchange.pump()
            self.assertEqual(exchange.answers[streamID]["status"], b"431")
        self.assertEqual(exchange.answers[exchange.get("/healthz")]["status"], b"200")
        self.assertIsNone(exchange.goaway)

    def test_framesOutOfPlaceAreProtocolErrors(self) -> None:
        """
        A CONTINUATION frame outside a header block, and a header block a
        client may not send (PUSH_PROMISE), end the connection as protocol
        errors after a header block of 60 KB as on a new connection: the
        bound counts neither with the block before.
        """
        pushPromise = frame(5, 0, 1, b"\0\0\0\2" + b"a" * 100)
        for extra in (CONTINUATION, pushPromise + frame(9, 0x4, 1, b"a" * 16384)):
            for before in (0, 60000):
                exchange = Exchange(self.limits())
                self.addCleanup(exchange.site.stopFactory)
                if before:
                    exchange.client.send_headers(1, request("GET", "/healthz", ("x-big", "X" * before)), end_stream=True)
                    exchange.pump()
                    self.assertEqual(exchange.answers[1]["status"], b"431")
                exchange.send(extra)
                self.assertEqual(exchange.goaway, h2.errors.ErrorCodes.PROTOCOL_ERROR)

    def test_inputAfterTheGoAwayAbortsATransportThatReadsOn(self) -> None:
        """
        A CONTINUATION flood goes on after the GOAWAY on a transport that
        reads on after the close (this in-memory one, or any without
        C{closeWithoutReading}; netsuite's listeners read nothing more): the
        next frame aborts the connection, and no more is buffered (each one
        was added to h2's buffer: memory grew by the byte sent).
        """
        self.startFlood()
        exchange = self.exchange
        exchange.protocol.dataReceived(CONTINUATION)
        self.assertTrue(exchange.transport.disconnected)

    def test_silentPeerAbortedAfterProtocolError(self) -> None:
        """
        ... and counted as C{client_timeouts}, as over HTTP/1 (it was
        counted nowhere); a flood cut off at once is not.
        """
        self.startFlood()
        exchange = self.exchange
        exchange.clock.advance(9)
        self.assertFalse(exchange.transport.disconnected)
        exchange.clock.advance(1)
        self.assertTrue(exchange.transport.disconnected)
        self.assertEqual(exchange.site.stats.counters.get("client_timeouts"), 1)

    def test_floodAfterTheCloseIsNotATimeout(self) -> None:
        """
        A client cut off at once for sending after the GOAWAY is not also
        counted as C{client_timeouts} when the abort timer comes.
        """
        self.startFlood()
        self.exchange.protocol.dataReceived(CONTINUATION)
        self.exchange.clock.advance(10)
        self.assertNotIn("client_timeouts", self.exchange.site.stats.counters)


class HeadDeadlineTests(ExchangeTestCase):
    """
    An HTTP/2 request head has the deadline an HTTP/1 head has (15 s from
    its first byte to the end of its header block); past it the connection
    gets a GOAWAY with NO_ERROR and is closed.  Every frame restarted the
    idle timeout (60 s), so a byte a minute held a connection for days.
    """

    def trickle(self, data: bytes, every: float) -> float:
        """
        Send C{data} a byte at a time, C{every} seconds apart, until the
        server closes the connection; return the seconds that took.
        """
        exchange = self.exchange
        waited = 0.0
        for byte in data:
            if exchange.transport.disconnecting:
                break
            exchange.send(bytes([byte]))
            exchange.clock.advance(every)
            waited += every
        return waited

    def assertCutOffWithin(self, seconds: float, waited: float) -> None:
        exchange = self.exchange
        exchange.pump()  # the GOAWAY, written when the clock moved
        self.assertTrue(exchange.transport.disconnecting, "never cut off")
        self.assertLessEqual(waited, seconds)
        self.assertEqual(exchange.goaway, h2.errors.ErrorCodes.NO_ERROR)
        stats = exchange.site.stats
        self.assertEqual(stats.counters.get("header_timeouts"), 1)

    def headersFor(self, path: str) -> bytes:
        """
        The bytes of a HEADERS frame (with END_HEADERS and END_STREAM) for
        C{GET path} on the client's next stream.
        """
        client = self.exchange.client
        client.send_headers(client.get_next_available_stream_id(), request("GET", path), end_stream=True)
        return client.data_to_send()

    def test_headersFrameTrickledCutOff(self) -> None:
        data = self.headersFor("/healthz")
        self.assertGreater(len(data), 12)
        self.assertCutOffWithin(16, self.trickle(data, 2))
        self.assertEqual(self.exchange.answers, {})

    def test_continuationsTrickledCutOff(self) -> None:
        """
        A header block kept open with a small CONTINUATION frame every 5 s
        is cut off at 15 s.
        """
        exchange = self.exchange
        exchange.send(OPEN_HEADERS)
        for waited in range(5, 65, 5):
            exchange.clock.advance(5)
            if exchange.transport.disconnecting:
                break
            exchange.send(frame(9, 0, 1, b"\x40\x01a\x01b"))
        self.assertCutOffWithin(15, waited)

    def test_prefaceTrickledCutOff(self) -> None:
        exchange = self.exchange
        protocol, transport = connectInMemory(exchange.site, b"h2", port=40001)
        for index in range(len(PREFACE)):
            if transport.disconnecting:
                break
            protocol.dataReceived(PREFACE[index : index + 1])
            exchange.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertLessEqual(index, 9)

    def test_slowHeadWithinTheDeadlineAnswered(self) -> None:
        """
        A head that takes 14 s is answered; so is a head begun after the
        connection sat idle, and requests that come one after another for a
        minute, each head in time.
        """
        exchange = self.exchange
        data = self.headersFor("/healthz")
        self.trickle(data[:-1], 14 / len(data))
        exchange.send(data[-1:])
        self.assertEqual(exchange.answers[1]["status"], b"200")
        exchange.clock.advance(40)
        for streamID in range(3, 25, 2):
            data = self.headersFor("/healthz")
            exchange.send(data[:5])
            exchange.clock.advance(5)
            exchange.send(data[5:])
            self.assertEqual(exchange.answers[streamID]["status"], b"200")
        self.assertFalse(exchange.transport.disconnecting)
        self.assertIsNone(exchange.goaway)

    def test_slowBodyIsNotAHead(self) -> None:
        """
        A request body that comes slowly, a DATA frame trickled for 40 s,
        has only the idle timeout: it is answered.
        """
        exchange = self.exchange
        client = exchange.client
        client.send_headers(
            1, request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "30"))
        )
        exchange.send(client.data_to_send())
        client.send_data(1, b'{"slow": "' + b"a" * 18 + b'"}', end_stream=True)
        data = client.data_to_send()
        self.trickle(data[:-1], 40 / len(data))
        exchange.send(data[-1:])
        self.assertFalse(exchange.transport.disconnecting)
        self.assertEqual(exchange.answers[1]["status"], b"200")
        self.assertEqual(json.loads(exchange.answers[1]["body"])["body"], {"slow": "a" * 18})


class RefusalLogTests(SynchronousTestCase):
    """
    An HTTP/2 request refused on its stream (431, 414, 413, a CONNECT's
    400) gets its access-log line with the status it was answered, as over
    HTTP/1 and as nginx logs its 413 over HTTP/2, and is counted in
    C{/metrics} (there was neither).
    """

    def test_refusalsLogged(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        accessLog = self.mktemp()
        exchange = Exchange(Limits(maxBody=100, maxRequestLine=200, maxHeaders=5), accessLog=accessLog)
        self.addCleanup(exchange.site.stopFactory)
        client = exchange.client
        client.send_headers(
            1, request("GET", "/many", ("user-agent", "t"), *[(f"x-{i}", "y") for i in range(6)]), end_stream=True
        )
        client.send_headers(3, request("GET", "/" + "a" * 300), end_stream=True)
        client.send_headers(5, request("PUT", "/declared", ("content-length", "101"), ("referer", "r")))
        client.send_headers(7, request("POST", "/grew", ("user-agent", "u")))
        client.send_headers(9, [(":method", "CONNECT"), (":authority", "example.com:443"), ("user-agent", "v" * 5000)])
        exchange.pump()
        client.send_data(7, b"x" * 101)
        exchange.pump()
        self.assertEqual(
            [exchange.answers[streamID]["status"] for streamID in (1, 3, 5, 7, 9)],
            [b"431", b"414", b"413", b"413", b"400"],
        )
        exchange.clock.advance(1)  # the access log is written once a second
        with open(accessLog) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 5, lines)
        self.assertRegex(lines[0], r'^"192\.168\.1\.1" - - \[[^]]+\] "GET /many HTTP/2" 431 \d+ "-" "t"$')
        # The target cut at the limit, as over HTTP/1.
        self.assertRegex(lines[1], r'"GET /a{199} HTTP/2" 414 \d+ "-" "-"$')
        self.assertRegex(lines[2], r'"PUT /declared HTTP/2" 413 \d+ "r" "-"$')
        # Refused before its other headers were checked: each cut at the
        # line limit.
        self.assertRegex(lines[3], r'"CONNECT example\.com:443 HTTP/2" 400 \d+ "-" "v{200}"$')
        # Refused as its body came, once it went over the limit.
        self.assertRegex(lines[4], r'"POST /grew HTTP/2" 413 \d+ "-" "u"$')
        counted = {key: n for key, n in exchange.site.metrics._requests.items() if n}
        self.assertEqual(
            counted, {("GET", "431"): 1, ("GET", "414"): 1, ("PUT", "413"): 1, ("POST", "413"): 1, ("CONNECT", "400"): 1}
        )

    def test_refusalLoggedWhenTwistedAborts(self) -> None:
        """
        A refusal whose answer overflows the frames Twisted buffers for a
        client that reads nothing (its connection is aborted as the answer
        is queued) is still logged, with nothing sent (C{-}): both a request
        refused for its head and one refused as its body came.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        lines = []
        for refused in ("head", "body"):
            accessLog = self.mktemp()
            exchange = Exchange(Limits(maxBody=100, maxHeaders=5), accessLog=accessLog)
            self.addCleanup(exchange.site.stopFactory)
            client, connection = exchange.client, exchange.protocol._channel
            if refused == "head":
                client.send_headers(1, request("GET", "/many", *[(f"x-{i}", "y") for i in range(6)]), end_stream=True)
            else:
                client.send_headers(1, request("POST", "/grew", ("user-agent", "u")))
                exchange.pump()
                client.send_data(1, b"x" * 101)
            connection._maxBufferedControlFrameBytes = 1
            connection.pauseProducing()  # the client stopped reading
            exchange.protocol.dataReceived(client.data_to_send())
            self.assertTrue(exchange.transport.disconnecting)
            self.assertEqual(connection.streams, {})
            exchange.clock.advance(1)  # the access log is written once a second
            with open(accessLog) as f:
                lines += f.read().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'"GET /many HTTP/2" 431 - "-" "-"$')
        self.assertRegex(lines[1], r'"POST /grew HTTP/2" 413 - "-" "u"$')


class ResetStreamLogTests(SynchronousTestCase):
    """
    An HTTP/2 stream the client resets before its answer is finished gets
    its access-log line: 499 when nothing was sent (there was none).
    """

    def logLines(self, exchange: "Exchange", accessLog: str) -> list[str]:
        """
        The lines of the access log C{accessLog}, once written (once a
        second).
        """
        exchange.clock.advance(1)
        with open(accessLog) as f:
            return f.read().splitlines()

    def test_resetBeforeTheAnswer(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        from tests.test_web_site import Hanging

        accessLog = self.mktemp()
        exchange = Exchange(Limits(), accessLog=accessLog, api={b"hang": Hanging()})
        self.addCleanup(exchange.site.stopFactory)
        streamID = exchange.get("/api/hang")
        other = exchange.get("/healthz")
        exchange.client.reset_stream(streamID)
        exchange.pump()
        lines = self.logLines(exchange, accessLog)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn('"GET /healthz HTTP/2" 200 ', lines[0])
        self.assertIn('"GET /api/hang HTTP/2" 499 - ', lines[1])
        self.assertEqual(exchange.answers[other]["status"], b"200")


    def test_goneInTheMiddleOfTheBody(self) -> None:
        """
        A stream reset, or a connection lost, in the middle of a request
        body is logged 400, as over HTTP/1 (and nginx); it was in no log.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        accessLog = self.mktemp()
        exchange = Exchange(Limits(), accessLog=accessLog)
        self.addCleanup(exchange.site.stopFactory)
        streams = []
        for path in ("/api/echo?reset", "/api/echo?lost"):
            streamID = exchange.client.get_next_available_stream_id()
            exchange.client.send_headers(streamID, request("POST", path, ("content-length", "100")))
            exchange.client.send_data(streamID, b"abc")
            exchange.pump()
            streams.append(streamID)
        exchange.client.reset_stream(streams[0])
        exchange.pump()
        exchange.protocol.connectionLost(Failure(ConnectionLost()))
        lines = self.logLines(exchange, accessLog)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn('"POST /api/echo?reset HTTP/2" 400 - ', lines[0])
        self.assertIn('"POST /api/echo?lost HTTP/2" 400 - ', lines[1])

    def test_queuedBytesAreNotSent(self) -> None:
        """
        A stream reset while its answer waits in the connection's queue
        (the client's window shut) logs the bytes sent, not those given to
        the connection: a stalled stream logged 16,384 bytes sent where
        none had left.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        from tests.test_web_site import Hanging

        accessLog = self.mktemp()
        held = Hanging()
        exchange = Exchange(Limits(), accessLog=accessLog, api={b"hang": held})
        exchange.acknowledge = False
        self.addCleanup(exchange.site.stopFactory)
        exchange.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
        exchange.pump()
        streamID = exchange.get("/api/hang")
        [request] = held.requests
        request.write(b"x" * 20000)
        exchange.clock.advance(0)
        exchange.pump()
        self.assertEqual(len(exchange.answers[streamID]["body"]), 100)
        exchange.client.reset_stream(streamID)
        exchange.pump()
        [line] = self.logLines(exchange, accessLog)
        self.assertIn('"GET /api/hang HTTP/2" 200 100 ', line)


class GracefulCloseTests(SynchronousTestCase):
    """
    A stopping service asks an HTTP/2 connection to close gracefully: a
    GOAWAY (NO_ERROR) at once, the open streams answered, then the close.
    """

    def test_openStreamAnsweredThenClosed(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        from tests.test_web_site import Hanging

        held = Hanging()
        exchange = Exchange(Limits(), api={b"hang": held})
        self.addCleanup(exchange.site.stopFactory)
        streamID = exchange.get("/api/hang")
        exchange.protocol.closeGracefully()
        exchange.pump()
        self.assertEqual(exchange.goaway, h2.errors.ErrorCodes.NO_ERROR)
        self.assertFalse(exchange.transport.disconnecting)
        [request] = held.requests
        exchange.protocol.dataReceived(frame(1, 0x5, streamID + 2, b"\x82\x84\x86\x01\x01x"))  # after the GOAWAY
        request.write(b"done")
        request.finish()
        exchange.clock.advance(0)
        from hyperframe.frame import DataFrame, RstStreamFrame

        frames = parseFrames(exchange.transport.value())
        sent = [(f.stream_id, f.data, "END_STREAM" in f.flags) for f in frames if isinstance(f, DataFrame)]
        self.assertEqual(b"".join(d for i, d, _ in sent if i == streamID), b"done")
        self.assertTrue(sent[-1][2])
        refused = [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)]
        self.assertEqual(refused, [(streamID + 2, h2.errors.ErrorCodes.REFUSED_STREAM)])
        self.assertEqual(len(held.requests), 1)
        self.assertTrue(exchange.transport.disconnecting)


class FlowControlTests(ExchangeTestCase):
    """
    A stream whose flow-control window is empty waits without using the
    CPU, and goes on when the client opens the window.  (Twisted's sending
    loop took such a stream again and again, sending nothing: a client that
    stopped reading kept a CPU busy until the stall reset.)
    """

    def setUp(self) -> None:
        ExchangeTestCase.setUp(self)
        exchange = self.exchange
        exchange.acknowledge = False
        self.steps = 0
        connection = exchange.protocol._channel
        loop = connection._sendPrioritisedData

        def counted(*args: object) -> None:
            self.steps += 1
            if self.steps > 1000:  # the fake clock would run it forever
                self.fail("the sending loop keeps running with nothing to send")
            loop(*args)

        connection._sendPrioritisedData = counted
        exchange.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
        exchange.pump()
        self.streamID = exchange.get("/")

    def assertIdle(self) -> None:
        """
        The stream got its window's worth of the page and no more, and the
        sending loop does not run while the window stays empty.
        """
        exchange = self.exchange
        answer = exchange.answers[self.streamID]
        self.assertEqual(answer["status"], b"200")
        self.assertEqual(len(answer["body"]), 100)
        self.assertFalse(answer["ended"])
        before = self.steps
        for _ in range(50):
            exchange.clock.advance(0)
        self.assertEqual(self.steps, before)
        self.assertEqual(exchange.transport.value(), b"")

    def assertWholePage(self) -> None:
        answer = self.exchange.answers[self.streamID]
        self.assertTrue(answer["ended"])
        self.assertIn(b"</html>", answer["body"])
        self.assertIsNone(answer["reset"])

    def test_windowUpdateResumes(self) -> None:
        self.assertIdle()
        exchange = self.exchange
        exchange.acknowledge = True
        exchange.client.increment_flow_control_window(1 << 20, self.streamID)
        exchange.pump()
        self.assertWholePage()

    def test_settingsResume(self) -> None:
        """
        A larger initial window in a SETTINGS frame opens the parked stream
        too (RFC 9113, 6.9.2).
        """
        self.assertIdle()
        exchange = self.exchange
        exchange.acknowledge = True
        exchange.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        exchange.pump()
        self.assertWholePage()

    def test_otherStreamsGoOn(self) -> None:
        """
        While one stream waits for its window, the connection's other
        streams are answered.
        """
        self.assertIdle()
        exchange = self.exchange
        other = exchange.get("/healthz")
        self.assertEqual(exchange.answers[other]["status"], b"200")
        self.assertTrue(exchange.answers[other]["ended"])
        self.assertFalse(exchange.answers[self.streamID]["ended"])


class ResetInSameReadTests(ExchangeTestCase):
    """
    A request and its RST_STREAM in one read: the request is answered
    while h2 has already closed the stream (Twisted hears of the reset
    only after).  Sending on it raised inside the sending loop (an
    unhandled error), which then stopped: every later stream of the
    connection hung.
    """

    def test_laterStreamsAnswered(self) -> None:
        exchange = self.exchange
        client = exchange.client
        for path in ("/healthz", "/"):
            streamID = client.get_next_available_stream_id()
            client.send_headers(streamID, request("GET", path), end_stream=True)
            client.reset_stream(streamID)
            exchange.send(client.data_to_send())
            other = exchange.get("/")
            answer = exchange.answers[other]
            self.assertEqual(answer["status"], b"200")
            self.assertTrue(answer["ended"], path)
            self.assertIn(b"</html>", answer["body"])
        self.assertIsNone(exchange.goaway)


class SentWaiterTests(ExchangeTestCase):
    """
    L{NetsuiteH2Connection.whenSent} fires once a stream's queue is sent,
    or the stream is gone; not while its window keeps it queued.
    """

    def setUp(self) -> None:
        ExchangeTestCase.setUp(self)
        exchange = self.exchange
        exchange.acknowledge = False
        exchange.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        exchange.pump()
        self.streamID = exchange.get("/")
        self.connection = exchange.protocol._channel
        self.fired: list[object] = []
        self.connection.whenSent(self.streamID).addCallback(self.fired.append)

    def test_firesWhenWindowOpens(self) -> None:
        exchange = self.exchange
        for _ in range(20):
            exchange.clock.advance(0)
        self.assertEqual(self.fired, [])
        self.assertEqual(exchange.answers[self.streamID]["body"], b"")
        exchange.acknowledge = True
        exchange.client.increment_flow_control_window(1 << 20, self.streamID)
        exchange.pump()
        self.assertEqual(self.fired, [None])
        self.assertTrue(exchange.answers[self.streamID]["ended"])
        self.assertIn(b"</html>", exchange.answers[self.streamID]["body"])

    def test_firesWhenStreamReset(self) -> None:
        exchange = self.exchange
        exchange.client.reset_stream(self.streamID)
        exchange.pump()
        self.assertEqual(self.fired, [None])
        self.assertEqual(self.connection.whenSent(self.streamID).result, None)


class WholeAnswer(Resource):
    """
    Answers with C{payload}, written at once as bytes, or as a bytearray
    emptied right after the write.
    """

    isLeaf = True

    def __init__(self, payload: bytes, bytearrayEmptied: bool = False) -> None:
        Resource.__init__(self)
        self.payload = payload
        self.bytearrayEmptied = bytearrayEmptied

    def render_GET(self, request: object) -> bytes:
        if self.bytearrayEmptied:
            buffer = bytearray(self.payload)
            request.write(buffer)
            del buffer[:]
            request.finish()
            return NOT_DONE_YET
        return self.payload


class LargeAnswerTests(SynchronousTestCase):
    """
    An answer written at once, larger than a frame: sent in time in
    proportion to its size (Twisted's loop copied the rest of it for every
    frame, and sent one frame a reactor turn).
    """

    #: 1 MiB that no frame boundary can cut into two equal halves.
    payload = bytes(range(251)) * (1024 * 1024 // 251 + 1)

    def exchange(self, resource: Resource, acknowledge: bool = True) -> Exchange:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        exchange = Exchange(Limits(), api={b"whole": resource})
        self.addCleanup(exchange.site.stopFactory)
        exchange.acknowledge = acknowledge
        return exchange

    def test_restNotCopied(self) -> None:
        """
        What is left of the answer once the window is used up is a view of
        the bytes written, not a copy; once the client reads, the answer
        arrives whole.
        """
        exchange = self.exchange(WholeAnswer(self.payload), acknowledge=False)
        streamID = exchange.get("/api/whole")
        answer = exchange.answers[streamID]
        self.assertEqual(len(answer["body"]), 65535)
        queue = exchange.protocol._channel._outboundStreamQueues[streamID]
        self.assertIsInstance(queue[0], memoryview)
        self.assertIs(queue[0].obj, self.payload)
        exchange.acknowledge = True
        exchange.client.acknowledge_received_data(65535, streamID)
        exchange.pump()
        self.assertTrue(answer["ended"])
        self.assertEqual(answer["body"], self.payload)

    def test_restNotCopiedWithLargeFrames(self) -> None:
        """
        With the largest frames a client may allow, the window cuts the
        answer: what is left is still a view, not a copy.
        """
        exchange = self.exchange(WholeAnswer(self.payload), acknowledge=False)
        exchange.client.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 2**24 - 1})
        exchange.pump()
        streamID = exchange.get("/api/whole")
        queue = exchange.protocol._channel._outboundStreamQueues[streamID]
        self.assertIsInstance(queue[0], memoryview)
        self.assertIs(queue[0].obj, self.payload)

    def test_framesBatchedInOneWrite(self) -> None:
        """
        With windows that do not stop it, the answer goes out in writes of
        L{H2_TURN_BYTES} (one a reactor turn), not in a write for every
        16 KiB frame, each its own turn and, over TLS, its own records.
        """
        exchange = self.exchange(WholeAnswer(self.payload))
        exchange.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        exchange.client.increment_flow_control_window(2**31 - 1 - 65535)
        exchange.pump()
        writes: list[int] = []
        write = exchange.transport.write
        self.patch(exchange.transport, "write", lambda data: (writes.append(len(data)), write(data)))
        streamID = exchange.get("/api/whole")
        self.assertTrue(exchange.answers[streamID]["ended"])
        self.assertEqual(exchange.answers[streamID]["body"], self.payload)
        # The headers, the batches, the end of the stream.
        self.assertLessEqual(len(writes), len(self.payload) // H2_TURN_BYTES + 3)

    def test_bytearrayEmptiedAfterTheWrite(self) -> None:
        """
        A resource may empty (resize) a bytearray it has written: the answer
        is what it held at the write (a view of it would have made the
        resize raise).
        """
        exchange = self.exchange(WholeAnswer(self.payload, bytearrayEmptied=True))
        streamID = exchange.get("/api/whole")
        answer = exchange.answers[streamID]
        self.assertEqual(answer["status"], b"200")
        self.assertTrue(answer["ended"])
        self.assertEqual(answer["body"], self.payload)


class PriorKnowledgeTests(SynchronousTestCase):
    """
    A plain connection speaks HTTP/2 when the site allows it (C{h2c}) and
    the client starts with HTTP/2's preface (C{curl
    --http2-prior-knowledge}); HTTP/1.1 goes on as before beside it.
    """

    def setUp(self) -> None:
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")

    def exchange(self, **kwargs: object) -> Exchange:
        exchange = Exchange(Limits(headerTimeout=10), tls=False, **kwargs)
        self.addCleanup(exchange.site.stopFactory)
        return exchange

    def test_preface(self) -> None:
        """
        The preface in one read, or a byte a read, starts HTTP/2: requests
        are answered on their streams.
        """
        for trickle in (False, True):
            exchange = self.exchange(h2c=True, trickle=trickle)
            streamID = exchange.get("/healthz")
            self.assertEqual(exchange.answers[streamID]["status"], b"200")
            self.assertEqual(exchange.answers[streamID]["body"], b"ok\n")
            self.assertIsNone(exchange.goaway)
            self.assertFalse(exchange.transport.disconnecting)

    def test_http1Beside(self) -> None:
        """
        HTTP/1.1 requests on a site allowing h2c are answered as on one
        that does not, in one read or a byte a read: also a C{POST} (whose
        first byte is the preface's), and a request line that begins as
        the preface does.
        """
        requests = (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n",
        )

        def statuses(h2c: bool, oneRead: bool) -> list[bytes]:
            clock, site, connect = inMemory(Limits(), h2c=h2c)
            self.addCleanup(site.stopFactory)
            found = []
            for request in requests:
                protocol, transport = connect()
                for data in [request] if oneRead else [bytes([byte]) for byte in request]:
                    protocol.dataReceived(data)
                clock.advance(0)  # answers are written at the end of a turn
                found.append(statusLine(transport))
            return found

        expected = statuses(h2c=False, oneRead=True)
        self.assertEqual(expected[:2], [b"HTTP/1.1 200 OK"] * 2)
        self.assertEqual(statuses(h2c=True, oneRead=True), expected)
        self.assertEqual(statuses(h2c=True, oneRead=False), expected)

    def test_notAllowed(self) -> None:
        """
        Without C{h2c}, the preface on a plain connection is an HTTP/1.1
        request of version 2.0, and refused (505, as nginx does).
        """
        clock, site, connect = inMemory(Limits())
        self.addCleanup(site.stopFactory)
        protocol, transport = connect()
        protocol.dataReceived(PREFACE + SETTINGS)
        clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "), transport.value())
        self.assertIn(b"prior knowledge is not served", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_malformedPreface(self) -> None:
        """
        With C{h2c}, a preface broken after its first line is a 400 saying
        so (it was told HTTP/2 was not served there).
        """
        clock, site, connect = inMemory(Limits(), h2c=True)
        self.addCleanup(site.stopFactory)
        protocol, transport = connect()
        protocol.dataReceived(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
        self.assertIn(b"malformed HTTP/2 connection preface", transport.value())

    def test_notOverTLS(self) -> None:
        """
        A TLS connection whose client chose no protocol by ALPN does not
        speak HTTP/2 for the preface, whatever C{h2c} says (nginx does the
        same): HTTP/2 over TLS is chosen by ALPN (RFC 9113, 3.3).
        """
        clock, site, _ = inMemory(Limits(), h2c=True)
        self.addCleanup(site.stopFactory)
        protocol, transport = connectInMemory(site, None)  # TLS without ALPN
        protocol.dataReceived(PREFACE + SETTINGS)
        clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "), transport.value())

    def test_partialPrefaceTimesOut(self) -> None:
        """
        A client that sends part of the preface and stops is cut off at
        the head deadline (408), as a slow HTTP/1.1 head is.
        """
        clock, site, connect = inMemory(Limits(headerTimeout=10), h2c=True)
        self.addCleanup(site.stopFactory)
        protocol, transport = connect()
        protocol.dataReceived(PREFACE[:10])
        clock.advance(9)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertTrue(transport.disconnecting)

    def test_headDeadlineOfTheSwitchCancelled(self) -> None:
        """
        The HTTP/1.1 head deadline the preface's first bytes started does
        not fire on the HTTP/2 connection they became (it would have
        written an HTTP/1.1 408 into it).
        """
        exchange = self.exchange(h2c=True, trickle=True)
        exchange.clock.advance(30)
        exchange.pump()
        streamID = exchange.get("/healthz")
        self.assertEqual(exchange.answers[streamID]["status"], b"200")
        self.assertNotIn(b"HTTP/1.1", exchange.transport.value())
        self.assertIsNone(exchange.goaway)
        self.assertFalse(exchange.transport.disconnecting)


class HTTP1ByALPNTests(SynchronousTestCase):
    """
    A TLS client that chose HTTP/1.1 or HTTP/1.0 by ALPN, or nothing, is
    answered over HTTP/1.x, as a plain one is.  Twisted asserted that ALPN
    chose http/1.1: a client choosing http/1.0 (C{curl --http1.0}) got no
    answer, and the log the AssertionError's traceback.
    """

    def test_answered(self) -> None:
        clock, site, _ = inMemory(Limits())
        self.addCleanup(site.stopFactory)
        for alpn in (b"http/1.0", b"http/1.1", None, PLAIN):
            protocol, transport = connectInMemory(site, alpn)
            protocol.dataReceived(b"GET /healthz HTTP/1.0\r\n\r\n")
            clock.advance(0)
            self.assertEqual(statusLine(transport), b"HTTP/1.1 200 OK", alpn)
            self.assertTrue(transport.value().endswith(b"\r\n\r\nok\n"), (alpn, transport.value()))
        self.assertEqual(self.flushLoggedErrors(), [])


class NotServedTests(SynchronousTestCase):
    """
    Where netsuite cannot serve HTTP/2 (C{H2_SERVED} false: a Twisted
    whose private HTTP/2 names moved), Twisted's own HTTP/2, which has
    none of netsuite's limits, is never used: a connection whose client
    chose C{h2} anyway, or sends the preface to a site allowing h2c, is
    read as HTTP/1.1 (a 400), and making the site says HTTP/2 is off.
    """

    def test_neverTwistedsHTTP2(self) -> None:
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from netsuite.web import site as siteModule

        self.patch(siteModule, "H2_SERVED", False)
        self.patch(siteModule, "_TWISTED_H2", True)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock, site, connect = inMemory(Limits(), h2c=True)
        self.addCleanup(site.stopFactory)
        self.assertIn("HTTP/2 is off", " ".join(str(event.get("log_format")) for event in events))
        for alpn in (b"h2", None):
            protocol, transport = connectInMemory(site, PLAIN if alpn is None else alpn)
            protocol.dataReceived(PREFACE + SETTINGS)
            clock.advance(0)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "), (alpn, transport.value()))
            self.assertNotIsInstance(protocol._channel, H2ConnectionOfTwisted)


class PriorKnowledgeSocketTests(TestCase):
    """
    HTTP/2 with prior knowledge over a real plain connection.
    """

    timeout = 30

    async def test_requestsAnswered(self) -> None:
        """
        A client starting with the preface gets its requests answered over
        HTTP/2 on the plain listener of a service made with C{h2c}; an
        HTTP/1.1 client beside it is answered as before.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        status = SimpleStatus(StatsRegistry())
        service = makeHTTPService("tcp:0:interface=127.0.0.1", status=status, grace=1, h2c=True)
        status.add(service)
        port = await startListener(self, service)

        answers = await threads.deferToThread(
            h2Requests, port, None, [(request("GET", "/healthz"), True), (request("GET", "/missing"), True)]
        )
        self.assertEqual(answers[0], ("200", b"ok\n"))
        self.assertEqual(answers[1][0], "404")
        http1 = await threads.deferToThread(
            rawExchange, port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(http1.startswith(b"HTTP/1.1 200 OK\r\n"), http1)
        self.assertTrue(http1.endswith(b"\r\n\r\nok\n"), http1)


class HTTPSTestCase(TestCase):
    """
    Tests against an HTTPS listener offering HTTP/2 by ALPN.
    """

    timeout = 30

    async def startHTTPS(self, **kwargs: object) -> tuple[int, object, str]:
        """
        Start the listener (with C{kwargs} for L{makeHTTPService}); return
        its port, the service and the CA certificate to trust, as PEM text.
        """
        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")
        ca = trustme.CA()
        options = makeServerOptions(self.mktemp(), ca, [b"h2", b"http/1.1", b"http/1.0"])  # as twistd offers
        status = SimpleStatus(StatsRegistry())
        service = makeHTTPService(
            "tcp:0:interface=127.0.0.1", status=status, grace=1, tls=options, **kwargs
        )
        status.add(service)
        port = await startListener(self, service)
        return port, service, ca.cert_pem.bytes().decode()


class SocketTests(HTTPSTestCase):
    """
    HTTP/2 over real TLS connections, negotiated by ALPN.
    """

    async def test_http10ByALPN(self) -> None:
        """
        A client choosing http/1.0 by ALPN (C{curl --http1.0}) is answered.
        """
        port, service, cadata = await self.startHTTPS()

        def fetch() -> tuple[str | None, bytes]:
            context = ssl.create_default_context(cadata=cadata)
            context.set_alpn_protocols(["http/1.0"])
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                    answer = b""
                    while data := tls.recv(65536):
                        answer += data
                    return tls.selected_alpn_protocol(), answer

        alpn, answer = await threads.deferToThread(fetch)
        self.assertEqual(alpn, "http/1.0")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\nok\n"), answer)

    async def test_continuationFloodCutOff(self) -> None:
        """
        A client that goes on sending CONTINUATION frames after the server's
        GOAWAY is cut off, or has what it sends dropped while TLS waits for
        its close_notify: HTTP/2 gets none of it (the server read on, and
        buffered, everything).
        """
        port, service, cadata = await self.startHTTPS()
        received: list[int] = []
        original = NetsuiteH2Connection.dataReceived

        def counting(connection: NetsuiteH2Connection, data: bytes) -> None:
            received.append(len(data))
            original(connection, data)

        self.patch(NetsuiteH2Connection, "dataReceived", counting)

        def flood() -> str:
            context = ssl.create_default_context(cadata=cadata)
            context.set_alpn_protocols(["h2"])
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(PREFACE + SETTINGS + OPEN_HEADERS)
                    try:
                        for _ in range(2048):  # 32 MiB
                            tls.sendall(CONTINUATION)
                    except (ConnectionError, ssl.SSLError):
                        return "cut off"
                    except TimeoutError:
                        return "stalled"
                    return "all sent"

        self.assertIn(await threads.deferToThread(flood), ("cut off", "all sent"))
        await waitForNoConnections(self, service)
        self.assertLess(sum(received), 4 * 1024 * 1024)

    async def _cutOffAfterGoAway(self, tls: bool, error: bytes = b"", code: int = 11) -> None:
        """
        A client that goes on sending PING frames after the GOAWAY for its
        C{error} (by default, the flood of those PINGs: C{ENHANCE_YOUR_CALM},
        11) gets that GOAWAY, with C{code}, and the end of the server's
        output, while nothing more it sends is read: its sends stall once
        the sockets' buffers are full, and the connection ends after
        C{H2_HOSTILE_GRACE} seconds, with a reset for the unread flood.
        The lingering close of the connection read it on, and dropped it,
        for the 10 s of the abort timer (5.9 GB over h2c); aborting at the
        client's next bytes after that lost the GOAWAY to a client that
        kept sending, and counted an error.
        """
        if tls:
            port, service, cadata = await self.startHTTPS()
        else:
            service = makeHTTPService("tcp:0:interface=127.0.0.1", status=SimpleStatus(StatsRegistry()), h2c=True)
            port = await startListener(self, service)
        pings = b"".join(frame(6, 0, 0, b"%08d" % (i,)) for i in range(1000))

        def flood() -> tuple[str, int, bytes, bool]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
            sent, received, ended = 0, b"", False
            try:
                if tls:
                    context = ssl.create_default_context(cadata=cadata)
                    context.set_alpn_protocols(["h2"])
                    # The end of output must be a close_notify.
                    raw = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
                raw.sendall(PREFACE + SETTINGS + error)
                # Send without reading, until the sends stall...
                raw.setblocking(False)
                while sent < 256 * 1024 * 1024:
                    if not select.select([], [raw], [], 0.3)[1]:
                        break
                    try:
                        sent += raw.send(pings)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        pass
                else:
                    return "all sent", sent, received, ended
                # ... then read what came, and send on.
                raw.settimeout(SOCKET_TIMEOUT)
                while data := raw.recv(65536):
                    received += data
                ended = True
                while True:
                    raw.sendall(pings)
                    sent += len(pings)
            except (ConnectionError, ssl.SSLError):
                return "cut off", sent, received, ended
            except TimeoutError:
                return "stalled", sent, received, ended
            finally:
                raw.close()

        outcome, sent, received, ended = await threads.deferToThread(flood)
        self.assertEqual(outcome, "cut off")
        self.assertLess(sent, 32 * 1024 * 1024)
        self.assertTrue(ended, "no end of output")
        self.assertEqual(goAwayCodes(received), [code])
        await waitForNoConnections(self, service)
        self.assertLess(service.stats.bytesIn, 1024 * 1024)  # nothing read after the GOAWAY
        self.assertEqual(service.stats.errors, 0)

    async def test_floodCutOffAfterGoAway(self) -> None:
        await self._cutOffAfterGoAway(tls=True)

    async def test_floodCutOffAfterGoAwayPlain(self) -> None:
        await self._cutOffAfterGoAway(tls=False)

    async def test_cutOffAfterProtocolError(self) -> None:
        """
        The same after the GOAWAY (C{PROTOCOL_ERROR}) for a DATA frame on
        stream 0, which the h2 library refuses.
        """
        await self._cutOffAfterGoAway(tls=True, error=frame(0, 0, 0, b"x"), code=1)

    async def test_cutOffAfterProtocolErrorPlain(self) -> None:
        await self._cutOffAfterGoAway(tls=False, error=frame(0, 0, 0, b"x"), code=1)

    async def test_inputAfterIdleTimeoutGoAwayNotCutOff(self) -> None:
        """
        A client that sends a frame after the GOAWAY (C{NO_ERROR}) of the
        idle timeout, and the end of output that follows it, is not cut
        off: its input is read and dropped by the graceful lingering close,
        no reset, as for any close that is not the client's error (only a
        GOAWAY with an error closes without reading on).
        """
        service = makeHTTPService(
            "tcp:0:interface=127.0.0.1", status=SimpleStatus(StatsRegistry()), limits=Limits(idleTimeout=0.5), h2c=True
        )
        port = await startListener(self, service)
        ping = frame(6, 0, 0, b"12345678")

        def run() -> tuple[list[int], str]:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                raw.sendall(PREFACE + SETTINGS)
                buffer = b""
                while True:
                    received = raw.recv(65536)
                    if not received:
                        break
                    buffer += received
                codes = goAwayCodes(buffer)
                try:
                    for _ in range(3):
                        raw.sendall(ping)
                        time.sleep(0.2)
                    return codes, "read on" if raw.recv(10) == b"" else "more"
                except ConnectionError:
                    return codes, "reset"

        self.assertEqual(await threads.deferToThread(run), ([0], "read on"))
        await waitForNoConnections(self, service)
        self.assertEqual(service.stats.bytesIn, len(PREFACE + SETTINGS) + 3 * len(ping))

    async def test_headTrickledCutOff(self) -> None:
        """
        Over real TLS, a client sending its request head a byte at a time
        is cut off at the head deadline, with a GOAWAY.
        """
        port, service, cadata = await self.startHTTPS(limits=Limits(headerTimeout=1.0))

        def trickle() -> tuple[str, int | None, float]:
            context = ssl.create_default_context(cadata=cadata)
            context.set_alpn_protocols(["h2"])
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            client.send_headers(1, request("GET", "/healthz"), end_stream=True)
            data = client.data_to_send()
            started = time.monotonic()
            goaway = None
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.settimeout(0.2)
                    try:
                        for index in range(len(data)):
                            tls.sendall(data[index : index + 1])
                            try:
                                received = tls.recv(65536)
                            except TimeoutError:
                                continue
                            if not received:
                                return "closed", goaway, time.monotonic() - started
                            for event in client.receive_data(received):
                                if isinstance(event, h2.events.ConnectionTerminated):
                                    goaway = event.error_code
                    except (ConnectionError, ssl.SSLError):
                        return "closed", goaway, time.monotonic() - started
            return "all sent", goaway, time.monotonic() - started

        outcome, goaway, seconds = await threads.deferToThread(trickle)
        self.assertEqual((outcome, goaway), ("closed", h2.errors.ErrorCodes.NO_ERROR))
        self.assertLess(seconds, 5)
        await waitForNoConnections(self, service)

    async def assertFetchedTogether(
        self, files: dict[str, bytes], answers: dict[str, bytes] | None = None
    ) -> None:
        """
        Serve C{files} from a folder and C{answers} (under C{/api/NAME},
        written at once), ask for them all together on one connection over
        real TLS with the default windows, and check that each arrives
        whole.
        """
        folder = FilePath(self.mktemp())
        folder.makedirs()
        for name, content in files.items():
            folder.child(name).setContent(content)
        answers = answers or {}
        api = {name.encode(): WholeAnswer(payload) for name, payload in answers.items()}
        port, service, cadata = await self.startHTTPS(root=folder.path, api=api)
        expected = {f"/{name}": content for name, content in files.items()}
        expected.update({f"/api/{name}": payload for name, payload in answers.items()})
        got = await threads.deferToThread(
            h2Requests, port, cadata, [(request("GET", path), True) for path in expected]
        )
        self.assertEqual([status for status, body in got], ["200"] * len(expected))
        for (path, content), (status, body) in zip(expected.items(), got):
            self.assertEqual(body, content, path)

    async def test_clientsGoAwayAfterItsRequest(self) -> None:
        """
        Over real TLS, a client that sends its GOAWAY right after its
        request (as Node's C{session.close()} does) gets the whole answer,
        then netsuite's GOAWAY and the close (h2 dropped the stream).
        """
        folder = FilePath(self.mktemp())
        folder.makedirs()
        content = bytes(range(256)) * 4096
        folder.child("big.bin").setContent(content)
        port, service, cadata = await self.startHTTPS(root=folder.path)

        def fetch() -> tuple[bytes, bool, tuple[int, int] | None]:
            context = ssl.create_default_context(cadata=cadata)
            context.set_alpn_protocols(["h2"])
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            client.send_headers(1, request("GET", "/big.bin"), end_stream=True)
            # Past the client's h2, which would take no answer after it.
            goAway = frame(7, 0, 0, struct.pack(">II", 0, 0))
            body, ended, terminated = b"", False, None
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(client.data_to_send() + goAway)
                    while received := tls.recv(65536):
                        for event in client.receive_data(received):
                            if isinstance(event, h2.events.DataReceived):
                                body += event.data
                                client.acknowledge_received_data(event.flow_controlled_length, 1)
                            elif isinstance(event, h2.events.StreamEnded):
                                ended = True
                            elif isinstance(event, h2.events.ConnectionTerminated):
                                terminated = (event.error_code, event.last_stream_id)
                        if not terminated:
                            tls.sendall(client.data_to_send())
            return body, ended, terminated

        body, ended, terminated = await threads.deferToThread(fetch)
        self.assertEqual((len(body), ended), (len(content), True))
        self.assertEqual(body, content)
        self.assertEqual(terminated, (h2.errors.ErrorCodes.NO_ERROR, 1))
        await waitForNoConnections(self, service)

    async def test_largeAnswersInterleaved(self) -> None:
        """
        Over real TLS, a 3 MiB file and a 4 MiB answer written at once,
        asked for together on one connection, both arrive whole.
        """
        await self.assertFetchedTogether(
            {"big.bin": bytes(range(256)) * (12 * 1024)},
            {"whole": bytes(range(251)) * (4 * 1024 * 1024 // 251)},
        )

    async def test_twoFilesDefaultWindows(self) -> None:
        """
        Over real TLS, a 5 MB and a 1 MB file asked for together with the
        default 64 KiB windows both arrive whole (a stream unblocked after
        its queue was sent made the sending loop pop an empty queue: a
        traceback, and the connection hung).
        """
        await self.assertFetchedTogether(
            {"large.bin": bytes(range(251)) * 20889, "small.bin": bytes(range(256)) * 4096}
        )

    async def test_limits(self) -> None:
        """
        Too many headers get a 431, a declared body over the limit a 413,
        on one connection that goes on serving.
        """
        port, service, cadata = await self.startHTTPS(limits=Limits(maxBody=1000))
        answers = await threads.deferToThread(
            h2Requests,
            port,
            cadata,
            [
                (request("GET", "/api/echo", *[(f"x-{i}", "y") for i in range(101)]), True),
                (request("POST", "/api/echo", ("content-type", "application/json"), ("content-length", "1001")), False),
                (request("GET", "/healthz"), True),
            ],
        )
        self.assertEqual([status for status, body in answers], ["431", "413", "200"])
        self.assertEqual(json.loads(answers[0][1])["status"], 431)

    async def test_shutWindowsThenUpdate(self) -> None:
        """
        Over real TLS, a static file waits while the client keeps a window
        shut, and arrives whole once WINDOW_UPDATEs open it: the stream's
        window opened at 0 (the file never came), and the connection's
        window used up by the first 64 KiB while the client acknowledges
        nothing, with the sending loop not spinning meanwhile (it ran
        every reactor turn: 100% CPU).
        """
        folder = FilePath(self.mktemp())
        folder.makedirs()
        content = bytes(range(256)) * 1200  # 300 KiB: many frames
        folder.child("big.bin").setContent(content)
        port, service, cadata = await self.startHTTPS(root=folder.path)
        turns = []
        original = NetsuiteH2Connection._sendPrioritisedData

        def counting(connection, *args):
            turns.append(None)
            return original(connection, *args)

        self.patch(NetsuiteH2Connection, "_sendPrioritisedData", counting)

        def exchange(streamWindow: int) -> tuple[bytes, int, int, bytes]:
            context = ssl.create_default_context(cadata=cadata)
            context.set_alpn_protocols(["h2"])
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    connection = h2.connection.H2Connection(
                        h2.config.H2Configuration(client_side=True)
                    )
                    connection.local_settings = h2.settings.Settings(
                        client=True,
                        initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: streamWindow},
                    )
                    connection.initiate_connection()
                    connection.send_headers(1, request("GET", "/big.bin"), end_stream=True)
                    tls.sendall(connection.data_to_send())
                    status, body, ended, acknowledge = b"", b"", False, False

                    def read() -> None:
                        nonlocal status, body, ended
                        data = tls.recv(65536)
                        if not data:
                            raise ConnectionError("closed by the server")
                        for event in connection.receive_data(data):
                            if isinstance(event, h2.events.ResponseReceived):
                                status = dict(event.headers)[b":status"]
                            elif isinstance(event, h2.events.DataReceived):
                                body += event.data
                                if acknowledge:
                                    connection.acknowledge_received_data(
                                        event.flow_controlled_length, event.stream_id
                                    )
                            elif isinstance(event, h2.events.StreamEnded):
                                ended = True
                        tls.sendall(connection.data_to_send())

                    while not status:
                        read()
                    tls.settimeout(0.5)
                    before = len(turns)
                    try:
                        while True:
                            read()
                    except TimeoutError:
                        pass
                    whileShut, turnsWhileShut = len(body), len(turns) - before
                    tls.settimeout(SOCKET_TIMEOUT)
                    acknowledge = True
                    connection.increment_flow_control_window(len(content), stream_id=1)
                    connection.increment_flow_control_window(len(content))
                    tls.sendall(connection.data_to_send())
                    while not ended:
                        read()
                    return status, whileShut, turnsWhileShut, body

        for streamWindow, sentWhileShut in ((0, 0), (1 << 20, 65535)):
            status, whileShut, turnsWhileShut, body = await threads.deferToThread(
                exchange, streamWindow
            )
            self.assertEqual(status, b"200")
            self.assertEqual(whileShut, sentWhileShut)
            # Spinning made thousands of turns in the half second.
            self.assertLess(turnsWhileShut, 20)
            self.assertEqual(body, content)

def h2Requests(
    port: int, cadata: str | None, requests: list[tuple[list[tuple[str, str]], bool]]
) -> list[tuple[str, bytes]]:
    """
    Send C{requests} (headers, and whether they end the stream) on one
    HTTP/2 connection with the h2 library, over stdlib TLS trusting
    C{cadata}, or with prior knowledge on a plain connection if L{None};
    collect each one's status and body (runs in a thread).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        if cadata is None:
            return _h2Exchange(raw, requests)
        context = ssl.create_default_context(cadata=cadata)
        context.set_alpn_protocols(["h2"])
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return _h2Exchange(tls, requests)


def _h2Exchange(sock: socket.socket, requests: list[tuple[list[tuple[str, str]], bool]]) -> list[tuple[str, bytes]]:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    streams = []
    for headers, end in requests:
        streamID = connection.get_next_available_stream_id()
        connection.send_headers(streamID, headers, end_stream=end)
        streams.append(streamID)
    sock.sendall(connection.data_to_send())
    answers: dict[int, list] = {streamID: [None, b""] for streamID in streams}
    ended: set[int] = set()
    while len(ended) < len(streams):
        data = sock.recv(65536)
        if not data:
            break
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                answers[event.stream_id][0] = dict(event.headers)[b":status"].decode()
            elif isinstance(event, h2.events.DataReceived):
                answers[event.stream_id][1] += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
        sock.sendall(connection.data_to_send())
    return [tuple(answers[streamID]) for streamID in streams]  # type: ignore[misc]
