"""
Helpers for tests that speak TLS over loopback: certificates made with
trustme, a TLS listener started for one test, a Twisted client and a blocking
stdlib C{ssl} client (run it with C{deferToThread}).
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Callable, List, Optional, Tuple

import trustme
from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from netsuite.echo import makeEchoService
from netsuite.listen import StreamListener
from netsuite.tls import loadPEM, serverOptions
from tests.helpers import recvUntil

#: Seconds any blocking socket operation in a test may take.
SOCKET_TIMEOUT = 5.0


def writeLeaf(
    directory: str, leaf: trustme.LeafCert, combined: bool = False
) -> Tuple[str, Optional[str]]:
    """
    Write C{leaf}'s chain (leaf first) and key as PEM files in C{directory}.

    @param combined: put the key in the certificate's file.
    @return: the certificate's path, and the key's (L{None} when combined).
    """
    os.makedirs(directory, exist_ok=True)
    certPath = os.path.join(directory, "chain.pem")
    if combined:
        leaf.private_key_and_cert_chain_pem.write_to_path(certPath)
        return certPath, None
    keyPath = os.path.join(directory, "key.pem")
    with open(certPath, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    leaf.private_key_pem.write_to_path(keyPath)
    return certPath, keyPath


def trustRootOf(ca: trustme.CA) -> Certificate:
    """
    C{ca} as a Twisted trust root.
    """
    return Certificate.loadPEM(ca.cert_pem.bytes())


def startListener(
    testCase: TestCase,
    tls: CertificateOptions,
    make: Callable[..., StreamListener] = makeEchoService,
) -> int:
    """
    Start a TLS listener made by C{make} on a free loopback port, stopped
    when C{testCase} ends.

    @return: the port number it listens on.
    """
    service = make("tcp:0:interface=127.0.0.1", tls=tls, grace=1.0)
    service.startService()
    testCase.addCleanup(service.stopService)
    assert service.port is not None
    return service.port.getHost().port  # type: ignore[no-any-return]


class Collector(Protocol):
    """
    Sends C{payload} once connected, collects what comes back, and closes
    once C{expected} bytes arrived (or waits for the server to close).

    @ivar done: fires with C{(received, reason)} when the connection is lost.
    """

    def __init__(self, payload: bytes = b"", expected: Optional[int] = None) -> None:
        self.payload = payload
        self.expected = expected
        self.chunks: List[bytes] = []
        self.size = 0
        self.done: defer.Deferred[Tuple[bytes, Failure]] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.payload:
            self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.expected is not None and self.size >= self.expected:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.done.callback((b"".join(self.chunks), reason))


def twistedTLSClient(
    port: int,
    hostname: str,
    trustRoot: Certificate,
    payload: bytes = b"",
    expected: Optional[int] = None,
) -> defer.Deferred[Tuple[bytes, Failure]]:
    """
    Connect to C{127.0.0.1:port} with TLS, verifying the server as
    C{hostname} against C{trustRoot}, and run a L{Collector}.

    @return: fires with what was received and why the connection ended.
    """
    endpoint = wrapClientTLS(
        optionsForClientTLS(hostname, trustRoot=trustRoot),
        TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=int(SOCKET_TIMEOUT)),
    )
    collector = Collector(payload, expected)
    d = connectProtocol(endpoint, collector)
    d.addCallback(lambda _: collector.done)
    return d


def stdlibTLSEcho(
    port: int,
    cadata: str,
    payload: bytes = b"ping",
    minimum: Optional[ssl.TLSVersion] = None,
    maximum: Optional[ssl.TLSVersion] = None,
    ciphers: Optional[str] = None,
    alpn: Optional[list[str]] = None,
) -> Tuple[Optional[str], Optional[str], bytes]:
    """
    Blocking: connect to C{127.0.0.1:port} with the stdlib C{ssl} module
    (verifying C{localhost} against C{cadata}), send C{payload} and read as
    many bytes back.  Every socket operation times out.

    @return: the TLS version, the cipher, and the bytes read back.
    @raise ssl.SSLError: the handshake failed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=cadata)
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(payload)
            received = recvUntil(conn, lambda r: len(r) >= len(payload))
            cipher = conn.cipher()
            return conn.version(), cipher[0] if cipher else None, received


def makeServerOptions(
    directory: str,
    ca: trustme.CA | None = None,
    acceptableProtocols: List[bytes] | None = None,
) -> CertificateOptions:
    """
    netsuite's server TLS options for a localhost certificate issued by
    C{ca} (a new CA by default), written under C{directory}, offering
    C{acceptableProtocols} by ALPN.
    """
    ca = ca or trustme.CA()
    certPath, keyPath = writeLeaf(directory, ca.issue_cert("localhost"))
    return serverOptions(*loadPEM(certPath, keyPath), acceptableProtocols=acceptableProtocols)
