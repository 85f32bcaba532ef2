"""
The HTTP client the downloader drives with treq: certificate checks (or a
private CA, or none when asked), an optional HTTP proxy (absolute-form
requests for http, a CONNECT tunnel for https), and no implicit
decompression.
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any, Optional
from urllib.parse import unquote_to_bytes, urlsplit

from OpenSSL.SSL import VERIFY_PEER, Error as TLSError, SysCallError, WantReadError, WantWriteError, ZeroReturnError
from twisted.internet import defer, ssl
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web._newclient import BODY, HEADER, STATUS, HTTP11ClientProtocol, ParseError
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ProxyAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from netsuite.chunked import ChunkedDecoder
from netsuite.files import readSmallFile
from netsuite.tls import GatheringTLSProtocol

try:
    from twisted.web.http import _DataLoss, _IdentityTransferDecoder
except ImportError:  # moved in a later Twisted: bodies then end at any close, as in Twisted itself
    _DataLoss = _IdentityTransferDecoder = None  # type: ignore[assignment,misc]

#: Where a response's C{Content-Encoding} is moved so that treq does not
#: decompress it: bytes are saved exactly as the server sent them.
HIDDEN_ENCODING = b"x-netsuite-content-encoding"

#: The longest CONNECT answer head a proxy may send.
MAX_TUNNEL_HEAD = 16 * 1024

#: The most characters of a server's reason phrase (or a proxy's) quoted in
#: an error.
PHRASE_LENGTH = 80

#: The most bytes of response head (status line, header lines, and any
#: interim 1xx responses before the real one) a server may send for one
#: request; the same limit as netsuite's proxy.
MAX_RESPONSE_HEAD = 64 * 1024

#: The most bytes a chunked body's chunk sizes may add up to: past the
#: largest file offset, they are malformed.
MAX_CHUNKED_BODY = 2**63 - 1

_TRANSFER_DECODERS = {b"chunked": functools.partial(ChunkedDecoder, limit=MAX_CHUNKED_BODY)}

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class ProxyError(ConnectError):
    """
    The proxy refused or broke a CONNECT tunnel.
    """


#: The most interim (1xx) responses a server may send before its answer
#: (Twisted skips each one, and logs it).
MAX_INTERIM = 16


class ResponseHeadTooLarge(Exception):
    """
    A server sent more than L{MAX_RESPONSE_HEAD} bytes of response head,
    or more than L{MAX_INTERIM} interim responses before its answer.
    """


class BoundedClientProtocol(HTTP11ClientProtocol):
    """
    Twisted's HTTP/1.1 client protocol with a cap on the response head.

    Twisted limits each header line to 16 KiB (and closes the connection
    past it, as if the server had) but neither the number of lines nor
    the number of interim 1xx responses, so a hostile server could make
    the client buffer headers until the header timeout.  Here one line
    may be as long as the head may be, and the lines of the status line
    and headers (of 1xx answers too) are counted from the request on; past
    C{maxHead} the connection is dropped and the request fails with
    L{ResponseHeadTooLarge}; so it does past L{MAX_INTERIM} interim
    responses.

    A header line that begins with white space where no header came before
    it (the first line after a status line) fails the request as a
    L{ParseError}, as curl refuses it (RFC 9112, 2.2): Twisted took it for
    the continuation of a header not yet begun, and failed with Python's
    C{AttributeError}, whose words reached the user.

    Its chunked bodies are read by L{ChunkedDecoder}.

    Twisted also ends a body without C{Content-Length} or chunking at the
    connection's end however it ends; here only a clean close does, and a
    reset is a broken transfer (as curl and wget see it), so that a
    truncated file is never taken for a whole one.
    """

    maxHead = MAX_RESPONSE_HEAD
    _lineBytes = 0
    _statusLines = 0

    def request(self, request):
        self._lineBytes = 0
        self._statusLines = 0
        result = HTTP11ClientProtocol.request(self, request)
        parser = getattr(self, "_parser", None)
        if parser is not None:
            # One line may take the whole head (curl allows 100 KiB); a
            # longer one fails as a head too large, not as a closed
            # connection (Twisted's own 16 KiB line limit just closes, and
            # the request was retried).
            parser.MAX_LENGTH = self.maxHead
            parser.lineLengthExceeded = self._lineTooLong
            parser.lineReceived = self._countedLine(parser.lineReceived)
            # Chunked bodies are read by netsuite's decoder: a chunk in
            # about 1 microsecond, not 5, and the chunks of a read together.
            parser._transferDecoders = _TRANSFER_DECODERS
        return result

    def _countedLine(self, lineReceived: Any) -> Any:
        """
        C{lineReceived} of the response parser, counting each line of the
        head (and of 1xx heads before it), exactly, whatever the reads; the
        line being read is held to C{MAX_LENGTH}, the same cap.
        """

        parser = self._parser

        def counted(line: bytes) -> None:
            self._lineBytes += len(line) + 1
            if self._lineBytes > self.maxHead:
                self._lineTooLong(line)
            if parser.state == STATUS:
                self._statusLines += 1
                if self._statusLines > MAX_INTERIM + 1:
                    raise ResponseHeadTooLarge(f"the server sent more than {MAX_INTERIM} interim (1xx) responses")
            elif parser.state == HEADER and line[:1] in (b" ", b"\t") and getattr(parser, "_partialHeader", None) is None:
                raise ParseError("a header line begins with white space", line)
            lineReceived(line)

        return counted

    def _lineTooLong(self, line: bytes) -> None:
        raise ResponseHeadTooLarge(f"the server's response head is over {self.maxHead // 1024} KiB")

    def connectionLost(self, reason: Failure) -> None:
        parser = getattr(self, "_parser", None)
        if parser is not None and getattr(parser, "state", None) == BODY and not reason.check(ConnectionDone):
            decoder = getattr(parser, "bodyDecoder", None)
            if (
                _IdentityTransferDecoder is not None
                and isinstance(decoder, _IdentityTransferDecoder)
                and decoder.contentLength is None
            ):
                parser.bodyDecoder = _BrokenOff()
        HTTP11ClientProtocol.connectionLost(self, reason)


class _BrokenOff:
    """
    The body decoder of a response without a length whose connection broke
    (rather than closed): its end is not the body's end.
    """

    def noMoreData(self) -> None:
        raise _DataLoss("the connection broke before the end of a body of unknown length")


class DestinationRefused(ConnectError):
    """
    The destination's address is one the rules refuse (loopback, link-local,
    private ...).
    """


#: The longest CA file read (a system's whole bundle is a few hundred KB):
#: a longer one, or C{/dev/zero}, is refused rather than read into memory.
MAX_CA_FILE = 16 * 1024 * 1024


def loadTrustRoot(caFile: str) -> ssl.IOpenSSLTrustRoot:
    """
    A trust root made of every certificate in the PEM file C{caFile}.

    @raise ValueError: with a readable sentence when the file cannot be
        read (among others a FIFO, a device, or one longer than
        L{MAX_CA_FILE} bytes) or holds no certificate.
    """
    try:
        data = readSmallFile(caFile, MAX_CA_FILE, follow=True)
    except OSError as e:
        raise ValueError(f"cannot read the CA file {caFile}: {e.strerror}") from None
    except ValueError as e:  # a FIFO, a device, a directory, a huge file
        raise ValueError(f"cannot read the CA file {caFile}: {e}") from None
    blocks = _PEM.findall(data)
    if not blocks:
        raise ValueError(f"the CA file {caFile} holds no PEM certificate")
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception:
        raise ValueError(f"the CA file {caFile} holds a certificate that cannot be read") from None
    return ssl.trustRootFromCertificates(certificates)


class _GatheringTLSFactory(TLSMemoryBIOFactory):
    protocol = GatheringTLSProtocol


@implementer(IStreamClientEndpoint)
class _ClientTLSEndpoint:
    def __init__(self, creator: IOpenSSLClientConnectionCreator, endpoint: IStreamClientEndpoint) -> None:
        self._creator = creator
        self._endpoint = endpoint

    def connect(self, protocolFactory):  # type: ignore[no-untyped-def]
        tls = _GatheringTLSFactory(self._creator, True, protocolFactory)
        return self._endpoint.connect(tls).addCallback(lambda protocol: protocol.wrappedProtocol)


def clientTLS(creator: IOpenSSLClientConnectionCreator, endpoint: IStreamClientEndpoint) -> IStreamClientEndpoint:
    """
    TLS over C{endpoint}, as Twisted's C{wrapClientTLS}, but handing on the
    plaintext of all the records read at once (L{GatheringTLSProtocol}): a
    server sending tiny records cost a pass of the HTTP client for each.
    """
    return _ClientTLSEndpoint(creator, endpoint)


@implementer(IAgentEndpointFactory)
class _DirectEndpointFactory:
    """
    Twisted's endpoints for an L{Agent} (no proxy, no destination rules),
    with L{clientTLS}.
    """

    def __init__(self, reactor, policy: IPolicyForHTTPS, timeout: float) -> None:  # type: ignore[no-untyped-def]
        self._reactor = reactor
        self._policy = policy
        self._timeout = timeout

    def endpointForURI(self, uri):  # type: ignore[no-untyped-def]
        endpoint = HostnameEndpoint(self._reactor, uri.host.decode("ascii"), uri.port, timeout=self._timeout)
        return _withTLSFor(uri, self._policy, endpoint)


def _withTLSFor(uri: Any, policy: IPolicyForHTTPS, endpoint: IStreamClientEndpoint) -> IStreamClientEndpoint:
    """
    C{endpoint} for C{uri}: with TLS (L{clientTLS}, checked by C{policy})
    for an C{https} one.
    """
    if uri.scheme == b"https":
        return clientTLS(policy.creatorForNetloc(uri.host, uri.port), endpoint)
    return endpoint


@implementer(IPolicyForHTTPS)
class InsecurePolicy:
    """
    A TLS policy that checks nothing: any certificate, any name.  Only for
    C{--insecure}.
    """

    def creatorForNetloc(self, hostname: bytes, port: int):
        return ssl.CertificateOptions(verify=False)


def tlsPolicy(caFile: Optional[str] = None, insecure: bool = False) -> IPolicyForHTTPS:
    """
    The TLS policy for downloads: the system's trust roots and
    service-identity name checks, or only C{caFile}'s certificates, or
    (C{insecure}) no checks at all.
    """
    if insecure:
        return _CloseInHandshakePolicy(InsecurePolicy())
    if caFile:
        return _CloseInHandshakePolicy(BrowserLikePolicyForHTTPS(trustRoot=loadTrustRoot(caFile)))
    return _CloseInHandshakePolicy(BrowserLikePolicyForHTTPS())


@implementer(IPolicyForHTTPS)
class _CloseInHandshakePolicy:
    """
    A policy whose connections take a server's close_notify before the
    handshake is done as the connection's end (L{_CloseInHandshake}).
    """

    def __init__(self, policy: IPolicyForHTTPS) -> None:
        self._policy = policy

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _CloseInHandshakeCreator(self._policy.creatorForNetloc(hostname, port))


#: The common reasons OpenSSL refuses a server's certificate chain (its
#: C{X509_V_ERR_*} numbers), in words, as curl names them.
_VERIFY_ERRORS = {
    2: "the server's certificate is signed by an unknown authority",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    9: "the server's certificate is not valid yet",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "the server's certificate has expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    18: "the server's certificate is self-signed",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    19: "the server's certificate chain ends in a self-signed certificate that is not trusted",
    20: "the server's certificate is signed by an unknown authority",  # ..._UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "the server's certificate is signed by an unknown authority",  # ..._UNABLE_TO_VERIFY_LEAF_SIGNATURE
    62: "the server's certificate is not for this host name",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "the server's certificate is not for this IP address",  # X509_V_ERR_IP_ADDRESS_MISMATCH
}


def certificateProblem(number: int) -> str:
    """
    One phrase for OpenSSL's certificate verification error C{number} (an
    C{X509_V_ERR_*}): one of L{_VERIFY_ERRORS}, else OpenSSL's own words
    for it.
    """
    words = _VERIFY_ERRORS.get(number)
    if words is not None:
        return words
    try:
        from OpenSSL._util import ffi, lib

        said = ffi.string(lib.X509_verify_cert_error_string(number)).decode("ascii", "replace")
    except (ImportError, AttributeError):
        said = f"OpenSSL verify error {number}"
    return f"the server's certificate was refused ({said})"


#: OpenSSL's reasons for a handshake that read bytes that are not TLS, or
#: not in TLS's order (a plain http server, garbage).
_NOT_TLS = frozenset(
    {
        "wrong version number",
        "unexpected message",
        "packet length too long",
        "record layer failure",
        "unknown protocol",
    }
)

#: An alert the server sent, as OpenSSL names it ("tls alert handshake
#: failure"; "sslv3 alert ..." before OpenSSL 3).
_ALERT = re.compile(r"(?:sslv3|tls|tlsv1|tlsv12|tlsv13) alert (.+)")

#: What an OpenSSL reason may hold to be shown (its own fixed words).
_REASON = re.compile(r"[a-z0-9 ,.'()_-]{1,80}")


def _openSSLReason(error: BaseException) -> Optional[str]:
    """
    The reason OpenSSL gave for C{error} (an C{OpenSSL.SSL.Error}, whose
    first argument is OpenSSL's error queue of C{(library, function,
    reason)}), or L{None} when it gave none readable.
    """
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list):
        for entry in args[0]:
            if isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[2], str):
                reason = entry[2].lower()
                if _REASON.fullmatch(reason):
                    return reason
    return None


def tlsProblem(error: BaseException) -> str:
    """
    One phrase for a TLS connection that failed other than on a certificate
    L{_CloseInHandshake} could name: from OpenSSL's reason, an alert the
    server sent ("the server refused the TLS handshake (alert "handshake
    failure")"; "the server wants a client certificate" for that alert),
    an answer that is not TLS, or OpenSSL's own words; the question "is
    the server's certificate trusted?" only when OpenSSL said the
    certificate failed, or said nothing.
    """
    reason = _openSSLReason(error)
    if reason is None or reason == "certificate verify failed":
        return "the TLS handshake failed (is the server's certificate trusted?)"
    alert = _ALERT.fullmatch(reason)
    if alert is not None:
        if alert.group(1) == "certificate required":
            return 'the server wants a client certificate (TLS alert "certificate required")'
        return f'the server refused the TLS handshake (alert "{alert.group(1)}")'
    if reason in _NOT_TLS:
        return f"the server's answer is not valid TLS ({reason})"
    return f"the TLS handshake failed ({reason})"


def _verifyResult(connection: Any) -> int:
    """
    OpenSSL's verdict on the certificate chain the server of C{connection}
    (an C{OpenSSL.SSL.Connection}) sent: an C{X509_V_ERR_*} number, 0 when
    it verified or was not reached.  Read through pyOpenSSL's binding (it
    has no call for it); 0 where the binding lacks it.
    """
    try:
        from OpenSSL._util import lib

        return int(lib.SSL_get_verify_result(connection._ssl))
    except (ImportError, AttributeError):
        return 0


class CertificateRefused(TLSError):
    """
    The TLS handshake failed because the server's certificate chain did
    not verify; L{reason} says why (L{certificateProblem}).  Its arguments
    are those of OpenSSL's error (its error queue, which Twisted's TLS
    reads).
    """

    def __init__(self, reason: str, *args: Any) -> None:
        super().__init__(*args)
        self.reason = reason


@implementer(IOpenSSLClientConnectionCreator)
class _CloseInHandshakeCreator:
    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self._creator = creator

    def clientConnectionForTLS(self, tlsProtocol):  # type: ignore[no-untyped-def]
        return _CloseInHandshake(self._creator.clientConnectionForTLS(tlsProtocol))


class _CloseInHandshake:
    """
    A client's C{OpenSSL.SSL.Connection} whose handshake, ended by the
    server's close_notify, fails as an unexpected end of the connection
    ("the connection was closed", retried).  pyOpenSSL's C{ZeroReturnError}
    has no arguments, Twisted's TLS reads the first, and the C{IndexError}
    went up to the reactor: its traceback was printed, and the download
    failed with "tuple index out of range".

    A handshake that fails on the server's certificate chain fails with a
    L{CertificateRefused} saying why (expired, self-signed...): OpenSSL's
    own error says only "certificate verify failed", and the download
    failed as "is the server's certificate trusted?".  (Twisted checks the
    host name itself, and says so.)
    """

    def __init__(self, connection) -> None:  # type: ignore[no-untyped-def]
        self._connection = connection

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._connection, name)

    def do_handshake(self) -> None:
        try:
            self._connection.do_handshake()
        except ZeroReturnError:
            raise SysCallError(-1, "Unexpected EOF") from None
        except (WantReadError, WantWriteError):
            raise
        except TLSError as e:
            # Without VERIFY_PEER (--insecure) OpenSSL still records what it
            # found, and it failed nothing.
            number = _verifyResult(self._connection) if self._connection.get_verify_mode() & VERIFY_PEER else 0
            if number:
                raise CertificateRefused(certificateProblem(number), *e.args) from None
            raise


@implementer(IAgent)
class IdentityAgent:
    """
    Asks for and keeps the bytes as stored: C{Accept-Encoding: identity},
    and a response's C{Content-Encoding} is moved out of the way of treq's
    gzip decoder (a download is saved exactly as sent, and a gzip bomb
    stays a small file).
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(self, method, uri, headers=None, bodyProducer=None):
        headers = headers.copy() if headers is not None else Headers()
        headers.setRawHeaders(b"accept-encoding", [b"identity"])
        d = self._agent.request(method, uri, headers, bodyProducer)
        d.addCallback(self._hideEncoding)
        return d

    @staticmethod
    def _hideEncoding(response):
        codings = response.headers.getRawHeaders(b"content-encoding")
        if codings:
            response.headers.removeHeader(b"content-encoding")
            response.headers.setRawHeaders(HIDDEN_ENCODING, codings)
        return response


