"""The Task record: its legal state transitions, indexes and ownership."""

import pytest
from django.db import connection

from tasks.models import FINISHED, TRANSITIONS, IllegalTransition, Status, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(owner):
    return Task.objects.create(owner=owner, type="demo", timeout=60)


LEGAL = [(src, dst) for src, targets in TRANSITIONS.items() for dst in targets]
ILLEGAL = [(src, dst) for src in Status.values for dst in Status.values if (src, dst) not in LEGAL]


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_legal_transitions_move_the_row(task, source, target):
    Task.objects.filter(pk=task.pk).update(status=source)

    moved = Task.objects.filter(pk=task.pk).transition(target)

    assert moved == 1
    task.refresh_from_db()
    assert task.status == target


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_illegal_transitions_leave_the_row_alone(task, source, target):
    Task.objects.filter(pk=task.pk).update(status=source)

    try:
        moved = Task.objects.filter(pk=task.pk).transition(target)
    except IllegalTransition:
        moved = 0

    assert moved == 0
    task.refresh_from_db()
    assert task.status == source


def test_completed_is_final():
    assert TRANSITIONS[Status.COMPLETED] == frozenset()
    assert Status.COMPLETED in FINISHED


def test_status_cannot_be_smuggled_in_as_a_change(task):
    with pytest.raises(IllegalTransition):
        Task.objects.filter(pk=task.pk).transition(Status.IN_PROGRESS, status=Status.COMPLETED)


def test_a_transition_only_moves_rows_matching_the_callers_filter(task):
    moved = Task.objects.filter(pk=task.pk, attempts=5).transition(Status.IN_PROGRESS)

    assert moved == 0
    task.refresh_from_db()
    assert task.status == Status.QUEUED


def test_deleting_a_user_deletes_their_tasks(owner, make_user):
    other = make_user("keeps-hers")
    mine = Task.objects.create(owner=owner, type="demo", timeout=60)
    hers = Task.objects.create(owner=other, type="demo", timeout=60)

    owner.delete()

    assert not Task.objects.filter(pk=mine.pk).exists()
    assert Task.objects.filter(pk=hers.pk).exists()


def test_lookups_by_owner_use_an_owner_index_without_one_of_the_foreign_keys_own(owner):
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, Task._meta.db_table)
    by_columns = [spec["columns"] for spec in indexes.values() if spec["index"]]
    # Every index that starts with the owner serves the foreign key's lookups.
    assert ["owner_id"] not in by_columns
    assert ["owner_id", "id"] in by_columns

    explain = "EXPLAIN QUERY PLAN" if connection.vendor == "sqlite" else "EXPLAIN"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        # What the foreign key's ON DELETE check and a user's deletion read.
        cursor.execute(f"{explain} SELECT 1 FROM tasks_task WHERE owner_id = %s", [owner.pk])
        plan = "\n".join(str(row) for row in cursor.fetchall())
    assert "task_owner" in plan, plan
