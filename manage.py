#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line
    from django.core.management.commands import runserver

    # `manage.py runserver` with no address listens on PORT (default 8081).
    runserver.Command.default_port = str(settings.PORT)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
