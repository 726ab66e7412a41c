"""Interop with tailscale's own net/packet (v1.98.10, from the local Go module cache).

upstream/main.go prints the packets upstream builds (must equal vectors.UPSTREAM, which
the other tests use as golden bytes) and reports how upstream's ``packet.Parsed`` reads
the packets we build: our echo replies must be ``IsEchoResponse`` with the request's
``EchoIDSeq``, our TSMP pongs ``AsTSMPPong`` with the ping's data (what
``tailscale ping --icmp`` / ``--tsmp`` wait for). Skipped without Go or the module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sunbeam.shared.proto.ip import IpResponder
from sunbeam.shared.proto.ip.headers import addr_bytes
from sunbeam.shared.proto.ip.icmp import build_echo
from sunbeam.shared.proto.ip.tsmp import build_tsmp_ping

from .vectors import OURS4, OURS6, PEER4, PEER6, UPSTREAM

HERE = Path(__file__).resolve().parent / "upstream"
MODULE = Path(os.environ.get("GOMODCACHE", Path.home() / "go/pkg/mod")) / "tailscale.com@v1.98.10"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    if shutil.which("go") is None or not MODULE.is_dir():
        pytest.skip("needs Go and tailscale.com@v1.98.10 in the module cache")
    work = tmp_path_factory.mktemp("upstream")
    shutil.copy(HERE / "main.go", work / "main.go")
    shutil.copy(HERE / "go.mod.txt", work / "go.mod")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOSUMDB="off", GOTOOLCHAIN="local")
    build = subprocess.run(["go", "build", "-o", str(work / "vectors"), "."], cwd=work, env=env, check=False,
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.skip(f"cannot build the upstream helper offline: {build.stderr[-500:]}")

    def run(ours: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, dict[str, str]]]:
        stdin = "".join(f"{name} {packet.hex()}\n" for name, packet in ours.items())
        out = subprocess.run([str(work / "vectors")], input=stdin, capture_output=True, text=True, timeout=60,
                             check=True).stdout
        vectors, parsed = {}, {}
        for line in out.splitlines():
            kind, name, *rest = line.split()
            if kind == "vector":
                vectors[name] = bytes.fromhex(rest[0])
            elif kind == "parsed":
                parsed[name] = dict(field.split("=", 1) for field in rest)
        return vectors, parsed

    return run


def test_upstream_builds_the_golden_vectors(upstream):
    vectors, _ = upstream({})
    assert vectors == UPSTREAM


def test_upstream_accepts_our_answers(upstream):
    responder = IpResponder({OURS4, OURS6})
    data = bytes.fromhex("0badc0ffee15900d")
    ours = {}
    for fam, src, dst in (("4", PEER4, OURS4), ("6", PEER6, OURS6)):
        s, d = addr_bytes(src), addr_bytes(dst)
        # as `tailscale ping --icmp`: 4 random bytes as identifier + sequence, no data; odd-length data too
        ours[f"rep{fam}"] = responder.handle(build_echo(s, d, 0xA1B2, 0xC3D4, ip_ident=0x4242)).packet
        ours[f"rep{fam}_odd"] = responder.handle(build_echo(s, d, 1, 2, b"abc")).packet
        ours[f"pong{fam}"] = responder.handle(build_tsmp_ping(s, d, data, ip_ident=0x1111)).packet
        ours[f"req{fam}"] = build_echo(d, s, 0x0102, 0x0304)
    _, parsed = upstream(ours)
    for fam, src, dst in (("4", PEER4, OURS4), ("6", PEER6, OURS6)):
        rep = parsed[f"rep{fam}"]
        assert (rep["v"], rep["src"], rep["dst"], rep["echo_rep"]) == (fam, dst, src, "true")
        assert rep["idseq"] == "d4c3b2a1"  # upstream reads the 4 bytes little-endian
        assert parsed[f"rep{fam}_odd"]["echo_rep"] == "true"
        pong = parsed[f"pong{fam}"]
        assert (pong["proto"], pong["src"], pong["dst"], pong["tsmp_pong"]) == ("99", dst, src, "true")
        assert (pong["pong_data"], pong["pong_port"]) == (data.hex(), "0")
        req = parsed[f"req{fam}"]
        assert (req["echo_req"], req["src"], req["dst"], req["idseq"]) == ("true", dst, src, "04030201")
