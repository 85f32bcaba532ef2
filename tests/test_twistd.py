"""
End-to-end tests of C{twistd -n netsuite} and C{twist netsuite}, run as real
processes: listeners log their real addresses and serve, and start-up
failures are one readable line with a non-zero exit status.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.task import deferLater

from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.helpers import Collector, connect, occupiedPort, rawExchange

ROOT = str(Path(__file__).resolve().parent.parent)
TWISTD = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
TWIST = "import sys; sys.argv[0] = 'twist'; from twisted.application.twist._twist import Twist; sys.exit(Twist.main())"


def environment(home: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = home
    env["XDG_DATA_HOME"] = os.path.join(home, "data")
    return env


class Running(ProcessProtocol):
    """
    Collects a process's output and notices listener lines as they come.
    """

    #: The folder it runs in (its HOME).
    home = ""

    def __init__(self, expected: int) -> None:
        self.output = b""
        self.expected = expected
        self.listening: defer.Deferred[list[tuple[str, str, int, bool]]] = defer.Deferred()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data
        found = re.findall(
            rb"(\S+) listening on (tcp|udp) 127\.0\.0\.1:(\d+)( \(TLS\))?", self.output
        )
        if len(found) >= self.expected and not self.listening.called:
            self.listening.callback(
                [(s.decode(), k.decode(), int(p), bool(t)) for s, k, p, t in found]
            )

    async def said(self, text: bytes, seconds: float = 10.0) -> None:
        """
        Wait until the process's output holds C{text}.

        @raise AssertionError: it did not within C{seconds}.
        """
        for _ in range(int(seconds / 0.05)):
            if text in self.output:
                return
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"not said: {text!r} in {self.output!r}")

    def processEnded(self, reason) -> None:
        code = reason.value.exitCode
        if code is None:
            code = -reason.value.signal
        if not self.listening.called:
            self.listening.errback(AssertionError(self.output.decode(errors="replace")))
        self.ended.callback(code)


def spawn(testCase: TestCase, process: Running, home: str, *args: str, usePTY: bool = False) -> Any:
    """
    Run C{python ARGS} in C{home} (its C{HOME} too) with C{process} as its
    protocol, killed when C{testCase} ends if it still runs; return its
    transport.

    @param usePTY: run it in a terminal of its own (its controlling one).
    """
    transport = reactor.spawnProcess(
        process, sys.executable, [sys.executable, *args], env=environment(home), path=home, usePTY=usePTY
    )

    def kill() -> defer.Deferred[int]:
        if not process.ended.called:
            transport.signalProcess("KILL")
        return process.ended

    testCase.addCleanup(kill)
    return transport


class TwistdTests(TestCase):
    timeout = 60

    async def running(
        self, expected: int, *args: str, terminal: bool | None = None
    ) -> tuple[Running, Any, list[tuple[str, str, int, bool]]]:
        """
        Start C{twistd -n netsuite ARGS} in a new home folder (the
        process's C{home}), killed when the test ends, and wait for
        C{expected} listener lines.

        @param terminal: give it a terminal of its own (C{True}), none
            (C{False}), or the test's (L{None}).

        @return: the process protocol, its transport, and the listeners
            (service, kind, port, TLS).
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        process = Running(expected=expected)
        process.home = home
        runner = "import os; os.setsid(); " + TWISTD if terminal is False else TWISTD
        transport = spawn(
            self, process, home, "-c", runner, "-n", "--pidfile=", "netsuite", *args, usePTY=bool(terminal)
        )
        return process, transport, await process.listening

    async def netsuite(self, runner: str, *args: str) -> tuple[str, int]:
        """
        Run netsuite until it exits by itself; return its output and status.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-c", runner, *(["-n", "--pidfile="] if runner is TWISTD else []), "netsuite",
             "--no-http", "--no-chat", *args],
            env=environment(home),
            path=home,
        )
        return (out + err).decode(), code

    def assertOneReadableLine(self, output: str, code: int, *fragments: str) -> None:
        self.assertNotEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "netsuite: " in line]
        self.assertEqual(len(lines), 1, output)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    async def test_servesAndLogsRealAddresses(self) -> None:
        """
        C{twistd -n netsuite} logs one line per listener with its real
        address, serves echo, UDP echo, daytime and TLS echo there, and stops
        cleanly on SIGTERM.
        """
        process, transport, listeners = await self.running(
            11,
            "--http", "tcp:0:interface=127.0.0.1",
            "--https", "tcp:0:interface=127.0.0.1",
            "--echo", "tcp:0:interface=127.0.0.1",
            "--echo-udp", "udp:0:interface=127.0.0.1",
            "--daytime", "tcp:0:interface=127.0.0.1",
            "--echo-tls", "tcp:0:interface=127.0.0.1",
            "--daytime-tls", "tcp:0:interface=127.0.0.1",
            "--chat", "tcp:0:interface=127.0.0.1",
            "--chat-tls", "tcp:0:interface=127.0.0.1",
            "--proxy", "tcp:0:interface=127.0.0.1",
            "--proxy-tls", "tcp:0:interface=127.0.0.1",
            "--proxy-allow-loopback",
            "--tls",
        )
        byName = {(s, tls): (kind, port) for s, kind, port, tls in listeners}
        self.assertEqual(
            sorted(byName),
            [("chat", False), ("chat", True), ("daytime", False), ("daytime", True),
             ("echo", False), ("echo", True), ("echo-udp", False), ("http", False),
             ("http", True), ("proxy", False), ("proxy", True)],
        )
        self.assertIn(b"TLS certificate SHA-256 fingerprint: ", process.output)
        self.assertTrue(os.path.exists(os.path.join(process.home, "data", "netsuite", "tls", "localhost.pem")))
        client = await connect(self, byName[("echo", False)][1], Collector())
        client.transport.write(b"through twistd")
        await client.waitFor(14)
        self.assertEqual(b"".join(client.received), b"through twistd")
        daytime = await connect(self, byName[("daytime", False)][1], Collector())
        await daytime.closed
        self.assertTrue(b"".join(daytime.received).endswith(b"-UTC\r\n"))
        home = await threads.deferToThread(
            rawExchange,
            byName[("http", False)][1],
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        self.assertIn(b"HTTP/1.1 200 OK", home)
        self.assertIn(b"echo-udp", home)
        proxied = await threads.deferToThread(
            rawExchange,
            byName[("proxy", False)][1],
            b"GET http://127.0.0.1:%d/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            % (byName[("http", False)][1],),
        )
        self.assertIn(b"HTTP/1.1 200 OK", proxied)
        self.assertIn(b"Via: 1.1 netsuite", proxied)
        metrics = await threads.deferToThread(
            rawExchange,
            byName[("http", False)][1],
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        self.assertIn(b'netsuite_service_events_total{event="status_200",service="proxy"} 1.0', metrics)
        transport.signalProcess("TERM")
        code = await process.ended
        # twistd ends with the signal that stopped it, as Unix daemons do.
        self.assertIn(code, (0, -signal.SIGTERM), process.output)
        self.assertIn(b"Server Shut Down.", process.output)
        self.assertNotIn(b"Traceback", process.output)

    async def test_portInUseIsOneLine(self) -> None:
        port = occupiedPort(self)
        for runner in (TWISTD, TWIST):
            output, code = await self.netsuite(
                runner, "--daytime", "tcp:0:interface=127.0.0.1",
                "--echo", f"tcp:{port}:interface=127.0.0.1",
            )
            self.assertOneReadableLine(output, code, f"tcp:{port}", "already in use")

    async def test_portInUseDaemonized(self) -> None:
        """
        Daemonizing (no C{-n}), a listener that cannot start ends twistd in
        the terminal with the reason, status 1, and no pid file left.
        twistd's waiting process hung for ever: the L{SystemExit} the
        daemon ended with never reached the pipe it waits on.
        """
        port = occupiedPort(self)
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        pidfile = os.path.join(home, "twistd.pid")
        process = Running(expected=1)
        process.listening.addErrback(lambda failure: None)  # it never listens
        spawn(
            self, process, home,
            "-c", TWISTD, f"--pidfile={pidfile}", "--logfile", os.path.join(home, "twistd.log"),
            "netsuite", "--no-http", "--no-chat", "--daytime", "tcp:0:interface=127.0.0.1",
            "--echo", f"tcp:{port}:interface=127.0.0.1",
        )
        for _ in range(200):
            if process.ended.called:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(process.ended.called, "twistd did not end")
        code = await process.ended
        output = process.output.decode(errors="replace")
        self.assertEqual(code, 1, output)
        for fragment in ("netsuite: echo: cannot listen on", f"tcp:{port}", "Address already in use"):
            self.assertIn(fragment, output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(os.path.exists(pidfile))

    async def test_daemonHoldsItsLocksByItsOwnId(self) -> None:
        """
        Daemonized, the lock files of the data and download directories name
        the daemon's process (the one in the pid file), not the process
        that read the options and is gone: a second netsuite's refusal
        named a process that did not exist.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        pidfile = os.path.join(home, "twistd.pid")
        data = os.path.join(home, "state")
        process = Running(expected=0)
        process.listening.addErrback(lambda failure: None)
        spawn(
            self, process, home,
            "-c", TWISTD, f"--pidfile={pidfile}", "--logfile", os.path.join(home, "twistd.log"),
            "netsuite", "--no-http", "--no-chat", "--no-echo", "--no-proxy", "--data-dir", data,
            "--daytime", "tcp:0:interface=127.0.0.1",
        )
        for _ in range(200):
            if process.ended.called and os.path.exists(pidfile):
                break
            await deferLater(reactor, 0.1, lambda: None)
        with open(pidfile) as f:
            daemon = int(f.read())
        self.addCleanup(self._stopDaemon, daemon)
        lock = os.path.join(data, ".netsuite.lock")
        for _ in range(100):
            with open(lock) as f:
                if f.read() == str(daemon):
                    break
            await deferLater(reactor, 0.1, lambda: None)
        with open(lock) as f:
            self.assertEqual(f.read(), str(daemon))

    async def _stopDaemon(self, pid: int) -> None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await deferLater(reactor, 0.1, lambda: None)
        os.kill(pid, signal.SIGKILL)

    async def test_badEndpointIsOneLine(self) -> None:
        output, code = await self.netsuite(TWISTD, "--echo", "tcp:eighty")
        self.assertOneReadableLine(output, code, "--echo", "tcp:eighty")

    async def test_unreadableCertificateIsOneLine(self) -> None:
        output, code = await self.netsuite(TWIST, "--tls-cert", "missing.pem")
        self.assertOneReadableLine(output, code, "missing.pem", "No such file")

    async def test_badConfigIsOneLine(self) -> None:
        output, code = await self.netsuite(TWISTD, "--config", "nonexistent.toml")
        self.assertOneReadableLine(output, code, "nonexistent.toml")

    async def test_mistypedFlagIsOneLine(self) -> None:
        """
        A mistyped flag is one line that names it and the flag meant, under
        twistd and twist; twistd printed its whole help (218 lines) with
        the one useful line last.
        """
        for runner in (TWISTD, TWIST):
            output, code = await self.netsuite(runner, "--echo-port", "7007")
            self.assertEqual(code, 1, output)
            self.assertEqual(
                output.strip(),
                "netsuite: unknown option '--echo-port' (did you mean --echo tcp:8007:interface=127.0.0.1?); "
                "twistd netsuite --help lists every option",
            )

    async def test_twistHelpListsOptions(self) -> None:
        output, code = await self.netsuite(TWIST, "--help")
        self.assertEqual(code, 0, output)
        for flag in ("--http=", "--echo-udp=", "--tls-cert=", "--no-chat", "--config="):
            self.assertIn(flag, output)

    async def test_secondSignalAbortsWhatIsLeft(self) -> None:
        """
        A second SIGTERM while netsuite waits out its grace period for a
        client that takes nothing aborts that client's connection at once,
        with one log line, and netsuite ends; Twisted's handler logged a
        C{ReactorNotRunning} traceback for it, and waited the whole grace.
        """
        process, transport, listeners = await self.running(
            2,
            "--no-http", "--no-chat", "--no-daytime", "--no-proxy", "--no-downloads",
            "--echo", "tcp:0:interface=127.0.0.1", "--echo-udp", "udp:0:interface=127.0.0.1",
            "--grace", "300",
        )
        [port] = [p for s, kind, p, tls in listeners if s == "echo" and kind == "tcp"]
        # A client that sends and never reads: its echo waits for it.
        client = await connect(self, port, Collector())
        client.transport.pauseProducing()
        client.transport.write(b"x" * (8 * 1024 * 1024))
        await deferLater(reactor, 0.5, lambda: None)
        transport.signalProcess("TERM")
        await process.said(b"Received SIGTERM, shutting down.")
        await deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(process.ended.called, process.output)
        transport.signalProcess("TERM")
        code = await process.ended
        self.assertIn(code, (0, -signal.SIGTERM), process.output)
        self.assertIn(b"Received SIGTERM again: aborted the 1 connection(s) still open", process.output)
        self.assertNotIn(b"Traceback", process.output)
        self.assertIn(b"Server Shut Down.", process.output)

    async def test_hangUpWithATerminal(self) -> None:
        """
        SIGHUP to C{twistd -n netsuite} started from a terminal (which went
        away) stops it as SIGTERM does: chat users are told, and twistd
        ends by the signal.  It killed the process at once.
        """
        process, transport, listeners = await self.running(
            1, "--no-http", "--no-daytime", "--no-proxy", "--no-downloads", "--no-echo",
            "--chat", "tcp:0:interface=127.0.0.1", terminal=True,
        )
        [(_, _, port, _)] = listeners
        client = await connect(self, port, Collector())
        client.transport.write(b"alice\r\n")
        await client.waitFor(1)
        transport.signalProcess("HUP")
        code = await process.ended
        await client.closed
        self.assertIn(b"the server is shutting down; bye", b"".join(client.received))
        self.assertEqual(code, -signal.SIGHUP, process.output)
        self.assertIn(b"Received SIGHUP (the terminal went away), shutting down.", process.output)
        self.assertIn(b"Server Shut Down.", process.output)
        self.assertNotIn(b"Traceback", process.output)

    async def test_hangUpWithoutATerminal(self) -> None:
        """
        C{twistd -n netsuite} without a terminal (as systemd, Docker or
        supervisord run it) logs a SIGHUP and goes on: it was meant as a
        reload.
        """
        process, transport, listeners = await self.running(
            2, "--no-http", "--no-chat", "--no-daytime", "--no-proxy", "--no-downloads",
            "--echo", "tcp:0:interface=127.0.0.1", "--echo-udp", "udp:0:interface=127.0.0.1", terminal=False,
        )
        [port] = [p for s, kind, p, tls in listeners if kind == "tcp"]
        client = await connect(self, port, Collector())
        client.transport.write(b"ready")  # answered: the reactor runs, its handlers set
        await client.waitFor(5)
        transport.signalProcess("HUP")
        await process.said(b"Received SIGHUP: ignored")
        client.transport.write(b"still here")
        await client.waitFor(15)
        client.transport.loseConnection()
        transport.signalProcess("TERM")
        self.assertIn(await process.ended, (0, -signal.SIGTERM), process.output)
        self.assertNotIn(b"Traceback", process.output)

    async def test_nginxSignals(self) -> None:
        """
        SIGUSR2 (nginx's binary upgrade) is logged and ignored, and SIGQUIT
        (nginx's graceful stop) stops netsuite as SIGTERM does, its pid
        file removed: each ended the process at once (SIGQUIT with a core
        dump).
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        pidfile = os.path.join(home, "twistd.pid")
        process = Running(expected=1)
        transport = spawn(
            self, process, home, "-c", TWISTD, "-n", f"--pidfile={pidfile}", "netsuite",
            "--no-http", "--no-chat", "--no-daytime", "--no-proxy", "--no-downloads",
            "--echo", "tcp:0:interface=127.0.0.1", "--echo-udp", "udp:0:interface=127.0.0.1",
        )
        listeners = await process.listening
        [port] = [p for s, kind, p, tls in listeners if kind == "tcp"]
        client = await connect(self, port, Collector())
        client.transport.write(b"ready")  # answered: the reactor runs, its handlers set
        await client.waitFor(5)
        transport.signalProcess(signal.SIGUSR2)
        await process.said(b"Received SIGUSR2: ignored")
        client.transport.write(b"still here")
        await client.waitFor(15)
        client.transport.loseConnection()
        transport.signalProcess(signal.SIGQUIT)
        self.assertIn(await process.ended, (0, -signal.SIGTERM), process.output)
        self.assertIn(b"Server Shut Down", process.output)
        self.assertFalse(os.path.exists(pidfile))
        self.assertNotIn(b"Traceback", process.output)

    async def test_hangUpIgnoredByADaemon(self) -> None:
        """
        SIGHUP to a daemonized netsuite is logged and ignored: it goes on
        serving, and SIGTERM then stops it and removes its pid file.
        """
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        pidfile, logfile = os.path.join(home, "twistd.pid"), os.path.join(home, "twistd.log")
        process = Running(expected=1)
        process.listening.addErrback(lambda failure: None)  # its log is a file
        spawn(
            self, process, home,
            "-c", TWISTD, f"--pidfile={pidfile}", "--logfile", logfile,
            "netsuite", "--no-http", "--no-chat", "--no-daytime", "--no-proxy", "--no-downloads",
            "--echo", "tcp:0:interface=127.0.0.1", "--echo-udp", "udp:0:interface=127.0.0.1",
        )
        self.assertEqual(await process.ended, 0, process.output)

        async def logged(pattern: bytes) -> re.Match[bytes]:
            for _ in range(200):
                if os.path.exists(logfile):
                    with open(logfile, "rb") as f:
                        found = re.search(pattern, f.read())
                    if found:
                        return found
                await deferLater(reactor, 0.05, lambda: None)
            self.fail(f"not logged: {pattern!r}")

        port = int((await logged(rb"echo listening on tcp 127\.0\.0\.1:(\d+)")).group(1))
        with open(pidfile) as f:
            pid = int(f.read())
        self.addCleanup(lambda: os.path.exists(pidfile) and os.kill(pid, signal.SIGKILL))
        client = await connect(self, port, Collector())
        client.transport.write(b"ready")  # answered: the reactor runs, its handlers set
        await client.waitFor(5)
        os.kill(pid, signal.SIGHUP)
        await logged(rb"Received SIGHUP: ignored")
        client.transport.write(b"still here")
        await client.waitFor(15)
        self.assertEqual(b"".join(client.received), b"readystill here")
        client.transport.loseConnection()
        os.kill(pid, signal.SIGTERM)
        await logged(rb"Server Shut Down\.")
        for _ in range(100):
            if not os.path.exists(pidfile):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(os.path.exists(pidfile))
