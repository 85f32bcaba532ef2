"""
TLS for netsuite's listeners: loading PEM files, the server policy
(TLS 1.2 or newer, forward-secret AEAD ciphers only), a self-signed
certificate for C{--tls}, and a development CA for C{certs/}.

Run C{python -m netsuite.tls DIR} (or C{netsuite-certs DIR}) to create a
local CA and a server certificate for localhost in DIR.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet._sslverify import protosFromProtocol
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from netsuite.files import readSmallFile, writeAtomically

log = Logger()

#: Forward-secret AEAD suites for TLS 1.2; TLS 1.3's suites are all of that
#: kind already.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

#: The key-exchange groups a server takes (OpenSSL 3 also takes the finite
#: field ones, ffdhe2048 to 8192, at up to 30 times the CPU per handshake:
#: a cheap way to load the server).
GROUPS = b"X25519:P-256:P-384"

#: Seconds a listener's TLS context serves new connections before it is
#: made anew, and with it the session-ticket key OpenSSL makes for each
#: context: a TLS 1.2 session resumed by ticket has no forward secrecy
#: against that key (TLS 1.3 resumption makes a new key exchange), so a
#: key held for the whole run would open every one of them.  A ticket made
#: under the old key gets a full handshake; Mozilla's guidelines ask for a
#: new key at least daily.
TICKET_KEY_LIFETIME = 3600.0

_monotonic = time.monotonic

#: Names the generated certificates are valid for.
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")


class TLSConfigError(ValueError):
    """
    A certificate or key cannot be used; the message says why, in one line.
    """


class UnreadableError(TLSConfigError):
    """
    A certificate or key file exists but cannot be read (no permission, not
    a regular file, too large): unlike a missing or broken one, it is never
    replaced by a generated one.
    """


#: Bytes a certificate chain or key file may hold.
MAX_PEM_FILE = 1024 * 1024


def _read(path: str, what: str) -> bytes:
    try:
        return readSmallFile(path, MAX_PEM_FILE, follow=True)
    except FileNotFoundError:
        raise TLSConfigError(f"cannot read {what} {path!r}: No such file or directory") from None
    except OSError as e:
        raise UnreadableError(f"cannot read {what} {path!r}: {e.strerror}") from None
    except ValueError as e:  # a FIFO, a device, a directory, a huge file
        raise UnreadableError(f"cannot read {what} {path!r}: {e}") from None


def loadPEM(
    certPath: str, keyPath: str | None = None
) -> Tuple[List[x509.Certificate], ec.EllipticCurvePrivateKey]:
    """
    Read a certificate chain (leaf first) and its private key from PEM files.

    @param keyPath: the key's file; by default the key is looked for in
        C{certPath}.
    @raise TLSConfigError: a file is unreadable, holds no certificate or key,
        the key is encrypted, or the key does not belong to the certificate.
    """
    certData = _read(certPath, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(certData)
    except ValueError:
        raise TLSConfigError(_whyNoCertificates(certData, certPath)) from None
    begun = certData.count(b"-----BEGIN CERTIFICATE-----")
    if begun > len(chain):
        # cryptography reads the whole blocks and skips a cut one: the
        # chain would be served without it.
        raise TLSConfigError(
            f"certificate {len(chain) + 1} of {begun} in {certPath!r} has no END line "
            f"(the file is cut short?)"
        )
    keyPath = keyPath or certPath
    keyData = certData if keyPath == certPath else _read(keyPath, "private key")
    try:
        key = serialization.load_pem_private_key(keyData, password=None)
    except TypeError:
        raise TLSConfigError(
            f"the private key in {keyPath!r} is encrypted; give an unencrypted key"
        ) from None
    except ValueError:
        raise TLSConfigError(f"no usable PEM private key found in {keyPath!r}") from None
    except UnsupportedAlgorithm:
        raise TLSConfigError(f"the private key in {keyPath!r} is of an unsupported kind") from None
    try:
        certificateKey = chain[0].public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise TLSConfigError(
            f"the certificate in {certPath!r} has a key of an unsupported kind"
        ) from None
    if _publicBytes(certificateKey) != _publicBytes(key.public_key()):
        raise TLSConfigError(
            f"the private key in {keyPath!r} does not match the certificate "
            f"in {certPath!r}"
        )
    return chain, key  # type: ignore[return-value]


#: How soon before a certificate expires a start warns of it.
EXPIRY_WARNING = datetime.timedelta(days=14)


def chainWarnings(
    chain: Sequence[x509.Certificate], path: str, now: datetime.datetime | None = None
) -> List[str]:
    """
    What is wrong with C{chain} (from C{path}) that clients will refuse,
    though it can be served: a certificate expired, not valid yet, or
    expiring within L{EXPIRY_WARNING}; one not issued by the certificate
    after it (the chain out of order, or a certificate missing).  One
    sentence each; none if all is well.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    warnings = []
    for number, certificate in enumerate(chain, 1):
        which = "the certificate" if number == 1 else f"certificate {number} of the chain"
        ends, begins = certificate.not_valid_after_utc, certificate.not_valid_before_utc
        if ends <= now:
            warnings.append(f"{which} in {path!r} expired on {ends:%Y-%m-%d %H:%M} UTC: clients will refuse it")
        elif begins > now:
            warnings.append(f"{which} in {path!r} is not valid before {begins:%Y-%m-%d %H:%M} UTC: clients will refuse it")
        elif ends - now < EXPIRY_WARNING:
            warnings.append(f"{which} in {path!r} expires on {ends:%Y-%m-%d %H:%M} UTC")
    for number, (certificate, issuer) in enumerate(zip(chain, chain[1:]), 1):
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature):
            warnings.append(
                f"certificate {number + 1} in {path!r} did not issue certificate {number} "
                f"(out of order, or one missing between them): clients may refuse the chain"
            )
    return warnings


