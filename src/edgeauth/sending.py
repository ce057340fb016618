"""The server's ``send`` awaited by the interpreter, for an answer edgeauth
makes itself on its shortest path (the settled denial).

Compiled code awaits a Python coroutine, such as a server's ``send``, through
a wrapper object per await; the interpreter awaits it directly, which costs
less (docs/performance.md, "The settled denial's two sends"). This module is
not compiled in either build.
"""

from __future__ import annotations

from .asgi import Message, Send

__all__ = ["send_both"]


async def send_both(send: Send, start: Message, body: Message) -> None:
    """Send ``start``, then ``body``."""
    await send(start)
    await send(body)
