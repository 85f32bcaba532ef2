"""
Tests for L{netsuite.proxyauth}: the users file, Basic credentials and the
non-blocking checker.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import sys
from collections import Counter

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from netsuite.proxyauth import (
    CHECK_PATIENCE,
    MAX_USERS_FILE,
    MAX_WAITING_CHECKS,
    MAX_WAITING_PER_CLIENT,
    Authenticator,
    UsersFileError,
    _Decoys,
    _Entry,
    hashPassword,
    loadOrCreateDecoyKey,
    loadUsers,
    main,
    parseBasic,
)

#: Cheap scrypt parameters, so that tests stay fast.
CHEAP = dict(n=16, r=1, p=1)


def basic(name: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{name}:{password}".encode())


def loadUsersFrom(case: SynchronousTestCase, **passwords: str) -> dict:
    """
    The users of a users file giving each name its password (cheaply
    hashed), written in C{case}'s temporary directory.
    """
    path = case.mktemp()
    with open(path, "w") as f:
        for name, password in passwords.items():
            f.write(f"{name}:{hashPassword(password, **CHEAP)}\n")
    return loadUsers(path)


class Connection:
    """
    A client's connection, as the L{Authenticator} sees one (the proxy's
    channel): an object it holds by a weak reference.
    """


class UsersFileTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_load(self) -> None:
        path = self.write(f"# users\n\nalice:{hashPassword('s3cret', **CHEAP)}\nbob:{hashPassword('x', **CHEAP)}\n")
        users = loadUsers(path)
        self.assertEqual(sorted(users), ["alice", "bob"])
        self.assertTrue(users["alice"].matches(b"s3cret"))
        self.assertFalse(users["alice"].matches(b"s3cret "))

    def test_saltedDifferently(self) -> None:
        self.assertNotEqual(hashPassword("same", **CHEAP), hashPassword("same", **CHEAP))

    def test_errorsNameTheLine(self) -> None:
        good = hashPassword("pw", **CHEAP)
        cases = {
            "alice\n": "line 1",
            f"alice:{good}\nalice:{good}\n": "listed twice",
            "alice:md5:abc\n": "expected NAME:scrypt",
            f"# c\nbob:{good.replace('scrypt:16', 'scrypt:15')}\n": "line 2: unusable scrypt parameters",
            "bob:scrypt:16:1:1:!!:!!\n": "base64",
            "# nobody\n": "has no users",
        }
        for text, message in cases.items():
            with self.assertRaises(UsersFileError) as e:
                loadUsers(self.write(text))
            self.assertIn(message, str(e.exception))
        with self.assertRaises(UsersFileError) as e:
            loadUsers(os.path.join(self.mktemp(), "missing"))
        self.assertIn("No such file", str(e.exception))

    def test_everyAcceptedCostCanBeChecked(self) -> None:
        """
        An entry at the largest memory cost accepted (128 * r * N bytes of
        64 MiB, here the common N=65536, r=8) can be checked:
        OpenSSL needs a little more than that (128 * r * (N + 2 + p)), which
        C{hashlib.scrypt} used to refuse at every sign-in.
        """
        n, r = 65536, 8
        self.assertEqual(128 * r * n, 64 * 1024 * 1024)
        users = loadUsers(self.write(f"alice:{hashPassword('pw', n=n, r=r, p=1)}\n"))
        self.assertTrue(users["alice"].matches(b"pw"))

    def test_costBounded(self) -> None:
        """
        Entries that would cost more memory, or more work (p times the
        memory), than 64 MiB a check, or that have long salts or
        hashes (each check hashes them many times), are refused with one
        line naming the file and the line; L{hashPassword} refuses to make
        them.
        """
        salt, digest = base64.b64encode(bytes(16)).decode(), base64.b64encode(bytes(32)).decode()
        tooLong = base64.b64encode(bytes(65)).decode()
        cases = {
            f"alice:scrypt:131072:8:1:{salt}:{digest}": "unusable scrypt parameters",
            f"alice:scrypt:65536:8:2:{salt}:{digest}": "unusable scrypt parameters",
            f"alice:scrypt:16384:8:5:{salt}:{digest}": "unusable scrypt parameters",
            f"alice:scrypt:16:1:1:{tooLong}:{digest}": "the salt or hash is longer than 64 bytes",
            f"alice:scrypt:16:1:1:{salt}:{tooLong}": "the salt or hash is longer than 64 bytes",
        }
        for line, message in cases.items():
            path = self.write(f"# users\n{line}\n")
            with self.assertRaises(UsersFileError) as e:
                loadUsers(path)
            self.assertEqual(str(e.exception).splitlines(), [str(e.exception)])
            self.assertIn(f"{path}, line 2: {message}", str(e.exception))
        self.assertEqual(len(loadUsers(self.write(f"alice:scrypt:16384:8:4:{salt}:{digest}\n"))), 1)
        for n, r, p in ((65536, 8, 2), (16, 1, 17), (15, 1, 1)):
            self.assertRaises(ValueError, hashPassword, "pw", n=n, r=r, p=p)

    def test_fifoDeviceOrHugeFileIsOneError(self) -> None:
        """
        The users file is read as a small regular file: a FIFO used to hang
        the start, and a device (C{/dev/zero}) was read until memory ran
        out.
        """
        fifo = self.mktemp()
        os.mkfifo(fifo)
        huge = self.write("#" * (MAX_USERS_FILE + 1))
        for path, message in ((fifo, "not a regular file"), (os.devnull, "not a regular file"), (huge, "longer than")):
            with self.assertRaises(UsersFileError) as e:
                loadUsers(path)
            self.assertIn(message, str(e.exception))
        with open(huge, "wb") as f:
            f.write(b"alice:\xff\n")
        with self.assertRaises(UsersFileError) as e:
            loadUsers(huge)
        self.assertIn("is not UTF-8 text", str(e.exception))

    def test_linesEndAtLineFeedOnly(self) -> None:
        """
        Only LF (with an optional CR before it) ends a line, as for
        htpasswd files: a Unicode line separator inside a line does not make
        a second user of what follows it.
        """
        good = hashPassword("pw", **CHEAP)
        self.assertEqual(sorted(loadUsers(self.write(f"alice:{good}\r\nbob:{good}"))), ["alice", "bob"])
        for separator in ("\u2028", "\x85", "\x0c", "\x1e"):
            with self.assertRaises(UsersFileError) as e:
                loadUsers(self.write(f"alice:{good}{separator}bob:{good}\n"))
            self.assertIn("line 1", str(e.exception))


    def test_byteOrderMarkSkipped(self) -> None:
        """
        A byte order mark at the start of the file (some editors on Windows
        write one) is not part of the first name: it made that user
        C{"\\ufeffalice"}, who could never sign in, silently.
        """
        good = hashPassword("pw", **CHEAP)
        users = loadUsers(self.write(f"\ufeffalice:{good}\nbob:{good}\n"))
        self.assertEqual(sorted(users), ["alice", "bob"])

    def test_namesTheCommandRefusesAreRefused(self) -> None:
        """
        A name C{netsuite-proxy-user} refuses (spaces, control or format
        characters) is refused in the file too, with one line naming the
        file and the line: such names were taken, and a user whose name
        held an invisible character looked like another.
        """
        good = hashPassword("pw", **CHEAP)
        self.patch(sys, "stderr", io.StringIO())
        for name in ("al ice", "al\tice", "al\x07ice", "al\u200bice", "al\u00a0ice", "alice\x7f", "\u202eecila"):
            path = self.write(f"# users\nbob:{good}\n{name}:{good}\n")
            with self.assertRaises(UsersFileError) as e:
                loadUsers(path)
            self.assertEqual(
                str(e.exception), f"{path}, line 3: a name cannot hold spaces, control or format characters", repr(name)
            )
            self.assertEqual(main([self.mktemp(), name]), 1)
        self.assertEqual(sorted(loadUsers(self.write(f"zoë:{good}\n  ünïcödé.name@example:{good}\n"))), ["zoë", "ünïcödé.name@example"])

class ParseBasicTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parseBasic(basic("alice", "pa:ss")), ("alice", b"pa:ss"))
        self.assertEqual(parseBasic(b"basic " + base64.b64encode(b"a:")), ("a", b""))
        for bad in (None, b"", b"Bearer x", b"Basic", b"Basic !!!", b"Basic " + base64.b64encode(b"nocolon"),
                    b"Basic " + base64.b64encode(b"\xff:x")):
            self.assertIsNone(parseBasic(bad), bad)


class AuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"alice:{hashPassword('right', **CHEAP)}\n")
        self.clock = Clock()
        self.checks = 0

        def check(function, *args):
            self.checks += 1
            return defer.succeed(function(*args))

        self.users = loadUsers(path)
        self.auth = Authenticator(self.users, self.clock, check=check, cacheSeconds=60)

    def authenticate(self, value, client="127.0.0.1"):
        return self.successResultOf(self.start(value, client))

    def start(self, value, client="127.0.0.1"):
        """
        Begin a sign-in; its Deferred (it may wait for a check).
        """
        return defer.ensureDeferred(self.auth.authenticate(value, client))

    def test_rightAndWrong(self) -> None:
        self.assertEqual(self.authenticate(basic("alice", "right")), "alice")
        self.assertIsNone(self.authenticate(basic("alice", "wrong")))
        self.assertIsNone(self.authenticate(basic("mallory", "right")))
        self.assertIsNone(self.authenticate(None))

    def test_successCachedForAWhile(self) -> None:
        self.authenticate(basic("alice", "right"))
        self.authenticate(basic("alice", "right"))
        self.assertEqual(self.checks, 1)
        self.clock.advance(61)
        self.authenticate(basic("alice", "right"))
        self.assertEqual(self.checks, 2)

    def test_manyClientsRemembered(self) -> None:
        """
        Credentials from thousands of client addresses are all remembered
        (L{REMEMBERED_CREDENTIALS}): there were 1024 places, and with 1,100
        clients signed in every request was a password check (a round of
        their requests took 112 s instead of 1 s).
        """
        auth = Authenticator(self.users, self.clock, check=lambda f, *a: defer.succeed(f(*a)))
        matches = []
        entry = self.users["alice"]
        self.patch(type(entry), "matches", lambda self, password: matches.append(1) or password == b"right")
        clients = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(2000)]

        def signIn(client: str) -> None:
            result = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), client))
            self.assertEqual(self.successResultOf(result), "alice")

        for client in clients:
            signIn(client)
            self.clock.advance(0.1)  # within every client's checks a second
        self.assertEqual(len(matches), len(clients))
        for client in clients:
            signIn(client)
        self.assertEqual(len(matches), len(clients))  # no check again

    def rememberedAuthenticator(self, cacheSize: int):
        """
        An L{Authenticator} remembering at most C{cacheSize} credentials,
        and a function signing alice in from a client address that says
        whether her password was checked.
        """
        auth = Authenticator(self.users, self.clock, check=self.auth._check, cacheSize=cacheSize)

        def signIn(client: str) -> bool:
            checks = self.checks
            result = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), client))
            self.assertEqual(self.successResultOf(result), "alice")
            return self.checks > checks

        return signIn

    def test_rememberedUpToTheirNumber(self) -> None:
        """
        Exactly C{cacheSize} credentials are remembered: filled to that
        number, the first is still remembered; one more, and it is
        forgotten.
        """
        signIn = self.rememberedAuthenticator(3)
        for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            self.assertTrue(signIn(client))
        self.assertFalse(signIn("10.0.0.1"))
        self.assertTrue(signIn("10.0.0.4"))  # forgets 10.0.0.2, the least recently used
        self.assertFalse(signIn("10.0.0.1"))
        self.assertTrue(signIn("10.0.0.2"))

    def test_rememberedUseKeepsThem(self) -> None:
        """
        The least recently used credentials are forgotten first, not the
        first remembered: with room for two, A used, B added, A used again
        and C added, A is still remembered and B forgotten.
        """
        signIn = self.rememberedAuthenticator(2)
        self.assertTrue(signIn("10.0.0.1"))  # A
        self.assertTrue(signIn("10.0.0.2"))  # B
        self.assertFalse(signIn("10.0.0.1"))
        self.assertTrue(signIn("10.0.0.3"))  # C
        self.assertFalse(signIn("10.0.0.1"))
        self.assertTrue(signIn("10.0.0.2"))

    def test_wrongPasswordsLimitedPerClient(self) -> None:
        """
        After five wrong tries a client gets no more checks (not even with
        the right password) until its allowance refills; others are not
        affected.
        """
        for _ in range(5):
            self.assertIsNone(self.authenticate(basic("alice", "wrong")))
        self.assertEqual(self.checks, 5)
        self.assertIsNone(self.authenticate(basic("alice", "right")))
        self.assertEqual(self.checks, 5)
        self.assertEqual(self.authenticate(basic("alice", "right"), client="10.0.0.2"), "alice")
        self.clock.advance(1)
        self.assertEqual(self.authenticate(basic("alice", "right")), "alice")

    def test_wrongPasswordsLimitedPerSlash64(self) -> None:
        """
        An IPv6 client's wrong tries count for its whole /64; what it proved
        is remembered for its exact address only.
        """
        for index in range(5):
            self.assertIsNone(self.authenticate(basic("alice", "wrong"), client=f"2001:db8::{index + 1}"))
        self.assertIsNone(self.authenticate(basic("alice", "right"), client="2001:db8::99"))
        self.assertEqual(self.checks, 5)
        self.assertEqual(self.authenticate(basic("alice", "right"), client="2001:db8:0:1::1"), "alice")

    def test_uncheckableEntryFailsLikeAWrongPassword(self) -> None:
        """
        When the hash function refuses an entry (C{ValueError}) or memory
        runs out, the sign-in fails as a wrong password would, never with an
        error (a 500 and a traceback): it counts as a wrong try, and a
        warning is logged once for each entry, unknown names sharing one.
        """
        events = []

        def observe(event):
            if event.get("log_namespace", "").startswith("netsuite.proxyauth"):
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        errors = [MemoryError(), ValueError("[digital envelope routines] memory limit exceeded")]

        def check(function, *args):
            self.checks += 1
            raise errors[self.checks % 2]

        auth = Authenticator(self.users, self.clock, check=check)
        for client in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
            result = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), client))
            self.assertIsNone(self.successResultOf(result))
        result = defer.ensureDeferred(auth.authenticate(basic("mallory", "x"), "10.0.0.3"))
        self.assertIsNone(self.successResultOf(result))
        self.assertEqual(self.checks, 4)
        self.assertEqual([event["log_level"].name for event in events], ["warn", "warn"])
        self.assertEqual([event["who"] for event in events], ["proxy user 'alice'", "unknown names"])
        self.assertNotIn("log_failure", events[0])
        self.assertIn("memory", events[0]["error"])
        # Counted as wrong tries: two more and 10.0.0.1 is over its five.
        for _ in range(3):
            defer.ensureDeferred(auth.authenticate(basic("alice", "again"), "10.0.0.1"))
        self.assertEqual(self.checks, 7)
        self.assertIsNone(self.successResultOf(defer.ensureDeferred(auth.authenticate(basic("alice", "x"), "10.0.0.1"))))
        self.assertEqual(self.checks, 7)
        self.assertEqual(len(events), 2)

    def slowAuthenticator(self):
        """
        An L{Authenticator} whose checks end only when the test fires them
        (C{self.pending}, in order).
        """
        self.pending = []

        def check(function, *args):
            self.checks += 1
            d = defer.Deferred()
            self.pending.append(lambda: d.callback(function(*args)))
            return d

        return Authenticator(self.users, self.clock, check=check)

    def test_parallelWrongGuessesLimited(self) -> None:
        """
        A check under way holds one of the client's wrong tries from the
        start: of 20 guesses sent at once only 5 (the burst) are checked,
        however long the checks take, and none is left over afterwards.
        """
        auth = self.slowAuthenticator()
        guesses = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"guess{i}"), "10.0.0.9")) for i in range(20)
        ]
        self.assertEqual(self.checks, 5)
        for fire in self.pending:
            fire()
        self.assertEqual([self.successResultOf(d) for d in guesses], [None] * 20)
        self.assertIsNone(self.successResultOf(defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.9"))))
        self.assertEqual(self.checks, 5)

    def test_parallelRightCredentialsShareOneCheck(self) -> None:
        """
        The same credentials on many connections at once (a browser's) are
        checked once, and all of them pass, however many there are; a right
        password uses none of the client's wrong tries.
        """
        auth = self.slowAuthenticator()
        tries = [defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.9")) for _ in range(12)]
        self.assertEqual(self.checks, 1)
        self.pending[0]()
        self.assertEqual([self.successResultOf(d) for d in tries], ["alice"] * 12)
        wrong = [defer.ensureDeferred(auth.authenticate(basic("alice", f"guess{i}"), "10.0.0.9")) for i in range(5)]
        self.assertEqual(self.checks, 6)
        for fire in self.pending[1:]:
            fire()
        self.assertEqual([self.successResultOf(d) for d in wrong], [None] * 5)

    def test_guessesSpreadOverAddressesLimitedTogether(self) -> None:
        """
        Guesses from many client addresses (five each, within every
        address's own allowance) get 20 checks at once and then 10 a second
        in all, not five per address: 64 more wait their turn, the rest are
        refused at once, and those that wait longer than the patience are
        refused then; the right password among them waits its turn too.
        """
        clients = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(40)]
        guesses = [self.start(basic("alice", f"guess{i}"), clients[i // 5]) for i in range(200)]
        self.assertEqual(self.checks, 20)
        refused = [d for d in guesses if d.called]
        self.assertEqual(len(refused), 20 + 200 - 20 - MAX_WAITING_CHECKS)
        self.assertEqual({self.successResultOf(d) for d in refused}, {None})
        self.assertIsNone(self.authenticate(basic("alice", "right"), "127.9.9.9"))  # none can wait
        self.clock.advance(1)
        self.assertEqual(self.checks, 30)
        self.clock.pump([0.1] * int((CHECK_PATIENCE - 1) * 10) + [0.01])
        self.assertLessEqual(abs(self.checks - (20 + 10 * CHECK_PATIENCE)), 1)
        self.assertEqual({self.successResultOf(d) for d in guesses}, {None})
        self.clock.advance(1)
        self.assertEqual(self.authenticate(basic("alice", "right"), "127.9.9.9"), "alice")

    def test_signInsWaitTheirTurn(self) -> None:
        """
        20 users behind one address (a NAT) signing in at once, past the
        checks of the second: every one passes, the last ones a second
        later; they got 407s at once (15 of 30 in a measured burst).
        """
        self.auth._checks = self.auth._checks.__class__(10, 20, self.clock)
        for n in range(30):
            self.users[f"user{n}"] = self.users["alice"]
        for burst in range(2):  # nothing of the first is left over
            signIns = [self.start(basic(f"user{n}", "right"), f"192.0.2.{7 + burst}") for n in range(30)]
            self.assertEqual(sum(d.called for d in signIns), 20)
            self.clock.advance(1)
            self.assertEqual([self.successResultOf(d) for d in signIns], [f"user{n}" for n in range(30)])
            self.assertEqual((self.auth._waiting, self.clock.getDelayedCalls()), (0, []))
            self.clock.advance(2)

    def test_rememberedCredentialsPassDuringAnAttack(self) -> None:
        """
        Credentials already checked for a client pass at once, without a
        check and without using any of the checks all clients share, while
        guesses from other addresses have used every one of those (and
        fill the line of those waiting).
        """
        self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.2"), "alice")
        for _ in range(100):
            self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.2"), "alice")
        self.assertEqual(self.checks, 1)
        for i in range(30 + MAX_WAITING_CHECKS):
            self.start(basic("alice", f"guess{i}"), f"127.0.{i // 200}.{i % 200 + 2}")
        self.assertEqual(self.checks, 20)
        self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.2"), "alice")
        self.assertEqual(self.checks, 20)
        self.clock.advance(CHECK_PATIENCE)

    def test_rememberedOnlyForTheClientThatProvedThem(self) -> None:
        """
        Credentials that checked out are remembered for the client address
        that sent them: from any other address they are checked again,
        within the limits (else guesses spread over addresses would be told
        the right one at once while its user is active).
        """
        self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.1"), "alice")
        self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.2"), "alice")
        self.assertEqual(self.checks, 2)
        for i in range(18 + MAX_WAITING_CHECKS):
            self.start(basic("alice", f"guess{i}"), f"127.0.{i // 200}.{i % 200 + 2}")
        self.assertEqual(self.checks, 20)
        self.assertIsNone(self.authenticate(basic("alice", "right"), "127.0.9.1"))
        self.assertEqual(self.checks, 20)
        self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.1"), "alice")
        self.clock.advance(CHECK_PATIENCE)

    def test_clientOverItsLimitGetsNoFreshCheck(self) -> None:
        """
        A client over its wrong-guess limit gets no check, the right
        password not remembered for it included, whether its guesses were
        checked or refused because every check was taken; other clients are
        not affected, and it is checked again once its allowance refills.
        """
        for i in range(5):
            self.assertIsNone(self.authenticate(basic("alice", f"guess{i}"), "127.0.0.1"))
        self.assertEqual(self.checks, 5)
        self.assertIsNone(self.authenticate(basic("alice", "right"), "127.0.0.1"))
        self.assertEqual(self.authenticate(basic("alice", "right"), "10.0.0.1"), "alice")
        self.assertEqual(self.checks, 6)
        self.clock.advance(1)
        self.assertEqual(self.authenticate(basic("alice", "right"), "127.0.0.1"), "alice")
        self.assertEqual(self.checks, 7)
        # Every check taken and the line full (guesses from many
        # addresses): refused guesses still count against their client.
        self.clock.advance(5)
        for i in range(30 + MAX_WAITING_CHECKS):
            self.start(basic("alice", f"spread{i}"), f"127.1.{i // 200}.{i % 200 + 1}")
        checks = self.checks
        for i in range(5):
            self.assertIsNone(self.authenticate(basic("alice", f"more{i}"), "10.0.0.3"))
        self.assertIsNone(self.authenticate(basic("alice", "right"), "10.0.0.3"))
        self.assertEqual(self.checks, checks)
        self.clock.advance(CHECK_PATIENCE)

    def test_rememberedPassOnTheirConnectionWhileTheAddressIsLimited(self) -> None:
        """
        While a guesser at the same address (behind the same NAT), or in
        the same IPv6 /64, has used up its wrong tries, remembered
        credentials pass on a connection that signed in with them already
        (a guess every 0.2 s had alice's sign-ins refused), and on no other:
        a new connection, the guesser's ones included, gets no answer from
        what is remembered until the address is under its limit again.
        Answered on any connection, they told a guesser at that address
        its right guess among 9 a second (1,080 tested in 120 s).
        """

        class Connection:
            pass

        def signIn(password: str, client: str, connection: object):
            result = defer.ensureDeferred(self.auth.authenticate(basic("alice", password), client, connection=connection))
            return self.successResultOf(result)

        alices = {"192.0.2.1": Connection(), "2001:db8::1": Connection()}
        for client, connection in alices.items():
            self.assertEqual(signIn("right", client, connection), "alice")
        guessers = {"192.0.2.1": Connection(), "2001:db8::2": Connection()}
        for i in range(25):  # a guess every 0.2 s
            for client, connection in guessers.items():
                self.assertIsNone(signIn(f"guess{i}", client, connection))
            self.clock.advance(0.2)
            for client, connection in alices.items():
                self.assertEqual(signIn("right", client, connection), "alice", (i, client))
        for client, connection in guessers.items():  # (a try that came free)
            self.assertIsNone(signIn("one more", client, connection))
        checks = self.checks
        for i in range(200):  # on new connections, the right one among them
            self.assertIsNone(signIn("right" if i == 150 else f"fast{i}", "192.0.2.1", Connection()))
        for client in alices:
            self.assertIsNone(signIn("right", client, guessers.get(client, Connection())))
            self.assertIsNone(signIn("right", client, None))
        self.assertEqual(self.checks, checks)
        # Other credentials on alice's connection, and hers again.
        self.assertIsNone(signIn("other", "192.0.2.1", alices["192.0.2.1"]))
        self.assertEqual(signIn("right", "192.0.2.1", alices["192.0.2.1"]), "alice")
        self.assertEqual(self.checks, checks)
        # Under the limit again: remembered on a new connection, unchecked.
        self.clock.advance(1)
        self.assertEqual(signIn("right", "192.0.2.1", Connection()), "alice")
        self.assertEqual(self.checks, checks)
        # A connection is not kept once gone.
        self.assertEqual(len(self.auth._signedIn), 2)
        del alices["2001:db8::1"]
        self.assertEqual(len(self.auth._signedIn), 1)

    def test_signedInConnectionOutlastsWhatIsRemembered(self) -> None:
        """
        A connection that signed in goes on passing with the same
        credentials however long a guesser at its address keeps it over its
        limit: once they are no longer remembered (60 s here) they are
        checked again there, without a try of the address's, and
        remembered again.  They were refused from then on, typed again too
        (from 300 s of a guess every 0.2 s, with the default 5 minutes).
        A password changed meanwhile ends it, as a removed user does: the
        connection's further tries wait for the address's, as anywhere.
        """

        def signIn(password: str, connection: object, client: str = "192.0.2.1"):
            return self.successResultOf(
                defer.ensureDeferred(self.auth.authenticate(basic("alice", password), client, connection=connection))
            )

        alice, guesser = Connection(), Connection()
        self.assertEqual(signIn("right", alice), "alice")
        checked = []
        for second in range(1, 181):
            self.clock.advance(0.25)
            for quarter in range(4):
                self.assertIsNone(signIn(f"guess{second}.{quarter}", guesser))
                if quarter == 3 and second % 15 == 0:
                    checks = self.checks
                    self.assertEqual(signIn("right", alice), "alice", second)
                    checked += [second] * (self.checks - checks)
                if quarter < 3:
                    self.clock.advance(0.25)
        self.assertEqual(checked, [60, 120, 180])
        # Other credentials on it are refused unchecked, and it is still
        # signed in with hers.
        checks = self.checks
        self.assertIsNone(signIn("wrong", alice))
        self.assertEqual((signIn("right", alice), self.checks), ("alice", checks))
        # Her password changed: checked once there, then refused unchecked.
        self.users["alice"] = loadUsersFrom(self, alice="new")["alice"]
        self.assertIsNone(signIn("right", alice))
        self.assertEqual(self.checks, checks + 1)
        self.assertIsNone(signIn("right", alice))
        self.assertIsNone(signIn("new", alice))
        self.assertEqual(self.checks, checks + 1)
        # A user removed is refused unchecked on the connection that signed
        # in, as it was.
        bob = Connection()
        self.users["bob"] = self.users["alice"]
        self.assertEqual(
            self.successResultOf(defer.ensureDeferred(self.auth.authenticate(basic("bob", "new"), "10.0.0.1", connection=bob))),
            "bob",
        )
        for _ in range(5):
            self.successResultOf(defer.ensureDeferred(self.auth.authenticate(basic("bob", "x"), "10.0.0.1")))
        del self.users["bob"]
        checks = self.checks
        self.assertIsNone(
            self.successResultOf(defer.ensureDeferred(self.auth.authenticate(basic("bob", "new"), "10.0.0.1", connection=bob)))
        )
        self.assertEqual(self.checks, checks)

    def test_rememberedNotToldWhileChecksHoldTheTries(self) -> None:
        """
        A guesser at a signed-in user's address whose last wrong try is held
        by one of its checks under way is not told, on a new connection,
        which of its guesses is remembered: each waits for that try as a
        guess not remembered does, and is refused with it.  The right one
        passed at once, the others waited or were refused uncounted: 2,411
        guesses tested in 21.6 s, about 17 checks run.  Alice's own
        connection still passes at once.
        """
        auth = self.slowAuthenticator()

        def start(password: str, connection: object):
            return defer.ensureDeferred(auth.authenticate(basic("alice", password), "192.0.2.7", connection=connection))

        alice = Connection()
        signedIn = start("right", alice)
        self.pending.pop()()
        self.assertEqual(self.successResultOf(signedIn), "alice")
        guesser = Connection()
        for i in range(4):
            wrong = start(f"wrong{i}", guesser)
            self.pending.pop()()
            self.assertIsNone(self.successResultOf(wrong))
        holder = start("holder", guesser)  # holds the last try
        checks = self.checks
        guesses = [start("right" if i == 20 else f"guess{i}", Connection()) for i in range(40)]
        self.assertEqual([d.called for d in guesses], [False] * MAX_WAITING_PER_CLIENT + [True] * 24)
        self.assertEqual(self.successResultOf(start("right", alice)), "alice")
        self.pending.pop()()  # the holder was wrong: no try is left
        self.assertIsNone(self.successResultOf(holder))
        self.assertEqual({self.successResultOf(d) for d in guesses}, {None})
        self.assertEqual(self.checks, checks)
        self.assertEqual(self.successResultOf(start("right", alice)), "alice")

    def test_newConnectionWaitsForATryNotACheck(self) -> None:
        """
        A signed-in user's new connection while the checks of its address
        hold its tries waits for one of them to come free, then passes from
        what is remembered, without a check of its own.
        """
        auth = self.slowAuthenticator()
        self.users["bob"] = self.users["alice"]
        alice = Connection()
        signedIn = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7", connection=alice))
        self.pending.pop()()
        self.assertEqual(self.successResultOf(signedIn), "alice")
        held = [defer.ensureDeferred(auth.authenticate(basic("bob", "right"), "192.0.2.7"))]
        held += [defer.ensureDeferred(auth.authenticate(basic("bob", f"g{i}"), "192.0.2.7")) for i in range(4)]
        checks = self.checks
        new = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7", connection=Connection()))
        self.assertFalse(new.called)
        self.pending.pop(0)()  # bob's right password frees its try
        self.assertEqual((self.successResultOf(held[0]), self.successResultOf(new)), ("bob", "alice"))
        self.assertEqual(self.checks, checks)
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in held[1:]}, {None})

    def test_checksUnderWayBounded(self) -> None:
        """
        At most eight checks are under way at once: more wait for one to
        end, whatever their addresses (up to L{MAX_WAITING_CHECKS}, then
        they are refused at once), and are refused if none ends within
        L{CHECK_PATIENCE}; remembered credentials still pass at once, and
        once checks end the waiting ones start, in order.
        """
        auth = self.slowAuthenticator()
        remembered = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.9"))
        self.pending.pop()()
        self.assertEqual(self.successResultOf(remembered), "alice")
        guesses = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"guess{i}"), f"127.0.0.{i + 2}")) for i in range(18)
        ]
        self.assertEqual(self.checks, 9)
        self.assertEqual([d.called for d in guesses], [False] * 18)
        again = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.9"))
        self.assertEqual(self.successResultOf(again), "alice")
        self.pending.pop(0)()  # the first guess's check ends: the ninth starts
        self.assertEqual(self.checks, 10)
        self.assertIsNone(self.successResultOf(guesses[0]))
        self.clock.advance(CHECK_PATIENCE)
        self.assertEqual([self.successResultOf(d) for d in guesses[9:]], [None] * 9)
        for fire in self.pending:
            fire()
        self.assertEqual([self.successResultOf(d) for d in guesses[1:9]], [None] * 8)
        self.assertEqual(self.checks, 10)
        self.pending = []
        defer.ensureDeferred(auth.authenticate(basic("alice", "another"), "127.8.8.8"))
        self.assertEqual(self.checks, 11)

    def test_oneAddressHoldsFewPlaces(self) -> None:
        """
        One address's sign-ins waiting for one of its own checks to end are
        at most L{MAX_WAITING_PER_CLIENT}: one address filled the whole
        line, and others' sign-ins were refused at once.
        """
        auth = self.slowAuthenticator()
        flood = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), "192.0.2.66")) for i in range(80)]
        self.assertEqual(self.checks, 5)
        self.assertEqual(sum(d.called for d in flood), 80 - 5 - MAX_WAITING_PER_CLIENT)
        self.assertEqual(auth._waiting, MAX_WAITING_PER_CLIENT)
        other = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "198.51.100.1"))
        self.assertEqual(self.checks, 6)
        self.pending.pop()()
        self.assertEqual(self.successResultOf(other), "alice")
        self.clock.advance(CHECK_PATIENCE)
        for fire in self.pending:
            fire()
        self.assertEqual(auth._waiting, 0)

    def test_goneClientsLeaveTheLine(self) -> None:
        """
        When the line is full, sign-ins whose clients went away (no longer
        wanted) leave it for a new one, and none of them gets a check: the
        line was held, and checks run, for connections already closed.
        """
        auth = self.slowAuthenticator()
        gone = [False]
        running = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(8)]
        waiting = [
            defer.ensureDeferred(
                auth.authenticate(basic("alice", f"w{i}"), f"127.1.{i // 200}.{i % 200 + 2}", lambda: not gone[0])
            )
            for i in range(MAX_WAITING_CHECKS)
        ]
        self.assertEqual(auth._waiting, MAX_WAITING_CHECKS)
        gone[0] = True
        late = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "198.51.100.1"))
        self.assertFalse(late.called)
        self.assertEqual({self.successResultOf(d) for d in waiting}, {None})
        self.assertEqual(auth._waiting, 1)
        self.pending.pop(0)()
        self.assertEqual(self.checks, 9)
        self.pending.pop()()
        self.assertEqual(self.successResultOf(late), "alice")
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in running}, {None})
        # The patience timers of those that left went with them.
        self.assertEqual((auth._waiting, self.clock.getDelayedCalls()), (0, []))

    def test_sharedCheckKeptWhenTheFirstClientLeaves(self) -> None:
        """
        The same credentials on two connections wait for one check: when
        the first connection's client goes away while they wait, the check
        still runs for the other, and no wrong try is counted (the other
        got a 407 without a check, and the address a wrong try).
        """
        auth = self.slowAuthenticator()
        auth._maxChecking = 1
        running = defer.ensureDeferred(auth.authenticate(basic("alice", "other"), "10.9.9.9"))
        gone = [False]
        first = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.1", lambda: not gone[0]))
        second = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.1"))
        gone[0] = True
        self.pending.pop(0)()
        self.assertIsNone(self.successResultOf(running))
        self.pending.pop(0)()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), ("alice", "alice"))
        self.assertEqual(auth._failures.available("10.0.0.1"), 5)

    def test_guessLeftBeforeItsCheckIsAWrongTry(self) -> None:
        """
        A sign-in whose client goes away while it waits for its check gets
        none, and counts as a wrong try all the same: a remembered guess
        passes at once where one not remembered waits for a check, so a
        guesser that left each guess not answered at once learnt which
        were not remembered for nothing (40 guesses on a busy proxy, none
        counted).
        """
        auth = self.slowAuthenticator()
        auth._maxChecking = 1
        signedIn = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.1", connection=Connection()))
        self.pending.pop()()
        self.assertEqual(self.successResultOf(signedIn), "alice")
        for i in range(5):
            running = defer.ensureDeferred(auth.authenticate(basic("alice", "other"), f"10.9.9.{i + 1}"))
            gone = [False]
            left = defer.ensureDeferred(
                auth.authenticate(basic("alice", f"g{i}"), "10.0.0.1", lambda: not gone[0], connection=Connection())
            )
            self.assertFalse(left.called)
            gone[0] = True
            self.pending.pop()()
            self.assertEqual((self.successResultOf(running), self.successResultOf(left)), (None, None))
        self.assertIsNone(self.successResultOf(defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.1"))))
        self.assertEqual(self.checks, 1 + 5)
        # It left the line, its patience's timer with it.
        self.assertEqual((auth._waiting, self.clock.getDelayedCalls()), (0, []))

    def test_signedInCheckWithoutATurnCostsNoTry(self) -> None:
        """
        A connection that signed in, its credentials no longer remembered,
        whose check again there gets no turn (no check free within its
        patience, or its client gone while it waits) is refused this time
        without a wrong try counted for its address, and stays signed in:
        its next request is checked again there, and passes, with the
        address's tries all spent by a guesser.  (Counted, a busy line
        spent a real user's tries; dropped, the user was locked out.)
        """
        auth = self.slowAuthenticator()
        auth._maxChecking = 1
        alice = Connection()

        def signIn(password: str, connection: object, wanted=lambda: True):
            return defer.ensureDeferred(auth.authenticate(basic("alice", password), "10.0.0.1", wanted, connection))

        first = signIn("right", alice)
        self.pending.pop()()
        self.assertEqual(self.successResultOf(first), "alice")
        gone = [False]
        for leave in (False, True):
            self.clock.advance(301)  # no longer remembered
            running = defer.ensureDeferred(auth.authenticate(basic("alice", "other"), "10.9.9.9"))
            again = signIn("right", alice, lambda: not gone[0])
            if leave:
                gone[0] = True
            else:
                self.clock.advance(CHECK_PATIENCE)
            self.pending.pop()()
            self.assertEqual((self.successResultOf(running), self.successResultOf(again)), (None, None))
            self.assertEqual(auth._failures.available("10.0.0.1"), 5)
        guesser = Connection()
        for i in range(5):
            wrong = signIn(f"guess{i}", guesser)
            self.pending.pop()()
            self.assertIsNone(self.successResultOf(wrong))
        self.assertIsNone(self.successResultOf(signIn("right", Connection())))
        checks = self.checks
        again = signIn("right", alice)
        self.pending.pop()()
        self.assertEqual((self.successResultOf(again), self.checks), ("alice", checks + 1))

    def test_sharedWrongCheckIsOneWrongTry(self) -> None:
        """
        The same wrong credentials sent on two connections at once share
        one check, and count as one wrong try for their address, not one
        each.
        """
        auth = self.slowAuthenticator()
        guesses = [
            defer.ensureDeferred(auth.authenticate(basic("alice", "wrong"), "10.0.0.1", connection=Connection()))
            for _ in range(2)
        ]
        self.assertEqual(self.checks, 1)
        self.pending.pop()()
        self.assertEqual([self.successResultOf(d) for d in guesses], [None, None])
        self.assertEqual(auth._failures.available("10.0.0.1"), 4)

    def test_newConnectionPassingFromMemorySignsIn(self) -> None:
        """
        A new connection whose credentials pass from what is remembered
        (at once, or once one of its address's tries came free) is signed
        in with them as one that was checked: it goes on passing there
        while a guesser at its address keeps the address over its limit,
        where another new connection is refused.
        """
        auth = self.slowAuthenticator()
        self.users["bob"] = self.users["alice"]

        def signIn(name: str, password: str, connection: object):
            return defer.ensureDeferred(auth.authenticate(basic(name, password), "192.0.2.7", connection=connection))

        first = signIn("alice", "right", Connection())
        self.pending.pop()()
        self.assertEqual(self.successResultOf(first), "alice")
        checks = self.checks
        atOnce = Connection()
        self.assertEqual(self.successResultOf(signIn("alice", "right", atOnce)), "alice")
        # The address's tries all held by checks: a new one waits for one.
        held = [signIn("bob", "right", None)] + [signIn("bob", f"g{i}", None) for i in range(4)]
        afterATry = Connection()
        waited = signIn("alice", "right", afterATry)
        self.assertFalse(waited.called)
        self.pending.pop(0)()  # bob's right password frees its try
        self.assertEqual((self.successResultOf(held[0]), self.successResultOf(waited)), ("bob", "alice"))
        for fire in self.pending:
            fire()
        self.pending = []
        wrong = signIn("alice", "one more", None)
        self.pending.pop()()
        self.assertIsNone(self.successResultOf(wrong))
        self.assertLess(auth._failures.available("192.0.2.7"), 1)
        self.assertEqual(self.checks, checks + 6)
        for connection in (atOnce, afterATry):
            self.assertEqual(self.successResultOf(signIn("alice", "right", connection)), "alice")
        self.assertIsNone(self.successResultOf(signIn("alice", "right", Connection())))
        self.assertEqual(self.checks, checks + 6)

    def test_patienceCountsBothWaits(self) -> None:
        """
        A sign-in that waited for a free try and then for a check waits
        L{CHECK_PATIENCE} in all (each wait had its own: 10 s).
        """
        auth = self.slowAuthenticator()
        auth._checks = auth._checks.__class__(10, 5, self.clock)
        self.users["bob"] = self.users["alice"]
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7"))]
        held += [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), "192.0.2.7")) for i in range(4)]
        sixth = defer.ensureDeferred(auth.authenticate(basic("bob", "right"), "192.0.2.7"))
        for i in range(20):  # the checks of the second all taken by others
            defer.ensureDeferred(auth.authenticate(basic("alice", f"o{i}"), f"127.2.0.{i + 2}"))
        self.clock.advance(CHECK_PATIENCE - 0.1)
        self.pending.pop(0)()  # one of its tries comes free: it waits for a check now
        self.assertEqual(self.successResultOf(held[0]), "alice")
        self.assertFalse(sixth.called)
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(sixth))
        self.clock.advance(CHECK_PATIENCE)
        for fire in self.pending:
            fire()
        del held

    def test_waitingLineBounded(self) -> None:
        """
        Past L{MAX_WAITING_CHECKS} sign-ins waiting, another is refused at
        once.
        """
        auth = self.slowAuthenticator()
        running = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(8)]
        waiting = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"w{i}"), f"127.1.{i // 200}.{i % 200 + 2}"))
            for i in range(MAX_WAITING_CHECKS)
        ]
        self.assertEqual(sum(d.called for d in running + waiting), 0)
        late = defer.ensureDeferred(auth.authenticate(basic("bob", "other"), "127.8.8.8"))
        self.assertIsNone(self.successResultOf(late))
        self.clock.advance(CHECK_PATIENCE)
        for fire in self.pending:
            fire()

    def test_figuresAsTheReadmeSays(self) -> None:
        """
        The waiting line's figures are those the README gives: 64 sign-ins
        wait, 16 of them at most for one address's tries, 5 s at most.
        """
        from tests.test_readme import README

        text = " ".join(README.split())
        self.assertIn(f"up to {MAX_WAITING_CHECKS} wait, for {CHECK_PATIENCE:g} s at most in all", text)
        self.assertIn(f"at most {MAX_WAITING_PER_CLIENT} such for one address", text)

    def test_fullLineRefusesAWaitForATry(self) -> None:
        """
        With L{MAX_WAITING_CHECKS} sign-ins waiting, one whose address's
        tries are all held by its checks under way is refused at once too
        (a C{KeyError}: the proxy answered C{500}, with a traceback).
        """
        auth = self.slowAuthenticator()
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", f"h{i}"), "192.0.2.7")) for i in range(5)]
        others = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(3)]
        waiting = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"w{i}"), f"127.1.{i // 200}.{i % 200 + 2}"))
            for i in range(MAX_WAITING_CHECKS)
        ]
        self.assertEqual((self.checks, auth._waiting), (8, MAX_WAITING_CHECKS))
        sixth = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7"))
        self.assertIsNone(self.successResultOf(sixth))
        self.assertEqual((auth._waiting, auth._waitingTries), (MAX_WAITING_CHECKS, {}))
        self.clock.advance(CHECK_PATIENCE)
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in held + others + waiting}, {None})

    def test_waitForATryAfterGoneOnesLeftTheLine(self) -> None:
        """
        A sign-in that finds the line full of sign-ins whose clients went
        away, and its address's tries all held, takes a place and is woken
        when one of those tries comes free (it waited for its patience's
        end and got a C{407}: its own address's place was dropped with
        those of the clients gone).
        """
        auth = self.slowAuthenticator()
        gone = [False]
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7"))]
        held += [defer.ensureDeferred(auth.authenticate(basic("alice", f"h{i}"), "192.0.2.7")) for i in range(4)]
        others = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(3)]
        waiting = [
            defer.ensureDeferred(
                auth.authenticate(basic("alice", f"w{i}"), f"127.1.{i // 200}.{i % 200 + 2}", lambda: not gone[0])
            )
            for i in range(MAX_WAITING_CHECKS)
        ]
        gone[0] = True
        sixth = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7"))
        self.assertEqual({self.successResultOf(d) for d in waiting}, {None})
        self.assertFalse(sixth.called)
        self.pending.pop(0)()  # the right password: one of its tries is free
        self.assertEqual(self.successResultOf(held[0]), "alice")
        self.assertEqual(self.successResultOf(sixth), "alice")
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in held[1:] + others}, {None})

    def test_nothingKeptForClientsDone(self) -> None:
        """
        Once a client's sign-ins are answered nothing is kept for it in the
        tables of tries held and of sign-ins waiting for one, whether they
        were refused at once, gave up at the deadline, left a full line, or
        were checked: a client changing address grew them for ever.
        """
        auth = self.slowAuthenticator()
        gone = [False]
        # Checked (the tries they held are free again).
        checked = [defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.1"))]
        self.pending.pop()()
        self.assertEqual(self.successResultOf(checked[0]), "alice")
        self.assertEqual((auth._reserved, auth._waitingTries), ({}, {}))
        # Waiting for a try, then given up at the deadline.
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", f"h{i}"), "192.0.2.2")) for i in range(5)]
        late = defer.ensureDeferred(auth.authenticate(basic("alice", "x"), "192.0.2.2"))
        self.assertEqual(list(auth._waitingTries), ["192.0.2.2"])
        self.clock.advance(CHECK_PATIENCE)
        self.assertIsNone(self.successResultOf(late))
        self.assertEqual(auth._waitingTries, {})
        for fire in self.pending:
            fire()
        self.pending = []
        self.assertEqual({self.successResultOf(d) for d in held}, {None})
        self.assertEqual(auth._reserved, {})
        # Refused at once: its tries are spent.
        self.assertIsNone(self.successResultOf(defer.ensureDeferred(auth.authenticate(basic("alice", "y"), "192.0.2.2"))))
        self.assertEqual(auth._waitingTries, {})
        # Left a full line, its client gone.
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", f"h{i}"), "192.0.2.3")) for i in range(5)]
        waitingTry = defer.ensureDeferred(auth.authenticate(basic("alice", "z"), "192.0.2.3", lambda: not gone[0]))
        others = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(3)]
        waiting = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"w{i}"), f"127.1.{i // 200}.{i % 200 + 2}"))
            for i in range(MAX_WAITING_CHECKS - 1)
        ]
        gone[0] = True
        newcomer = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "198.51.100.1"))
        self.assertIsNone(self.successResultOf(waitingTry))
        self.assertFalse(newcomer.called)
        self.assertEqual(auth._waitingTries, {})
        self.clock.advance(CHECK_PATIENCE)
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in held + others + waiting + [newcomer]}, {None})
        self.assertEqual((auth._reserved, auth._waitingTries, auth._waiting), ({}, {}, 0))

    def test_goneWhileWaitingForATry(self) -> None:
        """
        A sign-in whose client went away while it waited for one of its
        address's tries gets no check when one comes free, and is not a
        wrong try.
        """
        auth = self.slowAuthenticator()
        gone = [False]
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "192.0.2.7"))]
        held += [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), "192.0.2.7")) for i in range(4)]
        left = defer.ensureDeferred(auth.authenticate(basic("alice", "other"), "192.0.2.7", lambda: not gone[0]))
        self.assertEqual(self.checks, 5)
        gone[0] = True
        self.pending.pop(0)()  # the right password: one of its tries is free
        self.assertEqual(self.successResultOf(held[0]), "alice")
        self.assertIsNone(self.successResultOf(left))
        self.assertEqual(self.checks, 5)
        for fire in self.pending:
            fire()
        self.assertEqual(auth._failures.available("192.0.2.7"), 1)

    def test_goneWaitingForATryLeaveAFullLine(self) -> None:
        """
        Sign-ins waiting for one of their address's tries whose clients
        went away leave a full line for a new one too, as those waiting for
        a check do.
        """
        auth = self.slowAuthenticator()
        gone = [False]
        held = [defer.ensureDeferred(auth.authenticate(basic("alice", f"h{i}"), "192.0.2.7")) for i in range(5)]
        waitingTries = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"t{i}"), "192.0.2.7", lambda: not gone[0]))
            for i in range(MAX_WAITING_PER_CLIENT)
        ]
        others = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(3)]
        waiting = [
            defer.ensureDeferred(auth.authenticate(basic("alice", f"w{i}"), f"127.1.{i // 200}.{i % 200 + 2}"))
            for i in range(MAX_WAITING_CHECKS - MAX_WAITING_PER_CLIENT)
        ]
        self.assertEqual(auth._waiting, MAX_WAITING_CHECKS)
        gone[0] = True
        late = defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "198.51.100.1"))
        self.assertFalse(late.called)
        self.assertEqual({self.successResultOf(d) for d in waitingTries}, {None})
        self.assertEqual((auth._waiting, auth._waitingTries), (MAX_WAITING_CHECKS - MAX_WAITING_PER_CLIENT + 1, {}))
        self.clock.advance(CHECK_PATIENCE)
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in held + others + waiting + [late]}, {None})

    def test_placesFreeAtTheDeadline(self) -> None:
        """
        Sign-ins refused at the end of their patience leave the line: as
        many may wait again, and none of their timers is left.
        """
        auth = self.slowAuthenticator()
        running = [defer.ensureDeferred(auth.authenticate(basic("alice", f"g{i}"), f"127.0.0.{i + 2}")) for i in range(8)]
        for round in range(2):
            waiting = [
                defer.ensureDeferred(auth.authenticate(basic("alice", f"w{i}"), f"127.{round + 1}.{i // 200}.{i % 200 + 2}"))
                for i in range(MAX_WAITING_CHECKS)
            ]
            self.assertEqual(sum(d.called for d in waiting), 0)
            self.clock.advance(CHECK_PATIENCE)
            self.assertEqual({self.successResultOf(d) for d in waiting}, {None})
            self.assertEqual((auth._waiting, self.clock.getDelayedCalls()), (0, []))
        for fire in self.pending:
            fire()
        self.assertEqual({self.successResultOf(d) for d in running}, {None})

    def test_newSignInWaitsBehindThoseWaiting(self) -> None:
        """
        A sign-in that comes while others wait for a check goes behind
        them, even when the check of the second has come back before the
        line was looked at again (it is looked at 10 ms later at the
        soonest): it took their check.
        """
        self.auth._checks = self.auth._checks.__class__(1000, 1, self.clock)
        first = self.start(basic("alice", "right"), "10.0.0.1")
        self.assertEqual(self.successResultOf(first), "alice")
        second = self.start(basic("alice", "right"), "10.0.0.2")
        self.clock.advance(0.005)
        third = self.start(basic("alice", "right"), "10.0.0.3")
        self.assertEqual(self.successResultOf(second), "alice")
        self.assertFalse(third.called)
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(third), "alice")

    def test_oneWakeForTheLine(self) -> None:
        """
        Sign-ins waiting for the next check of the second share one timer
        that wakes the line, beside each one's patience.
        """
        self.auth._checks = self.auth._checks.__class__(10, 20, self.clock)
        for n in range(30):
            self.users[f"user{n}"] = self.users["alice"]
        signIns = [self.start(basic(f"user{n}", "right"), "192.0.2.7") for n in range(30)]
        self.assertEqual(len(self.clock.getDelayedCalls()), 10 + 1)
        self.clock.advance(1)
        self.assertEqual([self.successResultOf(d) for d in signIns], [f"user{n}" for n in range(30)])

    def mixedAuthenticator(self):
        """
        An L{Authenticator} (C{self.auth} too) whose checks of passwords
        starting with C{slow} end only when the test fires them
        (C{self.pending}, in order), and of others at once; the user C{s}'s
        password is C{slowright}.
        """
        self.pending = []
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"s:{hashPassword('slowright', **CHEAP)}\n")
        self.users.update(loadUsers(path))

        def check(function, password):
            self.checks += 1
            if not password.startswith(b"slow"):
                return defer.succeed(function(password))
            d = defer.Deferred()
            self.pending.append(lambda: d.callback(function(password)))
            return d

        self.auth = Authenticator(self.users, self.clock, check=check)
        return self.auth

    def test_deadlineHoldsWhenATryComesFreeAtIt(self) -> None:
        """
        A sign-in waiting for one of its address's tries is refused at its
        deadline, even when a try comes free at that very instant; and one
        that gets a try then, but must wait for a check, is refused too.
        """
        for maxChecking, atDeadline in ((8, [1, 0]), (5, [0])):
            auth = self.mixedAuthenticator()
            auth._maxChecking = maxChecking
            # With 8 checks at once, a wrong password's check ends first:
            # no try comes free; the right one's does.  With 5, every
            # check is taken when a try comes free.
            for index in atDeadline:
                self.clock.callLater(CHECK_PATIENCE, lambda index: self.pending[index](), index)
            held = [self.start(basic("s", "slowright"), "192.0.2.7")]
            held += [self.start(basic("s", f"slow{i}"), "192.0.2.7") for i in range(4)]
            sixth = self.start(basic("alice", "right"), "192.0.2.7")
            self.assertEqual(self.checks % 5, 0)
            checks = self.checks
            self.clock.advance(CHECK_PATIENCE)
            self.assertEqual(self.successResultOf(held[0]), "s")
            self.assertIsNone(self.successResultOf(sixth))
            self.assertEqual(self.checks, checks)
            for fire in self.pending[len(atDeadline) :]:
                fire()
            self.assertEqual([self.successResultOf(d) for d in held[1:]], [None] * 4)

    def test_triesWokenForEveryAddressTheirChecksFreed(self) -> None:
        """
        A sign-in woken when one of its address's tries came free may let
        the line move on, and the checks that then end free tries of other
        addresses: their sign-ins waiting for one are woken as well, not
        left until another check of theirs ends.
        """
        auth = self.mixedAuthenticator()
        auth._checks = auth._checks.__class__(1000, 5, self.clock)
        for n in range(6):
            self.users[f"y{n}"] = self.users["alice"]
        held = [self.start(basic("s", "slowright"), "192.0.2.7")]
        held += [self.start(basic("s", f"slow{i}"), "192.0.2.7") for i in range(4)]
        sixth = self.start(basic("alice", "right"), "192.0.2.7")
        others = [self.start(basic(f"y{n}", "right"), "192.0.2.8") for n in range(6)]
        self.assertEqual((self.checks, list(auth._waitingTries)), (5, ["192.0.2.7", "192.0.2.8"]))
        # The checks of the second are back, the line not looked at yet
        # (it is 10 ms later at the soonest).
        self.clock.advance(0.005)
        self.pending.pop(0)()
        self.assertEqual([d.called for d in others], [True] * 5 + [False])
        self.assertEqual(auth._waitingTries, {})
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(sixth), "alice")
        self.assertEqual([self.successResultOf(d) for d in others], [f"y{n}" for n in range(6)])
        for fire in self.pending:
            fire()
        self.assertEqual([self.successResultOf(d) for d in held], ["s"] + [None] * 4)

    def test_manyChecksEndingAtOnce(self) -> None:
        """
        A line of L{MAX_WAITING_CHECKS} sign-ins whose checks end at once
        (a check that ends at once starts the next) is answered in order,
        from one loop: started from within each other, the last was
        answered first, 64 calls deep.
        """
        auth = self.mixedAuthenticator()
        auth._checks = auth._checks.__class__(1000, 1000, self.clock)
        running = [self.start(basic("s", f"slow{i}"), f"127.0.0.{i + 2}") for i in range(8)]
        for n in range(MAX_WAITING_CHECKS):
            self.users[f"u{n}"] = self.users["alice"]
        order = []
        waiting = [self.start(basic(f"u{n}", "right"), f"127.1.0.{n + 2}") for n in range(MAX_WAITING_CHECKS)]
        for d in waiting:
            d.addCallback(order.append)
        self.pending[0]()
        self.assertEqual(order, [f"u{n}" for n in range(MAX_WAITING_CHECKS)])
        for fire in self.pending[1:]:
            fire()
        self.assertEqual({self.successResultOf(d) for d in running}, {None})

    def test_unknownNameCostsTheSameCheck(self) -> None:
        """
        An unknown name is checked like a known one, against an entry of the
        same scrypt cost (so the answer takes as long), never passes, and
        counts as a wrong try.
        """
        seen = []

        def check(function, *args):
            seen.append(function.__self__)
            return defer.succeed(True)

        auth = Authenticator(self.users, self.clock, check=check)
        result = defer.ensureDeferred(auth.authenticate(basic("mallory", "right"), "10.0.0.9"))
        self.assertIsNone(self.successResultOf(result))
        [entry] = seen
        alice = self.users["alice"]
        self.assertIsNot(entry, alice)
        self.assertEqual((entry.n, entry.r, entry.p, len(entry.hash)), (alice.n, alice.r, alice.p, len(alice.hash)))
        for _ in range(4):
            self.assertIsNone(self.successResultOf(defer.ensureDeferred(auth.authenticate(basic("mallory", "x"), "10.0.0.9"))))
        self.assertIsNone(self.successResultOf(defer.ensureDeferred(auth.authenticate(basic("alice", "right"), "10.0.0.9"))))
        self.assertEqual(len(seen), 5)


class DecoyTests(SynchronousTestCase):
    """
    The cost an unknown name is checked at (L{_Decoys}) stays the same
    across restarts and, but for few names, across users added or removed,
    as a real user's does: it changed with every restart (a new random key)
    and, for about half the names, with every user added (a hash modulo
    the number of users), which told unknown names from real ones.
    """

    @staticmethod
    def users(**counts: int) -> dict:
        """
        Users at the costs C{cheap} (N=16) and C{dear} (N=64), so many each.
        """
        costs = {"cheap": 16, "dear": 64}
        return {
            f"{kind}{number}": _Entry(costs[kind], 1, 1, bytes(16), bytes(32))
            for kind, count in counts.items()
            for number in range(count)
        }

    def costs(self, decoys: _Decoys, names: list) -> list:
        return [decoys.forName(name).n for name in names]

    names = [f"nobody{number}" for number in range(4000)]

    def test_sameKeySameCosts(self) -> None:
        """
        The same key (kept from one start to the next) gives every unknown
        name the same cost; the costs are shared out as the users' are.
        """
        key = os.urandom(32)
        users = self.users(cheap=10, dear=10)
        first = self.costs(_Decoys(users, key), self.names)
        self.assertEqual(self.costs(_Decoys(users, key), self.names), first)
        self.assertLess(abs(first.count(64) / len(first) - 0.5), 0.04)
        auth = Authenticator(users, Clock(), decoyKey=key)
        self.assertEqual(self.costs(auth._decoys, self.names), first)

    def test_userAddedMovesFewNames(self) -> None:
        """
        A user added or removed changes the cost of only the names near a
        bound (about one user's share of them), whichever cost it has and
        wherever its line is in the file.
        """
        key = os.urandom(32)
        before = self.costs(_Decoys(self.users(cheap=10, dear=10), key), self.names)
        for changed in (self.users(cheap=11, dear=10), self.users(cheap=10, dear=11), self.users(cheap=10, dear=9)):
            after = self.costs(_Decoys(changed, key), self.names)
            moved = sum(a != b for a, b in zip(before, after))
            self.assertLess(moved / len(self.names), 0.06, moved)
        # The order of the users (of their lines) does not matter.
        reordered = dict(reversed(list(self.users(cheap=10, dear=10).items())))
        self.assertEqual(self.costs(_Decoys(reordered, key), self.names), before)

    def test_keyKeptInAFile(self) -> None:
        """
        L{loadOrCreateDecoyKey} makes the key file, private, and reads the
        same key from it again; a file without a key is one sentence.
        """
        path = self.mktemp()
        key = loadOrCreateDecoyKey(path)
        self.assertEqual(len(key), 32)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(loadOrCreateDecoyKey(path), key)
        with open(path, "w") as f:
            f.write("not a key\n")
        with self.assertRaises(ValueError) as e:
            loadOrCreateDecoyKey(path)
        self.assertEqual(
            str(e.exception), f"{path} holds no usable key (64 hexadecimal digits); delete it and a new one is made"
        )

    def test_keyOfAnotherLengthRefused(self) -> None:
        """
        A key file of fewer or more than 64 hexadecimal digits (a 16-byte
        key here) holds no usable key: a short key is a weaker one.
        """
        path = self.mktemp()
        for key in (os.urandom(16), os.urandom(33), b""):
            with open(path, "w") as f:
                f.write(key.hex() + "\n")
            with self.assertRaises(ValueError) as e:
                loadOrCreateDecoyKey(path)
            self.assertIn("holds no usable key (64 hexadecimal digits)", str(e.exception))

    def test_keyFileNotFollowedThroughALink(self) -> None:
        """
        A key file that is a symbolic link is refused (an error opening
        it, which the start reports in one line), though it leads to a
        good key: it is read only as a file of its own, as the data
        directory's other files are.
        """
        target = self.mktemp()
        loadOrCreateDecoyKey(target)
        link = self.mktemp()
        os.symlink(os.path.abspath(target), link)
        self.assertRaises(OSError, loadOrCreateDecoyKey, link)
        self.assertTrue(os.path.islink(link))

    def test_keyFileOthersCanUseIsWarnedOf(self) -> None:
        """
        A key file that other users may read or write is used, with a
        warning saying so and how to mend it, as the API token's is: it was
        used silently.  A private one is used without a word.
        """
        path = self.mktemp()
        key = loadOrCreateDecoyKey(path)
        for mode in (0o644, 0o640, 0o620, 0o604, 0o600):
            os.chmod(path, mode)
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            self.assertEqual(loadOrCreateDecoyKey(path), key)
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            if mode == 0o600:
                self.assertEqual(warnings, [])
            else:
                self.assertEqual(
                    warnings,
                    [f"{path} is open to other users (mode 0{mode:o}), who may read or change the proxy's decoy key:"
                     " chmod 600 it"],
                )


class UsersFileReloadTests(SynchronousTestCase):
    """
    An L{Authenticator} given its users file's path reads it again when it
    changes (looked at once a second at most): a user added, removed or
    given a new password counts from the next request.  It was read once,
    at start: a leaked password changed with C{netsuite-proxy-user} kept
    working until a restart, and a new user was refused.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.write(alice="right")
        self.clock = Clock()
        #: Whether checks wait (in C{waiting}) until the test answers them.
        self.hold = False
        self.waiting: list = []

        def check(function, *args):
            if not self.hold:
                return defer.succeed(function(*args))
            d: defer.Deferred = defer.Deferred()
            self.waiting.append((d, function(*args)))
            return d

        self.auth = Authenticator(loadUsers(self.path), self.clock, check=check, cacheSeconds=300, path=self.path)

    def write(self, **passwords: str) -> None:
        with open(self.path, "w") as f:
            for name, password in passwords.items():
                f.write(f"{name}:{hashPassword(password, **CHEAP)}\n")

    def authenticate(self, name: str, password: str):
        return self.successResultOf(defer.ensureDeferred(self.auth.authenticate(basic(name, password), "127.0.0.1")))

    def holdReads(self) -> list:
        """
        Have reads of the users file wait until the test fires them: each
        is a (Deferred, users read) pair in the list returned.
        """
        reads: list = []
        original = self.auth._check

        def check(function, *args):
            if function == self.auth._readUsers:
                d: defer.Deferred = defer.Deferred()
                reads.append((d, function(*args)))
                return d
            return original(function, *args)

        self.auth._check = check  # type: ignore[method-assign]
        return reads

    def test_changesCountFromTheNextRequest(self) -> None:
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.write(alice="changed", bob="new")
        self.assertEqual(self.authenticate("alice", "right"), "alice")  # within the second
        self.clock.advance(1.5)
        self.assertIsNone(self.authenticate("alice", "right"))
        self.assertEqual(self.authenticate("alice", "changed"), "alice")
        self.assertEqual(self.authenticate("bob", "new"), "bob")
        self.write(bob="new")
        self.clock.advance(1.5)
        self.assertIsNone(self.authenticate("alice", "changed"))
        self.assertEqual(self.authenticate("bob", "new"), "bob")

    def test_badFileKeepsTheUsers(self) -> None:
        """
        A file that became malformed, or cannot be read (not UTF-8 here, an
        I/O error or a hung disk alike), leaves the users as they were,
        with a warning: the error may pass.
        """
        warnings = []
        globalLogPublisher.addObserver(warnings.append)
        self.addCleanup(globalLogPublisher.removeObserver, warnings.append)
        for broken in (b"alice has no password\n", b"alice:\xff\n"):
            with open(self.path, "wb") as f:
                f.write(broken)
            self.clock.advance(1.5)
            self.assertEqual(self.authenticate("alice", "right"), "alice")
        said = [e for e in warnings if "not read again" in e.get("log_format", "")]
        self.assertEqual(len(said), 2)
        self.write(alice="back")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "back"), "alice")

    def test_readErrorThatPassesIsReadAgain(self) -> None:
        """
        A change to the file whose read failed with an error that may pass
        without the file changing (an I/O error, too many open files) is
        read again 1 s later, then 2, 4... up to 60 s apart, with one
        warning while the error lasts, and counts once the read works: it
        waited for the file's next change, and the users stayed as they
        were meanwhile; then it was read at every look, once a second.
        Another change is read at the next look, and the waits start again
        from 1 s.
        """
        from netsuite import proxyauth

        warnings = []
        globalLogPublisher.addObserver(warnings.append)
        self.addCleanup(globalLogPublisher.removeObserver, warnings.append)
        readLines = proxyauth._readLines
        failing = [True]
        reads = []

        def read(path):
            reads.append(self.clock.seconds())
            if failing[0]:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return readLines(path)

        self.patch(proxyauth, "_readLines", read)
        self.write(alice="right", bob="new")
        for _ in range(250):
            self.clock.advance(1)
            self.assertIsNone(self.authenticate("bob", "new"))
            self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.assertEqual([b - a for a, b in zip(reads, reads[1:])], [1, 2, 4, 8, 16, 32, 60, 60, 60])
        said = [formatEvent(e) for e in warnings if "not read again" in e.get("log_format", "")]
        self.assertEqual(
            said,
            [f"proxy users file not read again, the users stay as they were: cannot read the proxy users file"
             f" {self.path!r}: {os.strerror(errno.EIO)}"],
        )
        # A change is read at the next look, and retried 1 s later.
        del reads[:]
        self.write(alice="right", bob="new", carol="new")
        for _ in range(3):
            self.clock.advance(1)
            self.assertIsNone(self.authenticate("carol", "new"))
        self.assertEqual(len(reads), 2)
        failing[0] = False
        self.clock.advance(2)
        self.assertEqual(self.authenticate("bob", "new"), "bob")
        self.assertEqual(self.authenticate("carol", "new"), "carol")
        # Read, it is read again only when it changes.
        for _ in range(120):
            self.clock.advance(1)
            self.authenticate("bob", "new")
        self.assertEqual(len(reads), 3)
        self.assertEqual(len(said), 1)

    def test_slowFailingRetriesHoldNoSignIn(self) -> None:
        """
        A retry of a read that failed in a way that may pass does not make
        sign-ins wait (the users stay as they were either way; only the
        read of a change found does), and a read not done after
        L{READ_PATIENCE} is warned of once while reads keep failing so
        (again once a read works, or finds the file malformed).  With a
        read that takes 30 s and then fails with an I/O error (a dying
        disk, a soft network mount), one sign-in a second for 200 s had 8
        of them wait 5 s (every retry held them), with 9 warnings.
        """
        from netsuite.proxyauth import READ_PATIENCE, UsersFileUnreadable

        warnings: list = []
        globalLogPublisher.addObserver(warnings.append)
        self.addCleanup(globalLogPublisher.removeObserver, warnings.append)
        reads = []
        #: How the reads end, 30 s after they start: this error, or the
        #: users read (None).
        ending = [UsersFileUnreadable("cannot read: Input/output error")]

        def check(function, *args):
            if function != self.auth._readUsers:
                return defer.succeed(function(*args))
            reads.append(self.clock.seconds())
            d: defer.Deferred = defer.Deferred()
            end = ending[0]
            self.clock.callLater(30, lambda: d.callback(function(*args)) if end is None else d.errback(end))
            return d

        def signInEachSecond(seconds: int) -> list:
            waited = []
            for _ in range(seconds):
                self.clock.advance(1)
                signIn = defer.ensureDeferred(self.auth.authenticate(basic("alice", "right"), "127.0.0.1"))
                if not signIn.called:
                    waited.append(self.clock.seconds())
                    self.clock.advance(READ_PATIENCE)
                self.assertEqual(self.successResultOf(signIn), "alice")
            return waited

        def warned() -> list:
            said = [formatEvent(e) for e in warnings if e["log_level"] == LogLevel.warn]
            del warnings[:]
            return said

        slow = f"proxy users file {self.path} not read after {READ_PATIENCE:g} s; the users stay as they were until it is"
        self.auth._check = check  # type: ignore[method-assign]
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.write(alice="right", bob="new")
        self.assertEqual(signInEachSecond(200), reads[:1])  # the change's read only
        self.assertEqual([b - (a + 30) for a, b in zip(reads, reads[1:])], [1, 2, 4, 8, 16])
        self.assertEqual(
            warned(), [slow, "proxy users file not read again, the users stay as they were: cannot read: Input/output error"]
        )
        # The next retry works: a slow read is warned of again.
        ending[0] = None
        self.assertEqual(signInEachSecond(70), [])
        self.assertEqual(self.authenticate("bob", "new"), "bob")
        ending[0] = UsersFileError("line 1: malformed")
        self.write(alice="right")
        signInEachSecond(40)
        ending[0] = UsersFileUnreadable("cannot read: Input/output error")
        self.write(alice="right", carol="new")
        signInEachSecond(40)
        self.assertEqual(
            warned(),
            [slow, "proxy users file not read again, the users stay as they were: line 1: malformed",
             slow, "proxy users file not read again, the users stay as they were: cannot read: Input/output error"],
        )

    def test_malformedFileWaitsForItsNextChange(self) -> None:
        """
        A file found malformed (a line, UTF-8, its size) is read again only
        when it changes, as it cannot mend by itself, also when the read
        before it failed with an error that may pass (which is tried again
        until a read ends otherwise).
        """
        from netsuite import proxyauth

        readLines = proxyauth._readLines
        failing = [False]
        reads = []

        def read(path):
            reads.append(path)
            if failing[0]:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return readLines(path)

        def signInEachSecond(seconds: int) -> None:
            for _ in range(seconds):
                self.clock.advance(1)
                self.assertEqual(self.authenticate("alice", "right"), "alice")

        self.patch(proxyauth, "_readLines", read)
        with open(self.path, "a") as f:
            f.write("bob has no password\n")
        signInEachSecond(120)
        self.assertEqual(len(reads), 1)
        failing[0] = True
        self.write(alice="right", bob="new")
        signInEachSecond(3)
        self.assertEqual(len(reads), 3)  # the change, and 1 s later
        with open(self.path, "a") as f:
            f.write("carol has no password\n")
        failing[0] = False
        signInEachSecond(120)
        self.assertEqual(len(reads), 4)
        self.assertIsNone(self.authenticate("bob", "new"))
        self.write(alice="right", bob="new")
        signInEachSecond(1)
        self.assertEqual(self.authenticate("bob", "new"), "bob")

    def test_noUsersLeftRefusesEveryone(self) -> None:
        """
        A file read that lists no users (comments only, or empty), or one
        that no longer exists, refuses every sign-in, those remembered too,
        with one warning each time: an administrator emptying or deleting
        it after a breach means everyone refused (nginx refuses all).  It
        left the users as they were.  Users added back count again.
        """
        warnings: list = []
        globalLogPublisher.addObserver(warnings.append)
        self.addCleanup(globalLogPublisher.removeObserver, warnings.append)
        for emptied in ("# nobody for now\n", "", None):
            self.write(alice="right")
            self.clock.advance(1.5)
            self.assertEqual(self.authenticate("alice", "right"), "alice")  # remembered
            if emptied is None:
                os.remove(self.path)
                why = f"cannot read the proxy users file {self.path!r}: No such file or directory"
            else:
                with open(self.path, "w") as f:
                    f.write(emptied)
                why = f"the proxy users file {self.path!r} lists no users"
            self.clock.advance(1.5)
            self.assertIsNone(self.authenticate("alice", "right"))
            said = [formatEvent(e) for e in warnings if e["log_level"] == LogLevel.warn]
            self.assertEqual(said, [f"{why}: every sign-in is refused until users are added"])
            del warnings[:]
            self.clock.advance(1.5)
            self.assertIsNone(self.authenticate("alice", "right"))
            self.assertEqual([e for e in warnings if e["log_level"] == LogLevel.warn], [])  # said once
        self.write(alice="back")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "back"), "alice")

    def test_editorSaveKeepsProvedCredentials(self) -> None:
        """
        A save that renames the file away and then writes a new one (vim),
        or empties it and writes it in place (nano), has every sign-in
        refused until the look after it, a second later, and no more: the
        credentials remembered count again once the users are back as they
        were, without a check.  They were all forgotten: 60 of 100 users
        signed in got a 407 in the round after such a save (their checks
        then all taken), and 1,100 users about 110 s of them.
        """
        checks = []
        original = self.auth._check
        self.auth._check = lambda function, *args: (  # type: ignore[method-assign]
            checks.append(args) if function.__name__ == "matches" else None
        ) or original(function, *args)
        with open(self.path, "rb") as f:
            saved = f.read()
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        for save in ("vim", "nano"):
            self.clock.advance(1.5)
            if save == "vim":
                os.rename(self.path, self.path + "~")
            else:
                open(self.path, "w").close()
            self.assertIsNone(self.authenticate("alice", "right"))  # the look finds no users
            with open(self.path, "wb") as f:
                f.write(saved)
            if save == "vim":
                os.remove(self.path + "~")
            self.clock.advance(1.5)
            del checks[:]
            self.assertEqual(self.authenticate("alice", "right"), "alice")
            self.assertEqual(checks, [])
        # A user whose entry came back changed is checked again.
        self.clock.advance(1.5)
        open(self.path, "w").close()
        self.clock.advance(1.5)
        self.assertIsNone(self.authenticate("alice", "right"))
        self.write(alice="right")  # a new salt
        self.clock.advance(1.5)
        del checks[:]
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.assertEqual(checks, [(b"right",)])

    def test_unusableNameKeepsTheUsers(self) -> None:
        """
        A line whose name holds a space or a control character, added while
        netsuite runs, leaves the users as they were, with a warning, as
        any malformed line does.
        """
        warnings = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        with open(self.path, "a") as f:
            f.write(f"mal lory:{hashPassword('pw', **CHEAP)}\nbob:{hashPassword('new', **CHEAP)}\n")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.assertIsNone(self.authenticate("bob", "new"))
        self.assertEqual(
            [formatEvent(e) for e in warnings if e["log_level"] == LogLevel.warn],
            [f"proxy users file not read again, the users stay as they were: {self.path}, line 2:"
             " a name cannot hold spaces, control or format characters"],
        )

    def test_unknownNamesSpreadOverTheUsersCosts(self) -> None:
        """
        With users at different scrypt costs (N, r, p, hash length), an
        unknown name is checked at one of them, the same each time for the
        same name, each cost for about as large a share of unknown names as
        of users (read again with the file).  Every unknown name got the
        first user's cost: with one user at N=65536 among users at
        N=16384, a wrong password for that user took 270-415 ms and an
        unknown name 70 ms, which told that the name existed.
        """
        seen: list = []
        original = self.auth._check

        def check(function, *args):
            if getattr(function, "__name__", None) == "matches":
                seen.append(function.__self__)
            return original(function, *args)

        self.auth._check = check  # type: ignore[method-assign]

        def costs(names: list) -> Counter:
            del seen[:]
            for number, name in enumerate(names):
                self.clock.advance(0.1)  # within every client's checks a second
                client = f"10.{number // 250}.{number % 250}.1"
                result = defer.ensureDeferred(self.auth.authenticate(basic(name, "right"), client))
                self.assertIsNone(self.successResultOf(result))
            self.assertEqual(len(seen), len(names))
            return Counter((e.n, e.r, e.p, len(e.hash)) for e in seen)

        names = [f"nobody{number}" for number in range(4000)]
        self.assertEqual(costs(names[:50]), Counter({(16, 1, 1, 32): 50}))
        salt, longHash = base64.b64encode(bytes(16)).decode(), base64.b64encode(bytes(48)).decode()
        with open(self.path, "a") as f:
            for name in ("bob", "carol"):
                f.write(f"{name}:{hashPassword('pw', n=32, r=1, p=1)}\n")
            f.write(f"dave:scrypt:16:2:1:{salt}:{longHash}\n")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("bob", "pw"), "bob")  # read again
        spread = costs(names)
        self.assertEqual(set(spread), {(16, 1, 1, 32), (32, 1, 1, 32), (16, 2, 1, 48)})
        for cost, users in (((16, 1, 1, 32), 1), ((32, 1, 1, 32), 2), ((16, 2, 1, 48), 1)):
            self.assertLess(abs(spread[cost] / len(names) - users / 4), 0.04, spread)  # > 4 sigmas
        known = set(map(id, self.auth.users.values()))
        self.assertFalse(known & set(map(id, seen)))
        # The same name, the same cost, every time.
        byName = dict(zip(names, seen))
        costs(names[:100])
        self.assertEqual([byName[name] for name in names[:100]], seen)

    def test_lookedAtOnceASecond(self) -> None:
        looks = []
        version = self.auth._fileVersion
        self.auth._fileVersion = lambda: looks.append(1) or version()  # type: ignore[method-assign]
        for _ in range(30):  # 3 s
            self.authenticate("alice", "right")
            self.clock.advance(0.1)
        self.assertEqual(len(looks), 2)

    def test_checkAgainstAnEntryChangedMeanwhile(self) -> None:
        """
        A check that began against an entry the file then changed proves
        nothing: the old password is not remembered as good.
        """
        self.hold = True
        checking = defer.ensureDeferred(self.auth.authenticate(basic("alice", "right"), "127.0.0.1"))
        self.write(alice="changed")
        self.clock.advance(1.5)
        self.hold = False
        self.assertIsNone(self.authenticate("alice", "other"))  # reads the file again
        [(d, result)] = self.waiting
        self.assertTrue(result)  # right for the entry it began with
        d.callback(result)
        self.assertIsNone(self.successResultOf(checking))
        self.assertIsNone(self.authenticate("alice", "right"))


    def test_readOffTheReactor(self) -> None:
        """
        The file is read again off the reactor (as checks are run); the
        requests that come meanwhile wait for it, and are answered by the
        new users.  A file of 16 MiB held the reactor for 2 s.
        """
        reads = self.holdReads()
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.write(alice="changed")
        self.clock.advance(1.5)
        waiting = [
            defer.ensureDeferred(self.auth.authenticate(basic("alice", password), "127.0.0.1"))
            for password in ("right", "changed")
        ]
        self.assertNoResult(waiting[0])
        self.assertNoResult(waiting[1])
        self.assertEqual(len(reads), 1)  # one read at a time
        d, users = reads.pop()
        d.callback(users)
        self.assertEqual([self.successResultOf(w) for w in waiting], [None, "alice"])

    def test_lookOffTheReactor(self) -> None:
        """
        The file is looked at off the reactor too (as it is read), one look
        at a time; requests do not wait for a look, only for the read of a
        change it found.  The look was made on the reactor: a network file
        system that took 3 s to answer it held every service, and
        remembered sign-ins took 8 to 13 s.
        """
        looks: list = []
        original = self.auth._check

        def check(function, *args):
            if function == self.auth._fileVersion:
                d: defer.Deferred = defer.Deferred()
                looks.append((d, function, args))
                return d
            return original(function, *args)

        self.auth._check = check  # type: ignore[method-assign]
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.write(alice="changed")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "right"), "alice")  # not waiting for the look
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.assertEqual(len(looks), 1)  # one look at a time, even a hung one
        reads = self.holdReads()
        d, function, args = looks.pop()
        d.callback(function(*args))
        waiting = defer.ensureDeferred(self.auth.authenticate(basic("alice", "changed"), "127.0.0.1"))
        self.assertNoResult(waiting)  # the change found is being read
        d, users = reads.pop()
        d.callback(users)
        self.assertEqual(self.successResultOf(waiting), "alice")
        self.assertIsNone(self.authenticate("alice", "right"))

    def test_lookThatNeverEndsIsWarnedOf(self) -> None:
        """
        A look at the file that does not end (a hung network file system)
        is warned of once, after L{READ_PATIENCE} seconds: no other look
        starts until it ends, and a file deleted after a breach went on
        letting its users in for an hour with nothing in the log.  A look
        that ends leaves no timer behind.
        """
        from netsuite.proxyauth import READ_PATIENCE

        warnings = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        looks: list = []
        original = self.auth._check

        def check(function, *args):
            if function == self.auth._fileVersion and self.hold:
                d: defer.Deferred = defer.Deferred()
                looks.append((d, function))
                return d
            return original(function, *args)

        self.auth._check = check  # type: ignore[method-assign]
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "right"), "alice")  # looked at at once
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.hold = True
        os.remove(self.path)
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.clock.advance(READ_PATIENCE - 0.1)
        self.assertEqual([e for e in warnings if e["log_level"] == LogLevel.warn], [])
        self.clock.advance(0.1)
        for _ in range(60):
            self.assertEqual(self.authenticate("alice", "right"), "alice")
            self.clock.advance(1)
        self.assertEqual(len(looks), 1)
        self.assertEqual(
            [formatEvent(e) for e in warnings if e["log_level"] == LogLevel.warn],
            [f"proxy users file {self.path} not looked at after {READ_PATIENCE:g} s; the users stay as they"
             " were, and changes to the file count once it can be looked at again"],
        )
        self.hold = False
        d, function = looks.pop()
        d.callback(function())
        self.assertIsNone(self.authenticate("alice", "right"))  # the file is gone
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_readThatNeverEnds(self) -> None:
        """
        A read of the file that does not end (a hung network file system)
        holds the requests waiting for it L{READ_PATIENCE} seconds at most:
        they and later ones go on with the users as they were, with one
        warning; the file counts once read.  They waited for good.
        """
        from netsuite.proxyauth import READ_PATIENCE

        warnings = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        reads = self.holdReads()
        self.write(alice="changed")
        self.clock.advance(1.5)
        waiting = defer.ensureDeferred(self.auth.authenticate(basic("alice", "right"), "127.0.0.1"))
        self.clock.advance(READ_PATIENCE - 0.1)
        self.assertNoResult(waiting)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(waiting), "alice")  # the users as they were
        self.assertEqual(self.authenticate("alice", "right"), "alice")  # no wait now
        self.assertEqual(
            [formatEvent(e) for e in warnings if e["log_level"] == LogLevel.warn],
            [f"proxy users file {self.path} not read after {READ_PATIENCE:g} s; the users stay as they were until it is"],
        )
        self.write(alice="again")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.assertEqual(len(reads), 1)  # one read at a time, even a hung one
        d, users = reads.pop()
        d.callback(users)  # the first change counts; the next request reads the later one
        later = defer.ensureDeferred(self.auth.authenticate(basic("alice", "again"), "127.0.0.1"))
        d, users = reads.pop()
        d.callback(users)
        self.assertEqual(self.successResultOf(later), "alice")
        self.assertIsNone(self.authenticate("alice", "right"))

    def test_otherChangesKeepProvedCredentials(self) -> None:
        """
        The file read again with a user's entry as it was (another user
        added, the file touched) keeps that user's proved credentials, and
        a check under way for them proves them.  Every credential was
        forgotten (a proxy with 40 users signed in answered 32 of them a
        407, its checks all taken), and a check under way failed.
        """
        checks = []
        original = self.auth._check
        self.auth._check = lambda function, *args: (  # type: ignore[method-assign]
            checks.append(1) if function.__name__ == "matches" else None
        ) or original(function, *args)
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        with open(self.path) as f:
            aliceLine = f.read()
        with open(self.path, "a") as f:
            f.write(f"bob:{hashPassword('new', **CHEAP)}\n")
        self.clock.advance(1.5)
        self.assertEqual(self.authenticate("bob", "new"), "bob")  # the file is read again
        self.assertEqual(self.authenticate("alice", "right"), "alice")
        self.assertEqual(len(checks), 2)  # alice's once, bob's once

        self.hold = True
        checking = defer.ensureDeferred(self.auth.authenticate(basic("bob", "new"), "127.0.0.2"))
        os.utime(self.path, ns=(1, 1))  # touched
        self.clock.advance(1.5)
        self.hold = False
        self.assertEqual(self.authenticate("alice", "right"), "alice")  # reads the file again
        [(d, result)] = self.waiting
        d.callback(result)
        self.assertEqual(self.successResultOf(checking), "bob")

        with open(self.path, "w") as f:
            f.write(aliceLine.replace("alice:", "carol:"))  # alice removed
        self.clock.advance(1.5)
        self.assertIsNone(self.authenticate("alice", "right"))


