"""sunbeam-proxy: the IP side of the tailnet for this node.

It answers ICMP/ICMPv6 echo requests and TSMP pings addressed to our tailnet addresses,
sends ICMP echo requests to peers on request, and owns the userspace TCP/IP engine (our
sans-IO TCP, `tcpengine.py`) with the local side (`local.py`): port forwards, SOCKS5 and
HTTP proxy listeners on 127.0.0.1, the dns listener (UDP + TCP, `dnsserver.py`), and
inbound connections from tailnet peers. Where a connection goes follows the peers'
AllowedIPs as `shared/netmap/routes.py` keeps them (``accept_routes``, ``exit_node``).

Sockets (all ``ipc://<rundir>/<name>.sock``):

    proxy-in     PULL, bound     FromPeer(peer_key, packets, segments) from the wg workers  (plane.py)
    wg-<k>-in    PUSH, connected ToPeer(peer_key, packets, segments) to worker owner(peer)  (outbox.py)
    control-pub  SUB, connected  the netmap: our addresses, peers' AllowedIPs     (plane.py)
    proxy-ping   REP, bound      PingPeer -> PingResult                            (pingserver.py)
    proxy-ctl    REP, bound      health / status / stop (run_service); the status reply
                                 carries the ``accept_routes`` / ``exit_node`` read at start

The packet work is sans-IO in `sunbeam.shared.proto.ip` (`IpResponder`) and `pingrun.py`.
"""

from __future__ import annotations

from sunbeam.shared.messages.ctl import RoutingSettings
from sunbeam.shared.runtime.service import Service, run_service

from .local import LocalSide
from .pingserver import PingServer
from .plane import IpPlane
from .tcpengine import TcpEngine


def setup(svc: Service) -> None:
    # what the plane routes by (plane.py apply_netmap), for `sunbeam-ctl whois/peers/exit-node`
    svc.routing = RoutingSettings(accept_routes=svc.context.accept_routes, exit_node=svc.context.exit_node)
    plane = IpPlane(svc)
    PingServer(svc, plane)
    LocalSide(svc, TcpEngine(svc, plane))


def main(argv: list[str] | None = None) -> int:
    return run_service("proxy", setup, argv=argv)


if __name__ == "__main__":  # supervisord.conf runs `python -m sunbeam.services.proxy.main`
    raise SystemExit(main())
