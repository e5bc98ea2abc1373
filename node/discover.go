package node

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// mDNS dialling. The mdns package calls HandlePeerFound in a fresh goroutine
// for every record it sees, repeatedly, and does not wait for those calls in
// its Close. So HandlePeerFound only does bookkeeping under a mutex and a
// non-blocking hand-off to a fixed pool of dial workers; it never blocks and
// is harmless after Close.
const (
	mdnsWorkers     = 4                // concurrent mDNS dials
	mdnsQueue       = 64               // found peers waiting for a worker; more are dropped (mDNS repeats)
	mdnsDialTimeout = 10 * time.Second // per dial
	mdnsBackoffMin  = 2 * time.Second  // first retry delay after a failed dial
	mdnsBackoffMax  = 5 * time.Minute  // retry delay cap
	mdnsMaxTracked  = 4096             // per-peer states kept before stale ones are pruned
)

type discoverer struct {
	n     *Host
	queue chan peer.AddrInfo

	mu     sync.Mutex
	closed bool
	peers  map[peer.ID]*dialState // guarded by mu
}

type dialState struct {
	inflight bool          // queued or being dialled
	next     time.Time     // no attempt before this
	backoff  time.Duration // delay after the next failure
}

func newDiscoverer(n *Host) *discoverer {
	return &discoverer{
		n:     n,
		queue: make(chan peer.AddrInfo, mdnsQueue),
		peers: make(map[peer.ID]*dialState),
	}
}

// HandlePeerFound implements mdns.Notifee.
func (d *discoverer) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == d.n.h.ID() || len(ai.Addrs) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.n.h.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	now := time.Now()
	st := d.peers[ai.ID]
	if st == nil {
		d.prune(now)
		st = &dialState{backoff: mdnsBackoffMin}
		d.peers[ai.ID] = st
	}
	if st.inflight || now.Before(st.next) {
		return
	}
	select {
	case d.queue <- ai:
		st.inflight = true
	default: // workers busy; the next mDNS response retries
	}
}

// prune drops idle states whose backoff has expired, when the map is large.
// Called with mu held.
func (d *discoverer) prune(now time.Time) {
	if len(d.peers) < mdnsMaxTracked {
		return
	}
	for id, st := range d.peers {
		if !st.inflight && now.After(st.next) {
			delete(d.peers, id)
		}
	}
}

func (d *discoverer) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
}

// work dials queued peers until the node's context ends.
func (d *discoverer) work() {
	ctx := d.n.ctx
	for {
		select {
		case <-ctx.Done():
			return
		case ai := <-d.queue:
			d.dial(ctx, ai)
		}
	}
}

func (d *discoverer) dial(ctx context.Context, ai peer.AddrInfo) {
	dctx, cancel := context.WithTimeout(ctx, mdnsDialTimeout)
	err := d.n.h.Connect(dctx, ai)
	cancel()

	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.peers[ai.ID]
	if st == nil {
		return
	}
	st.inflight = false
	if err != nil {
		st.next = time.Now().Add(st.backoff)
		d.n.log.Debug("mdns: dial failed", "peer", ai.ID, "retry_in", st.backoff, "err", err)
		st.backoff = min(2*st.backoff, mdnsBackoffMax)
		return
	}
	st.next = time.Time{}
	st.backoff = mdnsBackoffMin
	d.n.log.Debug("mdns: connected", "peer", ai.ID)
}
