"""The sunbeam-derp process end to end without root: a netmap published on control-pub, a
test DERP server on a real TCP socket (HTTP upgrade + `FakeDerpServer`), and the ZeroMQ
sockets of the services around it.

Checks: it waits for the keys file rather than making one; connects to the netmap's region
with our node key and says NotePreferred(true); reports DerpStatus; relays DerpSend; routes
relayed disco packets to udp-in and WireGuard packets to the owning wg worker; reconnects
after the server drops it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq
from sunbeam.shared.keys import load_or_create
from sunbeam.shared.messages.dataplane import (
    DERP_IN_CODEC,
    DERP_PUB_CODEC,
    UDP_IN_CODEC,
    WG_IN_CODEC,
    DerpReceived,
    DerpSend,
    DiscoReceived,
)
from sunbeam.shared.messages.netmap import CONTROL_EVENT_CODEC, NetmapSnapshot
from sunbeam.shared.netmap import Netmap, Peer
from sunbeam.shared.proto.derp import DISCO_MAGIC, FrameType
from sunbeam.shared.proto.tailcfg import DERPMap, DERPNode, DERPRegion
from sunbeam.shared.runtime.rundir import endpoint
from sunbeam.shared.sharding import owner

from ..httphead import recv_head
from .fake_server import FakeConn, FakeDerpServer

PEER_KEY = bytes(range(200, 232))
WORKERS = 3


class TcpDerpServer:
    """`FakeDerpServer` behind a real listening socket, one thread per connection."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.core = FakeDerpServer(os.urandom(32))
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[tuple[socket.socket, FakeConn]] = []
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                return
        head = recv_head(sock)
        if head is None:
            return
        self.requests.append(head)
        with self.lock:
            conn = self.core.accept()
            self.conns.append((sock, conn))
            # the 101 head and the first frame in one segment, as Headscale does
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
                         + conn.data_to_send())
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                conn.receive_data(data)
                self._flush()

    def _flush(self) -> None:
        for sock, conn in self.conns:
            out = conn.data_to_send()
            if out:
                try:
                    sock.sendall(out)
                except OSError:
                    pass

    def push(self, client_key: bytes, frame_type: int, payload: bytes) -> None:
        with self.lock:
            self.core.conns[client_key].push(frame_type, payload)
            self._flush()

    def drop_all(self) -> None:
        with self.lock:
            for sock, _ in self.conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.conns.clear()
            self.core.conns.clear()

    def close(self) -> None:
        self.listener.close()
        self.drop_all()


def self_signed(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "derp.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("derp.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return ctx


def netmap(port: int, tls: bool) -> Netmap:
    # TLS: a node named by host name with its IP given, as real DERP maps do
    node = DERPNode(name="7", region_id=7, host_name="derp.test" if tls else "127.0.0.1",
                    ipv4="127.0.0.1" if tls else None, derp_port=port, insecure_for_tests=tls)
    derp_map = DERPMap(regions={7: DERPRegion(region_id=7, region_code="t", nodes=[node]),
                                9: DERPRegion(region_id=9, nodes=[DERPNode(name="s", region_id=9, stun_only=True)])})
    return Netmap(derp_map=derp_map, peers=(Peer(id=2, key="nodekey:" + PEER_KEY.hex(), home_derp=7),))


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["http", "tls"])
def world(tmp_path, request):
    base = Path(tmp_path)
    rundir, state = base / "run", base / "state"
    rundir.mkdir(mode=0o700)
    tls = request.param == "tls"
    server = TcpDerpServer(self_signed(base) if tls else None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUNBEAM_")}
    env.update(SUNBEAM_RUNTIME_DIR=str(rundir), SUNBEAM_STATE_DIR=str(state), SUNBEAM_WG_WORKERS=str(WORKERS),
               SUNBEAM_CONTROL_URL=f"{'https' if tls else 'http'}://127.0.0.1:{server.port}", SUNBEAM_AUTH_KEY="unused",
               SUNBEAM_LOG_LEVEL="debug", XDG_CONFIG_HOME=str(base / "cfg"))
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint(rundir, "control-pub"))
    pulls = {}
    for name in ["udp-in"] + [f"wg-{k}-in" for k in range(WORKERS)]:
        pulls[name] = ctx.socket(zmq.PULL)
        pulls[name].bind(endpoint(rundir, name))
    status = ctx.socket(zmq.SUB)
    status.setsockopt(zmq.SUBSCRIBE, b"")
    status.connect(endpoint(rundir, "derp-pub"))
    with open(base / "derp.log", "wb") as log:
        proc = subprocess.Popen(["sunbeam-derp"], env=env, stdout=log, stderr=subprocess.STDOUT)
    world = {"server": server, "pub": pub, "pulls": pulls, "status": status, "proc": proc, "state": state,
             "rundir": rundir, "ctx": ctx, "tls": tls}
    try:
        yield world
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        server.close()
        ctx.destroy(linger=0)
        assert code == 0, (base / "derp.log").read_text()[-3000:]


