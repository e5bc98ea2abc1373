package faults

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// rawPeer is a libp2p node that speaks gossipsub on a channel's topic
// directly, without mesh and without a validator: it publishes whatever
// bytes a test gives it, as a hostile or buggy peer would.
type rawPeer struct {
	node  *node.Host
	topic *pubsub.Topic
	sub   *pubsub.Subscription
}

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, err := node.LoadIdentity(filepath.Join(t.TempDir(), "k", "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newRaw starts a raw peer with a fresh host identity, joined to channel's
// topic and connected to every peer in to, and waits until the topic mesh
// has them.
func newRaw(t testing.TB, channel string, to ...interface{ Host() *node.Host }) *rawPeer {
	t.Helper()
	h, err := node.New(node.WithIdentity(newKey(t)), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	r := &rawPeer{node: h}
	t.Cleanup(r.close)
	if r.topic, err = h.PubSub().Join("/confab/chan/1/" + channel); err != nil {
		t.Fatal(err)
	}
	if r.sub, err = r.topic.Subscribe(); err != nil {
		t.Fatal(err)
	}
	for _, p := range to {
		connect(t, r, p)
	}
	waitFor(t, 20*time.Second, "raw peer in the topic", func() bool { return len(r.topic.ListPeers()) >= len(to) })
	return r
}

func (r *rawPeer) Host() *node.Host { return r.node }

func (r *rawPeer) close() {
	if r.sub != nil {
		r.sub.Cancel()
	}
	if r.topic != nil {
		r.topic.Close()
	}
	r.node.Close()
}

func (r *rawPeer) publish(t testing.TB, data []byte) {
	t.Helper()
	if err := r.topic.Publish(context.Background(), data, pubsub.WithLocalPublication(false)); err != nil {
		t.Fatal(err)
	}
}

// signed returns an envelope of key's author with the given fields.
func signed(t testing.TB, key crypto.PrivKey, channel string, seq uint64, ts time.Time, content string) *mesh.Envelope {
	t.Helper()
	e := &mesh.Envelope{Channel: channel, Name: "raw", Seq: seq, TS: ts.UnixMilli(), Kind: "msg", Content: content}
	if err := e.Sign(key); err != nil {
		t.Fatal(err)
	}
	return e
}

// drain collects everything s delivers until it is closed; call get after
// closing s.
func drain(s *mesh.Subscription) func() []mesh.Record {
	out := make(chan []mesh.Record, 1)
	go func() {
		var all []mesh.Record
		for r := range s.C() {
			all = append(all, r)
		}
		out <- all
	}()
	return func() []mesh.Record {
		s.Close()
		return <-out
	}
}
