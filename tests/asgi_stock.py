"""The project's ASGI application, a handler of its own: for a server that runs Django's
middleware chain as Django built it (``COALESCE_MIDDLEWARE`` off), beside one that
coalesces ``project.asgi``'s."""

from __future__ import annotations

from django.core.asgi import get_asgi_application

application = get_asgi_application()
