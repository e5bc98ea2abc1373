package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// TestClockSkew: an agent whose clock is hours off publishes envelopes
// signed with its real key and skewed timestamps. Live, a peer ignores the
// ones outside the documented window (5 min behind, 1 min ahead;
// IgnoredWindow) and stores nothing of them; catch-up (/confab/sync/1) then
// brings every one of them, once, in the author's sequence order, whatever
// their timestamps say.
func TestClockSkew(t *testing.T) {
	noLeaks(t)
	const ch = "#skew"
	a := startMem(t, t.TempDir(), "a")
	cdir := t.TempDir()
	c := startMem(t, cdir, "skewed")
	key, err := node.LoadIdentity(filepath.Join(cdir, "identity.key")) // the skewed agent's own key
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*memAgent{a, c} {
		if err := x.mesh.Join(context.Background(), ch); err != nil {
			t.Fatal(err)
		}
	}
	skews := []struct {
		d      time.Duration
		inside bool
	}{
		{-3 * time.Hour, false},
		{+3 * time.Hour, false},
		{-4 * time.Minute, true},
		{+30 * time.Second, true},
		{-10 * time.Minute, false},
		{+2 * time.Minute, false},
		{-48 * time.Hour, false},
	}
	now := time.Now()
	h := NewHistory()
	var envs []*mesh.Envelope
	outside := 0
	for i, s := range skews {
		e := signed(t, key, ch, uint64(i+1), now.Add(s.d), fmt.Sprintf("skew%+v", s.d))
		envs = append(envs, e)
		if !s.inside {
			outside++
		}
	}
	// Live: a raw peer gossips the skewed envelopes to a before the skewed
	// agent has them, so a can learn them from nowhere else yet.
	raw := newRaw(t, ch, a)
	for _, e := range envs {
		raw.publish(t, e.Marshal())
	}
	waitFor(t, 10*time.Second, "window rejections", func() bool { return a.mesh.Stats().IgnoredWindow >= uint64(outside) })
	for _, r := range a.history(t, ch) {
		t.Errorf("a stored %q live before any catch-up; ts %v", r.Env.Content, time.UnixMilli(r.Env.TS))
	}
	// The skewed agent stores them (Publish accepts a pre-signed envelope
	// whatever its ts); a catches up from it.
	for _, e := range envs {
		rec, err := c.mesh.Publish(context.Background(), e)
		if err != nil {
			t.Fatalf("skewed agent publish %s: %v", e.Content, err)
		}
		h.Record(Op{Key: e.Content, Via: "skewed", Channel: ch, ID: rec.Env.ID, Author: rec.Env.From, Seq: rec.Env.Seq, Acked: true})
	}
	connect(t, a, c)
	want := make([]string, len(envs))
	for i, e := range envs {
		want[i] = e.Content
	}
	waitFor(t, 30*time.Second, "catch-up of the skewed envelopes", func() bool { return a.hasKeys(t, ch, want...) })
	time.Sleep(200 * time.Millisecond)
	for _, x := range []*memAgent{a, c} {
		h.Observe(x.name, ch, ObsFromRecords(x.history(t, ch)))
	}
	r := h.Check()
	summary := fmt.Sprintf("clock skew: %d envelopes (%d outside the window), IgnoredWindow %d at a\n%s", len(envs), outside, a.mesh.Stats().IgnoredWindow, r)
	t.Log(summary)
	writeSummary(t, "skew", summary)
	if !r.OK() {
		t.Fatal("history check failed")
	}
	// Ordering is by seq, not ts: a's history lists them as signed.
	for i, rec := range a.history(t, ch) {
		if rec.Env.Seq != uint64(i+1) {
			t.Errorf("history position %d holds seq %d (ts %v), want seq %d", i, rec.Env.Seq, time.UnixMilli(rec.Env.TS), i+1)
		}
	}
}
