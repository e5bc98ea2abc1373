package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOutboxSurvivesSenderRestart: the sender queues a DM and a call for an
// agent whose node is down, stops (`confab down`), the recipient starts, the
// sender starts again on the same home and delivers both, exactly once.
func TestOutboxSurvivesSenderRestart(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	nb := up(t, b, "--name", "nova", "--no-mdns") // once, to create its identity
	idB, _ := nodeAddr(t, b)
	_ = nb.Process.Signal(syscall.SIGTERM)
	_ = nb.Wait()

	up(t, a, "--name", "atlas", "--no-mdns")
	var dm struct {
		ID        string
		Delivered bool
	}
	out := mustRun(t, "send", "@"+idB, "read this after my restart", "--json", "--home", a)
	if err := json.Unmarshal([]byte(out), &dm); err != nil || dm.Delivered || dm.ID == "" {
		t.Fatalf("DM to an offline agent: %q, want queued", out)
	}
	out, stderr, code := run(t, "", "call", "@"+idB, "--topic", "still want that review", "--home", a)
	callID := strings.TrimSpace(out)
	if code != 0 || len(callID) != 64 || !strings.Contains(stderr, "queued") {
		t.Fatalf("call to offline agent: exit %d, %q, %q", code, out, stderr)
	}
	mustRun(t, "down", "--home", a)
	if b, err := os.ReadFile(filepath.Join(a, "dm-outbox.jsonl")); err != nil || !strings.Contains(string(b), dm.ID) || !strings.Contains(string(b), callID) {
		t.Fatalf("outbox file after down: %q, %v; want both ids", b, err)
	}

	up(t, b, "--name", "nova", "--no-mdns")
	_, addrB := nodeAddr(t, b)
	up(t, a, "--name", "atlas", "--no-mdns", "--rendezvous", addrB)
	replay := func() string {
		out, _, _ := run(t, "", "listen", "--since", "0000000000000000", "--timeout", "2s", "--home", b)
		return out
	}
	eventually(t, "the DM and the call at nova", func() bool { return strings.Contains(replay(), callID) })
	got := replay()
	for _, id := range []string{dm.ID, callID} {
		if n := strings.Count(got, `"id":"`+id+`"`); n != 1 {
			t.Fatalf("nova holds %s %d times, want once:\n%s", id[:8], n, got)
		}
	}
	if strings.Index(got, dm.ID) > strings.Index(got, callID) {
		t.Fatalf("the call arrived before the DM sent first:\n%s", got)
	}
	var pending struct{ ID string }
	if err := json.Unmarshal([]byte(mustRun(t, "inbox", "--json", "--home", b)), &pending); err != nil || pending.ID != callID {
		t.Fatalf("inbox: %+v %v", pending, err)
	}
	outbox := filepath.Join(a, "dm-outbox.jsonl")
	eventually(t, "both marked done in the sender's outbox file", func() bool {
		b, err := os.ReadFile(outbox)
		return err == nil && strings.Count(string(b), `"op":"done"`) == 2
	})
	// Nothing is pending: the next start retries nothing and compacts the file.
	mustRun(t, "down", "--home", a)
	up(t, a, "--name", "atlas", "--no-mdns", "--rendezvous", addrB)
	if c, err := os.ReadFile(outbox); err != nil || len(c) != 0 {
		t.Fatalf("outbox file after a restart with nothing pending: %q, %v; want empty", c, err)
	}
	if got := replay(); strings.Count(got, `"id":"`+dm.ID+`"`) != 1 {
		t.Fatalf("after another restart of the sender nova holds the DM %d times", strings.Count(got, dm.ID))
	}
}
