"""Webhooks: the API and its hostile input, owner scoping, the SSRF guard,
the outbox rows written with task transitions, and the sender (signatures
checked with the Standard Webhooks library, retries with backoff, the 1 KB
cap, no redirects, timeouts, redelivery)."""

import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from tasks import lifecycle, queue, services, worker
from tasks.models import Status, Task
from tests.webhook_receiver import Receiver
from webhooks import delivery, outbox, targets
from webhooks.models import Delivery, DeliveryAttempt, Webhook

pytestmark = pytest.mark.django_db

PUBLIC = "https://hooks.example.com/in"
# What the fake resolver answers (no DNS in tests).
ADDRESSES = {
    "hooks.example.com": ["93.184.216.34"],
    "other.example.com": ["93.184.216.35"],
    "sneaky.example.com": ["93.184.216.34", "10.1.2.3"],
    "metadata.example.com": ["169.254.169.254"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    real = targets.resolve

    def resolve(host, port):
        if host in ADDRESSES:
            return ADDRESSES[host]
        if host.endswith(".invalid"):
            raise OSError("Name or service not known")
        return real(host, port)  # IP literals resolve without DNS

    monkeypatch.setattr(targets, "resolve", resolve)


@pytest.fixture
def allow_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def create(api, **fields):
    body = {"url": PUBLIC, "events": ["task.completed"], **fields}
    return api.post("/webhooks", body, format="json")


def hook_for(user, url=PUBLIC, events=outbox.EVENTS, types=()):
    return Webhook.objects.create(
        owner=user, url=url, events=list(events), types=list(types), secret=_secret()
    )


def _secret():
    from webhooks.services import new_secret

    return new_secret()


def submit(owner, type_name="test.echo", **fields):
    args = fields.pop("args", {"payload": 1})
    return services.submit_task(owner=owner, type_name=type_name, args=args, **fields).task


def run_claimed(task_id):
    """Run a task the way a worker does: claim it, then run the attempt."""
    claimed = queue.claim_one(task_id=task_id, cluster="test")
    assert claimed is not None, f"task {task_id} is not runnable"
    return worker.run_task(*claimed.run_args(), claimed_by="test")


def events_of(webhook):
    return list(
        Delivery.objects.filter(webhook=webhook).order_by("id").values_list("event", "task_id")
    )


def make_due(webhook):
    Delivery.objects.filter(webhook=webhook, state="pending").update(next_attempt_at=timezone.now())


# --- the API ---------------------------------------------------------------------------


def test_create_shows_the_secret_once(api, owner):
    response = create(api, events=["task.completed", "task.failed"], types=["test.echo"])

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["url"] == PUBLIC and body["owner"] == "owner"
    assert body["events"] == ["task.completed", "task.failed"]
    assert body["types"] == ["test.echo"] and body["active"] is True
    assert response["Location"] == f"/webhooks/{body['id']}"
    assert response["Cache-Control"] == "no-store"
    row = Webhook.objects.get(pk=body["id"])
    assert row.owner == owner and row.secret == body["secret"]
    # Readable by the Standard Webhooks library as a secret.
    Verifier(body["secret"])

    again = api.get(f"/webhooks/{body['id']}").json()
    assert "secret" not in again and again["id"] == body["id"]
    listed = api.get("/webhooks").json()
    assert [w["id"] for w in listed["results"]] == [body["id"]]
    assert "secret" not in listed["results"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example.com/x", "events": ["task.completed"]}, "url"),
        ({"url": "javascript:alert(1)", "events": ["task.completed"]}, "url"),
        ({"url": "https:///nohost", "events": ["task.completed"]}, "url"),
        ({"url": "https://user:pw@hooks.example.com/", "events": ["task.completed"]}, "url"),
        ({"url": "https://hooks.example.com:99999/", "events": ["task.completed"]}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 2000, "events": ["task.completed"]}, "url"),
        ({"url": "https://hooks.example.com/a b", "events": ["task.completed"]}, "url"),
        ({"url": 12, "events": ["task.completed"]}, "url"),
        ({"url": ["https://hooks.example.com/"], "events": ["task.completed"]}, "url"),
        ({"events": ["task.completed"]}, "url"),
        ({"url": PUBLIC}, "events"),
        ({"url": PUBLIC, "events": []}, "events"),
        ({"url": PUBLIC, "events": ["task.exploded"]}, "events"),
        ({"url": PUBLIC, "events": "task.completed"}, "events"),
        ({"url": PUBLIC, "events": [{"a": 1}]}, "events"),
        ({"url": PUBLIC, "events": ["task.completed"], "types": ["no.such.type"]}, "types"),
        ({"url": PUBLIC, "events": ["task.completed"], "types": "test.echo"}, "types"),
        ({"url": PUBLIC, "events": ["task.completed"], "types": [None]}, "types"),
        ({"url": PUBLIC, "events": ["task.completed"], "secret": "mine"}, "secret"),
    ],
)
def test_bad_input_is_a_field_error(api, body, field):
    response = api.post("/webhooks", body, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]
    assert not Webhook.objects.exists()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'"a string"', b"null", b"[" * 100 + b"]" * 100],
)
def test_bodies_that_are_not_an_object_are_refused(api, body):
    response = api.generic("POST", "/webhooks", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] in {"invalid", "parse_error"}
    assert not Webhook.objects.exists()


