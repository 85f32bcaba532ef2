"""
Helpers for tests that speak TLS over loopback: certificates made with
trustme, a TLS listener started for one test, a Twisted client, a blocking
stdlib C{ssl} client and a pyOpenSSL client that half-closes with
close_notify (run those two with C{deferToThread}).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import socket
import ssl
import struct
import time
from typing import Callable, List, Optional, Tuple

import trustme
from OpenSSL import SSL
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


def closeNotifyClient(
    port: int,
    ca: trustme.CA,
    payload: bytes,
    shutDownTCP: bool = False,
    closeNotify: bool = True,
    timeout: float = 30.0,
    echoedBeforeEnd: int = 0,
) -> Tuple[bytes, str]:
    """
    Blocking: connect to C{127.0.0.1:port} with TLS (pyOpenSSL, trusting
    C{ca}), send C{payload} while reading, then send close_notify (unless
    not C{closeNotify}; and with C{shutDownTCP} also shut the socket's
    sending side) and read on until the server closes.

    With C{echoedBeforeEnd} (for an echo server), the payload's last
    C{echoedBeforeEnd} bytes are held until the echo of all before them is
    back, then sent with the close_notify in one TCP segment (C{TCP_CORK},
    where there is one): the server reads both at once, and still has their
    echo to send when it reads the close_notify.

    @return: everything read, and how it ended: C{"close_notify"} (the
        server's), C{"eof"} (closed without one), C{"reset"}, or
        C{"timeout"} after C{timeout} seconds in all.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    ca.configure_trust(context)
    received: List[bytes] = []
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
        raw.setblocking(False)
        conn = SSL.Connection(context, raw)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        pending, closed = memoryview(payload), False
        cork = getattr(socket, "TCP_CORK", None) if echoedBeforeEnd else None
        ending = False  # the held bytes are going out
        while time.monotonic() < deadline:
            wantWrite = bool(pending) or not closed
            try:
                held = echoedBeforeEnd if len(pending) > echoedBeforeEnd else 0
                if echoedBeforeEnd and not held and not ending:
                    if sum(map(len, received)) < len(payload) - len(pending):
                        wantWrite = False  # the echo is not back yet: only read
                        raise SSL.WantReadError()
                    if cork is not None:
                        raw.setsockopt(socket.IPPROTO_TCP, cork, 1)
                    ending = True
                if pending:
                    pending = pending[conn.send(pending[: min(64 * 1024, len(pending) - held)]):]
                elif not closed:
                    if closeNotify:
                        conn.shutdown()
                    if ending and cork is not None:
                        raw.setsockopt(socket.IPPROTO_TCP, cork, 0)
                    if shutDownTCP:
                        raw.shutdown(socket.SHUT_WR)
                    closed, wantWrite = True, False
            except (SSL.WantReadError, SSL.WantWriteError):
                pass
            try:
                while True:
                    received.append(conn.recv(64 * 1024))
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                return b"".join(received), "close_notify"
            except SSL.SysCallError as e:
                return b"".join(received), "eof" if e.args[0] == -1 else "reset"
            except SSL.Error:
                return b"".join(received), "eof"
            select.select([raw], [raw] if wantWrite else [], [], 0.05)
        return b"".join(received), "timeout"


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


def _libssl() -> ctypes.CDLL | None:
    """
    The system's OpenSSL (the one the stdlib C{ssl} module uses) through
    C{ctypes}, when it can send a TLS 1.3 KeyUpdate; else L{None}.
    """
    name = ctypes.util.find_library("ssl")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.SSL_key_update
    except (OSError, AttributeError):
        return None
    pointer = ctypes.c_void_p
    lib.TLS_client_method.restype = pointer
    lib.SSL_CTX_new.restype = pointer
    lib.SSL_CTX_new.argtypes = [pointer]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [pointer, ctypes.c_int, ctypes.c_long, pointer]
    lib.SSL_CTX_free.argtypes = [pointer]
    lib.SSL_new.restype = pointer
    lib.SSL_new.argtypes = [pointer]
    lib.SSL_set_fd.argtypes = [pointer, ctypes.c_int]
    for function in (lib.SSL_connect, lib.SSL_do_handshake, lib.SSL_free):
        function.argtypes = [pointer]
    lib.SSL_key_update.argtypes = [pointer, ctypes.c_int]
    for function in (lib.SSL_read, lib.SSL_write):
        function.argtypes = [pointer, ctypes.c_char_p, ctypes.c_int]
    lib.SSL_get_error.argtypes = [pointer, ctypes.c_int]
    return lib


#: Why L{KeyUpdateClient} cannot run here, or L{None}.
KEY_UPDATE_MISSING = (
    None if _libssl() is not None else "no system OpenSSL with SSL_key_update for ctypes"
)

_SSL_CTRL_SET_MIN_PROTO_VERSION = 123
_TLS1_3_VERSION = 0x0304
_SSL_KEY_UPDATE_REQUESTED = 1
_SSL_ERROR_ZERO_RETURN = 6


class KeyUpdateClient:
    """
    Blocking (run it with C{deferToThread}): a TLS 1.3 client on
    C{127.0.0.1:port}, through the system's OpenSSL, that can send KeyUpdate
    messages asking the server for one back.

    @param smallBuffers: give the socket small buffers, so that the kernel
        holds little of what either side sends.
    @param stall: seconds a send may wait before the client gives up.
    """

    def __init__(self, port: int, smallBuffers: bool = False, stall: float = SOCKET_TIMEOUT) -> None:
        lib = _libssl()
        assert lib is not None, KEY_UPDATE_MISSING
        self._lib = lib
        self.socket = raw = socket.socket()
        if smallBuffers:
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                raw.setsockopt(socket.SOL_SOCKET, option, 4096)
        raw.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(stall), int(stall % 1 * 1e6))
        )
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(SOCKET_TIMEOUT), 0))
        raw.connect(("127.0.0.1", port))
        self._context = lib.SSL_CTX_new(lib.TLS_client_method())
        lib.SSL_CTX_ctrl(self._context, _SSL_CTRL_SET_MIN_PROTO_VERSION, _TLS1_3_VERSION, None)
        self._connection = lib.SSL_new(self._context)
        lib.SSL_set_fd(self._connection, raw.fileno())
        if lib.SSL_connect(self._connection) != 1:
            self.close()
            raise ConnectionError("the TLS 1.3 handshake failed")

    def keyUpdates(self, count: int) -> int:
        """
        Send up to C{count} KeyUpdates, each on its own; stop at the first
        that cannot be sent.

        @return: how many were sent.
        """
        lib, connection = self._lib, self._connection
        for sent in range(count):
            if lib.SSL_key_update(connection, _SSL_KEY_UPDATE_REQUESTED) != 1:
                return sent
            if lib.SSL_do_handshake(connection) != 1:
                return sent
        return count

    def keyUpdateBurst(self, count: int) -> None:
        """
        Send C{count} KeyUpdates in one write: made into a socket pair
        first (OpenSSL writes each as it makes it), then sent together, so
        that the server reads many at once.
        """
        lib, connection = self._lib, self._connection
        made = []
        mine, theirs = socket.socketpair()
        with mine, theirs:
            theirs.setblocking(False)
            lib.SSL_set_fd(connection, mine.fileno())
            try:
                for _ in range(count):
                    if lib.SSL_key_update(connection, _SSL_KEY_UPDATE_REQUESTED) != 1:
                        raise ConnectionError("SSL_key_update failed")
                    if lib.SSL_do_handshake(connection) != 1:
                        raise ConnectionError("a KeyUpdate could not be made")
                    try:
                        made.append(theirs.recv(1 << 20))
                    except BlockingIOError:
                        pass
            finally:
                lib.SSL_set_fd(connection, self.socket.fileno())
        self.socket.sendall(b"".join(made))

    def write(self, data: bytes) -> None:
        """
        Send C{data}; raise L{ConnectionError} if it cannot be.
        """
        while data:
            written = self._lib.SSL_write(self._connection, data, len(data))
            if written <= 0:
                raise ConnectionError("the TLS write failed")
            data = data[written:]

    def read(self) -> bytes:
        """
        What the server sends next; C{b""} at its close_notify.

        @raise ConnectionError: the connection ended otherwise (a reset, an
            end of TCP without a close_notify, a timeout).
        """
        buffer = ctypes.create_string_buffer(65536)
        got = self._lib.SSL_read(self._connection, buffer, len(buffer))
        if got > 0:
            return buffer.raw[:got]
        if self._lib.SSL_get_error(self._connection, got) == _SSL_ERROR_ZERO_RETURN:
            return b""
        raise ConnectionError("the TLS connection ended without a close_notify")

    def readAll(self) -> bytes:
        """
        What the server sends until its close_notify.
        """
        received = []
        while data := self.read():
            received.append(data)
        return b"".join(received)

    def close(self, closeSocket: bool = True) -> None:
        """
        Free OpenSSL's objects, and close the socket unless told not to.
        """
        if self._connection is not None:
            self._lib.SSL_free(self._connection)
            self._connection = None
        if self._context is not None:
            self._lib.SSL_CTX_free(self._context)
            self._context = None
        if closeSocket:
            self.socket.close()


def keyUpdateFlood(port: int, count: int, stall: float = 0.5) -> Tuple[socket.socket, int]:
    """
    Blocking (run it with C{deferToThread}): a TLS 1.3 client on
    C{127.0.0.1:port} that sends up to C{count} KeyUpdate messages asking
    the server for one back each, and never reads.  Its socket buffers are
    small, and it stops once a send has waited C{stall} seconds.

    @return: the socket (still open: close it) and how many it sent.
    """
    client = KeyUpdateClient(port, smallBuffers=True, stall=stall)
    try:
        sent = client.keyUpdates(count)
    finally:
        client.close(closeSocket=False)
    return client.socket, sent
