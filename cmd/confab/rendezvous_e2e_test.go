package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// startRendezvous runs `confab rendezvous --json` (under `ip netns exec ns`
// when ns is not empty), waits for its start line and returns its info and
// process.
func startRendezvous(t *testing.T, home string, args ...string) (rendezvousInfo, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"rendezvous", "--json", "--home", home, "--log-level", "warn"}, args...)...)
	var errb lockedBuffer
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = bufio.NewReader(stdout).WriteTo(new(bytes.Buffer))
	}()
	select {
	case l, ok := <-lines:
		var info rendezvousInfo
		if !ok || json.Unmarshal([]byte(l), &info) != nil || info.ID == "" {
			t.Fatalf("rendezvous start line %q; stderr: %s", l, errb.String())
		}
		return info, cmd
	case <-time.After(30 * time.Second):
		t.Fatalf("rendezvous did not start: %s", errb.String())
	}
	return rendezvousInfo{}, nil
}

// upIn runs `confab up` inside network namespace ns and waits for its socket
// (unix sockets are reachable across network namespaces).
func upIn(t *testing.T, ns, home string, args ...string) {
	t.Helper()
	full := append([]string{"netns", "exec", ns, buildBinary(t), "up", "--home", home, "--no-mdns"}, args...)
	cmd := exec.Command("ip", full...)
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	poll(t, "node in "+ns+" up", func() bool {
		_, _, code := run(t, "", "id", "--home", home)
		return code == 0
	})
	if _, _, code := run(t, "", "id", "--home", home); code != 0 {
		t.Fatalf("node in %s did not come up: %s", ns, errb.String())
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// twoNetworks creates namespaces A and B, each joined to the test's own
// namespace (where the rendezvous runs) by a veth pair: 10.77.1.0/24 and
// 10.77.2.0/24. Forwarding is off, so A and B have no route to each other.
func twoNetworks(t *testing.T) (nsA, nsB string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	nsA, nsB = fmt.Sprintf("cfA%d", os.Getpid()), fmt.Sprintf("cfB%d", os.Getpid())
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644); err != nil {
		t.Fatalf("ip_forward: %v", err)
	}
	for i, ns := range []string{nsA, nsB} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		outer, inner := fmt.Sprintf("cfv%d", i), fmt.Sprintf("cfw%d", i)
		sh(t, "ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
		sh(t, "ip", "link", "set", inner, "netns", ns)
		sh(t, "ip", "addr", "add", fmt.Sprintf("10.77.%d.1/24", i+1), "dev", outer)
		sh(t, "ip", "link", "set", outer, "up")
		sh(t, "ip", "netns", "exec", ns, "ip", "addr", "add", fmt.Sprintf("10.77.%d.2/24", i+1), "dev", inner)
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	}
	// No route between A and B.
	if err := exec.Command("ip", "netns", "exec", nsA, "ip", "route", "get", "10.77.2.2").Run(); err == nil {
		t.Fatal("namespace A has a route to B")
	}
	return nsA, nsB
}

func thinClient(t *testing.T, ws string) (*wsgateway.Client, crypto.PrivKey, string) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return dialThin(t, ws, k), k, id.String()
}

func dialThin(t *testing.T, ws string, k crypto.PrivKey) *wsgateway.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := wsgateway.Dial(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(ctx, k, ""); err != nil {
		t.Fatal(err)
	}
	return c
}

func publish(t *testing.T, c *wsgateway.Client, k crypto.PrivKey, ch, content string) (*mesh.Envelope, wsgateway.Ack, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := c.NextSeq(ctx, ch, "")
	if err != nil {
		return nil, wsgateway.Ack{}, err
	}
	env := &mesh.Envelope{Channel: ch, Name: "thin", Seq: n, TS: time.Now().UnixMilli(), Kind: "msg", Content: content}
	if err := env.Sign(k); err != nil {
		t.Fatal(err)
	}
	ack, err := c.Publish(ctx, env)
	return env, ack, err
}

// historyHas reports whether home's history of ch has an envelope with
// content from author ("" = anyone).
func historyHas(t *testing.T, home, ch, content, from string) bool {
	out, _, code := run(t, "", "history", ch, "--limit", "1000", "--home", home)
	if code != 0 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct{ From, Content string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Content == content && (from == "" || e.From == from) {
			return true
		}
	}
	return false
}

