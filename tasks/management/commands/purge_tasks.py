import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from tasks import services
from tasks.models import FINISHED

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match:
        raise CommandError(
            f"--older-than takes a number and a unit (s, m, h, d, w), like 30d; got {text!r}."
        )
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Delete finished tasks older than a given age, in batches. "
        "Unfinished tasks are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="Age like 30d, 12h, 90m.")
        parser.add_argument(
            "--status",
            action="append",
            choices=sorted(FINISHED),
            help="Only these finished states (repeatable); default all finished states.",
        )
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, older_than, status, batch_size, **options):
        deleted = services.purge_tasks(
            older_than=parse_age(older_than), statuses=status or [], batch_size=batch_size
        )
        self.stdout.write(f"Deleted {deleted} finished task(s).")