def latest_status(sock, timeout: float = 0.2):
    last = None
    while sock.poll(int(timeout * 1000)):
        last = DERP_PUB_CODEC.decode(sock.recv())
        timeout = 0
    return last


def recv(sock, codec, timeout: float = 5.0):
    assert sock.poll(int(timeout * 1000)), "nothing arrived"
    return codec.decode(sock.recv())


def test_service_end_to_end(world):
    server, pub = world["server"], world["pub"]
    snapshot = CONTROL_EVENT_CODEC.encode(NetmapSnapshot(seq=1, netmap=netmap(server.port, world["tls"])))
    time.sleep(1.0)
    assert not (world["state"] / "keys.json").exists(), "the derp service must not create the keys"
    assert server.requests == []
    keys, _ = load_or_create(world["state"])  # what the control service does

    def connected():
        pub.send(snapshot)  # a plain PUB stands in for control's XPUB: resend until heard
        st = latest_status(world["status"])
        return st if st is not None and st.state == "connected" else None

    st = wait(connected, 15, "DerpStatus connected")
    assert (st.home_region, st.connected) == (7, (7,))
    host = b"derp.test" if world["tls"] else b"127.0.0.1"
    assert server.requests[0].startswith(b"GET /derp HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: DERP\r\n")
    conn = server.core.conns[keys.node.public]  # logged in with OUR node key
    assert conn.client_info == {"version": 2, "CanAckPings": True}
    assert conn.preferred == [True]

    # outbound: DerpSend -> SendPacket to the peer (region 0 = home)
    push = world["ctx"].socket(zmq.PUSH)
    push.connect(endpoint(world["rundir"], "derp-in"))
    push.send(DERP_IN_CODEC.encode(DerpSend(peer_key=PEER_KEY, region=0, packets=[b"\x01wg-init", b"\x04data"])))
    wait(lambda: len(conn.sent) == 2, 5, "packets at the server")
    assert conn.sent == [(PEER_KEY, b"\x01wg-init"), (PEER_KEY, b"\x04data")]

    # inbound: disco -> udp-in, WireGuard -> the owner's wg-<k>-in, batched per peer
    disco = DISCO_MAGIC + bytes(80)
    server.push(keys.node.public, FrameType.RECV_PACKET, PEER_KEY + disco)
    server.push(keys.node.public, FrameType.RECV_PACKET, PEER_KEY + b"\x04wg1")
    server.push(keys.node.public, FrameType.RECV_PACKET, PEER_KEY + b"\x04wg2")
    got = recv(world["pulls"]["udp-in"], UDP_IN_CODEC)
    assert got == DiscoReceived(peer_key=PEER_KEY, region=7, packets=[disco])
    wg = world["pulls"][f"wg-{owner(PEER_KEY, WORKERS)}-in"]
    packets = []
    while len(packets) < 2:
        msg = recv(wg, WG_IN_CODEC)
        assert isinstance(msg, DerpReceived) and (msg.peer_key, msg.region) == (PEER_KEY, 7)
        packets += msg.packets
    assert packets == [b"\x04wg1", b"\x04wg2"]

    # the server drops us: we come back with the same key and say NotePreferred again
    server.drop_all()
    wait(lambda: keys.node.public in server.core.conns and server.core.conns[keys.node.public].preferred == [True],
         10, "reconnect")
    st = wait(connected, 10, "connected again")
    assert st.home_region == 7
    assert world["proc"].poll() is None
