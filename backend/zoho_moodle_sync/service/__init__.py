"""The service stage: fingerprint, compare with what is stored, decide each record's outcome,
store it, park what waits for its dependencies. Flushes, never commits (ingress owns the
transaction)."""

from __future__ import annotations

from zoho_moodle_sync.service.outcomes import (
    BatchItem,
    BatchResult,
    Outcome,
    RecordResult,
    record_history,
)
from zoho_moodle_sync.service.parking import ReleasedRecord, release_parked, sweep_parked
from zoho_moodle_sync.service.store import apply_batch, delete_records

__all__ = [
    "BatchItem",
    "BatchResult",
    "Outcome",
    "RecordResult",
    "ReleasedRecord",
    "apply_batch",
    "delete_records",
    "record_history",
    "release_parked",
    "sweep_parked",
]