def test_a_huge_body_is_refused(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"url": PUBLIC, "events": ["task.completed"], "x": "a" * 20_000})

    response = api.generic("POST", "/webhooks", body, content_type="application/json")

    assert response.status_code == 413 and response.json()["code"] == "too_large"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[2002:a9fe:a9fe::]/latest",  # 6to4 of 169.254.169.254
        "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hook",  # Teredo, client 10.0.0.1
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://100.64.0.1/hook",
        "https://metadata.example.com/",
        "https://sneaky.example.com/",
    ],
)
def test_private_targets_are_refused(api, url):
    response = create(api, url=url)

    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"
    assert "refused" in response.json()["fields"]["url"][0]
    assert not Webhook.objects.exists()


def test_private_targets_are_allowed_with_the_switch(api, allow_private):
    assert create(api, url="http://127.0.0.1:18150/hook").status_code == 201


def test_a_host_that_does_not_resolve_is_refused(api):
    response = create(api, url="https://nowhere.invalid/hook")

    assert response.status_code == 400
    assert "does not resolve" in response.json()["fields"]["url"][0]


def test_patch_changes_events_types_url_and_pauses(api, owner):
    webhook_id = create(api).json()["id"]

    response = api.patch(
        f"/webhooks/{webhook_id}",
        {"events": ["task.failed"], "types": ["test.fail"], "active": False},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["events"] == ["task.failed"]
    assert response.json()["active"] is False
    row = Webhook.objects.get(pk=webhook_id)
    assert row.events == ["task.failed"] and row.types == ["test.fail"] and not row.active
    url = "https://other.example.com/new"
    assert api.patch(f"/webhooks/{webhook_id}", {"url": url}, format="json").status_code == 200
    assert Webhook.objects.get(pk=webhook_id).url == url


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://10.0.0.1/"},
        {"events": []},
        {"events": ["nope"]},
        {"types": ["nope"]},
        {"active": "maybe"},
        {"owner": 1},
    ],
)
def test_a_bad_patch_changes_nothing(api, body):
    webhook_id = create(api).json()["id"]

    response = api.patch(f"/webhooks/{webhook_id}", body, format="json")

    assert response.status_code == 400 and response.json()["code"] == "invalid"
    row = Webhook.objects.get(pk=webhook_id)
    assert row.url == PUBLIC and row.events == ["task.completed"] and row.active


def test_delete_removes_the_webhook_and_its_deliveries(api, owner):
    webhook_id = create(api).json()["id"]
    task = submit(owner)
    run_claimed(task.pk)
    assert Delivery.objects.filter(webhook_id=webhook_id).count() == 1

    assert api.delete(f"/webhooks/{webhook_id}").status_code == 204
    assert not Webhook.objects.filter(pk=webhook_id).exists()
    assert not Delivery.objects.exists()


