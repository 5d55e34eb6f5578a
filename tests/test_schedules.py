"""Schedules: cron times across DST, the API, and firing (catch-up, overlap,
exactly one task per time)."""

import itertools
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from tasks import schedules
from tasks.models import Schedule, Status, Task

pytestmark = pytest.mark.django_db


# --- Cron across DST (unit) -------------------------------------------------------


def times(expr, zone, start, count):
    out, moment = [], start
    for _ in range(count):
        moment = schedules.next_cron_time(expr, zone, moment)
        out.append(moment)
    return out


def test_cron_spring_forward_runs_a_skipped_time_once_right_after_the_gap():
    # Paris skips 02:00-03:00 on 2026-03-29: 02:30 runs at 03:00 CEST (01:00 UTC).
    start = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert times("30 2 * * *", "Europe/Paris", start, 3) == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]


def test_cron_fall_back_runs_a_repeated_time_once():
    # 02:30 happens twice in Paris on 2026-10-25 (CEST, then CET): one run.
    start = datetime(2026, 10, 24, 12, tzinfo=UTC)
    assert times("30 2 * * *", "Europe/Paris", start, 3) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("expr", "zone"),
    [
        ("30 2 * * *", "Europe/Berlin"),
        ("*/15 * * * *", "Europe/Berlin"),
        ("0 * * * *", "Europe/Berlin"),
        ("* * * * *", "Europe/Berlin"),
        ("30 1 * * *", "America/New_York"),
    ],
)
def test_cron_times_inside_a_repeated_hour_always_come_after(expr, zone):
    # Inside the second pass of a fall-back's hour (Berlin 2027-10-31 01:00-02:00
    # UTC, New York 2027-11-07 06:00-07:00 UTC), every next time is later.
    hour = {
        "Europe/Berlin": datetime(2027, 10, 31, 0, 0),
        "America/New_York": datetime(2027, 11, 7, 5, 0),
    }[zone]
    start = hour.replace(tzinfo=UTC)
    for minute in range(0, 180, 7):
        after = start + timedelta(minutes=minute, seconds=13)
        assert schedules.next_cron_time(expr, zone, after) > after, (expr, after)
    # A daily 02:30 that ran in the first pass runs next on the next day.
    if expr == "30 2 * * *":
        after = datetime(2027, 10, 31, 1, 10, tzinfo=UTC)
        assert schedules.next_cron_time(expr, zone, after) == datetime(
            2027, 11, 1, 1, 30, tzinfo=UTC
        )


def test_cron_keeps_local_wall_time_across_dst():
    start = datetime(2026, 3, 27, 12, tzinfo=UTC)
    local = [
        t.astimezone(schedules.zone_of("Europe/Paris"))
        for t in times("0 9 * * *", "Europe/Paris", start, 4)
    ]
    assert [t.hour for t in local] == [9, 9, 9, 9]
    assert [t.utcoffset() for t in local] == [timedelta(hours=1)] + [timedelta(hours=2)] * 3


def test_cron_steps_stay_evenly_spaced_in_real_time_through_the_gap():
    start = datetime(2026, 3, 29, 0, 15, tzinfo=UTC)
    got = times("*/30 * * * *", "Europe/Paris", start, 4)
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(minutes=30)] * 3


@pytest.mark.parametrize(
    "expr", ["* * * *", "0 * * * * *", "61 * * * *", "0 0 30 2 *", "nonsense here x y z", ""]
)
def test_check_cron_refuses(expr):
    with pytest.raises(ValueError):
        schedules.check_cron(expr)


def test_check_cron_normalises_spaces():
    assert schedules.check_cron("  */5   *  * * 1-5 ") == "*/5 * * * 1-5"


# --- The API ---------------------------------------------------------------------------


def create(api, **body):
    payload = {"type": "test.echo", "args": {"payload": 1}, "interval": 60, **body}
    return api.post("/schedules", payload, format="json")


def test_create_interval_schedule(api, owner):
    before = timezone.now()
    response = create(api, name="every minute")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["interval"] == 60 and body["cron"] is None
    assert body["timezone"] == "UTC" and body["enabled"] is True
    assert body["catch_up"] == "once" and body["overlap"] == "skip"
    assert body["fired_count"] == 0 and body["last_fired_at"] is None
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert before + timedelta(seconds=59) < next_run <= timezone.now() + timedelta(seconds=60)
    assert Schedule.objects.get(pk=body["id"]).owner == owner


