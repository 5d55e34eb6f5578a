"""The operators' dashboard, the task list's columns and filters, and a task
page's live JSON (tasks/dashboard.py, tasks/admin.py)."""

import html
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from tasks import logs, selectors, services, worker
from tasks.models import Status, Task

from . import tasks_in_states

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
LIVE = "/admin/dashboard/live/"
CHANGELIST = "/admin/tasks/task/"


@pytest.fixture
def operator(make_user):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(operator):
    client = Client()
    client.force_login(operator)
    return client


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def finished_ago(task: Task, seconds: float) -> Task:
    return tasks_in_states.set_times(task, finished_ago=seconds, ran_for=0.5)


# --- The dashboard ---------------------------------------------------------------


def test_the_dashboard_shows_counts_queues_workers_and_the_chart(admin_client, owner, run_jobs):
    finished = [
        tasks_in_states.completed(owner, run_jobs),
        tasks_in_states.completed(owner, run_jobs),
        tasks_in_states.failed(owner, run_jobs),
    ]
    # One instant for all three, so that they share a minute's bar even when
    # the test runs across a minute's end.
    at = timezone.now().replace(second=30, microsecond=0)
    at -= timedelta(minutes=1) if at > timezone.now() else timedelta(0)
    Task.objects.filter(pk__in=[t.pk for t in finished]).update(
        finished_at=at, started_at=at - timedelta(seconds=1)
    )
    tasks_in_states.queued(owner)
    worker.record_heartbeat(name="host:1", host="host", pid=1)
    running = tasks_in_states.in_progress(owner, worker="host:1")

    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    page = response.content.decode()
    totals = {s["value"]: s["count"] for s in response.context["status_totals"]}
    assert totals == {"queued": 1, "in_progress": 1, "completed": 2, "failed": 1, "cancelled": 0}
    assert '<tr data-type="wordcount">' in page and '<tr data-type="test.fail">' in page
    # The queued task is delayed by an hour; the running one is no longer queued.
    assert '<td class="num" data-state="delayed">1</td>' in page
    assert '<td class="num" data-state="runnable">0</td>' in page
    assert '<tr data-worker="host:1">' in page
    assert f'href="/admin/tasks/task/{running.pk}/change/">Task {running.pk}</a> wordcount' in page
    assert '<svg id="throughput-chart"' in page
    # All three finished in one minute: its bar has two completed and one failed.
    assert page.count('class="bar-completed"') == 1 and page.count('class="bar-failed"') == 1
    assert "2 completed, 1 failed, 0 cancelled" in page
    # Refreshes itself from the live endpoint; nothing is loaded from elsewhere.
    assert "/admin/dashboard/live/" in page
    assert "<script src=" not in page.split("</head>")[1]


def test_the_admin_home_links_to_the_dashboard(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/">Dashboard</a>' in page


def test_the_live_numbers_bucket_the_last_hour_per_minute(admin_client, owner, run_jobs):
    finished_ago(tasks_in_states.completed(owner, run_jobs), 5 * 60)
    finished_ago(tasks_in_states.failed(owner, run_jobs), 5 * 60)
    finished_ago(tasks_in_states.completed(owner, run_jobs), 30 * 60)
    old = finished_ago(tasks_in_states.completed(owner, run_jobs), 2 * 3600)
    tasks_in_states.cancelled(owner)

    response = admin_client.get(LIVE)

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["last_hour"] == {"completed": 2, "failed": 1, "cancelled": 1}
    assert body["totals"]["completed"] == 3
    minutes = body["per_minute"]
    assert len(minutes) == 60
    assert sum(m["completed"] for m in minutes) == 2
    five_ago = (old.finished_at + timedelta(hours=2) - timedelta(minutes=5)).replace(
        second=0, microsecond=0
    )
    busy = [m for m in minutes if m["failed"]]
    assert (
        len(busy) == 1
        and abs((timezone.datetime.fromisoformat(busy[0]["start"]) - five_ago).total_seconds())
        <= 60
    )
    # This minute's (or the last one's, when the request began a new minute).
    assert sum(m["cancelled"] for m in minutes[-2:]) == 1
    # The panels come along, rendered by the same template as the page.
    assert '<svg id="throughput-chart"' in body["html"]


def test_empty_minutes_are_zeros_and_the_oldest_comes_first(owner, run_jobs):
    done = tasks_in_states.completed(owner, run_jobs)
    now = timezone.now()
    Task.objects.filter(pk=done.pk).update(finished_at=now, started_at=now)

    series = selectors.finished_per_minute(minutes=10, now=now + timedelta(minutes=3))

    assert len(series) == 10
    assert [m.start for m in series] == sorted(m.start for m in series)
    assert [m.completed for m in series] == [0] * 6 + [1] + [0] * 3


def test_the_dashboard_costs_the_same_queries_with_ten_times_the_tasks(
    admin_client, owner, run_jobs, django_assert_num_queries
):
    def queries() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(LIVE).status_code == 200
        return len(captured)

    worker.record_heartbeat(name="host:1", host="host", pid=1)
    for _ in range(2):
        tasks_in_states.completed(owner, run_jobs)
    few = queries()
    for _ in range(20):
        tasks_in_states.completed(owner, run_jobs)
        tasks_in_states.queued(owner)
    assert queries() == few


def test_anonymous_users_are_sent_to_the_login_and_get_json_errors(db):
    client = Client()

    page = client.get(DASHBOARD)
    live = client.get(LIVE)

    assert page.status_code == 302 and "/admin/login/" in page["Location"]
    assert live.status_code == 401
    assert live.json()["code"] == "not_authenticated"


def test_non_staff_and_staff_without_the_view_permission_are_refused(make_user):
    plain = logged_in(make_user("plain"))
    staff = logged_in(make_user("staff", is_staff=True))

    assert plain.get(DASHBOARD).status_code == 302  # the admin's login page
    for client in (plain, staff):
        live = client.get(LIVE)
        assert live.status_code == 403 and live.json()["code"] == "permission_denied"
    refused = staff.get(DASHBOARD)
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied"


def test_staff_with_the_view_permission_see_it(make_user):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_task", content_type__app_label="tasks")
    )

    client = logged_in(viewer)

    assert client.get(DASHBOARD).status_code == 200
    assert client.get(LIVE).status_code == 200


