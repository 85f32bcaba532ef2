"""
The download service inside C{twistd netsuite}: a queue of downloads into
one directory, driven through C{/api/downloads} with a bearer token, that
survives a restart.

    POST   /api/downloads        {"url": ..., "name": ..., "checksum": ...}  -> 201 the job
    GET    /api/downloads        {"downloads": [job, ...], "next": ...}, a page
                                 at a time (?limit=, ?after=ID, ?state=)
    GET    /api/downloads/ID     the job
    DELETE /api/downloads/ID     cancel it (its partial file goes); a
                                 finished job is only forgotten, its file stays
                                 (answered once the job list says so on disk)

The job list is kept in C{.netsuite-downloads.json} in the download
directory, written in a thread so that a long list never holds up the
reactor, one write at a time: changes made during a write go together
into the next.  A job is answered (C{201}), and starts, only once the
list holding it is on the disk; unfinished jobs start again (resuming
from their state files) when the service starts.
A job list that cannot be read, or holds entries that cannot be used, is
kept aside as C{.netsuite-downloads.json.bad-TIMESTAMP}.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import socket
import stat
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import quote, urlencode, urlsplit

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request

from netsuite.files import OtherUsersFile, loadOrCreateSecret, readSmallFile, writeAtomically
from netsuite.limits import BucketTable, TokenBucket, hostKey
from netsuite.web.api import (
    Answer,
    APIError,
    EncodedJSON,
    JSONResource,
    _dumps,
    _isJSONType,
    _parseContentType,
    _parseJSON,
    _parseQuery,
    _readBody,
    checkBodyLength,
    renderJSON,
)
from netsuite.text import cut, shortened

from . import names
from .engine import DownloadRequest, Downloader, DownloadSettings, discardPart, isPartName, redact, splitURL
from .errors import DownloadError
from .state import PART_SUFFIX
from .values import MAX_URL, asFetched, fetchHostProblem, parseChecksum, urlTooLong

log = Logger()

#: The file in the download directory that lists the jobs.
JOBS_FILE = ".netsuite-downloads.json"

#: The file in netsuite's data directory that keeps the generated API token.
TOKEN_FILE = "api-token"

#: Largest request body accepted by POST, in bytes.
MAX_BODY = 64 * 1024

#: Unfinished jobs the queue holds at most (503 beyond).
MAX_PENDING = 1000

#: Finished jobs remembered (the oldest are forgotten first).
MAX_FINISHED = 1000

#: The longest error message a job keeps, in characters.
MAX_ERROR = 1000

#: The most bytes one job takes in the job list: its URL (L{MAX_URL} bytes)
#: and error (L{MAX_ERROR} characters) as JSON escapes them at worst (3
#: bytes for each byte of a URL holding bytes that are not UTF-8, 12 for a
#: character past U+FFFF), its name, path and C{.part} name likewise, and
#: 1 KiB for the rest.
MAX_JOB_BYTES = 3 * MAX_URL + 12 * MAX_ERROR + 3 * 3 * (names.MAX_NAME_BYTES + 8) + 1024

#: The longest job list read at start, and written: every job it can hold,
#: each as long as it can be (should the list still be longer, the oldest
#: finished jobs are forgotten).  It was 127 MiB, a request body a job.
MAX_JOBS_FILE = (MAX_PENDING + MAX_FINISHED) * MAX_JOB_BYTES

#: The most values a job list read at start may hold, counted as its
#: strings and the commas, brackets and braces outside them: a job has
#: about 30, and a list edited by hand may have more.  Python takes up to
#: 80 bytes for a value 3 bytes of JSON make (C{{},}): 126 MiB of them took
#: 3.3 GB and 40 s.
MAX_JOBS_VALUES = 128 * (MAX_PENDING + MAX_FINISHED)

#: Jobs of a job list skipped at start each with their own warning; the
#: rest are counted in one.
MAX_SKIP_WARNINGS = 20

#: The longest job id whose number counts for the next id, and the digits
#: of the highest C{"next"} a job list may give (ids stay below 2**53,
#: which JavaScript clients read exactly, and an unreadable list's ids are
#: found again: see L{_nextIdIn}).
_MAX_ID_DIGITS = 15

#: How long the job list waits after a write before the next, as a share
#: of the time that write took: a long list is not written over and over
#: (changes meanwhile are gathered), a short one at once.
SAVE_PAUSE = 1.0

#: The longest wait before trying again to save a job list that could not
#: be saved.
SAVE_RETRY_MOST = 60.0

#: How long a C{POST} waits for the job list holding its job to be on the
#: disk before it is answered C{202} (accepted, still being written)
#: rather than C{201}: a stuck disk does not hold the client forever.
SAVE_TIMEOUT = 30.0

#: Jobs C{GET /api/downloads} shows on a page unless C{?limit=} asks.
PAGE_SIZE = 100

#: The most C{?limit=} may ask for.
MAX_PAGE_SIZE = 1000

#: The most bytes of jobs a page of C{GET /api/downloads} holds (in JSON),
#: however many C{?limit=} asks for: it is built whole in memory, and a
#: thousand of the longest jobs came to 34 MB.  A page holds one job at
#: least.
MAX_PAGE_BYTES = 1024 * 1024

#: Wrong API tokens a client address (as L{_tokenKey} counts it: an IPv6
#: client by its /64, all of 127/8 as one) may send at once, and then a
#: second: past them its requests with a token get C{429} without being
#: checked, but for the right token on a connection that sent it before.
#: Any number were checked: 3,000 on one connection took 2.8 s.
TOKEN_FAILURE_BURST = 10
TOKEN_FAILURES_PER_SECOND = 1.0

#: Wrong API tokens all client addresses together may send at once, and
#: then a second, but those of addresses that sent the right token before
#: (L{TOKEN_PROVED_ADDRESSES}): past them, a token from any other address
#: gets C{429} without being checked.  Spreading guesses over addresses
#: got more checked: 83,100 in 59.5 s from 4,200 addresses of 127/8.
TOKEN_FAILURE_OVERALL_BURST = 20
TOKEN_FAILURES_OVERALL_PER_SECOND = 2.0

#: Client addresses whose wrong tokens are counted at most (one is
#: forgotten only once it has refilled: while all are being spent, a new
#: address gets C{429}).
TOKEN_FAILURE_ADDRESSES = 4096

#: Client addresses remembered as having sent the right token (the least
#: recently proved forgotten first): their tokens are not held up by
#: L{TOKEN_FAILURE_OVERALL_BURST}, so guesses from other addresses do not
#: lock their new connections out.
TOKEN_PROVED_ADDRESSES = 64

_FINISHED = ("done", "failed", "cancelled")

_STATES = ("queued", "running", "retrying", *_FINISHED)

#: Fields of a job that only the job list keeps (the API does not show them).
_PRIVATE = ("part",)


def _shownURL(url: str, most: int = 200) -> str:
    """
    C{url} as an error message shows it: its password hidden, and cut
    after C{most} characters (a URL may be 8 KB).
    """
    return cut(redact(url), most)


class DownloadService(Service):
    """
    Downloads queued through the API into C{directory}.

    @param directory: where files go (created at start).
    @param token: the bearer token the API wants; one is generated (and
        logged at start) when L{None}.
    @param tokenFile: the file C{token} was read from (see
        L{loadOrCreateToken}): the start-up log names it instead of showing
        the token.
    @param settings: the engine's settings.
    @param rules: destination rules every download must pass (see
        L{netsuite.proxyrules.ProxyRules}); by default the proxy's defaults
        (loopback and link-local refused, private allowed).
    """

    name = "downloads"

    def __init__(
        self,
        directory: str | Path,
        *,
        reactor: Any = None,
        token: Optional[str] = None,
        tokenFile: Optional[str | Path] = None,
        settings: Optional[DownloadSettings] = None,
        rules: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.directory = Path(directory)
        self.generatedToken = token is None
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.tokenFile = Path(tokenFile) if tokenFile is not None else None
        self.settings = settings or DownloadSettings()
        if rules is None:
            from netsuite.proxyrules import ProxyRules

            rules = ProxyRules()
        self.rules = rules
        self.downloader: Optional[Downloader] = None
        #: Wrong tokens, by client address (L{_tokenKey}; a bucket is kept
        #: until it has refilled, so that pushing an address out gives it
        #: no fresh burst), and of all addresses together; the connections
        #: that sent the right one (it passes there while their address is
        #: over its limit: a guesser behind the same NAT does not lock them
        #: out), and the addresses that did (not held up by the overall
        #: limit: guessers elsewhere do not lock their new connections out).
        self._tokenFailures: BucketTable[str] = BucketTable(
            TOKEN_FAILURES_PER_SECOND, TOKEN_FAILURE_BURST, reactor, TOKEN_FAILURE_ADDRESSES, keepUntilFull=True
        )
        self._allTokenFailures = TokenBucket(TOKEN_FAILURES_OVERALL_PER_SECOND, TOKEN_FAILURE_OVERALL_BURST, reactor)
        self._provedConnections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._provedAddresses: OrderedDict[str, None] = OrderedDict()
        self._jobs: dict[str, dict] = {}
        # Jobs added but not yet on the disk (not started, and not shown
        # unless accepted), and who waits for them to be.
        self._new: dict[str, tuple[dict, list[Deferred]]] = {}
        # Of those, the ones answered before their write ended (shown), and
        # the ones then cancelled and deleted (forgotten once written).
        self._accepted: set[str] = set()
        self._forgotten: set[str] = set()
        self._engineJobs: dict[str, Any] = {}
        self._byEngineId: dict[str, dict] = {}
        self._next = 1
        self._stopping = False
        self._saveCall: Any = None
        self._nextSave = -math.inf
        self._writing = False
        self._dirty = False
        #: Saves of the job list that failed in a row.
        self._saveFailures = 0
        self._again: list[Deferred] = []
        #: Who waits for the job list as it is now to be on the disk (see
        #: L{whenSaved}), and who waits for the write under way: the next
        #: write to start takes the first, and one that fails hands them on
        #: to the write after it.
        self._savedWaiters: list[Deferred] = []
        self._savingWaiters: list[Deferred] = []

    # -- lifecycle --------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self.downloader = Downloader(self.reactor, self.settings, observer=self._observe, rules=self.rules)
        self._byEngineId = {}
        self._load()
        if self.tokenFile is not None:
            log.info("downloads API token: in {path} (set --api-token to choose one)", path=str(self.tokenFile))
        elif self.generatedToken:
            log.info("downloads API token (generated; set --api-token to choose one): {token}", token=self.token)
        log.info("downloads go to {directory}", directory=str(self.directory.resolve()))
        resumed = []
        for job in self._jobs.values():
            if job["state"] in _FINISHED:
                continue
            refused = self._literalDestinationProblem(job["url"])
            if refused is None:
                resumed.append(job)
                continue
            # Queued under other rules: it fails as a name refused when
            # resolved does, before any connection.
            log.warn("job {id}: {error}", id=job["id"], error=refused)
            job.update(state="failed", error=_cutError(refused), finished=time.time())
            self._changed()
        for job in resumed:
            self._submit(job)
        if resumed:
            log.info("resuming {n} unfinished download(s)", n=len(resumed))

    def stopService(self) -> Deferred:
        Service.stopService(self)
        if self.downloader is None:
            return succeed(None)
        self._stopping = True
        if self._saveCall is not None and self._saveCall.active():
            self._saveCall.cancel()  # the save after the stop writes everything
        downloader, self.downloader = self.downloader, None
        d = downloader.stop()
        d.addCallback(lambda _: self._save())  # after any write under way
        d.addCallback(self._notSaved)
        return d

    def _notSaved(self, _: object = None) -> None:
        """
        The service stopped and its last write of the job list failed: no
        other comes, so those waiting for one (L{whenSaved}) get a 503
        (they waited for a write that never came, and got a 202 30 s
        later, the job back at the next start).
        """
        waiters, self._savedWaiters = self._savedWaiters, []
        for waiter in waiters:
            waiter.errback(APIError(503, "the download service stopped before the job list could be written"))

    # -- jobs -----------------------------------------------------------------

    def add(self, url: Any, name: Any = None, checksum: Any = None) -> dict:
        """
        Queue a download; returns the job.  It is written to the job list
        first, and only then shown (L{get}, L{page}) and started: L{saved}
        says when (L{accept} shows it before).

        @raise APIError: 400 for a bad URL, name or checksum; 503 when the
            queue is full, the service is not running, or no job id is
            left (a hand-edited job list's C{"next"} near 10**15).
        """
        if self.downloader is None:
            raise APIError(503, "the download service is not running")
        if not isinstance(url, str) or not url:
            raise APIError(400, "'url' must be a non-empty string")
        if urlTooLong(url):
            raise APIError(400, f"'url' is longer than {MAX_URL} bytes")
        url = asFetched(url)  # kept, and shown, so
        try:
            clean, _ = splitURL(url)
        except DownloadError as e:
            message = str(e)  # (it quotes the URL whole)
            raise APIError(400, cut(message, 300)) from None
        problem = fetchHostProblem(clean)
        if problem is not None:
            raise APIError(400, f"{_shownURL(url)}: {problem}")
        refused = self._literalDestinationProblem(url)
        if refused is not None:
            raise APIError(403, refused)
        if name is not None:
            if not isinstance(name, str) or not names.sanitiseName(name, default=""):
                raise APIError(400, "'name' must be a usable file name")
            # As the engine will save it (x.part as x.part_).
            name = names.avoidReserved(names.sanitiseName(name))
        if checksum is not None:
            if not isinstance(checksum, str):
                raise APIError(400, "'checksum' must be a string such as sha256=HEX")
            try:
                checksum = "%s=%s" % parseChecksum(checksum)
            except ValueError as e:
                raise APIError(400, str(e)) from None
        pending = len(self._new) + sum(1 for job in self._jobs.values() if job["state"] not in _FINISHED)
        if pending >= MAX_PENDING:
            raise APIError(503, f"{MAX_PENDING} downloads are already waiting; try again later")
        if self._next >= 10**_MAX_ID_DIGITS:
            # (A longer id would not be found again in a job list that
            # cannot be read, and would be given twice.)
            raise APIError(503, f"no job id is left: ids have at most {_MAX_ID_DIGITS} digits")
        job = {
            "id": str(self._next),
            "url": url,
            "name": name,
            "checksum": checksum,
            "state": "queued",
            "error": None,
            "path": None,
            "size": None,
            "done": 0,
            "created": time.time(),
            "finished": None,
        }
        self._next += 1
        self._new[job["id"]] = (job, [])
        self._changed()
        return self.describe(job)

    def saved(self, jobId: str) -> Deferred:
        """
        Wait until job C{jobId}, just added, is on the disk.

        @return: fires with the job (as L{get} shows it) once the job list
            holding it is written, at once when it already is; or fails
            with an L{APIError} 503 when that write fails: the job is
            dropped then, never started.
        """
        new = self._new.get(jobId)
        if new is None:
            return succeed(self.get(jobId))
        waiters = new[1]
        d: Deferred = Deferred(lambda d: waiters.remove(d) if d in waiters else None)
        waiters.append(d)
        return d

    def whenSaved(self) -> Deferred:
        """
        Wait until the job list, as it is now, is on the disk: until the
        end of the next write to start from now on that works (a write
        that fails is tried again; see L{_changed}).  A C{DELETE} is
        answered so, as a C{POST} is once its job is written (L{saved}).

        @return: fires with L{None}; cancelling it stops the wait.
        """
        d: Deferred = Deferred(self._stopWaiting)
        self._savedWaiters.append(d)
        self._changed()
        return d

    def _stopWaiting(self, waiter: Deferred) -> None:
        # (A cancelled L{whenSaved}.)
        for waiters in (self._savedWaiters, self._savingWaiters):
            if waiter in waiters:
                waiters.remove(waiter)

    def accept(self, jobId: str) -> Optional[dict]:
        """
        Show job C{jobId}, just added, before the write of the job list
        holding it has ended (L{get}, L{page} and L{remove} find it): its
        C{POST} could wait no longer.  It starts once the list is written;
        should that write fail, it is kept as failed, with the reason.

        @return: the job as L{get} shows it.
        """
        if jobId in self._new:
            self._accepted.add(jobId)
        return self.get(jobId)

    def _literalDestinationProblem(self, url: str) -> Optional[str]:
        """
        Why the rules refuse C{url} at once, when its host is an address
        they refuse in any form the resolver reads as one (names are
        checked when they are resolved, at connection time); else L{None}.
        """
        parts = urlsplit(splitURL(url)[0])
        address = _literalAddress(parts.hostname or "")
        if address is None:
            return None
        try:
            self.rules.checkDestination([address], parts.port or (443 if parts.scheme.lower() == "https" else 80))
        except Exception as e:
            return f"{_shownURL(url)}: refused: {e}"
        return None

    def list(self) -> list[dict]:
        """
        Every job the service remembers, oldest first.
        """
        return [self.describe(job) for job in self._jobs.values()]

    def page(
        self, limit: int = PAGE_SIZE, after: Optional[str] = None, states: Optional[set[str]] = None
    ) -> tuple[list[dict], bool]:
        """
        Some of the jobs, oldest first: at most C{limit} of them, those
        after job C{after}, in one of C{states} (all states by default),
        no more than L{MAX_PAGE_BYTES} of them in JSON (but one at least).
        Returns them and whether more follow.

        @param after: a job id, usually the last one of the page before.
            Should that job be gone (deleted, or forgotten), the jobs with
            a higher number follow it.
        @raise APIError: 400 when C{after} is no job's id and no number.
        """
        shown, more = self._page(limit, after, states)
        return [described for described, _ in shown], more

    def _page(
        self, limit: int, after: Optional[str], states: Optional[set[str]]
    ) -> tuple[list[tuple[dict, bytes]], bool]:
        # L{page}, each job with its JSON (measured for the page's size,
        # and sent as it is).
        jobs = list(self._jobs.values())
        jobs.extend(self._new[jobId][0] for jobId in self._new if jobId in self._accepted)
        start = 0
        if after is not None:
            position = next((n for n, job in enumerate(jobs) if job["id"] == after), None)
            if position is not None:
                start = position + 1
            elif _idNumber(after) is not None:
                start = next((n for n, job in enumerate(jobs) if _idAfter(job["id"], after)), len(jobs))
            else:
                raise APIError(400, f"no download with id {shortened(after)} to list the jobs after")
        shown: list[tuple[dict, bytes]] = []
        size = 0
        for job in jobs[start:]:
            if states is not None and self._state(job) not in states:
                continue
            if len(shown) == limit:
                return shown, True
            described = self.describe(job)
            encoded = _dumps(described)
            size += len(encoded) + 2
            if shown and size > MAX_PAGE_BYTES:
                return shown, True
            shown.append((described, encoded))
        return shown, False

    def _state(self, job: dict) -> str:
        engineJob = self._engineJobs.get(job["id"])
        if engineJob is None:
            return job["state"]
        state = engineJob.snapshot()["state"]
        return state if state != "verifying" else "running"

    def get(self, jobId: str) -> Optional[dict]:
        """
        One job, or L{None}.
        """
        job = self._jobs.get(jobId)
        if job is None and jobId in self._accepted:
            job = self._new[jobId][0]
        return self.describe(job) if job is not None else None

    def remove(self, jobId: str) -> Optional[dict]:
        """
        Cancel job C{jobId} (deleting its partial file) or, when it is
        finished, forget it (its file stays).  Returns the job as it ends,
        or L{None} when there is no such job.

        @raise APIError: 503 when the service is not running, or stopping
            (the job list is not written again: the job would come back at
            the next start, and the answer waited for that write).
        """
        if self.downloader is None:
            raise APIError(503, "the download service is not running")
        if jobId in self._accepted:
            # Still being written as queued: it is never started, and the
            # next write has it cancelled, or forgets it once it was.
            job = self._new[jobId][0]
            if job["state"] not in _FINISHED:
                job.update(state="cancelled", finished=time.time())
            else:
                self._accepted.discard(jobId)
                self._forgotten.add(jobId)
            return self.describe(job)
        job = self._jobs.pop(jobId, None)
        if job is None:
            return None
        engineJob = self._engineJobs.pop(jobId, None)
        if engineJob is not None and self.downloader is not None and not engineJob.deferred.called:
            live = engineJob.snapshot()  # the name it had, not the one asked for
            self.downloader.cancel(engineJob.id, discard=True)
            job.update(
                state="cancelled",
                finished=time.time(),
                name=live["name"] or job["name"],
                path=None,  # its file is gone
                done=live["done"],
                size=live["size"],
            )
        elif job["state"] == "failed" and job.get("part"):
            part = job.pop("part")
            # A later job of the URL may have resumed it, and failed too.
            if not any(other.get("part") == part for other in self._jobs.values()):
                with contextlib.suppress(DownloadError):
                    # (As the state file has the URL.)
                    discardPart(self.directory / part, splitURL(job["url"])[0], self.reactor)
        self._changed()
        return self.describe(job)

    def describe(self, job: dict) -> dict:
        """
        A job as the API shows it (credentials in its URL hidden).
        """
        shown = {key: value for key, value in job.items() if key != "checksum" and key not in _PRIVATE}
        shown["url"] = redact(job["url"])
        shown["checksum"] = job["checksum"]
        engineJob = self._engineJobs.get(job["id"])
        if engineJob is not None:
            live = engineJob.snapshot()
            shown.update(
                state=self._state(job),
                done=live["done"],
                size=live["size"],
                speed=live["speed"],
                attempts=live["attempts"],
                path=self._relative(live["path"]) or job["path"],
                name=live["name"] or job["name"],
                # While retrying: why the last attempt failed.
                error=None if live["error"] is None else _cutError(live["error"]),
            )
        else:
            shown["speed"] = 0.0
        return shown

    def _relative(self, path: Optional[str]) -> Optional[str]:
        return os.path.basename(path) if path else None

    def _submit(self, job: dict) -> None:
        request = DownloadRequest(
            url=job["url"], directory=self.directory, name=job["name"], checksum=job["checksum"], partName=job.get("part")
        )
        engineJob = self.downloader.submit(request)
        self._engineJobs[job["id"]] = engineJob
        self._byEngineId[engineJob.id] = job
        job["state"] = "queued"
        engineJob.deferred.addBoth(self._ended, job, engineJob.id)

    def _observe(self, event: dict) -> None:
        """
        The engine's events: when a job starts writing, the C{.part} it
        chose (C{NAME.1.part} when the name was taken) goes into the job
        list, so that the job resumes it after a restart.
        """
        if event.get("event") != "start" or self._stopping:
            return
        job = self._byEngineId.get(event["job"])
        if job is None:
            return
        part = event["name"] + PART_SUFFIX
        if job.get("part") != part:
            job["part"] = part
            self._changed()

    def _ended(self, result, job: dict, engineId: str) -> None:
        self._byEngineId.pop(engineId, None)
        engineJob = self._engineJobs.pop(job["id"], None)
        if self._stopping:
            return None  # unfinished: it resumes at the next start
        if isinstance(result, Failure):
            if result.check(CancelledError):
                job["state"] = "cancelled"
                job.pop("part", None)
            else:
                # Its .part stays (a new job for the URL resumes it) until
                # the job is deleted, unless the download deleted it (a
                # checksum that did not match): the name is free for others.
                job["state"] = "failed"
                job["error"] = _cutError(str(result.value))
                if job.get("part") and not os.path.lexists(self.directory / job["part"]):
                    del job["part"]
        else:
            job.pop("part", None)
            job["state"] = "done"
            job["path"] = result.path.name
            job["name"] = result.path.name
            job["size"] = job["done"] = result.size
        if engineJob is not None and job["state"] != "done":
            live = engineJob.snapshot()
            job["done"], job["size"] = live["done"], live["size"]
            job["name"] = live["name"] or job["name"]
        job["finished"] = time.time()
        if job["id"] in self._jobs:
            self._forgetOld()  # what a start reads back, not more
            self._changed()
        return None

    def _forgetOld(self) -> int:
        """
        Forget the oldest finished jobs past L{MAX_FINISHED}; returns how
        many.
        """
        finished = [job for job in self._jobs.values() if job["state"] in _FINISHED]
        old = finished[: max(0, len(finished) - MAX_FINISHED)]
        for job in old:
            del self._jobs[job["id"]]
        return len(old)

    # -- the job list on disk ---------------------------------------------------

    @property
    def jobsFile(self) -> Path:
        """
        Where the job list is kept.
        """
        return self.directory / JOBS_FILE

    def _load(self) -> None:
        """
        Read the job list.  One that cannot be read is set aside (never
        overwritten) with one warning; entries that cannot be used are
        skipped, each with a warning, and the list as it was is kept aside
        too.  One that belongs to another user (planted in a shared
        directory) is not read: its jobs would run with this service's
        network position, their files readable by that user.
        """
        try:
            data = _parseJobList(readSmallFile(self.jobsFile, MAX_JOBS_FILE, own=True))
        except FileNotFoundError:
            return
        except OtherUsersFile:
            log.warn(
                "ignoring the job list {path}: it belongs to another user; {kept}",
                path=str(self.jobsFile),
                kept=self._setAside(othersFile=True),
            )
            return
        except (OSError, ValueError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            log.warn(
                "ignoring the unreadable job list {path}: {error}; {kept}",
                path=str(self.jobsFile),
                error=why,
                kept=self._setAsideUnread(),
            )
            return
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, list):
            log.warn(
                "ignoring the job list {path}: not a job list; {kept}", path=str(self.jobsFile), kept=self._setAsideUnread()
            )
            return
        following = data.get("next")
        if type(following) is int and 0 < following < 10**_MAX_ID_DIGITS:
            self._next = max(self._next, following)
        skipped = pending = 0
        for number, entry in enumerate(jobs, 1):
            job, problem = _readJob(entry)
            if job is not None and job["id"] in self._jobs:
                job, problem = None, f"its id {job['id']!r} is taken by an earlier job"
            if job is not None and job["state"] not in _FINISHED:
                if pending >= MAX_PENDING:
                    job, problem = None, f"more than {MAX_PENDING} downloads would wait"
                else:
                    pending += 1
            if job is None:
                skipped += 1
                if skipped <= MAX_SKIP_WARNINGS:
                    log.warn(
                        "job list {path}: skipping job {number}: {problem}",
                        path=str(self.jobsFile),
                        number=number,
                        problem=problem,
                    )
                continue
            self._jobs[job["id"]] = job
            jobId = job["id"]
            if _idNumber(jobId) is not None:
                self._next = max(self._next, _idNumber(jobId) + 1)
        forgotten = self._forgetOld()
        if skipped > MAX_SKIP_WARNINGS:
            log.warn(
                "job list {path}: skipping {n} more jobs that cannot be used",
                path=str(self.jobsFile),
                n=skipped - MAX_SKIP_WARNINGS,
            )
        if forgotten:
            log.warn(
                "job list {path}: forgetting the {n} oldest finished jobs (at most {most} are kept)",
                path=str(self.jobsFile),
                n=forgotten,
                most=MAX_FINISHED,
            )
        if skipped or forgotten:
            log.warn("job list {path}: {kept}", path=str(self.jobsFile), kept=self._setAside())
            self._save()  # the usable jobs, under the real name again

    def _setAsideUnread(self) -> str:
        """
        L{_setAside} a job list of this user's that could not be read, the
        next id first taken from what it shows (L{_nextIdIn}) and written
        at once, so that no id it gave is given again.
        """
        following = _nextIdIn(self.jobsFile)
        kept = self._setAside()
        if following > self._next:
            self._next = following
            self._changed()
        return kept

    def _setAside(self, othersFile: bool = False) -> str:
        """
        Rename the job list to C{NAME.bad-TIMESTAMP}, so that the next save
        does not overwrite what it held; returns what was done, in words.

        @param othersFile: the job list belongs to another user (who can
            keep it where this user cannot rename it, nor save over it: a
            sticky directory such as C{/tmp}).
        """
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        bad = self.jobsFile.with_name(f"{JOBS_FILE}.bad-{stamp}")
        number = 1
        while os.path.lexists(bad):
            bad = self.jobsFile.with_name(f"{JOBS_FILE}.bad-{stamp}-{number}")
            number += 1
        try:
            os.rename(self.jobsFile, bad)
        except OSError as e:
            if othersFile:
                return f"it cannot be set aside ({e.strerror}): no job can be saved until it is removed"
            return f"it could not be set aside ({e.strerror}) and will be replaced"
        return f"kept it as {bad.name}"

    def _changed(self) -> None:
        """
        The job list changed: write it soon.  Changes are gathered: one
        write at a time, at the next reactor turn at the soonest, and after
        a write a pause of L{SAVE_PAUSE} times as long as it took (after a
        failed one, a pause that grows to L{SAVE_RETRY_MOST}); and always
        one when the service stops.
        """
        if not self.running:
            return
        if self._writing:
            self._dirty = True  # written when this write ends
            return
        if self._saveCall is not None and self._saveCall.active():
            return
        delay = max(0.0, self._nextSave - self.reactor.seconds())
        self._saveCall = self.reactor.callLater(delay, self._save)

    def _save(self) -> Deferred:
        """
        Write the job list as it is now, or, while a write is under way,
        as it is when that one ends.  The jobs are copied here; their
        encoding and the write happen in a thread of the reactor's pool
        (when the reactor has one), with the file and its directory flushed
        to the disk.

        @return: fires when the write is done (never fails: a write that
            fails is logged once, and tried again later; see L{_written}).
        """
        if self._saveCall is not None and self._saveCall.active():
            self._saveCall.cancel()
        self._saveCall = None
        if self._writing:
            again: Deferred = Deferred()
            self._again.append(again)
            return again
        self._writing = True
        self._dirty = False
        waiting, self._again = self._again, []
        self._savingWaiters, self._savedWaiters = self._savedWaiters, []
        started = self.reactor.seconds()
        jobs = []
        for job in self._jobs.values():
            saved = dict(job)
            if job["id"] in self._engineJobs:
                saved["state"] = "queued"  # still to do at the next start
            jobs.append(saved)
        jobs.extend(dict(job) for job, _ in self._new.values())
        batch = list(self._new)
        following = self._next
        if IReactorThreads.providedBy(self.reactor):
            d = deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), _writeJobList, self.jobsFile, following, jobs
            )
        else:  # a reactor without threads, as in tests: write at once
            d = maybeDeferred(_writeJobList, self.jobsFile, following, jobs)

        def unexpected(failure: Failure) -> tuple[list[str], str]:
            log.failure("cannot save the job list {path}", failure, path=str(self.jobsFile))
            return [], "unexpected error"

        d.addErrback(unexpected)
        d.addCallback(self._written, batch, started)
        for waiter in waiting:
            d.addCallback(lambda _, waiter=waiter: waiter.callback(None))
        return d

    def _written(self, result: tuple[list[str], Optional[str]], batch: list[str], started: float) -> None:
        self._writing = False
        savedWaiters, self._savingWaiters = self._savingWaiters, []
        now = self.reactor.seconds()
        self._nextSave = now + SAVE_PAUSE * max(0.0, now - started)
        forgotten, error = result
        if error is not None:
            # Tried again until it works, at growing intervals: what was
            # answered (a DELETE's 200) came undone in a crash once the
            # disk had room again, nothing else changing.
            self._saveFailures += 1
            if self._saveFailures == 1:
                log.warn("cannot save the job list {path}: {error}; trying again", path=str(self.jobsFile), error=error)
            self._nextSave = now + min(SAVE_RETRY_MOST, SAVE_PAUSE * 2 ** min(self._saveFailures - 1, 16))
            self._dirty = True
            self._savedWaiters[:0] = savedWaiters  # on to the next write
            savedWaiters = []
        elif self._saveFailures:
            self._saveFailures = 0
            log.info("the job list {path} is saved again", path=str(self.jobsFile))
        for jobId in forgotten:
            job = self._jobs.get(jobId)
            if job is not None and job["state"] in _FINISHED:
                del self._jobs[jobId]
                log.warn("job list too long: forgetting finished job {id}", id=jobId)
        for jobId in batch:
            job, waiters = self._new.pop(jobId)
            accepted = jobId in self._accepted
            self._accepted.discard(jobId)
            if jobId in self._forgotten:
                self._forgotten.discard(jobId)
                self._dirty = self._dirty or error is None  # written: unwrite it
                continue
            if error is not None:
                log.warn("download {id} not queued: the job list could not be written", id=jobId)
                if accepted:  # shown already: kept, as failed
                    if job["state"] not in _FINISHED:
                        job.update(
                            state="failed",
                            error=f"not queued: cannot save the job list ({error})",
                            finished=time.time(),
                        )
                    self._jobs[jobId] = job
                    self._dirty = True
                for waiter in waiters:
                    waiter.errback(APIError(503, f"the download was not queued: cannot save the job list ({error})"))
                continue
            self._jobs[jobId] = job
            if job["state"] in _FINISHED:  # cancelled while being written
                self._dirty = True
            elif self.downloader is not None and not self._stopping:
                self._submit(job)
            for waiter in waiters:
                waiter.callback(self.describe(job))
        for waiter in savedWaiters:
            waiter.callback(None)
        if self._again:
            self._save()
        elif self._dirty:
            self._changed()

    # -- the API ------------------------------------------------------------------

    def resource(self) -> IResource:
        """
        The C{/api/downloads} resource.
        """
        return DownloadsResource(self)

    def checkToken(self, request: Request) -> None:
        """
        Check that C{request} carries the bearer token.  Wrong tokens are
        counted by client address (L{_tokenKey}) and for all addresses
        together: past L{TOKEN_FAILURE_BURST} of an address's, then
        L{TOKEN_FAILURES_PER_SECOND}, or past L{TOKEN_FAILURE_OVERALL_BURST}
        of all, then L{TOKEN_FAILURES_OVERALL_PER_SECOND} (not for an
        address that sent the right token before), a token is not checked
        at all (a right one is refused too, or the answers would tell the
        guesser which one is right), but the right token on a connection
        that sent it before.  A wrong one there is counted as any other,
        and the connection has to send the right one again to pass so: a
        proxy's connection is shared by its clients.  Requests without a
        token are not counted.

        @raise APIError: 401 unless C{request} carries the token; 429 (with
            C{Retry-After}) when too many wrong ones came.
        """
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        given = b""
        if len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(b" ")
            if scheme.lower() == b"bearer":
                given = credentials.strip()
        if given:
            token = self.token.encode("utf-8")
            connection = _connectionOf(request)
            if connection is not None and connection in self._provedConnections:
                if hmac.compare_digest(given, token):
                    return
                # (Another client of a proxy that pools its connections,
                # perhaps: it gets no more guesses than anywhere else.)
                self._provedConnections.discard(connection)
            address = _tokenKey(request)
            provedAddress = address in self._provedAddresses
            wait = self._tokenFailures.delay(address)
            whose = "from this address"
            if not wait and not provedAddress:
                wait = self._allTokenFailures.delay()
                whose = "from all clients"
            if wait:
                seconds = max(1, math.ceil(wait))
                request.setHeader(b"Retry-After", b"%d" % (seconds,))
                raise APIError(429, f"too many wrong API tokens {whose}; try again in {seconds} s")
            if hmac.compare_digest(given, token):
                if connection is not None:
                    with contextlib.suppress(TypeError):  # (not weakly referable)
                        self._provedConnections.add(connection)
                self._provedAddresses[address] = None
                self._provedAddresses.move_to_end(address)
                if len(self._provedAddresses) > TOKEN_PROVED_ADDRESSES:
                    self._provedAddresses.popitem(last=False)
                return
            self._tokenFailures.take(address)
            if not provedAddress:
                self._allTokenFailures.take()
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="netsuite"')
        raise APIError(401, "this endpoint needs the API token: send 'Authorization: Bearer TOKEN'")


def _tokenKey(request: Request) -> str:
    """
    The client address C{request}'s wrong tokens count under: as
    L{hostKey} gives it (an IPv6 client by its /64), and all of 127/8 as
    one, since any local user may send from any of its addresses (4,200
    of them had 83,100 wrong tokens checked in 59.5 s).
    """
    key = hostKey(str(getattr(request.getClientAddress(), "host", "")))
    try:
        loopback = ipaddress.IPv4Address(key) in _LOOPBACK
    except ValueError:
        return key
    return str(_LOOPBACK) if loopback else key


_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def _connectionOf(request: Request) -> Any:
    """
    The connection C{request} came on: its channel, or for an HTTP/2
    stream the stream's connection.
    """
    channel = getattr(request, "channel", None)
    if isinstance(getattr(channel, "streamID", None), int):
        return getattr(channel, "_conn", None)
    return channel


class _Guarded(JSONResource):
    """
    A JSON resource that wants the service's bearer token first.
    """

    def __init__(self, service: DownloadService) -> None:
        JSONResource.__init__(self)
        self.service = service

    def checkHead(self, request: Request, length: Optional[int]) -> None:
        self.service.checkToken(request)

    def render(self, request: Request) -> bytes:
        try:
            self.service.checkToken(request)
        except APIError as e:
            return renderJSON(request, e.toJSON(), e.code)
        return JSONResource.render(self, request)


class DownloadsResource(_Guarded):
    """
    C{/api/downloads}: C{GET} lists the jobs, C{POST} queues one (201,
    once it is on the disk; 202 when that takes over L{SAVE_TIMEOUT});
    C{/api/downloads/ID} is one job.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        if request.postpath:
            return JSONResource.getChild(self, path, request)
        if path == b"":
            return self
        return DownloadResource(self.service, path.decode("utf-8", "replace"))

    def json_GET(self, request: Request) -> EncodedJSON:
        query = _parseQuery(request.uri.partition(b"?")[2])
        unknown = sorted(set(query) - {"limit", "after", "state"})
        if unknown:
            raise APIError(400, f"unknown parameter {shortened(unknown[0])}; the list takes limit, after and state")
        if any(len(values) > 1 for values in query.values()):
            raise APIError(400, "give each of limit, after and state once")
        limit = PAGE_SIZE
        if "limit" in query:
            text = query["limit"][0]
            if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= MAX_PAGE_SIZE):
                raise APIError(400, f"'limit' must be a whole number from 1 to {MAX_PAGE_SIZE}")
            limit = int(text)
        states = None
        if "state" in query:
            states = set(query["state"][0].split(","))
            wrong = sorted(states - set(_STATES))
            if wrong:
                raise APIError(400, f"no state {shortened(wrong[0])}; states are {', '.join(_STATES)}")
        after = query["after"][0] if "after" in query else None
        jobs, more = self.service._page(limit, after, states)
        following = None
        if more:
            parameters = {"after": jobs[-1][0]["id"], "limit": str(limit)}
            if "state" in query:
                parameters["state"] = query["state"][0]
            # Path-absolute: "//api/downloads" (routed here all the same)
            # is a network-path reference, to the host "api".
            path = b"/" + request.path.lstrip(b"/")
            following = quote(path, safe="/%") + "?" + urlencode(parameters)
            request.setHeader(b"Link", b'<%s>; rel="next"' % following.encode("ascii"))
        # {"downloads": [...], "next": ...}, each job encoded once.
        return EncodedJSON(
            b'{"downloads": [%s], "next": %s}' % (b", ".join(encoded for _, encoded in jobs), _dumps(following))
        )

    def checkHead(self, request: Request, length: Optional[int]) -> None:
        _Guarded.checkHead(self, request, length)
        if request.method == b"POST":
            _jobBodyType(request)
            checkBodyLength(length, MAX_BODY)

    def json_POST(self, request: Request) -> Deferred:
        params = _jobBodyType(request)
        body = _readBody(request, MAX_BODY)
        document = _parseJSON(body, params)
        if not isinstance(document, dict):
            raise APIError(400, 'send a JSON object: {"url": "https://..."}')
        unknown = sorted(set(document) - {"url", "name", "checksum"})
        if unknown:
            raise APIError(400, f"unknown field {shortened(unknown[0])}; a download takes url, name and checksum")
        job = self.service.add(document.get("url"), document.get("name"), document.get("checksum"))
        jobId = job["id"]

        def answer(code: int, job: Optional[dict]) -> Answer:
            request.setHeader(b"Location", b"/api/downloads/" + jobId.encode("ascii"))
            return Answer(code, job)

        d = self.service.saved(jobId).addCallback(lambda job: answer(201, job))
        # A write that takes too long (a stuck disk): accepted, not yet saved.
        d.addTimeout(SAVE_TIMEOUT, self.service.reactor, lambda _, __: answer(202, self.service.accept(jobId)))
        return d


