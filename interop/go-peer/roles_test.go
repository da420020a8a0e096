package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// memberRecord: member 2's sealed record offering relay and exit, with a certificate granting roles.
func memberRecord(t *testing.T, roles uint32) (key string, value []byte) {
	t.Helper()
	v4, v6 := derived(t, 2)
	cert, err := issueCertificate(ownerSigner, Certificate{
		NetworkID: vecNID(), PeerID: pidOf(2), Name: "bravo", IPv4: v4.AsSlice(), IPv6: v6.AsSlice(),
		Roles: roles, NotBefore: t0, NotAfter: t0 + day,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &NodeRecord{PeerID: pidOf(2), Network: vecNID(), Seq: 1, ExpiresUnix: t0 + 300,
		IPv4: v4.AsSlice(), IPv6: v6.AsSlice(), Certificate: cert,
		Relay: &RelayRole{MaxReservations: 4, MaxCircuits: 8}, Exit: &ExitRole{Allow: []string{"0.0.0.0/0"}}}
	priv, err := crypto.UnmarshalEd25519PrivateKey(seedKey(2))
	if err != nil {
		t.Fatal(err)
	}
	if value, err = sealRecord(r, priv); err != nil {
		t.Fatal(err)
	}
	return recordKey(vecNID(), peer.ID(pidOf(2))), value
}

func TestRolesTheCertificateDoesNotGrantDoNotCount(t *testing.T) {
	owned := NodeRecordValidator{Network: vecNID(), Now: func() int64 { return t0 + 60 },
		Revoked: func() map[string]uint64 { return map[string]uint64{} }}
	for _, c := range []struct {
		roles       uint32
		relay, exit bool
	}{{0, false, false}, {roleRelay, true, false}, {roleExit, false, true}, {roleRelay | roleExit, true, true},
		{roleAdmin, false, false}, {roleAdmin | roleExit | 8, false, true}} {
		key, value := memberRecord(t, c.roles)
		r, err := owned.open(key, value)
		if err != nil { // §15.9.4 step 3: the record stays valid
			t.Fatalf("roles %s: record refused: %v", rolesText(c.roles), err)
		}
		if (r.Relay != nil) != c.relay || (r.Exit != nil) != c.exit {
			t.Errorf("certificate roles %q: relay %v exit %v, want %v %v", rolesText(c.roles), r.Relay != nil, r.Exit != nil, c.relay, c.exit)
		}
		for _, addrKey := range []string{addressKey(vecNID(), netip.AddrFrom4([4]byte(r.IPv4))), addressKey(vecNID(), netip.AddrFrom16([16]byte(r.IPv6)))} {
			ra, err := (AddressRecordValidator{Records: owned}).open(addrKey, value)
			if err != nil || (ra.Relay != nil) != c.relay || (ra.Exit != nil) != c.exit {
				t.Errorf("under %s: relay %v exit %v (%v)", addrKey, ra != nil && ra.Relay != nil, ra != nil && ra.Exit != nil, err)
			}
		}
		if i, err := owned.Select(key, [][]byte{value}); err != nil || i != 0 {
			t.Errorf("roles %q: not selected (%d, %v)", rolesText(c.roles), i, err)
		}
	}
	// The DHT keeps the bytes as they are: opening them again without a certificate check shows both roles.
	_, value := memberRecord(t, 0)
	raw, err := openSealed(value)
	if err != nil || raw.Relay == nil || raw.Exit == nil {
		t.Fatalf("the sealed bytes lost a role: %v", err)
	}
}

func TestANodeWithoutTheRelayBitDoesNotOfferIt(t *testing.T) {
	v4, v6 := derived(t, 2)
	for _, c := range []struct {
		roles uint32
		ok    bool
	}{{roleRelay, true}, {roleRelay | roleExit, true}, {roleExit, false}, {roleAdmin, false}, {0, false}} {
		own := &Certificate{Roles: c.roles, IPv4: v4.AsSlice(), IPv6: v6.AsSlice()}
		if err := checkOwnRoles(own, true); (err == nil) != c.ok {
			t.Errorf("roles %q: start with --relay: %v", rolesText(c.roles), err)
		}
		if err := checkOwnRoles(own, false); err != nil {
			t.Errorf("roles %q without --relay: %v", rolesText(c.roles), err)
		}
	}
	if err := checkOwnRoles(nil, true); err != nil { // a network without owner: any node may offer it
		t.Errorf("no owner: %v", err)
	}

	// And the record: even were v.relay set, a certificate without the bit keeps it out.
	v := testVPN(t)
	v.relay = relayRole()
	if r := ownRecord(v.h, v, time.Minute); r.Relay == nil || r.Exit != nil {
		t.Fatalf("no owner: relay %v exit %v", r.Relay, r.Exit)
	}
	for roles, want := range map[uint32]bool{roleRelay: true, roleExit: false, 0: false} {
		v.member = newMemberWith(v, vecNID(), &Certificate{Roles: roles, IPv4: v4.AsSlice(), IPv6: v6.AsSlice()}, "")
		if r := ownRecord(v.h, v, time.Minute); (r.Relay != nil) != want || r.Exit != nil {
			t.Errorf("roles %q: our record offers relay %v exit %v", rolesText(roles), r.Relay != nil, r.Exit != nil)
		}
	}
}
