"""
Basic authentication for the HTTP proxy: a users file of salted scrypt
hashes, and a checker that never blocks the reactor.

The users file (C{--proxy-users FILE}) has one user a line::

    # comments and blank lines are ignored
    alice:scrypt:16384:8:1:<salt, base64>:<hash, base64>

Make or change an entry with C{netsuite-proxy-user FILE NAME} (it asks for
the password, or reads one line from standard input when that is not a
terminal).  Entries that would cost a check more than 64 MiB of memory
(128 * r * N bytes) or work (that times p), or that have a salt or hash
longer than 64 bytes, are refused when the file is read, so that every
entry read can be checked, each in a bounded time.  Should a check still
fail (memory runs out), the sign-in fails as with a wrong password, and a
warning is logged once for that user.

scrypt costs tens of milliseconds of CPU on purpose, so L{Authenticator}
runs it in the reactor's thread pool, remembers credentials that checked out
(for C{cacheSeconds}, for the client address that sent them), and lets each
client address try only a few wrong passwords a second (checks under way
count as wrong until they are not; credentials remembered for a client
address pass on a connection where they passed already, checked again
there without a try once forgotten, and on another only while the address
could pay a wrong try).  All clients together get only so many
checks a second, and only a few at a time (more wait their turn, a bounded
number of them for a bounded time, and are refused past that, which counts
as a wrong try), so that guesses spread over many addresses get no more
tries; remembered credentials need no check.
An unknown name costs the same check as a known one (one of the users'
scrypt costs, the same for the same name, the costs shared out among
unknown names as among the users), so names cannot be told apart by the
time the answer takes.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import os
import stat
import sys
import weakref
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

from twisted.internet import defer, threads
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from netsuite.files import loadOrCreateSecret, readSmallFile, waitForLock, writeAtomically
from netsuite.limits import BucketTable, TokenBucket, cancelIfActive, hostKey

__all__ = [
    "Authenticator",
    "DECOY_KEY_FILE",
    "UsersFileError",
    "UsersFileMissing",
    "UsersFileUnreadable",
    "hashPassword",
    "loadOrCreateDecoyKey",
    "loadUsers",
    "parseBasic",
    "main",
]

_log = Logger()

#: scrypt parameters for new entries: about 50 ms and 16 MiB.
SCRYPT_N = 16384
SCRYPT_R = 8
SCRYPT_P = 1

#: The most an entry may cost: its memory (128 * r * N bytes) and its work
#: (that times p) are each at most this many bytes' worth, so that one check
#: takes at most about 64 MiB and a fifth of a second.
MAX_SCRYPT_COST = 64 * 1024 * 1024

#: The memory C{hashlib.scrypt} may take (its C{maxmem}).  OpenSSL counts
#: 128 * r * (N + 2 + p) bytes, a little more than the cost above: for
#: entries within the bounds of L{_checkCost} that is at most 144 KiB more;
#: the rest is margin.
_MAXMEM = MAX_SCRYPT_COST + 1024 * 1024

#: The longest salt or hash, in bytes (longer ones make every check hash
#: more, without making it any safer).
_MAX_SALT_OR_HASH = 64

#: The largest users file read.
MAX_USERS_FILE = 16 * 1024 * 1024

#: Sign-ins that wait, for a check (all of them taken, or none left this
#: second) or for one of their address's tries to come free, and for how
#: long at most in all; past either, a 407.  They were all refused at
#: once: 20 users behind one NAT signing in together got 15 407s, then 10,
#: and a clean round only after 3 s (squid queues them for its helpers).
MAX_WAITING_CHECKS = 64
CHECK_PATIENCE = 5.0
#: Sign-ins of one client address that wait for one of its own checks to
#: end (L{MAX_WAITING_CHECKS} in all): one address took every place.
MAX_WAITING_PER_CLIENT = 16

#: Credentials remembered at most (the least recently used are forgotten
#: first): about 230 bytes each, 15 MiB for all.  There were 1024: 1,100
#: clients signed in made every request a password check, and a round of
#: their requests took 112 s instead of 1 s.
REMEMBERED_CREDENTIALS = 65536

#: Seconds C{netsuite-proxy-user} waits for another run to be done with
#: the users file.
LOCK_PATIENCE = 30.0

#: The longest password C{netsuite-proxy-user} reads from standard input,
#: in bytes (it read a line without end: C{< /dev/zero} took all memory).
MAX_PASSWORD = 65536

#: Seconds requests wait for the users file being read again; past them
#: they go on with the users as they were.
READ_PATIENCE = 5.0

#: The longest wait, in seconds, between two reads of a users file whose
#: read failed with an error that may pass (the waits double from 1 s).
READ_RETRY_MAX = 60.0


class UsersFileError(Exception):
    """
    The users file cannot be used; the message says where and why.
    """


class UsersFileMissing(UsersFileError):
    """
    The users file does not exist.
    """


class UsersFileUnreadable(UsersFileError):
    """
    The users file exists but reading it failed (a disk error, too many
    open files, no permission): an error that may pass without the file
    changing.
    """


@dataclass(frozen=True)
class _Entry:
    n: int
    r: int
    p: int
    salt: bytes
    hash: bytes

    def matches(self, password: bytes) -> bool:
        """
        Whether C{password} is this entry's.

        @raise ValueError: C{hashlib.scrypt} refused (it should not, for an
            entry L{loadUsers} accepted).
        @raise MemoryError: there was not enough memory.
        """
        derived = hashlib.scrypt(
            password, salt=self.salt, n=self.n, r=self.r, p=self.p,
            maxmem=_MAXMEM, dklen=len(self.hash),
        )
        return hmac.compare_digest(derived, self.hash)


class _Decoys:
    """
    What unknown names are checked against: an entry of each scrypt cost
    (N, r, p and hash length) the users have, never matching.  A keyed hash
    of the name picks one, the same each time for a name, each cost for a
    share of names as large as its share of users: with one user at a
    higher cost, that user's wrong password took as long as no unknown
    name's, and told that the name existed.

    The hash is a place in [0, 1), and the costs, in a fixed (sorted)
    order, take shares of it as large as their shares of users: a user
    added or removed moves each bound by less than one user's share, so an
    unknown name keeps its cost unless its place is that near a bound (a
    name's place modulo the number of users changed with every user added,
    and so did about half the unknown names' costs, where a real user's
    never does).
    """

    def __init__(self, users: Dict[str, _Entry], key: bytes) -> None:
        counts = Counter((entry.n, entry.r, entry.p, len(entry.hash)) for entry in users.values())
        if not counts:
            counts[SCRYPT_N, SCRYPT_R, SCRYPT_P, 32] = 1
        self._key = key
        costs = sorted(counts)
        self._entries = [_Entry(n, r, p, os.urandom(16), os.urandom(length)) for n, r, p, length in costs]
        #: Users counted up to each entry, in order: where a name's place
        #: (scaled to the last) falls picks the entry.
        self._bounds = list(accumulate(counts[cost] for cost in costs))

    def forName(self, name: str) -> _Entry:
        """
        The entry to check C{name}'s password against.
        """
        digest = hmac.new(self._key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        # The place, a 64-bit fraction, times the users counted.
        place = (int.from_bytes(digest[:8], "big") * self._bounds[-1]) >> 64
        return self._entries[bisect.bisect_right(self._bounds, place)]


#: The file, in netsuite's data directory, that keeps the key choosing
#: unknown names' costs from one start to the next (see L{_Decoys}).
DECOY_KEY_FILE = "proxy-decoy-key"


def loadOrCreateDecoyKey(path: str) -> bytes:
    """
    The key kept in the file C{path} (64 hexadecimal digits), or a new one
    written there, readable by its owner only, when there is no such file.
    A new key at every start gave unknown names other costs after each
    restart, where real users keep theirs.  A file others may read or
    write, or that another user owns, is used, with a warning.

    @raise ValueError: the file holds no usable key (said in a sentence).
    @raise OSError: the file cannot be read, or made.
    """
    return loadOrCreateSecret(
        path,
        parse=_parseDecoyKey,
        create=_newDecoyKey,
        what="key",
        form="64 hexadecimal digits",
        secret="the proxy's decoy key",
        log=_log,
    )[0]


def _newDecoyKey() -> Tuple[bytes, bytes]:
    """
    A new decoy key, and the line that keeps it.
    """
    key = os.urandom(32)
    return key, key.hex().encode("ascii") + b"\n"


def _parseDecoyKey(data: bytes) -> Optional[bytes]:
    """
    The decoy key a key file's bytes hold, or L{None}.
    """
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return key if len(key) == 32 else None


def _checkCost(n: int, r: int, p: int) -> None:
    """
    Refuse scrypt parameters that are malformed, or that would cost more
    than L{MAX_SCRYPT_COST} (or more memory than L{_MAXMEM}) a check.

    @raise ValueError: they are.
    """
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError("unusable scrypt parameters (N must be a power of 2, r 1 to 64, p 1 to 16)")
    if 128 * r * n * p > MAX_SCRYPT_COST or 128 * r * (n + 2 + p) > _MAXMEM:
        raise ValueError(
            f"unusable scrypt parameters: N={n}, r={r}, p={p} cost more than the"
            f" {MAX_SCRYPT_COST // (1024 * 1024)} MiB allowed (128 * N * r * p bytes)"
        )


def hashPassword(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """
    The part of a users-file line after C{NAME:} for C{password}.

    @raise ValueError: L{loadUsers} would refuse C{n}, C{r} and C{p}.
    """
    _checkCost(n, r, p)
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return ":".join(
        ["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def _usableName(name: str) -> bool:
    """
    Whether C{name} may be a user's: not empty, not starting with C{#}
    (its line would be a comment), without C{:}, spaces, or control or
    format characters (arguments that are not UTF-8 arrive as surrogates,
    which are not printable either).  The users file and
    C{netsuite-proxy-user} share this rule.
    """
    return (
        bool(name)
        and not name.startswith("#")
        and ":" not in name
        and name.isprintable()
        and not any(c.isspace() for c in name)
    )


def _lineName(line: str) -> Optional[str]:
    """
    The name a users-file line is about, as L{loadUsers} reads it, or
    L{None} for a blank or comment line.
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    return line.partition(":")[0]


