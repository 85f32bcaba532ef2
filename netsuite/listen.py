"""
Listening services shared by every netsuite service.

L{StreamListener} listens on one Twisted endpoint string, optionally adds TLS,
counts connections and bytes into a L{ServiceStats}, logs the real address
it got, and on stop closes its connections within a grace period.
L{DatagramListener} does the same for UDP (C{udp:PORT[:interface=ADDR]}).

A listener that cannot start raises L{ListenError}, whose message is one
readable sentence.
"""

from __future__ import annotations

import inspect
import ipaddress
import os
import re
import socket
from typing import Any, Dict, Iterable, Optional, Tuple

from twisted.application.service import Service
from twisted.internet import defer, error, tcp
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    _parse,
    _parseSSL,
    serverFromString,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IPushProducer,
    IReactorTime,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from OpenSSL.SSL import (
    SENT_SHUTDOWN,
    SSL_CB_HANDSHAKE_START,
    SSL_CB_LOOP,
    Connection,
    Error as SSLError,
    WantReadError,
    ZeroReturnError,
)
from zope.interface import alsoProvides, implementer

from netsuite.files import readSmallFile
from netsuite.limits import descriptorOf, heldBytes, hostKey
from netsuite.stats import ServiceStats
from netsuite.status import ListenerInfo
from netsuite.text import shortened
from netsuite.tls import MAX_PEM_FILE, GatheringTLSProtocol, TLSConfigError, checkHandshake

#: Seconds open connections get to close on their own when a listener stops.
DEFAULT_GRACE = 5.0

#: Seconds a TLS client gets, from its connection, to finish its handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0

#: TLS 1.3 KeyUpdates any client may send; it earns one more with every
#: L{KEY_UPDATE_BYTES} it sends.  Honest ones send one after hundreds of
#: gigabytes (RFC 8446 5.5); each costs the server key derivations, and
#: one asking for an update back an answer too.
KEY_UPDATES_FREE = 32
KEY_UPDATE_BYTES = 1024 * 1024

#: TLS records given to OpenSSL at a time: the limits on what OpenSSL
#: answers by itself are checked between (a 64 KiB read holds 2400
#: KeyUpdates).
RECORDS_PER_FEED = 32

#: Bytes a TLS client may send before its handshake is done: a handshake
#: message of 16 KiB, as BoringSSL caps one for a server that asks for no
#: client certificate, with room for record headers and the rest of the
#: client's flight.  A ClientHello takes a few KiB (one with a post-quantum
#: key share about 2), and netsuite asks for no client certificate and
#: takes no early data.  OpenSSL takes a ClientHello of up to 128 KiB, which
#: it holds until the handshake timeout (about 200 KiB of memory a
#: connection for 63 KiB, 80 for 16).
HANDSHAKE_BYTES = 17 * 1024

#: Once a service closes a connection, the listener reads on, dropping what
#: comes, until the peer closes too (RFC 9112 9.6, nginx's lingering
#: close), so that the peer's late bytes do not make the system reset the
#: connection and lose the last answer before the peer read it; but for at
#: most LINGER_TIME seconds from when the output was all handed to the
#: system, and LINGER_TIMEOUT seconds without a byte from the peer
#: (nginx's C{lingering_time} and C{lingering_timeout}).
LINGER_TIME = 30.0
LINGER_TIMEOUT = 5.0

#: Seconds between looks at a closing connection whose output still waits
#: in its transport (the service's own timers abort a peer that takes
#: nothing).
_LINGER_LOOK = 1.0

#: Seconds a connection whose peer sent more than its service's
#: C{lingerBytes} after the close gets before it ends, nothing more read
#: (see L{_Refusal}).
_FLOOD_GRACE = 2.0

_log = Logger()


class ListenError(Exception):
    """
    A listener could not start; C{str()} is one sentence for the user.
    """


def _reactor(reactor: object | None) -> object:
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor


def parseStreamEndpoint(reactor: object | None, description: str) -> IStreamServerEndpoint:
    """
    Parse a Twisted server endpoint string.

    @param reactor: the reactor; L{None} only checks the description.
    @raise ValueError: with a readable message when it is not one.
    """
    if description.startswith("udp:"):
        raise ValueError(f"{description!r} is a UDP address; this listener takes TCP endpoints")
    _checkKeywords(description)
    _checkDigits(description)
    _checkSSLFiles(description)
    try:
        endpoint = serverFromString(reactor, description)
    except (IndexError, KeyError) as e:
        if description.split(":", 1)[0].strip().lower() != "systemd":
            raise ValueError(
                f"bad endpoint {description!r} ({e!r}); expected a Twisted "
                f"endpoint string such as tcp:8080:interface=127.0.0.1"
            ) from None
        which = f"named {e.args[0]!r}" if isinstance(e, KeyError) else "of that index"
        raise ValueError(
            f"{shortened(description, 300)}: systemd passed no socket {which} (is the service"
            " started by its .socket unit, with FileDescriptorName= for name=?)"
        ) from None
    except Exception as e:
        reason = str(e) or e.__class__.__name__
        raise ValueError(
            f"bad endpoint {description!r} ({reason}); expected a Twisted "
            f"endpoint string such as tcp:8080:interface=127.0.0.1"
        ) from None
    _checkSSLContext(endpoint, description)
    _checkAdopted(endpoint, description)
    return endpoint


def _checkAdopted(endpoint: object, description: str) -> None:
    """
    Refuse a socket passed by systemd that is not a listening stream socket
    of the endpoint's family: a UDP socket made the reactor spin on
    C{accept} errors (31,727 tracebacks in 5 s), a UNIX one given as
    C{domain=INET} a traceback a connection, one not listening nothing.

    @raise ValueError: with a readable message.
    """
    if not isinstance(endpoint, AdoptedStreamServerEndpoint):
        return
    try:
        sock = socket.socket(fileno=os.dup(endpoint.fileno))
    except OSError as e:
        raise ValueError(f"{shortened(description, 300)}: the socket systemd passed cannot be used ({e.strerror})") from None
    try:
        problem = None
        if sock.type != socket.SOCK_STREAM:
            problem = f"a {sock.type.name} socket, not a stream (TCP or UNIX) one"
        elif sock.family != endpoint.addressFamily:
            problem = f"an {sock.family.name} socket, not {socket.AddressFamily(endpoint.addressFamily).name}"
        elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            problem = "not listening (ListenStream= in its .socket unit makes one that is)"
    except OSError as e:
        problem = f"not usable ({e.strerror})"
    finally:
        sock.close()
    if problem is not None:
        raise ValueError(f"{shortened(description, 300)}: the socket systemd passed is {problem}")


def _checkKeywords(description: str) -> None:
    """
    Refuse what would listen somewhere else than asked, without a word:
    Twisted's C{tls:} server endpoint (C{tls:8443} took 8443 for a
    certificate path and listened on port 443 of every interface, and it
    skips the checks made on C{ssl:}), an empty C{interface=} (every
    interface), and a keyword given twice (the last one was taken).

    @raise ValueError: with a readable message.
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind == "tls":
        raise ValueError(
            f"{shortened(description, 300)}: tls: endpoints are not taken here; use"
            " ssl:PORT:privateKey=KEY:certKey=CERT, or --tls / --tls-cert with the TLS listener flags"
        )
    seen = set()
    for part in re.split(r"(?<!\\):", description)[1:]:
        name, equals, value = part.partition("=")
        if not equals:
            continue
        if name in seen:
            raise ValueError(f"{shortened(description, 300)}: {name}= is given twice")
        seen.add(name)
        if name == "interface" and not value:
            raise ValueError(
                f"{shortened(description, 300)}: interface= is empty; to listen on every interface,"
                " leave interface= out"
            )


def _checkSSLContext(endpoint: object, description: str) -> None:
    """
    Make an C{ssl:} endpoint's OpenSSL context now: a C{dhParameters} file
    is read only then, and one that holds none failed every connection,
    with tracebacks in the log.

    @raise ValueError: with a readable message when OpenSSL refuses it.
    """
    options = getattr(endpoint, "_sslContextFactory", None)
    if options is None:
        return
    try:
        options.getContext()
    except SSLError as e:
        reasons = [str(part[-1]) for part in e.args[0]] if e.args and isinstance(e.args[0], list) else [str(e)]
        reason = "; ".join(r for r in reasons if r) or "OpenSSL refused them"
        raise ValueError(
            f"ssl endpoint {shortened(description, 300)}: OpenSSL cannot use its TLS settings ({reason}); "
            "is every file it names (dhParameters= too) the PEM it should be?"
        ) from None
    # As for netsuite's own TLS: a certificate no client could use (a DSA
    # key) stops the start, not every handshake.
    key = getattr(options, "privateKey", None)
    if getattr(options, "verify", False):
        return  # (client certificates asked for: a client without one fails)
    try:
        checkHandshake(options, key.to_cryptography_key() if key is not None else None)
    except TLSConfigError as e:
        raise ValueError(f"ssl endpoint {shortened(description, 300)}: {e}") from None


def _checkDigits(description: str) -> None:
    """
    Refuse a number in an endpoint string written other than in plain ASCII
    digits: Twisted reads it with C{int}, which also takes any script's
    digits, a sign, spaces and underscores, so C{tcp:\u0661\u0662\u0663}
    listened on port 123 and C{tcp:-0} on a random port.

    @raise ValueError: with a readable message naming the value.
    """
    try:
        args, kw = _parse(description)
    except Exception:
        return  # serverFromString says why
    values = [(None, value) for value in args[1:]] + list(kw.items())
    for name, value in values:
        if (args[0] == "unix" and name in (None, "address")) or name in _SSL_FILES:
            continue  # a path, which may be any text
        if not isinstance(value, str) or _ASCII_DIGITS.fullmatch(value):
            continue
        if name == "mode":  # read in base 8
            if _ASCII_OCTAL.fullmatch(value):
                continue
            base = 8
        else:
            base = 10
        try:
            int(value, base)
        except ValueError:
            continue  # not a number: not this check's business
        raise ValueError(
            f"bad endpoint {shortened(description)}: {shortened(value)} is not a number in plain ASCII digits (0-9)"
        )


_ASCII_DIGITS = re.compile(r"[0-9]+")
_ASCII_OCTAL = re.compile(r"(?:0[oO])?[0-7]+")


#: The arguments of Twisted's C{ssl:} server endpoint that name files it
#: reads as it parses the string.
_SSL_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")


def _checkSSLFiles(description: str) -> None:
    """
    Check the files an C{ssl:} endpoint string names before Twisted reads
    them: Twisted reads them whole with a plain C{open}, so a FIFO stalled
    the start and C{/dev/zero} filled the memory.  They must be regular
    files of at most L{MAX_PEM_FILE} bytes, as for C{--tls-cert}.

    @raise ValueError: with a readable message naming the argument and the
        file, when one is not such a file.
    """
    try:
        args, kw = _parse(description)  # as Twisted splits and unescapes it
        if args[0] != "ssl":
            return
        # Bound as Twisted binds them: positional arguments count too, and
        # privateKey has a default (server.pem), and certKey defaults to it.
        bound = inspect.signature(_parseSSL).bind(None, *args[1:], **kw)
    except Exception:
        return  # not an ssl: string Twisted takes; serverFromString says why
    bound.apply_defaults()
    checked: set[str] = set()
    for name in _SSL_FILES:
        path = bound.arguments.get(name)  # certKey=None: the privateKey file
        if not isinstance(path, str) or path in checked:
            continue
        checked.add(path)
        try:
            readSmallFile(path, MAX_PEM_FILE, follow=True)
        except OSError as e:
            reason = e.strerror or str(e)
        except ValueError as e:
            reason = str(e)
        else:
            continue
        raise ValueError(f"ssl endpoint {shortened(description)}: {name}={path!r} cannot be read: {reason}")


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def parseDatagramEndpoint(description: str) -> Tuple[int, str]:
    """
    Parse C{udp:PORT[:interface=ADDR]} (colons in ADDR escaped as C{\\:}).

    @return: the port and the interface ("" for every interface).
    @raise ValueError: with a readable message when it is not one.
    """
    parts = [p.replace("\\:", ":") for p in _UNESCAPED_COLON.split(description)]
    if parts[0] != "udp" or len(parts) < 2:
        raise ValueError(f"bad UDP endpoint {description!r}: expected udp:PORT[:interface=ADDR]")
    try:
        if not parts[1].isascii() or not parts[1].isdigit():
            raise ValueError()
        port = int(parts[1])
        if not 0 <= port <= 65535:
            raise ValueError()
    except ValueError:
        raise ValueError(f"bad UDP endpoint {description!r}: {parts[1]!r} is not a port number") from None
    for option in parts[2:]:
        key, sep, value = option.partition("=")
        if key != "interface" or not sep:
            raise ValueError(f"bad UDP endpoint {description!r}: unknown option {option!r}")
    # As for stream endpoints: an empty or repeated interface= listened on
    # every interface.
    _checkKeywords(description)
    interface = parts[2].partition("=")[2] if len(parts) > 2 else ""
    if interface:
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise ValueError(
                f"bad UDP endpoint {description!r}: interface {interface!r} is not an IP address"
            ) from None
    return port, interface


def _describe(address: object) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        kind = getattr(address, "type", "TCP").lower()
        if ":" in host:
            host = f"[{host}]"
        return f"{kind} {host}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        return f"unix {name!r}"
    return str(address)


class _Linger:
    """
    Ends a connection the server closed whose peer does not close its side:
    after C{timeout} seconds without a byte from the peer, or C{time}
    seconds in all, both counted from when the output was all handed to the
    system.  Its owner tells it of each read (L{received}), and stops it
    (L{cancel}) when the connection ends first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        transport: tcp.Connection,
        stats: ServiceStats,
        end: Any,
        time: float | None = None,
        timeout: float | None = None,
        allowance: int | None = None,
    ) -> None:
        """
        @param transport: the TCP transport, whose buffer is looked at.
        @param end: called (with no arguments) to close the connection.
        @param time: seconds in all; by default L{LINGER_TIME}.
        @param timeout: seconds without input; by default L{LINGER_TIMEOUT}.
        @param allowance: bytes the peer may send meanwhile (L{None}: any
            number); past them, L{received} says so.
        """
        self._clock = clock
        self._transport = transport
        self._stats = stats
        self._end = end
        self._time = LINGER_TIME if time is None else time
        self._timeout = LINGER_TIMEOUT if timeout is None else timeout
        self._left = allowance
        now = clock.seconds()
        self._lastInput = now
        self._handedAt: float | None = None if heldBytes(transport) else now
        self._call: IDelayedCall | None = clock.callLater(
            self._timeout if self._handedAt is not None else _LINGER_LOOK, self._check
        )

    def received(self, size: int = 0) -> bool:
        """
        The peer sent C{size} bytes.  Returns whether they take it past its
        allowance: its owner then stops lingering, and reading (see
        L{_Refusal}).
        """
        self._lastInput = self._clock.seconds()
        if self._left is None:
            return False
        self._left -= size
        return self._left < 0

    def cancel(self) -> None:
        """
        The connection ended: stop looking.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        now = self._clock.seconds()
        if self._handedAt is None:
            if heldBytes(self._transport):
                self._call = self._clock.callLater(_LINGER_LOOK, self._check)
                return
            self._handedAt = now
        quietEnd = max(self._handedAt, self._lastInput) + self._timeout
        lastEnd = self._handedAt + self._time
        if now < min(quietEnd, lastEnd):
            self._call = self._clock.callLater(min(quietEnd, lastEnd) - now, self._check)
            return
        if quietEnd <= lastEnd:
            self._stats.count("close_timeouts")
        else:
            self._stats.count("close_floods")
            peer = self._transport.getPeer()
            _log.info(
                "{service}: client {client} still sent {seconds:g} seconds after its connection closed: closed",
                service=self._stats.name,
                client=getattr(peer, "host", None) or "-",
                seconds=self._time,
            )
        self._end()


class _Refusal:
    """
    Closes a connection on a peer that proved hostile (a flood) without
    reading it any more: the output waiting is sent, then the end of output
    (TCP's FIN), and the connection ends C{grace} seconds after the close;
    aborted if output still waits then.  Nothing the peer still sends is
    read (the kernel's buffers fill, then TCP stops it): read and dropped by
    a lingering close (L{_Linger}), a flood cost a CPU until its end.  A
    peer that reads its answer gets it; one that resets may lose it.
    """

    def __init__(self, clock: IReactorTime, transport: tcp.Connection, grace: float) -> None:
        self._transport = transport
        transport.stopReading()
        # A paused producer would keep the transport from sending its FIN.
        transport.unregisterProducer()
        if not transport.disconnecting and not getattr(transport, "_writeDisconnecting", False):
            # (Once more, on a lingering close that sent its FIN, Twisted
            # wrote to the shut socket, and lost the connection at once.)
            transport.loseWriteConnection()
        self._call: IDelayedCall | None = clock.callLater(grace, self._end)

    def cancel(self) -> None:
        """
        The connection ended: stop the timer.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _end(self) -> None:
        self._call = None
        transport = self._transport
        if heldBytes(transport):
            transport.abortConnection()
        else:
            transport.loseConnection()  # (the system resets it if the peer's bytes wait unread)


class _Lingering:
    """
    A factory whose connections, once the service closes them, are read on
    for the peer's close (L{_Linger}) as long as its C{lingerTime} and
    C{lingerTimeout} let them (L{None}: L{LINGER_TIME}, L{LINGER_TIMEOUT}).
    """

    clock: Any
    stats: ServiceStats
    lingerTime: float | None = None
    lingerTimeout: float | None = None
    #: Bytes a peer may send once its connection is closing before nothing
    #: more is read (L{None}: any number, within the limits of time).
    lingerBytes: int | None = None

    def linger(self, transport: tcp.Connection, end: Any) -> _Linger:
        """
        Start the lingering close of C{transport} (see L{_Linger}).
        """
        return _Linger(self.clock, transport, self.stats, end, self.lingerTime, self.lingerTimeout, self.lingerBytes)

    def floodWhileClosing(self, transport: tcp.Connection) -> _Refusal:
        """
        The peer of C{transport}, closing, sent more than C{lingerBytes}:
        read nothing more, and end the connection shortly (L{_Refusal}).
        """
        self.stats.count("close_floods")
        return _Refusal(self.clock, transport, _FLOOD_GRACE)

    def closeLingering(self, transport: tcp.Connection) -> _Linger:
        """
        Close C{transport} with a lingering close: the end of output (TCP's
        FIN) once it is sent, then read on, whatever paused reading, until
        the peer closes or the limits end it.
        """
        linger = self.linger(transport, transport.loseConnection)
        transport.loseWriteConnection()
        transport.resumeProducing()
        return linger


@implementer(IPushProducer)
class _GuardedProducer:
    """
    A streaming producer registered through a L{_TrackedProtocol}: an error
    in its C{stopProducing}, which the transport calls as the connection
    ends (before C{connectionLost}), is logged instead of cutting that
    short (the connection then never stopped counting).
    """

    log = Logger()

    def __init__(self, producer: IPushProducer) -> None:
        self.producer = producer

    def pauseProducing(self) -> None:
        self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        try:
            self.producer.stopProducing()
        except Exception:
            self.log.failure("stopping {producer} failed", producer=self.producer)


@implementer(IHandshakeListener)
class _TrackedProtocol(ProtocolWrapper):
    """
    Counts one connection's bytes into its service's stats; over TLS,
    aborts the connection if its handshake is not done in the factory's
    C{handshakeTimeout} (counted as C{tls_handshake_timeouts}).

    A protocol that fails cannot keep its connection counted (and
    L{TrackingFactory.closeAll} waiting) after the connection is gone: once
    its C{dataReceived} raised it gets no more data (TLS hands it what it
    still holds as the connection ends, and a second error there skipped
    the rest of the close), its producer's C{stopProducing} cannot raise
    (L{_GuardedProducer}), and the connection is unregistered even if its
    C{connectionLost} raises.

    Over plain TCP, a service's close sends everything, then the end of
    output (FIN), and the connection ends once the peer closes too, reading
    on and dropping what it sends meanwhile (see L{LINGER_TIME}); over TLS
    the L{_PeerReadGate} does the same.  A service that closes for the
    peer's error or flood closes without reading on instead
    (L{closeWithoutReading}).
    """

    factory: "TrackingFactory"
    host: str | None = None
    _failed = False
    _handshakeTimer: IDelayedCall | None = None
    _linger: _Linger | None = None
    _refusal: _Refusal | None = None
    #: The peer ended its input (a TCP half-close).
    _inputEnded = False
    #: The connection was answered below TLS (a plain HTTP request on a
    #: TLS port): its end is not an error, whatever TLS says of it.
    answered = False

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        if factory.handshakeTimeout is not None and isinstance(transport, TLSMemoryBIOProtocol):
            self._handshakeTimer = factory.clock.callLater(factory.handshakeTimeout, self._handshakeTimedOut)
        ProtocolWrapper.makeConnection(self, transport)

    def _handshakeTimedOut(self) -> None:
        self._handshakeTimer = None
        self.factory.stats.count("tls_handshake_timeouts")
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        if self._handshakeTimer is not None:
            self._handshakeTimer.cancel()
            self._handshakeTimer = None
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def write(self, data: bytes) -> None:
        self.factory.stats.bytesOut += len(data)
        self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        self.factory.stats.bytesOut += sum(map(len, data))
        self.transport.writeSequence(data)

    def dataReceived(self, data: bytes) -> None:
        self.factory.stats.bytesIn += len(data)
        if self._linger is not None:
            if self._linger.received(len(data)):
                self._linger.cancel()
                self._linger = None
                self._refusal = self.factory.floodWhileClosing(self.transport)
            return
        # Refused, the socket may still be read once: epoll and poll read
        # it in the pass that another connection's input closed it in.
        if self._failed or self._refusal is not None:
            return
        try:
            self.wrappedProtocol.dataReceived(data)
        except BaseException:
            self._failed = True
            raise

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if streaming:
            producer = _GuardedProducer(producer)
        self.transport.registerProducer(producer, streaming)

    def loseConnection(self) -> None:
        if self._linger is not None or self._refusal is not None:
            return
        transport = self.transport
        if (
            self.disconnecting
            or self._inputEnded
            or self.factory.stopping
            or not isinstance(transport, tcp.Connection)
            or transport.disconnecting
            or not transport.connected
        ):
            ProtocolWrapper.loseConnection(self)
            return
        self.disconnecting = 1
        self._linger = self.factory.closeLingering(transport)

    def closeWithoutReading(self, grace: float) -> None:
        """
        Close the connection on a client that proved hostile (a flood):
        what was written is sent, then the end of output (over TLS, a
        close_notify first), but nothing more is read, so that what the
        client still sends costs nothing; the connection ends C{grace}
        seconds later (see L{_Refusal}).  L{loseConnection}'s lingering
        close read and dropped a flood at full speed until its limits.
        """
        if self.disconnecting or self._linger is not None:
            return
        if self._inputEnded or self.factory.stopping:
            ProtocolWrapper.loseConnection(self)  # nothing to read, or no time
            return
        self.disconnecting = 1
        transport = self.transport
        gate = getattr(transport, "transport", None)
        if isinstance(transport, tcp.Connection) and transport.connected and not transport.disconnecting:
            self._refusal = _Refusal(self.factory.clock, transport, grace)
        elif isinstance(transport, TLSMemoryBIOProtocol) and isinstance(gate, _PeerReadGate):
            gate.closeWithoutReading(grace)
        else:
            ProtocolWrapper.loseConnection(self)

    def pauseProducing(self) -> None:
        if self._linger is None:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._refusal is None:
            self.transport.resumeProducing()

    def _countEnd(self, reason: Failure) -> None:
        """
        Count the connection among C{errors} if something went wrong on it:
        a TLS error, an abort by a limit or a timeout.  The peer going away
        is not an error, however it does: a TCP reset (curl's after an
        HTTP/2 exchange, a browser leaving a download) or, over TLS, the end
        of TCP without a close_notify, which Twisted reports alike.  (Over
        TLS, which stops reading while output waits, the reset that follows
        a client's close in the middle of an answer comes before its end of
        input, which plain TCP reads first.)
        """
        if not (reason.check(error.ConnectionDone) or self.answered or type(reason.value) is error.ConnectionLost):
            self.factory.stats.errors += 1

    def connectionLost(self, reason: Failure) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self._refusal is not None:
            self._refusal.cancel()
        if self._handshakeTimer is not None:
            self._handshakeTimer.cancel()
            self._handshakeTimer = None
        self._countEnd(reason)
        try:
            self.wrappedProtocol.connectionLost(reason)
        finally:
            self.factory.unregisterProtocol(self)
            self.wrappedProtocol = None


@implementer(IHalfCloseableProtocol)
class _TrackedHalfCloseableProtocol(_TrackedProtocol):
    """
    A L{_TrackedProtocol} for a protocol that handles half-close.
    """

    def readConnectionLost(self) -> None:
        if self._linger is not None:
            self.transport.loseConnection()  # both sides are done
            return
        self._inputEnded = True
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        if self._linger is None:  # else the end of output sent on close
            self.wrappedProtocol.writeConnectionLost()


@implementer(IPushProducer)
class _OutputSignal:
    """
    Registered with the socket's transport by a L{_PeerReadGate}: hears when
    the output waiting for the peer goes over the transport's buffer size
    (paused) and when it is all sent (resumed).
    """

    def __init__(self, gate: "_PeerReadGate") -> None:
        self.gate = gate

    def pauseProducing(self) -> None:
        self.gate._outputWaits(True)

    def resumeProducing(self) -> None:
        self.gate._outputWaits(False)

    def stopProducing(self) -> None:
        self.gate._stopProducer()


class _PeerReadGate(ProtocolWrapper):
    """
    Stands between a socket and TLS: stops reading from the peer while more
    output than the socket transport's buffer size waits for it, and reads
    again once that output is sent.  What the peer sent meanwhile is read
    before the service is resumed (see L{_outputWaits}).

    TLS answers some records by itself, without the service writing (a TLS
    1.3 KeyUpdate that asks for one back), so a peer that sent them and
    never read made the server hold every answer; a service's own flow
    control never saw that output.  The transport takes one producer, so
    the one TLS registers (the service's) is kept here and paused and
    resumed with the output as before.

    For a service that speaks HTTP it also answers a plain HTTP request
    (see L{_PeerReadGateFactory.plainHTTPAnswer}).
    """

    factory: "_PeerReadGateFactory"
    _outputFull = False
    _pausedAbove = False
    _producer: IPushProducer | None = None
    _started = False
    _refused = False
    _readingToClose = False
    _linger: _Linger | None = None
    #: The service closed on a hostile peer: nothing more is read, whatever
    #: asks for reading after (L{_read}, L{readToClose}).
    _refusing = False
    _refusal: _Refusal | None = None
    #: The output was sent while the peer's input waited: the service is
    #: resumed once that is read (L{_outputWaits}).
    _resumeAfterRead = False

    def makeConnection(self, transport: Any) -> None:
        transport.registerProducer(_OutputSignal(self), True)
        ProtocolWrapper.makeConnection(self, transport)

    def dataReceived(self, data: bytes) -> None:
        self._receive(data)
        self._releaseProducer()

    def _receive(self, data: bytes) -> None:
        if self._linger is not None and self._linger.received(len(data)):
            self._linger.cancel()
            self._linger = None
            self._refusing = True
            self._refusal = self.factory.floodWhileClosing(self.transport)
            return
        # (Once refusing, nothing is read: see _read and readToClose.)
        if self._refused or getattr(self.wrappedProtocol, "peerClosed", False):
            # Nothing may follow a close_notify; TLS would keep it unread.
            return
        if not self._started and data:
            self._started = True
            # A TLS connection begins with a handshake record (0x16); a
            # letter there is a plain HTTP request line.
            if self.factory.plainHTTPAnswer is not None and data[:1].isalpha():
                self._refused = True
                self.factory.stats.count("plain_http_refused")
                tracked = getattr(self.wrappedProtocol, "wrappedProtocol", None)
                if isinstance(tracked, _TrackedProtocol):
                    tracked.answered = True  # TLS will call its end an error
                self.transport.write(self.factory.plainHTTPAnswer)
                self._closeLingering()
                return
        ProtocolWrapper.dataReceived(self, data)

    def _closeLingering(self) -> None:
        """
        Close after a plain HTTP answer as the web server closes after a
        4xx: the end of output (TCP's FIN), then read on, dropping what
        comes, until the client closes or the factory's lingering limits
        end it (L{_Linger}).  Closed at once, the request body still
        coming made the system reset the connection, and the client lost
        the answer.
        """
        transport = self.transport
        # A transport with a producer registered holds the close until it
        # is unregistered.
        transport.unregisterProducer()
        if isinstance(transport, tcp.Connection) and transport.connected:
            self._linger = self.factory.closeLingering(transport)
        else:
            transport.loseConnection()

    def _outputWaits(self, full: bool) -> None:
        """
        Stop reading while the output waits (C{full}), and read again once
        it is sent.  Then, if the peer's input waits, the service is resumed
        only once the reactor has read it: resumed at once, it filled the
        transport again (an HTTP/2 connection's file, in its next reactor
        turn, which comes before the reactor looks at the sockets), which
        stopped reading before anything was read.  An HTTP/2 client
        downloading with a large window had its PING answered, and its
        RST_STREAM acted on, only once the whole answer was sent.
        """
        self._outputFull = full
        self._resumeAfterRead = False
        self._read()
        if self._producer is None:
            return
        if full:
            self._producer.pauseProducing()
        elif self._reading() and self._inputWaits():
            self._resumeAfterRead = True  # see _releaseProducer
        else:
            self._producer.resumeProducing()

    def _readPaused(self) -> bool:
        """
        Whether the gate keeps the socket from being read: output waits
        for the peer, a layer above paused, or the peer proved hostile.
        """
        return self._outputFull or self._pausedAbove or self._refusing

    def _reading(self) -> bool:
        """
        Whether the socket is being read (its transport read on).
        """
        transport = self.transport
        return (
            not self._readPaused()
            and isinstance(transport, tcp.Connection)
            and transport.connected
            and not transport.disconnecting
        )

    def _inputWaits(self) -> bool:
        """
        Whether the peer sent data (not its end) that the socket holds
        unread.
        """
        try:
            return bool(self.transport.socket.recv(1, socket.MSG_PEEK))
        except OSError:  # nothing (EAGAIN), or an error the reactor's read takes
            return False

    def _releaseProducer(self) -> None:
        """
        Resume the service held until the peer's input was read (in
        L{dataReceived}), or until reading stopped again (L{_read}).
        """
        if self._resumeAfterRead:
            self._resumeAfterRead = False
            if self._producer is not None and not self._outputFull:
                self._producer.resumeProducing()

    def _stopProducer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()

    def _read(self) -> None:
        if self._readPaused():
            self.transport.pauseProducing()
            self._releaseProducer()  # nothing will be read for it now
        else:
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        if self._readingToClose:
            return
        self._pausedAbove = True
        self._read()

    def readToClose(self) -> None:
        """
        The service closed the connection: read on, whatever paused
        reading above or will (output waiting for the peer still does),
        until the peer's close_notify or the end of its TCP input, or as
        long as the factory's lingering limits let it (L{_Linger}).
        """
        if self._refusing:
            return
        self._readingToClose = True
        self._pausedAbove = False
        self._read()
        transport = self.transport
        if self._linger is None and isinstance(transport, tcp.Connection) and transport.connected:
            self._linger = self.factory.linger(transport, self.loseConnection)

    def resumeProducing(self) -> None:
        self._pausedAbove = False
        self._read()

    def closeWithoutReading(self, grace: float) -> None:
        """
        Close the connection on a client that proved hostile: TLS's
        close_notify after what waits, then the end of TCP output, and
        nothing more read (see L{_TrackedProtocol.closeWithoutReading}).
        """
        transport = self.transport
        if not isinstance(transport, tcp.Connection) or not transport.connected or transport.disconnecting:
            self.wrappedProtocol.loseConnection()
            return
        self._refusing = True
        transport.stopReading()
        self._releaseProducer()
        self.wrappedProtocol.loseConnection()  # the close_notify, written at once after the handshake
        if transport.connected and not transport.disconnecting:
            self._refusal = _Refusal(self.factory.clock, transport, grace)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"cannot register {producer!r}: {self._producer!r} is registered")
        if not streaming:
            raise ValueError("only streaming producers (TLS registers only those)")
        if getattr(self.transport, "disconnected", False):
            producer.stopProducing()
            return
        self._producer = producer
        if self._outputFull:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._resumeAfterRead = False

    def loseConnection(self) -> None:
        # A transport with a producer registered holds the close until it
        # is unregistered.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self._refusal is not None:
            self._refusal.cancel()
        self._stopProducer()
        ProtocolWrapper.connectionLost(self, reason)

    # Provided only once the peer's close_notify came (see
    # _HalfClosingTLSProtocol): its end of TCP input then changes nothing,
    # and the answers still go out.  Before that it is the end of the
    # connection, as Twisted's TLS takes it.

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass


class _CloseNotifyAsEndOfInput:
    """
    Stands for a TLS protocol's pyOpenSSL connection and passes everything
    through but C{recv}:

      - once the service closed the connection, what the peer still sends
        is dropped while TLS reads on for its close_notify (over TCP,
        nothing more is read after a close);
      - for a service that handles half-close (C{halfClose}), the peer's
        close_notify, which Twisted takes as the end of the whole
        connection, becomes the end of the peer's input only: the
        service's C{readConnectionLost}, while what it still writes goes
        out, and its own close sends netsuite's close_notify.  One that
        answers netsuite's close_notify ends the connection.
    """

    def __init__(self, connection: Any, tls: "_HalfClosingTLSProtocol", halfClose: bool = True) -> None:
        self._connection = connection
        self._tls = tls
        self._halfClose = halfClose

    def recv(self, size: int) -> bytes:
        if self._tls.peerClosed:
            raise WantReadError()
        while True:
            try:
                data: bytes = self._connection.recv(size)
            except ZeroReturnError:
                if not self._halfClose or self._connection.get_shutdown() & SENT_SHUTDOWN:
                    # The answer to netsuite's own close_notify (kept as
                    # the end of input, the connection stayed open): TLS
                    # ends the connection.
                    raise
                self._tls.peerClosed = True
                self._tls._handOn()  # what came before the close_notify
                gate = self._tls.transport
                if isinstance(gate, _PeerReadGate):
                    alsoProvides(gate, IHalfCloseableProtocol)
                self._tls.wrappedProtocol.readConnectionLost()
                raise WantReadError() from None
            if not self._tls.disconnecting:
                return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


#: OpenSSL's name for the state it is in as it reads a client's KeyUpdate.
_READ_KEY_UPDATE = b"TLSv1.3 read client key update"


def _watchHandshakes(connection: Connection, where: int, result: int) -> None:
    """
    OpenSSL's info callback for a L{_HalfClosingTLSProtocol}'s connection:
    counts the handshakes the client starts after the first (TLS 1.2
    renegotiations) and the KeyUpdates it sends.  It runs inside OpenSSL,
    so it only counts; the protocol acts once OpenSSL is done.
    """
    if where & SSL_CB_HANDSHAKE_START:
        tls = connection.get_app_data()
        if isinstance(tls, _HalfClosingTLSProtocol) and tls._handshakeDone:
            tls.renegotiations += 1
    elif where & SSL_CB_LOOP and connection.get_state_string() == _READ_KEY_UPDATE:
        tls = connection.get_app_data()
        if isinstance(tls, _HalfClosingTLSProtocol):
            tls.keyUpdates += 1


class _HalfClosingTLSProtocol(GatheringTLSProtocol):
    """
    TLS that gives a service which handles half-close the peer's
    close_notify as the end of its input (TLS 1.3's half-close, RFC 8446
    6.1), not as the end of the connection; and that, once the service
    closes, reads on (dropping what comes) until the peer's close_notify or
    the end of its TCP input ends the connection, whatever had stopped
    reading.

    It aborts a connection whose client sends more than
    L{HANDSHAKE_BYTES} before its handshake is done, and one whose client
    sends what OpenSSL answers by itself, which the service never sees,
    beyond need: more TLS 1.3
    KeyUpdates than L{KEY_UPDATES_FREE} and one per L{KEY_UPDATE_BYTES} it
    sent (BoringSSL takes 32 in a row), or a TLS 1.2 renegotiation, which
    is refused anyway (nginx closes too).  OpenSSL takes any number of
    either, and a flood kept a CPU busy until a timeout.  OpenSSL gets
    L{RECORDS_PER_FEED} records at a time, so that a read full of them
    ends after a few dozen, not thousands.

    The plaintext of all the records OpenSSL reads from one feed goes to
    the service in one C{dataReceived} (L{GatheringTLSProtocol}), so that
    a client sending one byte a record costs the service one call, and an
    echo one TLS record, for many records.

    Over TLS 1.3, L{loseWriteConnection} ends netsuite's output only: its
    close_notify goes, and what the peer still sends is read and handed on
    (a proxy tunnel whose origin ended its output, as over TCP).

    @ivar peerClosed: the peer's close_notify came.
    @ivar writeShut: netsuite's close_notify went as the end of its output
        only (L{loseWriteConnection}).
    @ivar keyUpdates: KeyUpdates the client sent.
    @ivar renegotiations: handshakes the client started after the first.
    """

    peerClosed = False
    writeShut = False
    keyUpdates = 0
    renegotiations = 0
    _received = 0
    #: Bytes of the record being received still to come after this read.
    _recordLeft = 0
    #: The first bytes of a record header cut by the end of the last read.
    _headerStart = b""

    def makeConnection(self, transport: Any) -> None:
        TLSMemoryBIOProtocol.makeConnection(self, transport)
        if self._tlsConnection is not None:
            # Twisted made the protocol the connection's app data.
            self._tlsConnection.set_info_callback(_watchHandshakes)
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol) and self._tlsConnection is not None:
            self._tlsConnection = _CloseNotifyAsEndOfInput(self._tlsConnection, self)

    def dataReceived(self, data: bytes) -> None:
        for piece in self._pieces(data):
            self._received += len(piece)
            TLSMemoryBIOProtocol.dataReceived(self, piece)
            if self._aborted or self._lostTLSConnection:
                return
            if not self._handshakeDone and self._received > HANDSHAKE_BYTES:
                self._abortFor(
                    "tls_handshakes_too_large", f"sent {self._received} bytes before its TLS handshake ended"
                )
                return
            if self.renegotiations:
                self._abortFor("tls_renegotiations", "started a TLS renegotiation")
                return
            if self.keyUpdates > KEY_UPDATES_FREE + self._received // KEY_UPDATE_BYTES:
                self._abortFor(
                    "tls_key_update_floods", f"sent {self.keyUpdates} TLS KeyUpdates in {self._received} bytes"
                )
                return

    def _pieces(self, data: bytes) -> Iterable[bytes]:
        """
        C{data} cut where a record begins, into pieces in which at most
        L{RECORDS_PER_FEED} records begin (the whole of it, most often).
        """
        view = self._headerStart + data if self._headerStart else data
        offset = len(view) - len(data)  # where data begins in view
        position = 0 if self._headerStart else self._recordLeft
        cut, begun, end = offset, 0, len(view)
        while position + 5 <= end:
            if begun == RECORDS_PER_FEED:
                yield view[cut:position]
                cut, begun = position, 0
            begun += 1
            position += 5 + (view[position + 3] << 8 | view[position + 4])
        if position >= end:
            self._recordLeft, self._headerStart = position - end, b""
        else:
            self._recordLeft, self._headerStart = 0, view[position:]
        yield data if cut == offset else view[cut:]

    def _abortFor(self, counter: str, what: str) -> None:
        stats = getattr(self.factory.wrappedFactory, "stats", None)
        if isinstance(stats, ServiceStats):
            stats.count(counter)
        peer = self.transport.getPeer()
        _log.info(
            "{service}: client {client} {what}: aborted",
            service=stats.name if isinstance(stats, ServiceStats) else "-",
            client=getattr(peer, "host", None) or "-",
            what=what,
        )
        self.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        if (
            not self._lostTLSConnection
            and self._reason is None
            and reason.check(error.ConnectionDone)
            and self._tlsConnection is not None
            and self._tlsConnection.get_shutdown() & SENT_SHUTDOWN
        ):
            # netsuite closed (its close_notify is sent) and TCP ended
            # cleanly: the peer need not answer with its own close_notify
            # (RFC 8446 6.1), and Twisted took its absence as an error.
            self._lostTLSConnection = True
        TLSMemoryBIOProtocol.connectionLost(self, reason)

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        if reason is not None and reason.check(ZeroReturnError):
            # The client's close_notify before its handshake ended (aria2c
            # sends one for each connection it no longer needs): a clean
            # close, as after the handshake.  Twisted read the error's first
            # argument, which pyOpenSSL's ZeroReturnError has not, and the
            # IndexError went up to the reactor: a traceback in the log.
            reason = None
        TLSMemoryBIOProtocol._tlsShutdownFinished(self, reason)

    def canShutWriting(self) -> bool:
        """
        Whether L{loseWriteConnection} would end only this side's output:
        TLS 1.3 (RFC 8446 6.1; TLS 1.2 has the peer answer a close_notify
        with its own at once, dropping what it had to send), the handshake
        done, a service that handles half-close, and nothing waiting to be
        encrypted.
        """
        connection = self._tlsConnection
        return (
            self._handshakeDone
            and not self.disconnecting
            and not self._appSendBuffer
            and isinstance(connection, _CloseNotifyAsEndOfInput)
            and connection._halfClose
            and connection.get_protocol_version_name() == "TLSv1.3"
        )

    def loseWriteConnection(self) -> None:
        """
        End this side's output with a close_notify, and go on reading what
        the peer sends, until its own close_notify ends the connection.
        Where that cannot be (see L{canShutWriting}), the connection is
        closed as by L{loseConnection}.  (Without this, Twisted's TLS passed
        the call on to the TCP connection underneath: a FIN in the middle
        of the TLS stream.)
        """
        if self.writeShut or self.disconnecting:
            return
        if not self.canShutWriting():
            self.loseConnection()
            return
        self.writeShut = True
        try:
            self._tlsConnection.shutdown()  # False: the peer's is still to come
        except SSLError:
            self.loseConnection()
            return
        self._flushSendBIO()

    def write(self, data: bytes) -> None:
        if not self.writeShut:  # nothing may follow a close_notify
            TLSMemoryBIOProtocol.write(self, data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        if not self.writeShut:
            TLSMemoryBIOProtocol.writeSequence(self, data)

    def loseConnection(self) -> None:
        if self._tlsConnection is not None and not isinstance(self._tlsConnection, _CloseNotifyAsEndOfInput):
            # Only now: every TLS call of the connection goes through it.
            self._tlsConnection = _CloseNotifyAsEndOfInput(self._tlsConnection, self, halfClose=False)
        TLSMemoryBIOProtocol.loseConnection(self)
        gate = self.transport
        if isinstance(gate, _PeerReadGate):
            # An HTTP channel stops reading while it answers; without the
            # peer's close_notify, the connection stayed until a timeout.
            gate.readToClose()


class _HalfClosingTLSFactory(TLSMemoryBIOFactory):
    """
    A server-side L{TLSMemoryBIOFactory} of L{_HalfClosingTLSProtocol}s.
    """

    protocol = _HalfClosingTLSProtocol


_PLAIN_HTTP_BODY = b"This port speaks TLS, but the request came as plain HTTP: use https:// to reach it.\n"

#: What a plain HTTP request sent to an HTTP service's TLS port gets.
PLAIN_HTTP_ON_TLS = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n" % len(_PLAIN_HTTP_BODY)
) + _PLAIN_HTTP_BODY


