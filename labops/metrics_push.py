"""Pushing samples to VictoriaMetrics (``/api/v1/import/prometheus``, answered 204)."""

from __future__ import annotations

from labops.http import HttpClient
from labops.metrics import Metric, render

IMPORT_PATH = "/api/v1/import/prometheus"


class VictoriaMetricsPusher:
    """Sends batches of :class:`labops.metrics.Metric` through the HTTP policy."""

    def __init__(self, client: HttpClient, extra_labels: dict[str, str] | None = None) -> None:
        self.client = client
        self.extra_labels = dict(extra_labels or {})

    def push(self, metrics: list[Metric]) -> int:
        """Push ``metrics`` in one request; return how many samples were sent."""
        if not metrics:
            return 0
        if self.extra_labels:
            metrics = [
                m.model_copy(update={"labels": {**self.extra_labels, **m.labels}}) for m in metrics
            ]
        self.client.request(
            "POST",
            IMPORT_PATH,
            content=render(metrics).encode(),
            headers={"Content-Type": "text/plain"},
            ok=(200, 204),
        )
        return len(metrics)
