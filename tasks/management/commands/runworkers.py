import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run `manage.py qcluster` in the foreground and stop it promptly on "
        "Ctrl-C or SIGTERM (what `make run` uses)."
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
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], start_new_session=True
        )
        stopping = []

        def stop(signum, frame):
            stopping.append(time.monotonic())
            if cluster.poll() is None:
                cluster.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while cluster.poll() is None:
            if stopping and time.monotonic() - stopping[0] > grace:
                self.stderr.write("qcluster did not stop in time; killing it.")
                os.killpg(cluster.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        cluster.wait()
        sys.exit(0 if stopping else cluster.returncode)
