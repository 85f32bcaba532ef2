"""
A host name resolver that answers every lookup, on threads of its own.

Twisted's default resolver (C{GAIResolver}) runs C{getaddrinfo} in a thread
and takes a C{gaierror} as "no addresses"; any other exception (C{EMFILE}
when the process is out of file descriptors, for one) leaves its Deferred
failed and unhandled, and the caller is never told: a proxied request waited
for its connect timeout, a download for minutes.  Here such a failure is
"no addresses" too, so every caller answers at once (the proxy's C{502},
the downloader's error for the job).

Twisted's runs on the reactor's thread pool, 10 threads shared with all
other work in threads: 10 lookups of names whose DNS does not answer (each
waits for the resolver's timeout, seconds) held every lookup behind them,
of any name, for any client, and the downloader's directory listings and
job-list writes too.  Here lookups have a pool of their own, of up to
L{LOOKUP_THREADS} threads, and lookups of the same name at the same time
are one lookup (a browser opening six connections to a host whose DNS is
slow held six threads).
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable, Sequence

from twisted.internet._resolver import GAIResolver, HostResolution
from twisted.internet.interfaces import IAddress, IHostResolution, IResolutionReceiver
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer


#: Seconds between two warnings of failed lookups.
WARN_EVERY = 60.0

#: Lookups that may run at once (each waits in a thread of its own).
LOOKUP_THREADS = 64

log = Logger()


def _answering(getaddrinfo: Callable[..., list], failed: Callable[[str, Exception], None]) -> Callable[..., list]:
    """
    C{getaddrinfo}, whose every failure is a C{gaierror}; one of another
    kind is told to C{failed} (in the thread) first.
    """

    def lookUp(host: str, *args: Any) -> list:
        try:
            return getaddrinfo(host, *args)
        except socket.gaierror:
            raise
        except Exception as e:
            failed(host, e)
            raise socket.gaierror(f"{e.__class__.__name__}: {e}") from e

    return lookUp


class AnsweringResolver(GAIResolver):
    """
    Twisted's C{GAIResolver}, telling its receiver "no addresses" whatever
    C{getaddrinfo} fails with, on a thread pool of its own (up to
    C{threads} lookups at once).  A failure other than a DNS error
    (C{EMFILE}: the process is out of file descriptors) is logged as a
    warning, at most one a minute.

    The pool starts with the first lookup, and stops when the reactor shuts
    down, or with L{stop}.  Its threads are daemon threads: one waiting on
    DNS never holds up the process's exit.  A lookup asked for while the
    same one (name, port, kinds of address) runs waits for its answer, and
    takes no thread of its own; nothing is kept once answered.
    """

    _lastWarning: float | None = None
    _unwarned = 0

    def __init__(
        self, reactor: Any, getaddrinfo: Callable[..., list] = socket.getaddrinfo, threads: int = LOOKUP_THREADS
    ) -> None:
        self._clock = reactor
        self._reactor = reactor
        self._threads = threads
        self._pool: ThreadPool | None = None
        self._trigger: Any = None
        #: The receivers of each lookup running, by what it looks up.
        self._running: dict[tuple, list[IResolutionReceiver]] = {}

        def failed(host: str, error: Exception) -> None:
            reactor.callFromThread(self._failed, host, error)

        GAIResolver.__init__(self, reactor, self._getPool, _answering(getaddrinfo, failed))

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        """
        Look C{hostName} up for C{resolutionReceiver}, or have it told what
        the same lookup running finds.
        """
        key = (hostName, portNumber, None if addressTypes is None else frozenset(addressTypes), transportSemantics)
        receivers = self._running.get(key)
        if receivers is not None:
            resolution = HostResolution(hostName)
            resolutionReceiver.resolutionBegan(resolution)
            receivers.append(resolutionReceiver)
            return resolution
        receivers = self._running[key] = [resolutionReceiver]
        try:
            return GAIResolver.resolveHostName(
                self, _Shared(self._running, key, receivers), hostName, portNumber, addressTypes, transportSemantics
            )
        except BaseException:
            del self._running[key]
            raise

    def isRunning(self, hostName: str, portNumber: int = 0) -> bool:
        """
        Whether a lookup of C{hostName} and C{portNumber} (of any kind of
        address, over TCP: as C{resolveHostName} by default) runs now: one
        asked for now would take no thread, and wait for its answer.
        """
        return (hostName, portNumber, None, "TCP") in self._running

    def _getPool(self) -> ThreadPool:
        if self._pool is None:
            self._pool = _LookupPool(0, self._threads, "netsuite-lookups")
            self._pool.start()
            self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._shutDown)
        return self._pool

    def _shutDown(self) -> None:
        self._trigger = None  # firing: it cannot be removed
        self.stop()

    def stop(self) -> None:
        """
        Stop the lookup threads (each ends once the lookups running and
        queued have ended, their receivers told), without waiting for
        them: C{ThreadPool.stop} joins its threads, and in the reactor's
        thread (its shutdown) a lookup waiting on DNS held the reactor, and
        the process's exit, until it timed out.  A later lookup starts
        them again.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        # ThreadPool.stop without its join (Twisted's, private).
        pool.joined = True
        pool.started = False
        pool._team.quit()

    def _failed(self, host: str, error: Exception) -> None:
        now = self._clock.seconds()
        if self._lastWarning is not None and now - self._lastWarning < WARN_EVERY:
            self._unwarned += 1
            return
        more, self._unwarned, self._lastWarning = self._unwarned, 0, now
        log.warn(
            "looking up {host} failed ({error}), taken as no addresses{more}",
            host=host,
            error=f"{error.__class__.__name__}: {error}",
            more=f"; {more} more such failures since the last warning" if more else "",
        )


