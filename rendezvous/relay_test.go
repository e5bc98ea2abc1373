package rendezvous_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/multiformats/go-multiaddr"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/rendezvous"
	"github.com/confabhq/confab/store"
)

// reserve asks the rendezvous for a relay slot and returns the status.
func reserve(t *testing.T, h host.Host, r *rendezvous.Rendezvous) pbv2.Status {
	t.Helper()
	ai := rendezvousInfo(t, r)
	if err := h.Connect(ctx(t), ai); err != nil {
		t.Fatal(err)
	}
	_, err := client.Reserve(ctx(t), h, ai)
	var re client.ReservationError
	switch {
	case err == nil:
		return pbv2.Status_OK
	case errors.As(err, &re):
		return re.Status
	}
	t.Fatalf("reserve: %v", err)
	return 0
}

func rendezvousInfo(t *testing.T, r *rendezvous.Rendezvous) peer.AddrInfo {
	t.Helper()
	ai, err := peer.AddrInfoFromP2pAddr(multiaddr.StringCast(r.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	return *ai
}

func bareHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// confabPeer is a node with a mesh (and so presence beacons), bootstrapped
// from r, with no channel: it never sends a follow request.
func confabPeer(t *testing.T, r *rendezvous.Rendezvous) *node.Host {
	t.Helper()
	dir := t.TempDir()
	key, err := node.LoadIdentity(filepath.Join(dir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	sc := store.DefaultConfig()
	sc.Dir = filepath.Join(dir, "store")
	db, err := store.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.WithIdentity(key), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false),
		node.WithBootstrap(r.Addrs()...), node.WithRelayClient(false))
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	m, err := mesh.New(n, db, mesh.WithName("member"))
	if err != nil {
		n.Close()
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); n.Close(); db.Close() })
	return n
}

// TestRelayMembersOnly: the relay serves peers that proved they speak
// confab — by a presence beacon the archive saw, or by a follow request —
// and refuses a bare libp2p host; the decisions show in the metrics.
func TestRelayMembersOnly(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, nil)

	member := confabPeer(t, r)
	waitFor(t, "the member's presence at the rendezvous", func() bool {
		return slices.ContainsFunc(r.Mesh().Who(ctx(t), ""), func(p mesh.Peer) bool { return p.ID == member.ID().String() })
	})
	follower := bareHost(t)
	if err := follower.Connect(ctx(t), rendezvousInfo(t, r)); err != nil {
		t.Fatal(err)
	}
	if _, err := rendezvous.Follow(ctx(t), follower, rendezvousInfo(t, r).ID, nil); err != nil {
		t.Fatal(err)
	}
	stranger := bareHost(t)

	tests := []struct {
		name string
		h    host.Host
		want pbv2.Status
	}{
		{"presence beacon", member.Host(), pbv2.Status_OK},
		{"follow request", follower, pbv2.Status_OK},
		{"never spoke confab", stranger, pbv2.Status_PERMISSION_DENIED},
	}
	for _, tt := range tests {
		if got := reserve(t, tt.h, r); got != tt.want {
			t.Errorf("%s: reservation %v, want %v", tt.name, got, tt.want)
		}
	}

	got := r.RelayStats()
	want := rendezvous.RelayStats{ReserveAllowed: 2, ReserveRefused: 1, Members: got.Members}
	if got != want {
		t.Errorf("RelayStats %+v, want %+v", got, want)
	}
	if got.Members < 2 {
		t.Errorf("RelayStats.Members %d, want at least the member and the follower", got.Members)
	}
	body := get(t, "http://"+r.MetricsAddr()+"/metrics")
	for _, want := range []string{`confab_relay_acl_total{op="reserve",result="allowed"} 2`,
		`confab_relay_acl_total{op="reserve",result="refused"} 1`, "confab_relay_members "} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
