"""`/metrics` in the Prometheus text format, read from the database so that every API process
and every worker host reports the same figures."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job, JobKind, MoodleCall
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.records import warning_summary

LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 21600, 86400)
"""Seconds from a change being stored to Moodle holding it."""


def prometheus_text(session: Session, slugs: dict[int, str]) -> str:
    """Jobs by state, Moodle calls and errors by function and errorcode, and the delivery
    latency of jobs finished in the last hour, in the Prometheus text format."""
    lines = [
        "# HELP zms_jobs Delivery jobs by tenant, entity and state.",
        "# TYPE zms_jobs gauge",
    ]
    counts = session.execute(
        select(Job.tenant_id, Job.entity, Job.state, func.count())
        .where(Job.kind == JobKind.DELIVER)
        .group_by(Job.tenant_id, Job.entity, Job.state)
    ).all()
    for tenant_id, entity, state, count in counts:
        if tenant_id is None or entity is None:
            continue
        labels = _labels(tenant=slugs.get(tenant_id, str(tenant_id)), entity=entity, state=state)
        lines.append(f"zms_jobs{{{labels}}} {count}")
    lines += [
        "# HELP zms_moodle_calls_total Moodle web-service calls by function and errorcode.",
        "# TYPE zms_moodle_calls_total counter",
    ]
    calls = session.execute(
        select(
            MoodleCall.tenant_id, MoodleCall.function, MoodleCall.errorcode, func.count()
        ).group_by(MoodleCall.tenant_id, MoodleCall.function, MoodleCall.errorcode)
    ).all()
    for tenant_id, function, errorcode, count in calls:
        labels = _labels(
            tenant=slugs.get(tenant_id, str(tenant_id)),
            function=function,
            errorcode=errorcode or "",
        )
        lines.append(f"zms_moodle_calls_total{{{labels}}} {count}")
    lines += [
        "# HELP zms_record_warnings Stored records carrying a warning, by code.",
        "# TYPE zms_record_warnings gauge",
    ]
    for (tenant_id, entity), summary in sorted(warning_summary(session).items()):
        tenant = slugs.get(tenant_id, str(tenant_id))
        for code, records in sorted(summary["codes"].items()):
            labels = _labels(tenant=tenant, entity=entity, code=code)
            lines.append(f"zms_record_warnings{{{labels}}} {records}")
    lines += [
        "# HELP zms_delivery_latency_seconds Stored change to Moodle, jobs done in the last hour.",
        "# TYPE zms_delivery_latency_seconds histogram",
    ]
    since = utcnow() - timedelta(hours=1)
    finished = session.execute(
        select(Job.created_at, Job.finished_at).where(
            Job.kind == JobKind.DELIVER, Job.state == "done", Job.finished_at >= since
        )
    ).all()
    latencies = [(done - created).total_seconds() for created, done in finished if done]
    for bound in LATENCY_BUCKETS:
        below = sum(1 for value in latencies if value <= bound)
        lines.append(f'zms_delivery_latency_seconds_bucket{{le="{bound}"}} {below}')
    lines.append(f'zms_delivery_latency_seconds_bucket{{le="+Inf"}} {len(latencies)}')
    lines.append(f"zms_delivery_latency_seconds_sum {sum(latencies):.3f}")
    lines.append(f"zms_delivery_latency_seconds_count {len(latencies)}")
    return "\n".join(lines) + "\n"


def _labels(**values: str) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{name}="{escape(value)}"' for name, value in values.items())


def render(db: Database) -> str:
    with db.sessions() as session:
        slugs = {tenant.id: tenant.slug for tenant in session.scalars(select(Tenant))}
        return prometheus_text(session, slugs)
