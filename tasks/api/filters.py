"""Query parameters of the task list: status, type, created range."""

from __future__ import annotations

from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from ..models import Status, Task
from ..registry import all_types


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 time, refused when it cannot be expressed in UTC: a time
    like 9999-12-31T23:59-12:00 is a valid date that overflows on conversion
    (which the database query would do, with a server error)."""

    def to_python(self, value):
        result = super().to_python(value)
        if result is None:
            return result
        try:
            return result.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Datetime value out of range.", code="overflow") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class IdFilter(django_filters.NumberFilter):
    """An id: a whole number (NumberFilter alone would take 1.5)."""

    field_class = forms.IntegerField


def _type_choices() -> list[tuple[str, str]]:
    return [(t.name, t.name) for t in all_types()]


class TaskFilter(django_filters.FilterSet):
    # distinct=False: these filter the task table itself (no join can repeat
    # a row), and SELECT DISTINCT made PostgreSQL compare every matching row
    # of a user's history before returning the first page.
    status = django_filters.MultipleChoiceFilter(
        choices=Status.choices,
        distinct=False,
        help_text="Only tasks in this state (repeat for several).",
    )
    type = django_filters.MultipleChoiceFilter(
        choices=_type_choices,
        distinct=False,
        help_text="Only tasks of this type (repeat for several).",
    )
    queue = django_filters.CharFilter(help_text="Only tasks in this queue.")
    schedule = IdFilter(
        field_name="schedule_id",
        min_value=1,
        max_value=2**63 - 1,
        help_text="Only the tasks this schedule of yours fired.",
    )
    created_after = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text="Only tasks created at or after this time (ISO 8601).",
    )
    created_before = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        help_text="Only tasks created before this time (ISO 8601).",
    )

    class Meta:
        model = Task
        fields = ["status", "type", "queue", "schedule", "created_after", "created_before"]
