"""``hybrid_setting(name)``: one key of ``settings.HYBRIDSERVER``, for code that runs inside
Django (the auth layer) rather than from the server's :class:`~hybridserver.config.Config`.

Like Django REST framework's ``api_settings``: defaults come from
:data:`hybridserver.config.SETTINGS`, values are validated by the same parsers,
import strings are imported once, and everything is forgotten when a test changes
``HYBRIDSERVER`` (``override_settings`` sends ``setting_changed``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from hybridserver.config import (
    IMPORT_SETTINGS,
    SETTINGS,
    ConfigError,
    import_setting,
    parse_setting,
    suggest,
)

_cache: dict[str, Any] = {}


def hybrid_setting(name: str) -> Any:
    """The value of ``HYBRIDSERVER[name]``, or its default.

    Import-string settings (``AUTH_BACKENDS``, ``GRPC_SERVICERS``, ``GRPC_INTERCEPTORS``)
    come back as a tuple of the imported objects. Raises ``KeyError`` for a name that is
    not a hybridserver setting and ``ImproperlyConfigured`` for a bad value.
    """
    try:
        return _cache[name]
    except KeyError:
        pass
    if name not in SETTINGS:
        raise KeyError(f"{name!r} is not a hybridserver setting. {suggest(name)}".rstrip())
    user = getattr(settings, "HYBRIDSERVER", {})
    source = f"HYBRIDSERVER[{name!r}]"
    try:
        value = parse_setting(name, user[name], source) if name in user else SETTINGS[name].default
    except ConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    if name in IMPORT_SETTINGS:
        value = tuple(_import(source, path) for path in value)
    _cache[name] = value
    return value


def _import(source: str, path: str) -> Any:
    try:
        return import_setting(path, source)
    except ImportError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "HYBRIDSERVER":
        _cache.clear()


setting_changed.connect(_reset)
