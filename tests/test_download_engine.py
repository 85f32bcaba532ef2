"""
The downloader's engine over real loopback sockets, against the misbehaving
origin of L{tests.downloadorigin}: Range honoured, ignored and lied about,
segmented downloads, stalls, resets, retries and Retry-After, connect
timeouts, redirects and credentials, hostile names, existing files,
checksums, size caps, no implicit decompression, resume from a state file,
TLS, events, limits, memory and an HTTP proxy.  Every saved file is checked
by hash.
"""

from __future__ import annotations

import base64
import datetime
import errno
import json
import math
import os
import socket
import ssl
import random
import re
import resource
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL.SSL import Error as TLSError
from twisted.internet import defer, reactor, tcp
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.internet.error import ConnectError
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, TLSVersion
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import ResponseDone
from zope.interface import directlyProvides, providedBy

from netsuite.download import engine as engineModule
from netsuite.download.agent import (
    MAX_INTERIM,
    MAX_RESPONSE_HEAD,
    CheckedEndpoint,
    basicAuthorization,
    certificateProblem,
)
from netsuite.download.engine import (
    BODY_BATCH_BYTES,
    _BodyReader,
    _HeldSlot,
    _Piece,
    _Slots,
    retryAfterSeconds,
    splitURL,
)
from netsuite.download.inputfile import checkURL
from netsuite.download import state
from netsuite.download.state import (
    MAX_STATE_FILE,
    DownloadState,
    dataExtents,
    intersectRanges,
    loadState,
    mergeRanges,
    statePathFor,
)
from netsuite.download.values import RESERVED_HEADERS, asciiHostName, asciiProxyURL, redact
from netsuite.download import (
    BadURL,
    ChecksumMismatch,
    DownloadError,
    DownloadRequest,
    DownloadResult,
    DownloadSettings,
    DownloadTimeout,
    Downloader,
    HTTPStatusError,
    LocalFileError,
    RedirectError,
    TooLarge,
    parseChecksum,
    parseSize,
)
from netsuite.files import rewriteInPlace
from netsuite.limits import TokenBucket
from netsuite.proxy import ProxyFactory, ProxySettings, makeProxyService
from netsuite.proxyauth import Authenticator, hashPassword, loadUsers
from netsuite.proxyrules import ProxyRules
from netsuite.tls import loadPEM, serverOptions
from tests.downloadorigin import (
    DEFAULT_SIZE,
    GZIPPED,
    Origin,
    Recorded,
    fileContent,
    fileSHA256,
    mostAtOnce,
    startOrigin,
)
from tests.helpers import startListener, waitUntil
from tests.tlshelpers import makeServerOptions, writeLeaf

KiB = 1024
MiB = 1024 * KiB

#: Settings that keep failing tests fast: short waits, a few retries.
FAST: Dict[str, Any] = dict(
    connectTimeout=5.0,
    headerTimeout=5.0,
    stallTimeout=5.0,
    retries=2,
    retryWait=0.01,
    maxRetryWait=0.05,
    progressInterval=0.05,
)


def settings(**overrides: Any) -> DownloadSettings:
    """
    L{FAST} settings with C{overrides}.
    """
    return DownloadSettings(**{**FAST, **overrides})


def listing(directory: Path) -> List[str]:
    """
    Every file and directory under C{directory}, as sorted relative paths.
    """
    found = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def currentRSS() -> Optional[int]:
    """
    This process's resident memory now, in bytes, where the system says
    (L{None} elsewhere).
    """
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peakRSS() -> int:
    """
    This process's peak resident memory so far, in bytes.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _Unanswered:
    """
    The transport of a TCP connection attempt that is never answered (as
    to a host that drops every SYN): only its connector's timeout, or
    giving up on it, ends it.
    """

    def __init__(self, connector: tcp.Connector) -> None:
        self.connector: Optional[tcp.Connector] = connector

    def failIfNotConnected(self, err: Exception) -> None:
        connector, self.connector = self.connector, None
        if connector is not None:
            connector.connectionFailed(Failure(err))


class _UnansweredConnector(tcp.Connector):
    """
    Twisted's own TCP connector (its timeout is the reactor's timer that
    ends every real attempt) over a transport that never connects.
    """

    def _makeTransport(self) -> Any:
        return _Unanswered(self)


class NeverConnects:
    """
    The real reactor, except that no TCP connection it is asked for ever
    completes; everything else (timers, name resolution, listening) is the
    real reactor's.  Filling a listen backlog does not give that reliably
    on every kernel.

    @ivar attempts: C{(host, port, timeout)} of each C{connectTCP}.
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self.attempts: List[Tuple[str, int, float]] = []
        directlyProvides(self, providedBy(real))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None) -> Any:
        self.attempts.append((host, port, timeout))
        connector = _UnansweredConnector(host, port, factory, timeout, bindAddress, self._real)
        connector.connect()
        return connector


class EngineTestCase(TestCase):
    """
    A test with an origin, a fresh directory and downloaders stopped at the
    end.
    """

    timeout = 30

    def setUp(self) -> None:
        self.origin = startOrigin(self, "first")
        self.events: List[Dict[str, Any]] = []

    def directory(self) -> Path:
        """
        A new, empty directory for downloads.
        """
        path = Path(self.mktemp()).absolute()
        path.mkdir(parents=True)
        return path

    def startTLSOrigin(self) -> Tuple[Origin, str]:
        """
        An https origin with a certificate from a new private CA, and the
        path of that CA's PEM file.
        """
        ca = trustme.CA()
        certs = self.mktemp()
        os.makedirs(certs)
        tlsOrigin = startOrigin(self, "tls", tls=makeServerOptions(certs, ca))
        caFile = os.path.join(certs, "ca.pem")
        ca.cert_pem.write_to_path(caFile)
        return tlsOrigin, caFile

    def startTinyRecordOrigin(self, size: int) -> str:
        """
        An https origin (any certificate will do: download with
        C{insecure}) that answers any request with C{size} bytes, each byte
        in a TLS record of its own, all written at once; return its URL.
        Its TLS is the standard library's over memory (Twisted's gathers
        small writes into one record).
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)

        class TinyRecords(Protocol):
            def connectionMade(self) -> None:
                self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
                self.request = b""

            def dataReceived(self, data: bytes) -> None:
                self.incoming.write(data)
                try:
                    self.tls.do_handshake()
                    self.request += self.tls.read(65536)
                except ssl.SSLWantReadError:
                    pass
                if b"\r\n\r\n" in self.request:
                    self.tls.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
                    for _ in range(size):
                        self.tls.write(b"a")  # a record a write
                    self.transport.write(self.outgoing.read())
                    self.transport.loseConnection()
                self.transport.write(self.outgoing.read())

        port = reactor.listenTCP(0, Factory.forProtocol(TinyRecords), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"https://127.0.0.1:{port.getHost().port}/tiny.bin"

    async def assertRecordsGathered(self, url: str, downloader: Downloader) -> None:
        """
        C{downloader} saves C{url} from L{startTinyRecordOrigin}, and its
        HTTP client is handed the plaintext of many records at a time, not
        each record's alone.
        """
        reads = []
        dataReceived = HTTP11ClientProtocol.dataReceived

        def counted(protocol: HTTP11ClientProtocol, data: bytes) -> None:
            reads.append(len(data))
            dataReceived(protocol, data)

        self.patch(HTTP11ClientProtocol, "dataReceived", counted)
        directory = self.directory()
        result = await downloader.download(url, directory)
        self.assertEqual((directory / "tiny.bin").read_bytes(), b"a" * result.size)
        self.assertLess(len(reads), 50, reads)

    def downloader(self, observer: Any = None, **overrides: Any) -> Downloader:
        """
        A L{Downloader} with L{FAST} settings and C{overrides}, recording
        its events in C{self.events} (or giving them to C{observer}),
        stopped when the test ends.
        """
        downloader = Downloader(reactor, settings(**overrides), observer or self.events.append)
        self.addCleanup(downloader.stop)
        return downloader

    async def failureOf(self, d: "defer.Deferred[Any]", *expected: type) -> BaseException:
        """
        Await C{d}; it must fail with one of C{expected}.
        """
        try:
            result = await d
        except Exception as e:
            if not isinstance(e, expected):
                raise
            return e
        self.fail(f"expected {expected}, the download succeeded: {result!r}")

    def assertReadable(self, error: BaseException, url: str) -> None:
        """
        C{error}'s message is one readable sentence naming C{url}.
        """
        message = str(error)
        self.assertIsInstance(error, DownloadError)
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)
        self.assertNotIn("<twisted", message)
        self.assertNotIn("Failure instance", message)
        self.assertNotIn("internal error", message)
        self.assertNotRegex(message, r"[A-Za-z_]+\((\w+=|\[|'|\))", "a repr, not a sentence")
        self.assertIn(url.split("?")[0].split("@")[-1], message)

    def assertSaved(self, result: DownloadResult, path: Path, digest: str, size: int = DEFAULT_SIZE) -> None:
        """
        C{result} says the file is C{path} with C{size} bytes, and it holds
        exactly the bytes hashing to C{digest}; no partial or state file is
        left beside it.
        """
        self.assertIsInstance(result, DownloadResult)
        self.assertEqual(Path(result.path), path)
        self.assertEqual(result.size, size)
        self.assertEqual(os.path.getsize(path), size)
        self.assertEqual(fileSHA256(path), digest)
        self.assertFalse(path.with_name(path.name + ".part").exists())
        self.assertFalse(path.with_name(path.name + ".part.json").exists())

    async def cutShort(self, url: str, directory: Path, path: str, after: int, how: str = "cancel") -> Dict[str, Any]:
        """
        Start downloading C{url} (a slow one) into C{directory}, interrupt
        it (cancel the job, or stop the downloader) once the origin sent
        C{after} bytes of C{path}, and return the state file it left.
        """
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        self.assertIsInstance(job.id, str)
        await self.origin.waitForSent(path, after)
        await deferLater(reactor, 0.05, lambda: None)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        if how == "cancel":
            self.assertTrue(downloader.cancel(job.id))
        else:
            await downloader.stop()
        await outcome
        name = path.rsplit("/", 1)[-1]
        part = directory / (name + ".part")
        statePath = directory / (name + ".part.json")
        self.assertTrue(part.exists(), listing(directory))
        self.assertTrue(statePath.exists(), listing(directory))
        self.assertFalse((directory / name).exists())
        with open(statePath) as f:
            state = json.load(f)
        self.assertEqual(state["version"], 1)
        self.assertEqual(state["url"], url)
        self.assertTrue(state["done"], state)
        return state


class PlainDownloadTests(EngineTestCase):
    """
    Whole files, Range honoured, ignored and lied about, segments.
    """

    async def test_wholeFileSavedByHash(self) -> None:
        """
        A file lands under its URL's name, complete and exact; the origin
        saw a GET with netsuite's User-Agent.
        """
        directory = self.directory()
        result = await self.downloader().download(self.origin.url("/file/plain.bin"), directory)
        self.assertSaved(result, directory / "plain.bin", self.origin.digest("/file/plain.bin"))
        self.assertEqual(result.resumedFrom, 0)
        self.assertEqual(result.url, self.origin.url("/file/plain.bin"))
        gets = self.origin.gets("/file/plain.bin")
        self.assertTrue(gets)
        self.assertTrue(gets[0].headers.get("user-agent", "").startswith("netsuite-get/"), gets[0].headers)
        self.assertEqual(listing(directory), ["plain.bin"])

    async def test_emptyFile(self) -> None:
        """
        A file of zero bytes is saved as an empty file.
        """
        directory = self.directory()
        result = await self.downloader().download(self.origin.url("/file/empty?size=0"), directory)
        self.assertSaved(result, directory / "empty", self.origin.digest("/file/empty", 0), size=0)

    async def test_rangeHonouredSplitsAcrossConnections(self) -> None:
        """
        A file of at least C{minSplitSize} is fetched in several Range
        requests over connections at once, and the pieces join into the
        exact file.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/split.bin?size={size}&rate={4 * MiB}")
        downloader = self.downloader(segments=4, minSplitSize=256 * KiB)
        result = await downloader.download(url, directory)
        self.assertSaved(result, directory / "split.bin", self.origin.digest("/file/split.bin", size), size)
        gets = self.origin.gets("/file/split.bin")
        starts = {r.rangeStart for r in gets if r.range is not None and r.status == 206}
        self.assertGreaterEqual(len(starts - {None, 0}), 1, [(r.rawRange, r.status) for r in gets])
        self.assertGreaterEqual(len(gets), 2)
        self.assertGreaterEqual(self.origin.maxActive, 2)
        self.assertGreaterEqual(result.segments, 2)
        self.assertLessEqual(result.segments, 4)
        self.assertLessEqual(self.origin.maxActive, 4)
        # Pieces are not fetched twice (a little overlap at most).
        self.assertLess(self.origin.sentBytes, size * 1.25)

    async def test_smallFileNotSplit(self) -> None:
        """
        A file smaller than C{minSplitSize} uses one connection.
        """
        directory = self.directory()
        url = self.origin.url(f"/file/small.bin?size={200 * KiB}&rate={2 * MiB}")
        result = await self.downloader(segments=4, minSplitSize=MiB).download(url, directory)
        self.assertSaved(result, directory / "small.bin", self.origin.digest("/file/small.bin", 200 * KiB), 200 * KiB)
        self.assertEqual(result.segments, 1)
        self.assertEqual(self.origin.maxActive, 1)

    async def test_rangeIgnored(self) -> None:
        """
        A server that ignores Range (200 and the whole body every time)
        still gives the exact file, even when splitting was allowed.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/noranges.bin?size={size}&ranges=0&rate={8 * MiB}")
        result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        self.assertSaved(result, directory / "noranges.bin", self.origin.digest("/file/noranges.bin", size), size)
        self.assertTrue(all(r.status == 200 for r in self.origin.seen("/file/noranges.bin")))

    async def test_continueExistingFile(self) -> None:
        """
        With C{continueExisting}, a file already under the final name counts
        as the first bytes: only the rest is asked for (and ends up exact).
        """
        directory = self.directory()
        path = "/file/cont.bin"
        (directory / "cont.bin").write_bytes(self.origin.content(path, 0, 300_000))
        result = await self.downloader().download(self.origin.url(path), directory, continueExisting=True)
        self.assertSaved(result, directory / "cont.bin", self.origin.digest(path))
        self.assertEqual(result.resumedFrom, 300_000)
        gets = self.origin.gets(path)
        self.assertEqual(gets[0].rangeStart, 300_000, [r.rawRange for r in gets])
        self.assertLessEqual(self.origin.sentBytes, DEFAULT_SIZE - 300_000 + 1)

    async def continueOverALink(self, name: str, link: Callable[[Path, Path], None]) -> tuple[Path, Path]:
        """
        Download C{/file/NAME} with C{continueExisting} into a directory
        where C{NAME} was made by C{link(victim, NAME)}: it is saved beside
        it, as C{NAME.1}, from the start, and the victim keeps its bytes.

        @return: the directory and the victim.
        """
        directory = self.directory()
        path = f"/file/{name}"
        victim = Path(self.mktemp())
        victim.write_bytes(b"precious\n")
        link(victim, directory / name)
        result = await self.downloader().download(self.origin.url(path), directory, continueExisting=True)
        self.assertSaved(result, directory / f"{name}.1", self.origin.digest(path))
        self.assertEqual(result.resumedFrom, 0)
        self.assertEqual(victim.read_bytes(), b"precious\n")
        return directory, victim

    async def test_continueDoesNotTakeALink(self) -> None:
        """
        With C{continueExisting}, a symbolic link under the final name is
        not a file to continue: it stays as it is, the file it points at
        keeps its bytes, and the download is saved beside it.
        """
        directory, _ = await self.continueOverALink("linked.bin", lambda victim, name: os.symlink(victim.resolve(), name))
        self.assertTrue((directory / "linked.bin").is_symlink())

    async def test_continueDoesNotTakeAHardLink(self) -> None:
        """
        With C{continueExisting}, a file with other names (a hard link to a
        file elsewhere) under the final name is not continued either:
        continuing it would write into that file.
        """
        _, victim = await self.continueOverALink("hard.bin", os.link)
        self.assertEqual(os.stat(victim).st_nlink, 2)

    async def test_plantedPartThatIsNoFileOfItsOwnIsLeft(self) -> None:
        """
        A C{.part} that is a hard link or a symbolic link to a file
        elsewhere, a FIFO or a directory, with a state file saying it holds
        the first bytes, is not resumed, with a warning: the download is
        saved beside it from the start, and the file it shares keeps its
        bytes.  A symbolic link, a FIFO or a directory failed the download
        ("Too many levels of symbolic links"; "not a regular file"; "Is a
        directory").
        """
        plants = [
            ("hard.bin", os.link, "it has other names (hard links) too"),
            ("soft.bin", lambda victim, part: os.symlink(victim.resolve(), part), "it is a symbolic link"),
            ("fifo.bin", lambda victim, part: os.mkfifo(part), "not a regular file"),
            ("dir.bin", lambda victim, part: part.mkdir(), "it is a directory"),
        ]
        for name, plant, why in plants:
            directory = self.directory()
            path = f"/file/{name}"
            victim = Path(self.mktemp())
            victim.write_bytes(b"precious\n" * 1000)
            part = directory / f"{name}.part"
            plant(victim, part)
            url = self.origin.url(path)
            state = DownloadState(url=url, finalUrl=url, size=DEFAULT_SIZE, done=[(0, 10)], rangesSupported=True)
            statePathFor(part).write_text(json.dumps(state.toJSON()))
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            result = await self.downloader().download(url, directory, continueExisting=True)
            self.assertEqual(result.resumedFrom, 0)
            self.assertSaved(result, directory / f"{name}.1", self.origin.digest(path))
            self.assertEqual(victim.read_bytes(), b"precious\n" * 1000)
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(warnings, [f"{url}: not resuming {part}: {why}"], name)

    async def test_connectionsOverTheServersLimitGiveWayTo(self) -> None:
        """
        A server that takes one connection at a time and answers the others
        503: once their retries are spent, the extra connections leave
        their ranges to the one that works, and the file is exact (the
        first connection to give up failed the whole download, as aria2c
        does not).  Alone, a connection's spent retries still fail it.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/busy.bin?size={size}&rate={8 * MiB}&busy=503")
        downloader = self.downloader(segments=4, minSplitSize=256 * KiB, retries=1, retryWait=0.01)
        result = await downloader.download(url, directory)
        self.assertSaved(result, directory / "busy.bin", self.origin.digest("/file/busy.bin", size), size)
        statuses = [r.status for r in self.origin.gets("/file/busy.bin")]
        self.assertIn(503, statuses)
        self.assertGreater(result.segments, 1)
        url = self.origin.url(f"/file/always.bin?size={size}&status=503")
        error = await self.failureOf(self.downloader(segments=4, retries=1, retryWait=0.01).download(url, directory), HTTPStatusError)
        self.assertIn("503", str(error))
        # Split, then every connection broken: the last to give up fails
        # the download with its own reason, not with bytes missing.
        url = self.origin.url(f"/file/broken.bin?size={size}&rate={8 * MiB}&reset=1000")
        downloader = self.downloader(segments=4, minSplitSize=256 * KiB, retries=1, retryWait=0.01)
        error = await self.failureOf(downloader.download(url, directory), DownloadError)
        self.assertIn("the transfer broke", str(error))

    async def test_lyingContentRangeStartFallsBack(self) -> None:
        """
        A server whose 206 answers name another start than asked is caught:
        the engine falls back to one stream and the file is still exact.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/liar.bin?size={size}&lie=start&rate={8 * MiB}")
        result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        self.assertSaved(result, directory / "liar.bin", self.origin.digest("/file/liar.bin", size), size)
        # The lie was told (a range from elsewhere than asked), and caught.
        gets = self.origin.gets("/file/liar.bin")
        self.assertTrue(any(r.status == 206 and (r.rangeStart or 0) > 0 for r in gets), [(r.rawRange, r.status) for r in gets])
        # One stream at the end: the whole file from byte zero in one answer.
        self.assertIn(gets[-1].rangeStart, (None, 0))
        self.assertEqual(gets[-1].sent, size)

    async def test_wholeFileAs206ToEveryRequest(self) -> None:
        """
        A server that answers every GET, with a Range or without, with a
        206 of the whole file (C{bytes 0-(SIZE-1)/SIZE}) is downloaded: the
        first answer splits the file, the next pieces' answers start at 0,
        and the one stream asked for then (no Range) is taken whole, as a
        200, and not split again.  It was taken as ranges working, split
        again, and the download failed ("does not match the range asked
        for, 4 times; giving up"); aria2c saves it.
        """
        directory = self.directory()
        size = 2 * MiB
        path = "/file/whole.bin"
        url = self.origin.url(f"{path}?size={size}&lie=whole&rate={8 * MiB}")
        result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        self.assertSaved(result, directory / "whole.bin", self.origin.digest(path, size), size)
        self.assertEqual(listing(directory), ["whole.bin"])
        gets = self.origin.gets(path)
        seen = [(r.rawRange, r.status, r.sent) for r in gets]
        self.assertTrue(any((r.rangeStart or 0) > 0 for r in gets), seen)
        self.assertEqual((gets[-1].range, gets[-1].status, gets[-1].sent), (None, 206, size), seen)
        self.assertEqual([r.range for r in gets].count(None), 1, seen)

    async def test_lyingContentRangeTotalFallsBack(self) -> None:
        """
        A server whose 206 answers claim another total size than the file's
        does not corrupt the file.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/liar2.bin?size={size}&lie=total&rate={8 * MiB}")
        try:
            result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        except DownloadError as e:
            # Refusing a server that contradicts itself is fine too, as long
            # as nothing lands under the final name.
            self.assertReadable(e, url)
            self.assertFalse((directory / "liar2.bin").exists())
        else:
            self.assertSaved(result, directory / "liar2.bin", self.origin.digest("/file/liar2.bin", size), size)

    async def splitThenMisbehave(self, name: str, query: str) -> List[Recorded]:
        """
        Download C{name} (2 MiB) from an origin whose first answer is an
        honest 206 with the total size, so that the engine splits the file,
        and whose answers to the later pieces misbehave as C{query} says.
        The file must be exact, alone in its directory, and its last request
        one stream of the whole file (no Range, a 200 of every byte).
        Returns the origin's records of the GETs.
        """
        directory = self.directory()
        size = 2 * MiB
        path = f"/file/{name}"
        url = self.origin.url(f"{path}?size={size}&{query}&later=1&rate={8 * MiB}")
        result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        gets = self.origin.gets(path)
        seen = [(r.rawRange, r.status, r.sent) for r in gets]
        self.assertSaved(result, directory / name, self.origin.digest(path, size), size)
        self.assertEqual(listing(directory), [name])
        # The first answer was good: a 206 from byte 0 giving the size ...
        self.assertEqual((gets[0].rangeStart, gets[0].status), (0, 206), seen)
        # ... so the file was split: later pieces asked from further on.
        self.assertTrue(any((r.rangeStart or 0) > 0 for r in gets[1:]), seen)
        # One stream at the end, and only one: the whole file, no Range.
        self.assertEqual((gets[-1].range, gets[-1].status, gets[-1].sent), (None, 200, size), seen)
        self.assertEqual([r.range for r in gets].count(None), 1, seen)
        return gets

    async def test_rangeIgnoredAfterSplitFallsBackToOneStream(self) -> None:
        """
        A server that answers the first Range with a good 206 (so the file
        is split) but ignores the Range of the later pieces (200 and the
        whole body from byte 0) makes the engine fall back to one stream;
        the file is exact and nothing else is left in the directory.
        """
        gets = await self.splitThenMisbehave("lateranges.bin", "ranges=0")
        self.assertTrue(
            any((r.rangeStart or 0) > 0 and r.status == 200 for r in gets), [(r.rawRange, r.status) for r in gets]
        )

    async def test_contentRangeEndWrongAfterSplitFallsBack(self) -> None:
        """
        A server whose later pieces come as 206 with a Content-Range that
        ends a byte short of the body sent (the first answer was honest)
        makes the engine fall back to one stream; the file is exact and
        nothing else is left in the directory.
        """
        gets = await self.splitThenMisbehave("lateend.bin", "lie=end")
        self.assertTrue(
            any((r.rangeStart or 0) > 0 and r.status == 206 for r in gets), [(r.rawRange, r.status) for r in gets]
        )

    async def test_contentRangeTotalWrongAfterSplitFallsBack(self) -> None:
        """
        A server whose later pieces come as 206 claiming another total size
        than its first answer did (the first answer was honest) makes the
        engine fall back to one stream; the file is exact and nothing else
        is left in the directory.
        """
        gets = await self.splitThenMisbehave("latetotal.bin", "lie=total")
        self.assertTrue(
            any((r.rangeStart or 0) > 0 and r.status == 206 for r in gets), [(r.rawRange, r.status) for r in gets]
        )

    async def test_bodyLongerThanItsContentRangeNotSaved(self) -> None:
        """
        A 206 whose chunked body holds more bytes than its Content-Range
        names (here a multipart/byteranges body: boundary, part headers,
        the range, closing boundary, under a head that also names the
        range) is not saved as the file's bytes.  Falling back to one
        stream or refusing are both fine; a file of boundary lines is not.
        """
        directory = self.directory()
        size = 200_000
        path = "/file/multipart.bin"
        url = self.origin.url(f"{path}?size={size}&multipart=1")
        try:
            result = await self.downloader().download(url, directory)
        except DownloadError as e:
            self.assertReadable(e, url)
            self.assertFalse((directory / "multipart.bin").exists())
        else:
            self.assertSaved(result, directory / "multipart.bin", self.origin.digest(path, size), size)
        self.assertEqual(self.origin.gets(path)[0].status, 206)

    async def test_chunkedBodyLongerThanItsContentRangeNotSaved(self) -> None:
        """
        A chunked 206 that goes on past the end its Content-Range names is
        not trusted: the download falls back to one stream and the file is
        exact.
        """
        directory = self.directory()
        path = "/file/longer.bin"
        url = self.origin.url(f"{path}?lie=end&length=0")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "longer.bin", self.origin.digest(path))
        gets = self.origin.gets(path)
        self.assertEqual([(r.rawRange is None, r.status) for r in gets], [(False, 206), (True, 200)])

    async def test_noContentLength(self) -> None:
        """
        A chunked body without Content-Length is saved whole.
        """
        directory = self.directory()
        result = await self.downloader().download(self.origin.url("/file/chunked.bin?length=0"), directory)
        self.assertSaved(result, directory / "chunked.bin", self.origin.digest("/file/chunked.bin"))

    async def test_noImplicitDecompression(self) -> None:
        """
        A body sent with C{Content-Encoding: gzip} is saved byte for byte
        as sent, not decompressed.
        """
        directory = self.directory()
        result = await self.downloader().download(self.origin.url("/gzip/page.gz"), directory)
        self.assertEqual((directory / "page.gz").read_bytes(), GZIPPED)
        self.assertEqual(result.size, len(GZIPPED))

    async def test_reservedHeadersNotSent(self) -> None:
        """
        Headers the downloader sets itself, given with a request, are left
        out: asking for gzip, another range, a protocol upgrade or
        another framing would break the download.  Others are sent.
        """
        directory = self.directory()
        given = {name.title(): "x" for name in RESERVED_HEADERS}
        given.update({"Accept-Encoding": "gzip", "Range": "bytes=5-", "Upgrade": "h2c", "X-Extra": "yes"})
        url = self.origin.url("/file/plain.bin")
        result = await self.downloader().download(url, directory, headers=given)
        self.assertSaved(result, directory / "plain.bin", self.origin.digest("/file/plain.bin"))
        [request] = self.origin.seen("/file/plain.bin")
        self.assertEqual(request.headers.get("x-extra"), "yes")
        for name in ("te", "upgrade", "if-range", "content-length", "transfer-encoding"):
            self.assertNotIn(name, request.headers)
        self.assertNotEqual(request.headers.get("accept-encoding"), "gzip")
        self.assertEqual(request.headers.get("range"), "bytes=0-")
        self.assertNotEqual(request.headers.get("host"), "x")

    async def test_headerValuesSentAsGiven(self) -> None:
        """
        Header values are sent as the bytes given, as curl sends an
        argument: text as UTF-8 (it was sent as Latin-1, with C{?} for
        anything else, so C{日本} arrived as C{??}), bytes that were not
        UTF-8 (surrogate-escaped, as Python reads them from the command
        line) as they came.
        """
        directory = self.directory()
        url = self.origin.url("/file/plain.bin")
        given = {"X-Name": "Jos\u00e9 \u65e5\u672c", "X-Raw": "a\udce9b", "X-Tab": "a\tb"}
        given.update({"user-agent": "tool/2", "Accept": "application/json"})
        await self.downloader().download(url, directory, headers=given)
        [request] = self.origin.seen("/file/plain.bin")
        # In place of the defaults, as curl -H does: both were sent.
        self.assertEqual((request.rawHeaders["user-agent"], request.rawHeaders["accept"]), (["tool/2"], ["application/json"]))
        received = {name: request.headers[name].encode("latin-1") for name in ("x-name", "x-raw", "x-tab")}
        self.assertEqual(
            received, {"x-name": "Jos\u00e9 \u65e5\u672c".encode("utf-8"), "x-raw": b"a\xe9b", "x-tab": b"a\tb"}
        )

    async def test_headersThatCannotBeSentFailTheJob(self) -> None:
        """
        A header given through the API that cannot be sent fails the job at
        once with a sentence naming it; nothing is asked of the origin.
        """
        cases = [
            ({"X-A": "a\r\nInjected: b"}, "the value of the header 'X-A' holds a control character"),
            ({"X-A": "a\x00b"}, "the value of the header 'X-A' holds a control character"),
            ({"X-A": "\ud800"}, "the value of the header 'X-A' is not text"),
            ({"X-A": 7}, "the value of the header 'X-A' is not text"),
            ({"Bad Name": "x"}, "'Bad Name' is not a header name"),
            ({"X-A:": "x"}, "'X-A:' is not a header name"),
        ]
        url = self.origin.url("/file/plain.bin")
        for headers, message in cases:
            failure = await self.assertFailure(self.downloader().download(url, self.directory(), headers=headers), DownloadError)
            self.assertIn(message, str(failure))
        self.assertEqual(self.origin.seen("/file/plain.bin"), [])


class FailureTests(EngineTestCase):
    """
    Stalls, resets, retries, Retry-After and errors that are never retried.
    """

    async def test_stallTimesOut(self) -> None:
        """
        A body that stops arriving fails after C{stallTimeout} with
        L{DownloadTimeout} when no retries are allowed.
        """
        directory = self.directory()
        url = self.origin.url("/file/drip.bin?drip=1000")
        started = reactor.seconds()
        error = await self.failureOf(
            self.downloader(stallTimeout=0.3, retries=0).download(url, directory), DownloadTimeout
        )
        elapsed = reactor.seconds() - started
        self.assertReadable(error, url)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 5.0)
        self.assertEqual(len(self.origin.gets("/file/drip.bin")), 1)
        self.assertFalse((directory / "drip.bin").exists())

    async def test_stallRetriedThenSucceeds(self) -> None:
        """
        A stalled body is retried; when the server behaves the next time,
        the file is exact.
        """
        directory = self.directory()
        url = self.origin.url("/file/drip2.bin?drip=1000&dripTimes=1")
        result = await self.downloader(stallTimeout=0.3, retries=2).download(url, directory)
        self.assertSaved(result, directory / "drip2.bin", self.origin.digest("/file/drip2.bin"))
        self.assertEqual(len(self.origin.gets("/file/drip2.bin")), 2)
        self.assertTrue(any(e["event"] == "retry" for e in self.events), self.events)

    async def test_trickleIsNotAStall(self) -> None:
        """
        A body that keeps trickling (a few hundred bytes every 20 ms) for
        longer than C{stallTimeout} is not a stall: one request, exact file.
        """
        directory = self.directory()
        url = self.origin.url("/file/trickle.bin?size=12000&rate=24000")
        result = await self.downloader(stallTimeout=0.3, retries=0).download(url, directory)
        self.assertSaved(result, directory / "trickle.bin", self.origin.digest("/file/trickle.bin", 12000), 12000)
        self.assertEqual(len(self.origin.gets("/file/trickle.bin")), 1)
        self.assertGreater(result.seconds, 0.3)

    async def test_slowerThanLowestSpeedIsDropped(self) -> None:
        """
        A body that keeps trickling, but slower than C{lowestSpeed} over a
        C{stallTimeout} window, fails with L{DownloadTimeout} naming the
        speed, and no file is saved; without C{lowestSpeed} the same body is
        only slow.
        """
        directory = self.directory()
        url = self.origin.url("/file/crawl.bin?size=60000&rate=4000")
        started = reactor.seconds()
        error = await self.failureOf(
            self.downloader(stallTimeout=0.3, lowestSpeed=40000, retries=0).download(url, directory),
            DownloadTimeout,
        )
        elapsed = reactor.seconds() - started
        self.assertReadable(error, url)
        self.assertIn("lowest speed of 40000 bytes a second", str(error))
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 3.0)
        self.assertEqual(len(self.origin.gets("/file/crawl.bin")), 1)
        self.assertFalse((directory / "crawl.bin").exists())

    async def test_slowConnectionRetriedFromWhereItWas(self) -> None:
        """
        A connection dropped for being too slow is a failure like a stall:
        it is retried, and the retry continues from the bytes on disk.
        """
        directory = self.directory()
        url = self.origin.url("/file/crawl2.bin?size=60000&rate=4000")
        error = await self.failureOf(
            self.downloader(stallTimeout=0.3, lowestSpeed=40000, retries=2, retryWait=0.01).download(url, directory),
            DownloadTimeout,
        )
        self.assertIn("lowest speed", str(error))
        gets = self.origin.gets("/file/crawl2.bin")
        self.assertEqual(len(gets), 3)
        self.assertEqual(sum(1 for e in self.events if e["event"] == "retry"), 2)
        starts = [get.rangeStart for get in gets]
        self.assertEqual(starts[0], 0)
        for earlier, later in zip(starts, starts[1:]):
            self.assertGreater(later, earlier)

    async def test_fastEnoughIsKept(self) -> None:
        """
        A body that trickles at least at C{lowestSpeed} is downloaded over
        one connection, through several speed windows.
        """
        directory = self.directory()
        url = self.origin.url("/file/steady.bin?size=36000&rate=24000")
        result = await self.downloader(stallTimeout=0.5, lowestSpeed=4000, retries=0).download(url, directory)
        self.assertSaved(result, directory / "steady.bin", self.origin.digest("/file/steady.bin", 36000), 36000)
        self.assertEqual(len(self.origin.gets("/file/steady.bin")), 1)
        self.assertGreater(result.seconds, 0.6)

    async def test_ownRateLimitIsNotSlowness(self) -> None:
        """
        Time the downloader's own rate limit holds a connection back does
        not count against C{lowestSpeed}: a rate limit far below it still
        downloads the file over one connection.
        """
        directory = self.directory()
        url = self.origin.url("/file/held.bin?size=200000")
        result = await self.downloader(
            stallTimeout=0.2, lowestSpeed=MiB, rateLimit=200 * KiB, retries=0
        ).download(url, directory)
        self.assertSaved(result, directory / "held.bin", self.origin.digest("/file/held.bin", 200000), 200000)
        self.assertEqual(len(self.origin.gets("/file/held.bin")), 1)

    async def test_headerTimeout(self) -> None:
        """
        A server that never answers fails after C{headerTimeout}.
        """
        directory = self.directory()
        url = self.origin.url("/file/hang.bin?hang=1")
        started = reactor.seconds()
        error = await self.failureOf(
            self.downloader(headerTimeout=0.3, connectTimeout=5.0, retries=0).download(url, directory),
            DownloadTimeout,
        )
        elapsed = reactor.seconds() - started
        self.assertReadable(error, url)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 3.0)

    def silentResolver(self) -> None:
        """
        Make host name lookups on the reactor never answer, for this test.
        """
        from twisted.internet._resolver import HostResolution
        from twisted.internet.interfaces import IHostnameResolver
        from zope.interface import implementer

        @implementer(IHostnameResolver)
        class Silent:
            def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
                resolution = HostResolution(hostName)
                receiver.resolutionBegan(resolution)
                return resolution

        old = reactor.installNameResolver(Silent())
        self.addCleanup(reactor.installNameResolver, old)

    async def test_headerTimeoutWhileResolving(self) -> None:
        """
        A name lookup that takes longer than C{headerTimeout} fails as a
        timeout, not as "the host name could not be resolved" (what Twisted
        fails a cancelled lookup with), and is not retried as one.
        """
        self.silentResolver()
        directory = self.directory()
        url = "http://slow.example/file.bin"
        error = await self.failureOf(
            self.downloader(headerTimeout=0.3, connectTimeout=5.0, retries=0).download(url, directory),
            DownloadTimeout,
        )
        self.assertEqual(str(error), f"{url}: no response within 0.3 seconds")

    async def test_stopWhileResolvingIsNoRetry(self) -> None:
        """
        A downloader stopped while a name lookup runs ends the job as
        cancelled, without a C{retry} event for the lookup it cancelled.
        """
        self.silentResolver()
        downloader = self.downloader(headerTimeout=5.0, connectTimeout=5.0, retries=3)
        job = downloader.submit(DownloadRequest(url="http://slow.example/file.bin", directory=self.directory()))
        await deferLater(reactor, 0.1, lambda: None)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        await downloader.stop()
        await outcome
        self.assertEqual([e for e in self.events if e["event"] == "retry"], [])

    async def test_totalTimeout(self) -> None:
        """
        A download that keeps trickling but takes longer than
        C{totalTimeout} fails with L{DownloadTimeout}.
        """
        directory = self.directory()
        url = self.origin.url(f"/file/slow.bin?rate={100 * KiB}")
        started = reactor.seconds()
        error = await self.failureOf(
            self.downloader(totalTimeout=0.5, stallTimeout=5.0).download(url, directory), DownloadTimeout
        )
        elapsed = reactor.seconds() - started
        self.assertReadable(error, url)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 4.0)
        self.assertFalse((directory / "slow.bin").exists())

    async def test_resetMidBodyResumes(self) -> None:
        """
        A connection reset in the middle of the body is retried with a
        Range from where it was cut, and the file is exact.
        """
        directory = self.directory()
        cut = 300_000
        url = self.origin.url(f"/file/reset.bin?reset={cut}&resetTimes=1")
        result = await self.downloader(retries=2).download(url, directory)
        self.assertSaved(result, directory / "reset.bin", self.origin.digest("/file/reset.bin"))
        self.assertEqual(self.origin.resets, 1)
        gets = self.origin.gets("/file/reset.bin")
        self.assertEqual(len(gets), 2, [r.rawRange for r in gets])
        again = gets[1]
        self.assertIsNotNone(again.range, "the retry asked for the whole file again")
        self.assertGreater(again.rangeStart, 0)
        self.assertLessEqual(again.rangeStart, cut)
        # Where it was cut: the origin delivered exactly `cut` bytes first.
        self.assertEqual(again.rangeStart, cut)
        self.assertEqual(again.status, 206)

    async def test_brokenTransferCountsThisAnswersBytes(self) -> None:
        """
        "The transfer broke after N bytes" counts the bytes of the answer
        that broke, not the offset in the file (a range from byte 300000
        cut after 300000 bytes said 600000).
        """
        directory = self.directory()
        cut = 300_000
        url = self.origin.url(f"/file/reset2.bin?reset={cut}&resetTimes=2")
        result = await self.downloader(retries=2).download(url, directory)
        self.assertSaved(result, directory / "reset2.bin", self.origin.digest("/file/reset2.bin"))
        reasons = [e["reason"] for e in self.events if e["event"] == "retry"]
        self.assertEqual(len(reasons), 2, reasons)
        for reason in reasons:
            self.assertIn(f"the transfer broke after {cut} bytes", reason)

    async def test_rangeWhoseEndNeverComesDoesNotHang(self) -> None:
        """
        A chunked 206 that delivers every byte its Content-Range names but
        never sends its last chunk (the connection stays open) does not hold
        the download forever: the stall timeout still runs once the range's
        bytes are in, and the file, complete, is saved exact.
        """
        directory = self.directory()
        size = 200_000
        path = "/file/endless.bin"
        url = self.origin.url(f"{path}?size={size}&length=0&end=hold")
        d = self.downloader(stallTimeout=1.0, retries=1).download(url, directory)
        timer = reactor.callLater(15.0, d.cancel)
        try:
            result = await d
        except defer.CancelledError:
            self.fail(
                "still waiting 15 seconds (stallTimeout is 1) after the whole range arrived: "
                + repr([(r.rawRange, r.status, r.sent) for r in self.origin.gets(path)])
            )
        finally:
            if timer.active():
                timer.cancel()
        self.assertSaved(result, directory / "endless.bin", self.origin.digest(path, size), size)

    async def test_resetAfterTheLastByteOfARangeKeepsTheBytes(self) -> None:
        """
        A chunked 206 whose every byte arrived, but whose connection is then
        reset instead of ending with the last chunk, delivered the whole
        range: the bytes are kept.  No retry asks for the empty range
        C{bytes=SIZE-(SIZE-1)} (which is not even a valid Range), and the
        file is not fetched all over again.
        """
        directory = self.directory()
        size = 200_000
        path = "/file/resetend.bin"
        url = self.origin.url(f"{path}?size={size}&length=0&end=reset&endTimes=1")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "resetend.bin", self.origin.digest(path, size), size)
        self.assertEqual(self.origin.resets, 1)
        gets = self.origin.gets(path)
        self.assertEqual([(r.rawRange, r.status) for r in gets], [("bytes=0-", 206)])

    async def test_serverErrorRetriedThenSucceeds(self) -> None:
        """
        Two 500 answers, then the file: retried, exact, with a retry event
        per failure, whose wait doubles from C{retryWait} (here with the
        jitter at its top).
        """
        self.patch(random, "uniform", lambda low, high: high)
        directory = self.directory()
        url = self.origin.url("/file/flaky.bin?fail=2")
        result = await self.downloader(retries=3).download(url, directory)
        self.assertSaved(result, directory / "flaky.bin", self.origin.digest("/file/flaky.bin"))
        statuses = [r.status for r in self.origin.seen("/file/flaky.bin")]
        self.assertEqual(statuses[:2], [500, 500])
        self.assertEqual(len(statuses), 3)
        retries = [e for e in self.events if e["event"] == "retry"]
        self.assertEqual([e["attempt"] for e in retries], [1, 2])
        self.assertEqual([e["delay"] for e in retries], [0.01, 0.02])

    async def test_serverErrorGivesUpAfterRetries(self) -> None:
        """
        A server that keeps answering 500 is tried C{retries} more times,
        then the job fails with L{HTTPStatusError}.
        """
        directory = self.directory()
        url = self.origin.url("/file/broken.bin?fail=1000")
        error = await self.failureOf(self.downloader(retries=2).download(url, directory), HTTPStatusError)
        self.assertEqual(error.status, 500)
        self.assertIn("500", str(error))
        self.assertReadable(error, url)
        self.assertEqual(len(self.origin.seen("/file/broken.bin")), 3)
        self.assertEqual(listing(directory), [])

    async def test_retryAfterAnErrorAtOnceIsOneRequest(self) -> None:
        """
        With no wait between retries, each of the C{retries} more requests
        goes once, on a new connection, and gets its 500, over http and
        https: the connection of a 500 whose body was thrown away as it
        came, closing, went back to the pool, the retry went out on it
        before the close was seen, and Twisted sent it again on a new one:
        5 requests for 3 (with a wait of 0.01 s, 4 when the reactor came
        late, under load).
        """
        tlsOrigin, caFile = self.startTLSOrigin()
        for origin in (self.origin, tlsOrigin):
            del self.events[:]
            directory = self.directory()
            url = origin.url("/file/again.bin?fail=1000")
            downloader = self.downloader(retries=2, retryWait=0, maxRetryWait=0, caFile=caFile)
            error = await self.failureOf(downloader.download(url, directory), HTTPStatusError)
            self.assertEqual(error.status, 500)
            seen = origin.seen("/file/again.bin")
            self.assertEqual([(r.status, r.reused) for r in seen], [(500, False)] * 3, url)
            retries = [e for e in self.events if e["event"] == "retry"]
            self.assertEqual([("500" in e["reason"]) for e in retries], [True, True], url)

    async def test_connectionClosedAfterAnAnswerCostsNoRetry(self) -> None:
        """
        A server that closes its connection after each answer without
        saying so (no C{Connection: close}) costs no retry: the next
        request, sent on that connection before its close was seen (a
        redirect's, at once), never read, is sent again on a new connection
        (Twisted's pool does it, as curl does) and the server sees it once.
        Turned off, it failed a download with no retries left as "the
        connection was closed".
        """
        canned = b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"
        server, base = await startHostile(self, "canned", canned=canned)
        downloader = self.downloader(retries=0, maxRedirects=1)
        error = await self.failureOf(downloader.download(base + "/first", self.directory()), RedirectError)
        self.assertIn("more than 1 redirects", str(error))
        self.assertEqual(server.requestLines, [b"GET /first HTTP/1.1", b"GET /next HTTP/1.1"])
        self.assertEqual(server.connections, 2)
        self.assertEqual([e for e in self.events if e["event"] == "retry"], [])

    async def test_retryAfterHonoured(self) -> None:
        """
        429 with C{Retry-After: 1}: the next attempt waits at least a
        second, although C{retryWait} is much shorter.
        """
        directory = self.directory()
        url = self.origin.url("/file/busy.bin?fail=1&failStatus=429&retryAfter=1")
        result = await self.downloader(retryWait=0.01, maxRetryWait=60.0).download(url, directory)
        self.assertSaved(result, directory / "busy.bin", self.origin.digest("/file/busy.bin"))
        seen = self.origin.seen("/file/busy.bin")
        self.assertEqual([r.status for r in seen][0], 429)
        self.assertGreaterEqual(seen[1].time - seen[0].time, 0.95)
        retries = [e for e in self.events if e["event"] == "retry"]
        self.assertEqual(len(retries), 1)
        self.assertGreaterEqual(retries[0]["delay"], 0.95)

    async def test_retryAfterCappedByMaxRetryWait(self) -> None:
        """
        A Retry-After longer than C{maxRetryWait} is cut to it.
        """
        directory = self.directory()
        url = self.origin.url("/file/busy2.bin?fail=1&failStatus=503&retryAfter=30")
        started = reactor.seconds()
        result = await self.downloader(retryWait=0.01, maxRetryWait=0.2).download(url, directory)
        self.assertSaved(result, directory / "busy2.bin", self.origin.digest("/file/busy2.bin"))
        self.assertLess(reactor.seconds() - started, 5.0)

    async def test_retryAfterHTTPDateHonoured(self) -> None:
        """
        429 with C{Retry-After} as an HTTP date (IMF-fixdate) one to two
        seconds ahead: the next attempt waits until about then, although
        C{retryWait} is much shorter.
        """
        directory = self.directory()
        when = math.ceil(time.time()) + 1  # whole seconds: the date has no fraction
        date = formatdate(when, usegmt=True)
        url = self.origin.url(f"/file/busydate.bin?fail=1&failStatus=429&retryAfter={quote(date)}")
        result = await self.downloader(retryWait=0.01, maxRetryWait=60.0).download(url, directory)
        self.assertSaved(result, directory / "busydate.bin", self.origin.digest("/file/busydate.bin"))
        seen = self.origin.seen("/file/busydate.bin")
        self.assertEqual([r.status for r in seen], [429, 206])
        waited = seen[1].time - seen[0].time
        self.assertGreaterEqual(waited, 0.5)
        self.assertLess(waited, 5.0)
        retries = [e for e in self.events if e["event"] == "retry"]
        self.assertEqual(len(retries), 1)
        self.assertGreaterEqual(retries[0]["delay"], 0.5)
        self.assertLessEqual(retries[0]["delay"], 2.0)

    async def test_notFoundNeverRetried(self) -> None:
        """
        404 fails at once with L{HTTPStatusError}: exactly one request,
        and an error event.
        """
        directory = self.directory()
        url = self.origin.url("/file/missing.bin?status=404")
        error = await self.failureOf(self.downloader(retries=3).download(url, directory), HTTPStatusError)
        self.assertEqual(error.status, 404)
        self.assertIn("404", str(error))
        self.assertReadable(error, url)
        self.assertEqual(len(self.origin.seen("/file/missing.bin")), 1)
        self.assertEqual(listing(directory), [])
        errors = [e for e in self.events if e["event"] == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["url"], url)
        self.assertIn("404", errors[0]["message"])

    async def test_connectionRefused(self) -> None:
        """
        Nothing listening: a readable L{DownloadError}.
        """
        directory = self.directory()
        spare = Origin("spare").start(self)
        url = spare.url("/file/x.bin")
        await spare.stop()
        error = await self.failureOf(self.downloader(retries=0).download(url, directory), DownloadError)
        self.assertReadable(error, url)

    async def test_connectTimeout(self) -> None:
        """
        A connection attempt that is never answered fails after
        C{connectTimeout} (not the much longer C{headerTimeout}), with a
        readable L{DownloadTimeout} saying connecting timed out, and is retried: each
        attempt gets C{connectTimeout} again, and nothing reaches the
        origin.
        """
        directory = self.directory()
        never = NeverConnects(reactor)
        downloader = Downloader(
            never, settings(connectTimeout=0.3, headerTimeout=4.0, retries=1, retryWait=0.01), self.events.append
        )
        self.addCleanup(downloader.stop)
        url = self.origin.url("/file/unanswered.bin")
        started = reactor.seconds()
        error = await self.failureOf(downloader.download(url, directory), DownloadTimeout)
        elapsed = reactor.seconds() - started
        self.assertReadable(error, url)
        self.assertEqual(str(error), f"{url}: connecting timed out")
        self.assertTrue(error.retryable)
        self.assertEqual(never.attempts, [("127.0.0.1", self.origin.port, 0.3)] * 2)
        self.assertEqual(len([e for e in self.events if e["event"] == "retry"]), 1)
        self.assertGreaterEqual(elapsed, 0.55)
        self.assertLess(elapsed, 3.0)
        self.assertEqual(self.origin.requests, [])
        self.assertEqual(listing(directory), [])


