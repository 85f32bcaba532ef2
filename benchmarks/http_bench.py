"""
HTTP benchmark: netsuite's HTTP server against stock twisted.web and aiohttp.

Runs, in one go, these servers on loopback:

  - C{netsuite}: C{twistd -n netsuite} with only HTTP on, all its features
    on: access log to a file, metrics and stats, a static folder
    (C{--http-root});
  - C{twisted}: a stock C{twisted.web.server.Site} whose two C{Resource}s
    return netsuite's own C{/api/echo} answer and home page as fixed bytes
    (C{servers/twisted_web.py}), access log to a file;
  - C{aiohttp}: aiohttp hello-world returning the same bytes
    (C{servers/aiohttp_web.py}), access log to a file;
  - C{aiohttp-nolog}: the same without an access log, as aiohttp
    hello-world is usually benchmarked;
  - C{twistd-web}: stock C{twistd -n web --path DIR} (C{twisted.web.static.File})
    on the folder netsuite serves, access log to a file;

and loads each with C{wrk} (one thread, 50 keep-alive connections):

  - json: C{GET /api/echo} (netsuite, twisted, both aiohttp);
  - home: C{GET /}, netsuite's home page (netsuite, twisted, both aiohttp);
  - static-1k: a 1 KiB file (netsuite, twistd-web);
  - static-1m: a 1 MiB file (netsuite, twistd-web).

Servers run on CPU 0 and wrk on CPU 1 (C{taskset}).  Each round starts every
server afresh, in a rotating order, so that the servers share the machine's
noise; the table shows the median of the rounds and ratios against the stock
Twisted peer of each row measured in the same run.

Usage::

    python3 benchmarks/http_bench.py [--seconds 10] [--rounds 3]

Needs C{wrk} (Debian: C{apt-get install -y wrk}) and, for the aiohttp peers,
C{pip install aiohttp}.  Set C{PYTHONPATH} to another checkout to benchmark
its netsuite instead of the installed one.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo_bench import (  # noqa: E402
    _TWISTD,
    HOST,
    LOAD_CPU,
    SERVER_CPU,
    BenchmarkError,
    RunningServer,
    describeMachine,
    pinned,
    progress,
)

HERE = Path(__file__).resolve().parent

#: Connections wrk keeps open (keep-alive), and its threads: the load has one
#: CPU, so one thread.
CONNECTIONS = 50
THREADS = 1

#: Static files served in the static rows: name -> size in bytes.
STATIC_FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}

#: Above this share of its CPU, wrk may be what limits a measurement rather
#: than the server; the table flags it.
LOAD_CPU_WARNING = 0.9

#: Below this share of its CPU, the server was not what limited the figure
#: (something else ran on its CPU, or the load could not keep it busy); the
#: table flags it.
SERVER_CPU_WARNING = 0.8

#: Seconds wrk waits for one response before counting a timeout.
WRK_TIMEOUT = "5s"

#: Clock ticks a second, for the CPU times in C{/proc/PID/stat}.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Test:
    """
    One row group of the table: the path wrk asks for, the servers that
    answer it, the peer the ratios are taken against, netsuite's target
    against that peer, and the body size when it is fixed.
    """

    name: str
    path: str
    servers: tuple[str, ...]
    baseline: str
    target: float
    bodySize: int | None = None


TESTS = [
    Test("json", "/api/echo", ("netsuite", "twisted", "aiohttp", "aiohttp-nolog"), "twisted", 1.0),
    Test("home", "/", ("netsuite", "twisted", "aiohttp", "aiohttp-nolog"), "twisted", 1.0),
    Test("static-1k", "/1k.bin", ("netsuite", "twistd-web"), "twistd-web", 3.0, 1024),
    Test("static-1m", "/1m.bin", ("netsuite", "twistd-web"), "twistd-web", 2.0, 1024 * 1024),
]
TESTS_BY_NAME = {t.name: t for t in TESTS}


@dataclass(frozen=True)
class Workdir:
    """
    The files the servers share: the static folder, and netsuite's own JSON
    and home page answers for the peers to send.
    """

    path: Path

    @property
    def www(self) -> Path:
        return self.path / "www"

    @property
    def jsonBody(self) -> Path:
        return self.path / "echo.json"

    @property
    def htmlBody(self) -> Path:
        return self.path / "home.html"

    def accessLog(self, name: str, port: int) -> Path:
        return self.path / f"{name}-{port}-access.log"


def netsuiteCommand(work: Workdir, port: int) -> list[str]:
    """
    netsuite with only HTTP on, in the foreground, on the epoll reactor: the
    static folder at C{/}, the access log to a file.
    """
    return [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "netsuite", "--no-chat", "--no-proxy", "--no-echo", "--no-daytime", "--no-downloads",
        "--http", f"tcp:{port}:interface={HOST}",
        "--http-root", str(work.www),
        "--http-access-log", str(work.accessLog("netsuite", port)),
    ]


def twistedCommand(work: Workdir, port: int) -> list[str]:
    """
    A stock C{Site} with two fixed-body C{Resource}s.
    """
    return [
        sys.executable, str(HERE / "servers" / "twisted_web.py"), str(port), HOST,
        str(work.jsonBody), str(work.htmlBody), str(work.accessLog("twisted", port)),
    ]


def aiohttpCommand(work: Workdir, port: int) -> list[str]:
    """
    aiohttp hello-world with the same bodies.
    """
    return [
        sys.executable, str(HERE / "servers" / "aiohttp_web.py"), str(port), HOST,
        str(work.jsonBody), str(work.htmlBody), str(work.accessLog("aiohttp", port)),
    ]


def aiohttpNoLogCommand(work: Workdir, port: int) -> list[str]:
    """
    aiohttp hello-world with the same bodies and no access log.
    """
    return [
        sys.executable, str(HERE / "servers" / "aiohttp_web.py"), str(port), HOST,
        str(work.jsonBody), str(work.htmlBody), "-",
    ]


def twistdWebCommand(work: Workdir, port: int) -> list[str]:
    """
    Stock C{twistd web --path} on the static folder.
    """
    return [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "web", "--path", str(work.www), "--listen", f"tcp:{port}:interface={HOST}",
        "--logfile", str(work.accessLog("twistd-web", port)),
    ]


@dataclass(frozen=True)
class ServerKind:
    """
    One server under test: its short name, a description for the table, and
    how to start it on a port (what L{RunningServer} needs).
    """

    name: str
    description: str
    makeCommand: Callable[[Workdir, int], list[str]]
    work: Workdir | None = None

    def command(self, port: int) -> list[str]:
        assert self.work is not None
        return self.makeCommand(self.work, port)


SERVERS = [
    ServerKind("netsuite", "netsuite (twistd, access log + metrics + stats)", netsuiteCommand),
    ServerKind("twisted", "stock twisted.web Site + Resource", twistedCommand),
    ServerKind("aiohttp", "aiohttp hello-world, access log", aiohttpCommand),
    ServerKind("aiohttp-nolog", "aiohttp hello-world, no access log", aiohttpNoLogCommand),
    ServerKind("twistd-web", "stock twistd web --path", twistdWebCommand),
]


def fetch(port: int, path: str) -> tuple[int, bytes]:
    """
    GET C{path} with exactly the request wrk sends (C{Host} and nothing
    else), on a fresh connection.

    @return: the status code and the body.
    @raise BenchmarkError: no complete answer.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode("ascii")
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchmarkError(f"GET {path}: connection closed in the head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise BenchmarkError(f"GET {path}: no Content-Length")
        while len(body) < length:
            chunk = s.recv(1024 * 1024)
            if not chunk:
                raise BenchmarkError(f"GET {path}: connection closed in the body")
            body += chunk
    return status, body[:length]


def prepare(work: Workdir, netsuite: ServerKind) -> None:
    """
    Write the static files, then start netsuite once to record its
    C{/api/echo} answer (to wrk's request) and its home page, which the
    peers send as their bodies.
    """
    work.www.mkdir()
    for name, size in STATIC_FILES.items():
        (work.www / name).write_bytes(os.urandom(size))
    server = RunningServer(netsuite, work.path)  # type: ignore[arg-type]
    try:
        server.waitUntilAccepting()
        for path, target in (("/api/echo", work.jsonBody), ("/", work.htmlBody)):
            status, body = fetch(server.port, path)
            if status != 200:
                raise BenchmarkError(f"netsuite answered {status} to GET {path}")
            target.write_bytes(body)
    finally:
        server.stop()


def check(kind: ServerKind, port: int, test: Test, work: Workdir) -> None:
    """
    One GET before the load: a 200 with a body of the expected size.
    """
    status, body = fetch(port, test.path)
    if test.bodySize is not None:
        expected = test.bodySize
    elif test.name == "json":
        expected = work.jsonBody.stat().st_size
    else:
        expected = work.htmlBody.stat().st_size
    # netsuite's own pages change a little (uptime, counters) as they run.
    slack = 0 if kind.name != "netsuite" or test.bodySize is not None else 64
    if status != 200 or abs(len(body) - expected) > slack:
        raise BenchmarkError(
            f"{kind.name} GET {test.path}: status {status}, {len(body)} bytes "
            f"(expected 200 and {expected})"
        )


_SIZE_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}

