"""
Download benchmark: netsuite-get against aria2c, from a rate-limited local nginx.

Serves random files from a local nginx that limits every connection to a
rate (C{limit_rate}, 4 MiB/s by default), and downloads them with two
clients, each into a fresh folder:

  - C{netsuite}: C{netsuite-get} (C{python3 -m netsuite.download.cli}, the
    netsuite on the path);
  - C{aria2c}: aria2 1.x, the peer.

Two scenarios, 8 connections in all each:

  - many: 32 files x 8 MiB, one connection per file, 8 files at a time
    (C{aria2c -j 8 -x 1 -s 1 -i -} against C{netsuite-get -j 8
    --max-per-host 8 -x 1 -i -}, the URLs on standard input);
  - big: one 256 MiB file over 8 connections (C{aria2c -x 8 -s 8 -k 1M}
    against C{netsuite-get -j 8 --max-per-host 8 -x 8}).

Figures per run: wall time from start to exit, the client's peak resident
memory (C{ru_maxrss}, reported by GNU C{time}: taken straight from here,
this process's own peak would count in it) and its CPU time; every file's
size and sha256 are checked against the ones written.  After the runs, each
client's start-up and exit alone (its C{--version}) is timed too: it is
part of every wall time in the table.

The transfer time leaves start-up and exit out, and is measured the same
way for both clients, by the origin: nginx's access log holds, per request,
its end (C{$msec}) and its duration from the first byte read from the
client to the last byte sent (C{$request_time}), and a run's transfer time
is the last end minus the earliest start (end minus duration) among the
lines the run appended.  The same lines give how many requests nginx saw,
how many were answered 206 (a range) and how many 200 (a whole file), over
how many connections, and the body bytes sent; a run whose lines are
missing or unreadable stops the benchmark (exit 1).

Targets for netsuite: wall time <= 1.0x aria2c in both scenarios, and
transfer time <= 1.0x aria2c in both; peak RSS <= 80 MiB, and no more than
1.25x for the 256 MiB file than for the 8 MiB files; every hash correct.

nginx runs on CPU 0, the clients on CPU 1 (C{taskset}).  Each round runs
both clients in both scenarios, the clients' order alternating; the table
shows the median of the rounds and netsuite's ratios against aria2c measured
in the same run, and the theoretical minimum time (bytes over connections
times the rate).

The issue asks for 4 MB/s a connection; this takes nginx's C{4m}, 4 MiB/s
(4194304 bytes/s), and says so in its output.  nginx's C{limit_rate}
counts per request and, at its default C{sendfile_max_chunk} (2 MiB),
sends a request's first 2 MiB at once; the config written here sets
C{sendfile_max_chunk} to 1/32 of the rate (at most 256 KiB) so that each
connection gets the rate and no burst (an 8 MiB file takes about 1.97 s
at 4 MiB/s instead of 1.5 s: nginx sends a request's first chunk at once
and rounds each pause down to whole milliseconds, so its transfer times
can come out a little under the table's minimum).

Usage::

    python3 benchmarks/download_bench.py [--rounds 3] [--rate 4m] [--only many|big]
        [--quick] [--scale N] [--keep] [--clients netsuite,aria2c]

C{--rate} takes nginx's sizes (C{4m} = 4 MiB/s, C{500k}, or plain bytes per
second).  C{--quick} is a smoke run (32 x 1 MiB and 1 x 32 MiB, one round
unless C{--rounds} says otherwise): its figures are too short to quote.
C{--scale N} makes every file N times larger (and each run N times
longer), to see how much of a wall-time ratio is start-up.
C{--keep} keeps the temporary folder (files, nginx config and logs, its
access log included, every client's output folder and log).  C{--clients aria2c} measures the peer
alone.  Needs nginx, aria2c and GNU time (installed with apt-get when
missing, as root) and C{taskset}; netsuite installed (C{pip install -e
.}), byte-compiled here as C{pip install} does (C{compileall}).  Set
C{PYTHONPATH} to another checkout to benchmark its netsuite instead.  A
full run (3 rounds) takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo_bench import (  # noqa: E402
    HOST,
    LOAD_CPU,
    SERVER_CPU,
    BenchmarkError,
    RunningServer,
    ServerKind,
    describeMachine,
    pinned,
    progress,
)
from http_bench import processCpuSeconds  # noqa: E402
from proxy_bench import telling  # noqa: E402

MiB = 2**20

#: Connections in all, in both scenarios.
CONNECTIONS = 8

#: nginx's rate per connection unless --rate says otherwise.
DEFAULT_RATE = "4m"

#: netsuite's targets: time at most this times aria2c's (medians) ...
TIME_TARGET = 1.0
#: ... peak RSS at most this (the highest round) ...
RSS_TARGET = 80 * MiB
#: ... and for the big file at most this times the many files' (medians).
FLAT_TARGET = 1.25

#: The peer the ratios are taken against.
BASELINE = "aria2c"

#: Seconds a run may take beyond ten times its theoretical minimum.
RUN_ALLOWANCE = 60.0

#: Bytes written at a time when making the files.
CHUNK = 4 * MiB

#: netsuite's target for the transfer time (nginx's view, start-up and
#: exit left out): at most this times aria2c's (medians).
TRANSFER_TARGET = 1.0

#: What nginx's access log holds per request: when it ended (seconds,
#: millisecond resolution), its seconds from the first byte read from the
#: client to the last byte sent, the status, the bytes sent (head and body),
#: the body bytes sent, and the connection's serial number.
ACCESS_FORMAT = "$msec $request_time $status $bytes_sent $body_bytes_sent $connection"
ACCESS_LINE = re.compile(r"(\d+\.\d+) (\d+\.\d+) (\d{3}) (\d+) (\d+) (\d+)")

#: Seconds to wait after a client exits for nginx's last lines about its
#: requests, and for the log to stay the same between two looks.
ACCESS_WAIT = 3.0
ACCESS_SETTLE = 0.1

#: Seconds a request may seem to start before its run (the two times in
#: its line are rounded to milliseconds): older lines are a previous run's,
#: logged late.
ACCESS_SLACK = 0.05


@dataclass(frozen=True)
class Scenario:
    """
    One test: its name, how many files of what size, and how many
    connections one file may use.
    """

    name: str
    count: int
    size: int
    perFile: int

    @property
    def total(self) -> int:
        return self.count * self.size

    def files(self) -> list[str]:
        """
        The files' names (the big file's too: one list for both).
        """
        if self.count == 1:
            return [f"{self.name}-{self.size // MiB}m.bin"]
        return [f"{self.name}-{i:03d}.bin" for i in range(self.count)]

    def describe(self) -> str:
        return f"{self.count} x {formatSize(self.size)}"

    def minimum(self, rate: int) -> float:
        """
        The shortest possible time at C{rate} bytes/s per connection: all
        bytes over all connections, or one file over the connections it
        may use, whichever is longer.
        """
        return max(
            self.total / (CONNECTIONS * rate),
            self.size / (min(CONNECTIONS, self.perFile) * rate),
        )


#: Scenarios of a full run, and of --quick.
SCENARIOS = {
    "many": Scenario("many", 32, 8 * MiB, 1),
    "big": Scenario("big", 1, 256 * MiB, CONNECTIONS),
}
QUICK_SCENARIOS = {
    "many": Scenario("many", 32, 1 * MiB, 1),
    "big": Scenario("big", 1, 32 * MiB, CONNECTIONS),
}


def formatSize(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size / 1024:g} KiB"


def parseRate(text: str) -> int:
    """
    A rate in nginx's notation (C{4m}, C{500k}, C{4194304}), in bytes/s.

    @raise ValueError: not one.
    """
    match = re.fullmatch(r"(\d+)([kKmM]?)", text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a rate (say 4m, 500k or bytes per second)")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": MiB}[match.group(2).lower()]


# -- the origin -------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """
    The files nginx serves (name -> sha256), where, and at what rate
    (bytes/s per connection).
    """

    root: Path
    hashes: dict[str, str]
    rate: int

    @property
    def chunk(self) -> int:
        """
        nginx's C{sendfile_max_chunk}: the most it sends a connection at
        once, and so its burst.
        """
        return max(16 * 1024, min(256 * 1024, self.rate // 32 // 1024 * 1024))


def makeFiles(root: Path, scenarios: list[Scenario]) -> dict[str, str]:
    """
    Write every scenario's files of random bytes under C{root}.

    @return: each file's name and sha256.
    """
    root.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for scenario in scenarios:
        for name in scenario.files():
            digest = hashlib.sha256()
            with (root / name).open("wb") as f:
                left = scenario.size
                while left:
                    block = os.urandom(min(CHUNK, left))
                    digest.update(block)
                    f.write(block)
                    left -= len(block)
            hashes[name] = digest.hexdigest()
    return hashes


def nginxModules() -> str:
    """
    nginx's configure arguments (C{nginx -V}), to leave out directives of
    modules it was built without.
    """
    result = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def nginxCommand(work: Path, origin: Origin, port: int) -> list[str]:
    """
    nginx in the foreground as one process (C{master_process off}, so that
    stopping it stops everything), from a config written now: the files on
    C{HOST:port}, every connection limited to the rate without a burst,
    keep-alive on, an access log of L{ACCESS_FORMAT} lines at
    L{accessLogPath}, temporary folders in C{work}.
    """
    built = nginxModules()
    temps = "".join(
        f"    {module}_temp_path {work / 'nginx-temp' / module};\n"
        for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if module == "client_body" or f"--without-http_{module}_module" not in built
    )
    config = work / f"nginx-{port}.conf"
    config.write_text(
        "daemon off;\n"
        "master_process off;\n"
        "worker_processes 1;\n"
        f"pid {work / f'nginx-{port}.pid'};\n"
        f"error_log {work / f'nginx-{port}-error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    log_format bench '{ACCESS_FORMAT}';\n"
        f"    access_log {accessLogPath(work, port)} bench;\n"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        f"    sendfile_max_chunk {origin.chunk // 1024}k;\n"
        "    keepalive_timeout 60s;\n"
        "    keepalive_requests 100000;\n"
        f"{temps}"
        "    server {\n"
        f"        listen {HOST}:{port};\n"
        f"        root {origin.root};\n"
        f"        location / {{ limit_rate {origin.rate}; }}\n"
        "    }\n"
        "}\n"
    )
    (work / "nginx-temp").mkdir(exist_ok=True)
    return ["nginx", "-p", f"{work}/", "-e", str(work / f"nginx-{port}-error.log"),
            "-c", str(config)]


def startOrigin(work: Path, origin: Origin) -> RunningServer:
    """
    Start nginx on L{SERVER_CPU} and check that it serves the first file's
    first bytes with a range request.

    @raise BenchmarkError: in one line, it did not.
    """
    server = RunningServer(ServerKind("nginx", "nginx", partial(nginxCommand, work, origin)), work)
    try:
        server.waitUntilAccepting()
        name = next(iter(origin.hashes))
        connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
        try:
            connection.request("GET", f"/{name}", headers={"Range": "bytes=0-15"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        with (origin.root / name).open("rb") as f:
            expected = f.read(16)
        if response.status != 206 or body != expected:
            raise BenchmarkError(
                f"nginx answered GET /{name} (bytes 0-15) with {response.status} and "
                f"{len(body)} bytes, not 206 and the file's first 16 bytes"
            )
    except (BenchmarkError, OSError, http.client.HTTPException) as e:
        reason = telling(server.output())
        server.stop()
        raise BenchmarkError(
            f"nginx did not serve the files on {HOST}:{server.port} "
            f"({str(e).splitlines()[0]}); its output ends: {reason}"
        ) from None
    return server


def accessLogPath(work: Path, port: int) -> Path:
    """
    Where the nginx on C{port} writes its access log.
    """
    return work / f"nginx-{port}-access.log"


@dataclass(frozen=True)
class Request:
    """
    One line of nginx's access log: when the request ended (seconds since
    the epoch), how long it took from its first byte read to its last byte
    sent, its status, its bytes sent (head and body, and body alone), and
    its connection's serial number.
    """

    end: float
    seconds: float
    status: int
    sent: int
    body: int
    connection: int

    @property
    def start(self) -> float:
        return self.end - self.seconds


def parseAccessLog(text: str, what: str) -> list[Request]:
    """
    The requests in C{text}, lines of L{ACCESS_FORMAT}.

    @param what: what the lines are about, for the error.
    @raise BenchmarkError: in one sentence, a line is not one.
    """
    requests = []
    for number, line in enumerate(text.splitlines(), 1):
        match = ACCESS_LINE.fullmatch(line)
        if match is None:
            raise BenchmarkError(
                f"line {number} that nginx's access log holds for {what} is not "
                f"'{ACCESS_FORMAT}' but {line[:120]!r}"
            )
        end, seconds, status, sent, body, connection = match.groups()
        requests.append(Request(
            float(end), float(seconds), int(status), int(sent), int(body), int(connection),
        ))
    return requests


@dataclass(frozen=True)
class OriginView:
    """
    One run as nginx saw it: its transfer time (the last request's end
    minus the first one's start), how many requests it answered (206, 200,
    in all), on how many connections, and the body bytes it sent.
    """

    transfer: float
    requests: int
    partial: int
    whole: int
    connections: int
    body: int

    @classmethod
    def of(cls, requests: list[Request]) -> OriginView:
        return cls(
            transfer=max(r.end for r in requests) - min(r.start for r in requests),
            requests=len(requests),
            partial=sum(r.status == 206 for r in requests),
            whole=sum(r.status == 200 for r in requests),
            connections=len({r.connection for r in requests}),
            body=sum(r.body for r in requests),
        )


def readAccessLog(path: Path, offset: int, since: float, total: int, what: str) -> OriginView:
    """
    What nginx logged in C{path} after byte C{offset} about one run that
    started at C{since} (C{time.time()}) and downloaded C{total} bytes.

    The client has exited, but nginx may not have written its last lines
    yet: wait until they hold C{total} body bytes and the log stays the
    same for L{ACCESS_SETTLE} seconds, at most L{ACCESS_WAIT} seconds.
    Lines of requests that started before C{since} (a previous run's,
    logged late) are left out.

    @param what: the run, for the errors.
    @raise BenchmarkError: in one sentence, no line or a line that is not
        one of L{ACCESS_FORMAT}.
    """
    deadline = time.monotonic() + ACCESS_WAIT
    seen = None
    while True:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("ascii", errors="replace")
        except OSError as e:
            raise BenchmarkError(f"nginx's access log {path} cannot be read ({e})") from None
        # A line nginx is writing now waits for the next look.
        complete = text[:text.rfind("\n") + 1]
        requests = [r for r in parseAccessLog(complete, what) if r.start >= since - ACCESS_SLACK]
        if text == seen and complete == text and sum(r.body for r in requests) >= total:
            break
        if time.monotonic() >= deadline:
            if complete != text:
                parseAccessLog(text, what)
            break
        seen = text
        time.sleep(ACCESS_SETTLE)
    if not text:
        raise BenchmarkError(f"nginx wrote nothing to its access log {path} during {what}")
    if not requests:
        raise BenchmarkError(
            f"nginx's access log {path} holds no request for {what}: the "
            f"{len(text.splitlines())} lines it wrote meanwhile are of requests begun before"
        )
    return OriginView.of(requests)


# -- the clients ------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """
    One downloader: its name, a description, and its command for a
    scenario's URLs into a folder (URLs on standard input when
    C{usesStdin(scenario)}).
    """

    name: str
    description: str
    command: Callable[[Scenario, list[str], Path], list[str]]
    version: list[str]

    @staticmethod
    def usesStdin(scenario: Scenario) -> bool:
        return scenario.count > 1


def netsuiteCommand(scenario: Scenario, urls: list[str], out: Path) -> list[str]:
    """
    C{netsuite-get}: 8 connections in all, all to the one host, and as
    many per file as the scenario says; quiet.
    """
    command = [
        sys.executable, "-m", "netsuite.download.cli", "-d", str(out),
        "-j", str(CONNECTIONS), "--max-per-host", str(CONNECTIONS),
        "-x", str(scenario.perFile), "-q",
    ]
    return command + (["-i", "-"] if Client.usesStdin(scenario) else urls)


#: aria2c's options in both scenarios: no user config; no preallocation
#: (its default writes the whole file's zeros first: C{none} is what other
#: downloaders do, and C{falloc} depends on the file system); warnings only,
#: no progress readout; the folder is new, so nothing to rename or resume.
ARIA2_COMMON = [
    "--no-conf", "--file-allocation=none", "--console-log-level=warn",
    "--summary-interval=0", "--show-console-readout=false",
    "--allow-overwrite=true", "--auto-file-renaming=false",
]


def aria2Command(scenario: Scenario, urls: list[str], out: Path) -> list[str]:
    """
    C{aria2c}: 8 files at a time one connection each (C{-j 8 -x 1 -s 1}),
    or one file split over 8 connections in pieces of at least 1 MiB
    (C{-x 8 -s 8 -k 1M}).
    """
    perFile = str(scenario.perFile)
    command = ["aria2c", *ARIA2_COMMON, "-d", str(out), "-j", str(CONNECTIONS),
               "-x", perFile, "-s", perFile]
    if scenario.perFile > 1:
        command += ["-k", "1M"]
    return command + (["-i", "-"] if Client.usesStdin(scenario) else urls)


CLIENTS = [
    Client(
        "netsuite", "netsuite-get", netsuiteCommand,
        [sys.executable, "-m", "netsuite.download.cli", "--version"],
    ),
    Client("aria2c", "aria2c", aria2Command, ["aria2c", "--version"]),
]
CLIENT_NAMES = [client.name for client in CLIENTS]


@dataclass(frozen=True)
class Run:
    """
    One client's download of one scenario: wall seconds, peak RSS (bytes),
    its CPU seconds, nginx's over the same time, and what nginx's access
    log says of it.
    """

    seconds: float
    rss: int
    cpu: float
    originCpu: float
    origin: OriginView

    @property
    def transfer(self) -> float:
        return self.origin.transfer


def runClient(
    client: Client, scenario: Scenario, port: int, out: Path, log: Path,
    timeout: float, originPid: int, accessLog: Path,
) -> Run:
    """
    Run C{client} for C{scenario} on L{LOAD_CPU} into C{out} (made now)
    and measure it, with the lines it adds to nginx's C{accessLog}.

    The client runs under GNU C{time}, which forks it: its peak RSS then
    counts from C{time}'s (about 2 MiB).  Started straight from here, the
    kernel would count this process's own peak in the client's
    C{ru_maxrss} (it carries over C{fork} and C{exec}).

    @raise BenchmarkError: it timed out or exited non-zero.
    """
    urls = [f"http://{HOST}:{port}/{name}" for name in scenario.files()]
    out.mkdir(parents=True)
    command = client.command(scenario, urls, out)
    stdinPath = log.with_suffix(".urls")
    stdinPath.write_text("".join(url + "\n" for url in urls))
    usagePath = log.with_suffix(".rusage")
    originBefore = processCpuSeconds(originPid)
    accessOffset = accessLog.stat().st_size
    with stdinPath.open("rb") as stdin, log.open("wb") as output:
        since = time.time()
        started = time.monotonic()
        process = subprocess.Popen(
            pinned(LOAD_CPU, [TIME, "-o", str(usagePath), "-f", "%M %U %S", *command]),
            stdin=stdin if client.usesStdin(scenario) else subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, cwd=out.parent,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            # GNU time and the client it forked.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise BenchmarkError(
                f"{client.description} did not download {scenario.describe()} "
                f"in {timeout:.0f} s"
            ) from None
        seconds = time.monotonic() - started
    if code != 0:
        raise BenchmarkError(
            f"{client.description} exited with {code} downloading {scenario.describe()}; "
            f"its output ends: {telling(log.read_text(errors='replace'))}"
        )
    try:
        maxrss, user, system = usagePath.read_text().splitlines()[-1].split()
        rss, cpu = int(maxrss) * 1024, float(user) + float(system)
    except (OSError, IndexError, ValueError):
        raise BenchmarkError(f"GNU time wrote no usage figures for {client.description}") from None
    originCpu = processCpuSeconds(originPid) - originBefore
    origin = readAccessLog(
        accessLog, accessOffset, since, scenario.total,
        f"{client.description}'s download of {scenario.describe()}",
    )
    return Run(seconds=seconds, rss=rss, cpu=cpu, originCpu=originCpu, origin=origin)


def startup(client: Client, work: Path, runs: int = 3) -> tuple[float, int]:
    """
    What starting and exiting costs C{client} (its C{--version}, on
    L{LOAD_CPU}): the median wall seconds and peak RSS of C{runs} runs.
    """
    seconds, rss = [], []
    usagePath = work / f"{client.name}-version.rusage"
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(
            pinned(LOAD_CPU, [TIME, "-o", str(usagePath), "-f", "%M", *client.version]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=60, check=True, cwd=work,
        )
        seconds.append(time.monotonic() - started)
        rss.append(int(usagePath.read_text().split()[-1]) * 1024)
    return statistics.median(seconds), int(statistics.median(rss))


def verify(client: Client, scenario: Scenario, out: Path, hashes: dict[str, str]) -> None:
    """
    Check that C{out} holds exactly the scenario's files, each with its
    size and sha256.

    @raise BenchmarkError: in one sentence, the first thing wrong.
    """
    expected = scenario.files()
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if missing:
        raise BenchmarkError(
            f"{client.description} exited 0 but {len(missing)} of {len(expected)} files "
            f"are missing from its folder (the first: {missing[0]})"
        )
    if extra:
        raise BenchmarkError(
            f"{client.description} left files it was not asked for in its folder: "
            f"{', '.join(extra[:5])}"
        )
    for name in expected:
        path = out / name
        size = path.stat().st_size
        if size != scenario.size:
            raise BenchmarkError(
                f"{client.description} wrote {name} with {size} bytes, not {scenario.size}"
            )
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        if digest.hexdigest() != hashes[name]:
            raise BenchmarkError(
                f"{client.description} wrote {name} with sha256 {digest.hexdigest()}, "
                f"not {hashes[name]}"
            )


@dataclass
class Results:
    """
    Runs per scenario and client, and how many files were checked.
    """

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)

    def add(self, scenario: Scenario, client: Client, run: Run) -> None:
        self.runs.setdefault((scenario.name, client.name), []).append(run)
        self.checked[client.name] = self.checked.get(client.name, 0) + scenario.count

    def median(self, scenario: str, client: str, what: str) -> float | None:
        runs = self.runs.get((scenario, client))
        return statistics.median(getattr(r, what) for r in runs) if runs else None

    def ratio(self, scenario: str, client: str, what: str) -> float | None:
        mine = self.median(scenario, client, what)
        base = self.median(scenario, BASELINE, what)
        return None if mine is None or not base else mine / base


def measure(
    clients: list[Client], scenarios: list[Scenario], origin: Origin,
    server: RunningServer, rounds: int, work: Path, keep: bool,
) -> Results:
    """
    Run every client in every scenario for C{rounds} rounds, alternating
    the clients' order, each into a fresh folder, checking every file and
    that nginx logged at least its bytes.
    """
    results = Results()
    accessLog = accessLogPath(work, server.port)
    for index in range(rounds):
        order = clients if index % 2 == 0 else clients[::-1]
        for scenario in scenarios:
            timeout = 10 * scenario.minimum(origin.rate) + RUN_ALLOWANCE
            for client in order:
                label = f"{index + 1}-{scenario.name}-{client.name}"
                out = work / "out" / label
                run = runClient(
                    client, scenario, server.port, out, work / f"{label}.log", timeout,
                    server.process.pid, accessLog,
                )
                verify(client, scenario, out, origin.hashes)
                if run.origin.body < scenario.total:
                    raise BenchmarkError(
                        f"nginx's access log {accessLog} shows {run.origin.body} body bytes "
                        f"sent for {client.description}'s download of {scenario.describe()}, "
                        f"fewer than the {scenario.total} it downloaded"
                    )
                results.add(scenario, client, run)
                progress(
                    f"round {index + 1} {scenario.name:4} {client.name:8} "
                    f"{run.seconds:7.2f} s  transfer {run.transfer:6.2f} s  "
                    f"peak RSS {run.rss / MiB:6.1f} MiB  "
                    f"CPU {run.cpu / run.seconds:4.0%}  nginx CPU "
                    f"{run.originCpu / run.seconds:4.0%}  {run.origin.requests} requests  "
                    f"{scenario.count} sha256 ok"
                )
                if server.process.poll() is not None:
                    raise BenchmarkError(f"nginx died: {telling(server.output())}")
                if not keep:
                    shutil.rmtree(out)
                # Write back what the client left dirty now, not in the next run.
                os.sync()
    return results


# -- the report -------------------------------------------------------------


def formatTable(
    results: Results, clients: list[Client], scenarios: list[Scenario], rate: int,
) -> str:
    """
    The results as a Markdown table (medians, netsuite's ratios against
    aria2c, every round; wall time, then nginx's transfer time), followed
    by netsuite's targets.
    """
    lines = [
        f"| scenario ({CONNECTIONS} connections) | client | time (median) | vs aria2c "
        "| rounds (s) | transfer (median) | vs aria2c | rounds (s) "
        "| peak RSS (median) | vs aria2c | rounds (MiB) | client CPU | nginx CPU |",
        "|---|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for scenario in scenarios:
        for client in clients:
            runs = results.runs.get((scenario.name, client.name))
            if not runs:
                continue
            seconds = results.median(scenario.name, client.name, "seconds") or 0.0
            rss = results.median(scenario.name, client.name, "rss") or 0.0
            transfer = results.median(scenario.name, client.name, "transfer") or 0.0
            timeRatio = results.ratio(scenario.name, client.name, "seconds")
            transferRatio = results.ratio(scenario.name, client.name, "transfer")
            rssRatio = results.ratio(scenario.name, client.name, "rss")
            lines.append(
                f"| {scenario.describe()} (min {scenario.minimum(rate):.1f} s) "
                f"| {client.description} | {seconds:.2f} s "
                f"| {'' if timeRatio is None else f'{timeRatio:.2f}x'} "
                f"| {', '.join(f'{r.seconds:.2f}' for r in runs)} "
                f"| {transfer:.2f} s "
                f"| {'' if transferRatio is None else f'{transferRatio:.2f}x'} "
                f"| {', '.join(f'{r.transfer:.2f}' for r in runs)} "
                f"| {rss / MiB:.1f} MiB | {'' if rssRatio is None else f'{rssRatio:.2f}x'} "
                f"| {', '.join(f'{r.rss / MiB:.1f}' for r in runs)} "
                f"| {statistics.median(r.cpu / r.seconds for r in runs):.0%} "
                f"| {statistics.median(r.originCpu / r.seconds for r in runs):.0%} |"
            )
    targets = formatTargets(results, clients, scenarios)
    return "\n".join(lines + ([""] + targets if targets else []))


def formatTargets(
    results: Results, clients: list[Client], scenarios: list[Scenario],
) -> list[str]:
    """
    netsuite's targets, each met or not, when netsuite ran.
    """
    if "netsuite" not in {c.name for c in clients}:
        return []
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for scenario in scenarios:
        ratio = results.ratio(scenario.name, "netsuite", "seconds")
        lines.append(
            f"target {scenario.name} time: netsuite-get <= {TIME_TARGET:.2f}x aria2c: "
            + ("aria2c not measured" if ratio is None
               else f"{ratio:.3f}x, {verdict(ratio <= TIME_TARGET)}")
        )
    for scenario in scenarios:
        ratio = results.ratio(scenario.name, "netsuite", "transfer")
        lines.append(
            f"target {scenario.name} transfer: netsuite-get <= {TRANSFER_TARGET:.2f}x aria2c "
            "(nginx's access log, start-up and exit left out): "
            + ("aria2c not measured" if ratio is None
               else f"{ratio:.3f}x, {verdict(ratio <= TRANSFER_TARGET)}")
        )
    for scenario in scenarios:
        peak = max(r.rss for r in results.runs[(scenario.name, "netsuite")])
        lines.append(
            f"target {scenario.name} memory: netsuite-get peak RSS <= {RSS_TARGET / MiB:.0f} "
            f"MiB (highest round): {peak / MiB:.1f} MiB, {verdict(peak <= RSS_TARGET)}"
        )
    many, big = (results.median(name, "netsuite", "rss") for name in ("many", "big"))
    if many and big:
        sizes = {s.name: formatSize(s.size) for s in scenarios}
        lines.append(
            f"target flat memory: netsuite-get's peak RSS for the {sizes['big']} file <= "
            f"{FLAT_TARGET:.2f}x that for the {sizes['many']} files (medians): "
            f"{big / MiB:.1f} / {many / MiB:.1f} MiB = {big / many:.2f}x, "
            f"{verdict(big <= FLAT_TARGET * many)}"
        )
    lines.append(
        f"target hashes: every file's sha256 correct: {results.checked.get('netsuite', 0)} "
        "files checked, met"
    )
    return lines


def formatRequests(
    results: Results, clients: list[Client], scenarios: list[Scenario],
) -> list[str]:
    """
    What nginx's access log shows of each client's runs, every round:
    requests, of which 206 and 200 (and any other status), connections,
    and body bytes against the scenario's.
    """

    def rounds(values: list[int]) -> str:
        return "/".join(str(v) for v in values)

    lines = []
    for scenario in scenarios:
        for client in clients:
            views = [r.origin for r in results.runs.get((scenario.name, client.name), [])]
            if not views:
                continue
            others = [v.requests - v.partial - v.whole for v in views]
            lines.append(
                f"    {scenario.name}, {client.description}: "
                f"{rounds([v.requests for v in views])} requests "
                f"(206: {rounds([v.partial for v in views])}, "
                f"200: {rounds([v.whole for v in views])}"
                + (f", other: {rounds(others)}" if any(others) else "")
                + f") on {rounds([v.connections for v in views])} connections; body bytes "
                + "/".join(f"{v.body / scenario.total:.3f}" for v in views)
                + "x the files'"
            )
    return lines


def describeCommands(clients: list[Client], scenarios: list[Scenario]) -> list[str]:
    """
    The commands as run, with placeholders for the folder and the URLs.
    """
    lines = []
    for scenario in scenarios:
        for client in clients:
            command = client.command(scenario, ["URL"], Path("OUT"))
            if command[0] == sys.executable:
                command = ["netsuite-get", *command[3:]]
            stdin = "  (URLs on stdin)" if client.usesStdin(scenario) else ""
            lines.append(f"    {scenario.name}: {' '.join(command)}{stdin}")
    return lines


# -- tools ------------------------------------------------------------------


#: Debian packages by the program they provide, first choice first.
PACKAGES = {"nginx": ["nginx-light", "nginx"], "aria2c": ["aria2"], "time": ["time"]}

#: GNU time, which reports the client's peak RSS and CPU time.
TIME = "/usr/bin/time"


def install(program: str) -> None:
    """
    Make C{program} available, with apt-get (as root) when it is missing.

    @raise BenchmarkError: it is missing and cannot be installed here.
    """
    if shutil.which(TIME if program == "time" else program):
        return
    packages = PACKAGES[program]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchmarkError(
            f"{program} is not installed and this is not root with apt-get: "
            f"apt-get install -y {packages[0]}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(2):
        for package in packages:
            progress(f"installing {package} with apt-get")
            # apt's chatter goes to stderr with the progress: stdout holds the table.
            subprocess.run(["apt-get", "install", "-y", package], env=env, stdout=sys.stderr)
            if shutil.which(TIME if program == "time" else program):
                return
        if attempt == 0:
            subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr)
    raise BenchmarkError(f"{program} is not installed and apt-get could not install it")


def checkNetsuite(work: Path) -> None:
    """
    @raise BenchmarkError: the netsuite on the path has no C{netsuite-get}
        with the options used here.
    """
    try:
        # Run from C{work}, as the clients are: C{-m} puts the current
        # folder first on the path, before C{PYTHONPATH}.
        result = subprocess.run(
            [sys.executable, "-m", "netsuite.download.cli", "--help"],
            capture_output=True, text=True, timeout=60, cwd=work,
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError("netsuite-get --help did not answer in 60 s") from None
    if result.returncode != 0:
        raise BenchmarkError(
            f"netsuite-get is not there (python3 -m netsuite.download.cli --help: "
            f"{telling(result.stdout + result.stderr)}); install netsuite with pip install "
            "-e ., or measure aria2c alone with --clients aria2c"
        )
    missing = [flag for flag in ("--max-per-host", "-x", "-i", "-j") if flag not in result.stdout]
    if missing:
        raise BenchmarkError(f"this netsuite-get has no {', '.join(missing)} option")
    # Byte-compile netsuite as pip does when it installs a wheel: an editable
    # install under PYTHONDONTWRITEBYTECODE compiles its sources at every
    # start (about 0.1 s of each run).
    where = subprocess.run(
        [sys.executable, "-c", "import netsuite, os; print(os.path.dirname(netsuite.__file__))"],
        capture_output=True, text=True, timeout=60, cwd=work, check=True,
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], timeout=120, check=True, stdout=sys.stderr)


def nginxVersion() -> str:
    match = re.search(r"nginx/(\S+)", nginxModules())
    return match.group(1) if match else "?"


def aria2Version() -> str:
    result = subprocess.run(["aria2c", "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"aria2 version (\S+)", result.stdout)
    return match.group(1) if match else "?"


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--rounds", type=int, help="rounds (median reported; default 3, "
                        "1 with --quick)")
    parser.add_argument("--rate", default=DEFAULT_RATE,
                        help="nginx's limit per connection: 4m (MiB/s, the default), "
                        "500k (KiB/s) or bytes per second")
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="one scenario only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 32 x 1 MiB and 1 x 32 MiB")
    parser.add_argument("--scale", type=int, default=1,
                        help="multiply every file's size (and so each run's length) by this; "
                        "the targets are set for 1")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (files, configs, logs, downloads)")
    parser.add_argument("--clients", default=",".join(CLIENT_NAMES),
                        help=f"comma-separated (default: {','.join(CLIENT_NAMES)})")
    args = parser.parse_args(argv)
    try:
        args.rateBytes = parseRate(args.rate)
    except ValueError as e:
        parser.error(str(e))
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    args.clients = args.clients.split(",")
    if not args.clients or not set(args.clients) <= set(CLIENT_NAMES):
        parser.error(f"--clients takes {', '.join(CLIENT_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """
    Install what is missing, write the files, start nginx, run the
    benchmark, print the table.
    """
    args = parseArguments(sys.argv[1:] if argv is None else argv)
    if (os.cpu_count() or 1) < 2:
        progress("warning: fewer than 2 CPUs; nginx and the clients will share one")
    catalogue = QUICK_SCENARIOS if args.quick else SCENARIOS
    scenarios = [replace(s, size=s.size * args.scale) for name, s in catalogue.items() if args.only in (None, name)]
    clients = [c for c in CLIENTS if c.name in args.clients]
    work = Path(tempfile.mkdtemp(prefix="download-bench-"))
    try:
        if shutil.which("taskset") is None:
            raise BenchmarkError("taskset is not installed (Debian: util-linux)")
        install("nginx")
        install("time")
        if "aria2c" in args.clients:
            install("aria2c")
        if "netsuite" in args.clients:
            checkNetsuite(work)
        progress(f"writing {sum(s.total for s in scenarios) // MiB} MiB of random files "
                 f"in {work}")
        hashes = makeFiles(work / "www", scenarios)
        origin = Origin(work / "www", hashes, args.rateBytes)
        server = startOrigin(work, origin)
        try:
            results = measure(clients, scenarios, origin, server, args.rounds, work, args.keep)
        finally:
            server.stop()
        startups = {client.name: startup(client, work) for client in clients}
        if "netsuite" in args.clients:
            # The interpreter alone: its share of netsuite-get's start-up.
            interpreter = Client("python", "python3 -c pass", lambda *_: [], [sys.executable, "-c", "pass"])  # start-up only
            startups["python"] = startup(interpreter, work)
    except (BenchmarkError, subprocess.CalledProcessError, OSError) as e:
        print(f"download_bench: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    versions = f"nginx {nginxVersion()}" + (
        f", aria2 {aria2Version()}" if "aria2c" in args.clients else ""
    )
    print(
        f"download benchmark: {describeMachine()}; {versions}; nginx on CPU {SERVER_CPU} "
        f"(limit_rate {origin.rate} = {formatSize(origin.rate)}/s per connection, "
        f"sendfile_max_chunk {origin.chunk // 1024}k), clients on CPU {LOAD_CPU}; "
        f"{CONNECTIONS} connections; median of {args.rounds} rounds"
        + ("; --quick: too short to quote" if args.quick else "")
        + (f"; --scale {args.scale}: files {args.scale}x the issue's sizes" if args.scale > 1 else "")
    )
    print()
    print(formatTable(results, clients, scenarios, origin.rate))
    print()
    print(
        "start-up and exit alone (--version, median of 3; part of every wall time above, "
        "not of the transfer times): "
        + ", ".join(
            f"{client.description} {startups[client.name][0]:.2f} s and "
            f"{startups[client.name][1] / MiB:.1f} MiB"
            + (f" (python3 -c pass alone: {startups['python'][0]:.2f} s)" if client.name == "netsuite" else "")
            for client in clients
        )
    )
    print()
    print(
        "nginx's access log per run (rounds separated by /; transfer = last request's "
        "end - first request's start, max($msec) - min($msec - $request_time)):"
    )
    print("\n".join(formatRequests(results, clients, scenarios)))
    print()
    print("commands:")
    print("\n".join(describeCommands(clients, scenarios)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
