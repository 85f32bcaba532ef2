"""
Prometheus metrics for netsuite's HTTP server (C{/metrics}).

L{HTTPMetrics} counts the HTTP server's requests (the site calls
L{HTTPMetrics.observe} once per finished request) and, at scrape time, reads
every service's counters from a L{StatsRegistry}.  It keeps its own
C{prometheus_client} registry, never the global one, so two instances (two
sites, or tests) do not collide.

The scrape is rendered by L{MetricsResource} in the reactor thread rather
than by C{prometheus_client.twisted.MetricsResource}: that one is a WSGI app
on the reactor's thread pool, which would read the (unlocked) stats from
another thread, and answers HEAD with a 405.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, Iterator, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.utils import floatToGoString
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from netsuite.stats import StatsRegistry
from netsuite.web.pages import headOnly
from netsuite.web.static import withoutRefused

__all__ = ["HTTPMetrics", "MetricsResource", "DURATION_BUCKETS", "METHODS"]

#: Request duration histogram buckets, in seconds (+Inf is added).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Bucket labels as Prometheus writes them ("le"), +Inf last.
_BUCKET_LABELS = [floatToGoString(bound) for bound in DURATION_BUCKETS] + ["+Inf"]

#: Methods counted under their own name; any other is counted as C{"other"}.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")

_METHOD_LABELS: Dict[object, str] = {
    **{m: m for m in METHODS},
    **{m.encode("ascii"): m for m in METHODS},
}

#: Status codes counted under their own number; any other as C{"other"}.
_STATUS_LABELS = {code: str(code) for code in range(100, 600)}


class _StatsCollector:
    """
    Reads a L{StatsRegistry} at scrape time.
    """

    def __init__(self, stats: StatsRegistry) -> None:
        self.stats = stats

    def _families(self) -> Tuple[Metric, ...]:
        return (
            GaugeMetricFamily(
                "netsuite_connections_open",
                "Connections open now, by service.",
                labels=["service"],
            ),
            CounterMetricFamily(
                "netsuite_connections",
                "Connections accepted since start, by service.",
                labels=["service"],
            ),
            CounterMetricFamily(
                "netsuite_received_bytes",
                "Application bytes received, by service.",
                labels=["service"],
            ),
            CounterMetricFamily(
                "netsuite_sent_bytes",
                "Application bytes sent, by service.",
                labels=["service"],
            ),
            CounterMetricFamily(
                "netsuite_errors",
                "Connections ended by an error plus errors reported, by service.",
                labels=["service"],
            ),
            CounterMetricFamily(
                "netsuite_service_events",
                "Service-specific counters, by service and event.",
                labels=["service", "event"],
            ),
            GaugeMetricFamily(
                "netsuite_service_gauge",
                "Service-specific values that go up and down, by service and name.",
                labels=["service", "name"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        opened, total, received, sent, errors, events, gauges = families
        for service in list(self.stats):
            labels = [service.name]
            opened.add_metric(labels, service.connectionsOpen)
            total.add_metric(labels, service.connectionsTotal)
            received.add_metric(labels, service.bytesIn)
            sent.add_metric(labels, service.bytesOut)
            errors.add_metric(labels, service.errors)
            for event, count in sorted(service.counters.items()):
                events.add_metric([service.name, event], count)
            for name, value in sorted(service.gauges.items()):
                gauges.add_metric([service.name, name], value)
        return iter(families)


class MetricsResource(Resource):
    """
    Serves a registry in the Prometheus text format (C{text/plain;
    version=0.0.4}), or OpenMetrics when the scraper's C{Accept} asks for it.
    GET and HEAD only; other methods get a 405 with C{Allow}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry) -> None:
        Resource.__init__(self)
        self.registry = registry

    def render(self, request: Request) -> bytes:
        """
        Render the registry's current values.
        """
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            body = b"method not allowed; use GET or HEAD\n"
        else:
            accept = withoutRefused(request.getHeader(b"Accept") or b"").decode("latin-1")
            try:
                encoder, contentType = choose_encoder(accept)
            except Exception:
                # A malformed version or escaping in Accept.
                encoder, contentType = generate_latest, "text/plain; version=0.0.4; charset=utf-8"
            body = encoder(self.registry)
            request.setHeader(b"Content-Type", contentType.encode("latin-1"))
        return headOnly(request, body)


class _RequestCollector:
    """
    Exports an L{HTTPMetrics}' plain counters at scrape time.
    """

    def __init__(self, metrics: "HTTPMetrics") -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(empty=True))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(empty=False))

    def _families(self, empty: bool) -> Tuple[Metric, ...]:
        metrics = self.metrics
        requests = CounterMetricFamily(
            "netsuite_http_requests",
            "HTTP requests finished, by method and status code.",
            labels=["method", "status"],
        )
        duration = HistogramMetricFamily(
            "netsuite_http_request_duration_seconds",
            "Time from receiving an HTTP request to finishing its response.",
        )
        sent = CounterMetricFamily(
            "netsuite_http_response_bytes",
            "Bytes of HTTP responses sent (bodies).",
        )
        if not empty:
            for (method, status), count in sorted(metrics._requests.items()):
                requests.add_metric([method, status], count)
            cumulative = 0
            buckets = []
            for bound, count in zip(_BUCKET_LABELS, metrics._buckets):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([], buckets, metrics._durationSum)
            sent.add_metric([], metrics._bytes)
        return (requests, duration, sent)


class HTTPMetrics:
    """
    The HTTP server's metrics and every service's counters, in a registry of
    their own.

      - C{netsuite_http_requests_total{method,status}}: finished requests.
        Methods other than L{METHODS} are C{"other"}; status codes outside
        100-599 are C{"other"}.
      - C{netsuite_http_request_duration_seconds}: histogram, buckets
        L{DURATION_BUCKETS}.
      - C{netsuite_http_response_bytes_total}: bytes of responses sent.
      - Read from the L{StatsRegistry} at scrape time, by C{service}:
        C{netsuite_connections_open} (gauge), C{netsuite_connections_total},
        C{netsuite_received_bytes_total}, C{netsuite_sent_bytes_total},
        C{netsuite_errors_total}, each service-specific counter as
        C{netsuite_service_events_total{service,event}} and each gauge as
        C{netsuite_service_gauge{service,name}}.

    L{observe} only adds to plain numbers (the reactor thread is the only
    writer); they become Prometheus samples when scraped.

    @ivar registry: the L{CollectorRegistry} holding all of them.
    """

    def __init__(self, stats: StatsRegistry) -> None:
        """
        @param stats: every service's counters.
        """
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests: Dict[Tuple[str, str], int] = {}
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._durationSum = 0.0
        self._bytes = 0
        self.registry.register(_RequestCollector(self))
        self.registry.register(_StatsCollector(stats))
        for method in ("GET", "HEAD", "POST"):
            for status in ("200", "404"):
                self._requests[method, status] = 0
        self._resource = MetricsResource(self.registry)

    def observe(self, method: bytes | str, status: int, seconds: float, bytesSent: int) -> None:
        """
        Count one finished request.

        @param method: the request's method.
        @param status: the response's status code.
        @param seconds: how long the request took.
        @param bytesSent: bytes of response sent.
        """
        key = (_METHOD_LABELS.get(method, "other"), _STATUS_LABELS.get(status, "other"))
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        self._buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self._durationSum += seconds
        if bytesSent > 0:
            self._bytes += bytesSent

    def resource(self) -> IResource:
        """
        The resource serving these metrics (for C{/metrics}).
        """
        return self._resource
