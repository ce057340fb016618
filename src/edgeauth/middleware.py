"""ASGI middleware: ``app = EdgeAuth(app, policy="edgeauth.toml")``.

:class:`EdgeAuth` is :class:`edgeauth.guard.Guard` (the request path,
compiled in the compiled build) with one thing more, which only interpreted
code can give it: how its ``__call__`` looks to a server. A server serves an
app as ASGI 3 (one call with the scope, ``receive`` and ``send``) when the
app's ``__call__`` is a coroutine function, and as ASGI 2 otherwise. A guard's
own call is an ordinary function that returns what the server is to await (for
most requests, the app's own coroutine, with no coroutine of edgeauth's around
it), so each instance carries, as its ``__call__`` attribute, a coroutine
function that awaits the same call. Calling the instance still runs the
guard's call (Python calls what an object's type defines; the attribute is
what a server inspects), and so does awaiting the attribute.
"""

from __future__ import annotations

from .asgi import ASGIApp, Receive, Scope, Send
from .guard import Guard, IdentityRequired

__all__ = ["ASGIApp", "EdgeAuth", "IdentityRequired"]


class EdgeAuth(Guard):
    """Guard an ASGI app with a policy.

    >>> app = EdgeAuth(app, policy=load_policy("edgeauth.toml"))   # doctest: +SKIP
    >>> app.add_middleware(EdgeAuth, policy="edgeauth.toml")        # FastAPI  # doctest: +SKIP
    """

    def _show_servers(self) -> None:
        """Give the instance the ``__call__`` attribute servers inspect (see
        the module's docstring)."""
        vars(self)["__call__"] = self._awaited

    async def _awaited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The instance's ``__call__`` as servers see it (see the module's
        docstring): awaits the guard's call."""
        await self(scope, receive, send)
