package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	redialTimeout    = 15 * time.Second // per dial of a bootstrap peer
	redialBackoffMin = 500 * time.Millisecond
	redialBackoffMax = time.Minute
	redialCheck      = 30 * time.Second // safety-net connectedness check while connected
)

// redialer keeps one bootstrap peer connected: it dials at start and again,
// with exponential backoff, whenever the host is not connected to the peer.
// One redialer goroutine runs per bootstrap peer, owned by Host.wg.
type redialer struct {
	n  *Host
	ai peer.AddrInfo
}

func newRedialer(n *Host, ai peer.AddrInfo) *redialer { return &redialer{n: n, ai: ai} }

func (r *redialer) run() {
	ctx := r.n.ctx
	h := r.n.h
	// A subscription per peer keeps each loop independent. The event bus
	// blocks emitters (the swarm) on a full subscription, so a separate
	// goroutine drains it at once and only leaves a one-slot "disconnected"
	// mark for the loop, which may be busy dialling.
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		r.n.log.Error("bootstrap: subscribe to connectedness events", "err", err)
		return
	}
	defer sub.Close()
	disconnected := make(chan struct{}, 1)
	drained := make(chan struct{})
	go func() { // forwards our peer's disconnections; ends when sub closes
		defer close(drained)
		for e := range sub.Out() {
			ev := e.(event.EvtPeerConnectednessChanged)
			if ev.Peer == r.ai.ID && ev.Connectedness != network.Connected {
				select {
				case disconnected <- struct{}{}:
				default:
				}
			}
		}
	}()
	defer func() { sub.Close(); <-drained }()

	backoff := redialBackoffMin
	for {
		if h.Network().Connectedness(r.ai.ID) != network.Connected {
			dctx, cancel := context.WithTimeout(ctx, redialTimeout)
			err := h.Connect(dctx, r.ai)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.n.log.Debug("bootstrap: dial failed", "peer", r.ai.ID, "retry_in", backoff, "err", err)
				if !sleep(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, redialBackoffMax)
				continue
			}
			backoff = redialBackoffMin
			r.n.log.Info("bootstrap: connected", "peer", r.ai.ID)
			// Bootstrap only refreshes the routing table; it dials nobody
			// itself, which is why we connect first.
			if err := r.n.dht.Bootstrap(ctx); err != nil {
				r.n.log.Debug("bootstrap: dht bootstrap", "err", err)
			}
		}
		t := time.NewTimer(redialCheck)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-disconnected:
			r.n.log.Info("bootstrap: disconnected", "peer", r.ai.ID)
		case <-t.C:
		}
		t.Stop()
	}
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