def _jobBodyType(request: Request) -> Mapping[str, str]:
    """
    The parameters of the type of a job's body (JSON, also as
    C{application/*+json}; C{curl -d} sends a form type, and the body is
    JSON all the same).

    @raise APIError: 415 for another type.
    """
    mediaType, params = _parseContentType(
        (request.getHeader(b"content-type") or b"application/json").decode("latin-1")
    )
    if not (_isJSONType(mediaType) or mediaType in ("application/x-www-form-urlencoded", "text/plain")):
        raise APIError(415, "send the download as application/json")
    return params


class DownloadResource(_Guarded):
    """
    C{/api/downloads/ID}: C{GET} shows the job, C{DELETE} cancels or
    forgets it (200 once the job list says so on the disk; 202 when that
    takes over L{SAVE_TIMEOUT}; 503 once the service stops).
    """

    def __init__(self, service: DownloadService, jobId: str) -> None:
        _Guarded.__init__(self, service)
        self.jobId = jobId

    def _missing(self) -> APIError:
        return APIError(404, f"no download with id {shortened(self.jobId)}")

    def json_GET(self, request: Request) -> dict:
        job = self.service.get(self.jobId)
        if job is None:
            raise self._missing()
        return job

    def json_DELETE(self, request: Request) -> Deferred:
        job = self.service.remove(self.jobId)
        if job is None:
            raise self._missing()
        # Answered once the job list without it (or with it cancelled) is
        # on the disk, as a POST once its job is: one answered before came
        # back after a crash, its .part gone, and downloaded again from 0.
        d = self.service.whenSaved().addCallback(lambda _: job)
        # A write that takes too long (a stuck, or full, disk): accepted,
        # not yet saved.
        d.addTimeout(SAVE_TIMEOUT, self.service.reactor, lambda _, __: Answer(202, job))
        return d


