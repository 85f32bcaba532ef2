"""
C{netsuite-get}: download files over HTTP(S), several at once and each over
several connections, resuming what an earlier run left unfinished.

    netsuite-get URL... [-d DIR] [-j N] [-x SEGMENTS] [-i FILE|-] [-c] [--checksum TYPE=HEX]

On a terminal it shows a live display (a bar per active file, a total line,
speeds and times left) and ends with a table of the results.  When standard
output is not a terminal, or with C{--json}, it writes the engine's events
as NDJSON instead (one JSON object a line: C{start}, C{progress}, C{retry},
C{done}, C{error}) and ends with a C{summary} event.

Exit status: 0 when every download succeeded, 1 when any failed, 2 for a
usage error, 130 when interrupted (Ctrl-C or SIGTERM); running the same
command again then resumes.

L{main} is the console script; L{run} does the work on a given reactor with
an injectable downloader, for tests and for embedding.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall, react
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from netsuite import __version__
from netsuite.getscript import interrupted
from netsuite.download import DownloadError, DownloadRequest, DownloadSettings, Downloader, parseChecksum, parseSize
from netsuite.download.engine import redact, splitURL
from netsuite.download.inputfile import InputFileError, InputJob, checkName, checkURL, parseHeader, parseInputFile
from netsuite.download.names import chooseName, percentUndecoded
from netsuite.download.values import asciiProxyURL, fetchHostProblem
from netsuite.resolving import installResolver
from netsuite.text import shortened, visibleText

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Plan", "UsageError", "buildParser",
           "main", "makePlan", "run"]

PROGRAM = "netsuite-get"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: The live display is redrawn this many times a second at most.
REFRESH_PER_SECOND = 8

#: Active downloads the live display shows at most (fewer on a short terminal).
MAX_ROWS = 10

#: Rows the final table shows before it lists only the failures.
MAX_TABLE_ROWS = 40

#: The longest input file read (about half a million URLs): a bigger one,
#: or C{-i /dev/zero}, is refused rather than read into memory.
MAX_INPUT = 64 * 1024 * 1024

#: The resume hint printed after an interruption.
RESUME_HINT = "interrupted; run the same command again to resume the unfinished downloads"

#: The warning printed for --insecure.
INSECURE_WARNING = (
    "warning: --insecure: TLS certificates are not checked, so anyone on the way can read and change these downloads"
)


class UsageError(Exception):
    """
    The command line cannot be used; C{str()} is one readable sentence.
    """


# ---------------------------------------------------------------------------
# The command line


class _Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors raise L{UsageError} instead of printing
    the (long) usage and exiting.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _sizeText(size: int) -> str:
    for suffix, unit in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _wholeNumber(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {minimum} or more")
        return value

    return convert


def _secondsFrom(allowZero: bool) -> Callable[[str], float]:
    what = "a number of seconds (0 or more)" if allowZero else "a number of seconds above 0"

    def convert(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not allowZero):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


_seconds = _secondsFrom(allowZero=False)
_secondsOrZero = _secondsFrom(allowZero=True)


def _size(text: str) -> int:
    try:
        value = parseSize(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is too small: give at least 1 byte")
    return value


def _header(text: str) -> Tuple[str, str]:
    try:
        return parseHeader(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _proxy(text: str) -> str:
    """
    The C{--proxy} URL, checked: an C{http://} URL with a host Twisted can
    connect to (L{asciiProxyURL}), its password hidden in any message.
    """
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    shown = redact(text)
    if parts is None or parts.scheme.lower() != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"{shown!r} is not a proxy URL: write http://[user:password@]host:port")
    try:
        asciiProxyURL(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{shown!r} cannot be used as a proxy: {e}") from None
    return text


def buildParser() -> argparse.ArgumentParser:
    """
    The argument parser of C{netsuite-get}; its defaults for the engine's
    settings are L{DownloadSettings}'s own.
    """
    d = DownloadSettings()
    p = _Parser(
        prog=PROGRAM,
        description=(
            "Download files over HTTP and HTTPS: several at once, each over several connections, "
            "resuming what an earlier run left unfinished (NAME.part and NAME.part.json beside the file)."
        ),
        epilog=(
            "The input file (-i) lists one URL a line; indented lines after a URL set options for it: "
            "out=NAME, checksum=TYPE=HEX, dir=DIR, header=Name: value (repeatable); '#' starts a comment.  "
            "SIZE and RATE take K, M, G and T (1K = 1024).  "
            "Output: a live display on a terminal, else (or with --json) NDJSON events, one JSON object a line, "
            "ending with a summary event.  "
            "Exit status: 0 all downloaded, 1 some failed, 2 usage error, 130 interrupted "
            "(run the same command again to resume)."
        ),
        allow_abbrev=False,
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="what to download (http:// or https://)")
    p.add_argument("-i", "--input-file", metavar="FILE",
                   help="read URLs (and per-file options) from FILE; '-' reads standard input")
    p.add_argument("-d", "--dir", default=".", metavar="DIR",
                   help="save files in DIR, created if missing (default: the current directory)")
    p.add_argument("-o", "--out", metavar="NAME", help="save the file as NAME (only with exactly one URL)")

    g = p.add_argument_group("connections")
    g.add_argument("-j", "--max-connections", dest="maxConnections", type=_wholeNumber(1), metavar="N",
                   help=f"HTTP connections in all (default {d.maxConnections})")
    g.add_argument("--max-per-host", dest="maxPerHost", type=_wholeNumber(1), metavar="N",
                   help=f"connections to one server (default {d.maxPerHost})")
    g.add_argument("-x", "--segments", dest="segments", type=_wholeNumber(1), metavar="N",
                   help=f"connections one file may use (default {d.segments})")
    g.add_argument("--min-split-size", dest="minSplitSize", type=_size, metavar="SIZE",
                   help=f"never split files smaller than SIZE (default {_sizeText(d.minSplitSize)})")
    g.add_argument("--limit-rate", dest="rateLimit", type=_size, metavar="RATE",
                   help="at most RATE bytes a second, all downloads together (e.g. 500K, 2M)")

    g = p.add_argument_group("files")
    g.add_argument("-c", "--continue", dest="continueExisting", action="store_true",
                   help="count a file already under the final name as the first bytes of the download")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing files instead of saving as NAME.1, NAME.2, ...")
    g.add_argument("--checksum", metavar="TYPE=HEX",
                   help="check the file's digest (sha256=, sha-256=, sha1=, sha512=, md5=; only with exactly one URL)")
    g.add_argument("--max-size", dest="maxSize", type=_size, metavar="SIZE", help="refuse files bigger than SIZE")
    g.add_argument("--no-fsync", dest="sync", action="store_false",
                   help="give a finished file its name without first writing it through to the disk (faster on "
                        "slow disks; a power cut may then leave it with missing bytes)")

    g = p.add_argument_group("time and retries")
    g.add_argument("--connect-timeout", dest="connectTimeout", type=_seconds, metavar="S",
                   help=f"seconds to connect (default {d.connectTimeout:g})")
    g.add_argument("--timeout", dest="headerTimeout", type=_seconds, metavar="S",
                   help=f"seconds to wait for the response headers (default {d.headerTimeout:g})")
    g.add_argument("--stall-timeout", dest="stallTimeout", type=_seconds, metavar="S",
                   help=f"seconds without any body bytes before trying again (default {d.stallTimeout:g})")
    g.add_argument("--lowest-speed-limit", dest="lowestSpeed", type=_size, metavar="RATE",
                   help="try a connection again when it brings less than RATE bytes a second over the "
                        "--stall-timeout seconds (e.g. 10K; default: no limit)")
    g.add_argument("--total-timeout", dest="totalTimeout", type=_seconds, metavar="S",
                   help="seconds one download may take in all (default: no limit)")
    g.add_argument("--retries", dest="retries", type=_wholeNumber(0), metavar="N",
                   help=f"further attempts after failures in a row (default {d.retries})")
    g.add_argument("--retry-wait", dest="retryWait", type=_secondsOrZero, metavar="S",
                   help=f"seconds before the first retry; doubles each time (default {d.retryWait:g})")
    g.add_argument("--max-redirects", dest="maxRedirects", type=_wholeNumber(0), metavar="N",
                   help=f"redirects to follow at most (default {d.maxRedirects})")

    g = p.add_argument_group("HTTP")
    g.add_argument("-H", "--header", dest="headers", type=_header, action="append", default=[],
                   metavar="'NAME: VALUE'", help="send this header with every request (repeatable)")
    g.add_argument("--ca-file", dest="caFile", metavar="PEM",
                   help="trust the CA certificates in PEM (a private CA) instead of the system's")
    g.add_argument("--insecure", action="store_true", help="do not check TLS certificates at all (warns)")
    g.add_argument("--proxy", dest="proxy", type=_proxy, metavar="URL",
                   help="fetch through this HTTP proxy, http://[user:password@]host:port; only this option "
                        "chooses a proxy: the http_proxy/https_proxy environment variables are not used")

    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="write NDJSON events even on a terminal")
    g.add_argument("-q", "--quiet", action="store_true", help="show only errors and the summary")
    g.add_argument("--version", action="version", version=f"{PROGRAM} (netsuite) {__version__}")
    return p


#: The parsed options that are L{DownloadSettings} fields of the same name.
_SETTINGS_OPTIONS = (
    "maxConnections", "maxPerHost", "segments", "minSplitSize", "connectTimeout", "headerTimeout",
    "stallTimeout", "totalTimeout", "retries", "retryWait", "maxRedirects", "caFile", "proxy",
    "rateLimit", "maxSize", "lowestSpeed",
)


@dataclass
class Plan:
    """
    What a command line asks for.

    @ivar lines: for each request, the input-file line it came from (0 for
        a URL on the command line).
    """

    settings: DownloadSettings
    requests: List[DownloadRequest]
    json: bool = False
    quiet: bool = False
    lines: List[int] = field(default_factory=list)


def _readInput(path: str, stdin: Optional[IO[str]]) -> Tuple[str, str]:
    # Bytes, decoded strictly: standard input's own decoding would pass
    # bytes that are not UTF-8 through as surrogates.
    where, named = ("standard input", "from standard input") if path == "-" else (path, repr(path))
    if path == "-" and stdin is None:
        raise UsageError("cannot read the input file from standard input: it is closed")
    try:
        if path == "-":
            data = getattr(stdin, "buffer", stdin).read(MAX_INPUT + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_INPUT + 1)
    except OSError as e:
        raise UsageError(f"cannot read the input file {named}: {e.strerror or e}") from None
    if len(data) > MAX_INPUT:
        raise UsageError(f"the input file ({where}) is longer than {formatSize(MAX_INPUT)}; split it")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"cannot read the input file {named}: it is not UTF-8 text") from None
    return data, where


def _makeDirectory(directory: str) -> None:
    path = Path(directory)
    shown = shortened(directory, 500)
    try:
        if path.is_dir():
            return
        if path.exists():
            raise UsageError(f"{shown} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a name too long, a file on the way, no permission...
        raise UsageError(f"cannot create the directory {shown}: {e.strerror or e}") from None
    except UnicodeEncodeError:
        raise UsageError(f"cannot create the directory {shown}: this locale's file names cannot hold its name") from None


def makePlan(args: argparse.Namespace, stdin: Optional[IO[str]] = None, createDirectories: bool = True) -> Plan:
    """
    Check parsed options against each other, read the input file, and build
    the engine's settings and requests.

    @param stdin: where C{-i -} reads (default L{sys.stdin}).
    @param createDirectories: create the directories downloads go into.
    @raise UsageError: with one readable sentence.
    """
    jobs: List[InputJob] = []
    for url in args.urls:
        try:
            checkURL(url)
        except ValueError as e:
            raise UsageError(str(e)) from None
        jobs.append(InputJob(url=url))
    if args.input_file is not None:
        text, source = _readInput(args.input_file, stdin if stdin is not None else sys.stdin)
        try:
            jobs.extend(parseInputFile(text, source, checkChecksum=parseChecksum))
        except InputFileError as e:
            raise UsageError(str(e)) from None
    else:
        source = ""
    if not jobs:
        raise UsageError("no URL to download: give one or more, or a file of them with -i FILE")

    def where(job: InputJob) -> str:
        return f"{source}, line {job.line}: " if job.line else ""

    for job in jobs:
        problem = fetchHostProblem(splitURL(job.url)[0], args.proxy is not None, not args.insecure)
        if problem is not None:
            hint = "; --proxy can fetch it through a proxy" if args.proxy is None else ""
            raise UsageError(f"{where(job)}{redact(job.url)}: {problem}{hint}")

    if args.out is not None:
        if len(jobs) != 1:
            raise UsageError(f"-o/--out names one file, but there are {len(jobs)} URLs; use out= in an input file")
        try:
            checkName(args.out)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if jobs[0].name is not None:
            raise UsageError(f"{where(jobs[0])}out= and -o/--out both name the file; give one")
        jobs[0].name = args.out
    if args.checksum is not None:
        if len(jobs) != 1:
            raise UsageError(
                f"--checksum checks one file, but there are {len(jobs)} URLs; use checksum= in an input file"
            )
        try:
            parseChecksum(args.checksum)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if jobs[0].checksum is not None:
            raise UsageError(f"{where(jobs[0])}checksum= and --checksum both give a checksum; give one")
        jobs[0].checksum = args.checksum
    if args.continueExisting and args.overwrite:
        raise UsageError("-c/--continue keeps an existing file and --overwrite replaces it; give one")
    if args.insecure and args.caFile is not None:
        raise UsageError("--insecure checks no certificates, so --ca-file would not be used; give one")

    common: Dict[str, str] = {}
    for name, value in args.headers:
        if name.lower() in (n.lower() for n in common):
            raise UsageError(f"the header {name!r} is given twice")
        common[name] = value

    settings = {option: getattr(args, option) for option in _SETTINGS_OPTIONS if getattr(args, option) is not None}
    if args.insecure:
        settings["insecure"] = True
    if not args.sync:
        settings["sync"] = False
    if "retryWait" in settings and settings["retryWait"] > DownloadSettings().maxRetryWait:
        settings["maxRetryWait"] = settings["retryWait"]
    try:
        made = DownloadSettings(**settings)
    except ValueError as e:  # the checks above should have caught it
        raise UsageError(str(e)) from None

    requests = []
    for job in jobs:
        headers = {n: v for n, v in common.items() if n.lower() not in (k.lower() for k in job.headers)}
        headers.update(job.headers)
        requests.append(
            DownloadRequest(
                url=job.url,
                directory=job.directory if job.directory is not None else args.dir,
                name=job.name,
                checksum=job.checksum,
                headers=headers or None,
                overwrite=args.overwrite,
                continueExisting=args.continueExisting,
            )
        )
    if createDirectories:
        created: set[str] = set()
        for job, request in zip(jobs, requests):
            directory = str(request.directory)
            if directory in created:
                continue
            try:
                _makeDirectory(directory)
            except UsageError as e:
                # A dir= names its line; -d is the command line's.
                raise UsageError(f"{where(job) if job.directory is not None else ''}{e}") from None
            created.add(directory)
    return Plan(
        settings=made,
        requests=requests,
        json=args.json,
        quiet=args.quiet,
        lines=[job.line for job in jobs],
    )


# ---------------------------------------------------------------------------
# What the user sees


def formatSize(size: Optional[float]) -> str:
    """
    C{size} bytes for people: C{"512 B"}, C{"1.5 KiB"}, C{"12.3 MiB"}.
    """
    if size is None:
        return "?"
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def formatSeconds(seconds: Optional[float]) -> str:
    """
    A duration for people: C{"0.4 s"}, C{"12 s"}, C{"3m 05s"}, C{"1h 02m"}.
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def _timeLeft(size: Optional[int], done: int, speed: float) -> Optional[float]:
    if size is None or speed <= 0 or done >= size:
        return None
    return (size - done) / speed


def _shownPath(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


@dataclass
class _JobView:
    """
    What the events told about one job so far.
    """

    id: str
    url: str
    name: str
    state: str = "waiting"  # waiting | running | retrying | done | failed | interrupted
    size: Optional[int] = None
    done: int = 0
    resumed: int = 0
    speed: float = 0.0
    path: Optional[str] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    message: Optional[str] = None
    attempt: int = 0
    errorSeen: bool = False


class _Tracker:
    """
    The state of every job, kept up to date from the engine's events.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.jobs: Dict[str, _JobView] = {}
        self._clock = clock

    def add(self, jobId: str, request: DownloadRequest) -> _JobView:
        view = self.jobs.get(jobId)
        if view is None:
            view = self.jobs[jobId] = _JobView(jobId, redact(request.url), request.name or chooseName(request.url))
        return view

    def _view(self, event: Dict[str, Any]) -> _JobView:
        jobId = str(event.get("job"))
        view = self.jobs.get(jobId)
        if view is None:
            url = str(event.get("url", ""))
            view = self.jobs[jobId] = _JobView(jobId, url, chooseName(url) if url else jobId)
        return view

    def apply(self, event: Dict[str, Any]) -> _JobView:
        view = self._view(event)
        kind = event.get("event")
        now = self._clock()
        if kind == "start":
            view.state = "running"
            view.name = str(event.get("name") or view.name)
            view.path = event.get("path") or view.path
            view.size = event.get("size")
            view.resumed = view.done = int(event.get("resumed") or 0)
            view.speed = 0.0
            if view.started is None:
                view.started = now
        elif kind == "progress":
            view.state = "running"
            view.done = int(event.get("done") or 0)
            if event.get("size") is not None:
                view.size = event["size"]
            view.speed = float(event.get("speed") or 0.0)
            if view.started is None:
                view.started = now
        elif kind == "retry":
            view.state = "retrying"
            view.attempt = int(event.get("attempt") or 0)
            view.message = str(event.get("reason") or "")
            view.speed = 0.0
        elif kind == "done":
            view.state = "done"
            view.size = view.done = int(event.get("size") or 0)
            view.path = event.get("path") or view.path
            view.speed = 0.0
            view.ended = now
        elif kind == "error":
            view.state = "failed"
            view.message = str(event.get("message") or "failed")
            if event.get("done") is not None:
                view.done = int(event["done"])
            view.errorSeen = True
            view.speed = 0.0
            view.ended = now
        return view

    def counts(self) -> Dict[str, int]:
        counts = dict.fromkeys(("waiting", "running", "retrying", "done", "failed", "interrupted"), 0)
        for view in self.jobs.values():
            counts[view.state] = counts.get(view.state, 0) + 1
        return counts


@dataclass
class _Row:
    """
    One line of the summary.
    """

    job: str
    url: str
    file: str
    size: Optional[int]
    done: int
    seconds: Optional[float]
    result: str  # done | failed | interrupted
    message: Optional[str] = None
    resumedFrom: int = 0
    path: Optional[str] = None


class _Output:
    """
    Where events and messages go; see L{_JSONOutput} and L{_RichOutput}.
    """

    #: Why what was to go to standard output was lost, if it was (a full
    #: disk): the exit status then is not 0.
    lost: Optional[str] = None

    def __init__(self, stdout: IO[str], stderr: IO[str], tracker: _Tracker, quiet: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.tracker = tracker
        self.quiet = quiet

    def say(self, text: str) -> None:
        """
        One line for the user on standard error.
        """
        try:
            self.stderr.write(f"{PROGRAM}: {text}\n")
            self.stderr.flush()
        except (OSError, ValueError):
            pass

    def begin(self) -> None:
        pass

    def event(self, event: Dict[str, Any], view: _JobView) -> None:
        raise NotImplementedError()

    def note(self, text: str) -> None:
        self.say(text)

    def end(self, rows: List[_Row], summary: Dict[str, Any]) -> None:
        raise NotImplementedError()


#: Lone surrogates: the bytes of command-line text that were not UTF-8
#: (C{\\udc80} to C{\\udcff}), and any other.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _wellFormed(value: Any) -> Any:
    """
    C{value} (an event) with the lone surrogates in its text replaced: a
    byte that was not UTF-8 (a name or path given on the command line) by
    its C{%XX}, any other by U+FFFD.  JSON's C{\\udce9} for one is refused by
    strict parsers (Go's, Rust's serde), as not Unicode.
    """
    if isinstance(value, str):
        if value.isascii() or _SURROGATE.search(value) is None:
            return value
        return _SURROGATE.sub("\ufffd", percentUndecoded(value))
    if isinstance(value, dict):
        return {_wellFormed(k): _wellFormed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wellFormed(v) for v in value]
    return value


class _JSONOutput(_Output):
    """
    NDJSON on standard output: the engine's events as they come, then a
    summary; each error also as one sentence on standard error.
    """

    broken = False

    def _line(self, record: Dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self.stdout.write(json.dumps(_wellFormed(record)) + "\n")
            self.stdout.flush()
        except BrokenPipeError:
            # The reader went away (| head): keep downloading, stop writing,
            # and keep the interpreter's last flush from complaining.
            self.broken = True
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stdout.fileno())
                os.close(devnull)
        except OSError as e:
            # Not the reader going away: what it would read is lost (a full
            # disk, /dev/full), and it must not take the output for whole.
            self.broken = True
            self.lost = e.strerror or type(e).__name__
            self.say(f"cannot write the events to standard output ({self.lost}); the downloads go on")
        except ValueError:  # closed
            self.broken = True

    def event(self, event: Dict[str, Any], view: _JobView) -> None:
        if event.get("event") == "error":
            self.say(str(event.get("message")))
        elif self.quiet:
            return
        self._line(event)

    def end(self, rows: List[_Row], summary: Dict[str, Any]) -> None:
        summary = dict(summary)
        summary["results"] = [
            {"job": r.job, "url": r.url, "path": r.path, "size": r.size, "done": r.done,
             "seconds": None if r.seconds is None else round(r.seconds, 3),
             "result": r.result, "message": r.message, "resumedFrom": r.resumedFrom}
            for r in rows
        ]
        self._line(summary)


class _LiveView:
    """
    The live display's contents, rendered afresh at each refresh: the
    active downloads (as many as fit) and a total line.
    """

    def __init__(self, tracker: _Tracker, console: Any) -> None:
        self.tracker = tracker
        self.console = console

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True, overflow="ellipsis", max_width=max(12, self.console.width // 3))
        table.add_column(width=24, no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(no_wrap=True)

        views = list(self.tracker.jobs.values())
        active = [v for v in views if v.state in ("running", "retrying")]
        room = max(1, min(MAX_ROWS, self.console.height - 4))
        for view in active[:room]:
            if view.state == "retrying":
                tail = Text(f"retry {view.attempt}", style="yellow")
            else:
                left = _timeLeft(view.size, view.done, view.speed)
                tail = Text(f"ETA {formatSeconds(left)}" if left is not None else "", style="cyan")
            amount = formatSize(view.done) if view.size is None else f"{formatSize(view.done)}/{formatSize(view.size)}"
            table.add_row(
                Text(view.name),
                ProgressBar(total=view.size, completed=view.done, width=24),
                amount,
                f"{formatSize(view.speed)}/s",
                tail,
            )
        if len(active) > room:
            table.add_row(Text(f"... and {len(active) - room} more", style="dim"), "", "", "", "")

        counts = self.tracker.counts()
        counted = [v for v in views if v.state not in ("failed", "interrupted")]
        known = all(v.size is not None for v in counted)
        total = sum(v.size or 0 for v in counted) if known else None
        done = sum(v.done for v in counted)
        speed = sum(v.speed for v in active)
        finished = counts["done"] + counts["failed"]
        label = f"total {finished}/{len(views)}"
        if counts["failed"]:
            label += f", {counts['failed']} failed"
        if counts["waiting"]:
            label += f", {counts['waiting']} waiting"
        left = _timeLeft(total, done, speed)
        table.add_row(
            Text(label, style="bold"),
            ProgressBar(total=total, completed=done, width=24),
            formatSize(done) if total is None else f"{formatSize(done)}/{formatSize(total)}",
            f"{formatSize(speed)}/s",
            Text(f"ETA {formatSeconds(left)}" if left is not None else "", style="cyan"),
        )
        return table


#: The live display's marks of a file done, failed, and retried.
_MARKS = ("\u2713 ", "\u2717 ", "\u21bb ")
_ASCII_MARKS = ("ok ", "error ", "retry ")


def _encodes(encoding: str, text: str) -> bool:
    """
    Whether C{text} can be written in C{encoding}.
    """
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _forgiving(stream: IO[str]) -> Callable[[], None]:
    """
    Make C{stream} write what its encoding cannot hold (a file name from a
    server, on a terminal that is not UTF-8) as backslash escapes, instead
    of failing (also one that escapes undecodable bytes as surrogates, as
    in the C locale): a download must not fail for what it shows.

    @return: what puts the stream back as it was.
    """
    reconfigure = getattr(stream, "reconfigure", None)
    errors = getattr(stream, "errors", None)
    if reconfigure is None or errors not in ("strict", "surrogateescape"):
        return lambda: None
    try:
        reconfigure(errors="backslashreplace")
    except (ValueError, OSError):
        return lambda: None  # closed, or already written to in a way it cannot change

    def restore() -> None:
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors=errors)

    return restore


class _RichOutput(_Output):
    """
    A live display on a terminal (unless quiet), a line per finished file,
    and a table at the end.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str], tracker: _Tracker, quiet: bool, reactor: Any,
                 console: Any = None) -> None:
        super().__init__(stdout, stderr, tracker, quiet)
        from rich.console import Console

        self.console = console if console is not None else Console(file=stdout, force_terminal=True)
        #: The marks of a file done, failed, retried: ASCII where the
        #: terminal's encoding has no others.
        self.marks = _MARKS if _encodes(self.console.encoding, "".join(_MARKS)) else _ASCII_MARKS
        self.reactor = reactor
        self.live: Any = None
        self.refresher: Optional[LoopingCall] = None

    def begin(self) -> None:
        if self.quiet:
            return
        from rich.live import Live

        self.live = Live(
            _LiveView(self.tracker, self.console),
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start(refresh=True)
        self.refresher = LoopingCall(self.refresh)
        self.refresher.clock = self.reactor
        self.refresher.start(1.0 / REFRESH_PER_SECOND, now=False)

    def refresh(self) -> None:
        """
        Redraw the live display.
        """
        if self.live is not None:
            self.live.refresh()

    def _print(self, *parts: Tuple[str, str]) -> None:
        from rich.text import Text

        self.console.print(Text.assemble(*parts), soft_wrap=True)

    def event(self, event: Dict[str, Any], view: _JobView) -> None:
        kind = event.get("event")
        if kind == "error":
            self._print((self.marks[1], "bold red"), (view.message or "", "red"))
        elif self.quiet:
            return
        elif kind == "done":
            self._print((self.marks[0], "bold green"), (_shownPath(view.path or view.name), ""),
                        (f"  {formatSize(view.size)}", "dim"))
        elif kind == "retry":
            delay = float(event.get("delay") or 0.0)
            self._print((self.marks[2], "yellow"),
                        (f"{view.name}: {view.message}; try {view.attempt} in {formatSeconds(delay)}", "dim"))

    def note(self, text: str) -> None:
        self._print((f"{text}", "yellow"))

    def _stopLive(self) -> None:
        if self.refresher is not None and self.refresher.running:
            self.refresher.stop()
        if self.live is not None:
            self.live.stop()
            self.live = None

    def end(self, rows: List[_Row], summary: Dict[str, Any]) -> None:
        from rich.table import Table
        from rich.text import Text

        self._stopLive()
        table = Table(title=None, show_edge=False, pad_edge=False)
        table.add_column("File", overflow="fold")
        table.add_column("Size", justify="right", no_wrap=True)
        table.add_column("Time", justify="right", no_wrap=True)
        table.add_column("Result", overflow="fold")
        shown = rows
        if len(rows) > MAX_TABLE_ROWS:
            shown = [r for r in rows if r.result != "done"][:MAX_TABLE_ROWS]
        styles = {"done": "green", "failed": "red", "interrupted": "yellow"}
        for row in shown:
            result = row.result
            if row.result == "done" and row.resumedFrom:
                result += f" (resumed at {formatSize(row.resumedFrom)})"
            if row.message:
                message = row.message
                if message.startswith(row.file + ": "):
                    message = message[len(row.file) + 2:]
                result += f": {message}"
            if row.done == row.size or (row.size is None and row.done):
                size = formatSize(row.done)
            elif row.size is None:
                size = "-"
            else:
                size = f"{formatSize(row.done)}/{formatSize(row.size)}"
            table.add_row(Text(row.file), size, formatSeconds(row.seconds),
                          Text(result, style=styles.get(row.result, "")))
        if len(shown) < len(rows):
            table.add_row(Text(f"... and {len(rows) - len(shown)} more downloaded", style="dim"), "", "", "")
        self.console.print(table)
        parts = [f"{summary['ok']} downloaded"]
        if summary["failed"]:
            parts.append(f"{summary['failed']} failed")
        if summary["interrupted"]:
            parts.append(f"{summary['interrupted']} interrupted")
        self.console.print(
            Text(f"{', '.join(parts)}; {formatSize(summary['bytes'])} in {formatSeconds(summary['seconds'])}",
                 style="bold")
        )


# ---------------------------------------------------------------------------
# Running


def installSignalHandlers(reactor: Any, interrupt: Callable[[int], None]) -> None:
    """
    Once the reactor runs, let SIGINT and SIGTERM call C{interrupt} (in the
    reactor thread) instead of stopping the reactor at once.
    """

    def handler(number: int, frame: Any) -> None:
        reactor.callFromThread(interrupt, number)

    def install() -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, handler)

    reactor.callWhenRunning(install)


