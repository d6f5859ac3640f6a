"""An ASGI module with a bug of its own: it imports a package that is not installed."""

import no_such_dependency  # noqa: F401