class _PeerReadGateFactory(_Lingering, WrappingFactory):
    """
    Puts a L{_PeerReadGate} under each connection of a TLS factory.

    @ivar plainHTTPAnswer: sent (then the connection closed) to a client
        whose first byte is a letter, not a TLS record: a plain HTTP request
        to an HTTP service's TLS port.  L{None}: TLS fails as it does.
    @ivar clock: times the lingering close (by default the reactor).
    """

    protocol = _PeerReadGate
    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        stats: ServiceStats,
        plainHTTPAnswer: bytes | None = None,
        clock: IReactorTime | None = None,
        lingerTime: float | None = None,
        lingerTimeout: float | None = None,
    ) -> None:
        WrappingFactory.__init__(self, wrappedFactory)
        self.stats = stats
        self.plainHTTPAnswer = plainHTTPAnswer
        self.clock: Any = clock if clock is not None else _reactor(None)
        self.lingerTime = lingerTime
        self.lingerTimeout = lingerTimeout

    def logPrefix(self) -> str:
        return self.wrappedFactory.logPrefix()  # type: ignore[attr-defined,no-any-return]

    def buildProtocol(self, addr: object) -> Optional[Protocol]:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


class _Refused(Protocol):
    """
    A connection over a limit: closed at once, before any TLS handshake.
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()


def plainSocketTransport(transport: object) -> Tuple[tcp.Connection | None, ServiceStats | None]:
    """
    The Twisted TCP transport under C{transport} when bytes written to it go
    to the socket as they are: C{transport} itself, or the one under
    netsuite's tracking wrapper (whose stats are returned too, for code that
    writes past the wrapper).  For TLS, UNIX sockets, HTTP/2 or anything
    else: C{(None, None)}.

    Code that writes to the socket directly must send only when nothing is
    queued in the transport (C{dataBuffer}, C{offset}, C{_tempDataLen}).
    """
    stats = None
    if type(transport) in (_TrackedProtocol, _TrackedHalfCloseableProtocol):
        stats = transport.factory.stats  # type: ignore[attr-defined]
        transport = transport.transport  # type: ignore[attr-defined]
    if type(transport) in (tcp.Server, tcp.Client) and all(
        hasattr(transport, name)
        for name in ("socket", "dataBuffer", "offset", "_tempDataLen", "disconnecting", "bufferSize")
    ):
        return transport, stats
    return None, None


def _tcpSocket(transport: object) -> socket.socket | None:
    """
    The socket of the TCP connection under C{transport} (under TLS and
    netsuite's wrappers too), if it is one.
    """
    descriptor = descriptorOf(transport)
    return descriptor.socket if isinstance(descriptor, tcp.Connection) else None


def limitSendBuffer(transport: object, size: int) -> bool:
    """
    Have the system hold at most about C{size} bytes (Linux: twice that)
    sent on the TCP connection under C{transport} and not yet taken by the
    peer, where it would grow to C{net.ipv4.tcp_wmem}'s largest (4 MiB) for
    a peer that does not read, memory no limit of the service counts.

    @return: whether the connection is a TCP one whose buffer was set.
    """
    return _setBuffer(transport, socket.SO_SNDBUF, size)


def limitReceiveBuffer(transport: object, size: int) -> bool:
    """
    Have the system hold at most about C{size} bytes (Linux: twice that)
    received on the TCP connection under C{transport} and not yet read by
    the service, where, left to tune itself, it grows to
    C{net.ipv4.tcp_rmem}'s largest (6 MiB by default) while the service has stopped
    reading (a peer that sends on and does not read its echo).

    @return: whether the connection is a TCP one whose buffer was set.
    """
    return _setBuffer(transport, socket.SO_RCVBUF, size)


def _setBuffer(transport: object, option: int, size: int) -> bool:
    """
    Set the socket C{option} (a buffer size) of the TCP connection under
    C{transport} to C{size}; whether it was.
    """
    sock = _tcpSocket(transport)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except OSError:
        return False
    return True


def keepAlive(transport: object, idle: int, interval: int, count: int) -> bool:
    """
    Have TCP ask whether the peer of the connection under C{transport}
    (under TLS and netsuite's wrappers too) is still there once it has been
    silent both ways for C{idle} seconds, then every C{interval} seconds,
    and drop the connection after C{count} asks unanswered (where the
    system lets these be set; elsewhere its own defaults).  TCP asks
    nothing while what was sent waits to be acknowledged: the connection
    is dropped then once that has waited as long (C{TCP_USER_TIMEOUT}; the
    system's own retries took 15 minutes), as for a peer that stopped
    reading for that long.

    @return: whether the connection is a TCP one, whose keepalive is on.
    """
    sock = _tcpSocket(transport)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", interval),
            ("TCP_KEEPCNT", count),
            ("TCP_USER_TIMEOUT", (idle + interval * count) * 1000),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        return False
    return True


def sendOrQueue(raw: tcp.Connection, stats: ServiceStats | None, data: bytes) -> None:
    """
    Send C{data} on C{raw}'s socket now when nothing is queued in the
    transport (one C{send}, no poller work), else (and whatever the socket
    did not take) through the transport's buffer, which keeps the order and
    tells its producer to pause when full.

    @param raw: a transport from L{plainSocketTransport}.
    @param stats: the stats L{plainSocketTransport} gave with it, which this
        counts C{data} into (writing past the tracking wrapper).
    """
    if stats is not None:
        stats.bytesOut += len(data)
    if (
        not raw._tempDataLen
        and raw.offset == len(raw.dataBuffer)
        and not raw.disconnecting
        and raw.connected
    ):
        try:
            sent = raw.socket.send(data)
        except OSError:
            sent = 0  # the transport finds out, and reports it
        if sent == len(data):
            return
        data = data[sent:]
    raw.write(data)


class FlushBatch:
    """
    Connections with output waiting, sent together at the end of the
    reactor's pass: each gets its C{flushOutput()} called once, after all
    the input of this pass was handled.

    Sending each answer the moment it is made wakes the peer (and, on
    loopback, its CPU) once per answer; sending them in one burst lets the
    kernel and the peer batch.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._waiting: list[Any] = []
        self._call: Any = None

    def add(self, connection: Any) -> None:
        """
        Have C{connection.flushOutput()} called at the end of this pass.
        """
        self._waiting.append(connection)
        if self._call is None:
            self._call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        waiting, self._waiting = self._waiting, []
        for connection in waiting:
            connection.flushOutput()


class ConnectionBudget:
    """
    Connection limits shared by several listeners (all of a process's):
    how many connections they hold together, and how many from one
    address (an IPv6 client by its /64, see L{hostKey}).  nginx's
    C{worker_connections} is such a limit: without it, limits per listener
    add up past the process's open files.

    @ivar maxTotal: connections open at once in all; L{None}: no limit.
    @ivar maxPerHost: connections open at once from one address in all.
    @ivar total: connections open now, each counted with its weight.
    """

    def __init__(self, maxTotal: int | None = None, maxPerHost: int | None = None) -> None:
        self.maxTotal = maxTotal
        self.maxPerHost = maxPerHost
        self.total = 0
        self._perHost: Dict[str, int] = {}

    def full(self, host: str | None, weight: int = 1) -> bool:
        """
        Whether one more connection (from C{host}, holding C{weight} open
        files) is over a limit.
        """
        if self.maxTotal is not None and self.total + weight > self.maxTotal:
            return True
        return self.maxPerHost is not None and host is not None and self._perHost.get(host, 0) >= self.maxPerHost

    def opened(self, host: str | None, weight: int = 1) -> None:
        """
        Count a connection from C{host}.
        """
        self.total += weight
        if host is not None:
            self._perHost[host] = self._perHost.get(host, 0) + 1

    def closed(self, host: str | None, weight: int = 1) -> None:
        """
        Count a connection from C{host} as gone.
        """
        self.total -= weight
        if host is not None:
            left = self._perHost[host] - 1
            if left:
                self._perHost[host] = left
            else:
                del self._perHost[host]

    def fromHost(self, host: str) -> int:
        """
        Connections open now from C{host} (as L{hostKey} gives it).
        """
        return self._perHost.get(host, 0)


class TrackingFactory(_Lingering, WrappingFactory):
    """
    Wraps a service's factory: counts its connections and bytes into
    C{stats}, refuses connections over its limits, and can close them all
    (L{closeAll}).
    """

    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        stats: ServiceStats,
        maxConnections: int | None = None,
        maxPerHost: int | None = None,
        handshakeTimeout: float | None = None,
        clock: IReactorTime | None = None,
        lingerTime: float | None = None,
        lingerTimeout: float | None = None,
        budget: ConnectionBudget | None = None,
        weight: int = 1,
    ) -> None:
        """
        @param maxConnections: connections open at once; more are closed at
            once and counted as C{refused_connections}.
        @param maxPerHost: connections open at once from one address.
        @param budget: limits shared with other listeners, checked too.
        @param weight: what one connection counts in C{budget} (the open
            files it may hold: 2 for a proxy's, with its origin's).
        @param handshakeTimeout: seconds a connection over TLS (under this
            factory) gets to finish its handshake; L{None}: no limit.
        @param clock: times C{handshakeTimeout} and the lingering close (by
            default the reactor).
        @param lingerTime: seconds in all a closed connection is read on
            for the peer's close; by default L{LINGER_TIME}.
        @param lingerTimeout: seconds without input from the peer after
            which such a connection ends; by default L{LINGER_TIMEOUT}.
        """
        WrappingFactory.__init__(self, wrappedFactory)
        self.handshakeTimeout = handshakeTimeout
        self.lingerTime = lingerTime
        self.lingerTimeout = lingerTimeout
        self.clock: Any = clock if clock is not None else _reactor(None)
        if IProtocolNegotiationFactory.providedBy(wrappedFactory):
            # TLS asks the factory under it which protocols to offer by
            # ALPN (an ssl: endpoint; --tls options name them themselves).
            alsoProvides(self, IProtocolNegotiationFactory)
        self.stats = stats
        #: This listener's own limits, counted as a budget of its own.
        self._own = ConnectionBudget(maxConnections, maxPerHost)
        self.budget = budget
        self.weight = weight
        self._whenEmpty: list[defer.Deferred[None]] = []
        #: L{closeAll} was called: connections close without lingering.
        self.stopping = False

    @property
    def maxConnections(self) -> int | None:
        return self._own.maxTotal

    @property
    def maxPerHost(self) -> int | None:
        return self._own.maxPerHost

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocols of the wrapped factory (see
        L{IProtocolNegotiationFactory}), when it has any.
        """
        return list(self.wrappedFactory.acceptableProtocols())  # type: ignore[attr-defined]

    def buildProtocol(self, addr: object) -> Optional[Protocol]:
        host = getattr(addr, "host", None)
        if host is not None:
            host = hostKey(host)
        if self._own.full(host) or (self.budget is not None and self.budget.full(host, self.weight)):
            self.stats.count("refused_connections")
            return _Refused()
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        if IHalfCloseableProtocol.providedBy(wrapped):
            tracked: _TrackedProtocol = _TrackedHalfCloseableProtocol(self, wrapped)
        else:
            tracked = _TrackedProtocol(self, wrapped)
        tracked.host = host
        return tracked

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        WrappingFactory.registerProtocol(self, p)
        self.stats.connectionsOpen += 1
        self.stats.connectionsTotal += 1
        host = p.host  # type: ignore[attr-defined]
        self._own.opened(host)
        if self.budget is not None:
            self.budget.opened(host, self.weight)

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        WrappingFactory.unregisterProtocol(self, p)
        self.stats.connectionsOpen -= 1
        host = p.host  # type: ignore[attr-defined]
        self._own.closed(host)
        if self.budget is not None:
            self.budget.closed(host, self.weight)
        if not self.protocols:
            waiting, self._whenEmpty = self._whenEmpty, []
            for d in waiting:
                d.callback(None)

    def abortAll(self) -> int:
        """
        Abort every connection still open, at once.

        @return: how many there were.
        """
        protocols = list(self.protocols)
        for p in protocols:
            p.transport.abortConnection()
        return len(protocols)

    def closeAll(self, clock: IReactorTime, grace: float) -> defer.Deferred[None]:
        """
        Ask every open connection to close, and abort those still open after
        C{grace} seconds.

        A wrapped protocol with a C{closeGracefully()} method is asked through
        it (for example to unregister its producer first); others get
        C{loseConnection()}.

        @return: fires when no connection is left.
        """
        self.stopping = True
        if not self.protocols:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        self._whenEmpty.append(done)
        for p in list(self.protocols):
            closer = getattr(p.wrappedProtocol, "closeGracefully", None)
            if closer is not None:
                closer()
            else:
                p.loseConnection()

        timer = clock.callLater(grace, self.abortAll)

        def stopTimer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(stopTimer)


def _ownTLS(reactor: Any, endpoint: Any) -> tuple[Any, Any]:
    """
    An C{ssl:} endpoint as a TCP endpoint and its TLS options, so that its
    connections get netsuite's TLS layers (the read gate, the deadline,
    close_notify as the end of input, the 400 to plain HTTP); any other
    endpoint as it is, with no options.
    """
    if type(endpoint) is not SSL4ServerEndpoint:
        return endpoint, None
    try:
        port, options = endpoint._port, endpoint._sslContextFactory
        backlog, interface = endpoint._backlog, endpoint._interface
    except AttributeError:  # another Twisted: its own TLS, as before
        return endpoint, None
    return TCP4ServerEndpoint(reactor, port, backlog, interface), options


class StreamListener(Service):
    """
    Listens on one stream endpoint for one service.

    @ivar port: the L{IListeningPort} while listening.
    @ivar factory: the outermost factory (with TLS: L{_PeerReadGate}'s, then
        TLS; then tracking, then the service's own).
    @cvar connectionWeight: the open files one connection may hold, as
        counted in a shared L{ConnectionBudget}.
    """

    log = Logger()
    connectionWeight = 1

    def __init__(
        self,
        serviceName: str,
        description: str,
        factory: IProtocolFactory,
        *,
        reactor: object | None = None,
        stats: ServiceStats | None = None,
        tls: CertificateOptions | None = None,
        grace: float = DEFAULT_GRACE,
        maxConnections: int | None = None,
        maxPerHost: int | None = None,
        speaksHTTP: bool = False,
        handshakeTimeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        lingerTime: float | None = None,
        lingerTimeout: float | None = None,
        budget: ConnectionBudget | None = None,
        lingerBytes: int | None = None,
    ) -> None:
        """
        @param serviceName: the service this listener belongs to, for logs.
        @param description: a Twisted server endpoint string.
        @param factory: the service's protocol factory.
        @param stats: where to count; a fresh L{ServiceStats} by default.
        @param tls: add TLS on top of the endpoint with these options.
        @param grace: seconds connections get to close when stopping.
        @param maxConnections: connections open at once on this listener.
        @param maxPerHost: connections open at once from one address.
        @param budget: limits shared with other listeners (all of the
            process's, say), checked too.
        @param speaksHTTP: the service speaks HTTP, so that over TLS a plain
            HTTP request gets a C{400} that says why (as nginx does) instead
            of a closed connection.
        @param handshakeTimeout: seconds a TLS client (with C{tls}, or on an
            C{ssl:} endpoint) gets, from its connection, to finish its
            handshake, after which the connection is aborted; L{None}: no
            limit.
        @param lingerTime: once the service closes a connection, seconds in
            all it is read on (what comes dropped) for the peer's close
            (nginx's C{lingering_time}); by default L{LINGER_TIME}.
        @param lingerTimeout: seconds without a byte from the peer after
            which such a connection ends (nginx's C{lingering_timeout}); by
            default L{LINGER_TIMEOUT}.
        @param lingerBytes: bytes a peer may send once its connection is
            closing, before nothing more is read and the connection ends
            L{_FLOOD_GRACE} seconds later; by default C{factory}'s
            C{lingerBytes} if it has one, else any number.
        @raise ValueError: C{description} is not an endpoint string, or a
            lingering limit is not above 0.
        """
        for name, value in (("lingerTime", lingerTime), ("lingerTimeout", lingerTimeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be above 0 seconds, not {value!r}")
        self.serviceName = serviceName
        self.description = description
        self.reactor = _reactor(reactor)
        self.endpoint = parseStreamEndpoint(self.reactor, description)
        if tls is None:
            self.endpoint, tls = _ownTLS(self.reactor, self.endpoint)
        self.stats = stats if stats is not None else ServiceStats(serviceName)
        self.tracker = TrackingFactory(
            factory,
            self.stats,
            maxConnections,
            maxPerHost,
            handshakeTimeout,
            self.reactor,  # type: ignore[arg-type]
            lingerTime,
            lingerTimeout,
            budget,
            self.connectionWeight,
        )
        if lingerBytes is None:
            lingerBytes = getattr(factory, "lingerBytes", None)
        self.tracker.lingerBytes = lingerBytes
        self.factory: IProtocolFactory = self.tracker
        self.tls = tls
        if tls is not None:
            tlsFactory = _HalfClosingTLSFactory(tls, False, self.tracker)
            tlsFactory.noisy = False
            gate = _PeerReadGateFactory(
                tlsFactory,
                self.stats,
                PLAIN_HTTP_ON_TLS if speaksHTTP else None,
                self.reactor,  # type: ignore[arg-type]
                lingerTime,
                lingerTimeout,
            )
            gate.lingerBytes = lingerBytes
            self.factory = gate
        self.grace = grace
        self.port: IListeningPort | None = None
        self.name = f"{serviceName}{'+tls' if tls else ''} {description}"

    def privilegedStartService(self) -> None:
        """
        Listen now (before privileges are dropped), raising L{ListenError} if
        it fails at once.
        """
        Service.privilegedStartService(self)
        failures: list[Failure] = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failures.append)
        if failures:
            raise ListenError(self._explain(failures[0]))
        if self.port is None:
            # An endpoint that listens later (e.g. one that needs I/O first).
            d.addErrback(
                lambda f: self.log.critical("{why}", why=self._explain(f))
            )

    def _explain(self, failure: Failure) -> str:
        exc = failure.value
        reason = getattr(exc, "socketError", None) or exc
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        return f"{self.serviceName}: cannot listen on {self.description!r}: {reason}"

    def info(self) -> ListenerInfo:
        """
        This listener's state for status pages.
        """
        return ListenerInfo(
            self.serviceName,
            self.description,
            _describe(self.port.getHost()) if self.port is not None else None,
            self.tls is not None,
        )

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self.log.info(
            "{service} listening on {address}{tls}",
            service=self.serviceName,
            address=_describe(port.getHost()),
            tls=" (TLS)" if self.info().tls else "",  # also an ssl: endpoint's
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        self.tracker.stopping = False
        Service.startService(self)

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop listening, then close open connections within the grace period.
        """
        Service.stopService(self)
        port, self.port = self.port, None
        stopped = defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)
        stopped.addCallback(lambda _: self.tracker.closeAll(self.reactor, self.grace))
        return stopped


class DatagramListener(Service):
    """
    Listens on one UDP address (C{udp:PORT[:interface=ADDR]}) for one service.
    """

    log = Logger()

    def __init__(
        self,
        serviceName: str,
        description: str,
        protocol: DatagramProtocol,
        *,
        reactor: object | None = None,
        maxPacketSize: int = 65535,
    ) -> None:
        """
        @raise ValueError: C{description} is not a UDP address.
        """
        self.serviceName = serviceName
        self.description = description
        self.portNumber, self.interface = parseDatagramEndpoint(description)
        self.protocol = protocol
        self.reactor: IReactorUDP = _reactor(reactor)  # type: ignore[assignment]
        self.maxPacketSize = maxPacketSize
        self.port: IListeningPort | None = None
        self.name = f"{serviceName} {description}"

    def info(self) -> ListenerInfo:
        """
        This listener's state for status pages.
        """
        address = _describe(self.port.getHost()) if self.port is not None else None
        return ListenerInfo(self.serviceName, self.description, address, False)

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        try:
            self.port = self.reactor.listenUDP(
                self.portNumber,
                self.protocol,
                interface=self.interface,
                maxPacketSize=self.maxPacketSize,
            )
        except error.CannotListenError as e:
            reason = e.socketError
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise ListenError(
                f"{self.serviceName}: cannot listen on {self.description!r}: {reason}"
            ) from None
        self.log.info(
            "{service} listening on {address}",
            service=self.serviceName,
            address=_describe(self.port.getHost()),
        )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)
