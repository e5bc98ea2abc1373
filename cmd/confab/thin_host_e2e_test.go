package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestThinHostSessionE2E: a thin client (its own key, no node) hosts a
// session through the built rendezvous's gateway; an agent started with
// the built binary joins it with `confab session join KEY`, which knocks
// at the rendezvous (the key's front), waits, and after the thin host
// approves has the context in its history; then the two talk both ways.
func TestThinHostSessionE2E(t *testing.T) {
	root := t.TempDir()
	info, _ := startRendezvous(t, filepath.Join(root, "r"), "--listen", "/ip4/127.0.0.1/tcp/0", "--ws", "127.0.0.1:0")
	home := filepath.Join(root, "a")
	up(t, home, "--name", "atlas", "--no-mdns", "--rendezvous", info.Addrs[0])

	c, k, _ := thinClient(t, info.WS)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const secretCtx = "the thin host's plan: rotate keys-4471"
	th, err := c.HostSession(ctx, k, "thin-host", "key rotation", secretCtx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := th.Keys().ID
	events, err := c.Subscribe(ctx, []string{id}, "")
	if err != nil {
		t.Fatal(err)
	}

	joinOut, errJ, join := sessStart(t, "session", "join", th.Key(), "--json", "--home", home)
	var kn struct{ ID, From string }
	select {
	case k := <-th.Knocks():
		kn.ID, kn.From = k.ID, k.From
	case <-ctx.Done():
		t.Fatalf("no knock reached the thin host: %s", errJ.String())
	}
	if n, err := th.Approve(ctx, kn.ID); err != nil || n != 1 {
		t.Fatalf("approve: backlog %d, %v", n, err)
	}
	if err := join.Wait(); err != nil {
		t.Fatalf("session join: %v: %s", err, errJ.String())
	}
	if l := <-joinOut; !strings.Contains(l, id) {
		t.Fatalf("session join printed %q, want the channel %s", l, id)
	}
	if got := contents(t, sessRun(t, "history", id, "--home", home)); !slices.Contains(got, "context:"+secretCtx) {
		t.Fatalf("the agent's history %q lacks the context", got)
	}

	sessRun(t, "send", id, "agent says hello", "--home", home)
	for done := false; !done; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("subscription ended: %v", c.Err())
			}
			_, text, err := th.Keys().Decrypt(ev.Record.Env)
			done = err == nil && text == "agent says hello"
		case <-ctx.Done():
			t.Fatal("the thin host never read the agent")
		}
	}
	if _, err := c.PublishPrivate(ctx, k, "thin-host", th.Keys(), "msg", "thin host answers"); err != nil {
		t.Fatal(err)
	}
	poll(t, "the agent reads the thin host", func() bool {
		out, _, code := run(t, "", "history", id, "--home", home)
		return code == 0 && slices.Contains(contents(t, out), "msg:thin host answers")
	})
}
