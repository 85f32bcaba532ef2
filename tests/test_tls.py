"""
Tests for L{netsuite.tls}: loading PEM files, the server TLS policy (checked
over real loopback connections), the self-signed and development
certificates, C{netsuite-certs}, and the TLS options of C{twistd netsuite}.

Every certificate is made in the test, by trustme or by L{netsuite.tls}.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import os
import socket
import ssl
import stat
import sys
import time
from pathlib import Path
from typing import Any, Generator

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import defer, error, threads
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
)
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netsuite import tap, tls
from netsuite.echo import makeDaytimeService
from netsuite.tls import (
    TICKET_KEY_LIFETIME,
    TLSConfigError,
    chainWarnings,
    checkHandshake,
    ensureSelfSigned,
    fingerprint,
    keyWarnings,
    loadPEM,
    main,
    makeDevelopmentCertificates,
    serverOptions,
)
from tests.tlshelpers import (
    startListener,
    stdlibTLSEcho,
    trustRootOf,
    twistedTLSClient,
    writeLeaf,
)

MiB = 1024 * 1024

#: TLS 1.2 CBC suites (SHA-1 MAC) for either key type; netsuite refuses them.
CBC_CIPHERS = "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"


#: A private key on secp112r1, a curve cryptography cannot load (a test
#: vector: made with C{openssl ecparam -name secp112r1 -genkey -noout}).
UNSUPPORTED_CURVE_KEY = b"""\
-----BEGIN EC PRIVATE KEY-----
MD4CAQEEDjjI97FLGBNghox5dweuoAcGBSuBBAAGoSADHgAEMnGK4SKvJpqUDCOf
tNxze+8ABr4NecleGczw8Q==
-----END EC PRIVATE KEY-----
"""


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _writeKey(path: str, leaf: trustme.LeafCert) -> None:
    leaf.private_key_pem.write_to_path(path)


class LoadPEMTests(SynchronousTestCase):
    """
    L{loadPEM} reads a chain and its key, and says in one line what is wrong
    with files it cannot use.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.ca = trustme.CA()

    def test_certificateAndKeyLoad(self) -> None:
        """
        A certificate file and its key file give the certificate and a key
        whose public half is the certificate's.
        """
        leaf = self.ca.issue_cert("localhost")
        certPath, keyPath = writeLeaf(self.directory, leaf)
        chain, key = loadPEM(certPath, keyPath)
        self.assertEqual(len(chain), 1)
        expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        self.assertEqual(_der(chain[0]), _der(expected))
        self.assertEqual(
            key.public_key().public_numbers(),
            expected.public_key().public_numbers(),  # type: ignore[union-attr]
        )

    def test_chainFileKeepsIntermediates(self) -> None:
        """
        A file holding a leaf and its intermediate CA loads as both, leaf
        first.
        """
        intermediate = self.ca.create_child_ca()
        leaf = intermediate.issue_cert("localhost")
        certPath, keyPath = writeLeaf(self.directory, leaf)
        chain, _ = loadPEM(certPath, keyPath)
        self.assertEqual(
            [_der(c) for c in chain],
            [_der(x509.load_pem_x509_certificate(b.bytes())) for b in leaf.cert_chain_pems],
        )
        self.assertEqual(len(chain), 2)
        self.assertEqual(
            chain[1].subject,
            x509.load_pem_x509_certificate(intermediate.cert_pem.bytes()).subject,
        )

    def test_keyInCertificateFileByDefault(self) -> None:
        """
        Without a key path the key is read from the certificate's file,
        which may also hold the chain.
        """
        leaf = self.ca.create_child_ca().issue_cert("localhost")
        certPath, keyPath = writeLeaf(self.directory, leaf, combined=True)
        self.assertIsNone(keyPath)
        chain, key = loadPEM(certPath)
        self.assertEqual(len(chain), 2)
        self.assertEqual(
            key.public_key().public_numbers(),
            chain[0].public_key().public_numbers(),  # type: ignore[union-attr]
        )

    def test_unreadableCertificateNamesThePath(self) -> None:
        """
        A certificate file that cannot be read raises L{TLSConfigError}
        naming it.
        """
        missing = os.path.join(self.directory, "missing.pem")
        e = self.assertRaises(TLSConfigError, loadPEM, missing)
        self.assertIn(missing, str(e))

    def test_unreadableKeyNamesThePath(self) -> None:
        """
        A key file that cannot be read raises L{TLSConfigError} naming it.
        """
        certPath, _ = writeLeaf(self.directory, self.ca.issue_cert("localhost"))
        missing = os.path.join(self.directory, "missing-key.pem")
        e = self.assertRaises(TLSConfigError, loadPEM, certPath, missing)
        self.assertIn(missing, str(e))

    def test_fileWithoutCertificate(self) -> None:
        """
        A file with no certificate in it (here: only a key) raises
        L{TLSConfigError} naming it.
        """
        keyOnly = os.path.join(self.directory, "key-only.pem")
        _writeKey(keyOnly, self.ca.issue_cert("localhost"))
        e = self.assertRaises(TLSConfigError, loadPEM, keyOnly, keyOnly)
        self.assertIn("no PEM certificate", str(e))
        self.assertIn(keyOnly, str(e))

    def test_damagedOrCutCertificateNamed(self) -> None:
        """
        A file whose first certificate is good but a later one is damaged,
        or whose certificate is cut off before its END line, says so rather
        than that it holds no certificate.
        """
        leaf = self.ca.issue_cert("localhost")
        good = leaf.cert_chain_pems[0].bytes()
        lines = good.splitlines(keepends=True)
        damaged = b"".join(lines[:1] + [b"AAAA" + line[4:] for line in lines[1:-1]] + lines[-1:])
        path = os.path.join(self.directory, "damaged.pem")
        for data, message in (
            (good + damaged, f"certificate 2 of 2 in {path!r} is damaged and cannot be read"),
            (b"".join(lines[:-1]), f"a certificate in {path!r} has no END line (the file is cut short?)"),
        ):
            with open(path, "wb") as f:
                f.write(data)
            e = self.assertRaises(TLSConfigError, loadPEM, path, path)
            self.assertEqual(str(e), message)

    def test_cutChainRefused(self) -> None:
        """
        A chain file cut off inside its second certificate is refused,
        naming which one (the leaf alone was served, and clients that need
        the intermediate refused it).
        """
        leaf = self.ca.create_child_ca().issue_cert("localhost")
        whole = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
        path = os.path.join(self.directory, "cut.pem")
        with open(path, "wb") as f:
            f.write(whole[: whole.rfind(b"-----END")])
        e = self.assertRaises(TLSConfigError, loadPEM, path, self._key(leaf))
        self.assertEqual(str(e), f"certificate 2 of 2 in {path!r} has no END line (the file is cut short?)")

    def _key(self, leaf: trustme.LeafCert) -> str:
        path = os.path.join(self.directory, "key.pem")
        _writeKey(path, leaf)
        return path

    def test_fileWithoutKey(self) -> None:
        """
        A certificate file without a key, used as its own key file, raises
        L{TLSConfigError} naming it.
        """
        certPath, _ = writeLeaf(self.directory, self.ca.issue_cert("localhost"))
        e = self.assertRaises(TLSConfigError, loadPEM, certPath)
        self.assertIn("private key", str(e))
        self.assertIn(certPath, str(e))

    def test_mismatchedKeyIsRefused(self) -> None:
        """
        A key that is not the certificate's raises L{TLSConfigError} saying
        that it does not match.
        """
        certPath, _ = writeLeaf(self.directory, self.ca.issue_cert("localhost"))
        otherKey = os.path.join(self.directory, "other-key.pem")
        _writeKey(otherKey, self.ca.issue_cert("localhost"))
        e = self.assertRaises(TLSConfigError, loadPEM, certPath, otherKey)
        self.assertIn("does not match", str(e))
        self.assertIn(otherKey, str(e))

    def test_encryptedKeyIsRefused(self) -> None:
        """
        A passphrase-protected key raises L{TLSConfigError} saying that it
        is encrypted.
        """
        leaf = self.ca.issue_cert("localhost")
        certPath, keyPath = writeLeaf(self.directory, leaf)
        assert keyPath is not None
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        with open(keyPath, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"secret"),
                )
            )
        e = self.assertRaises(TLSConfigError, loadPEM, certPath, keyPath)
        self.assertIn("encrypted", str(e))
        self.assertIn(keyPath, str(e))

    def test_fifoOrHugeFileIsOneError(self) -> None:
        """
        A FIFO or a device given as a certificate is refused at once, never
        waited on or read whole (a FIFO hung the start; C{/dev/zero} was
        read until memory ran out).
        """
        fifo = os.path.join(self.directory, "fifo.pem")
        os.mkfifo(fifo)
        for path in (fifo, "/dev/zero"):
            e = self.assertRaises(TLSConfigError, loadPEM, path)
            self.assertIn(f"cannot read certificate {path!r}: not a regular file", str(e))

    def test_keysOpenSSLRefusesFailAtOnce(self) -> None:
        """
        A certificate OpenSSL will not serve (an RSA key of 1024 bits) or
        whose key it cannot hold (X25519) fails when the options are made,
        in one sentence: it used to pass, and every handshake failed with a
        traceback in the log (or the start ended in one).
        """
        from cryptography.hazmat.primitives.asymmetric import rsa, x25519

        certificate = _selfSigned
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        e = self.assertRaises(TLSConfigError, serverOptions, [certificate(weak.public_key(), weak)], weak)
        self.assertIn("OpenSSL refuses the certificate or key: ee key too small", str(e))
        montgomery = x25519.X25519PrivateKey.generate()
        signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        e = self.assertRaises(
            TLSConfigError, serverOptions, [certificate(montgomery.public_key(), signer)], montgomery
        )
        self.assertIn("of a kind TLS here cannot use", str(e))

    def test_keysNoClientCanUseFailAtOnce(self) -> None:
        """
        A certificate that every handshake would fail with (a DSA key, or
        an ECDSA key on secp256k1, with no cipher or group a client shares)
        fails the start in one sentence; it passed, and no client could
        connect.  Keys that OpenSSL clients take pass.
        """
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

        for key, kind in [
            (dsa.generate_private_key(2048), "a DSA key"),
            (ec.generate_private_key(ec.SECP256K1()), "an ECDSA key on secp256k1"),
        ]:
            options = serverOptions([_selfSigned(key.public_key(), key)], key)
            e = self.assertRaises(TLSConfigError, checkHandshake, options, key)
            self.assertEqual(
                str(e),
                f"no TLS client can connect with a certificate that has {kind} (the server fails the "
                "handshake: no shared cipher); use an RSA key of 2048 bits or more, or an ECDSA key on "
                "P-256 or P-384",
            )
        for key in [
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec.generate_private_key(ec.SECP384R1()),
            ed25519.Ed25519PrivateKey.generate(),
        ]:
            checkHandshake(serverOptions([_selfSigned(key.public_key(), key)], key), key)

    def test_chainTooLargeNamed(self) -> None:
        """
        A chain larger than TLS clients take (a leaf followed by a whole CA
        bundle, a common mistake) is refused, saying so: the message blamed
        the key, a P-256 one, and advised a P-256 key.
        """
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _selfSigned(key.public_key(), key)
        other = ec.generate_private_key(ec.SECP256R1())
        bundle = [_selfSigned(other.public_key(), other)] * 400
        e = self.assertRaises(TLSConfigError, checkHandshake, serverOptions([leaf, *bundle], key), key)
        self.assertIn("excessive message size", str(e))
        self.assertIn("the certificate chain is larger than clients take", str(e))
        self.assertNotIn("use an RSA key", str(e))
        # A large chain clients do take (79 KB) passes: the handshake has
        # room for its rounds.
        checkHandshake(serverOptions([leaf, *bundle[:265]], key), key)

    def test_keysBrowsersRefuseWarned(self) -> None:
        """
        A key that OpenSSL clients take and browsers refuse (Ed25519, an
        ECDSA key on P-521 or a Brainpool curve) is warned of; RSA and
        ECDSA on P-256 and P-384 are not.
        """
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.assertEqual(
            keyWarnings(ed25519.Ed25519PrivateKey.generate()),
            ["the certificate has an Ed25519 key, which browsers refuse (they take RSA, or ECDSA on P-256 or P-384)"],
        )
        for curve in (ec.SECP521R1(), ec.BrainpoolP256R1()):
            self.assertIn(f"an ECDSA key on {curve.name}", keyWarnings(ec.generate_private_key(curve))[0])
        for key in (
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP384R1()),
        ):
            self.assertEqual(keyWarnings(key), [])

    def test_unsupportedKeyIsRefused(self) -> None:
        """
        A key cryptography cannot load (an unsupported curve) raises
        L{TLSConfigError} naming the file, like any other unusable key.
        """
        certPath, _ = writeLeaf(self.directory, self.ca.issue_cert("localhost"))
        keyPath = os.path.join(self.directory, "secp112r1-key.pem")
        with open(keyPath, "wb") as f:
            f.write(UNSUPPORTED_CURVE_KEY)
        e = self.assertRaises(TLSConfigError, loadPEM, certPath, keyPath)
        self.assertIn(keyPath, str(e))



