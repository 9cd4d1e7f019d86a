"""What a pull is asked to do and what it tells: the plan, the reports per module, and the
progress it gives as it goes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from zoho_moodle_sync.entities import EntitySpec
from zoho_moodle_sync.service import Outcome, RecordResult
from zoho_moodle_sync.tenants import TenantContext

PullKind = Literal["import", "catch_up"]
CAUGHT = (Outcome.NEW, Outcome.UPDATED, Outcome.DELETED)
"""What a catch-up finds that no webhook brought: a sign that webhooks are being lost."""
EXAMPLES = 3


@dataclass
class ModuleReport:
    entity: str
    module: str
    pages: int = 0
    records: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    caught: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Outcome → the first records that came out so (a dry run's "what would happen")."""
    started: float = 0.0
    finished: float | None = None
    total: int | None = None
    """How many records the module holds (an estimate for the time left), when known."""
    skipped: str | None = None
    """Why the module was not pulled (Zoho does not know it), when it was not."""

    def note(self, results: Sequence[RecordResult], *, catching_up: bool) -> None:
        for result in results:
            self.outcomes[result.outcome.value] += 1
            if catching_up and result.outcome in CAUGHT:
                self.caught += 1
            shown = self.examples.setdefault(result.outcome.value, [])
            if len(shown) < EXAMPLES and result.zoho_id:
                shown.append(result.zoho_id)


@dataclass
class MoodleChange:
    """What Moodle would get for one entity (a dry run): how many records, and the first."""

    entity: str
    change: str
    """`create`, `update` or `remove`."""
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class PullReport:
    pull_id: int | None
    kind: PullKind
    dry_run: bool
    modules: list[ModuleReport] = field(default_factory=list)
    moodle: list[MoodleChange] = field(default_factory=list)
    """What Moodle would get: filled by a dry run only."""


class Progress(Protocol):
    """What a pull tells as it goes (a progress bar on a terminal, log lines elsewhere)."""

    def module_started(self, report: ModuleReport, resumed_from: int) -> None: ...

    def page_done(self, report: ModuleReport) -> None: ...

    def module_done(self, report: ModuleReport) -> None: ...


class Quiet:
    def module_started(self, report: ModuleReport, resumed_from: int) -> None:
        return None

    def page_done(self, report: ModuleReport) -> None:
        return None

    def module_done(self, report: ModuleReport) -> None:
        return None


@dataclass(frozen=True)
class PullPlan:
    """What to pull: which entities, modified since when (per entity), as what kind."""

    tenant: TenantContext
    kind: PullKind
    entities: tuple[EntitySpec, ...]
    since: dict[str, datetime | None]
    dry_run: bool = False


def fields_of(plan: PullPlan, spec: EntitySpec) -> list[str]:
    """The Zoho fields the tenant's mapping reads, with the id and the modification time."""
    mapping = plan.tenant.mapping.for_entity(spec)
    names = [zoho for _, zoho in mapping.zoho_names]
    return list(dict.fromkeys(["id", "Modified_Time", *names]))