def test_other_methods_get_a_json_405(admin_client):
    for path in (DASHBOARD, LIVE):
        response = admin_client.post(path, "{}", content_type="application/json")
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
    response = admin_client.delete(LIVE)
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


# --- The task list -----------------------------------------------------------------


def response_headers(client) -> list[str]:
    cl = client.get(CHANGELIST).context["cl"]
    from django.contrib.admin.templatetags.admin_list import result_headers

    return [str(h["text"]) for h in result_headers(cl)]


def test_the_list_shows_progress_bars_times_and_the_delayed_marker(admin_client, owner, run_jobs):
    tasks_in_states.completed(owner, run_jobs)
    later = tasks_in_states.queued(owner)
    running = tasks_in_states.in_progress(owner, worker="host:3")
    Task.objects.filter(pk=running.pk).update(progress=35, progress_message="halfway-ish")

    page = html.unescape(admin_client.get(CHANGELIST).content.decode())

    assert '<progress max="100" value="35">' in page and "halfway-ish" in page
    assert '<progress max="100" value="100">' in page
    assert "delayed until" in page
    assert later.run_at.isoformat(timespec="seconds") in page
    assert "s ago</time>" in page
    assert "in 59 min</time>" in page  # its run_at column
    headers = {h.lower() for h in response_headers(admin_client)}
    assert {"started", "finished", "run at", "queue", "worker", "created"} <= headers


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"queue": "default"}, {"mine", "theirs", "running"}),
        ({"queue": "reports"}, {"report"}),
        ({"worker": "host:9"}, {"running"}),
        ({"claimed_by": "cluster-1"}, {"running"}),
        ({"owner": "OWNER"}, {"mine", "running", "report"}),
        ({"owner": "OUTSIDER"}, {"theirs"}),
    ],
)
def test_the_list_filters_by_queue_worker_cluster_and_owner(
    admin_client, owner, outsider, query, expected
):
    tasks = {
        "mine": tasks_in_states.queued(owner),
        "theirs": tasks_in_states.queued(outsider),
        "running": tasks_in_states.in_progress(owner, worker="host:9"),
        "report": services.submit_task(owner=owner, type_name="test.reports", delay=3600).task,
    }
    assert tasks["report"].queue == "reports"
    ids = {"OWNER": str(owner.pk), "OUTSIDER": str(outsider.pk)}
    query = {k: ids.get(v, v) for k, v in query.items()}

    response = admin_client.get(CHANGELIST, query)

    assert response.status_code == 200
    found = {t.pk for t in response.context["cl"].result_list}
    assert found == {tasks[name].pk for name in expected}


