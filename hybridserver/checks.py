"""System checks for ``settings.HYBRIDSERVER``: run by ``manage.py check`` and by
``hybridserver run`` before any port is bound."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from hybridserver.config import (
    IMPORT_SETTINGS,
    SETTINGS,
    ConfigError,
    check_import_string,
    parse_setting,
    suggest,
)


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


_DJANGO_AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
_HYBRID_AUTH = (
    "hybridserver.auth.AuthenticationMiddleware",
    "hybridserver.auth.middleware.AuthenticationMiddleware",
)


@register(Tags.security)
def check_auth_middleware(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """hybridserver's AuthenticationMiddleware overrides Django's session user, so it must
    come after Django's."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    ours = [index for index, path in enumerate(middleware) if path in _HYBRID_AUTH]
    if not ours:
        return []
    if _DJANGO_AUTH not in middleware or middleware.index(_DJANGO_AUTH) > ours[0]:
        return [
            Error(
                "'hybridserver.auth.AuthenticationMiddleware' must come after "
                f"{_DJANGO_AUTH!r} in MIDDLEWARE.",
                hint="It replaces the session user when a request carries API credentials.",
                id="hybridserver.E005",
            )
        ]
    return []


@register(Tags.caches)
def check_ratelimit_cache(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``@ratelimit`` counts in ``HYBRIDSERVER["RATELIMIT_CACHE"]``: it must be in CACHES."""
    user = getattr(settings, "HYBRIDSERVER", {})
    alias = user.get("RATELIMIT_CACHE") if isinstance(user, dict) else None
    if isinstance(alias, str) and alias and alias not in settings.CACHES:
        return [
            Error(
                f"HYBRIDSERVER['RATELIMIT_CACHE'] is {alias!r}, which is not in CACHES.",
                hint=f"Known caches: {', '.join(settings.CACHES)}.",
                id="hybridserver.E010",
            )
        ]
    return []
