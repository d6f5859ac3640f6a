"""Django's ASGI handler without the reference cycle it leaves behind every request.

Django's ``ASGIHandler.handle`` (5.2 and 6.0) runs the view in one task and, beside it,
``listen_for_disconnect`` in another, which waits for the client to go away. Once the
response has been sent the server reports the request as over, and the listener raises
``RequestAborted``; ``handle`` reads the listener's result, catches the exception and
goes on. The exception keeps its traceback, the traceback keeps ``handle``'s frame, and
that frame keeps the task that holds the exception: a cycle, and with it the request,
its session, its response and whatever else the view left in its frames. Reference
counting cannot free any of it; only Python's cyclic garbage collector can, and under
HTTP load it spent about a sixth of the server's CPU time, much of it on these requests
(BENCHMARKS.md, "Garbage from every request"). Django ticket #36700.

``handle`` cancels the view as soon as the listener ends, whether it returned or
raised, and ignores ``RequestAborted``: so here the listener returns instead of raising,
and a request's objects are freed the moment it ends. A handler is changed only if its
``handle`` and ``listen_for_disconnect`` are Django's own, in a Django release whose
``handle`` is known to read the listener that way; any other is left as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import django
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler

#: Django releases whose ``ASGIHandler.handle`` treats a listener that returned as one
#: that raised ``RequestAborted``. Django 6.1 cancels the view only if it raises.
RELEASES = ((5, 2), (6, 0))

_DJANGO_HANDLE = ASGIHandler.handle
_DJANGO_LISTEN = ASGIHandler.listen_for_disconnect


def quiet_disconnects(handler: Any) -> bool:
    """Have ``handler``'s disconnect listener return rather than raise
    ``RequestAborted``, if that changes nothing but the garbage; return whether it
    did."""
    if django.VERSION[:2] not in RELEASES or not isinstance(handler, ASGIHandler):
        return False
    cls = type(handler)
    if cls.handle is not _DJANGO_HANDLE or cls.listen_for_disconnect is not _DJANGO_LISTEN:
        return False
    if "listen_for_disconnect" in vars(handler):  # already done, or set by someone else
        return False
    handler.listen_for_disconnect = _returning(handler.listen_for_disconnect)
    return True


def _returning(
    listen: Callable[[Any], Awaitable[None]],
) -> Callable[[Any], Awaitable[None]]:
    async def listen_for_disconnect(receive: Any) -> None:
        try:
            await listen(receive)
        except RequestAborted:
            # Caught here, in the listener's own task, the exception is freed at once:
            # nothing is left for handle() to re-raise and keep.
            pass

    return listen_for_disconnect
