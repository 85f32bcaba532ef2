"""
The download service inside C{twistd netsuite}: a queue of downloads into
one directory, driven through C{/api/downloads} with a bearer token, that
survives a restart.

    POST   /api/downloads        {"url": ..., "name": ..., "checksum": ...}  -> 201 the job
    GET    /api/downloads        {"downloads": [job, ...]}
    GET    /api/downloads/ID     the job
    DELETE /api/downloads/ID     cancel it (its partial file goes); a
                                 finished job is only forgotten, its file stays

The job list is kept in C{.netsuite-downloads.json} in the download
directory; unfinished jobs start again (resuming from their state files)
when the service starts.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request

from netsuite.files import readSmallFile, writeAtomically
from netsuite.web.api import APIError, JSONResource, _parseContentType, _parseJSON, _readBody, renderJSON

from . import names
from .engine import DownloadRequest, Downloader, DownloadSettings, redact, splitURL
from .errors import DownloadError
from .values import parseChecksum

log = Logger()

#: The file in the download directory that lists the jobs.
JOBS_FILE = ".netsuite-downloads.json"

#: Largest request body accepted by POST, in bytes.
MAX_BODY = 64 * 1024

#: Unfinished jobs the queue holds at most (503 beyond).
MAX_PENDING = 1000

#: Finished jobs remembered (the oldest are forgotten first).
MAX_FINISHED = 1000

#: The longest job list read at start: every job it can hold, each as long
#: as a request body could make it, and some.
MAX_JOBS_FILE = (MAX_PENDING + MAX_FINISHED) * (MAX_BODY + 1024)

_FINISHED = ("done", "failed", "cancelled")


class DownloadService(Service):
    """
    Downloads queued through the API into C{directory}.

    @param directory: where files go (created at start).
    @param token: the bearer token the API wants; one is generated (and
        logged at start) when L{None}.
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
        settings: Optional[DownloadSettings] = None,
        rules: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.directory = Path(directory)
        self.generatedToken = token is None
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.settings = settings or DownloadSettings()
        if rules is None:
            from netsuite.proxyrules import ProxyRules

            rules = ProxyRules()
        self.rules = rules
        self.downloader: Optional[Downloader] = None
        self._jobs: dict[str, dict] = {}
        self._engineJobs: dict[str, Any] = {}
        self._next = 1
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self.downloader = Downloader(self.reactor, self.settings, rules=self.rules)
        self._load()
        if self.generatedToken:
            log.info("downloads API token (generated; set --api-token to choose one): {token}", token=self.token)
        log.info("downloads go to {directory}", directory=str(self.directory.resolve()))
        resumed = [job for job in self._jobs.values() if job["state"] not in _FINISHED]
        for job in resumed:
            self._submit(job)
        if resumed:
            log.info("resuming {n} unfinished download(s)", n=len(resumed))

    def stopService(self) -> Deferred:
        Service.stopService(self)
        if self.downloader is None:
            return succeed(None)
        self._stopping = True
        downloader, self.downloader = self.downloader, None
        d = downloader.stop()
        d.addCallback(lambda _: self._save())
        return d

    # -- jobs -----------------------------------------------------------------

    def add(self, url: Any, name: Any = None, checksum: Any = None) -> dict:
        """
        Queue a download; returns the job.

        @raise APIError: 400 for a bad URL, name or checksum; 503 when the
            queue is full or the service is not running.
        """
        if self.downloader is None:
            raise APIError(503, "the download service is not running")
        if not isinstance(url, str) or not url:
            raise APIError(400, "'url' must be a non-empty string")
        if len(url) > 8192:
            raise APIError(400, "'url' is longer than 8192 characters")
        try:
            splitURL(url)
        except DownloadError as e:
            raise APIError(400, str(e)) from None
        self._checkLiteralDestination(url)
        if name is not None:
            if not isinstance(name, str) or not names.sanitiseName(name, default=""):
                raise APIError(400, "'name' must be a usable file name")
            name = names.sanitiseName(name)
        if checksum is not None:
            if not isinstance(checksum, str):
                raise APIError(400, "'checksum' must be a string such as sha256=HEX")
            try:
                parseChecksum(checksum)
            except ValueError as e:
                raise APIError(400, str(e)) from None
        pending = sum(1 for job in self._jobs.values() if job["state"] not in _FINISHED)
        if pending >= MAX_PENDING:
            raise APIError(503, f"{MAX_PENDING} downloads are already waiting; try again later")
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
        self._jobs[job["id"]] = job
        self._forgetOld()
        self._submit(job)
        self._save()
        return self.describe(job)

    def _checkLiteralDestination(self, url: str) -> None:
        """
        Refuse at once a URL whose host is an address the rules refuse
        (names are checked when they are resolved, at connection time).
        """
        parts = urlsplit(url)
        try:
            address = ipaddress.ip_address(parts.hostname or "")
        except ValueError:
            return
        try:
            self.rules.checkDestination([address], parts.port or (443 if parts.scheme.lower() == "https" else 80))
        except Exception as e:
            raise APIError(403, f"{redact(url)}: refused: {e}") from None

    def list(self) -> list[dict]:
        """
        Every job the service remembers, oldest first.
        """
        return [self.describe(job) for job in self._jobs.values()]

    def get(self, jobId: str) -> Optional[dict]:
        """
        One job, or L{None}.
        """
        job = self._jobs.get(jobId)
        return self.describe(job) if job is not None else None

    def remove(self, jobId: str) -> Optional[dict]:
        """
        Cancel job C{jobId} (deleting its partial file) or, when it is
        finished, forget it (its file stays).  Returns the job as it ends,
        or L{None} when there is no such job.
        """
        job = self._jobs.pop(jobId, None)
        if job is None:
            return None
        engineJob = self._engineJobs.pop(jobId, None)
        if engineJob is not None and self.downloader is not None and not engineJob.deferred.called:
            self.downloader.cancel(engineJob.id, discard=True)
            job["state"] = "cancelled"
            job["finished"] = time.time()
        self._save()
        return self.describe(job)

    def describe(self, job: dict) -> dict:
        """
        A job as the API shows it (credentials in its URL hidden).
        """
        shown = {key: value for key, value in job.items() if key != "checksum"}
        shown["url"] = redact(job["url"])
        shown["checksum"] = job["checksum"]
        engineJob = self._engineJobs.get(job["id"])
        if engineJob is not None:
            live = engineJob.snapshot()
            shown.update(
                state=live["state"] if live["state"] != "verifying" else "running",
                done=live["done"],
                size=live["size"],
                speed=live["speed"],
                attempts=live["attempts"],
                path=self._relative(live["path"]),
                name=live["name"],
            )
        else:
            shown["speed"] = 0.0
        return shown

    def _relative(self, path: Optional[str]) -> Optional[str]:
        return os.path.basename(path) if path else None

    def _submit(self, job: dict) -> None:
        request = DownloadRequest(url=job["url"], directory=self.directory, name=job["name"], checksum=job["checksum"])
        engineJob = self.downloader.submit(request)
        self._engineJobs[job["id"]] = engineJob
        job["state"] = "queued"
        engineJob.deferred.addBoth(self._ended, job)

    def _ended(self, result, job: dict) -> None:
        engineJob = self._engineJobs.pop(job["id"], None)
        if self._stopping:
            return None  # unfinished: it resumes at the next start
        if isinstance(result, Failure):
            if result.check(CancelledError):
                job["state"] = "cancelled"
            else:
                job["state"] = "failed"
                job["error"] = str(result.value)
        else:
            job["state"] = "done"
            job["path"] = result.path.name
            job["name"] = result.path.name
            job["size"] = job["done"] = result.size
        if engineJob is not None and job["state"] != "done":
            live = engineJob.snapshot()
            job["done"], job["size"] = live["done"], live["size"]
        job["finished"] = time.time()
        if job["id"] in self._jobs:
            self._save()
        return None

    def _forgetOld(self) -> None:
        finished = [job for job in self._jobs.values() if job["state"] in _FINISHED]
        for job in finished[: max(0, len(finished) - MAX_FINISHED)]:
            del self._jobs[job["id"]]

    # -- the job list on disk ---------------------------------------------------

    @property
    def jobsFile(self) -> Path:
        """
        Where the job list is kept.
        """
        return self.directory / JOBS_FILE

    def _load(self) -> None:
        try:
            data = json.loads(readSmallFile(self.jobsFile, MAX_JOBS_FILE).decode("utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warn("ignoring the unreadable job list {path}: {error}", path=str(self.jobsFile), error=str(e))
            return
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, list):
            log.warn("ignoring the job list {path}: not a job list", path=str(self.jobsFile))
            return
        for job in jobs:
            if not isinstance(job, dict) or not isinstance(job.get("id"), str) or not isinstance(job.get("url"), str):
                continue
            if job.get("state") not in ("queued", "running", "retrying", *_FINISHED):
                continue
            try:
                if job.get("checksum") is not None:
                    parseChecksum(job["checksum"])
                splitURL(job["url"])
            except (ValueError, DownloadError):
                continue
            if not (job.get("name") is None or isinstance(job.get("name"), str)):
                continue
            self._jobs[job["id"]] = job
            if job["id"].isdigit():
                self._next = max(self._next, int(job["id"]) + 1)

    def _save(self) -> None:
        jobs = []
        for job in self._jobs.values():
            saved = dict(job)
            engineJob = self._engineJobs.get(job["id"])
            if engineJob is not None:
                saved["state"] = "queued"  # still to do at the next start
            jobs.append(saved)
        try:
            writeAtomically(self.jobsFile, (json.dumps({"version": 1, "jobs": jobs}, indent=2) + "\n").encode("utf-8"), 0o600)
        except OSError as e:
            log.warn("cannot save the job list {path}: {error}", path=str(self.jobsFile), error=e.strerror)

    # -- the API ------------------------------------------------------------------

    def resource(self) -> IResource:
        """
        The C{/api/downloads} resource.
        """
        return DownloadsResource(self)

    def checkToken(self, request: Request) -> None:
        """
        @raise APIError: 401 unless C{request} carries the bearer token.
        """
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        given = b""
        if len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(b" ")
            if scheme.lower() == b"bearer":
                given = credentials.strip()
        if not given or not hmac.compare_digest(given, self.token.encode("utf-8")):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="netsuite"')
            raise APIError(401, "this endpoint needs the API token: send 'Authorization: Bearer TOKEN'")


class _Guarded(JSONResource):
    """
    A JSON resource that wants the service's bearer token first.
    """

    def __init__(self, service: DownloadService) -> None:
        JSONResource.__init__(self)
        self.service = service

    def render(self, request: Request) -> bytes:
        try:
            self.service.checkToken(request)
        except APIError as e:
            return renderJSON(request, e.toJSON(), e.code)
        return JSONResource.render(self, request)


class DownloadsResource(_Guarded):
    """
    C{/api/downloads}: C{GET} lists the jobs, C{POST} queues one (201);
    C{/api/downloads/ID} is one job.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        if request.postpath:
            return JSONResource.getChild(self, path, request)
        if path == b"":
            return self
        return DownloadResource(self.service, path.decode("utf-8", "replace"))

    def json_GET(self, request: Request) -> dict:
        return {"downloads": self.service.list()}

    def json_POST(self, request: Request) -> dict:
        mediaType, params = _parseContentType(
            (request.getHeader(b"content-type") or b"application/json").decode("latin-1")
        )
        # curl -d sends a form type; the body is JSON all the same.
        if mediaType not in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
            raise APIError(415, "send the download as application/json")
        body = _readBody(request, MAX_BODY)
        document = _parseJSON(body, params)
        if not isinstance(document, dict):
            raise APIError(400, 'send a JSON object: {"url": "https://..."}')
        unknown = sorted(set(document) - {"url", "name", "checksum"})
        if unknown:
            raise APIError(400, f"unknown field {unknown[0]!r}; a download takes url, name and checksum")
        job = self.service.add(document.get("url"), document.get("name"), document.get("checksum"))
        request.setHeader(b"Location", b"/api/downloads/" + job["id"].encode("ascii"))
        return job

    def render(self, request: Request) -> bytes:
        body = _Guarded.render(self, request)
        if request.method == b"POST" and request.code == 200:
            request.setResponseCode(201)
        return body


class DownloadResource(_Guarded):
    """
    C{/api/downloads/ID}: C{GET} shows the job, C{DELETE} cancels or
    forgets it.
    """

    def __init__(self, service: DownloadService, jobId: str) -> None:
        _Guarded.__init__(self, service)
        self.jobId = jobId

    def _missing(self) -> APIError:
        return APIError(404, f"no download with id {self.jobId!r}")

    def json_GET(self, request: Request) -> dict:
        job = self.service.get(self.jobId)
        if job is None:
            raise self._missing()
        return job

    def json_DELETE(self, request: Request) -> dict:
        job = self.service.remove(self.jobId)
        if job is None:
            raise self._missing()
        return job


def makeDownloadService(
    directory: str | Path,
    reactor: Any = None,
    *,
    token: Optional[str] = None,
    settings: Optional[DownloadSettings] = None,
    rules: Any = None,
) -> DownloadService:
    """
    A download service for another Twisted application: add it to your
    service tree and mount C{service.resource()} under your API.
    """
    return DownloadService(directory, reactor=reactor, token=token, settings=settings, rules=rules)
