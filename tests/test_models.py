import pytest

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