def test_the_filters_offer_bounded_choices(admin_client, owner, outsider):
    tasks_in_states.queued(owner)
    tasks_in_states.in_progress(outsider, worker="host:4")
    worker.record_heartbeat(name="host:4", host="host", pid=4)

    page = admin_client.get(CHANGELIST).content.decode()

    assert f"?owner={owner.pk}" in page and f"?owner={outsider.pk}" in page
    assert "?worker=host%3A4" in page
    assert "?claimed_by=cluster-1" in page
    assert "?queue=reports" in page  # a queue of a registered type, even when empty


@pytest.mark.parametrize("value", ["abc", "-1", "99999999999999999999999", "1 OR 1=1"])
def test_a_bad_owner_filter_shows_nothing_instead_of_failing(admin_client, owner, value):
    tasks_in_states.queued(owner)

    response = admin_client.get(CHANGELIST, {"owner": value})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


# --- A task's live JSON ------------------------------------------------------------


def live_url(task_id) -> str:
    return f"/admin/tasks/task/{task_id}/live/"


def write_lines(task, *messages):
    now = timezone.now()
    logs.append(
        task_id=task.pk,
        lines=[logs.Line(at=now, level="INFO", attempt=1, message=m) for m in messages],
    )


def test_a_running_tasks_page_follows_it(admin_client, owner):
    running = tasks_in_states.in_progress(owner)
    write_lines(running, "first")

    page = admin_client.get(f"{CHANGELIST}{running.pk}/change/").content.decode()

    assert 'id="task-live-config"' in page
    assert f'"url": "/admin/tasks/task/{running.pk}/live/"' in page
    assert '"after": 1' in page
    assert '<table id="task-log">' in page


def test_a_finished_tasks_page_does_not(admin_client, owner, run_jobs):
    done = tasks_in_states.completed(owner, run_jobs)
    page = admin_client.get(f"{CHANGELIST}{done.pk}/change/").content.decode()
    assert "task-live-config" not in page


def test_the_live_json_has_progress_and_the_lines_after_a_seq(admin_client, owner, outsider):
    running = tasks_in_states.in_progress(outsider)
    Task.objects.filter(pk=running.pk).update(progress=60, progress_message="<b>bold</b>")
    write_lines(running, "one", "two", "<script>three</script>")

    response = admin_client.get(live_url(running.pk), {"after": 1})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "in_progress" and body["finished"] is False
    assert body["progress"] == 60
    assert '<progress max="100" value="60">' in body["progress_html"]
    # Messages are escaped in the HTML pieces, and sent raw in the lines
    # (the page sets them as text).
    assert "&lt;b&gt;bold&lt;/b&gt;" in body["progress_html"]
    assert [line["seq"] for line in body["lines"]] == [2, 3]
    assert body["lines"][1]["message"] == "<script>three</script>"


def test_the_live_json_says_when_the_task_finished(admin_client, owner, run_jobs):
    done = tasks_in_states.completed(owner, run_jobs)
    body = admin_client.get(live_url(done.pk)).json()
    assert body["finished"] is True and body["status"] == Status.COMPLETED


@pytest.mark.parametrize(
    ("task_id", "query", "status", "code"),
    [
        ("999999", {}, 404, "not_found"),
        ("abc", {}, 404, "not_found"),
        ("99999999999999999999999", {}, 404, "not_found"),
        ("OWN", {"after": "x"}, 400, "invalid"),
        ("OWN", {"after": "-1"}, 400, "invalid"),
        ("OWN", {"after": "9" * 30}, 400, "invalid"),
    ],
)
def test_the_live_json_refuses_bad_ids_and_seqs(admin_client, owner, task_id, query, status, code):
    task = tasks_in_states.queued(owner)
    task_id = str(task.pk) if task_id == "OWN" else task_id

    response = admin_client.get(live_url(task_id), query)

    assert response.status_code == status
    assert response.json()["code"] == code


def test_the_live_json_is_for_staff_only(make_user, owner):
    task = tasks_in_states.queued(owner)

    anonymous = Client().get(live_url(task.pk))
    # The task's owner, not staff: the API is their way to follow it.
    not_staff = logged_in(owner).get(live_url(task.pk))
    posted = logged_in(make_user("op", is_staff=True, is_superuser=True)).delete(live_url(task.pk))

    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    assert not_staff.status_code == 403 and not_staff.json()["code"] == "permission_denied"
    assert posted.status_code == 405 and posted.json()["code"] == "method_not_allowed"


def test_services_stay_the_way_to_change_a_task(admin_client, owner):
    """The live endpoint only reads: following a task changes nothing."""
    task = tasks_in_states.queued(owner)
    before = Task.objects.values().get(pk=task.pk)
    admin_client.get(live_url(task.pk))
    assert Task.objects.values().get(pk=task.pk) == before
