import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from tasks import maintenance
from tasks.models import FINISHED

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """`30d` -> 30 days. A zero age is refused: it would purge every finished
    task at once, which is never what a retention policy means."""
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match or int(match.group(1)) == 0:
        raise CommandError(
            "--older-than takes a positive whole number and a unit "
            f"(s, m, h, d or w), like 30d or 12h; got {text!r}."
        )
    try:
        return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise CommandError(f"--older-than {text!r} is too large.") from None


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise CommandError(f"--batch-size takes a whole number of at least 1; got {text!r}.")
    return int(text)


class Command(BaseCommand):
    help = (
        "Delete finished tasks (completed, failed, cancelled) that finished longer "
        "ago than --older-than, in batches. Queued and running tasks are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", required=True, help="Age like 30d, 12h, 90m, 2w or 3600s."
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=sorted(FINISHED),
            help="Only tasks that ended in this state (repeatable); default: all finished.",
        )
        parser.add_argument(
            "--batch-size", default="1000", help="Rows deleted per transaction (default 1000)."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count the tasks that would be deleted."
        )

    def handle(self, *args, older_than, status, batch_size, dry_run, **options):
        age = parse_age(older_than)
        try:
            count = maintenance.purge_tasks(
                older_than=age,
                statuses=status,
                batch_size=positive(str(batch_size)),
                dry_run=dry_run,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        states = ", ".join(sorted(status or FINISHED))
        if dry_run:
            self.stdout.write(
                f"Would delete {count} finished task(s) ({states}) older than {older_than}."
            )
        else:
            self.stdout.write(
                f"Deleted {count} finished task(s) ({states}) older than {older_than}."
            )
