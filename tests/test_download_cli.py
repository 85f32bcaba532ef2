"""
Tests for C{netsuite-get}: the input file (L{netsuite.download.inputfile}),
the options and how they reach the engine, NDJSON and terminal output, exit
statuses and interruption (L{netsuite.download.cli}), with a fake
downloader; then a few runs of the real command against a local origin.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Union

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import Data, File

import netsuite
from netsuite.download import (
    Downloader,
    DownloadError,
    DownloadRequest,
    DownloadResult,
    DownloadSettings,
    parseChecksum,
    parseSize,
)
from netsuite.download import agent, cli, values
from netsuite.download.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    INSECURE_WARNING,
    RESUME_HINT,
    _LiveView,
    _Tracker,
    buildParser,
    formatSeconds,
    formatSize,
    makePlan,
    run,
)
from netsuite.download.inputfile import InputFileError, InputJob, parseInputFile

SHA = "sha256=" + "ab" * 32


class FakeJob:
    def __init__(self, jobId: str, request: DownloadRequest) -> None:
        self.id = jobId
        self.request = request
        self.deferred: Deferred[DownloadResult] = Deferred()


class FakeDownloader:
    """
    Stands for L{Downloader}: records what it is given; the test decides
    which events it emits and how each job ends.
    """

    def __init__(self, reactor: Any, settings: DownloadSettings, observer: Callable[[dict], None],
                 stopResult: Optional[Deferred[None]] = None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.observer = observer
        self.jobs: List[FakeJob] = []
        self.stopCalls = 0
        self.stopResult = stopResult

    def submit(self, request: DownloadRequest) -> FakeJob:
        job = FakeJob(str(len(self.jobs) + 1), request)
        self.jobs.append(job)
        return job

    def finish(self, job: FakeJob, size: int = 1000, name: Optional[str] = None) -> None:
        name = name or job.request.url.rsplit("/", 1)[-1]
        path = os.path.join(str(job.request.directory), name)
        self.observer({"event": "start", "job": job.id, "url": job.request.url, "name": name, "path": path,
                       "size": size, "resumed": 0})
        self.observer({"event": "progress", "job": job.id, "done": size // 2, "size": size, "speed": 2000.0})
        self.observer({"event": "done", "job": job.id, "url": job.request.url, "path": path, "size": size,
                       "seconds": 0.5})
        job.deferred.callback(DownloadResult(job.request.url, Path(path), size, 0.5))

    def fail(self, job: FakeJob, message: str, event: bool = True) -> None:
        if event:
            self.observer({"event": "error", "job": job.id, "url": job.request.url, "message": message})
        job.deferred.errback(DownloadError(message))

    def stop(self) -> Deferred[None]:
        self.stopCalls += 1
        for job in self.jobs:
            if not job.deferred.called:
                job.deferred.cancel()
        return self.stopResult if self.stopResult is not None else defer.succeed(None)


def _standardInput(given: Union[str, bytes]) -> IO[str]:
    """
    A stand-in for C{sys.stdin}: text as is, or bytes decoded as Python
    decodes a terminal's input under a UTF-8 locale (undecodable bytes
    become surrogates).
    """
    if isinstance(given, str):
        return io.StringIO(given)
    return io.TextIOWrapper(io.BytesIO(given), encoding="utf-8", errors="surrogateescape")


class Runner:
    """
    Runs L{run} on a memory reactor with a fake downloader and captured
    output.
    """

    def __init__(self, argv: List[str], stdin: Union[str, bytes] = "", isTTY: bool = False, console: Any = None,
                 stopResult: Optional[Deferred[None]] = None, stdout: Optional[io.StringIO] = None) -> None:
        self.reactor = MemoryReactorClock()
        self.stdout = stdout if stdout is not None else io.StringIO()
        self.stderr = io.StringIO()
        self.fakes: List[FakeDownloader] = []
        self.interrupts: List[Callable[[int], None]] = []

        def factory(reactor: Any, settings: DownloadSettings, observer: Callable[[dict], None]) -> FakeDownloader:
            fake = FakeDownloader(reactor, settings, observer, stopResult)
            self.fakes.append(fake)
            return fake

        self.result = run(
            argv, self.reactor, downloaderFactory=factory, stdout=self.stdout, stderr=self.stderr,
            stdin=_standardInput(stdin), isTTY=isTTY, installSignals=lambda r, i: self.interrupts.append(i),
            console=console,
        )

    @property
    def fake(self) -> FakeDownloader:
        return self.fakes[0]

    def lines(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.getvalue().splitlines()]


def plan(argv: List[str], stdin: str = ""):
    return makePlan(buildParser().parse_intermixed_args(argv), io.StringIO(stdin), createDirectories=False)


class MainTests(SynchronousTestCase):
    def test_answeringResolverInstalled(self) -> None:
        """
        C{netsuite-get} gives the reactor a resolver that answers every
        lookup (L{netsuite.resolving}) before it runs.
        """
        from twisted.internet._resolver import GAIResolver

        from netsuite.resolving import AnsweringResolver

        fake = MemoryReactorClock()
        fake.getThreadPool = lambda: None
        fake.nameResolver = GAIResolver(fake)
        fake.installNameResolver = lambda resolver: setattr(fake, "nameResolver", resolver)
        seen = []

        def react(start: Any) -> None:
            start(fake).addErrback(lambda failure: failure.trap(SystemExit))

        def run(args: Any, reactor: Any) -> Deferred:
            seen.append(type(reactor.nameResolver))
            return defer.succeed(0)

        self.patch(cli, "react", react)
        self.patch(cli, "run", run)
        self.patch(cli, "_holdClosedStreams", lambda: None)
        cli.main(["http://example.com/"])
        self.assertEqual(seen, [AnsweringResolver])


class InputFileTests(SynchronousTestCase):
    """
    L{parseInputFile}: aria2-like lists of URLs with per-file options.
    """

    def test_urlsAndOptions(self) -> None:
        text = (
            "\ufeff# downloads\n"
            "\n"
            "https://example.com/a.iso\r\n"
            "  out=debian.iso\r\n"
            "\tchecksum=" + SHA + "\n"
            "   # an indented comment\n"
            "http://example.com/b.tar.gz   \n"
            "  dir = archives\n"
            "  header=Authorization: Bearer abc\n"
            "  header=X-Trace:1\n"
            "http://example.com/c\n"
        )
        self.assertEqual(
            parseInputFile(text, "list.txt"),
            [
                InputJob("https://example.com/a.iso", 3, name="debian.iso", checksum=SHA),
                InputJob("http://example.com/b.tar.gz", 7, directory="archives",
                         headers={"Authorization": "Bearer abc", "X-Trace": "1"}),
                InputJob("http://example.com/c", 11),
            ],
        )

    def test_checksumsChecked(self) -> None:
        """
        C{checksum=} values go through the given check (the engine's
        C{parseChecksum}), and errors name the option's line.
        """
        text = "http://example.com/f\n  out=f\n  checksum=sha256=12\n"
        self.assertEqual(parseInputFile(text)[0].checksum, "sha256=12")
        with self.assertRaises(InputFileError) as e:
            parseInputFile(text, "list.txt", checkChecksum=parseChecksum)
        self.assertIn("list.txt, line 3: 'sha256=12' is not a checksum", str(e.exception))
        with self.assertRaises(InputFileError) as e:
            parseInputFile("http://example.com/f\n  checksum=abc\n")
        self.assertIn("line 2: 'abc' is not a checksum", str(e.exception))

    def test_emptyFile(self) -> None:
        self.assertEqual(parseInputFile("# nothing\n\n   \n"), [])

    def test_errorsNameTheLine(self) -> None:
        url = "http://example.com/f\n"
        cases = {
            "  out=x\n" + url: (1, "before any URL"),
            "# c\n" + url + "  speed=fast\n": (3, "unknown option 'speed'"),
            url + "  out\n": (2, "is not an option"),
            url + "  out=\n": (2, "out= needs a value"),
            url + "  out=a\n  out=b\n": (3, "out= is given twice"),
            url + "  checksum=" + SHA + "\n  checksum=" + SHA + "\n": (3, "checksum= is given twice"),
            url + "  out=sub/name\n": (2, "holds a directory"),
            url + "  out=a\x01b\n": (2, "the output file name 'a\\x01b' holds a control character"),
            url + "  out=a\x00b\n": (2, "holds a control character"),
            url + "  dir=a\x00b\n": (2, "the directory 'a\\x00b' holds a control character"),
            url + "  dir=a\x1bb\n": (2, "holds a control character"),
            url + "  header=NoColon\n": (2, "is not a header"),
            url + "  header=Range: bytes=0-1\n": (2, "set by netsuite-get itself"),
            url + "  header=A: 1\n  header=a: 2\n": (3, "given twice"),
            "http://a.example/f\thttp://b.example/f\n": (1, "TAB-separated mirror URLs are not supported"),
            "\n\nftp://example.com/f\n": (3, "not an http:// or https:// URL"),
            "example.com/f\n": (1, "write it with http:// or https://"),
            "http:///f\n": (1, "names no host"),
            "http://a..example/f\n": (1, "the host name has an empty label"),
            f"http://{'a' * 64}.example/f\n": (1, "a label longer than 63 characters"),
            "http://example.com:0/f\n": (1, "names port 0"),
            "http://example.com/a b\n": (1, "spaces"),
        }
        for text, (line, fragment) in cases.items():
            with self.assertRaises(InputFileError, msg=text) as e:
                parseInputFile(text, "list.txt")
            self.assertEqual(e.exception.line, line, text)
            self.assertIn(f"list.txt, line {line}: ", str(e.exception))
            self.assertIn(fragment, str(e.exception))
            self.assertNotIn("\n", str(e.exception))


    def test_controlCharactersInURLs(self) -> None:
        """
        A URL holding a C0 or C1 control character or DEL is refused with
        its line, the URL shown escaped so that it cannot drive a terminal.
        """
        for control in ("\x01", "\x1b[31m", "\x7f", "\x85", "\x9b", "\x00", "\r"):
            text = "# list\nhttp://example.com/a" + control + "b\n"
            with self.assertRaises(InputFileError, msg=repr(text)) as e:
                parseInputFile(text, "list.txt")
            message = str(e.exception)
            self.assertIn("list.txt, line 2: ", message)
            self.assertIn("holds a control character", message)
            self.assertIn(repr(control)[1:-1], message)
            self.assertTrue(message.isprintable(), message)

    def test_linesEndOnlyAtLineFeeds(self) -> None:
        """
        Lines end at LF (one CR before it is dropped), as in aria2 and every
        line-based tool; other characters Python counts as line breaks stay
        in the line, which is refused, and do not shift the line numbers.
        """
        for separator in ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"):
            text = "# one" + separator + "# two\nhttp://example.com/a" + separator + "http://example.com/b\n"
            with self.assertRaises(InputFileError, msg=repr(separator)) as e:
                parseInputFile(text, "list.txt")
            self.assertEqual(e.exception.line, 2, repr(separator))
            self.assertIn("list.txt, line 2: ", str(e.exception))
            self.assertTrue(str(e.exception).isprintable(), str(e.exception))
            # Trailing, too: it is not white space to strip.
            with self.assertRaises(InputFileError, msg=repr(separator)):
                parseInputFile("http://example.com/a" + separator + "\n")
        self.assertEqual(
            parseInputFile("http://example.com/a\r\n  out=a\r\n\nhttp://example.com/b\r\n"),
            [InputJob("http://example.com/a", 1, name="a"), InputJob("http://example.com/b", 4)],
        )
        with self.assertRaises(InputFileError) as e:
            parseInputFile("http://example.com/a\r\r\n")
        self.assertIn("line 1: ", str(e.exception))

    def test_longURLRefused(self) -> None:
        """
        A URL longer than the download service takes (L{values.MAX_URL}
        bytes) is refused with its line, shown shortened.
        """
        url = "http://user:secret@example.com/" + "a" * values.MAX_URL
        with self.assertRaises(InputFileError) as e:
            parseInputFile("# list\n" + url + "\n", "list.txt")
        message = str(e.exception)
        self.assertIn("list.txt, line 2: ", message)
        self.assertIn(f"is longer than {values.MAX_URL} bytes", message)
        self.assertIn("user:***@", message)
        self.assertNotIn("secret", message)
        self.assertLess(len(message), 300)
        longest = "http://example.com/" + "a" * (values.MAX_URL - len("http://example.com/"))
        self.assertEqual(parseInputFile(longest + "\n"), [InputJob(longest, 1)])
        # Bytes of UTF-8 count, not characters.
        wide = "http://example.com/" + "\u00e9" * (values.MAX_URL // 2 - 9)
        self.assertEqual(len(wide.encode("utf-8")), values.MAX_URL + 1)
        with self.assertRaises(InputFileError):
            parseInputFile(wide + "\n")


class ParseSizeTests(SynchronousTestCase):
    """
    L{parseSize} is exact: no float rounds or overflows it.
    """

    def test_exact(self) -> None:
        self.assertEqual(parseSize("500"), 500)
        self.assertEqual(parseSize("64k"), 64 * 1024)
        self.assertEqual(parseSize(" 1.5 GiB "), 3 * 2**29)
        self.assertEqual(parseSize("0.1K"), 102)
        self.assertEqual(parseSize("9007199254740993"), 9007199254740993)
        self.assertEqual(parseSize(str(values.MAX_SIZE)), 2**63 - 1)
        self.assertEqual(parseSize("0." + "9" * 5000 + "K"), 1023)
        self.assertEqual(parseSize("1." + "0" * 5000 + "1"), 1)
        self.assertEqual(parseSize("0" * 5000 + "7M"), 7 * 2**20)

    def test_tooLarge(self) -> None:
        for text in (str(2**63), "8388608T", "1" + "0" * 400, "9" * 100000):
            with self.assertRaises(ValueError) as e:
                parseSize(text)
            self.assertIn("is too large", str(e.exception))
            self.assertLess(len(str(e.exception)), 200)


class OptionMappingTests(SynchronousTestCase):
    """
    Every option reaches L{DownloadSettings} or the L{DownloadRequest}s.
    """

    def test_defaultsAreTheEngines(self) -> None:
        p = plan(["http://example.com/f"])
        self.assertEqual(p.settings, DownloadSettings())
        self.assertEqual(p.requests, [DownloadRequest("http://example.com/f", directory=".")])
        self.assertFalse(p.json)
        self.assertFalse(p.quiet)

    def test_everySetting(self) -> None:
        p = plan([
            "-j", "3", "--max-per-host", "2", "-x", "6", "--min-split-size", "1M", "--limit-rate", "500K",
            "--max-size", "1G", "--connect-timeout", "5", "--timeout", "6", "--stall-timeout", "7",
            "--total-timeout", "100", "--retries", "0", "--retry-wait", "2.5", "--max-redirects", "3",
            "--lowest-speed-limit", "10K", "--proxy", "http://user:pw@127.0.0.1:3128", "--insecure", "--no-fsync",
            "--json", "-q", "http://example.com/f",
        ])
        self.assertEqual(
            p.settings,
            DownloadSettings(
                maxConnections=3, maxPerHost=2, segments=6, minSplitSize=2**20, rateLimit=500 * 1024,
                maxSize=2**30, connectTimeout=5.0, headerTimeout=6.0, stallTimeout=7.0, totalTimeout=100.0,
                retries=0, retryWait=2.5, maxRedirects=3, proxy="http://user:pw@127.0.0.1:3128", insecure=True,
                lowestSpeed=10 * 1024, sync=False,
            ),
        )
        self.assertTrue(p.json)
        self.assertTrue(p.quiet)

    def test_caFile(self) -> None:
        self.assertEqual(plan(["--ca-file", "ca.pem", "http://example.com/f"]).settings.caFile, "ca.pem")

    def test_longRetryWaitRaisesTheCap(self) -> None:
        settings = plan(["--retry-wait", "120", "http://example.com/f"]).settings
        self.assertEqual((settings.retryWait, settings.maxRetryWait), (120.0, 120.0))

    def test_requestFields(self) -> None:
        p = plan([
            "http://example.com/f", "-d", "out", "-o", "name.bin", "--checksum", "sha-256=" + "AB" * 32,
            "-c", "-H", "Authorization: Bearer x", "-H", "X-A:1",
        ])
        self.assertEqual(
            p.requests,
            [DownloadRequest("http://example.com/f", directory="out", name="name.bin",
                             checksum="sha-256=" + "AB" * 32,
                             headers={"Authorization": "Bearer x", "X-A": "1"}, continueExisting=True)],
        )
        self.assertTrue(plan(["--overwrite", "http://example.com/f"]).requests[0].overwrite)

    def test_urlsAmongOptions(self) -> None:
        p = plan(["http://example.com/1", "-j", "2", "http://example.com/2", "-d", "x", "http://example.com/3"])
        self.assertEqual([r.url for r in p.requests], [f"http://example.com/{n}" for n in (1, 2, 3)])
        self.assertEqual({r.directory for r in p.requests}, {"x"})

    def test_inputFileFromStdin(self) -> None:
        stdin = (
            "http://example.com/a\n"
            "  dir=elsewhere\n"
            "  header=X-A: file\n"
            "  checksum=" + SHA + "\n"
            "http://example.com/b\n"
            "  out=b.bin\n"
        )
        p = plan(["http://example.com/first", "-i", "-", "-d", "out", "-H", "x-a: cli", "-H", "X-B: cli", "-c"],
                 stdin)
        self.assertEqual(
            p.requests,
            [
                DownloadRequest("http://example.com/first", directory="out",
                                headers={"x-a": "cli", "X-B": "cli"}, continueExisting=True),
                DownloadRequest("http://example.com/a", directory="elsewhere", checksum=SHA,
                                headers={"X-B": "cli", "X-A": "file"}, continueExisting=True),
                DownloadRequest("http://example.com/b", directory="out", name="b.bin",
                                headers={"x-a": "cli", "X-B": "cli"}, continueExisting=True),
            ],
        )
        self.assertEqual(p.lines, [0, 1, 5])

    def test_oneInputFileURLTakesOutAndChecksum(self) -> None:
        p = plan(["-i", "-", "-o", "x.bin", "--checksum", SHA], "http://example.com/a\n")
        self.assertEqual((p.requests[0].name, p.requests[0].checksum), ("x.bin", SHA))

    def test_directoriesAreCreated(self) -> None:
        base = self.mktemp()
        runner = Runner(["-d", os.path.join(base, "a", "b"), "http://example.com/f"])
        self.assertTrue(os.path.isdir(os.path.join(base, "a", "b")))
        runner.fake.finish(runner.fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)


class UsageErrorTests(SynchronousTestCase):
    """
    A bad command line: one sentence on standard error, exit status 2, no
    traceback, no download started.
    """

    def assertUsageError(self, argv: List[str], fragment: str, stdin: Union[str, bytes] = "") -> None:
        runner = Runner(argv, stdin)
        self.assertEqual(self.successResultOf(runner.result), EXIT_USAGE, argv)
        error = runner.stderr.getvalue()
        self.assertEqual(len(error.splitlines()), 1, error)
        self.assertTrue(error.startswith("netsuite-get: "), error)
        self.assertIn(fragment, error)
        self.assertNotIn("Traceback", error)
        self.assertEqual(runner.stdout.getvalue(), "")
        self.assertEqual(runner.fakes, [])

    def test_noURL(self) -> None:
        self.assertUsageError([], "no URL to download")
        self.assertUsageError(["-i", "-"], "no URL to download", "# empty\n")

    def test_badNumbers(self) -> None:
        url = "http://example.com/f"
        cases = [
            (["-j", "0", url], "-j/--max-connections: '0' is not a whole number of 1 or more"),
            (["-x", "many", url], "-x/--segments: 'many'"),
            (["--max-per-host", "-3", url], "--max-per-host"),
            (["--retries", "-1", url], "--retries: '-1'"),
            (["--max-redirects", "1.5", url], "--max-redirects"),
            (["--timeout", "0", url], "--timeout: '0' is not a number of seconds above 0"),
            (["--stall-timeout", "nan", url], "--stall-timeout"),
            (["--connect-timeout", "inf", url], "--connect-timeout"),
            (["--total-timeout", "-5", url], "--total-timeout"),
            (["--retry-wait", "soon", url], "--retry-wait"),
        ]
        for argv, fragment in cases:
            self.assertUsageError(argv, fragment)

    def test_badSizes(self) -> None:
        url = "http://example.com/f"
        self.assertUsageError(["--min-split-size", "4Q", url], "'4Q' is not a size")
        self.assertUsageError(["--limit-rate", "fast", url], "--limit-rate: 'fast' is not a size")
        self.assertUsageError(["--max-size", "0", url], "too small")
        self.assertUsageError(["--lowest-speed-limit", "0", url], "--lowest-speed-limit: '0' is too small")

    def test_hugeSizesRefused(self) -> None:
        """
        A size too large to be a number of bytes (it overflowed a float, a
        traceback) is a usage error naming the option and the value.
        """
        url = "http://example.com/f"
        cases = [
            (["--max-size", "1" + "0" * 400, url], "--max-size: '1000"),
            (["--limit-rate", "1" + "0" * 300 + "T", url], "--limit-rate: '1000"),
            (["--min-split-size", "9" * 5000 + ".5", url], "--min-split-size: '9999"),
            (["--lowest-speed-limit", str(2**63), url], f"--lowest-speed-limit: '{2**63}' is too large"),
            (["--max-size", "8388608T", url], "--max-size: '8388608T' is too large"),
        ]
        for argv, fragment in cases:
            self.assertUsageError(argv, fragment)
            self.assertUsageError(argv, "is too large")
        self.assertUsageError(["--max-size", "1" + "0" * 400, url], "most is 8388607T")
        runner = Runner(["--max-size", "1" + "0" * 5000, url])
        self.assertLess(len(runner.stderr.getvalue()), 300)

    def test_notANumberSizesRefused(self) -> None:
        url = "http://example.com/f"
        for text in ("nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e3", "-5", "-1K", "", " ", "0x10",
                     "1_000", "\u0663K", ".5K", "5.K"):
            self.assertUsageError([f"--max-size={text}", url], f"--max-size: {text!r} is not a size")

    def test_longDirectoryName(self) -> None:
        """
        A C{-d} or C{dir=} the system cannot create (a name too long for it)
        is a usage error naming it and saying why, with the line of the
        URL for C{dir=}.
        """
        reason = os.strerror(errno.ENAMETOOLONG)
        tooLong = os.path.join(self.mktemp(), "a" * 300)
        self.assertUsageError(["-d", tooLong, "http://example.com/f"],
                              f"cannot create the directory {tooLong!r}: {reason}")
        self.assertUsageError(["-i", "-"], f"standard input, line 2: cannot create the directory {tooLong!r}: {reason}",
                              "http://example.com/a\nhttp://example.com/f\n  dir=" + tooLong + "\n")
        # The -d directory applies to an input file's URL: no line is named.
        self.assertUsageError(["-i", "-", "-d", tooLong], f"netsuite-get: cannot create the directory {tooLong!r}",
                              "http://example.com/a\n")
        under = os.path.join(self.mktemp(), "file")
        os.makedirs(os.path.dirname(under))
        Path(under).write_text("x")
        self.assertUsageError(["-d", os.path.join(under, "sub"), "http://example.com/f"],
                              f": {os.strerror(errno.ENOTDIR)}")

    def test_controlCharactersInURLs(self) -> None:
        """
        A URL given on the command line holding a control character is a
        usage error showing it escaped, never the character itself.
        """
        for control in ("\x01", "\x1b]0;title\x07", "\x7f", "\x9b31m", "\x85", "\r"):
            url = "http://example.com/a" + control
            self.assertUsageError([url], "holds a control character")
            self.assertUsageError([url], repr(url))
            self.assertUsageError([url], repr(control)[1:-1])
            self.assertTrue(Runner([url]).stderr.getvalue().rstrip("\n").isprintable())
        self.assertUsageError(["http://exa\x01mple.com/"], "holds a control character")
        self.assertUsageError(["http://carol:Hunter4pw@example.com/\x1b"], "'http://carol:***@example.com/\\x1b'")
        # The password hiding keeps a tab or line break it is refused for.
        for control in ("\t", "\r", "\n"):
            self.assertUsageError(
                [f"http://carol:Hunter4pw@example.com/a{control}b"], repr(f"http://carol:***@example.com/a{control}b")
            )

    def test_longURLRefused(self) -> None:
        """
        A URL longer than L{values.MAX_URL} bytes is a usage error,
        the URL shown shortened.
        """
        url = "http://example.com/" + "a" * values.MAX_URL
        self.assertUsageError([url], f"is longer than {values.MAX_URL} bytes")
        self.assertLess(len(Runner([url]).stderr.getvalue()), 300)
        runner = Runner(["-i", "-"], url + "\n")
        self.assertEqual(self.successResultOf(runner.result), EXIT_USAGE)
        self.assertIn("standard input, line 1: ", runner.stderr.getvalue())
        self.assertLess(len(runner.stderr.getvalue()), 300)

    def test_oneURLOnlyOptions(self) -> None:
        urls = ["http://example.com/1", "http://example.com/2"]
        self.assertUsageError(["-o", "x", *urls], "-o/--out names one file, but there are 2 URLs")
        self.assertUsageError(["--checksum", SHA, *urls], "--checksum checks one file, but there are 2 URLs")
        self.assertUsageError(["-o", "x", "-i", "-", urls[0]], "there are 2 URLs", "http://example.com/3\n")
        self.assertUsageError(["-o", "x", "-i", "-"], "out= and -o/--out both", urls[0] + "\n  out=y\n")

    def test_badValues(self) -> None:
        url = "http://example.com/f"
        cases = [
            (["ftp://example.com/f"], "not an http:// or https:// URL"),
            (["example.com/f"], "write it with http:// or https://"),
            (["http://a..example/f"], "the host name has an empty label"),
            (["http://" + "a." * 127 + "a/f"], "longer than 253 characters"),
            (["http://[fe80::1%25eth0]/f"], "an IPv6 zone ID (the part after %25) cannot be used"),
            # An IPvFuture literal was looked up as the name v1.x.
            (["http://[v1.x]/f"], "netsuite-get: http://[v1.x]/f: [v1.x] is not an IPv6 address"),
            (["http://[::1]]/f"], "http://[::1]]/f: not a valid URL"),
            (["http://example.com:0/f"], "names port 0, which cannot be connected to"),
            (["--checksum", "sha256=abc", url], "a sha256 digest is 64 hexadecimal digits"),
            (["--checksum", "crc32=00", url], "is not a checksum"),
            (["-o", "../x", url], "holds a directory"),
            (["-H", "NoColon", url], "is not a header"),
            (["-H", "Range: bytes=1-", url], "set by netsuite-get itself"),
            (["-H", "Accept-Encoding: gzip", url], "set by netsuite-get itself"),
            (["-H", "Upgrade: h2c", url], "set by netsuite-get itself"),
            (["-H", "X-A: 1", "-H", "x-a: 2", url], "given twice"),
            (["-H", "X-A: a\r\nInjected: b", url], "holds a line break"),
            (["-H", "X-A: a\x1b[31mb", url], "holds a control character"),
            (["-H", "X-A: a\x00b", url], "holds a control character"),
            (["--proxy", "socks5://127.0.0.1:1080", url], "is not a proxy URL"),
            (["-c", "--overwrite", url], "give one"),
            (["--insecure", "--ca-file", "ca.pem", url], "--insecure checks no certificates"),
            (["--bogus", url], "unrecognized arguments: --bogus"),
            (["--continu", url], "unrecognized arguments"),
        ]
        for argv, fragment in cases:
            self.assertUsageError(argv, fragment)

    def test_namesTwistedCannotConnectTo(self) -> None:
        """
        A host name IDNA 2008 refuses (an underscore, a hyphen at a label's
        end, an empty A-label), which Twisted's C{HostnameEndpoint} cannot
        connect to, is a usage error at once, naming the input file's line;
        through C{--proxy}, which reaches it, it is accepted.  (They failed
        after the start, with exit 1, each after its retries.)
        """
        for host, reason in (
            ("a_b.example", "Codepoint U+005F at position 2 of 'a_b' not allowed"),
            ("-a-.example", "Label must not start or end with a hyphen"),
            ("xn--.example", "Malformed A-label"),
        ):
            url = f"http://carol:Hunter4pw@{host}/f"
            self.assertUsageError(
                [url],
                f"http://carol:***@{host}/f: the host name {host!r} is not a valid IDNA name ({reason}",
            )
            self.assertUsageError([url], "so Twisted cannot connect to it; --proxy can fetch it through a proxy")
            self.assertUsageError(["-i", "-"], "standard input, line 2: ", f"http://example.com/f\n{url}\n")
            [request] = plan(["--proxy", "http://127.0.0.1:3128", url]).requests
            self.assertEqual(request.url, url)
        self.assertEqual(len(plan(["http://xn--bcher-kva.example/f", "http://Bücher.example/f"]).requests), 2)

    def test_httpsNamesThroughAProxy(self) -> None:
        """
        Through C{--proxy}, an C{https} URL whose host name IDNA 2008
        refuses is a usage error too: no certificate can be checked for it
        (it failed after the start with a traceback and "internal error");
        with C{--insecure}, which checks none, it is accepted.
        """
        url = "https://a_b.example/f"
        self.assertUsageError(
            ["--proxy", "http://127.0.0.1:3128", url],
            f"{url}: the host name 'a_b.example' is not a valid IDNA name (Codepoint U+005F at position 2 of 'a_b' not allowed), "
            "so no certificate can be checked for it (--insecure checks none)",
        )
        self.assertEqual(len(plan(["--proxy", "http://127.0.0.1:3128", "--insecure", url]).requests), 1)

    def test_usageErrorsHidePasswords(self) -> None:
        """
        A usage error about a URL shows its password as C{***}, as every
        other message does (it printed it as given).
        """
        for url, fragment in (
            ("http://carol:Hunter4pw@example.com:0/x", "names port 0"),
            ("ftp://carol:Hunter4pw@example.com/x", "not an http:// or https:// URL"),
            ("http://carol:Hunter4pw@example.com/a b", "holds spaces"),
            ("http://carol:Hunter4pw@example.com:99999/x", "that can be read"),
            ("http://carol:Hunter4pw@[::1/x", "that can be read"),
        ):
            self.assertUsageError([url], "carol:***@")
            self.assertUsageError([url], fragment)
            runner = Runner([url], "")
            self.assertNotIn("Hunter4pw", runner.stderr.getvalue())

    def test_nonASCIINamesTakenAsBrowsersTakeThem(self) -> None:
        """
        Host names that are not ASCII are judged by IDNA 2008 with the
        UTS #46 mapping, as browsers and Twisted judge them: right-to-left
        names ending in a digit are accepted (Python's IDNA 2003 codec
        made them a usage error), and a name IDNA 2008 refuses is a usage
        error with idna's reason, also through C{--proxy}.
        """
        urls = [
            "http://\u05e9\u05dc\u05d5\u05dd1.example/f",
            "http://\u05d01.example/f",
            "http://\u0645\u062b\u0627\u0644\u0661.com/f",
            "http://faß.de/f",
        ]
        self.assertEqual([r.url for r in plan(urls).requests], urls)
        self.assertEqual(len(plan(["-i", "-"], "\n".join(urls)).requests), 4)
        refused = "http://carol:Hunter4pw@a\u200db.example/f"
        for argv in ([refused], ["--proxy", "http://127.0.0.1:3128", refused]):
            self.assertUsageError(argv, "the host name is not valid IDNA (Unknown codepoint adjacent to joiner U+200D")
            self.assertUsageError(argv, "carol:***@")
        self.assertUsageError(
            ["-i", "-"], "standard input, line 2: ", "http://example.com/f\nhttp://b\u00fc_cher.example/f\n"
        )

    def test_proxyHostChecked(self) -> None:
        """
        A C{--proxy} whose host no resolver or Twisted can take (a name IDNA
        2008 refuses, an empty label, an IPv6 zone ID) is a usage error at
        once, its password hidden: it was retried for about 24 seconds,
        the messages blaming the download's URL.  A host that is not ASCII
        is accepted (the engine converts it).
        """
        for proxy, fragment in (
            (
                "http://carol:Hunter4pw@a_b.example:3128",
                "argument --proxy: 'http://carol:***@a_b.example:3128' cannot be used as a proxy: "
                "the host name 'a_b.example' is not a valid IDNA name",
            ),
            ("http://carol:Hunter4pw@-a-.example:3128", "so Twisted cannot connect to it"),
            ("http://carol:Hunter4pw@[::1%25lo]:3128", "cannot be used as a proxy: an IPv6 zone ID"),
            ("http://carol:Hunter4pw@[v1.x]:3128", "cannot be used as a proxy: [v1.x] is not an IPv6 address"),
            # An IPvFuture literal may hold colons: it was taken for IPv6.
            ("http://[v1.a:b]:3128", "cannot be used as a proxy: [v1.a:b] is not an IPv6 address"),
            ("http://[vF.fe80::1]:3128", "cannot be used as a proxy: [vF.fe80::1] is not an IPv6 address"),
            ("http://carol:Hunter4pw@a..example:3128", "cannot be used as a proxy: the host name has an empty label"),
            ("http://carol:Hunter4pw@b\u00fc_cher.example:3128", "cannot be used as a proxy: the host name is not valid IDNA"),
            ("socks5://carol:Hunter4pw@example.com:1080", "'socks5://carol:***@example.com:1080' is not a proxy URL"),
            # Without a scheme, as curl takes it: the user read as a scheme
            # kept the password in the message.
            ("carol:Hunter4pw@127.0.0.1:3128", "'carol:***@127.0.0.1:3128' is not a proxy URL"),
        ):
            argv = ["--proxy", proxy, "http://example.com/f"]
            self.assertUsageError(argv, fragment)
            self.assertNotIn("Hunter4pw", Runner(argv).stderr.getvalue())
        for proxy in ("http://b\u00fccher.example:3128", "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:3128"):
            self.assertEqual(plan(["--proxy", proxy, "http://example.com/f"]).settings.proxy, proxy)

    def test_badInputFile(self) -> None:
        missing = os.path.join(self.mktemp(), "missing.txt")
        self.assertUsageError(["-i", missing], "cannot read the input file")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("http://example.com/f\n  out=a\n  mirror=http://x/\n")
        self.assertUsageError(["-i", path], f"{path}, line 3: unknown option 'mirror'")
        self.assertUsageError(["-i", "-"], "standard input, line 2: ", "http://a.example/f\n  checksum=md5=zz\n")
        with open(path, "wb") as f:
            f.write(b"http://example.com/\xff\n")
        self.assertUsageError(["-i", path], "not UTF-8")
        # Standard input's own decoding lets such bytes through as surrogates.
        self.assertUsageError(["-i", "-"], "from standard input: it is not UTF-8", b"http://example.com/\xff\n")
        self.assertUsageError(["-i", "-"], "not UTF-8", b"http://example.com/\n  out=caf\xe9\n")

    def test_controlCharactersInNames(self) -> None:
        """
        A C{dir=} or C{out=} holding a NUL or another control character is
        a usage error naming the line, never a traceback.
        """
        for line in ("  dir=a\x00b\n", "  dir=a\x07b\n", "  out=a\x00b\n"):
            self.assertUsageError(["-i", "-"], "standard input, line 2: ", "http://example.com/f\n" + line)
        self.assertUsageError(["-o", "a\x01b", "http://example.com/f"], "holds a control character")

    def test_endlessInputFileRefused(self) -> None:
        """
        An input file past L{MAX_INPUT} (C{-i /dev/zero}, say) is refused
        after reading just past the limit, not read into memory whole.
        """
        self.patch(cli, "MAX_INPUT", 1000)
        path = self.mktemp()
        Path(path).write_text("http://example.com/f\n" * 100)
        self.assertUsageError(["-i", path], "is longer than 1000 B; split it")
        self.assertUsageError(["-i", "-"], "(standard input) is longer than", "x" * 1001)
        if os.path.exists("/dev/zero"):
            self.assertUsageError(["-i", "/dev/zero"], "(/dev/zero) is longer than")

    def test_directoryIsAFile(self) -> None:
        path = self.mktemp()
        Path(path).write_text("x")
        self.assertUsageError(["-d", path, "http://example.com/f"], "exists and is not a directory")

    def test_engineRefusesTheCAFile(self) -> None:
        """
        A CA file the engine cannot load is a usage error too.
        """
        missing = os.path.join(self.mktemp(), "ca.pem")
        stderr = io.StringIO()
        d = run(["--ca-file", missing, "http://example.com/f"], MemoryReactorClock(), downloaderFactory=Downloader,
                stdout=io.StringIO(), stderr=stderr, installSignals=lambda r, i: None)
        self.assertEqual(self.successResultOf(d), EXIT_USAGE)
        self.assertIn("cannot read the CA file", stderr.getvalue())
        self.assertEqual(len(stderr.getvalue().splitlines()), 1)

    def assertCAFileRefused(self, path: str, fragment: str) -> None:
        stderr = io.StringIO()
        d = run(["--ca-file", path, "http://example.com/f"], MemoryReactorClock(), downloaderFactory=Downloader,
                stdout=io.StringIO(), stderr=stderr, installSignals=lambda r, i: None)
        self.assertEqual(self.successResultOf(d), EXIT_USAGE)
        self.assertEqual(len(stderr.getvalue().splitlines()), 1, stderr.getvalue())
        self.assertIn(f"cannot read the CA file {path}: {fragment}", stderr.getvalue())

    def test_caFileTooLong(self) -> None:
        """
        A CA file longer than L{agent.MAX_CA_FILE} is refused after reading
        just past the limit.
        """
        self.patch(agent, "MAX_CA_FILE", 1000)
        path = self.mktemp()
        Path(path).write_bytes(b"#" * 1001)
        self.assertCAFileRefused(path, "longer than 1000 bytes")
        self.assertGreaterEqual(agent.MAX_CA_FILE, 1000)

    def test_caFileNotARegularFile(self) -> None:
        """
        A device (C{/dev/zero}, endless), a FIFO (reading it waits for a
        writer) or a directory is refused at once.
        """
        if os.path.exists("/dev/zero"):
            self.assertCAFileRefused("/dev/zero", "not a regular file")
        if hasattr(os, "mkfifo"):
            fifo = self.mktemp()
            os.mkfifo(fifo)
            self.assertCAFileRefused(fifo, "not a regular file")
        directory = self.mktemp()
        os.mkdir(directory)
        self.assertCAFileRefused(directory, os.strerror(errno.EISDIR))

    def test_caFileLimitHoldsBundles(self) -> None:
        """
        The limit leaves room for a system's whole CA bundle (Debian's is
        about 220 KB).
        """
        self.assertGreaterEqual(agent.MAX_CA_FILE, 4 * 1024 * 1024)

    def test_helpAndVersion(self) -> None:
        runner = Runner(["--version"])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        self.assertEqual(runner.stdout.getvalue().strip(), f"netsuite-get (netsuite) {netsuite.__version__}")
        runner = Runner(["--help"])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        text = runner.stdout.getvalue()
        for option in ("--input-file", "--max-connections", "--max-per-host", "--segments", "--min-split-size",
                       "--continue", "--overwrite", "--checksum", "--max-size", "--limit-rate", "--connect-timeout",
                       "--timeout", "--stall-timeout", "--lowest-speed-limit", "--total-timeout", "--retries", "--retry-wait",
                       "--max-redirects", "--ca-file", "--insecure", "--proxy", "--header", "--json", "--quiet",
                       "--version", "http_proxy", "--no-fsync"):
            self.assertIn(option, text)


class NDJSONTests(SynchronousTestCase):
    """
    Off a terminal (or with C{--json}): the engine's events, one JSON object
    a line, then a summary.
    """

    def test_allDone(self) -> None:
        runner = Runner(["http://example.com/a", "http://example.com/b", "-d", self.mktemp()])
        fake = runner.fake
        self.assertNoResult(runner.result)
        for job in fake.jobs:
            fake.finish(job, size=1000)
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        lines = runner.lines()
        self.assertEqual([line["event"] for line in lines],
                         ["start", "progress", "done", "start", "progress", "done", "summary"])
        summary = lines[-1]
        self.assertEqual((summary["files"], summary["ok"], summary["failed"], summary["exitCode"]), (2, 2, 0, 0))
        self.assertEqual(summary["bytes"], 2000)
        self.assertEqual([r["result"] for r in summary["results"]], ["done", "done"])
        self.assertEqual(runner.stderr.getvalue(), "")
        self.assertEqual(fake.stopCalls, 1)  # the pool is closed at the end

    def test_oneFailed(self) -> None:
        runner = Runner(["http://example.com/a", "http://example.com/b", "-d", self.mktemp()])
        fake = runner.fake
        fake.fail(fake.jobs[1], "http://example.com/b: the server answered 404 Not Found")
        fake.finish(fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        lines = runner.lines()
        self.assertEqual([line["event"] for line in lines], ["error", "start", "progress", "done", "summary"])
        summary = lines[-1]
        self.assertEqual((summary["ok"], summary["failed"], summary["exitCode"]), (1, 1, 1))
        self.assertEqual(summary["results"][1]["result"], "failed")
        self.assertEqual(summary["results"][1]["message"], "http://example.com/b: the server answered 404 Not Found")
        self.assertEqual(runner.stderr.getvalue(),
                         "netsuite-get: http://example.com/b: the server answered 404 Not Found\n")

    def test_failureWithoutEvent(self) -> None:
        """
        A job that fails without an error event from the engine still gets one.
        """
        runner = Runner(["http://example.com/a", "-d", self.mktemp()])
        runner.fake.fail(runner.fake.jobs[0], "http://example.com/a: broken", event=False)
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        self.assertEqual([line["event"] for line in runner.lines()], ["error", "summary"])
        self.assertIn("broken", runner.stderr.getvalue())

    def test_passwordNeverShown(self) -> None:
        """
        The password of a URL is hidden in every event and in the summary's
        results: those the engine reports, and those the command line
        makes for a failure without an event.
        """
        urls = ["http://user:s3cret@example.com/a", "http://user:s3cret@example.com/b",
                "http://user:s3cret@example.com/c"]
        runner = Runner([*urls, "-d", self.mktemp()])
        fake = runner.fake
        fake.jobs[0].deferred.callback(DownloadResult(urls[0], Path("a"), 1000, 0.5))
        fake.fail(fake.jobs[1], "http://example.com/b: gone", event=False)
        fake.jobs[2].deferred.errback(RuntimeError("broken"))
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        output = runner.stdout.getvalue() + runner.stderr.getvalue()
        self.assertNotIn("s3cret", output)
        summary = runner.lines()[-1]
        self.assertEqual([r["url"] for r in summary["results"]], [u.replace("s3cret", "***") for u in urls])
        self.assertIn("http://user:***@example.com/c: broken", output)

    def test_bytesNeverNegative(self) -> None:
        """
        A job that ends with fewer bytes than it resumed from (a C{-c} file
        cut back) counts no bytes in the summary, not fewer than none.
        """
        runner = Runner(["http://example.com/a", "-d", self.mktemp()])
        fake = runner.fake
        fake.observer({"event": "start", "job": "1", "url": "http://example.com/a", "name": "a", "path": "a",
                       "size": 1000, "resumed": 700})
        fake.observer({"event": "error", "job": "1", "url": "http://example.com/a", "message": "too large",
                       "done": 0})
        fake.fail(fake.jobs[0], "too large", event=False)
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        self.assertEqual(runner.lines()[-1]["bytes"], 0)

    def test_quietKeepsErrorsAndSummary(self) -> None:
        runner = Runner(["-q", "http://example.com/a", "http://example.com/b", "-d", self.mktemp()])
        fake = runner.fake
        fake.observer({"event": "retry", "job": "1", "attempt": 1, "delay": 1.0, "reason": "timed out"})
        fake.finish(fake.jobs[0])
        fake.fail(fake.jobs[1], "http://example.com/b: gone")
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        self.assertEqual([line["event"] for line in runner.lines()], ["error", "summary"])

    def test_jsonOnATerminal(self) -> None:
        runner = Runner(["--json", "http://example.com/a", "-d", self.mktemp()], isTTY=True)
        runner.fake.finish(runner.fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        self.assertEqual(runner.lines()[-1]["event"], "summary")

    def test_insecureWarns(self) -> None:
        runner = Runner(["--insecure", "https://example.com/a", "-d", self.mktemp()])
        self.assertTrue(runner.fake.settings.insecure)
        self.assertEqual(runner.stderr.getvalue(), f"netsuite-get: {INSECURE_WARNING}\n")
        self.assertIn("certificates are not checked", INSECURE_WARNING)
        runner.fake.finish(runner.fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)

    def test_brokenPipe(self) -> None:
        """
        A reader that goes away stops the output, not the downloads.
        """

        class Closed(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError()

        runner = Runner(["http://example.com/a", "-d", self.mktemp()], stdout=Closed())
        runner.fake.finish(runner.fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        self.assertEqual(runner.stderr.getvalue(), "")


    def test_outputLost(self) -> None:
        """
        Output that cannot be written for another reason (a full disk,
        C{> /dev/full}) is said once on standard error, the downloads go
        on, and the exit status is 1 though every file arrived: a reader of
        the events must not take them for whole.  It was 0, with nothing
        said.
        """

        class Full(io.StringIO):
            def write(self, text: str) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        runner = Runner(["http://example.com/a", "http://example.com/b", "-d", self.mktemp()], stdout=Full())
        runner.fake.finish(runner.fake.jobs[0])
        runner.fake.finish(runner.fake.jobs[1])
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        self.assertEqual(
            runner.stderr.getvalue(),
            "netsuite-get: cannot write the events to standard output (No space left on device); "
            "the downloads go on\n",
        )
        # With -q only the summary is written, and lost: the same.
        runner = Runner(["-q", "http://example.com/a", "-d", self.mktemp()], stdout=Full())
        runner.fake.finish(runner.fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        # Interrupted, it says so whatever was lost.
        runner = Runner(["http://example.com/a", "-d", self.mktemp()], stdout=Full())
        runner.interrupts[0](2)
        self.assertEqual(self.successResultOf(runner.result), EXIT_INTERRUPTED)


class InterruptionTests(SynchronousTestCase):
    """
    Ctrl-C or SIGTERM: the downloader is stopped (state files written), the
    user is told how to resume, and the status is 130.
    """

    def test_interrupted(self) -> None:
        stopped: Deferred[None] = Deferred()
        runner = Runner(["http://example.com/a", "http://example.com/b", "-d", self.mktemp()], stopResult=stopped)
        fake = runner.fake
        fake.finish(fake.jobs[0])
        fake.observer({"event": "start", "job": "2", "url": "http://example.com/b", "name": "b", "path": "b",
                       "size": 100, "resumed": 0})
        [interrupt] = runner.interrupts
        interrupt(2)
        self.assertEqual(fake.stopCalls, 1)
        self.assertNoResult(runner.result)  # until the state files are written
        stopped.callback(None)
        self.assertEqual(self.successResultOf(runner.result), EXIT_INTERRUPTED)
        self.assertEqual(fake.stopCalls, 1)
        error = runner.stderr.getvalue()
        self.assertIn("stopping", error)
        self.assertTrue(error.endswith(f"netsuite-get: {RESUME_HINT}\n"), error)
        self.assertIn("run the same command again", RESUME_HINT)
        summary = runner.lines()[-1]
        self.assertEqual(summary["event"], "summary")
        self.assertEqual((summary["ok"], summary["interrupted"], summary["exitCode"]), (1, 1, 130))
        self.assertEqual(summary["results"][1]["result"], "interrupted")

    def test_stopThatLeavesJobsRunning(self) -> None:
        """
        Jobs the downloader does not end when stopped are ended by the CLI.
        """
        runner = Runner(["http://example.com/a", "-d", self.mktemp()])
        fake = runner.fake
        fake.stop = lambda: defer.succeed(None)  # type: ignore[method-assign]
        runner.interrupts[0](15)
        self.assertEqual(self.successResultOf(runner.result), EXIT_INTERRUPTED)

    def test_interruptedWhileImporting(self) -> None:
        """
        Ctrl-C while the console script still imports the downloader (its
        first 0.9 s) ends it in one line with status 130: it printed a
        C{KeyboardInterrupt} traceback and exited 1.  The script is run as
        pip's wrapper runs it, from the entry point C{pyproject.toml}
        names, with SIGINT sent as the engine's module is looked for.
        """
        import re
        import subprocess

        root = Path(netsuite.__file__).resolve().parent.parent
        scripts = (root / "pyproject.toml").read_text()
        module, function = re.search(r'^netsuite-get = "([\w.]+):(\w+)"$', scripts, re.MULTILINE).groups()
        code = (
            "import os, signal, sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'netsuite.download.engine':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['netsuite-get', 'http://127.0.0.1:1/x']\n"
            f"from {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
        self.assertEqual((done.returncode, done.stderr, done.stdout), (130, b"netsuite-get: interrupted\n", b""))

    def test_interruptAfterTheEnd(self) -> None:
        runner = Runner(["http://example.com/a", "-d", self.mktemp()])
        runner.fake.finish(runner.fake.jobs[0])
        runner.interrupts[0](2)
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)


class TerminalTests(SynchronousTestCase):
    """
    On a terminal: a live display, a line per finished file, a table.
    """

    def console(self, height: int = 30) -> Any:
        from rich.console import Console

        return Console(file=io.StringIO(), force_terminal=True, width=120, height=height, color_system=None)

    def test_liveDisplayAndTable(self) -> None:
        console = self.console()
        runner = Runner(["http://example.com/a.iso", "http://example.com/b", "-d", self.mktemp()], isTTY=True,
                        console=console)
        fake = runner.fake
        fake.observer({"event": "start", "job": "1", "url": "http://example.com/a.iso", "name": "a.iso",
                       "path": "a.iso", "size": 4 * 2**20, "resumed": 0})
        fake.observer({"event": "progress", "job": "1", "done": 2**20, "size": 4 * 2**20, "speed": 2**20})
        runner.reactor.advance(1.0)
        screen = console.file.getvalue()
        self.assertIn("a.iso", screen)
        self.assertIn("1.0 MiB/4.0 MiB", screen)
        self.assertIn("1.0 MiB/s", screen)
        self.assertIn("ETA 3.0 s", screen)
        self.assertIn("total 0/2, 1 waiting", screen)
        fake.observer({"event": "retry", "job": "1", "attempt": 1, "delay": 2.0, "reason": "timed out"})
        fake.finish(fake.jobs[0], size=4 * 2**20, name="a.iso")
        fake.fail(fake.jobs[1], "http://example.com/b: the server answered 404 Not Found")
        self.assertEqual(self.successResultOf(runner.result), EXIT_FAILED)
        screen = console.file.getvalue()
        self.assertIn("a.iso: timed out; try 1 in 2.0 s", screen)
        self.assertIn("✗ http://example.com/b: the server answered 404 Not Found", screen)
        table = screen[screen.rindex("File"):]
        for text in ("Size", "Time", "Result", "4.0 MiB", "done", "failed: the server answered 404 Not Found",
                     "1 downloaded, 1 failed"):
            self.assertIn(text, table)
        self.assertEqual(runner.stdout.getvalue(), "")  # all through the console
        self.assertEqual(runner.reactor.getDelayedCalls(), [])  # no refresh left behind

    def test_terminalNotUTF8(self) -> None:
        """
        On a terminal whose encoding is not UTF-8 (an ISO-8859-1 locale),
        the marks are ASCII and a name the encoding cannot hold is shown
        escaped; the exit status is the downloads'.  The end of the live
        display failed with an internal error and exit status 1, the file
        downloaded.
        """
        raw = io.BytesIO()
        stdout = io.TextIOWrapper(raw, encoding="latin-1", write_through=True)
        runner = Runner(["http://example.com/a", "http://example.com/b", "http://example.com/c", "-d", self.mktemp()],
                        isTTY=True, stdout=stdout)  # type: ignore[arg-type]
        fake = runner.fake
        fake.observer({"event": "retry", "job": "3", "attempt": 1, "delay": 2.0, "reason": "timed out"})
        fake.finish(fake.jobs[0], name="caf\u00e9.iso")
        fake.finish(fake.jobs[1], name="snow\u2603.iso")
        fake.finish(fake.jobs[2])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        screen = raw.getvalue().decode("latin-1")
        for text in ("ok ", "caf\u00e9.iso", "snow\\u2603.iso", "retry ", "3 downloaded"):
            self.assertIn(text, screen)
        self.assertNotIn("internal error", runner.stderr.getvalue())
        self.assertEqual(stdout.errors, "strict")  # the caller's stream as it was

    def test_terminalASCII(self) -> None:
        """
        The same on an ASCII terminal of the C locale, whose stream escapes
        undecodable bytes as surrogates.
        """
        raw = io.BytesIO()
        stdout = io.TextIOWrapper(raw, encoding="ascii", errors="surrogateescape", write_through=True)
        runner = Runner(["http://example.com/a", "-d", self.mktemp()], isTTY=True, stdout=stdout)  # type: ignore[arg-type]
        runner.fake.finish(runner.fake.jobs[0], name="snow\u2603.iso")
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        self.assertIn("snow\\u2603.iso", raw.getvalue().decode("ascii"))
        self.assertEqual(stdout.errors, "surrogateescape")

    def test_tableHidesThePassword(self) -> None:
        """
        The rows of failed and interrupted downloads name their URL without
        its password.
        """
        console = self.console()
        runner = Runner(["-q", "http://user:s3cret@example.com/a", "http://user:s3cret@example.com/b",
                         "-d", self.mktemp()], isTTY=True, console=console)
        fake = runner.fake
        fake.fail(fake.jobs[0], "http://example.com/a: gone", event=False)
        runner.interrupts[0](2)
        self.assertEqual(self.successResultOf(runner.result), EXIT_INTERRUPTED)
        screen = console.file.getvalue()
        self.assertNotIn("s3cret", screen + runner.stderr.getvalue())
        self.assertIn("user:***@example.com/a", screen)
        self.assertIn("user:***@example.com/b", screen)

    def test_refreshRate(self) -> None:
        runner = Runner(["http://example.com/a", "-d", self.mktemp()], isTTY=True, console=self.console())
        [refresh] = runner.reactor.getDelayedCalls()
        self.assertGreaterEqual(refresh.getTime() - runner.reactor.seconds(), 0.1)
        runner.fake.finish(runner.fake.jobs[0])
        self.successResultOf(runner.result)

    def test_quietTerminal(self) -> None:
        console = self.console()
        runner = Runner(["-q", "http://example.com/a", "-d", self.mktemp()], isTTY=True, console=console)
        self.assertEqual(runner.reactor.getDelayedCalls(), [])  # no live display
        runner.fake.finish(runner.fake.jobs[0])
        self.assertEqual(self.successResultOf(runner.result), EXIT_OK)
        screen = console.file.getvalue()
        self.assertNotIn("✓", screen)
        self.assertIn("1 downloaded", screen)

    def test_manyFilesAndUnknownSizes(self) -> None:
        console = self.console(height=12)
        tracker = _Tracker(lambda: 0.0)
        for n in range(30):
            tracker.apply({"event": "start", "job": str(n), "url": f"http://example.com/{n}", "name": f"f{n}",
                           "path": f"f{n}", "size": None if n == 0 else 1000, "resumed": 0})
            tracker.apply({"event": "progress", "job": str(n), "done": 500 + n, "size": None if n == 0 else 1000,
                           "speed": 100.0})
        console.print(_LiveView(tracker, console))
        screen = console.file.getvalue()
        lines = screen.splitlines()
        self.assertEqual(len(lines), 8 + 2)  # rows that fit, "... and N more", the total
        self.assertIn("... and 22 more", screen)
        self.assertIn("f0 ", lines[0])
        self.assertIn("500 B ", lines[0])  # unknown size: bytes only, no ETA
        self.assertNotIn("ETA", lines[0])
        self.assertIn("ETA", lines[1])
        self.assertIn("total 0/30", lines[-1])
        self.assertNotIn("ETA", lines[-1])  # one size unknown: no total ETA
        self.assertIn("2.9 KiB/s", lines[-1])

    def test_formats(self) -> None:
        self.assertEqual([formatSize(n) for n in (0, 1023, 1024, 1536, 5 * 2**30)],
                         ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 GiB"])
        self.assertEqual([formatSeconds(s) for s in (None, 0.42, 42, 185, 7300)],
                         ["-", "0.4 s", "42 s", "3m 05s", "2h 01m"])


class _Endless(Resource):
    """
    Sends the head and some bytes of a big file, then nothing more.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-length", b"1000000")
        request.setHeader(b"etag", b'"v1"')
        request.write(b"x" * 1000)
        return NOT_DONE_YET


