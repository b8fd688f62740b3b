"""Read deadlines of an HTTP connection: the service's httptools protocol
(:class:`~service.read_limits.ReadLimitProtocol`) with a header timeout and a body timeout.

uvicorn bounds only the idle time between requests (``timeout_keep_alive``); a client that stops
half-way through its headers, or after them, keeps its connection (and the memory of its body)
for good. :func:`deadline_protocol` makes the protocol class that ``deepkin serve`` runs:

- the request line and headers must be complete within ``header_timeout_s`` of their first byte
  (or of the connection opening): a deadline, not a pause, so trickling bytes does not extend it;
- a request body must not pause for longer than ``body_timeout_s``, nor may the client stop
  reading its answer for longer (while the server itself holds reading back, e.g. behind a
  pipelined request, the pause is not counted).

Past a deadline the connection is closed, with a ``408`` ``{"error": ...}`` answer when nothing has
been answered on it yet and part of a request has arrived; a connection that never sent a byte is
closed without one. A handler waiting for the rest of the body sees a disconnect (``499`` in the
metrics). When a shutdown begins, a request whose body is still arriving ``drain_answer_s`` later
gets ``503`` the same way (uvicorn would otherwise cancel its handler: a 500). The size limit of a
request's head and the answers to malformed requests are the base class's.
"""

from __future__ import annotations

from asyncio import TimerHandle, Transport
from collections.abc import Callable

from service.read_limits import BODY, HEADERS, IDLE, ReadLimitProtocol


class ReadDeadlineProtocol(ReadLimitProtocol):
    """The service's protocol with the deadlines of this module's docstring (class attributes, set
    by :func:`deadline_protocol`)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    drain_answer_s = 59.0

    def connection_made(self, transport: Transport) -> None:
        super().connection_made(transport)
        self._last_data = self.loop.time()
        self._deadline: TimerHandle | None = None
        self._write_stall: TimerHandle | None = None
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_stall is not None:
            self._write_stall.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)

    # -- parser callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._phase == IDLE:
            # Answered before its body was in (an early 4xx): uvicorn's keep-alive timer was
            # armed then and cancelled by the body bytes that followed; this is its stand-in.
            self._arm(self.timeout_keep_alive)
        else:
            self._disarm()

    def shutdown(self) -> None:
        super().shutdown()
        if self._phase == BODY and not self.transport.is_closing() and not self._refused:
            self._arm(self.drain_answer_s, self._drained)

    def _drained(self) -> None:
        self._deadline = None
        if self._phase == BODY and not self.transport.is_closing():
            self._refuse(503, "the service is shutting down: the request body did not arrive within "
                              "the drain time", "shutting down")

    def _stop_reading_requests(self) -> None:
        super()._stop_reading_requests()
        self._disarm()

    # -- write side ----------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None

    def _watch_writes(self, buffered: int) -> None:
        """While the answer waits in the send buffer: close the connection once a whole
        ``body_timeout_s`` passes in which the client read none of it."""
        if self._write_stall is not None:
            self._write_stall.cancel()
        self._write_stall = self.loop.call_later(self.body_timeout_s, self._check_writes, buffered)

    def _check_writes(self, buffered_before: int) -> None:
        self._write_stall = None
        buffered = self.transport.get_write_buffer_size()
        if buffered >= buffered_before:
            self.transport.abort()  # close() would wait for the unread answer to be sent
        else:
            self._watch_writes(buffered)

    # -- deadlines -----------------------------------------------------------------------------------
    def _arm(self, delay_s: float, callback: Callable[[], None] | None = None) -> None:
        self._disarm()
        if not self._refused:
            self._deadline = self.loop.call_later(delay_s, callback or self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._refused:
            return
        if self._phase == BODY:
            paused_by_us = self.flow.read_paused
            left_s = self._last_data + self.body_timeout_s - self.loop.time()
            if paused_by_us or left_s > 0:
                if paused_by_us:
                    self._last_data = self.loop.time()
                self._arm(left_s if left_s > 0 else self.body_timeout_s)
                return
            self._refuse(408, f"body: no data for {self.body_timeout_s:g} s (body timeout); the "
                              "connection is closed", "body timeout")
        elif self._phase == HEADERS:
            if self.cycle is not None and not self.cycle.response_complete:
                # A pipelined request behind one still being worked on: wait for that answer.
                self._arm(self.header_timeout_s)
                return
            self._refuse(408, f"headers: not complete within {self.header_timeout_s:g} s (header "
                              "timeout); the connection is closed", "header timeout")
        else:
            self._close()


def deadline_protocol(header_timeout_s: float, body_timeout_s: float, drain_answer_s: float,
                      max_header_bytes: int = ReadLimitProtocol.max_header_bytes,
                      on_refusal: Callable[[int, str], None] | None = None) -> type[ReadDeadlineProtocol]:
    """A :class:`ReadDeadlineProtocol` class with these times (s), this limit of a request's head
    (bytes) and this ``on_refusal(status, reason)`` hook, for ``uvicorn.Config(http=...)``."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,),
                {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
                 "drain_answer_s": drain_answer_s, "max_header_bytes": max_header_bytes,
                 "on_refusal": staticmethod(on_refusal) if on_refusal else None})
