"""Runtime directory, endpoint naming, stale socket detection, owned socket files."""

import os
import socket
import stat

import pytest
import zmq

from sunbeam.shared.runtime import (
    MAX_SOCKET_PATH_BYTES,
    AlreadyRunning,
    NotASocket,
    OwnedSocketFiles,
    RundirError,
    SocketPathTooLong,
    SocketState,
    endpoint,
    ensure_rundir,
    ipc_path,
    probe,
    remove_stale,
    socket_path,
)


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_rundir_created_0700_even_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        rundir = ensure_rundir(tmp_path / "a" / "run")
    finally:
        os.umask(old)
    assert rundir.is_absolute() and rundir.is_dir()
    assert mode_of(rundir) == 0o700
    assert mode_of(tmp_path / "a") == 0o700  # a parent we created: private too


def test_uncreatable_rundir_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for path in (tmp_path / "afile" / "run", tmp_path / "dangling" / "run"):
        with pytest.raises(RundirError, match=f"cannot create the runtime directory {path}"):
            ensure_rundir(path)


def test_parent_others_may_write_to_is_refused_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(RundirError) as info:
        ensure_rundir(shared / "run")
    assert f"{shared} has mode 0777" in str(info.value) and f"chmod go-w {shared}" in str(info.value)
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename what is ours
    assert mode_of(ensure_rundir(shared / "run")) == 0o700


def test_parent_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by another uid")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "run").mkdir(mode=0o700)  # even a private directory of ours inside it
    os.chown(theirs, 12345, 12345)
    with pytest.raises(RundirError, match=f"parent {theirs} belongs to uid 12345"):
        ensure_rundir(theirs / "run")


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o707, 0o777, 0o1777])
def test_existing_loose_rundir_is_refused_saying_why_and_left_alone(tmp_path, mode):
    loose = tmp_path / "run"
    loose.mkdir()
    os.chmod(loose, mode)
    with pytest.raises(RundirError) as info:
        ensure_rundir(loose)
    text = str(info.value)
    assert str(loose) in text and f"mode {mode:04o}" in text and f"chmod 700 {loose}" in text
    assert mode_of(loose) == mode  # not touched: the user decides


def test_existing_rundir_missing_owner_bits_is_set_to_0700(tmp_path):
    strict = tmp_path / "run"
    strict.mkdir()
    os.chmod(strict, 0o500)
    assert ensure_rundir(strict) == strict
    assert mode_of(strict) == 0o700


def test_existing_private_rundir_is_used_as_is(tmp_path):
    ok = tmp_path / "run"
    ok.mkdir(mode=0o700)
    (ok / "keep").write_text("x")
    assert ensure_rundir(ok) == ok
    assert mode_of(ok) == 0o700 and (ok / "keep").exists()


def test_rundir_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by another uid")
    foreign = tmp_path / "run"
    foreign.mkdir(mode=0o777)
    os.chmod(foreign, 0o777)
    os.chown(foreign, 12345, 12345)
    with pytest.raises(RundirError, match="owned by uid 12345"):
        ensure_rundir(foreign)
    assert mode_of(foreign) == 0o777  # not touched


def test_rundir_symlink_and_file_are_refused(tmp_path):
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(RundirError, match="symlink"):
        ensure_rundir(link)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(RundirError, match="not a directory"):
        ensure_rundir(afile)


def test_endpoint_naming(tmp_path):
    rundir = ensure_rundir(tmp_path / "run")
    assert socket_path(rundir, "wg-0") == rundir / "wg-0.sock"
    assert endpoint(rundir, "wg-0") == f"ipc://{rundir}/wg-0.sock"
    assert ipc_path(endpoint(rundir, "wg-0")) == rundir / "wg-0.sock"
    assert ipc_path("tcp://127.0.0.1:5") is None
    assert ipc_path("ipc://@abstract") is None
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            socket_path(rundir, bad)


def test_too_long_socket_path_is_a_clear_error(tmp_path):
    deep = tmp_path / ("d" * 120)
    with pytest.raises(SocketPathTooLong, match=r"at most 107.*shorter runtime directory"):
        endpoint(deep, "control")
    # Exactly at the limit is fine.
    base = str(tmp_path) + "/"
    name = "n" * (MAX_SOCKET_PATH_BYTES - len(base) - len(".sock"))
    assert len(str(socket_path(tmp_path, name))) == MAX_SOCKET_PATH_BYTES
    with pytest.raises(SocketPathTooLong):
        socket_path(tmp_path, name + "n")


def test_stale_plain_unix_socket_is_detected_and_removed(tmp_path):
    path = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    assert probe(path) is SocketState.LIVE
    with pytest.raises(AlreadyRunning):
        remove_stale(path)
    listener.close()  # leaves the file behind, like a crash
    assert path.exists()
    assert probe(path) is SocketState.STALE
    assert remove_stale(path) is True
    assert not path.exists()
    assert remove_stale(path) is False
    assert probe(path) is SocketState.ABSENT


def test_stale_zmq_ipc_socket_from_killed_process(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "crashed.sock"
    # A process that binds and dies without closing (os._exit skips all cleanup).
    code = (
        "import os, zmq; s = zmq.Context().socket(zmq.PULL); "
        f"s.bind('ipc://{path}'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=10)
    assert path.exists()
    assert remove_stale(path) is True
    assert not path.exists()


def test_live_zmq_listener_is_already_running(tmp_path):
    path = tmp_path / "live.sock"
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PULL)
        sock.bind(f"ipc://{path}")
        with pytest.raises(AlreadyRunning):
            remove_stale(path)
        assert path.exists()
        sock.close(linger=0)
    finally:
        ctx.term()


def test_regular_file_is_not_removed(tmp_path):
    path = tmp_path / "notasocket.sock"
    path.write_text("hello")
    with pytest.raises(NotASocket):
        remove_stale(path)
    assert path.read_text() == "hello"


def test_owned_socket_files_unlinks_only_our_inode(tmp_path):
    ours, replaced = tmp_path / "ours.sock", tmp_path / "replaced.sock"
    bound = []
    for path in (ours, replaced):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        bound.append(s)
    try:
        with OwnedSocketFiles() as owned:
            owned.track(ours)
            owned.track(replaced)
            # A successor removed our file and bound its own at the same path.
            os.unlink(replaced)
            successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            successor.bind(str(replaced))
            successor.close()
        # unlink_all ran while our sockets were still open, as the loop does it.
    finally:
        for s in bound:
            s.close()
    assert not ours.exists()
    assert replaced.exists()
