package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"
)

// allowList is an ACL that admits the peers in it.
type allowList struct {
	mu      sync.Mutex
	allowed map[peer.ID]bool
}

func (a *allowList) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.allowed[p]
}

func (a *allowList) AllowConnect(src peer.ID, _ ma.Multiaddr, _ peer.ID) bool {
	return a.AllowReserve(src, nil)
}

// TestRelayServiceACL: the options after the resources reach the relay
// service; with an ACL only admitted peers get a reservation.
func TestRelayServiceACL(t *testing.T) {
	opts := leakOpts()
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) }) // after the hosts' cleanups
	acl := &allowList{allowed: map[peer.ID]bool{}}
	relay := newHost(t, WithRelayService(relayv2.DefaultResources(), relayv2.WithACL(acl)))
	member := newHost(t, WithRelayClient(false))
	stranger := newHost(t, WithRelayClient(false))
	acl.mu.Lock()
	acl.allowed[member.ID()] = true
	acl.mu.Unlock()
	ai := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Host().Addrs()}
	tests := []struct {
		name string
		h    *Host
		want pbv2.Status
	}{
		{"member", member, pbv2.Status_OK},
		{"stranger", stranger, pbv2.Status_PERMISSION_DENIED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tt.h.Host().Connect(ctx, ai); err != nil {
				t.Fatal(err)
			}
			_, err := client.Reserve(ctx, tt.h.Host(), ai)
			got := pbv2.Status_OK
			var re client.ReservationError
			if errors.As(err, &re) {
				got = re.Status
			} else if err != nil {
				t.Fatalf("reserve: %v", err)
			}
			if got != tt.want {
				t.Errorf("reservation status %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}