def makeDownloadService(
    directory: str | Path,
    reactor: Any = None,
    *,
    token: Optional[str] = None,
    tokenFile: Optional[str | Path] = None,
    settings: Optional[DownloadSettings] = None,
    rules: Any = None,
) -> DownloadService:
    """
    A download service for another Twisted application: add it to your
    service tree and mount C{service.resource()} under your API.
    """
    return DownloadService(
        directory, reactor=reactor, token=token, tokenFile=tokenFile, settings=settings, rules=rules
    )


def usableToken(token: str) -> bool:
    """
    Whether C{token} can be the API token: at least 16 printable
    characters, none of them a space.
    """
    return len(token) >= 16 and not any(c.isspace() or not c.isprintable() for c in token)


def loadOrCreateToken(path: str | Path) -> tuple[str, bool]:
    """
    The API token kept in C{path} (surrounding white space ignored), or a
    new one written there, readable by its owner only, when there is no
    such file: the token stays the same from one start to the next, and
    never goes into a log.  A file others may read or write, or that another
    user owns, is used, with a warning.

    @return: the token, and whether it was created.
    @raise ValueError: the file holds no usable token (said in a sentence).
    @raise OSError: the file cannot be read, or created.
    """
    return loadOrCreateSecret(
        Path(path),
        parse=_parseToken,
        create=_newToken,
        what="API token",
        form="at least 16 printable characters without spaces",
        secret="the API token",
        log=log,
        makeDirectory=True,
    )


