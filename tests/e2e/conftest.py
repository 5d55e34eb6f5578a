import pytest

from .harness import Stack

# How much of each process's log a failed test prints.
LOG_TAIL = 8000


def failed(request) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


@pytest.fixture
def make_stack(tmp_path, request):
    """Start stacks (web server + clusters on a fresh database); all are
    stopped at the end, and their logs printed if the test failed."""
    stacks: list[Stack] = []

    def make(env=None, *, users=("alice", "bob"), cluster=True) -> Stack:
        path = tmp_path / f"stack-{len(stacks) + 1}"
        path.mkdir()
        stack = Stack(path, env=env)
        stacks.append(stack)
        return stack.start(users, cluster=cluster)

    try:
        yield make
    finally:
        for stack in stacks:
            try:
                stack.stop()
            finally:
                if failed(request):
                    print(stack.all_logs(tail=LOG_TAIL))


@pytest.fixture
def stack(make_stack):
    """A running web server + one qcluster (2 workers) on a fresh database."""
    return make_stack()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
