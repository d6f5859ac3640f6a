"""System checks for ``settings.HYBRIDSERVER``: run by ``manage.py check`` and by
``hybridserver run`` before any port is bound."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from hybridserver.config import SETTINGS, ConfigError, check_import_string, parse_setting, suggest

IMPORT_SETTINGS = ("GRPC_SERVICERS", "GRPC_INTERCEPTORS")


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    user = getattr(settings, "HYBRIDSERVER", {})
    if not isinstance(user, dict):
        return [
            Error(
                f"HYBRIDSERVER must be a dict, not {type(user).__name__}.",
                id="hybridserver.E001",
            )
        ]
    errors = []
    for name, value in user.items():
        if name not in SETTINGS:
            errors.append(
                Error(
                    f"HYBRIDSERVER[{name!r}] is not a hybridserver setting.",
                    hint=suggest(name) or f"Known settings: {', '.join(SETTINGS)}.",
                    id="hybridserver.E002",
                )
            )
            continue
        try:
            parsed = parse_setting(name, value, f"HYBRIDSERVER[{name!r}]")
        except ConfigError as exc:
            errors.append(Error(f"{exc.source}: {exc.message}", id="hybridserver.E003"))
            continue
        if name in IMPORT_SETTINGS:
            for path in parsed:
                problem = check_import_string(name, path)
                if problem:
                    errors.append(Error(problem, id="hybridserver.E004"))
    return errors
