"""Moodle delivery, written once per Moodle kind (users, categories, courses, enrolments) behind
one batch interface; which kind an entity is, and what it needs delivered first, is declared on
its entity spec."""

from __future__ import annotations

from zoho_moodle_sync.delivery.base import Batch, Delivery, LeaseLost, TenantPaused
from zoho_moodle_sync.delivery.categories import CategoryDelivery
from zoho_moodle_sync.delivery.courses import CourseDelivery
from zoho_moodle_sync.delivery.enrolments import EnrolmentDelivery
from zoho_moodle_sync.delivery.users import UserDelivery
from zoho_moodle_sync.entities import MoodleKind

DELIVERY_BY_KIND: dict[MoodleKind, type[Delivery]] = {
    MoodleKind.USER: UserDelivery,
    MoodleKind.CATEGORY: CategoryDelivery,
    MoodleKind.COURSE: CourseDelivery,
    MoodleKind.ENROLMENT: EnrolmentDelivery,
}

__all__ = ["DELIVERY_BY_KIND", "Batch", "Delivery", "LeaseLost", "TenantPaused"]
