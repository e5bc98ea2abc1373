package mesh_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// connect dials b from a over loopback. With many nodes under -race on two
// cores, the DHT and gossipsub peer exchange dial everyone at once and a
// handshake can stall, so a failed dial is retried.
func connect(t *testing.T, a, b *node.Host) {
	t.Helper()
	var err error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = a.Host().Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()})
		cancel()
		if err == nil {
			return
		}
	}
	t.Fatalf("connect %s -> %s: %v", a.ID(), b.ID(), err)
}

var noMDNS = []node.Option{node.WithMDNS(false)}

// TestFindTwentyNodes runs 20 agents (8 under -race) (mDNS off, a star around one DHT server
// the DHT and gossipsub then connect the rest), some advertising go-review, plus two liars: a bare libp2p
// node that only puts a go-review provider record, and an agent whose signed
// card does not list go-review but which provides the record anyway. Find
// must return exactly the honest go-review agents, and an agent killed
// without a goodbye must leave presence within the TTL and Find at once.
func TestFindTwentyNodes(t *testing.T) {
	const capability = "go-review"
	n := 20
	if raceEnabled {
		n = 8 // see race_on_test.go; run without -race for the full 20
	}
	hub := startAgentWith(t, t.TempDir(), "hub", []node.Option{node.WithMDNS(false), node.WithDHTServer(true)})
	var as []*agent
	want := map[string]bool{}
	for i := range n - 1 {
		var caps []string // agents without caps put no records: lighter on two cores
		if i%3 == 0 {
			caps = []string{"tests", capability}
		}
		a := startAgentWith(t, t.TempDir(), fmt.Sprintf("agent-%02d", i), noMDNS, mesh.WithCaps(caps...), mesh.WithDesc("test agent"),
			mesh.WithPresence(time.Second, 3*time.Second))
		if i%3 == 0 {
			want[a.mesh.Self()] = true
		}
		connect(t, a.node, hub.node)
		as = append(as, a)
	}
	key, err := mesh.CapKey(capability)
	if err != nil {
		t.Fatal(err)
	}
	// Liar 1: a provider record and nothing else.
	rawKey, err := node.LoadIdentity(filepath.Join(t.TempDir(), "raw.key"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := node.New(node.WithIdentity(rawKey), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	connect(t, raw, hub.node)
	// Liar 2: a real agent whose signed card lists only "tests".
	liar := startAgentWith(t, t.TempDir(), "liar", noMDNS, mesh.WithCaps("tests"))
	connect(t, liar.node, hub.node)
	for _, h := range []*node.Host{raw, liar.node} {
		waitFor(t, 30*time.Second, "liar's provide", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return h.DHT().Provide(ctx, key, true) == nil
		})
	}
	liars := map[string]string{raw.ID().String(): "bare provider record", liar.mesh.Self(): "card without the capability"}

	// The DHT holds records for every honest agent and both liars.
	providers := func() map[string]bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got := map[string]bool{}
		for ai := range hub.node.DHT().FindProvidersAsync(ctx, key, 100) {
			got[ai.ID.String()] = true
		}
		return got
	}
	waitFor(t, 60*time.Second, "provider records of every go-review agent and both liars", func() bool {
		got := providers()
		for id := range want {
			if !got[id] {
				return false
			}
		}
		for id := range liars {
			if !got[id] {
				return false
			}
		}
		return true
	})

	find := func(from *agent) map[string]mesh.Card {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cards, err := from.mesh.Find(ctx, capability)
		if err != nil {
			t.Fatalf("find: %v", err)
		}
		got := map[string]mesh.Card{}
		for _, c := range cards {
			if why, ok := liars[c.ID]; ok {
				t.Fatalf("find returned a liar (%s)", why)
			}
			if !slices.Contains(c.Caps, capability) {
				t.Fatalf("find returned %s whose card lacks %s: %v", c.Name, capability, c.Caps)
			}
			got[c.ID] = c
		}
		return got
	}
	sameSet := func(got map[string]mesh.Card, want map[string]bool) bool {
		if len(got) != len(want) {
			return false
		}
		for id := range want {
			if _, ok := got[id]; !ok {
				return false
			}
		}
		return true
	}
	for _, from := range []*agent{hub, as[1], as[0]} { // no cap, no cap, the cap itself
		waitFor(t, 30*time.Second, "find to return exactly the go-review agents", func() bool { return sameSet(find(from), want) })
	}
	got := find(as[1])
	if c := got[as[0].mesh.Self()]; c.Name != "agent-00" || c.Desc != "test agent" || c.Status != mesh.StatusAvailable || len(c.Addrs) == 0 || c.Version == "" {
		t.Fatalf("card of agent-00 = %+v, want name, desc, status available, addrs and version", c)
	}

	// Kill a go-review agent without a goodbye: host first, so the mesh
	// cannot announce it is leaving.
	victim := as[3]
	vid := victim.mesh.Self()
	killed := time.Now()
	victim.node.Close()
	victim.mesh.Close()
	delete(want, vid)
	ttl := 3 * time.Second // startAgent's presence TTL
	waitFor(t, ttl+2*time.Second, "killed agent to leave presence within its TTL", func() bool {
		return !slices.ContainsFunc(as[1].mesh.Who(context.Background(), ""), func(p mesh.Peer) bool { return p.ID == vid })
	})
	t.Logf("killed agent left presence after %v (ttl %v)", time.Since(killed).Round(100*time.Millisecond), ttl)
	if got := find(as[1]); !sameSet(got, want) {
		t.Fatalf("after the kill find returned %d agents, want %d (the killed one must not come from a cache)", len(got), len(want))
	}
}