class _HostileHead(Protocol):
    """
    A raw HTTP server whose response heads are the attack: C{"headers"}
    sends one status line and then header lines without end; C{"line"}
    one status line and then one header line without end; C{"interim"}
    sends C{103} interim responses without end; C{"big"} answers every
    request with C{headBytes} of header lines and then a real body.
    """

    chunk = b"".join(b"X-Pad-%04d: %s\r\n" % (i, b"p" * 100) for i in range(32))
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 64

    def __init__(self, server: "_HostileServer") -> None:
        self.server = server
        self.buffer = b""
        self.flooding = False

    def connectionMade(self) -> None:
        self.server.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.server.requests += 1
            self.server.requestLines.append(head.split(b"\r\n", 1)[0])
            if self.server.mode == "canned":
                self.transport.write(self.server.canned)
                if self.server.reset:  # RST once what was written has gone out
                    reactor.callLater(0.05, self.transport.abortConnection)
                else:
                    self.transport.loseConnection()
            elif self.server.mode == "big":
                lines = self.server.headBytes // len(self.chunk) + 1
                body = b"b" * 1000
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\n" + self.chunk * lines + b"Content-Length: %d\r\n\r\n" % len(body) + body
                )
            elif not self.flooding:
                self.flooding = True
                if self.server.mode == "headers":
                    self.write(b"HTTP/1.1 200 OK\r\n")
                elif self.server.mode == "line":
                    self.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
                self.transport.registerProducer(self, False)

    def write(self, data: bytes) -> None:
        self.server.sent += len(data)
        self.transport.write(data)

    def resumeProducing(self) -> None:
        self.write({"headers": self.chunk, "line": b"a" * 4096}.get(self.server.mode, self.interim))

    def stopProducing(self) -> None:
        pass


class _HostileServer(Factory):
    def __init__(self, mode: str, headBytes: int = 0, canned: bytes = b"") -> None:
        self.mode = mode
        self.headBytes = headBytes
        self.canned = canned
        self.reset = False
        self.connections = self.requests = self.sent = 0
        self.requestLines: List[bytes] = []

    def buildProtocol(self, addr: Any) -> _HostileHead:
        return _HostileHead(self)


async def startHostile(
    testCase: TestCase, mode: str, headBytes: int = 0, canned: bytes = b""
) -> Tuple[_HostileServer, str]:
    """
    A L{_HostileServer} on loopback, closed when C{testCase} ends, and the
    base URL it answers at.  C{"canned"} answers every request with
    C{canned} and closes the connection.
    """
    server = _HostileServer(mode, headBytes, canned)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    testCase.addCleanup(port.stopListening)
    return server, f"http://127.0.0.1:{port.getHost().port}"


