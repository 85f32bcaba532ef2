"""
Chat benchmark: netsuite's chat fan-out against a plain Twisted broadcast server.

Runs, in one go, these chat servers on loopback:

  - C{netsuite}: C{twistd -n netsuite} with only chat on, at its defaults
    except flood control (off: C{--chat-rate 0}) and the per-host limits
    (raised: every client comes from 127.0.0.1);
  - C{netsuite-1m}: the same with C{--chat-max-output 1048576} (1 MiB of
    output may wait for one client instead of 256 KiB), a variant for the
    flood test only;
  - C{twisted}: the reference, a plain ~30-line C{LineReceiver} broadcast
    server on the same epoll reactor (C{servers/twisted_chat.py});

and measures each with C{chatload} (C{chatload.c}, compiled here with gcc
into C{bin/}): 1000 clients in one room, 10 of them sending 1000 lines each
with their send time in them, every line checked at every receiver:

  - flood: the senders write as fast as the server reads; delivered
    lines/s (target for netsuite: >= 1.5x the reference);
  - paced: each sender sends 50 lines/s; p50 / p99 delivery latency (target:
    p99 <= 100 ms);

and in both, lines lost, mis-framed or out of order (target: none), error
lines and connections the server closed.

Servers run on CPU 0 and the load generator on CPU 1 (C{taskset}).  Every
test starts its server afresh; each round goes through the servers in a
rotating order, so the servers share the machine's noise; the table shows the
median of the rounds and ratios against the reference measured in the same
run.

Usage::

    python3 benchmarks/chat_bench.py [--rounds 3] [--rate 50]

Set C{PYTHONPATH} to another checkout to benchmark its netsuite instead of
the installed one.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo_bench import (  # noqa: E402
    _TWISTD,
    HOST,
    LOAD_CPU,
    SERVER_CPU,
    BenchmarkError,
    RunningServer,
    buildLoadGenerator,
    describeMachine,
    progress,
    runPinned,
)

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "chatload.c"
BINARY = HERE / "bin" / "chatload"

#: The server the ratios are taken against.
BASELINE = "twisted"

#: Targets for netsuite: flood lines/s as a ratio to L{BASELINE}, paced p99
#: latency in milliseconds; and in every run no line lost, mis-framed or out
#: of order.
FLOOD_TARGET = 1.5
P99_TARGET_MS = 100.0

#: Above this share of its CPU, the load generator may be what limits a
#: measurement rather than the server; the table flags it.
LOAD_CPU_WARNING = 0.9

#: Bytes of output netsuite may hold for one client in the C{netsuite-1m}
#: variant (its default is 256 KiB).
VARIANT_MAX_OUTPUT = 1024 * 1024

#: Seconds chatload may take to connect and register every client (its own
#: bounds are 120 s and 30 s), and beyond a run's expected length.
SETUP_ALLOWANCE = 160
RUN_ALLOWANCE = 600


def netsuiteCommand(port: int, *extra: str) -> list[str]:
    """
    Run netsuite with only chat on loopback, in the foreground, on the epoll
    reactor: flood control off, per-host limits raised for 1000+ clients
    from one address, everything else at its defaults.
    """
    return [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "netsuite", "--no-http", "--no-echo", "--no-daytime", "--no-proxy", "--no-downloads",
        "--chat", f"tcp:{port}:interface={HOST}",
        "--chat-rate", "0",
        "--chat-max-clients", "2000",
        "--chat-max-clients-per-host", "2000",
        "--max-connections-per-host", "2000",
        *extra,
    ]


def netsuiteVariantCommand(port: int) -> list[str]:
    """
    netsuite as L{netsuiteCommand}, with more output allowed per client.
    """
    return netsuiteCommand(port, "--chat-max-output", str(VARIANT_MAX_OUTPUT))


def twistedCommand(port: int) -> list[str]:
    """
    Run the plain C{LineReceiver} broadcast server.
    """
    return [sys.executable, str(HERE / "servers" / "twisted_chat.py"), str(port), HOST]


@dataclass(frozen=True)
class ServerKind:
    """
    One server under test: its short name, a description for the table, how
    to start it on a port, and the tests it takes part in.
    """

    name: str
    description: str
    command: Callable[[int], list[str]]
    tests: tuple[str, ...] = ("flood", "paced")


SERVERS = [
    ServerKind("netsuite", "netsuite chat (twistd, defaults)", netsuiteCommand),
    ServerKind(
        "netsuite-1m",
        f"netsuite chat, --chat-max-output {VARIANT_MAX_OUTPUT} (variant)",
        netsuiteVariantCommand,
        ("flood",),
    ),
    ServerKind("twisted", "plain Twisted LineReceiver broadcast", twistedCommand),
]

TESTS = ("flood", "paced")


def raiseFileLimit(clients: int) -> None:
    """
    Raise this process's soft limit on open files (the servers inherit it)
    to what C{clients} connections need, if the hard limit allows.

    @raise BenchmarkError: it does not.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = clients + 256
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise BenchmarkError(
            f"{clients} clients need {want} open files; the limit is {hard} (ulimit -n)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def peakMemory(pid: int) -> int:
    """
    The most resident memory a process has used so far, in bytes (0 if it
    is gone).
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class Load:
    """
    The shape of the load: clients, senders, lines per sender, their size,
    and the paced test's rate.
    """

    clients: int
    senders: int
    messages: int
    payload: int
    rate: int
    stall: int

    def arguments(self, port: int, test: str) -> list[str]:
        """
        chatload's command line for C{test} against C{port}.
        """
        arguments = [
            "fanout", HOST, str(port), str(self.clients), str(self.senders),
            str(self.messages), str(self.payload), "--stall", str(self.stall),
        ]
        if test == "paced":
            arguments += ["--rate", str(self.rate)]
        return arguments

    def timeout(self, test: str) -> float:
        """
        Seconds after which a chatload run has certainly gone wrong.
        """
        length = self.messages / self.rate if test == "paced" else 0
        return SETUP_ALLOWANCE + length + RUN_ALLOWANCE + self.stall


def runLoad(binary: Path, arguments: list[str], timeout: float) -> dict[str, str]:
    """
    Run C{chatload} with C{arguments} on L{LOAD_CPU} and parse its
    C{key=value} line.  A run that lost lines or saw other faults still
    prints one (and exits 1); its faults are in the fields.

    @raise BenchmarkError: it could not run (no line), or timed out.
    """
    code, fields, output = runPinned(binary, arguments, timeout)
    if code not in (0, 1) or "delivered" not in fields:
        raise BenchmarkError(f"chatload {' '.join(arguments)} failed ({code}): {output}")
    if code == 1:
        for line in output.strip().splitlines()[:8]:
            progress(f"    {line}")
    return fields


@dataclass(frozen=True)
class Run:
    """
    One chatload run against one server.
    """

    linesPerSecond: float
    p50: float
    p99: float
    delivered: int
    expected: int
    lost: int
    misframed: int
    misordered: int
    errors: int
    closed: int
    loadCpu: float
    setupSeconds: float
    serverMemory: int

    @classmethod
    def fromFields(cls, fields: dict[str, str], serverMemory: int) -> Run:
        """
        A run from chatload's C{key=value} fields.
        """
        return cls(
            linesPerSecond=float(fields["lines_per_s"]),
            p50=float(fields["p50_ms"]),
            p99=float(fields["p99_ms"]),
            delivered=int(fields["delivered"]),
            expected=int(fields["expected"]),
            lost=int(fields["lost"]),
            misframed=int(fields["misframed"]),
            misordered=int(fields["misordered"]),
            errors=int(fields["errors"]),
            closed=int(fields["closed"]),
            loadCpu=float(fields["cpu"]),
            setupSeconds=float(fields["setup_s"]),
            serverMemory=serverMemory,
        )

    @property
    def faults(self) -> int:
        """
        Lines lost, mis-framed or out of order.
        """
        return self.lost + self.misframed + self.misordered


@dataclass
class Results:
    """
    The runs per test and server, one per round.
    """

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)

    def add(self, test: str, server: str, run: Run) -> None:
        """
        Record one round of C{test} on C{server}.
        """
        self.runs.setdefault((test, server), []).append(run)

    def median(self, test: str, server: str, what: str) -> float | None:
        """
        The median of one of L{Run}'s figures over a test's rounds on a
        server, if any ran.
        """
        runs = self.runs.get((test, server))
        return statistics.median(getattr(r, what) for r in runs) if runs else None

    def ratio(self, test: str, server: str) -> float | None:
        """
        The median lines/s for C{server} over the median for L{BASELINE}.
        """
        mine = self.median(test, server, "linesPerSecond")
        base = self.median(test, BASELINE, "linesPerSecond")
        if mine is None or not base:
            return None
        return mine / base

    def total(self, test: str, server: str, what: str) -> int:
        """
        The sum of one of L{Run}'s counts over every round.
        """
        return sum(getattr(r, what) for r in self.runs.get((test, server), []))


def measure(
    binary: Path,
    kinds: list[ServerKind],
    tests: list[str],
    load: Load,
    rounds: int,
    workdir: Path,
) -> Results:
    """
    Run every test on every server that takes part in it, for C{rounds}
    rounds, each test on a freshly started server, rotating the servers'
    order from round to round.
    """
    results = Results()
    for index in range(rounds):
        order = kinds[index % len(kinds):] + kinds[: index % len(kinds)]
        for kind in order:
            for test in tests:
                if test not in kind.tests:
                    continue
                server = RunningServer(kind, workdir)  # type: ignore[arg-type]
                try:
                    server.waitUntilAccepting()
                    fields = runLoad(
                        binary, load.arguments(server.port, test), load.timeout(test)
                    )
                    if server.process.poll() is not None:
                        raise BenchmarkError(f"{kind.name} died:\n{server.output()}")
                    run = Run.fromFields(fields, peakMemory(server.process.pid))
                finally:
                    server.stop()
                results.add(test, kind.name, run)
                faults = ""
                if run.faults or run.errors or run.closed:
                    faults = (
                        f"  LOST {run.lost}, misframed {run.misframed}, misordered "
                        f"{run.misordered}, error lines {run.errors}, closed {run.closed}"
                    )
                progress(
                    f"round {index + 1} {kind.name:11} {test:5} "
                    f"{run.linesPerSecond:9.0f} lines/s  p50 {run.p50:8.1f} ms  "
                    f"p99 {run.p99:8.1f} ms  setup {run.setupSeconds:4.1f} s  "
                    f"server peak {run.serverMemory / 2**20:5.0f} MiB  "
                    f"load CPU {run.loadCpu:4.0%}{faults}"
                )
    return results


def formatTable(results: Results, kinds: list[ServerKind], tests: list[str],
                load: Load) -> str:
    """
    The results as a Markdown table (medians, the ratio of lines/s to
    L{BASELINE}, each round, faults over all rounds, the server's peak
    memory and the load generator's busiest CPU share), followed by the
    targets for netsuite.
    """
    headers = {
        "flood": f"flood, {load.senders} senders as fast as read",
        "paced": f"paced, {load.senders} senders x {load.rate} lines/s",
    }
    lines = [
        "| test | server | lines/s (median) | vs reference | p50 ms | p99 ms | "
        "rounds (lines/s; p99 ms) | lost | misframed / misordered | error lines | "
        "closed by server | server peak memory | load CPU (max) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    anyLoadWarning = anyLoss = False
    for test in tests:
        for kind in kinds:
            runs = results.runs.get((test, kind.name))
            if not runs:
                continue
            # Paced, lines/s is the offered load: only flood's is compared.
            ratio = results.ratio(test, kind.name) if test == "flood" else None
            rounds = ", ".join(f"{r.linesPerSecond:.0f}; {r.p99:.0f}" for r in runs)
            loadCpu = max(r.loadCpu for r in runs)
            flag = " (!)" if loadCpu > LOAD_CPU_WARNING else ""
            anyLoadWarning = anyLoadWarning or bool(flag)
            lost = results.total(test, kind.name, "lost")
            expected = results.total(test, kind.name, "expected")
            lossFlag = " (L)" if lost else ""
            anyLoss = anyLoss or bool(lost)
            memory = max(r.serverMemory for r in runs) / 2**20
            lines.append(
                f"| {headers[test]} | {kind.description} | "
                f"{results.median(test, kind.name, 'linesPerSecond'):.0f}{lossFlag} | "
                f"{'' if ratio is None else f'{ratio:.2f}x'} | "
                f"{results.median(test, kind.name, 'p50'):.1f} | "
                f"{results.median(test, kind.name, 'p99'):.1f} | {rounds} | "
                f"{lost} of {expected} | "
                f"{results.total(test, kind.name, 'misframed')} / "
                f"{results.total(test, kind.name, 'misordered')} | "
                f"{results.total(test, kind.name, 'errors')} | "
                f"{results.total(test, kind.name, 'closed')} | "
                f"{memory:.0f} MiB | {loadCpu:.0%}{flag} |"
            )
    lines.append("")
    if anyLoss:
        lines.append(
            "(L) lines were lost: lines/s counts only the lines that arrived, "
            "so it is not comparable."
        )
    if anyLoadWarning:
        lines.append(
            f"(!) the load generator used over {LOAD_CPU_WARNING:.0%} of its CPU: "
            "that figure may be limited by the load, not the server."
        )
    lines.extend(verdicts(results, kinds, tests))
    return "\n".join(lines)


def verdicts(results: Results, kinds: list[ServerKind], tests: list[str]) -> list[str]:
    """
    One line per target for each netsuite server measured: whether it was
    met.
    """
    lines = []
    for kind in kinds:
        if not kind.name.startswith("netsuite"):
            continue
        mine = [t for t in tests if (t, kind.name) in results.runs]
        if not mine:
            continue
        faults = sum(results.total(t, kind.name, "faults") for t in mine)
        lines.append(
            f"target {kind.name}: no line lost, mis-framed or out of order "
            f"({', '.join(mine)}, all rounds): {faults} such lines, "
            f"{'met' if faults == 0 else 'NOT met'}"
        )
        ratio = results.ratio("flood", kind.name)
        if "flood" in mine and ratio is not None:
            lost = results.total("flood", kind.name, "lost")
            verdict = "met" if ratio >= FLOOD_TARGET and not lost else "NOT met"
            why = " (lines lost)" if lost else ""
            lines.append(
                f"target {kind.name} flood: >= {FLOOD_TARGET:.2f}x the reference's "
                f"lines/s: {ratio:.3f}x, {verdict}{why}"
            )
        p99 = results.median("paced", kind.name, "p99")
        if "paced" in mine and p99 is not None:
            verdict = "met" if p99 <= P99_TARGET_MS else "NOT met"
            lines.append(
                f"target {kind.name} paced: p99 <= {P99_TARGET_MS:.0f} ms: "
                f"{p99:.1f} ms, {verdict}"
            )
    return lines


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients in the room")
    parser.add_argument("--senders", type=int, default=10, help="clients that send")
    parser.add_argument("--messages", type=int, default=1000, help="lines per sender")
    parser.add_argument(
        "--payload", type=int, default=64, help="bytes of each line sent (48-4000)"
    )
    parser.add_argument(
        "--rate", type=int, default=50, help="lines/s per sender in the paced test"
    )
    parser.add_argument(
        "--stall", type=int, default=30,
        help="seconds without progress after which a run gives up",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    parser.add_argument(
        "--servers",
        default=",".join(k.name for k in SERVERS),
        help="comma-separated servers to run (default: all)",
    )
    parser.add_argument(
        "--tests", default=",".join(TESTS), help="comma-separated: flood, paced"
    )
    args = parser.parse_args(argv)
    names = {k.name for k in SERVERS}
    args.servers = args.servers.split(",")
    args.tests = args.tests.split(",")
    if not set(args.servers) <= names:
        parser.error(f"--servers takes {', '.join(sorted(names))}")
    if not set(args.tests) <= set(TESTS):
        parser.error(f"--tests takes {', '.join(TESTS)}")
    if min(args.senders, args.messages, args.rate, args.stall, args.rounds) < 1:
        parser.error("counts, rates and durations must be at least 1")
    if not 2 <= args.clients <= 10000 or args.senders > args.clients:
        parser.error("--clients goes from 2 to 10000, --senders up to --clients")
    if not 48 <= args.payload <= 4000:
        parser.error("--payload goes from 48 to 4000")
    return args


def main(argv: list[str] | None = None) -> int:
    """
    Build the load generator, run the benchmark, print the table.
    """
    args = parseArguments(sys.argv[1:] if argv is None else argv)
    if (os.cpu_count() or 1) < 2:
        progress("warning: fewer than 2 CPUs; server and load will share one")
    kinds = [k for k in SERVERS if k.name in args.servers]
    load = Load(
        args.clients, args.senders, args.messages, args.payload, args.rate, args.stall
    )
    try:
        raiseFileLimit(args.clients)
        binary = buildLoadGenerator(SOURCE, BINARY)
        with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
            results = measure(binary, kinds, args.tests, load, args.rounds, Path(tmp))
    except (BenchmarkError, subprocess.CalledProcessError) as e:
        print(f"chat_bench: {e}", file=sys.stderr)
        return 1
    print(
        f"chat benchmark: {describeMachine()}; servers on CPU {SERVER_CPU}, load on "
        f"CPU {LOAD_CPU}; {args.clients} clients, {args.senders} senders x "
        f"{args.messages} lines of {args.payload} B; median of {args.rounds} rounds"
    )
    print()
    print(formatTable(results, kinds, args.tests, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
