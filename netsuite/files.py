"""
Writing and reading small files (state, job lists, keys, password files)
so that a crash, a full disk or a planted symbolic link never leaves a
half-written file under the real name, nor writes anywhere else, and a
planted FIFO or huge file never stalls or fills the process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, TypeVar, Union

from twisted.logger import Logger

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]


def writeAtomically(
    path: Union[str, Path],
    data: bytes,
    mode: int = 0o666,
    sync: bool = False,
    like: Optional[os.stat_result] = None,
) -> os.stat_result:
    """
    Replace C{path} with C{data} through a new temporary file beside it and
    a rename, so a crash leaves the old content or the new one.

    The temporary file is always created afresh, never opened through a
    symbolic link or reused with an older mode; a failed write leaves it
    behind neither.

    @param mode: the permissions of the new file, before the umask.
    @param sync: also flush the file, then its directory, to the disk
        before returning, so that the new content outlives a power cut.
    @param like: the status of the file replaced, whose owner, group and
        permissions (as they are, whatever the umask) the new file keeps.
        Where this process may not give the file away, it keeps what it
        can: the group if it is one of this process's, else the
        permissions without the group's.
    @return: the new file's status (its owner tells whether it was kept).
    @raise OSError: the file could not be written; C{path} is unchanged.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temporary, flags, mode if like is None else 0o600)
        with os.fdopen(fd, "wb") as f:
            if like is not None:
                _takeOwnerAndMode(fd, like)
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
            status = os.fstat(fd)
        os.replace(temporary, path)
        if sync:
            _syncDirectory(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return status


def _takeOwnerAndMode(fd: int, like: os.stat_result) -> None:
    """
    Give the open file C{fd} the owner, group and permissions of C{like},
    as far as this process may (see L{writeAtomically}).
    """
    mode = stat.S_IMODE(like.st_mode)
    status = os.fstat(fd)
    fchown = getattr(os, "fchown", None)
    if fchown is not None and (status.st_uid, status.st_gid) != (like.st_uid, like.st_gid):
        try:
            fchown(fd, like.st_uid, like.st_gid)
        except PermissionError:
            # Only root gives a file away; a group of one's own will do.
            with contextlib.suppress(PermissionError):
                fchown(fd, -1, like.st_gid)
            if os.fstat(fd).st_gid != like.st_gid:
                mode &= ~0o070
    os.fchmod(fd, mode)


def rewriteInPlace(path: Union[str, Path], data: bytes, filler: bytes = b"") -> bool:
    """
    Write C{data} over the file C{path} in place, where it needs no new
    space on the disk (a full one): the file must be a regular file of its
    own (no link to it or from it), this user's and private to it (no
    other user may read or write it: one planted in a shared directory
    is not written a secret), holding at least that many bytes of
    allocated space.  The write is flushed to the disk.

    With a C{filler} byte (a space, for JSON), data shorter than the file
    is padded with it to the file's length and written in one go, never
    truncated: a crash leaves the old bytes or the new ones, each whole.
    Without one, the file is cut to the new length after the write.

    @return: whether C{path} now holds C{data} (padded); when not, it is
        unchanged, unless the system failed in the middle of the write.
    """
    # Not through a link; a FIFO with no reader fails at once.
    flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
            return False
        if status.st_uid != os.geteuid() or status.st_mode & 0o077:
            return False
        if len(data) > max(status.st_size, getattr(status, "st_blocks", 0) * 512):
            return False
        if filler:
            data += filler * (status.st_size - len(data))
        if os.pwrite(fd, data, 0) != len(data):
            return False
        if not filler:
            os.ftruncate(fd, len(data))
        os.fdatasync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _syncDirectory(directory: Path) -> None:
    """
    Flush C{directory}'s entries (a rename in it) to the disk, where the
    system can open a directory for that.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OtherUsersFile(ValueError):
    """
    The file belongs to another user (see L{readSmallFile}'s C{own}).
    """


def readSmallFile(path: Union[str, Path], limit: int, follow: bool = False, own: bool = False) -> bytes:
    """
    The bytes of the regular file C{path}, opened without following a
    symbolic link (unless C{follow}) or waiting on a FIFO, and never read
    past C{limit} bytes.

    @param own: refuse a file that belongs to another user.
    @raise FileNotFoundError: there is no such file.
    @raise OSError: it cannot be opened (a symbolic link among others).
    @raise OtherUsersFile: (with C{own}) it belongs to another user.
    @raise ValueError: it is not a regular file, or is longer than C{limit}
        bytes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("not a regular file")
        if own and status.st_uid != os.geteuid():
            raise OtherUsersFile("it belongs to another user")
        if status.st_size > limit:
            raise ValueError(f"longer than {limit} bytes")  # not read first
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"longer than {limit} bytes")
    return data


def warnIfOpenToOthers(path: Union[str, Path], secret: str, log: Logger) -> None:
    """
    Warn on C{log} when other users may read or write the file C{path},
    which keeps C{secret} (what the warning calls it: "the API token",
    "the proxy's decoy key"): its mode lets them, or another user owns it
    (and may read and change it whatever its mode).  It is used all the
    same (it may be shared on purpose), and the warning says how to mend it.
    """
    with contextlib.suppress(OSError):
        status = os.stat(path)
        mode = status.st_mode
        if mode & 0o077:
            log.warn(
                "{path} is open to other users (mode {mode:04o}), who may read or change {secret}: chmod 600 it",
                path=str(path),
                mode=stat.S_IMODE(mode),
                secret=secret,
            )
        if hasattr(os, "geteuid") and status.st_uid != os.geteuid():
            log.warn(
                "{path} is owned by another user (uid {owner}), who may read or change {secret}:"
                " chown it to the user netsuite runs as (uid {uid})",
                path=str(path),
                owner=status.st_uid,
                secret=secret,
                uid=os.geteuid(),
            )


_Secret = TypeVar("_Secret")


def loadOrCreateSecret(
    path: Union[str, Path],
    *,
    parse: Callable[[bytes], Optional[_Secret]],
    create: Callable[[], Tuple[_Secret, bytes]],
    what: str,
    form: str,
    secret: str,
    log: Logger,
    makeDirectory: bool = False,
) -> Tuple[_Secret, bool]:
    """
    The secret kept in the file C{path}, or a new one written there,
    readable by its owner only, when there is no such file.  A file others
    may read or write, or that another user owns, is used, with a warning
    (see L{warnIfOpenToOthers}).

    @param parse: the secret a file's bytes hold, or L{None} when they hold
        no usable one.
    @param create: a new secret, and the bytes to keep it in.
    @param what: what the errors call the secret ("key"), and C{form} what
        a usable one looks like ("64 hexadecimal digits").
    @param secret: what the warning calls it ("the proxy's decoy key").
    @param makeDirectory: make C{path}'s directory first, when it is missing.
    @return: the secret, and whether it was created.
    @raise ValueError: the file holds no usable secret (said in a sentence).
    @raise OSError: the file cannot be read, or made.
    """
    try:
        data = readSmallFile(path, 4096)
    except FileNotFoundError:
        value, content = create()
        if makeDirectory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writeAtomically(path, content, 0o600)
        return value, True
    except ValueError as e:
        raise ValueError(f"{path}: {e}; delete it and a new {what} is made") from None
    value = parse(data)
    if value is None:
        raise ValueError(f"{path} holds no usable {what} ({form}); delete it and a new one is made")
    warnIfOpenToOthers(path, secret, log)
    return value, False


#: The lock files this process holds, by path, open for its lifetime.
_held: Dict[str, int] = {}


#: The errors of a write to a disk (or a quota) that is full.
_DISK_FULL = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))