class HostileHeadTests(EngineTestCase):
    """
    A server may not make the client buffer response heads without bound:
    past L{MAX_RESPONSE_HEAD} bytes the request fails at once, readably
    and without a retry.
    """

    async def assertHeadRefused(self, mode: str, expected: str = f"response head is over {MAX_RESPONSE_HEAD // 1024} KiB") -> None:
        server, base = await startHostile(self, mode)
        url = base + "/flood.bin"
        directory = self.directory()
        started = reactor.seconds()
        error = await self.failureOf(
            self.downloader(retries=3, headerTimeout=20.0).download(url, directory), DownloadError
        )
        self.assertLess(reactor.seconds() - started, 10.0)
        self.assertReadable(error, url)
        self.assertIn(expected, str(error))
        self.assertFalse(error.retryable)
        self.assertEqual((server.connections, server.requests), (1, 1))
        # What got through the socket buffers, not the whole flood.
        self.assertLess(server.sent, 64 * MiB)
        self.assertEqual(listing(directory), [])

    async def test_endlessHeaderLinesRefused(self) -> None:
        """
        Header lines without end (each one short enough for Twisted's
        per-line limit).
        """
        await self.assertHeadRefused("headers")

    async def test_endlessHeaderLineRefused(self) -> None:
        """
        One header line without end fails the same way, at once (Twisted's
        16 KiB line limit closed the connection, and the request was
        retried as if the server had closed it).
        """
        await self.assertHeadRefused("line")

    async def test_longHeaderLineUnderTheLimitAccepted(self) -> None:
        """
        One header line longer than Twisted's 16 KiB line limit, in a head
        under L{MAX_RESPONSE_HEAD}, is fine (curl takes 100 KiB lines).
        """
        body = b"c" * 1000
        line = b"X-Long: " + b"l" * (MAX_RESPONSE_HEAD * 3 // 4)
        server, base = await startHostile(
            self, "canned", canned=b"HTTP/1.1 200 OK\r\n%s\r\nContent-Length: %d\r\n\r\n%s" % (line, len(body), body)
        )
        directory = self.directory()
        result = await self.downloader(retries=0).download(f"{base}/long.bin", directory)
        self.assertEqual((directory / "long.bin").read_bytes(), body)
        self.assertEqual((result.size, server.requests), (1000, 1))

    async def test_headEndedInOneReadCounted(self) -> None:
        """
        A head over the limit whose last part comes in the read that ends
        it (here all of it in one write) is refused too: only reads after
        which the head went on were counted, so one up to a read longer
        than the limit got through.
        """
        body = b"c" * 1000
        lines = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_RESPONSE_HEAD * 3 // 2 // 10))
        server, base = await startHostile(
            self, "canned", canned=b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (lines, len(body), body)
        )
        directory = self.directory()
        error = await self.failureOf(self.downloader(retries=0).download(f"{base}/head.bin", directory), DownloadError)
        self.assertIn(f"response head is over {MAX_RESPONSE_HEAD // 1024} KiB", str(error))
        self.assertEqual(listing(directory), [])

    async def test_endlessInterimResponsesRefused(self) -> None:
        """
        C{103} interim responses without end: Twisted skips each one (and
        logs it); past L{MAX_INTERIM} of them the request fails.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        await self.assertHeadRefused("interim", f"the server sent more than {MAX_INTERIM} interim (1xx) responses")
        skipped = [e for e in events if "Ignoring unexpected" in formatEvent(e)]
        # The last one is skipped before the next status line shows it was
        # one too many.
        self.assertEqual(len(skipped), MAX_INTERIM + 1)

    async def test_someInterimResponsesAccepted(self) -> None:
        """
        L{MAX_INTERIM} interim responses before the answer are skipped;
        one more fails the request.  Each used to be skipped (and logged),
        thousands of them within the 64 KiB head limit.
        """
        body = b"c" * 1000
        for count, fails in ((MAX_INTERIM, False), (MAX_INTERIM + 1, True)):
            server, base = await startHostile(
                self,
                "canned",
                canned=b"HTTP/1.1 100 Continue\r\n\r\n" * count
                + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
            )
            directory = self.directory()
            download = self.downloader(retries=0).download(f"{base}/x.bin", directory)
            if fails:
                error = await self.failureOf(download, DownloadError)
                self.assertIn(f"more than {MAX_INTERIM} interim (1xx) responses", str(error))
                self.assertEqual(listing(directory), [])
            else:
                self.assertEqual((await download).size, 1000)

    async def test_largeHeadsUnderTheLimitAccepted(self) -> None:
        """
        Heads of three quarters of the limit are fine, and the count starts
        again for each request on a kept-alive connection.
        """
        server, base = await startHostile(self, "big", headBytes=MAX_RESPONSE_HEAD * 3 // 4)
        directory = self.directory()
        downloader = self.downloader(retries=0)
        for name in ("one.bin", "two.bin", "three.bin"):
            result = await downloader.download(f"{base}/{name}", directory)
            self.assertEqual(result.size, 1000)
            self.assertEqual((directory / name).read_bytes(), b"b" * 1000)
        self.assertEqual((server.connections, server.requests), (1, 3))


class HostileAnswerTests(EngineTestCase):
    """
    Answers that are not HTTP, sizes no file can have, and URLs that only
    DNS can refuse: each fails with one readable sentence, and nothing is
    left on disk.
    """

    async def answer(self, canned: bytes, expected: type = DownloadError, retries: int = 3) -> Tuple[DownloadError, _HostileServer]:
        server, base = await startHostile(self, "canned", canned=canned)
        url = base + "/answer.bin"
        directory = self.directory()
        error = await self.failureOf(self.downloader(retries=retries).download(url, directory), expected)
        self.assertReadable(error, url)
        self.assertEqual(listing(directory), [])
        return error, server

    async def test_anETagForEachAnswer(self) -> None:
        """
        A server whose answers each carry their own ETag (mirrors behind one
        name), ranges answered whatever If-Range says: the download goes on
        as one stream, and is exact.  Each segment started it over, and it
        failed after four times, where one stream (and aria2) finishes.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/mirrors.bin?size={size}&etagEach=1&ifRange=0&rate={8 * MiB}")
        result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        self.assertSaved(result, directory / "mirrors.bin", self.origin.digest("/file/mirrors.bin", size), size)

    async def test_garbledAnswersNotRetried(self) -> None:
        """
        A status line, header or framing Twisted's parser refuses is "not
        valid HTTP", at once: a retry would read the same.
        """
        for canned in (
            b"HELLO\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            # No such status (were retried as "the server answered 2000").
            b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 999 What\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nxx",
            # A chunk size that is not one (were retried as a broken transfer).
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-10\r\nxx\r\n0\r\n\r\n",
            # Refused where they go wrong, though the connection then ends
            # (were retried as broken transfers: Twisted's decoder waited
            # for the size line's CRLF).
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 ",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00",
            # Chunk sizes past the largest file offset (the first was read,
            # and retried as a broken transfer once the connection closed).
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 24 + b"\r\n" + b"x" * 1000,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 2**63 + b"x" * 1000,
        ):
            error, server = await self.answer(canned)
            self.assertIn("the server's answer is not valid HTTP", str(error), canned[:40])
            self.assertFalse(error.retryable)
            self.assertEqual(server.requests, 1, canned[:40])

    async def test_headerLineBeginningWithWhiteSpaceRefused(self) -> None:
        """
        A first header line that begins with a space or a tab (after the
        status line, or after an interim response's) is "not valid HTTP",
        named, at once: Twisted took it for the rest of a header not yet
        begun, and Python's "'NoneType' object has no attribute 'append'"
        was the message, retried.  A folded line after a header is still
        Twisted's to join.
        """
        body = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde"
        for canned in (
            b"HTTP/1.1 200 OK\r\n Content-Length: 5\r\n\r\nabcde",
            b"HTTP/1.1 200 OK\r\n\tX: 1\r\nContent-Length: 5\r\n\r\nabcde",
            b"HTTP/1.1 100 Continue\r\n X: 1\r\n\r\n" + body,
        ):
            error, server = await self.answer(canned)
            self.assertIn("the server's answer is not valid HTTP (a header line begins with white space)", str(error))
            self.assertNotIn("NoneType", str(error))
            self.assertFalse(error.retryable)
            self.assertEqual(server.requests, 1, canned[:40])
        server, base = await startHostile(
            self, "canned", canned=b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nabcde"
        )
        directory = self.directory()
        await self.downloader(retries=0).download(base + "/folded.bin", directory)
        self.assertEqual((directory / "folded.bin").read_bytes(), b"abcde")

    async def test_serverWordsCannotDriveATerminal(self) -> None:
        """
        A reason phrase with terminal escapes, C1 controls and a bidi
        override is quoted escaped, and cut to a sane length.
        """
        phrase = b"Nope\x1b[31mRED\x1b]0;title\x07 \xc2\x9b2J \xe2\x80\xae" + b"x" * 5000
        error, _ = await self.answer(b"HTTP/1.1 404 " + phrase + b"\r\nContent-Length: 0\r\n\r\n", HTTPStatusError)
        message = str(error)
        self.assertIn("404 Nope\\x1b[31mRED", message)
        self.assertNotRegex(message, "[\x00-\x1f\x7f-\x9f\u202a-\u202e]")
        self.assertLess(len(message), 300)

    async def test_unparsableRedirectRefused(self) -> None:
        """
        A C{Location} that cannot be parsed (an unclosed IPv6 bracket) is a
        refused redirect, not an internal error.
        """
        error, _ = await self.answer(
            b"HTTP/1.1 302 Found\r\nLocation: http://[bad\x1b[31m/\r\nContent-Length: 0\r\n\r\n", RedirectError
        )
        self.assertIn("redirected to an unusable URL", str(error))

    async def test_redirectToNameTwistedCannotConnectTo(self) -> None:
        """
        A redirect to a host name Twisted cannot connect to (IDNA 2008
        refuses it) is refused in a sentence, not retried as a connection
        failure.
        """
        error, server = await self.answer(
            b"HTTP/1.1 302 Found\r\nLocation: http://a_b.example/x\r\nContent-Length: 0\r\n\r\n", RedirectError
        )
        self.assertIn("redirected to http://a_b.example/x, which cannot be fetched: the host name 'a_b.example'", str(error))
        self.assertEqual(server.requests, 1)

    async def test_redirectWithoutWhereTo(self) -> None:
        """
        A redirect without a C{Location}, or with an empty one, fails at
        once saying so (an empty one is not the same URL again).
        """
        for head in (b"", b"Location: \r\n", b"Location:\r\n"):
            error, server = await self.answer(
                b"HTTP/1.1 302 Found\r\n" + head + b"Content-Length: 0\r\n\r\n", HTTPStatusError
            )
            self.assertIn("the server redirected without saying where to", str(error))
            self.assertEqual(server.requests, 1, head)

    async def test_impossibleSizesRefused(self) -> None:
        """
        A size past the largest file offset (2**63 - 1), in C{Content-Length}
        or in C{Content-Range}, is not believed.
        """
        huge = b"%d" % 2**63
        for canned in (
            b"HTTP/1.1 200 OK\r\nContent-Length: " + huge + b"\r\n\r\nxx",
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/" + huge + b"\r\nContent-Length: 10\r\n\r\n0123456789",
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-" + huge + b"/*\r\n\r\n0123456789",
        ):
            error, _ = await self.answer(canned, TooLarge)
            self.assertIn("more than any file can hold", str(error))

    async def test_bodyOfUnknownLengthEndsOnlyAtACleanClose(self) -> None:
        """
        A body with neither C{Content-Length} nor chunking ends where the
        server closes the connection; a reset instead is a broken transfer,
        never a whole file (Twisted alone reads both as the end).
        """
        canned = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 5000
        server, base = await startHostile(self, "canned", canned=canned)
        directory = self.directory()
        result = await self.downloader().download(base + "/closed.bin", directory)
        self.assertEqual((directory / "closed.bin").read_bytes(), b"z" * 5000)
        self.assertEqual(result.size, 5000)

        server.reset = True
        url = base + "/reset.bin"
        error = await self.failureOf(self.downloader(retries=1).download(url, directory), DownloadError)
        self.assertReadable(error, url)
        self.assertTrue(error.retryable)
        self.assertFalse((directory / "reset.bin").exists())
        self.assertEqual(server.requests, 3)

    async def test_failureBeforeAnyByteLeavesNothing(self) -> None:
        """
        A download that fails after its head but before one body byte
        leaves neither C{.part} nor state file behind: there is nothing to
        resume.
        """
        error, server = await self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", retries=1)
        self.assertEqual(server.requests, 2)
        self.assertTrue(error.retryable)

    async def test_hostNamesIDNARefusesFailReadably(self) -> None:
        """
        Host names that IDNA refuses but a URL allows fail in a sentence:
        at once when no resolver could take them (an empty label), else
        when the resolver says no (treq's own URL conversion would raise
        instead).
        """
        for url in ("http://a..b:1/x", "http://-a.invalid:1/x", "http://ex%41mple.invalid:1/x"):
            error = await self.failureOf(self.downloader(retries=0).download(url, self.directory()), DownloadError)
            self.assertReadable(error, url)
            self.assertNotIn("internal error", str(error))

    async def test_namesNoResolverTakesAreRefusedAtOnce(self) -> None:
        """
        A host name with an empty label or one over 63 characters, or over
        253 characters in all, makes getaddrinfo raise inside Twisted's
        resolver, which then never answers (the attempt held its connection
        slot until the response timeout, and was retried): such URLs, and
        port 0, are refused before any connection, in one sentence.
        """
        downloader = self.downloader()
        directory = self.directory()
        refused = (
            "http://a..example/x",
            "http://.example/x",
            "http://example.com../x",
            f"http://{'a' * 64}.example/x",
            "http://" + "a." * 127 + "a/x",
            "http://example.com:0/x",
            "http://127.0.0.1:0/x",
        )
        for url in refused:
            error = await self.failureOf(downloader.download(url, directory), BadURL)
            self.assertReadable(error, url)
        self.assertEqual(listing(directory), [])
        for url in (f"http://{'a' * 63}.example/x", "http://" + "a." * 126 + "b/x", "http://example.com./x"):
            self.assertEqual(splitURL(url)[0], url)

    async def test_namesTwistedCannotConnectToAreRefusedAtOnce(self) -> None:
        """
        Without a proxy, a host name IDNA 2008 refuses (Twisted's
        C{HostnameEndpoint} fails it as it connects, which counted as a
        connection failure and was retried), and an IPv6 zone ID (which
        treq's URL parser refuses), are refused before any connection.
        Through a proxy, the name is the proxy's to resolve.
        """
        downloader = self.downloader(retries=3, retryWait=30.0)
        directory = self.directory()
        for url in ("http://a_b.example:1/x", "http://-a-.example:1/x", "http://xn--:1/x"):
            error = await self.failureOf(downloader.download(url, directory), BadURL)
            self.assertReadable(error, url)
            self.assertIn("is not a valid IDNA name", str(error))
        error = await self.failureOf(downloader.download("http://[fe80::1%25lo]:1/x", directory), BadURL)
        self.assertIn("an IPv6 zone ID (the part after %25) cannot be used in a URL", str(error))
        self.assertEqual(listing(directory), [])
        self.assertEqual([e for e in self.events if e.get("event") == "retry"], [])
        proxy, base = await startHostile(self, "canned", canned=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        result = await self.downloader(proxy=base).download("http://a_b.example/x", directory)
        self.assertEqual(result.path.read_bytes(), b"ok")
        self.assertEqual(proxy.requests, 1)

    async def test_backslashesInLocationReadAsBrowsersRead(self) -> None:
        """
        A backslash before a C{Location}'s query is a slash, as the URL
        Standard (and browsers) read it: C{http://a.example\\@b.example/x}
        was fetched from b.example (as user info and host), and
        C{http:\\\\b.example\\x} as a path on the first host.  In the
        query it stays itself.
        """
        directory = self.directory()
        cases = {
            b"http://a.example\\@b.example/x": b"GET http://a.example/@b.example/x HTTP/1.1",
            b"http:\\\\b.example\\x": b"GET http://b.example/x HTTP/1.1",
            b"\\\\c.example\\y?q=\\": b"GET http://c.example/y?q=%5C HTTP/1.1",
        }
        for location, line in cases.items():
            canned = b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (location,)
            proxy, base = await startHostile(self, "canned", canned=canned)
            await self.failureOf(
                self.downloader(proxy=base, retries=0).download("http://start.example/x", directory), RedirectError
            )
            self.assertEqual(proxy.requestLines[1], line, location)
        self.assertEqual(splitURL("http://a.example\\@b.example/x?\\")[0], "http://a.example/@b.example/x?%5C")
        self.assertEqual(splitURL("HTTPS:\\\\b.example\\x")[0], "https://b.example/x")

    async def test_httpsNamesThroughAProxyRefused(self) -> None:
        """
        Through a proxy, an C{https} URL (given, or in a redirect) whose
        host name IDNA 2008 refuses fails at once in a sentence: no
        certificate can be checked for it (Twisted's TLS raised inside the
        download, which was logged with a traceback as an internal error).
        With C{insecure}, nothing is checked and the proxy is asked.
        """
        directory = self.directory()
        proxy, base = await startHostile(
            self, "canned", canned=b"HTTP/1.1 302 Found\r\nLocation: https://a_b.example/y\r\nContent-Length: 0\r\n\r\n"
        )
        error = await self.failureOf(
            self.downloader(proxy=base, retries=0).download("https://a_b.example/x", directory), BadURL
        )
        self.assertIn("'a_b.example' is not a valid IDNA name", str(error))
        self.assertIn("so no certificate can be checked for it (--insecure checks none)", str(error))
        error = await self.failureOf(
            self.downloader(proxy=base, retries=0).download("http://start.example/x", directory), RedirectError
        )
        self.assertIn("redirected to https://a_b.example/y, which cannot be fetched: the host name 'a_b.example'", str(error))
        self.assertEqual(proxy.requestLines, [b"GET http://start.example/x HTTP/1.1"])
        await self.failureOf(
            self.downloader(proxy=base, retries=0, insecure=True).download("https://a_b.example/x", directory),
            DownloadError,
        )
        self.assertEqual(proxy.requestLines[1:], [b"CONNECT a_b.example:443 HTTP/1.1"])
        self.assertEqual(listing(directory), [])

    async def test_nonASCIIHostsSentAsBrowsersSendThem(self) -> None:
        """
        A host name that is not ASCII is sent (in the request line and the
        C{Host} header, here to a proxy) in the IDNA form browsers and
        Twisted use: IDNA 2008 with the UTS #46 mapping, non-transitional.
        Python's IDNA 2003 codec fetched C{fass.de} for C{faß.de},
        and refused right-to-left labels that end in a digit.
        """
        directory = self.directory()
        downloader = self.downloader(proxy=self.origin.base, retries=0)
        cases = {
            "http://faß.de/x": "xn--fa-hia.de",
            "http://\u03c2.gr/x": "xn--3xa.gr",
            "http://\u05e9\u05dc\u05d5\u05dd1.example/x": "xn--1-9hcuf1d.example",
            "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com:8080/x": "example.com:8080",
        }
        for url in cases:
            await self.failureOf(downloader.download(url, directory), DownloadError)
        self.assertEqual([r.uri for r in self.origin.requests], [f"http://{host}/x" for host in cases.values()])
        self.assertEqual([r.headers["host"] for r in self.origin.requests], list(cases.values()))

    async def test_utf8LocationReadAsUTF8(self) -> None:
        """
        A C{Location} in UTF-8 (as servers send it, and browsers and curl
        read it) is followed to the host and path it names (here through a
        proxy, which sees the host).  It was read as Latin-1:
        C{fête.example} became C{xn--fate-goa.example} (another host),
        C{faß.de} a refused name, and C{/f/é} the path C{/f/%C3%83%C2%A9}.
        A byte that is not UTF-8 is still sent as it came.
        """
        directory = self.directory()
        cases = {
            "http://fête.example/f/é": b"GET http://xn--fte-fma.example/f/%C3%A9 HTTP/1.1",
            "http://faß.de/x?q=ü": b"GET http://xn--fa-hia.de/x?q=%C3%BC HTTP/1.1",
            "/f/\udce9?\udcff": b"GET http://start.example/f/%E9?%FF HTTP/1.1",
        }
        for to, line in cases.items():
            location = to.encode("utf-8", "surrogateescape")
            canned = b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (location,)
            proxy, base = await startHostile(self, "canned", canned=canned)
            await self.failureOf(
                self.downloader(proxy=base, retries=0).download("http://start.example/x", directory), RedirectError
            )
            self.assertEqual(proxy.requestLines[:2], [b"GET http://start.example/x HTTP/1.1", line])
        self.assertEqual(listing(directory), [])

    async def test_unparseableURLHidesPassword(self) -> None:
        """
        The error for a URL that cannot be parsed at all (a bad IPv6
        literal, a port out of range) shows its password as C{***}, as
        every other message does (it showed it as given).
        """
        for url in ("http://user:secret@[::1/x", "http://user:secret@example.com:99999/x"):
            error = await self.failureOf(self.downloader().download(url, self.directory()), BadURL)
            self.assertNotIn("secret", str(error))
            self.assertIn("user:***@", str(error))

    async def test_emptyPortIsTheDefault(self) -> None:
        """
        C{http://host:/path} is C{http://host/path} (RFC 3986 3.2.3).
        """
        self.assertEqual(splitURL("http://example.com:/a?b")[0], "http://example.com/a?b")
        self.assertEqual(splitURL("https://[::1]:/")[0], "https://[::1]/")

    async def test_ipv6Literal(self) -> None:
        """
        A URL with an IPv6 literal host downloads, segments included
        (hyperlink's URI conversion, which treq uses, cannot encode one).
        """
        try:
            origin = Origin("v6").start(self, interface="::1")
        except Exception as e:
            raise SkipTest(f"no IPv6 loopback here: {e}")
        directory = self.directory()
        url = origin.url("/file/v6.bin?size=5000000")
        result = await self.downloader(minSplitSize=1 * MiB).download(url, directory)
        self.assertTrue(url.startswith("http://[::1]:"), url)
        self.assertSaved(result, directory / "v6.bin", origin.digest("/file/v6.bin", 5_000_000), 5_000_000)
        self.assertGreater(len(origin.gets("/file/v6.bin")), 1)


class RedirectTests(EngineTestCase):
    """
    Redirect chains, limits, refused schemes, credentials across origins.
    """

    async def test_chainFollowed(self) -> None:
        """
        A chain of C{maxRedirects} redirects is followed to the file.
        """
        directory = self.directory()
        url = self.origin.hopURL(3, "/file/target.bin")
        result = await self.downloader(maxRedirects=3).download(url, directory, name="target.bin")
        self.assertSaved(result, directory / "target.bin", self.origin.digest("/file/target.bin"))
        self.assertEqual(len(self.origin.seen("/hop")), 3)

    async def test_permanentAndTemporaryCodes(self) -> None:
        """
        301, 303, 307 and 308 are followed like 302.
        """
        downloader = self.downloader()
        for code in (301, 303, 307, 308):
            directory = self.directory()
            url = self.origin.hopURL(1, f"/file/code{code}.bin", code=code)
            result = await downloader.download(url, directory, name="out.bin")
            self.assertSaved(result, directory / "out.bin", self.origin.digest(f"/file/code{code}.bin"))

    async def test_tooManyRedirects(self) -> None:
        """
        One redirect more than C{maxRedirects} fails with
        L{RedirectError}, and the target is never asked for.
        """
        directory = self.directory()
        url = self.origin.hopURL(4, "/file/far.bin")
        error = await self.failureOf(self.downloader(maxRedirects=3).download(url, directory), RedirectError)
        self.assertReadable(error, url)
        self.assertEqual(self.origin.seen("/file/far.bin"), [])
        self.assertLessEqual(len(self.origin.seen("/hop")), 4)
        self.assertEqual(listing(directory), [])

    async def test_defaultIsTenRedirects(self) -> None:
        """
        By default ten redirects are followed, and the eleventh is refused.
        """
        directory = self.directory()
        result = await self.downloader().download(self.origin.hopURL(10, "/file/ten.bin"), directory, name="ten.bin")
        self.assertSaved(result, directory / "ten.bin", self.origin.digest("/file/ten.bin"))
        url = self.origin.hopURL(11, "/file/eleven.bin")
        await self.failureOf(self.downloader().download(url, directory), RedirectError)
        self.assertEqual(self.origin.seen("/file/eleven.bin"), [])

    async def test_redirectLoop(self) -> None:
        """
        A redirect to itself ends with L{RedirectError}, not forever.
        """
        directory = self.directory()
        url = self.origin.url("/loop")
        error = await self.failureOf(self.downloader(maxRedirects=5).download(url, directory), RedirectError)
        self.assertReadable(error, url)
        self.assertLessEqual(len(self.origin.seen("/loop")), 6 * 3)  # even with retries, bounded

    async def test_otherSchemesRefused(self) -> None:
        """
        Redirects to C{file:}, C{data:} and C{ftp:} URLs are refused and
        nothing is written.
        """
        downloader = self.downloader()
        for target in ("file:///etc/passwd", "data:text/plain;base64,aGk=", "ftp://127.0.0.1/x"):
            directory = self.directory()
            url = self.origin.hopURL(1, target)
            error = await self.failureOf(downloader.download(url, directory), BadURL, RedirectError)
            self.assertReadable(error, url)
            self.assertEqual(listing(directory), [], target)

    async def test_badURLs(self) -> None:
        """
        URLs that are not http or https, or have no host, fail with
        L{BadURL} and reach nothing.
        """
        downloader = self.downloader()
        directory = self.directory()
        for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hi", "http:///nohost", "not a url"):
            error = await self.failureOf(downloader.download(url, directory), BadURL)
            self.assertIsInstance(error, DownloadError)
            self.assertNotIn("\n", str(error))
        self.assertEqual(self.origin.requests, [])
        self.assertEqual(listing(directory), [])

    async def test_spacesInALocationEncoded(self) -> None:
        """
        Spaces and control characters in a C{Location}'s path and query are
        sent percent-encoded, as browsers, curl, wget and aria2c send them
        (they were refused as "the URL contains spaces or control
        characters"); in its host they are still refused.
        """
        directory = self.directory()
        url = self.origin.hopURL(1, "/file/my file.bin?a=b c\x01")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "my file.bin", self.origin.digest("/file/my%20file.bin"))
        [request] = self.origin.seen("/file/my%20file.bin")
        self.assertEqual(request.uri, "/file/my%20file.bin?a=b%20c%01")
        url = self.origin.hopURL(1, "http://bad host.example/x.bin")
        error = await self.failureOf(self.downloader(retries=0).download(url, directory), RedirectError)
        self.assertIn("the URL contains spaces or control characters", str(error))

    async def test_urlCredentialsStayWithTheirOrigin(self) -> None:
        """
        C{user:password@} in the URL becomes Basic Authorization for that
        origin, and is not sent to another origin a redirect leads to.
        """
        other = startOrigin(self, "second")
        directory = self.directory()
        url = self.origin.hopURL(1, other.url("/file/elsewhere.bin"))
        url = url.replace("://", "://user:s3cret@", 1)
        result = await self.downloader().download(url, directory, name="elsewhere.bin")
        self.assertSaved(result, directory / "elsewhere.bin", other.digest("/file/elsewhere.bin"))
        expected = "Basic " + base64.b64encode(b"user:s3cret").decode()
        self.assertEqual(self.origin.seen("/hop")[0].headers.get("authorization"), expected)
        self.assertTrue(other.seen("/file/elsewhere.bin"))
        for r in other.requests:
            self.assertNotIn("authorization", r.headers)

    async def test_bytesThatAreNotUTF8AreSentAsGiven(self) -> None:
        """
        A URL typed in another encoding reaches the engine with surrogates
        for its bytes that are not UTF-8 (Python decodes arguments so): they
        are sent percent-encoded as the bytes they were, in the path and the
        query, and in credentials, rather than failing with a codec error.
        """
        directory = self.directory()
        undecodable = b"/file/caf\xe9.bin?q=\xe9".decode("utf-8", "surrogateescape")
        url = self.origin.url(undecodable).replace("://", "://us\udce9r:p%E9ss:%C3%AB@", 1)
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "caf%E9.bin", self.origin.digest("/file/caf%E9.bin"))
        [request] = self.origin.seen("/file/caf%E9.bin")
        self.assertEqual(request.uri, "/file/caf%E9.bin?q=%E9")
        expected = "Basic " + base64.b64encode(b"us\xe9r:p\xe9ss:\xc3\xab").decode()
        self.assertEqual(request.headers.get("authorization"), expected)

    async def test_authorizationHeaderStaysWithItsOrigin(self) -> None:
        """
        An C{Authorization} header given with the request goes to the first
        origin only, not to another one after a redirect.
        """
        other = startOrigin(self, "second")
        directory = self.directory()
        url = self.origin.hopURL(2, other.url("/file/token.bin"))
        result = await self.downloader().download(
            url, directory, name="token.bin", headers={"Authorization": "Bearer t0ken", "X-Extra": "yes"}
        )
        self.assertSaved(result, directory / "token.bin", other.digest("/file/token.bin"))
        for r in self.origin.seen("/hop"):
            self.assertEqual(r.headers.get("authorization"), "Bearer t0ken")
            self.assertEqual(r.headers.get("x-extra"), "yes")
        self.assertTrue(other.requests)
        for r in other.requests:
            self.assertNotIn("authorization", r.headers)


class ExpiringLinkTests(EngineTestCase):
    """
    A URL that redirects to a link that expires (GitHub's release assets, S3
    pre-signed URLs): connections that start after it expired, and retries,
    follow the redirect again from the URL given (see C{/sign} of
    L{Origin}).
    """

    def setUp(self) -> None:
        super().setUp()
        self.files = startOrigin(self, "files")
        self.origin.linksTo = self.files

    def signed(self, name: str, query: str) -> str:
        """
        The URL of the first origin that redirects to a new link to
        C{/file/NAME?QUERY} of the second.
        """
        return self.origin.url(f"/sign/{name}?{query}")

    def assertFollowedAgain(self, path: str) -> None:
        """
        Links of C{path} expired and the redirect was asked for again, at
        most once for each request to an expired link (a connection that
        finds its link expired may try one another connection has just
        got first).
        """
        expired = [r for r in self.files.gets(path) if r.status == 403]
        self.assertTrue(expired)
        self.assertIn(len(self.origin.gets(path.replace("/file/", "/sign/"))), range(2, 2 + len(expired)))

    async def test_newConnectionsFollowTheRedirectAgain(self) -> None:
        """
        A segmented file whose link works for one request only: each
        connection that joins it gets a 403 from the link, follows the
        redirect again, and fetches its range from the new link, with the
        file's validator in C{If-Range}.  It failed with the 403, and
        stopped the connection under way.
        """
        directory = self.directory()
        size = 2 * 2**20
        url = self.signed("seg.bin", f"size={size}&rate=4000000&uses=1")
        result = await self.downloader(segments=4, minSplitSize=2**20).download(url, directory)
        path = "/file/seg.bin"
        self.assertSaved(result, directory / "seg.bin", self.files.digest(path, size), size)
        self.assertGreater(result.segments, 1)
        self.assertFollowedAgain(path)
        later = [r for r in self.files.gets(path)[1:] if r.status == 206]
        self.assertTrue(later)
        for r in later:
            self.assertEqual(r.ifRange, self.files.etag(path))

    async def test_retryFollowsTheRedirectAgain(self) -> None:
        """
        A retry after a broken transfer asks the link, finds it expired,
        and goes on from the bytes on disk by a new link.
        """
        directory = self.directory()
        url = self.signed("retry.bin", "reset=300000&resetTimes=1&uses=1")
        result = await self.downloader(segments=1).download(url, directory)
        path = "/file/retry.bin"
        self.assertSaved(result, directory / "retry.bin", self.files.digest(path))
        self.assertEqual([r.status for r in self.files.gets(path)], [206, 403, 206])
        self.assertEqual(self.files.gets(path)[-1].rangeStart, self.files.gets(path)[0].sent)
        self.assertFollowedAgain(path)

    async def test_followedAgainOnce(self) -> None:
        """
        When the new link is refused too, the download fails at once (a
        4xx is not retried), naming the URL that answered: the new link.
        """
        directory = self.directory()
        url = self.signed("once.bin", "reset=300000&resetTimes=1&uses=1&links=1")
        error = await self.failureOf(self.downloader(segments=1).download(url, directory), HTTPStatusError)
        self.assertEqual(error.status, 403)
        link = self.files.url("/file/once.bin?reset=300000&resetTimes=1&uses=1&links=1&link=1")
        self.assertEqual(str(error), f"{url}: redirected to {link}, which answered 403 Forbidden")
        self.assertEqual([r.status for r in self.files.gets("/file/once.bin")], [206, 403, 403])
        self.assertEqual(len(self.origin.gets("/sign/once.bin")), 2)

    async def test_errorNamesTheURLThatAnswered(self) -> None:
        """
        A 4xx after a redirect names the URL that answered, and the one
        given (it named only the one given); without a redirect, as before.
        """
        directory = self.directory()
        url = self.signed("gone.bin", "status=410")
        error = await self.failureOf(self.downloader().download(url, directory), HTTPStatusError)
        link = self.files.url("/file/gone.bin?status=410&link=0")
        self.assertEqual(str(error), f"{url}: redirected to {link}, which answered 410 Gone")
        url = self.files.url("/file/gone.bin?status=410")
        error = await self.failureOf(self.downloader().download(url, directory), HTTPStatusError)
        self.assertEqual(str(error), f"{url}: the server answered 410 Gone")

    async def test_changedFileStartsOver(self) -> None:
        """
        A new link to a changed file (If-Range no longer matches) starts
        the download over cleanly, and the file saved is the new one.
        """
        directory = self.directory()
        size = 2 * 2**20
        url = self.signed("changed.bin", f"size={size}&rate=4000000&change=1&uses=1")
        result = await self.downloader(segments=4, minSplitSize=2**20).download(url, directory)
        path = "/file/changed.bin"
        self.assertEqual(self.files.versions[path], 1)
        self.assertSaved(result, directory / "changed.bin", self.files.digest(path, size), size)

    async def test_mirrorsWithETagsOfTheirOwn(self) -> None:
        """
        New links to mirrors that each have an ETag of their own: the file
        goes on as one stream, as for any file whose ETag changes within
        a run, and arrives whole.
        """
        directory = self.directory()
        size = 2 * 2**20
        url = self.signed("mirror.bin", f"size={size}&rate=4000000&mirrors=1&uses=1")
        result = await self.downloader(segments=4, minSplitSize=2**20).download(url, directory)
        path = "/file/mirror.bin"
        self.assertSaved(result, directory / "mirror.bin", self.files.digest(path, size), size)
        self.assertEqual(self.files.gets(path)[-1].status, 200)

    async def test_linksThatExpireInTime(self) -> None:
        """
        Two segmented files whose links expire 0.2 s after they were made,
        each file taking longer than that (as 'netsuite-get -j 4 -x 4' of
        two release assets): both arrive.
        """
        directory = self.directory()
        size = 2 * 2**20
        downloader = self.downloader(segments=4, maxConnections=4, minSplitSize=2**20)
        results = await downloader.downloadAll(
            [DownloadRequest(url=self.signed(f"timed{n}.bin", f"size={size}&rate=2000000&life=0.2"), directory=directory)
             for n in (1, 2)]
        )
        for n, result in zip((1, 2), results):
            self.assertSaved(result, directory / f"timed{n}.bin", self.files.digest(f"/file/timed{n}.bin", size), size)

    async def test_oneConnectionFollowsTheRedirectAgainForAll(self) -> None:
        """
        The connections joining a segmented file whose first link worked
        once all find it expired at once: one follows the redirect again,
        the others wait for its link and use it, as later connections do:
        two links asked for in all (each connection followed it on its own:
        four).
        """
        directory = self.directory()
        size = 2 * 2**20
        url = self.signed("shared.bin", f"size={size}&rate=4000000&uses=1&lasting=1")
        result = await self.downloader(segments=4, minSplitSize=2**20).download(url, directory)
        path = "/file/shared.bin"
        self.assertSaved(result, directory / "shared.bin", self.files.digest(path, size), size)
        self.assertGreater(result.segments, 2)
        self.assertEqual(len(self.origin.gets("/sign/shared.bin")), 2)
        self.assertEqual({r.uri.rpartition("link=")[2] for r in self.files.gets(path) if r.status == 206}, {"0", "1"})

    async def test_linksRevokedWhenANewOneIsMade(self) -> None:
        """
        A server that revokes a link when it makes a newer one (and each
        link works once): the connections that find theirs expired follow
        the redirect again one at a time, so that none revokes the link
        another has just got, and the file arrives (it failed with 403 in
        two runs of three).
        """
        directory = self.directory()
        size = 2 * 2**20
        url = self.signed("revoked.bin", f"size={size}&rate=4000000&uses=1&newer=1")
        result = await self.downloader(segments=4, minSplitSize=2**20).download(url, directory)
        path = "/file/revoked.bin"
        self.assertSaved(result, directory / "revoked.bin", self.files.digest(path, size), size)
        self.assertGreater(result.segments, 2)

    async def test_brokenConnectionsFollowTheRedirectAgainOnce(self) -> None:
        """
        Every connection of a file broken at once after its link expired
        (a network blip): the retries share one new link (each followed
        the redirect on its own: 5 links asked for).
        """
        directory = self.directory()
        size = 4 * 2**20
        url = self.signed("blip.bin", f"size={size}&rate=4000000&reset=300000&resetTimes=4&uses=4&lasting=1")
        result = await self.downloader(segments=4, minSplitSize=2**20).download(url, directory)
        path = "/file/blip.bin"
        self.assertSaved(result, directory / "blip.bin", self.files.digest(path, size), size)
        self.assertEqual(len(self.origin.gets("/sign/blip.bin")), 2)

    async def test_linkAnsweringTooManyRequestsIsRetried(self) -> None:
        """
        A 429 (or 408) from the link is retried after its Retry-After with
        the same link, not taken for an expired one.
        """
        directory = self.directory()
        query = "reset=300000&resetTimes=1&fail=1&failFrom=1&failStatus=429&retryAfter=0"
        result = await self.downloader(segments=1).download(self.signed("busy.bin", query), directory)
        path = "/file/busy.bin"
        self.assertSaved(result, directory / "busy.bin", self.files.digest(path))
        self.assertEqual(
            [(r.status, r.uri.rpartition("link=")[2]) for r in self.files.gets(path)], [(206, "0"), (429, "0"), (206, "0")]
        )
        self.assertEqual(len(self.origin.gets("/sign/busy.bin")), 1)

    async def test_expiredLinkAnswering400(self) -> None:
        """
        A link that answers 400 once expired (as Google Cloud Storage and
        R2 do) is followed to again as a 403 is.
        """
        directory = self.directory()
        url = self.signed("bad.bin", "reset=300000&resetTimes=1&uses=1&expired=400")
        result = await self.downloader(segments=1).download(url, directory)
        path = "/file/bad.bin"
        self.assertSaved(result, directory / "bad.bin", self.files.digest(path))
        self.assertEqual([r.status for r in self.files.gets(path)], [206, 400, 206])
        self.assertEqual(len(self.origin.gets("/sign/bad.bin")), 2)

    async def test_unexpectedAnswerFromTheLinkIsNotFollowedAgain(self) -> None:
        """
        A status that is not an error (204) from the link of a file under
        way fails it, naming the link, without following the redirect
        again: the link did not expire.
        """
        directory = self.directory()
        query = "reset=300000&resetTimes=1&fail=1&failFrom=1&failStatus=204"
        url = self.signed("empty.bin", query)
        error = await self.failureOf(self.downloader(segments=1).download(url, directory), HTTPStatusError)
        link = self.files.url(f"/file/empty.bin?{query}&link=0")
        self.assertEqual(str(error), f"{url}: redirected to {link}, which sent an unexpected answer 204")
        self.assertEqual(len(self.origin.gets("/sign/empty.bin")), 1)

    async def test_invalidStatusNamesTheURLThatAnswered(self) -> None:
        """
        A status no HTTP has, after a redirect, names the URL that answered.
        """
        directory = self.directory()
        url = self.signed("odd.bin", "status=600")
        error = await self.failureOf(self.downloader().download(url, directory), DownloadError)
        link = self.files.url("/file/odd.bin?status=600&link=0")
        self.assertEqual(str(error), f"{url}: redirected to {link}, whose answer is not valid HTTP (status 600)")

    async def test_newLinkOnAnotherOriginCountsLaterConnectionsThere(self) -> None:
        """
        A link followed to again that is on another origin (a mirror): the
        connections that follow wait for a slot there, not at the origin
        of the link that expired.
        """
        directory = self.directory()
        other = startOrigin(self, "other")
        downloader = self.downloader(segments=1)
        asked: list = []
        acquire = downloader._slots.acquire
        downloader._slots.acquire = lambda key, number=None: (asked.append(key), acquire(key, number))[1]
        url = self.signed("moved.bin", "size=2000000&rate=2000000&reset=300000&resetTimes=1&uses=1&lasting=1")
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        await self.files.waitForSent("/file/moved.bin", 100000)
        # The next link is to the other origin, and lasts (its number 1).
        other.links.append([0, 0.0])
        self.origin.linksTo = other
        result = await job.deferred
        self.assertSaved(result, directory / "moved.bin", other.digest("/file/moved.bin", 2000000), 2000000)
        self.assertEqual([r.status for r in other.gets("/file/moved.bin")], [206, 206])
        self.assertEqual(asked, [engineModule.origin(u) for u in (url, self.files.url("/"), other.url("/"))])

    async def test_resumeAsksTheURLGiven(self) -> None:
        """
        A download resumed by a later run (or the service after a restart)
        asks the URL given, not the link its state file names, which has
        expired since.
        """
        directory = self.directory()
        size = 2 * 2**20
        url = self.signed("later.bin", f"size={size}&rate=2000000&uses=1")
        downloader = self.downloader(segments=1)
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        await self.files.waitForSent("/file/later.bin", 300000)
        self.assertTrue(downloader.cancel(job.id))
        await self.failureOf(job.deferred, defer.CancelledError)
        with open(directory / "later.bin.part.json") as f:
            self.assertIn("link=0", json.load(f)["finalUrl"])
        result = await self.downloader(segments=1).download(url, directory)
        self.assertSaved(result, directory / "later.bin", self.files.digest("/file/later.bin", size), size)
        self.assertGreater(result.resumedFrom, 0)
        self.assertEqual([r.status for r in self.files.gets("/file/later.bin")], [206, 206])
        self.assertEqual(len(self.origin.gets("/sign/later.bin")), 2)


class NameTests(EngineTestCase):
    """
    Where files land: hostile names, wanted names, existing files.
    """

    async def test_hostileContentDispositionStaysInside(self) -> None:
        """
        Names from C{Content-Disposition} that try to leave the directory,
        hide, or carry control characters give a plain file inside it.
        """
        cases = [
            ('attachment; filename="../../etc/passwd"', "passwd"),
            ("attachment; filename*=UTF-8''..%2F..%2Fx", "x"),
            ('attachment; filename="a\x01b\x7fc.txt"', "abc.txt"),
            ('attachment; filename=".hidden"', "hidden"),
            ('attachment; filename="/abs/path.bin"', "path.bin"),
            ('attachment; filename="..\\\\..\\\\win.ini"', "win.ini"),
            ('attachment; filename="planted.part.json"', "planted.part.json_"),
            ('attachment; filename="other.PART"', "other.PART_"),
        ]
        downloader = self.downloader()
        parent = self.directory()
        for number, (cd, expected) in enumerate(cases):
            directory = parent / f"d{number}"
            directory.mkdir()
            path = f"/file/cd{number}"
            url = self.origin.url(f"{path}?size=1000&cd={quote(cd, safe='')}")
            result = await downloader.download(url, directory)
            self.assertEqual(os.path.dirname(os.path.abspath(result.path)), str(directory), cd)
            self.assertEqual(Path(result.path).name, expected, cd)
            self.assertSaved(result, directory / expected, self.origin.digest(path, 1000), 1000)
        self.assertEqual(
            listing(parent), sorted([f"d{n}" for n in range(len(cases))] + [f"d{n}/{e}" for n, (_, e) in enumerate(cases)])
        )

    async def test_contentDispositionNotUTF8KeepsItsBytesEncoded(self) -> None:
        """
        A C{Content-Disposition} name in bytes that are not UTF-8 (Latin-1
        here) is saved with those bytes percent-encoded, as a URL's are, so
        two such names are two files: each byte became U+FFFD, and both
        were saved as one mangled name.
        """
        directory = self.directory()
        downloader = self.downloader()
        for number, raw in enumerate((b"\xe9t\xe9.txt", b"\xf0t\xf0.txt")):
            path = f"/file/latin{number}"
            cd = quote(b'attachment; filename="' + raw + b'"', safe="")
            result = await downloader.download(self.origin.url(f"{path}?size=1000&cd={cd}"), directory)
            expected = "".join("%%%02X" % b if b > 0x7F else chr(b) for b in raw)
            self.assertSaved(result, directory / expected, self.origin.digest(path, 1000), 1000)
        self.assertEqual(listing(directory), ["%E9t%E9.txt", "%F0t%F0.txt"])

    async def test_wantedNameIsSanitised(self) -> None:
        """
        A wanted name (C{name=}) is still reduced to a plain name inside the
        directory.
        """
        parent = self.directory()
        directory = parent / "inner"
        directory.mkdir()
        result = await self.downloader().download(
            self.origin.url("/file/any?size=1000"), directory, name="../escape.bin"
        )
        self.assertSaved(result, directory / "escape.bin", self.origin.digest("/file/any", 1000), 1000)
        self.assertEqual(listing(parent), ["inner", "inner/escape.bin"])

    async def test_existingFilesGetNumberedNames(self) -> None:
        """
        An existing file is never overwritten: C{name.1}, then C{name.2}.
        """
        directory = self.directory()
        (directory / "num.bin").write_bytes(b"mine")
        downloader = self.downloader()
        url = self.origin.url("/file/num.bin?size=5000")
        digest = self.origin.digest("/file/num.bin", 5000)
        first = await downloader.download(url, directory)
        self.assertSaved(first, directory / "num.bin.1", digest, 5000)
        second = await downloader.download(url, directory)
        self.assertSaved(second, directory / "num.bin.2", digest, 5000)
        self.assertEqual((directory / "num.bin").read_bytes(), b"mine")
        self.assertEqual(listing(directory), ["num.bin", "num.bin.1", "num.bin.2"])

    async def test_manySameNamedFilesTryFewNames(self) -> None:
        """
        Each of many same-named downloads tries a few names, not every name
        from C{NAME.1} up (that was two C{stat} calls per name on the
        reactor: 5000 same-named files took 72 s of them).
        """
        directory = self.directory()
        tried = []
        lexists = os.path.lexists

        def counting(path: Path) -> bool:
            if os.path.basename(path).startswith("many.bin"):
                tried.append(path)
            return lexists(path)

        self.patch(os.path, "lexists", counting)
        count = 60
        requests = [
            DownloadRequest(url=self.origin.url(f"/file/many.bin?size=100&n={i}"), directory=directory)
            for i in range(count)
        ]
        results = await self.downloader().downloadAll(requests)
        self.assertTrue(all(isinstance(r, DownloadResult) for r in results), results)
        self.assertEqual(listing(directory), sorted(["many.bin"] + [f"many.bin.{n}" for n in range(1, count)]))
        # Searching from NAME.1 each time looked at about 1800 names here.
        self.assertLess(len(tried), 8 * count)

    async def test_danglingLinksTakeTheirNames(self) -> None:
        """
        Symbolic links to nowhere under the name and the next numbered one
        take those names: the file is saved under the next free one and the
        links stay as they were (the name search passed over them as free,
        the rename found them taken, and the two went round forever on the
        reactor, deaf to SIGTERM).
        """
        directory = self.directory()
        os.symlink("/nonexistent/netsuite-1", directory / "dangle.bin")
        os.symlink("/nonexistent/netsuite-2", directory / "dangle.bin.1")
        url = self.origin.url("/file/dangle.bin?size=1000")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "dangle.bin.2", self.origin.digest("/file/dangle.bin", 1000), 1000)
        self.assertEqual(os.readlink(directory / "dangle.bin"), "/nonexistent/netsuite-1")
        self.assertEqual(os.readlink(directory / "dangle.bin.1"), "/nonexistent/netsuite-2")

    async def test_reservedWantedNameIsResumed(self) -> None:
        """
        A wanted name ending in C{.part} is saved as C{NAME.part_}, and an
        interrupted download of it is resumed from C{NAME.part_.part}: not
        started over beside it.
        """
        directory = self.directory()
        path = "/file/reserved"
        url = self.origin.url(f"{path}?rate={2 * MiB}")
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=url, directory=directory, name="x.part"))
        await self.origin.waitForSent(path, 300 * KiB)
        await deferLater(reactor, 0.05, lambda: None)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id))
        await outcome
        self.assertEqual(listing(directory), ["x.part_.part", "x.part_.part.json"])
        result = await self.downloader().download(url, directory, name="x.part")
        self.assertSaved(result, directory / "x.part_", self.origin.digest(path))
        self.assertGreater(result.resumedFrom, 0)
        self.assertEqual(listing(directory), ["x.part_"])

    async def test_overwriteReplaces(self) -> None:
        """
        With C{overwrite}, an existing file is replaced.
        """
        directory = self.directory()
        (directory / "over.bin").write_bytes(b"old contents")
        url = self.origin.url("/file/over.bin?size=5000")
        result = await self.downloader().download(url, directory, overwrite=True)
        self.assertSaved(result, directory / "over.bin", self.origin.digest("/file/over.bin", 5000), 5000)
        self.assertEqual(listing(directory), ["over.bin"])

    async def test_overwriteWithADirectoryInTheWay(self) -> None:
        """
        With C{overwrite}, a directory under the final name fails the
        download in one sentence naming that directory (it named the
        C{.part}, which was fine); the bytes stay, to be resumed.
        """
        directory = self.directory()
        (directory / "dir.bin").mkdir()
        url = self.origin.url("/file/dir.bin?size=5000")
        error = await self.failureOf(self.downloader().download(url, directory, overwrite=True), LocalFileError)
        self.assertEqual(str(error), f"{url}: cannot write {directory / 'dir.bin'}: Is a directory")
        self.assertEqual(listing(directory), ["dir.bin", "dir.bin.part", "dir.bin.part.json"])
        (directory / "dir.bin").rmdir()
        result = await self.downloader().download(url, directory, overwrite=True)
        self.assertSaved(result, directory / "dir.bin", self.origin.digest("/file/dir.bin", 5000), 5000)
        self.assertEqual(result.resumedFrom, 5000)


class ContinueExistingTests(EngineTestCase):
    """
    C{continueExisting} (C{-c}): a file already under the final name is
    continued, and is never deleted or cut below its own length, whatever
    the server does; a download that cannot go on gives it back as it was.
    """

    path = "/file/mine.bin"
    held = 300_000

    def existing(self, directory: Path, own: bool = False) -> bytes:
        """
        Put the user's file in C{directory}: the first C{held} bytes of the
        remote file, or (C{own}) bytes of the user's own.
        """
        content = os.urandom(self.held) if own else self.origin.content(self.path, 0, self.held)
        (directory / "mine.bin").write_bytes(content)
        return content

    def assertGivenBack(self, directory: Path, content: bytes) -> None:
        """
        The user's file is back under its own name, exactly as it was, and
        nothing else is left.
        """
        self.assertEqual(listing(directory), ["mine.bin"])
        self.assertEqual((directory / "mine.bin").read_bytes(), content)

    async def test_rangeIgnoredLeavesTheFile(self) -> None:
        """
        A server that ignores Range (200 and the whole file) cannot continue
        the file: the download fails in one sentence and the file keeps its
        name and bytes.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        url = self.origin.url(self.path + "?ranges=0")
        error = await self.failureOf(self.downloader().download(url, directory, continueExisting=True), DownloadError)
        self.assertReadable(error, url)
        self.assertIn("cannot resume mine.bin: it ignores Range; the file is left as it was", str(error))
        self.assertGivenBack(directory, content)
        self.assertEqual(self.events[-1]["event"], "error")
        self.assertEqual(self.events[-1]["done"], self.held)

    async def test_continuedByAnEarlierRunNamesNoOption(self) -> None:
        """
        A file continued with C{-c} by an earlier, interrupted run is given
        back the same when this run (without C{-c}) cannot go on; the
        message does not tell the user to drop an option they did not give.
        """
        directory = self.directory()
        content = os.urandom(self.held)
        (directory / "mine.bin.part").write_bytes(content)
        url = self.origin.url(self.path + "?ranges=0")
        state = {
            "version": 1, "url": url, "finalUrl": url, "size": None, "etag": None, "lastModified": None,
            "rangesSupported": True, "done": [[0, self.held]], "checksum": None, "adopted": self.held,
        }
        (directory / "mine.bin.part.json").write_text(json.dumps(state))
        error = await self.failureOf(self.downloader().download(url, directory), DownloadError)
        self.assertIn(
            "the file is left as it was; remove it, or run again to get the new file under another name", str(error)
        )
        self.assertNotIn("-c", str(error))
        self.assertGivenBack(directory, content)

    async def test_tooLargeLeavesTheFile(self) -> None:
        """
        A remote file over C{maxSize} fails the download; the file it would
        have continued stays as it was.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        url = self.origin.url(self.path)
        await self.failureOf(self.downloader(maxSize=100_000).download(url, directory, continueExisting=True), TooLarge)
        self.assertGivenBack(directory, content)

    async def test_checksumMismatchCutsBackTheFile(self) -> None:
        """
        A download that appended every byte but fails its checksum cuts the
        file back to its own length and gives it back its name.
        """
        directory = self.directory()
        content = self.existing(directory)
        url = self.origin.url(self.path)
        await self.failureOf(
            self.downloader().download(url, directory, continueExisting=True, checksum="sha256=" + "0" * 64),
            ChecksumMismatch,
        )
        self.assertEqual(self.origin.gets(self.path)[0].rangeStart, self.held)
        self.assertGivenBack(directory, content)

    async def test_longerThanTheRemoteLeavesTheFile(self) -> None:
        """
        A file longer than the remote one (416 to its Range) is not started
        over from zero: the download fails, the file is left as it was.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        url = self.origin.url(self.path + "?size=1000")
        error = await self.failureOf(self.downloader().download(url, directory, continueExisting=True), DownloadError)
        self.assertIn("the remote file is 1000 bytes, fewer than those on disk", str(error))
        self.assertGivenBack(directory, content)

    async def test_failureBeforeAnyByteLeavesTheFile(self) -> None:
        """
        A download that fails at once (404) leaves the file under its own
        name, not as a C{.part}.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        url = self.origin.url(self.path + "?status=404")
        await self.failureOf(self.downloader().download(url, directory, continueExisting=True), HTTPStatusError)
        self.assertGivenBack(directory, content)

    async def test_retryBeforeTheFirstAnswerKeepsTheBytes(self) -> None:
        """
        A first attempt that fails (a 500) does not make the retry start
        from zero: it asks again for what follows the file, whose bytes
        stay.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        url = self.origin.url(self.path + "?fail=1")
        result = await self.downloader().download(url, directory, continueExisting=True)
        self.assertEqual([r.rangeStart for r in self.origin.gets(self.path)], [self.held, self.held])
        self.assertEqual(result.resumedFrom, self.held)
        data = (directory / "mine.bin").read_bytes()
        self.assertEqual(data[: self.held], content)
        self.assertEqual(data[self.held :], self.origin.content(self.path, self.held, DEFAULT_SIZE - self.held))

    async def test_cancelBeforeAnyByteGivesTheFileBack(self) -> None:
        """
        A download cancelled before its first answer gives the file back.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        downloader = self.downloader()
        job = downloader.submit(
            DownloadRequest(url=self.origin.url(self.path + "?hang=1"), directory=directory, continueExisting=True)
        )
        while not self.origin.gets(self.path):
            await deferLater(reactor, 0.01, lambda: None)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id))
        await outcome
        self.assertGivenBack(directory, content)

    async def test_cancelWithDiscardCutsBackTheFile(self) -> None:
        """
        C{cancel(discard=True)} of a download that appended bytes deletes
        only those: the file is cut back and keeps its name.
        """
        directory = self.directory()
        content = self.existing(directory)
        downloader = self.downloader()
        url = self.origin.url(f"{self.path}?rate={2 * MiB}")
        job = downloader.submit(DownloadRequest(url=url, directory=directory, continueExisting=True))
        await self.origin.waitForSent(self.path, 200 * KiB)
        await deferLater(reactor, 0.05, lambda: None)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id, discard=True))
        await outcome
        self.assertGivenBack(directory, content)
        self.assertEqual(job.done, self.held)

    async def test_brokenTransferIsResumedLater(self) -> None:
        """
        A transfer that breaks after appending keeps its C{.part} and state
        (which remembers the file's own length), as any interrupted
        download does; a later run resumes it into the exact file.
        """
        directory = self.directory()
        self.existing(directory)
        url = self.origin.url(f"{self.path}?reset={100 * KiB}&resetTimes=1")
        await self.failureOf(self.downloader(retries=0).download(url, directory, continueExisting=True), DownloadError)
        self.assertEqual(listing(directory), ["mine.bin.part", "mine.bin.part.json"])
        state = json.loads((directory / "mine.bin.part.json").read_text())
        self.assertEqual(state["adopted"], self.held)
        self.assertEqual(state["done"], [[0, self.held + 100 * KiB]])
        result = await self.downloader().download(url, directory, continueExisting=True)
        self.assertSaved(result, directory / "mine.bin", self.origin.digest(self.path))
        self.assertEqual(result.resumedFrom, self.held + 100 * KiB)

    async def test_resumedPartKeepsTheUsersBytes(self) -> None:
        """
        When the remote file changed before the later run, the C{.part} a
        broken C{-c} download left is not started over: the file is cut
        back to the user's bytes and given back its name.
        """
        directory = self.directory()
        content = self.existing(directory, own=True)
        url = self.origin.url(f"{self.path}?reset={100 * KiB}&resetTimes=1")
        await self.failureOf(self.downloader(retries=0).download(url, directory, continueExisting=True), DownloadError)
        self.assertEqual(listing(directory), ["mine.bin.part", "mine.bin.part.json"])
        self.origin.bump(self.path)
        error = await self.failureOf(self.downloader().download(url, directory), DownloadError)
        self.assertIn("cannot resume mine.bin: the remote file changed", str(error))
        self.assertGivenBack(directory, content)

    async def test_reservedNameIsNotAnotherDownloadsPart(self) -> None:
        """
        A wanted name ending in C{.part} is saved as C{NAME.part_}: with
        C{continueExisting} it never takes the C{.part} of another download
        for a file to continue.
        """
        directory = self.directory()
        other = b"another download's bytes"
        (directory / "foo.part").write_bytes(other)
        url = self.origin.url("/file/foo?size=5000")
        result = await self.downloader().download(url, directory, name="foo.part", continueExisting=True)
        self.assertSaved(result, directory / "foo.part_", self.origin.digest("/file/foo", 5000), 5000)
        self.assertEqual(result.resumedFrom, 0)
        self.assertEqual((directory / "foo.part").read_bytes(), other)
        self.assertEqual(listing(directory), ["foo.part", "foo.part_"])


class UnknownSizeTests(EngineTestCase):
    """
    A server that answers ranges without saying the size (C{Content-Range:
    bytes 0-999/*}): the end is asked for until a 416 says there is no more.
    """

    path = "/file/star.bin"
    size = 5000

    async def test_askedUntilNothingFollows(self) -> None:
        """
        Each range is followed by one from its end, until the 416: the file
        is complete, never cut at the first answer's end.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?size={self.size}&star=1000")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "star.bin", self.origin.digest(self.path, self.size), self.size)
        gets = self.origin.gets(self.path)
        self.assertEqual([r.rangeStart for r in gets], [0, 1000, 2000, 3000, 4000, 5000])
        self.assertEqual([r.status for r in gets], [206] * 5 + [416])
        self.assertEqual(self.events[-1]["size"], self.size)

    async def test_sizeSaidLater(self) -> None:
        """
        A later answer that names the size is taken as usual.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?size={self.size}&star=1000&starTimes=2")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "star.bin", self.origin.digest(self.path, self.size), self.size)
        self.assertEqual([r.rangeStart for r in self.origin.gets(self.path)], [0, 1000, 2000])

    async def test_wholeFileAnswerStartsOver(self) -> None:
        """
        A 200 to a later range is the whole file, taken as one stream.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?size={self.size}&star=1000&ranges=0&later=1")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "star.bin", self.origin.digest(self.path, self.size), self.size)
        self.assertEqual([r.status for r in self.origin.gets(self.path)], [206, 200])

    async def test_brokenAnswerIsAskedAgain(self) -> None:
        """
        A range that breaks is asked for again from the bytes received.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?size={self.size}&star=1000&reset=500&resetTimes=2")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "star.bin", self.origin.digest(self.path, self.size), self.size)
        self.assertEqual([r.rangeStart for r in self.origin.gets(self.path)][:3], [0, 500, 1000])

    async def test_interruptedIsResumed(self) -> None:
        """
        An interrupted download of such a file is resumed from its state
        (no size in it) and asked on from there to the end.
        """
        directory = self.directory()
        size = DEFAULT_SIZE
        url = self.origin.url(f"{self.path}?star={64 * KiB}&rate={2 * MiB}")
        state = await self.cutShort(url, directory, self.path, 200 * KiB)
        self.assertIsNone(state["size"])
        self.assertTrue(state["rangesSupported"])
        before = len(self.origin.gets(self.path))
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "star.bin", self.origin.digest(self.path, size), size)
        self.assertEqual(result.resumedFrom, state["done"][0][1])
        later = self.origin.gets(self.path)[before:]
        self.assertEqual(later[0].rangeStart, state["done"][0][1])
        self.assertEqual(later[-1].status, 416)

    async def test_maxSizeStillApplies(self) -> None:
        """
        C{maxSize} caps what is asked for in all: L{TooLarge}, nothing left.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?size={self.size}&star=1000")
        error = await self.failureOf(self.downloader(maxSize=2500).download(url, directory), TooLarge)
        self.assertReadable(error, url)
        self.assertEqual(listing(directory), [])
        self.assertLessEqual(len(self.origin.gets(self.path)), 3)

    async def test_maxSizeWhenTheSizeIsSaidLater(self) -> None:
        """
        A size named later that is over C{maxSize} fails at once.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?size={self.size}&star=1000&starTimes=1")
        await self.failureOf(self.downloader(maxSize=4000).download(url, directory), TooLarge)
        self.assertEqual(listing(directory), [])
        self.assertEqual(len(self.origin.gets(self.path)), 2)


class ChecksumAndSizeTests(EngineTestCase):
    """
    Checksums and the size cap.
    """

    async def test_checksumMatches(self) -> None:
        """
        A file whose digest matches is saved (sha256 and aria2's sha-256
        spelling, upper-case hex).
        """
        directory = self.directory()
        digest = self.origin.digest("/file/sum.bin")
        downloader = self.downloader()
        result = await downloader.download(self.origin.url("/file/sum.bin"), directory, checksum=f"sha256={digest}")
        self.assertSaved(result, directory / "sum.bin", digest)
        other = self.directory()
        result = await downloader.download(
            self.origin.url("/file/sum.bin"), other, checksum=f"sha-256={digest.upper()}"
        )
        self.assertSaved(result, other / "sum.bin", digest)

    async def test_checksumMismatch(self) -> None:
        """
        A file whose digest does not match fails with L{ChecksumMismatch}
        and never appears under its final name.
        """
        directory = self.directory()
        url = self.origin.url("/file/bad.bin")
        error = await self.failureOf(
            self.downloader(retries=0).download(url, directory, checksum="sha256=" + "0" * 64), ChecksumMismatch
        )
        self.assertReadable(error, url)
        self.assertFalse((directory / "bad.bin").exists())
        self.assertTrue(set(listing(directory)) <= {"bad.bin.part", "bad.bin.part.json"}, listing(directory))

    async def test_declaredSizeTooLarge(self) -> None:
        """
        A Content-Length above C{maxSize} fails with L{TooLarge} and saves
        nothing under the final name.
        """
        directory = self.directory()
        url = self.origin.url("/file/huge.bin")
        error = await self.failureOf(self.downloader(maxSize=100_000).download(url, directory), TooLarge)
        self.assertReadable(error, url)
        self.assertFalse((directory / "huge.bin").exists())
        self.assertEqual(len(self.origin.gets("/file/huge.bin")), 1)

    async def test_undeclaredSizeTooLarge(self) -> None:
        """
        A body without Content-Length that grows past C{maxSize} is cut off
        with L{TooLarge}; no file bigger than the cap is left.
        """
        directory = self.directory()
        url = self.origin.url("/file/sneaky.bin?length=0")
        error = await self.failureOf(self.downloader(maxSize=100_000).download(url, directory), TooLarge)
        self.assertReadable(error, url)
        self.assertFalse((directory / "sneaky.bin").exists())
        for name in listing(directory):
            self.assertLessEqual(os.path.getsize(directory / name), 100_000 + 64 * KiB)

    async def test_sizeExactlyAtCap(self) -> None:
        """
        A file of exactly C{maxSize} bytes is fine.
        """
        directory = self.directory()
        url = self.origin.url("/file/fits.bin?size=100000")
        result = await self.downloader(maxSize=100_000).download(url, directory)
        self.assertSaved(result, directory / "fits.bin", self.origin.digest("/file/fits.bin", 100_000), 100_000)



class SyncTests(EngineTestCase):
    """
    A finished file is written through to the disk, in a thread, before it
    gets its final name.
    """

    def recordSyncs(self, before: Any = None) -> List[Tuple[int, bool, bool]]:
        """
        Replace C{os.fsync} with one that records, for each call, the file's
        inode, whether it ran outside the reactor's thread and whether the
        final name then existed (L{None} until C{self.final} is set), after
        calling C{before} (in the syncing thread) if given.
        """
        calls: List[Tuple[int, bool, bool]] = []
        main = threading.current_thread()
        self.final: Optional[Path] = None

        def fsync(fd: int) -> None:
            if before is not None:
                before()
            final = self.final
            calls.append((os.fstat(fd).st_ino, threading.current_thread() is not main,
                          final is not None and final.exists()))

        self.patch(os, "fsync", fsync)
        return calls

    async def test_syncedInAThreadBeforeNamed(self) -> None:
        """
        The file is synced once, outside the reactor's thread, before its
        final name exists; the file synced is the one saved.
        """
        calls = self.recordSyncs()
        directory = self.directory()
        self.final = directory / "synced.bin"
        url = self.origin.url("/file/synced.bin")
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, self.final, self.origin.digest("/file/synced.bin"))
        self.assertEqual(calls, [(os.stat(self.final).st_ino, True, False)])

    async def test_syncedWhenReplacing(self) -> None:
        """
        With C{overwrite} the new file is synced before it replaces the old.
        """
        calls = self.recordSyncs()
        directory = self.directory()
        self.final = directory / "again.bin"
        self.final.write_bytes(b"old")
        result = await self.downloader().download(self.origin.url("/file/again.bin"), directory, overwrite=True)
        self.assertSaved(result, self.final, self.origin.digest("/file/again.bin"))
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0][0], os.stat(self.final).st_ino)

    async def test_noSync(self) -> None:
        """
        With C{sync=False} nothing is synced.
        """
        calls = self.recordSyncs()
        directory = self.directory()
        result = await self.downloader(sync=False).download(self.origin.url("/file/fast.bin"), directory)
        self.assertSaved(result, directory / "fast.bin", self.origin.digest("/file/fast.bin"))
        self.assertEqual(calls, [])

    async def test_syncFailureKeepsThePart(self) -> None:
        """
        A sync that fails (a disk error) fails the download with a readable
        L{LocalFileError}; the file does not get its final name, and its
        C{.part} stays to be resumed.
        """
        def failing(fd: int) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(os, "fsync", failing)
        directory = self.directory()
        url = self.origin.url("/file/eio.bin")
        error = await self.failureOf(self.downloader(retries=0).download(url, directory), LocalFileError)
        self.assertReadable(error, url)
        self.assertIn(os.strerror(errno.EIO), str(error))
        self.assertFalse((directory / "eio.bin").exists())
        self.assertIn("eio.bin.part", listing(directory))

    async def test_cancelWhileSyncing(self) -> None:
        """
        A download cancelled while its file is being synced stops at once
        and keeps its C{.part}; the sync still finishes on its own
        descriptor, and a new download resumes the file.
        """
        entered, release = threading.Event(), threading.Event()

        def block() -> None:
            entered.set()
            release.wait(10)

        calls = self.recordSyncs(block)
        self.addCleanup(release.set)
        directory = self.directory()
        url = self.origin.url("/file/cut.bin")
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        while not entered.is_set():
            await deferLater(reactor, 0.01, lambda: None)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id))
        await outcome
        release.set()
        for _ in range(500):
            if calls:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(calls), 1, "the sync failed on a closed descriptor")
        self.assertFalse((directory / "cut.bin").exists())
        self.assertIn("cut.bin.part", listing(directory))
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "cut.bin", self.origin.digest("/file/cut.bin"))
        self.assertEqual(result.resumedFrom, DEFAULT_SIZE)

class ResumeTests(EngineTestCase):
    """
    Interrupted downloads resumed from their state file by a new Downloader.
    """

    path = "/file/resume.bin"

    def slowURL(self) -> str:
        return self.origin.url(f"{self.path}?rate={2 * MiB}")

    async def slowDownloadUnderWay(self) -> Tuple[Path, Downloader, Any]:
        """
        Start a slow download of C{self.path} into a new directory, and
        wait until 300 KiB of it were sent: the directory, the downloader
        and the job.
        """
        directory = self.directory()
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=self.slowURL(), directory=directory))
        await self.origin.waitForSent(self.path, 300 * KiB)
        return directory, downloader, job

    async def checkResumed(self, state: Dict[str, Any], directory: Path) -> None:
        before = len(self.origin.gets(self.path))
        saved = sum(end - start for start, end in state["done"])
        result = await self.downloader().download(self.slowURL(), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(result.resumedFrom, saved)
        later = self.origin.gets(self.path)[before:]
        self.assertTrue(later)
        self.assertEqual(later[0].rangeStart, state["done"][0][1], [r.rawRange for r in later])
        self.assertEqual(later[0].ifRange, self.origin.etag(self.path))
        self.assertEqual(later[0].status, 206)

    async def test_cancelledJobResumes(self) -> None:
        """
        A job cancelled midway leaves its C{.part} and state file; a new
        Downloader asks only for the rest (Range from the saved offset,
        If-Range with the ETag) and the file is exact.
        """
        directory = self.directory()
        state = await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        self.assertEqual(state["etag"], self.origin.etag(self.path))
        self.assertEqual(state["size"], DEFAULT_SIZE)
        self.assertEqual(len(state["done"]), 1)
        self.assertEqual(state["done"][0][0], 0)
        self.assertGreater(state["done"][0][1], 0)
        self.assertLess(state["done"][0][1], DEFAULT_SIZE)
        await self.checkResumed(state, directory)

    async def test_cancelWithDiscardLeavesNothing(self) -> None:
        """
        C{cancel(jobId, discard=True)} stops the job and deletes its
        C{.part} and state file; no late save brings the state back.
        """
        directory = self.directory()
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=self.slowURL(), directory=directory))
        await self.origin.waitForSent(self.path, 300 * KiB)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(listing(directory))
        # The deleted .part is closed in a thread (freeing the blocks of a
        # large one held the reactor 0.5 s for 1.5 GB).
        inThreads: list = []
        callInThread = reactor.callInThread
        self.patch(reactor, "callInThread", lambda f, *a, **kw: inThreads.append(f) or callInThread(f, *a, **kw))
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id, discard=True))
        await outcome
        self.assertEqual(listing(directory), [])
        self.assertEqual(job.done, 0)
        self.assertIn(os.close, inThreads)
        part = str(directory / "resume.bin.part")
        await waitUntil(lambda: not any(os.readlink(f"/proc/self/fd/{fd}").startswith(part)
                                        for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")))
        self.assertFalse(downloader.cancel(job.id, discard=True))
        await deferLater(reactor, 1.2, lambda: None)
        self.assertEqual(listing(directory), [])

    async def test_partBeingWrittenIsNotResumed(self) -> None:
        """
        A second download of a URL whose C{.part} another download is still
        writing (another process, or a second job of the service) does not
        resume it, which would have two writers in one file: it saves its
        own copy as C{NAME.1}, and both files are exact.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?rate={512 * KiB}")  # the first is still writing when the second starts
        first = self.downloader().download(url, directory)
        await self.origin.waitForSent(self.path, 300 * KiB)
        self.assertTrue((directory / "resume.bin.part.json").exists())
        second = await self.downloader().download(url, directory)
        self.assertSaved(second, directory / "resume.bin.1", self.origin.digest(self.path))
        self.assertEqual(second.resumedFrom, 0)
        self.assertSaved(await first, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(listing(directory), ["resume.bin", "resume.bin.1"])

    async def test_overwriteRefusesAPartBeingWritten(self) -> None:
        """
        With C{overwrite}, a download whose C{.part} another download is
        writing fails in one sentence instead of writing into it; the other
        download is unharmed.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?rate={512 * KiB}")  # the first is still writing when the second starts
        first = self.downloader().download(url, directory)
        await self.origin.waitForSent(self.path, 300 * KiB)
        error = await self.failureOf(
            self.downloader().download(url, directory, overwrite=True), LocalFileError
        )
        self.assertEqual(str(error), f"{url}: another download is writing {directory / 'resume.bin.part'}")
        self.assertSaved(await first, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(listing(directory), ["resume.bin"])

    async def test_plantedLinkAtTheStateTemporaryIsNotFollowed(self) -> None:
        """
        A symbolic link planted where the state file's temporary copy goes
        (a download directory others can write to) is replaced, never
        written through: the file it points at keeps its bytes, and the
        download is exact.
        """
        directory = self.directory()
        victim = Path(self.mktemp())
        victim.write_bytes(b"precious\n")
        os.symlink(victim.resolve(), directory / "resume.bin.part.json.tmp")
        result = await self.downloader().download(self.origin.url(self.path), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(victim.read_bytes(), b"precious\n")
        self.assertEqual(listing(directory), ["resume.bin"])

    async def test_filesOfAnotherUserAreLeft(self) -> None:
        """
        A C{.part} or a state file that belongs to another user (planted in
        a shared directory) is not resumed, with a warning; the download
        is saved beside it from the start, and theirs keep their bytes.
        Their C{.part} was resumed: the download was their content, and
        the file given its final name still theirs.
        """
        if os.geteuid() != 0:
            raise SkipTest("making a file of another user needs root")
        url = self.origin.url(self.path)
        planted = b"#!/bin/sh\necho PWNED\n".ljust(DEFAULT_SIZE - 1, b"#")
        for whose in ("part", "state"):
            directory = self.directory()
            part = directory / "resume.bin.part"
            part.write_bytes(planted)
            state = DownloadState(url=url, finalUrl=url, size=DEFAULT_SIZE, done=[(0, DEFAULT_SIZE - 1)],
                                  rangesSupported=True, etag=self.origin.etag(self.path))
            statePathFor(part).write_text(json.dumps(state.toJSON()))
            os.chown(part if whose == "part" else statePathFor(part), 65534, 65534)
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            result = await self.downloader().download(url, directory)
            self.assertEqual(result.resumedFrom, 0)
            self.assertSaved(result, directory / "resume.bin.1", self.origin.digest(self.path))
            self.assertEqual(os.stat(directory / "resume.bin.1").st_uid, os.geteuid())
            self.assertEqual(part.read_bytes(), planted)
            warnings = {formatEvent(e) for e in events if e["log_level"] == LogLevel.warn}
            self.assertEqual(len(warnings), 1, warnings)
            self.assertIn("it belongs to another user", warnings.pop())

    async def test_partMadeMeanwhileIsNotTaken(self) -> None:
        """
        A C{.part} made between the search for a free name and its opening
        (by another download, or planted) is not opened: the next free
        name is taken (O_EXCL), and that file keeps its bytes.
        """
        directory = self.directory()
        part = directory / "resume.bin.part"
        realFreePath = engineModule.names.freePath
        planted = []

        def freePath(*args: Any, **kwargs: Any) -> Path:
            found = realFreePath(*args, **kwargs)
            if not planted:
                planted.append(found)
                part.write_bytes(b"someone else's")
            return found

        self.patch(engineModule.names, "freePath", freePath)
        result = await self.downloader().download(self.origin.url(self.path), directory)
        self.assertSaved(result, directory / "resume.bin.1", self.origin.digest(self.path))
        self.assertEqual(part.read_bytes(), b"someone else's")

    async def test_newPartOfAnotherOwnerOnSomeFileSystems(self) -> None:
        """
        A C{.part} made here (O_EXCL) is this download's, whoever the file
        system says owns it (NFS with root_squash, a vfat mount's uid=):
        every download failed with "it belongs to another user".
        """
        uid = os.geteuid()
        self.patch(os, "geteuid", lambda: uid + 1)
        directory = self.directory()
        result = await self.downloader().download(self.origin.url(self.path), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))

    async def test_partReplacedWhileDownloading(self) -> None:
        """
        A C{.part} removed or replaced while its download runs (by another
        program, or another user in a shared directory) is not given the
        final name, and what took its place is left as it is, its state
        file too: the other file was named as the verified download, and
        its own state file deleted.
        """
        directory, downloader, job = await self.slowDownloadUnderWay()
        part = directory / "resume.bin.part"
        other = directory / "other"
        other.write_bytes(b"another download's bytes")
        os.replace(other, part)
        theirs = directory / "theirs.json"
        theirs.write_text("another download's state")
        os.replace(theirs, statePathFor(part))  # as a download writes it
        failure = await self.failureOf(job.deferred, LocalFileError)
        self.assertIn("resume.bin.part was removed or replaced while it downloaded", str(failure))
        self.assertFalse((directory / "resume.bin").exists())
        self.assertEqual(part.read_bytes(), b"another download's bytes")
        self.assertEqual(statePathFor(part).read_text(), "another download's state")

    async def test_partReplacedThenCancelled(self) -> None:
        """
        A download whose C{.part} was replaced (here by a symbolic link to
        the very file it writes, which C{stat} would take for it) and that
        is then cancelled with its files discarded leaves what took the
        C{.part}'s place as it is.
        """
        directory, downloader, job = await self.slowDownloadUnderWay()
        part = directory / "resume.bin.part"
        hidden = directory / "hidden"
        os.rename(part, hidden)
        os.symlink(hidden, part)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id, discard=True))
        await outcome
        self.assertTrue(os.path.islink(part))
        self.assertTrue(hidden.exists())

    async def test_partReplacedNotResumedLater(self) -> None:
        """
        A C{.part} replaced while its download runs (the state file left as
        this download wrote it): the state file goes with the failure, and
        a later run does not resume the other file from it.  It did: the
        file saved under the final name began with the other file's bytes.
        """
        directory = self.directory()
        url = self.origin.url(f"{self.path}?rate={256 * KiB}")
        job = self.downloader().submit(DownloadRequest(url=url, directory=directory))
        part = directory / "resume.bin.part"
        await waitUntil(lambda: statePathFor(part).exists() and json.loads(statePathFor(part).read_text())["done"])
        size = part.stat().st_size
        other = directory / "other"
        other.write_bytes(b"X" * size)
        os.replace(other, part)
        await self.failureOf(job.deferred, LocalFileError)
        self.assertFalse(statePathFor(part).exists())
        result = await self.downloader().download(url, directory)
        self.assertEqual(result.resumedFrom, 0)
        self.assertEqual(fileSHA256(result.path), self.origin.digest(self.path))

    async def test_plantedStateFilesAreIgnored(self) -> None:
        """
        State files that are not small regular files (a FIFO, which would
        block a plain open for ever; a link to a device without end; one
        too long to be real) are passed over with a warning: the download
        starts from zero and is exact.
        """
        directory = self.directory()
        os.mkfifo(directory / "a.part.json")
        os.symlink("/dev/zero", directory / "b.part.json")
        (directory / "c.part.json").write_bytes(b" " * (MAX_STATE_FILE + 1))
        for name in ("a.part", "b.part", "c.part"):
            (directory / name).write_bytes(b"")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await self.downloader().download(self.origin.url(self.path), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(result.resumedFrom, 0)
        warnings = sorted(formatEvent(e) for e in events if e["log_level"] == LogLevel.warn)
        self.assertEqual(len(warnings), 3, warnings)
        self.assertIn("not a regular file", warnings[0])
        self.assertIn("symbolic links", warnings[1])
        self.assertIn(f"longer than {MAX_STATE_FILE} bytes", warnings[2])

    async def test_partAnEarlierRunChoseIsResumed(self) -> None:
        """
        A download whose wanted name is taken writes C{NAME.1.part}; given
        that file as C{partName} later (as the download service does after
        a restart), it resumes it instead of starting over as C{NAME.2}.  A
        C{partName} whose state file names another URL is not taken.
        """
        directory = self.directory()
        (directory / "resume.bin").write_bytes(b"an older file\n")
        url = self.slowURL()
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=url, directory=directory, name="resume.bin"))
        await self.origin.waitForSent(self.path, 300 * KiB)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(job.snapshot()["name"], "resume.bin.1")
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        await downloader.stop()
        await outcome
        with open(directory / "resume.bin.1.part.json") as f:
            saved = sum(end - start for start, end in json.load(f)["done"])
        self.assertGreater(saved, 0)

        other = self.origin.url("/file/other.bin")
        result = await self.downloader().download(other, directory, name="resume.bin", partName="resume.bin.1.part")
        self.assertSaved(result, directory / "resume.bin.2", self.origin.digest("/file/other.bin"))
        self.assertEqual(result.resumedFrom, 0)

        before = len(self.origin.gets(self.path))
        result = await self.downloader().download(url, directory, name="resume.bin", partName="resume.bin.1.part")
        self.assertSaved(result, directory / "resume.bin.1", self.origin.digest(self.path))
        self.assertEqual(result.resumedFrom, saved)
        self.assertEqual(self.origin.gets(self.path)[before].rangeStart, saved)
        self.assertEqual(listing(directory), ["resume.bin", "resume.bin.1", "resume.bin.2"])

    def plantPart(self, held: int, **fields: Any) -> Path:
        """
        A new directory with C{resume.bin.part} holding the first C{held}
        bytes of the file and a state file for it, as a crash leaves them:
        the file's URL, size and ETag unless C{fields} say otherwise.
        """
        directory = self.directory()
        (directory / "resume.bin.part").write_bytes(self.origin.content(self.path, 0, held))
        url = self.origin.url(self.path)
        state = {
            "version": 1, "url": url, "finalUrl": url, "size": DEFAULT_SIZE, "etag": self.origin.etag(self.path),
            "lastModified": None, "rangesSupported": True, "done": [[0, held]], "checksum": None, **fields,
        }
        (directory / "resume.bin.part.json").write_text(json.dumps(state))
        return directory

    async def assertResumedWarning(self, url: str, directory: Path, resumedFrom: int, warning: str) -> None:
        """
        Downloading C{url} into C{directory} (with a planted C{resume.bin}
        part) saves the exact file, resumed from byte C{resumedFrom}, with
        exactly one warning, which says C{warning}.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(result.resumedFrom, resumedFrom)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(warning, warnings[0])

    async def test_stateRangesPastThePartsEndAreNotTrusted(self) -> None:
        """
        A state file that claims more bytes than its C{.part} holds (they
        never reached the disk before a crash, or the state was planted)
        counts only those on disk: the download asks for the rest and the
        file is exact, not filled with zeros.  An empty C{.part} claimed
        whole starts from zero.
        """
        url = self.origin.url(self.path)
        for held in (100 * KiB, 0):
            directory = self.plantPart(held, done=[[0, DEFAULT_SIZE]])
            await self.assertResumedWarning(url, directory, held, f"holds {held} of the bytes its state file says")

    async def test_stateRangesOverHolesAreNotTrusted(self) -> None:
        """
        A segmented download's C{.part} is made full size at once (sparse),
        so the check of its end never fired: a state file that claims the
        holes (bytes lost in a crash, or a planted state) had them taken as
        downloaded, and the file was saved with zeros in their place.  Only
        the ranges that hold data count.
        """
        url = self.origin.url(self.path)
        directory = self.plantPart(100 * KiB, done=[[0, DEFAULT_SIZE]])
        part = directory / "resume.bin.part"
        with open(part, "r+b") as f:
            f.truncate(DEFAULT_SIZE)
            f.seek(512 * KiB)
            f.write(self.origin.content(self.path, 512 * KiB, 100 * KiB))
        probe = os.open(part, os.O_RDONLY)
        try:
            if dataExtents(probe, DEFAULT_SIZE) == [(0, DEFAULT_SIZE)]:
                raise SkipTest("this file system does not report holes")
        finally:
            os.close(probe)
        await self.assertResumedWarning(url, directory, 200 * KiB, f"holds {200 * KiB} of the bytes its state file says")

    async def test_stateOfUnknownSizeKeepsOnlyItsFirstBytes(self) -> None:
        """
        A state of unknown size can only hold the first bytes of the file
        (ranges are asked for once the size is known).  One that claims
        others (damaged or planted) keeps only a range from byte 0: the
        download asks for the rest and finishes exact in one run (it asked
        from the end of the first range, and the bytes before it were
        missing until a second run).
        """
        url = self.origin.url(self.path)
        for done, kept in (([[100 * KiB, 200 * KiB]], 0), ([[0, 50 * KiB], [100 * KiB, 200 * KiB]], 50 * KiB)):
            directory = self.plantPart(200 * KiB, done=done, size=None)
            before = len(self.origin.gets(self.path))
            await self.assertResumedWarning(
                url, directory, kept, f"claims bytes past a gap; only the first {kept} are kept"
            )
            self.assertEqual([get.rangeStart for get in self.origin.gets(self.path)[before:]][:1], [kept])
            self.assertEqual(listing(directory), ["resume.bin"])

    async def test_stateWithUnsendableValidatorsIsPassedOver(self) -> None:
        """
        A state file whose ETag or Last-Modified cannot be sent back in
        C{If-Range} (not Latin-1, or control characters) is damaged: passed
        over with a warning, and the download starts afresh, never an
        internal error.
        """
        url = self.origin.url(self.path)
        for field, value in (("etag", "\u2603"), ("etag", '"a"\r\nX-Injected: 1'), ("lastModified", "\x00")):
            directory = self.plantPart(100 * KiB, **{"etag": None, field: value})
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            result = await self.downloader().download(url, directory)
            self.assertSaved(result, directory / "resume.bin.1", self.origin.digest(self.path))
            self.assertEqual(result.resumedFrom, 0)
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            self.assertTrue(warnings)
            for warning in warnings:
                self.assertIn("resume.bin.part.json: not a state file this version reads", warning)
            self.assertEqual([e for e in events if "log_failure" in e], [])

    async def test_deeplyNestedStateFileIsPassedOver(self) -> None:
        """
        A state file nested too deeply for the JSON parser (one is enough
        anywhere in the directory) is passed over with a warning: a
        download without a wanted name, which looks at every state file,
        still arrives.
        """
        directory = self.directory()
        (directory / "junk.part.json").write_text("[" * 100_000)
        (directory / "junk.part").write_bytes(b"")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await self.downloader().download(self.origin.url(self.path), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("junk.part.json: nested too deeply", warnings[0])
        self.assertEqual([e for e in events if "log_failure" in e], [])

    async def test_staleStateFilesAreReadOnce(self) -> None:
        """
        A download without a wanted name looks for a state file of its URL
        among all those in the directory; what each names is remembered
        until it changes, so stale state files are read by the first such
        download, not again by every one after it.
        """
        directory = self.directory()
        for number in range(50):
            stale = {"version": 1, "url": f"http://example.invalid/{number}", "done": []}
            (directory / f"stale{number}.part.json").write_text(json.dumps(stale))
        reads: List[str] = []
        loadState = engineModule.loadState

        def counted(path: Path) -> Any:
            reads.append(path.name)
            return loadState(path)

        self.patch(engineModule, "loadState", counted)
        downloader = self.downloader()
        first = await downloader.download(self.origin.url("/file/one.bin?size=1000"), directory)
        self.assertEqual(Path(first.path).name, "one.bin")
        self.assertEqual(len(reads), 51, reads)  # its own name's, then every one
        del reads[:]
        changed = {"version": 1, "url": "http://example.invalid/changed", "done": []}
        (directory / "stale7.part.json").write_text(json.dumps(changed))
        second = await downloader.download(self.origin.url("/file/two.bin?size=1000"), directory)
        self.assertEqual(Path(second.path).name, "two.bin")
        self.assertEqual(reads, ["two.bin.part.json", "stale7.part.json"])

    async def test_directoryListedOncePerPass(self) -> None:
        """
        Downloads without a wanted name started in one pass of the reactor
        (a service resuming its jobs) list the directory once between them,
        in a thread: each listed it, on the reactor, and 1,000 jobs resumed
        into a directory of 30,000 files held the reactor for 33 s.  One
        started later lists it again, and finds a state file written since.
        """
        directory = self.directory()
        listed: List[str] = []
        scandir = os.scandir

        def counted(path: Any) -> Any:
            if Path(path) == directory:
                listed.append(threading.current_thread().name)
            return scandir(path)

        self.patch(os, "scandir", counted)
        downloader = self.downloader()
        started = [downloader.download(self.origin.url(f"/file/f{n}.bin?size=100"), directory) for n in range(10)]
        results = await defer.gatherResults(started)
        self.assertEqual(len(listed), 1)
        self.assertNotEqual(listed[0], threading.main_thread().name, "listed on the reactor")
        self.assertEqual(sorted(Path(result.path).name for result in results), [f"f{n}.bin" for n in range(10)])
        url = self.origin.url("/file/later.bin?size=1000")
        self.stateOf(directory, url, "chosen.part")
        later = await downloader.download(url, directory)
        self.assertEqual(len(listed), 2)
        self.assertEqual(Path(later.path).name, "chosen")

    async def test_cancelledWhileListing(self) -> None:
        """
        A download cancelled while the directory is being listed for it
        ends cancelled, leaving nothing behind; the listing, once made,
        still serves the downloads that wait for it.
        """
        directory = self.directory()
        _, release = self.holdListings()
        downloader = self.downloader()
        cancelled = downloader.submit(DownloadRequest(url=self.origin.url("/file/c.bin?size=100"), directory=directory))
        other = downloader.download(self.origin.url("/file/o.bin?size=100"), directory)
        cancelled.deferred.cancel()
        release.set()
        with self.assertRaises(defer.CancelledError):
            await cancelled.deferred
        result = await other
        self.assertEqual(sorted(p.name for p in directory.iterdir()), ["o.bin"])
        self.assertEqual(Path(result.path).name, "o.bin")

    def holdListings(self) -> tuple[threading.Event, threading.Event]:
        """
        Make the directory listings hold their result in their thread until
        the second event returned is set; the first is set once a listing
        has looked through the directory.
        """
        scanned, release = threading.Event(), threading.Event()
        self.addCleanup(release.set)
        indexStates = engineModule._indexStates

        def slow(*args: Any) -> Any:
            index = indexStates(*args)
            scanned.set()
            release.wait(10)
            return index

        self.patch(engineModule, "_indexStates", slow)
        return scanned, release

    def stateOf(self, directory: Path, url: str, part: str) -> None:
        """
        Leave C{part} in C{directory}, with a state file of C{url} (ten
        bytes done).
        """
        state = DownloadState(url=url, finalUrl=url, size=1000, done=[(0, 10)])
        (directory / part).write_bytes(b"\0" * 10)
        (directory / (part + ".json")).write_text(json.dumps(state.toJSON()))

    async def test_earlierRunsPartFirst(self) -> None:
        """
        The C{.part} an earlier run chose is resumed before the one the
        URL's name would give, when both are of the URL.
        """
        directory = self.directory()
        url = self.origin.url("/file/both.bin?size=1000")
        self.stateOf(directory, url, "chosen.part")
        self.stateOf(directory, url, "both.bin.part")
        result = await self.downloader().download(url, directory, partName="chosen.part")
        self.assertEqual(Path(result.path).name, "chosen")
        self.assertTrue((directory / "both.bin.part").exists())

    async def test_namedDownloadDoesNotListTheDirectory(self) -> None:
        """
        A download with a wanted name resumes only under that name: a state
        file of its URL under another name (another job's) is left alone.
        """
        directory = self.directory()
        url = self.origin.url("/file/named.bin?size=1000")
        self.stateOf(directory, url, "other.part")
        result = await self.downloader().download(url, directory, name="wanted.bin")
        self.assertEqual(Path(result.path).name, "wanted.bin")
        self.assertTrue((directory / "other.part").exists())

    async def test_listingUnderWayNotJoinedLater(self) -> None:
        """
        A download that asks for the directory's listing in a later pass
        than one under way has its own made: the one under way may have
        missed a state file written since (here, one of its URL under
        another name, which it then resumes).
        """
        directory = self.directory()
        scanned, release = self.holdListings()  # the thread slow to hand it back
        downloader = self.downloader()
        first = downloader.download(self.origin.url("/file/a.bin?size=100"), directory)
        while not scanned.is_set():
            await deferLater(reactor, 0.01, lambda: None)
        url = self.origin.url("/file/later.bin?size=1000")
        self.stateOf(directory, url, "chosen.part")
        later = downloader.download(url, directory)
        release.set()
        await first
        self.assertEqual(Path((await later).path).name, "chosen")

    async def test_failedListingLoggedAndMadeAgain(self) -> None:
        """
        A listing that fails is logged; its download goes on as if no
        state file were there, and the next download lists again.
        """
        directory = self.directory()
        calls: List[int] = []
        indexStates = engineModule._indexStates

        def failing(*args: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return indexStates(*args)

        self.patch(engineModule, "_indexStates", failing)
        downloader = self.downloader()
        first = await downloader.download(self.origin.url("/file/a.bin?size=100"), directory)
        self.assertEqual(Path(first.path).name, "a.bin")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        url = self.origin.url("/file/later.bin?size=1000")
        self.stateOf(directory, url, "chosen.part")
        later = await downloader.download(url, directory)
        self.assertEqual((len(calls), Path(later.path).name), (2, "chosen"))

    async def test_stopWhileListing(self) -> None:
        """
        Downloads stopped while the directory is listed for them end
        cancelled, leave nothing, and keep no listing.
        """
        directory = self.directory()
        _, release = self.holdListings()
        downloader = self.downloader()
        jobs = [
            downloader.submit(DownloadRequest(url=self.origin.url(f"/file/s{n}.bin?size=100"), directory=directory))
            for n in range(3)
        ]
        stopped = downloader.stop()
        for job in jobs:
            with self.assertRaises(defer.CancelledError):
                await job.deferred
        await stopped
        release.set()
        for _ in range(100):
            if not downloader._listings:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual((list(directory.iterdir()), downloader._listings), ([], {}))

    async def test_stoppedDownloaderResumes(self) -> None:
        """
        C{stop()} writes the state of running jobs; a new Downloader resumes
        from it.
        """
        directory = self.directory()
        state = await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB, how="stop")
        await self.checkResumed(state, directory)

    async def test_resumeWithLastModifiedOnly(self) -> None:
        """
        Without an ETag, the resume's If-Range carries the Last-Modified
        date; when the file changed since, it starts over and is exact.
        """
        path = "/file/dated.bin"
        url = self.origin.url(f"{path}?etag=0&rate={2 * MiB}")
        directory = self.directory()
        state = await self.cutShort(url, directory, path, 300 * KiB)
        self.assertEqual(state["lastModified"], self.origin.lastModified(path))
        before = len(self.origin.gets(path))
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "dated.bin", self.origin.digest(path))
        later = self.origin.gets(path)[before:]
        self.assertEqual(later[0].ifRange, self.origin.lastModified(path))
        self.assertEqual(later[0].rangeStart, state["done"][0][1])
        self.assertEqual(later[0].status, 206)
        # Again, but the file changes while nobody is looking.
        other = self.directory()
        state = await self.cutShort(url, other, path, 300 * KiB)
        oldDate = self.origin.lastModified(path)
        self.origin.bump(path)
        before = len(self.origin.gets(path))
        result = await self.downloader().download(url, other)
        self.assertSaved(result, other / "dated.bin", self.origin.digest(path))
        later = self.origin.gets(path)[before:]
        self.assertEqual(later[0].ifRange, oldDate)
        self.assertEqual(later[0].status, 200)

    async def test_resumeWithUnsendableValidators(self) -> None:
        """
        An ETag and a Last-Modified with control characters in them, which
        may not be sent back in If-Range (RFC 9110 5.5), are taken as none:
        an interrupted download resumes as from a server that sends none.
        They were kept, and the state file holding them was read as
        damaged: each run started over beside the last one's C{.part},
        which stayed for good.
        """
        path = "/file/controls.bin"
        url = self.origin.url(f"{path}?controls=1&rate={2 * MiB}")
        directory = self.directory()
        state = await self.cutShort(url, directory, path, 300 * KiB)
        self.assertEqual((state.get("etag"), state.get("lastModified")), (None, None))
        before = len(self.origin.gets(path))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / "controls.bin", self.origin.digest(path))
        self.assertEqual(result.resumedFrom, state["done"][0][1])
        later = self.origin.gets(path)[before:]
        self.assertEqual((later[0].ifRange, later[0].status), (None, 206))
        self.assertEqual(listing(directory), ["controls.bin"])
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])

    async def test_stateFileFields(self) -> None:
        """
        The state file of an interrupted download holds the fields the
        contract names, the checksum asked for among them.
        """
        directory = self.directory()
        digest = self.origin.digest(self.path)
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=self.slowURL(), directory=directory, checksum=f"sha256={digest}"))
        await self.origin.waitForSent(self.path, 100 * KiB)
        outcome = defer.ensureDeferred(self.failureOf(job.deferred, defer.CancelledError))
        self.assertTrue(downloader.cancel(job.id))
        await outcome
        with open(directory / "resume.bin.part.json") as f:
            state = json.load(f)
        for key in ("version", "url", "finalUrl", "size", "etag", "lastModified", "done", "checksum"):
            self.assertIn(key, state)
        self.assertEqual(state["lastModified"], self.origin.lastModified(self.path))
        self.assertIn(digest, json.dumps(state["checksum"]))
        # Its URL may hold a secret (a signed query): its owner's only, as
        # the service's job list is (it was readable by all).
        self.assertEqual(os.stat(directory / "resume.bin.part.json").st_mode & 0o777, 0o600)

    async def test_stopFailsRunningJobsWithCancelledError(self) -> None:
        """
        After C{stop()}, a running job's Deferred has failed with
        L{CancelledError} (also for code that looks at it only afterwards),
        and C{stop()} fires only once its state file is written.
        """
        directory = self.directory()
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=self.slowURL(), directory=directory))
        await self.origin.waitForSent(self.path, 100 * KiB)
        await downloader.stop()
        self.assertTrue((directory / "resume.bin.part.json").exists())
        self.assertTrue(job.deferred.called)
        await self.failureOf(job.deferred, defer.CancelledError)

    async def test_stopFromAFailedJobsErrbackClosesEverything(self) -> None:
        """
        C{stop()} called from inside a failed job's errback (a natural way
        to end a program) leaves nothing behind: no connection open at the
        origin, no connection-pool timer pending in the reactor.
        """
        directory = self.directory()
        downloader = Downloader(reactor, settings(), None)
        stopped: defer.Deferred[None] = defer.Deferred()

        def failed(reason: Failure) -> None:
            downloader.stop().chainDeferred(stopped)

        downloader.download(self.origin.url("/file/gone.bin?status=404"), directory).addErrback(failed)
        await stopped
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(self.origin.factory.protocols), 0, "a connection stayed open after stop()")
        leftovers = [
            call
            for call in reactor.getDelayedCalls()
            if call.active() and getattr(call.func, "__name__", "") == "_removeConnection"
        ]
        self.assertEqual(leftovers, [], "a pooled connection's timer outlived stop()")

    async def test_changedFileStartsOver(self) -> None:
        """
        When the remote file changed (new ETag) since the interruption, the
        If-Range fails, the whole new file comes back and is saved exact,
        not spliced with the old bytes.
        """
        directory = self.directory()
        state = await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        oldTag = self.origin.etag(self.path)
        self.origin.bump(self.path)
        self.assertNotEqual(self.origin.etag(self.path), oldTag)
        before = len(self.origin.gets(self.path))
        result = await self.downloader().download(self.slowURL(), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        later = self.origin.gets(self.path)[before:]
        self.assertEqual(later[0].ifRange, oldTag)
        self.assertEqual(later[0].rangeStart, state["done"][0][1])
        self.assertEqual(later[0].status, 200)

    async def test_largePartStartingOverIsReplacedNotTruncated(self) -> None:
        """
        When a download starts over, a C{.part} holding more than
        C{TRUNCATE_IN_PLACE} bytes is not truncated on the reactor (0.64 s
        for 2 GiB on ext4, every service waiting): a new empty file takes
        its name, and the old one is closed, freeing its blocks, in a
        thread.  The file saved is exact and nothing hidden is left.
        """
        self.patch(engineModule, "TRUNCATE_IN_PLACE", 100 * KiB)
        directory = self.directory()
        await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        oldInode = os.stat(directory / "resume.bin.part").st_ino
        self.origin.bump(self.path)
        inThreads: list = []
        callInThread = reactor.callInThread
        self.patch(reactor, "callInThread", lambda f, *a, **kw: inThreads.append((f, a)) or callInThread(f, *a, **kw))
        keep = os.open(directory / "resume.bin.part", os.O_RDONLY)
        self.addCleanup(os.close, keep)
        result = await self.downloader().download(self.slowURL(), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertIn(os.close, [f for f, _ in inThreads])
        self.assertEqual(os.fstat(keep).st_ino, oldInode)
        self.assertEqual(os.fstat(keep).st_nlink, 0)  # the old file, unlinked, not emptied
        self.assertGreaterEqual(os.fstat(keep).st_size, 300 * KiB)
        self.assertEqual(listing(directory), ["resume.bin"])

    async def test_largePartReplacedBeforeStartingOverIsLeft(self) -> None:
        """
        A large C{.part} that another program replaced by a file of its own
        before the download starts over is not renamed over: the new empty
        file is for this download's own C{.part} only, and what took its
        place keeps its bytes (the download then fails, the C{.part} not
        its own).
        """
        self.patch(engineModule, "TRUNCATE_IN_PLACE", 100 * KiB)
        directory = self.directory()
        await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        self.origin.bump(self.path)
        part = directory / "resume.bin.part"
        resetBytes = engineModule._Download._resetBytes

        def replacedFirst(download: Any, reason: str) -> None:
            other = directory / "other"
            other.write_bytes(b"another program's bytes")
            os.replace(other, part)
            resetBytes(download, reason)

        self.patch(engineModule._Download, "_resetBytes", replacedFirst)
        await self.failureOf(self.downloader().download(self.slowURL(), directory), LocalFileError)
        self.assertEqual(part.read_bytes(), b"another program's bytes")
        self.assertFalse((directory / "resume.bin").exists())
        self.assertEqual([name for name in listing(directory) if name.startswith(".")], [])

    async def test_largePartNotRenamedLeavesNothingHidden(self) -> None:
        """
        When the new empty file made for a large C{.part} starting over
        cannot be renamed over it, the C{.part} is truncated instead, and
        the new file (under a hidden name) is removed: the file saved is
        exact, and nothing hidden is left.
        """
        self.patch(engineModule, "TRUNCATE_IN_PLACE", 100 * KiB)
        directory = self.directory()
        await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        self.origin.bump(self.path)
        rename = os.rename
        refused: List[str] = []

        def refuseHidden(source: Any, target: Any) -> None:
            if Path(source).name.startswith("."):
                refused.append(Path(source).name)
                raise OSError(errno.EXDEV, "refused by the test")
            rename(source, target)

        self.patch(os, "rename", refuseHidden)
        result = await self.downloader().download(self.slowURL(), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(len(refused), 1, refused)
        self.assertEqual(listing(directory), ["resume.bin"])

    async def test_smallPartStartingOverIsTruncated(self) -> None:
        """
        A C{.part} of at most C{TRUNCATE_IN_PLACE} bytes is emptied in
        place when its download starts over: no new file is made.
        """
        directory = self.directory()
        await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        oldInode = os.stat(directory / "resume.bin.part").st_ino
        self.origin.bump(self.path)
        keep = os.open(directory / "resume.bin.part", os.O_RDONLY)
        self.addCleanup(os.close, keep)
        result = await self.downloader().download(self.slowURL(), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        self.assertEqual(os.stat(directory / "resume.bin").st_ino, oldInode)
        self.assertEqual(listing(directory), ["resume.bin"])

    async def test_changedFileIsNotReportedAsResumed(self) -> None:
        """
        When If-Range finds the file changed and the whole new file comes
        back (200), none of the bytes on disk were kept: the result says
        the download resumed from 0, not from the offset it asked for
        (netsuite-get would print "resumed at ..." and count too few bytes
        downloaded).
        """
        directory = self.directory()
        state = await self.cutShort(self.slowURL(), directory, self.path, 300 * KiB)
        self.origin.bump(self.path)
        before = len(self.origin.gets(self.path))
        result = await self.downloader().download(self.slowURL(), directory)
        self.assertSaved(result, directory / "resume.bin", self.origin.digest(self.path))
        later = self.origin.gets(self.path)[before:]
        self.assertEqual(
            [(r.rangeStart, r.status, r.sent) for r in later], [(state["done"][0][1], 200, DEFAULT_SIZE)]
        )
        self.assertEqual(result.resumedFrom, 0)

    async def resumeChanged(self, name: str, query: str) -> Tuple[Path, DownloadResult]:
        """
        Interrupt a download of C{/file/NAME?QUERY} from an origin that
        ignores If-Range, change the remote file, and download it again
        with a new Downloader.  Checks that the origin did answer the
        resume's Range with a 206 of the changed file (If-Range ignored),
        and that the saved file is not the old bytes spliced with the new;
        returns the directory and the result.
        """
        path = f"/file/{name}"
        url = self.origin.url(f"{path}?ifRange=0&{query}&rate={2 * MiB}")
        directory = self.directory()
        state = await self.cutShort(url, directory, path, 300 * KiB)
        cut = state["done"][0][1]
        oldKey = self.origin.key(path)
        oldValidator = self.origin.etag(path) if "etag=0" not in query else self.origin.lastModified(path)
        self.origin.bump(path)
        before = len(self.origin.gets(path))
        result = await self.downloader().download(url, directory)
        later = self.origin.gets(path)[before:]
        self.assertEqual(
            (later[0].rangeStart, later[0].ifRange, later[0].status),
            (cut, oldValidator, 206),
            [(r.rawRange, r.ifRange, r.status) for r in later],
        )
        self.assertSpliceAvoided(directory / name, oldKey, self.origin.key(path), cut)
        return directory, result

    def assertSpliceAvoided(self, saved: Path, oldKey: bytes, newKey: bytes, cut: int) -> None:
        """
        C{saved} is not the old file's first C{cut} bytes followed by the
        new file's bytes from there on.
        """
        data = saved.read_bytes()
        if data[:cut] == fileContent(oldKey, 0, cut) and data[cut:] == fileContent(newKey, cut, len(data) - cut):
            self.fail(
                f"{saved.name} is spliced: the OLD file's first {cut} bytes, then the NEW file's bytes"
                f" from {cut} to {len(data)}"
            )

    async def assertStartedOver(self, name: str, query: str, size: int = DEFAULT_SIZE) -> None:
        """
        L{resumeChanged}, then: the file is the new one (C{size} bytes)
        exactly, downloaded from zero, and nothing else is left.
        """
        directory, result = await self.resumeChanged(name, query)
        self.assertSaved(result, directory / name, self.origin.digest(f"/file/{name}", size), size)
        self.assertEqual(result.resumedFrom, 0)
        self.assertEqual(listing(directory), [name])

    async def test_ifRangeIgnoredNewETagStartsOver(self) -> None:
        """
        A server that ignores If-Range answers the resume's Range with a 206
        of the changed file (of the same size): its new strong ETag gives
        the change away, the download starts over, and the file is the new
        one exactly.
        """
        await self.assertStartedOver("ignored-etag.bin", "etag=1")

    async def test_newETagOnResumeStillSplits(self) -> None:
        """
        A file that changed since an earlier run (a new ETag on the
        resume's answer) starts over with ranges still taken: it is split
        into segments as a new download is.  Only a change within one run
        makes it one stream.
        """
        path = "/file/changed-split.bin"
        size = 2 * MiB
        url = self.origin.url(f"{path}?ifRange=0&size={size}&rate={2 * MiB}")
        directory = self.directory()
        await self.cutShort(url, directory, path, 300 * KiB)
        self.origin.bump(path)
        result = await self.downloader(segments=4, minSplitSize=256 * KiB).download(url, directory)
        self.assertSaved(result, directory / "changed-split.bin", self.origin.digest(path, size), size)
        self.assertEqual(result.resumedFrom, 0)
        self.assertGreater(result.segments, 1)

    async def test_ifRangeIgnoredLastModifiedOnlyNewSizeStartsOver(self) -> None:
        """
        Without an ETag, a server that ignores If-Range answers the resume's
        Range with a 206 of the changed file: its new size gives the change
        away, the download starts over, and the file is the new one exactly.
        """
        await self.assertStartedOver("ignored-grown.bin", f"etag=0&grow={4 * KiB}", DEFAULT_SIZE + 4 * KiB)

    async def test_ifRangeIgnoredLastModifiedOnlySameSizeStartsOver(self) -> None:
        """
        Without an ETag, a server that ignores If-Range answers the resume's
        Range with a 206 of the changed file, of the same size: only its new
        Last-Modified date gives the change away.  The download must start
        over: the file is the new one exactly, never the old file's first
        bytes spliced with the new file's rest.
        """
        await self.assertStartedOver("ignored-dated.bin", "etag=0")

    async def test_ifRangeIgnoredETagDroppedStartsOver(self) -> None:
        """
        A server that ignores If-Range answers the resume's Range with a 206
        of the changed file, without the ETag it sent before and with a new
        Last-Modified: the download starts over, and the file is the new
        one exactly.  The new date was not looked at while an ETag was on
        record, and the old bytes were spliced with the new.
        """
        await self.assertStartedOver("ignored-dropped.bin", "bumped=none")

    async def test_ifRangeIgnoredETagWeakenedStartsOver(self) -> None:
        """
        The same with a weak ETag in place of the strong one: weak
        validators do not say the bytes are the same, so it starts over.
        """
        await self.assertStartedOver("ignored-weak.bin", "bumped=weak")

    async def test_ifRangeIgnoredETagDroppedSameDateStartsOver(self) -> None:
        """
        Without the ETag even the date cannot show the change (it is the
        same here): the rest of the file cannot be tied to the bytes on
        disk, so the whole file comes again as one stream.
        """
        name = "ignored-undated.bin"
        path = f"/file/{name}"
        url = self.origin.url(f"{path}?ifRange=0&bumped=none&lm=0&rate={2 * MiB}")
        directory = self.directory()
        await self.cutShort(url, directory, path, 300 * KiB)
        self.origin.bump(path)
        result = await self.downloader().download(url, directory)
        self.assertSaved(result, directory / name, self.origin.digest(path))
        self.assertEqual(result.resumedFrom, 0)

    async def test_unsatisfiableRangeOfAShrunkFileStartsOver(self) -> None:
        """
        A server that ignores If-Range answers the resume of a file that has
        since shrunk to exactly the bytes on disk with 416 C{bytes */N} and
        the new ETag.  That does not mean "everything is here already" (the
        size on record is larger, the ETag is new): the download starts
        over and the file is the new one exactly, not the old file's first
        half.
        """
        half = DEFAULT_SIZE // 2
        name = "shrunk.bin"
        path = f"/file/{name}"
        url = self.origin.url(f"{path}?ifRange=0&grow=-{half}&drip={half}&dripTimes=1")
        directory = self.directory()
        state = await self.cutShort(url, directory, path, half)
        self.assertEqual((state["size"], state["done"]), (DEFAULT_SIZE, [[0, half]]))
        oldKey = self.origin.key(path)
        self.origin.bump(path)
        before = len(self.origin.gets(path))
        result = await self.downloader().download(url, directory)
        later = self.origin.gets(path)[before:]
        self.assertEqual((later[0].rangeStart, later[0].status), (half, 416), [(r.rawRange, r.status) for r in later])
        if (directory / name).read_bytes() == fileContent(oldKey, 0, half):
            self.fail(f"{name} is the OLD file's first {half} bytes, saved as the whole (new) file")
        self.assertSaved(result, directory / name, self.origin.digest(path, half), half)
        self.assertEqual(listing(directory), [name])


class TLSTests(EngineTestCase):
    """
    HTTPS with a private CA, a wrong name, and C{insecure}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.tlsOrigin, self.caFile = self.startTLSOrigin()

    async def test_privateCA(self) -> None:
        """
        With the CA's PEM as C{caFile}, an https download works.
        """
        directory = self.directory()
        url = self.tlsOrigin.url("/file/secure.bin")
        self.assertTrue(url.startswith("https://localhost:"))
        result = await self.downloader(caFile=self.caFile).download(url, directory)
        self.assertSaved(result, directory / "secure.bin", self.tlsOrigin.digest("/file/secure.bin"))

    async def test_unknownCAFails(self) -> None:
        """
        Without the CA, the certificate is not trusted: a readable
        L{DownloadError}, nothing saved.
        """
        directory = self.directory()
        url = self.tlsOrigin.url("/file/untrusted.bin")
        error = await self.failureOf(self.downloader(retries=0).download(url, directory), DownloadError)
        self.assertReadable(error, url)
        self.assertEqual(self.tlsOrigin.requests, [])
        self.assertFalse((directory / "untrusted.bin").exists())

    async def test_wrongHostnameFails(self) -> None:
        """
        A certificate for C{localhost} reached as C{127.0.0.1} fails with a
        readable L{DownloadError}, even with the right CA.
        """
        directory = self.directory()
        url = self.tlsOrigin.url("/file/wrongname.bin", host="127.0.0.1")
        error = await self.failureOf(
            self.downloader(caFile=self.caFile, retries=0).download(url, directory), DownloadError
        )
        self.assertReadable(error, url)
        self.assertEqual(self.tlsOrigin.requests, [])
        self.assertFalse((directory / "wrongname.bin").exists())

    def writeCA(self, ca: trustme.CA) -> str:
        """
        The path of a new PEM file holding C{ca}'s certificate, for
        C{caFile}.
        """
        caFile = os.path.join(self.mktemp(), "ca.pem")
        os.makedirs(os.path.dirname(caFile))
        ca.cert_pem.write_to_path(caFile)
        return caFile

    def startOriginWith(self, name: str, chain: Tuple[str, str]) -> Origin:
        """
        An https origin serving the certificate chain and key in the PEM
        files C{chain}.
        """
        return startOrigin(self, name, tls=serverOptions(*loadPEM(*chain)))

    async def test_certificateProblemsNamed(self) -> None:
        """
        A certificate that does not verify is refused in one sentence
        saying why, as curl says it, and is not retried: each of these was
        "the TLS handshake failed (is the server's certificate trusted?)"
        but the wrong name.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        day = datetime.timedelta(days=1)
        ca = trustme.CA()
        caFile = self.writeCA(ca)

        def leaf(**dates: datetime.datetime) -> Tuple[str, str]:
            return writeLeaf(self.mktemp(), ca.issue_cert("localhost", **dates))

        key = ec.generate_private_key(ec.SECP256R1())
        localhost = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
        selfSigned = (
            x509.CertificateBuilder()
            .subject_name(localhost)
            .issuer_name(localhost)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day)
            .not_valid_after(now + day)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256())
        )
        selfSignedPath = os.path.join(self.mktemp(), "self.pem")
        os.makedirs(os.path.dirname(selfSignedPath))
        with open(selfSignedPath, "wb") as f:
            f.write(selfSigned.public_bytes(serialization.Encoding.PEM))
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        cases = [
            ("expired", leaf(not_before=now - 10 * day, not_after=now - day), "localhost", "has expired"),
            ("early", leaf(not_before=now + day, not_after=now + 10 * day), "localhost", "is not valid yet"),
            ("self", (selfSignedPath, None), "localhost", "is self-signed"),
            ("stranger", writeLeaf(self.mktemp(), trustme.CA().issue_cert("localhost")), "localhost",
             "is signed by an unknown authority"),
            ("misnamed", leaf(), "127.0.0.1", "is not for this host name"),
        ]
        for name, chain, host, words in cases:
            origin = self.startOriginWith(name, chain)
            url = origin.url(f"/file/{name}.bin", host=host)
            directory = self.directory()
            downloader = self.downloader(caFile=caFile, retries=3, retryWait=0.01)
            error = await self.failureOf(downloader.download(url, directory), DownloadError)
            self.assertReadable(error, url)
            self.assertEqual(str(error), f"{url}: the server's certificate {words}")
            self.assertFalse(error.retryable, name)
            self.assertEqual((origin.factory.accepted, origin.requests), (1, []), name)
            self.assertEqual(listing(directory), [])
        self.assertEqual([e for e in self.events if e["event"] == "retry"], [])
        good = self.startOriginWith("good", leaf())
        result = await self.downloader(caFile=caFile).download(good.url("/file/good.bin"), self.directory())
        self.assertEqual(result.size, DEFAULT_SIZE)

    async def test_chainProblemsNamed(self) -> None:
        """
        A chain that ends in a self-signed root nobody trusts, and one whose
        trusted certificate is an intermediate whose own issuer is not
        known, are each refused in one sentence saying why.
        """
        root = trustme.CA()
        intermediate = root.create_child_ca()
        directory = self.mktemp()
        os.makedirs(directory)

        def pem(name: str, *blobs: bytes) -> str:
            path = os.path.join(directory, name)
            with open(path, "wb") as f:
                f.write(b"".join(blobs))
            return path

        byRoot = root.issue_cert("localhost")
        byIntermediate = intermediate.issue_cert("localhost")
        cases = [
            (
                "rooted",
                (pem("rooted.pem", byRoot.cert_chain_pems[0].bytes(), root.cert_pem.bytes()), pem("rooted.key", byRoot.private_key_pem.bytes())),
                pem("stranger.pem", trustme.CA().cert_pem.bytes()),
                "the server's certificate chain ends in a self-signed certificate that is not trusted",
            ),
            (
                "partial",
                (pem("partial.pem", byIntermediate.cert_chain_pems[0].bytes()), pem("partial.key", byIntermediate.private_key_pem.bytes())),
                pem("intermediate.pem", intermediate.cert_pem.bytes()),
                "the server's certificate is signed by an unknown authority",
            ),
        ]
        for name, chain, caFile, words in cases:
            origin = self.startOriginWith(name, chain)
            url = origin.url(f"/file/{name}.bin")
            error = await self.failureOf(self.downloader(caFile=caFile, retries=0).download(url, self.directory()), DownloadError)
            self.assertEqual(str(error), f"{url}: {words}")

    async def test_handshakeFailuresNotOnTheCertificateSaySo(self) -> None:
        """
        A TLS connection that fails for another reason than the server's
        certificate says what OpenSSL says happened, with checks on and
        with C{insecure}, in one sentence, not retried: the server asks for
        a client certificate (TLS 1.2: its alert "handshake failure"; TLS
        1.3: "certificate required"), or answers with bytes that are not
        TLS (garbage, a plain http server).  Each was "the TLS handshake
        failed (is the server's certificate trusted?)", the certificate
        being trusted or not checked at all.
        """

        class Counted(Factory):
            protocol = Protocol
            accepted = 0

            def buildProtocol(self, addr: Any) -> Protocol:
                Counted.accepted += 1
                return super().buildProtocol(addr)

        class Garbage(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"\x16\x03\x03\x00\x05hello")
                self.transport.loseConnection()

        class PlainHTTP(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.loseConnection()

        ca = trustme.CA()
        caFile = self.writeCA(ca)
        server = PrivateCertificate.loadPEM(ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes())

        def listen(factory: Factory, maximum: Optional[TLSVersion] = None) -> int:
            if maximum is None:
                port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            else:
                options = CertificateOptions(
                    privateKey=server.privateKey.original,
                    certificate=server.original,
                    verify=True,
                    caCerts=[Certificate.loadPEM(trustme.CA().cert_pem.bytes()).original],
                    requireCertificate=True,
                    lowerMaximumSecurityTo=maximum,
                )
                port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            return port.getHost().port

        cases = [
            (listen(Counted(), TLSVersion.TLSv1_2), r'the server refused the TLS handshake \(alert "handshake failure"\)'),
            (listen(Counted(), TLSVersion.TLSv1_3), r'the server wants a client certificate \(TLS alert "certificate required"\)'),
            (listen(Counted.forProtocol(Garbage)), r"the server's answer is not valid TLS \([a-z ]+\)"),
            (listen(Counted.forProtocol(PlainHTTP)), r"the server's answer is not valid TLS \([a-z ]+\)"),
        ]
        for port, words in cases:
            for checks in ({"caFile": caFile}, {"insecure": True}):
                url = f"https://localhost:{port}/file/x.bin"
                before = Counted.accepted
                downloader = self.downloader(retries=3, retryWait=0.01, **checks)
                error = await self.failureOf(downloader.download(url, self.directory()), DownloadError)
                self.assertReadable(error, url)
                self.assertRegex(str(error), f"^{re.escape(url)}: {words}$", checks)
                self.assertEqual(Counted.accepted - before, 1, (url, checks))
        self.assertEqual([e for e in self.events if e["event"] == "retry"], [])

    async def test_certificateErrorsNotRetried(self) -> None:
        """
        A certificate that does not check out (unknown CA, wrong name) will
        not check out on a retry either: one TLS connection, no more.
        """
        cases = [
            ("untrusted", self.tlsOrigin.url("/file/again1.bin"), None),
            ("wrong name", self.tlsOrigin.url("/file/again2.bin", host="127.0.0.1"), self.caFile),
        ]
        for label, url, caFile in cases:
            before = self.tlsOrigin.factory.accepted
            downloader = self.downloader(caFile=caFile, retries=3, retryWait=0.01)
            await self.failureOf(downloader.download(url, self.directory()), DownloadError)
            self.assertEqual(self.tlsOrigin.factory.accepted - before, 1, label)
            self.assertEqual([e for e in self.events if e["event"] == "retry"], [], label)

    async def test_insecureAcceptsAnything(self) -> None:
        """
        C{insecure=True} accepts an unknown CA and a wrong name.
        """
        directory = self.directory()
        url = self.tlsOrigin.url("/file/anyway.bin", host="127.0.0.1")
        result = await self.downloader(insecure=True).download(url, directory)
        self.assertSaved(result, directory / "anyway.bin", self.tlsOrigin.digest("/file/anyway.bin"))

    async def test_closeNotifyInTheHandshake(self) -> None:
        """
        A server that answers the ClientHello with a close_notify: "the
        connection was closed", retried.  Twisted's TLS failed on
        pyOpenSSL's argument-less C{ZeroReturnError}: its traceback was
        printed, and the message was "tuple index out of range".
        """

        class CloseNotify(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"\x15\x03\x03\x00\x02\x01\x00")  # a warning alert, close_notify
                self.transport.loseConnection()

        port = reactor.listenTCP(0, Factory.forProtocol(CloseNotify), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"https://127.0.0.1:{port.getHost().port}/x.bin"
        error = await self.failureOf(
            self.downloader(insecure=True, retries=1, retryWait=0.01).download(url, self.directory()), DownloadError
        )
        self.assertReadable(error, url)
        self.assertIn("the connection was closed", str(error))
        self.assertEqual(len([e for e in self.events if e["event"] == "retry"]), 1)

    async def test_tinyRecordsGathered(self) -> None:
        """
        The plaintext of all the TLS records read at once goes to the HTTP
        client together, straight or past destination rules: Twisted's TLS
        handed on each record alone, and a server sending one byte a record
        cost the client a pass for each (0.55 s of CPU more for 200,000).
        """
        url = self.startTinyRecordOrigin(4096)
        await self.assertRecordsGathered(url, self.downloader(insecure=True))
        checked = Downloader(reactor, settings(insecure=True), self.events.append, rules=ProxyRules(allowLoopback=True))
        self.addCleanup(checked.stop)
        await self.assertRecordsGathered(url, checked)

    async def test_segmentedOverTLS(self) -> None:
        """
        Several Range requests at once over TLS give the exact file.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.tlsOrigin.url(f"/file/tlssplit.bin?size={size}&rate={4 * MiB}")
        result = await self.downloader(caFile=self.caFile, segments=3, minSplitSize=256 * KiB).download(url, directory)
        self.assertSaved(result, directory / "tlssplit.bin", self.tlsOrigin.digest("/file/tlssplit.bin", size), size)
        self.assertGreaterEqual(self.tlsOrigin.maxActive, 2)


class _CountedKey:
    """
    An origin key for L{_Slots} that counts the work done with it: its
    hashes (C{hashed}), and its hashes and comparisons (C{operations}).
    """

    hashed = 0
    operations = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        _CountedKey.hashed += 1
        _CountedKey.operations += 1
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        _CountedKey.operations += 1
        return isinstance(other, _CountedKey) and other.name == self.name

    def __lt__(self, other: "_CountedKey") -> bool:
        _CountedKey.operations += 1
        return self.name < other.name


class EventAndJobTests(EngineTestCase):
    """
    Events, jobs, downloadAll.
    """

    async def test_eventsReachObserver(self) -> None:
        """
        start, progress and done events arrive in order, JSON-serialisable,
        naming the job.
        """
        directory = self.directory()
        url = self.origin.url(f"/file/events.bin?rate={2 * MiB}")
        downloader = self.downloader(progressInterval=0.05)
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        result = await job.deferred
        self.assertSaved(result, directory / "events.bin", self.origin.digest("/file/events.bin"))
        mine = [e for e in self.events if e.get("job") == job.id]
        self.assertEqual(mine, self.events)
        json.dumps(mine)
        kinds = [e["event"] for e in mine]
        self.assertEqual(kinds[0], "start")
        self.assertEqual(kinds[-1], "done")
        self.assertIn("progress", kinds)
        start = mine[0]
        self.assertEqual(start["url"], url)
        self.assertEqual(start["name"], "events.bin")
        self.assertEqual(Path(start["path"]), directory / "events.bin")
        self.assertEqual(start["size"], DEFAULT_SIZE)
        self.assertEqual(start["resumed"], 0)
        progress = [e for e in mine if e["event"] == "progress"]
        self.assertGreaterEqual(len(progress), 3)
        dones = [e["done"] for e in progress]
        self.assertEqual(dones, sorted(dones))
        self.assertTrue(all(0 <= d <= DEFAULT_SIZE for d in dones))
        self.assertTrue(all(e["speed"] >= 0 for e in progress))
        done = mine[-1]
        self.assertEqual((done["size"], Path(done["path"]), done["url"]), (DEFAULT_SIZE, directory / "events.bin", url))
        self.assertGreater(done["seconds"], 0.2)

    async def test_finishedFileNamedBeforeLaterJobsStart(self) -> None:
        """
        With one connection, a small file gets its final name before the
        jobs after it start (its connection queued again for a slot behind
        every job not started yet, only to find no work: the file stayed a
        .part with its descriptor open until the whole list had started).
        Without the sync, which lets the next job start while it runs in
        its thread.
        """
        directory = self.directory()
        downloader = self.downloader(maxConnections=1, maxPerHost=1, sync=False)
        requests = [
            DownloadRequest(url=self.origin.url(f"/file/small-{i}.bin?size=1000"), directory=directory)
            for i in range(5)
        ]
        results = await downloader.downloadAll(requests)
        self.assertTrue(all(isinstance(r, DownloadResult) for r in results), results)
        order = [(e["event"], e["job"]) for e in self.events if e["event"] in ("start", "done")]
        first = order[0][1]
        self.assertEqual(order[:2], [("start", first), ("done", first)])

    def test_slotsServeALongQueueWithoutRecursion(self) -> None:
        """
        A queue of waiters that each give their slot back at once is served
        by one loop (each release used to wake the next a stack level deeper:
        RecursionError past about a hundred, and the queue stalled).
        """
        slots = _Slots(total=1, perHost=1)
        key = ("http", "example.com", 80)
        first = slots.acquire(key)
        self.assertIsNone(self.successResultOf(first))
        served = []
        for index in range(3000):
            waiting = slots.acquire(key)
            waiting.addCallback(lambda _, index=index: (served.append(index), slots.release(key)))
        slots.release(key)
        self.assertEqual(served, list(range(3000)))
        self.assertEqual(slots.used, 0)

    def test_slotsLookAtEachOriginOnce(self) -> None:
        """
        A freed slot looks at the first waiter of each origin, not at every
        waiter: thousands queued for a full origin cost nothing per release
        (each release went through all of them, for every job of a long
        list from one server).
        """
        full, other = _CountedKey("full"), _CountedKey("other")
        slots = _Slots(total=2, perHost=1)
        self.successResultOf(slots.acquire(full))
        self.successResultOf(slots.acquire(other))
        waiting = [slots.acquire(full) for _ in range(1000)]
        _CountedKey.hashed = 0
        slots.release(other)
        self.assertLess(_CountedKey.hashed, 20)
        self.assertEqual([d.called for d in waiting], [False] * 1000)
        slots.release(full)
        self.assertEqual([d.called for d in waiting[:2]], [True, False])

    def test_slotsServeManyWaitingOriginsInLogarithmicWork(self) -> None:
        """
        A freed slot finds the earliest waiter that may go without looking
        at every origin waiting: 2,000 files for 2,000 origins behind a
        full total (as a long C{-i} list of hosts) are served in the order
        they came, each release touching a few origins, not all of them
        (each release went through every origin waiting: 20,000 hosts
        took 150 s of reactor CPU).
        """
        count = 2000
        slots = _Slots(total=8, perHost=4)
        keys = [_CountedKey(f"host{n}") for n in range(8 + count)]
        for key in keys[:8]:
            self.successResultOf(slots.acquire(key))
        served: list = []
        for key in keys[8:]:
            slots.acquire(key).addCallback(lambda _, key=key: served.append(key))
        # Three more for one of those origins, last in line: served last.
        busy = keys[8]
        waiting = [slots.acquire(busy) for _ in range(3)]
        # One heap entry per origin waiting, none for the waiters behind.
        self.assertEqual([len(heap) for heap in slots._heaps.values()], [count, 0])
        _CountedKey.operations = 0
        for key in keys:
            slots.release(key)
        self.assertEqual(served, keys[8:])
        self.assertLess(_CountedKey.operations, 20 * (count + 8))
        self.assertEqual([d.called for d in waiting], [True] * 3)
        for _ in waiting:
            slots.release(busy)
        self.assertEqual((slots.used, slots._byHost, slots._queues), (0, {}, {}))

    def test_slotsForgetWaitersCancelledWhileAllAreBusy(self) -> None:
        """
        Files queued and cancelled while every slot is busy (a job POSTed
        and DELETEd while the queue waits) leave at most a bounded number
        of heap entries behind, and a waiter cancelled at a full origin
        none: 10,000 of them left 10,000 entries (200,000 took 27 MB, and
        the next release 0.5 s, dropping them).  The order is kept.
        """
        slots = _Slots(total=8, perHost=4)
        full = ("http", "full", 80)
        busy = [("http", f"busy{n}", 80) for n in range(4)]
        for key in [full] * 4 + busy:
            self.successResultOf(slots.acquire(key))
        heap = slots._heaps[id(slots._queues)]
        bound = 100
        most = 0
        for n in range(10000):
            d = slots.acquire(("http", f"host{n}", 80))
            d.cancel()
            self.failureResultOf(d, defer.CancelledError)
            most = max(most, len(heap))
        self.assertLessEqual(most, bound)
        self.assertEqual(slots._listed[id(slots._queues)], {})
        # Waiters for the full origin, cancelled from the front: each
        # change of its first waiter pushes nothing (it has no room).
        atFull = [slots.acquire(full) for _ in range(100)]
        late = slots.acquire(("http", "late", 80))
        before = len(heap)
        for d in atFull[:-1]:
            d.cancel()
            self.failureResultOf(d, defer.CancelledError)
            self.assertEqual(len(heap), before)
        slots.release(busy[0])
        self.successResultOf(late)
        self.assertNoResult(atFull[-1])
        slots.release(full)
        self.successResultOf(atFull[-1])
        self.assertLessEqual(len(heap), bound)

    def test_freeSlotNotHeldBehindAFullOrigin(self) -> None:
        """
        A file for an origin with a free slot starts at once, whatever waits
        for another, full origin (it was queued behind those, and only a
        release there served it: with downloads from a slow server under
        way, a file from another stayed queued while slots sat idle).
        """
        a, b = ("http", "a", 80), ("http", "b", 80)
        slots = _Slots(total=8, perHost=1)
        self.successResultOf(slots.acquire(a))
        waiting = slots.acquire(a)
        self.assertNoResult(waiting)
        self.successResultOf(slots.acquire(b))
        self.assertEqual(slots.used, 2)
        slots.release(a)
        self.successResultOf(waiting)

    def test_slotsServeInArrivalOrderAcrossOrigins(self) -> None:
        """
        Waiters are served in the order they came, whatever their origin;
        a cancelled waiter, first in its queue or not, is passed over.
        """
        a, b = ("http", "a", 80), ("http", "b", 80)
        slots = _Slots(total=1, perHost=1)
        self.successResultOf(slots.acquire(a))
        served: list = []
        waiters = {}
        for name, key in [("a1", a), ("b1", b), ("a2", a), ("b2", b), ("b3", b), ("a3", a)]:
            waiters[name] = slots.acquire(key)
            waiters[name].addCallback(lambda _, name=name: served.append(name))
        waiters["a1"].cancel()
        waiters["b2"].cancel()
        self.failureResultOf(waiters["a1"], defer.CancelledError)
        self.failureResultOf(waiters["b2"], defer.CancelledError)
        for key in [a, b, a, b]:
            slots.release(key)
        self.assertEqual(served, ["b1", "a2", "b3", "a3"])
        slots.release(a)
        self.assertEqual(slots.used, 0)
        self.successResultOf(slots.acquire(b))

    def test_redirectKeepsItsPlaceInTheTotal(self) -> None:
        """
        A connection redirected to a full origin keeps its slot of the total
        while it waits there, and gives back its room at the origin it
        leaves, at once: a file waiting for that origin starts only once a
        slot of the total is free.  (The redirected connection gave back
        its slot, the next file took it and was redirected too: a long
        list's redirects were all answered before their files were asked
        for, and links that expire had expired.)
        """
        a, b = ("http", "a", 80), ("http", "b", 80)
        slots = _Slots(total=2, perHost=1)
        redirected, busy = _HeldSlot(slots), _HeldSlot(slots)
        self.successResultOf(redirected.take(a))
        self.successResultOf(busy.take(b))
        waiting = slots.acquire(a)
        moved = defer.ensureDeferred(redirected.holdFor(b))
        self.assertNoResult(moved)
        self.assertNoResult(waiting)
        self.assertEqual((slots.used, redirected.held, redirected.key), (2, True, None))
        busy.release()
        self.successResultOf(moved)
        self.successResultOf(waiting)
        self.assertEqual((slots.used, redirected.key), (2, b))
        redirected.release()
        slots.release(a)
        self.assertEqual((slots.used, slots._byHost), (0, {}))

    def test_movedConnectionsServedInTheirFirstOrder(self) -> None:
        """
        Connections waiting for room at an origin are served in the order
        they first asked for a slot, whether they come from a redirect or
        not; one cancelled while moving still holds its slot of the total
        until it gives it back.
        """
        a, b, c = ("http", "a", 80), ("http", "b", 80), ("http", "c", 80)
        slots = _Slots(total=4, perHost=1)
        first, second, busy = _HeldSlot(slots), _HeldSlot(slots), _HeldSlot(slots)
        self.successResultOf(first.take(a))
        self.successResultOf(second.take(c))
        self.successResultOf(busy.take(b))
        fresh = slots.acquire(b)
        served: list = []
        fresh.addCallback(lambda _: served.append("fresh"))
        # The second moves first, the first later: the first goes first.
        secondMoved = defer.ensureDeferred(second.holdFor(b))
        secondMoved.addCallback(lambda _: served.append("second"))
        firstMoved = defer.ensureDeferred(first.holdFor(b))
        firstMoved.addCallback(lambda _: served.append("first"))
        busy.release()
        self.assertEqual(served, ["first"])
        first.release()
        self.assertEqual(served, ["first", "second"])
        second.release()
        self.assertEqual(served, ["first", "second", "fresh"])
        slots.release(b)
        cancelled = _HeldSlot(slots)
        self.successResultOf(cancelled.take(a))
        self.successResultOf(busy.take(b))
        moving = defer.ensureDeferred(cancelled.holdFor(b))
        moving.cancel()
        self.failureResultOf(moving, defer.CancelledError)
        self.assertEqual((slots.used, cancelled.held, cancelled.key), (2, True, None))
        cancelled.release()
        busy.release()
        self.assertEqual((slots.used, slots._byHost, slots._moving, slots._queues), (0, {}, {}, {}))

    def test_sameOriginRedirectKeepsItsSlot(self) -> None:
        """
        A redirect to the same origin keeps its slot there: it does not
        give it back and wait again, behind a connection that came earlier
        and is waiting to move there.
        """
        a, b = ("http", "a", 80), ("http", "b", 80)
        slots = _Slots(total=2, perHost=1)
        earlier, hopping = _HeldSlot(slots), _HeldSlot(slots)
        self.successResultOf(earlier.take(a))
        self.successResultOf(hopping.take(b))
        moving = defer.ensureDeferred(earlier.holdFor(b))
        self.assertNoResult(moving)
        self.successResultOf(defer.ensureDeferred(hopping.holdFor(b)))
        self.assertNoResult(moving)
        hopping.release()
        self.successResultOf(moving)

    async def test_jobsSnapshot(self) -> None:
        """
        C{jobs()} lists submitted jobs with their state until they end; a
        finished job is forgotten there, and its L{Job} says C{done}.
        """
        directory = self.directory()
        url = self.origin.url(f"/file/jobs.bin?rate={4 * MiB}")
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        self.assertEqual(job.request.url, url)
        snapshot = {j["id"]: j for j in downloader.jobs()}
        self.assertIn(job.id, snapshot)
        self.assertIn(snapshot[job.id]["state"], ("queued", "running"))
        self.assertEqual(snapshot[job.id]["url"], url)
        json.dumps(downloader.jobs())
        await job.deferred
        self.assertEqual(downloader.jobs(), [])
        entry = job.snapshot()
        self.assertEqual(entry["state"], "done")
        self.assertEqual(entry["done"], DEFAULT_SIZE)
        self.assertEqual(entry["size"], DEFAULT_SIZE)
        self.assertEqual(Path(entry["path"]), directory / "jobs.bin")
        self.assertEqual(entry["name"], "jobs.bin")

    async def test_jobWaitingForASlotIsQueued(self) -> None:
        """
        A job waiting for a connection slot shows as C{queued}, with no
        attempt made, not as C{running}.
        """
        directory = self.directory()
        downloader = self.downloader(maxConnections=1)
        busy = downloader.submit(DownloadRequest(url=self.origin.url(f"/file/busy.bin?size={64 * MiB}&rate={MiB}"), directory=directory))
        waiting = downloader.submit(DownloadRequest(url=self.origin.url("/file/waiting.bin?size=1000"), directory=directory))
        await waitUntil(lambda: self.origin.active == 1 and bool(downloader._slots._queues))
        snapshot = {job["id"]: job for job in downloader.jobs()}
        self.assertEqual((snapshot[busy.id]["state"], snapshot[busy.id]["attempts"]), ("running", 1))
        self.assertEqual((snapshot[waiting.id]["state"], snapshot[waiting.id]["attempts"]), ("queued", 0))
        downloader.cancel(busy.id)
        await self.failureOf(busy.deferred, defer.CancelledError)
        result = await waiting.deferred
        self.assertEqual(result.size, 1000)
        self.assertEqual(waiting.snapshot()["attempts"], 1)

    async def test_cancelledJobState(self) -> None:
        """
        A cancelled job says so on its L{Job} (and is gone from C{jobs()});
        cancelling it again, or an unknown job, answers False.
        """
        directory = self.directory()
        url = self.origin.url(f"/file/cancel.bin?rate={MiB}")
        downloader = self.downloader()
        job = downloader.submit(DownloadRequest(url=url, directory=directory))
        await self.origin.waitForSent("/file/cancel.bin", 50 * KiB)
        self.assertTrue(downloader.cancel(job.id))
        await self.failureOf(job.deferred, defer.CancelledError)
        self.assertEqual(job.snapshot()["state"], "cancelled")
        self.assertEqual(downloader.jobs(), [])
        self.assertFalse(downloader.cancel(job.id))
        self.assertFalse(downloader.cancel("no such job"))

    async def test_downloadAllInOrder(self) -> None:
        """
        C{downloadAll} gives one entry per request, in the order asked (not
        the order finished), failures as L{Failure}s, and never errbacks.
        """
        directory = self.directory()
        slow = DownloadRequest(url=self.origin.url(f"/file/all-slow.bin?rate={4 * MiB}"), directory=directory)
        missing = self.origin.url("/file/all-missing.bin?status=404")
        fast = DownloadRequest(url=self.origin.url("/file/all-fast.bin?size=1000"), directory=directory)
        bad = DownloadRequest(url="ftp://127.0.0.1/x", directory=directory)
        nonsense = DownloadRequest(url=self.origin.url("/file/all-sum.bin"), directory=directory, checksum="nonsense")
        results = await self.downloader().downloadAll([slow, missing, fast, bad, nonsense])
        self.assertEqual(len(results), 5)
        self.assertIsInstance(results[4], Failure)
        self.assertIsInstance(results[4].value, DownloadError)
        self.assertSaved(results[0], directory / "all-slow.bin", self.origin.digest("/file/all-slow.bin"))
        self.assertIsInstance(results[1], Failure)
        self.assertIsInstance(results[1].value, HTTPStatusError)
        self.assertSaved(results[2], directory / "all-fast.bin", self.origin.digest("/file/all-fast.bin", 1000), 1000)
        self.assertIsInstance(results[3], Failure)
        self.assertIsInstance(results[3].value, BadURL)
        finished = [e["url"] for e in self.events if e["event"] == "done"]
        self.assertEqual(finished.index(fast.url) < finished.index(slow.url), True, finished)

    async def test_finishedJobsAreForgotten(self) -> None:
        """
        The downloader forgets a job once its Deferred has fired, so one
        that runs for long (the download service) does not grow with every
        job it was ever given; each L{Job} keeps how it ended.
        """
        downloader = self.downloader()
        directory = self.directory()
        failed = [downloader.submit(DownloadRequest(url=f"ftp://127.0.0.1/{n}", directory=directory)) for n in range(200)]
        for job in failed:
            job.deferred.addErrback(lambda failure: None)
        good = downloader.submit(DownloadRequest(url=self.origin.url("/file/kept.bin?size=1000"), directory=directory))
        self.assertEqual([job["id"] for job in downloader.jobs()], [good.id])
        await good.deferred
        self.assertEqual(downloader.jobs(), [])
        self.assertEqual({job.snapshot()["state"] for job in failed}, {"failed"})
        self.assertEqual(good.snapshot()["state"], "done")
        self.assertFalse(downloader.cancel(good.id))

    async def test_downloadAllAlias(self) -> None:
        """
        C{download_all} is C{downloadAll}; an empty list gives an empty
        list.
        """
        downloader = self.downloader()
        self.assertEqual(await downloader.download_all([]), [])
        self.assertEqual(await downloader.downloadAll([]), [])


class LimitTests(EngineTestCase):
    """
    Connection limits and memory.
    """

    async def test_connectionLimits(self) -> None:
        """
        With C{maxConnections=2} and C{maxPerHost=1}, six downloads from
        two origins never have more than one response in progress per
        origin, nor more than two in all; and they do run two at once.
        """
        other = startOrigin(self, "second")
        directory = self.directory()
        requests = []
        for origin in (self.origin, other):
            for n in range(3):
                url = origin.url(f"/file/{origin.name}-{n}.bin?size={200 * KiB}&rate={MiB}")
                requests.append(DownloadRequest(url=url, directory=directory))
        downloader = self.downloader(maxConnections=2, maxPerHost=1, segments=4, minSplitSize=64 * KiB)
        results = await downloader.downloadAll(requests)
        for r in results:
            self.assertIsInstance(r, DownloadResult)
        for origin in (self.origin, other):
            self.assertEqual(origin.maxActive, 1, origin.name)
            self.assertLessEqual(origin.factory.maxOpen, 1, f"{origin.name}: open connections")
        self.assertEqual(mostAtOnce(self.origin.requests + other.requests), 2)

    async def test_perHostLimitHoldsForTheServerRedirectedTo(self) -> None:
        """
        Files one server redirects to another count against the other's
        C{maxPerHost}, where they are fetched: with 2 per host, four
        segmented files redirected to one server have at most two responses
        in progress there at once, and do have two.  There were up to 6:
        each file's first connection was counted under the redirecting
        server, and held that server's slot, unused, for its whole
        transfer.
        """
        final = startOrigin(self, "final")
        directory = self.directory()
        size = 2 * MiB
        paths = [f"/file/moved-{n}.bin" for n in range(4)]
        requests = [
            DownloadRequest(url=self.origin.hopURL(1, final.url(f"{path}?size={size}&rate={4 * MiB}")), directory=directory)
            for path in paths
        ]
        downloader = self.downloader(maxConnections=16, maxPerHost=2, segments=4, minSplitSize=256 * KiB)
        results = await downloader.downloadAll(requests)
        for path, result in zip(paths, results):
            self.assertSaved(result, directory / path.rsplit("/", 1)[-1], final.digest(path, size), size)
        self.assertEqual(final.maxActive, 2)
        self.assertLessEqual(self.origin.maxActive, 2)
        self.assertEqual(len(self.origin.gets("/hop")), 4)

    async def test_redirectsBetweenFullServersDoNotDeadlock(self) -> None:
        """
        With one connection per server, files the first server redirects to
        the second and files the second redirects to the first all finish,
        with one response at a time on each server: a redirect gives back
        its server's slot before it waits for the next server's.  (Holding
        it while waiting, a file holding the first and waiting for the
        second, and one holding the second and waiting for the first, would
        wait for ever; counting it under the first server alone, a redirect
        was answered there while another file's body still came from it.)
        """
        other = startOrigin(self, "second")
        directory = self.directory()
        expected = []
        requests = []
        for n in range(2):
            for source, target, size in ((self.origin, other, 64 * KiB), (other, self.origin, 512 * KiB)):
                path = f"/file/{source.name}-to-{target.name}-{n}.bin"
                url = source.hopURL(1, target.url(f"{path}?size={size}&rate={MiB}"))
                requests.append(DownloadRequest(url=url, directory=directory))
                expected.append((path, target.digest(path, size), size))
        downloader = self.downloader(maxConnections=8, maxPerHost=1, segments=1)
        results = await downloader.downloadAll(requests)
        for (path, digest, size), result in zip(expected, results):
            self.assertSaved(result, directory / path.rsplit("/", 1)[-1], digest, size)
        self.assertEqual((self.origin.maxActive, other.maxActive), (1, 1))

    async def test_redirectedFilesFollowTheirRedirectsAtOnce(self) -> None:
        """
        A file redirected to a busy server keeps its place in C{maxConnections}
        while it waits for one there, so the redirecting server hands out
        at most that many links not yet used, and links that expire (as
        GitHub's release assets do after five minutes) are used in time:
        twelve files redirected to one server with 4 connections, 2 per
        host, all saved, each link used before 4 newer ones were handed
        out.  A file gave its place back at the redirect, the next file
        took it and was redirected too, and all twelve links were handed
        out while the second server took two files at a time: 6 of them
        failed with 403.
        """
        connections = 4
        redirector = startOrigin(self, "redirector")
        files = redirector.linksTo = startOrigin(self, "files")
        query = f"size={128 * KiB}&rate={MiB}&newer={connections}"
        directory = self.directory()
        names = [f"asset-{n}.bin" for n in range(12)]
        downloader = self.downloader(maxConnections=connections, maxPerHost=2, segments=1)
        results = await downloader.downloadAll(
            [DownloadRequest(url=redirector.url(f"/sign/{name}?{query}"), directory=directory) for name in names]
        )
        self.assertEqual([r.uri for r in files.gets() if r.status == 403], [])
        for name, result in zip(names, results):
            self.assertSaved(result, directory / name, files.digest(f"/file/{name}", 128 * KiB), 128 * KiB)
        self.assertEqual(len(redirector.gets()), 12)
        self.assertEqual(files.maxActive, 2)

    async def test_segmentsOfARedirectedFileAskTheServerRedirectedTo(self) -> None:
        """
        Connections a redirected file adds once it splits wait for a slot
        at the server it was redirected to, where they connect, not at the
        redirecting one: with the redirecting server full of other files,
        the redirected file still uses two connections at once.
        """
        final = startOrigin(self, "final")
        directory = self.directory()
        downloader = self.downloader(maxConnections=8, maxPerHost=2, segments=2, minSplitSize=256 * KiB)
        size = 2 * MiB
        moved = downloader.submit(
            DownloadRequest(url=self.origin.hopURL(1, final.url(f"/file/moved.bin?size={size}&rate={2 * MiB}")), directory=directory)
        )
        # Submitted after it: they take the redirecting server's two slots
        # as the redirect gives its own back, and keep them.
        busy = [
            downloader.submit(DownloadRequest(url=self.origin.url(f"/file/busy-{n}.bin?size={64 * MiB}&rate={MiB}"), directory=directory))
            for n in range(2)
        ]
        result = await moved.deferred
        self.assertSaved(result, directory / "moved.bin", final.digest("/file/moved.bin", size), size)
        self.assertEqual(len(final.gets("/file/moved.bin")), 2)
        self.assertEqual(result.segments, 2)
        self.assertEqual([job.deferred.called for job in busy], [False, False])
        for job in busy:
            downloader.cancel(job.id)
            await self.failureOf(job.deferred, defer.CancelledError)

    async def test_cancelWhileASegmentWaitsGivesBackEverySlot(self) -> None:
        """
        Cancelling a file while one of its connections waits for a slot
        gives back every slot it held.  When the active connection is
        cancelled first, its slot wakes the waiting one, which takes it and
        must give it back as it finds the file stopping: that slot was lost
        for good, and after two such cancels the server took no file more.
        (The connections are cancelled in the order of a set, which varies:
        here they are kept in the order they started, so that the active
        one goes first.)
        """

        class InStartOrder(set):  # type: ignore[type-arg]
            def __init__(self, items: Any) -> None:
                super().__init__(items)
                self.order = list(items)

            def add(self, item: Any) -> None:
                super().add(item)
                self.order.append(item)

            def discard(self, item: Any) -> None:
                super().discard(item)
                if item in self.order:
                    self.order.remove(item)

            def __iter__(self) -> Any:
                return iter(list(self.order))

        directory = self.directory()
        downloader = self.downloader(maxConnections=8, maxPerHost=2, segments=4, minSplitSize=256 * KiB)
        slots = downloader._slots
        key = ("http", "127.0.0.1", self.origin.port)
        busy = downloader.submit(
            DownloadRequest(url=self.origin.url(f"/file/busy.bin?size={64 * MiB}&rate={MiB}&ranges=0"), directory=directory)
        )
        await waitUntil(lambda: self.origin.active == 1)
        for n in range(2):
            job = downloader.submit(
                DownloadRequest(url=self.origin.url(f"/file/split-{n}.bin?size={64 * MiB}&rate={MiB}"), directory=directory)
            )
            download = job._download
            download.workers = InStartOrder(download.workers)
            await waitUntil(lambda: bool(download._idle))
            self.assertEqual((slots.used, slots._byHost[key]), (2, 2))
            downloader.cancel(job.id)
            await self.failureOf(job.deferred, defer.CancelledError)
            self.assertEqual((slots.used, slots._byHost[key]), (1, 1))
        downloader.cancel(busy.id)
        await self.failureOf(busy.deferred, defer.CancelledError)
        self.assertEqual((slots.used, slots._byHost), (0, {}))

    async def test_freeServerNotHeldBehindABusyOne(self) -> None:
        """
        Over real sockets, with one connection per server: a file from a
        second server starts and finishes while the first server's slow
        files are still coming, not after them (it waited behind the file
        queued for the busy server, with seven connections idle).
        """
        other = startOrigin(self, "second")
        directory = self.directory()
        slow = [
            DownloadRequest(url=self.origin.url(f"/file/slow-{n}.bin?size={MiB}&rate={256 * KiB}"), directory=directory)
            for n in range(2)
        ]
        downloader = self.downloader(maxConnections=8, maxPerHost=1)
        jobs = [downloader.submit(request) for request in slow]
        quick = downloader.submit(DownloadRequest(url=other.url("/file/quick.bin?size=1000"), directory=directory))
        result = await quick.deferred
        self.assertEqual(result.size, 1000)
        self.assertEqual([job.deferred.called for job in jobs], [False, False])
        for job in jobs:
            await job.deferred

    async def test_idleConnectionsCappedInAll(self) -> None:
        """
        Finished downloads from many hosts leave at most C{maxConnections}
        idle connections open in all (the longest idle are closed), not
        one per host for the pool's whole timeout.
        """
        origins = [self.origin] + [startOrigin(self, f"host{n}") for n in range(5)]
        directory = self.directory()
        downloader = self.downloader(maxConnections=2, maxPerHost=2)
        for origin in origins:
            result = await downloader.download(origin.url(f"/file/{origin.name}.bin?size={10 * KiB}"), directory)
            self.assertIsInstance(result, DownloadResult)
        await deferLater(reactor, 0.2, lambda: None)  # the closes reach the origins
        stillOpen = [o.name for o in origins if o.factory.protocols]
        self.assertEqual(stillOpen, [o.name for o in origins[-2:]])
        # The newest ones are kept and reused.
        await downloader.download(origins[-1].url("/file/again.bin?size=100"), directory)
        self.assertEqual(origins[-1].factory.accepted, 1)

    async def test_totalLimitOneHost(self) -> None:
        """
        C{maxConnections=2} caps the connections one segmented file uses
        even when C{segments} and C{maxPerHost} allow more.
        """
        directory = self.directory()
        size = 2 * MiB
        url = self.origin.url(f"/file/capped.bin?size={size}&rate={4 * MiB}")
        downloader = self.downloader(maxConnections=2, maxPerHost=4, segments=4, minSplitSize=64 * KiB)
        result = await downloader.download(url, directory)
        self.assertSaved(result, directory / "capped.bin", self.origin.digest("/file/capped.bin", size), size)
        self.assertLessEqual(self.origin.maxActive, 2)
        self.assertLessEqual(result.segments, 2)

    async def test_rateLimit(self) -> None:
        """
        C{rateLimit} slows all downloads together: 1 MiB in two files at
        1 MiB/s takes most of a second (a burst allowed), and both are
        exact.
        """
        directory = self.directory()
        downloader = self.downloader(rateLimit=MiB)
        started = reactor.seconds()
        results = await downloader.downloadAll(
            [
                DownloadRequest(url=self.origin.url(f"/file/rate{n}.bin?size={512 * KiB}"), directory=directory)
                for n in range(2)
            ]
        )
        elapsed = reactor.seconds() - started
        for n, result in enumerate(results):
            self.assertSaved(result, directory / f"rate{n}.bin", self.origin.digest(f"/file/rate{n}.bin", 512 * KiB), 512 * KiB)
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 3.0)

    async def test_bigDownloadKeepsMemoryBounded(self) -> None:
        """
        A 200 MiB download (origin and downloader in this process) grows
        the resident memory by far less than the file: bytes are streamed
        to disk, never held.
        """
        directory = self.directory()
        size = 200 * MiB
        url = self.origin.url(f"/file/big.bin?size={size}")
        downloader = self.downloader(stallTimeout=10.0)
        baseline = currentRSS()
        peakBefore = peakRSS()
        samples: List[int] = []

        def sample() -> None:
            now = currentRSS()
            if now is not None:
                samples.append(now)

        sampler = LoopingCall(sample)
        sampler.start(0.02)
        try:
            result = await downloader.download(url, directory)
        finally:
            sampler.stop()
        growth = peakRSS() - peakBefore
        self.assertLess(growth, 40 * MiB, f"peak RSS grew {growth / MiB:.1f} MiB")
        if baseline is not None and samples:
            self.assertLess(max(samples) - baseline, 40 * MiB, f"RSS grew {(max(samples) - baseline) / MiB:.1f} MiB")
        self.assertSaved(result, directory / "big.bin", self.origin.digest("/file/big.bin", size), size)


class ProxyTests(EngineTestCase):
    """
    Downloads through netsuite's own HTTP proxy.
    """

    async def startProxy(
        self, connectPorts: frozenset = frozenset(), authenticator: Optional[Authenticator] = None
    ) -> Tuple[ProxyFactory, int]:
        factory = ProxyFactory(
            reactor,
            rules=ProxyRules(allowLoopback=True, connectPorts=connectPorts),
            settings=ProxySettings(),
            authenticator=authenticator,
        )
        listener = makeProxyService("tcp:0:interface=127.0.0.1", reactor, factory=factory, grace=1)
        port = await startListener(self, listener)
        return factory, port

    async def test_proxyUnreachableNamed(self) -> None:
        """
        When the proxy cannot be connected to, the error says so and names
        the proxy (password hidden); it named the download's URL alone, as
        if its host had refused.
        """
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        proxy = f"http://carol:Hunter4pw@127.0.0.1:{port}"
        url = self.origin.url("/file/proxied.bin")
        error = await self.failureOf(self.downloader(proxy=proxy, retries=0).download(url, self.directory()), DownloadError)
        self.assertEqual(
            str(error), f"{url}: cannot connect to the proxy http://carol:***@127.0.0.1:{port}: the connection was refused"
        )
        self.assertTrue(error.retryable)

    async def test_httpThroughProxy(self) -> None:
        """
        An http download goes through the proxy (the origin sees its Via)
        and is exact.
        """
        factory, port = await self.startProxy()
        directory = self.directory()
        url = self.origin.url("/file/proxied.bin")
        result = await self.downloader(proxy=f"http://127.0.0.1:{port}").download(url, directory)
        self.assertSaved(result, directory / "proxied.bin", self.origin.digest("/file/proxied.bin"))
        seen = self.origin.seen("/file/proxied.bin")
        self.assertTrue(seen)
        self.assertTrue(all(r.headers.get("via") == "1.1 netsuite" for r in seen), [r.headers for r in seen])
        self.assertGreaterEqual(factory.stats.counters.get("requests", 0), 1)

    async def test_httpsThroughProxyTunnel(self) -> None:
        """
        An https download goes through a CONNECT tunnel, the certificate
        checked end to end.
        """
        tlsOrigin, caFile = self.startTLSOrigin()
        factory, port = await self.startProxy(frozenset({tlsOrigin.port}))
        directory = self.directory()
        url = tlsOrigin.url("/file/tunnelled.bin")
        result = await self.downloader(proxy=f"http://127.0.0.1:{port}", caFile=caFile).download(url, directory)
        self.assertSaved(result, directory / "tunnelled.bin", tlsOrigin.digest("/file/tunnelled.bin"))
        self.assertGreaterEqual(factory.stats.counters.get("tunnels", 0), 1)
        self.assertTrue(tlsOrigin.seen("/file/tunnelled.bin"))
        self.assertTrue(all("via" not in r.headers for r in tlsOrigin.requests))

    async def test_tinyRecordsGatheredInATunnel(self) -> None:
        """
        Through a CONNECT tunnel too, the plaintext of the TLS records read
        at once goes to the HTTP client together.
        """
        url = self.startTinyRecordOrigin(4096)
        _, port = await self.startProxy(frozenset({int(url.rsplit(":", 1)[1].split("/")[0])}))
        await self.assertRecordsGathered(url, self.downloader(proxy=f"http://127.0.0.1:{port}", insecure=True))

    async def test_proxyCredentials(self) -> None:
        """
        C{user:password@} in the proxy URL answers a proxy that wants users,
        for plain requests and for CONNECT tunnels; a percent-encoded UTF-8
        password is sent as its bytes.  Wrong credentials fail readably, at
        once, with nothing written.
        """
        users = self.mktemp()
        with open(users, "w", encoding="utf-8") as f:
            f.write("alice:" + hashPassword("p\u00e4ss:word", n=1024) + "\n")
        tlsOrigin, caFile = self.startTLSOrigin()
        factory, port = await self.startProxy(frozenset({tlsOrigin.port}), Authenticator(loadUsers(users), reactor))
        right = self.downloader(proxy=f"http://alice:p%C3%A4ss:word@127.0.0.1:{port}", caFile=caFile)
        directory = self.directory()
        for origin, path in ((self.origin, "/file/plain.bin"), (tlsOrigin, "/file/tunnel.bin")):
            result = await right.download(origin.url(path), directory)
            self.assertSaved(result, directory / path.rsplit("/", 1)[1], origin.digest(path))
            self.assertTrue(all("proxy-authorization" not in r.headers for r in origin.requests))
        self.assertGreaterEqual(factory.stats.counters.get("tunnels", 0), 1)
        wrong = self.downloader(proxy=f"http://alice:nope@127.0.0.1:{port}", caFile=caFile)
        for origin, path in ((self.origin, "/file/refused.bin"), (tlsOrigin, "/file/refused.bin")):
            url = origin.url(path)
            error = await self.failureOf(wrong.download(url, directory), DownloadError)
            self.assertReadable(error, url)
            self.assertIn("407", str(error))
            self.assertEqual(origin.seen(path), [])
        self.assertEqual(sorted(listing(directory)), ["plain.bin", "tunnel.bin"])

    async def test_proxyRefusalIsReadable(self) -> None:
        """
        A tunnel the proxy refuses (port not allowed) fails with a readable
        L{DownloadError}.
        """
        tlsOrigin, _ = self.startTLSOrigin()
        _, port = await self.startProxy(frozenset())
        directory = self.directory()
        url = tlsOrigin.url("/file/refused.bin")
        error = await self.failureOf(
            self.downloader(proxy=f"http://127.0.0.1:{port}", insecure=True, retries=0).download(url, directory),
            DownloadError,
        )
        self.assertReadable(error, url)
        self.assertEqual(tlsOrigin.requests, [])
        # The proxy was reached: its refusal is not a failure to reach it.
        self.assertNotIn("cannot connect to the proxy", str(error))

    async def test_proxyNotResolvedNamed(self) -> None:
        """
        A proxy whose name does not resolve is named too (Twisted's
        DNSLookupError is no ConnectError: the URL's host, an address, was
        blamed).
        """
        url = self.origin.url("/file/proxied.bin")
        proxy = "http://carol:Hunter4pw@proxy.invalid:3128"
        error = await self.failureOf(self.downloader(proxy=proxy, retries=0).download(url, self.directory()), DownloadError)
        self.assertEqual(
            str(error), f"{url}: cannot connect to the proxy http://carol:***@proxy.invalid:3128: the host name could not be resolved"
        )

    async def test_proxyHostConvertedToIDNA(self) -> None:
        """
        A proxy host that is not ASCII is converted as a download's host
        is: Twisted refused full-width characters ("invalid hostname") and
        resolved other names with Python's IDNA 2003 codec.
        """
        _, port = await self.startProxy()
        directory = self.directory()
        url = self.origin.url("/file/wide.bin")
        proxy = f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}"
        result = await self.downloader(proxy=proxy).download(url, directory)
        self.assertSaved(result, directory / "wide.bin", self.origin.digest("/file/wide.bin"))

    def test_proxyHostTwistedCannotReachRefused(self) -> None:
        """
        A proxy whose host no resolver or Twisted can take (a name IDNA
        2008 refuses, an empty label, an IPv6 zone ID) is a L{ValueError}
        from L{Downloader} at once, its password hidden: it was retried
        for each download, the messages blaming the download's URL.
        """
        for host, reason in (
            ("a_b.example", "the host name 'a_b.example' is not a valid IDNA name"),
            ("-a-.example", "(Label must not start or end with a hyphen), so Twisted cannot connect to it"),
            ("a..example", "the host name has an empty label"),
            ("b\u00fc_cher.example", "the host name is not valid IDNA (Codepoint U+005F"),
            ("[::1%25lo]", "an IPv6 zone ID (the part after %25) cannot be used in a URL"),
        ):
            with self.assertRaises(ValueError) as e:
                Downloader(reactor, settings(proxy=f"http://carol:Hunter4pw@{host}:3128"))
            message = str(e.exception)
            self.assertTrue(message.startswith(f"the proxy http://carol:***@{host}:3128 cannot be used: "), message)
            self.assertIn(reason, message)
            self.assertNotIn("Hunter4pw", message)
            self.assertNotIn("\n", message)