class CommandTests(SynchronousTestCase):
    def run_(self, argv, stdin="pw\n"):
        """
        Run the command with C{stdin} (text, or bytes as they come) as its
        standard input, which is not a terminal.
        """
        out, err = io.StringIO(), io.StringIO()
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8", "surrogateescape")
        self.patch(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        return main(argv), out.getvalue(), err.getvalue()

    def test_addAndChange(self) -> None:
        path = self.mktemp()
        code, out, _ = self.run_([path, "alice"], "first\n")
        self.assertEqual((code, out), (0, f"added alice in {path}\n"))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        code, out, _ = self.run_([path, "bob"], "other\n")
        code, out, _ = self.run_([path, "alice"], "second\n")
        self.assertEqual((code, out), (0, f"changed alice in {path}\n"))
        users = loadUsers(path)
        self.assertEqual(sorted(users), ["alice", "bob"])
        self.assertTrue(users["alice"].matches(b"second"))

    def test_concurrentRunsLoseNothing(self) -> None:
        """
        Runs at the same time (real processes) wait for each other, from the
        read to the rename: every user added is there, and a password
        changed meanwhile is the new one.  Each wrote what it had read: 12
        runs at once left 3 users, all saying they had added theirs, and a
        change racing an add was lost 1 time in 10 (a leaked password kept
        working).
        """
        import subprocess

        import netsuite

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(f"alice:{hashPassword('old', **CHEAP)}\n")
        root = os.path.dirname(os.path.dirname(os.path.abspath(netsuite.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        script = (
            "import sys; from netsuite.proxyauth import main; print('ready', flush=True);"
            " sys.exit(main(sys.argv[1:]))"
        )
        names = ["alice"] + [f"user{number}" for number in range(7)]
        runs = []
        for name in names:
            run = subprocess.Popen(
                [sys.executable, "-c", script, path, name], env=env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            self.addCleanup(run.wait)
            self.addCleanup(run.kill)
            runs.append(run)
        for run in runs:  # every one has started, then all go at once
            self.assertEqual(run.stdout.readline(), "ready\n")
        for run in runs:
            run.stdin.write("new\n")
            run.stdin.flush()
        for name, run in zip(names, runs):
            out, err = run.communicate(timeout=120)
            self.assertEqual((run.returncode, out, err), (0, f"{'changed' if name == 'alice' else 'added'} {name} in {path}\n", ""))
        users = loadUsers(path)
        self.assertEqual(sorted(users), sorted(names))
        self.assertTrue(users["alice"].matches(b"new"))

    def test_lockFileNotFollowed(self) -> None:
        """
        The lock file is made private when missing, and a symbolic link
        planted in its place is not followed: the run stops, with one line,
        and nothing is written.
        """
        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        self.assertEqual(os.stat(path + ".lock").st_mode & 0o777, 0o600)
        os.remove(path + ".lock")
        victim = os.path.abspath(self.mktemp())
        os.symlink(victim, path + ".lock")
        code, out, err = self.run_([path, "bob"])
        self.assertEqual((code, out), (1, ""))
        lock = os.path.realpath(path) + ".lock"
        self.assertTrue(err.startswith(f"netsuite-proxy-user: cannot lock {lock!r}: "), err)
        self.assertEqual(err.count("\n"), 1)
        self.assertFalse(os.path.lexists(victim))
        self.assertEqual(sorted(loadUsers(path)), ["alice"])

    def test_lockFileNotARegularFile(self) -> None:
        """
        A FIFO (or any other thing but a regular file) in the lock file's
        place stops the run with one line, nothing written.
        """
        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        os.remove(path + ".lock")
        os.mkfifo(path + ".lock")
        code, out, err = self.run_([path, "bob"])
        self.assertEqual((code, out), (1, ""))
        self.assertIn("is not a regular file", err)
        self.assertEqual(err.count("\n"), 1)
        self.assertEqual(sorted(loadUsers(path)), ["alice"])

    def test_lockHeldTooLong(self) -> None:
        """
        A lock held by another run past L{LOCK_PATIENCE} stops this one with
        one line, nothing changed (never a wait without end).
        """
        import fcntl

        from netsuite import proxyauth

        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        with open(path + ".lock") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            self.patch(proxyauth, "LOCK_PATIENCE", 0)
            code, out, err = self.run_([path, "bob"])
        self.assertEqual((code, out), (1, ""))
        lock = os.path.realpath(path) + ".lock"
        self.assertEqual(err, f"netsuite-proxy-user: {lock!r} stayed locked by another process for 0 s; nothing changed\n")
        self.assertEqual(sorted(loadUsers(path)), ["alice"])
        self.assertEqual(self.run_([path, "bob"])[0], 0)

    def test_modeAndOwnerKept(self) -> None:
        """
        A changed file keeps its permissions (and its owner and group, as
        Apache's htpasswd does): a C{640 root:daemon} file became C{600
        root:root}, which the proxy reading it through its group could no
        longer read, so a leaked password that was changed stayed valid.
        """
        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        os.chmod(path, 0o640)
        self.assertEqual(self.run_([path, "bob"])[0], 0)
        self.assertEqual(os.stat(path).st_mode & 0o7777, 0o640)

    def test_ownerAndGroupKept(self) -> None:
        """
        ... and its owner and group, whoever they are (only root can give a
        file away, so only root can check it).
        """
        if os.geteuid() != 0:
            raise SkipTest("only root can give a file to another user")
        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        os.chmod(path, 0o640)
        for uid, gid in ((0, 1), (1, 1), (65534, 0)):
            os.chown(path, uid, gid)
            code, out, err = self.run_([path, "alice"])
            self.assertEqual((code, out, err), (0, f"changed alice in {path}\n", ""))
            status = os.stat(path)
            self.assertEqual((status.st_uid, status.st_gid, status.st_mode & 0o7777), (uid, gid, 0o640))

    def test_ownerThatCannotBeKept(self) -> None:
        """
        Where the owner cannot be kept (only root can give a file away), the
        file is still written, with a one-line warning, and without the
        group's permissions when the group could not be kept either.
        """
        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        os.chmod(path, 0o640)
        mine = os.stat(path)

        def fchown(fd, uid, gid):
            raise PermissionError(1, "Operation not permitted")

        self.patch(os, "fchown", fchown)
        old = os.stat_result((0o100640, mine.st_ino, mine.st_dev, 1, mine.st_uid + 1, mine.st_gid + 1, 0, 0, 0, 0))
        original = os.stat
        self.patch(os, "stat", lambda p, *a, **k: old if p == os.path.realpath(path) else original(p, *a, **k))
        code, out, err = self.run_([path, "bob"])
        self.assertEqual((code, out), (0, f"added bob in {path}\n"))
        self.assertEqual(err.count("\n"), 1)
        self.assertTrue(err.startswith(f"netsuite-proxy-user: warning: {path!r} could not keep its owner "), err)
        self.assertTrue(err.endswith(", mode 0600\n"), err)
        self.patch(os, "stat", original)
        self.assertEqual(os.stat(path).st_mode & 0o7777, 0o600)
        self.assertEqual(sorted(loadUsers(path)), ["alice", "bob"])

    def test_symbolicLinkKept(self) -> None:
        """
        A users file that is a symbolic link stays one, and the file it
        leads to gets the new user (it was replaced by a regular file, and
        the real one never got the user).
        """
        os.mkdir("real")
        target = os.path.abspath(os.path.join("real", "users"))
        self.assertEqual(self.run_([target, "alice"])[0], 0)
        link = self.mktemp()
        os.symlink(target, link)
        code, out, _ = self.run_([link, "bob"])
        self.assertEqual((code, out), (0, f"added bob in {link}\n"))
        self.assertTrue(os.path.islink(link))
        self.assertEqual(sorted(loadUsers(target)), ["alice", "bob"])
        self.assertTrue(os.path.exists(target + ".lock"))
        self.assertFalse(os.path.exists(link + ".lock"))

    def test_staleOrPlantedTemporaryIsReplaced(self) -> None:
        """
        The password file is written through a fresh temporary file: a
        stale one readable by all does not make the new file readable by
        all, and a symbolic link planted there is not written through.
        """
        path = self.mktemp()
        victim = self.mktemp()
        with open(victim, "w") as f:
            f.write("precious\n")
        os.symlink(os.path.abspath(victim), path + ".tmp")
        code, _, _ = self.run_([path, "alice"], "first\n")
        self.assertEqual(code, 0)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious\n")
        with open(path + ".tmp", "w") as f:
            f.write("stale\n")
        os.chmod(path + ".tmp", 0o644)
        code, _, _ = self.run_([path, "bob"], "other\n")
        self.assertEqual(code, 0)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertFalse(os.path.exists(path + ".tmp"))
        self.assertEqual(sorted(loadUsers(path)), ["alice", "bob"])

    def test_otherLinesKeptAsTheyAre(self) -> None:
        """
        Adding a user keeps every other line as it was: one holding a
        Unicode line separator is not split in two.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("# team\u2028ops\ncarol:x\n")
        code, _, _ = self.run_([path, "alice"], "first\n")
        self.assertEqual(code, 0)
        with open(path, encoding="utf-8", newline="") as f:
            self.assertEqual(f.read().split("\n")[:2], ["# team\u2028ops", "carol:x"])

    def test_byteOrderMarkNotKeptInAName(self) -> None:
        """
        A file starting with a byte order mark gets its first user's password
        changed (not a second entry beside one named C{"\\ufeffalice"}), and
        the mark is not written back glued to a name; the other lines stay
        as they were.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"\ufeffalice:{hashPassword('first', **CHEAP)}\n# ops\nbob:x\n")
        code, out, _ = self.run_([path, "alice"], "second\n")
        self.assertEqual((code, out), (0, f"changed alice in {path}\n"))
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        self.assertEqual(lines[:2], ["# ops", "bob:x"])
        self.assertEqual([line for line in lines if "alice" in line], [lines[2]])
        self.assertTrue(lines[2].startswith("alice:"))

    def test_indentedLineChangedNotDoubled(self) -> None:
        """
        A user's line with blanks around it (which the proxy reads as that
        user) is the one changed: a second line was added, and the proxy
        then refused the file ("listed twice"), keeping the old password.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"  alice:{hashPassword('first', **CHEAP)}\t\n")
        code, out, _ = self.run_([path, "alice"], "second\n")
        self.assertEqual((code, out), (0, f"changed alice in {path}\n"))
        self.assertTrue(loadUsers(path)["alice"].matches(b"second"))

    def test_unreadableFileIsOneLine(self) -> None:
        fifo = self.mktemp()
        os.mkfifo(fifo)
        code, out, err = self.run_([fifo, "alice"])
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"netsuite-proxy-user: cannot read {fifo!r}: not a regular file\n")
        notText = self.mktemp()
        with open(notText, "wb") as f:
            f.write(b"bob:\xff\n")
        code, out, err = self.run_([notText, "alice"])
        self.assertEqual(err, f"netsuite-proxy-user: {notText!r} is not UTF-8 text; nothing changed\n")
        with open(notText, "rb") as f:
            self.assertEqual(f.read(), b"bob:\xff\n")

    def test_noLockBesideAnUnusableTarget(self) -> None:
        """
        A path that is empty, or names (through a link or not) a directory,
        a FIFO or a device, is refused in one line before a lock file is
        made beside what it names: a link to /dev/null made
        C{/dev/null.lock}, an empty path a lock in the parent directory,
        and a link to a directory C{DIR.lock}.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "here"))
        directory = os.path.join(base, "dir")
        os.mkdir(directory)
        fifo = os.path.join(base, "fifo")
        os.mkfifo(fifo)
        for target in (directory, fifo, os.devnull):
            link = os.path.join(base, "link")
            os.symlink(target, link)
            for path in (target, link):
                code, out, err = self.run_([path, "alice"])
                self.assertEqual((code, out, err), (1, "", f"netsuite-proxy-user: cannot read {path!r}: not a regular file\n"))
            os.remove(link)
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(os.path.join(base, "here"))
        code, out, err = self.run_(["", "alice"])
        self.assertEqual((code, out, err), (1, "", "netsuite-proxy-user: the users file's name is empty\n"))
        os.chdir(cwd)
        self.assertEqual(sorted(os.listdir(base)), ["dir", "fifo", "here"])
        self.assertEqual(os.listdir(directory), [])
        self.assertFalse(os.path.exists(os.devnull + ".lock"))

    def test_refusals(self) -> None:
        path = self.mktemp()
        self.assertEqual(self.run_([path])[0], 2)
        code, _, err = self.run_([path, "a:b"])
        self.assertEqual(code, 1)
        self.assertIn("cannot be empty, start with '#' or hold", err)
        code, _, err = self.run_([path, "alice"], "\n")
        self.assertEqual(code, 1)
        self.assertIn("empty password", err)
        self.assertFalse(os.path.exists(path))

    def test_nameStartingWithHashRefused(self) -> None:
        """
        A name starting with C{#} is refused in one sentence, and nothing is
        written: its line would be a comment, and the tool wrote it and
        said "added" for a user who could never sign in.
        """
        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        with open(path, "rb") as f:
            before = f.read()
        for name in ("#bob", "#"):
            code, out, err = self.run_([path, name])
            self.assertEqual((code, out), (1, ""), name)
            self.assertIn("cannot be empty, start with '#'", err)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(self.run_([path, "b#ob"])[0], 0)  # elsewhere in a name it is fine
        self.assertEqual(sorted(loadUsers(path)), ["alice", "b#ob"])

    def test_passwordsThatCannotBeReadAreOneLine(self) -> None:
        """
        A password on standard input that is not UTF-8 (in a UTF-8 locale),
        none at all, Ctrl-D, Ctrl-C or text the terminal cannot decode at
        the prompt, and Ctrl-C while waiting for the lock: one line and
        exit status 1 (130 for Ctrl-C), never a traceback, and nothing is
        written.  Each was a traceback.
        """
        import getpass

        from netsuite import proxyauth

        path = self.mktemp()
        for data in (b"p\xe9\xff\n", b"\xff"):
            code, out, err = self.run_([path, "alice"], data)
            self.assertEqual((code, out, err), (1, "", "netsuite-proxy-user: the password is not UTF-8 text; nothing changed\n"))
        self.assertEqual(self.run_([path, "alice"], b"")[0:3:2], (1, "netsuite-proxy-user: an empty password is not allowed\n"))

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        def asking(error):
            def ask(prompt: str) -> str:
                raise error

            return ask

        for error, status, said in (
            (KeyboardInterrupt(), 130, "interrupted; nothing changed"),
            (EOFError(), 1, "no password given; nothing changed"),
            (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 1, "the password is not UTF-8 text; nothing changed"),
        ):
            self.patch(getpass, "getpass", asking(error))
            err = io.StringIO()
            self.patch(sys, "stdin", Terminal())
            self.patch(sys, "stderr", err)
            self.assertEqual((main([path, "alice"]), err.getvalue()), (status, f"netsuite-proxy-user: {said}\n"))

        def waitForLock(path: str, patience: float) -> int:
            raise KeyboardInterrupt()

        self.patch(proxyauth, "waitForLock", waitForLock)
        code, out, err = self.run_([path, "alice"])
        self.assertEqual((code, out, err), (130, "", "netsuite-proxy-user: interrupted; nothing changed\n"))
        self.assertFalse(os.path.exists(path))

    def test_endlessPasswordRefusedInOneLine(self) -> None:
        """
        Standard input without a line end in the first 65,537 bytes (as
        C{< /dev/zero}) is refused in one line, nothing written: it was
        read until memory ran out, then a C{MemoryError} traceback.  A
        password of 65,536 bytes (L{MAX_PASSWORD}), with its line end or
        at the end of the input, is taken.
        """
        MAX_PASSWORD = 65536
        path = self.mktemp()
        for data in (b"\0" * (1 << 20), b"x" * (MAX_PASSWORD + 1) + b"\n"):
            code, out, err = self.run_([path, "alice"], data)
            self.assertEqual((code, out), (1, ""))
            self.assertEqual(
                err,
                f"netsuite-proxy-user: no line end within the first {MAX_PASSWORD + 1} bytes of standard input"
                f" (a password is at most {MAX_PASSWORD} bytes); nothing changed\n",
            )
        self.assertFalse(os.path.exists(path))
        self.patch(sys.modules["netsuite.proxyauth"], "hashPassword", lambda password: hashPassword(password, **CHEAP))
        for data in (b"y" * MAX_PASSWORD + b"\n", b"z" * MAX_PASSWORD):
            self.assertEqual(self.run_([path, "alice"], data)[0], 0)
            self.assertTrue(loadUsers(path)["alice"].matches(data.rstrip(b"\n")))

    def test_fileNotMadeTooLargeToRead(self) -> None:
        """
        A change that would make the file larger than L{MAX_USERS_FILE}
        (which neither the proxy nor the command reads) is refused in one
        line, and the file is left as it was; it was written, and then
        nothing could read it.
        """
        from netsuite import proxyauth

        self.patch(proxyauth, "MAX_USERS_FILE", 1024)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# " + "x" * 980 + "\n")
        code, out, err = self.run_([path, "alice"])
        self.assertEqual((code, out), (1, ""))
        self.assertRegex(err, r"^netsuite-proxy-user: '.*' would grow to \d+ bytes, more than the 0 MiB a users file may hold; nothing changed\n$")
        with open(path) as f:
            self.assertEqual(f.read(), "# " + "x" * 980 + "\n")
        self.patch(proxyauth, "MAX_USERS_FILE", 2048)
        self.assertEqual(self.run_([path, "alice"])[0], 0)
        self.assertEqual(list(loadUsers(path)), ["alice"])

    def test_fileMadeExactlyAsLargeAsReadIsWritten(self) -> None:
        """
        A change that makes the file exactly L{MAX_USERS_FILE} bytes, which
        the proxy and the command still read, is written.
        """
        from netsuite import proxyauth

        self.patch(proxyauth, "MAX_USERS_FILE", 1024)
        line = "alice:" + hashPassword("pw")  # the length of any such line
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# " + "x" * (1024 - len(line) - 4) + "\n")
        code, out, err = self.run_([path, "alice"])
        self.assertEqual((code, out, err), (0, f"added alice in {path}\n", ""))
        self.assertEqual(os.path.getsize(path), 1024)
        self.assertEqual(list(loadUsers(path)), ["alice"])

    def test_interruptedWhileWritingIs130(self) -> None:
        """
        Ctrl-C once the lock is held (while the file is read or written)
        ends the command with one line and status 130, as at the prompt,
        never a traceback: the file is as it was (only the rename changes
        it), and the lock is let go.
        """
        from netsuite import proxyauth

        path = self.mktemp()
        self.assertEqual(self.run_([path, "alice"], "first\n")[0], 0)
        with open(path, "rb") as f:
            before = f.read()

        def writeAtomically(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt()

        patched = self.patch(proxyauth, "writeAtomically", writeAtomically)
        code, out, err = self.run_([path, "bob"])
        self.assertEqual((code, out, err), (130, "", "netsuite-proxy-user: interrupted\n"))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        patched.restore()
        self.assertEqual(self.run_([path, "bob"])[0], 0)
        self.assertEqual(sorted(loadUsers(path)), ["alice", "bob"])

    def test_targetThatCannotBeLookedAtIsOneLine(self) -> None:
        """
        A FILE that cannot be looked at (a loop of symbolic links) is
        refused in one line naming the error, before the password is asked
        for and before a lock is made.
        """
        base = os.path.abspath(self.mktemp())
        os.mkdir(base)
        loop = os.path.join(base, "loop")
        os.symlink(loop, loop)
        code, out, err = self.run_([loop, "alice"])
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"netsuite-proxy-user: cannot read {loop!r}: {os.strerror(errno.ELOOP)}\n")
        self.assertEqual(os.listdir(base), ["loop"])

    def test_textThatIsNotUTF8(self) -> None:
        """
        A name or password with bytes that are not UTF-8 (which Python
        passes on as surrogates), or a name with control characters, is
        refused in one sentence, not with a traceback, and nothing is
        written.
        """
        path = self.mktemp()
        undecodable = b"al\xe9".decode("utf-8", "surrogateescape")
        for name in (undecodable, "al\x1cice", "al\x00ice", "alice\x7f"):
            code, out, err = self.run_([path, name])
            self.assertEqual((code, out), (1, ""), repr(name))
            self.assertEqual(err, "netsuite-proxy-user: a name cannot be empty, start with '#' or hold ':', spaces, control characters or bytes that are not UTF-8\n")
        code, out, err = self.run_([path, "alice"], b"p\xe9\n".decode("utf-8", "surrogateescape"))
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "netsuite-proxy-user: the password is not UTF-8 text; nothing changed\n")
        self.assertFalse(os.path.exists(path))
        code, _, _ = self.run_([path, "zoë"], "pässwörd\n")
        self.assertEqual(code, 0)
        self.assertTrue(loadUsers(path)["zoë"].matches("pässwörd".encode("utf-8")))
