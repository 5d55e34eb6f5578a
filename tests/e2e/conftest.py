import pytest

from .harness import Stack


@pytest.fixture
def stack(tmp_path, request):
    """A running web server + qcluster on a fresh SQLite database."""
    stack = Stack(tmp_path)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(stack.all_logs()[-20000:])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
