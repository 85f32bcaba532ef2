"""
Tests for L{netsuite.files.loadOrCreateSecret}, where its callers' tests
(the proxy's decoy key in test_proxyauth, the API token in
test_download_service) do not reach.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from netsuite.download.service import loadOrCreateToken
from netsuite.files import loadOrCreateSecret
from netsuite.proxyauth import loadOrCreateDecoyKey


def _create() -> Tuple[str, bytes]:
    return "a-secret-of-some-length", b"a-secret-of-some-length\n"


def _parse(data: bytes) -> Optional[str]:
    text = data.decode("ascii", "replace").strip()
    return text if text.startswith("a-secret") else None


def _load(path: Path, makeDirectory: bool = False) -> Tuple[str, bool]:
    return loadOrCreateSecret(
        path,
        parse=_parse,
        create=_create,
        what="secret",
        form="starting with a-secret",
        secret="the test's secret",
        log=Logger(),
        makeDirectory=makeDirectory,
    )


class LoadOrCreateSecretTests(SynchronousTestCase):
    """
    L{loadOrCreateSecret} makes a missing file, private, and reads it again;
    it refuses a file without a secret in one sentence naming it.
    """

    def test_directoryMadeOnlyWhenAsked(self) -> None:
        """
        With C{makeDirectory} (the API token's), a missing directory is made
        and the new secret written in it, said to be created, then read
        back as not created; without (the decoy key's), a missing directory
        is an error and nothing is made.
        """
        path = Path(self.mktemp()) / "deeper" / "secret"
        self.assertRaises(FileNotFoundError, _load, path)
        self.assertFalse(path.parent.parent.exists())
        self.assertEqual(_load(path, makeDirectory=True), ("a-secret-of-some-length", True))
        self.assertEqual(path.read_bytes(), b"a-secret-of-some-length\n")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(_load(path, makeDirectory=True), ("a-secret-of-some-length", False))
        self.assertEqual(_load(path), ("a-secret-of-some-length", False))

    def test_fileNotReadRefusedInOneSentence(self) -> None:
        """
        A file too long to be read, or that is not a regular file (a FIFO,
        which is not waited on), is refused with what is wrong and how to
        mend it, and left as it is.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"a-secret" + b"x" * 5000)
        with self.assertRaises(ValueError) as e:
            _load(path)
        self.assertEqual(str(e.exception), f"{path}: longer than 4096 bytes; delete it and a new secret is made")
        self.assertEqual(len(path.read_bytes()), 5008)
        path.unlink()
        os.mkfifo(path)
        with self.assertRaises(ValueError) as e:
            _load(path, makeDirectory=True)
        self.assertEqual(str(e.exception), f"{path}: not a regular file; delete it and a new secret is made")
        self.assertFalse(path.is_file())

    def test_callersSayWhatTheyKeep(self) -> None:
        """
        The API token's and the decoy key's errors name each its own
        secret and what a usable one looks like.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"short\n")
        with self.assertRaises(ValueError) as e:
            loadOrCreateToken(path)
        self.assertEqual(
            str(e.exception),
            f"{path} holds no usable API token (at least 16 printable characters without spaces); "
            "delete it and a new one is made",
        )
        with self.assertRaises(ValueError) as e:
            loadOrCreateDecoyKey(str(path))
        self.assertEqual(
            str(e.exception), f"{path} holds no usable key (64 hexadecimal digits); delete it and a new one is made"
        )
        path.write_bytes(b"x" * 5000)
        with self.assertRaises(ValueError) as e:
            loadOrCreateToken(path)
        self.assertEqual(str(e.exception), f"{path}: longer than 4096 bytes; delete it and a new API token is made")
        with self.assertRaises(ValueError) as e:
            loadOrCreateDecoyKey(str(path))
        self.assertEqual(str(e.exception), f"{path}: longer than 4096 bytes; delete it and a new key is made")

    def test_fileOfAnotherOwnerIsWarnedOf(self) -> None:
        """
        A private file that another user owns (which that user may read and
        change, and which this process reads as root) is used, with a
        warning saying so and how to mend it, for the decoy key as for the
        API token: only a mode open to others was warned of.  One of this
        process's user is used without a word.  An owner's uid above or
        below the process's alike.
        """
        path = Path(self.mktemp())
        key = loadOrCreateDecoyKey(str(path))
        if os.geteuid() == 0:
            os.chown(path, 1, -1)  # a uid below its owner's to run as
        owner = os.stat(path).st_uid
        for uid in (owner, owner + 1, owner - 1):
            self.patch(os, "geteuid", lambda: uid)
            events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
            self.assertEqual(loadOrCreateDecoyKey(str(path)), key)
            warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
            if uid == owner:
                self.assertEqual(warnings, [])
            else:
                self.assertEqual(
                    warnings,
                    [f"{path} is owned by another user (uid {owner}), who may read or change the proxy's decoy key:"
                     f" chown it to the user netsuite runs as (uid {uid})"],
                )
        tokenFile = Path(self.mktemp())
        loadOrCreateToken(tokenFile)
        owner = os.stat(tokenFile).st_uid
        self.patch(os, "geteuid", lambda: owner + 1)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        loadOrCreateToken(tokenFile)
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn],
            [f"{tokenFile} is owned by another user (uid {owner}), who may read or change the API token:"
             f" chown it to the user netsuite runs as (uid {owner + 1})"],
        )
