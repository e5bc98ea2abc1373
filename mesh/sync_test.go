package mesh

import (
	"encoding/json"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// FuzzDecodeSyncRequest: the catch-up request is read from any peer. It
// must never panic, and what it accepts is bounded.
func FuzzDecodeSyncRequest(f *testing.F) {
	k := newKey(f)
	id, _ := peer.IDFromPrivateKey(k)
	real, _ := json.Marshal(SyncRequest{Type: "sync", V: 1, Channel: "#general", Have: map[string]uint64{id.String(): 17}, Limit: 1000})
	f.Add(real)
	f.Add(real[:len(real)/2])
	f.Add([]byte(`{"type":"sync","v":1,"channel":"#a","have":{},"limit":-1}`))
	f.Add([]byte(`{"type":"sync","v":1,"channel":"general","have":{"x":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeSyncRequest(b)
		if err != nil {
			return
		}
		if !ValidChannel(r.Channel) || len(r.Have) > maxSyncAuthors || r.Limit <= 0 || r.Limit > maxSyncLimit {
			t.Fatalf("accepted an out-of-bounds request: %+v", r)
		}
		for a := range r.Have {
			if _, err := AuthorKey(a); err != nil {
				t.Fatalf("accepted author %q: %v", a, err)
			}
		}
	})
}
