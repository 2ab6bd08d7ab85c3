"""What an operations team watches: Prometheus metrics (metrics.py, every metric defined once;
fleet.py, the gauges read from the database at scrape), the /metrics, /healthz and /readyz
endpoint (http.py, readiness.py) and structured logs (logs.py, redaction.py).

This package file imports nothing: storage, mqtt, relay and collection import
`headend.observability.metrics` (which imports nothing of ours), while fleet.py and http.py
import storage; an import here would close that circle."""