def test_create_cron_schedule_in_a_time_zone(api):
    response = create(api, interval=None, cron="0 9 * * *", timezone="America/New_York")
    assert response.status_code == 201, response.content
    body = response.json()
    local = datetime.fromisoformat(body["next_run_at"]).astimezone(
        schedules.zone_of("America/New_York")
    )
    assert (local.hour, local.minute) == (9, 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "0 9 * * *"}, "cron"),  # both cron and interval
        ({"interval": None}, "cron"),  # neither
        ({"interval": None, "cron": "0 25 * * *"}, "cron"),
        ({"interval": None, "cron": "* * * * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),  # the host's, not a place's
        ({"interval": 0}, "interval"),
        ({"interval": "often"}, "interval"),
        ({"type": "no.such.type"}, "type"),
        ({"args": {"nope": 1}}, "args"),
        ({"args": [1, 2]}, "args"),
        ({"catch_up": "sometimes"}, "catch_up"),
        ({"overlap": "maybe"}, "overlap"),
        ({"priority": 1000}, "priority"),
        ({"surprise": True}, "surprise"),
        ({"concurrency_key": "k"}, "concurrency_key"),
    ],
)
def test_create_refuses_bad_input_with_field_errors(api, body, field):
    response = create(api, **body)
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"], response.json()
    assert not Schedule.objects.exists()


def test_malformed_json_is_a_400(api):
    response = api.post("/schedules", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_a_json_list_body_is_a_400(api):
    response = api.post("/schedules", [1, 2], format="json")
    assert response.status_code == 400


def test_unauthenticated_is_a_401():
    from rest_framework.test import APIClient

    assert APIClient().get("/schedules").status_code == 401


def test_another_users_schedule_is_404(api, outsider_api):
    schedule_id = create(api).json()["id"]
    for method, path in [
        ("get", f"/schedules/{schedule_id}"),
        ("patch", f"/schedules/{schedule_id}"),
        ("delete", f"/schedules/{schedule_id}"),
        ("post", f"/schedules/{schedule_id}/run"),
    ]:
        response = getattr(outsider_api, method)(path, {}, format="json")
        assert response.status_code == 404, (method, path, response.content)
        assert response.json()["error"] == "Schedule not found"
    assert outsider_api.get("/schedules").json()["results"] == []
    assert Schedule.objects.get(pk=schedule_id).enabled


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "0", str(2**63), "99999"])
def test_bad_or_unknown_ids(api, raw):
    response = api.get(f"/schedules/{raw}")
    assert response.status_code in (400, 404)
    assert "error" in response.json()


def test_list_is_newest_first_and_paginated(api):
    ids = [create(api).json()["id"] for _ in range(3)]
    body = api.get("/schedules?page_size=2").json()
    assert [s["id"] for s in body["results"]] == ids[::-1][:2]
    assert body["next"]
    rest = api.get(body["next"]).json()
    assert [s["id"] for s in rest["results"]] == [ids[0]]


def test_patch_pauses_and_resumes_at_once(api):
    schedule_id = create(api).json()["id"]
    paused = api.patch(f"/schedules/{schedule_id}", {"enabled": False}, format="json")
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False and paused.json()["next_run_at"] is None
    # Even with a time in the past, a paused schedule never fires.
    Schedule.objects.filter(pk=schedule_id).update(next_run_at=timezone.now() - timedelta(hours=1))
    Schedule.objects.filter(pk=schedule_id).update(enabled=False)
    assert schedules.fire_due_schedules() == 0
    resumed = api.patch(f"/schedules/{schedule_id}", {"enabled": True}, format="json")
    assert resumed.json()["enabled"] is True
    # The paused time is not "missed": the next time counts from now.
    assert datetime.fromisoformat(resumed.json()["next_run_at"]) > timezone.now()


