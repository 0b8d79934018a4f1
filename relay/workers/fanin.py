"""One /metrics for all workers: each worker's exposition, fetched over its unix socket, with a `worker` label.

prometheus-client's multiprocess mode sees only metric objects, not the custom collectors that fold per-session
counters in at scrape time, so each worker keeps its own registry and the parent merges their expositions: one
target for Prometheus per machine or pod, `sum without (worker) (...)` for totals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

WORKER_LABEL = "worker"
#: Longest wait for one worker's exposition; a worker that is slower is left out of that scrape (and counted).
FETCH_TIMEOUT_SECONDS = 2.0
_MAX_EXPOSITION_BYTES = 64 * 1024 * 1024


async def fetch_exposition(path: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> str:
    """GET /metrics from the worker listening on unix socket `path`. Raises OSError or TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
            await writer.drain()
            response = bytearray()
            while chunk := await reader.read(65536):  # to the end: the worker closes after its answer
                response += chunk
                if len(response) > _MAX_EXPOSITION_BYTES:
                    raise OSError("worker metrics exposition is too large")
        finally:
            writer.close()
    head, _, body = bytes(response).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise OSError(f"worker metrics answered {status[:64]!r}")
    return body.decode()


def merge(expositions: Mapping[str, str]) -> list[Metric]:
    """The families of every worker's exposition, one family per name, each sample labelled with its worker."""
    families: dict[str, Metric] = {}
    for worker, text in expositions.items():
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker}) for sample in family.samples
            )
    return list(families.values())


class _Families:
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(families: Sequence[Metric]) -> bytes:
    """Families in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
