"""The end-to-end stack runs on the same setup as the suite (SQLite/ORM or PostgreSQL/Redis)."""

import psycopg
import pytest
from django.db import connection

from tasks import queue
from tests.backends import postgres_params

pytestmark = [pytest.mark.e2e]


def test_the_stack_runs_on_the_suites_database_and_broker(stack):
    probe = stack.manage(
        "shell",
        "--verbosity=0",
        "-c",
        "from django.db import connection; from tasks import queue; "
        "print(connection.vendor, queue.broker_name())",
    )
    session = stack.login()
    task_id = stack.submit(session, "wordcount", {"text": "one two"})
    done = stack.wait_status(session, task_id, ["completed", "failed"], timeout=60)

    assert probe.stdout.split() == [connection.vendor, queue.broker_name()]
    assert done["status"] == "completed"
    if stack.pg_database:
        # The row lives in the stack's own fresh database.
        with psycopg.connect(**postgres_params(stack.pg_database)) as conn:
            row = conn.execute(
                "SELECT status, output->>'words' FROM tasks_task WHERE id = %s", [task_id]
            ).fetchone()
        assert row == ("completed", "2")
