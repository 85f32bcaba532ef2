"""
Proxy benchmark: netsuite's HTTP forward proxy against stock twisted.web.proxy and tinyproxy.

Runs, in one go, these forward proxies on loopback, all in front of the same
origin server:

  - C{netsuite}: C{twistd -n netsuite} with only the proxy on, loopback
    destinations allowed (C{--proxy-allow-loopback}: the origin is on
    127.0.0.1), its access log to a file when it has C{--proxy-access-log}
    (otherwise in the twistd log);
  - C{stock}: stock C{twisted.web.proxy.Proxy} on the same epoll reactor
    (C{servers/twisted_proxy.py});
  - C{tinyproxy}: Debian's tinyproxy, when it is on C{PATH}, in the
    foreground from a config written here (Debian's defaults otherwise);

The origin is C{origin.c} (compiled here with gcc into C{bin/}), a
single-threaded epoll HTTP/1.1 server answering C{/1k} (1024 bytes) and
C{/100m} (100 MiB).  Two tests per proxy:

  - rps: wrk (one thread, 50 keep-alive connections, 10 s) sends C{GET
    http://127.0.0.1:ORIGIN/1k} in absolute form to the proxy (set with a
    Lua script: wrk has no proxy option); requests/s, socket errors by kind
    and non-2xx responses;
  - bulk: C{curl -x} fetches C{/100m} through the proxy, 3 times a round;
    MiB/s (curl's average over the transfer), with the size and status
    checked.

Targets for netsuite: rps >= 3x stock and >= 1.0x tinyproxy with no socket
error or non-2xx response; bulk >= 1.5x stock.

Proxies run on CPU 0; wrk and curl on CPU 1; the origin on CPU 2 when there
is one, else on CPU 1 with the load.  Each round starts every proxy afresh,
in a rotating order, so that they share the machine's noise; the table shows
the median of the rounds and ratios against the peers measured in the same
run.

Usage::

    python3 benchmarks/proxy_bench.py [--duration 10] [--connections 50] [--rounds 3]
        [--bulk-runs 3] [--only netsuite,stock,tinyproxy] [--install]

Needs C{wrk} and C{curl}, and C{tinyproxy} for that peer (Debian: C{apt-get
install -y wrk curl tinyproxy}, or C{--install} as root).  Set C{PYTHONPATH}
to another checkout to benchmark its netsuite instead of the installed one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo_bench import (  # noqa: E402
    _TWISTD,
    HOST,
    LOAD_CPU,
    SERVER_CPU,
    START_TIMEOUT,
    BenchmarkError,
    RunningServer,
    ServerKind,
    buildLoadGenerator,
    describeMachine,
    pinned,
    progress,
)
from http_bench import (  # noqa: E402
    LOAD_CPU_WARNING,
    SERVER_CPU_WARNING,
    THREADS,
    Results,
    WrkResult,
    processCpuSeconds,
    runWrk,
)

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "origin.c"
BINARY = HERE / "bin" / "origin"

#: The origin's CPU: one of its own when there is a third, else the load's.
ORIGIN_CPU = "2" if 2 in os.sched_getaffinity(0) else LOAD_CPU

#: The origin's two answers: path -> body size in bytes.
SMALL_PATH, SMALL_SIZE = "/1k", 1024
BIG_PATH, BIG_SIZE = "/100m", 100 * 2**20

#: Seconds one bulk download may take.
BULK_TIMEOUT = 120

#: Connections netsuite accepts from one address unless told otherwise.
NETSUITE_PER_HOST = 256

#: Peers in the ratio columns, and netsuite's targets: (test, peer, ratio).
PEERS = ("stock", "tinyproxy")
TARGETS = (("rps", "stock", 3.0), ("rps", "tinyproxy", 1.0), ("bulk", "stock", 1.5))

#: wrk's read errors over its requests from which a row is explained as a
#: proxy that closes every client connection after one response.
CLOSE_EVERY_RESPONSE = 0.9


@dataclass(frozen=True)
class Workdir:
    """
    Where the run keeps its files (tinyproxy's config and log, wrk's
    script, netsuite's access log), and what the proxy commands need to know.
    """

    path: Path
    originPort: int
    connections: int
    netsuiteAccessLog: bool

    @property
    def originUrl(self) -> str:
        return f"http://{HOST}:{self.originPort}"

    @property
    def wrkScript(self) -> Path:
        return self.path / "absolute-form.lua"

    def accessLog(self, name: str, port: int) -> Path:
        return self.path / f"{name}-{port}-access.log"


def netsuiteCommand(work: Workdir, port: int) -> list[str]:
    """
    netsuite with only the proxy on, in the foreground, on the epoll
    reactor, allowed to connect to loopback (where the origin is).
    """
    command = [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "netsuite", "--no-http", "--no-chat", "--no-echo", "--no-daytime", "--no-downloads",
        "--proxy", f"tcp:{port}:interface={HOST}",
        "--proxy-allow-loopback",
    ]
    if work.netsuiteAccessLog:
        command += ["--proxy-access-log", str(work.accessLog("netsuite", port))]
    if work.connections > NETSUITE_PER_HOST // 2:
        # Every wrk connection comes from 127.0.0.1.
        command += ["--max-connections-per-host", str(work.connections * 2)]
    return command


def stockCommand(work: Workdir, port: int) -> list[str]:
    """
    Stock C{twisted.web.proxy.Proxy}.
    """
    return [sys.executable, str(HERE / "servers" / "twisted_proxy.py"), str(port), HOST]


def tinyproxyCommand(work: Workdir, port: int) -> list[str]:
    """
    tinyproxy in the foreground (C{-d}), from a config written now: Debian's
    defaults (timeout, C{Via} header) on a loopback port, clients from
    127.0.0.1, room for every wrk connection, warnings only to a file.
    """
    config = work.path / f"tinyproxy-{port}.conf"
    config.write_text(
        f"Port {port}\n"
        f"Listen {HOST}\n"
        "Timeout 600\n"
        f"Allow {HOST}\n"
        f"MaxClients {max(100, 4 * work.connections)}\n"
        f'LogFile "{work.path / f"tinyproxy-{port}.log"}"\n'
        "LogLevel Warning\n"
        "Syslog Off\n"
        "ConnectPort 443\n"
    )
    return ["tinyproxy", "-d", "-c", str(config)]


#: The proxies: name, description for the table, command on a port.
PROXIES = [
    ("netsuite", "netsuite proxy (twistd)", netsuiteCommand),
    ("stock", "stock twisted.web.proxy", stockCommand),
    ("tinyproxy", "tinyproxy (Debian)", tinyproxyCommand),
]
PROXY_NAMES = [name for name, _, _ in PROXIES]


def originCommand(port: int) -> list[str]:
    """
    The origin on L{ORIGIN_CPU}.  L{RunningServer} puts every server on
    L{SERVER_CPU}; the inner C{taskset} it runs moves the origin from there.
    """
    return pinned(ORIGIN_CPU, [str(BINARY), str(port)])


def telling(output: str) -> str:
    """
    The line of a server's output that best says why it is not listening:
    the last one with an error or a skipped service in it, or the last one.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    keys = ("error", "not recognized", "not part of", "skipped", "traceback")
    for line in reversed(lines):
        if any(key in line.lower() for key in keys):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def startServer(kind: ServerKind, workdir: Path) -> RunningServer:
    """
    Start a server and wait until it accepts connections.

    @raise BenchmarkError: in one line, it exited or never listened.
    """
    server = RunningServer(kind, workdir)
    try:
        server.waitUntilAccepting()
    except BenchmarkError:
        code = server.process.poll()
        state = (
            f"exited with {code}" if code is not None
            else f"not listening after {START_TIMEOUT:.0f} s"
        )
        reason = telling(server.output())
        server.stop()
        raise BenchmarkError(
            f"{kind.name} never listened on {HOST}:{server.port} ({state}); "
            f"its output ends: {reason}"
        ) from None
    return server


class CpuMeter:
    """
    CPU shares (CPU seconds over wall seconds) since it was made: of some
    processes, and of the finished children of this one (the load).
    """

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.before = [processCpuSeconds(pid) for pid in pids]
        self.childrenBefore = self._children()
        self.started = time.monotonic()

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def shares(self) -> tuple[list[float], float]:
        """
        Each process's share, and the children's.
        """
        wall = time.monotonic() - self.started
        return (
            [(processCpuSeconds(p) - b) / wall for p, b in zip(self.pids, self.before)],
            (self._children() - self.childrenBefore) / wall,
        )


@dataclass(frozen=True)
class Download:
    """
    One curl download: its average speed, size, status and curl's exit
    status; for a measured one, the proxy's CPU share and the load's (curl,
    plus the origin when they share a CPU).
    """

    bytesPerSecond: float
    size: int
    status: int
    exitCode: int
    proxyCpu: float = 0.0
    loadCpu: float = 0.0

    def isWrong(self, expectedSize: int) -> bool:
        """
        Whether curl failed, or the answer was not a 200 of C{expectedSize}
        bytes.
        """
        return self.exitCode != 0 or self.status != 200 or self.size != expectedSize


def download(curl: str, url: str, proxyPort: int | None, timeout: float) -> Download:
    """
    GET C{url} with curl on L{LOAD_CPU}, through the proxy on C{proxyPort}
    (C{None}: directly), the body thrown away.

    @raise BenchmarkError: curl did not finish in time or printed no figures.
    """
    via = ["-x", f"http://{HOST}:{proxyPort}"] if proxyPort else []
    command = pinned(LOAD_CPU, [
        curl, *via, "--noproxy", "" if proxyPort else "*", "-s", "-o", "/dev/null",
        "--max-time", str(timeout),
        "-w", "%{speed_download} %{size_download} %{http_code}", url,
    ])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"curl {url} did not finish in {timeout + 10:.0f} s") from None
    try:
        speed, size, status = result.stdout.split()
        return Download(float(speed), int(float(size)), int(status), result.returncode)
    except ValueError:
        raise BenchmarkError(
            f"curl {url}: unexpected output ({result.returncode}): "
            f"{result.stdout.strip()} {result.stderr.strip()}"
        ) from None