class TunnelProtocolTests(SynchronousTestCase):
    """
    The CONNECT exchange with a proxy, in memory.
    """

    def test_answerInPiecesOfOneByte(self) -> None:
        """
        A proxy's answer to CONNECT that comes a byte at a time is read
        whole (its end found across reads), and what follows it goes to
        the protocol inside the tunnel.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import StringTransport

        from netsuite.download.agent import _TunnelFactory

        received: list[bytes] = []

        class Inner(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        factory = _TunnelFactory(Factory.forProtocol(Inner), b"example.com:443", None)
        tunnel = factory.buildProtocol(None)
        tunnel.makeConnection(StringTransport())
        answer = b"HTTP/1.1 200 Connection established\r\nVia: 1.1 p\r\n\r\nhello"
        for i in range(len(answer) - 6):
            tunnel.dataReceived(answer[i : i + 1])
        self.assertFalse(factory.done.called)
        tunnel.dataReceived(answer[-6:])
        self.assertIsInstance(self.successResultOf(factory.done), Inner)
        self.assertEqual(received, [b"hello"])


class JobSnapshotTests(SynchronousTestCase):
    def test_retryReasonOnlyWhileRetrying(self) -> None:
        """
        A job's snapshot shows why its last attempt failed as its C{error}
        while it waits to retry, not once it runs again; the error it
        failed with wins.
        """
        job = engineModule.Job(id="1", request=DownloadRequest(url="http://example.com/x"))
        job._retried = "connection refused"
        job.state = "retrying"
        self.assertEqual(job.snapshot()["error"], "connection refused")
        job.state = "running"
        self.assertIsNone(job.snapshot()["error"])
        job.state, job.error = "failed", "gave up"
        self.assertEqual(job.snapshot()["error"], "gave up")


class BodyReaderTests(SynchronousTestCase):
    """
    The body reader on a memory transport and a fake clock.
    """

    def test_chunksWhilePausedAddToTheWait(self) -> None:
        """
        Chunks of one read that arrive after the rate limit paused the
        transport add to the pause: it resumes once all of them are paid
        for, not when the first pause would have ended.
        """
        reader, clock = self.reader([], rate=(1000, 100), piece=_Piece(0, 10_000))
        transport = reader.transport
        reader.dataReceived(b"x" * 100)  # the burst
        self.assertEqual(transport.producerState, "producing")
        clock.advance(0)  # the next pass
        reader.dataReceived(b"x" * 100)  # 0.1 s owed
        self.assertEqual(transport.producerState, "paused")
        reader.dataReceived(b"x" * 100)  # 0.2 s owed, at the end of the pass
        clock.advance(0)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(0.15)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(0.06)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # the stall timer only
        reader.connectionLost(Failure(ResponseDone()))

    def reader(
        self, writes: list, rate: tuple[float, float] | None = None, piece: _Piece | None = None
    ) -> tuple[_BodyReader, Clock]:
        """
        A body reader of C{piece} (by default the whole body, of unknown
        length) on a L{StringTransport}, its writes going to C{writes}, with
        a rate limit of C{rate} (bytes a second, burst) if given; and its
        clock.
        """
        clock = Clock()
        download = SimpleNamespace(
            settings=DownloadSettings(stallTimeout=30),
            clock=clock,
            downloader=SimpleNamespace(_rateLimit=None if rate is None else TokenBucket(*rate, clock)),
            write=lambda data, offset: writes.append((offset, data)),
            job=SimpleNamespace(done=0),
            url="http://example.com/f",
        )
        reader = _BodyReader(download, piece or _Piece(0, None), None)
        reader.makeConnection(StringTransport())
        return reader, clock

    def test_smallChunksWrittenTogether(self) -> None:
        """
        Of the chunks that come in one pass of the reactor, the first is
        written at once and the rest together at the end of the pass, or
        whenever they reach L{BODY_BATCH_BYTES} (a server sending 1-byte
        chunks cost a write for each).
        """
        writes: list = []
        reader, clock = self.reader(writes)
        for _ in range(1000):
            reader.dataReceived(b"a")
        self.assertEqual(writes, [(0, b"a")])
        clock.advance(0)
        self.assertEqual(writes, [(0, b"a"), (1, b"a" * 999)])
        writes.clear()
        reader.dataReceived(b"b")
        for _ in range(3):
            reader.dataReceived(b"c" * (BODY_BATCH_BYTES // 2))
        self.assertEqual([(offset, len(data)) for offset, data in writes], [(1000, 1), (1001, BODY_BATCH_BYTES)])
        clock.advance(0)
        self.assertEqual(writes[-1][0], 1001 + BODY_BATCH_BYTES)
        self.assertEqual(reader.received, 1001 + 3 * (BODY_BATCH_BYTES // 2))

    def test_batchWrittenBeforeTheEnd(self) -> None:
        """
        Chunks held back in the pass the body ends in are written before
        the reader is done.
        """
        writes: list = []
        reader, clock = self.reader(writes)
        reader.dataReceived(b"a")
        reader.dataReceived(b"b")
        reader.dataReceived(b"c")
        reader.connectionLost(Failure(ResponseDone()))
        self.assertEqual(writes, [(0, b"a"), (1, b"bc")])
        self.assertEqual(self.successResultOf(reader.finished), None)
        self.assertEqual(clock.getDelayedCalls(), [])


class PoolTests(SynchronousTestCase):
    """
    The downloader's connection pool.
    """

    def test_closingConnectionNotKept(self) -> None:
        """
        A connection handed back to the pool while it closes (the body
        L{engineModule._discard} threw away had all come already), closing
        itself or under a TLS layer, is not kept for the next request: that
        request went out on it, was lost as it closed, and was sent again
        (a redirecting server answered the same request twice).  An open
        one is kept.
        """

        class Connection:
            state = "QUIESCENT"

            def __init__(self, transport: Any) -> None:
                self.transport = transport

        pool = engineModule._QuietPool(MemoryReactorClock(), persistent=True)
        key = ("http", b"a.example", 80)
        for layers in (0, 1):
            transport: Any = StringTransport()
            transport.loseConnection()
            for _ in range(layers):
                transport = SimpleNamespace(transport=transport, disconnecting=False, loseConnection=lambda: None)
            pool._putConnection(key, Connection(transport))
            self.assertEqual(pool._connections.get(key, []), [], layers)
        kept = Connection(SimpleNamespace(transport=StringTransport(), disconnecting=False))
        pool._putConnection(key, kept)
        self.assertEqual(pool._connections[key], [kept])


class DescribeTests(SynchronousTestCase):
    """
    L{engineModule._describe} gives fixed phrases, never Python's words.
    """

    def test_unexpectedErrorNamedByItsKind(self) -> None:
        """
        An exception the engine does not expect is described by a fixed
        phrase naming its class, not by its text: an C{AttributeError}
        from inside Twisted showed "'NoneType' object has no attribute
        'append'".
        """
        described = engineModule._describe(Failure(AttributeError("'NoneType' object has no attribute 'append'")))
        self.assertEqual(described, "an unexpected error in the HTTP client (AttributeError)")

    def test_rarerCertificateProblemsInOpenSSLsWords(self) -> None:
        """
        A verification error without words of netsuite's own is named in
        OpenSSL's (C{X509_V_ERR_CERT_REVOKED}, 23, here).
        """
        self.assertEqual(certificateProblem(10), "the server's certificate has expired")
        self.assertEqual(certificateProblem(23), "the server's certificate was refused (certificate revoked)")

    def test_tlsFailuresInOpenSSLsWords(self) -> None:
        """
        A TLS failure other than a certificate named is described from
        OpenSSL's reason: an alert under its older name too, and any other
        reason in OpenSSL's words; "is the server's certificate trusted?"
        only when OpenSSL says the certificate failed, or says nothing
        readable.
        """
        def described(*reasons: str) -> str:
            return engineModule._describe(Failure(TLSError([("SSL routines", "", reason) for reason in reasons])))

        trusted = "the TLS handshake failed (is the server's certificate trusted?)"
        self.assertEqual(described("sslv3 alert handshake failure"), 'the server refused the TLS handshake (alert "handshake failure")')
        self.assertEqual(described("tlsv1 alert protocol version"), 'the server refused the TLS handshake (alert "protocol version")')
        self.assertEqual(described("packet length too long"), "the server's answer is not valid TLS (packet length too long)")
        self.assertEqual(described("unsupported protocol"), "the TLS handshake failed (unsupported protocol)")
        self.assertEqual(described("certificate verify failed"), trusted)
        self.assertEqual(described("\x1b[2Jnot words"), trusted)
        self.assertEqual(described(), trusted)
        self.assertEqual(engineModule._describe(Failure(TLSError())), trusted)


class RetryAfterTests(SynchronousTestCase):
    """
    L{retryAfterSeconds} reads C{Retry-After} as seconds or as an HTTP date.
    """

    now = 1_700_000_000.0

    def date(self, when: float) -> bytes:
        """
        C{when} as an IMF-fixdate (RFC 9110 5.6.7).
        """
        return formatdate(when, usegmt=True).encode("ascii")

    def test_dateInTheFuture(self) -> None:
        """
        A date ahead is the seconds until then.
        """
        self.assertEqual(self.date(self.now + 90), b"Tue, 14 Nov 2023 22:14:50 GMT")
        self.assertEqual(retryAfterSeconds(self.date(self.now + 90), self.now), 90.0)
        self.assertEqual(retryAfterSeconds(self.date(self.now + 1), self.now), 1.0)
        self.assertEqual(retryAfterSeconds(self.date(self.now + 86400), self.now), 86400.0)

    def test_dateInThePast(self) -> None:
        """
        A date gone by (or now) means no wait at all: 0, not a negative
        delay.
        """
        self.assertEqual(retryAfterSeconds(self.date(self.now), self.now), 0.0)
        self.assertEqual(retryAfterSeconds(self.date(self.now - 90), self.now), 0.0)
        self.assertEqual(retryAfterSeconds(b"Sun, 06 Nov 1994 08:49:37 GMT", self.now), 0.0)

    def test_seconds(self) -> None:
        """
        Plain digits are seconds, whatever the date.
        """
        self.assertEqual(retryAfterSeconds(b"120", self.now), 120.0)
        self.assertEqual(retryAfterSeconds(b"0", self.now), 0.0)

    def test_garbageIsNone(self) -> None:
        """
        A missing, empty or unreadable value is L{None} (no Retry-After),
        never an exception.
        """
        for garbage in (
            None,
            b"",
            b"soon",
            b"-5",
            b"1.5",
            b"Sun, 06 Nov 1994",
            b"Sun, 32 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:61:00 GMT",
            b"\xff\xfe",
        ):
            self.assertIsNone(retryAfterSeconds(garbage, self.now), garbage)

    def test_garbageLookingLikeANumberOrADateIsNone(self) -> None:
        """
        Bytes that pass for digits in Latin-1 (superscripts) and a date
        whose year no clock reaches are unreadable values too: L{None},
        never an exception (which would end the download as an internal
        error instead of retrying it).
        """
        for garbage in (b"\xb2", b"1\xb9", b"Sun, 06 Nov 99999999999 08:49:37 GMT"):
            try:
                seconds = retryAfterSeconds(garbage, self.now)
            except Exception as e:
                self.fail(f"Retry-After: {garbage!r} raised {e.__class__.__name__}: {e}")
            self.assertIsNone(seconds, garbage)


class StateFileTests(SynchronousTestCase):
    """
    L{DownloadState.fromJSON}: what a state file may hold.
    """

    def test_validatorsMustBeHeaderValues(self) -> None:
        """
        An ETag or Last-Modified that cannot be sent back in C{If-Range}
        makes the state unreadable (L{None}); Latin-1 text is fine.
        """
        base = {"version": 1, "url": "http://example.com/f", "done": []}
        for field in ("etag", "lastModified"):
            for bad in ("\u2603", "a\r\nb", "a\x00", "\x7f", 5):
                self.assertIsNone(DownloadState.fromJSON({**base, field: bad}), (field, bad))
            state = DownloadState.fromJSON({**base, field: '"caf\xe9"'})
            self.assertEqual(getattr(state, field), '"caf\xe9"')

    def test_savedInPlaceOnAFullDisk(self) -> None:
        """
        On a full disk, which has no room for the temporary file of an
        atomic save, the state is written over the old one in place: the
        bytes written before the disk filled count for the resume (the
        state saved at the start, with nothing done, stayed).  Any other
        error is raised, the old state kept.
        """
        path = Path(self.mktemp())
        first = DownloadState(url="http://example.com/f", size=10 * MiB, done=[], etag='"' + "e" * 40 + '"')
        first.save(path)
        size = path.stat().st_size
        for errorNumber in (errno.ENOSPC, errno.EDQUOT):

            def full(*args: Any, **kwargs: Any) -> None:
                raise OSError(errorNumber, os.strerror(errorNumber))

            self.patch(state, "writeAtomically", full)
            later = DownloadState(url="http://example.com/f", size=10 * MiB, done=[(0, 3 * MiB)])
            later.save(path)
            self.assertEqual(loadState(path).done, [(0, 3 * MiB)])
            self.assertEqual(list(path.parent.glob(path.name + "*")), [path])
            # Padded with spaces to its old length, never cut: a crash
            # leaves one state or the other.
            self.assertEqual(path.stat().st_size, size)

        def denied(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))

        self.patch(state, "writeAtomically", denied)
        with self.assertRaises(PermissionError):
            DownloadState(url="http://example.com/f", size=10 * MiB, done=[]).save(path)
        self.assertEqual(loadState(path).done, [(0, 3 * MiB)])

    def test_rewriteInPlaceOnlyOverAFileOfItsOwn(self) -> None:
        """
        L{rewriteInPlace} writes only over a regular file of its own that
        has room for the new bytes: not through a symbolic link, not over a
        hard-linked file, a FIFO or a directory, not past the space the
        file holds (a full disk has none to give); each is left unchanged.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        own = directory / "own.json"
        own.write_bytes(b"x" * 100)
        own.chmod(0o600)
        self.assertTrue(rewriteInPlace(own, b"new"))
        self.assertEqual(own.read_bytes(), b"new")
        # With a filler: padded to the old length in one write, not cut.
        self.assertTrue(rewriteInPlace(own, b"[]", filler=b" "))
        self.assertEqual(own.read_bytes(), b"[] ")
        victim = directory / "victim"
        victim.write_bytes(b"precious")
        victim.chmod(0o600)
        alone = directory / "alone"
        alone.write_bytes(b"precious")
        alone.chmod(0o600)
        (directory / "link.json").symlink_to(alone)
        os.link(victim, directory / "hard.json")
        os.mkfifo(directory / "fifo.json", 0o600)
        (directory / "dir.json").mkdir(0o700)
        shared = directory / "shared.json"
        shared.write_bytes(b"planted by another user, for all to read")
        shared.chmod(0o644)
        for name in ("link.json", "hard.json", "fifo.json", "dir.json", "missing.json", "shared.json"):
            self.assertFalse(rewriteInPlace(directory / name, b"new"), name)
        self.assertEqual((victim.read_bytes(), alone.read_bytes()), (b"precious", b"precious"))
        self.assertEqual(shared.read_bytes(), b"planted by another user, for all to read")
        small = directory / "small.json"
        small.write_bytes(b"")
        small.chmod(0o600)
        self.assertFalse(rewriteInPlace(small, b"y" * 100_000))
        self.assertEqual(small.read_bytes(), b"")

    def test_booleansAreNotLengths(self) -> None:
        """
        C{true} and C{false} are not byte counts (Python takes them for 1
        and 0): a range of them went out as C{Range: bytes=True-...}.
        """
        base = {"version": 1, "url": "http://example.com/f", "done": [], "size": 10}
        for fields in ({"done": [[False, True]]}, {"size": True}, {"adopted": False}):
            self.assertIsNone(DownloadState.fromJSON({**base, **fields}), fields)

    def test_rangesMergedInOnePass(self) -> None:
        """
        L{mergeRanges} sorts, merges touching and overlapping ranges and
        drops empty ones, in one pass (it added them one by one, each time
        rebuilding the list: a state file of 50,000 ranges took minutes).
        """
        self.assertEqual(mergeRanges([(5, 9), (0, 2), (2, 3), (7, 12), (20, 20), (15, 14)]), [(0, 3), (5, 12)])
        many = [(2 * i, 2 * i + 1) for i in range(50000)]
        self.assertEqual(mergeRanges(reversed(many)), many)
        self.assertEqual(intersectRanges(many, [(1, 7), (99990, 99994)]), [(2, 3), (4, 5), (6, 7), (99990, 99991), (99992, 99993)])

    def test_dataExtents(self) -> None:
        """
        L{dataExtents} finds what a sparse file holds; L{intersectRanges}
        keeps the claimed ranges that lie in it.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.truncate(1024 * KiB)
            f.seek(512 * KiB)
            f.write(b"x" * (64 * KiB))
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        extents = dataExtents(fd, 1024 * KiB)
        if extents == [(0, 1024 * KiB)]:
            raise SkipTest("this file system does not report holes")
        self.assertEqual(extents, [(512 * KiB, 576 * KiB)])
        self.assertEqual(dataExtents(fd, 520 * KiB), [(512 * KiB, 520 * KiB)])
        self.assertEqual(dataExtents(fd, 0), [])
        self.assertEqual(
            intersectRanges([(0, 10), (500 * KiB, 530 * KiB), (570 * KiB, 600 * KiB)], extents),
            [(512 * KiB, 530 * KiB), (570 * KiB, 576 * KiB)],
        )

    def test_adoptedLength(self) -> None:
        """
        The length of a file continued with C{-c} is kept; a value that is
        not a length makes the state unreadable.
        """
        state = DownloadState(url="http://example.com/f", finalUrl="http://example.com/f", done=[(0, 10)], adopted=10)
        self.assertEqual(DownloadState.fromJSON(state.toJSON()), state)
        for bad in (-1, "10", 1.5):
            self.assertIsNone(DownloadState.fromJSON({**state.toJSON(), "adopted": bad}), bad)


class StateWarningTests(SynchronousTestCase):
    def test_plantedNameEscapedInTheLog(self) -> None:
        """
        A state file planted with an escape sequence in its name is named
        escaped in the log (the service's log is often a terminal, or read
        with tail -f): it cleared the screen.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        directory = Path(self.mktemp())
        directory.mkdir()
        planted = directory / "a\x1b]2;PWNED\x07\x1b[2J.part.json"
        planted.write_text("not json")
        self.assertIsNone(state.loadState(planted))
        [message] = [formatEvent(e) for e in events]
        self.assertNotIn("\x1b", message)
        self.assertIn("a\\x1b]2;PWNED\\x07\\x1b[2J.part.json", message)