def _newToken() -> tuple[str, bytes]:
    """
    A new API token, and the line that keeps it.
    """
    token = secrets.token_urlsafe(24)
    return token, (token + "\n").encode("ascii")


def _parseToken(data: bytes) -> Optional[str]:
    """
    The API token a token file's bytes hold, or L{None}.
    """
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return token if usableToken(token) else None


#: How much of the start and of the end of a job list that cannot be read
#: is looked through for ids (see L{_nextIdIn}).
_ID_SCAN = 1024 * 1024

#: A job list's C{"next": N} or a job's C{"id": "N"}, as L{_idNumber} reads
#: ids (a quote inside a string is escaped, so none is found there).
_COUNTER = re.compile(
    rb'"next"\s*:\s*([0-9]{1,%d})(?![0-9])|"id"\s*:\s*"([0-9]{1,%d})"' % (_MAX_ID_DIGITS, _MAX_ID_DIGITS)
)


def _nextIdIn(path: Path) -> int:
    """
    The next id a job list that cannot be read (cut short, not JSON, too
    long) shows: past its C{"next"} and past every numbered id in its first
    and last L{_ID_SCAN} bytes (the newest jobs are last).  1 when it shows
    none, or is not a regular file of this user's.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return 1
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid():
            return 1
        parts = [os.pread(fd, _ID_SCAN, 0)]
        if status.st_size > _ID_SCAN:
            parts.append(os.pread(fd, _ID_SCAN, status.st_size - _ID_SCAN))
    except OSError:
        return 1
    finally:
        os.close(fd)
    found = [1]
    for part in parts:
        for following, jobId in _COUNTER.findall(part):
            found.append(int(following) if following else int(jobId) + 1)
    return max(found)


def _idNumber(jobId: str) -> Optional[int]:
    """
    The number of a job id, or L{None} for an id that is not a number of at
    most L{_MAX_ID_DIGITS} ASCII digits (not "\u00b2", not 5000 digits).
    """
    if jobId.isascii() and jobId.isdigit() and len(jobId) <= _MAX_ID_DIGITS:
        return int(jobId)
    return None


def _idAfter(jobId: str, other: str) -> bool:
    """
    Whether C{jobId} is a number above the number C{other}.
    """
    number = _idNumber(jobId)
    return number is not None and number > _idNumber(other)


def _writeJobList(path: Path, following: int, jobs: list[dict]) -> tuple[list[str], Optional[str]]:
    """
    Encode C{jobs} (copies: this runs in a thread) and write them to
    C{path}.  Never more than the service reads back at start: the oldest
    finished jobs are left out until the rest fits.

    @return: the ids of the jobs left out, and why the write failed (or
        L{None}).
    """
    encoded = [_encodeJob(job) for job in jobs]
    size = sum(len(one) + 1 for one in encoded)
    forgotten = []
    if size > MAX_JOBS_FILE - 100:
        kept = []
        for job, one in zip(jobs, encoded):
            if size > MAX_JOBS_FILE - 100 and job["state"] in _FINISHED:
                size -= len(one) + 1
                forgotten.append(job["id"])
                continue
            kept.append(one)
        encoded = kept
    document = b'{"version":1,"next":%d,"jobs":[%s]}\n' % (following, b",".join(encoded))
    try:
        writeAtomically(path, document, 0o600, sync=True)
    except OSError as e:
        error = e.strerror or str(e)
        with contextlib.suppress(OSError):
            if os.lstat(path).st_uid != os.geteuid():
                # Planted in a sticky directory, where only its owner may
                # replace it.
                error += f"; {path.name} there belongs to another user: remove it"
        return forgotten, error
    return forgotten, None


#: A JSON string, or what is left of one cut short: read in one pass, never
#: going back (possessive), so that no text takes more than linear time.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)


def _valueCount(data: bytes) -> int:
    """
    How many values the JSON text C{data} holds (see L{MAX_JOBS_VALUES}),
    found without building them; counting stops past L{MAX_JOBS_VALUES}.
    """

    def structural(start: int, end: int) -> int:
        return data.count(b",", start, end) + data.count(b"[", start, end) + data.count(b"{", start, end)

    count = structural(0, len(data)) + data.count(b'"') // 2
    if count <= MAX_JOBS_VALUES:
        return count  # what strings hold counted too: more than there are
    count = end = 0
    for string in _JSON_STRING.finditer(data):
        count += 1 + structural(end, string.start())
        end = string.end()
        if count > MAX_JOBS_VALUES:
            return count
    return count + structural(end, len(data))


def _parseJobList(data: bytes) -> Any:
    """
    The JSON document C{data}, a job list, unless it holds more values than
    any job list (L{MAX_JOBS_VALUES}): counted first, as Python would take
    up to 27 times the list's size to hold them.

    @raise ValueError: it is not JSON in UTF-8, or holds too many values.
    @raise RecursionError: it is nested too deeply.
    """
    if _valueCount(data) > MAX_JOBS_VALUES:
        raise ValueError(f"it holds more than {MAX_JOBS_VALUES} values, more than any job list")
    return json.loads(data.decode("utf-8"))


def _encodeJob(job: dict) -> bytes:
    """
    One job of the job list as JSON in UTF-8: non-ASCII text as it is (an
    escape costs up to 12 bytes a character), except in a job holding
    strings that are not UTF-8 (bytes a URL had that were not).
    """
    try:
        return json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(job, separators=(",", ":")).encode("ascii")


#: The IPv4 forms C{inet_aton} (so the resolver) reads beside dotted
#: decimal: C{127.1}, C{0x7f.1}, C{2130706433}, C{017700000001}.
_IPV4_FORMS = re.compile(r"[0-9a-fA-FxX.]+")


def _literalAddress(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """
    The address C{host} (as L{splitURL} gives it) stands for as it is, in
    any form the resolver reads as an address; or L{None} for a name.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _IPV4_FORMS.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _cutError(error: str) -> str:
    """
    C{error} cut to L{MAX_ERROR} characters, in its middle: an error starts
    with the URL and ends with the reason, and a long URL must not push
    the reason out.
    """
    if len(error) <= MAX_ERROR:
        return error
    head = MAX_ERROR // 3
    return error[:head] + "\u2026" + error[len(error) - (MAX_ERROR - head - 1) :]


