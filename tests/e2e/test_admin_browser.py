"""The admin in a real browser: headless Chromium against gunicorn and a cluster.

Uses the system's Chromium (Debian's `chromium` package) through Playwright;
nothing is downloaded at run time. Without Chromium the test is skipped,
except under CI=true, where it fails.
"""

import json
import os
import re
import shutil

import pytest

from .harness import PASSWORD, ROOT, wait_for

pytestmark = [pytest.mark.e2e]

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run).")
    pytest.skip(reason)


@pytest.fixture
def page(request):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -r requirements-dev.txt)")
    executable = shutil.which("chromium")
    if executable is None:
        missing("chromium is not installed (apt-get install -y chromium)")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                ARTIFACTS.mkdir(exist_ok=True)
                path = ARTIFACTS / f"{request.node.name}.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot saved to {path}")
            browser.close()


def task_row(stack, task_id: int) -> dict:
    """The task's row, read from the database the server uses."""
    script = (
        "import json; from tasks.models import Task; "
        f"t = Task.objects.get(pk={task_id}); "
        "print(json.dumps({'status': t.status, 'attempts': t.attempts, "
        "'runs': t.attempt_log.count()}))"
    )
    return json.loads(stack.manage("shell", "-c", script).stdout.strip().splitlines()[-1])


