"""
Tests for L{netsuite.accesslog}: the web server's and the proxy's access
log files (batched, never rotated by netsuite, moved files followed, pipes
never waited on).
"""

from __future__ import annotations

import os
import re
import socket
from types import SimpleNamespace
from typing import Any, List

from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netsuite.accesslog import AccessLogFile, holdAccessLog, releaseAccessLog
from netsuite.proxy import makeProxyService
from netsuite.web.site import makeHTTPService
from tests.helpers import rawExchange, startListener
from tests.test_web_site import inMemory


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class AccessLogFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = os.path.abspath(self.mktemp())
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def messages(self) -> List[str]:
        return [formatEvent(e) for e in self.events]

    def fifo(self) -> int:
        """
        Make C{self.path} a FIFO and open its reading end (which reads
        nothing until the test says so).
        """
        os.mkfifo(self.path)
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        return reader

    def test_batchesWrites(self) -> None:
        """
        Lines reach the file within a second, or as soon as 64 KiB wait,
        and all of them when it is closed; a file already there is
        appended to.
        """
        with open(self.path, "w") as f:
            f.write("before\n")
        log = AccessLogFile(self.path, self.clock)
        log.write("one\n")
        log.write("two\n")
        self.assertEqual(read(self.path), "before\n")
        self.clock.advance(1)
        self.assertEqual(read(self.path), "before\none\ntwo\n")
        log.write("x" * 70000 + "\n")
        self.assertEqual(len(read(self.path)), 15 + 70001)
        log.write("last \u00e9\n")
        log.close()
        self.assertTrue(read(self.path).endswith("last \u00e9\n"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_neverRotates(self) -> None:
        """
        However big the file grows, it stays one file: rotating it is
        logrotate's job (Twisted's web log rotated it every 1,000,000 bytes
        into C{.1}, C{.2} and so on, without limit).
        """
        with open(self.path, "w") as f:
            f.write("old\n" * 300000)
        log = AccessLogFile(self.path, self.clock)
        for _ in range(20):
            log.write("y" * 99999 + "\n")
        log.close()
        self.assertEqual(os.path.getsize(self.path), 1200000 + 2000000)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), [os.path.basename(self.path)])

    def test_followsMovedFile(self) -> None:
        """
        A file moved away (as logrotate moves it) or removed is noticed at
        the next batch: the log goes on in a new file under its name.
        """
        log = AccessLogFile(self.path, self.clock)
        log.write("one\n")
        self.clock.advance(1)
        os.rename(self.path, self.path + ".1")
        log.write("two\n")
        self.clock.advance(1)
        os.remove(self.path)
        log.write("three\n")
        log.close()
        self.assertEqual(read(self.path + ".1"), "one\n")
        self.assertEqual(read(self.path), "three\n")

    def test_pipeReaderNotReading(self) -> None:
        """
        A pipe whose reader reads nothing never stops the caller: what it
        cannot take waits, at most C{backlog} bytes of it, and the lines
        after that are dropped and counted in a warning.  Once the reader
        reads again, what waited follows, whole lines in order.
        """
        reader = self.fifo()
        log = AccessLogFile(self.path, self.clock, backlog=200000)
        lines = [f"{i:06d} " + "z" * 992 + "\n" for i in range(1000)]
        for line in lines:
            log.write(line)
        self.assertLessEqual(len(log._pending), 200000 + 1000)
        self.clock.advance(1)
        [message] = [m for m in self.messages() if "dropped" in m]
        match = re.fullmatch(r"Access log '.*': (\d+) lines dropped, its reader does not keep up", message)
        dropped = int(match.group(1))
        self.assertGreater(dropped, 500)
        received = b""
        for _ in range(100):
            while True:
                try:
                    chunk = os.read(reader, 1 << 20)
                except BlockingIOError:
                    break
                received += chunk
            if not self.clock.getDelayedCalls():
                break
            self.clock.advance(1)
        log.close()
        self.assertEqual(received.decode(), "".join(lines[: 1000 - dropped]))

    def test_pipeClosedAtStop(self) -> None:
        """
        What a pipe could not take by the time the log is closed is
        dropped, with a warning; closing does not wait for the reader.
        """
        self.fifo()
        log = AccessLogFile(self.path, self.clock)
        for _ in range(100):
            log.write("w" * 9999 + "\n")
        log.close()
        [message] = [m for m in self.messages() if "not written" in m]
        self.assertRegex(message, r"^Access log '.*': \d+ bytes not written, its reader does not keep up$")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readerGoesAway(self) -> None:
        """
        A FIFO whose reader went away is one error in the log, not an
        exception for the request being logged, nor an error a line; once
        a reader comes back, the log is opened again and the bytes lost
        meanwhile are counted.
        """
        os.mkfifo(self.path)
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        log = AccessLogFile(self.path, self.clock)
        os.close(reader)
        for _ in range(3):
            log.write("a" * 70000 + "\n")
            self.clock.advance(1)
        self.assertEqual(
            [m for m in self.messages() if "lost" in m],
            [f"Access log {self.path!r}: its reader went away; lines are lost until it can be written again"],
        )
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        log.write("back\n")
        self.clock.advance(1)
        self.assertEqual(os.read(reader, 100), b"back\n")
        self.assertIn(f"Access log {self.path!r} is written again; 210003 bytes were lost", self.messages())
        log.close()

    def test_writeFails(self) -> None:
        """
        A write the system refuses (a full disk: C{/dev/full}) is one error
        however many batches fail.
        """
        log = AccessLogFile("/dev/full", self.clock)
        for _ in range(3):
            log.write("a" * 70000 + "\n")
            self.clock.advance(1)
        log.close()
        self.assertEqual(
            [m for m in self.messages() if "lost" in m],
            ["Access log '/dev/full': No space left on device (errno ENOSPC); lines are lost until it can be written again"],
        )

    def fullDisk(self, room: int) -> Any:
        """
        Make C{os.write} act as on a disk that, once its C{full} is set,
        takes C{room} bytes more, then none (C{ENOSPC}) until C{full} is
        unset.
        """
        realWrite = os.write
        disk = SimpleNamespace(full=False, left=room)

        def write(fd: int, data: bytes) -> int:
            if not disk.full:
                disk.left = room
                return realWrite(fd, data)
            if disk.left:
                taken, disk.left = disk.left, 0
                return realWrite(fd, bytes(data[:taken]))
            raise OSError(28, "No space left on device")

        self.patch(os, "write", write)
        return disk

    def test_lineCutShortByFullDisk(self) -> None:
        """
        A line that a full disk cut short is ended before the next line
        written once the disk has room, so no line is glued to half of
        another.
        """
        disk = self.fullDisk(10)
        log = AccessLogFile(self.path, self.clock)
        log.write("first line\n")
        self.clock.advance(1)
        disk.full = True
        log.write("second line, cut short\n")
        self.clock.advance(1)
        disk.full = False
        log.write("third line\n")
        self.clock.advance(1)
        log.write("fourth line\n")
        log.close()
        self.assertEqual(read(self.path), "first line\nsecond lin\nthird line\nfourth line\n")
        self.assertIn(f"Access log {self.path!r} is written again; 13 bytes were lost", self.messages())

    def test_lineCutShortThenMoved(self) -> None:
        """
        A log cut short by a full disk, then moved away (rotated): the new
        file starts with the next line, not with an empty one.
        """
        disk = self.fullDisk(5)
        disk.full = True
        log = AccessLogFile(self.path, self.clock)
        log.write("cut short\n")
        self.clock.advance(1)
        os.rename(self.path, self.path + ".1")
        disk.full = False
        log.write("next\n")
        self.clock.advance(1)
        log.close()
        self.assertEqual(read(self.path), "next\n")
        self.assertEqual(read(self.path + ".1"), "cut s")

    def test_cannotMakeAgain(self) -> None:
        """
        A file moved away whose name cannot be made again (a directory took
        it) is one error; the lines go on to the moved file, and to a new
        file once the name is free.
        """
        log = AccessLogFile(self.path, self.clock)
        log.write("one\n")
        self.clock.advance(1)
        os.rename(self.path, self.path + ".1")
        os.mkdir(self.path)
        for line in ("two\n", "three\n"):
            log.write(line)
            self.clock.advance(1)
        self.assertEqual(
            [m for m in self.messages() if "moved" in m],
            [f"Access log {self.path!r} was moved or removed and cannot be made again (Is a directory); "
             "lines go on to the moved file"],
        )
        os.rmdir(self.path)
        log.write("four\n")
        log.close()
        self.assertEqual(read(self.path + ".1"), "one\ntwo\nthree\n")
        self.assertEqual(read(self.path), "four\n")
        self.assertIn(f"Access log {self.path!r} is made again", self.messages())
        self.assertEqual([m for m in self.messages() if "lost" in m or "written again" in m], [])

    def test_heldForTheLog(self) -> None:
        """
        The start-up check keeps the descriptor it opened for the log: a
        FIFO's reader (C{cat}, C{tee}) saw the end of its input when the
        check closed it, and went away before the log was opened.
        """
        reader = self.fifo()
        holdAccessLog(self.path)
        self.assertRaises(BlockingIOError, os.read, reader, 10)  # no end of input
        log = AccessLogFile(self.path, self.clock)
        log.write("line\n")
        log.close()
        self.assertEqual(os.read(reader, 10), b"line\n")
        holdAccessLog(self.path)
        releaseAccessLog(self.path)
        self.assertEqual(os.read(reader, 10), b"")  # released: closed

    def test_socket(self) -> None:
        """
        A name of a descriptor that is a socket (C{/dev/stdout} under
        systemd), which cannot be opened again by its name, is written
        through a duplicate, without waiting, and without changing the
        descriptor's own flags.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(True)
        log = AccessLogFile(f"/dev/fd/{ours.fileno()}", self.clock)
        log.write("hello\n")
        self.clock.advance(1)
        self.assertEqual(theirs.recv(100), b"hello\n")
        for _ in range(3000):
            log.write("s" * 999 + "\n")
        self.clock.advance(1)
        self.assertTrue(any("lines dropped" in m for m in self.messages()))
        log.close()
        self.assertTrue(ours.getblocking())
        self.assertEqual(os.fstat(ours.fileno()).st_mode, os.fstat(theirs.fileno()).st_mode)  # still open

    def test_descriptorNameNotFollowed(self) -> None:
        """
        A name of a descriptor (C{/dev/stdout}, C{/dev/fd/N}) is never
        followed as a moved file: once twistd runs as a daemon it names
        C{/dev/null}, and the log followed it there.
        """
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.addCleanup(os.close, fd)
        log = AccessLogFile(f"/dev/fd/{fd}", self.clock)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)  # what daemonizing does to the standard output
        os.close(null)
        log.write("kept\n")
        log.close()
        self.assertEqual(read(self.path), "kept\n")

    def test_cannotOpen(self) -> None:
        """
        A file that cannot be opened is an C{OSError} (the start checks it
        first, so this is a directory removed in between).
        """
        self.assertRaises(OSError, AccessLogFile, os.path.join(self.path, "no", "log"), self.clock)


class SiteAccessLogTests(SynchronousTestCase):
    """
    The web server keeps C{--http-access-log} in an L{AccessLogFile}.
    """

    def request(self, path: str) -> None:
        clock, site, connect = inMemory(accessLog=path)
        self.addCleanup(site.stopFactory)
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value())

    def test_notRotated(self) -> None:
        """
        A log of a million bytes or more is appended to, not rotated into
        C{.1} (Twisted's web log did that).
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("old\n" * 250000)
        self.request(path)
        self.assertEqual(os.listdir(os.path.dirname(path)), [os.path.basename(path)])
        content = read(path)
        self.assertTrue(content.startswith("old\n" * 250000))
        self.assertIn('"GET / HTTP/1.1" 200 ', content[1000000:])

    def test_pipe(self) -> None:
        """
        The log may be a pipe some process reads, such as C{/dev/stdout}
        under C{| tee} (Twisted's web log seeks, and failed on one).
        """
        path = os.path.abspath(self.mktemp())
        os.mkfifo(path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        self.request(path)
        self.assertIn(b'"GET / HTTP/1.1" 200 ', os.read(reader, 65536))

    def test_cannotOpen(self) -> None:
        """
        A log that cannot be opened when the server starts (its directory
        removed since the start's check) is one error, and the lines go to
        the twistd log.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        path = os.path.join(os.path.abspath(self.mktemp()), "access.log")
        self.request(path)
        messages = [formatEvent(e) for e in events]
        self.assertIn(
            f"Cannot open access log {path!r}: No such file or directory; access lines go to the twistd log",
            messages,
        )
        self.assertEqual(len([m for m in messages if '"GET / HTTP/1.1" 200 ' in m]), 1)


class AccessLogOverSocketsTests(TestCase):
    """
    The web server's and the proxy's access logs, with clients over real
    loopback sockets.
    """

    async def waitFor(self, read, fragment: bytes) -> bytes:
        """
        Poll C{read()} until what it gave holds C{fragment} (the log is
        written once a second).
        """
        seen = b""
        for _ in range(100):
            seen += read()
            if fragment in seen:
                return seen
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{fragment!r} not logged: {seen[-200:]!r}")

    async def test_webServerAppendsWithoutRotating(self) -> None:
        """
        A log of a million bytes is appended to, not rotated into C{.1}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("old\n" * 250000)
        port = await startListener(self, makeHTTPService("tcp:0:interface=127.0.0.1", accessLog=path))
        answer = await threads.deferToThread(rawExchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        with open(path, "rb") as f:
            content = await self.waitFor(f.read, b'"GET / HTTP/1.1" 200 ')
        self.assertTrue(content.startswith(b"old\n" * 250000))
        self.assertEqual(os.listdir(os.path.dirname(path)), [os.path.basename(path)])

    async def test_proxyToFIFO(self) -> None:
        """
        The proxy's log may be a FIFO some process reads.
        """
        path = os.path.abspath(self.mktemp())
        os.mkfifo(path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)

        def read() -> bytes:
            try:
                return os.read(reader, 65536)
            except BlockingIOError:
                return b""

        port = await startListener(self, makeProxyService("tcp:0:interface=127.0.0.1", accessLog=path))
        answer = await threads.deferToThread(
            rawExchange, port, b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer[:100])
        await self.waitFor(read, b'"GET http://127.0.0.1:1/ HTTP/1.1" 403 ')
