package main

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
)

func BenchmarkGossipsubSim(b *testing.B) { benchScenario(b, "gossipsub-sim") }
func BenchmarkConfabScale(b *testing.B)  { benchScenario(b, "confab-scale") }

// TestMemHistory checks the scale scenario's in-memory history against the
// contract mesh relies on: duplicates get "", high water counts only a
// gap-free prefix, Since and the cursor pages are ordered.
func TestMemHistory(t *testing.T) {
	ctx := context.Background()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	env := func(seq uint64) *mesh.Envelope {
		t.Helper()
		e := &mesh.Envelope{Channel: "#c", Seq: seq, TS: 1, Kind: "msg", Content: "x"}
		if err := e.Sign(k); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e1, e2, e4 := env(1), env(2), env(4)
	h := newMemHistory()
	curs, err := h.Append(ctx, []*mesh.Envelope{e1, e4, e1})
	if err != nil {
		t.Fatal(err)
	}
	if curs[0] == "" || curs[1] == "" || curs[2] != "" {
		t.Errorf("cursors = %q, want two set and a duplicate's empty", curs)
	}
	if _, err := h.Append(ctx, []*mesh.Envelope{e2}); err != nil {
		t.Fatal(err)
	}
	hw, _ := h.HighWater(ctx, "#c")
	if got := hw[e1.From]; got != 2 {
		t.Errorf("high water = %d, want 2 (seq 3 missing)", got)
	}
	since, _ := h.Since(ctx, "#c", e1.From, 1, 0)
	if len(since) != 2 || since[0].Seq != 2 || since[1].Seq != 4 {
		t.Errorf("Since(1) = %d envelopes, want seqs 2, 4", len(since))
	}
	after, ac, _ := h.After(ctx, "#c", curs[0], 10)
	if len(after) != 2 || after[0].Seq != 4 || after[1].Seq != 2 {
		t.Errorf("After(first) = %d envelopes, want arrival order 4, 2", len(after))
	}
	before, _, _ := h.Before(ctx, "#c", ac[1], 1)
	if len(before) != 1 || before[0].Seq != 4 {
		t.Errorf("Before(last, 1) = %d envelopes, want seq 4", len(before))
	}
	if _, err := h.Get(ctx, e2.ID); err != nil {
		t.Errorf("Get: %v", err)
	}
	if _, err := h.Get(ctx, "nope"); err == nil {
		t.Error("Get(unknown) = nil error")
	}
}
