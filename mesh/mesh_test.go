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
	"go.uber.org/goleak"

	"github.com/confabhq/confab/internal/netnstest"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/store"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// agent is one real node with its on-disk store and mesh, in dir.
type agent struct {
	dir  string
	node *node.Host
	db   *store.DB
	mesh *mesh.Mesh
}

func startAgent(t *testing.T, dir, name string, opts ...mesh.Option) *agent {
	t.Helper()
	return startAgentWith(t, dir, name, []node.Option{node.WithMDNS(true)}, opts...)
}

// startAgentWith is startAgent with extra node options (applied after the
// identity and the loopback listen address).
func startAgentWith(t *testing.T, dir, name string, nodeOpts []node.Option, opts ...mesh.Option) *agent {
	t.Helper()
	key, err := node.LoadIdentity(filepath.Join(dir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := node.New(append([]node.Option{node.WithIdentity(key), node.WithListen("/ip4/127.0.0.1/tcp/0")}, nodeOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := store.DefaultConfig()
	cfg.Dir = filepath.Join(dir, "store")
	db, err := store.New(cfg)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	opts = append([]mesh.Option{mesh.WithName(name), mesh.WithStateFile(filepath.Join(dir, "state.json")),
		mesh.WithSyncInterval(2 * time.Second), mesh.WithPresence(500*time.Millisecond, 3*time.Second)}, opts...)
	m, err := mesh.New(h, db, opts...)
	if err != nil {
		db.Close()
		h.Close()
		t.Fatal(err)
	}
	a := &agent{dir: dir, node: h, db: db, mesh: m}
	t.Cleanup(a.stop)
	return a
}

func (a *agent) stop() {
	a.mesh.Close()
	a.node.Close()
	a.db.Close()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collector drains a subscription and records what arrived.
type collector struct {
	mu   sync.Mutex
	recs []mesh.Record
	done chan struct{}
}

func collect(s *mesh.Subscription) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for r := range s.C() {
			c.mu.Lock()
			c.recs = append(c.recs, r)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) snapshot() []mesh.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]mesh.Record(nil), c.recs...)
}

func (c *collector) len() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.recs) }

// checkExactlyOnceInOrder checks every id arrived once and each author's
// seqs are strictly increasing.
func checkExactlyOnceInOrder(t *testing.T, who string, recs []mesh.Record, want int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]uint64{}
	for _, r := range recs {
		if seen[r.Env.ID] {
			t.Fatalf("%s: envelope %s delivered twice", who, r.Env.ID)
		}
		seen[r.Env.ID] = true
		if r.Env.Seq <= last[r.Env.From] {
			t.Fatalf("%s: author %s seq %d after %d: order broken", who, r.Env.From, r.Env.Seq, last[r.Env.From])
		}
		last[r.Env.From] = r.Env.Seq
	}
	if len(seen) != want {
		t.Fatalf("%s: got %d distinct envelopes, want %d", who, len(seen), want)
	}
}

func joinAll(t *testing.T, ch string, as ...*agent) {
	t.Helper()
	for _, a := range as {
		if err := a.mesh.Join(context.Background(), ch); err != nil {
			t.Fatal(err)
		}
	}
}

// waitPresence waits until every agent sees the others in channel ch's presence.
func waitPresence(t *testing.T, ch string, n int, as ...*agent) {
	t.Helper()
	for _, a := range as {
		waitFor(t, 90*time.Second, "presence of all agents", func() bool { return len(a.mesh.Who(context.Background(), ch)) >= n })
	}
}

