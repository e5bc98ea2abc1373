package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// netlab is a set of named network namespaces on one bridge of the test's
// own (already private) network namespace: 10.77.0.<i>/24, multicast routed
// so mDNS works across the bridge.
type netlab struct {
	t      *testing.T
	prefix string
	names  []string
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newNetlab(t *testing.T, n int) *netlab {
	l := &netlab{t: t, prefix: fmt.Sprintf("cff%d", os.Getpid())}
	t.Cleanup(l.close)
	for _, br := range []string{"cfbr0", "cfbr1"} {
		ipCmd(t, "link", "add", "name", br, "type", "bridge", "mcast_snooping", "0")
		ipCmd(t, "link", "set", br, "up")
	}
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-%d", l.prefix, i)
		ipCmd(t, "netns", "add", ns)
		l.names = append(l.names, ns)
		veth := fmt.Sprintf("cfv%d", i)
		ipCmd(t, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "link", "set", veth, "master", "cfbr0", "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		ipCmd(t, "-n", ns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", i), "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up", "multicast", "on")
		ipCmd(t, "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
	}
	return l
}

func (l *netlab) ns(i int) string   { return l.names[i-1] }
func (l *netlab) addr(i int) string { return fmt.Sprintf("/ip4/10.77.0.%d/tcp/0", i) }

// moveTo attaches host i's link to bridge br: hosts on different bridges
// cannot reach each other.
func (l *netlab) moveTo(i int, br string) {
	ipCmd(l.t, "link", "set", fmt.Sprintf("cfv%d", i), "master", br)
}

func (l *netlab) close() {
	for _, ns := range l.names {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	exec.Command("ip", "link", "del", "cfbr0").Run()
	exec.Command("ip", "link", "del", "cfbr1").Run()
}

// TestPartitionHeal runs four agents (`confab up`) in four network
// namespaces on one bridge, splits them 2|2 by moving two links to another
// bridge, lets both sides keep talking, heals, and checks that every agent
// converges to the union of both histories within a bound, with no
// duplicates. The binary syncs every 30 s and on every peer (re)join; a heal
// relies on the latter.
func TestPartitionHeal(t *testing.T) {
	needRoot(t)
	const ch = "#part"
	lab := newNetlab(t, 4)
	root := shortTemp(t)
	var ps []*proc
	for i := 1; i <= 4; i++ {
		name := fmt.Sprintf("n%d", i)
		p := newProc(t, filepath.Join(root, name), name, "--listen", lab.addr(i), "--join", ch)
		p.prefix = []string{"ip", "netns", "exec", lab.ns(i)}
		p.start()
		ps = append(ps, p)
	}
	waitFor(t, 30*time.Second, "all four agents to see each other", func() bool {
		for _, p := range ps {
			c, err := p.dial()
			if err != nil {
				return false
			}
			peers, err := c.Who(context.Background(), ch)
			c.Close()
			if err != nil || len(peers) < 4 {
				return false
			}
		}
		return true
	})
	h := NewHistory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sender(ctx, h, p, ch, p.name, 20*time.Millisecond)
		}()
	}
	rounds := pick(1, 5)
	var heals []time.Duration
	for round := range rounds {
		time.Sleep(2 * time.Second)
		lab.moveTo(3, "cfbr1")
		lab.moveTo(4, "cfbr1")
		cut := time.Now()
		time.Sleep(pick(8*time.Second, 30*time.Second))
		// The cut must be real: n1 lacks some of what n3 acknowledged meanwhile.
		var n3 []string
		for _, op := range h.Ops() {
			if op.Acked && strings.HasPrefix(op.Key, "n3-") {
				n3 = append(n3, op.Key)
			}
		}
		if ok, _, _ := converged(ps[0], ch, keySet(n3)); ok {
			t.Fatalf("round %d: n1 holds everything n3 acknowledged during the partition: the cut did not work", round)
		}
		lab.moveTo(3, "cfbr0")
		lab.moveTo(4, "cfbr0")
		healed := time.Now()
		// Convergence on everything acknowledged up to the heal, while
		// traffic goes on.
		want := ackedKeys(h, ch)
		for _, p := range ps {
			for {
				ok, missing, _ := converged(p, ch, want)
				if ok {
					break
				}
				if time.Since(healed) > 90*time.Second {
					for _, q := range ps {
						if c, err := q.dial(); err == nil {
							peers, _ := c.Who(context.Background(), ch)
							var names []string
							for _, pe := range peers {
								names = append(names, pe.Name)
							}
							t.Logf("%s sees %v", q.name, names)
							c.Close()
						}
					}
					t.Fatalf("round %d: %s still misses %d messages 90 s after the heal", round, p.name, missing)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		heals = append(heals, time.Since(healed))
		t.Logf("round %d: partition of %v healed; all converged in %v", round, healed.Sub(cut).Round(time.Second), time.Since(healed).Round(100*time.Millisecond))
	}
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	took := waitConverged(t, h, ch, 60*time.Second, ps...)
	r := h.Check()
	summary := fmt.Sprintf("partition: %d rounds of a 2|2 split, convergence after heal %v, final %v\n%s", rounds, heals, took.Round(100*time.Millisecond), r)
	t.Log(summary)
	writeSummary(t, "partition", summary)
	if !r.OK() {
		t.Fatal("history check failed")
	}
}

func keySet(keys []string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}