def _proxyParts(proxy: str) -> tuple[str, int, Optional[bytes]]:
    """
    C{(host, port, Proxy-Authorization value or None)} of a proxy URL.

    @raise ValueError: with a readable sentence for anything but
        C{http://[user:password@]host[:port]}.
    """
    try:
        parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        port = parts.port or 8080
    except ValueError:
        raise ValueError(f"{proxy!r} is not a proxy URL (example: http://127.0.0.1:3128)") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{proxy!r} is not an http:// proxy URL (example: http://127.0.0.1:3128)")
    authorization = None
    if parts.username is not None:
        authorization = basicAuthorization(parts.username, parts.password or "")
    return parts.hostname, port, authorization


def basicAuthorization(user: str, password: str) -> bytes:
    """
    The Basic C{Authorization} value for a URL's percent-encoded C{user}
    and C{password}, their bytes kept as given: UTF-8, or the bytes of
    command-line text that was not UTF-8 (which arrive as surrogates).
    """

    def raw(text: str) -> bytes:
        return unquote_to_bytes(text.encode("utf-8", "surrogateescape"))

    return b"Basic " + base64.b64encode(raw(user) + b":" + raw(password))


class _TunnelProtocol(Protocol):
    """
    Asks a proxy for a CONNECT tunnel, then hands the connection to the
    real protocol and forwards to it.
    """

    def __init__(self, factory: "_TunnelFactory") -> None:
        self._factory = factory
        self._buffer = bytearray()
        self._inner: Optional[Protocol] = None

    def connectionMade(self) -> None:
        target = self._factory.target
        head = [b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target]
        if self._factory.authorization:
            head.append(b"Proxy-Authorization: " + self._factory.authorization)
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        searched = max(len(self._buffer) - 3, 0)  # (a byte at a time: no search again)
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n", searched)
        if end < 0:
            if len(self._buffer) > MAX_TUNNEL_HEAD:
                self._fail("the proxy's answer to CONNECT is too long")
            return
        head, rest = bytes(self._buffer[:end]), bytes(self._buffer[end + 4 :])
        self._buffer = bytearray()
        statusLine = head.split(b"\r\n", 1)[0]
        parts = statusLine.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self._fail("the proxy's answer to CONNECT is not HTTP")
            return
        if not 200 <= int(parts[1]) < 300:
            reason = statusLine[len(parts[0]) + 1 :][:PHRASE_LENGTH].decode("latin-1", "replace")
            self._fail(f"the proxy refused the tunnel: {reason}")
            return
        inner = self._factory.wrapped.buildProtocol(self.transport.getPeer())
        if inner is None:
            self.transport.loseConnection()
            self._factory.settle(Failure(ConnectError("the connection was refused by its protocol")))
            return
        self._inner = inner
        inner.makeConnection(self.transport)
        self._factory.settle(inner)
        if rest:
            inner.dataReceived(rest)

    def _fail(self, message: str) -> None:
        self.transport.abortConnection()
        self._factory.settle(Failure(ProxyError(string=message)))

    def connectionLost(self, reason: Failure) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)
        else:
            self._factory.settle(Failure(ProxyError(string="the proxy closed the connection before the tunnel opened")))