def measureBulk(
    curl: str, url: str, server: RunningServer, origin: RunningServer,
) -> Download:
    """
    One measured download through C{server}, with the CPU shares.
    """
    meter = CpuMeter(server.process.pid, origin.process.pid)
    got = download(curl, url, server.port, BULK_TIMEOUT)
    (proxyCpu, originCpu), curlCpu = meter.shares()
    loadCpu = curlCpu + (originCpu if ORIGIN_CPU == LOAD_CPU else 0.0)
    return dataclasses.replace(got, proxyCpu=proxyCpu, loadCpu=loadCpu)


def check(curl: str, name: str, proxyPort: int | None, url: str) -> None:
    """
    One GET of the 1 KiB answer before the load: a 200 with 1024 bytes.

    @raise BenchmarkError: anything else, in one line.
    """
    got = download(curl, url, proxyPort, timeout=10)
    if got.isWrong(SMALL_SIZE):
        how = f"through {name}" if proxyPort else "from the origin"
        raise BenchmarkError(
            f"GET {url} {how}: status {got.status}, {got.size} bytes, curl exit "
            f"{got.exitCode} (expected 200 and {SMALL_SIZE} bytes)"
        )


def _bytesPerSecond(download: Download) -> float:
    return download.bytesPerSecond


@dataclass(frozen=True)
class Tools:
    """
    The load's programs.
    """

    wrk: str
    curl: str


def measure(
    tools: Tools, kinds: list[ServerKind], work: Workdir, origin: RunningServer,
    duration: int, warmup: int, rounds: int, bulkRuns: int,
) -> tuple[Results, Results]:
    """
    Run both tests through every proxy for C{rounds} rounds, each round
    starting each proxy afresh and rotating which goes first.
    """
    rps, bulk = Results(), Results(figure=_bytesPerSecond)
    small, big = work.originUrl + SMALL_PATH, work.originUrl + BIG_PATH
    for index in range(rounds):
        order = kinds[index % len(kinds):] + kinds[: index % len(kinds)]
        for kind in order:
            server = startServer(kind, work.path)
            try:
                port, pid = server.port, server.process.pid
                check(tools.curl, kind.name, port, small)
                url = f"http://{HOST}:{port}"
                if warmup:
                    runWrk(tools.wrk, url, warmup, pid, work.connections, work.wrkScript)
                result = measureRps(tools.wrk, url, duration, pid, work, origin)
                rps.add("rps", kind.name, result)
                progress(
                    f"round {index + 1} {kind.name:9} rps  {result.requestsPerSecond:9.0f} "
                    f"req/s  proxy CPU {result.serverCpu:4.0%}  load CPU {result.loadCpu:4.0%}"
                    f"{'  ' + describeErrors(result) if hasErrors(result) else ''}"
                )
                for _ in range(bulkRuns):
                    got = measureBulk(tools.curl, big, server, origin)
                    bulk.add("bulk", kind.name, got)
                    wrong = (
                        f"  WRONG: status {got.status}, {got.size} bytes, curl exit {got.exitCode}"
                        if got.isWrong(BIG_SIZE) else ""
                    )
                    progress(
                        f"round {index + 1} {kind.name:9} bulk {got.bytesPerSecond / 2**20:9.0f} "
                        f"MiB/s  proxy CPU {got.proxyCpu:4.0%}  load CPU {got.loadCpu:4.0%}{wrong}"
                    )
                for running in (server, origin):
                    if running.process.poll() is not None:
                        raise BenchmarkError(
                            f"{running.kind.name} died: {telling(running.output())}"
                        )
            finally:
                server.stop()
    return rps, bulk