def test_an_operator_filters_inspects_and_acts_on_tasks(stack, page):
    # Assertions on a page that was just navigated use expect(), which retries
    # until the new document holds the text: a one-shot read can see the page
    # while it is still being replaced.
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser('operator', password={PASSWORD!r})",
    )
    alice = stack.login("alice")
    broken = stack.submit(alice, "test.fail", {"message": "disk on fire"})
    done = stack.submit(alice, "wordcount", {"text": "one two three"})
    later = stack.submit(alice, "wordcount", {"text": "later"}, delay=3600)
    stack.wait_status(alice, broken, "failed")
    stack.wait_status(alice, done, "completed")

    stylesheets = []
    page.on(
        "response",
        lambda r: stylesheets.append(r) if r.request.resource_type == "stylesheet" else None,
    )

    # Log in.
    page.goto(stack.base + "/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    # The admin's CSS is served (whitenoise under gunicorn, DEBUG=False).
    base_css = [r for r in stylesheets if r.url.endswith("/static/admin/css/base.css")]
    assert base_css and base_css[0].status == 200
    assert base_css[0].headers["content-type"].startswith("text/css")
    assert page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor") not in (
        "rgba(0, 0, 0, 0)",
        "transparent",
    )

    # Filter the list by status.
    page.goto(stack.base + "/admin/tasks/task/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(3)
    page.locator("#changelist-filter a", has_text="Failed").first.click()
    page.wait_for_url(re.compile(r"status__exact=failed"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("disk on fire")

    # Open the failed task and read its error.
    rows.first.locator("a", has_text=str(broken)).first.click()
    page.wait_for_url(re.compile(rf"/admin/tasks/task/{broken}/change/"))
    content = page.locator("#content").inner_text()
    assert '"message": "disk on fire"' in content
    assert '"type": "ValueError"' in content
    assert "Traceback (most recent call last):" in content
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("button[name=retry]").is_visible()
    assert page.locator("button[name=cancel]").count() == 0

    # Retry it from the filtered list.
    page.go_back()
    page.wait_for_url(re.compile(r"status__exact=failed"))
    page.check(f"input[name=_selected_action][value='{broken}']")
    page.select_option("select[name=action]", "retry_selected")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text("Retried 1 task(s).")
    # The real cluster runs the second attempt, which fails the same way.
    row = wait_for(
        lambda: (r := task_row(stack, broken))["attempts"] == 2 and r["status"] == "failed" and r,
        60,
        what="the retried task's second attempt",
    )
    assert row == {"status": "failed", "attempts": 2, "runs": 2}

    # Cancel the waiting task from the "Queued" filter.
    page.goto(stack.base + "/admin/tasks/task/")
    page.locator("#changelist-filter a", has_text="Queued").first.click()
    page.wait_for_url(re.compile(r"status__exact=queued"))
    expect(rows).to_have_count(1)
    page.check(f"input[name=_selected_action][value='{later}']")
    page.select_option("select[name=action]", "cancel_selected")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text("Cancelled 1 task(s).")
    assert task_row(stack, later) == {"status": "cancelled", "attempts": 0, "runs": 0}
    # Nothing queued is left on the page the action returned to.
    expect(page.locator("#result_list tbody tr")).to_have_count(0)
    page.locator("#changelist-filter a", has_text="Cancelled").first.click()
    page.wait_for_url(re.compile(r"status__exact=cancelled"))
    expect(page.locator("#result_list tbody")).to_contain_text(str(later))
    assert task_row(stack, done)["status"] == "completed"


def log_in(stack, page) -> None:
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_superuser('operator', password={PASSWORD!r})",
    )
    page.goto(stack.base + "/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


def test_the_dashboard_shows_counts_and_the_chart_and_keeps_them_fresh(stack, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    alice = stack.login("alice")
    for text in ("one two", "three four"):
        stack.wait_status(alice, stack.submit(alice, "wordcount", {"text": text}), "completed")
    stack.wait_status(alice, stack.submit(alice, "test.fail", {"message": "no"}), "failed")
    stack.submit(alice, "wordcount", {"text": "later"}, delay=3600)
    log_in(stack, page)

    page.locator("#dashboard-link a", has_text="Dashboard").click()
    page.wait_for_url(re.compile(r"/admin/dashboard/$"))
    card = "#dash-totals [data-status={}] .count"
    expect(page.locator(card.format("completed"))).to_have_text("2")
    expect(page.locator(card.format("failed"))).to_have_text("1")
    expect(page.locator(card.format("queued"))).to_have_text("1")
    expect(
        page.locator('#dash-types tr[data-type="wordcount"] td[data-status="completed"]')
    ).to_have_text("2")
    expect(
        page.locator('#dash-queues tr[data-queue="default"] td[data-state="delayed"]')
    ).to_have_text("1")
    chart = page.locator("svg#throughput-chart")
    expect(chart).to_be_visible()
    assert chart.bounding_box()["width"] > 300
    expect(chart.locator("rect.bar-completed")).to_have_count(1)
    expect(chart.locator("rect.bar-failed")).to_have_count(1)
    expect(page.locator("[data-last-hour=completed]")).to_have_text("2")
    expect(page.locator("#dash-workers tr[data-worker]").first).to_be_visible()

    # New work shows up without reloading the page: the script refreshes it.
    page.evaluate("window.loadedOnce = true")
    done = stack.submit(alice, "wordcount", {"text": "five six"})
    stack.wait_status(alice, done, "completed")
    expect(page.locator(card.format("completed"))).to_have_text("3")
    expect(page.locator("[data-last-hour=completed]")).to_have_text("3")
    assert page.evaluate("window.loadedOnce") is True
    assert page.locator("#dashboard-status").get_attribute("data-refreshed")


def test_a_running_tasks_page_shows_its_progress_and_log_live(stack, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    alice = stack.login("alice")
    # The demo logs a line per 10% and reports progress all along.
    running = stack.submit(alice, "demo", {"seconds": 20})
    stack.wait_started(alice, running)
    log_in(stack, page)

    page.goto(f"{stack.base}/admin/tasks/task/{running}/change/")
    expect(page.locator("#task-live")).to_be_visible()
    progress = ".field-progress_display progress"
    first = int(page.locator(progress).get_attribute("value"))
    lines = page.locator("#task-log tbody tr").count()
    page.evaluate("window.loadedOnce = true")

    page.wait_for_function(f"document.querySelector({progress!r}).value > {first}", timeout=60_000)
    page.wait_for_function(
        f"document.querySelectorAll('#task-log tbody tr').length > {lines}", timeout=60_000
    )
    expect(page.locator("#task-log tbody")).to_contain_text("% done")
    assert page.evaluate("window.loadedOnce") is True

    # Once it has finished the page reloads itself and shows the output.
    expect(page.locator("#content")).to_contain_text("Task completed")
    expect(page.locator(".field-status_label")).to_contain_text("Completed")
    assert page.locator("#task-live").count() == 0