class _Lines(ProcessProtocol):
    """
    Collects a process's output; C{firstLine} fires with its first stdout line.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.firstLine: Deferred[bytes] = Deferred()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if b"\n" in self.out and not self.firstLine.called:
            self.firstLine.callback(self.out.split(b"\n", 1)[0])

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class _Fed(_Lines):
    """
    Collects a process's output after writing C{stdin} to its standard
    input and closing it.
    """

    def __init__(self, stdin: bytes) -> None:
        super().__init__()
        self.stdin = stdin

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()


class _Missing(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(404)
        return b"not here"


class WellFormedTests(SynchronousTestCase):
    def test_loneSurrogates(self) -> None:
        """
        A byte that was not UTF-8 (C{\\udce9}) becomes its C{%E9}; any
        other lone surrogate U+FFFD; the rest of the text, and what is not
        text, stays.
        """
        from netsuite.download.cli import _wellFormed

        self.assertEqual(
            _wellFormed({"path": "d\udce9/x", "n": [1, "a\ud800b", None], "ok": "é☃"}),
            {"path": "d%E9/x", "n": [1, "a\ufffdb", None], "ok": "é☃"},
        )


class EndToEndTests(TestCase):
    """
    The real command in a subprocess against a local origin.
    """

    timeout = 30

    def setUp(self) -> None:
        self.payload = os.urandom(300_000)
        root = Resource()
        root.putChild(b"file.bin", Data(self.payload, "application/octet-stream"))
        root.putChild(b"small.txt", Data(b"hello\n", "text/plain"))
        root.putChild("café☃.txt".encode("utf-8"), Data(b"snow\n", "text/plain"))
        root.putChild(b"missing", _Missing())
        root.putChild(b"endless.bin", _Endless())
        ranged = Path(self.mktemp())
        ranged.write_bytes(self.payload)
        root.putChild(b"ranged.bin", File(str(ranged)))
        site = Site(root)
        site.displayTracebacks = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.out = self.mktemp()

    def environment(self) -> tuple[dict, str]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
        return env, root

    async def netsuiteGet(self, *args: str) -> tuple[bytes, bytes, int]:
        env, root = self.environment()
        return await getProcessOutputAndValue(
            sys.executable, ["-m", "netsuite.download.cli", *args], env=env, path=root
        )

    async def test_downloadsAndReportsNDJSON(self) -> None:
        out, err, code = await self.netsuiteGet(f"{self.base}/file.bin", f"{self.base}/small.txt", "-d",
                                                os.path.abspath(self.out), "-x", "2", "--min-split-size", "64K")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(Path(self.out, "file.bin").read_bytes(), self.payload)
        self.assertEqual(Path(self.out, "small.txt").read_bytes(), b"hello\n")
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(lines[-1]["event"], "summary")
        self.assertEqual((lines[-1]["ok"], lines[-1]["exitCode"]), (2, 0))
        self.assertEqual({line["event"] for line in lines[:-1]} - {"progress"}, {"start", "done"})

    async def test_missingFile(self) -> None:
        out, err, code = await self.netsuiteGet(f"{self.base}/missing", f"{self.base}/small.txt", "-d",
                                                os.path.abspath(self.out), "-q")
        self.assertEqual(code, 1)
        self.assertEqual(err.decode(), f"netsuite-get: {self.base}/missing: the server answered 404 Not Found\n")
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([line["event"] for line in lines], ["error", "summary"])
        self.assertEqual((lines[-1]["ok"], lines[-1]["failed"]), (1, 1))
        self.assertEqual(sorted(os.listdir(self.out)), ["small.txt"])

    async def test_warningsReachTheUser(self) -> None:
        """
        The downloader's warnings (here: a state file it cannot read, so its
        C{.part} is left alone and the file goes to another name) are shown
        on standard error, once each; they went to a log nobody read.
        """
        out = Path(self.out)
        out.mkdir()
        (out / "small.txt.part").write_bytes(b"")
        (out / "small.txt.part.json").write_text("not json")
        _, err, code = await self.netsuiteGet(f"{self.base}/small.txt", "-d", os.path.abspath(self.out), "-q")
        self.assertEqual(code, 0)
        self.assertEqual(
            err.decode(),
            f"netsuite-get: warning: ignoring unreadable download state {out.resolve() / 'small.txt.part.json'}: "
            "Expecting value: line 1 column 1 (char 0)\n",
        )
        self.assertEqual((out / "small.txt.1").read_bytes(), b"hello\n")

    async def test_warningsShowNoEscapeSequences(self) -> None:
        """
        A warning naming a file someone planted with escape sequences in its
        name shows them escaped: they reached the terminal (a title set,
        the screen cleared).
        """
        out = Path(self.out)
        out.mkdir()
        planted = "a\x1b]2;PWNED\x07\x1b[2J.part.json"
        (out / planted).write_text("not json")
        _, err, code = await self.netsuiteGet(f"{self.base}/small.txt", "-d", os.path.abspath(self.out), "-q")
        self.assertEqual(code, 0)
        self.assertNotIn(b"\x1b", err)
        self.assertNotIn(b"\x07", err)
        self.assertIn(b"a\\x1b]2;PWNED\\x07\\x1b[2J.part.json", err)

    async def test_closedStandardStreams(self) -> None:
        """
        Started with standard output closed (C{>&-}), the command downloads
        and exits 0, quietly; with standard input closed, C{-i -} is a
        usage error.  Python makes a closed stream L{None}: the first event
        ended in an internal error's traceback and exit status 1.
        """
        env, root = self.environment()

        async def closed(redirect: str, *args: str) -> tuple[bytes, bytes, int]:
            script = f'exec "$0" -m netsuite.download.cli "$@" {redirect}'
            return await getProcessOutputAndValue("/bin/sh", ["-c", script, sys.executable, *args], env=env, path=root)

        out = os.path.abspath(self.out)
        for redirect, name in ((">&-", "small.txt"), (">&- 2>&-", "small.txt.1")):
            _, err, code = await closed(redirect, f"{self.base}/small.txt", "-d", out)
            self.assertEqual((code, err), (0, b""), redirect)
            self.assertEqual(Path(out, name).read_bytes(), b"hello\n")
        _, err, code = await closed("<&-", "-i", "-", "-d", out)
        self.assertEqual(code, 2)
        self.assertEqual(
            err, b"netsuite-get: cannot read the input file from standard input: it is closed (see netsuite-get --help)\n"
        )

    async def test_namesTheFileSystemCannotTake(self) -> None:
        """
        Under a locale whose file names cannot hold a download's name (the
        C locale, its encoding ASCII), the characters it cannot take are
        percent-encoded as their UTF-8 bytes; the download failed as an
        internal error, with a traceback.  Bytes of C{-o} that are not
        UTF-8 are kept percent-encoded; they were dropped.
        """
        env, root = self.environment()
        env.update(LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
        out = os.path.abspath(self.out)
        _, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "netsuite.download.cli", f"{self.base}/caf%C3%A9%E2%98%83.txt", "-d", out, "-q"],
            env=env, path=root,
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(Path(out, "caf%C3%A9%E2%98%83.txt").read_bytes(), b"snow\n")
        # A directory such a locale cannot name is one usage error (it was
        # a traceback).
        inputFile = os.path.abspath(self.mktemp())
        with open(inputFile, "w", encoding="utf-8") as f:
            f.write(f"{self.base}/small.txt\n  dir={out}/café\n")
        _, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "netsuite.download.cli", "-i", inputFile, "-q"], env=env, path=root,
        )
        self.assertEqual(code, 2, err)
        self.assertNotIn(b"Traceback", err)
        self.assertIn(b"this locale's file names cannot hold its name", err)
        env, root = self.environment()
        _, err, code = await getProcessOutputAndValue(
            sys.executable, [b"-m", b"netsuite.download.cli", f"{self.base}/small.txt".encode(), b"-d", out.encode(),
                             b"-q", b"-o", b"caf\xe9.txt"],
            env=env, path=root,
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(Path(out, "caf%E9.txt").read_bytes(), b"hello\n")

    async def test_eventsAreUnicode(self) -> None:
        """
        NDJSON events are Unicode throughout: bytes of the command line that
        are not UTF-8 (a directory named in Latin-1) are shown as C{%XX}.
        JSON's C{\\udce9} for them, a lone surrogate, is refused by strict
        parsers (Go's, Rust's serde).
        """
        env, root = self.environment()
        out = os.path.abspath(self.out).encode() + b"/caf\xe9"
        stdout, err, code = await getProcessOutputAndValue(
            sys.executable, [b"-m", b"netsuite.download.cli", f"{self.base}/small.txt".encode(), b"-d", out, b"--json"],
            env=env, path=root,
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(Path(os.fsdecode(out), "small.txt").read_bytes(), b"hello\n")

        def strings(value: object) -> list:
            if isinstance(value, str):
                return [value]
            if isinstance(value, dict):
                return [s for k, v in value.items() for s in strings(k) + strings(v)]
            if isinstance(value, list):
                return [s for v in value for s in strings(v)]
            return []

        events = [json.loads(line) for line in stdout.splitlines()]
        for text in strings(events):
            text.encode("utf-8")  # no lone surrogate
        self.assertTrue(any("caf%E9" in text for text in strings(events)))

    async def test_usageErrorNeedsNoServer(self) -> None:
        out, err, code = await self.netsuiteGet("-o", "x", f"{self.base}/a", f"{self.base}/b")
        self.assertEqual((code, out), (2, b""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertNotIn(b"Traceback", err)

    async def test_interruptedBySignal(self) -> None:
        """
        SIGINT in the middle of a download: the state is saved, the user is
        told to run the command again, and the status is 130.
        """
        env, root = self.environment()
        lines = _Lines()
        out = os.path.abspath(self.out)
        process = reactor.spawnProcess(
            lines, sys.executable, [sys.executable, "-m", "netsuite.download.cli", f"{self.base}/endless.bin",
                                    "-d", out, "-x", "1"],
            env=env, path=root,
        )
        first = json.loads(await lines.firstLine)
        self.assertEqual(first["event"], "start")
        process.signalProcess("INT")
        code = await lines.ended
        self.assertEqual(code, 130, lines.err)
        self.assertTrue(lines.err.decode().endswith(f"netsuite-get: {RESUME_HINT}\n"), lines.err)
        summary = json.loads(lines.out.splitlines()[-1])
        self.assertEqual((summary["event"], summary["interrupted"], summary["exitCode"]), ("summary", 1, 130))
        self.assertEqual(sorted(os.listdir(out)), ["endless.bin.part", "endless.bin.part.json"])

    async def test_fullDiskKeepsOnlyWhatWasWritten(self) -> None:
        """
        A file size limit (as a full disk does) lets a write store part of a
        chunk and refuses the next one: the download fails in one sentence,
        the state names only bytes that are really on disk, and the next
        run resumes from them into an exact file.
        """
        if not hasattr(signal, "SIGXFSZ"):
            raise SkipTest("no file size limits here")
        env, root = self.environment()
        out = os.path.abspath(self.out)
        limited = (
            "import resource, runpy, signal, sys;"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100001, resource.RLIM_INFINITY));"
            "sys.argv[0] = 'netsuite-get';"
            "runpy.run_module('netsuite.download.cli', run_name='__main__')"
        )
        url = f"{self.base}/ranged.bin"
        stdout, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", limited, url, "-d", out, "-x", "1", "-q"], env=env, path=root
        )
        self.assertEqual(code, 1, err)
        self.assertEqual(err.decode(), f"netsuite-get: {url}: cannot write {out}/ranged.bin.part: File too large\n")
        self.assertEqual(sorted(os.listdir(out)), ["ranged.bin.part", "ranged.bin.part.json"])
        state = json.loads(Path(out, "ranged.bin.part.json").read_text())
        kept = sum(end - start for start, end in state["done"])
        self.assertGreater(kept, 0)
        self.assertLessEqual(kept, os.path.getsize(Path(out, "ranged.bin.part")))
        self.assertEqual(Path(out, "ranged.bin.part").read_bytes()[:kept], self.payload[:kept])
        summary = json.loads(stdout.splitlines()[-1])
        self.assertEqual(summary["results"][0]["done"], kept)

        stdout, err, code = await self.netsuiteGet(url, "-d", out, "-q")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(Path(out, "ranged.bin").read_bytes(), self.payload)
        self.assertEqual(json.loads(stdout.splitlines()[-1])["results"][0]["resumedFrom"], kept)

    def events(self, out: bytes) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in out.splitlines()]

    async def test_inputFileDownloadsEveryJob(self) -> None:
        """
        C{-i FILE}: every URL of the list is saved byte-exact, C{out=} names
        its file, a matching C{checksum=} lets its file through, comments
        (a commented-out URL too, and an indented one between a URL and its
        options) and blank lines are skipped, and the NDJSON has a done per
        job.
        """
        out = os.path.abspath(self.out)
        digest = hashlib.sha256(self.payload).hexdigest()
        listing = Path(self.mktemp())
        listing.write_text(
            "# what to fetch\n"
            "\n"
            f"{self.base}/small.txt\n"
            f"{self.base}/file.bin\n"
            "  # saved under another name\n"
            "  out=renamed.bin\n"
            "   \n"
            f"# {self.base}/missing\n"
            f"{self.base}/ranged.bin\n"
            f"\tchecksum=sha256={digest}\n"
            "\n",
            encoding="utf-8",
        )
        stdout, err, code = await self.netsuiteGet("-i", os.path.abspath(listing), "-d", out, "-x", "2",
                                                   "--min-split-size", "64K")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(sorted(os.listdir(out)), ["ranged.bin", "renamed.bin", "small.txt"])
        self.assertEqual(Path(out, "renamed.bin").read_bytes(), self.payload)
        self.assertEqual(Path(out, "ranged.bin").read_bytes(), self.payload)
        self.assertEqual(Path(out, "small.txt").read_bytes(), b"hello\n")
        events = self.events(stdout)
        done = sorted((e["url"], e["path"]) for e in events if e["event"] == "done")
        self.assertEqual(done, [
            (f"{self.base}/file.bin", os.path.join(out, "renamed.bin")),
            (f"{self.base}/ranged.bin", os.path.join(out, "ranged.bin")),
            (f"{self.base}/small.txt", os.path.join(out, "small.txt")),
        ])
        self.assertNotIn("error", [e["event"] for e in events])
        summary = events[-1]
        self.assertEqual((summary["event"], summary["files"], summary["ok"], summary["exitCode"]),
                         ("summary", 3, 3, 0))

    async def test_inputFileChecksumMismatch(self) -> None:
        """
        A C{checksum=} the file does not match fails that job alone: the
        others are saved, the bad file is under neither its final name nor
        a C{.part}, the status is 1, and standard error says what went
        wrong in one sentence.
        """
        out = os.path.abspath(self.out)
        wrong = hashlib.sha256(b"not the file").hexdigest()
        right = hashlib.sha256(self.payload).hexdigest()
        listing = Path(self.mktemp())
        listing.write_text(
            f"{self.base}/small.txt\n"
            f"{self.base}/file.bin\n"
            "  out=checked.bin\n"
            f"  checksum=sha256={wrong}\n"
            f"{self.base}/ranged.bin\n"
            f"  checksum=sha256={right}\n",
            encoding="utf-8",
        )
        stdout, err, code = await self.netsuiteGet("-i", os.path.abspath(listing), "-d", out)
        self.assertEqual(code, EXIT_FAILED, err)
        message = f"{self.base}/file.bin: the sha256 checksum does not match (expected {wrong}, got {right})"
        self.assertEqual(err.decode(), f"netsuite-get: {message}\n")
        self.assertEqual(sorted(os.listdir(out)), ["ranged.bin", "small.txt"])
        self.assertEqual(Path(out, "ranged.bin").read_bytes(), self.payload)
        self.assertEqual(Path(out, "small.txt").read_bytes(), b"hello\n")
        events = self.events(stdout)
        [error] = [e for e in events if e["event"] == "error"]
        self.assertEqual((error["url"], error["message"]), (f"{self.base}/file.bin", message))
        self.assertEqual(sorted(e["url"] for e in events if e["event"] == "done"),
                         [f"{self.base}/ranged.bin", f"{self.base}/small.txt"])
        summary = events[-1]
        self.assertEqual((summary["event"], summary["ok"], summary["failed"], summary["exitCode"]),
                         ("summary", 2, 1, EXIT_FAILED))
        [failed] = [r for r in summary["results"] if r["result"] == "failed"]
        self.assertEqual((failed["url"], failed["message"]), (f"{self.base}/file.bin", message))

    async def test_inputFileFromStandardInput(self) -> None:
        """
        C{-i -} reads the list from standard input, options and comments
        included; without C{-d} the files go to the current directory and
        C{dir=} is taken from there.
        """
        env, root = self.environment()
        out = Path(os.path.abspath(self.out))
        out.mkdir()
        listing = (
            "# from a pipe\n"
            f"{self.base}/small.txt\n"
            "  out=greeting.txt\n"
            "\n"
            f"{self.base}/file.bin\n"
            "  dir=sub\n"
            f"  checksum=sha256={hashlib.sha256(self.payload).hexdigest()}\n"
        )
        fed = _Fed(listing.encode("utf-8"))
        reactor.spawnProcess(fed, sys.executable, [sys.executable, "-m", "netsuite.download.cli", "-i", "-"],
                             env=env, path=str(out))
        code = await fed.ended
        self.assertEqual((code, fed.err), (0, b""))
        self.assertEqual(sorted(os.listdir(out)), ["greeting.txt", "sub"])
        self.assertEqual(os.listdir(out / "sub"), ["file.bin"])
        self.assertEqual((out / "greeting.txt").read_bytes(), b"hello\n")
        self.assertEqual((out / "sub" / "file.bin").read_bytes(), self.payload)
        events = self.events(fed.out)
        self.assertEqual(sorted(e["url"] for e in events if e["event"] == "done"),
                         [f"{self.base}/file.bin", f"{self.base}/small.txt"])
        self.assertEqual((events[-1]["event"], events[-1]["ok"], events[-1]["exitCode"]), ("summary", 2, 0))
