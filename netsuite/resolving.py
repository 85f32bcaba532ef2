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


def _answering(getaddrinfo: Callable[..., list]) -> Callable[..., list]:
    """
    C{getaddrinfo}, whose every failure is a C{gaierror}.
    """

    def lookUp(*args: Any) -> list:
        try:
            return getaddrinfo(*args)
        except socket.gaierror:
            raise
        except Exception as e:
            raise socket.gaierror(f"{e.__class__.__name__}: {e}") from e

    return lookUp


class AnsweringResolver(GAIResolver):
    """
    Twisted's C{GAIResolver}, on the reactor's thread pool, telling its
    receiver "no addresses" whatever C{getaddrinfo} fails with.
    """

    def __init__(self, reactor: Any, getaddrinfo: Callable[..., list] = socket.getaddrinfo) -> None:
        GAIResolver.__init__(self, reactor, reactor.getThreadPool, _answering(getaddrinfo))


def installResolver(reactor: Any) -> None:
    """
    Make C{reactor}'s name resolver an L{AnsweringResolver} (once), when it
    is Twisted's default; a resolver of one's own is left as it is.
    """
    if type(getattr(reactor, "nameResolver", None)) is GAIResolver:
        reactor.installNameResolver(AnsweringResolver(reactor))
