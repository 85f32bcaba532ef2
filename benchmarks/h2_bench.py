"""
HTTP/2 benchmark: large answers over HTTP/2 against the same answers over
HTTP/1.1 from the same server, in the same run.

Every server listens with TLS on loopback and offers both protocols by ALPN;
C{h2load} (nghttp2) fetches over one connection, one request at a time,
once with C{h2} and once with C{--h1}.  The figure is the answer's MB/s;
the ratio h2/h1 shows what HTTP/2 costs on that server.

  - C{netsuite}: C{twistd -n netsuite} with HTTP on, its static folder and
    C{--http-max-body} large enough for the answers below;
  - C{twistd-web}: stock C{twistd web --path} on the same folder, on an
    C{ssl:} endpoint (Twisted's own HTTP/2);
  - C{nginx}: with C{http2} on the same folder, one worker (when installed).

Tests:

  - static-32m: C{GET} of a 32 MiB file (every server);
  - answer-8m, answer-32m: C{POST /api/echo} of an 8 or 32 MiB JSON body,
    which netsuite answers with an answer of the same size, written at once
    (not a file: the case where Twisted's sending loop copied the rest of
    the answer for every frame).

Servers run on CPU 0 and h2load on CPU 1 (C{taskset}); each round starts
every server afresh.  The table shows the median of the rounds.

Usage::

    python3 benchmarks/h2_bench.py [--rounds 3] [--requests 4]

Needs C{h2load} (Debian: C{apt-get install -y nghttp2-client}) and
C{openssl}; nginx is optional.  Set C{PYTHONPATH} to another checkout to
benchmark its netsuite instead of the installed one.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo_bench import (  # noqa: E402
    _TWISTD,
    HOST,
    LOAD_CPU,
    BenchmarkError,
    RunningServer,
    ServerKind,
    describeMachine,
    pinned,
    progress,
)

MIB = 1024 * 1024

#: Seconds one h2load run may take.
LOAD_TIMEOUT = 600


@dataclass(frozen=True)
class Test:
    """
    One row group: what h2load asks for (C{body} names a file to POST), and
    which servers answer it.
    """

    name: str
    path: str
    servers: tuple[str, ...]
    body: str | None = None


TESTS = [
    Test("static-32m", "/big.bin", ("netsuite", "twistd-web", "nginx")),
    Test("answer-8m", "/api/echo", ("netsuite",), "body-8m.json"),
    Test("answer-32m", "/api/echo", ("netsuite",), "body-32m.json"),
]


def prepare(work: Path) -> None:
    """
    The static folder with its 32 MiB file, the JSON bodies, and a
    self-signed certificate for C{HOST}.
    """
    www = work / "www"
    www.mkdir()
    with (www / "big.bin").open("wb") as f:
        for _ in range(32):
            f.write(bytes(range(256)) * 4096)
    for size in (8, 32):
        text = "x" * (size * MIB - 16)
        (work / f"body-{size}m.json").write_text(json.dumps({"data": text}))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
         "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )


def netsuiteCommand(work: Path, port: int) -> list[str]:
    """
    netsuite with only HTTP on; HTTPS on C{port}.
    """
    return [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "netsuite", "--no-chat", "--no-proxy", "--no-echo", "--no-daytime", "--no-downloads",
        "--http", f"tcp:0:interface={HOST}",
        "--https", f"tcp:{port}:interface={HOST}", "--tls",
        "--tls-cert", str(work / "cert.pem"), "--tls-key", str(work / "key.pem"),
        "--http-root", str(work / "www"), "--http-max-body", str(40 * MIB),
        "--http-access-log", str(work / f"netsuite-{port}-access.log"),
    ]


def twistdWebCommand(work: Path, port: int) -> list[str]:
    """
    Stock C{twistd web --path} on an C{ssl:} endpoint.
    """
    return [
        sys.executable, "-c", _TWISTD,
        "-n", "--pidfile=", "--reactor=epoll",
        "--logfile", str(work / f"twistd-web-{port}.log"),
        "web", "--path", str(work / "www"),
        "--listen", f"ssl:{port}:interface={HOST}:privateKey={work / 'key.pem'}"
                    f":certKey={work / 'cert.pem'}",
    ]


def nginxCommand(work: Path, port: int) -> list[str]:
    """
    nginx in the foreground as one process, HTTP/2 and HTTP/1.1 over TLS.
    """
    config = work / f"nginx-{port}.conf"
    temp = work / "nginx-temp"
    temp.mkdir(exist_ok=True)
    config.write_text(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {work / f'nginx-{port}.pid'};\n"
        f"error_log {work / f'nginx-{port}-error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {work / f'nginx-{port}-access.log'};\n"
        f"    client_body_temp_path {temp};\n"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    server {\n"
        f"        listen {HOST}:{port} ssl http2;\n"
        f"        ssl_certificate {work / 'cert.pem'};\n"
        f"        ssl_certificate_key {work / 'key.pem'};\n"
        f"        root {work / 'www'};\n"
        "    }\n"
        "}\n"
    )
    return ["nginx", "-p", f"{work}/", "-e", str(work / f"nginx-{port}-error.log"),
            "-c", str(config)]


SERVERS: dict[str, Callable[[Path, int], list[str]]] = {
    "netsuite": netsuiteCommand,
    "twistd-web": twistdWebCommand,
    "nginx": nginxCommand,
}

_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s|us)")
_CODES = re.compile(r"status codes: (\d+) 2xx")
_DATA = re.compile(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data")


def fetch(work: Path, port: int, test: Test, protocol: str, requests: int) -> float:
    """
    Run h2load once: C{requests} requests, one at a time, over one
    connection; return the answers' MB/s (bytes of DATA, or of HTTP/1.1
    bodies, over the time h2load took).

    @raise BenchmarkError: h2load failed, or an answer was not a 2xx.
    """
    command = ["h2load", "-n", str(requests), "-c", "1", "-m", "1"]
    if protocol == "h1":
        command.append("--h1")
    if test.body is not None:
        command += ["-d", str(work / test.body), "-H", "content-type: application/json"]
    command.append(f"https://{HOST}:{port}{test.path}")
    result = subprocess.run(
        pinned(LOAD_CPU, command), capture_output=True, text=True, timeout=LOAD_TIMEOUT
    )
    finished = _FINISHED.search(result.stdout)
    codes = _CODES.search(result.stdout)
    data = _DATA.search(result.stdout)
    if result.returncode != 0 or not (finished and codes and data) or int(codes[1]) != requests:
        raise BenchmarkError(f"h2load {protocol} {test.name} failed:\n{result.stdout}{result.stderr}")
    seconds = float(finished[1]) / {"s": 1, "ms": 1e3, "us": 1e6}[finished[2]]
    return int(data[1]) / seconds / 1e6


def formatTable(results: dict[tuple[str, str, str], list[float]]) -> str:
    lines = [
        "| test | server | h2 MB/s | HTTP/1.1 MB/s | h2 / HTTP/1.1 | rounds (h2 / h1) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for test in TESTS:
        for server in test.servers:
            h2 = results.get((test.name, server, "h2"))
            h1 = results.get((test.name, server, "h1"))
            if not h2 or not h1:
                continue
            m2, m1 = statistics.median(h2), statistics.median(h1)
            rounds = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(h2, h1))
            lines.append(f"| {test.name} | {server} | {m2:.0f} | {m1:.0f} | {m2 / m1:.2f}x | {rounds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4, help="requests per h2load run")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args(argv)
    try:
        for tool in ("h2load", "openssl", "taskset"):
            if shutil.which(tool) is None:
                raise BenchmarkError(f"{tool} is not installed (h2load: apt-get install nghttp2-client)")
        servers = [s for s in args.servers.split(",") if s]
        unknown = [s for s in servers if s not in SERVERS]
        if unknown:
            raise BenchmarkError(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVERS)}")
        if "nginx" in servers and shutil.which("nginx") is None:
            progress("nginx is not installed: left out")
            servers.remove("nginx")
        results: dict[tuple[str, str, str], list[float]] = {}
        with tempfile.TemporaryDirectory(prefix="h2bench-") as name:
            work = Path(name)
            prepare(work)
            for number in range(args.rounds):
                for server in servers[number % len(servers):] + servers[:number % len(servers)]:
                    kind = ServerKind(server, server, partial(SERVERS[server], work))
                    running = RunningServer(kind, work)
                    try:
                        running.waitUntilAccepting()
                        for test in TESTS:
                            if server not in test.servers:
                                continue
                            for protocol in ("h2", "h1"):
                                figure = fetch(work, running.port, test, protocol, args.requests)
                                results.setdefault((test.name, server, protocol), []).append(figure)
                                progress(f"round {number + 1}: {test.name} {server} {protocol}: {figure:.0f} MB/s")
                    finally:
                        running.stop()
    except BenchmarkError as e:
        print(f"h2_bench: {e}", file=sys.stderr)
        return 1
    print(f"{describeMachine()}; {args.rounds} rounds, {args.requests} requests a run, one connection")
    print()
    print(formatTable(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
