"""The end-to-end stack runs on the same database as the suite (SQLite or PostgreSQL)."""

import json

import pytest
from django.db import connection

pytestmark = [pytest.mark.e2e]


def test_the_stack_runs_on_the_suites_database_with_the_task_table_as_queue(stack):
    probe = stack.manage(
        "shell",
        "--verbosity=0",
        "-c",
        "from django.conf import settings; from django.db import connection; "
        "print(connection.vendor, settings.Q_CLUSTER['broker_class'])",
    )
    session = stack.login()
    task_id = stack.submit(session, "wordcount", {"text": "one two"})
    done = stack.wait_status(session, task_id, ["completed", "failed"], timeout=60)

    assert probe.stdout.split() == [connection.vendor, "tasks.cluster.TaskBroker"]
    assert done["status"] == "completed"
    assert done["queue"] == "default"
    # The row lives in the stack's own fresh database, claimed by its cluster.
    [(status, output, claimed_by)] = stack.db(
        "SELECT status, output, claimed_by FROM tasks_task WHERE id = %s", [task_id]
    )
    assert status == "completed"
    assert (json.loads(output) if isinstance(output, str) else output)["words"] == 2
    assert claimed_by
    assert stack.is_postgres == (connection.vendor == "postgresql")
