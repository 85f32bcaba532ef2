"""
Tests for L{netsuite.tap}: options, TOML config, the plugin and the service
tree.  No port is bound: a L{MemoryReactor} stands in for the reactor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, Set, Tuple

from twisted.application.service import IServiceMaker
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase

from netsuite import tap
from netsuite.web import site as siteModule
from netsuite.accesslog import releaseAccessLog
from netsuite.listen import DatagramListener, StreamListener
from netsuite.proxyauth import hashPassword
from netsuite.tap import SETTINGS, ConfigError, Options, makeService
from netsuite.text import shortened


class MemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also records UDP listeners.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.udpServers: list[tuple] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return self.listenTCP(port, None, interface=interface)


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def _listenerValues(args: Sequence[str], value: Callable[[Any], Any]) -> Set[Tuple[str, Any]]:
    """
    C{(service name, value(tracker))} of each stream listener of the
    service tree C{twistd netsuite} builds from C{args}.
    """
    root = makeService(parse(*args), MemoryReactor())
    found = set()
    pending = list(root)
    while pending:
        service = pending.pop()
        if isinstance(service, StreamListener):
            found.add((service.serviceName, value(service.tracker)))
        pending.extend(getattr(service, "services", []))
    return found


class OptionsTests(SynchronousTestCase):
    def test_defaultsAreLoopbackUnprivileged(self) -> None:
        """
        Every default listener is on 127.0.0.1 and an unprivileged port.
        """
        options = parse()
        self.assertEqual(options["http"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(options["chat"], ["tcp:8023:interface=127.0.0.1"])
        self.assertEqual(options["echo"], ["tcp:8007:interface=127.0.0.1"])
        self.assertEqual(options["echo-udp"], ["udp:8007:interface=127.0.0.1"])
        self.assertEqual(options["daytime"], ["tcp:8013:interface=127.0.0.1"])
        self.assertEqual(options["proxy"], ["tcp:3128:interface=127.0.0.1"])
        for setting in SETTINGS:
            if setting.kind in ("listen", "udp"):
                for description in setting.default:
                    self.assertIn("interface=127.0.0.1", description)
                    self.assertGreater(int(description.split(":")[1]), 1023)
        self.assertIsNone(options["tls-options"])

    def test_listenerFlagsRepeatAndReplaceDefault(self) -> None:
        options = parse("--echo", "tcp:1", "--echo", "tcp6:2:interface=\\:\\:1")
        self.assertEqual(options["echo"], ["tcp:1", "tcp6:2:interface=\\:\\:1"])
        self.assertEqual(options["daytime"], ["tcp:8013:interface=127.0.0.1"])

    def test_disableFlags(self) -> None:
        options = parse("--no-chat", "--no-echo")
        self.assertTrue(options["no-chat"])
        self.assertTrue(options["no-echo"])
        self.assertFalse(options["no-daytime"])

    def test_connectionLimits(self) -> None:
        """
        The connection limits reach every stream listener; 0 means no limit.
        """
        root = makeService(
            parse("--max-connections", "10", "--max-connections-per-host", "0"), MemoryReactor()
        )
        tracker = root.getServiceNamed("echo tcp:8007:interface=127.0.0.1").tracker
        self.assertEqual((tracker.maxConnections, tracker.maxPerHost), (10, None))
        self.assertIs(tracker.budget, root.budget)
        self.assertIsNone(root.budget.maxPerHost)
        # Per address on all listeners together, by default 256; every
        # stream listener shares the one budget, the proxy's counting twice.
        root = makeService(parse(), MemoryReactor())
        trackers = [child.tracker for child in root if hasattr(child, "tracker")]
        self.assertGreaterEqual(len(trackers), 5)
        self.assertEqual({id(tracker.budget) for tracker in trackers}, {id(root.budget)})
        self.assertEqual(root.budget.maxPerHost, 256)
        self.assertEqual(root.getServiceNamed("proxy tcp:3128:interface=127.0.0.1").tracker.weight, 2)
        # The proxy's attempts to connect racing past a request's first come
        # out of the budget too.
        self.assertIs(root.getServiceNamed("proxy tcp:3128:interface=127.0.0.1").tracker.wrappedFactory.budget, root.budget)
        self.assertEqual(root.getServiceNamed("echo tcp:8007:interface=127.0.0.1").tracker.weight, 1)
        self.assertConfigError(["--max-connections", "1.5"], "--max-connections", "whole number")
        self.assertConfigError(["--max-connections-per-host", "-1"], "--max-connections-per-host")

    def test_handshakeTimeout(self) -> None:
        """
        C{--tls-handshake-timeout} (30 seconds by default) reaches every
        stream listener; 0 means no deadline.
        """

        def timeouts(*args: str) -> set:
            return _listenerValues(args, lambda tracker: tracker.handshakeTimeout)

        services = {"http", "chat", "echo", "daytime", "proxy"}  # discard listens nowhere by default
        self.assertEqual(timeouts(), {(name, 30.0) for name in services})
        self.assertEqual(timeouts("--tls-handshake-timeout", "2.5"), {(name, 2.5) for name in services})
        self.assertEqual(timeouts("--tls-handshake-timeout", "0"), {(name, None) for name in services})
        self.assertConfigError(["--tls-handshake-timeout", "-1"], "--tls-handshake-timeout", "0 or more seconds")

    def test_lingerLimits(self) -> None:
        """
        C{--linger-time} and C{--linger-timeout} (30 and 5 seconds by
        default) reach every stream listener; they must be above 0.
        """

        def limits(*args: str) -> set:
            return _listenerValues(args, lambda tracker: (tracker.lingerTime, tracker.lingerTimeout))

        services = {"http", "chat", "echo", "daytime", "proxy"}
        self.assertEqual(limits(), {(name, (30.0, 5.0)) for name in services})
        self.assertEqual(
            limits("--linger-time", "2.5", "--linger-timeout", "0.5"), {(name, (2.5, 0.5)) for name in services}
        )
        self.assertConfigError(["--linger-time", "0"], "--linger-time", "above 0")
        self.assertConfigError(["--linger-timeout", "-1"], "--linger-timeout", "above 0")

    def test_numbers(self) -> None:
        options = parse("--echo-idle-timeout", "2.5", "--grace", "0")
        self.assertEqual(options["echo-idle-timeout"], 2.5)
        self.assertEqual(options["grace"], 0)

    def test_ratesTooSmall(self) -> None:
        """
        A rate above 0 too small to wait for (its inverse infinite, or
        longer than decades) is refused; a chat rate of 1e-320 told a
        client to speak again in "inf s".
        """
        self.assertConfigError(["--chat-rate", "1e-320"], "--chat-rate: '1e-320' is too small; expected 1e-09 or more")
        self.assertConfigError(["--echo-udp-rate", "1e-12"], "--echo-udp-rate: '1e-12' is too small")
        self.assertEqual(parse("--chat-rate", "0", "--echo-udp-rate", "1e-9")["chat-rate"], 0)

    def assertConfigError(self, args: list[str], *fragments: str) -> str:
        error = self.assertRaises(ConfigError, parse, *args)
        message = str(error)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)
        # What the user sees on stderr (SystemExit's code):
        self.assertEqual(error.code, f"netsuite: {message}")
        return message

    def test_proxyOptions(self) -> None:
        """
        The proxy's options reach its factory (one for the plain and TLS
        listeners); bad values are one readable line.
        """
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:" + hashPassword("pw", n=2) + "\n")
        root = makeService(
            parse(
                "--proxy-clients", "10.0.0.0/8, 127.0.0.1", "--proxy-allow-loopback",
                "--proxy-deny-private", "--proxy-connect-ports", "443, 8443",
                "--proxy-users", users, "--proxy-forwarded-for", "--proxy-connect-timeout", "3",
                "--proxy-max-tunnels", "7", "--proxy-pool-per-host", "2", "--proxy-lookups-per-client", "3",
            ),
            MemoryReactor(),
        )
        factory = root.proxy
        rules = factory.rules
        self.assertEqual([str(n) for n in rules.clients], ["10.0.0.0/8", "127.0.0.1/32"])
        self.assertEqual((rules.allowLoopback, rules.allowPrivate), (True, False))
        self.assertEqual(rules.connectPorts, frozenset({443, 8443}))
        self.assertEqual(list(factory.authenticator.users), ["alice"])
        settings = factory.settings
        self.assertEqual(
            (settings.forwardedFor, settings.connectTimeout, settings.maxTunnels, settings.poolPerHost),
            (True, 3.0, 7, 2),
        )
        self.assertEqual(factory.lookups.perClient, 3)
        # By default 16; a count, never below 0 (-1 queued every lookup for good).
        self.assertEqual(makeService(parse(), MemoryReactor()).proxy.lookups.perClient, 16)
        self.assertConfigError(["--proxy-lookups-per-client", "-1"], "--proxy-lookups-per-client")
        self.assertConfigError(["--proxy-clients", "10.0.0.0/33"], "--proxy-clients")
        self.assertConfigError(["--proxy-connect-ports", "0"], "--proxy-connect-ports", "'0'")
        self.assertConfigError(["--proxy-connect-ports", "https"], "--proxy-connect-ports")
        self.assertConfigError(["--proxy-connect-timeout", "0"], "--proxy-connect-timeout", "more than 0")
        # 0 is no "none" for these: every connection or request was refused.
        for name in ("--http-idle-timeout", "--http-header-timeout", "--proxy-idle-timeout", "--proxy-header-timeout"):
            self.assertConfigError([name, "0"], name, "more than 0 seconds")
        for name in ("--http-max-request-line", "--http-max-header-size", "--http-max-headers", "--chat-max-line"):
            self.assertConfigError([name, "0"], name, "1 or more")
        self.assertConfigError(["--proxy-users", "missing.users"], "--proxy-users", "missing.users")

    def test_proxyDecoyKeyKept(self) -> None:
        """
        With users, the proxy's key choosing unknown names' costs is made
        in the data directory (private) at the first start and is the same
        at the next, so that those costs do not change with a restart (a
        new key at every start told unknown names from real users, whose
        costs never change); a file holding no key is one line.
        """
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:" + hashPassword("pw", n=2) + "\n")
        data = os.path.abspath(self.mktemp())
        args = ("--data-dir", data, "--no-downloads", "--proxy-users", users)
        keys = [makeService(parse(*args), MemoryReactor()).proxy.authenticator._decoyKey for _ in range(2)]
        self.assertEqual(keys[0], keys[1])
        keyFile = os.path.join(data, "proxy-decoy-key")
        self.assertEqual(os.stat(keyFile).st_mode & 0o777, 0o600)
        with open(keyFile, "w") as f:
            f.write("\n")
        error = self.assertRaises(ConfigError, parse, *args)
        self.assertEqual(
            error.message, f"{keyFile} holds no usable key (64 hexadecimal digits); delete it and a new one is made"
        )

    def test_countsAreBoundedWholeNumbers(self) -> None:
        """
        A count is a whole number up to its bound: C{--chat-history} of
        2**63 or C{1e300} ended the start in an C{OverflowError} traceback
        (the room's history C{deque}), and a count above 2**53 was
        silently rounded through a float.  Text is read exactly, whole
        numbers written as C{1e3} or C{20.0} still count.
        """
        for value in ("1e300", str(2**63), "1e999999999"):
            self.assertConfigError(["--chat-history", value], "--chat-history: expected at most")
        most = tap.MAX_HISTORY
        for value in ("1e300", str(2**63), str(most + 1)):
            self.assertEqual(
                self.assertConfigError(["--chat-history", value]),
                f"--chat-history: expected at most {most}, got {value!r}",
            )
        root = makeService(parse("--chat-history", str(most), "--no-downloads"), MemoryReactor())
        self.assertEqual(root.chat.hub.rooms["lobby"].history.maxlen, most)
        self.assertEqual(root.chat.hub.rooms["lobby"].historyBytes, 256 * 1024)
        root = makeService(parse("--chat-history-bytes", "1e6", "--no-downloads"), MemoryReactor())
        self.assertEqual(root.chat.hub.rooms["lobby"].historyBytes, 1000000)
        self.assertEqual(root.chat.settings.historyBytes, 1000000)
        self.assertEqual(root.chat.hub.privateRate, 16 * 1024)
        chat = makeService(
            parse("--chat-host-rate", "7", "--chat-private-rate", "1000", "--no-downloads"), MemoryReactor()
        ).chat
        self.assertEqual((chat.settings.hostRate, chat.settings.privateRate), (7.0, 1000))
        self.assertEqual(chat.hub.privateRate, 1000)
        self.assertEqual(root.chat.hub.roomRate, 64 * 1024)
        self.assertEqual(root.chat.hub.rooms["lobby"].budget.burst, 256 * 1024)
        chat = makeService(parse("--chat-room-rate", "1000", "--no-downloads"), MemoryReactor()).chat
        self.assertEqual((chat.settings.roomRate, chat.hub.rooms["lobby"].budget.rate), (1000, 1000))
        chat = makeService(parse("--chat-room-rate", "0", "--no-downloads"), MemoryReactor()).chat
        self.assertIsNone(chat.hub.rooms["lobby"].budget)
        self.assertEqual((root.chat.hub.noticeRate, root.chat.hub.rooms["lobby"].notices.burst), (2.0, 20.0))
        chat = makeService(parse("--chat-notice-rate", "0.5", "--no-downloads"), MemoryReactor()).chat
        self.assertEqual((chat.settings.noticeRate, chat.hub.rooms["lobby"].notices.rate), (0.5, 0.5))
        chat = makeService(parse("--chat-notice-rate", "0", "--no-downloads"), MemoryReactor()).chat
        self.assertIsNone(chat.hub.rooms["lobby"].notices)
        self.assertEqual(root.chat.settings.lineQueue, 50)
        self.assertEqual(root.chat.settings.idleTimeout, 0)
        chat = makeService(parse("--chat-line-queue", "0", "--no-downloads"), MemoryReactor()).chat
        self.assertEqual(chat.settings.lineQueue, 0)
        self.assertEqual(parse("--chat-history", "1e3")["chat-history"], 1000)
        self.assertEqual(parse("--chat-history", "20.0")["chat-history"], 20)
        # Other counts: up to 2**53, exactly.
        self.assertEqual(tap.MAX_COUNT, 2**53)
        self.assertEqual(parse("--download-max-size", str(2**53))["download-max-size"], 2**53)
        self.assertEqual(parse("--download-max-size", str(2**53 - 1))["download-max-size"], 2**53 - 1)
        for value in (str(2**53 + 1), f"{2**53}.5", "1" * 5000):
            self.assertConfigError(["--download-max-size", value], f"--download-max-size: expected at most {2**53}, got")
        self.assertConfigError(["--chat-history", "0.5"], "--chat-history", "whole number")
        self.assertConfigError(["--chat-history", "-1e999999999"], "--chat-history", "whole number")
        self.assertConfigError(["--chat-history", "nan"], "--chat-history", "finite")
        self.assertConfigError(["--chat-history", "lots"], "--chat-history", "expected a number, got 'lots'")

    def test_accessLogPipeOrDevice(self) -> None:
        """
        An access log may be a character device such as C{/dev/null}, a
        pipe something reads (C{/dev/stdout} under C{| tee}) or a socket
        (C{/dev/stdout} under systemd, which cannot be opened by its name);
        the web server's was refused (Twisted's log file seeks in it).  (A
        FIFO nothing reads: see L{StartDoesNotWaitTests}.)
        """
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        for flag in ("--http-access-log", "--proxy-access-log"):
            self.assertEqual(parse(flag, os.devnull)[flag[2:]], os.devnull)
            self.assertEqual(parse(flag, fifo)[flag[2:]], fifo)
            # The check kept its descriptor for the log: closing it ended
            # the input of the FIFO's reader, which then went away.
            self.assertRaises(BlockingIOError, os.read, reader, 1)
        releaseAccessLog(fifo)
        # A service that is off takes no log: the check keeps nothing.
        parse("--no-http", "--http-access-log", fifo)
        self.assertEqual(os.read(reader, 1), b"")
        import socket

        ours, theirs = socket.socketpair()  # /dev/stdout under systemd
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        path = f"/dev/fd/{ours.fileno()}"
        self.assertEqual(parse("--http-access-log", path)["http-access-log"], path)
        releaseAccessLog(path)

    def test_badNumberNamesFlag(self) -> None:
        self.assertConfigError(["--echo-idle-timeout", "soon"], "--echo-idle-timeout", "soon")
        self.assertConfigError(["--grace", "-1"], "--grace")
        self.assertConfigError(["--echo-udp-rate", "0"], "--echo-udp-rate")
        self.assertConfigError(["--grace", "nan"], "--grace")

    def test_endpointNumbersArePlainASCIIDigits(self) -> None:
        """
        A port (or other number) in an endpoint string written other than
        in plain ASCII digits is refused: Twisted's C{int} took
        C{tcp:\u0661\u0662\u0663} as port 123, C{tcp:+\uff11\uff19\uff10\uff14\uff11} as
        19041 and C{tcp:-0} as a random port.  A Unix socket's path may
        hold any digits.
        """
        self.assertConfigError(
            ["--echo", "tcp:\u0661\u0662\u0663"],
            "--echo: bad endpoint 'tcp:\u0661\u0662\u0663': '\u0661\u0662\u0663' is not a number in plain ASCII digits (0-9)",
        )
        for description in (
            "tcp:+\uff11\uff19\uff10\uff14\uff11",
            "tcp:19_040",
            "tcp:+19040",
            "tcp: 19040",
            "tcp:-0",
            "tcp:port=\uff11_\uff19\uff10\uff14\uff10",
            "tcp6:+80:interface=\\:\\:1",
            "tcp:6667:backlog=\u0665",
            "unix:/tmp/x.sock:mode=+\uff16_\uff10\uff10",
            "unix:/tmp/x.sock:mode=0o\uff16_\uff16\uff10",  # mode is read in base 8
        ):
            self.assertConfigError(["--chat", description], "--chat", "not a number in plain ASCII digits (0-9)")
        self.assertConfigError(["--echo-udp", "udp:\u0661\u0662\u0663"], "--echo-udp", "is not a port number")
        self.assertConfigError(["--echo-udp", "udp:+7"], "--echo-udp", "is not a port number")
        self.assertEqual(parse("--echo", "unix:s\u0661.sock")["echo"], ["unix:s\u0661.sock"])
        self.assertEqual(parse("--echo", "tcp:7:backlog=50")["echo"], ["tcp:7:backlog=50"])
        for mode in ("660", "0o660"):
            self.assertEqual(parse("--echo", f"unix:x.sock:mode={mode}")["echo"], [f"unix:x.sock:mode={mode}"])

    def test_endpointsListeningElsewhereRefused(self) -> None:
        """
        An endpoint string that would listen somewhere else than asked, in
        silence, is refused in one line: Twisted's C{tls:} (C{tls:8443}
        listened on port 443 of every interface, skipping every check made
        on C{ssl:}), an empty C{interface=} (every interface), a keyword
        given twice (the last was taken).
        """
        self.assertConfigError(["--http", "tls:8443"], "--http", "tls: endpoints are not taken here", "ssl:PORT")
        self.assertConfigError(["--echo", "tcp:8007:interface="], "--echo", "interface= is empty")
        self.assertConfigError(
            ["--chat", "tcp:8023:interface=127.0.0.1:interface=0.0.0.0"], "--chat", "interface= is given twice"
        )
        self.assertEqual(parse("--echo", "tcp6:7:interface=\\:\\:1")["echo"], ["tcp6:7:interface=\\:\\:1"])

    def test_sslEndpointOnTLSFlagRefused(self) -> None:
        """
        An C{ssl:} endpoint given to a TLS listener flag is refused at start:
        netsuite wrapped its TLS in TLS again, and every client failed.
        """
        import trustme

        from tests.tlshelpers import writeLeaf

        certPath, keyPath = writeLeaf(self.mktemp(), trustme.CA().issue_cert("localhost"))
        description = f"ssl:8443:privateKey={keyPath}:certKey={certPath}"
        self.assertConfigError(
            ["--https", description], "--https: ", "is TLS already; give it to --http, and --https a tcp: endpoint"
        )
        self.assertConfigError(["--echo-tls", description], "give it to --echo, and --echo-tls a tcp: endpoint")
        self.assertEqual(parse("--http", description)["http"], [description])

    def test_numbersAreASCII(self) -> None:
        """
        A number given as text is written in ASCII: C{float} also took
        other scripts' digits and underscores (C{--grace \uff15}, C{1_0}).
        """
        for value in ("\uff15", "1_0", "\u0661.5", "0x10"):
            self.assertConfigError(["--grace", value], "--grace", "expected a number, got")
        for value, number in (("2.5", 2.5), (" 1e1 ", 10.0), (".5", 0.5), ("+3", 3.0)):
            self.assertEqual(parse("--grace", value)["grace"], number)
        self.assertConfigError(["--grace", "inf"], "--grace", "finite")
        # Whole numbers too: Decimal took them (--http-max-body=١٠ was 10).
        for flag, value in (("--http-max-body", "\u0661\u0660"), ("--max-connections", "1_0"), ("--http-max-headers", "\uff15")):
            self.assertConfigError([flag, value], flag, "expected a number, got")
        self.assertEqual(parse("--http-max-body", "1e3")["http-max-body"], 1000)

    def test_portsAreASCIIDigits(self) -> None:
        """
        A port list takes ASCII digits only: a superscript two (a digit to
        Python, but not to C{int}) ended the start in a traceback.
        """
        self.assertConfigError(["--proxy-connect-ports", "\u00b2"], "--proxy-connect-ports", "'\u00b2' is not a port number")
        self.assertConfigError(["--proxy-connect-ports", "443,\u0661"], "--proxy-connect-ports", "not a port number")
        self.assertConfigError(["--proxy-connect-ports", "1" * 5000], "--proxy-connect-ports", "not a port number")

    def test_longValueShownCut(self) -> None:
        message = self.assertConfigError(["--grace", "x" * 100000], "--grace", "expected a number")
        self.assertLess(len(message), 200)

    def test_fileNameWithNULRefused(self) -> None:
        for flag in ("--http-access-log", "--download-dir", "--tls-cert", "--proxy-users", "--data-dir", "--http-root"):
            self.assertConfigError([flag, "x\0y"], flag, "'x\\x00y' cannot be a file name (it holds a NUL character)")

    def test_downloadDirectoryThatCannotBeMadeStopsTheStart(self) -> None:
        """
        A download directory that cannot be made stops the start in one line
        before any listener starts (it failed after they had, in a
        traceback).
        """
        directory = os.path.join(os.path.abspath(self.mktemp()), "d" * 300)
        options = parse("--download-dir", directory, "--data-dir", self.mktemp())
        reactor = MemoryReactor()
        error = self.assertRaises(ConfigError, makeService, options, reactor)
        self.assertEqual(str(error), f"--download-dir: cannot create {directory!r}: File name too long")
        self.assertEqual(reactor.tcpServers, [])

    def test_badEndpointNamesFlag(self) -> None:
        self.assertConfigError(["--echo", "tcp:notaport"], "--echo", "tcp:notaport")
        self.assertConfigError(["--http", "bogus:1"], "--http", "bogus:1")
        self.assertConfigError(["--echo-udp", "udp:99999"], "--echo-udp", "99999")
        self.assertConfigError(["--echo-udp", "tcp:7"], "--echo-udp")
        self.assertConfigError(["--echo", "udp:7"], "--echo", "UDP")

    def test_httpSettings(self) -> None:
        root = self.mktemp()
        import os

        os.makedirs(root)
        options = parse("--http-root", root, "--http-follow-symlinks", "--http-max-body", "10")
        self.assertEqual(options["http-root"], os.path.abspath(root))
        self.assertTrue(options["http-follow-symlinks"])
        self.assertEqual(options["http-max-body"], 10)
        self.assertConfigError(["--http-root", self.mktemp()], "--http-root", "not a directory")
        self.assertConfigError(
            ["--http-access-log", os.path.join(self.mktemp(), "no", "such", "dir.log")],
            "--http-access-log",
            "cannot write",
        )
        self.assertConfigError(["--http-header-timeout", "-2"], "--http-header-timeout")

    def test_h2c(self) -> None:
        """
        C{--http-h2c} lets the site's plain connections speak HTTP/2 with
        prior knowledge; it is off by default, as in nginx.
        """
        for args, expected in (((), False), (("--http-h2c",), True)):
            root = makeService(parse("--no-downloads", *args), MemoryReactor())
            self.assertIs(root.http.h2c, expected)

    def test_duplicateEndpoint(self) -> None:
        self.assertConfigError(["--echo", "tcp:7007", "--echo", "tcp:7007"], "twice")

    def test_helpListsEveryOptionWithDefault(self) -> None:
        """
        C{--help} shows every setting, and the default of every setting that
        has one.
        """
        text = str(Options())
        for setting in SETTINGS:
            self.assertIn(f"--{setting.name}", text)
        flat = " ".join(text.split())
        self.assertIn("[default: tcp:8080:interface=127.0.0.1]", flat)
        self.assertIn("[default: udp:8007:interface=127.0.0.1]", flat)
        self.assertIn("[default: 300]", flat)
        self.assertIn("[default: none]", flat)

    def test_unusedListenersWarned(self) -> None:
        """
        A listener that will not listen is warned of at start, a listener
        of a service turned off; from the config file too.  Defaults are
        not warned of.  A TLS listener while TLS is off is refused.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write('proxy-tls = "tcp:0"\nno-proxy = true\n')
        parse("--no-chat", "--chat", "tcp:0", "--tls-handshake-timeout", "5", "--config", config)
        parse("--no-echo", "--no-http")
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn],
            [
                "--chat is given, but --no-chat turns chat off: it is not listened on",
                f"'proxy-tls' in {config!r} is given, but 'no-proxy' in {config!r} turns proxy off: it is not "
                "listened on",
                "--tls-handshake-timeout is given, but TLS is off",
            ],
        )
        # A TLS listener while TLS is off is refused, as nginx refuses
        # "listen ... ssl" without a certificate (it was ignored).
        self.assertConfigError(
            ["--echo-tls", "tcp:0"], "--echo-tls needs TLS: give --tls (a self-signed certificate) or --tls-cert"
        )
        with open(config, "w") as f:
            f.write('https = "tcp:0"\n')
        self.assertConfigError(["--config", config], f"'https' in {config!r} needs TLS")
        # An empty list turns a listener off: a config file shared with
        # runs that have TLS may say so.
        with open(config, "w") as f:
            f.write("https = []\n")
        self.assertEqual(parse("--config", config)["https"], [])
        # UDP echo is echo's too.
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        parse("--no-echo", "--echo-udp", "udp:0")
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn],
            ["--echo-udp is given, but --no-echo turns echo off: it is not listened on"],
        )

    def test_unknownFlag(self) -> None:
        """
        An unknown flag is one line that names the flag it is closest to,
        or for C{--SERVICE-port} and the like, the listener flag and its
        default endpoint.
        """
        for args, message in [
            (["--chat-max-clinets", "5"], "unknown option '--chat-max-clinets' (did you mean --chat-max-clients?)"),
            (["--http-port", "80"], "unknown option '--http-port' (did you mean --http tcp:8080:interface=127.0.0.1?)"),
            (["--discard-listen", "9"], "unknown option '--discard-listen' (did you mean --discard ENDPOINT?)"),
            (["--htp-port", "80"], "unknown option '--htp-port' (did you mean --http tcp:8080:interface=127.0.0.1?)"),
            (["--qqqqqqqq"], "unknown option '--qqqqqqqq'"),
            (["--http"], "option --http requires argument"),
            (["--no-chat=1"], "option --no-chat must not have an argument"),
            (["--no-chat", "http"], "unexpected argument 'http' (options start with --)"),
        ]:
            error = self.assertRaises(ConfigError, parse, *args)
            self.assertEqual(error.message, message + "; twistd netsuite --help lists every option")


