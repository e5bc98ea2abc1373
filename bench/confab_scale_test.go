package main

import (
	"context"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

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

// BenchmarkIdleScale reports the CPU that idle simulated agents (joined to
// one channel, nothing sent) cost, per agent per second: what the scale
// comparison pays before its first message. The defaults are small so
// that CI's smoke run stays quick; CONFAB_IDLE_AGENTS sets the group size
// (default 20), CONFAB_IDLE_SECONDS the measured idle time (default 2) and
// CONFAB_IDLE_SETTLE the wait before it for the joins' presence storm and
// catch-up to settle (default 2); CONFAB_IDLE_PROFILE=path writes a CPU
// profile of the measured time only to path.<system>.
func BenchmarkIdleScale(b *testing.B) {
	n, secs := 20, 2
	if v, err := strconv.Atoi(os.Getenv("CONFAB_IDLE_AGENTS")); err == nil && v > 1 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("CONFAB_IDLE_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	for _, tc := range []struct {
		name  string
		setup simSetup
	}{{"gossipsub", setupGossipSim}, {"confab", setupConfabSim}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				perAgent := idleCPU(b, n, time.Duration(secs)*time.Second, tc.setup)
				b.ReportMetric(float64(perAgent.Microseconds())/1000, "ms-cpu/agent/s")
			}
		})
	}
}

func idleCPU(b *testing.B, n int, window time.Duration, setup simSetup) time.Duration {
	b.Helper()
	ctx := context.Background()
	mn := mocknet.New()
	defer mn.Close()
	hosts, keys, tr, connect, err := simPeers(mn, n)
	if err != nil {
		b.Fatal(err)
	}
	g, err := setup(ctx, hosts, keys, tr, connect, func(int, []byte) {})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	settle := 2 * time.Second
	if v, err := strconv.Atoi(os.Getenv("CONFAB_IDLE_SETTLE")); err == nil && v >= 0 {
		settle = time.Duration(v) * time.Second
	}
	time.Sleep(settle)
	bytes0, beacons0 := sumBytes(tr), tr[0].presence.Load()
	if f := os.Getenv("CONFAB_IDLE_PROFILE"); f != "" {
		w, err := os.Create(f + "." + strings.TrimPrefix(b.Name(), "BenchmarkIdleScale/"))
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		if err := pprof.StartCPUProfile(w); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	c0 := cpuTime()
	b.StartTimer()
	time.Sleep(window)
	b.StopTimer()
	b.ReportMetric(float64(sumBytes(tr)-bytes0)/float64(n)/window.Seconds(), "B/agent/s")
	b.ReportMetric(float64(tr[0].presence.Load()-beacons0)/window.Seconds(), "beacons-delivered/s")
	return (cpuTime() - c0) / time.Duration(n) * time.Second / window
}

// BenchmarkIdleNodes reports the CPU of idle product nodes (node.Host on
// loopback TCP, in-memory store, mesh joined to one channel, every default),
// per node per second, with the same variables as BenchmarkIdleScale
// (defaults 10 nodes, 2 s, 2 s; the profile goes to path.nodes).
func BenchmarkIdleNodes(b *testing.B) {
	n, secs, settle := 10, 2, 2
	if v, err := strconv.Atoi(os.Getenv("CONFAB_IDLE_AGENTS")); err == nil && v > 1 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("CONFAB_IDLE_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	if v, err := strconv.Atoi(os.Getenv("CONFAB_IDLE_SETTLE")); err == nil && v >= 0 {
		settle = v
	}
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		nodes := make([]*confabNode, n)
		for i := range nodes {
			c, err := newConfabNode(confabOpts{})
			if err != nil {
				b.Fatal(err)
			}
			nodes[i] = c
		}
		for _, e := range topology(n) {
			if err := connectConfab(ctx, nodes[e[0]], nodes[e[1]]); err != nil {
				b.Fatal(err)
			}
		}
		for _, c := range nodes {
			if err := c.m.Join(ctx, "#idle"); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(time.Duration(settle) * time.Second)
		var prof *os.File
		if f := os.Getenv("CONFAB_IDLE_PROFILE"); f != "" {
			var err error
			if prof, err = os.Create(f + ".nodes"); err != nil {
				b.Fatal(err)
			}
			if err := pprof.StartCPUProfile(prof); err != nil {
				b.Fatal(err)
			}
		}
		c0 := cpuTime()
		b.StartTimer()
		time.Sleep(time.Duration(secs) * time.Second)
		b.StopTimer()
		per := (cpuTime() - c0) / time.Duration(n) / time.Duration(secs)
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
		b.ReportMetric(float64(per.Microseconds())/1000, "ms-cpu/node/s")
		if err := closeConfab(nodes); err != nil {
			b.Fatal(err)
		}
	}
}
