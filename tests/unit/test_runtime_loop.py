"""ServiceLoop: timers on a fake clock, real zmq ipc delivery, shutdown, cleanup, SIGTERM."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from sunbeam.shared.messages.dataplane import DERP_IN_CODEC, PROXY_IN_CODEC, DerpSend, FromPeer
from sunbeam.shared.runtime import (
    AlreadyRunning,
    RateLimitedLog,
    ServiceLoop,
    Shutdown,
    decoding_handler,
    endpoint,
    ensure_rundir,
    get_logger,
)

pytestmark = pytest.mark.timeout(20)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shutdown():
    with Shutdown() as s:
        yield s


@pytest.fixture
def log_stream():
    return io.StringIO()


@pytest.fixture
def make_loop(shutdown, log_stream):
    loops = []

    def make(**kw) -> ServiceLoop:
        kw.setdefault("log", get_logger("looptest", stream=log_stream))
        loop = ServiceLoop("looptest", shutdown, **kw)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


def test_timers_fire_in_deadline_order_with_fake_clock(make_loop):
    clock = FakeClock()
    loop = make_loop(clock=clock)
    fired = []
    loop.call_later(3.0, lambda: fired.append("c"))
    loop.call_at(clock.now + 1.0, lambda: fired.append("a"))
    loop.call_later(2.0, lambda: fired.append("b1"))
    loop.call_later(2.0, lambda: fired.append("b2"))  # same deadline: scheduling order
    loop.run_once(max_wait=0)
    assert fired == []
    clock.now += 2.0
    loop.run_once(max_wait=0)
    assert fired == ["a", "b1", "b2"]
    clock.now += 5.0
    loop.run_once(max_wait=0)
    assert fired == ["a", "b1", "b2", "c"]


def test_cancelled_timer_does_not_fire(make_loop):
    clock = FakeClock()
    loop = make_loop(clock=clock)
    fired = []
    keep = loop.call_later(1.0, lambda: fired.append("keep"))
    drop = loop.call_later(0.5, lambda: fired.append("drop"))
    # A timer cancelling a later-due one in the same iteration.
    loop.call_later(0.2, keep.cancel)
    drop.cancel()
    drop.cancel()  # idempotent
    assert drop.cancelled
    clock.now += 10
    loop.run_once(max_wait=0)
    assert fired == []


def test_timer_rearming_itself_with_zero_delay_runs_once_per_iteration(make_loop):
    clock = FakeClock()
    loop = make_loop(clock=clock)
    count = []

    def tick():
        count.append(1)
        loop.call_later(0, tick)

    loop.call_later(0, tick)
    loop.run_once(max_wait=0)
    loop.run_once(max_wait=0)
    assert len(count) == 2


def test_poll_timeout_follows_next_timer_with_real_clock(make_loop, shutdown):
    loop = make_loop()
    start = time.monotonic()
    loop.call_later(0.05, lambda: shutdown.set("timer"))
    assert loop.run() == "timer"
    assert 0.04 <= time.monotonic() - start < 1.0


def test_push_pull_over_ipc_delivers_batch(make_loop, shutdown, tmp_path):
    rundir = ensure_rundir(tmp_path / "run")
    loop = make_loop()
    pull = loop.socket(zmq.PULL)
    loop.bind(pull, endpoint(rundir, "wg-0"))
    push = loop.socket(zmq.PUSH)
    push.connect(endpoint(rundir, "wg-0"))
    seen = []

    def on_batch(msg):
        seen.append(msg)
        shutdown.set("got it")

    loop.on_readable(pull, decoding_handler(PROXY_IN_CODEC, on_batch, loop.counters))
    batch = FromPeer(peer_key=bytes(32), packets=[b"\x45" + bytes(19), b"\x60" + bytes(39)])
    push.send(PROXY_IN_CODEC.encode(batch))
    loop.call_later(5.0, lambda: shutdown.set("timeout"))
    assert loop.run() == "got it"
    assert seen == [batch]
    assert not (rundir / "wg-0.sock").exists()


def test_garbage_on_pull_is_counted_not_fatal(make_loop, shutdown, tmp_path, log_stream):
    rundir = ensure_rundir(tmp_path / "run")
    loop = make_loop()
    pull = loop.socket(zmq.PULL)
    loop.bind(pull, endpoint(rundir, "in"))
    push = loop.socket(zmq.PUSH)
    push.connect(endpoint(rundir, "in"))
    seen = []
    bad_log = RateLimitedLog(loop.log, max_lines=1, interval=60)
    loop.on_readable(
        pull, decoding_handler(PROXY_IN_CODEC, seen.append, loop.counters, bad_log=bad_log)
    )
    push.send(b"\xc1garbage")
    push.send_multipart([b"two", b"frames"])
    push.send(PROXY_IN_CODEC.encode(FromPeer(peer_key=bytes(32), packets=[b"x"])))
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        loop.run_once(max_wait=0.1)
    assert seen == [FromPeer(peer_key=bytes(32), packets=[b"x"])]
    assert loop.counters["bad_message"] == 2
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [line["event"] for line in lines if line["level"] == "warning"] == ["bad_message"]


def test_another_sockets_message_is_a_bad_message(make_loop, tmp_path):
    rundir = ensure_rundir(tmp_path / "run")
    loop = make_loop()
    pull = loop.socket(zmq.PULL)
    loop.bind(pull, endpoint(rundir, "in"))
    push = loop.socket(zmq.PUSH)
    push.connect(endpoint(rundir, "in"))
    loop.on_readable(pull, decoding_handler(PROXY_IN_CODEC, pytest.fail, loop.counters))
    push.send(DERP_IN_CODEC.encode(DerpSend(peer_key=bytes(32), region=1, packets=[b"x"])))
    deadline = time.monotonic() + 5
    while loop.counters["bad_message"] == 0 and time.monotonic() < deadline:
        loop.run_once(max_wait=0.1)
    assert loop.counters["bad_message"] == 1


def test_shutdown_from_another_thread_wakes_blocking_poll(make_loop, shutdown, tmp_path):
    loop = make_loop()
    pull = loop.socket(zmq.PULL)
    loop.bind(pull, endpoint(ensure_rundir(tmp_path / "run"), "idle"))
    loop.on_readable(pull, lambda s: s.recv())
    # No timers: the poll would block forever without the wakeup fd.
    set_at = []

    def stopper():
        time.sleep(0.05)
        set_at.append(time.monotonic())
        shutdown.set("stop request")

    threading.Thread(target=stopper).start()
    assert loop.run() == "stop request"
    assert time.monotonic() - set_at[0] < 0.5
    assert shutdown.reason == "stop request"
    assert shutdown.set("second") is False and shutdown.reason == "stop request"


def test_socket_files_unlinked_when_handler_raises(make_loop, shutdown, tmp_path, log_stream):
    rundir = ensure_rundir(tmp_path / "run")
    loop = make_loop()
    pull = loop.socket(zmq.PULL)
    loop.bind(pull, endpoint(rundir, "boom"))
    push = loop.socket(zmq.PUSH)
    push.connect(endpoint(rundir, "boom"))
    assert (rundir / "boom.sock").exists()

    def handler(sock):
        sock.recv()
        raise RuntimeError("our bug")

    loop.on_readable(pull, handler)
    push.send(b"x")
    with pytest.raises(RuntimeError, match="our bug"):
        loop.run()
    assert not (rundir / "boom.sock").exists()
    assert pull.closed and push.closed
    failure = [json.loads(l) for l in log_stream.getvalue().splitlines()]
    assert any(r["event"] == "handler_failed" and "our bug" in r["exc"] for r in failure)


def test_timer_exception_propagates_and_cleans_up(make_loop, tmp_path):
    rundir = ensure_rundir(tmp_path / "run")
    loop = make_loop()
    loop.bind(loop.socket(zmq.PULL), endpoint(rundir, "t"))
    loop.call_later(0, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        loop.run()
    assert not (rundir / "t.sock").exists()


def test_bind_removes_stale_and_refuses_live(make_loop, tmp_path, shutdown):
    import socket as pysocket

    rundir = ensure_rundir(tmp_path / "run")
    stale = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    stale.bind(str(rundir / "svc.sock"))
    stale.close()
    first = make_loop()
    first.bind(first.socket(zmq.PULL), endpoint(rundir, "svc"))  # stale file replaced
    with Shutdown() as other_shutdown:
        second = ServiceLoop("second", other_shutdown, log=first.log)
        try:
            with pytest.raises(AlreadyRunning):
                second.bind(second.socket(zmq.PULL), endpoint(rundir, "svc"))
        finally:
            second.close()
    assert (rundir / "svc.sock").exists()  # the refused loop did not unlink it
    first.close()
    assert not (rundir / "svc.sock").exists()


def test_iteration_end_callbacks_run_each_iteration(make_loop):
    loop = make_loop(clock=FakeClock())
    calls = []
    loop.on_iteration_end(lambda: calls.append(1))
    loop.run_once(max_wait=0)
    loop.run_once(max_wait=0)
    assert calls == [1, 1]


def test_sigterm_ends_subprocess_loop_cleanly(tmp_path):
    helper = Path(__file__).with_name("_loop_child.py")
    child = subprocess.Popen(
        [sys.executable, str(helper), str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = child.stdout.readline().split()
        assert ready[0] == "ready", child.stderr.read()
        sock_file = Path(ready[1])
        assert sock_file.exists()
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=5) == 0
        assert time.monotonic() - sent < 2.0
        assert not sock_file.exists()
        events = [json.loads(l) for l in child.stderr.read().splitlines()]
        stopped = [e for e in events if e["event"] == "loop_stopped"]
        assert stopped and stopped[0]["reason"] == "signal SIGTERM"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()


def test_shutdown_pipe_drains_and_close_is_idempotent():
    s = Shutdown()
    assert not s.is_set and s.reason is None
    assert s.set("a") is True
    assert os.read(s.wakeup_fd, 10) == b"\0"
    s.set("b")
    s.drain_wakeup()
    with pytest.raises(BlockingIOError):
        os.read(s.wakeup_fd, 10)
    assert s.wait(0) is True
    s.close()
    s.close()
    s.set("after close")  # must not write to a recycled fd


def test_plain_socket_reader_gets_its_socket_object(tmp_path):
    """zmq.Poller reports non-zmq sources by fd; the loop must still route to the handler
    registered for the socket object (the control service's TCP socket)."""
    import socket as _socket

    from sunbeam.shared.runtime import ServiceLoop, Shutdown

    a, b = _socket.socketpair()
    got = []
    with Shutdown() as shutdown, ServiceLoop("t", shutdown) as loop:
        loop.on_readable(a, lambda s: got.append((s, s.recv(10))))
        b.send(b"ping")
        loop.run_once(max_wait=1.0)
        assert got == [(a, b"ping")]
        loop.remove_reader(a)
        b.send(b"again")
        loop.run_once(max_wait=0.05)
        assert len(got) == 1
    a.close()
    b.close()


def test_writable_handler_fires_until_removed():
    import socket as _socket

    from sunbeam.shared.runtime import ServiceLoop, Shutdown

    a, b = _socket.socketpair()
    fired = []
    with Shutdown() as shutdown, ServiceLoop("t", shutdown) as loop:
        def on_writable(sock):
            fired.append(sock)
            loop.remove_writer(sock)

        loop.on_readable(a, lambda s: fired.append(("read", s.recv(10))))
        loop.on_writable(a, on_writable)
        loop.run_once(max_wait=1.0)
        assert fired == [a]  # writable at once; nothing to read yet
        b.send(b"x")
        loop.run_once(max_wait=1.0)
        assert fired[-1] == ("read", b"x")  # the reader still works after the writer left
        loop.run_once(max_wait=0.05)
        assert len(fired) == 2
    a.close()
    b.close()
