package mesh_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// offlineID creates an identity in dir without starting a node, so messages
// can be addressed to an agent that is not running yet.
func offlineID(t *testing.T, dir string) string {
	t.Helper()
	key, err := node.LoadIdentity(filepath.Join(dir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func outboxLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// TestOutboxSurvivesSenderRestart queues a DM and a call for an agent that is
// offline, stops the sender, starts the recipient, restarts the sender on the
// same home: both arrive exactly once, in order. The outbox file is then
// empty, a further restart sends nothing, and an "add" whose "done" was lost
// (a crash between the acknowledgement and the mark) is retried but not
// stored or shown again.
func TestOutboxSurvivesSenderRestart(t *testing.T) {
	ctx := context.Background()
	aDir, bDir := t.TempDir(), t.TempDir()
	outbox := filepath.Join(aDir, "dm-outbox.jsonl")
	startA := func() *agent {
		return startAgentWith(t, aDir, "atlas", noMDNS, mesh.WithOutboxFile(outbox))
	}
	bID := offlineID(t, bDir)

	a := startA()
	dm, delivered, err := a.mesh.SendDirect(ctx, "@"+bID, "msg", "read this when you are back", "")
	if err != nil || delivered {
		t.Fatalf("dm to offline agent: delivered %v err %v; want queued", delivered, err)
	}
	call, delivered, err := a.mesh.Call(ctx, bID, "review when you are up")
	if err != nil || delivered {
		t.Fatalf("call to offline agent: delivered %v err %v; want queued", delivered, err)
	}
	a.stop()
	if got := outboxLines(t, outbox); len(got) != 2 {
		t.Fatalf("outbox file after queueing two = %q, want two add lines", got)
	}

	b := startAgentWith(t, bDir, "nova", noMDNS)
	cb := collect(b.mesh.Subscribe(nil, 0))
	a = startA()
	if n := a.mesh.Pending(); n != 2 {
		t.Fatalf("pending after the sender's restart = %d, want 2", n)
	}
	connect(t, a.node, b.node)
	waitFor(t, 30*time.Second, "outbox to drain after the restart", func() bool { return a.mesh.Pending() == 0 })
	waitRecord(t, cb, "the call at nova", func(e *mesh.Envelope) bool { return e.ID == call.Env.ID })
	recs, err := b.mesh.After(ctx, "@"+bID, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Env.ID != dm.Env.ID || recs[1].Env.ID != call.Env.ID {
		t.Fatalf("nova stored %d DMs, want the dm then the call", len(recs))
	}
	for _, id := range []string{dm.Env.ID, call.Env.ID} {
		if n := countRecords(cb, func(e *mesh.Envelope) bool { return e.ID == id }); n != 1 {
			t.Fatalf("envelope %s shown %d times, want 1", id[:8], n)
		}
	}
	if inbox, err := b.mesh.Inbox(ctx); err != nil || len(inbox) != 1 || inbox[0].ID != call.Env.ID {
		t.Fatalf("inbox = %+v, %v; want the call", inbox, err)
	}

	// Delivered messages are marked done: a restart retries nothing.
	a.stop()
	a = startA()
	if n := a.mesh.Pending(); n != 0 {
		t.Fatalf("pending after a restart with everything delivered = %d, want 0", n)
	}
	if got := outboxLines(t, outbox); len(got) != 0 {
		t.Fatalf("outbox file after compaction = %q, want empty", got)
	}

	// The "done" of a delivered message was lost: the sender retries it,
	// the recipient acknowledges the duplicate and neither stores nor shows it.
	a.stop()
	f, err := os.OpenFile(outbox, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"op":"add","id":"` + dm.Env.ID + `","to":"` + bID + `"}` + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dups := b.mesh.Stats().Duplicates
	a = startA()
	if n := a.mesh.Pending(); n != 1 {
		t.Fatalf("pending with a lost done = %d, want 1", n)
	}
	connect(t, a.node, b.node)
	waitFor(t, 30*time.Second, "the retry to be acknowledged", func() bool { return a.mesh.Pending() == 0 })
	if got := b.mesh.Stats().Duplicates; got != dups+1 {
		t.Fatalf("recipient duplicates = %d, want %d", got, dups+1)
	}
	if n := countRecords(cb, func(e *mesh.Envelope) bool { return e.ID == dm.Env.ID }); n != 1 {
		t.Fatalf("dm shown %d times after the retry, want 1", n)
	}
	if recs, _ := b.mesh.After(ctx, "@"+bID, "", 100); len(recs) != 2 {
		t.Fatalf("nova stores %d DMs after the retry, want 2", len(recs))
	}
}

// logBuffer is a slog handler target that tests can read while nodes log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOutboxFileDamaged: malformed, truncated and stale lines are skipped
// with a log line; the good entry is retried and the file is rewritten clean.
func TestOutboxFileDamaged(t *testing.T) {
	ctx := context.Background()
	aDir, bDir := t.TempDir(), t.TempDir()
	outbox := filepath.Join(aDir, "dm-outbox.jsonl")
	bID := offlineID(t, bDir)
	a := startAgentWith(t, aDir, "atlas", noMDNS, mesh.WithOutboxFile(outbox))
	dm, _, err := a.mesh.SendDirect(ctx, "@"+bID, "msg", "still here", "")
	if err != nil {
		t.Fatal(err)
	}
	// A channel message exists in history but is no DM to bID.
	joinAll(t, "#general", a)
	other, err := a.mesh.Send(ctx, "#general", "msg", "not a dm", "")
	if err != nil {
		t.Fatal(err)
	}
	a.stop()

	f, err := os.OpenFile(outbox, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	damage := []string{
		"{not json\n",
		`{"op":"add","id":"xyz","to":"` + bID + `"}` + "\n",                              // bad id
		`{"op":"send","id":"` + dm.Env.ID + `","to":"` + bID + `"}` + "\n",               // unknown op
		`{"op":"add","id":"` + strings.Repeat("ab", 32) + `","to":"nobody"}` + "\n",      // bad recipient
		`{"op":"add","id":"` + strings.Repeat("cd", 32) + `","to":"` + bID + `"}` + "\n", // not in history
		`{"op":"add","id":"` + other.Env.ID + `","to":"` + bID + `"}` + "\n",             // not our DM to bID
		"\x00\xff\n", // binary junk
		`{"op":"done","id":"` + strings.Repeat("ef", 32) + `","to":"` + bID + `"}` + "\n", // done without add
		`{"op":"add","id":"` + strings.Repeat("01", 32) + `","to":"` + bID[:10],           // torn last line
	}
	for _, d := range damage {
		if _, err := f.WriteString(d); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a = startAgentWith(t, aDir, "atlas", noMDNS, mesh.WithOutboxFile(outbox), mesh.WithLogger(log))
	if n := a.mesh.Pending(); n != 1 {
		t.Fatalf("pending after a damaged outbox file = %d, want 1\n%s", n, logs.String())
	}
	got := logs.String()
	for _, want := range []struct {
		msg string
		n   int
	}{
		{"malformed line skipped", 5}, // not json, bad id, unknown op, junk, torn
		{"bad recipient", 1},
		{"not in history", 1},
		{"not our message to that agent", 1},
	} {
		if n := strings.Count(got, want.msg); n != want.n {
			t.Errorf("log has %q %d times, want %d:\n%s", want.msg, n, want.n, got)
		}
	}
	if lines := outboxLines(t, outbox); len(lines) != 1 || !strings.Contains(lines[0], dm.Env.ID) {
		t.Fatalf("outbox file after start = %q, want the one good add", lines)
	}

	b := startAgentWith(t, bDir, "nova", noMDNS)
	connect(t, a.node, b.node)
	waitFor(t, 30*time.Second, "the good entry to be delivered", func() bool { return a.mesh.Pending() == 0 })
	if recs, err := b.mesh.After(ctx, "@"+bID, "", 100); err != nil || len(recs) != 1 || recs[0].Env.ID != dm.Env.ID {
		t.Fatalf("nova stores %d DMs (%v), want the one", len(recs), err)
	}
}
