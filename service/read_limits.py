"""What a client may send outside a request body, enforced while it arrives: uvicorn's httptools
protocol with a byte limit on a request's head and JSON answers to what it refuses.

uvicorn's httptools protocol feeds every socket read to the parser, which buffers a header line
until it ends, growing it by one copy per read (a header streamed without end held the event loop
for seconds and took hundreds of MB). :class:`ReadLimitProtocol` counts the bytes of each stretch
of a connection that is not body data (a request line and its headers; a chunked body's framing
and trailers) before the parser buffers them, and feeds the parser at most one byte past
``max_header_bytes`` of one stretch:

- a stretch over ``max_header_bytes`` is answered ``431`` ``{"error": ...}``;
- data that is not HTTP/1.1 (a bad ``Content-Length``, a NUL in a header, garbage) is answered
  ``400`` ``{"error": ...}`` (uvicorn answers these in plain text);
- either way the parser is fed nothing more and the connection is closed after a linger (the
  answer goes out with a FIN, what the client still sends is read and dropped until it closes, for
  at most :data:`LINGER_S` and :data:`LINGER_BYTES`), so that a client still sending reads its
  answer instead of a connection reset;
- behind a pipelined request still being answered, nothing is answered: that answer goes out and
  the connection is closed after it.

The bytes of a sized body are fed as they come, uncounted; the rest is fed in pieces of at most a
quarter of the limit. A stretch that begins inside a piece (a pipelined request read together with
the end of the one before it) is counted from that piece's last body byte or its start, so it may
be counted a little early; a request on its own is counted exactly.
"""

from __future__ import annotations

import http
import json
import logging
from asyncio import TimerHandle, Transport
from collections import deque
from collections.abc import Callable

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

OPENING, HEADERS, BODY, WORKING, IDLE = "opening", "headers", "body", "working", "idle"
LINGER_S = 2.0  # how long a refused connection is read (and dropped) before it is closed
LINGER_BYTES = 64 << 10  # how much of a refused connection's input is read and dropped at most

log = logging.getLogger("deepkin.service")


class ReadLimitProtocol(HttpToolsProtocol):
    """The httptools protocol with the limits of this module's docstring. Class attributes, set by
    a subclass or ``type(...)``: ``max_header_bytes``, and ``on_refusal(status, reason)``, called
    for every request refused here (the metrics; a ``staticmethod``)."""

    max_header_bytes = 64 << 10
    on_refusal: Callable[[int, str], None] | None = None

    def connection_made(self, transport: Transport) -> None:
        super().connection_made(transport)
        self._phase = OPENING
        self._run = 0  # bytes of the current stretch outside a body (an upper bound, see above)
        self._restarted = False  # a stretch began (or body data came) during the current feed
        self._body_bytes = 0  # body bytes the parser has delivered on this connection
        self._chunked = False  # the current request's body is framed by Transfer-Encoding
        self._refused = False  # the parser is fed nothing more; input is dropped
        self._dropped = 0
        self._linger: TimerHandle | None = None
        self._close_when_answered = False  # refused behind requests still being answered

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._drop(len(data))
            return
        if self._phase == BODY and not self._chunked:
            self._feed(data)  # a sized body: fed whole, uncounted
            return
        view, pos, slice_bytes = memoryview(data), 0, max(self.max_header_bytes // 4, 1024)
        while pos < len(data) and not self._refused and not self.transport.is_closing():
            if self._phase == BODY and not self._chunked:
                size = len(data) - pos
            else:
                size = min(self.max_header_bytes - self._run + 1, slice_bytes)
            self._feed(data if size >= len(data) and pos == 0 else view[pos:pos + size])
            pos += size

    def _feed(self, piece: bytes | memoryview) -> None:
        """Feed ``piece`` to the parser (uvicorn's ``data_received``, with JSON answers), then
        count it: the stretch grows by it unless a new one began inside it, in which case the new
        one holds at most the piece's bytes that were not body data."""
        self._restarted = False
        body_before = self._body_bytes
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:  # served as plain HTTP; uvicorn would log two warnings a request
                log.debug("an upgrade request is served as plain HTTP")
        except httptools.HttpParserError as exc:
            reason = str(exc).rstrip(".") or type(exc).__name__
            self._refuse(400, f"request: not valid HTTP/1.1 ({reason}); the connection is closed",
                         "bad request", linger=True)
            return
        n = len(piece)
        self._run = n - (self._body_bytes - body_before) if self._restarted else self._run + n
        if self._run > self.max_header_bytes and not self._refused and not self.transport.is_closing():
            what = "a chunked body's framing" if self._phase == BODY else "the request line and headers"
            self._refuse(431, f"headers: {what} passed the limit of {self.max_header_bytes} bytes "
                              "(max_header_bytes); the connection is closed", "header size", linger=True)

    # -- parser callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = HEADERS
        self._restarted = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = BODY
        self._chunked = any(name == b"transfer-encoding" for name, _ in self.headers)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._restarted = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        answered = self.cycle is not None and self.cycle.response_complete
        self._phase = IDLE if answered else WORKING

    # -- refusals ------------------------------------------------------------------------------------
    def _refuse(self, status: int, message: str, reason: str, linger: bool = False) -> None:
        """Answer ``status`` with ``{"error": message}`` and close (after a linger with
        ``linger``). Nothing is answered where this request's answer has begun, nor behind
        pipelined requests still being answered (they are answered, then the connection is
        closed); either way the parser is fed nothing more."""
        if self.on_refusal is not None:
            self.on_refusal(status, reason)
        log.debug("refused %s (%s): %s", status, reason, message)
        self._stop_reading_requests()
        cycle = self.cycle
        queued = self._phase == BODY and any(c is cycle for c, _ in self.pipeline)
        if queued:  # its headers came in behind a request still being answered: never started
            self.pipeline = deque(item for item in self.pipeline if item[0] is not cycle)
            cycle.disconnected = True
        if queued or (self._phase != BODY and cycle is not None and not cycle.response_complete):
            self._close_when_answered = True  # the answers due first go out, then it is closed
            return
        answer = self._phase != BODY or cycle is None or not cycle.response_started
        if self._phase == BODY and cycle is not None:
            cycle.disconnected = True  # its handler writes nothing more (and sees a disconnect)
            cycle.message_event.set()
        if answer:
            body = json.dumps({"error": message}).encode()
            phrase = http.HTTPStatus(status).phrase.encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d"
                                 b"\r\nconnection: close\r\n\r\n%s" % (status, phrase, len(body), body))
        if linger and answer and self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self._linger = self.loop.call_later(LINGER_S, self._close)
        else:
            self._close()

    def on_response_complete(self) -> None:
        nothing_after = not self.pipeline
        super().on_response_complete()
        if self._close_when_answered and nothing_after:
            self._close()

    def _stop_reading_requests(self) -> None:
        """From now on the parser is fed nothing; input is dropped (:meth:`_drop`). Subclasses
        also stop their timers here."""
        self._refused = True

    def _drop(self, n: int) -> None:
        self._dropped += n
        if self._dropped > LINGER_BYTES:
            self._close()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
