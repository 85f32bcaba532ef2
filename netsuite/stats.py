"""
Cheap per-service counters shared by every netsuite service.

Services bump plain integer attributes on a L{ServiceStats}; nothing here
takes a lock or allocates on the hot path.  The HTTP status page and the
metrics endpoint read them through L{StatsRegistry.snapshot}.
"""

from __future__ import annotations

from typing import Dict, Iterator


class ServiceStats:
    """
    Counters for one service (all of its listeners together).

    @ivar connectionsOpen: connections (or UDP peers being served) right now.
    @ivar connectionsTotal: connections accepted since start.
    @ivar bytesIn: application bytes received (after TLS decryption).
    @ivar bytesOut: application bytes sent (before TLS encryption).
    @ivar errors: connections that ended in an error (a TLS error, an
        abort by a limit or a timeout; not a peer that went away, even with
        a TCP reset), plus errors a protocol reported with L{countError}.
    @ivar counters: service-specific counters by name, e.g. C{"timeouts"}.
    @ivar gauges: service-specific values that go up and down, by name, e.g.
        C{"users"}.
    """

    __slots__ = (
        "name",
        "connectionsOpen",
        "connectionsTotal",
        "bytesIn",
        "bytesOut",
        "errors",
        "counters",
        "gauges",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.connectionsOpen = 0
        self.connectionsTotal = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.errors = 0
        self.counters: Dict[str, int] = {}
        self.gauges: Dict[str, int] = {}

    def countError(self, kind: str | None = None) -> None:
        """
        Record one error, optionally also under a named counter.
        """
        self.errors += 1
        if kind is not None:
            self.count(kind)

    def count(self, name: str, amount: int = 1) -> None:
        """
        Add C{amount} to the service-specific counter C{name}.
        """
        self.counters[name] = self.counters.get(name, 0) + amount

    def snapshot(self) -> Dict[str, object]:
        """
        A JSON-ready copy of the counters.
        """
        return {
            "connections_open": self.connectionsOpen,
            "connections_total": self.connectionsTotal,
            "bytes_in": self.bytesIn,
            "bytes_out": self.bytesOut,
            "errors": self.errors,
            **{key: self.counters[key] for key in sorted(self.counters)},
            **{key: self.gauges[key] for key in sorted(self.gauges)},
        }

    def __repr__(self) -> str:
        return f"<ServiceStats {self.name} {self.snapshot()}>"


class StatsRegistry:
    """
    The L{ServiceStats} of every service in one process, by service name.
    """

    def __init__(self) -> None:
        self._services: Dict[str, ServiceStats] = {}

    def forService(self, name: str) -> ServiceStats:
        """
        The stats object for C{name}, created on first use, so listeners of
        one service share it.
        """
        stats = self._services.get(name)
        if stats is None:
            stats = self._services[name] = ServiceStats(name)
        return stats

    def __iter__(self) -> Iterator[ServiceStats]:
        return iter(self._services.values())

    def snapshot(self) -> Dict[str, Dict[str, object]]:
        """
        A JSON-ready copy of every service's counters.
        """
        return {name: stats.snapshot() for name, stats in self._services.items()}