def lockForThisProcess(path: Union[str, Path]) -> Optional[str]:
    """
    Take the lock file C{path} for this process, for as long as it runs
    (an advisory C{flock}, which the system drops when the process ends,
    however it ends), and write this process's id in it.  Taking it again
    in the same process is nothing.

    The id is only shown to a second process (see the return value): a
    full disk that cannot take it leaves the lock file empty, and the lock
    held all the same.

    @return: L{None} once held; else who holds it (C{"process 1234"}).
    @raise OSError: the lock file cannot be made, opened or written for
        another reason than a full disk.
    """
    key = os.path.abspath(path)
    if key in _held or fcntl is None:
        return None
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(key, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        return f"process {holder}" if holder.isdigit() else "another process"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    except OSError as e:
        if e.errno not in _DISK_FULL:
            os.close(fd)  # which frees the lock
            raise
    _held[key] = fd
    return None


def waitForLock(path: Union[str, Path], patience: float) -> int:
    """
    Take the lock file C{path} (an advisory exclusive C{flock}; the file is
    made, private, if missing, and never opened through a symbolic link),
    waiting up to C{patience} seconds for another process holding it.

    @return: the lock file's descriptor: closing it lets the lock go.
    @raise TimeoutError: another process held it all that time.
    @raise OSError: the lock file cannot be made or opened, or is not a
        regular file.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{str(path)!r} is not a regular file")
        deadline = time.monotonic() + patience
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{str(path)!r} stayed locked by another process for {patience:g} s") from None
                time.sleep(0.01)
    except BaseException:
        os.close(fd)
        raise
    return fd


def claimLocksForThisProcess() -> None:
    """
    Write this process's id in every lock file it holds, where another id
    is written: twistd takes the locks while it reads the options, then
    becomes a daemon (a new process, holding the same locks), and the lock
    files named a process that no longer ran.
    """
    pid = str(os.getpid()).encode("ascii")
    for fd in _held.values():
        try:
            if os.pread(fd, 32, 0).strip() != pid:
                os.ftruncate(fd, 0)
                os.pwrite(fd, pid, 0)
        except OSError:
            pass  # the lock still holds; only the id it shows is stale
