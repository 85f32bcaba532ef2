"""
netsuite's HTTP server, built on C{twisted.web}: the site and its routing
(L{netsuite.web.site}), static files (L{netsuite.web.static}), the JSON API
(L{netsuite.web.api}) and Prometheus metrics (L{netsuite.web.metrics}).
"""
