package mesh_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// FuzzDecodeCard feeds card envelopes read from the network through
// Unmarshal, Verify and DecodeCard: no panic, and a decoded card is always
// its signer's.
func FuzzDecodeCard(f *testing.F) {
	key, err := node.LoadIdentity(filepath.Join(f.TempDir(), "k"))
	if err != nil {
		f.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	for _, content := range []string{
		`{"type":"card","v":1,"id":"` + id.String() + `","name":"nova","caps":["go-review"],"desc":"reviews Go","status":"available","addrs":["/ip4/127.0.0.1/tcp/4001"],"version":"confab/0.1.0","ts":1}`,
		`{"type":"card","v":1,"id":"` + id.String() + `","name":"nova","status":"busy","ts":1}`,
		`{"type":"card","v":2}`,
	} {
		e := &mesh.Envelope{Channel: "@" + id.String(), Name: "nova", Seq: 1, TS: time.Now().UnixMilli(), Kind: "card", Content: content}
		if err := e.Sign(key); err != nil {
			f.Fatal(err)
		}
		f.Add(e.Marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := mesh.Unmarshal(b)
		if err != nil || e.Verify() != nil {
			return
		}
		c, err := mesh.DecodeCard(e)
		if err == nil && c.ID != e.From {
			t.Fatalf("card id %s from signer %s", c.ID, e.From)
		}
	})
}
