"""``python manage.py createapikey USERNAME [--name NAME] [--expires-in DAYS]``.

Prints the new key as the last line of its output: the only time it is ever shown.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from hybridserver.auth.models import APIKey


class Command(BaseCommand):
    help = "Create an API key for a user and print it (last line; shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The user the key authenticates as.")
        parser.add_argument("--name", default="cli", help="What the key is for (default: cli).")
        parser.add_argument(
            "--expires-in",
            type=int,
            metavar="DAYS",
            help="Days until the key expires (default: never).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"no user {username!r}") from None
        if not getattr(user, "is_active", True):
            raise CommandError(f"user {username!r} is inactive; a key would not work")
        expires_at = None
        if options["expires_in"] is not None:
            if options["expires_in"] < 1:
                raise CommandError("--expires-in must be at least 1 day")
            expires_at = timezone.now() + datetime.timedelta(days=options["expires_in"])
        api_key, key = APIKey.objects.create_key(user, options["name"], expires_at=expires_at)
        expiry = f"expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else "never expires"
        self.stdout.write(
            f"Created API key {api_key.name!r} ({api_key.prefix}) for {username}; {expiry}.\n"
            "Store it now: it cannot be shown again."
        )
        self.stdout.write(key)