def _selfSigned(publicKey: Any, signer: Any) -> x509.Certificate:
    """
    A certificate for localhost valid for 30 days, for C{publicKey}, signed
    by C{signer}.
    """
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(signer, None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )


def _permissiveOptions(certPath: str, keyPath: str | None) -> CertificateOptions:
    """
    Server options that accept TLS 1.0 and every cipher: the control showing
    that a client refused by netsuite's policy can connect at all here.
    """
    chain, key = loadPEM(certPath, keyPath)
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        insecurelyLowerMinimumTo=TLSVersion.TLSv1_0,
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString("ALL"),
    )
    # The context is cached: lower its security level past what TLS 1.1
    # needs under OpenSSL 3.
    options.getContext().set_cipher_list(b"ALL:@SECLEVEL=0")
    return options


def _groupsHandshake(port: int, groups: bytes, version: int | None = None) -> str:
    """
    A TLS handshake with the server on C{port} (not verifying it) offering
    only the key-exchange C{groups}; returns the group used.
    """
    from OpenSSL._util import lib

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if version is not None:
        context.set_min_proto_version(version)
        context.set_max_proto_version(version)
    context.set_cipher_list(b"ECDHE+AESGCM:DHE+AESGCM")
    if lib.SSL_CTX_set1_curves_list(context._context, groups) != 1:
        raise AssertionError(f"this OpenSSL takes none of {groups!r}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.settimeout(None)  # pyOpenSSL wants a blocking socket
        connection = SSL.Connection(context, raw)
        connection.set_connect_state()
        connection.do_handshake()
        name = connection.get_group_name()
        connection.shutdown()
        return name


class KeyExchangeGroupsTests(SynchronousTestCase):
    """
    Where netsuite cannot choose the key-exchange groups, the context is
    still made, with OpenSSL's own groups, and one warning says so.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.warn]

    def test_bindingWithoutTheCallWarns(self) -> None:
        """
        A pyOpenSSL whose binding lacks C{SSL_CTX_set1_curves_list}.
        """
        from OpenSSL import _util

        class Lib:
            def __getattr__(self, name: str) -> Any:
                if name == "SSL_CTX_set1_curves_list":
                    raise AttributeError(name)
                return getattr(_util.lib, name)

        self.patch(_util, "lib", Lib())
        self.patch(tls, "_groupsWarned", False)
        for _ in range(3):  # each listener's context, and each made again
            tls._setGroups(SSL.Context(SSL.TLS_SERVER_METHOD), tls.GROUPS)
        self.assertEqual(self.warnings(), ["TLS: this pyOpenSSL cannot choose key-exchange groups; OpenSSL's own are used"])

    def test_unknownGroupsWarn(self) -> None:
        """
        An OpenSSL that knows none of the groups named.
        """
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        tls._setGroups(context, b"nosuchgroup")
        self.assertEqual(
            self.warnings(), ["TLS: OpenSSL takes none of the key-exchange groups nosuchgroup; keeping its own"]
        )

    def test_knownGroupsQuiet(self) -> None:
        tls._setGroups(SSL.Context(SSL.TLS_SERVER_METHOD), tls.GROUPS)
        self.assertEqual(self.warnings(), [])


class ChainWarningsTests(SynchronousTestCase):
    """
    L{chainWarnings} says, one sentence each, what clients will refuse in
    a chain that can still be served.
    """

    def setUp(self) -> None:
        self.now = datetime.datetime.now(datetime.timezone.utc)

    def chain(self, leaf: trustme.LeafCert) -> list[x509.Certificate]:
        return [x509.load_pem_x509_certificate(pem.bytes()) for pem in leaf.cert_chain_pems]

    def test_goodChainNone(self) -> None:
        leaf = trustme.CA().create_child_ca().issue_cert("localhost")
        self.assertEqual(chainWarnings(self.chain(leaf), "c.pem"), [])

    def test_expired(self) -> None:
        ended = self.now - datetime.timedelta(days=3)
        leaf = trustme.CA().issue_cert("localhost", not_before=ended - datetime.timedelta(days=90), not_after=ended)
        self.assertEqual(
            chainWarnings(self.chain(leaf), "c.pem"),
            [f"the certificate in 'c.pem' expired on {ended:%Y-%m-%d %H:%M} UTC: clients will refuse it"],
        )

    def test_notYetValid(self) -> None:
        begins = self.now + datetime.timedelta(days=2)
        leaf = trustme.CA().issue_cert("localhost", not_before=begins, not_after=begins + datetime.timedelta(days=90))
        self.assertEqual(
            chainWarnings(self.chain(leaf), "c.pem"),
            [f"the certificate in 'c.pem' is not valid before {begins:%Y-%m-%d %H:%M} UTC: clients will refuse it"],
        )

    def test_expiringSoon(self) -> None:
        ends = self.now + datetime.timedelta(days=5)
        leaf = trustme.CA().issue_cert("localhost", not_after=ends)
        self.assertEqual(
            chainWarnings(self.chain(leaf), "c.pem"), [f"the certificate in 'c.pem' expires on {ends:%Y-%m-%d %H:%M} UTC"]
        )
        self.assertEqual(chainWarnings(self.chain(leaf), "c.pem", now=ends - datetime.timedelta(days=30)), [])

    def test_outOfOrder(self) -> None:
        """
        An intermediate that did not issue the certificate before it (the
        wrong CA's, or the chain out of order) is named.
        """
        leaf = trustme.CA().create_child_ca().issue_cert("localhost")
        other = trustme.CA().create_child_ca()
        chain = self.chain(leaf)[:1] + [x509.load_pem_x509_certificate(other.cert_pem.bytes())]
        self.assertEqual(
            chainWarnings(chain, "c.pem"),
            [
                "certificate 2 in 'c.pem' did not issue certificate 1 (out of order, or one missing "
                "between them): clients may refuse the chain"
            ],
        )


class _ServerPolicyMixin:
    """
    L{serverOptions}' policy (TLS 1.2 or newer, forward-secret AEAD ciphers)
    checked over loopback against a TLS echo listener.  Subclasses pick the
    server key's type.
    """

    keyType: trustme.KeyType
    timeout = 10

    def setUp(self) -> None:
        self.ca = trustme.CA(key_type=self.keyType)
        # Served with an intermediate: clients trust only the root, so a
        # handshake that verifies proves the chain is sent.
        leaf = self.ca.create_child_ca(key_type=self.keyType).issue_cert(
            "localhost", key_type=self.keyType
        )
        self.certPath, self.keyPath = writeLeaf(self.mktemp(), leaf)  # type: ignore[attr-defined]
        chain, key = loadPEM(self.certPath, self.keyPath)
        self.port = startListener(self, serverOptions(chain, key))  # type: ignore[arg-type]
        self.cadata = self.ca.cert_pem.bytes().decode("ascii")

    def _stdlib(self, port: int, **kwargs: Any) -> defer.Deferred[Any]:
        return threads.deferToThread(stdlibTLSEcho, port, self.cadata, **kwargs)

    @defer.inlineCallbacks
    def test_verifiedClientGetsOneMebibyteEchoed(self) -> Generator[Any, Any, None]:
        """
        A Twisted client verifying the name C{localhost} against the root CA
        completes the handshake and gets 1 MiB back byte for byte.
        """
        payload = os.urandom(MiB)
        received, reason = yield twistedTLSClient(
            self.port, "localhost", trustRootOf(self.ca), payload, expected=len(payload)
        )
        self.assertEqual(len(received), len(payload))  # type: ignore[attr-defined]
        self.assertTrue(received == payload, "echoed bytes differ")  # type: ignore[attr-defined]
        self.assertTrue(reason.check(error.ConnectionDone), reason)  # type: ignore[attr-defined]

    def _resumed(self, version: ssl.TLSVersion, times: int, between: Any = None) -> list[bool]:
        """
        Blocking: connect C{times} times with the stdlib client over
        C{version}, each with the session ticket the one before was given,
        calling C{between()} after the first.

        @return: whether each resumed its session.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=self.cadata)
        context.minimum_version = context.maximum_version = version
        session, reused = None, []
        for _ in range(times):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost", session=session) as conn:
                    conn.sendall(b"ping")
                    conn.recv(4)  # TLS 1.3 tickets come after the handshake
                    session = conn.session
                    reused.append(conn.session_reused)
            if between is not None and len(reused) == 1:
                between()
        return reused

    @defer.inlineCallbacks
    def test_sessionsResume(self) -> Generator[Any, Any, None]:
        """
        A client that comes back with the session ticket it was given
        resumes its session, over TLS 1.3 and 1.2 (OpenSSL sent TLS 1.3
        tickets that never resumed, and TLS 1.2 none).
        """
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            reused = yield threads.deferToThread(self._resumed, version, 2)
            self.assertEqual(reused, [False, True], version)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_ticketKeyRenewed(self) -> Generator[Any, Any, None]:
        """
        After L{TICKET_KEY_LIFETIME} seconds the listener's TLS context, and
        with it the session-ticket key, is made anew: a ticket from before
        gets a full handshake, and a ticket from the new key resumes (the
        key was held for the whole run: every resumed TLS 1.2 session open
        to whoever got it).
        """
        offset = [0.0]
        self.patch(tls, "_monotonic", lambda: time.monotonic() + offset[0])  # type: ignore[attr-defined]

        def later() -> None:
            offset[0] += TICKET_KEY_LIFETIME

        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            reused = yield threads.deferToThread(self._resumed, version, 3, later)
            self.assertEqual(reused, [False, False, True], version)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_wrongHostnameFailsHandshake(self) -> Generator[Any, Any, None]:
        """
        A client expecting another name refuses the server's certificate:
        its connection fails with service_identity's L{VerificationError}
        (Twisted's report of a name mismatch) and nothing is echoed.
        """
        received, reason = yield twistedTLSClient(
            self.port, "wrong.example", trustRootOf(self.ca), b"hello", expected=5
        )
        self.assertEqual(received, b"")  # type: ignore[attr-defined]
        self.assertTrue(  # type: ignore[attr-defined]
            reason.check(VerificationError), reason
        )

    @defer.inlineCallbacks
    def test_untrustedClientFailsHandshake(self) -> Generator[Any, Any, None]:
        """
        A client trusting another CA fails the handshake with an SSL error.
        """
        received, reason = yield twistedTLSClient(
            self.port, "localhost", trustRootOf(trustme.CA()), b"hello", expected=5
        )
        self.assertEqual(received, b"")  # type: ignore[attr-defined]
        self.assertTrue(reason.check(SSL.Error), reason)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_tls12AEADClientAccepted(self) -> Generator[Any, Any, None]:
        """
        A TLS 1.2 client offering only ECDHE with AES-GCM gets through.
        """
        version, cipher, echoed = yield self._stdlib(
            self.port,
            minimum=ssl.TLSVersion.TLSv1_2,
            maximum=ssl.TLSVersion.TLSv1_2,
            ciphers="ECDHE+AESGCM",
        )
        self.assertEqual((version, echoed), ("TLSv1.2", b"ping"))  # type: ignore[attr-defined]
        self.assertIn("GCM", cipher)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_tls13ClientAccepted(self) -> Generator[Any, Any, None]:
        """
        A TLS 1.3-only client gets through.
        """
        version, _, echoed = yield self._stdlib(
            self.port, minimum=ssl.TLSVersion.TLSv1_3
        )
        self.assertEqual((version, echoed), ("TLSv1.3", b"ping"))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_keyExchangeGroups(self) -> Generator[Any, Any, None]:
        """
        Key exchange is by X25519, P-256 or P-384 only: a client offering
        only finite-field groups (which OpenSSL 3 takes, at many times the
        CPU) is refused, in TLS 1.3 and 1.2.
        """
        for groups, expected in ((b"X25519", "x25519"), (b"P-384", "secp384r1"), (b"P-256", "secp256r1")):
            name = yield threads.deferToThread(_groupsHandshake, self.port, groups)
            self.assertEqual(name, expected)  # type: ignore[attr-defined]
        for version in (SSL.TLS1_3_VERSION, SSL.TLS1_2_VERSION):
            yield self.assertFailure(  # type: ignore[attr-defined]
                threads.deferToThread(_groupsHandshake, self.port, b"ffdhe2048:ffdhe3072", version), SSL.Error
            )

    @defer.inlineCallbacks
    def test_clientOfferingALPNGoesOnWithout(self) -> Generator[Any, Any, None]:
        """
        A client offering by ALPN protocols other than HTTP gets through to
        a service that speaks none of them, without one (Twisted answered
        with a fatal internal_error alert).
        """
        for offered in (["irc"], ["x-echo", "foo"]):
            version, _, echoed = yield self._stdlib(self.port, alpn=offered)
            self.assertEqual(echoed, b"ping")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_clientOfferingHTTPRefused(self) -> Generator[Any, Any, None]:
        """
        A client offering HTTP by ALPN (a browser, whose request another
        site may have sent here to have it echoed back: ALPACA) is refused
        by a service that does not speak HTTP, with a
        C{no_application_protocol} alert, as nginx's mail proxy does.
        """
        for offered in (["h2", "http/1.1"], ["http/1.1"], ["http/1.0"], ["spdy/3.1"], ["h3", "irc"]):
            failure = yield self.assertFailure(  # type: ignore[attr-defined]
                self._stdlib(self.port, alpn=offered), ssl.SSLError
            )
            self.assertIn("alert no application protocol", str(failure), offered)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_tls12CBCClientRefused(self) -> Generator[Any, Any, None]:
        """
        A TLS 1.2 client offering only CBC suites is refused, although the
        same client gets through to a server that allows them.
        """
        kwargs = dict(
            minimum=ssl.TLSVersion.TLSv1_2,
            maximum=ssl.TLSVersion.TLSv1_2,
            ciphers=CBC_CIPHERS,
        )
        control = startListener(self, _permissiveOptions(self.certPath, self.keyPath))  # type: ignore[arg-type]
        version, cipher, echoed = yield self._stdlib(control, **kwargs)
        self.assertEqual((version, echoed), ("TLSv1.2", b"ping"))  # type: ignore[attr-defined]
        self.assertIn(cipher, CBC_CIPHERS.split(":"))  # type: ignore[attr-defined]

        yield self.assertFailure(  # type: ignore[attr-defined]
            self._stdlib(self.port, **kwargs), ssl.SSLError
        )

    @defer.inlineCallbacks
    def test_tls11ClientRefused(self) -> Generator[Any, Any, None]:
        """
        A client offering at most TLS 1.1 is refused, although the same
        client gets through to a server that allows TLS 1.1.
        """
        kwargs = dict(
            minimum=ssl.TLSVersion.TLSv1,
            maximum=ssl.TLSVersion.TLSv1_1,
            ciphers="DEFAULT:@SECLEVEL=0",
        )
        control = startListener(self, _permissiveOptions(self.certPath, self.keyPath))  # type: ignore[arg-type]
        version, _, echoed = yield self._stdlib(control, **kwargs)
        self.assertEqual((version, echoed), ("TLSv1.1", b"ping"))  # type: ignore[attr-defined]

        yield self.assertFailure(  # type: ignore[attr-defined]
            self._stdlib(self.port, **kwargs), ssl.SSLError
        )

    @defer.inlineCallbacks
    def test_tls11RefusedEvenWithEveryCipherAllowed(self) -> Generator[Any, Any, None]:
        """
        The protocol floor holds on its own: with netsuite's options but
        every cipher allowed (at security level 0), a TLS 1.2 CBC client gets
        through and a TLS 1.1 client is still refused.
        """
        options = serverOptions(*loadPEM(self.certPath, self.keyPath))
        options.getContext().set_cipher_list(b"ALL:@SECLEVEL=0")
        port = startListener(self, options)  # type: ignore[arg-type]
        version, _, echoed = yield self._stdlib(
            port,
            minimum=ssl.TLSVersion.TLSv1_2,
            maximum=ssl.TLSVersion.TLSv1_2,
            ciphers=CBC_CIPHERS,
        )
        self.assertEqual((version, echoed), ("TLSv1.2", b"ping"))  # type: ignore[attr-defined]

        yield self.assertFailure(  # type: ignore[attr-defined]
            self._stdlib(
                port,
                minimum=ssl.TLSVersion.TLSv1,
                maximum=ssl.TLSVersion.TLSv1_1,
                ciphers="DEFAULT:@SECLEVEL=0",
            ),
            ssl.SSLError,
        )


class HTTPALPNTests(TestCase):
    """
    Options naming their protocols by ALPN (the web server's, the proxy's)
    choose the first of theirs the client offers, and refuse a client that
    offers none of them with a C{no_application_protocol} alert, as nginx
    does since 1.21.4 (the client went on without a protocol).
    """

    def setUp(self) -> None:
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        chain, key = loadPEM(certPath, keyPath)
        options = serverOptions(chain, key, acceptableProtocols=[b"h2", b"http/1.1", b"http/1.0"])
        self.port = startListener(self, options)
        self.cadata = ca.cert_pem.bytes().decode("ascii")

    def chosen(self, offered: list[str] | None) -> defer.Deferred[Any]:
        """
        The protocol the server chooses for a client offering C{offered}
        by ALPN (L{None}: no ALPN at all).
        """

        def handshake() -> str | None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cadata=self.cadata)
            if offered is not None:
                context.set_alpn_protocols(offered)
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as conn:
                    return conn.selected_alpn_protocol()

        return threads.deferToThread(handshake)

    async def test_oursChosen(self) -> None:
        self.assertEqual(await self.chosen(["http/1.1", "h2"]), "h2")
        self.assertEqual(await self.chosen(["http/1.1"]), "http/1.1")
        self.assertEqual(await self.chosen(["http/1.0", "irc"]), "http/1.0")

    async def test_noneOfOursRefused(self) -> None:
        for offered in (["irc"], ["h3", "spdy/3.1"]):
            with self.assertRaises(ssl.SSLError) as raised:
                await self.chosen(offered)
            self.assertIn("alert no application protocol", str(raised.exception))

    async def test_noALPNGoesOn(self) -> None:
        self.assertIsNone(await self.chosen(None))