def test_another_users_webhook_is_not_found(api, outsider_api, owner):
    webhook_id = create(api).json()["id"]
    run_claimed(submit(owner).pk)
    delivery_id = Delivery.objects.get().pk

    for method, path in [
        ("get", f"/webhooks/{webhook_id}"),
        ("patch", f"/webhooks/{webhook_id}"),
        ("delete", f"/webhooks/{webhook_id}"),
        ("get", f"/webhooks/{webhook_id}/deliveries"),
        ("post", f"/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"),
    ]:
        response = getattr(outsider_api, method)(path, {"active": False}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"
    assert outsider_api.get("/webhooks").json()["results"] == []
    assert Webhook.objects.get(pk=webhook_id).active
    assert Delivery.objects.get().attempts == 0


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/webhooks/abc", 400),
        ("/webhooks/0", 404),
        ("/webhooks/-3", 404),
        ("/webhooks/99999999999999999999999", 404),
        ("/webhooks/12345", 404),
        ("/webhooks/12345/deliveries", 404),
        ("/webhooks/x/deliveries", 400),
    ],
)
def test_bad_and_unknown_ids(api, path, status):
    response = api.get(path)

    assert response.status_code == status
    assert response.json()["code"] == ("invalid" if status == 400 else "not_found")


def test_unknown_and_bad_delivery_ids(api):
    webhook_id = create(api).json()["id"]

    bad = api.post(f"/webhooks/{webhook_id}/deliveries/zz/redeliver")
    unknown = api.post(f"/webhooks/{webhook_id}/deliveries/777/redeliver")

    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


def test_a_bad_cursor_is_a_400(api):
    create(api)

    forged = base64.b64encode(b"p=not-an-id").decode()

    response = api.get("/webhooks", {"cursor": forged})

    assert response.status_code == 400 and response.json()["code"] == "invalid"


def test_the_list_pages_newest_first(api):
    ids = [create(api).json()["id"] for _ in range(3)]

    first = api.get("/webhooks", {"page_size": 2}).json()
    second = api.get(first["next"])

    assert [w["id"] for w in first["results"]] == ids[::-1][:2]
    assert [w["id"] for w in second.json()["results"]] == ids[:1]


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Api-Key nope.nope"])
def test_bad_credentials(client, header):
    headers = {"HTTP_AUTHORIZATION": header} if header else {}

    response = client.get("/webhooks", **headers)

    assert response.status_code == 401
    assert response.json()["code"] in {"not_authenticated", "authentication_failed"}


def test_an_api_key_acts_as_its_owner(api, owner):
    key = api.post("/api-keys", {"name": "ci"}, format="json").json()["key"]
    program = APIClient()
    program.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")

    created = create(program)

    assert created.status_code == 201, created.json()
    assert Webhook.objects.get(pk=created.json()["id"]).owner == owner
    assert [w["id"] for w in api.get("/webhooks").json()["results"]] == [created.json()["id"]]


def test_a_user_has_at_most_the_cap(api, settings):
    settings.WEBHOOK_MAX_PER_USER = 2
    assert create(api).status_code == 201
    assert create(api).status_code == 201

    response = create(api)

    assert response.status_code == 429 and response.json()["code"] == "cap_reached"
    assert Webhook.objects.count() == 2


# --- the outbox: events recorded with the transitions ---------------------------------


def test_a_completed_task_records_started_and_completed_as_get_shows_it(api, owner):
    webhook = hook_for(owner)
    task = submit(owner)

    assert run_claimed(task.pk) == "completed"

    assert events_of(webhook) == [("task.started", task.pk), ("task.completed", task.pk)]
    started, completed = Delivery.objects.filter(webhook=webhook).order_by("id")
    body = json.loads(completed.body)
    assert body["type"] == "task.completed" and body["timestamp"]
    assert body["data"] == api.get(f"/tasks/{task.pk}").json()
    assert body["data"]["status"] == "completed"
    # The started event shows the task as it was then, not as it ended.
    early = json.loads(started.body)["data"]
    assert early["status"] == "in_progress" and early["output"] is None
    assert started.msg_id != completed.msg_id
    assert started.next_attempt_at is not None
    assert started.expires_at - started.created_at == timedelta(hours=24)


