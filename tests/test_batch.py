"""POST /tasks/batch: validated first, created in one transaction, "$N"
references for chains and fan-ins, the cap counting every item."""

import pytest

from tasks import queue, worker
from tasks.models import Status, Task, TaskDependency

pytestmark = pytest.mark.django_db

ECHO = {"type": "test.echo", "args": {"payload": 1}}


def batch(api, items, **extra):
    return api.post("/tasks/batch", {"tasks": items, **extra}, format="json")


def run_claimed(task_id):
    claimed = queue.claim_one(task_id=task_id, cluster="test")
    assert claimed is not None, f"task {task_id} is not runnable"
    return worker.run_task(*claimed.run_args(), claimed_by="test")


def test_a_batch_creates_every_task_in_order(api, owner):
    items = [{"type": "test.echo", "args": {"payload": i}} for i in range(5)]
    response = batch(api, items)
    assert response.status_code == 202, response.content
    ids = response.json()["task_ids"]
    assert len(ids) == 5 and ids == sorted(ids)
    assert response.json()["message"] == "5 tasks started"
    assert [Task.objects.get(pk=i).args["payload"] for i in ids] == list(range(5))
    assert all(Task.objects.get(pk=i).owner == owner for i in ids)


def test_a_chain_of_three_runs_in_order(api):
    items = [
        {**ECHO, "args": {"payload": "a"}},
        {**ECHO, "args": {"payload": "b"}, "depends_on": ["$0"]},
        {**ECHO, "args": {"payload": "c"}, "depends_on": ["$1"]},
    ]
    a, b, c = batch(api, items).json()["task_ids"]
    assert [c_.id for c_ in queue.claim(cluster="x", limit=10)] == [a]
    assert Task.objects.get(pk=b).waiting
    run_claimed_after_claim(a)
    assert Task.objects.get(pk=b).waiting is False and Task.objects.get(pk=c).waiting
    run_claimed(b)
    run_claimed(c)
    tasks = Task.objects.filter(pk__in=[a, b, c]).order_by("pk")
    assert [t.status for t in tasks] == ["completed"] * 3
    assert tasks[0].finished_at <= tasks[1].started_at
    assert tasks[1].finished_at <= tasks[2].started_at


def run_claimed_after_claim(task_id):
    """Run an attempt already claimed by cluster "x"."""
    task = Task.objects.get(pk=task_id)
    return worker.run_task(
        task.pk, task.attempts, task.type, task.args, task.timeout, task.owner_id, claimed_by="x"
    )


def test_a_fan_in_with_existing_and_batch_parents(api, owner):
    earlier = api.post("/tasks", ECHO, format="json").json()["task_id"]
    items = [ECHO, ECHO, {**ECHO, "depends_on": ["$0", "$1", earlier]}]
    first, second, join = batch(api, items).json()["task_ids"]
    assert set(TaskDependency.objects.filter(task_id=join).values_list("parent_id", flat=True)) == {
        first,
        second,
        earlier,
    }
    body = api.get(f"/tasks/{join}").json()
    assert body["waiting_for"] == sorted([earlier, first, second])


def test_a_failed_parent_in_the_batch_cancels_its_dependant(api):
    items = [{"type": "test.fail", "args": {}}, {**ECHO, "depends_on": ["$0"]}]
    parent, child = batch(api, items).json()["task_ids"]
    assert run_claimed(parent) == "failed"
    assert Task.objects.get(pk=child).status == Status.CANCELLED


