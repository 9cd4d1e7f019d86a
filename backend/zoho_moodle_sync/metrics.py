"""`/metrics`, with prometheus_client: what the service holds (jobs by state, records with
warnings, the oldest open job), read from the database at each scrape; monotonic counters and
histograms shared by every process and host (Moodle calls, delivery latency), kept in the
database and added to in the transaction that settles the work they count; and what this
process registered itself (the API's HTTP requests; several processes on one host share them
through prometheus_client's multiprocess mode, when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import OPEN_STATES, DeliveryPause, Job, JobState
from zoho_moodle_sync.db.metrics import MetricCounter
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.records import warning_summary

LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
"""Seconds from a change being stored to Moodle holding it."""
MOODLE_CALLS = "zms_moodle_calls_total"
LATENCY = "zms_delivery_latency_seconds"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ---- shared counters, written in the settling transaction -----------------------------------


def add(session: Session, counts: Iterable[tuple[str, dict[str, str], float]]) -> None:
    """Add to shared counters: (name, labels, amount), in the caller's transaction."""
    totals: dict[tuple[str, str], float] = {}
    for name, labels, amount in counts:
        key = (name, orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode())
        totals[key] = totals.get(key, 0.0) + amount
    if not totals:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(MetricCounter.__table__)
    statement = statement.on_conflict_do_update(
        index_elements=["name", "labels"],
        set_={"value": MetricCounter.__table__.c.value + statement.excluded.value},
    )
    rows = [{"name": n, "labels": labels, "value": v} for (n, labels), v in sorted(totals.items())]
    session.execute(statement, rows)


def moodle_calls(tenant_id: int, calls: Iterable[tuple[str, str | None]]) -> Iterator[Any]:
    """Counts of Moodle calls: (function, errorcode or None) each."""
    for function, errorcode in calls:
        yield (
            MOODLE_CALLS,
            {"tenant": str(tenant_id), "function": function, "errorcode": errorcode or ""},
            1.0,
        )


def latencies(tenant_id: int, seconds: Iterable[float]) -> Iterator[Any]:
    """A histogram observation per delivered change: its cumulative buckets, sum and count."""
    tenant = {"tenant": str(tenant_id)}
    for value in seconds:
        for bound in LATENCY_BUCKETS:
            if value <= bound:
                yield f"{LATENCY}_bucket", {**tenant, "le": str(bound)}, 1.0
        yield f"{LATENCY}_bucket", {**tenant, "le": "+Inf"}, 1.0
        yield f"{LATENCY}_sum", tenant, value
        yield f"{LATENCY}_count", tenant, 1.0


# ---- the scrape -------------------------------------------------------------------------------


class DatabaseCollector(Collector):
    """Gauges of the queue and the warnings, and the shared counters, as of this scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        with self.db.sessions() as session:
            slugs = {tenant.id: tenant.slug for tenant in session.scalars(select(Tenant))}
            yield from self._jobs(session, slugs)
            yield self._warnings(session, slugs)
            yield self._pauses(session, slugs)
            counters = list(session.execute(select(MetricCounter)).scalars())
        yield from self._shared(counters, slugs)

    def _jobs(self, session: Session, slugs: dict[int, str]) -> Iterator[Any]:
        jobs = GaugeMetricFamily(
            "zms_jobs",
            "Jobs by tenant, kind, entity and state.",
            labels=["tenant", "kind", "entity", "state"],
        )
        rows = session.execute(
            select(Job.tenant_id, Job.kind, Job.entity, Job.state, func.count()).group_by(
                Job.tenant_id, Job.kind, Job.entity, Job.state
            )
        )
        for tenant_id, kind, entity, state, count in rows:
            jobs.add_metric([_slug(slugs, tenant_id), kind, entity or "", state], count)
        yield jobs
        oldest = GaugeMetricFamily(
            "zms_oldest_open_job_seconds",
            "Age of the oldest job not finished, by tenant and kind.",
            labels=["tenant", "kind"],
        )
        now = utcnow()
        ages = session.execute(
            select(Job.tenant_id, Job.kind, func.min(Job.created_at))
            .where(Job.state.in_([*OPEN_STATES, JobState.RUNNING]))
            .group_by(Job.tenant_id, Job.kind)
        )
        for tenant_id, kind, created in ages:
            oldest.add_metric([_slug(slugs, tenant_id), kind], (now - created).total_seconds())
        yield oldest

    def _pauses(self, session: Session, slugs: dict[int, str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "zms_delivery_paused",
            "1 while a tenant's delivery is paused: Moodle refused access (kind access), or "
            "cannot be reached (kind outage: the circuit breaker is open).",
            labels=["tenant", "kind"],
        )
        paused = {(p.tenant_id, p.kind) for p in session.scalars(select(DeliveryPause))}
        for tenant_id, slug in sorted(slugs.items()):
            for kind in ("access", "outage"):
                family.add_metric([slug, kind], 1.0 if (tenant_id, kind) in paused else 0.0)
        return family

    def _warnings(self, session: Session, slugs: dict[int, str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "zms_record_warnings",
            "Stored records carrying a warning, by code.",
            labels=["tenant", "entity", "code"],
        )
        for (tenant_id, entity), summary in sorted(warning_summary(session).items()):
            for code, records in sorted(summary["codes"].items()):
                family.add_metric([_slug(slugs, tenant_id), entity, code], records)
        return family

    def _shared(self, counters: list[MetricCounter], slugs: dict[int, str]) -> Iterator[Any]:
        calls = CounterMetricFamily(
            "zms_moodle_calls",
            "Moodle web-service calls by function and errorcode.",
            labels=["tenant", "function", "errorcode"],
        )
        buckets: dict[str, dict[str, float]] = {}
        sums: dict[str, float] = {}
        for counter in counters:
            labels = orjson.loads(counter.labels)
            tenant = _slug(slugs, int(labels["tenant"]))
            if counter.name == MOODLE_CALLS:
                calls.add_metric([tenant, labels["function"], labels["errorcode"]], counter.value)
            elif counter.name == f"{LATENCY}_bucket":
                buckets.setdefault(tenant, {})[labels["le"]] = counter.value
            elif counter.name == f"{LATENCY}_sum":
                sums[tenant] = counter.value
        yield calls
        latency = HistogramMetricFamily(
            LATENCY, "Stored change to Moodle holding it, per delivered job.", labels=["tenant"]
        )
        for tenant, by_bound in sorted(buckets.items()):
            bounds = [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]
            latency.add_metric(
                [tenant],
                [(b, by_bound.get(b, 0.0)) for b in bounds],
                sum_value=sums.get(tenant, 0.0),
            )
        yield latency


def _slug(slugs: dict[int, str], tenant_id: int | None) -> str:
    return "" if tenant_id is None else slugs.get(tenant_id, str(tenant_id))


def render(db: Database, extra: Iterable[Collector] = ()) -> bytes:
    """The scrape: the database's figures (with the `extra` collectors' of higher layers) and
    this host's processes' own."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    for collector in extra:
        registry.register(collector)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(registry) + generate_latest(REGISTRY)
