"""``python manage.py revokeapikey NAME_OR_PREFIX``: refuse a key from the next request on."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from hybridserver.auth.models import APIKey


class Command(BaseCommand):
    help = "Revoke one active API key, named by its name or its prefix (e.g. hs_k3x9a0qz)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", metavar="NAME_OR_PREFIX")

    def handle(self, *args: Any, **options: Any) -> None:
        wanted = options["key"]
        matches = list(
            APIKey.objects.select_related("user").filter(
                Q(prefix=wanted) | Q(name=wanted), revoked=False
            )
        )
        if not matches:
            raise CommandError(f"no active API key is named or prefixed {wanted!r}")
        if len(matches) > 1:
            found = ", ".join(f"{key.prefix} ({key.user})" for key in matches)
            raise CommandError(
                f"{len(matches)} active API keys match {wanted!r}: {found}; "
                "give the prefix of the one to revoke"
            )
        api_key = matches[0]
        api_key.revoke()
        self.stdout.write(f"Revoked API key {api_key.name!r} ({api_key.prefix}) of {api_key.user}.")