@pytest.mark.parametrize(
    ("items", "index", "field"),
    [
        ([ECHO, {**ECHO, "depends_on": ["$1"]}], "1", "depends_on"),  # itself
        ([ECHO, {**ECHO, "depends_on": ["$5"]}], "1", "depends_on"),  # later
        ([{**ECHO, "depends_on": ["$-1"]}], "0", "depends_on"),
        ([{**ECHO, "depends_on": ["0"]}], "0", "depends_on"),
        ([{**ECHO, "depends_on": [999999]}], "0", "depends_on"),  # unknown id
        ([ECHO, {"type": "no.such.type"}], "1", "type"),
        ([ECHO, {"type": "test.echo", "args": {"nope": 1}}], "1", "args"),
        ([ECHO, {"type": "test.echo", "priority": 500}], "1", "priority"),
        ([ECHO, {**ECHO, "surprise": 1}], "1", "surprise"),
        ([ECHO, "not an object"], "1", "non_field_errors"),
    ],
)
def test_an_invalid_item_creates_nothing(api, items, index, field):
    response = batch(api, items)
    assert response.status_code == 400, response.content
    errors = response.json()["fields"]["tasks"]
    assert field in errors[index], errors
    assert not Task.objects.exists()


def test_every_invalid_item_is_listed(api):
    items = [{"type": "nope"}, ECHO, {"type": "test.echo", "args": {"x": 1}}]
    errors = batch(api, items).json()["fields"]["tasks"]
    assert set(errors) == {"0", "2"}