class _TunnelFactory(Factory):
    def __init__(self, wrapped: Factory, target: bytes, authorization: Optional[bytes]) -> None:
        self.wrapped = wrapped
        self.target = target
        self.authorization = authorization
        self.done: defer.Deferred = defer.Deferred()

    def buildProtocol(self, addr):
        return _TunnelProtocol(self)

    def settle(self, result) -> None:
        if not self.done.called:
            self.done.callback(result)  # a Failure errbacks


@implementer(IStreamClientEndpoint)
class TunnelEndpoint:
    """
    An endpoint that reaches C{host:port} through an HTTP proxy's CONNECT
    tunnel.

    @param proxyEndpoint: how to reach the proxy.
    @param timeout: seconds the proxy has to open the tunnel.
    """

    def __init__(self, reactor, proxyEndpoint, host: str, port: int, authorization: Optional[bytes], timeout: float) -> None:
        self._reactor = reactor
        self._proxyEndpoint = proxyEndpoint
        hostText = f"[{host}]" if ":" in host else host
        self._target = f"{hostText}:{port}".encode("idna" if not host.isascii() else "ascii")
        self._authorization = authorization
        self._timeout = timeout

    def connect(self, protocolFactory):
        factory = _TunnelFactory(protocolFactory, self._target, self._authorization)
        connecting = self._proxyEndpoint.connect(factory)

        def connected(tunnelProtocol):
            timer = self._reactor.callLater(
                self._timeout,
                lambda: (
                    tunnelProtocol.transport.abortConnection(),
                    factory.settle(Failure(ProxyError(string="the proxy did not open the tunnel in time"))),
                ),
            )

            def stop(result):
                if timer.active():
                    timer.cancel()
                return result

            return factory.done.addBoth(stop)

        connecting.addCallback(connected)
        return connecting