class ValueTests(SynchronousTestCase):
    """
    The helpers that read sizes, checksums and credentials.
    """

    def test_basicAuthorization(self) -> None:
        """
        Credentials are percent-decoded to bytes, and text that was not
        UTF-8 (surrogates) is sent as the bytes it was.
        """
        cases = [
            (("alice", "s3cret"), b"alice:s3cret"),
            (("al%20ice", "p%C3%A4ss%3Aword"), b"al ice:p\xc3\xa4ss:word"),
            (("z\u00f6e", ""), b"z\xc3\xb6e:"),
            (("us\udce9r", "p%E9ss"), b"us\xe9r:p\xe9ss"),
        ]
        for (user, password), pair in cases:
            self.assertEqual(basicAuthorization(user, password), b"Basic " + base64.b64encode(pair), (user, password))

    def test_parseSize(self) -> None:
        """
        Plain digits are bytes; K, M, G are binary.
        """
        self.assertEqual(parseSize("500"), 500)
        self.assertEqual(parseSize("10M"), 10 * MiB)
        self.assertEqual(parseSize("64K"), 64 * KiB)
        self.assertEqual(parseSize("1G"), 1024 * MiB)
        for bad in ("", "ten", "-1", "5Q"):
            self.assertRaises(ValueError, parseSize, bad)

    def test_loneSurrogatesAreNotText(self) -> None:
        """
        A lone surrogate (JSON's C{"\\ud800"} makes one) in a URL's host,
        path, query or password is refused as not text, instead of a codec
        error; surrogates standing for bytes that were not UTF-8 (as Python
        decodes a command line) are still sent as those bytes.
        """
        for url in (
            "http://198.51.100.7/\ud800",
            "http://198.51.100.7/x?q=\udbff",
            "http://u:\ud800@198.51.100.7/x",
            "http://\ud800.example/x",
            "http://198.51.100.7/\udfff",
        ):
            with self.assertRaises(BadURL, msg=repr(url)) as e:
                splitURL(url)
            self.assertIn("the URL is not valid text", str(e.exception))
            self.assertNotIn("\n", str(e.exception))
        self.assertEqual(splitURL("http://198.51.100.7/\udce9?\udc80")[0], "http://198.51.100.7/%E9?%80")

    def test_hostWithCapitalsMadeASCII(self) -> None:
        """
        A non-ASCII host with capitals, or with a letter whose lower case
        differs in length (İ) or is ASCII (the Kelvin sign), goes through
        IDNA as a lower-case one does, port and credentials kept: the host
        urlsplit gives is lower-cased, so it was not found in the URL as
        given, and treq raised UnicodeEncodeError on the URL left as it was
        (an internal error, also after a server's redirect).
        """
        cases = {
            "http://Exämple.com/a": "http://xn--exmple-cua.com/a",
            "http://EXÄMPLE.COM/a": "http://xn--exmple-cua.com/a",
            "https://u:p@Exämple.com:8443/a?b": "https://xn--exmple-cua.com:8443/a?b",
            "http://\u0130.com/x": "http://xn--i-9bb.com/x",
            "http://\u212a.example/": "http://k.example/",
            "http://Exämple.com:/a": "http://xn--exmple-cua.com/a",
        }
        for url, expected in cases.items():
            clean, _ = splitURL(url)
            self.assertEqual(clean, expected, url)
            # What treq does with the URL the engine gives it.
            engineModule._ReadyURL.from_text(clean).to_uri().to_text().encode("ascii")
        self.assertEqual(splitURL("https://u:p@Exämple.com:8443/a")[1], basicAuthorization("u", "p").decode())

    def test_hostNamesMappedAsBrowsersDo(self) -> None:
        """
        A host name that is not ASCII is converted by IDNA 2008 with the
        UTS #46 mapping, non-transitional, as browsers and Twisted do
        (Python's IDNA 2003 codec made C{faß.de} C{fass.de}, dropped a
        zero-width joiner, and refused right-to-left labels ending in a
        digit); capitals, full-width forms and a final dot are kept
        working; ASCII labels are left as ASCII names are.
        """
        cases = {
            "faß.de": "xn--fa-hia.de",
            "\u03c2.gr": "xn--3xa.gr",
            "\u05e9\u05dc\u05d5\u05dd1.example": "xn--1-9hcuf1d.example",
            "\u05d01.example": "xn--1-zhc.example",
            "\u0645\u062b\u0627\u0644\u0661.com": "xn--mgbh0fb7l.com",
            "B\u00dcCHER.example": "xn--bcher-kva.example",
            "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com": "example.com",
            "b\u00fccher.example.": "xn--bcher-kva.example.",
            "b\u00fccher\u3002example": "xn--bcher-kva.example",
            "\u212a.example": "k.example",
            "Ex\u00e4mple.com": "xn--exmple-cua.com",
            "\u0130.com": "xn--i-9bb.com",
            "\uab70.com": "xn--58d.com",
            "\u1c80.ru": "xn--b1a.ru",
            # A joiner after a virama is kept, not dropped.
            "\u0915\u094d\u200d\u0937.com": "xn--11b2ezcw70k.com",
            "a_b.b\u00fccher.example": "a_b.xn--bcher-kva.example",
        }
        for host, expected in cases.items():
            self.assertEqual(asciiHostName(host), expected, host)
        self.assertEqual(splitURL("http://u:p@Faß.de:8080/x")[0], "http://xn--fa-hia.de:8080/x")
        self.assertEqual(splitURL("https://\u03c2.gr./x")[0], "https://xn--3xa.gr./x")

    def test_hostNamesIDNARefusesAreReadable(self) -> None:
        """
        A name that is not ASCII and that IDNA 2008 refuses is a
        L{ValueError} in one phrase with idna's reason; the checks of ASCII
        names (empty labels, lengths) still apply after the conversion,
        and a long label is refused before idna takes time in the square
        of its length.
        """
        cases = {
            # A zero-width joiner outside its context (it was dropped).
            "a\u200db.com": "the host name is not valid IDNA (Unknown codepoint adjacent to joiner U+200D",
            "b\u00fc_cher.example": "the host name is not valid IDNA (Codepoint U+005F at position 3",
            "\u0661.com": "the host name is not valid IDNA (First codepoint in label",
            "b\u00fccher..example": "the host name has an empty label",
            ".b\u00fccher.example": "the host name has an empty label",
            "b\u00fccher.example..": "the host name has an empty label",
            "\u00fc" * 60 + ".example": "the host name has a label longer than 63 characters",
            "\u0661" * 8000: "the host name has a label longer than 63 characters",
            "\u00fc." * 200 + "example": "the host name is longer than 253 characters",
        }
        for host, expected in cases.items():
            with self.assertRaises(ValueError, msg=host[:20]) as e:
                asciiHostName(host)
            message = str(e.exception)
            self.assertTrue(message.startswith(expected), message)
            self.assertNotIn("\n", message)
            self.assertNotIn("Error", message)
            self.assertLess(len(message), 200)
        with self.assertRaises(BadURL) as e:
            splitURL("http://user:secret@b\u00fc_cher.example/x")
        self.assertIn("http://user:***@b\u00fc_cher.example/x: the host name is not valid IDNA", str(e.exception))

    def test_unreadableHostsSaySo(self) -> None:
        """
        A host holding bytes that are not UTF-8 (from a C{Location}) names
        them, not the code points that stand for them (U+DCC0); one holding
        a character that NFKC makes a URL delimiter (full-width C{＃ ／ ？ ＠
        ：}) says so, where only "not a valid URL" was said.
        """
        with self.assertRaises(ValueError) as e:
            asciiHostName("a\udcc0\udcae.example")
        self.assertEqual(str(e.exception), "the host name holds bytes that are not UTF-8 (0xC0 0xAE)")
        for host in ("a\uff03b.example", "a\uff0fb.example", "a\uff20b.example", "a\ufe56b.example"):
            with self.assertRaises(BadURL) as e:
                splitURL(f"http://{host}/x")
            self.assertIn(
                ": not a valid URL (its host holds a character that Unicode normalization (NFKC) makes one of / ? # @ :)",
                str(e.exception),
            )
            with self.assertRaises(ValueError) as e:
                checkURL(f"http://{host}/x")
            self.assertIn("is not a URL that can be read: its host holds a character", str(e.exception))
        checkURL("http:\\\\b.example\\x")  # read as browsers read it

    def test_forbiddenHostCharactersRefused(self) -> None:
        """
        A host holding a character the URL Standard forbids in a domain
        (C{<}, C{%}, C{^}, a space), also one UTS #46 maps a full-width
        form to, is refused in a phrase naming it.  The mapped name was
        sent to the proxy: C{Host: a<script>".example}, C{x%0d%0a.example}.
        """
        cases = {
            "a\uff1cscript\uff1e\uff02.example": "the host name 'a\uff1cscript\uff1e\uff02.example' is "
            "'a<script>\".example' once mapped by UTS #46, and holds '<', which no host name may hold",
            "x\uff050d\uff050a.example": "is 'x%0d%0a.example' once mapped by UTS #46, and holds '%'",
            "good\u3000example.com": "holds ' '",
            "a\uff5cb.example": "holds '|'",
            "a^b.example": "the host name 'a^b.example' holds '^', which no host name may hold",
        }
        for host, expected in cases.items():
            with self.assertRaises(ValueError, msg=host) as e:
                asciiHostName(host)
            self.assertIn(expected, str(e.exception))
        with self.assertRaises(BadURL) as e:
            splitURL("http://user:secret@a\uff1cb.example/x")
        self.assertIn("http://user:***@a\uff1cb.example/x: the host name", str(e.exception))
        self.assertEqual(asciiHostName('a"b.example'), 'a"b.example')  # allowed by the URL Standard

    def test_proxyHostMadeASCII(self) -> None:
        """
        L{asciiProxyURL} gives a proxy URL with its host as a download's is
        sent, the rest kept; an ASCII host, or a URL it cannot read, is
        given back as it is.
        """
        cases = {
            "http://u:p@Faß.de:3128": "http://u:p@xn--fa-hia.de:3128",
            "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:3128": "http://localhost:3128",
            "http://b\u00fccher.example": "http://xn--bcher-kva.example",
            "http://p\u00e4:w\u00f6@[::1]:3128": "http://p\u00e4:w\u00f6@[::1]:3128",
            "http://127.0.0.1:3128": "http://127.0.0.1:3128",
            "http://[::1:3128": "http://[::1:3128",
        }
        for proxy, expected in cases.items():
            self.assertEqual(asciiProxyURL(proxy), expected, proxy)
        for proxy in ("http://a_b.example:1", "http://[::1%25lo]:1", "http://a..b:1", "http://b\u00fc_cher.de:1"):
            self.assertRaises(ValueError, asciiProxyURL, proxy)

    def test_parseChecksum(self) -> None:
        """
        C{ALGORITHM=HEX} in the spellings users write; anything else is a
        readable ValueError.
        """
        digest = "ab" * 32
        self.assertEqual(parseChecksum(f"sha256={digest}"), ("sha256", digest))
        self.assertEqual(parseChecksum(f"sha-256={digest.upper()}"), ("sha256", digest))
        self.assertEqual(parseChecksum("md5=" + "0" * 32), ("md5", "0" * 32))
        for bad in ("sha256", "sha256=xyz", "crc32=00000000", "sha256=" + "0" * 63):
            error = self.assertRaises(ValueError, parseChecksum, bad)
            self.assertNotIn("\n", str(error))
        for long in ("sha256=" + "a" * 60_000, "x" * 60_000):
            # It was quoted whole: a 60 KB error for a 60 KB value.
            error = self.assertRaises(ValueError, parseChecksum, long)
            self.assertLess(len(str(error)), 300, long[:10])
            self.assertIn(f"({len(long)} characters)", str(error))

    def test_redactReadsBackslashesAsTheFetchDoes(self) -> None:
        """
        A URL is shown as it is fetched, backslashes before its query read
        as slashes: C{http://127.0.0.1:8000\\@evil.example/x} goes to
        127.0.0.1, and was shown as C{http://127.0.0.1:***@evil.example/x},
        evil.example's with its port hidden as a password.
        """
        for url, shown in (
            ("http://127.0.0.1:8000\\@evil.example/x", "http://127.0.0.1:8000/@evil.example/x"),
            ("http://u:pw@h.example\\x?q=\\", "http://u:***@h.example/x?q=\\"),
            ("http:\\\\u:pw@h.example\\x", "http://u:***@h.example/x"),
            ("https://h.example/p?x=\\y", "https://h.example/p?x=\\y"),
            ("u:pw@proxy.example:3128", "u:***@proxy.example:3128"),
        ):
            self.assertEqual(redact(url), shown, url)