def _parseLine(line: str) -> Tuple[str, _Entry]:
    name, sep, rest = line.partition(":")
    parts = rest.split(":")
    if not sep or not name or len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected NAME:scrypt:N:r:p:SALT:HASH")
    if not _usableName(name):
        raise ValueError("a name cannot hold spaces, control or format characters")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("N, r and p must be numbers, the salt and hash base64") from None
    _checkCost(n, r, p)
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("the salt or hash is too short")
    if len(salt) > _MAX_SALT_OR_HASH or len(digest) > _MAX_SALT_OR_HASH:
        raise ValueError(f"the salt or hash is longer than {_MAX_SALT_OR_HASH} bytes")
    return name, _Entry(n, r, p, salt, digest)


def _readLines(path: str) -> List[str]:
    """
    The lines of the users file C{path}, read as a small regular file.
    Lines end at LF only (a CR before it is dropped): other line breaks stay
    in their line.  A byte order mark at the start (some editors on Windows
    write one) is not part of the first line.

    @raise OSError: it cannot be read.
    @raise ValueError: it is not a regular file, is too long, or is not
        UTF-8 (L{UnicodeDecodeError}).
    """
    text = readSmallFile(path, MAX_USERS_FILE, follow=True).decode("utf-8")
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def loadUsers(path: str, *, empty: bool = False) -> Dict[str, _Entry]:
    """
    Read a users file.

    @param empty: whether a file without users is fine.
    @raise UsersFileMissing: it does not exist.
    @raise UsersFileUnreadable: reading it failed.
    @raise UsersFileError: it is not a small regular UTF-8 file, a line is
        malformed, or it has no users (unless C{empty}).
    """
    try:
        lines = _readLines(path)
    except FileNotFoundError as e:
        raise UsersFileMissing(f"cannot read the proxy users file {path!r}: {e.strerror or e}") from None
    except OSError as e:
        raise UsersFileUnreadable(f"cannot read the proxy users file {path!r}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsersFileError(f"the proxy users file {path!r} is not UTF-8 text") from None
    except ValueError as e:
        raise UsersFileError(f"cannot read the proxy users file {path!r}: {e}") from None
    users: Dict[str, _Entry] = {}
    for number, line in enumerate(lines, 1):
        if _lineName(line) is None:
            continue
        try:
            name, entry = _parseLine(line.strip())
        except ValueError as e:
            raise UsersFileError(f"{path}, line {number}: {e}") from None
        if name in users:
            raise UsersFileError(f"{path}, line {number}: {name!r} is listed twice")
        users[name] = entry
    if not users and not empty:
        raise UsersFileError(f"the proxy users file {path!r} has no users")
    return users


def parseBasic(value: Optional[bytes]) -> Optional[Tuple[str, bytes]]:
    """
    C{(name, password)} from a C{Proxy-Authorization: Basic ...} value, or
    L{None} when it is missing or malformed.
    """
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return name.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class Authenticator:
    """
    Checks C{Proxy-Authorization} values against a users table.

    Given the users file's C{path}, it reads the file again when it changed
    (looked at in a thread once a second at most, as a request comes), as
    nginx and squid do: a user added, removed or given a new password (by
    C{netsuite-proxy-user}) counts from the first request after the look
    that finds it, and the credentials remembered for a user whose entry
    changed or went are checked again (the others stay remembered).  A
    file that became unreadable or malformed leaves the table as it was,
    with a warning; one that lists no users, or no longer exists, refuses
    every sign-in, with a warning (what is remembered counts again for the
    users back as they were, should the file come back).

    @ivar users: name to entry, from L{loadUsers}.
    """

    log = Logger()

    def __init__(
        self,
        users: Dict[str, _Entry],
        clock: IReactorTime,
        *,
        cacheSeconds: float = 300.0,
        cacheSize: int = REMEMBERED_CREDENTIALS,
        failuresPerSecond: float = 1.0,
        failureBurst: float = 5.0,
        checksPerSecond: float = 10.0,
        checkBurst: float = 20.0,
        maxChecking: int = 8,
        check=None,
        path: Optional[str] = None,
        decoyKey: Optional[bytes] = None,
    ) -> None:
        """
        @param path: the users file C{users} came from, read again when it
            changes (L{None}: never).
        @param decoyKey: the key that chooses unknown names' costs (see
            L{_Decoys}), kept from one start to the next by
            L{loadOrCreateDecoyKey}; L{None}: a new random one.
        @param cacheSeconds: how long credentials that checked out are
            remembered for the client address that sent them.
        @param cacheSize: how many such credentials are remembered at most
            (each client address and credentials once), the least recently
            used forgotten first.
        @param failuresPerSecond: wrong tries a client address gets a second
            (after C{failureBurst} of them).
        @param checksPerSecond: password checks all clients together get a
            second (after C{checkBurst} of them), whatever their addresses.
        @param maxChecking: checks under way at once; more wait their
            turn (L{MAX_WAITING_CHECKS}, L{CHECK_PATIENCE}); the default
            stays below the reactor's 10 threads, so that name lookups
            never wait behind password checks.
        @param check: how to run a hash check, or a read of the users file
            (default: in the reactor's thread pool); takes a function and its
            arguments and returns a Deferred of its result.
        """
        self.users = users
        self._clock = clock
        self._cacheSeconds = cacheSeconds
        self._cacheSize = cacheSize
        #: Credentials proved, for how long, and the entry they matched:
        #: kept while the users file keeps that user's entry as it was.
        self._good: OrderedDict[bytes, Tuple[float, _Entry]] = OrderedDict()
        self._failures: BucketTable[str] = BucketTable(failuresPerSecond, failureBurst, clock)
        #: The credentials (their key) each connection last signed in with,
        #: for as long as the connection is kept: they pass there while the
        #: client's address is over its limit of wrong tries.
        self._signedIn: weakref.WeakKeyDictionary[object, bytes] = weakref.WeakKeyDictionary()
        #: Every client's checks: changing address (or making the table
        #: forget one) gives no more of them.
        self._checks = TokenBucket(checksPerSecond, checkBurst, clock)
        self._maxChecking = maxChecking
        #: Checks running, sign-ins waiting for one (each with its
        #: patience's timer), and the call that wakes them when the next
        #: check of the second is due.
        self._running = 0
        self._waitingTurns: deque[Tuple[defer.Deferred[bool], IDelayedCall, Callable[[], bool]]] = deque()
        self._turnCall: Optional[IDelayedCall] = None
        #: Sign-ins waiting, by client, for one of its checks under way to
        #: end (each holds one of its wrong tries until then).
        self._waitingTries: Dict[str, deque[Tuple[defer.Deferred[bool], Callable[[], bool]]]] = {}
        self._toWake: Set[str] = set()
        self._waking = self._turning = False
        #: Sign-ins waiting in all (L{MAX_WAITING_CHECKS} at most).
        self._waiting = 0
        self._check = check or threads.deferToThread
        #: Checks under way per client: each holds one of its wrong tries.
        self._reserved: Dict[str, int] = {}
        #: Credentials being checked, and who waits for the same answer.
        self._checking: Dict[bytes, List[defer.Deferred[bool]]] = {}
        #: Keys the choice of the entry unknown names are checked against.
        self._decoyKey = os.urandom(32) if decoyKey is None else decoyKey
        self._decoys = _Decoys(users, self._decoyKey)
        #: Entries the hash function refused, each warned about once.
        self._unusable: Set[_Entry] = set()
        self._path = path
        #: Whether the users file is being read again, and whether requests
        #: wait for that read (a change found, not yet read for
        #: L{READ_PATIENCE}; not a retry of a read that failed).
        self._reading = self._holding = False
        #: Whether the users file is being looked at (in a thread), and the
        #: call that warns when a look takes longer than L{READ_PATIENCE}.
        self._looking = False
        self._lookTimer: Optional[IDelayedCall] = None
        self._readTimer: Optional[IDelayedCall] = None
        #: Requests waiting for it to be read.
        self._readWaiters: List[defer.Deferred[None]] = []
        #: Why it could not be read at the last read, if it was an error
        #: that may pass (warned of once while it lasts); when it is read
        #: again at the soonest, and the wait before the retry after that.
        self._unreadable: Optional[str] = None
        self._retryAt = 0.0
        self._retryWait = 0.0
        #: Whether a read taking longer than L{READ_PATIENCE} was warned of
        #: since the last read that did not fail in a way that may pass.
        self._slowSaid = False
        #: When the users file was last looked at, and what it was then.
        self._lookedAt = clock.seconds()
        self._version = self._fileVersion()

    def _readUsers(self, path: str) -> Tuple[Dict[str, _Entry], _Decoys, Optional[str]]:
        """
        The users in the file C{path}, what unknown names are then checked
        against (counting the users' costs is work too: 70 ms for 175,000
        users, done here, off the reactor), and why there are none, if so:
        a file read that lists none, or that no longer exists, has no
        users, as an administrator who empties or deletes it after a breach
        means (it left the users as they were).

        @raise UsersFileError: see L{loadUsers}; an error that may pass (the
            disk, a malformed file being edited) leaves the users as they
            were.
        """
        why = None
        try:
            users = loadUsers(path, empty=True)
        except UsersFileMissing as e:
            users, why = {}, str(e)
        else:
            if not users:
                why = f"the proxy users file {path!r} lists no users"
        return users, _Decoys(users, self._decoyKey), why

    def _fileVersion(self) -> Optional[Tuple[int, int, int, int]]:
        """
        What tells one version of the users file from another, or L{None}
        when it cannot be looked at.
        """
        if self._path is None:
            return None
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)

    def _reloadIfChanged(self) -> None:
        """
        Look at the users file (at most once a second, one look at a time)
        off the reactor, as it is read: a network file system that hangs
        held every service for as long as it took to answer.  Requests do
        not wait for the look.
        """
        now = self._clock.seconds()
        if self._path is None or self._looking or self._reading or now - self._lookedAt < 1.0:
            return
        self._lookedAt = now
        self._looking = True
        self._lookTimer = self._clock.callLater(READ_PATIENCE, self._lookTooSlow)
        looking = defer.maybeDeferred(self._check, self._fileVersion)
        looking.addBoth(self._lookDone)

    def _lookTooSlow(self) -> None:
        """
        The look at the users file has not ended after L{READ_PATIENCE}
        seconds (a hung network file system): no other look starts until it
        does, so say so, once.  Without it, a file deleted after a breach
        went on letting its users in, with nothing in the log.
        """
        self._lookTimer = None
        self.log.warn(
            "proxy users file {path} not looked at after {seconds:g} s; the users stay as they were,"
            " and changes to the file count once it can be looked at again",
            path=self._path,
            seconds=READ_PATIENCE,
        )

    def _lookDone(self, version: object) -> None:
        """
        Read the users file again, off the reactor (up to 16 MiB took it
        2 s), if the look found it changed since it was last read (requests
        wait for that read), or if that read failed in a way that may pass
        and its retry is due (requests do not wait: the users stay as they
        were either way).
        """
        self._looking = False
        cancelIfActive(self._lookTimer)
        self._lookTimer = None
        if isinstance(version, Failure):
            self.log.failure("looking at the proxy users file", version)
            return
        changed = version != self._version
        if not changed and (self._unreadable is None or self._clock.seconds() < self._retryAt):
            return
        if changed:
            self._version = version  # type: ignore[assignment]
            self._retryWait = 0.0
        self._reading = True
        self._holding = changed
        self._readTimer = self._clock.callLater(READ_PATIENCE, self._readTooSlow)
        reading = defer.maybeDeferred(self._check, self._readUsers, self._path)
        reading.addBoth(self._reread)

    def _readTooSlow(self) -> None:
        """
        The users file is not read yet after L{READ_PATIENCE} seconds (a
        hung network file system): the requests waiting for it go on with
        the users as they were, and later ones do not wait (they waited
        for good); the file counts once it is read.  Said once while reads
        keep failing in a way that may pass (a dying disk that takes 30 s
        to fail each read said it at every retry).
        """
        self._readTimer = None
        self._holding = False
        if not self._slowSaid:
            self._slowSaid = True
            self.log.warn(
                "proxy users file {path} not read after {seconds:g} s; the users stay as they were until it is",
                path=self._path,
                seconds=READ_PATIENCE,
            )
        self._releaseWaiters()

    def _releaseWaiters(self) -> None:
        waiters, self._readWaiters = self._readWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _reread(self, result: object) -> None:
        self._reading = self._holding = False
        cancelIfActive(self._readTimer)
        self._readTimer = None
        try:
            self._takeUsers(result)
        finally:
            self._releaseWaiters()

    def _takeUsers(self, result: object) -> None:
        if isinstance(result, Failure):
            if result.check(UsersFileError):
                error = str(result.value)
                if error != self._unreadable:
                    self.log.warn("proxy users file not read again, the users stay as they were: {error}", error=error)
                # An error that may pass without the file changing (a disk
                # error, too many open files): it is read again, 1 s later,
                # then 2, 4... up to READ_RETRY_MAX (it waited for the
                # file's next change; retried at every look, a read taking
                # 30 s to fail held every sign-in 5 s each time).
                if result.check(UsersFileUnreadable):
                    self._unreadable = error
                    self._retryWait = min(max(2 * self._retryWait, 1.0), READ_RETRY_MAX)
                    self._retryAt = self._clock.seconds() + self._retryWait
                    return
                self._unreadable = None
            else:
                self.log.failure("reading the proxy users file again", result)
            self._slowSaid = False
            return
        self._unreadable = None
        self._slowSaid = False
        self.users, self._decoys, why = result  # type: ignore[misc]
        if why is not None:
            # What is remembered stays, refused while there are no users: an
            # editor's save (the file renamed away, or emptied, for a moment)
            # had every user signed in checked again once it was back.
            self.log.warn("{why}: every sign-in is refused until users are added", why=why)
            return
        self.log.info(
            "proxy users file {path} read again: {count} users", path=self._path, count=len(self.users)
        )

    async def authenticate(
        self,
        value: Optional[bytes],
        client: str,
        wanted: Callable[[], bool] = lambda: True,
        connection: object = None,
    ) -> Optional[str]:
        """
        The user C{value} (a C{Proxy-Authorization} header) proves to be, or
        L{None}.

        @param wanted: whether the answer is still wanted (the client is
            still there): one no longer wanted gives up its place while it
            waits for a check (L{CHECK_PATIENCE} in all).
        @param connection: the client's connection (its protocol, held by
            a weak reference), or L{None}: remembered credentials pass on a
            connection where they passed already, and on another only while
            the client's address has a wrong try free (its checks under way
            hold theirs).
        """
        self._reloadIfChanged()
        if self._holding:
            # A change counts from the next request: wait for the file.
            waiter: defer.Deferred[None] = defer.Deferred()
            self._readWaiters.append(waiter)
            await waiter
        parsed = parseBasic(value)
        if parsed is None:
            return None
        name, password = parsed
        # Wrong tries count per address (an IPv6 client per /64);
        # credentials are remembered for the exact address.
        limited = hostKey(client)
        # Remembered for the exact address that proved them: the same guess
        # from another address (another host of the same /64 too) is
        # checked, within every client's limits.  On a connection that did
        # not sign in with them they are looked up only while the address
        # could pay a wrong try, its checks under way holding theirs: a
        # guesser at that address (behind the same NAT) is told "not
        # remembered" only for guesses it pays for.  On one that did, they
        # pass however many tries the address has left (a guesser at the
        # same address locked its signed-in users out).
        key = hashlib.sha256(f"{client}\n".encode() + value.strip()).digest()  # type: ignore[union-attr]
        signedIn = self._signedInWith(connection, key)
        if (signedIn or self._freeTries(limited) >= 1.0) and self._remembered(key, name):
            return self._passed(connection, key, name)
        deadline = self._clock.seconds() + CHECK_PATIENCE
        # Passed on this connection, and no longer remembered (after
        # cacheSeconds, or pushed out): checked again without waiting for
        # a try of the address's, which a guesser there may keep spent
        # (they were refused from then on).  Not for a user no longer
        # listed.
        again = signedIn and name in self.users
        if not again:
            if not await self._freeTry(limited, deadline, wanted):
                # Too many wrong tries (no more costly checks for now); or
                # no try came free in time, or the client went away.
                return None
            # A try is free now: remembered credentials need no check.
            if self._remembered(key, name):
                return self._passed(connection, key, name)
        waiting = self._checking.get(key)
        if waiting is not None:
            # The same credentials on another connection (a browser opens
            # several at once): one check answers them all.
            shared: defer.Deferred[bool] = defer.Deferred()
            waiting.append(shared)
            right = await shared
        else:
            self._reserved[limited] = self._reserved.get(limited, 0) + 1
            self._checking[key] = []
            # Its turn is kept while others wait for the same credentials.
            if not await self._turn(deadline, lambda: wanted() or bool(self._checking.get(key))):
                # No check free in time, or the client went away: counted
                # as a wrong try all the same, or guesses refused or left
                # here would have tested what is remembered for free (a
                # right one passes at once, others wait for a check).
                self._checked(key, limited, False, counted=not again)
                return None
            try:
                right = await self._checkPassword(name, password, key, limited) is not None
            finally:
                self._running -= 1
                self._nextTurns()
        if right:
            return self._passed(connection, key, name)
        if again and self._signedInWith(connection, key):
            # Its password changed: further checks there wait for the
            # address's tries, as anywhere else.
            del self._signedIn[connection]
        return None

    def _freeTries(self, client: str) -> float:
        """
        The wrong tries C{client} (a key of L{hostKey}) could pay now: those
        it has left, less those its checks under way hold.
        """
        return self._failures.available(client) - self._reserved.get(client, 0)

    def _signedInWith(self, connection: object, key: bytes) -> bool:
        """
        Whether C{connection} signed in last with the credentials C{key}.
        """
        return connection is not None and self._signedIn.get(connection) == key

    def _passed(self, connection: object, key: bytes, name: str) -> str:
        """
        The credentials C{key} passed for C{name} on C{connection}: note it.
        """
        if connection is not None and self._signedIn.get(connection) != key:
            self._signedIn[connection] = key
        return name

    def _remembered(self, key: bytes, name: str) -> bool:
        """
        Whether the credentials C{key} (with the client's address) were
        proved for C{name} and are still remembered: not expired, and the
        user's entry as it was then.  While the users file lists no users,
        none is, and each is kept for when the users are back.
        """
        good = self._good.get(key)
        if good is None or not self.users:
            return False
        expires, proved = good
        if self._clock.seconds() < expires and self.users.get(name) == proved:
            self._good.move_to_end(key)
            return True
        # Expired, or the user was changed or removed meanwhile.
        del self._good[key]
        return False

    async def _checkPassword(self, name: str, password: bytes, key: bytes, limited: str) -> Optional[str]:
        """
        Check C{password} for C{name} (its turn taken), and remember it if
        right; answer those waiting for the same credentials (C{key}).
        """
        entry = self.users.get(name)
        known = entry is not None
        if entry is None:
            entry = self._decoys.forName(name)
        try:
            result = await defer.maybeDeferred(self._check, entry.matches, password)
        except (ValueError, MemoryError) as e:
            # hashlib.scrypt refused (or memory ran out): the sign-in fails
            # as a wrong password would, with a warning, never a 500.
            self._cannotCheck(name if known else None, entry, e)
            result = False
        except BaseException:
            self._checked(key, limited, Failure())
            raise
        # (Not for an entry the users file changed meanwhile; the file
        # read again with this user as it was changes nothing.)
        matched = bool(result) and known and self.users.get(name) == entry
        self._checked(key, limited, matched)
        if not matched:
            return None
        self._good[key] = (self._clock.seconds() + self._cacheSeconds, entry)
        self._good.move_to_end(key)
        while len(self._good) > self._cacheSize:
            self._good.popitem(last=False)
        return name

    async def _freeTry(self, client: str, deadline: float, wanted: Callable[[], bool]) -> bool:
        """
        Wait until C{client} has a wrong try free to hold for a check:
        while its tries are all held by its checks under way (20 people
        behind one NAT signing in together), until one of those ends;
        C{False} when it has used its tries up, when
        L{MAX_WAITING_PER_CLIENT} of its sign-ins or L{MAX_WAITING_CHECKS}
        in all wait already, at the C{deadline}, or once the sign-in is no
        longer C{wanted} (its client went away).
        """
        while True:
            available = self._failures.available(client)
            if self._freeTries(client) >= 1.0:
                return True
            left = deadline - self._clock.seconds()
            waiting = len(self._waitingTries.get(client, ()))
            if available < 1.0 or left <= 0 or waiting >= MAX_WAITING_PER_CLIENT or not self._placeFree():
                return False
            # (Taken after _placeFree, which drops the clients left with none.)
            waiters = self._waitingTries.setdefault(client, deque())
            waiter: defer.Deferred[bool] = defer.Deferred()
            waiters.append((waiter, wanted))
            self._waiting += 1
            timer = self._clock.callLater(left, self._triesGaveUp, client, waiter)
            try:
                if not await waiter or not wanted():
                    return False
            finally:
                self._waiting -= 1
                cancelIfActive(timer)

    def _placeFree(self) -> bool:
        """
        Whether another sign-in may wait (L{MAX_WAITING_CHECKS}); when none
        may, those whose clients went away leave first.
        """
        if self._waiting < MAX_WAITING_CHECKS:
            return True
        # Taken out first, told after: telling one may start others.
        gone: List[defer.Deferred[bool]] = []
        for waiting in [w for w in self._waitingTurns if not w[2]()]:
            self._waitingTurns.remove(waiting)
            waiting[1].cancel()
            self._waiting -= 1
            gone.append(waiting[0])
        for client, waiters in list(self._waitingTries.items()):
            for waiting in [w for w in waiters if not w[1]()]:
                waiters.remove(waiting)
                gone.append(waiting[0])  # its own finally counts it out
            if not waiters:
                del self._waitingTries[client]
        for waiter in gone:
            waiter.callback(False)
        return self._waiting < MAX_WAITING_CHECKS

    def _wakeTries(self, client: str) -> None:
        """
        Let C{client}'s sign-ins waiting for a free try look again, in
        order (those that still find none wait again, or give up if its
        tries are spent).  Not from within itself: a check that ends at
        once (as in tests) wakes them from the loop already running.
        """
        self._toWake.add(client)
        if self._waking:
            return
        self._waking = True
        try:
            while self._toWake:
                waiters = self._waitingTries.pop(self._toWake.pop(), None)
                for waiter, _ in waiters or ():
                    waiter.callback(True)
        finally:
            self._waking = False

    def _triesGaveUp(self, client: str, waiter: defer.Deferred[bool]) -> None:
        waiters = self._waitingTries.get(client)
        if waiters is not None:
            for waiting in waiters:
                if waiting[0] is waiter:
                    waiters.remove(waiting)
                    break
            if not waiters:
                del self._waitingTries[client]
        if not waiter.called:
            waiter.callback(False)

    def _turn(self, deadline: float, wanted: Callable[[], bool]) -> defer.Deferred[bool]:
        """
        Wait for a check to be free (at most C{maxChecking} at once, and
        within the checks all clients get a second); C{True} once this one
        runs, C{False} when L{MAX_WAITING_CHECKS} already wait, at the
        C{deadline}, or once the sign-in is no longer C{wanted}.
        """
        if not self._waitingTurns and self._running < self._maxChecking and self._checks.take():
            self._running += 1
            return defer.succeed(True)
        left = deadline - self._clock.seconds()
        if left <= 0 or not self._placeFree():
            return defer.succeed(False)
        waiter: defer.Deferred[bool] = defer.Deferred()
        timer = self._clock.callLater(left, self._gaveUp, waiter)
        self._waitingTurns.append((waiter, timer, wanted))
        self._waiting += 1
        self._nextTurns()
        return waiter

    def _gaveUp(self, waiter: defer.Deferred[bool]) -> None:
        for waiting in self._waitingTurns:
            if waiting[0] is waiter:
                self._waitingTurns.remove(waiting)
                self._waiting -= 1
                break
        waiter.callback(False)

    def _nextTurns(self) -> None:
        """
        Start the checks of sign-ins waiting, in order, as far as the
        limits allow (those whose clients went away leave without one);
        wake up when the next check of the second is due.
        """
        if self._turning:  # a check that ended at once: the loop goes on
            return
        self._turning = True
        try:
            while self._waitingTurns and self._running < self._maxChecking:
                waiter, timer, wanted = self._waitingTurns[0]
                if not wanted():
                    self._waitingTurns.popleft()
                    timer.cancel()
                    self._waiting -= 1
                    waiter.callback(False)
                    continue
                if not self._checks.take():
                    if self._turnCall is None:
                        # (At least 10 ms: the float sums may leave the
                        # token a hair short when it is due.)
                        self._turnCall = self._clock.callLater(max(self._checks.delay(), 0.01), self._turnDue)
                    return
                self._waitingTurns.popleft()
                timer.cancel()
                self._waiting -= 1
                self._running += 1
                waiter.callback(True)
        finally:
            self._turning = False

    def _turnDue(self) -> None:
        self._turnCall = None
        self._nextTurns()

    def _cannotCheck(self, name: Optional[str], entry: _Entry, error: BaseException) -> None:
        """
        The hash function could not check a password against C{entry}: warn,
        once for each entry (unknown names of a cost share one).

        @param name: the user's name, or L{None} for an unknown name.
        """
        if entry in self._unusable:
            return
        self._unusable.add(entry)
        who = "unknown names" if name is None else f"proxy user {name!r}"
        self.log.warn(
            "cannot check passwords for {who} (scrypt N={n}, r={r}, p={p}): {error}; their sign-ins fail",
            who=who, n=entry.n, r=entry.r, p=entry.p, error=str(error) or type(error).__name__,
        )

    def _checked(self, key: bytes, client: str, result: Union[bool, Failure], counted: bool = True) -> None:
        """
        A check ended (or never ran: no turn came): free the try it held,
        count it if the password was wrong (unless not C{counted}), and
        answer those waiting for the same credentials.

        @param client: the key the client's wrong tries count under.
        """
        left = self._reserved.pop(client) - 1
        if left:
            self._reserved[client] = left
        if result is False and counted:
            self._failures.take(client)
        # The try this check held is free (or spent): the client's sign-ins
        # waiting for one look again.
        self._wakeTries(client)
        for shared in self._checking.pop(key):
            if isinstance(result, Failure):
                shared.errback(result)
            else:
                shared.callback(result)