#: The log levels of the downloader's events shown to the user.
_WARNING_LEVELS = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


class _Session:
    """
    One run of the downloads: submits the requests, routes events to the
    output, stops the downloader when interrupted, and makes the summary.
    """

    #: How a second interruption ends the process at once.
    hardExit: Callable[[int], Any] = staticmethod(os._exit)

    def __init__(self, reactor: Any, plan: Plan, output: _Output, tracker: _Tracker) -> None:
        self.reactor = reactor
        self.plan = plan
        self.output = output
        self.tracker = tracker
        self.downloader: Any = None
        self.interrupted = False
        self.finished = False
        self._stopping: Optional[Deferred[Any]] = None
        self._pending: List[Deferred[Any]] = []
        self._warnings: set[str] = set()

    def observe(self, event: Dict[str, Any]) -> None:
        """
        The engine's observer: every event goes to the tracker and the output.
        """
        try:
            view = self.tracker.apply(event)
            self.output.event(event, view)
        except Exception:
            # The display must never break a download.
            self.output.say("cannot show an event: " + traceback.format_exc(limit=1).strip().splitlines()[-1])

    def warned(self, event: Dict[str, Any]) -> None:
        """
        A log observer: the downloader's warnings (a state file passed over,
        one that claimed bytes not on disk, a state that cannot be saved)
        go to the user, not only to a log nobody reads here.
        """
        if event.get("log_level") not in _WARNING_LEVELS:
            return
        if not str(event.get("log_namespace", "")).startswith("netsuite.download."):
            return
        # Visible: a name in it may be anyone's (a file planted in the
        # directory), with escape sequences for the terminal.
        text = visibleText(formatEvent(event))
        if text not in self._warnings:  # a state file is read more than once
            self._warnings.add(text)
            self.output.note(f"warning: {text}")

    def interrupt(self, number: int = signal.SIGINT) -> None:
        """
        Ctrl-C or SIGTERM: stop the downloader (it cancels the jobs and
        writes their state files); a second one ends the process at once.
        """
        if self.finished:
            return
        if self.interrupted:
            self.output.say("stopped at once; unfinished downloads resume from their last saved state")
            self.hardExit(EXIT_INTERRUPTED)
            return
        self.interrupted = True
        self.output.note("stopping: saving the state of unfinished downloads (Ctrl-C again to quit at once)")
        if self.downloader is None:
            return
        # Set before stop() runs: it may end the jobs (and so reach the end
        # of run()) before it returns.
        self._stopping = Deferred()
        stopping = defer.maybeDeferred(self.downloader.stop)

        def stopped(result: object) -> None:
            if isinstance(result, Failure):
                self.output.say(f"stopping the downloads went wrong: {result.getErrorMessage()}")
            # Jobs the downloader did not end (it should have): end them now.
            for d in self._pending:
                if not d.called:
                    d.cancel()

        stopping.addBoth(stopped)
        stopping.chainDeferred(self._stopping)

    async def run(self) -> int:
        """
        Download everything; the exit status.
        """
        globalLogPublisher.addObserver(self.warned)
        try:
            return await self._run()
        finally:
            globalLogPublisher.removeObserver(self.warned)

    async def _run(self) -> int:
        started = self.reactor.seconds()
        submitted: List[Tuple[str, DownloadRequest, Deferred[Any]]] = []
        for number, request in enumerate(self.plan.requests, 1):
            try:
                job = self.downloader.submit(request)
                jobId, d = str(job.id), job.deferred
            except Exception as e:
                jobId, d = f"submit-{number}", defer.fail(e)
            self.tracker.add(jobId, request)
            submitted.append((jobId, request, d))
        self._pending = [d for _, _, d in submitted]
        self.output.begin()
        results = await defer.DeferredList(self._pending, consumeErrors=True)
        self.finished = True
        try:
            if self._stopping is not None:
                await self._stopping
            else:
                await defer.maybeDeferred(self.downloader.stop)
        except Exception as e:
            self.output.say(f"closing the downloader went wrong: {e}")

        rows = [self._row(jobId, request, ok, value) for (jobId, request, _), (ok, value) in zip(submitted, results)]
        ok = sum(r.result == "done" for r in rows)
        failed = sum(r.result == "failed" for r in rows)
        interrupted = sum(r.result == "interrupted" for r in rows)
        if self.interrupted:
            code = EXIT_INTERRUPTED
        else:
            code = EXIT_OK if ok == len(rows) else EXIT_FAILED
        summary = {
            "event": "summary",
            "files": len(rows),
            "ok": ok,
            "failed": failed,
            "interrupted": interrupted,
            "bytes": sum(max(0, r.done - r.resumedFrom) for r in rows),
            "seconds": round(self.reactor.seconds() - started, 3),
            "exitCode": code,
        }
        self.output.end(rows, summary)
        if self.interrupted:
            self.output.say(RESUME_HINT)
        if self.output.lost is not None and code == EXIT_OK:
            code = EXIT_FAILED  # the files arrived, their events did not
        return code

    def _row(self, jobId: str, request: DownloadRequest, ok: bool, value: Any) -> _Row:
        view = self.tracker.jobs.get(jobId) or self.tracker.add(jobId, request)
        url = redact(request.url)  # what the user sees never shows the password
        if ok:
            path = str(value.path)
            return _Row(jobId, url, _shownPath(path), value.size, value.size, value.seconds, "done",
                        resumedFrom=getattr(value, "resumedFrom", 0), path=path)
        seconds = None
        if view.started is not None:
            seconds = (view.ended if view.ended is not None else self.reactor.seconds()) - view.started
        if value.check(CancelledError) is not None:
            view.state = "interrupted"
            shown = _shownPath(view.path) if view.path else url
            return _Row(jobId, url, shown, view.size, view.done, seconds, "interrupted",
                        "resumes on the next run", resumedFrom=view.resumed, path=view.path)
        error = value.value
        message = str(error) or type(error).__name__
        if not isinstance(error, DownloadError):
            message = f"{url}: {message}"
        if not view.errorSeen:
            # Every failure has its error event, even one the engine did not report.
            self.observe({"event": "error", "job": jobId, "url": url, "message": message})
        return _Row(jobId, url, url, view.size, view.done, seconds, "failed",
                    view.message or message, resumedFrom=view.resumed, path=view.path)