class ConfigFileTests(SynchronousTestCase):
    def write(self, text: str | bytes) -> str:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return str(path)

    def test_settingsFromFile(self) -> None:
        path = self.write(
            'echo = "tcp:7007"\n'
            'daytime = ["tcp:7013", "tcp:7014"]\n'
            "echo-idle-timeout = 12\n"
            "no_chat = true\n"
        )
        options = parse("--config", path)
        self.assertEqual(options["echo"], ["tcp:7007"])
        self.assertEqual(options["daytime"], ["tcp:7013", "tcp:7014"])
        self.assertEqual(options["echo-idle-timeout"], 12)
        self.assertTrue(options["no-chat"])

    def test_flagsWin(self) -> None:
        path = self.write('echo = "tcp:7007"\necho-idle-timeout = 12\n')
        options = parse("--config", path, "--echo", "tcp:7008", "--echo-idle-timeout", "300")
        self.assertEqual(options["echo"], ["tcp:7008"])
        self.assertEqual(options["echo-idle-timeout"], 300)

    def test_relativePathsFromConfigDirectory(self) -> None:
        path = self.write('data-dir = "state"\n')
        options = parse("--config", path)
        self.assertEqual(options["data-dir"], str(Path(path).parent / "state"))

    def assertBadFile(self, text: str, *fragments: str) -> None:
        path = self.write(text)
        message = str(self.assertRaises(ConfigError, parse, "--config", path))
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn("\n", message)

    def test_unknownKey(self) -> None:
        self.assertBadFile('htp = "tcp:1"\n', "unknown key", "'htp'")

    def test_unknownKeyCloseToOne(self) -> None:
        """
        An unknown key close to a known one names it; C{SERVICE_port} and
        the like name the listener and its default (it named C{http-root}).
        """
        self.assertBadFile('chat_max_clinets = 5\n', "unknown key 'chat_max_clinets' (did you mean 'chat-max-clients'?)")
        self.assertBadFile("http_port = 80\n", "unknown key 'http_port' (did you mean 'http' = 'tcp:8080:interface=127.0.0.1'?)")

    def test_keyInBothSpellings(self) -> None:
        """
        One setting given twice, as C{a_b} and C{a-b}, is refused; the
        second silently won.
        """
        self.assertBadFile(
            "grace = 1\nhttp_idle_timeout = 5\nhttp-idle-timeout = 6\n",
            "'http_idle_timeout' and 'http-idle-timeout' are one setting, given twice",
        )

    def test_byteOrderMark(self) -> None:
        """
        A UTF-8 byte order mark (as some Windows editors write) starts the
        file without breaking it; it was "not valid TOML".  One inside a
        value is the value's.
        """
        path = self.write("\ufeffgrace = 3\n")
        self.assertEqual(parse("--config", path)["grace"], 3)
        path = self.write('http-access-log = "a\ufeffb"\n')
        self.assertEqual(tap.loadConfig(Path(path))["http-access-log"], "a\ufeffb")

    def test_longUnknownKeyShortened(self) -> None:
        """
        An unknown key is quoted cut short (a 500 KB key was a 500 KB line).
        """
        path = self.write("k" * 500000 + " = 1\n")
        message = str(self.assertRaises(ConfigError, parse, "--config", path))
        self.assertIn("unknown key 'kkkk", message)
        self.assertLess(len(message), 300 + len(path))

    def test_deepDottedKeys(self) -> None:
        """
        A key of more than 32 dotted parts (in a table header, before an
        C{=}, in an inline table) is refused before the TOML parser, which
        takes time in the square of the parts (50,000 took 39 s); dots in
        values and quoted keys do not count.
        """
        deep = ".".join(["a"] * 5000)
        self.assertBadFile(f"grace = 1\n{deep} = 1\n", "line 2: a key of more than 32 dotted parts")
        self.assertBadFile(f"[{deep}]\n", "line 1: a key of more than 32 dotted parts")
        self.assertBadFile(f'x = {{ b."c".{deep} = 1 }}\n', "line 1: a key of more than 32 dotted parts")
        self.assertBadFile(".".join(["a"] * 33) + " = 1\n", "line 1: a key of more than 32 dotted parts")
        self.assertBadFile(".".join(["a"] * 32) + " = 1\n", "unknown key 'a'")
        addresses = ", ".join(["10.0.0.0/8"] * 50)
        path = self.write(f'proxy-clients = "{addresses}" # {"." * 100}\n')
        self.assertEqual(len(parse("--config", path)["proxy-clients"]), 50)

    def test_wrongTypes(self) -> None:
        self.assertBadFile("echo = 7\n", "'echo'", "endpoint")
        self.assertBadFile('no-chat = "yes"\n', "'no-chat'", "true or false")
        self.assertBadFile('grace = "long"\n', "'grace'", "number")
        self.assertBadFile("grace = true\n", "'grace'", "number")
        self.assertBadFile('echo = ["tcp:nope"]\n', "'echo'", "tcp:nope")

    def test_notTOML(self) -> None:
        self.assertBadFile("echo = [\n", "not valid TOML")

    def test_notUTF8(self) -> None:
        path = self.write(b"grace = 1\n\xff = 2\n")
        message = str(self.assertRaises(ConfigError, parse, "--config", path))
        self.assertEqual(message, f"config file {path!r} is not UTF-8 text (byte 0xff at offset 10)")

    def test_deepNestingOrLongNumbers(self) -> None:
        """
        What Python's TOML reader does not turn into a TOML error (nesting
        past the recursion limit, an integer past Python's digit limit, one
        past a float's range) is one line too.
        """
        self.assertBadFile("a = " + "[" * 5000 + "]" * 5000 + "\n", "nests arrays or tables too deeply")
        self.assertBadFile("grace = " + "1" * 5000 + "\n", "holds a number too long to read")
        self.assertBadFile("grace = 0x" + "f" * 5000 + "\n", "'grace'", "expected a finite number")
        # Such integers where they are shown: Python will not write them out.
        huge = "0x" + "f" * 5000
        self.assertBadFile(f"no-echo = {huge}\n", "'no-echo'", "got an integer of 20000 bits")
        self.assertBadFile(f"proxy-connect-ports = [443, {huge}]\n", "an integer of 20000 bits is not a port number")
        self.assertBadFile(f"grace = [{huge}]\n", "'grace'", "expected a number, got a list too large to show")

    def test_notARegularOrSmallFile(self) -> None:
        """
        The config file is read as a small regular file: C{/dev/zero} was
        read until memory ran out, and a FIFO hung the start.
        """
        fifo = self.mktemp()
        os.mkfifo(fifo)
        huge = self.write("#" * (tap.MAX_CONFIG_FILE + 1))
        for path, reason in ((fifo, "not a regular file"), (os.devnull, "not a regular file"), (huge, "longer than")):
            message = str(self.assertRaises(ConfigError, parse, "--config", path))
            self.assertEqual(message, f"cannot read config file {path!r}: {reason}" + (
                f" {tap.MAX_CONFIG_FILE} bytes" if reason == "longer than" else ""
            ))

    def test_laterChecksNameTheKey(self) -> None:
        """
        Settings checked after reading (the HTTP folder, the users file, the
        directories) name the key and the file they came from, as the
        others do, not a flag that was never given.
        """
        missing = os.path.abspath(self.mktemp())
        path = self.write(f'http-root = "{missing}"\n')
        message = str(self.assertRaises(ConfigError, parse, "--config", path))
        self.assertEqual(message, f"'http-root' in {path!r}: {missing!r} is not a directory")
        path = self.write('download-dir = "x\\u0000y"\n')
        message = str(self.assertRaises(ConfigError, parse, "--config", path))
        self.assertEqual(message, f"'download-dir' in {path!r}: 'x\\x00y' cannot be a file name (it holds a NUL character)")

    def test_countsFromFileReadExactly(self) -> None:
        """
        A TOML integer count is taken as it is, not through a float: one
        past 2**53 was rounded, and 2**63 - 1 became 2**63, which ended the
        start in a traceback for C{chat-history}.  Refusals name the key
        and the file.
        """
        path = self.write(f"download-max-size = {2**53 - 1}\nchat-history = 10000\n")
        options = parse("--config", path)
        self.assertEqual((options["download-max-size"], options["chat-history"]), (2**53 - 1, 10000))
        for text, key, most, shown in [
            (f"chat-history = {2**63 - 1}\n", "chat-history", 10000, str(2**63 - 1)),
            ("chat-history = 1e300\n", "chat-history", 10000, "1e+300"),
            (f"download-max-size = {2**53 + 1}\n", "download-max-size", 2**53, str(2**53 + 1)),
            ("download-max-size = 0x" + "f" * 5000 + "\n", "download-max-size", 2**53, "an integer of 20000 bits"),
        ]:
            path = self.write(text)
            message = str(self.assertRaises(ConfigError, parse, "--config", path))
            self.assertEqual(message, f"{key!r} in {path!r}: expected at most {most}, got {shown}")

    def test_unreadable(self) -> None:
        missing = self.mktemp()
        message = str(self.assertRaises(ConfigError, parse, "--config", missing))
        self.assertIn("cannot read config file", message)
        self.assertIn(missing, message)


