"""
Access log files for the web server and the proxy: appended to in
batches, never rotated by netsuite (that is logrotate's job), and never
allowed to block the reactor or grow the process without bound when the
file is a pipe whose reader does not keep up.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from typing import Dict

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger(namespace="netsuite.accesslog")

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

#: Names of a descriptor the process already has open.
_OWN_DESCRIPTOR = re.compile(r"/dev/std(out|err)|/dev/fd/([0-9]{1,9})|/proc/self/fd/([0-9]{1,9})")

#: Descriptors opened by L{holdAccessLog}, by path, until the log takes them.
_held: Dict[str, int] = {}


def _openDescriptor(path: str) -> int:
    """
    Open C{path} to append to, without waiting: a FIFO no process reads is
    an C{OSError} (C{ENXIO}).  C{/dev/stdout} (or another name of an open
    descriptor) that is a socket, as under systemd, cannot be opened again
    by its name: the descriptor is duplicated instead.
    """
    match = _OWN_DESCRIPTOR.fullmatch(path)
    if match is not None:
        std, *numbers = match.groups()
        number = {"out": 1, "err": 2}[std] if std else int(next(n for n in numbers if n))
        try:
            isSocket = stat.S_ISSOCK(os.fstat(number).st_mode)
        except OSError:
            isSocket = False
        if isSocket:
            return os.dup(number)
    return os.open(path, _FLAGS, 0o666)


def holdAccessLog(path: str) -> int:
    """
    Open C{path} as an access log (see L{AccessLogFile}) and keep the
    descriptor for the log that will be made for C{path}: a start-up check
    that closed it would end the input of a FIFO's reader (C{cat}, C{tee}),
    which then goes away.

    @return: the descriptor, for the caller to look at (not to close; see
        L{releaseAccessLog}).
    @raise OSError: it cannot be opened.
    """
    fd = _openDescriptor(path)
    releaseAccessLog(path)
    _held[path] = fd
    return fd


def releaseAccessLog(path: str) -> None:
    """
    Close the descriptor L{holdAccessLog} keeps for C{path}, if any.
    """
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


class AccessLogFile:
    """
    An access log appended to C{path} in batches: at most once a second,
    or as soon as 64 KiB wait, and when it is closed (instead of one
    C{write} a request).

    A regular file moved or removed (by logrotate without C{copytruncate})
    is noticed at the next batch, and the log goes on in a new file under
    C{path}.  A pipe, terminal or socket is written without waiting: what
    it cannot take now is tried again a second later, and while more than
    C{backlog} bytes wait, new lines are dropped and counted in a warning
    (the reactor is never stopped by a reader that does not read).  A FIFO
    whose reader went away is opened again once one reads it.  A failed
    write (a full disk) is one error, not an exception for the request
    being logged, and the bytes lost meanwhile are counted when writing
    works again.
    """

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        delay: float = 1.0,
        limit: int = 65536,
        backlog: int = 1 << 20,
    ) -> None:
        """
        @raise OSError: C{path} cannot be opened to append to.
        """
        self.path = path
        self._clock = clock
        self._delay = delay
        self._limit = limit
        self._backlog = backlog
        self._pending = bytearray()
        self._call: IDelayedCall | None = None
        self._dropped = 0
        self._blocked = False
        #: What stops writing now (logged once), and the bytes lost since.
        self._problem: str | None = None
        self._lost = 0
        self._moved: str | None = None
        self._fd = -1
        self._socket: socket.socket | None = None
        #: The last byte written did not end a line; and a failed write then
        #: left that line cut short, so the next write starts a new line.
        self._midLine = False
        self._cutShort = False
        #: A name of a descriptor (C{/dev/stdout}) names another file once
        #: twistd runs as a daemon: it is never followed as a moved file.
        self._follow = _OWN_DESCRIPTOR.fullmatch(path) is None
        fd = _held.pop(path, None)
        self._use(fd if fd is not None else _openDescriptor(path))

    def _use(self, fd: int) -> None:
        self._close()
        self._fd = fd
        self._midLine = self._cutShort = False
        info = os.fstat(fd)
        self._regular = stat.S_ISREG(info.st_mode)
        self._fifo = stat.S_ISFIFO(info.st_mode)
        self._identity = (info.st_dev, info.st_ino)
        if stat.S_ISSOCK(info.st_mode):
            # Sent without waiting call by call: the descriptor is shared
            # with the process's own output, whose flags stay as they are.
            self._socket = socket.socket(fileno=fd)

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        elif self._fd >= 0:
            os.close(self._fd)
        self._socket = None
        self._fd = -1

    def write(self, line: str) -> None:
        """
        Add C{line} (with its line end) to the log.
        """
        if len(self._pending) >= self._backlog:
            self._dropped += 1
        else:
            self._pending += line.encode("utf-8", "backslashreplace")
            if len(self._pending) >= self._limit and not self._blocked:
                self.flush()
                return
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self._clock.callLater(self._delay, self.flush)

    def flush(self) -> None:
        """
        Write what waits, as much as the file takes now.
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if self._regular and self._follow:
            self._reopenIfMoved()
        elif self._fd < 0 and self._fifo:
            self._reopenFIFO()
        self._blocked = False
        if self._pending:
            if self._fd < 0:
                self._lose()
            else:
                self._send()
        if self._dropped:
            _log.warn(
                "Access log {path!r}: {count} lines dropped, its reader does not keep up",
                path=self.path,
                count=self._dropped,
            )
            self._dropped = 0
        if self._pending:
            self._schedule()

    def _write(self, data: bytes | bytearray) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        return os.write(self._fd, data)

    def _send(self) -> None:
        try:
            if self._cutShort and self._write(b"\n"):
                self._cutShort = self._midLine = False
            while self._pending and not self._cutShort:
                sent = self._write(self._pending)
                if sent:
                    self._midLine = self._pending[sent - 1] != 0x0A
                del self._pending[:sent]
                self._recovered()
        except BlockingIOError:
            self._blocked = True
        except OSError as e:
            if e.errno == errno.EPIPE and self._fifo:
                self._close()  # opened again once something reads it
                self._fail("its reader went away")
            else:
                self._fail(f"{e.strerror} (errno {errno.errorcode.get(e.errno or 0, e.errno)})")
            self._lose()

    def _lose(self) -> None:
        self._cutShort = self._midLine
        self._lost += len(self._pending)
        self._pending.clear()

    def _fail(self, reason: str) -> None:
        if self._problem != reason:
            self._problem = reason
            _log.error(
                "Access log {path!r}: {reason}; lines are lost until it can be written again",
                path=self.path,
                reason=reason,
            )

    def _recovered(self) -> None:
        if self._problem is not None:
            _log.info(
                "Access log {path!r} is written again; {lost} bytes were lost",
                path=self.path,
                lost=self._lost,
            )
            self._problem = None
            self._lost = 0

    def _reopenFIFO(self) -> None:
        try:
            fd = _openDescriptor(self.path)
        except OSError:
            return  # still nobody reading
        self._use(fd)

    def _reopenIfMoved(self) -> None:
        try:
            info = os.stat(self.path)
            moved = (info.st_dev, info.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        except OSError:
            return
        if not moved:
            return
        try:
            self._use(_openDescriptor(self.path))
        except OSError as e:
            if self._moved != e.strerror:
                self._moved = e.strerror
                _log.error(
                    "Access log {path!r} was moved or removed and cannot be made again ({reason}); "
                    "lines go on to the moved file",
                    path=self.path,
                    reason=e.strerror,
                )
            return
        if self._moved is not None:
            _log.info("Access log {path!r} is made again", path=self.path)
            self._moved = None

    def close(self) -> None:
        """
        Write what waits and close the file; what a pipe cannot take now is
        dropped, with a warning.
        """
        self.flush()
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._pending:
            _log.warn(
                "Access log {path!r}: {count} bytes not written, its reader does not keep up",
                path=self.path,
                count=len(self._pending),
            )
            self._pending.clear()
        self._close()


class LogKeptThroughGrace:
    """
    For a factory with an access log: once it is stopped (its last
    listener stopped listening), the log stays open until its last
    connection ends, so that answers ending in the grace period of a stop
    are logged there (Twisted closes a site's log at once, and they went
    to the twistd log).  The factory calls L{connectionOpened} and
    L{connectionClosed} for each connection, L{stopLogging} when it stops
    and L{stillLogging} when it starts, and closes its log in
    C{_closeLog}.
    """

    _connections = 0
    _stopping = False

    def connectionOpened(self) -> None:
        """
        A connection began.
        """
        self._connections += 1

    def connectionClosed(self) -> None:
        """
        A connection ended: the last one of a stopped factory closes the
        log.
        """
        self._connections -= 1
        if self._stopping and not self._connections:
            self._stopping = False
            self._closeLog()

    def stopLogging(self) -> None:
        """
        The factory stopped: close the log now, or once its last
        connection ends.
        """
        if self._connections:
            self._stopping = True
        else:
            self._closeLog()

    def stillLogging(self) -> bool:
        """
        The factory starts: whether its log is still open (it was started
        again before the connections of its stop ended).
        """
        was, self._stopping = self._stopping, False
        return was

    def _closeLog(self) -> None:
        raise NotImplementedError


def openAccessLog(path: str, clock: IReactorTime) -> AccessLogFile | None:
    """
    Open the access log C{path}, or log why it cannot be (the caller then
    logs to the twistd log).
    """
    try:
        return AccessLogFile(path, clock)
    except OSError as e:
        _log.error(
            "Cannot open access log {path!r}: {reason}; access lines go to the twistd log",
            path=path,
            reason=e.strerror,
        )
        return None