def measureRps(
    wrk: str, url: str, duration: int, pid: int, work: Workdir, origin: RunningServer,
) -> WrkResult:
    """
    One measured wrk run against the proxy at C{url}; when the origin shares
    the load's CPU, its CPU share is counted in the load's.
    """
    meter = CpuMeter(origin.process.pid)
    result = runWrk(wrk, url, duration, pid, work.connections, work.wrkScript)
    if ORIGIN_CPU != LOAD_CPU:
        return result
    (originCpu,), _ = meter.shares()
    return dataclasses.replace(result, loadCpu=result.loadCpu + originCpu)


def hasErrors(result: WrkResult) -> bool:
    """
    Whether a wrk run had socket errors, non-2xx responses or no response.
    """
    return bool(result.socketErrors or result.non2xx or not result.requests)


def closesEveryResponse(result: WrkResult) -> bool:
    """
    Whether a run's errors are those of a proxy that closes every client
    connection after one response: read errors (wrk's count of such closes)
    for about every request, and no other error.
    """
    kinds = result.socketErrorKinds
    others = result.socketErrors - kinds.get("read", 0) + result.non2xx
    return others == 0 and kinds.get("read", 0) >= CLOSE_EVERY_RESPONSE * result.requests > 0


def describeErrors(result: WrkResult) -> str:
    """
    A run's errors in a few words, e.g. C{read 29733 (C)} or C{timeout 3,
    non-2xx 12 (E)}.
    """
    parts = [f"{k} {n}" for k, n in result.socketErrorKinds.items() if n]
    if result.non2xx:
        parts.append(f"non-2xx {result.non2xx}")
    if not result.requests:
        parts.append("no response")
    return f"{', '.join(parts)} {'(C)' if closesEveryResponse(result) else '(E)'}"


