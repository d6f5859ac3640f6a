"""The ``hybridserver`` command.

``hybridserver run project.asgi`` imports the Django ASGI module (which sets Django up),
runs Django's system checks, which validate ``HYBRIDSERVER`` and its import strings,
resolves the configuration (defaults < settings < environment < flags), and only then
binds ports. Every error before serving is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from hybridserver import __version__
from hybridserver.config import SETTINGS, Config, ConfigError

if TYPE_CHECKING:
    from django.core.checks import CheckMessage

DEFAULT_ATTR = "application"


class StartError(Exception):
    """Something stops the server from starting. ``str()`` is the one-line reason."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def import_app(app: str) -> str:
    """Import ``MODULE[:ATTR]`` (setting Django up) and return the full import string."""
    module, _, attr = app.partition(":")
    attr = attr or DEFAULT_ATTR
    target = f"{module}:{attr}"
    if not module:
        raise StartError(f"no module in {app!r}: expected MODULE[:ATTR], e.g. project.asgi")
    if os.getcwd() not in sys.path:
        # As uvicorn does (--app-dir .): the project in the current directory wins.
        sys.path.insert(0, os.getcwd())
    from uvicorn.importer import ImportFromStringError, import_from_string

    try:
        import_from_string(target)
    except ImportFromStringError as exc:
        raise StartError(f"cannot load the application {target!r}: {exc}") from None
    except ModuleNotFoundError as exc:
        # uvicorn reports a missing module only when its last part is missing; for
        # `nope.asgi` the missing one is `nope`. Only a module that the application
        # module itself imports deserves a traceback.
        if exc.name is None or not f"{module}.".startswith(f"{exc.name}."):
            raise StartError(_import_failed(module, exc)) from None
        raise StartError(
            f"cannot load the application {target!r}: no module named {exc.name!r}"
        ) from None
    except Exception as exc:
        raise StartError(_import_failed(module, exc)) from None
    from django.conf import settings

    if not settings.configured:
        raise StartError(
            f"{module!r} did not configure Django; set DJANGO_SETTINGS_MODULE or call "
            "get_asgi_application() in it"
        )
    return target


def _import_failed(module: str, exc: BaseException) -> str:
    return (
        f"importing {module!r} failed: {type(exc).__name__}: {exc}\n"
        + "".join(traceback.format_exception(exc)).rstrip()
    )


def check_django() -> None:
    """Run Django's system checks; ``HYBRIDSERVER`` mistakes are errors among them."""
    from django.core import checks
    from django.db import connections

    try:
        messages = checks.run_checks()
    finally:
        connections.close_all()
    errors = [_one_line(m) for m in messages if m.is_serious() and not m.is_silenced()]
    for message in messages:
        if not message.is_serious() and not message.is_silenced():
            click.echo(f"hybridserver: warning: {_one_line(message)}", err=True)
    if len(errors) == 1:
        raise StartError(errors[0])
    if errors:
        lines = "\n".join(f"  {error}" for error in errors)
        raise StartError(f"{len(errors)} configuration errors:\n{lines}")


def _one_line(message: CheckMessage) -> str:
    """A check message as ``manage.py check`` shows it, on one line and without the
    ``?:`` that stands for "no object"."""
    text = " ".join(line.strip() for line in str(message).splitlines())
    return text.removeprefix("?: ")


def prepare(app: str, flags: Mapping[str, Any]) -> Config:
    """Everything before binding a port: import, check, resolve."""
    target = import_app(app)
    check_django()
    from django.conf import settings

    try:
        return Config.resolve(
            target,
            user_settings=getattr(settings, "HYBRIDSERVER", {}),
            environ=os.environ,
            flags=flags,
        )
    except ConfigError as exc:
        raise StartError(str(exc)) from None


def check_tls(config: Config) -> None:
    """Load the certificate and key once, so that a bad pair fails before binding."""
    if not config.tls:
        return
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise StartError(
            f"cannot use SSL_CERTFILE {config.ssl_certfile!r} with SSL_KEYFILE "
            f"{config.ssl_keyfile!r}: {exc}"
        ) from None


def serve(app: str, flags: Mapping[str, Any]) -> int:
    """Prepare and run; return the exit status. Raises StartError."""
    config = prepare(app, flags)
    check_tls(config)
    from hybridserver.server import BindError, run

    try:
        return run(config)
    except BindError as exc:
        raise StartError(str(exc)) from None


def _flag_help(name: str) -> str:
    setting = SETTINGS[name]
    default = setting.default
    shown = "" if default in (None, False, True) else f" Default: {default}."
    return f"{setting.help}{shown} [env: {setting.env}]"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hybridserver")
def main() -> None:
    """Serve a Django project over HTTP (uvicorn) and gRPC (grpc.aio) from one process
    and one event loop.

    Every option of `run` is also an environment variable (HYBRIDSERVER_<NAME>) and a key
    of the HYBRIDSERVER Django setting. Precedence: defaults < settings < environment <
    flags.
    """


_RUN_HELP = f"""Serve MODULE[:ATTR], a Django ASGI application (ATTR defaults to `application`),
e.g. `hybridserver run project.asgi`.

These settings have no flag and are read from the HYBRIDSERVER setting only:
{", ".join(name for name, setting in SETTINGS.items() if not setting.flag)}.
"""


def _flag_options(command: Any) -> Any:
    """An option for every flag in SETTINGS, in its order: a new setting with a flag
    cannot be left out of the command or its help."""
    for setting in reversed([s for s in SETTINGS.values() if s.flag]):
        kwargs: dict[str, Any] = {"help": _flag_help(setting.name)}
        if setting.type is bool:
            decls = [f"{setting.option}/--no-{setting.option[2:]}"]
            kwargs["default"] = None
        else:
            decls = [setting.option]
            if setting.choices:
                kwargs["type"] = click.Choice(setting.choices, case_sensitive=False)
            else:
                kwargs["type"] = setting.type
        command = click.option(*decls, **kwargs)(command)
    return command


@main.command(help=_RUN_HELP)
@click.argument("app", metavar="MODULE[:ATTR]")
@_flag_options
def run(app: str, **options: Any) -> None:
    flags = {name.upper(): value for name, value in options.items() if value is not None}
    try:
        status = serve(app, flags)
    except StartError as exc:
        click.echo(f"hybridserver: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(status)
