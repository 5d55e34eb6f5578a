"""Query parameters of the task list: status, type, created range."""

from __future__ import annotations

import django_filters

from ..models import Status, Task
from ..registry import all_types


def _type_choices() -> list[tuple[str, str]]:
    return [(t.name, t.name) for t in all_types()]


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=Status.choices, help_text="Only tasks in this state (repeat for several)."
    )
    type = django_filters.MultipleChoiceFilter(
        choices=_type_choices, help_text="Only tasks of this type (repeat for several)."
    )
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text="Only tasks created at or after this time (ISO 8601).",
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        help_text="Only tasks created before this time (ISO 8601).",
    )

    class Meta:
        model = Task
        fields = ["status", "type", "created_after", "created_before"]
