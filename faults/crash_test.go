package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestCrashKill9 runs three agents as `confab up` processes (separate homes,
// mDNS on loopback) with one client per agent sending through its gateway,
// kills a random agent with SIGKILL at a random moment, restarts it on the
// same home and goes on. At the end every acknowledged message must be in
// every agent's history exactly once, in each author's order, and every
// restart must have come up (no store corruption).
func TestCrashKill9(t *testing.T) {
	needRoot(t)
	n := pick(5, 100)
	if *iterations > 0 {
		n = *iterations
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	const ch = "#crash"
	root := shortTemp(t)
	var ps []*proc
	for _, name := range []string{"atlas", "nova", "orion"} {
		p := newProc(t, filepath.Join(root, name), name, "--listen", "/ip4/127.0.0.1/tcp/0", "--join", ch)
		p.start()
		ps = append(ps, p)
	}
	h := NewHistory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sender(ctx, h, p, ch, p.name, 10*time.Millisecond)
		}()
	}
	kills := 0
	for i := range n {
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		victim := ps[rng.IntN(len(ps))]
		victim.kill()
		kills++
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond) // others keep sending meanwhile
		if err := victim.tryStart(30 * time.Second); err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("iteration %d (seed %d): confab up after kill -9 of %s failed: %v", i, seed, victim.name, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	took := waitConverged(t, h, ch, 120*time.Second, ps...)
	r := h.Check()
	summary := fmt.Sprintf("crash: %d iterations, %d SIGKILLs, seed %d, converged %v after traffic stopped\n%s", n, kills, seed, took.Round(100*time.Millisecond), r)
	t.Log(summary)
	writeSummary(t, "crash", summary)
	if !r.OK() {
		t.Fatalf("history check failed (seed %d)", seed)
	}
}