// Agents A and B live in two networks with no route between them; a
// rendezvous R has a leg in each. A and B talk through R, and a thin client
// on R's gateway sees the conversation and takes part with its own key.
func TestRendezvousBridgesTwoNetworks(t *testing.T) {
	nsA, nsB := twoNetworks(t)
	root := t.TempDir()
	info, _ := startRendezvous(t, filepath.Join(root, "r"),
		"--listen", "/ip4/10.77.1.1/tcp/0", "--listen", "/ip4/10.77.2.1/tcp/0", "--ws", "127.0.0.1:0")
	for _, a := range info.Addrs {
		if !strings.HasSuffix(a, "/p2p/"+info.ID) {
			t.Fatalf("printed address %s lacks /p2p/<id>", a)
		}
	}
	var rv []string
	for _, a := range info.Addrs {
		rv = append(rv, "--rendezvous", a)
	}
	homeA, homeB := filepath.Join(root, "a"), filepath.Join(root, "b")
	upIn(t, nsA, homeA, append([]string{"--name", "atlas", "--listen", "/ip4/10.77.1.2/tcp/0", "--join", "#general"}, rv...)...)
	upIn(t, nsB, homeB, append([]string{"--name", "nova", "--listen", "/ip4/10.77.2.2/tcp/0", "--join", "#general"}, rv...)...)

	c, k, thinID := thinClient(t, info.WS)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := c.Join(ctx, "#general"); err != nil {
		t.Fatal(err)
	}
	events, err := c.Subscribe(ctx, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{} // content -> from, as the thin client saw it
	waitSeen := func(content string) {
		t.Helper()
		for seen[content] == "" {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("thin client subscription ended: %v", c.Err())
				}
				seen[ev.Record.Env.Content] = ev.Record.Env.From
			case <-ctx.Done():
				t.Fatalf("thin client never saw %q", content)
			}
		}
	}

	// Wait until both agents' follow requests reached R (its who lists them).
	poll(t, "both agents present at the rendezvous", func() bool {
		peers, err := c.Who(ctx, "#general")
		return err == nil && len(peers) >= 3
	})

	if _, stderr, code := run(t, "", "send", "#general", "hello from A", "--home", homeA); code != 0 {
		t.Fatalf("send A: %s", stderr)
	}
	poll(t, "B receives A's message", func() bool { return historyHas(t, homeB, "#general", "hello from A", "") })
	if _, stderr, code := run(t, "", "send", "#general", "hello from B", "--home", homeB); code != 0 {
		t.Fatalf("send B: %s", stderr)
	}
	poll(t, "A receives B's message", func() bool { return historyHas(t, homeA, "#general", "hello from B", "") })
	waitSeen("hello from A")
	waitSeen("hello from B")

	if _, _, err := publish(t, c, k, "#general", "hello from thin"); err != nil {
		t.Fatal(err)
	}
	for _, home := range []string{homeA, homeB} {
		poll(t, "agent receives the thin client's message signed by it", func() bool {
			return historyHas(t, home, "#general", "hello from thin", thinID)
		})
	}
}

// The rendezvous is killed with SIGKILL while a thin client publishes.
// After a restart every acknowledged envelope is in its history exactly
// once, and a subscriber resumes from its cursor with nothing missing.
func TestRendezvousKill9Durability(t *testing.T) {
	home := filepath.Join(t.TempDir(), "r")
	info, cmd := startRendezvous(t, home, "--listen", "/ip4/127.0.0.1/tcp/0", "--ws", "127.0.0.1:0")
	pub, k, _ := thinClient(t, info.WS)
	lis, _, _ := thinClient(t, info.WS)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for _, c := range []*wsgateway.Client{pub, lis} {
		if err := c.Join(ctx, "#durable"); err != nil {
			t.Fatal(err)
		}
	}
	events, err := lis.Subscribe(ctx, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{} // envelope id -> times the listener saw it
	var lastCursor string
	take := func(ev wsgateway.Event) {
		got[ev.Record.Env.ID]++
		if ev.Record.Cursor > lastCursor {
			lastCursor = ev.Record.Cursor
		}
	}

	acked := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			env, _, err := publish(t, pub, k, "#durable", fmt.Sprintf("m%03d", i))
			if err != nil {
				return // the kill
			}
			acked[env.ID] = true
		}
	}()
	// Let some acknowledged envelopes reach the listener, then kill -9.
	for len(got) < 20 {
		select {
		case ev := <-events:
			take(ev)
		case <-ctx.Done():
			t.Fatal("listener saw nothing")
		}
	}
	_ = cmd.Process.Kill()
	<-done
	for ev := range events { // drain what was delivered before the kill
		take(ev)
	}
	_ = cmd.Wait()
	if len(acked) == 0 {
		t.Fatal("nothing acknowledged before the kill")
	}

	info2, _ := startRendezvous(t, home, "--listen", "/ip4/127.0.0.1/tcp/0", "--ws", "127.0.0.1:0")
	if info2.ID != info.ID {
		t.Errorf("identity changed across restart: %s → %s", info.ID, info2.ID)
	}
	c := dialThin(t, info2.WS, k) // same identity: resumes its seq
	if err := c.Join(ctx, "#durable"); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	before := ""
	for {
		recs, more, err := c.History(ctx, "#durable", before, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			counts[r.Env.ID]++
		}
		if !more || len(recs) == 0 {
			break
		}
		before = recs[0].Cursor
	}
	for id := range acked {
		if counts[id] != 1 {
			t.Errorf("acknowledged %s is in history %d times, want 1", id, counts[id])
		}
	}
	for id, n := range counts {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	// The publisher continues at the right seq.
	if _, _, err := publish(t, c, k, "#durable", "after restart"); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	// The listener resumes from its cursor: everything stored after it,
	// nothing it already had.
	lis2, _, _ := thinClient(t, info2.WS)
	if err := lis2.Join(ctx, "#durable"); err != nil {
		t.Fatal(err)
	}
	ev2, err := lis2.Subscribe(ctx, nil, lastCursor)
	if err != nil {
		t.Fatal(err)
	}
	for len(got) < len(counts)+1 {
		select {
		case ev := <-ev2:
			if got[ev.Record.Env.ID] > 0 {
				t.Errorf("resumed subscription repeated %s", ev.Record.Env.ID)
			}
			take(ev)
		case <-ctx.Done():
			t.Fatalf("resumed listener has %d of %d envelopes", len(got), len(counts)+1)
		}
	}
	t.Logf("%d acknowledged before kill -9, %d stored, listener saw %d", len(acked), len(counts), len(got))
	for id := range acked {
		if got[id] != 1 {
			t.Errorf("listener saw acknowledged %s %d times", id, got[id])
		}
	}
}
