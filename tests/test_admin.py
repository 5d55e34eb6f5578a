import html

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tasks import worker
from tasks.models import Status, Task, TaskAttempt

from . import tasks_in_states

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/task/"


@pytest.fixture
def operator(make_user):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(operator):
    client = Client()
    client.force_login(operator)
    return client


def run_action(client, action, *tasks):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [t.pk for t in tasks]},
        follow=True,
    )


def test_the_list_shows_status_owner_progress_and_error(admin_client, owner, run_jobs):
    done = tasks_in_states.completed(owner, run_jobs)
    broken = tasks_in_states.failed(owner, run_jobs)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="/admin/auth/user/{owner.pk}/change/"' in page
    assert "Completed" in page and "Failed" in page
    assert "100%" in page
    # The failed task's message, not its traceback.
    assert "boom" in page
    assert "Traceback" not in page
    assert set(response.context["cl"].result_list) == {done, broken}


def test_the_status_filter_narrows_the_list(admin_client, owner, run_jobs):
    tasks_in_states.completed(owner, run_jobs)
    broken = tasks_in_states.failed(owner, run_jobs)

    response = admin_client.get(CHANGELIST, {"status__exact": "failed"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [broken]


def test_a_task_page_is_read_only_with_pretty_json_and_traceback(admin_client, owner, run_jobs):
    broken = tasks_in_states.failed(owner, run_jobs)

    response = admin_client.get(f"{CHANGELIST}{broken.pk}/change/")

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert '"message": "boom"' in page
    assert '"type": "ValueError"' in page
    # The traceback keeps its line breaks instead of "\n" escapes.
    assert "Traceback (most recent call last):\n" in page
    assert 'name="_save"' not in page
    assert "attempt history" in page.lower()
    assert "<td>1</td><td>Failed</td>" in page
    assert TaskAttempt.objects.filter(task=broken).count() == 1


def test_the_cancel_action_goes_through_the_service(admin_client, owner, run_jobs):
    waiting = tasks_in_states.queued(owner)
    done = tasks_in_states.completed(owner, run_jobs)

    response = run_action(admin_client, "cancel_selected", waiting, done)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Cancelled 1 task(s)." in page
    assert f"#{done.pk}: The task is already completed and cannot be cancelled." in page
    waiting.refresh_from_db()
    done.refresh_from_db()
    assert waiting.status == Status.CANCELLED
    assert waiting.finished_at is not None
    assert done.status == Status.COMPLETED


def test_the_retry_action_queues_a_failed_task_again(admin_client, owner, run_jobs):
    broken = tasks_in_states.failed(owner, run_jobs)

    response = run_action(admin_client, "retry_selected", broken)

    assert "Retried 1 task(s)." in response.content.decode()
    broken.refresh_from_db()
    assert broken.status == Status.QUEUED
    assert broken.finished_at is None
    assert broken.retries_left == broken.max_retries


def test_staff_who_may_only_view_tasks_cannot_run_actions(make_user, owner):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_task", content_type__app_label="tasks")
    )
    waiting = tasks_in_states.queued(owner)
    client = Client()
    client.force_login(viewer)

    listing = client.get(CHANGELIST)
    response = run_action(client, "cancel_selected", waiting)

    assert listing.status_code == 200
    assert "cancel_selected" not in listing.content.decode()
    assert "Cancelled 1 task(s)." not in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED


def test_an_unfinished_task_cannot_be_deleted(admin_client, owner, run_jobs):
    running = tasks_in_states.in_progress(owner)
    done = tasks_in_states.completed(owner, run_jobs)

    refused = admin_client.post(f"{CHANGELIST}{running.pk}/delete/", {"post": "yes"})
    allowed = admin_client.post(f"{CHANGELIST}{done.pk}/delete/", {"post": "yes"})

    assert refused.status_code == 403
    assert allowed.status_code == 302
    assert Task.objects.filter(pk=running.pk).exists()
    assert not Task.objects.filter(pk=done.pk).exists()


def test_the_workers_page_says_who_is_alive_when_and_what_it_runs(admin_client, owner):
    worker.record_heartbeat(name="host:7", host="host", pid=7)
    worker.record_heartbeat(name="host:8", host="host", pid=8)
    running = tasks_in_states.in_progress(owner, worker="host:7")
    Task.objects.filter(pk=running.pk).update(progress=40)

    response = admin_client.get("/admin/tasks/workerheartbeat/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "host:7" in page and "host:8" in page
    assert 'alt="True"' in page
    assert (
        f'href="/admin/tasks/task/{running.pk}/change/">Task {running.pk}</a> wordcount (40%)'
        in page
    )
    assert 'href="/admin/tasks/task/?worker=host%3A7&amp;status__exact=in_progress"' in page
    # The idle worker links to no task.
    assert page.count("all its tasks in progress") == 1
    assert "0 s ago" in page


def test_search_finds_tasks_by_id_owner_and_type(admin_client, owner, outsider, run_jobs):
    mine = tasks_in_states.completed(owner, run_jobs)
    theirs = tasks_in_states.failed(outsider, run_jobs)

    by_id = admin_client.get(CHANGELIST, {"q": str(theirs.pk)})
    by_owner = admin_client.get(CHANGELIST, {"q": "outsider"})
    by_type = admin_client.get(CHANGELIST, {"q": "wordcount"})

    assert list(by_id.context["cl"].result_list) == [theirs]
    assert list(by_owner.context["cl"].result_list) == [theirs]
    assert list(by_type.context["cl"].result_list) == [mine]


def test_searching_a_huge_number_finds_nothing_instead_of_failing(admin_client, owner, run_jobs):
    tasks_in_states.completed(owner, run_jobs)

    response = admin_client.get(CHANGELIST, {"q": "9" * 30})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_a_queued_tasks_page_has_a_cancel_button_that_works(admin_client, owner):
    waiting = tasks_in_states.queued(owner)
    page_url = f"{CHANGELIST}{waiting.pk}/change/"

    page = admin_client.get(page_url).content.decode()
    response = admin_client.post(f"{CHANGELIST}{waiting.pk}/cancel/")
    after = admin_client.get(page_url).content.decode()

    assert f'action="/admin/tasks/task/{waiting.pk}/cancel/"' in page
    assert "Retry task" not in page
    assert response.status_code == 302
    assert response["Location"] == page_url
    assert f"Task {waiting.pk} is now cancelled." in after
    assert "Retry task" in after and "Cancel task" not in after
    waiting.refresh_from_db()
    assert waiting.status == Status.CANCELLED


def test_cancelling_a_running_task_from_its_page_asks_it_to_stop(admin_client, owner):
    running = tasks_in_states.in_progress(owner)

    response = admin_client.post(f"{CHANGELIST}{running.pk}/cancel/", follow=True)

    assert "is asked to stop" in response.content.decode()
    running.refresh_from_db()
    assert running.status == Status.IN_PROGRESS
    assert running.cancel_requested is True


def test_a_failed_tasks_page_retries_it(admin_client, owner, run_jobs):
    broken = tasks_in_states.failed(owner, run_jobs)

    response = admin_client.post(f"{CHANGELIST}{broken.pk}/retry/", follow=True)

    assert f"Task {broken.pk} is now queued." in response.content.decode()
    broken.refresh_from_db()
    assert broken.status == Status.QUEUED


def test_a_refused_button_says_why(admin_client, owner, run_jobs):
    done = tasks_in_states.completed(owner, run_jobs)

    page = admin_client.get(f"{CHANGELIST}{done.pk}/change/").content.decode()
    response = admin_client.post(f"{CHANGELIST}{done.pk}/retry/", follow=True)

    assert "Cancel task" not in page and "Retry task" not in page
    assert "Only failed or cancelled tasks can be retried; this one is completed." in (
        response.content.decode()
    )
    done.refresh_from_db()
    assert done.status == Status.COMPLETED


def test_the_buttons_need_a_post_and_the_change_permission(make_user, admin_client, owner):
    waiting = tasks_in_states.queued(owner)
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_task", content_type__app_label="tasks")
    )
    client = Client()
    client.force_login(viewer)

    page = client.get(f"{CHANGELIST}{waiting.pk}/change/")
    refused = client.post(f"{CHANGELIST}{waiting.pk}/cancel/")
    by_get = admin_client.get(f"{CHANGELIST}{waiting.pk}/cancel/")

    assert page.status_code == 200 and "Cancel task" not in page.content.decode()
    assert refused.status_code == 403
    assert by_get.status_code == 405
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED
