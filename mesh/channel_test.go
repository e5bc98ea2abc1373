package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// asyncResults records what SendAsync's done callbacks reported, in call
// order of the callbacks.
type asyncResults struct {
	mu   sync.Mutex
	recs []mesh.Record
	errs []error
}

func (r *asyncResults) done(rec mesh.Record, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	r.errs = append(r.errs, err)
}

func (r *asyncResults) len() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.recs) }

// SendAsync keeps many messages in flight from one caller: each is
// acknowledged once, durable (in history with its cursor) when acknowledged,
// with seqs in call order, and a peer receives them exactly once in order.
func TestSendAsyncOrderedDurable(t *testing.T) {
	const ch, n = "#async", 600
	a := startAgent(t, t.TempDir(), "atlas")
	b := startAgent(t, t.TempDir(), "nova")
	joinAll(t, ch, a, b)
	waitPresence(t, ch, 2, a, b)
	sb := b.mesh.Subscribe([]string{ch}, 0)
	t.Cleanup(sb.Close)
	cb := collect(sb)

	var res asyncResults
	for i := range n {
		if err := a.mesh.SendAsync(context.Background(), ch, "msg", fmt.Sprintf("async %d", i), "", res.done); err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
	}
	waitFor(t, 60*time.Second, "every done callback", func() bool { return res.len() >= n })
	res.mu.Lock()
	for i, rec := range res.recs {
		if res.errs[i] != nil {
			t.Fatalf("done %d: %v", i, res.errs[i])
		}
		if got, want := rec.Env.Seq, uint64(i+1); got != want {
			t.Fatalf("done %d: seq %d, want %d (call order)", i, got, want)
		}
		if got, want := rec.Env.Content, fmt.Sprintf("async %d", i); got != want {
			t.Fatalf("done %d: content %q, want %q", i, got, want)
		}
		if rec.Cursor == "" {
			t.Fatalf("done %d: empty cursor", i)
		}
	}
	last := res.recs[n-1]
	res.mu.Unlock()
	var stored []mesh.Record
	for cur := ""; ; {
		page, err := a.mesh.After(context.Background(), ch, cur, 250)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		stored = append(stored, page...)
		cur = page[len(page)-1].Cursor
	}
	checkExactlyOnceInOrder(t, "sender's history", stored, n)
	if got := stored[n-1].Cursor; got != last.Cursor {
		t.Fatalf("last stored cursor %s, last acknowledged %s", got, last.Cursor)
	}
	waitFor(t, 60*time.Second, "every message at the peer", func() bool { return cb.len() >= n })
	checkExactlyOnceInOrder(t, "peer", cb.snapshot(), n)
}

// Bad input is refused before anything is queued; done is not called.
func TestSendAsyncRefusals(t *testing.T) {
	a := startAgent(t, t.TempDir(), "atlas")
	joinAll(t, "#in", a)
	called := false
	done := func(mesh.Record, error) { called = true }
	tests := []struct {
		name, channel, content string
		want                   error
	}{
		{"not joined", "#out", "hi", mesh.ErrNotJoined},
		{"bad channel", "no-hash", "hi", mesh.ErrBadChannel},
		{"invalid utf-8", "#in", "\xff", nil},
	}
	for _, tt := range tests {
		err := a.mesh.SendAsync(context.Background(), tt.channel, "msg", tt.content, "", done)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: SendAsync = %v, want %v", tt.name, err, tt.want)
		}
	}
	if called {
		t.Fatal("done called for a refused message")
	}
}

// Closing the mesh with sends in flight answers every queued one exactly
// once (stored, or ErrClosed), refuses later ones, and leaves no goroutine.
func TestSendAsyncClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const ch = "#closing"
	a := startAgent(t, t.TempDir(), "atlas")
	joinAll(t, ch, a)
	var (
		mu              sync.Mutex
		queued, answers int
		stored, closed  int
	)
	done := func(rec mesh.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		answers++
		switch {
		case err == nil && rec.Cursor != "":
			stored++
		case errors.Is(err, mesh.ErrClosed):
			closed++
		default:
			t.Errorf("done(%+v, %v): want a stored record or ErrClosed", rec, err)
		}
	}
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; ; i++ {
			err := a.mesh.SendAsync(context.Background(), ch, "msg", fmt.Sprintf("m%d", i), "", done)
			if err != nil {
				if !errors.Is(err, mesh.ErrClosed) {
					t.Errorf("SendAsync after close = %v, want ErrClosed", err)
				}
				return
			}
			mu.Lock()
			queued++
			mu.Unlock()
			select {
			case <-stop:
			default:
				if i == 1000 {
					close(stop)
				}
			}
		}
	}()
	<-stop
	waitFor(t, 30*time.Second, "some sends stored", func() bool { mu.Lock(); defer mu.Unlock(); return stored > 0 })
	a.stop()
	<-sent
	mu.Lock()
	defer mu.Unlock()
	if answers != queued {
		t.Fatalf("%d queued, %d answered (stored %d, closed %d)", queued, answers, stored, closed)
	}
	t.Logf("queued %d: stored %d, ErrClosed %d", queued, stored, closed)
}

// rawAuthor signs envelopes for a channel as a third party and publishes
// them straight onto the channel's gossipsub topic from a bare node, in
// whatever order a test wants.
type rawAuthor struct {
	key   crypto.PrivKey
	h     *node.Host
	topic *pubsub.Topic
}

func newRawAuthor(t *testing.T, ch string, peers ...*agent) *rawAuthor {
	t.Helper()
	key, err := node.LoadIdentity(filepath.Join(t.TempDir(), "author.key"))
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := node.LoadIdentity(filepath.Join(t.TempDir(), "host.key"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := node.New(node.WithIdentity(hostKey), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	topic, err := h.PubSub().Join("/confab/chan/1/" + ch)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		ai := peer.AddrInfo{ID: p.node.Host().ID(), Addrs: p.node.Host().Addrs()}
		if err := h.Host().Connect(context.Background(), ai); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the raw publisher in the topic mesh", func() bool {
		return len(topic.ListPeers()) >= len(peers)
	})
	return &rawAuthor{key: key, h: h, topic: topic}
}

func (r *rawAuthor) envelope(t *testing.T, ch string, seq uint64) *mesh.Envelope {
	t.Helper()
	e := &mesh.Envelope{Channel: ch, Name: "raw", Seq: seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: fmt.Sprintf("seq %d", seq)}
	if err := e.Sign(r.key); err != nil {
		t.Fatal(err)
	}
	return e
}

func (r *rawAuthor) publish(t *testing.T, e *mesh.Envelope) {
	t.Helper()
	if err := r.topic.Publish(context.Background(), e.Marshal()); err != nil {
		t.Fatal(err)
	}
}

func seqsOf(recs []mesh.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Env.Seq
	}
	return out
}

// Envelopes that overtake their predecessors are held back and delivered in
// order once the gap closes; a gap nobody fills is skipped after the gap
// timeout.
func TestHoldBackAndGapTimeout(t *testing.T) {
	const ch = "#gaps"
	a := startAgent(t, t.TempDir(), "atlas", mesh.WithGapTimeout(time.Second))
	joinAll(t, ch, a)
	s := a.mesh.Subscribe([]string{ch}, 0)
	t.Cleanup(s.Close)
	col := collect(s)
	x := newRawAuthor(t, ch, a)

	envs := []*mesh.Envelope{x.envelope(t, ch, 1), x.envelope(t, ch, 2), x.envelope(t, ch, 3)}
	x.publish(t, envs[2])
	x.publish(t, envs[1])
	waitFor(t, 10*time.Second, "two envelopes held back", func() bool { return a.mesh.Stats().HeldBack >= 2 })
	if n := col.len(); n != 0 {
		t.Fatalf("%d delivered before the gap closed, want 0", n)
	}
	x.publish(t, envs[0])
	waitFor(t, 10*time.Second, "three in order", func() bool { return col.len() >= 3 })
	if got, want := seqsOf(col.snapshot()), []uint64{1, 2, 3}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered seqs %v, want %v", got, want)
	}

	// seq 4 never comes: 5 waits for the gap timeout, then follows.
	x.publish(t, x.envelope(t, ch, 5))
	waitFor(t, 30*time.Second, "seq 5 after the gap timeout", func() bool { return col.len() >= 4 })
	if got, want := seqsOf(col.snapshot()), []uint64{1, 2, 3, 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered seqs %v, want %v", got, want)
	}
	if got := a.mesh.Stats().GapsSkipped; got != 1 {
		t.Fatalf("GapsSkipped = %d, want 1", got)
	}
}

// A gap that gossip does not fill is filled by catch-up from a peer that
// has the missing envelope, well before the gap timeout: nothing is skipped
// and the held envelope follows its predecessor. The periodic catch-up is
// off at atlas (an hour), so only the open gap can ask for it: the loop's
// gap tick, which runs only while a gap is open, must be armed by the hold.
func TestGapFilledByCatchUp(t *testing.T) {
	const ch = "#fill"
	a := startAgent(t, t.TempDir(), "atlas", mesh.WithGapTimeout(time.Minute), mesh.WithSyncInterval(time.Hour))
	c := startAgent(t, t.TempDir(), "nova")
	joinAll(t, ch, a, c)
	waitPresence(t, ch, 2, a, c)
	s := a.mesh.Subscribe([]string{ch}, 0)
	t.Cleanup(s.Close)
	col := collect(s)
	x := newRawAuthor(t, ch, a)

	// c has seq 1 in its history (written to its store directly, after the
	// join-time catch-up); a never sees it live.
	first := x.envelope(t, ch, 1)
	if _, err := c.db.Append(context.Background(), []*mesh.Envelope{first}); err != nil {
		t.Fatal(err)
	}
	x.publish(t, x.envelope(t, ch, 2))
	waitFor(t, 30*time.Second, "seq 1 and 2 at atlas", func() bool { return col.len() >= 2 })
	if got, want := seqsOf(col.snapshot()), []uint64{1, 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered seqs %v, want %v", got, want)
	}
	if got := a.mesh.Stats().GapsSkipped; got != 0 {
		t.Fatalf("GapsSkipped = %d, want 0", got)
	}
}