class StartDoesNotWaitTests(SynchronousTestCase):
    """
    Files read or opened while the settings are checked never stall the
    start nor fill the memory; each case runs in a child process with a
    deadline and a memory limit, so that on failure it only fails.
    """

    def parseInChild(self, *args: str) -> tuple[int, str]:
        """
        Parse C{args} as C{twistd netsuite}'s options in a child process.

        @return: its exit status and its stderr.
        """
        import netsuite

        def limitMemory() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, resource.RLIM_INFINITY))

        # A data directory of its own: this process holds the tests' one.
        env = dict(
            os.environ,
            PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(netsuite.__file__))),
            XDG_DATA_HOME=os.path.abspath(self.mktemp()),
        )
        try:
            child = subprocess.run(
                [sys.executable, "-c", "import sys\nfrom netsuite.tap import Options\nOptions().parseOptions(sys.argv[1:])", *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=30,
                preexec_fn=limitMemory,
            )
        except subprocess.TimeoutExpired:
            self.fail(f"checking {args!r} still waited after 30 seconds")
        return child.returncode, child.stderr.decode("utf-8", "replace")

    def assertRefused(self, args: list[str], message: str) -> None:
        self.assertEqual(self.parseInChild(*args), (1, f"netsuite: {message}\n"))

    def test_accessLogFIFONobodyReads(self) -> None:
        """
        An access log that is a FIFO no process reads is refused: opening
        it to append waited for a reader, silently, for ever.
        """
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        for flag in ("--http-access-log", "--proxy-access-log"):
            self.assertRefused([flag, fifo], f"{flag}: cannot write {fifo!r}: it is a FIFO that no process reads")

    def assertSSLFileRefused(self, description: str, name: str, path: str) -> None:
        self.assertRefused(
            ["--echo", description],
            f"--echo: ssl endpoint {shortened(description)}: {name}={path!r} cannot be read: not a regular file",
        )

    def test_sslEndpointFileFIFO(self) -> None:
        """
        An C{ssl:} endpoint string whose key or certificate is a FIFO is
        refused: Twisted opened it to read, waiting for a writer for ever.
        """
        fifo = os.path.abspath(self.mktemp())
        os.mkfifo(fifo)
        self.assertSSLFileRefused(f"ssl:0:privateKey={fifo}", "privateKey", fifo)
        self.assertSSLFileRefused(f"ssl:0:{fifo}", "privateKey", fifo)

    def test_sslEndpointFileDevZero(self) -> None:
        """
        An C{ssl:} endpoint string whose key is C{/dev/zero} is refused:
        Twisted read it until the memory ran out.
        """
        self.assertSSLFileRefused("ssl:0:privateKey=/dev/zero", "privateKey", "/dev/zero")


class DataDirectoryLockTests(SynchronousTestCase):
    """
    A netsuite takes its data directory (when it keeps files there) and
    its download directory for itself: a second one given the same is
    refused in one line.  Two shared them, each rewriting the job list
    from its own memory (the other's jobs were lost), and when started
    together each made its own token or certificate over the other's.
    """

    def holdInChild(self, path: str) -> None:
        """
        Have another process hold the lock file C{path} until the test
        ends.
        """
        import netsuite

        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(netsuite.__file__))))
        code = (
            "import sys\nfrom netsuite.files import lockForThisProcess\n"
            "print(lockForThisProcess(sys.argv[1]), flush=True)\nsys.stdin.read()"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", code, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.addCleanup(child.wait, 10)
        self.addCleanup(child.stdin.close)  # type: ignore[union-attr]
        self.assertEqual(child.stdout.readline(), b"None\n")  # type: ignore[union-attr]
        self.pid = child.pid

    def test_dataDirectoryInUse(self) -> None:
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        self.holdInChild(os.path.join(data, tap.DATA_LOCK))
        error = self.assertRaises(ConfigError, parse, "--data-dir", data)
        self.assertEqual(
            error.message,
            f"--data-dir: {data!r} is in use by another netsuite (process {self.pid}); give this one its own --data-dir",
        )
        # Without downloads or a certificate of its own, it keeps nothing there.
        parse("--data-dir", data, "--no-downloads")

    def test_downloadDirectoryInUse(self) -> None:
        downloads = os.path.abspath(self.mktemp())
        os.makedirs(downloads)
        self.holdInChild(os.path.join(downloads, tap.DATA_LOCK))
        options = parse("--data-dir", os.path.abspath(self.mktemp()), "--download-dir", downloads)
        error = self.assertRaises(ConfigError, makeService, options, MemoryReactor())
        self.assertIn(f"{downloads!r} is in use by another netsuite's downloads (process {self.pid})", error.message)

    def test_lockNamesThisProcess(self) -> None:
        """
        L{files.claimLocksForThisProcess} writes this process's id, whole,
        in every lock file it holds, over a longer one written before (by
        the process twistd daemonized from).
        """
        from netsuite import files

        path = os.path.abspath(self.mktemp())
        self.assertIsNone(files.lockForThisProcess(path))
        self.addCleanup(lambda: os.close(files._held.pop(path)))
        fd = files._held[path]
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"1234567890123", 0)
        files.claimLocksForThisProcess()
        with open(path) as f:
            self.assertEqual(f.read(), str(os.getpid()))

    def lockWritesFailing(self, code: int) -> Path:
        """
        Parse options for a new download directory, then have every
        C{pwrite} fail with C{code} until the test ends; return where the
        download directory's lock file goes.
        """
        from netsuite import files

        downloads = Path(os.path.abspath(self.mktemp()))
        self.options = parse("--data-dir", os.path.abspath(self.mktemp()), "--download-dir", str(downloads))
        lock = downloads / tap.DATA_LOCK
        self.addCleanup(lambda: os.close(files._held.pop(str(lock))) if str(lock) in files._held else None)

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            raise OSError(code, os.strerror(code))

        self.patch(os, "pwrite", pwrite)
        return lock

    def test_lockHeldOnAFullDisk(self) -> None:
        """
        A download directory on a full disk (or quota) is taken all the
        same: the process id the lock file shows cannot be written, and
        the lock holds without it.  The whole start failed ("cannot
        create DIR: No space left on device"), leaving an empty lock file.
        """
        import errno
        import fcntl

        for code in (errno.ENOSPC, errno.EDQUOT):
            lock = self.lockWritesFailing(code)
            makeService(self.options, MemoryReactor())
            self.assertEqual(lock.read_bytes(), b"")
            other = os.open(lock, os.O_RDWR)
            self.addCleanup(os.close, other)
            self.assertRaises(BlockingIOError, fcntl.flock, other, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def test_lockThatCannotBeWrittenStopsTheStart(self) -> None:
        """
        Another error writing the lock file stops the start in one line
        that names the lock file (it said "cannot create" of the directory,
        which was there), and the lock is not kept.
        """
        import errno
        import fcntl

        lock = self.lockWritesFailing(errno.EIO)
        error = self.assertRaises(ConfigError, makeService, self.options, MemoryReactor())
        self.assertEqual(error.message, f"--download-dir: cannot lock {str(lock)!r}: Input/output error")
        other = os.open(lock, os.O_RDWR)
        self.addCleanup(os.close, other)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def test_dataDirectoryLockThatCannotBeWritten(self) -> None:
        """
        The data directory's lock file that cannot be written (but for a
        full disk) stops the start in one line naming the lock file.
        """
        import errno

        data = os.path.abspath(self.mktemp())

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(os, "pwrite", pwrite)
        error = self.assertRaises(ConfigError, parse, "--data-dir", data)
        lock = os.path.join(data, tap.DATA_LOCK)
        self.assertEqual(error.message, f"--data-dir: cannot lock {lock!r}: Input/output error")

    def test_dataDirectoryMadePrivate(self) -> None:
        data = os.path.join(os.path.abspath(self.mktemp()), "netsuite")
        parse("--data-dir", data)
        self.assertEqual(os.stat(data).st_mode & 0o777, 0o700)

    def test_openDataDirectoryWarned(self) -> None:
        """
        An existing data directory other users may read keeps its mode (it
        may be shared on purpose), with a warning to C{chmod 700} it.
        """
        for mode in (0o750, 0o705):  # the group, or others
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            data = os.path.abspath(self.mktemp())
            os.makedirs(data)
            os.chmod(data, mode)
            parse("--data-dir", data)
            self.assertTrue(any("is open to other users" in formatEvent(e) for e in events), oct(mode))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        data = os.path.abspath(self.mktemp())
        os.makedirs(data)
        os.chmod(data, 0o755)
        parse("--data-dir", data)
        self.assertEqual(os.stat(data).st_mode & 0o777, 0o755)
        self.assertIn(
            f"the data directory {data} is open to other users (mode 755): they may list and read what "
            "is downloaded into it; chmod 700 it",
            [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn],
        )


class ChatRoomsTests(SynchronousTestCase):
    def test_zeroRoomsIsTheLobbyOnly(self) -> None:
        """
        C{--chat-max-rooms 0} leaves the lobby, the one room there must be.
        """
        root = makeService(parse("--no-downloads", "--chat-max-rooms", "0"), MemoryReactor())
        self.assertEqual(root.chat.settings.maxRooms, 1)


class PluginTests(SynchronousTestCase):
    def test_pluginIsDiscoverable(self) -> None:
        """
        The twistd plugin named netsuite is found, provides L{IPlugin} and
        L{IServiceMaker}, and builds services with L{netsuite.tap}.
        """
        import twisted.plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("netsuite", makers)
        maker = makers["netsuite"]
        self.assertTrue(IPlugin.providedBy(maker))
        self.assertTrue(IServiceMaker.providedBy(maker))
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertEqual(maker.module, "netsuite.tap")


class OpenFileLimitTests(SynchronousTestCase):
    """
    At start netsuite raises its limit on open files towards what the
    connection limits allow, and warns when even the hard limit is below
    what one listener may hold (the system then refuses connections, past
    netsuite's counting and limits).
    """

    def setUp(self) -> None:
        import resource

        self.resource = resource
        self.calls: list[tuple[int, int]] = []
        self.limits = (1024, 1024)
        self.patch(resource, "getrlimit", lambda which: self.limits)

        def setrlimit(which: int, limits: tuple[int, int]) -> None:
            self.calls.append(limits)
            self.limits = limits

        self.patch(resource, "setrlimit", setrlimit)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.warn]

    def test_raisedAsFarAsTheHardLimit(self) -> None:
        self.limits = (1024, 524288)
        self.assertEqual(tap.checkOpenFileLimit(30000), 30000)
        self.assertEqual(self.calls, [(30000, 524288)])
        self.limits = (256, 1024)
        self.assertEqual(tap.checkOpenFileLimit(30000), 1024)
        self.assertEqual(self.calls[-1], (1024, 1024))

    def test_enoughAlready(self) -> None:
        self.limits = (65536, 65536)
        self.assertEqual(tap.checkOpenFileLimit(30000), 65536)
        self.assertEqual((self.calls, self.warnings()), ([], []))

    def test_totalConnectionsBelowTheOpenFileLimit(self) -> None:
        """
        All listeners together hold no more connections than the open-file
        limit allows, keeping 128 files (and one per download connection,
        per request body in a temporary file, per idle origin connection
        of the proxy's pool) for the rest; C{--max-connections-total} may
        ask for fewer.  Each listener's limits added up past the limit,
        and connections then failed with EMFILE everywhere.  Under a small
        limit the proxy's pool shrinks to a quarter of what is left.
        """
        spare = 128 + siteModule.BODY_FILES + 512
        self.limits = (20000, 20000)
        root = makeService(parse("--no-downloads"), MemoryReactor())
        self.assertEqual(root.budget.maxTotal, 20000 - spare)
        root = makeService(parse("--no-downloads", "--max-connections-total", "500"), MemoryReactor())
        self.assertEqual(root.budget.maxTotal, 500)
        root = makeService(parse("--no-downloads", "--max-connections-total", "50000"), MemoryReactor())
        self.assertEqual(root.budget.maxTotal, 20000 - spare)
        root = makeService(parse("--download-connections", "16"), MemoryReactor())
        self.assertEqual(root.budget.maxTotal, 20000 - spare - 16)
        root = makeService(parse("--no-downloads", "--no-http"), MemoryReactor())
        self.assertEqual(root.budget.maxTotal, 20000 - 128 - 512)
        self.limits = (1024, 1024)
        root = makeService(parse("--no-downloads"), MemoryReactor())
        pool = (1024 - 128 - siteModule.BODY_FILES) // 4
        self.assertEqual(root.proxy.pool.total, pool)
        self.assertEqual(root.budget.maxTotal, 1024 - 128 - siteModule.BODY_FILES - pool)

    def test_filesBeingSentCounted(self) -> None:
        """
        With a folder served, the files it may send at once (each an open
        file) are kept aside too; under a small limit they are a quarter
        of what the rest leaves, and the proxy's pool a quarter of what is
        left then.
        """
        from netsuite.web.static import SERVED_FILES

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        spare = 128 + siteModule.BODY_FILES + 512 + SERVED_FILES
        self.limits = (20000, 20000)
        root = makeService(parse("--no-downloads", "--http-root", folder), MemoryReactor())
        self.assertEqual(root.http.static.maxOpenFiles, SERVED_FILES)
        self.assertEqual(root.http.static.maxOpenFilesPerHost, SERVED_FILES // 8)
        self.assertEqual(root.budget.maxTotal, 20000 - spare)
        self.limits = (1024, 1024)
        root = makeService(parse("--no-downloads", "--http-root", folder), MemoryReactor())
        files = (1024 - 128 - siteModule.BODY_FILES) // 4
        pool = (1024 - 128 - siteModule.BODY_FILES - files) // 4
        self.assertEqual((root.http.static.maxOpenFiles, root.proxy.pool.total), (files, pool))
        self.assertEqual(root.http.static.maxOpenFilesPerHost, max(files // 8, 16))
        self.assertEqual(root.budget.maxTotal, 1024 - 128 - siteModule.BODY_FILES - files - pool)
        self.limits = (200, 200)  # less than the rest needs: 16 files at least
        root = makeService(parse("--no-downloads", "--http-root", folder), MemoryReactor())
        self.assertEqual((root.http.static.maxOpenFiles, root.http.static.maxOpenFilesPerHost), (16, 16))

    def test_makeServiceCountsEveryListener(self) -> None:
        """
        The default tree asks for every stream listener's connections (the
        proxy's twice: each has its origin's), and warns at a 256 limit.
        """
        self.limits = (256, 256)
        root = makeService(parse("--no-downloads", "--max-connections", "1000"), MemoryReactor())
        [warning] = self.warnings()
        # What netsuite accepts in all under the limit (it said the system
        # refused connections past 256, and netsuite took 128 already).
        self.assertEqual(
            warning,
            "open files are limited to 256 (ulimit -n): keeping 208 for files, logs and state, netsuite "
            "accepts at most 48 connections in all, fewer than one listener's limit (2000); raise the "
            "open-file limit or lower --max-connections",
        )
        self.assertEqual(root.budget.maxTotal, 48)
        self.assertEqual(self.calls, [])  # the hard limit is reached already

    def test_noWarningWhenTheTotalAskedForBounds(self) -> None:
        """
        A total asked for (C{--max-connections-total}) below what the file
        limit allows is no reason to blame the file limit; nor is a limit
        short of what every listener could want while the total it allows
        is enough for one.
        """
        self.limits = (5000, 5000)  # short of every listener's 4096, enough for 1000
        makeService(parse("--no-downloads", "--max-connections-total", "1000"), MemoryReactor())
        self.limits = (20000, 20000)
        makeService(parse("--no-downloads"), MemoryReactor())
        self.assertEqual(self.warnings(), [])


class ServiceTreeTests(SynchronousTestCase):
    def test_answeringResolverInstalled(self) -> None:
        """
        The reactor's resolver, when it is Twisted's own, becomes one that
        answers every lookup (L{netsuite.resolving}).
        """
        from twisted.internet._resolver import GAIResolver

        from netsuite.resolving import AnsweringResolver

        reactor = MemoryReactor()
        reactor.getThreadPool = lambda: None
        reactor.nameResolver = GAIResolver(reactor)
        reactor.installNameResolver = lambda resolver: setattr(reactor, "nameResolver", resolver)
        makeService(parse("--no-downloads"), reactor)
        self.assertIsInstance(reactor.nameResolver, AnsweringResolver)

    def test_defaultTree(self) -> None:
        """
        One named child per listener.
        """
        reactor = MemoryReactor()
        root = makeService(parse(), reactor)
        names = sorted(s.name for s in root)
        self.assertEqual(
            names,
            [
                "chat tcp:8023:interface=127.0.0.1",
                "daytime tcp:8013:interface=127.0.0.1",
                "downloads",
                "echo tcp:8007:interface=127.0.0.1",
                "echo-udp udp:8007:interface=127.0.0.1",
                "http tcp:8080:interface=127.0.0.1",
                "proxy tcp:3128:interface=127.0.0.1",
            ],
        )
        self.assertIsInstance(root.getServiceNamed("echo tcp:8007:interface=127.0.0.1"), StreamListener)
        self.assertIsInstance(root.getServiceNamed("echo-udp udp:8007:interface=127.0.0.1"), DatagramListener)

    def test_listenersStartOnTheReactor(self) -> None:
        reactor = MemoryReactor()
        root = makeService(parse("--no-daytime"), reactor)
        root.privilegedStartService()
        tcp = [(port, iface) for port, factory, _, iface in reactor.tcpServers if factory]
        self.assertEqual(
            sorted(tcp),
            [(3128, "127.0.0.1"), (8007, "127.0.0.1"), (8023, "127.0.0.1"), (8080, "127.0.0.1")],
        )
        self.assertEqual([(u[0], u[2], u[3]) for u in reactor.udpServers], [(8007, "127.0.0.1", 65535)])

    def test_disabledServiceHasNoListeners(self) -> None:
        root = makeService(
            parse("--no-echo", "--no-daytime", "--no-http", "--no-chat", "--no-proxy", "--no-downloads"), MemoryReactor()
        )
        self.assertEqual(list(root), [])

    def test_statsOnlyForServicesThatRun(self) -> None:
        """
        A service with no listener (discard by default) has no stats entry,
        so status pages do not show it.
        """
        root = makeService(parse("--no-http"), MemoryReactor())
        self.assertEqual(sorted(root.stats.snapshot()), ["chat", "daytime", "echo", "echo-udp", "proxy"])

    def test_listenersShareServiceStats(self) -> None:
        root = makeService(parse("--echo", "tcp:1", "--echo", "tcp:2", "--no-http"), MemoryReactor())
        one = root.getServiceNamed("echo tcp:1")
        two = root.getServiceNamed("echo tcp:2")
        self.assertIs(one.stats, two.stats)
        self.assertIs(one.stats, root.stats.forService("echo"))

    def test_tlsListenersOnlyWithTLS(self) -> None:
        options = parse(
            "--no-daytime", "--no-http", "--no-chat", "--no-proxy", "--no-downloads", "--tls", "--data-dir", self.mktemp()
        )
        names = sorted(s.name for s in makeService(options, MemoryReactor()))
        self.assertEqual(
            names,
            [
                "echo tcp:8007:interface=127.0.0.1",
                "echo+tls tcp:9007:interface=127.0.0.1",
                "echo-udp udp:8007:interface=127.0.0.1",
            ],
        )

    def test_discardOnlyWhenAsked(self) -> None:
        options = parse(
            "--no-echo", "--no-daytime", "--no-http", "--no-chat", "--no-proxy", "--no-downloads", "--discard", "tcp:7009"
        )
        self.assertEqual([s.name for s in makeService(options, MemoryReactor())], ["discard tcp:7009"])


class _ThreadCalls(MemoryReactor):
    """
    A memory reactor whose C{callFromThread} calls at once.
    """

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class StopSignalsTests(SynchronousTestCase):
    """
    L{tap.StopSignals}: the first SIGINT or SIGTERM goes to the reactor's
    handler; a later one aborts the connections still open.
    """

    def setUp(self) -> None:
        self.reactor = _ThreadCalls()
        self.root = makeService(parse("--no-downloads"), self.reactor)
        self.patch(self.root, "abortConnections", lambda: 2)
        self.first: list[int] = []
        self.signals = tap.StopSignals(self.reactor, self.root)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def send(self, number: int) -> None:
        self.signals.received(lambda n, frame: self.first.append(n), number, None)

    def test_onlyTheFirstStops(self) -> None:
        self.send(15)
        self.assertEqual(self.first, [15])
        self.assertEqual(len(self.events), 0)
        self.send(2)
        self.assertEqual(self.first, [15])
        self.assertEqual(
            [formatEvent(e) for e in self.events], ["Received SIGINT again: aborted the 2 connection(s) still open"]
        )

    def test_quitIsATermThatSaysSo(self) -> None:
        """
        SIGQUIT (nginx's graceful stop) goes to netsuite's SIGTERM handling,
        said so in the log: the first stops, a second aborts what is left
        (it ended the process at once, dumping its core).
        """
        installed: dict[int, Any] = {}
        self.patch(tap.signal, "signal", lambda number, handler: installed.__setitem__(number, handler))
        self.patch(tap.signal, "getsignal", lambda number: installed.get(number, signal.SIG_DFL)
                   if number != signal.SIGTERM else installed.get(number, lambda n, frame: self.first.append(n)))
        self.signals.install()
        installed[signal.SIGQUIT](signal.SIGQUIT, None)
        self.assertEqual(self.first, [signal.SIGTERM])
        installed[signal.SIGQUIT](signal.SIGQUIT, None)
        self.assertEqual(self.first, [signal.SIGTERM])
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["Received SIGQUIT: stopping as for SIGTERM", "Received SIGTERM again: aborted the 2 connection(s) still open"],
        )

    def test_stoppedOtherwise(self) -> None:
        """
        Once the reactor stops for another reason, a signal is a second one.
        """
        self.patch(tap.signal, "signal", lambda number, handler: None)
        self.signals.install()
        for f, args, kwargs in self.reactor.triggers["before"]["shutdown"]:
            f(*args, **kwargs)
        self.send(15)
        self.assertEqual(self.first, [])
        self.assertEqual(
            [formatEvent(e) for e in self.events], ["Received SIGTERM again: aborted the 2 connection(s) still open"]
        )

    def test_hangUpWithATerminalStops(self) -> None:
        """
        SIGHUP to a process started from a terminal (which went away)
        stops netsuite as SIGTERM does, and twistd ends by it; a later
        signal is a second one.  It killed the process at once (no goodbye
        to chat users, the pid file left).
        """
        self.signals.terminal = True
        stopped: list[bool] = []
        self.reactor.stop = lambda: stopped.append(True)
        self.signals._hungUp(signal.SIGHUP, None)
        self.assertEqual(stopped, [True])
        self.assertEqual(self.reactor._exitSignal, signal.SIGHUP)
        self.assertEqual(
            [formatEvent(e) for e in self.events], ["Received SIGHUP (the terminal went away), shutting down."]
        )
        self.send(15)
        self.assertEqual(self.first, [])
        self.assertIn("Received SIGTERM again", formatEvent(self.events[-1]))

    def test_hangUpWithoutATerminalIgnored(self) -> None:
        """
        Without a terminal (a daemon, systemd, Docker), SIGHUP comes from
        an operator expecting a reload, and is logged and ignored.
        """
        self.reactor.stop = lambda: self.fail("stopped")
        self.signals.terminal = False
        self.signals._hungUp(signal.SIGHUP, None)
        self.assertIn("Received SIGHUP: ignored, netsuite has nothing to reload", formatEvent(self.events[0]))
        self.send(15)
        self.assertEqual(self.first, [15])

    def test_hangUpHandledUnlessIgnored(self) -> None:
        """
        SIGHUP is handled unless the process was started ignoring it (as
        C{nohup} starts it); whether the process has a terminal is looked
        at then.
        """
        for before, handled in ((signal.SIG_DFL, True), (signal.SIG_IGN, False)):
            for terminal in (True, False):
                installed: dict[int, Any] = {}
                self.patch(tap.signal, "signal", lambda number, handler: installed.__setitem__(number, handler))
                self.patch(tap.signal, "getsignal", lambda number: before if number == signal.SIGHUP else None)
                self.patch(tap, "_hasTerminal", lambda: terminal)
                signals = tap.StopSignals(self.reactor, self.root)
                signals.install()
                self.assertEqual(signal.SIGHUP in installed, handled)
                self.assertEqual(signals.terminal, terminal if handled else None)

    def test_user1WithoutALogFileIgnored(self) -> None:
        """
        SIGUSR1, which twistd takes to reopen its --logfile, is logged and
        ignored when twistd has none (C{-n} logging to standard output):
        it killed the process, which a logrotate script's C{kill -USR1}
        sends.  twistd's own handler, when it has one, stays.
        """
        for before, handled in ((signal.SIG_DFL, True), (lambda number, frame: None, False)):
            installed: dict[int, Any] = {}
            self.patch(tap.signal, "signal", lambda number, handler: installed.__setitem__(number, handler))
            self.patch(tap.signal, "getsignal", lambda number: before if number == signal.SIGUSR1 else None)
            tap.StopSignals(self.reactor, self.root).install()
            self.assertEqual(signal.SIGUSR1 in installed, handled)
        installed[signal.SIGUSR1] = None
        self.patch(tap.signal, "getsignal", lambda number: signal.SIG_DFL)
        self.reactor.stop = lambda: self.fail("stopped")
        signals = tap.StopSignals(self.reactor, self.root)
        signals.install()
        installed[signal.SIGUSR1](signal.SIGUSR1, None)
        self.assertIn("Received SIGUSR1: ignored, there is no log file to reopen", formatEvent(self.events[-1]))

    def test_notInstalledWhileTheReactorRuns(self) -> None:
        """
        Only a process whose reactor is not running yet (twistd's, twist's)
        gets them installed; an application embedding netsuite in a running
        reactor keeps its own handlers.
        """
        self.assertEqual(len(self.reactor.whenRunningHooks), 1)
        running = MemoryReactor()
        running.running = True
        makeService(parse("--no-downloads"), running)
        self.assertEqual(running.whenRunningHooks, [])