def run(
    argv: Sequence[str],
    reactor: Any,
    downloaderFactory: Callable[..., Any] = Downloader,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
    stdin: Optional[IO[str]] = None,
    isTTY: Optional[bool] = None,
    installSignals: Callable[[Any, Callable[[int], None]], None] = installSignalHandlers,
    console: Any = None,
) -> Deferred[int]:
    """
    Run C{netsuite-get} with the arguments C{argv} on C{reactor}.

    @param downloaderFactory: called as C{(reactor, settings,
        observer=...)}; returns a L{Downloader} (or a fake one).
    @param isTTY: whether to show the live display; default: whether
        C{stdout} is a terminal.  C{--json} turns it off.
    @param installSignals: called with the reactor and the function to call
        on SIGINT/SIGTERM.
    @param console: the C{rich} console for the live display (tests).
    @return: a Deferred of the exit status.
    """
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    restore = [_forgiving(stdout), _forgiving(stderr)]

    def restored(result: Any) -> Any:
        # The caller's streams as they were (run may be embedded).
        for undo in restore:
            undo()
        return result

    return _run(argv, reactor, downloaderFactory, stdout, stderr, stdin, isTTY, installSignals, console).addBoth(
        restored
    )


def _run(
    argv: Sequence[str],
    reactor: Any,
    downloaderFactory: Callable[..., Any],
    stdout: IO[str],
    stderr: IO[str],
    stdin: Optional[IO[str]],
    isTTY: Optional[bool],
    installSignals: Callable[[Any, Callable[[int], None]], None],
    console: Any,
) -> Deferred[int]:
    """
    L{run}, its streams chosen.
    """

    def say(text: str) -> None:
        stderr.write(f"{PROGRAM}: {text}\n")
        stderr.flush()

    parser = buildParser()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_intermixed_args(list(argv))
        plan = makePlan(args, stdin)
    except UsageError as e:
        say(f"{e} (see {PROGRAM} --help)")
        return defer.succeed(EXIT_USAGE)
    except SystemExit as e:  # --help, --version
        return defer.succeed(e.code if isinstance(e.code, int) else EXIT_OK)

    if plan.settings.insecure:
        say(INSECURE_WARNING)
    if isTTY is None:
        try:
            isTTY = stdout.isatty()
        except (AttributeError, ValueError):
            isTTY = False
    tracker = _Tracker(reactor.seconds)
    output: _Output
    if isTTY and not plan.json:
        output = _RichOutput(stdout, stderr, tracker, plan.quiet, reactor, console)
    else:
        output = _JSONOutput(stdout, stderr, tracker, plan.quiet)
    session = _Session(reactor, plan, output, tracker)
    try:
        session.downloader = downloaderFactory(reactor, plan.settings, observer=session.observe)
    except ValueError as e:  # a CA file or proxy the engine cannot use
        say(f"{e} (see {PROGRAM} --help)")
        return defer.succeed(EXIT_USAGE)
    installSignals(reactor, session.interrupt)
    return defer.ensureDeferred(session.run())


def _holdClosedStreams() -> None:
    """
    Give a standard stream that was closed when the command started
    (C{>&-}; Python makes it L{None}) the null device: what would go there
    is dropped, and its descriptor is not given to a file the command
    opens.  Standard input stays L{None}, so that C{-i -} says it is closed.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
        if fd:
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False))


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """
    The C{netsuite-get} console script: exits with the status L{run} gives.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _holdClosedStreams()

    def start(reactor: Any) -> Deferred[None]:
        def exit(code: int) -> NoReturn:
            raise SystemExit(code)

        def crashed(failure: Failure) -> Failure:
            if failure.check(SystemExit) is None:
                sys.stderr.write(f"{PROGRAM}: internal error, please report it:\n{failure.getTraceback()}")
                raise SystemExit(EXIT_FAILED)
            return failure

        installResolver(reactor)
        d = run(args, reactor)
        d.addCallback(exit)
        d.addErrback(crashed)
        return d

    try:
        react(start)
    except KeyboardInterrupt:  # Ctrl-C before the reactor ran
        interrupted()


if __name__ == "__main__":
    main()
