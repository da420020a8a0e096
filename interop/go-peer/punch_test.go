package main

import (
	"testing"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// TestLabRangesAreNotPublicToGoLibp2p is why punch.go builds its own holepunch
// service (docs/interop.md, "Hole punching"): go-libp2p's EnableHolePunching
// offers only addresses manet.IsPublicAddr accepts, and it accepts none of the
// lab's. If go-multiaddr ever changes this, this test says so and the
// workaround may go.
func TestLabRangesAreNotPublicToGoLibp2p(t *testing.T) {
	for _, a := range []string{
		"/ip4/198.18.0.2/tcp/4001",  // underlay 198.18.0.0/15 (the NATs' outside addresses)
		"/ip4/198.19.255.254/tcp/1", // its last address
		"/ip4/203.0.113.7/tcp/4001", // the simulated internet
		"/ip6/2001:db8::7/tcp/4001", // its IPv6 range
		"/ip4/198.18.20.2/udp/1/quic-v1",
	} {
		m := ma.StringCast(a)
		if manet.IsPublicAddr(m) {
			t.Errorf("%s: go-multiaddr now counts it as public; EnableHolePunching would work in the lab", a)
		}
		if manet.IsPrivateAddr(m) {
			t.Errorf("%s: go-multiaddr now counts it as private", a)
		}
	}
	for _, a := range []string{"/ip4/100.64.0.1/tcp/1", "/ip6/fd00::1/tcp/1"} { // the overlay: private
		if !manet.IsPrivateAddr(ma.StringCast(a)) || manet.IsPublicAddr(ma.StringCast(a)) {
			t.Errorf("%s: expected private, not public", a)
		}
	}
}

func TestOfferedAddressesLeaveOutRelayedLoopbackAndUnspecified(t *testing.T) {
	var in []ma.Multiaddr
	for _, a := range []string{
		"/ip4/198.18.0.2/tcp/4001",
		"/ip4/198.18.0.10/tcp/4001/p2p/12D3KooWLHPHvtnqyXmfBgtBhzJ8LCxUEbNJmCbfpJJVFKPAL31D/p2p-circuit",
		"/ip4/127.0.0.1/tcp/4001",
		"/ip6/::1/tcp/4001",
		"/ip4/0.0.0.0/tcp/4001",
		"/ip4/203.0.113.9/udp/4001/quic-v1",
	} {
		in = append(in, ma.StringCast(a))
	}
	got := offerable(in)
	want := []string{"/ip4/198.18.0.2/tcp/4001", "/ip4/203.0.113.9/udp/4001/quic-v1"}
	if len(got) != len(want) {
		t.Fatalf("offerable = %v, want %v", got, want)
	}
	for i, a := range got {
		if a.String() != want[i] {
			t.Errorf("offerable[%d] = %s, want %s", i, a, want[i])
		}
	}
	if in[2].String() != "/ip4/127.0.0.1/tcp/4001" { // DeleteFunc in place would have shifted it
		t.Errorf("offerable changed its input: %v", in)
	}
}