def _readJob(entry: object) -> tuple[Optional[dict], Optional[str]]:
    """
    A job of the job list as the service keeps it, or L{None} and why it
    cannot be used.  Fields an older or hand-edited list lacks, or holds in
    a wrong type, get their defaults unless the job needs them (its id,
    URL, state, name and checksum).
    """
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    jobId, url, state = entry.get("id"), entry.get("url"), entry.get("state")
    if not isinstance(jobId, str) or not jobId:
        return None, "it has no id"
    if not isinstance(url, str) or not url or urlTooLong(url):
        return None, f"job {jobId!r} has no usable URL"
    try:
        clean, _ = splitURL(url)
    except DownloadError as e:
        return None, str(e).replace(url, redact(url)).replace(repr(url), repr(redact(url)))
    problem = fetchHostProblem(clean)
    if problem is not None:
        return None, f"{redact(url)}: {problem}"
    if state not in _STATES:
        return None, f"job {jobId!r} has no known state"
    name, checksum, part = entry.get("name"), entry.get("checksum"), entry.get("part")
    if name is not None:
        if not isinstance(name, str) or not names.sanitiseName(name, default=""):
            return None, f"job {jobId!r} has no usable file name"
        name = names.avoidReserved(names.sanitiseName(name))  # as it is saved
    if checksum is not None:
        if not isinstance(checksum, str):
            return None, f"job {jobId!r} has a checksum that is not text"
        try:
            checksum = "%s=%s" % parseChecksum(checksum)
        except ValueError as e:
            return None, str(e)

    def count(key: str) -> Optional[int]:
        value = entry.get(key)
        return value if type(value) is int and value >= 0 else None

    def when(key: str) -> Optional[float]:
        value = entry.get(key)
        return value if type(value) in (int, float) and math.isfinite(value) else None

    def text(key: str) -> Optional[str]:
        value = entry.get(key)
        return value if isinstance(value, str) else None

    error, path = text("error"), text("path")
    return {
        "id": jobId,
        "url": url,
        "name": name,
        "checksum": checksum,
        "state": state,
        "error": None if error is None else _cutError(error),
        "path": path if path and names.sanitiseName(path, default="") == path else None,
        "size": count("size"),
        "done": count("done") or 0,
        "created": when("created"),
        "finished": when("finished"),
        "part": part if isinstance(part, str) and isPartName(part) else None,
    }, None
