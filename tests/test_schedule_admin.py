"""The schedules' admin: list, enable / disable / run-now actions, recent tasks."""

import pytest
from django.test import Client

from tasks import schedules
from tasks.models import Schedule, Task

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/schedule/"


@pytest.fixture
def admin_client(make_user):
    client = Client()
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def schedule(owner):
    return schedules.create_schedule(
        owner=owner, name="nightly", type="test.echo", args={"payload": 1}, cron="0 3 * * *"
    )


def act(client, action, *items):
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [s.pk for s in items]}, follow=True
    )


def test_the_list_shows_next_run_last_fire_and_owner(admin_client, schedule, owner):
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    text = page.content.decode()
    assert "nightly" in text and "0 3 * * *" in text
    assert f'href="/admin/auth/user/{owner.pk}/change/"' in text


def test_disable_enable_and_run_now_actions(admin_client, schedule, queue_only):
    act(admin_client, "disable_selected", schedule)
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None
    act(admin_client, "enable_selected", schedule)
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None
    response = act(admin_client, "run_selected", schedule)
    assert "Fired 1 schedule(s)." in response.content.decode()
    assert Task.objects.filter(schedule=schedule).count() == 1


def test_a_schedules_page_lists_its_recent_tasks(admin_client, schedule, queue_only):
    fired = [schedules.run_schedule(schedule=schedule) for _ in range(2)]
    page = admin_client.get(f"{CHANGELIST}{schedule.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    for task in fired:
        assert f'href="/admin/tasks/task/{task.pk}/change/"' in text
    tasks_link = f"/admin/tasks/task/?schedule__id__exact={schedule.pk}"
    assert tasks_link in text
    listed = admin_client.get(tasks_link)
    assert listed.status_code == 200
    assert set(listed.context["cl"].result_list) == set(fired)


def test_schedules_cannot_be_added_or_edited_in_the_admin(admin_client, schedule):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    admin_client.post(f"{CHANGELIST}{schedule.pk}/change/", {"type": "test.fail"})
    assert Schedule.objects.get(pk=schedule.pk).type == "test.echo"