class ServerPolicyECDSATests(_ServerPolicyMixin, TestCase):
    keyType = trustme.KeyType.ECDSA


class ServerPolicyRSATests(_ServerPolicyMixin, TestCase):
    keyType = trustme.KeyType.RSA


class DaytimeOverTLSTests(TestCase):
    """
    Daytime works behind TLS.
    """

    timeout = 10

    @defer.inlineCallbacks
    def test_sendsOneCRLFLineAndCloses(self) -> Generator[Any, Any, None]:
        """
        A TLS daytime client gets one line ending in CRLF, then a clean
        close.
        """
        ca = trustme.CA()
        certPath, keyPath = writeLeaf(self.mktemp(), ca.issue_cert("localhost"))
        port = startListener(
            self, serverOptions(*loadPEM(certPath, keyPath)), make=makeDaytimeService
        )
        received, reason = yield twistedTLSClient(port, "localhost", trustRootOf(ca))
        self.assertTrue(received.endswith(b"\r\n"), received)
        self.assertEqual(received.count(b"\n"), 1, received)
        self.assertIn(b"UTC", received)
        self.assertTrue(reason.check(error.ConnectionDone), reason)


def _sans(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value


class SelfSignedTests(SynchronousTestCase):
    """
    L{ensureSelfSigned} keeps one usable self-signed certificate for
    localhost in a directory.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())

    def test_createsCertificateAndPrivateKey(self) -> None:
        """
        The first call creates a certificate and its key, the key readable
        by the owner only.
        """
        certPath, keyPath, created = ensureSelfSigned(self.directory)
        self.assertTrue(created)
        self.assertEqual(certPath.parent, self.directory)
        self.assertEqual(keyPath.parent, self.directory)
        self.assertEqual(_mode(keyPath), 0o600)
        chain, _ = loadPEM(str(certPath), str(keyPath))
        self.assertEqual(len(chain), 1)
        self.assertEqual(chain[0].subject, chain[0].issuer)

    def test_certificateNamesLocalhostAndLoopback(self) -> None:
        """
        The certificate is valid for the name localhost and the address
        127.0.0.1 (subject alternative names).
        """
        certPath, keyPath, _ = ensureSelfSigned(self.directory)
        chain, _ = loadPEM(str(certPath), str(keyPath))
        sans = _sans(chain[0])
        self.assertIn("localhost", sans.get_values_for_type(x509.DNSName))
        self.assertIn(
            ipaddress.ip_address("127.0.0.1"), sans.get_values_for_type(x509.IPAddress)
        )

    def test_secondCallReusesFiles(self) -> None:
        """
        A second call returns the same files, unchanged, and says it created
        nothing.
        """
        certPath, keyPath, _ = ensureSelfSigned(self.directory)
        before = certPath.read_bytes(), keyPath.read_bytes()
        again = ensureSelfSigned(self.directory)
        self.assertEqual(again, (certPath, keyPath, False))
        self.assertEqual((certPath.read_bytes(), keyPath.read_bytes()), before)

    def test_keyIsOwnerOnlyDespiteStaleTemporaryFile(self) -> None:
        """
        The key is written owner-only even when a temporary file left by an
        earlier, interrupted write is readable by others.
        """
        self.directory.mkdir()
        stale = self.directory / "localhost-key.pem.tmp"
        stale.write_bytes(b"left over")
        stale.chmod(0o644)
        _, keyPath, created = ensureSelfSigned(self.directory)
        self.assertTrue(created)
        self.assertEqual(_mode(keyPath), 0o600)


    def test_corruptedCertificateIsReplaced(self) -> None:
        """
        A certificate file that no longer parses is replaced by a new,
        loadable certificate.
        """
        certPath, keyPath, _ = ensureSelfSigned(self.directory)
        certPath.write_bytes(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
        newCert, newKey, created = ensureSelfSigned(self.directory)
        self.assertTrue(created)
        self.assertEqual((newCert, newKey), (certPath, keyPath))
        loadPEM(str(newCert), str(newKey))

    def test_unreadableStoredFileIsNotReplaced(self) -> None:
        """
        A stored certificate that exists but cannot be read (here a
        directory; also no permission, a FIFO) stops the start in one
        sentence, and the key beside it is kept: it was taken for a broken
        one, and the key was overwritten before the certificate's write
        failed (with no permission, both were replaced and the fingerprint
        clients pinned changed unseen).
        """
        certPath, keyPath, _ = ensureSelfSigned(self.directory)
        key = keyPath.read_bytes()
        certPath.unlink()
        certPath.mkdir()
        e = self.assertRaises(TLSConfigError, ensureSelfSigned, self.directory)
        self.assertIn(f"cannot read certificate {str(certPath)!r}", str(e))
        self.assertEqual(keyPath.read_bytes(), key)

    def test_corruptedKeyIsReplaced(self) -> None:
        """
        A key file that no longer parses makes a new certificate and key.
        """
        certPath, keyPath, _ = ensureSelfSigned(self.directory)
        oldCert = certPath.read_bytes()
        keyPath.write_bytes(b"garbage")
        _, _, created = ensureSelfSigned(self.directory)
        self.assertTrue(created)
        self.assertNotEqual(certPath.read_bytes(), oldCert)
        loadPEM(str(certPath), str(keyPath))
        self.assertEqual(_mode(keyPath), 0o600)

    def test_expiringCertificateIsReplaced(self) -> None:
        """
        A certificate that expires within days is replaced.
        """
        self.directory.mkdir()
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        leaf = trustme.CA().issue_cert("localhost", not_after=soon)
        leaf.cert_chain_pems[0].write_to_path(str(self.directory / "localhost.pem"))
        leaf.private_key_pem.write_to_path(str(self.directory / "localhost-key.pem"))
        certPath, keyPath, created = ensureSelfSigned(self.directory)
        self.assertTrue(created)
        chain, _ = loadPEM(str(certPath), str(keyPath))
        self.assertGreater(chain[0].not_valid_after_utc, soon)

    def test_fingerprintIsColonHexSHA256OfDER(self) -> None:
        """
        L{fingerprint} is the SHA-256 of the DER certificate as upper-case
        hex pairs joined by colons.
        """
        certPath, keyPath, _ = ensureSelfSigned(self.directory)
        chain, _ = loadPEM(str(certPath), str(keyPath))
        digest = hashlib.sha256(_der(chain[0])).hexdigest().upper()
        expected = ":".join(digest[i : i + 2] for i in range(0, 64, 2))
        self.assertEqual(fingerprint(chain[0]), expected)
        self.assertEqual(len(fingerprint(chain[0])), 32 * 3 - 1)


class SelfSignedOverTLSTests(TestCase):
    """
    The self-signed certificate works for a client that trusts it.
    """

    timeout = 10

    @defer.inlineCallbacks
    def test_clientTrustingSelfSignedVerifiesLocalhostAndAddress(
        self,
    ) -> Generator[Any, Any, None]:
        """
        A client that trusts the self-signed certificate verifies the server
        both as C{localhost} and as C{127.0.0.1}.
        """
        certPath, keyPath, _ = ensureSelfSigned(Path(self.mktemp()))
        port = startListener(self, serverOptions(*loadPEM(str(certPath), str(keyPath))))
        root = Certificate.loadPEM(certPath.read_bytes())
        for name in ("localhost", "127.0.0.1"):
            received, reason = yield twistedTLSClient(port, name, root, b"hi", expected=2)
            self.assertEqual(received, b"hi", (name, reason))


class DevelopmentCertificatesTests(SynchronousTestCase):
    """
    L{makeDevelopmentCertificates} and C{netsuite-certs} (L{main}) write a
    local CA and a server certificate signed by it.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())

    def test_writesCAAndServerChain(self) -> None:
        """
        It writes C{ca.pem}, C{ca-key.pem}, C{server.pem} (server
        certificate then CA) and C{server-key.pem}, keys owner-only.
        """
        paths = makeDevelopmentCertificates(self.directory)
        self.assertEqual(
            [p.name for p in paths],
            ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"],
        )
        self.assertEqual({p.parent for p in paths}, {self.directory})
        ca, _ = loadPEM(str(self.directory / "ca.pem"), str(self.directory / "ca-key.pem"))
        chain, _ = loadPEM(
            str(self.directory / "server.pem"), str(self.directory / "server-key.pem")
        )
        self.assertEqual(len(chain), 2)
        self.assertEqual(_der(chain[1]), _der(ca[0]))
        self.assertEqual(chain[0].issuer, ca[0].subject)
        self.assertTrue(
            ca[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
        self.assertIn("localhost", _sans(chain[0]).get_values_for_type(x509.DNSName))
        for name in ("ca-key.pem", "server-key.pem"):
            self.assertEqual(_mode(self.directory / name), 0o600, name)

    def test_mainWritesAndPrintsPaths(self) -> None:
        """
        C{main([DIR])} writes the files, prints their paths and the server
        certificate's fingerprint, and returns 0.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertEqual(main([str(self.directory)]), 0)
        printed = out.getvalue()
        for name in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem"):
            self.assertTrue((self.directory / name).is_file(), name)
            self.assertIn(str(self.directory / name), printed)
        chain, _ = loadPEM(
            str(self.directory / "server.pem"), str(self.directory / "server-key.pem")
        )
        self.assertIn(fingerprint(chain[0]), printed)

    def test_mainRefusesAnOption(self) -> None:
        """
        C{main(["-x"])} prints its usage to stderr, writes nothing and
        returns 2.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        self.assertEqual(main(["-x"]), 2)
        self.assertIn("usage", err.getvalue())
        self.assertEqual(out.getvalue(), "")
        self.assertFalse(os.path.exists("-x"))


class DevelopmentCertificatesOverTLSTests(TestCase):
    """
    The development server certificate is accepted by a client trusting the
    development CA.
    """

    timeout = 10

    @defer.inlineCallbacks
    def test_clientTrustingCAVerifiesLocalhost(self) -> Generator[Any, Any, None]:
        """
        A Twisted client trusting C{ca.pem} and verifying C{localhost} gets
        its echo from a listener using C{server.pem} and C{server-key.pem}.
        """
        directory = Path(self.mktemp())
        makeDevelopmentCertificates(directory)
        port = startListener(
            self,
            serverOptions(
                *loadPEM(str(directory / "server.pem"), str(directory / "server-key.pem"))
            ),
        )
        root = Certificate.loadPEM((directory / "ca.pem").read_bytes())
        received, reason = yield twistedTLSClient(
            port, "localhost", root, b"development", expected=11
        )
        self.assertEqual(received, b"development", reason)


class TapTLSOptionsTests(SynchronousTestCase):
    """
    The TLS flags of C{twistd netsuite} load or create the certificate, and
    stop with one readable line when they cannot.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.ca = trustme.CA()

    def _parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_noTLSByDefault(self) -> None:
        """
        Without TLS flags there are no TLS options.
        """
        options = self._parse()
        self.assertIsNone(options["tls-options"])
        self.assertIsNone(options["tls-fingerprint"])

    def test_tlsUsesSelfSignedCertificateInDataDirectory(self) -> None:
        """
        C{--tls --data-dir D} creates a self-signed certificate under D and
        gives its fingerprint.
        """
        options = self._parse("--tls", "--data-dir", self.directory)
        self.assertIsInstance(options["tls-options"], CertificateOptions)
        certPath, keyPath, created = ensureSelfSigned(Path(self.directory) / "tls")
        self.assertFalse(created)
        chain, _ = loadPEM(str(certPath), str(keyPath))
        self.assertEqual(options["tls-fingerprint"], fingerprint(chain[0]))

    def test_tlsCertWithKey(self) -> None:
        """
        C{--tls-cert} and C{--tls-key} turn TLS on with that certificate.
        """
        leaf = self.ca.issue_cert("localhost")
        certPath, keyPath = writeLeaf(self.directory, leaf)
        assert keyPath is not None
        options = self._parse("--tls-cert", certPath, "--tls-key", keyPath)
        self.assertIsInstance(options["tls-options"], CertificateOptions)
        expected = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        self.assertEqual(options["tls-fingerprint"], fingerprint(expected))

    def test_expiredCertificateWarns(self) -> None:
        """
        An expired C{--tls-cert} starts (as nginx does), with a warning in
        the log saying when it expired.
        """
        ended = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
        leaf = self.ca.issue_cert("localhost", not_before=ended - datetime.timedelta(days=30), not_after=ended)
        certPath, keyPath = writeLeaf(self.directory, leaf)
        assert keyPath is not None
        self.assertStartsWarning(
            certPath,
            keyPath,
            f"TLS: the certificate in {os.path.abspath(certPath)!r} expired on {ended:%Y-%m-%d %H:%M} UTC: clients will refuse it",
        )

    def assertStartsWarning(self, certPath: str, keyPath: str, warning: str) -> None:
        """
        C{--tls-cert certPath --tls-key keyPath} start, with C{warning} and
        no other in the log.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        options = self._parse("--tls-cert", certPath, "--tls-key", keyPath)
        self.assertIsInstance(options["tls-options"], CertificateOptions)
        self.assertEqual([formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn], [warning])

    def _writeSelfSigned(self, key: Any) -> tuple[str, str]:
        certPath = os.path.join(self.directory, "kind.pem")
        keyPath = os.path.join(self.directory, "kind-key.pem")
        with open(certPath, "wb") as f:
            f.write(_selfSigned(key.public_key(), key).public_bytes(serialization.Encoding.PEM))
        with open(keyPath, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return certPath, keyPath

    def test_certificateNoClientCanUseRefused(self) -> None:
        """
        A C{--tls-cert} that no client could make a handshake with (an
        ECDSA key on secp256k1) stops the start in one line.
        """
        from cryptography.hazmat.primitives.asymmetric import ec

        certPath, keyPath = self._writeSelfSigned(ec.generate_private_key(ec.SECP256K1()))
        e = self.assertRaises(tap.ConfigError, self._parse, "--tls-cert", certPath, "--tls-key", keyPath)
        self.assertIn("no TLS client can connect with a certificate that has an ECDSA key on secp256k1", str(e))

    def test_certificateBrowsersRefuseWarns(self) -> None:
        """
        A C{--tls-cert} with an Ed25519 key starts, with a warning that
        browsers refuse it.
        """
        certPath, keyPath = self._writeSelfSigned(ed25519.Ed25519PrivateKey.generate())
        self.assertStartsWarning(
            certPath,
            keyPath,
            "TLS: the certificate has an Ed25519 key, which browsers refuse (they take RSA, or ECDSA on P-256 or P-384)",
        )

    def test_protocolsByService(self) -> None:
        """
        The web server names HTTP/2 and HTTP/1 by ALPN, the proxy HTTP/1,
        the other services nothing (they refuse a client offering HTTP).
        """
        from netsuite.web import site

        options = self._parse("--tls", "--data-dir", self.directory)
        protocols = {
            service: list(tap._tlsOptions(options, service)._acceptableProtocols or [])  # type: ignore[union-attr]
            for service in ("http", "proxy", "echo", "chat", "daytime", "discard")
        }
        self.assertEqual(
            protocols,
            {
                "http": [b"h2", b"http/1.1", b"http/1.0"] if site.H2_SERVED else [b"http/1.1", b"http/1.0"],
                "proxy": [b"http/1.1", b"http/1.0"],
                "echo": [],
                "chat": [],
                "daytime": [],
                "discard": [],
            },
        )
        # Where netsuite cannot serve HTTP/2 (a Twisted whose HTTP/2 it does
        # not know), it is not offered, whatever Twisted could do.
        self.patch(site, "H2_SERVED", False)
        self.assertEqual(
            list(tap._tlsOptions(options, "http")._acceptableProtocols),  # type: ignore[union-attr]
            [b"http/1.1", b"http/1.0"],
        )

    def test_mismatchedKeyIsAConfigError(self) -> None:
        """
        A C{--tls-key} that is not C{--tls-cert}'s stops with a
        L{tap.ConfigError} saying it does not match.
        """
        certPath, _ = writeLeaf(self.directory, self.ca.issue_cert("localhost"))
        otherKey = os.path.join(self.directory, "other-key.pem")
        _writeKey(otherKey, self.ca.issue_cert("localhost"))
        e = self.assertRaises(
            tap.ConfigError, self._parse, "--tls-cert", certPath, "--tls-key", otherKey
        )
        self.assertIn("does not match", str(e))

    def test_keyWithoutCertificateIsAConfigError(self) -> None:
        """
        C{--tls-key} alone stops with a L{tap.ConfigError}.
        """
        _, keyPath = writeLeaf(self.directory, self.ca.issue_cert("localhost"))
        assert keyPath is not None
        e = self.assertRaises(tap.ConfigError, self._parse, "--tls-key", keyPath)
        self.assertIn("--tls-cert", str(e))

    def test_unreadableCertificateIsAConfigErrorNamingIt(self) -> None:
        """
        An unreadable C{--tls-cert} stops with a L{tap.ConfigError} naming
        the file.
        """
        missing = os.path.join(os.path.abspath(self.directory), "missing.pem")
        e = self.assertRaises(tap.ConfigError, self._parse, "--tls-cert", missing)
        self.assertIn(missing, str(e))
