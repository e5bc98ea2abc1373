package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDiskFull gives one agent's store a small tmpfs (in a private mount
// namespace: `unshare -m`, so nothing leaks to the host), fills it during
// traffic, then frees it. While it is full, sends through that agent must
// fail with an error (never an ack for something not stored) and live
// gossip between the other agents keeps flowing; once space returns the
// agent acknowledges again without a restart, and at the end every
// acknowledged message is in every history once.
func TestDiskFull(t *testing.T) {
	needRoot(t)
	const ch = "#disk"
	root := shortTemp(t)
	fullHome := filepath.Join(root, "full")
	storeDir := filepath.Join(fullHome, "store")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A holder process keeps a private mount namespace with the tmpfs
	// alive across agent restarts (a crashed agent must find its store
	// again); the agent and the filler enter it with nsenter.
	holder := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size=32m tmpfs "$0" && echo mounted && exec sleep 3600`, storeDir)
	holderOut, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	if b := make([]byte, 8); func() bool { n, _ := holderOut.Read(b); return string(b[:n]) != "mounted\n" }() {
		t.Fatal("tmpfs holder did not mount")
	}
	ns := []string{"nsenter", "-t", fmt.Sprint(holder.Process.Pid), "-m", "--"}
	b := newProc(t, filepath.Join(root, "b"), "b", "--listen", "/ip4/127.0.0.1/tcp/0", "--join", ch)
	b.start()
	// The agents also find each other by mDNS, which can take minutes in a
	// loaded full-suite run; the others dial b directly, since this test is
	// about a full disk, not discovery.
	args := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--join", ch, "--rendezvous", b.info(t).Addrs[0]}
	full := newProc(t, fullHome, "full", args...)
	full.prefix = ns
	full.start()
	c := newProc(t, filepath.Join(root, "c"), "c", args...)
	c.start()
	ps := []*proc{full, b, c}

	// nsExec runs a shell command inside the full agent's mount namespace.
	nsExec := func(script string) (string, error) {
		out, err := exec.Command(ns[0], append(ns[1:], "sh", "-c", script)...).CombinedOutput()
		return string(out), err
	}
	if out, err := nsExec("df -k " + storeDir + " | tail -1"); err != nil || !strings.Contains(out, "tmpfs") {
		t.Fatalf("the store is not on the tmpfs: %v %s", err, out)
	}

	h := NewHistory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var phase atomic.Int32 // 0 before, 1 full, 2 freed
	type counts struct{ acked, failed atomic.Int64 }
	var perPhase [3]counts
	wg.Add(2)
	go func() {
		defer wg.Done()
		sender(ctx, h, b, ch, "b", 20*time.Millisecond)
	}()
	go func() { // the full agent's client, counting outcomes per phase
		defer wg.Done()
		hh := NewHistory()
		done := make(chan struct{})
		go func() {
			defer close(done)
			sender(ctx, hh, full, ch, "full", 20*time.Millisecond)
		}()
		seen := 0
		for {
			select {
			case <-done:
			case <-time.After(20 * time.Millisecond):
			}
			ops := hh.Ops()
			for _, op := range ops[seen:] {
				p := phase.Load()
				if op.Acked {
					perPhase[p].acked.Add(1)
				} else {
					perPhase[p].failed.Add(1)
				}
				h.Record(op)
			}
			seen = len(ops)
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	time.Sleep(2 * time.Second)
	out, err := nsExec("dd if=/dev/zero of=" + filepath.Join(storeDir, "zz-filler") + " bs=64k 2>&1; df -k " + storeDir + " | tail -1")
	t.Logf("filled the tmpfs (dd: %v): %s", err, strings.TrimSpace(out))
	phase.Store(1)
	bBefore := countKeys(t, c, ch, "b-")
	time.Sleep(pick(4*time.Second, 20*time.Second))
	bDuring := countKeys(t, c, ch, "b-")
	if !full.running() {
		t.Errorf("the agent with a full disk died:\n%s", crashReport(full.stderr.String()))
	}
	if bDuring <= bBefore {
		t.Errorf("gossip between the other agents stalled while one disk was full: c held %d of b's messages before, %d after", bBefore, bDuring)
	}
	if out, err := nsExec("rm -f " + filepath.Join(storeDir, "zz-filler")); err != nil {
		t.Errorf("free the tmpfs: %v %s", err, out)
	}
	phase.Store(2)
	recovered := time.Now()
	var ok bool
	for time.Since(recovered) < 30*time.Second && full.running() {
		if perPhase[2].acked.Load() > 5 {
			ok = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ok {
		t.Errorf("no recovery within 30 s after space returned (running %v):\n%s", full.running(), crashReport(full.stderr.String()))
	}
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	t.Logf("sends through the full agent: before %d acked/%d failed, while full %d/%d, after freeing %d/%d",
		perPhase[0].acked.Load(), perPhase[0].failed.Load(), perPhase[1].acked.Load(), perPhase[1].failed.Load(), perPhase[2].acked.Load(), perPhase[2].failed.Load())
	if perPhase[1].failed.Load() == 0 {
		t.Errorf("no send failed while the disk was full (the tmpfs may not have filled)")
	}
	survived := full.running()
	if !full.running() {
		full.start() // on the same tmpfs: what it acknowledged must still be there
	}
	took := waitConverged(t, h, ch, 90*time.Second, ps...)
	r := h.Check()
	summary := fmt.Sprintf("disk full: agent survived %v; sends through it before %d acked/%d failed, while full %d/%d, after freeing %d/%d; converged %v after traffic stopped\n%s",
		survived, perPhase[0].acked.Load(), perPhase[0].failed.Load(), perPhase[1].acked.Load(), perPhase[1].failed.Load(), perPhase[2].acked.Load(), perPhase[2].failed.Load(), took.Round(100*time.Millisecond), r)
	t.Log(summary)
	writeSummary(t, "diskfull", summary)
	if !r.OK() {
		t.Fatal("history check failed")
	}
}

// countKeys counts the records of p's history whose content starts with prefix.
func countKeys(t *testing.T, p *proc, channel, prefix string) int {
	t.Helper()
	recs, err := procHistory(p, channel)
	if err != nil {
		t.Fatalf("%s: history: %v", p.name, err)
	}
	n := 0
	for _, r := range recs {
		if strings.HasPrefix(r.Env.Content, prefix) {
			n++
		}
	}
	return n
}

// crashReport returns the start of a Go crash in a process's stderr (the
// fatal error or panic and the first goroutine), or its tail.
func crashReport(s string) string {
	for _, marker := range []string{"unexpected fault address", "fatal error:", "panic:", "SIGBUS", "SIGSEGV"} {
		if i := strings.Index(s, marker); i >= 0 {
			end := min(len(s), i+4000)
			return s[i:end]
		}
	}
	return tail(s, 3000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
