"""A real Headscale control server for the reference network, and its CLI.

Headscale runs inside the namespace with everything on loopback::

    http://127.0.0.1:8080   control (TS2021 /key, /ts2021) and the embedded DERP (/derp), plain HTTP
    127.0.0.1:3478/udp      embedded STUN
    127.0.0.1:9090          metrics/debug
    <workdir>/headscale.sock  the CLI's gRPC unix socket
    <workdir>/db.sqlite     the database (sqlite, in the temp dir)

DERP region 999 ("refnet") is generated from ``server_url``: HostName 127.0.0.1, DERPPort
8080, STUNPort 3478; tailscaled speaks plain HTTP to it because of TS_DEBUG_USE_DERP_HTTP=1.

Hosts mode (``Headscale(..., host="10.77.0.1", listen="0.0.0.0")``, see topology.py): the
control and STUN sockets listen on every address of the namespace, and ``server_url`` (hence
the DERP node's HostName) and ``derp.server.ipv4`` become ``host``, an address that the peers
in the namespace and a second host namespace behind a veth can both reach.

The policy (`POLICY`) allows every connection except to TCP/UDP port `DENIED_PORT`
(7777), so tests can prove that a connection the packet filter forbids is refused.
MagicDNS base domain ``tailnet.test``, with `EXTRA_RECORDS` (``dns.extra_records``, which
Headscale hands out as ``DNSConfig.ExtraRecords``) and `NAMESERVER` as the global resolver
with ``override_local_dns`` (``DNSConfig.Resolvers``): a DNS server that gateway.py puts
behind the exit node. The tailscaled peers run with ``--accept-dns=false``, so neither
changes them.

TLS mode (``Headscale(..., tls=tlscerts.make(...))``, ``sunbeam-refnet up --tls``): the same
port serves HTTPS with a certificate from the network's throwaway CA (``tls_cert_path`` /
``tls_key_path``), ``server_url`` is ``https://127.0.0.1:8080``, and the embedded DERP
server, on that port too, speaks TLS: the DERP node is HostName/IPv4 127.0.0.1, DERPPort
8080, and a client verifies the certificate against 127.0.0.1 (the certificate's IP SAN).
With TLS on, Headscale also serves its gRPC API on 127.0.0.1:50443 in the namespace.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from . import netns
from .tlscerts import TlsFiles

CONTROL_PORT = 8080
STUN_PORT = 3478
CONTROL_URL = f"http://127.0.0.1:{CONTROL_PORT}"
BASE_DOMAIN = "tailnet.test"
NAMESERVER = "203.0.113.53"
EXTRA_RECORDS = ({"name": f"grafana.{BASE_DOMAIN}", "type": "A", "value": "100.64.0.250"},
                 {"name": f"grafana.{BASE_DOMAIN}", "type": "AAAA", "value": "fd7a:115c:a1e0::250"})
DENIED_PORT = 7777
POLICY = json.dumps({"acls": [{"action": "accept", "src": ["*"],
                               "dst": [f"*:1-{DENIED_PORT - 1}", f"*:{DENIED_PORT + 1}-65535"]}]}, indent=2)


def control_url(host: str, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{host}:{CONTROL_PORT}"


def config_yaml(workdir: Path, *, host: str = "127.0.0.1", listen: str = "127.0.0.1",
                tls: TlsFiles | None = None) -> str:
    """The config; ``host``: server_url's (and the DERP node's) address, ``listen``: the bind
    address; ``tls``: serve HTTPS (and DERP over TLS) with this certificate."""
    tls_lines = f"tls_cert_path: {tls.cert}\ntls_key_path: {tls.key}\n" if tls else ""
    return f"""\
server_url: {control_url(host, tls is not None)}
listen_addr: {listen}:{CONTROL_PORT}
{tls_lines}metrics_listen_addr: 127.0.0.1:9090
grpc_listen_addr: 127.0.0.1:50443
grpc_allow_insecure: false
noise:
  private_key_path: {workdir}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: refnet
    region_name: sunbeam refnet embedded DERP
    verify_clients: true
    stun_listen_addr: {listen}:{STUN_PORT}
    private_key_path: {workdir}/derp_server_private.key
    automatically_add_embedded_derp_region: true
    ipv4: {host}
  urls: []
  paths: []
  auto_update_enabled: false
  update_frequency: 24h
disable_check_updates: true
node:
  expiry: 0
  ephemeral:
    inactivity_timeout: 30m
database:
  type: sqlite
  sqlite:
    path: {workdir}/db.sqlite
    write_ahead_log: true
log:
  level: info
  format: text
policy:
  mode: file
  path: {workdir}/policy.hujson
dns:
  magic_dns: true
  base_domain: {BASE_DOMAIN}
  override_local_dns: true
  nameservers:
    global: ["{NAMESERVER}"]
  extra_records: {json.dumps(list(EXTRA_RECORDS))}
unix_socket: {workdir}/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
"""


class Headscale:
    """Drives one Headscale instance: its config, its process and its CLI."""

    def __init__(self, binary: Path, workdir: Path, ns: str, *, host: str = "127.0.0.1",
                 listen: str = "127.0.0.1", tls: TlsFiles | None = None) -> None:
        self.binary = binary
        self.tls = tls
        self.workdir = workdir
        self.ns = ns
        self.host = host
        self.listen = listen
        self.config = workdir / "headscale.yaml"

    @property
    def control_url(self) -> str:
        return control_url(self.host, self.tls is not None)

    @property
    def cli(self) -> list[str]:
        return [str(self.binary), "-c", str(self.config)]

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config_yaml(self.workdir, host=self.host, listen=self.listen, tls=self.tls))
        (self.workdir / "policy.hujson").write_text(POLICY + "\n")

    def start(self) -> subprocess.Popen:
        self.write_config()
        log = open(self.workdir / "headscale.log", "ab")
        return subprocess.Popen(
            netns.exec_prefix(self.ns) + self.cli + ["serve"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def wait_healthy(self, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        context = ssl.create_default_context(cafile=self.tls.ca) if self.tls else None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"headscale exited with {proc.returncode}:\n{self.log_tail()}")
            try:
                with netns.entered(self.ns):
                    with urllib.request.urlopen(f"{self.control_url}/health", timeout=2, context=context) as resp:
                        if resp.status == 200 and self.sock_ready():
                            return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"headscale not healthy after {timeout}s ({last}):\n{self.log_tail()}")

    def sock_ready(self) -> bool:
        return (self.workdir / "headscale.sock").exists()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.workdir / "headscale.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def run(self, *args: str) -> dict | list:
        """Run a CLI command with JSON output and return the parsed result."""
        res = subprocess.run(self.cli + list(args) + ["-o", "json"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"headscale {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
        return json.loads(res.stdout)

    def create_user(self, name: str) -> int:
        return int(self.run("users", "create", name)["id"])

    def create_preauth_key(self, user_id: int, *, reusable: bool, ephemeral: bool, expiration: str = "24h") -> str:
        args = ["preauthkeys", "create", "--user", str(user_id), "--expiration", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        return str(self.run(*args)["key"])

    def nodes(self) -> list[dict]:
        return list(self.run("nodes", "list"))
