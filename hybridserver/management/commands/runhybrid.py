"""``python manage.py runhybrid [MODULE[:ATTR]]``: the same as ``hybridserver run``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hybridserver.cli import StartError, serve
from hybridserver.config import SETTINGS


def default_app() -> str:
    """The ``ASGI_APPLICATION`` setting (``project.asgi.application``, the name Daphne and
    Channels read), else ``project.asgi`` for ``DJANGO_SETTINGS_MODULE=project.settings``."""
    from django.conf import settings

    if path := getattr(settings, "ASGI_APPLICATION", None):
        module, _, attr = path.rpartition(".")
        return f"{module}:{attr}"
    package = os.environ.get("DJANGO_SETTINGS_MODULE", "").rpartition(".")[0]
    return f"{package}.asgi" if package else "asgi"


class Command(BaseCommand):
    help = (
        "Serve this project over HTTP and gRPC in one process, as `hybridserver run` does. "
        "Options are also HYBRIDSERVER_* environment variables and HYBRIDSERVER settings; "
        "precedence: defaults < settings < environment < options."
    )
    requires_system_checks = ()  # `serve` runs them, before binding any port

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "app",
            nargs="?",
            metavar="MODULE[:ATTR]",
            help=f"The ASGI application (default: {default_app()}).",
        )
        for setting in SETTINGS.values():
            if not setting.flag:
                continue
            help_text = f"{setting.help} [env: {setting.env}]"
            if setting.type is bool:
                parser.add_argument(
                    setting.option, action=argparse.BooleanOptionalAction, help=help_text
                )
            elif setting.choices:
                parser.add_argument(
                    setting.option, type=str.lower, choices=setting.choices, help=help_text
                )
            else:
                parser.add_argument(setting.option, type=setting.type, help=help_text)

    def handle(self, *args: Any, **options: Any) -> None:
        flags = {
            name: options[name.lower()]
            for name, setting in SETTINGS.items()
            if setting.flag and options.get(name.lower()) is not None
        }
        try:
            status = serve(options["app"] or default_app(), flags)
        except StartError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        if status:
            raise CommandError("the server stopped with an error", returncode=status)