_CERTIFICATE_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL
)


def _whyNoCertificates(data: bytes, path: str) -> str:
    """
    Why the certificates in C{data} (from C{path}) could not be read, in
    one sentence: none there, or which one is damaged.
    """
    blocks = _CERTIFICATE_BLOCK.findall(data)
    for number, block in enumerate(blocks, 1):
        try:
            x509.load_pem_x509_certificate(block)
        except ValueError:
            return f"certificate {number} of {len(blocks)} in {path!r} is damaged and cannot be read"
    if data.count(b"-----BEGIN CERTIFICATE-----") > len(blocks):
        return f"a certificate in {path!r} has no END line (the file is cut short?)"
    return f"no PEM certificate found in {path!r}"


def _publicBytes(publicKey: object) -> bytes:
    return publicKey.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def serverOptions(
    chain: Sequence[x509.Certificate],
    key: object,
    acceptableProtocols: Sequence[bytes] | None = None,
) -> CertificateOptions:
    """
    Server-side TLS options with netsuite's policy: TLS 1.2 or newer,
    forward-secret AEAD ciphers only, key exchange by L{GROUPS}; sessions
    resume by ticket (the key is made for these options, in memory only).

    @param acceptableProtocols: ALPN protocol names to offer, e.g.
        C{[b"h2", b"http/1.1"]}.
    """
    try:
        options = _ServerOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
            acceptableProtocols=acceptableProtocols,
            # Stateless tickets, with a key OpenSSL makes for the context
            # (nginx's default): without them TLS 1.3 sent tickets that
            # never resumed (the session cache is off).
            enableSessionTickets=True,
        )
        # Built now, not at the first connection: a certificate OpenSSL
        # refuses (an RSA key under 2048 bits) fails the start in one line,
        # not every handshake with a traceback.
        options.getContext()
    except TypeError:
        raise TLSConfigError("the private key is of a kind TLS here cannot use") from None
    except SSL.Error as e:
        raise TLSConfigError(f"OpenSSL refuses the certificate or key: {_sslReason(e)}") from None
    return options


