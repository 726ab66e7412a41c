"""The service loop: one thread, one ``zmq.Poller``, a timer heap, one `Shutdown`.

Each iteration of `ServiceLoop.run`:

1. stop if the `Shutdown` is set;
2. poll every registered socket/fd plus the shutdown wakeup fd, with the timeout set to
   the next timer's deadline (no timers: wait for input or shutdown);
3. call the handler of each readable source (``handler(source)``; the handler receives
   from it, e.g. non-blocking until ``zmq.Again``; the poll is level-triggered, so what a
   handler leaves unread makes the source readable again next iteration);
4. fire the timers that are due, earliest first;
5. call the end-of-iteration callbacks (batchers flush here).

Errors. Garbage from a peer is the handler's business: decode with a `Codec`, count and
drop on `BadMessage` (`decoding_handler` does this for single-frame sockets). An exception
escaping a handler, timer or callback is *our* bug: it is logged with its traceback and
re-raised, the process exits non-zero, and supervisord restarts it.

Cleanup on every exit path (normal stop, exception, `close()`): the ipc socket files the
loop bound are unlinked, then every socket it made or adopted is closed with a short linger
(so a final reply, such as the `Ack` of a stop request, still goes out) and the loop's own
ZeroMQ context is terminated. `bind()` refuses (`AlreadyRunning`) when another process is
listening on the endpoint and removes a stale file left by a crash.

Time comes from ``clock`` (``time.monotonic`` by default); tests inject a fake clock and
drive `run_once`. Ownership: everything here, including the sockets, is owned by the
thread that runs the loop; only the `Shutdown` may be touched from other threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from ..messages.codec import BadMessage, Codec
from .counters import Counters
from .log import RateLimitedLog, StructLogger, get_logger
from .rundir import ipc_path
from .shutdown import Shutdown
from .stale import OwnedSocketFiles, remove_stale
from .timers import TimerHandle, TimerHeap

__all__ = ["ServiceLoop", "decoding_handler"]

DEFAULT_LINGER_MS = 200
Source = Any  # a zmq.Socket, an int fd, or an object with fileno()

# The poll event bits as plain ints: pyzmq's constants are enum flags, and ``int & flag``
# runs enum's Python-level operator (~1.8 us each; two per ready source per iteration).
_POLLOUT = int(zmq.POLLOUT)
_POLLIN_OR_ERR = int(zmq.POLLIN | zmq.POLLERR)


class ServiceLoop:
    """Runs one service's sockets and timers until its `Shutdown` is set."""

    def __init__(
        self,
        service: str,
        shutdown: Shutdown,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: StructLogger | None = None,
        counters: Counters | None = None,
        context: zmq.Context[Any] | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
    ) -> None:
        self.service = service
        self.shutdown = shutdown
        self.clock = clock
        self.log = log if log is not None else get_logger(service)
        self.counters = counters if counters is not None else Counters()
        self._owns_context = context is None
        self.context: zmq.Context[Any] = context if context is not None else zmq.Context()
        self.linger_ms = linger_ms
        # All of the following are owned by the loop thread.
        self._poller = zmq.Poller()
        self._poller.register(shutdown.wakeup_fd, zmq.POLLIN)
        self._handlers: dict[Source, Callable[[Any], object]] = {}  # readers
        self._writers: dict[Source, Callable[[Any], object]] = {}
        self._sockets: list[zmq.Socket[Any]] = []  # closed by close()
        self._files = OwnedSocketFiles()
        self._timers = TimerHeap()
        self._iteration_end: list[Callable[[], object]] = []
        self._closed = False

    # -- sockets ---------------------------------------------------------------------

    def socket(self, socket_type: int) -> zmq.Socket[Any]:
        """A new socket in the loop's context, closed when the loop ends."""
        return self.adopt(self.context.socket(socket_type))

    def adopt(self, sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
        """Make the loop close ``sock`` when it ends."""
        if sock not in self._sockets:
            self._sockets.append(sock)
        return sock

    def bind(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Bind ``sock`` (adopting it). For ``ipc://``: remove a stale file first, raise
        `AlreadyRunning` if something listens there, and unlink the file on exit."""
        self.adopt(sock)
        path = ipc_path(endpoint)
        if path is not None and remove_stale(path):
            self.log.info("stale_socket_removed", path=str(path))
        sock.bind(endpoint)
        if path is not None:
            self._files.track(path)

    def on_readable(self, source: Source, handler: Callable[[Any], object]) -> None:
        """Call ``handler(source)`` whenever ``source`` has input. Replaces a previous one.

        A non-zmq source (a Python socket, a file) is polled by its file descriptor, since
        ``zmq.Poller.poll`` reports those by fd, not by the object registered."""
        key = _poll_key(source)
        self._handlers[key] = handler if key is source else _by_fd(source, handler)
        self._update_poll(key)

    def remove_reader(self, source: Source) -> None:
        key = _poll_key(source)
        if self._handlers.pop(key, None) is not None:
            self._update_poll(key)

    def on_writable(self, source: Source, handler: Callable[[Any], object]) -> None:
        """Call ``handler(source)`` while ``source`` can take output (remove it when done)."""
        key = _poll_key(source)
        self._writers[key] = handler if key is source else _by_fd(source, handler)
        self._update_poll(key)

    def remove_writer(self, source: Source) -> None:
        key = _poll_key(source)
        if self._writers.pop(key, None) is not None:
            self._update_poll(key)

    def _update_poll(self, key: Any) -> None:
        flags = (zmq.POLLIN if key in self._handlers else 0) | (zmq.POLLOUT if key in self._writers else 0)
        if flags:
            self._poller.register(key, flags)  # registering again replaces the flags
        else:
            self._poller.unregister(key)

    def on_iteration_end(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` after every iteration (e.g. ``flush`` batchers and send)."""
        self._iteration_end.append(callback)

    # -- timers ----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback()`` once the clock reaches ``when``."""
        return self._timers.push(when, callback)

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback()`` after ``delay`` seconds."""
        return self._timers.push(self.clock() + max(0.0, delay), callback)

    # -- running ---------------------------------------------------------------------

    def run(self) -> str:
        """Iterate until shutdown; always clean up; return the shutdown reason."""
        try:
            self.log.info("loop_started")
            while not self.shutdown.is_set:
                self.run_once()
        finally:
            self.close()
        reason = self.shutdown.reason or ""
        self.log.info("loop_stopped", reason=reason)
        return reason

    def run_once(self, max_wait: float | None = None) -> None:
        """One iteration; ``max_wait`` caps the poll (seconds; 0 = do not block)."""
        if self._closed:
            raise RuntimeError("loop is closed")
        wait = max_wait
        deadline = self._timers.next_deadline()
        if deadline is not None:
            until_timer = max(0.0, deadline - self.clock())
            wait = until_timer if wait is None else min(wait, until_timer)
        if self.shutdown.is_set:
            wait = 0.0
        timeout_ms = -1 if wait is None else math.ceil(wait * 1000)
        for source, events in self._poller.poll(timeout_ms):
            if source == self.shutdown.wakeup_fd:
                self.shutdown.drain_wakeup()
                continue
            if events & _POLLOUT:
                writer = self._writers.get(source)
                if writer is not None:
                    self._call(writer, "handler_failed", source)
            if events & _POLLIN_OR_ERR:
                handler = self._handlers.get(source)
                if handler is not None:  # None: removed by an earlier handler this iteration
                    self._call(handler, "handler_failed", source)
        for timer in self._timers.pop_due(self.clock()):
            if not timer.cancelled:  # cancelled by an earlier timer this iteration
                self._call(timer.callback, "timer_failed")
        for callback in self._iteration_end:
            self._call(callback, "iteration_end_failed")

    def _call(self, callback: Callable[..., object], failure: str, *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self.log.exception(failure, callback=repr(callback))
            raise

    def close(self) -> None:
        """Close sockets, terminate our own context, unlink our socket files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Unlink first, while our sockets still pin their inodes (see stale.py).
        for path in self._files.unlink_all():
            self.log.debug("socket_file_unlinked", path=str(path))
        for source in list(self._handlers):
            self.remove_reader(source)
        for source in list(self._writers):
            self.remove_writer(source)
        for sock in self._sockets:
            sock.close(linger=self.linger_ms)
        self._sockets.clear()
        if self._owns_context:
            # Also closes sockets made from self.context without loop.socket(); waits at
            # most linger_ms for queued output.
            self.context.destroy(linger=self.linger_ms)

    def __enter__(self) -> ServiceLoop:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _by_fd(source: Source, handler: Callable[[Any], object]) -> Callable[[Any], object]:
    """A handler for a source polled by its file descriptor: called with the fd, it hands
    ``handler`` the source itself."""
    return lambda _fd: handler(source)


def _poll_key(source: Source) -> Any:
    if isinstance(source, (zmq.Socket, int)):
        return source
    return source.fileno()


def decoding_handler(
    codec: Codec[Any],
    handler: Callable[[Any], object],
    counters: Counters,
    *,
    bad_log: RateLimitedLog | None = None,
    counter: str = "bad_message",
    budget: int = 64,
) -> Callable[[zmq.Socket[Any]], None]:
    """A readable-handler for a single-frame socket (PULL, SUB without topics): receives
    up to ``budget`` messages, decodes each with ``codec`` and calls ``handler(message)``.

    A multi-frame message or one ``codec`` rejects is a peer fault: ``counter`` is
    incremented, a rate-limited warning is logged, and the message is dropped.
    """

    def on_readable(sock: zmq.Socket[Any]) -> None:
        for _ in range(budget):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    raise BadMessage(f"expected 1 frame, got {len(frames)}")
                message = codec.decode(frames[0])
            except BadMessage as exc:
                counters.incr(counter)
                if bad_log is not None:
                    bad_log.warning(counter, counter, error=str(exc))
                continue
            handler(message)

    return on_readable