func TestThreeNodesMDNSDeliverExactlyOnceInOrder(t *testing.T) {
	const ch, perAuthor = "#general", 334
	as := []*agent{
		startAgent(t, t.TempDir(), "atlas"),
		startAgent(t, t.TempDir(), "nova"),
		startAgent(t, t.TempDir(), "orion"),
	}
	joinAll(t, ch, as...)
	waitPresence(t, ch, 3, as...)
	cols := make([]*collector, len(as))
	for i, a := range as {
		s := a.mesh.Subscribe([]string{ch}, 0)
		t.Cleanup(s.Close)
		cols[i] = collect(s)
	}
	total := 0
	var wg sync.WaitGroup
	for i, a := range as {
		n := perAuthor
		if i == 2 {
			n = 1000 - 2*perAuthor
		}
		total += n
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				if _, err := a.mesh.Send(context.Background(), ch, "msg", fmt.Sprintf("%d from %d", j, i), ""); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, c := range cols {
		waitFor(t, 60*time.Second, fmt.Sprintf("agent %d to receive %d", i, total), func() bool { return c.len() >= total })
	}
	// Give stray duplicates a moment to show up before judging.
	time.Sleep(300 * time.Millisecond)
	for i, c := range cols {
		checkExactlyOnceInOrder(t, as[i].mesh.Info().Name, c.snapshot(), total)
	}
}

func TestRestartedNodeCatchesUp(t *testing.T) {
	const ch = "#ops"
	a := startAgent(t, t.TempDir(), "atlas")
	bDir := t.TempDir()
	b := startAgent(t, bDir, "nova")
	joinAll(t, ch, a, b)
	waitPresence(t, ch, 2, a, b)
	if _, err := a.mesh.Send(context.Background(), ch, "msg", "before", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "first message at b", func() bool {
		r, _ := b.mesh.After(context.Background(), ch, "", 10)
		return len(r) == 1
	})
	b.stop()
	for i := range 200 {
		if _, err := a.mesh.Send(context.Background(), ch, "msg", fmt.Sprintf("while down %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	b = startAgent(t, bDir, "nova") // same home: identity, store and joined channels
	if got := b.mesh.Channels(); len(got) != 1 || got[0] != ch {
		t.Fatalf("restarted node channels = %v, want [%s]", got, ch)
	}
	waitFor(t, 30*time.Second, "201 messages after restart", func() bool {
		r, _ := b.mesh.After(context.Background(), ch, "", 1000)
		return len(r) >= 201
	})
	recs, err := b.mesh.After(context.Background(), ch, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnceInOrder(t, "restarted", recs, 201)
}

func TestInvalidEnvelopesRejected(t *testing.T) {
	const ch = "#sec"
	honest := startAgent(t, t.TempDir(), "honest")
	joinAll(t, ch, honest)
	// A raw node on the same network publishes on the channel's topic
	// directly, bypassing mesh.
	rawKey, err := node.LoadIdentity(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := node.New(node.WithIdentity(rawKey), node.WithListen("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	topic, err := raw.PubSub().Join("/confab/chan/1/" + ch)
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	waitFor(t, 90*time.Second, "raw node in topic mesh", func() bool { return len(topic.ListPeers()) > 0 })

	otherKey, _ := node.LoadIdentity(filepath.Join(t.TempDir(), "o"))
	mk := func(content string) *mesh.Envelope {
		e := &mesh.Envelope{Channel: ch, Name: "raw", Seq: 1, TS: time.Now().UnixMilli(), Kind: "msg", Content: content}
		if err := e.Sign(rawKey); err != nil {
			t.Fatal(err)
		}
		return e
	}
	altered := mk("original")
	altered.Content = "altered"
	forged := mk("forged")
	sig, _ := otherKey.Sign(forged.SigningBytes()) // valid signature, wrong key
	forged.Sig = sig
	good := mk("good")
	col := collect(honest.mesh.Subscribe([]string{ch}, 0))
	for _, e := range []*mesh.Envelope{altered, forged} {
		if err := topic.Publish(context.Background(), e.Marshal(), pubsub.WithLocalPublication(false)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "validator rejections", func() bool { return honest.mesh.Stats().RejectedInvalid >= 2 })
	if err := topic.Publish(context.Background(), good.Marshal()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the good envelope", func() bool { return col.len() >= 1 })
	for _, r := range col.snapshot() {
		if r.Env.Content != "good" {
			t.Fatalf("delivered %q, want only the good envelope", r.Env.Content)
		}
	}
	for _, e := range []*mesh.Envelope{altered, forged} {
		if got, err := honest.db.Get(context.Background(), e.ComputeID()); err == nil {
			t.Fatalf("stored a rejected envelope: %q", got.Content)
		}
	}
}

// Close of mesh, node and store leaves no goroutine behind.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	a := startAgent(t, dir, "atlas")
	joinAll(t, "#leak", a)
	s := a.mesh.Subscribe(nil, 0)
	if _, err := a.mesh.Send(context.Background(), "#leak", "msg", "bye", ""); err != nil {
		t.Fatal(err)
	}
	<-s.C()
	a.stop()
	if _, ok := <-s.C(); ok {
		t.Fatal("subscription still open after Close")
	}
	if err := s.Err(); !errors.Is(err, mesh.ErrClosed) {
		t.Fatalf("subscription Err() = %v, want ErrClosed", err)
	}
	a.stop() // Close is idempotent
}

// A thin client's publish: the next seq is stored, a retry of the same
// envelope is acknowledged again, a different envelope reusing the seq and
// one skipping ahead are refused.
func TestPublishSeqRules(t *testing.T) {
	const ch = "#thin"
	a := startAgent(t, t.TempDir(), "rendezvous")
	joinAll(t, ch, a)
	client, err := node.LoadIdentity(filepath.Join(t.TempDir(), "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(seq uint64, content string) *mesh.Envelope {
		e := &mesh.Envelope{Channel: ch, Name: "thin", Seq: seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: content}
		if err := e.Sign(client); err != nil {
			t.Fatal(err)
		}
		return e
	}
	first := mk(1, "one")
	rec, err := a.mesh.Publish(context.Background(), first)
	if err != nil || rec.Cursor == "" {
		t.Fatalf("Publish(seq 1) = %+v, %v; want stored", rec, err)
	}
	if rec, err := a.mesh.Publish(context.Background(), first); err != nil || rec.Cursor != "" {
		t.Fatalf("Publish(same envelope again) = %+v, %v; want a duplicate ack", rec, err)
	}
	for _, e := range []*mesh.Envelope{mk(1, "another one"), mk(3, "three")} {
		if _, err := a.mesh.Publish(context.Background(), e); !errors.Is(err, mesh.ErrSeqGap) {
			t.Fatalf("Publish(seq %d %q) = %v, want ErrSeqGap", e.Seq, e.Content, err)
		}
	}
	recs, _ := a.mesh.After(context.Background(), ch, "", 10)
	if len(recs) != 1 || recs[0].Env.ID != first.ID {
		t.Fatalf("stored %d envelopes, want only the first", len(recs))
	}
}