def _keyKind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an ECDSA key on {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA key of {key.key_size} bits"
    if isinstance(key, dsa.DSAPrivateKey):
        return "a DSA key"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "an Ed448 key"
    return "a key of this kind"


#: The curves of ECDSA keys every browser takes (P-521 is not in Chrome).
_BROWSER_CURVES = ("secp256r1", "secp384r1")


def keyWarnings(key: object) -> List[str]:
    """
    Why browsers will refuse a certificate with C{key} that TLS clients
    built on OpenSSL (curl, Python) take: they take RSA and ECDSA on P-256
    and P-384 keys only.  One sentence, or none.
    """
    if isinstance(key, rsa.RSAPrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _BROWSER_CURVES
    ):
        return []
    return [f"the certificate has {_keyKind(key)}, which browsers refuse (they take RSA, or ECDSA on P-256 or P-384)"]


def checkHandshake(options: CertificateOptions, key: object) -> None:
    """
    Make one TLS handshake in memory between C{options} and a client with
    OpenSSL's defaults (TLS 1.2 and 1.3, as curl's), so that a certificate
    no client could connect with stops the start, not every handshake.

    @raise TLSConfigError: the handshake fails.
    """
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    server = SSL.Connection(options.getContext(), None)
    server.set_accept_state()
    done = {client: False, server: False}
    for _ in range(10):
        for connection in (client, server):
            if done[connection]:
                continue
            try:
                connection.do_handshake()
                done[connection] = True
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                side = "the server" if connection is server else "a client"
                reason = _sslReason(e)
                if re.search(r"shared cipher|signature|sigalg", reason):
                    raise TLSConfigError(
                        f"no TLS client can connect with a certificate that has {_keyKind(key)} "
                        f"({side} fails the handshake: {reason}); use an RSA key of 2048 bits "
                        "or more, or an ECDSA key on P-256 or P-384"
                    ) from None
                if "excessive message size" in reason:
                    reason += " (the certificate chain is larger than clients take, about 100 KiB: give only the certificate and its intermediates)"
                raise TLSConfigError(
                    f"no TLS client can connect with this certificate ({side} fails the handshake: {reason})"
                ) from None
        if all(done.values()):
            return
        for source, target in ((client, server), (server, client)):
            try:
                target.bio_write(source.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
    raise TLSConfigError("a TLS handshake with the certificate did not finish")


def _sslReason(error: SSL.Error) -> str:
    reasons = [entry[2] for entry in error.args[0] if isinstance(entry, tuple) and len(entry) == 3] if error.args else []
    return "; ".join(str(r) for r in reasons) or str(error)


#: ALPN protocol ids of HTTP (RFC 7301's registry): a service that does not
#: speak HTTP refuses a client offering one.
_HTTP_ALPN = re.compile(rb"(?:http/|h2|h3|spdy/)")


class _NoApplicationProtocol(SSL.Error):
    """
    The client offered by ALPN only protocols the service does not speak
    (OpenSSL answers with a C{no_application_protocol} alert).
    """


class _ServerOptions(CertificateOptions):
    """
    Twisted's options, with netsuite's ALPN policy, as nginx's (1.21.4 and
    later) and RFC 9325's against cross-protocol attacks (ALPACA):

      - a service that speaks protocols named by ALPN (HTTP: C{h2},
        C{http/1.1}, C{http/1.0}) refuses a client that offers only others,
        with a C{no_application_protocol} alert;
      - a service that names none (echo, chat, daytime, discard) refuses a
        client offering an HTTP protocol (a browser, whose request another
        site could have sent there to have it echoed back), and lets any
        other client go on without one, as RFC 7301 lets a server that
        does not take part do (Twisted refused every client offering ALPN,
        with an C{internal_error} alert).
    """

    _contextMade = 0.0

    def getContext(self) -> SSL.Context:
        """
        The context for new connections: made anew every
        L{TICKET_KEY_LIFETIME} seconds, with a new session-ticket key
        (connections already open keep theirs).
        """
        now = _monotonic()
        if self._context is None or now - self._contextMade >= TICKET_KEY_LIFETIME:
            self._context = self._makeContext()
            self._contextMade = now
        return self._context

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        context = CertificateOptions._makeContext(self, skipCiphers)
        acceptable = tuple(self._acceptableProtocols or ())

        def select(connection: SSL.Connection, offered: Sequence[bytes]) -> object:
            ours = protosFromProtocol(connection.get_app_data(), acceptable)
            for protocol in ours:
                if protocol in offered:
                    return protocol
            if ours or any(_HTTP_ALPN.match(protocol) for protocol in offered):
                raise _NoApplicationProtocol([("ALPN", "select", "no protocol offered is served here")])
            return SSL.NO_OVERLAPPING_PROTOCOLS

        context.set_alpn_select_callback(select)
        _setGroups(context, GROUPS)
        return context


_groupsWarned = False


def _setGroups(context: SSL.Context, groups: bytes) -> None:
    """
    Limit C{context}'s key exchange to C{groups} (pyOpenSSL has no call for
    it; its OpenSSL binding does).  Left as it is where the binding lacks
    it (logged), or OpenSSL knows none of them.
    """
    try:
        from OpenSSL._util import lib

        setList = lib.SSL_CTX_set1_curves_list
        native = context._context
    except (ImportError, AttributeError):
        global _groupsWarned
        if not _groupsWarned:  # contexts are made again every hour
            _groupsWarned = True
            log.warn("TLS: this pyOpenSSL cannot choose key-exchange groups; OpenSSL's own are used")
        return
    if setList(native, groups) != 1:
        getattr(lib, "ERR_clear_error", lambda: None)()
        log.warn("TLS: OpenSSL takes none of the key-exchange groups {groups}; keeping its own", groups=groups.decode())


class GatheringTLSProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's TLS, handing the protocol above the plaintext of all the
    records OpenSSL reads from one feed in one C{dataReceived}.  Twisted's
    hands on each record's alone: a peer sending one byte a record cost a
    call of the protocol above (and for echo, a record back) for each.
    """

    #: Plaintext read from OpenSSL and not yet handed on.
    _plaintext: list[bytes] | None = None

    def _flushReceiveBIO(self) -> None:
        # Twisted's, gathering: handed on at the end, or before the
        # connection ends.
        self._plaintext = plaintext = []
        while not self._lostTLSConnection:
            try:
                data = self._tlsConnection.recv(2**15)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._handOn()
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except SSL.Error:
                failure = Failure()
                self._handOn()
                self._tlsShutdownFinished(failure)
            else:
                plaintext.append(data)
        self._handOn()
        self._flushSendBIO()

    def _handOn(self) -> None:
        """
        Give the protocol above the plaintext read so far, unless the
        connection was aborted.
        """
        plaintext = self._plaintext
        if plaintext:
            data = plaintext[0] if len(plaintext) == 1 else b"".join(plaintext)
            plaintext.clear()
            if not self._aborted:
                ProtocolWrapper.dataReceived(self, data)


def fingerprint(certificate: x509.Certificate) -> str:
    """
    The SHA-256 fingerprint of C{certificate}, as colon-separated hex.
    """
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def defaultDataDirectory() -> Path:
    """
    Where netsuite keeps its own files: C{$XDG_DATA_HOME/netsuite}, else
    C{~/.local/share/netsuite}.
    """
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "netsuite"


def _newKey() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _localNames() -> x509.SubjectAlternativeName:
    names: List[x509.GeneralName] = [x509.DNSName(n) for n in LOCAL_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_ADDRESSES]
    return x509.SubjectAlternativeName(names)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuerKey: ec.EllipticCurvePrivateKey,
    days: int,
    isCA: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=isCA, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )
    if isCA:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(_localNames(), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuerKey.public_key()),
            critical=False,
        )
    return builder.sign(issuerKey, hashes.SHA256())


def _writePEM(path: Path, data: bytes, private: bool) -> None:
    writeAtomically(path, data, 0o600 if private else 0o644)


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certPEM(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def ensureSelfSigned(directory: Path) -> Tuple[Path, Path, bool]:
    """
    Make sure C{directory} holds a usable self-signed certificate for
    localhost, creating (or replacing an expiring or broken) one.

    @return: the certificate's path, the key's path, and whether it was
        created now.
    """
    certPath = directory / "localhost.pem"
    keyPath = directory / "localhost-key.pem"
    try:
        chain, _ = loadPEM(str(certPath), str(keyPath))
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7)
        if chain[0].not_valid_after_utc > soon:
            return certPath, keyPath, False
    except UnreadableError:
        raise  # the user's to look at: never replaced unseen
    except TLSConfigError:
        pass
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = _newKey()
        cert = _certificate("localhost", key, None, key, days=365, isCA=False)
        _writePEM(keyPath, _keyPEM(key), private=True)
        _writePEM(certPath, _certPEM([cert]), private=False)
    except OSError as e:
        raise TLSConfigError(
            f"cannot write a self-signed certificate into {str(directory)!r}: "
            f"{e.strerror}"
        ) from None
    return certPath, keyPath, True


def makeDevelopmentCertificates(directory: Path, days: int = 825) -> List[Path]:
    """
    Create a local CA and a server certificate for localhost signed by it.

    Writes C{ca.pem} (trust this in clients), C{ca-key.pem},
    C{server.pem} (the server certificate followed by the CA: a chain) and
    C{server-key.pem}.  Keys are written readable by the owner only.

    @return: the paths written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    caKey = _newKey()
    ca = _certificate("netsuite development CA", caKey, None, caKey, days, isCA=True)
    serverKey = _newKey()
    server = _certificate("localhost", serverKey, ca, caKey, days, isCA=False)
    files = [
        (directory / "ca.pem", _certPEM([ca]), False),
        (directory / "ca-key.pem", _keyPEM(caKey), True),
        (directory / "server.pem", _certPEM([server, ca]), False),
        (directory / "server-key.pem", _keyPEM(serverKey), True),
    ]
    for path, data, private in files:
        _writePEM(path, data, private)
    return [path for path, _, _ in files]


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{netsuite-certs [DIR]}: create a development CA and server certificate.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: netsuite-certs [DIR]  (default: certs)", file=sys.stderr)
        return 2
    directory = Path(args[0] if args else "certs")
    try:
        paths = makeDevelopmentCertificates(directory)
    except OSError as e:
        print(f"netsuite-certs: cannot write into {str(directory)!r}: {e.strerror}",
              file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    chain, _ = loadPEM(str(directory / "server.pem"), str(directory / "server-key.pem"))
    print(f"server certificate SHA-256 fingerprint: {fingerprint(chain[0])}")
    print(
        f"start with: twistd -n netsuite --tls-cert {directory / 'server.pem'} "
        f"--tls-key {directory / 'server-key.pem'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