class ResolverTests(SynchronousTestCase):
    """
    The endpoint that checks where a name resolves to.
    """

    def test_resolverThatRaisesFailsTheAttemptAtOnce(self) -> None:
        """
        A resolver that raises instead of answering (getaddrinfo's
        UnicodeError for a name it cannot encode, say) fails the connection
        attempt at once, in words, instead of leaving it waiting.
        """

        class Raising:
            def resolveHostName(self, receiver: Any, host: str, port: int = 0, *args: Any, **kwargs: Any) -> None:
                raise UnicodeError("label empty or too long")

        clock = MemoryReactorClock()
        clock.nameResolver = Raising()
        endpoint = CheckedEndpoint(clock, "a..example", 80, ProxyRules(), 5.0)
        failure = self.failureResultOf(endpoint.connect(Factory()), ConnectError)
        self.assertEqual(failure.value.args[0], "a..example could not be resolved (label empty or too long)")
        self.assertEqual(clock.tcpClients, [])


class WholeFileAs206Tests(SynchronousTestCase):
    """
    A 206 to a request without a Range (one stream, once ranges failed) is
    taken as a 200 when it is the whole file, and only then: each of its
    conditions alone keeps it the partial answer it is.
    """

    def accept(self, contentRange: bytes, length: Optional[int] = None, contentType: bytes = b"application/octet-stream"):
        """
        The engine's reading of such a 206 to a download under way: the
        download, and the body length it expects.
        """
        from twisted.web.http_headers import Headers
        from twisted.web.iweb import UNKNOWN_LENGTH

        downloader = Downloader(reactor=MemoryReactorClock())
        job = engineModule.Job("1", DownloadRequest(url="http://example.com/f", directory=self.mktemp()))
        download = engineModule._Download(downloader, job)
        download.started = True
        headers = Headers({b"content-range": [contentRange], b"content-type": [contentType]})
        response = SimpleNamespace(
            code=206, phrase=b"Partial Content", headers=headers, length=UNKNOWN_LENGTH if length is None else length
        )
        return download, download._accept(response, _Piece(0, None), 0, False, download.url)

    def test_wholeFileIsA200(self) -> None:
        for length in (None, 100):
            download, expected = self.accept(b"bytes 0-99/100", length)
            self.assertEqual((expected, download.state.size, download.state.rangesSupported), (100, 100, False))

    def test_partialAnswersStayPartial(self) -> None:
        """
        Not from byte 0, short of the total, a total of C{*}, a length that
        is not the total's, or several parts: not the whole file.
        """
        self.assertRaises(engineModule._Restart, self.accept, b"bytes 5-99/100")
        for contentRange, length in ((b"bytes 0-49/100", None), (b"bytes 0-99/*", None)):
            download, expected = self.accept(contentRange, length)
            self.assertEqual((expected, download.state.size), (int(contentRange[8:10]) + 1, None))
        self.assertRaises(engineModule._Restart, self.accept, b"bytes 0-99/100", 50)
        self.assertRaises(
            engineModule._Restart, self.accept, b"bytes 0-99/100", None, b"multipart/byteranges; boundary=x"
        )

    def test_wholeFileTooLargeForAnyFile(self) -> None:
        self.assertRaises(TooLarge, self.accept, b"bytes 0-%d/%d" % (2**63 - 1, 2**63))