def test_patch_switches_interval_to_cron_and_validates(api):
    schedule_id = create(api).json()["id"]
    response = api.patch(
        f"/schedules/{schedule_id}",
        {"cron": "*/5 * * * *", "timezone": "Asia/Tokyo"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["cron"] == "*/5 * * * *" and response.json()["interval"] is None
    bad = api.patch(f"/schedules/{schedule_id}", {"cron": "every day"}, format="json")
    assert bad.status_code == 400 and "cron" in bad.json()["fields"]
    bad_args = api.patch(f"/schedules/{schedule_id}", {"args": {"x": 1}}, format="json")
    assert bad_args.status_code == 400
    assert Schedule.objects.get(pk=schedule_id).cron == "*/5 * * * *"


def test_delete_keeps_the_tasks_it_fired(api):
    schedule_id = create(api).json()["id"]
    task_id = api.post(f"/schedules/{schedule_id}/run").json()["task_id"]
    assert api.delete(f"/schedules/{schedule_id}").status_code == 204
    assert not Schedule.objects.filter(pk=schedule_id).exists()
    assert Task.objects.get(pk=task_id).schedule_id is None


def test_run_now_fires_one_task_listed_by_the_schedule_filter(api, outsider_api, queue_only):
    schedule_id = create(api).json()["id"]
    response = api.post(f"/schedules/{schedule_id}/run")
    assert response.status_code == 202, response.content
    task_id = response.json()["task_id"]
    task = Task.objects.get(pk=task_id)
    assert task.schedule_id == schedule_id and task.scheduled_for is not None
    assert task.args == {"payload": 1}
    listed = api.get(f"/tasks?schedule={schedule_id}").json()["results"]
    assert [t["id"] for t in listed] == [task_id]
    assert listed[0]["schedule"] == schedule_id
    # Another user's schedule id filters to nothing of theirs.
    assert outsider_api.get(f"/tasks?schedule={schedule_id}").json()["results"] == []
    assert api.get("/tasks?schedule=abc").status_code == 400
    assert api.get("/tasks?schedule=1.5").status_code == 400
    detail = api.get(f"/schedules/{schedule_id}").json()
    assert detail["fired_count"] == 1 and detail["last_fired_at"]


# --- Firing ----------------------------------------------------------------------------


def make_schedule(owner, **fields):
    defaults = {"type": "test.echo", "args": {"payload": 1}, "interval_seconds": 10}
    return schedules.create_schedule(owner=owner, **{**defaults, **fields})


def due_since(schedule, seconds_ago):
    schedule.next_run_at = timezone.now() - timedelta(seconds=seconds_ago)
    schedule.save(update_fields=["next_run_at"])
    return schedule.next_run_at


def fired(schedule):
    return list(
        Task.objects.filter(schedule=schedule)
        .order_by("scheduled_for")
        .values_list("scheduled_for", flat=True)
    )


def test_a_due_time_fires_one_task_and_moves_on(owner, queue_only):
    schedule = make_schedule(owner)
    due = due_since(schedule, 0.2)
    assert schedules.fire_due_schedules() == 1
    assert fired(schedule) == [due]
    schedule.refresh_from_db()
    assert schedule.next_run_at == due + timedelta(seconds=10)
    assert schedule.fired_count == 1 and schedule.last_fired_at is not None
    # Nothing is due any more: another pass fires nothing.
    assert schedules.fire_due_schedules() == 0


def test_the_database_refuses_a_second_task_for_one_time(owner, queue_only):
    schedule = make_schedule(owner)
    due_since(schedule, 0.1)
    schedules.fire_due_schedules()
    first = Task.objects.get(schedule=schedule)
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.create(
            owner=owner,
            type="test.echo",
            timeout=10,
            schedule=schedule,
            scheduled_for=first.scheduled_for,
        )


def test_a_time_fired_elsewhere_is_not_fired_again(owner, queue_only):
    """Another cluster fired this time and this one read the schedule before
    that committed: the uniqueness rule makes the second fire a no-op."""
    schedule = make_schedule(owner)
    due = due_since(schedule, 0.1)
    Task.objects.create(
        owner=owner, type="test.echo", timeout=10, schedule=schedule, scheduled_for=due
    )
    schedule.overlap = Schedule.Overlap.ALLOW
    schedule.save()
    assert schedules.fire_due_schedules() == 0
    assert fired(schedule) == [due]
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now()


@pytest.mark.parametrize(
    ("catch_up", "expected_fired", "expected_skipped"),
    [("skip", 0, 10), ("once", 1, 9), ("all", 10, 0)],
)
def test_catch_up_after_downtime(owner, queue_only, catch_up, expected_fired, expected_skipped):
    schedule = make_schedule(owner, catch_up=catch_up, overlap="allow")
    # Ten times were missed (the last one five seconds ago); none is fresh.
    first = due_since(schedule, 95)
    schedules.fire_due_schedules()
    got = fired(schedule)
    assert len(got) == expected_fired
    missed = [first + timedelta(seconds=10 * k) for k in range(10)]
    if catch_up == "once":
        assert got == [missed[-1]]
    if catch_up == "all":
        assert got == missed
    schedule.refresh_from_db()
    assert schedule.skipped_count == expected_skipped
    assert schedule.next_run_at == missed[-1] + timedelta(seconds=10)


def test_catch_up_all_is_capped(owner, queue_only, task_settings):
    task_settings(SCHEDULE_MAX_CATCH_UP=3)
    schedule = make_schedule(owner, catch_up="all", overlap="allow")
    first = due_since(schedule, 95)
    schedules.fire_due_schedules()
    # The most recent three of the ten missed times.
    assert fired(schedule) == [first + timedelta(seconds=10 * k) for k in (7, 8, 9)]
    schedule.refresh_from_db()
    assert schedule.skipped_count == 7


def test_a_deactivated_users_schedules_wait_until_the_user_is_back(owner, queue_only):
    schedule = make_schedule(owner, catch_up="once", overlap="allow")
    due_since(schedule, 35)
    owner.is_active = False
    owner.save()

    assert schedules.fire_due_schedules() == 0
    assert fired(schedule) == []

    owner.is_active = True
    owner.save()
    assert schedules.fire_due_schedules() == 1
    assert len(fired(schedule)) == 1


def test_schedules_fire_across_a_repeated_hour_without_churning(owner, queue_only):
    # Clusters down over Berlin's fall-back (2027-10-31: 02:00-03:00 CEST, then
    # CET) come back inside the repeated hour: the 02:30 missed in the first
    # pass fires once, and the next time is the next day's, not a past one.
    with mock.patch(
        "django.utils.timezone.now", return_value=datetime(2027, 10, 30, 12, tzinfo=UTC)
    ):
        schedule = schedules.create_schedule(
            owner=owner,
            name="berlin",
            type="test.echo",
            args={"payload": 1},
            cron="30 2 * * *",
            time_zone="Europe/Berlin",
            catch_up="once",
            overlap="allow",
        )
    back = datetime(2027, 10, 31, 1, 10, tzinfo=UTC)
    for k in range(4):
        schedules.fire_due_schedules(now=back + timedelta(seconds=k))
    schedule.refresh_from_db()
    assert fired(schedule) == [datetime(2027, 10, 31, 0, 30, tzinfo=UTC)]
    assert schedule.next_run_at == datetime(2027, 11, 1, 1, 30, tzinfo=UTC)
    assert schedule.skipped_count == 0


def test_a_fresh_time_fires_even_with_catch_up_skip(owner, queue_only):
    schedule = make_schedule(owner, catch_up="skip", overlap="allow")
    first = due_since(schedule, 20.5)  # missed, missed, fresh
    schedules.fire_due_schedules()
    assert fired(schedule) == [first + timedelta(seconds=20)]
    schedule.refresh_from_db()
    assert schedule.skipped_count == 2


def test_overlap_skip_skips_and_counts_while_the_last_task_is_unfinished(owner, queue_only):
    schedule = make_schedule(owner, overlap="skip")
    due_since(schedule, 0.1)
    schedules.fire_due_schedules()
    assert len(fired(schedule)) == 1  # still queued: nothing runs it here
    due_since(schedule, 0.1)
    schedules.fire_due_schedules()
    schedule.refresh_from_db()
    assert len(fired(schedule)) == 1 and schedule.skipped_count == 1
    # Once it finished, the next time fires again.
    Task.objects.filter(schedule=schedule).transition(Status.CANCELLED)
    due_since(schedule, 0.1)
    schedules.fire_due_schedules()
    assert len(fired(schedule)) == 2


def test_overlap_allow_fires_beside_an_unfinished_task(owner, queue_only):
    schedule = make_schedule(owner, overlap="allow")
    for _ in range(3):
        due_since(schedule, 0.1)
        schedules.fire_due_schedules()
    assert len(fired(schedule)) == 3


def test_a_fire_over_the_owners_cap_is_skipped_not_an_error(owner, queue_only, task_settings):
    task_settings(MAX_UNFINISHED_PER_USER=1)
    Task.objects.create(owner=owner, type="test.echo", timeout=10)
    schedule = make_schedule(owner, overlap="allow")
    due_since(schedule, 0.1)
    assert schedules.fire_due_schedules() == 0
    schedule.refresh_from_db()
    assert schedule.skipped_count == 1 and schedule.next_run_at > timezone.now()


def test_fired_tasks_take_the_schedules_options(owner, queue_only):
    schedule = make_schedule(owner, priority=7, timeout=33, max_retries=2)
    due_since(schedule, 0.1)
    schedules.fire_due_schedules()
    task = Task.objects.get(schedule=schedule)
    assert (task.priority, task.timeout, task.max_retries, task.status) == (7, 33, 2, "queued")


def test_cron_schedule_fires_at_its_minute(owner, queue_only):
    schedule = make_schedule(owner, interval_seconds=None, cron="*/5 * * * *")
    assert schedule.next_run_at.minute % 5 == 0 and schedule.next_run_at.second == 0
    due = due_since(schedule, 0.1)
    schedules.fire_due_schedules()
    assert fired(schedule) == [due]
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now()
    assert schedule.next_run_at.minute % 5 == 0
