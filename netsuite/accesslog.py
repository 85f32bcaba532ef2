"""
Access log files for the web server and the proxy: appended to in
batches, never rotated by netsuite (that is logrotate's job), and never
allowed to block the reactor or grow the process without bound when the
file is a pipe whose reader does not keep up.
"""

from __future__ import annotations

import errno
import os
import stat

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger(namespace="netsuite.accesslog")

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class AccessLogFile:
    """
    An access log appended to C{path} in batches: at most once a second,
    or as soon as 64 KiB wait, and when it is closed (instead of one
    C{write} a request).

    A regular file moved or removed (by logrotate without C{copytruncate})
    is noticed at the next batch, and the log goes on in a new file under
    C{path}.  A pipe or terminal is written without waiting: what it
    cannot take now is tried again a second later, and while more than
    C{backlog} bytes wait, new lines are dropped and counted in a warning
    (the reactor is never stopped by a reader that does not read).  A
    failed write (a full disk, a pipe whose reader went away) is warned
    about once, not raised to the request that was being logged.
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
        self._failing: str | None = None
        self._blocked = False
        self._fd = -1
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, _FLAGS, 0o666)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        info = os.fstat(fd)
        self._regular = stat.S_ISREG(info.st_mode)
        self._identity = (info.st_dev, info.st_ino)

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
        if self._regular:
            self._reopenIfMoved()
        self._blocked = False
        try:
            while self._pending:
                del self._pending[: os.write(self._fd, self._pending)]
        except BlockingIOError:
            self._blocked = True
        except OSError as e:
            self._fail(f"{e.strerror} (errno {errno.errorcode.get(e.errno, e.errno)})", len(self._pending))
            self._pending.clear()
        else:
            if self._failing is not None:
                _log.info("Access log {path!r} is written again", path=self.path)
                self._failing = None
        if self._dropped:
            _log.warn(
                "Access log {path!r}: {count} lines dropped, its reader does not keep up",
                path=self.path,
                count=self._dropped,
            )
            self._dropped = 0
        if self._pending:
            self._schedule()

    def _reopenIfMoved(self) -> None:
        try:
            info = os.stat(self.path)
            moved = (info.st_dev, info.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        except OSError:
            return
        if moved:
            try:
                self._open()
            except OSError as e:
                self._fail(f"cannot open it again after it was moved: {e.strerror}", 0)

    def _fail(self, reason: str, lost: int) -> None:
        if self._failing != reason:
            self._failing = reason
            _log.error(
                "Access log {path!r}: {reason}; {lost} bytes of it lost",
                path=self.path,
                reason=reason,
                lost=lost,
            )

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
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