def _owner(status: os.stat_result) -> str:
    """
    C{user:group} of a file's status, by name where they have one.
    """
    import grp
    import pwd

    try:
        user = pwd.getpwuid(status.st_uid).pw_name
    except KeyError:
        user = str(status.st_uid)
    try:
        group = grp.getgrgid(status.st_gid).gr_name
    except KeyError:
        group = str(status.st_gid)
    return f"{user}:{group}"


def main(argv: Optional[List[str]] = None) -> int:
    """
    C{netsuite-proxy-user FILE NAME}: add or change NAME's password in FILE.
    """
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        # Only the rename changes the file: either it came or it did not.
        print("netsuite-proxy-user: interrupted", file=sys.stderr)
        return 130


def _main(args: List[str]) -> int:
    if len(args) != 2:
        print("usage: netsuite-proxy-user FILE NAME", file=sys.stderr)
        return 2
    path, name = args
    if not _usableName(name):
        print("netsuite-proxy-user: a name cannot be empty, start with '#' or hold ':', spaces, control characters or bytes that are not UTF-8", file=sys.stderr)
        return 1
    # Checked before the lock is made beside it (the lock of a link to
    # /dev/null was /dev/null.lock, of an empty path one in the parent).
    problem = _unusableTarget(path)
    if problem is not None:
        print(f"netsuite-proxy-user: {problem}", file=sys.stderr)
        return 1
    try:
        password = _askPassword(name)
        if password is None:
            return 1
        entry = f"{name}:{hashPassword(password)}"
        # A symbolic link stays one: the file it leads to is the one changed.
        real = os.path.realpath(path)
        # Runs at once would each write what they read, losing the others'
        # changes: one at a time, from the read to the rename.
        lock = real + ".lock"
        try:
            fd = waitForLock(lock, LOCK_PATIENCE)
        except TimeoutError as e:
            print(f"netsuite-proxy-user: {e}; nothing changed", file=sys.stderr)
            return 1
        except OSError as e:
            print(f"netsuite-proxy-user: cannot lock {lock!r}: {e.strerror or e}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("netsuite-proxy-user: interrupted; nothing changed", file=sys.stderr)
        return 130
    try:
        return _putLine(path, real, name, entry)
    finally:
        os.close(fd)


def _unusableTarget(path: str) -> Optional[str]:
    """
    Why C{path} cannot be a users file to change (it is empty, or names
    something other than a regular file, or cannot be looked at), or
    L{None}: it is one, or does not exist yet.
    """
    if not path:
        return "the users file's name is empty"
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read {path!r}: {e.strerror or e}"
    if not stat.S_ISREG(status.st_mode):
        return f"cannot read {path!r}: not a regular file"
    return None


def _askPassword(name: str) -> Optional[str]:
    """
    The password for C{name}: asked twice on a terminal, else one line of
    standard input; L{None} (having said why) when there is none fit for
    use.
    """
    import getpass

    stdin = sys.stdin
    try:
        if stdin is not None and stdin.isatty():
            password = getpass.getpass(f"password for {name}: ")
            if getpass.getpass("again: ") != password:
                print("netsuite-proxy-user: the passwords differ; nothing changed", file=sys.stderr)
                return None
        else:
            # Read as bytes and decoded here: text that is not UTF-8 is
            # refused in a sentence, whatever the locale.
            line = stdin.buffer.readline(MAX_PASSWORD + 1) if stdin is not None else b""
            if len(line) > MAX_PASSWORD and not line.endswith(b"\n"):
                print(
                    f"netsuite-proxy-user: no line end within the first {MAX_PASSWORD + 1} bytes of standard input"
                    f" (a password is at most {MAX_PASSWORD} bytes); nothing changed",
                    file=sys.stderr,
                )
                return None
            password = line.rstrip(b"\r\n").decode("utf-8")
    except EOFError:
        print("netsuite-proxy-user: no password given; nothing changed", file=sys.stderr)
        return None
    except UnicodeDecodeError:
        print("netsuite-proxy-user: the password is not UTF-8 text; nothing changed", file=sys.stderr)
        return None
    if not password:
        print("netsuite-proxy-user: an empty password is not allowed", file=sys.stderr)
        return None
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        print("netsuite-proxy-user: the password is not UTF-8 text; nothing changed", file=sys.stderr)
        return None
    return password


def _putLine(path: str, real: str, name: str, entry: str) -> int:
    """
    Replace C{name}'s line in the users file C{path} (the file C{real}, with
    no symbolic link left in its path) by C{entry}, or add it, keeping the
    other lines, and the file's owner and permissions, as they are; say
    what was done.

    @return: the exit status.
    """
    old: Optional[os.stat_result]
    try:
        lines = _readLines(real)
        old = os.stat(real)
    except FileNotFoundError:
        lines, old = [], None
    except UnicodeDecodeError:
        print(f"netsuite-proxy-user: {path!r} is not UTF-8 text; nothing changed", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"netsuite-proxy-user: cannot read {path!r}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 1
    kept = [line for line in lines if _lineName(line) != name]
    data = ("\n".join(kept + [entry]) + "\n").encode("utf-8")
    if len(data) > MAX_USERS_FILE:
        print(
            f"netsuite-proxy-user: {path!r} would grow to {len(data)} bytes, more than the"
            f" {MAX_USERS_FILE // (1024 * 1024)} MiB a users file may hold; nothing changed",
            file=sys.stderr,
        )
        return 1
    try:
        new = writeAtomically(real, data, 0o600, like=old)
    except OSError as e:
        print(f"netsuite-proxy-user: cannot write {path!r}: {e.strerror}", file=sys.stderr)
        return 1
    if old is not None and (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
        print(
            f"netsuite-proxy-user: warning: {path!r} could not keep its owner {_owner(old)}"
            f" (only root can give a file away); it is now {_owner(new)}, mode {stat.S_IMODE(new.st_mode):04o}",
            file=sys.stderr,
        )
    print(f"{'changed' if len(kept) < len(lines) else 'added'} {name} in {path}")
    return 0