@pytest.mark.parametrize(
    "body",
    [{"tasks": []}, {"tasks": "many"}, {}, {"tasks": [ECHO], "extra": 1}, [ECHO]],
)
def test_a_malformed_body_is_a_400(api, body):
    response = api.post("/tasks/batch", body, format="json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_more_than_the_batch_limit_is_a_400(api, task_settings, settings):
    task_settings(MAX_BATCH=3)
    response = batch(api, [ECHO] * 4)
    assert response.status_code == 400
    assert "tasks" in response.json()["fields"]
    assert not Task.objects.exists()


def test_the_cap_counts_every_item(api, owner, task_settings):
    task_settings(MAX_UNFINISHED_PER_USER=5)
    api.post("/tasks", ECHO, format="json")
    api.post("/tasks", ECHO, format="json")
    assert batch(api, [ECHO] * 4).status_code == 429
    assert Task.objects.count() == 2
    assert batch(api, [ECHO] * 3).status_code == 202
    assert Task.objects.count() == 5


def test_another_users_task_in_depends_on_is_unknown(api, outsider_api):
    theirs = outsider_api.post("/tasks", ECHO, format="json").json()["task_id"]
    response = batch(api, [ECHO, {**ECHO, "depends_on": [theirs]}])
    assert response.status_code == 400
    assert "depends_on" in response.json()["fields"]["tasks"]["1"]
    assert Task.objects.count() == 1


def test_unique_key_in_a_batch_answers_with_the_first(api):
    item = {**ECHO, "unique_key": "k1"}
    response = batch(api, [item, item, {**ECHO, "depends_on": ["$1"]}])
    assert response.status_code == 202, response.content
    first, second, third = response.json()["task_ids"]
    assert first == second and response.json()["deduplicated"] == [1]
    assert response.json()["message"] == "2 tasks started"
    assert list(
        TaskDependency.objects.filter(task_id=third).values_list("parent_id", flat=True)
    ) == [first]
    again = batch(api, [item]).json()
    assert again["task_ids"] == [first] and again["deduplicated"] == [0]
    assert again["message"] == "0 tasks started"
    # The item answered with an earlier one still releases its dependant.
    assert Task.objects.get(pk=third).waiting
    run_claimed(first)
    assert not Task.objects.get(pk=third).waiting


def test_depending_on_an_item_answered_with_an_existing_task(api):
    existing = api.post("/tasks", {**ECHO, "unique_key": "k2"}, format="json").json()["task_id"]
    response = batch(api, [{**ECHO, "unique_key": "k2"}, {**ECHO, "depends_on": ["$0"]}])
    assert response.json()["task_ids"][0] == existing
    child = response.json()["task_ids"][1]
    assert Task.objects.get(pk=existing).has_dependants
    run_claimed(existing)
    assert not Task.objects.get(pk=child).waiting


def test_turns_interleave_users_as_single_submits_would(api, outsider_api):
    mine = batch(api, [ECHO] * 3).json()["task_ids"]
    theirs = outsider_api.post("/tasks", ECHO, format="json").json()["task_id"]
    claimed = [c.id for c in queue.claim(cluster="x", limit=10)]
    # The other user's single task takes the turn after the head, not the back.
    assert claimed.index(theirs) <= 1
    assert set(claimed) == {*mine, theirs}


def test_unauthenticated_is_a_401():
    from rest_framework.test import APIClient

    assert APIClient().post("/tasks/batch", {"tasks": [ECHO]}, format="json").status_code == 401


# --- Idempotency-Key ----------------------------------------------------------------


def batch_with_key(client, key, items):
    return client.post("/tasks/batch", {"tasks": items}, format="json", HTTP_IDEMPOTENCY_KEY=key)


CHAIN = [ECHO, {**ECHO, "depends_on": ["$0"]}]


def test_a_batch_sent_again_with_its_key_answers_with_the_same_tasks(api, outsider_api):
    first = batch_with_key(api, "b-1", CHAIN)
    again = batch_with_key(api, "b-1", CHAIN)

    assert first.status_code == 202, first.content
    assert again.status_code == 200, again.content
    assert again.json()["task_ids"] == first.json()["task_ids"]
    assert again.json()["message"] == "Batch already exists"
    assert Task.objects.count() == 2
    # Keys are per user, and a task's key and a batch's are apart.
    assert batch_with_key(outsider_api, "b-1", CHAIN).status_code == 202
    single = api.post("/tasks", ECHO, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    assert single.status_code == 202
    assert Task.objects.count() == 5


def test_a_batch_key_with_other_items_is_a_409_and_creates_nothing(api):
    assert batch_with_key(api, "b-2", CHAIN).status_code == 202
    other = batch_with_key(api, "b-2", [ECHO])
    assert other.status_code == 409
    assert other.json()["code"] == "conflict"
    assert Task.objects.count() == 2
    bad = batch_with_key(api, "has space", CHAIN)
    assert bad.status_code == 400
    assert "Idempotency-Key" in bad.json()["fields"]
    assert Task.objects.count() == 2


def test_an_expired_batch_key_makes_a_new_batch_and_housekeeping_forgets_it(
    api, owner, task_settings
):
    from datetime import timedelta

    from django.utils import timezone

    from tasks import maintenance
    from tasks.models import IdempotentBatch

    first = batch_with_key(api, "b-3", [ECHO]).json()["task_ids"]
    IdempotentBatch.objects.update(created_at=timezone.now() - timedelta(hours=25))
    second = batch_with_key(api, "b-3", [ECHO])
    assert second.status_code == 202
    assert second.json()["task_ids"] != first
    assert IdempotentBatch.objects.count() == 1

    IdempotentBatch.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert maintenance.forget_expired_batches() == 1
    assert not IdempotentBatch.objects.exists()


def test_a_refused_batch_keeps_its_key_free(api, task_settings):
    task_settings(MAX_UNFINISHED_PER_USER=1)
    refused = batch_with_key(api, "b-4", [ECHO, ECHO])
    assert refused.status_code == 429
    task_settings(MAX_UNFINISHED_PER_USER=10)
    assert batch_with_key(api, "b-4", [ECHO, ECHO]).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_racing_batches_with_one_key_make_one_batch(make_user, settings):
    from tests.conftest import client_for, race

    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    owner = make_user("batcher")
    clients = [client_for(owner) for _ in range(4)]

    answers = race(*[lambda c=c: batch_with_key(c, "b-5", CHAIN) for c in clients])

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 202]
    assert len({tuple(a.json()["task_ids"]) for a in answers}) == 1
    assert Task.objects.filter(owner=owner).count() == 2