def test_a_failed_task_records_failed_only_at_the_end(owner):
    webhook = hook_for(owner, events=["task.failed"])
    task = submit(owner, "test.fail", args={}, max_retries=1)

    assert run_claimed(task.pk) == "queued"  # an automatic retry: no event
    assert events_of(webhook) == []
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
    assert run_claimed(task.pk) == "failed"

    assert events_of(webhook) == [("task.failed", task.pk)]
    data = json.loads(Delivery.objects.get().body)["data"]
    assert data["status"] == "failed" and data["error"]["type"] == "ValueError"
    assert "traceback" not in data["error"]


def test_a_cancelled_task_records_cancelled(api, owner):
    webhook = hook_for(owner, events=["task.cancelled"])
    task = submit(owner, delay=3600)

    assert api.post(f"/tasks/{task.pk}/cancel").status_code == 200

    assert events_of(webhook) == [("task.cancelled", task.pk)]
    assert json.loads(Delivery.objects.get().body)["data"]["status"] == "cancelled"


def test_a_dependant_cancelled_by_its_parent_records_cancelled(owner):
    webhook = hook_for(owner, events=["task.cancelled", "task.failed"])
    parent = submit(owner, "test.fail", args={})
    child = submit(owner, depends_on=[parent.pk])

    assert run_claimed(parent.pk) == "failed"

    assert events_of(webhook) == [("task.failed", parent.pk), ("task.cancelled", child.pk)]


def test_a_task_whose_lease_ran_out_records_failed(owner, task_settings):
    task_settings(MAX_LOST_REQUEUES=0)
    webhook = hook_for(owner, events=["task.failed", "task.started"])
    task = submit(owner)
    claimed = queue.claim_one(task_id=task.pk, cluster="test")
    assert lifecycle.start_attempt(task_id=task.pk, attempt=claimed.attempt, worker="w")
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    from tasks import maintenance

    assert maintenance.reap_expired_leases() == 1

    assert events_of(webhook) == [("task.started", task.pk), ("task.failed", task.pk)]


def test_only_the_events_and_types_asked_for(owner):
    only_fail = hook_for(owner, events=["task.failed", "task.completed"], types=["test.fail"])
    only_done = hook_for(owner, events=["task.completed"])
    paused = hook_for(owner)
    paused.active = False
    paused.save()

    echo = submit(owner)
    run_claimed(echo.pk)
    failing = submit(owner, "test.fail", args={})
    run_claimed(failing.pk)

    assert events_of(only_fail) == [("task.failed", failing.pk)]
    assert events_of(only_done) == [("task.completed", echo.pk)]
    assert events_of(paused) == []


def test_another_users_tasks_are_not_sent(owner, outsider):
    watcher = hook_for(outsider)

    run_claimed(submit(owner).pk)

    assert events_of(watcher) == []
    assert not Delivery.objects.exists()


def test_owners_without_webhooks_keep_one_update_per_start_and_completion(
    owner, outsider, django_assert_num_queries
):
    hook_for(outsider)  # someone else's webhook changes nothing for owner
    task = submit(owner)
    claimed = queue.claim_one(task_id=task.pk, cluster="test")

    with django_assert_num_queries(1):
        assert lifecycle.start_attempt(task_id=task.pk, attempt=claimed.attempt, worker="w")
    with django_assert_num_queries(1):
        assert lifecycle.complete_attempt(task_id=task.pk, attempt=claimed.attempt, output={})
    assert Task.objects.get(pk=task.pk).status == Status.COMPLETED
    assert not Delivery.objects.exists()


def test_a_late_write_from_a_lost_attempt_records_nothing(owner):
    webhook = hook_for(owner)
    task = submit(owner)
    claimed = queue.claim_one(task_id=task.pk, cluster="test")
    lifecycle.start_attempt(task_id=task.pk, attempt=claimed.attempt, worker="w")

    assert not lifecycle.complete_attempt(task_id=task.pk, attempt=claimed.attempt + 1, output={})

    assert events_of(webhook) == [("task.started", task.pk)]