def formatTable(
    rps: Results, bulk: Results, kinds: list[ServerKind], connections: int,
) -> str:
    """
    The results as a Markdown table (medians, ratios against the peers, each
    round, CPU shares, errors), followed by netsuite's targets.
    """
    lines = [
        "| test | proxy | median | vs stock | vs tinyproxy | rounds | proxy CPU "
        "| load CPU (max) | errors |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    notes: set[str] = set()

    def ratios(ratio: Callable[[str], float | None]) -> str:
        return " | ".join(
            "" if (r := ratio(peer)) is None else f"{r:.2f}x" for peer in PEERS
        )

    def cpuCells(proxyCpu: float, loadCpu: float) -> str:
        idle, busy = proxyCpu < SERVER_CPU_WARNING, loadCpu > LOAD_CPU_WARNING
        notes.update(flag for flag, on in (("?", idle), ("!", busy)) if on)
        return f"{proxyCpu:.0%}{' (?)' * idle} | {loadCpu:.0%}{' (!)' * busy}"

    for kind in kinds:
        runs = rps.runs.get(("rps", kind.name))
        if not runs:
            continue
        erred = [r for r in runs if hasErrors(r)]
        notes.update("C" if closesEveryResponse(r) else "E" for r in erred)
        cpu = cpuCells(statistics.median(r.serverCpu for r in runs), max(r.loadCpu for r in runs))
        lines.append(
            f"| rps, {connections} conns, GET 1 KiB (req/s) | {kind.description} | "
            f"{rps.median('rps', kind.name):.0f} | "
            f"{ratios(partial(rps.ratio, 'rps', kind.name))} | "
            f"{', '.join(f'{r.requestsPerSecond:.0f}' for r in runs)} | "
            f"{cpu} | "
            f"{'; '.join(describeErrors(r) for r in erred) if erred else 0} |"
        )
    for kind in kinds:
        downloads = bulk.runs.get(("bulk", kind.name))
        if not downloads:
            continue
        wrong = sum(d.isWrong(BIG_SIZE) for d in downloads)
        if wrong:
            notes.add("W")
        cpu = cpuCells(
            statistics.median(d.proxyCpu for d in downloads), max(d.loadCpu for d in downloads)
        )
        lines.append(
            f"| bulk, GET 100 MiB (MiB/s) | {kind.description} | "
            f"{(bulk.median('bulk', kind.name) or 0) / 2**20:.0f} | "
            f"{ratios(partial(bulk.ratio, 'bulk', kind.name))} | "
            f"{', '.join(f'{d.bytesPerSecond / 2**20:.0f}' for d in downloads)} | "
            f"{cpu} | "
            f"{f'{wrong} wrong (W)' if wrong else 0} |"
        )
    lines.append("")
    lines += [text for key, text in NOTES if key in notes]
    lines += formatTargets(rps, bulk, kinds)
    return "\n".join(lines)


#: What the table's flags mean.
NOTES = (
    ("!", f"(!) the load used over {LOAD_CPU_WARNING:.0%} of its CPU (wrk or curl, plus "
          "the origin when they share a CPU): that figure may be limited by the load."),
    ("?", f"(?) the proxy used under {SERVER_CPU_WARNING:.0%} of its CPU (median): "
          "something else limited that figure."),
    ("C", "(C) read errors for about every request and nothing else: the proxy closed "
          "each client connection after one response without saying so (no keep-alive "
          "to the client); wrk counts each close as a read error and reconnects."),
    ("E", "(E) socket errors or non-2xx responses, or no response at all, in that "
          "row: its figure is suspect."),
    ("W", f"(W) downloads with a status other than 200, a size other than {BIG_SIZE} "
          "bytes or a curl error: their speeds are suspect."),
)


def formatTargets(rps: Results, bulk: Results, kinds: list[ServerKind]) -> list[str]:
    """
    netsuite's targets, each met or not, when netsuite ran.
    """
    if "netsuite" not in {k.name for k in kinds}:
        return []
    described = {k.name: k.description for k in kinds}
    runs = rps.runs.get(("rps", "netsuite"), [])
    errors = sum(r.socketErrors + r.non2xx + (not r.requests) for r in runs)
    lines = [
        f"target rps: netsuite without socket errors or non-2xx responses: {errors}, "
        f"{'met' if not errors else 'NOT met'}"
    ]
    for test, peer, target in TARGETS:
        if test == "rps":
            ratio = rps.ratio(test, "netsuite", peer)
        else:
            ratio = bulk.ratio("bulk", "netsuite", peer)
        if ratio is None:
            lines.append(f"target {test}: netsuite >= {target:.2f}x {peer}: {peer} not measured")
            continue
        verdict = "met" if ratio >= target else "NOT met"
        lines.append(
            f"target {test}: netsuite >= {target:.2f}x {described[peer]}: {ratio:.3f}x, {verdict}"
        )
    return lines


def netsuiteHasAccessLog(workdir: Path) -> bool:
    """
    Whether the netsuite on the path (run from C{workdir}, as the proxies
    are) has a proxy, and a C{--proxy-access-log} option.

    @raise BenchmarkError: twistd does not know netsuite, or netsuite has no
        C{--proxy-allow-loopback} (its proxy has not landed).
    """
    result = subprocess.run(
        [sys.executable, "-c", _TWISTD, "netsuite", "--help"],
        capture_output=True, text=True, timeout=60, cwd=workdir,
    )
    if result.returncode != 0:
        raise BenchmarkError(
            f"twistd netsuite --help failed: {telling(result.stdout + result.stderr)} "
            "(is netsuite installed? pip install -e .)"
        )
    if "--proxy-allow-loopback" not in result.stdout:
        raise BenchmarkError(
            "this netsuite has no --proxy-allow-loopback (its proxy has not landed?); "
            "measure the peers alone with --only stock,tinyproxy"
        )
    return "--proxy-access-log" in result.stdout


#: What C{--install} installs, by the program it provides.
PACKAGES = {"wrk": "wrk", "curl": "curl", "tinyproxy": "tinyproxy"}


def install() -> None:
    """
    C{apt-get install -y} the missing ones of L{PACKAGES} (as root).

    @raise BenchmarkError: not root, no apt-get, or it failed.
    """
    missing = [package for program, package in PACKAGES.items() if shutil.which(program) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchmarkError(f"--install needs root: apt-get install -y {' '.join(missing)}")
    if shutil.which("apt-get") is None:
        raise BenchmarkError(f"--install needs apt-get; install {' '.join(missing)} by hand")
    progress(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    aptGet = ["apt-get", "install", "-y", *missing]
    # apt's chatter goes to stderr with the progress: stdout holds the table.
    if subprocess.run(aptGet, env=env, stdout=sys.stderr).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr, check=True)
        subprocess.run(aptGet, env=env, stdout=sys.stderr, check=True)


def findTools(names: list[str], explicit: bool) -> tuple[Tools, list[str]]:
    """
    wrk's and curl's paths, and the proxies that can run: tinyproxy is left
    out when it is not on C{PATH}, unless asked for by name.

    @raise BenchmarkError: a program needed is missing, saying how to
        install it.
    """
    found = {program: shutil.which(program) for program in (*PACKAGES, "taskset")}
    if found["taskset"] is None:
        raise BenchmarkError("taskset is not installed (Debian: util-linux)")
    if "tinyproxy" in names and found["tinyproxy"] is None:
        if explicit:
            raise BenchmarkError(
                "tinyproxy is not installed: apt-get install -y tinyproxy (or --install)"
            )
        progress("tinyproxy is not on PATH: left out (apt-get install -y tinyproxy, or --install)")
        names = [name for name in names if name != "tinyproxy"]
    for program in ("wrk", "curl"):
        if found[program] is None:
            raise BenchmarkError(
                f"{program} is not installed: apt-get install -y {program} (or --install)"
            )
    wrk, curl = found["wrk"], found["curl"]
    assert wrk is not None and curl is not None
    return Tools(wrk, curl), names


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk before each measured run"
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk's connections")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    parser.add_argument(
        "--bulk-runs", type=int, default=3, help="100 MiB downloads per proxy and round"
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated proxies to run (default: {','.join(PROXY_NAMES)}, "
        "tinyproxy when installed)",
    )
    parser.add_argument(
        "--install", action="store_true",
        help="apt-get install wrk, curl and tinyproxy when missing (as root)",
    )
    args = parser.parse_args(argv)
    args.explicit = args.only is not None
    args.only = args.only.split(",") if args.only else list(PROXY_NAMES)
    if not set(args.only) <= set(PROXY_NAMES):
        parser.error(f"--only takes {', '.join(PROXY_NAMES)}")
    if min(args.duration, args.connections, args.rounds, args.bulk_runs) < 1 or args.warmup < 0:
        parser.error("durations and counts must be at least 1 (warm-up at least 0)")
    return args


def main(argv: list[str] | None = None) -> int:
    """
    Check the tools, build and start the origin, run the benchmark, print
    the table.
    """
    args = parseArguments(sys.argv[1:] if argv is None else argv)
    if (os.cpu_count() or 1) < 2:
        progress("warning: fewer than 2 CPUs; proxy and load will share one")
    try:
        if args.install:
            install()
        tools, names = findTools(args.only, args.explicit)
        buildLoadGenerator(SOURCE, BINARY)
        with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
            accessLog = netsuiteHasAccessLog(Path(tmp)) if "netsuite" in names else False
            origin = startServer(ServerKind("origin", "origin.c", originCommand), Path(tmp))
            try:
                work = Workdir(Path(tmp), origin.port, args.connections, accessLog)
                work.wrkScript.write_text(
                    f'wrk.path = "{work.originUrl}{SMALL_PATH}"\n'
                    f'wrk.headers["Host"] = "{HOST}:{work.originPort}"\n'
                )
                check(tools.curl, "origin", None, work.originUrl + SMALL_PATH)
                kinds = [
                    ServerKind(name, description, partial(command, work))
                    for name, description, command in PROXIES
                    if name in names
                ]
                rps, bulk = measure(
                    tools, kinds, work, origin, args.duration, args.warmup, args.rounds,
                    args.bulk_runs,
                )
            finally:
                origin.stop()
    except (BenchmarkError, subprocess.CalledProcessError) as e:
        print(f"proxy_bench: {e}", file=sys.stderr)
        return 1
    print(
        f"proxy benchmark: {describeMachine()}; proxies on CPU {SERVER_CPU}, wrk and curl "
        f"on CPU {LOAD_CPU}, origin on CPU {ORIGIN_CPU}; wrk -t{THREADS} "
        f"-c{args.connections} -d{args.duration}s (keep-alive, absolute-form GET of "
        f"{SMALL_SIZE} B); curl 100 MiB x {args.bulk_runs} a round; median of "
        f"{args.rounds} rounds"
    )
    print()
    print(formatTable(rps, bulk, kinds, args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
