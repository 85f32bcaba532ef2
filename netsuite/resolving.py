"""
A host name resolver that answers every lookup.

Twisted's default resolver (C{GAIResolver}) runs C{getaddrinfo} in a thread
and takes a C{gaierror} as "no addresses"; any other exception (C{EMFILE}
when the process is out of file descriptors, for one) leaves its Deferred
failed and unhandled, and the caller is never told: a proxied request waited
for its connect timeout, a download for minutes.  Here such a failure is
"no addresses" too, so every caller answers at once (the proxy's C{502},
the downloader's error for the job).
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.internet._resolver import GAIResolver
from twisted.logger import Logger


#: Seconds between two warnings of failed lookups.
WARN_EVERY = 60.0

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
    Twisted's C{GAIResolver}, on the reactor's thread pool, telling its
    receiver "no addresses" whatever C{getaddrinfo} fails with.  A failure
    other than a DNS error (C{EMFILE}: the process is out of file
    descriptors) is logged as a warning, at most one a minute.
    """

    _lastWarning: float | None = None
    _unwarned = 0

    def __init__(self, reactor: Any, getaddrinfo: Callable[..., list] = socket.getaddrinfo) -> None:
        self._clock = reactor

        def failed(host: str, error: Exception) -> None:
            reactor.callFromThread(self._failed, host, error)

        GAIResolver.__init__(self, reactor, reactor.getThreadPool, _answering(getaddrinfo, failed))

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


def installResolver(reactor: Any) -> None:
    """
    Make C{reactor}'s name resolver an L{AnsweringResolver} (once), when it
    is Twisted's default; a resolver of one's own is left as it is.
    """
    if type(getattr(reactor, "nameResolver", None)) is GAIResolver:
        reactor.installNameResolver(AnsweringResolver(reactor))
