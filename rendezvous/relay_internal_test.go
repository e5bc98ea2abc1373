package rendezvous

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestMemberWindow: a follow request makes a peer a member for the window,
// then it must prove itself again.
func TestMemberWindow(t *testing.T) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := peer.IDFromPrivateKey(k)
	now := time.Unix(1_700_000_000, 0)
	ms := newMembers(10 * time.Minute)
	ms.now = func() time.Time { return now }
	if ms.AllowReserve(p, nil) {
		t.Fatal("unknown peer admitted")
	}
	ms.spoke(p)
	tests := []struct {
		after time.Duration
		want  bool
	}{
		{0, true},
		{10 * time.Minute, true},
		{10*time.Minute + time.Second, false},
	}
	start := now
	for _, tt := range tests {
		now = start.Add(tt.after)
		if got := ms.AllowReserve(p, nil); got != tt.want {
			t.Errorf("%v after the follow request: AllowReserve %v, want %v", tt.after, got, tt.want)
		}
		if got := ms.AllowConnect(p, nil, p); got != tt.want {
			t.Errorf("%v after the follow request: AllowConnect %v, want %v", tt.after, got, tt.want)
		}
	}
	if got, want := ms.stats(), (RelayStats{ReserveAllowed: 2, ReserveRefused: 2, ConnectAllowed: 2, ConnectRefused: 1}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}
