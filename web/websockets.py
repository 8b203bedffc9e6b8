"""WebSocket plumbing around flask-sock: routes on `sock`, whole writes, and finished connections let go."""
import functools

import flask_sock
from flask import request
from simple_websocket import ConnectionClosed

CLOSE_ANSWER_S = 2.0  # how long a finished WebSocket waits for the client's answer to its close frame


class Sock(flask_sock.Sock):
    """flask-sock's extension, with every WebSocket route's connection ended by `end` after its handler."""

    def route(self, path, bp=None, **kwargs):
        register = super().route(path, bp=bp, **kwargs)

        def decorator(handler):
            @functools.wraps(handler)
            def handler_then_end(ws, *args, **kw):
                try:
                    return handler(ws, *args, **kw)
                finally:
                    end(ws)
            return register(handler_then_end)
        return decorator


sock = Sock()


class WholeWrites:
    """A connection's socket whose `send` writes all of the data.

    simple-websocket writes each frame with one `socket.send` and ignores a partial write; under the gevent
    worker a send to a client whose window is full writes part of the frame, and the rest of that client's
    stream is garbage. Everything else goes to the socket itself.
    """

    def __init__(self, raw):
        self.raw = raw
        self.writer = None  # a web.direct_writes.DirectWriter once the event hub may write here too

    def send(self, data) -> int:
        if self.writer is not None:
            self.writer.write(data)  # never in the middle of the hub's frame
        else:
            self.raw.sendall(data)
        return len(data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.closing()  # before the descriptor's number can be handed to another connection
        self.raw.close()

    def __getattr__(self, name):
        return getattr(self.raw, name)


def whole_writes_for_websockets() -> None:
    """A before_request hook: under gunicorn, a WebSocket upgrade's connection gets written through WholeWrites.

    It replaces gunicorn's own `gunicorn.socket` so that simple-websocket still knows it runs under gunicorn, and
    flask-sock ends the connection after the handler (gunicorn closes it). Put under `werkzeug.socket`, it made
    flask-sock answer as under werkzeug's server: gunicorn wrote a `200 OK` page after the close frame and read
    the socket for another request beside simple-websocket's reader (an error with a traceback in the log).
    """
    environ = request.environ
    raw = environ.get("gunicorn.socket")
    if raw is not None and not isinstance(raw, WholeWrites) and "werkzeug.socket" not in environ and \
            request.headers.get("Upgrade", "").lower() == "websocket":
        environ["gunicorn.socket"] = WholeWrites(raw)


def end(ws) -> None:
    """Close a WebSocket whose handler is done (unless it or the client did), wait up to CLOSE_ANSWER_S for the
    client's answer (a connection closed before the answer arrives is reset instead), and `release` it."""
    try:
        ws.close()
    except (ConnectionClosed, OSError):
        pass  # closed already, or the client is gone
    ws.thread.join(CLOSE_ANSWER_S)
    release(ws)


def release(ws) -> None:
    """Drop what a finished WebSocket (a simple-websocket `Server`) holds, once its reader thread has ended.

    flask-sock builds a response class for every connection, and a class is a reference cycle: through it `ws`,
    with the connection's request, socket and protocol state (about 130 objects), lived until a full
    garbage-collection pass. At the end of a job watched by 2,500 WebSocket clients that pass then freed some
    75,000 objects in one 140-160 ms pause of the process (scripts/bench/fanout.py; 10-25 ms once released here).
    """
    if not ws.thread.is_alive():  # a reader still waiting on the socket needs it
        ws.environ = ws.sock = ws.ws = None
