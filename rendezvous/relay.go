package rendezvous

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/confabhq/confab/mesh"
)

// DefaultMemberWindow is how long a peer stays a relay member after it last
// proved that it speaks confab.
const DefaultMemberWindow = 10 * time.Minute

// presenceRefresh bounds how often a relay request from an unknown peer
// makes the ACL read the archive's presence table.
const presenceRefresh = time.Second

// members is the relay service's ACL (relayv2.ACLFilter): the relay serves
// mesh members only. A peer is a member once it has proven it speaks
// confab, and for MemberWindow after it last did so:
//
//   - it sent a /confab/follow/1 request (any, even one the rendezvous
//     refused in part), or
//   - a signed presence beacon of it reached the archive's mesh (its key
//     signed a beacon within the mesh's time window; mesh.Who lists it).
//
// A reservation from anyone else is refused (PERMISSION_DENIED); the
// agent's relay client retries after node.DefaultRelayBackoff, by which time
// its first beacon has arrived. A circuit is opened only for a member
// source; its destination holds a reservation, so it was a member when it
// reserved.
type members struct {
	window time.Duration
	now    func() time.Time

	mu     sync.Mutex // guards m, seen and polled; a leaf lock (mesh.Who takes only mesh locks)
	m      *mesh.Mesh // nil until attach: the host (and its relay) starts before the mesh
	seen   map[peer.ID]time.Time
	polled time.Time // last read of the presence table

	reserveOK, reserveRefused, connectOK, connectRefused atomic.Uint64
}

var _ relayv2.ACLFilter = (*members)(nil)

func newMembers(window time.Duration) *members {
	return &members{window: window, now: time.Now, seen: make(map[peer.ID]time.Time)}
}

// attach gives the ACL the archive mesh whose presence table it reads.
func (ms *members) attach(m *mesh.Mesh) {
	ms.mu.Lock()
	ms.m = m
	ms.mu.Unlock()
}

// spoke records that p proved it speaks confab now.
func (ms *members) spoke(p peer.ID) {
	ms.mu.Lock()
	ms.seen[p] = ms.now()
	ms.mu.Unlock()
}

// member reports whether p proved it speaks confab within the window.
func (ms *members) member(p peer.ID) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	now := ms.now()
	if t, ok := ms.seen[p]; ok && now.Sub(t) <= ms.window {
		return true
	}
	if ms.m == nil || now.Sub(ms.polled) < presenceRefresh {
		return false
	}
	ms.polled = now
	for _, pe := range ms.m.Who(context.Background(), "") {
		if id, err := peer.Decode(pe.ID); err == nil && pe.LastSeen.After(ms.seen[id]) {
			ms.seen[id] = pe.LastSeen
		}
	}
	for id, t := range ms.seen {
		if now.Sub(t) > ms.window {
			delete(ms.seen, id)
		}
	}
	t, ok := ms.seen[p]
	return ok && now.Sub(t) <= ms.window
}

// AllowReserve admits members only.
func (ms *members) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	if ms.member(p) {
		ms.reserveOK.Add(1)
		return true
	}
	ms.reserveRefused.Add(1)
	return false
}

// AllowConnect admits circuits from members only.
func (ms *members) AllowConnect(src peer.ID, _ ma.Multiaddr, _ peer.ID) bool {
	if ms.member(src) {
		ms.connectOK.Add(1)
		return true
	}
	ms.connectRefused.Add(1)
	return false
}

// RelayStats are the relay ACL's decisions since New.
type RelayStats struct {
	ReserveAllowed, ReserveRefused uint64 // reservation requests (a refusal by the relay's own limits after an allow is not counted)
	ConnectAllowed, ConnectRefused uint64 // circuit requests, by source membership
	Members                        int    // peers known as members now
}

func (ms *members) stats() RelayStats {
	ms.mu.Lock()
	n := 0
	now := ms.now()
	for _, t := range ms.seen {
		if now.Sub(t) <= ms.window {
			n++
		}
	}
	ms.mu.Unlock()
	return RelayStats{ReserveAllowed: ms.reserveOK.Load(), ReserveRefused: ms.reserveRefused.Load(),
		ConnectAllowed: ms.connectOK.Load(), ConnectRefused: ms.connectRefused.Load(), Members: n}
}