@implementer(IAgentEndpointFactory)
class _TunnelEndpointFactory:
    def __init__(self, reactor, proxyEndpoint, authorization, policy, timeout) -> None:
        self._reactor = reactor
        self._proxyEndpoint = proxyEndpoint
        self._authorization = authorization
        self._policy = policy
        self._timeout = timeout

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        tunnel = TunnelEndpoint(self._reactor, self._proxyEndpoint, host, uri.port, self._authorization, self._timeout)
        return clientTLS(self._policy.creatorForNetloc(uri.host, uri.port), tunnel)


@implementer(IAgent)
class ProxyingAgent:
    """
    Sends http requests to an HTTP proxy in absolute form and https
    requests through a CONNECT tunnel, TLS end to end with the origin.
    """

    def __init__(self, reactor, proxy: str, policy: IPolicyForHTTPS, pool: HTTPConnectionPool, connectTimeout: float) -> None:
        host, port, self._authorization = _proxyParts(proxy)
        endpoint = HostnameEndpoint(reactor, host, port, timeout=connectTimeout)
        self._plain = ProxyAgent(endpoint, reactor, pool)
        self._tunnelled = Agent.usingEndpointFactory(
            reactor, _TunnelEndpointFactory(reactor, endpoint, self._authorization, policy, connectTimeout), pool
        )

    def request(self, method, uri, headers=None, bodyProducer=None):
        if uri.startswith(b"https:"):
            return self._tunnelled.request(method, uri, headers, bodyProducer)
        if self._authorization:
            headers = headers.copy() if headers is not None else Headers()
            headers.setRawHeaders(b"proxy-authorization", [self._authorization])
        return self._plain.request(method, uri, headers, bodyProducer)


