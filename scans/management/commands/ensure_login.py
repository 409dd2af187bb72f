"""python manage.py ensure_login: create a first superuser if nobody can log in yet, printing it once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an 'admin' superuser with a random password when no user exists, and print the password once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options) -> None:
        users = get_user_model()
        if users.objects.exists():
            self.stdout.write("Users exist already; no login created.")
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=options["username"], email="", password=password)
        # The password is shown this once and stored only as a hash.
        self.stdout.write(self.style.SUCCESS(f"Created login  user: {options['username']}  password: {password}"))
        self.stdout.write("Keep it now: it will not be shown again (change it with manage.py changepassword).")