@implementer(IResolutionReceiver)
class _Shared:
    """
    The receiver of one lookup for every receiver that asked for it
    meanwhile: each is told the addresses found, in turn, once the lookup
    has ended (one that raises is logged, and the others are still told).
    """

    def __init__(self, running: dict, key: tuple, receivers: list[IResolutionReceiver]) -> None:
        self._running = running
        self._key = key
        self._receivers = receivers
        self._addresses: list[IAddress] = []

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        self._receivers[0].resolutionBegan(resolution)

    def addressResolved(self, address: IAddress) -> None:
        self._addresses.append(address)

    def resolutionComplete(self) -> None:
        if self._running.get(self._key) is self._receivers:
            del self._running[self._key]
        for receiver in self._receivers:
            try:
                for address in self._addresses:
                    receiver.addressResolved(address)
                receiver.resolutionComplete()
            except Exception:
                log.failure("telling {receiver} what a lookup found", receiver=receiver)


def _daemonThread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class _LookupPool(ThreadPool):
    """
    The lookup threads: daemon threads, and a lookup no thread could start
    for (C{RuntimeError: can't start new thread}: the process is out of
    threads) is a DNS error, "no addresses".  Twisted's resolver never
    told its receiver (and every later lookup of that name joined it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ThreadPool.__init__(self, *args, **kwargs)
        self.threadFactory = lambda *a, **kw: _daemonThread(*a, **kw)  # type: ignore[assignment]

    def callInThreadWithCallback(self, onResult: Any, func: Any, *args: Any, **kw: Any) -> None:
        try:
            ThreadPool.callInThreadWithCallback(self, onResult, func, *args, **kw)
        except Exception as e:
            log.warn("no thread could start for a lookup ({error}): taken as no addresses", error=e)
            onResult(False, Failure(socket.gaierror(socket.EAI_AGAIN, f"{e.__class__.__name__}: {e}")))


def installResolver(reactor: Any) -> None:
    """
    Make C{reactor}'s name resolver an L{AnsweringResolver} (once), when it
    is Twisted's default; a resolver of one's own is left as it is.
    """
    if type(getattr(reactor, "nameResolver", None)) is GAIResolver:
        reactor.installNameResolver(AnsweringResolver(reactor))
