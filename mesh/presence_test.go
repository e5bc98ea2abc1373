package mesh_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/confabhq/confab/mesh"
)

// TestPresenceTTLFromBeacon: a receiver keeps a sender listed for the ttl
// the sender's beacon announces (here four minutes, from a one-minute tick),
// not for its own shorter one (three seconds); a fresh node is listed at
// once by the peer it meets; and a clean stop still removes it at once.
func TestPresenceTTLFromBeacon(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	slow := startAgentWith(t, filepath.Join(root, "slow"), "slow", noMDNS, mesh.WithPresence(time.Minute, 4*time.Minute))
	quick := startAgentWith(t, filepath.Join(root, "quick"), "quick", noMDNS) // 500 ms tick, 3 s ttl
	joinAll(t, "#p", slow, quick)
	connect(t, quick.node, slow.node)

	find := func() (mesh.Peer, bool) {
		for _, p := range quick.mesh.Who(ctx, "#p") {
			if p.ID == slow.mesh.Self() {
				return p, true
			}
		}
		return mesh.Peer{}, false
	}
	waitFor(t, 20*time.Second, "quick to list slow", func() bool { _, ok := find(); return ok })
	p, _ := find()
	if p.Name != "slow" || !slices.Equal(p.Channels, []string{"#p"}) || p.Status != mesh.StatusAvailable {
		t.Fatalf("quick lists %+v, want slow, available, in #p", p)
	}

	// slow's greetings are over within seconds and its next periodic beacon
	// is 45-75 s away: it must stay listed past quick's own 3 s ttl, on the
	// 4 min its beacon announced.
	waitFor(t, 20*time.Second, "slow's last beacon to be older than quick's own ttl", func() bool {
		p, ok := find()
		if !ok {
			t.Fatal("slow dropped after quick's own ttl, want it kept for the ttl of its beacon")
		}
		return time.Since(p.LastSeen) > 3500*time.Millisecond
	})

	// The node stays up (the cleanup closes it): gossipsub has no flush, so
	// a host closed right after Mesh.Close may drop the queued goodbye.
	slow.mesh.Close()
	waitFor(t, 10*time.Second, "a clean stop to remove slow at once", func() bool { _, ok := find(); return !ok })
}
