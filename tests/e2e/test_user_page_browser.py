"""The page at / in a real browser: headless Chromium against gunicorn and a cluster.

Same browser setup as the admin's test (Debian's `chromium` through
Playwright, nothing downloaded): skipped without Chromium, failed under CI=true.
"""

import re

import pytest

from .harness import PASSWORD
from .test_admin_browser import page  # noqa: F401  (the headless Chromium page fixture)

pytestmark = [pytest.mark.e2e]

# Generous: the machine may be busy; every wait below polls until it holds.
WAIT_MS = 60_000


def row(tab, task_id: int):
    return tab.locator(f"#task-rows tr[data-task-id='{task_id}']")


def wait_for_new_row(tab, after: int) -> int:
    """The id of the newest row, once a task newer than `after` is listed."""
    tab.wait_for_function(
        f"() => Number(document.querySelector('#task-rows tr')?.dataset.taskId) > {after}",
        timeout=WAIT_MS,
    )
    return int(tab.locator("#task-rows tr").first.get_attribute("data-task-id"))


def test_a_user_starts_watches_opens_and_cancels_tasks(stack, page):  # noqa: F811
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    bob = stack.login("bob")
    bobs = stack.submit(bob, "wordcount", {"text": "not for alice"})
    # More waiting tasks than the first page of the list holds (50).
    alice = stack.login("alice")
    waiting = [
        stack.submit(alice, "wordcount", {"text": f"later {n}"}, delay=3600) for n in range(51)
    ]
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The API's 4xx answers the page shows are logged by Chromium as failed
    # loads; anything else logged as an error is a defect of the page.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )

    # A wrong password is refused with the API's sentence; the right one logs in.
    page.goto(stack.base + "/")
    page.fill("#login-username", "alice")
    page.fill("#login-password", "wrong")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_have_text("Invalid username or password")
    page.fill("#login-password", PASSWORD)
    page.click("#login-button")
    expect(page.locator("#whoami")).to_have_text("alice")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#task-rows tr")).to_have_count(50)
    expect(row(page, waiting[-1]).locator(".status")).to_have_text("queued")
    page.click("#more-tasks")
    expect(page.locator("#task-rows tr")).to_have_count(51)  # bob's task is not listed
    expect(row(page, waiting[0])).to_be_visible()
    expect(page.locator("#more-tasks")).to_be_hidden()
    # A marker that a reload would wipe out: everything below happens live.
    page.evaluate("window.sameDocument = true")

    # The form is built from the type's JSON Schema; the server's field
    # errors show under the field.
    page.select_option("#task-type", "primes")
    expect(page.locator("[data-arg=limit] label")).to_have_text("limit *")
    page.fill("#arg-limit", "1")
    page.click("#start-button")
    expect(page.locator("[data-arg=limit] .field-error")).to_contain_text(
        "greater than or equal to 2"
    )
    expect(page.locator("#start-error")).to_contain_text("Invalid input")

    # Start a demo task from the form; the list shows it complete, live.
    page.select_option("#task-type", "demo")
    expect(page.locator("#arg-seconds")).to_have_attribute("type", "number")
    page.fill("#arg-seconds", "2")
    page.click("#start-button")
    expect(page.locator("#start-result")).to_contain_text("Task started")
    demo = wait_for_new_row(page, max(waiting))
    assert demo != bobs
    expect(row(page, demo).locator(".status")).to_have_text("completed")
    expect(row(page, demo).locator("progress")).to_have_js_property("value", 100)
    assert stack.task(alice, demo)["status"] == "completed"

    # Open it: status, progress, output and its log lines.
    row(page, demo).locator("a").click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-id")).to_have_text(str(demo))
    expect(page.locator("#detail-status")).to_have_text("completed")
    expect(page.locator("#detail-percent")).to_have_text("100%")
    expect(page.locator("#detail-output")).to_contain_text('"message": "Task completed"')
    expect(page.locator("#detail-logs li")).to_have_count(10)
    expect(page.locator("#detail-logs li").last).to_contain_text("100% done")
    expect(page.locator("#cancel-button")).to_be_hidden()
    expect(page.locator("#retry-button")).to_be_hidden()

    # Start a long one and open it: its progress arrives live; cancel it.
    page.fill("#arg-seconds", "600")
    page.click("#start-button")
    long = wait_for_new_row(page, demo)
    expect(row(page, long).locator(".status")).to_have_text("in_progress")
    row(page, long).locator("a").click()
    expect(page.locator("#detail-id")).to_have_text(str(long))
    expect(page.locator("#detail-status")).to_have_text("in_progress")
    expect(page.locator("#detail-progress-message")).to_have_text(re.compile(r"step \d+ of 100"))
    page.click("#cancel-button")
    expect(page.locator("#detail-status")).to_have_text("cancelled")
    expect(row(page, long).locator(".status")).to_have_text("cancelled")
    expect(page.locator("#retry-button")).to_be_visible()
    assert stack.task(alice, long)["status"] == "cancelled"

    # Retry it from the page: it runs again; cancel it once more.
    page.click("#retry-button")
    expect(page.locator("#detail-status")).to_have_text(re.compile("^(queued|in_progress)$"))
    expect(row(page, long).locator(".status")).to_have_text(re.compile("queued|in_progress"))
    page.click("#cancel-button")
    expect(page.locator("#detail-status")).to_have_text("cancelled")
    assert stack.task(alice, long)["attempts"] >= 1

    # A task started elsewhere (the API) shows up too, and runs to its end.
    elsewhere = stack.submit(alice, "wordcount", {"text": "from the command line"})
    expect(row(page, elsewhere).locator(".status")).to_have_text("completed")
    expect(row(page, elsewhere).locator("td").nth(1)).to_have_text("wordcount")

    assert page.evaluate("window.sameDocument") is True
    expect(page.locator("#task-rows tr")).to_have_count(54)
    assert not errors, errors

    # Log out: the login form again, and the session no longer works.
    page.click("#logout-button")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate("fetch('/tasks').then(r => r.status)") == 401
