"""
Echo benchmark: netsuite's TCP echo against stock Twisted and asyncio.

Runs, in one go, three echo servers on loopback:

  - C{netsuite}: C{twistd -n netsuite} with only echo on (the real service,
    with its producer, idle timeout and stats wrapper);
  - C{twisted}: stock C{twisted.protocols.wire.Echo} on the same (epoll)
    reactor (C{servers/twisted_echo.py});
  - C{asyncio}: an asyncio-streams echo server (C{servers/asyncio_echo.py});

and measures each with C{echoload} (C{echoload.c}, compiled here with gcc
into C{bin/}):

  - bulk: one connection echoing N MiB, bytes/s;
  - ping-pong: 100 connections x 64-byte messages for S seconds, round
    trips/s.

Servers run on CPU 0 and the load generator on CPU 1 (C{taskset}).  Each
round starts every server afresh, in a rotating order, so the servers share
the machine's noise; the table shows the median of the rounds and ratios
against stock Twisted measured in the same run.

Usage::

    python3 benchmarks/echo_bench.py [--bulk-mib 512] [--seconds 10] [--rounds 3]

Set C{PYTHONPATH} to another checkout to benchmark its netsuite instead of
the installed one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "echoload.c"
BINARY = HERE / "bin" / "echoload"

SERVER_CPU = "0"
LOAD_CPU = "1"
HOST = "127.0.0.1"

#: Seconds a server gets to start accepting connections.
START_TIMEOUT = 30.0
#: Seconds a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

#: The peer the ratios are taken against.
BASELINE = "twisted"

#: Targets for netsuite, as ratios against L{BASELINE}.
TARGETS = {"bulk": 1.5, "pingpong": 0.95}

#: Above this share of its CPU, the load generator may be what limits a
#: measurement rather than the server; the table flags it.
LOAD_CPU_WARNING = 0.9

_TWISTD = (
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    """
    A loopback port nothing listens on right now (TCP, or UDP with
    C{socket.SOCK_DGRAM}).
    """
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def netsuiteCommand(port: int) -> list[str]:
    """
    Run netsuite with only TCP echo (and UDP echo, which cannot be turned
    off on its own) on loopback, in the foreground, on the epoll reactor.
    """
    return [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "netsuite", "--no-http", "--no-chat", "--no-proxy", "--no-daytime", "--no-downloads",
        "--echo", f"tcp:{port}:interface={HOST}",
        "--echo-udp", f"udp:{freePort(socket.SOCK_DGRAM)}:interface={HOST}",
    ]


def twistedCommand(port: int) -> list[str]:
    """
    Run stock C{twisted.protocols.wire.Echo}.
    """
    return [sys.executable, str(HERE / "servers" / "twisted_echo.py"), str(port), HOST]


def asyncioCommand(port: int) -> list[str]:
    """
    Run the asyncio-streams echo server.
    """
    return [sys.executable, str(HERE / "servers" / "asyncio_echo.py"), str(port), HOST]


@dataclass(frozen=True)
class ServerKind:
    """
    One server under test: its short name, a description for the table,
    and how to start it on a port.
    """

    name: str
    description: str
    command: Callable[[int], list[str]]


SERVERS = [
    ServerKind("netsuite", "netsuite echo (twistd)", netsuiteCommand),
    ServerKind("twisted", "stock twisted wire.Echo", twistedCommand),
    ServerKind("asyncio", "asyncio streams echo", asyncioCommand),
]


class BenchmarkError(Exception):
    """
    A server or the load generator failed; C{str()} says which and why.
    """


#: The header the load generators share.
HEADER = HERE / "loadgen.h"


def buildLoadGenerator(source: Path = SOURCE, binary: Path = BINARY) -> Path:
    """
    Compile a load generator (C{echoload.c} by default) into C{bin/} if its
    binary is missing or older than its source or L{HEADER}.

    @return: the binary's path.
    """
    newest = max(source.stat().st_mtime, HEADER.stat().st_mtime)
    if binary.exists() and binary.stat().st_mtime >= newest:
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchmarkError("gcc is needed to build the load generator")
    binary.parent.mkdir(exist_ok=True)
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(source)], check=True
    )
    return binary


def runPinned(binary: Path, args: list[str], timeout: float) -> tuple[int, dict[str, str], str]:
    """
    Run a load generator with C{args} on L{LOAD_CPU}.

    @return: its exit status, the fields of its C{key=value} line, and its
        output (stdout and stderr) for messages.
    @raise BenchmarkError: it did not finish in C{timeout} seconds.
    """
    try:
        result = subprocess.run(
            pinned(LOAD_CPU, [str(binary), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(
            f"{binary.name} {' '.join(args)} did not finish in {timeout:.0f} s"
        ) from None
    fields = dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)
    return result.returncode, fields, f"{result.stdout.strip()} {result.stderr.strip()}"


def pinned(cpu: str, command: list[str]) -> list[str]:
    """
    C{command} run on one CPU.
    """
    return ["taskset", "-c", cpu, *command]


class RunningServer:
    """
    A server process started on L{SERVER_CPU}, its output going to a file.
    """

    def __init__(self, kind: ServerKind, workdir: Path) -> None:
        self.kind = kind
        self.port = freePort()
        self.logPath = workdir / f"{kind.name}-{self.port}.log"
        self._log = self.logPath.open("wb")
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, kind.command(self.port)),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )

    def waitUntilAccepting(self, timeout: float = START_TIMEOUT) -> None:
        """
        Return once a connection to the server succeeds.

        @raise BenchmarkError: it exited or did not accept in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(
                    f"{self.kind.name} exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchmarkError(
            f"{self.kind.name} did not accept connections within {timeout:.0f} s:\n"
            f"{self.output()}"
        )

    def output(self) -> str:
        """
        What the server printed so far.
        """
        self._log.flush()
        return self.logPath.read_text(errors="replace")

    def stop(self) -> None:
        """
        SIGTERM the server, and SIGKILL it if it has not exited in
        L{STOP_TIMEOUT} seconds.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def runLoad(binary: Path, args: list[str], timeout: float) -> dict[str, str]:
    """
    Run C{echoload} with C{args} on L{LOAD_CPU} and parse its C{key=value}
    line.

    @raise BenchmarkError: it failed, timed out or reported errors.
    """
    code, fields, output = runPinned(binary, args, timeout)
    if code != 0 or not fields:
        raise BenchmarkError(f"echoload {' '.join(args)} failed ({code}): {output}")
    return fields


@dataclass
class Results:
    """
    Measurements per test and server, one value per round, and how busy the
    load generator's CPU was during each.
    """

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    loadCpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, test: str, server: str, value: float, loadCpu: float) -> None:
        """
        Record one measurement and the load generator's CPU share during it.
        """
        self.values.setdefault((test, server), []).append(value)
        self.loadCpu.setdefault((test, server), []).append(loadCpu)

    def median(self, test: str, server: str) -> float | None:
        """
        The median of a test's rounds on a server, if any ran.
        """
        runs = self.values.get((test, server))
        return statistics.median(runs) if runs else None

    def ratio(self, test: str, server: str) -> float | None:
        """
        The median for C{server} over the median for L{BASELINE}.
        """
        mine, base = self.median(test, server), self.median(test, BASELINE)
        if mine is None or not base:
            return None
        return mine / base


def measure(
    binary: Path,
    kinds: list[ServerKind],
    tests: list[str],
    bulkBytes: int,
    conns: int,
    msgSize: int,
    seconds: int,
    rounds: int,
    workdir: Path,
) -> Results:
    """
    Run every test on every server for C{rounds} rounds, each round starting
    each server afresh and rotating which goes first.
    """
    results = Results()
    for index in range(rounds):
        order = kinds[index % len(kinds):] + kinds[: index % len(kinds)]
        for kind in order:
            server = RunningServer(kind, workdir)
            try:
                server.waitUntilAccepting()
                port = str(server.port)
                if "bulk" in tests:
                    out = runLoad(
                        binary, ["bulk", HOST, port, str(bulkBytes)], timeout=600
                    )
                    value = float(out["bytes_per_s"])
                    results.add("bulk", kind.name, value, float(out["cpu"]))
                    progress(f"round {index + 1} {kind.name:9} bulk {value / 2**20:12.1f} MiB/s")
                if "pingpong" in tests:
                    out = runLoad(
                        binary,
                        ["pingpong", HOST, port, str(conns), str(msgSize), str(seconds)],
                        timeout=seconds + 120,
                    )
                    value = float(out["roundtrips_per_s"])
                    results.add("pingpong", kind.name, value, float(out["cpu"]))
                    progress(
                        f"round {index + 1} {kind.name:9} ping-pong {value:7.0f} round trips/s"
                    )
                if server.process.poll() is not None:
                    raise BenchmarkError(f"{kind.name} died:\n{server.output()}")
            finally:
                server.stop()
    return results


def progress(message: str) -> None:
    """
    Report progress on stderr, so stdout holds only the table.
    """
    print(message, file=sys.stderr, flush=True)


def formatTable(
    results: Results, kinds: list[ServerKind], tests: list[str], bulkMiB: int,
    conns: int, msgSize: int, seconds: int,
) -> str:
    """
    The results as a Markdown table (medians, ratios against L{BASELINE},
    each round, and the load generator's busiest CPU share), followed by the
    targets for netsuite.
    """
    headers = {
        "bulk": f"bulk, 1 conn x {bulkMiB} MiB (MiB/s)",
        "pingpong": f"ping-pong, {conns} conns x {msgSize} B, {seconds} s (round trips/s)",
    }
    scale = {"bulk": 1 / 2**20, "pingpong": 1.0}
    lines = [
        "| test | server | median | vs stock Twisted | rounds | load CPU (max) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for test in tests:
        for kind in kinds:
            median = results.median(test, kind.name)
            if median is None:
                continue
            ratio = results.ratio(test, kind.name)
            runs = ", ".join(
                f"{v * scale[test]:.0f}" for v in results.values[(test, kind.name)]
            )
            loadCpu = max(results.loadCpu[(test, kind.name)])
            flag = " (!)" if loadCpu > LOAD_CPU_WARNING else ""
            lines.append(
                f"| {headers[test]} | {kind.description} | {median * scale[test]:.0f} | "
                f"{'' if ratio is None else f'{ratio:.2f}x'} | {runs} | "
                f"{loadCpu:.0%}{flag} |"
            )
    lines.append("")
    if any(max(v) > LOAD_CPU_WARNING for v in results.loadCpu.values()):
        lines.append(
            f"(!) the load generator used over {LOAD_CPU_WARNING:.0%} of its CPU: "
            "that figure may be limited by the load, not the server."
        )
    for test in tests:
        ratio = results.ratio(test, "netsuite")
        if ratio is None:
            continue
        verdict = "met" if ratio >= TARGETS[test] else "NOT met"
        lines.append(
            f"target {test}: netsuite >= {TARGETS[test]:.2f}x stock Twisted: "
            f"{ratio:.3f}x, {verdict}"
        )
    return "\n".join(lines)


def describeMachine() -> str:
    """
    One line about where this ran.
    """
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--bulk-mib", type=int, default=512, help="MiB echoed in bulk")
    parser.add_argument("--seconds", type=int, default=10, help="ping-pong duration")
    parser.add_argument("--conns", type=int, default=100, help="ping-pong connections")
    parser.add_argument("--msg-size", type=int, default=64, help="ping-pong message bytes")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    parser.add_argument(
        "--servers",
        default=",".join(k.name for k in SERVERS),
        help="comma-separated servers to run (default: all)",
    )
    parser.add_argument(
        "--tests", default="bulk,pingpong", help="comma-separated: bulk, pingpong"
    )
    args = parser.parse_args(argv)
    names = {k.name for k in SERVERS}
    args.servers = args.servers.split(",")
    args.tests = args.tests.split(",")
    if not set(args.servers) <= names:
        parser.error(f"--servers takes {', '.join(sorted(names))}")
    if not set(args.tests) <= {"bulk", "pingpong"}:
        parser.error("--tests takes bulk, pingpong")
    if min(args.bulk_mib, args.seconds, args.conns, args.msg_size, args.rounds) < 1:
        parser.error("sizes, durations and counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """
    Build the load generator, run the benchmark, print the table.
    """
    args = parseArguments(sys.argv[1:] if argv is None else argv)
    if (os.cpu_count() or 1) < 2:
        progress("warning: fewer than 2 CPUs; server and load will share one")
    kinds = [k for k in SERVERS if k.name in args.servers]
    try:
        binary = buildLoadGenerator()
        with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
            results = measure(
                binary, kinds, args.tests, args.bulk_mib * 2**20, args.conns,
                args.msg_size, args.seconds, args.rounds, Path(tmp),
            )
    except (BenchmarkError, subprocess.CalledProcessError) as e:
        print(f"echo_bench: {e}", file=sys.stderr)
        return 1
    print(f"echo benchmark: {describeMachine()}; servers on CPU {SERVER_CPU}, "
          f"load on CPU {LOAD_CPU}; median of {args.rounds} rounds")
    print()
    print(formatTable(
        results, kinds, args.tests, args.bulk_mib, args.conns, args.msg_size, args.seconds
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
