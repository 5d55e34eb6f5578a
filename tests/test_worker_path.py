"""The statements every task's run makes (claim, complete), written by hand
for speed: they must behave exactly like the ORM's conditional updates."""

from datetime import datetime

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction

from tasks import services, worker
from tasks.models import IllegalTransition, Status, Task

from .tasks_in_states import queued


def test_claim_returns_the_row_as_it_wrote_it(owner):
    task = queued(owner)
    claimed = services.claim_task(task_id=task.pk, attempt=1, worker="host:7")
    assert isinstance(claimed, Task)
    stored = Task.objects.get(pk=task.pk)
    for field in Task._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(stored, field.attname), field.name
    assert claimed.status == Status.IN_PROGRESS
    assert claimed.attempts == 1 and claimed.worker == "host:7"
    assert isinstance(claimed.args, dict) and claimed.args["text"] == "later"  # decoded JSON
    assert isinstance(claimed.started_at, datetime) and claimed.started_at.tzinfo is not None
    assert claimed.lease_expires_at > claimed.started_at


def test_a_second_claim_of_the_same_attempt_gets_nothing(owner):
    task = queued(owner)
    assert services.claim_task(task_id=task.pk, attempt=1, worker="a") is not None
    assert services.claim_task(task_id=task.pk, attempt=1, worker="b") is None
    assert services.claim_task(task_id=task.pk, attempt=2, worker="b") is None
    assert Task.objects.get(pk=task.pk).worker == "a"


def test_complete_only_moves_the_current_attempt(owner):
    task = queued(owner)
    services.claim_task(task_id=task.pk, attempt=1, worker="a")
    assert not services.complete_task(task_id=task.pk, attempt=2, output={"n": 1})
    assert services.complete_task(task_id=task.pk, attempt=1, output={"n": 1})
    assert not services.complete_task(task_id=task.pk, attempt=1, output={"n": 2})
    task.refresh_from_db()
    assert task.status == Status.COMPLETED and task.output == {"n": 1}
    assert task.progress == 100 and task.lease_expires_at is None


def test_the_hand_written_transitions_keep_the_state_machine(owner):
    task = queued(owner)
    with pytest.raises(IllegalTransition):
        Task.objects.transition_one(task.pk, Status.QUEUED, expect={}, status="x")
    # Nothing may move a queued task straight to completed.
    assert not Task.objects.transition_pk(task.pk, Status.COMPLETED, expect={}, output=1)
    assert Task.objects.get(pk=task.pk).status == Status.QUEUED


def test_a_claim_on_a_dead_connection_is_made_again_on_a_new_one(owner, monkeypatch):
    task = queued(owner)
    real = services.claim_task
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    closed = []
    # The test's own transaction must survive: record the close, do not close.
    monkeypatch.setattr(connection, "close", lambda: closed.append(True))
    monkeypatch.setattr(services, "claim_task", flaky)
    claimed = worker._claim(task.pk, 1, "host:1")
    assert len(calls) == 2 and closed == [True]
    assert claimed is not None and claimed.status == Status.IN_PROGRESS


def test_a_claim_that_fails_twice_is_an_outage_and_raises(owner, monkeypatch):
    task = queued(owner)

    def down(**kwargs):
        raise OperationalError("could not connect")

    monkeypatch.setattr(connection, "close", lambda: None)
    monkeypatch.setattr(services, "claim_task", down)
    with pytest.raises(OperationalError):
        worker._claim(task.pk, 1, "host:1")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_claim_and_complete_are_prepared_once_per_connection(owner):
    first, second = queued(owner), queued(owner)
    for task in (first, second):
        assert services.claim_task(task_id=task.pk, attempt=1, worker="a") is not None
        assert services.complete_task(task_id=task.pk, attempt=1, output=task.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'UPDATE%%'"
        )
        statements = [row[0] for row in cursor.fetchall()]
    assert len(statements) == 2, statements  # the claim and the completion, once each
    first.refresh_from_db()
    assert first.status == Status.COMPLETED and first.output == first.pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_an_error_in_a_prepared_statement_is_a_django_error(owner):
    task = queued(owner)
    with pytest.raises(IntegrityError):  # django.db's, not psycopg's
        Task.objects.transition_pk(task.pk, Status.CANCELLED, expect={}, progress=-5)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_the_claim_finds_its_row_by_primary_key_even_with_stale_statistics(owner):
    # A fresh burst of queued rows that ANALYZE has not seen: with a plain
    # `status IN (...)`, PostgreSQL reads every queued entry of a status index.
    Task.objects.bulk_create(
        Task(owner=owner, type="wordcount", timeout=60, transport_id=f"b{i}") for i in range(300)
    )
    task = queued(owner)
    sql, params = Task.objects.all()._update_one(
        task.pk, Status.IN_PROGRESS, {"attempts": 0}, {"worker": "w"}
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "tasks_task_pkey" in plan, plan


def test_insert_one_writes_what_save_would(owner):
    submitted = services.submit_task(
        owner=owner, type_name="wordcount", args={"text": "a b"}, priority=5, delay=60
    ).task
    stored = Task.objects.get(pk=submitted.pk)
    assert not submitted._state.adding and submitted._state.db == "default"
    for field in Task._meta.concrete_fields:
        assert getattr(submitted, field.attname) == getattr(stored, field.attname), field.name
    assert stored.args == {"text": "a b", "top": 10} and stored.priority == 5
    assert stored.status == Status.QUEUED and stored.run_at is not None


def test_insert_one_raises_django_integrity_errors(owner):
    first = services.submit_task(
        owner=owner, type_name="wordcount", args={"text": "x"}, idempotency_key="k"
    ).task
    clash = Task(owner=owner, type="wordcount", timeout=5, idempotency_key="k")
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.insert_one(clash)
    assert Task.objects.filter(idempotency_key="k").get().pk == first.pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_lookups_by_owner_use_an_owner_index_without_one_of_the_foreign_keys_own(owner, make_user):
    crowd = make_user("crowd")
    Task.objects.bulk_create(
        Task(owner=crowd, type="wordcount", timeout=60, transport_id=f"o{i}") for i in range(3000)
    )
    queued(owner)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task")
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks_task' "
            "AND indexdef LIKE '%%(owner_id)'"
        )
        assert cursor.fetchall() == []  # no single-column index on owner_id
        # What the foreign key's ON DELETE check and a user's deletion read.
        cursor.execute("EXPLAIN SELECT 1 FROM tasks_task WHERE owner_id = %s", [owner.pk])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "task_owner" in plan, plan


def test_deleting_a_user_deletes_their_tasks(owner, make_user):
    other = make_user("keeps-hers")
    mine, hers = queued(owner), queued(other)
    owner.delete()
    assert not Task.objects.filter(pk=mine.pk).exists()
    assert Task.objects.filter(pk=hers.pk).exists()
