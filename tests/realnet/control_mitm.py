"""A TS2021 man in the middle for hostile-control tests: between our control service and the
real Headscale, holding Headscale's Noise key and our machine key, relaying HTTP/2 and
passing map frames whole so a test can inject frames between real ones or rewrite them
(`_add_hostile_region_and_peer`: a fake DERP region and a made-up peer living there).
Used by test_hostile.py."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import select
import socket
import struct
import threading
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import zstandard
from sunbeam.refnet import netns
from sunbeam.shared.keys import from_text, load_or_create, public_from_private
from sunbeam.shared.proto.controlbase import Initiator
from sunbeam.shared.proto.controlbase.early import EARLY_PAYLOAD_MAGIC
from sunbeam.shared.proto.ts2021 import (
    Connected,
    ConnectionClosed,
    ControlConnection,
    ControlProtocolError,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
)

from ..httphead import recv_head
from ..proto.test_controlbase import Responder

MB = 1 << 20
FAKE_REGION = 1000
FAKE_PEER_ID = 990001


# -- the control man in the middle -----------------------------------------------------------

class ControlMitm:
    """Relays our control service's TS2021 connections to Headscale, one thread each, and
    lets the test inject map frames into the live map stream (`inject`) or rewrite the
    real ones (`rewrite`: MapResponse dict -> dict)."""

    UPGRADE_OK = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\n"
                  b"Connection: upgrade\r\n\r\n")

    def __init__(self, refnet: dict, statedir: Path) -> None:
        self.ns = refnet["netns"]
        url = urlsplit(refnet["control_url"])
        self.upstream = (url.hostname, url.port)
        key_file = Path(refnet["workdir"]) / "headscale" / "noise_private.key"
        self.server_private = from_text("privkey:", key_file.read_text().strip())
        self.statedir = statedir
        self.rewrite = None
        self.injections: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.injected = 0
        self.connections = 0
        self.live_map = threading.Event()  # a map stream answered 200 is being relayed
        self.live_relay: _Relay | None = None
        self.map_streams = 0  # map streams answered 200, over all connections
        self.errors: list[str] = []
        with netns.entered(self.ns):
            self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def inject(self, *frames: bytes) -> None:
        for f in frames:
            self.injections.put(f)

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, down: socket.socket) -> None:
        try:
            head = recv_head(down)
            if head is None:
                return
            first, *lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            method, path, _ = first.split(" ", 2)
            if method == "GET" and path.startswith("/key"):
                with netns.entered(self.ns):
                    conn = http.client.HTTPConnection(*self.upstream, timeout=10)
                    conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                down.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % (resp.status, len(body)) + body)
            elif method == "POST" and path == "/ts2021":
                self._relay(down, base64.b64decode(headers["x-tailscale-handshake"]))
        except Exception as exc:  # noqa: BLE001 (a test helper: keep the reason for assertion messages)
            self.errors.append(f"{exc.__class__.__name__}: {exc}")
        finally:
            down.close()

    def _relay(self, down: socket.socket, init: bytes) -> None:
        self.connections += 1
        keys, _ = load_or_create(self.statedir)
        with netns.entered(self.ns):
            up = socket.create_connection(self.upstream, timeout=10)
        try:
            upc = ControlConnection(host=f"{self.upstream[0]}:{self.upstream[1]}", initiator=Initiator(
                machine_private=keys.machine.private_bytes(), server_public=public_from_private(self.server_private),
                version=int.from_bytes(init[:2], "big"), ephemeral_private=os.urandom(32)))
            up.sendall(upc.data_to_send())
            early = self._until_connected(up, upc)
            noise = Responder(self.server_private, os.urandom(32))
            answer = noise.accept(init)
            assert noise.client_static == keys.machine.public
            h2d = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            h2d.initiate_connection()
            plain = b""
            if early is not None:
                body = json.dumps(early).encode()
                plain = EARLY_PAYLOAD_MAGIC + len(body).to_bytes(4, "big") + body
            down.sendall(self.UPGRADE_OK + answer + _seal(noise, plain + h2d.data_to_send()))
            _Relay(self, down, up, upc, noise, h2d).run()
        finally:
            up.close()

    @staticmethod
    def _until_connected(up: socket.socket, upc: ControlConnection) -> dict | None:
        while True:
            events = upc.receive_data(up.recv(65536))
            up.sendall(upc.data_to_send())
            for ev in events:
                if isinstance(ev, Connected):
                    return ev.early_payload
                if isinstance(ev, ConnectionClosed):
                    raise ConnectionError(ev.reason)


def _seal(noise: Responder, plain: bytes) -> bytes:
    return b"".join(noise.seal(plain[i:i + 4000]) for i in range(0, len(plain), 4000))


class _Relay:
    """One relayed connection: HTTP/2 server toward our client, `ControlConnection` upstream."""

    def __init__(self, mitm: ControlMitm, down, up, upc: ControlConnection, noise: Responder, h2d) -> None:
        self.mitm, self.down, self.up, self.upc, self.noise, self.h2d = mitm, down, up, upc, noise, h2d
        self.requests: dict[int, tuple[dict, bytearray]] = {}
        self.to_down: dict[int, int] = {}  # upstream stream id -> our client's stream id
        self.map_sids: set[int] = set()
        self.map_bufs: dict[int, bytearray] = {}
        self.pending: dict[int, bytearray] = {}
        self.ending: set[int] = set()
        self.live: int | None = None

    def run(self) -> None:
        try:
            while True:
                readable, _, _ = select.select([self.down, self.up], [], [], 0.05)
                if self.down in readable and not self._from_client():
                    return
                if self.up in readable and not self._from_server():
                    return
                if self.live is not None:
                    while True:
                        try:
                            frame = self.mitm.injections.get_nowait()
                        except queue.Empty:
                            break
                        self.pending[self.live] += frame
                        self.mitm.injected += 1
                self._pump()
        except (OSError, ControlProtocolError, h2.exceptions.ProtocolError):
            return  # our client hung up (e.g. after a fatal frame) or Headscale did
        finally:
            if self.mitm.live_relay is self:
                self.mitm.live_relay = None
                self.mitm.live_map.clear()

    def _from_client(self) -> bool:
        data = self.down.recv(1 << 16)
        if not data:
            return False
        for ev in self.h2d.receive_data(self.noise.open(data)):
            if isinstance(ev, h2.events.RequestReceived):
                self.requests[ev.stream_id] = (dict(ev.headers), bytearray())
            elif isinstance(ev, h2.events.DataReceived):
                self.requests[ev.stream_id][1].extend(ev.data)
                self.h2d.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.requests:
                headers, body = self.requests.pop(ev.stream_id)
                extra = tuple((k, v) for k, v in headers.items()
                              if not k.startswith(":") and k not in ("content-type", "content-length"))
                usid = self.upc.post(headers[":path"], bytes(body), headers=extra)
                self.to_down[usid] = ev.stream_id
                self.pending[ev.stream_id] = bytearray()
                if headers[":path"] == "/machine/map" and json.loads(body).get("Stream"):
                    self.map_sids.add(ev.stream_id)
                    self.map_bufs[ev.stream_id] = bytearray()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return False
        return True

    def _from_server(self) -> bool:
        for ev in self.upc.receive_data(self.up.recv(1 << 18)):
            sid = self.to_down.get(getattr(ev, "stream_id", -1))
            if isinstance(ev, ConnectionClosed):
                return False
            if sid is None:
                continue
            if isinstance(ev, ResponseStarted):
                self.h2d.send_headers(sid, [(":status", str(ev.status)), ("content-type", "application/json")])
                if sid in self.map_sids and ev.status == 200:
                    self.live = sid
                    self.mitm.live_relay = self
                    self.mitm.map_streams += 1
                    self.mitm.live_map.set()
            elif isinstance(ev, ResponseData):
                if sid in self.map_sids:
                    self._map_data(sid, ev.data)
                else:
                    self.pending[sid] += ev.data
            elif isinstance(ev, ResponseEnded):
                self.ending.add(sid)
            elif isinstance(ev, StreamReset):
                self.h2d.reset_stream(sid)
                self.pending.pop(sid, None)
        return True

    def _map_data(self, sid: int, data: bytes) -> None:
        """Forward only whole frames (so an injected one always lands on a boundary)."""
        buf = self.map_bufs[sid]
        buf += data
        while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "little"):
            end = 4 + int.from_bytes(buf[:4], "little")
            frame = bytes(buf[:end])
            del buf[:end]
            self.pending[sid] += self._rewritten(frame)

    def _rewritten(self, frame: bytes) -> bytes:
        if self.mitm.rewrite is None:
            return frame
        body = frame[4:]
        if body.startswith(b"\x28\xb5\x2f\xfd"):
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=64 * MB)
        msg = json.loads(body)
        if msg.get("KeepAlive"):
            return frame
        out = json.dumps(self.mitm.rewrite(msg)).encode()
        return struct.pack("<I", len(out)) + out

    def _pump(self) -> None:
        for sid in list(self.pending):
            buf = self.pending[sid]
            try:
                while buf:
                    n = min(len(buf), self.h2d.local_flow_control_window(sid), self.h2d.max_outbound_frame_size)
                    if n <= 0:
                        break
                    self.h2d.send_data(sid, bytes(buf[:n]))
                    del buf[:n]
                if not buf and sid in self.ending:
                    self.h2d.end_stream(sid)
                    self.ending.discard(sid)
                    del self.pending[sid]
            except h2.exceptions.StreamClosedError:
                self.pending.pop(sid, None)
        out = self.h2d.data_to_send()
        if out:
            self.down.sendall(_seal(self.noise, out))
        out = self.upc.data_to_send()
        if out:
            self.up.sendall(out)


def _frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def _add_hostile_region_and_peer(derp_port: int, peer_key: bytes, disco_key: bytes):
    """The rewrite: DERP region 1000 at the fake DERP server, and a peer that calls it home."""
    region = {"RegionID": FAKE_REGION, "RegionCode": "hostile", "RegionName": "hostile", "Nodes": [
        {"Name": "1000a", "RegionID": FAKE_REGION, "HostName": "127.0.0.1", "IPv4": "127.0.0.1",
         "DERPPort": derp_port, "STUNPort": -1}]}

    def rewrite(msg: dict) -> dict:
        if (msg.get("DERPMap") or {}).get("Regions") is not None:
            msg["DERPMap"]["Regions"][str(FAKE_REGION)] = region
        if msg.get("Peers"):
            msg["Peers"].append({
                "ID": FAKE_PEER_ID, "StableID": "hostile", "Name": "hostile-derp.", "User": msg["Peers"][0].get("User", 0),
                "Key": "nodekey:" + peer_key.hex(), "DiscoKey": "discokey:" + disco_key.hex(),
                "Addresses": ["100.64.99.99/32"], "AllowedIPs": ["100.64.99.99/32"], "HomeDERP": FAKE_REGION,
                "DERP": f"127.3.3.40:{FAKE_REGION}", "Hostinfo": {"Hostname": "hostile-derp"},
                "MachineAuthorized": True, "Online": True})
        return msg

    return rewrite


# -- the node, the good peer's download, counters and logs --------------------------------------

