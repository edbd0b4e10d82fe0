"""The audit's figures on ``/metrics``, read from the store when scraped (the same numbers as ``/health``).

    cds_audit_quarantined_entries   entries set aside as data the database refused (whole trail)
    cds_audit_interrupted_calls     calls whose process died before answering (whole trail)
    cds_audit_spooled_entries       entries waiting in the spool or in memory
    cds_audit_lost_entries          entries this process could not keep anywhere (since it started)
    cds_audit_database_up           1 when the audit database answers

The first two come from the database and the shared spool folder, so every worker reports the trail's
total (not a per-process count to add up).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily


class AuditCollector:
    def __init__(self, store: Any):
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self.store.health()
        figures = (
            ("cds_audit_quarantined_entries", "Audit entries set aside in the quarantine",
             health["quarantined"]),
            ("cds_audit_interrupted_calls", "Hook calls whose process died before answering",
             health["interrupted"]),
            ("cds_audit_spooled_entries", "Audit entries waiting in the spool or in memory", health["spool"]),
            ("cds_audit_lost_entries", "Audit entries this process could not keep", health["lost"]),
            ("cds_audit_database_up", "1 when the audit database answers", int(health["database"] == "ok")),
        )
        for name, text, value in figures:
            yield GaugeMetricFamily(name, text, value=value)