class _Addresses:
    """
    Collects what a host name resolves to.
    """

    def __init__(self) -> None:
        self.addresses: list = []
        self.done: defer.Deferred = defer.Deferred()

    def resolutionBegan(self, resolution) -> None:
        pass

    def addressResolved(self, address) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


@implementer(IStreamClientEndpoint)
class CheckedEndpoint:
    """
    Resolves C{host}, checks every address it resolves to against C{rules}
    (L{netsuite.proxyrules.ProxyRules.checkDestination}), then connects to
    one of those same addresses, so DNS cannot swap the destination
    between the check and the connection.
    """

    def __init__(self, reactor, host: str, port: int, rules, timeout: float) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._rules = rules
        self._timeout = timeout

    async def _connect(self, protocolFactory):
        found = _Addresses()
        try:
            self._reactor.nameResolver.resolveHostName(found, self._host, self._port)
        except Exception as e:
            # It would never answer: fail this attempt now, in words.
            raise ConnectError(string=f"{self._host} could not be resolved ({str(e) or e.__class__.__name__})") from None
        addresses = await found.done
        if not addresses:
            raise ConnectError(string=f"{self._host} did not resolve to any address")
        hosts = [address.host for address in addresses]
        try:
            self._rules.checkDestination(hosts, self._port)
        except Exception as e:
            raise DestinationRefused(string=str(e)) from None
        failure = None
        for address in addresses:
            kind = TCP6ClientEndpoint if ":" in address.host else TCP4ClientEndpoint
            endpoint = kind(self._reactor, address.host, self._port, timeout=self._timeout)
            try:
                return await endpoint.connect(protocolFactory)
            except ConnectError as e:
                failure = e
        raise failure

    def connect(self, protocolFactory):
        return defer.Deferred.fromCoroutine(self._connect(protocolFactory))


