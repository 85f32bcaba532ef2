"""
What the status pages read: each listener's state and every service's stats.

L{netsuite.tap.NetsuiteService} is a L{StatusSource}; an application that
embeds the HTTP service on its own can pass a L{SimpleStatus}.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Protocol

from netsuite import __version__
from netsuite.stats import StatsRegistry


#: Endpoint arguments the status pages show; the others (key and
#: certificate files, ...) are left out: the pages are public.
_SHOWN_ARGUMENTS = frozenset({"port", "interface", "backlog"})


def publicEndpoint(description: str) -> str:
    """
    C{description} (a Twisted endpoint string) without the C{name=value}
    arguments that are not an address: C{ssl:8443:privateKey=/etc/key.pem}
    becomes C{ssl:8443}.
    """
    parts = re.split(r"(?<!\\):", description)
    # Only the first positional argument is an address (a port, a path):
    # an ssl: endpoint's second one is its private key's file.
    positional = [part for part in parts[1:] if "=" not in part][:1]
    kept = [parts[0]] + [
        part
        for part in parts[1:]
        if part in positional or ("=" in part and part.split("=", 1)[0] in _SHOWN_ARGUMENTS)
    ]
    return ":".join(kept)


@dataclass(frozen=True)
class ListenerInfo:
    """
    One listener, as the status pages show it.

    @ivar service: the service's name (C{"echo"}, C{"http"} ...).
    @ivar endpoint: the endpoint string it was configured with, without its
        file names and other arguments that are not an address (see
        L{publicEndpoint}).
    @ivar address: the address it really listens on (C{"tcp 127.0.0.1:8080"}),
        or L{None} when it is not listening.
    @ivar tls: whether it serves TLS (an C{ssl:} endpoint does).
    """

    service: str
    endpoint: str
    address: str | None
    tls: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "tls", self.tls or self.endpoint.split(":", 1)[0].strip().lower() == "ssl")
        object.__setattr__(self, "endpoint", publicEndpoint(self.endpoint))

    @property
    def listening(self) -> bool:
        return self.address is not None

    def toJSON(self) -> Dict[str, object]:
        return {**asdict(self), "listening": self.listening}


class StatusSource(Protocol):
    """
    Where the HTTP service reads status from.

    @ivar stats: every service's counters.
    @ivar started: when the process started (POSIX time).
    @ivar version: netsuite's version.
    """

    stats: StatsRegistry
    started: float
    version: str

    def listeners(self) -> List[ListenerInfo]:
        """
        Every listener of the process, in start order.
        """


class SimpleStatus:
    """
    A L{StatusSource} for an application that has no L{NetsuiteService}:
    stats it is given, and listeners it is told about.
    """

    version = __version__

    def __init__(self, stats: StatsRegistry | None = None) -> None:
        self.stats = stats if stats is not None else StatsRegistry()
        self.started = time.time()
        self._services: List[object] = []

    def add(self, listener: object) -> None:
        """
        Report on C{listener} (anything with an C{info()} method returning a
        L{ListenerInfo}, such as L{netsuite.listen.StreamListener}).
        """
        self._services.append(listener)

    def listeners(self) -> List[ListenerInfo]:
        return [s.info() for s in self._services]  # type: ignore[attr-defined]
