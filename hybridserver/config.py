"""One knob, one name: ``--grpc-port``, ``HYBRIDSERVER_GRPC_PORT``,
``HYBRIDSERVER["GRPC_PORT"]`` and ``Config.grpc_port`` are the same setting.

Precedence, lowest first: defaults < Django settings < environment < command-line flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import Any

from django.utils.module_loading import import_string

from hybridserver.fairness import PACE_MAX

ENV_PREFIX = "HYBRIDSERVER_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(Exception):
    """A setting has a bad value. ``str()`` names the setting, where it came from, and why."""

    def __init__(self, name: str, source: str, message: str) -> None:
        self.name = name
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}")


# Parsers take a value from settings (any type) or the environment (a string) and return
# the typed value, or raise ValueError with a message that reads well after the key name.


def _int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = "" if maximum is None else f" and {maximum}"
            raise ValueError(f"expected an integer between {minimum}{upper}, got {number}")
        return number

    return parse


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        if value is None or value == "":
            return None
        return parse(value)

    return parse_optional


def _float(minimum: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number of seconds, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"expected a number >= {minimum}, got {number}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a host name or IP address, got {value!r}")
    return value.strip()


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def _import_strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of dotted import paths, got {value!r}")
    for item in value:
        if not isinstance(item, str) or "." not in item:
            raise ValueError(f"expected a dotted import path, got {item!r}")
    return tuple(value)


def _grpc_options(value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of (name, value) pairs, got {value!r}")
    options = []
    for item in value:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], int | str | bytes)
            or isinstance(item[1], bool)
        ):
            raise ValueError(f"expected a (name, int or str) pair, got {item!r}")
        options.append((item[0], item[1]))
    return tuple(options)


def _cache_alias(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected the name of a cache in CACHES, got {value!r}")
    return value


def _file(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a file path, got {value!r}")
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value!r}")
    return value


def _path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected a URL path starting with '/', or None, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    # A flag is also a CLI option and a HYBRIDSERVER_* environment variable.
    flag: bool = False
    # What the option takes on the command line (a bool setting is an on/off switch).
    type: type = str
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    @property
    def option(self) -> str:
        return "--" + self.name.lower().replace("_", "-")


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("HOST", "127.0.0.1", _host, "Bind both servers to this host.", flag=True),
        Setting("PORT", 8000, _int(0, 65535), "HTTP port.", flag=True, type=int),
        Setting(
            "GRPC_HOST",
            None,
            _optional(_host),
            "Bind gRPC to this host (default: HOST).",
            flag=True,
        ),
        Setting("GRPC_PORT", 50051, _int(0, 65535), "gRPC port.", flag=True, type=int),
        Setting(
            "LOG_LEVEL",
            "info",
            _log_level,
            "Log level of both servers.",
            flag=True,
            choices=LOG_LEVELS,
        ),
        Setting(
            "ACCESS_LOG",
            True,
            _bool,
            "Log one line per HTTP request and per RPC.",
            flag=True,
            type=bool,
        ),
        Setting(
            "RELOAD",
            False,
            _bool,
            "Restart on changes to .py and .proto files (development only).",
            flag=True,
            type=bool,
        ),
        Setting(
            "GRACEFUL_TIMEOUT",
            30.0,
            _float(0),
            "Seconds that in-flight requests and RPCs get to finish on shutdown.",
            flag=True,
            type=float,
        ),
        Setting(
            "TIMEOUT_KEEP_ALIVE",
            5,
            _int(1, 86_400),
            "Seconds an idle HTTP keep-alive connection is kept open. Behind a load "
            "balancer, make it longer than the balancer's idle timeout.",
            flag=True,
            type=int,
        ),
        Setting(
            "THREADS",
            40,
            _int(1, 10_000),
            "Threads for sync handlers, sync views and ORM queries; each holds at most one "
            "database connection per alias.",
            flag=True,
            type=int,
        ),
        Setting(
            "LOOP_FAIRNESS",
            True,
            _bool,
            "When HTTP keeps the shared event loop busy while RPCs are arriving, let "
            "fewer HTTP requests into Django at once, so that gRPC keeps its share of "
            "the loop.",
            flag=True,
            type=bool,
        ),
        Setting(
            "GRPC_PACING",
            True,
            _bool,
            "With LOOP_FAIRNESS: while HTTP gets less than about half the CPU with its "
            "requests waiting, hold each RPC, and each message a stream sends, a few "
            f"milliseconds (at most {PACE_MAX * 1000:g}, and never more than a quarter "
            "of the time left before its deadline), so that HTTP gets its share back.",
            flag=True,
            type=bool,
        ),
        Setting(
            "COALESCE_MIDDLEWARE",
            True,
            _bool,
            "Run the sync hooks of consecutive MiddlewareMixin middleware in one thread "
            "hop per direction, instead of one hop per hook.",
            flag=True,
            type=bool,
        ),
        Setting(
            "WORKERS",
            1,
            _int(1, 512),
            "Processes, each running both servers; they share the HTTP socket and the gRPC "
            "port. With 1, the gRPC port is exclusive to this process.",
            flag=True,
            type=int,
        ),
        Setting(
            "SSL_CERTFILE",
            None,
            _file,
            "TLS certificate (PEM) for both servers; needs SSL_KEYFILE.",
            flag=True,
        ),
        Setting(
            "SSL_KEYFILE",
            None,
            _file,
            "TLS private key (PEM) for both servers; needs SSL_CERTFILE.",
            flag=True,
        ),
        Setting(
            "GRPC_SERVICERS", (), _import_strings, "Callables register(server) adding servicers."
        ),
        Setting("GRPC_INTERCEPTORS", (), _import_strings, "grpc.aio.ServerInterceptor classes."),
        Setting("GRPC_OPTIONS", (), _grpc_options, "(name, value) gRPC server options."),
        Setting(
            "GRPC_MAX_CONCURRENT_RPCS",
            None,
            _optional(_int(1)),
            "Refuse RPCs beyond this many in flight with RESOURCE_EXHAUSTED (default: no limit).",
        ),
        Setting("GRPC_REFLECTION", True, _bool, "Serve gRPC server reflection."),
        Setting("GRPC_HEALTH", True, _bool, "Serve the standard gRPC health service."),
        Setting(
            "HTTP_HEALTH_PATH",
            "/healthz",
            _path,
            "Path of the HTTP health endpoint, answered before Django's URLconf (None: off).",
        ),
        Setting(
            "AUTH_BACKENDS",
            ("hybridserver.auth.backends.APIKeyBackend",),
            _import_strings,
            "Classes with `async def authenticate(credentials)`: who an HTTP request or an "
            "RPC with credentials is.",
        ),
        Setting(
            "GRPC_AUTH",
            True,
            _bool,
            "Authenticate every RPC with AUTH_BACKENDS and set `context.user`.",
        ),
        Setting(
            "AUTH_TOKEN_MAX_AGE",
            3600,
            _int(1),
            "Seconds a signed bearer token (SignedTokenBackend) stays valid.",
        ),
        Setting(
            "RATELIMIT_CACHE",
            "default",
            _cache_alias,
            "Alias in CACHES where @ratelimit counts calls; a shared cache such as Redis "
            "makes limits hold across processes.",
        ),
    ]
}

# Settings whose values are dotted import paths, checked by the system checks.
IMPORT_SETTINGS = ("GRPC_SERVICERS", "GRPC_INTERCEPTORS", "AUTH_BACKENDS")


def suggest(name: str) -> str:
    """A 'did you mean' hint for an unknown setting name, or ''."""
    close = difflib.get_close_matches(name, SETTINGS, n=1)
    return f"Did you mean {close[0]!r}?" if close else ""


def parse_setting(name: str, value: Any, source: str) -> Any:
    """Validate one value; raise ConfigError naming ``source`` (e.g. HYBRIDSERVER_PORT)."""
    try:
        return SETTINGS[name].parse(value)
    except ValueError as exc:
        raise ConfigError(name, source, str(exc)) from None


def import_setting(path: str, source: str) -> Any:
    """``import_string(path)`` for the setting ``source`` (``HYBRIDSERVER['NAME']``);
    its ImportError names the setting and the path."""
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImportError(f"{source}: cannot import {path!r}: {exc}") from exc


def check_import_string(name: str, path: str) -> str | None:
    """Import ``path``; return a message when it fails, None when it works."""
    try:
        import_setting(path, f"HYBRIDSERVER[{name!r}]")
    except ImportError as exc:
        return str(exc)
    return None


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the server needs, resolved once. Picklable, so reload children get it."""

    app: str = "project.asgi:application"
    host: str = SETTINGS["HOST"].default
    port: int = SETTINGS["PORT"].default
    grpc_host: str | None = SETTINGS["GRPC_HOST"].default
    grpc_port: int = SETTINGS["GRPC_PORT"].default
    log_level: str = SETTINGS["LOG_LEVEL"].default
    access_log: bool = SETTINGS["ACCESS_LOG"].default
    reload: bool = SETTINGS["RELOAD"].default
    graceful_timeout: float = SETTINGS["GRACEFUL_TIMEOUT"].default
    timeout_keep_alive: int = SETTINGS["TIMEOUT_KEEP_ALIVE"].default
    threads: int = SETTINGS["THREADS"].default
    loop_fairness: bool = SETTINGS["LOOP_FAIRNESS"].default
    grpc_pacing: bool = SETTINGS["GRPC_PACING"].default
    coalesce_middleware: bool = SETTINGS["COALESCE_MIDDLEWARE"].default
    workers: int = SETTINGS["WORKERS"].default
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    grpc_servicers: tuple[str, ...] = ()
    grpc_interceptors: tuple[str, ...] = ()
    grpc_options: tuple[tuple[str, Any], ...] = ()
    grpc_max_concurrent_rpcs: int | None = None
    grpc_reflection: bool = True
    grpc_health: bool = True
    http_health_path: str | None = SETTINGS["HTTP_HEALTH_PATH"].default
    auth_backends: tuple[str, ...] = SETTINGS["AUTH_BACKENDS"].default
    grpc_auth: bool = SETTINGS["GRPC_AUTH"].default
    auth_token_max_age: int = SETTINGS["AUTH_TOKEN_MAX_AGE"].default
    ratelimit_cache: str = SETTINGS["RATELIMIT_CACHE"].default

    @classmethod
    def resolve(
        cls,
        app: str,
        *,
        user_settings: Mapping[str, Any],
        environ: Mapping[str, str],
        flags: Mapping[str, Any],
    ) -> Config:
        """Merge the layers. ``flags`` maps setting names to values given on the command line."""
        values: dict[str, Any] = {}
        for name, value in user_settings.items():
            if name not in SETTINGS:
                hint = suggest(name)
                raise ConfigError(name, f"HYBRIDSERVER[{name!r}]", "unknown setting. " + hint)
            values[name] = parse_setting(name, value, f"HYBRIDSERVER[{name!r}]")
        # A flag given on the command line hides its variable, as click does for
        # uvicorn's UVICORN_* ones: a bad value there cannot stop a corrected run.
        flagged = {name for name, value in flags.items() if value is not None}
        for setting in SETTINGS.values():
            if setting.name in flagged or not setting.flag:
                continue
            if environ.get(setting.env, "") != "":
                values[setting.name] = parse_setting(
                    setting.name, environ[setting.env], setting.env
                )
        for name, value in flags.items():
            if value is not None:
                values[name] = parse_setting(name, value, SETTINGS[name].option)
        if bool(values.get("SSL_CERTFILE")) != bool(values.get("SSL_KEYFILE")):
            given = "SSL_CERTFILE" if values.get("SSL_CERTFILE") else "SSL_KEYFILE"
            missing = "SSL_KEYFILE" if given == "SSL_CERTFILE" else "SSL_CERTFILE"
            raise ConfigError(missing, missing, f"{given} is set, so {missing} must be too")
        return cls(app=app, **{name.lower(): value for name, value in values.items()})

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    @property
    def effective_grpc_host(self) -> str:
        return self.grpc_host or self.host


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around IPv6 literals as gRPC and URLs expect."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"