#: The kinds of socket error wrk counts, in the order it prints them.
SOCKET_ERROR_KINDS = ("connect", "read", "write", "timeout")


@dataclass
class WrkResult:
    """
    What one wrk run reported, and how busy wrk's CPU and the server's were.
    """

    requests: int
    seconds: float
    requestsPerSecond: float
    bytesRead: float
    socketErrors: int
    non2xx: int
    loadCpu: float
    serverCpu: float
    #: The socket errors by kind: C{connect}, C{read}, C{write}, C{timeout}.
    socketErrorKinds: dict[str, int] = field(default_factory=dict)


def parseWrk(output: str) -> dict[str, float]:
    """
    The figures in wrk's report: C{requests}, C{seconds}, C{rps},
    C{bytes_read}, C{socket_errors} (connect + read + write + timeout, each
    also on its own as C{connect_errors} ... C{timeout_errors}) and C{non2xx}
    (non-2xx-or-3xx responses).

    @raise ValueError: the report lacks its totals.
    """
    total = re.search(
        r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read", output
    )
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rps is None:
        raise ValueError("no totals in wrk's output")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    kinds = [int(g) for g in errors.groups()] if errors else [0, 0, 0, 0]
    return {
        "requests": float(total.group(1)),
        "seconds": float(total.group(2)) * unit,
        "rps": float(rps.group(1)),
        "bytes_read": float(total.group(4)) * _SIZE_UNITS[total.group(5)],
        "socket_errors": float(sum(kinds)),
        **{f"{kind}_errors": float(n) for kind, n in zip(SOCKET_ERROR_KINDS, kinds)},
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def processCpuSeconds(pid: int) -> float:
    """
    User plus system CPU seconds a process has used so far (0 if gone).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def runWrk(
    wrk: str, url: str, seconds: int, serverPid: int,
    connections: int = CONNECTIONS, script: Path | None = None,
) -> WrkResult:
    """
    Run wrk on L{LOAD_CPU} against C{url} with C{connections} connections
    (and the Lua C{script}, if given) and parse its report.

    @raise BenchmarkError: wrk failed or printed no totals.
    """
    options = [f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT]
    if script is not None:
        options += ["-s", str(script)]
    command = pinned(LOAD_CPU, [wrk, *options, url])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    serverBefore = processCpuSeconds(serverPid)
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"wrk {url} did not finish in {seconds + 60} s") from None
    wall = time.monotonic() - started
    serverCpu = processCpuSeconds(serverPid) - serverBefore
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise BenchmarkError(
            f"wrk {url} failed ({result.returncode}): {result.stdout} {result.stderr}"
        )
    try:
        figures = parseWrk(result.stdout)
    except ValueError:
        raise BenchmarkError(f"wrk {url}: unexpected output:\n{result.stdout}") from None
    loadCpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(
        requests=int(figures["requests"]),
        seconds=figures["seconds"],
        requestsPerSecond=figures["rps"],
        bytesRead=figures["bytes_read"],
        socketErrors=int(figures["socket_errors"]),
        non2xx=int(figures["non2xx"]),
        loadCpu=loadCpu / wall,
        serverCpu=serverCpu / wall,
        socketErrorKinds={k: int(figures[f"{k}_errors"]) for k in SOCKET_ERROR_KINDS},
    )


def _requestsPerSecond(result: WrkResult) -> float:
    return result.requestsPerSecond


@dataclass
class Results:
    """
    Results per test and server, one per round: wrk's by default, or any
    kind whose C{figure} the medians are taken of.
    """

    runs: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    figure: Callable[[Any], float] = _requestsPerSecond

    def add(self, test: str, server: str, result: Any) -> None:
        self.runs.setdefault((test, server), []).append(result)

    def median(self, test: str, server: str) -> float | None:
        """
        The median figure (requests/s for wrk) of a test's rounds on a
        server, if any ran.
        """
        runs = self.runs.get((test, server))
        return statistics.median(self.figure(r) for r in runs) if runs else None

    def ratio(self, test: str, server: str, peer: str) -> float | None:
        """
        The median for C{server} over the median for C{peer}.
        """
        mine, base = self.median(test, server), self.median(test, peer)
        if mine is None or not base:
            return None
        return mine / base


def measure(
    wrk: str,
    kinds: list[ServerKind],
    tests: list[Test],
    seconds: int,
    warmup: int,
    rounds: int,
    work: Workdir,
) -> Results:
    """
    Run every test on every server that takes part in it, for C{rounds}
    rounds, each round starting each server afresh and rotating which goes
    first.
    """
    results = Results()
    for index in range(rounds):
        order = kinds[index % len(kinds):] + kinds[: index % len(kinds)]
        for kind in order:
            mine = [t for t in tests if kind.name in t.servers]
            if not mine:
                continue
            server = RunningServer(kind, work.path)  # type: ignore[arg-type]
            try:
                server.waitUntilAccepting()
                pid = server.process.pid
                for test in mine:
                    check(kind, server.port, test, work)
                    url = f"http://{HOST}:{server.port}{test.path}"
                    if warmup:
                        runWrk(wrk, url, warmup, pid)
                    result = runWrk(wrk, url, seconds, pid)
                    results.add(test.name, kind.name, result)
                    errors = ""
                    if result.socketErrors or result.non2xx or not result.requests:
                        errors = (
                            f"  socket errors {result.socketErrors}, "
                            f"non-2xx {result.non2xx}"
                        )
                    progress(
                        f"round {index + 1} {kind.name:10} {test.name:9} "
                        f"{result.requestsPerSecond:9.0f} req/s  server CPU "
                        f"{result.serverCpu:4.0%}  wrk CPU {result.loadCpu:4.0%}{errors}"
                    )
                    if server.process.poll() is not None:
                        raise BenchmarkError(f"{kind.name} died:\n{server.output()}")
            finally:
                server.stop()
    return results


def formatTable(results: Results, kinds: list[ServerKind], tests: list[Test]) -> str:
    """
    The results as a Markdown table (medians, ratios against each row's stock
    Twisted peer and against aiohttp, each round, wrk's busiest CPU share,
    errors), followed by netsuite's targets.
    """
    lines = [
        "| test | server | req/s (median) | vs stock Twisted | vs aiohttp (log) "
        "| vs aiohttp (no log) | body MiB/s | rounds (req/s) | server CPU | wrk CPU (max) "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    flagged = erred = idle = False
    for test in tests:
        for kind in kinds:
            runs = results.runs.get((test.name, kind.name))
            if not runs:
                continue
            median = results.median(test.name, kind.name)
            assert median is not None
            ratio = results.ratio(test.name, kind.name, test.baseline)
            vsAiohttp = results.ratio(test.name, kind.name, "aiohttp")
            vsNoLog = results.ratio(test.name, kind.name, "aiohttp-nolog")
            mib = f"{median * test.bodySize / 2**20:.0f}" if test.bodySize else ""
            loadCpu = max(r.loadCpu for r in runs)
            serverCpu = statistics.median(r.serverCpu for r in runs)
            flag = " (!)" if loadCpu > LOAD_CPU_WARNING else ""
            flagged = flagged or bool(flag)
            serverFlag = " (?)" if serverCpu < SERVER_CPU_WARNING else ""
            idle = idle or bool(serverFlag)
            # A run with no response at all counts as one error.
            errors = sum(r.socketErrors + r.non2xx + (not r.requests) for r in runs)
            erred = erred or errors > 0
            lines.append(
                f"| {test.name} `{test.path}` | {kind.description} | {median:.0f} | "
                f"{'' if ratio is None else f'{ratio:.2f}x'} | "
                f"{'' if vsAiohttp is None else f'{vsAiohttp:.2f}x'} | "
                f"{'' if vsNoLog is None else f'{vsNoLog:.2f}x'} | {mib} | "
                f"{', '.join(f'{r.requestsPerSecond:.0f}' for r in runs)} | "
                f"{serverCpu:.0%}{serverFlag} | {loadCpu:.0%}{flag} | "
                f"{errors if not errors else f'{errors} (E)'} |"
            )
    lines.append("")
    if flagged:
        lines.append(
            f"(!) wrk used over {LOAD_CPU_WARNING:.0%} of its CPU: that figure may be "
            "limited by the load, not the server."
        )
    if idle:
        lines.append(
            f"(?) the server used under {SERVER_CPU_WARNING:.0%} of its CPU (median): "
            "something else limited that figure (another process on its CPU?)."
        )
    if erred:
        lines.append(
            "(E) wrk reported socket errors or non-2xx/3xx responses, or a run got "
            "no response at all, in that row: its figure is suspect."
        )
    for test in tests:
        ratio = results.ratio(test.name, "netsuite", test.baseline)
        if ratio is None:
            continue
        verdict = "met" if ratio >= test.target else "NOT met"
        peer = next(k.description for k in SERVERS if k.name == test.baseline)
        lines.append(
            f"target {test.name}: netsuite >= {test.target:.2f}x {peer}: "
            f"{ratio:.3f}x, {verdict}"
        )
        for peer in ("aiohttp", "aiohttp-nolog"):
            vsPeer = results.ratio(test.name, "netsuite", peer)
            if vsPeer is not None:
                lines.append(
                    f"  {test.name}: netsuite / {peer} = {vsPeer:.3f}x (long-term goal >= 1.0x)"
                )
    return "\n".join(lines)


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk before each measured run"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    parser.add_argument(
        "--servers",
        default=",".join(k.name for k in SERVERS),
        help="comma-separated servers to run (default: all)",
    )
    parser.add_argument(
        "--tests",
        default=",".join(t.name for t in TESTS),
        help="comma-separated: " + ", ".join(t.name for t in TESTS),
    )
    args = parser.parse_args(argv)
    names = {k.name for k in SERVERS}
    args.servers = args.servers.split(",")
    args.tests = args.tests.split(",")
    if not set(args.servers) <= names:
        parser.error(f"--servers takes {', '.join(sorted(names))}")
    if "netsuite" not in args.servers:
        parser.error("--servers must include netsuite (the peers send its bodies)")
    if not set(args.tests) <= set(TESTS_BY_NAME):
        parser.error(f"--tests takes {', '.join(TESTS_BY_NAME)}")
    if min(args.seconds, args.rounds) < 1 or args.warmup < 0:
        parser.error("durations and counts must be at least 1 (warm-up at least 0)")
    return args


def findTools(servers: list[str]) -> str:
    """
    wrk's path, after checking that wrk, taskset and (when it runs) aiohttp
    are there.

    @raise BenchmarkError: one is missing, saying how to install it.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchmarkError(
            "wrk is not installed: on Debian/Ubuntu, apt-get install -y wrk"
        )
    if shutil.which("taskset") is None:
        raise BenchmarkError("taskset is not installed (Debian: util-linux)")
    if any(name.startswith("aiohttp") for name in servers):
        probe = subprocess.run(
            [sys.executable, "-c", "import aiohttp"], capture_output=True
        )
        if probe.returncode != 0:
            raise BenchmarkError(
                f"aiohttp is not installed for {sys.executable}: pip install aiohttp "
                "(or leave it out: --servers netsuite,twisted,twistd-web)"
            )
    return wrk


def main(argv: list[str] | None = None) -> int:
    """
    Check the tools, run the benchmark, print the table.
    """
    args = parseArguments(sys.argv[1:] if argv is None else argv)
    if (os.cpu_count() or 1) < 2:
        progress("warning: fewer than 2 CPUs; server and load will share one")
    tests = [TESTS_BY_NAME[name] for name in args.tests]
    try:
        wrk = findTools(args.servers)
        with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
            work = Workdir(Path(tmp))
            kinds = [
                ServerKind(k.name, k.description, k.makeCommand, work)
                for k in SERVERS
                if k.name in args.servers
            ]
            prepare(work, kinds[0])
            jsonSize = work.jsonBody.stat().st_size
            htmlSize = work.htmlBody.stat().st_size
            results = measure(
                wrk, kinds, tests, args.seconds, args.warmup, args.rounds, work
            )
    except (BenchmarkError, subprocess.CalledProcessError) as e:
        print(f"http_bench: {e}", file=sys.stderr)
        return 1
    print(
        f"http benchmark: {describeMachine()}; servers on CPU {SERVER_CPU}, wrk "
        f"-t{THREADS} -c{CONNECTIONS} -d{args.seconds}s (keep-alive) on CPU {LOAD_CPU}; "
        f"median of {args.rounds} rounds; bodies: json {jsonSize} B, home {htmlSize} B, "
        f"static {', '.join(f'{n} {s} B' for n, s in STATIC_FILES.items())}"
    )
    print()
    print(formatTable(results, [k for k in SERVERS if k.name in args.servers], tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
