"""
The private names of Twisted, h2 and pyOpenSSL that netsuite builds on are
still there.

Where one goes away in a later release, netsuite often goes on without
it, quietly: a protection is lost (HTTP/2's limits, the downloader's strict
chunked decoder, the TLS layers of an C{ssl:} endpoint) or a cost comes
back.  Behaviour tests catch most such losses, but only as a failure far
from the cause.  These fail with the name, and what netsuite loses without
it, so an upgrade says at once what to port.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase


def source(cls: type) -> str:
    """
    The source of C{cls} and its bases (for attributes set in methods,
    where an instance is hard to come by).
    """
    return "\n".join(inspect.getsource(base) for base in cls.__mro__ if base is not object)


class UpstreamNamesTestCase(SynchronousTestCase):
    """
    A test case checking names in a table.
    """

    def assertNames(self, where: str, table: list[tuple[Callable[[], Any], tuple[str, ...], str]]) -> None:
        """
        Check each row C{(owner, names, loses)} of C{table}: every name in
        C{names} is an attribute of what C{owner()} returns.  Fail with
        every missing name, each with what netsuite C{loses}.
        """
        missing = []
        for owner, names, loses in table:
            try:
                found = owner()
            except Exception as e:
                missing.append(f"{where}: {e!r}: {loses}")
                continue
            for name in names:
                if not hasattr(found, name):
                    label = getattr(found, "__qualname__", None) or getattr(found, "__name__", None) or type(found).__qualname__
                    missing.append(f"{where}: {label}.{name} is gone: {loses}")
        if missing:
            self.fail("\n".join(missing))

    def assertMentioned(self, cls: type, names: tuple[str, ...], loses: str) -> None:
        """
        Each of C{names} is set as C{self.NAME} somewhere in C{cls} or its
        bases (instance attributes that need a live object).
        """
        text = source(cls)
        gone = [name for name in names if f"self.{name} =" not in text and f"self.{name}:" not in text]
        if gone:
            self.fail(f"{cls.__qualname__} no longer sets {', '.join(gone)}: {loses}")


class TwistedWebTests(UpstreamNamesTestCase):
    """
    C{twisted.web}: the HTTP server's channel, request and factory, and
    the HTTP/1.1 client.
    """

    def test_server(self) -> None:
        from twisted.web import http, server

        def channel() -> Any:
            return http.HTTPChannel()

        def switch() -> Any:
            return http._genericHTTPChannelProtocolFactory(b"")

        def module() -> Any:
            return http

        self.assertNames(
            "twisted.web.http",
            [
                (
                    module,
                    ("_ChunkedTransferDecoder", "_GenericHTTPChannelProtocol", "_DataLoss", "_MalformedChunkedDataError",
                     "_IdentityTransferDecoder"),
                    "netsuite's chunked decoder is not put in, nor its errors caught as Twisted's; the downloader "
                    "takes a reset body of unknown length as complete",
                ),
                (
                    channel,
                    ("_send100Continue", "_respondToBadRequestAndDisconnect"),
                    "netsuite's overrides are never called: 100 Continue out of order with held answers, and a "
                    "bad request gets Twisted's bare 400 (no 413, no log line)",
                ),
                (
                    channel,
                    ("_transferDecoder", "_waitingForTransport", "_handlingRequest",
                     "_requestProducer", "_dataBuffer", "_busyReceiving", "_buffer"),
                    "the web site and the proxy fail on every request",
                ),
                (
                    lambda: server.Request,
                    ("_disconnected",),
                    "answers are finished on requests whose client is gone (RuntimeError)",
                ),
                (
                    lambda: http.HTTPFactory(),
                    ("_logFile", "_logFormatter", "_logDateTime", "_openLogFile"),
                    "the access log fails, or rotates every megabyte as Twisted's does",
                ),
                (
                    switch,
                    ("_negotiatedProtocol", "_channel", "_site", "_requestFactory", "_factory", "_timeOut",
                     "_callLater"),
                    "no connection can switch to netsuite's HTTP/2",
                ),
            ],
        )
        self.assertMentioned(
            http.HTTPChannel,
            ("_command", "_path", "_version", "_networkProducer"),
            "refused requests lose their method and target in the access log; the proxy fails",
        )

    def test_client(self) -> None:
        from twisted.web import _newclient, client

        def module() -> Any:
            return _newclient

        def parserClass() -> Any:
            return _newclient.HTTPClientParser

        def pool() -> Any:
            return client.HTTPConnectionPool(MemoryReactorClock())

        self.assertNames(
            "twisted.web (client)",
            [
                (module, ("BODY", "HEADER", "STATUS", "BadHeaders", "ParseError"), "the downloader cannot be imported"),
                (
                    lambda: _newclient.HTTP11ClientProtocol,
                    ("_parser",),
                    "the downloader's response-head cap, interim-answer limit, chunked decoder and broken-off "
                    "check are all skipped",
                ),
                (
                    parserClass,
                    ("_transferDecoders",),
                    "the downloader reads chunked bodies with Twisted's lenient decoder",
                ),
                (
                    lambda: client._HTTP11ClientFactory(lambda protocol: None, None),
                    ("_quiescentCallback",),
                    "every download connection fails",
                ),
                (
                    pool,
                    ("_factory", "_putConnection", "_removeConnection", "_timeouts", "_connections"),
                    "the downloader's connections lose their limits: kept after stop, no cap on idle ones, "
                    "no head cap or strict decoder",
                ),
            ],
        )
        self.assertMentioned(
            _newclient.HTTPClientParser,
            ("_partialHeader",),
            "the downloader refuses every folded response header as a first line beginning with white space",
        )
        self.assertIsInstance(_newclient.HTTPClientParser._transferDecoders, dict)
        self.assertIn(b"chunked", _newclient.HTTPClientParser._transferDecoders)


class TwistedTLSAndEndpointTests(UpstreamNamesTestCase):
    """
    Twisted's TLS protocol, certificate options and endpoint parser.
    """

    def test_tls(self) -> None:
        from twisted.internet import _sslverify, ssl
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        self.assertNames(
            "twisted TLS",
            [
                (
                    lambda: TLSMemoryBIOProtocol,
                    ("_flushReceiveBIO", "_tlsShutdownFinished"),
                    "netsuite's overrides are never called: the plaintext of each record goes on alone (to "
                    "services and to the downloader), and a close_notify during the handshake gives a traceback again",
                ),
                (
                    lambda: TLSMemoryBIOProtocol,
                    ("_shutdownTLS", "_flushSendBIO", "_handshakeDone", "_aborted", "_reason", "_lostTLSConnection"),
                    "every TLS listener, and every https download, fails",
                ),
                (lambda: _sslverify, ("protosFromProtocol",), "netsuite.tls cannot be imported"),
                (
                    lambda: ssl.CertificateOptions(),
                    ("_context", "_makeContext", "_acceptableProtocols"),
                    "TLS listeners cannot start",
                ),
            ],
        )
        self.assertMentioned(TLSMemoryBIOProtocol, ("_tlsConnection",), "every TLS listener, and every https download, fails")

    def test_endpoints(self) -> None:
        from twisted.internet import endpoints, ssl

        def endpoint() -> Any:
            return endpoints.SSL4ServerEndpoint(MemoryReactorClock(), 0, ssl.CertificateOptions())

        self.assertNames(
            "twisted.internet.endpoints",
            [
                (lambda: endpoints, ("_parse", "_parseSSL"), "netsuite.listen cannot be imported"),
                (
                    endpoint,
                    ("_sslContextFactory", "_port", "_backlog", "_interface"),
                    "ssl: endpoints get Twisted's own TLS, without netsuite's limits, and are not checked at start",
                ),
            ],
        )
        parameters = inspect.signature(endpoints._parseSSL).parameters
        for name in ("privateKey", "certKey", "extraCertChain", "dhParameters"):
            self.assertIn(name, parameters, f"_parseSSL has no {name}: the files of ssl: endpoints go unchecked")

    def test_fileDescriptor(self) -> None:
        from twisted.internet import abstract

        self.assertNames(
            "twisted.internet.abstract",
            [
                (
                    lambda: abstract.FileDescriptor(MemoryReactorClock()),
                    ("dataBuffer", "offset", "_tempDataLen", "bufferSize"),
                    "no direct sends, sendfile or zero-copy echo, and the output-held checks fail",
                ),
            ],
        )


class HTTP2Tests(UpstreamNamesTestCase):
    """
    Twisted's HTTP/2 connection and stream, and the h2 library's insides.
    """

    def setUp(self) -> None:
        from twisted.web.http import H2_ENABLED

        if not H2_ENABLED:
            raise SkipTest("Twisted cannot speak HTTP/2 here (the h2 package is missing)")

    def test_twisted(self) -> None:
        from twisted.web import _http2

        from netsuite.web import site

        self.assertTrue(site.H2_SERVED, "netsuite.web.site could not import Twisted's HTTP/2: HTTP/2 is off")
        self.assertNames(
            "twisted.web._http2",
            [
                (lambda: _http2, ("_END_STREAM_SENTINEL", "H2Connection", "H2Stream"), "HTTP/2 is off"),
                (
                    lambda: _http2.H2Connection(),
                    ("_requestReceived", "_handlePriorityUpdate", "_requestDataReceived", "_requestEnded",
                     "_requestAborted", "_requestDone", "_sendPrioritisedData", "_handleWindowUpdate"),
                    "netsuite's overrides are never called: HTTP/2 without its head and body limits, Rapid Reset "
                    "limit, PRIORITY guard, bounded output and batched sending",
                ),
                (
                    lambda: _http2.H2Connection(),
                    ("_tryToWriteControlData", "_outboundStreamQueues", "_consumerBlocked", "_stillProducing",
                     "_sendingDeferred", "_reactor", "_abortingCall", "_log", "_maxBufferedControlFrameBytes",
                     "_bufferedControlFrameBytes"),
                    "HTTP/2 connections fail, and static files over HTTP/2 are no longer paced",
                ),
            ],
        )
        self.assertIn("_cancelTimeouts", inspect.signature(_http2.H2Connection.connectionLost).parameters)
        self.assertMentioned(_http2.H2Stream, ("_request", "_conn"), "static files over HTTP/2 are not paced")
        from twisted.internet import reactor

        self.assertNames(
            "twisted.internet",
            [(lambda: reactor, ("_exitSignal",), "twistd ends with status 0, not by the signal, after a SIGHUP")],
        )
        from twisted.internet import _resolver
        from twisted.python.threadpool import ThreadPool

        self.assertNames(
            "twisted.internet._resolver",
            [
                (lambda: _resolver, ("GAIResolver", "HostResolution"), "netsuite.resolving does not import"),
                (
                    lambda: ThreadPool(),
                    ("_team", "joined", "started", "threadFactory"),
                    "the lookup threads are not daemon threads, or stopping them fails: shutdown raises or waits",
                ),
            ],
        )

    def test_h2(self) -> None:
        import h2.connection
        import h2.frame_buffer
        import h2.stream
        from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame

        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.assertNames(
            "h2",
            [
                (
                    lambda: connection,
                    ("_frame_dispatch_table", "_stream_closed_by", "incoming_buffer"),
                    "no control-frame budget, GOAWAY drain, or quiet DATA after netsuite's reset",
                ),
                (
                    lambda: connection,
                    ("_begin_new_stream",),
                    "a request's unreadable content-length ends the connection",
                ),
                (
                    lambda: connection,
                    ("_get_or_create_stream", "_prepare_for_sending", "decoder"),
                    "a stream past the concurrent-stream limit, or made to depend on itself, ends the connection",
                ),
                (
                    lambda: h2.connection,
                    ("_decode_headers", "AllowedStreamIDs"),
                    "netsuite.web.site does not import: HTTP/2 is off",
                ),
                (
                    lambda: h2.stream.H2Stream(
                        1, config=connection.config, inbound_window_size=65535, outbound_window_size=65535
                    ),
                    ("_initialize_content_length", "_expected_content_length", "_actual_content_length"),
                    "a request's unreadable content-length ends the connection; trailers are not checked",
                ),
                (
                    lambda: h2.stream.H2Stream(
                        1, config=connection.config, inbound_window_size=65535, outbound_window_size=65535
                    ),
                    ("receive_headers", "state_machine"),
                    "malformed trailers, and a :status in a request, end the connection",
                ),
                (
                    lambda: h2.frame_buffer.FrameBuffer(server=True),
                    ("_preamble_len", "_headers_buffer", "_data"),
                    "every HTTP/2 read fails (the head deadline and the WINDOW_UPDATE check read them)",
                ),
            ],
        )
        self.assertIsInstance(connection.incoming_buffer, h2.frame_buffer.FrameBuffer)
        for kind in (DataFrame, GoAwayFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame):
            self.assertIn(kind, connection._frame_dispatch_table)
        self.assertEqual(WindowUpdateFrame(1, window_increment=0).window_increment, 0)


class PyOpenSSLTests(UpstreamNamesTestCase):
    """
    pyOpenSSL's binding, through which netsuite sets the key-exchange
    groups, and the downloader reads why a certificate was refused.
    """

    def test_binding(self) -> None:
        from OpenSSL import SSL, _util

        self.assertNames(
            "OpenSSL",
            [
                (
                    lambda: _util.lib,
                    ("SSL_CTX_set1_curves_list", "ERR_clear_error"),
                    "OpenSSL's default key-exchange groups are kept, finite-field ones included (one warning at start)",
                ),
                (lambda: SSL.Context(SSL.TLS_METHOD), ("_context",), "the same"),
                (
                    lambda: _util.lib,
                    ("SSL_get_verify_result", "X509_verify_cert_error_string"),
                    "the downloader says only \"is the server's certificate trusted?\" for a certificate that "
                    "expired, is self-signed or was signed by an unknown authority",
                ),
                (lambda: _util, ("ffi",), "the same"),
                (lambda: SSL.Connection(SSL.Context(SSL.TLS_METHOD)), ("_ssl",), "the same"),
            ],
        )