@implementer(IAgentEndpointFactory)
class _CheckedEndpointFactory:
    def __init__(self, reactor, rules, policy, timeout: float) -> None:
        self._reactor = reactor
        self._rules = rules
        self._policy = policy
        self._timeout = timeout

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        endpoint = CheckedEndpoint(self._reactor, host, uri.port, self._rules, self._timeout)
        return _withTLSFor(uri, self._policy, endpoint)


def buildAgent(
    reactor,
    pool: HTTPConnectionPool,
    *,
    connectTimeout: float,
    caFile: Optional[str] = None,
    insecure: bool = False,
    proxy: Optional[str] = None,
    rules=None,
) -> IAgent:
    """
    The agent downloads go through: TLS checks as asked, through C{proxy}
    when given (else, with C{rules}, only to destinations they allow),
    never decompressing.

    @raise ValueError: with a readable sentence for a bad C{caFile} or
        C{proxy}.
    """
    policy = tlsPolicy(caFile, insecure)
    if proxy:
        agent = ProxyingAgent(reactor, proxy, policy, pool, connectTimeout)
    elif rules is not None:
        agent = Agent.usingEndpointFactory(reactor, _CheckedEndpointFactory(reactor, rules, policy, connectTimeout), pool)
    else:
        agent = Agent.usingEndpointFactory(reactor, _DirectEndpointFactory(reactor, policy, connectTimeout), pool)
    return IdentityAgent(agent)