# --- sending -----------------------------------------------------------------------------


def test_a_delivery_is_signed_and_retried_after_a_500_with_the_same_id(
    owner, receiver, allow_private
):
    receiver.script = [(500, b"try later", 0.0), (200, b"thanks", 0.0)]
    webhook = hook_for(owner, url=receiver.url, events=["task.completed"])
    task = submit(owner)
    run_claimed(task.pk)

    assert delivery.deliver_due() == 1
    pending = Delivery.objects.get()
    assert pending.state == "pending" and pending.attempts == 1
    assert pending.last_status_code == 500
    wait = (pending.next_attempt_at - timezone.now()).total_seconds()
    assert 1.5 <= wait <= 5.5  # the first backoff: 2.5 to 5 s with jitter
    assert delivery.deliver_due() == 0  # not due yet
    make_due(webhook)
    assert delivery.deliver_due() == 1

    done = Delivery.objects.get()
    assert done.state == "delivered" and done.delivered_at and done.attempts == 2
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == done.msg_id
    assert first.body == second.body == done.body.encode()
    assert first.path == "/hook?source=tests"
    for request in receiver.requests:
        payload = Verifier(webhook.secret).verify(request.body, request.headers)
        assert payload["type"] == "task.completed" and payload["data"]["id"] == task.pk
        assert request.headers["webhook-signature"].startswith("v1,")
        assert request.headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Verifier(_secret()).verify(first.body, first.headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(webhook.secret).verify(first.body + b" ", first.headers)
    attempts = list(DeliveryAttempt.objects.filter(delivery=done).order_by("number"))
    assert [(a.number, a.status_code, a.response_body) for a in attempts] == [
        (1, 500, "try later"),
        (2, 200, "thanks"),
    ]


def test_the_deliveries_api_lists_attempts_and_redelivers(api, owner, receiver, allow_private):
    webhook = hook_for(owner, url=receiver.url, events=["task.completed"])
    run_claimed(submit(owner).pk)
    delivery.deliver_due()
    sent = Delivery.objects.get()

    listed = api.get(f"/webhooks/{webhook.pk}/deliveries").json()["results"]

    assert len(listed) == 1
    assert listed[0]["msg_id"] == sent.msg_id and listed[0]["state"] == "delivered"
    assert listed[0]["attempt_log"][0]["status_code"] == 200
    assert listed[0]["attempt_log"][0]["response_body"] == "ok"

    response = api.post(f"/webhooks/{webhook.pk}/deliveries/{sent.pk}/redeliver")

    assert response.status_code == 202
    assert response.json()["state"] == "pending"
    assert delivery.deliver_due() == 1
    assert [r.headers["webhook-id"] for r in receiver.requests] == [sent.msg_id] * 2
    assert Delivery.objects.get().attempts == 2


def test_only_a_kilobyte_of_the_answer_is_kept(owner, receiver, allow_private):
    receiver.script = [(200, "é".encode() * 3000, 0.0)]
    hook_for(owner, url=receiver.url)
    Delivery.objects.all().delete()
    run_claimed(submit(owner).pk)
    Delivery.objects.filter(event="task.started").delete()

    delivery.deliver_due()

    kept = DeliveryAttempt.objects.get().response_body
    assert 0 < len(kept.encode()) <= delivery.RESPONSE_KEPT + 3  # a cut character is replaced
    assert kept.startswith("é")


def test_redirects_are_not_followed(owner, receiver, allow_private):
    receiver.script = [(302, b"", 0.0)]
    hook_for(owner, url=receiver.url, events=["task.completed"])
    run_claimed(submit(owner).pk)

    delivery.deliver_due()

    assert len(receiver.requests) == 1
    row = Delivery.objects.get()
    assert row.state == "pending" and row.last_status_code == 302


def test_a_slow_receiver_times_out(owner, receiver, allow_private, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.script = [(200, b"late", 1.5)]
    hook_for(owner, url=receiver.url, events=["task.completed"])
    run_claimed(submit(owner).pk)

    delivery.deliver_due()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and "timed out" in attempt.error.lower()
    assert Delivery.objects.get().state == "pending"


def test_a_target_that_became_private_is_refused_at_delivery(owner, receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook_for(owner, url=receiver.url, events=["task.completed"])
    run_claimed(submit(owner).pk)
    settings.WEBHOOK_ALLOW_PRIVATE = False

    delivery.deliver_due()

    assert receiver.requests == []
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and attempt.error.startswith("Refused")


def test_a_delivery_fails_for_good_after_its_max_age(owner, allow_private):
    hook_for(owner, url="http://127.0.0.1:9/closed", events=["task.completed"])
    run_claimed(submit(owner).pk)
    Delivery.objects.update(expires_at=timezone.now() + timedelta(seconds=1))

    delivery.deliver_due()

    row = Delivery.objects.get()
    assert row.state == "failed" and row.next_attempt_at is None
    assert DeliveryAttempt.objects.get().error
    assert delivery.deliver_due() == 0


def test_a_claimed_delivery_is_not_claimed_twice(owner):
    hook_for(owner, events=["task.completed"])
    run_claimed(submit(owner).pk)

    first = delivery.claim_due()
    second = delivery.claim_due()

    assert len(first) == 1 and second == []
    row = Delivery.objects.get()
    assert row.attempts == 1 and row.next_attempt_at > timezone.now() + timedelta(seconds=10)
    # A sender whose claim was taken over records nothing.
    assert delivery.record(row.pk, 7, delivery.Outcome(status_code=200)) is None


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 30])
def test_backoff_grows_with_jitter_and_a_cap(settings, attempt):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 5
    settings.WEBHOOK_RETRY_MAX_SECONDS = 3600
    ceiling = min(5 * 2 ** (attempt - 1), 3600)

    waits = {delivery.backoff_seconds(attempt) for _ in range(20)}

    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert len(waits) > 1


def test_the_admin_lists_attempts_and_redelivers(admin_client, owner, receiver, allow_private):
    webhook = hook_for(owner, url=receiver.url, events=["task.completed"])
    run_claimed(submit(owner).pk)
    delivery.deliver_due()
    sent = Delivery.objects.get()

    page = admin_client.get("/admin/webhooks/delivery/")
    detail = admin_client.get(f"/admin/webhooks/delivery/{sent.pk}/change/")
    hooks_page = admin_client.get(f"/admin/webhooks/webhook/{webhook.pk}/change/")
    response = admin_client.post(
        "/admin/webhooks/delivery/",
        {"action": "redeliver", "_selected_action": [sent.pk]},
    )

    assert page.status_code == 200 and b"Delivered" in page.content
    assert detail.status_code == 200 and b"200" in detail.content
    assert hooks_page.status_code == 200 and webhook.secret.encode() not in hooks_page.content
    assert response.status_code == 302
    assert Delivery.objects.get().state == "pending"


def test_old_finished_deliveries_are_purged(owner, settings):
    settings.WEBHOOK_KEEP_DAYS = 7
    webhook = hook_for(owner, events=["task.completed"])
    for _ in range(3):
        run_claimed(submit(owner).pk)
    old, kept, pending = Delivery.objects.filter(webhook=webhook).order_by("id")
    long_ago = timezone.now() - timedelta(days=8)
    Delivery.objects.filter(pk__in=[old.pk, pending.pk]).update(created_at=long_ago)
    Delivery.objects.filter(pk__in=[old.pk, kept.pk]).update(state="delivered")
    DeliveryAttempt.objects.create(delivery=old, number=1, status_code=200)

    assert delivery.purge_old() == 2  # the delivery and its attempt

    assert set(Delivery.objects.values_list("pk", flat=True)) == {kept.pk, pending.pk}
    settings.WEBHOOK_KEEP_DAYS = 0
    Delivery.objects.update(created_at=long_ago, state="failed")
    assert delivery.purge_old() == 0


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_sent_in_parallel_threads(owner, receiver, allow_private):
    from concurrent.futures import ThreadPoolExecutor

    hook_for(owner, url=receiver.url)
    for _ in range(3):
        submit(owner)  # committed, so run inline at once
    assert Delivery.objects.count() == 6

    with ThreadPoolExecutor(2) as pool:
        assert delivery.deliver_due(pool=pool) == 6

    assert len(receiver.requests) == 6
    assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_the_schema_documents_the_webhook_routes(api):
    schema = api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]

    assert {"get", "post"} <= set(paths["/webhooks"])
    assert {"get", "patch", "delete"} <= set(paths["/webhooks/{id}"])
    assert "get" in paths["/webhooks/{id}/deliveries"]
    redeliver = paths["/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"]["post"]
    assert {p["name"] for p in redeliver["parameters"]} == {"webhook_id", "delivery_id"}
    created = paths["/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]
    assert created["schema"]["$ref"].endswith("/WebhookCreated")
    assert "secret" in schema["components"]["schemas"]["WebhookCreated"]["properties"]
    assert "secret" not in schema["components"]["schemas"]["Webhook"]["properties"]


def test_a_cluster_starts_its_sender_only_where_it_sends(settings, monkeypatch):
    from tasks import cluster

    started = []
    monkeypatch.setattr(delivery, "ensure_sender", lambda: started.append(1))
    broker = cluster.TaskBroker.__new__(cluster.TaskBroker)
    broker._next_schedules = broker._next_recount = float("inf")
    broker._next_maintenance = 0.0
    monkeypatch.setattr(cluster.maintenance, "run_maintenance", dict)

    broker._housekeeping()  # the test settings: WEBHOOK_SEND=False
    settings.WEBHOOK_SEND = True
    broker._next_maintenance = 0.0
    broker._housekeeping()  # still inline (Q_SYNC): no cluster sends
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    broker._next_maintenance = 0.0
    broker._housekeeping()

    assert started == [1]


def test_a_request_goes_to_the_checked_address_not_a_new_lookup(receiver):
    port = receiver.server.server_address[1]
    # The name would resolve elsewhere now; the checked address is used.
    target = targets.Target(
        url=f"http://hooks.example.com:{port}/in",
        scheme="http",
        host="hooks.example.com",
        port=port,
        path="/in?x=1",
        address="127.0.0.1",
    )

    outcome = delivery.post(target, b"{}", {"content-type": "application/json"})

    assert outcome.status_code == 200 and outcome.response_body == "ok"
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.example.com:{port}"
    assert request.path == "/in?x=1"


def test_a_receiver_trickling_its_answer_is_cut_off(settings):
    """Each byte within the timeout, the whole answer never: the request
    ends after twice the timeout."""
    import socket
    import threading
    import time

    settings.WEBHOOK_TIMEOUT_SECONDS = 0.4
    server = socket.socket()
    for port in range(18100, 18200):
        try:
            server.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    server.listen(1)
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    target = targets.Target(
        url="http://127.0.0.1/", scheme="http", host="127.0.0.1", port=port, path="/",
        address="127.0.0.1",
    )  # fmt: skip
    try:
        began = time.monotonic()
        outcome = delivery.post(target, b"{}", {})
        took = time.monotonic() - began
    finally:
        stop.set()
        server.close()

    assert outcome.status_code is None
    assert outcome.error.startswith("Timeout: no whole answer within 0.8 seconds")
    assert 0.7 <= took < 5


def test_deliveries_filter_by_state(api, owner):
    webhook = hook_for(owner, events=["task.completed"])
    for _ in range(2):
        run_claimed(submit(owner).pk)
    first = Delivery.objects.order_by("id").first()
    Delivery.objects.filter(pk=first.pk).update(state="failed")
    path = f"/webhooks/{webhook.pk}/deliveries"

    failed = api.get(path, {"state": "failed"}).json()["results"]
    pending = api.get(path, {"state": "pending"}).json()["results"]
    bad = api.get(path, {"state": "lost"})

    assert [d["id"] for d in failed] == [first.pk]
    assert len(pending) == 1 and pending[0]["id"] != first.pk
    assert bad.status_code == 400 and "state" in bad.json()["fields"]
