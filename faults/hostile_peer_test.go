package faults

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/confabhq/confab/mesh"
)

// TestHostilePeerFloodAndInvalid: a raw peer floods a channel with valid
// envelopes of its own far over the per-author rate and sprays invalid ones
// (altered content, a valid signature by another key, garbage, wrong
// channel) while an honest agent sends. The flood is cut by the rate limit
// (RateDrops), the invalid ones are rejected (RejectedInvalid) and never
// stored, and every honest message reaches the other agent once.
func TestHostilePeerFloodAndInvalid(t *testing.T) {
	noLeaks(t)
	const ch = "#hostile"
	rate := mesh.WithAuthorRate(50, 100)
	a := startMem(t, t.TempDir(), "a", rate)
	b := startMem(t, t.TempDir(), "b", rate)
	connect(t, a, b)
	for _, x := range []*memAgent{a, b} {
		if err := x.mesh.Join(context.Background(), ch); err != nil {
			t.Fatal(err)
		}
	}
	raw := newRaw(t, ch, a, b)
	waitFor(t, 20*time.Second, "a and b in one topic mesh", func() bool { return len(a.mesh.Who(context.Background(), ch)) >= 2 })
	rawKey, other := newKey(t), newKey(t)

	h := NewHistory()
	honest := pick(100, 2000)
	flood := pick(1000, 20000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the honest agent keeps talking during the abuse
		defer wg.Done()
		for i := range honest {
			key := fmt.Sprintf("honest-%05d", i)
			rec, err := b.mesh.Send(context.Background(), ch, "msg", key, "")
			op := Op{Key: key, Via: "b", Channel: ch}
			if err != nil {
				op.Err = err.Error()
			} else {
				op.ID, op.Author, op.Seq, op.Acked = rec.Env.ID, rec.Env.From, rec.Env.Seq, true
			}
			h.Record(op)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var invalid [][]byte
	for i := range 20 {
		altered := signed(t, rawKey, ch, uint64(i+1), time.Now(), "original")
		altered.Content = "altered"
		forged := signed(t, rawKey, ch, uint64(i+1), time.Now(), fmt.Sprintf("forged-%d", i))
		forged.Sig, _ = other.Sign(forged.SigningBytes())
		wrongChan := signed(t, rawKey, "#elsewhere", uint64(i+1), time.Now(), "wrong channel")
		invalid = append(invalid, altered.Marshal(), forged.Marshal(), []byte(fmt.Sprintf("garbage %d", i)), wrongChan.Marshal())
	}
	for i := range flood {
		e := signed(t, rawKey, ch, uint64(i+1), time.Now(), fmt.Sprintf("flood-%05d", i))
		h.Record(Op{Key: e.Content, Via: "raw", Channel: ch, Err: "not acknowledged: raw publish"})
		raw.publish(t, e.Marshal())
		if i%50 == 0 && len(invalid) > 0 {
			raw.publish(t, invalid[0])
			invalid = invalid[1:]
		}
	}
	for _, d := range invalid {
		raw.publish(t, d)
	}
	wg.Wait()
	want := make([]string, 0, honest)
	for _, op := range h.Ops() {
		if op.Acked {
			want = append(want, op.Key)
		}
	}
	waitFor(t, 30*time.Second, "every honest message at a", func() bool { return a.hasKeys(t, ch, want...) })
	waitFor(t, 10*time.Second, "rejections counted", func() bool { return a.mesh.Stats().RejectedInvalid+b.mesh.Stats().RejectedInvalid >= 80 })
	sa, sb := a.mesh.Stats(), b.mesh.Stats()
	t.Logf("a: RateDrops %d RejectedInvalid %d Delivered %d; b: RateDrops %d RejectedInvalid %d", sa.RateDrops, sa.RejectedInvalid, sa.Delivered, sb.RateDrops, sb.RejectedInvalid)
	if sa.RateDrops == 0 && sb.RateDrops == 0 {
		t.Errorf("a flood of %d envelopes at far over 50/s was never rate limited", flood)
	}
	for _, x := range []*memAgent{a, b} {
		for _, r := range x.history(t, ch) {
			switch c := r.Env.Content; {
			case c == "altered", c == "original", c == "wrong channel", len(c) > 6 && c[:6] == "forged":
				t.Errorf("%s stored an invalid envelope %q", x.name, c)
			}
		}
		h.Observe(x.name, ch, ObsFromRecords(x.history(t, ch)))
	}
	r := h.Check()
	summary := fmt.Sprintf("hostile peer: %d flood envelopes, 80 invalid, %d honest; a: RateDrops %d RejectedInvalid %d, b: RateDrops %d RejectedInvalid %d\n%s", flood, honest, sa.RateDrops, sa.RejectedInvalid, sb.RateDrops, sb.RejectedInvalid, r)
	t.Log(summary)
	writeSummary(t, "hostile-peer", summary)
	if !r.OK() {
		t.Fatal("history check failed")
	}
}

// TestReplayedEnvelopes: valid envelopes replayed by a fresh peer (whose
// pubsub seen-cache is empty) and again after the honest node restarted
// (so its seen-cache is empty too, as after the 120 s expiry) are never
// stored twice nor delivered twice; the replay after the restart reaches
// mesh's ordering loop and is counted in Duplicates.
func TestReplayedEnvelopes(t *testing.T) {
	noLeaks(t)
	const ch = "#replay"
	dir := t.TempDir()
	a := startMem(t, dir, "a")
	if err := a.mesh.Join(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	var envs []*mesh.Envelope
	for i := range 5 {
		envs = append(envs, signed(t, key, ch, uint64(i+1), time.Now(), fmt.Sprintf("replay-%d", i)))
	}
	h := NewHistory()
	for _, e := range envs {
		h.Record(Op{Key: e.Content, Via: "raw", Channel: ch, ID: e.ID, Author: e.From, Seq: e.Seq, Acked: true})
	}
	get := drain(a.mesh.Subscribe([]string{ch}, 0))
	raw1 := newRaw(t, ch, a)
	for _, e := range envs {
		raw1.publish(t, e.Marshal())
	}
	waitFor(t, 10*time.Second, "the originals", func() bool { return len(a.history(t, ch)) == len(envs) })
	for _, e := range envs { // same peer: its own seen-cache drops them
		raw1.publish(t, e.Marshal())
	}
	raw2 := newRaw(t, ch, a) // fresh peer, fresh seen-cache
	for _, e := range envs {
		raw2.publish(t, e.Marshal())
	}
	time.Sleep(time.Second) // nothing to poll for: the replay must have no effect
	if got := get(); len(got) != len(envs) {
		t.Errorf("subscriber got %d records before the restart, want %d", len(got), len(envs))
	}

	a.stop() // the restarted node's pubsub has an empty seen-cache
	a = startMem(t, dir, "a")
	if got := a.mesh.Channels(); len(got) != 1 {
		t.Fatalf("restarted node joined %v", got)
	}
	dupBefore := a.mesh.Stats().Duplicates
	get = drain(a.mesh.Subscribe([]string{ch}, 0))
	raw3 := newRaw(t, ch, a)
	for _, e := range envs {
		raw3.publish(t, e.Marshal())
	}
	waitFor(t, 10*time.Second, "the replays to reach mesh's loop", func() bool { return a.mesh.Stats().Duplicates-dupBefore >= uint64(len(envs)) })
	time.Sleep(200 * time.Millisecond)
	if got := get(); len(got) != 0 {
		t.Errorf("subscriber got %d replayed records after the restart, want 0", len(got))
	}
	h.Observe("a", ch, ObsFromRecords(a.history(t, ch)))
	r := h.Check()
	summary := fmt.Sprintf("replay: %d envelopes replayed by 2 fresh peers and after a restart; Duplicates %d\n%s", len(envs), a.mesh.Stats().Duplicates-dupBefore, r)
	t.Log(summary)
	writeSummary(t, "replay", summary)
	if !r.OK() {
		t.Fatal("history check failed")
	}
}
