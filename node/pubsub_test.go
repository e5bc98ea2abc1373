package node

import (
	"context"
	"slices"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"
)

// TestNewPubSubMocknet runs confab's gossipsub on two mocknet hosts (what the
// scale benchmark does) and checks that a message crosses on our protocol id
// with no author or seqno, and that extra options apply.
func TestNewPubSubMocknet(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts()...)
	mn := mocknet.New()
	defer mn.Close()
	for i := range 2 {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mn.AddPeer(k, multiaddr.StringCast("/ip4/10.0.0."+string(rune('1'+i))+"/tcp/4001")); err != nil {
			t.Fatal(err)
		}
	}
	hosts := mn.Hosts()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var tracers [2]*countTracer
	var topics [2]*pubsub.Topic
	var subs [2]*pubsub.Subscription
	for i, h := range hosts {
		tracers[i] = &countTracer{}
		ps, err := NewPubSub(ctx, h, pubsub.WithRawTracer(tracers[i]))
		if err != nil {
			t.Fatalf("NewPubSub: %v", err)
		}
		if topics[i], err = ps.Join("t"); err != nil {
			t.Fatal(err)
		}
		if subs[i], err = topics[i].Subscribe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	// Poll until the subscription has crossed, then publish once.
	deadline := time.Now().Add(10 * time.Second)
	for len(topics[0].ListPeers()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("peer never joined the topic")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := topics[0].Publish(ctx, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	m, err := subs[1].Next(rctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if got := string(m.Data); got != "hello" {
		t.Errorf("data = %q, want hello", got)
	}
	if m.From != nil || m.Seqno != nil || m.Signature != nil {
		t.Errorf("message has from %x seqno %x sig %x; want none (StrictNoSign + WithNoAuthor)", m.From, m.Seqno, m.Signature)
	}
	if got, want := m.ID, MessageID(m.Message); got != want {
		t.Errorf("id = %x, want content id %x", got, want)
	}
	protos, err := hosts[1].Peerstore().GetProtocols(hosts[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(protos, GossipSubV12) || slices.Contains(protos, pubsub.GossipSubID_v12) {
		t.Errorf("peer protocols %v: want %s and not the public %s", protos, GossipSubV12, pubsub.GossipSubID_v12)
	}
	if tracers[1].recv.Load() == 0 {
		t.Error("extra option (raw tracer) saw no RPC")
	}
	for _, s := range subs {
		s.Cancel()
	}
	cancel()
}

func TestPubSubOptionsFresh(t *testing.T) {
	a := PubSubOptions()
	b := PubSubOptions()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("PubSubOptions lengths %d, %d", len(a), len(b))
	}
	_ = append(a[:len(a):len(a)], pubsub.WithFloodPublish(false))
	if &a[0] == &b[0] {
		t.Error("PubSubOptions returns a shared slice")
	}
}
