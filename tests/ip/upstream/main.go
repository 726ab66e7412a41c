// Interop helper for tests/ip/test_upstream.py, run against tailscale.com v1.98.10
// from the local module cache (no network): it prints the packets upstream's
// net/packet builds for the golden vectors, then reads "name hex" lines of OUR packets
// on stdin and prints how upstream's packet.Parsed sees each one.
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"tailscale.com/net/packet"
	"tailscale.com/types/ipproto"
)

func show(name string, b []byte) { fmt.Printf("vector %s %s\n", name, hex.EncodeToString(b)) }

func vectors() {
	s4, d4 := netip.MustParseAddr("100.64.0.9"), netip.MustParseAddr("100.64.0.5")
	s6, d6 := netip.MustParseAddr("fd7a:115c:a1e0::9"), netip.MustParseAddr("fd7a:115c:a1e0::5")
	payload := []byte{0x12, 0x34, 0x00, 0x07, 'h', 'e', 'l', 'l', 'o', '!'} // id 0x1234, seq 7
	var p packet.Parsed

	req4 := packet.Generate(packet.ICMP4Header{IP4Header: packet.IP4Header{IPProto: ipproto.ICMPv4, Src: s4, Dst: d4},
		Type: packet.ICMP4EchoRequest}, payload)
	show("echo4_req", req4)
	p.Decode(req4)
	h4 := p.ICMP4Header()
	h4.ToResponse()
	show("echo4_rep", packet.Generate(&h4, p.Payload()))

	req6 := packet.Generate(packet.ICMP6Header{IP6Header: packet.IP6Header{IPProto: ipproto.ICMPv6, Src: s6, Dst: d6},
		Type: packet.ICMP6EchoRequest}, payload)
	show("echo6_req", req6)
	p.Decode(req6)
	h6 := p.ICMP6Header()
	h6.ToResponse()
	show("echo6_rep", packet.Generate(&h6, p.Payload()))

	data := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	ping := append([]byte{byte(packet.TSMPTypePing)}, data...)
	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
	}{{"tsmp4", s4, d4}, {"tsmp6", s6, d6}} {
		var iph packet.Header
		if fam.src.Is4() {
			iph = packet.IP4Header{IPProto: ipproto.TSMP, Src: fam.src, Dst: fam.dst}
		} else {
			iph = packet.IP6Header{IPProto: ipproto.TSMP, Src: fam.src, Dst: fam.dst}
		}
		b := packet.Generate(iph, ping) // as userspaceEngine.sendTSMPPing
		show(fam.name+"_ping", b)
		p.Decode(b)
		req, _ := p.AsTSMPPing()
		pong := packet.TSMPPongReply{Data: req.Data} // as tstun.Wrapper.injectOutboundPong
		if fam.src.Is4() {
			h := p.IP4Header()
			h.ToResponse()
			pong.IPHeader = h
		} else {
			h := p.IP6Header()
			h.ToResponse()
			pong.IPHeader = h
		}
		show(fam.name+"_pong", packet.Generate(pong, nil))
		// as tstun.Wrapper's filter answers a TCP SYN its ACLs refuse: from the peer (src)
		// to us (dst), naming our flow us:12345 -> peer:443
		rej := packet.TailscaleRejectedHeader{IPSrc: fam.src, IPDst: fam.dst,
			Src: netip.AddrPortFrom(fam.dst, 12345), Dst: netip.AddrPortFrom(fam.src, 443),
			Proto: ipproto.TCP, Reason: packet.RejectedDueToACLs}
		show(fam.name+"_reject", packet.Generate(rej, nil))
	}
}

func main() {
	vectors()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		b, err := hex.DecodeString(f[1])
		if err != nil {
			fmt.Printf("parsed %s error\n", f[0])
			continue
		}
		var q packet.Parsed
		q.Decode(b)
		_, isPing := q.AsTSMPPing()
		pong, isPong := q.AsTSMPPong()
		fmt.Printf("parsed %s v=%d proto=%d src=%s dst=%s echo_req=%t echo_rep=%t idseq=%08x tsmp_ping=%t tsmp_pong=%t pong_data=%x pong_port=%d\n",
			f[0], q.IPVersion, int(q.IPProto), q.Src.Addr(), q.Dst.Addr(), q.IsEchoRequest(), q.IsEchoResponse(),
			q.EchoIDSeq(), isPing, isPong, pong.Data[:], pong.PeerAPIPort)
	}
}
