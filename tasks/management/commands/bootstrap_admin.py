from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the first admin from DJANGO_SUPERUSER_USERNAME/PASSWORD/EMAIL "
        "when the database has no user yet; otherwise do nothing."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.exists():
            self.stdout.write("Users exist already; no admin created.")
            return
        username = settings.DJANGO_SUPERUSER_USERNAME
        password = settings.DJANGO_SUPERUSER_PASSWORD
        if not username or not password:
            self.stdout.write(
                "No user yet and DJANGO_SUPERUSER_USERNAME/PASSWORD are not set: "
                "create one with `python manage.py createsuperuser`."
            )
            return
        User.objects.create_superuser(
            username=username, password=password, email=settings.DJANGO_SUPERUSER_EMAIL
        )
        self.stdout.write(f"Created admin user {username!r}.")
