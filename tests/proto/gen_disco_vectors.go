//go:build ignore

// Generates the sealed golden disco packets in test_disco.py with the real
// tailscale.com/disco (v1.98.10) marshalling and golang.org/x/crypto/nacl/box, the way
// magicsock seals them (fixed keys and nonce instead of random ones). Run it in a scratch
// module: go.mod `module discogen` + `require tailscale.com v1.98.10`, then
// GOFLAGS=-mod=mod go run gen_disco_vectors.go
package main

import (
	"encoding/hex"
	"fmt"
	"net/netip"

	"go4.org/mem"
	"golang.org/x/crypto/nacl/box"
	"tailscale.com/disco"
	"tailscale.com/types/key"
)

func raw(start byte) (b [32]byte) {
	for i := range b {
		b[i] = start + byte(i)
	}
	return
}

func main() {
	senderPriv := raw(0x01) // disco private key of the sender
	recvPriv := raw(0x41)   // disco private key of the receiver
	sender := key.DiscoPrivateFromRaw32(mem.B(senderPriv[:]))
	recv := key.DiscoPrivateFromRaw32(mem.B(recvPriv[:]))
	sp, rp := sender.Public().Raw32(), recv.Public().Raw32()
	fmt.Printf("sender_pub %x\nrecv_pub %x\n", sp, rp)
	var nonce [24]byte
	for i := range nonce {
		nonce[i] = 0xa0 + byte(i)
	}
	nk := raw(0x81)
	msgs := map[string]disco.Message{
		"ping":     &disco.Ping{TxID: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, NodeKey: key.NodePublicFromRaw32(mem.B(nk[:]))},
		"ping_pad": &disco.Ping{TxID: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, NodeKey: key.NodePublicFromRaw32(mem.B(nk[:])), Padding: 5},
		"pong4":    &disco.Pong{TxID: [12]byte{12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, Src: netip.MustParseAddrPort("192.0.2.7:41641")},
		"pong_derp": &disco.Pong{TxID: [12]byte{12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, Src: netip.MustParseAddrPort("127.3.3.40:999")},
		"cmm":      &disco.CallMeMaybe{MyNumber: []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:567"), netip.MustParseAddrPort("[2001::3456]:789")}},
	}
	for _, name := range []string{"ping", "ping_pad", "pong4", "pong_derp", "cmm"} {
		payload := msgs[name].AppendMarshal(nil)
		pkt := []byte(disco.Magic)
		pkt = append(pkt, sp[:]...)
		pkt = append(pkt, nonce[:]...)
		pkt = box.Seal(pkt, payload, &nonce, &rp, &senderPriv)
		fmt.Printf("%s %s\n", name, hex.EncodeToString(pkt))
		// and the receiver side opens it the way magicsock does
		shared := recv.Shared(key.DiscoPublicFromRaw32(mem.B(sp[:])))
		clear, ok := shared.Open(pkt[len(disco.Magic)+32:])
		if !ok {
			panic("open")
		}
		m, err := disco.Parse(clear)
		if err != nil {
			panic(err)
		}
		fmt.Printf("# %s\n", disco.MessageSummary(m))
	}
}
