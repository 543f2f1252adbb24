"""uvicorn's httptools protocol, each response's writes joined into one send.

uvicorn writes a response in two pieces, the status line and headers on
``http.response.start`` and the body on ``http.response.body``, and uvloop sends each
write at once: two ``send`` system calls per response, two TCP segments (the socket
has ``TCP_NODELAY``) and two reads for the client. :class:`JoinedWritesProtocol`
hands uvicorn a transport that keeps the writes of one pass of the event loop and
sends them together when the loop next runs its callbacks: one call, one segment.
Both pieces of a response are written in the same pass (nothing is awaited between
them), so a response goes out whole; nothing waits on a timer.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class JoinedWrites:
    """A transport whose ``write`` calls in one pass of the loop become one write.

    Whatever sends or ends the connection (``writelines``, ``write_eof``, ``close``)
    sends the kept bytes first, so the order on the wire is the order of the calls;
    ``abort`` drops them, as the transport's own ``abort`` drops its buffer.
    Everything else is the wrapped transport's.
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending = None  # the bytes written in this pass of the loop

    def write(self, data):
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self):
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, lines):
        self.flush()
        self._transport.writelines(lines)

    def write_eof(self):
        self.flush()
        self._transport.write_eof()

    def close(self):
        self.flush()
        self._transport.close()

    def abort(self):
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`JoinedWrites` transport."""

    def connection_made(self, transport):
        super().connection_made(JoinedWrites(transport, asyncio.get_running_loop()))
