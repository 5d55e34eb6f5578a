import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque

from django.core.management.base import BaseCommand

# A cluster that dies this often in this many seconds is broken (a bad
# setting, a database that is down), not unlucky: give up and say so.
MAX_RESTARTS, RESTART_WINDOW = 5, 60.0
PR_SET_PDEATHSIG = 1
# Looked up here, not in the forked child, where loading a library is unsafe.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when this command dies, even by
    SIGKILL, so the cluster never outlives it (Linux; elsewhere a no-op)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Command(BaseCommand):
    help = (
        "Run `manage.py qcluster` in the foreground, start it again if it dies, "
        "and stop it promptly on Ctrl-C or SIGTERM, whether its process alone or its "
        "whole process group is signalled (`make run` and `make worker` use it)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=3.0,
            help="Seconds the cluster gets to stop cleanly before it is killed.",
        )

    def handle(self, *args, grace, **options):
        # qcluster stops cleanly when its main process alone gets SIGTERM, but
        # hangs when the whole process group is signalled (what a terminal's
        # Ctrl-C and process managers do). So it runs in a session of its own
        # and only its main process hears about the stop. Tasks still running
        # after the grace period are killed; their leases expire and they are
        # queued again on the next start.
        stopping: list[float] = []
        cluster: subprocess.Popen | None = None

        def stop(signum, frame):
            stopping.append(time.monotonic())
            if cluster is not None and cluster.poll() is None:
                cluster.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        restarts: deque[float] = deque(maxlen=MAX_RESTARTS)
        while True:
            cluster = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            if stopping:  # asked to stop while it was starting
                cluster.send_signal(signal.SIGTERM)
            returncode = self._wait(cluster, stopping, grace)
            if stopping:
                sys.exit(0)
            # Not asked to stop: its main process died (killed, out of
            # memory...). Its sentinel and workers would run on as orphans
            # nobody stops, so the whole group goes, and a new cluster takes
            # over; the tasks the old one was running come back when their
            # leases expire.
            self._kill_group(cluster)
            now = time.monotonic()
            restarts.append(now)
            if len(restarts) == MAX_RESTARTS and now - restarts[0] < RESTART_WINDOW:
                self.stderr.write(
                    f"qcluster died {MAX_RESTARTS} times within {RESTART_WINDOW:.0f} s "
                    f"(last exit code {returncode}); giving up."
                )
                sys.exit(returncode or 1)
            self.stderr.write(f"qcluster exited unexpectedly (code {returncode}); restarting it.")
            time.sleep(1)

    def _wait(self, cluster: subprocess.Popen, stopping: list[float], grace: float) -> int:
        while cluster.poll() is None:
            if stopping and time.monotonic() - stopping[0] > grace:
                self.stderr.write("qcluster did not stop in time; killing it.")
                self._kill_group(cluster)
                break
            time.sleep(0.1)
        return cluster.wait()

    @staticmethod
    def _kill_group(cluster: subprocess.Popen) -> None:
        try:
            os.killpg(cluster.pid, signal.SIGKILL)
        except ProcessLookupError:  # nothing left of it
            pass
