package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envLine is one JSON line of listen.
type envLine struct {
	ID, Channel, From, Name, Kind, Content, Cursor string
	ReplyTo                                        string `json:"reply_to"`
	Replay                                         bool
}

// listener runs `confab listen ARGS...` in the background and keeps every
// line it prints.
type listener struct {
	mu    sync.Mutex
	lines []envLine
}

func startListen(t *testing.T, home string, args ...string) *listener {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"listen", "--home", home}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &listener{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e envLine
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				l.mu.Lock()
				l.lines = append(l.lines, e)
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		<-done
	})
	return l
}

func (l *listener) count(pred func(envLine) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.lines {
		if pred(e) {
			n++
		}
	}
	return n
}

// wait polls until l has printed a line matching pred and returns it.
func (l *listener) wait(t *testing.T, what string, pred func(envLine) bool) envLine {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		l.mu.Lock()
		for _, e := range l.lines {
			if pred(e) {
				l.mu.Unlock()
				return e
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("listen never printed %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually polls cond for up to 60 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mustRun runs the binary and fails the test on a non-zero exit.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := run(t, "", args...)
	if code != 0 {
		t.Fatalf("confab %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

type cardLine struct {
	ID, Name, Status, Desc string
	Caps                   []string
}

func findIDs(t *testing.T, home, capability string) []string {
	t.Helper()
	var ids []string
	for _, ln := range strings.Split(strings.TrimSpace(mustRun(t, "find", "--cap", capability, "--json", "--home", home)), "\n") {
		if ln == "" {
			continue
		}
		var c cardLine
		if err := json.Unmarshal([]byte(ln), &c); err != nil || c.ID == "" {
			t.Fatalf("find --json line %q: %v", ln, err)
		}
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

func isReply(kind, id string) func(envLine) bool {
	return func(e envLine) bool { return e.Kind == kind && e.ReplyTo == id }
}

func inChannels(t *testing.T, home, ch string) bool {
	var info struct{ Channels []string }
	_ = json.Unmarshal([]byte(mustRun(t, "id", "--json", "--home", home)), &info)
	return slices.Contains(info.Channels, ch)
}

// TestFindDirectCalls drives discovery, direct messages and calls between
// three nodes with the built binary: nova (go-review), orion (tests) and
// atlas (no capability), connected through atlas's address.
func TestFindDirectCalls(t *testing.T) {
	root := t.TempDir()
	a, b, c := filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "c")
	up(t, a, "--name", "atlas", "--no-mdns")
	idA, addrA := nodeAddr(t, a)
	up(t, b, "--name", "nova", "--no-mdns", "--caps", "go-review", "--desc", "reviews Go", "--rendezvous", addrA)
	up(t, c, "--name", "orion", "--no-mdns", "--caps", "tests", "--rendezvous", addrA)
	idB, _ := nodeAddr(t, b)
	idC, _ := nodeAddr(t, c)
	eventually(t, "atlas to see nova and orion", func() bool {
		out := mustRun(t, "who", "--json", "--home", a)
		return strings.Contains(out, idB) && strings.Contains(out, idC)
	})

	// find returns exactly the agents with the capability.
	if got := findIDs(t, a, "go-review"); !slices.Equal(got, []string{idB}) {
		t.Fatalf("find go-review from atlas = %v, want [nova %s]", got, idB)
	}
	if got := findIDs(t, b, "tests"); !slices.Equal(got, []string{idC}) {
		t.Fatalf("find tests from nova = %v, want [orion %s]", got, idC)
	}
	if got := findIDs(t, a, "rust"); len(got) != 0 {
		t.Fatalf("find rust = %v, want none", got)
	}
	if out := mustRun(t, "find", "--cap", "go-review", "--home", a); !strings.Contains(out, "nova") || !strings.Contains(out, "reviews Go") || !strings.Contains(out, idB) {
		t.Fatalf("find table:\n%s", out)
	}

	la := startListen(t, a) // no arguments: every joined channel plus the DM inbox
	lb := startListen(t, b)
	time.Sleep(500 * time.Millisecond) // let both subscribe; a miss fails the waits below

	// A DM by name is delivered and shows in the recipient's listen.
	if out := mustRun(t, "send", "@nova", "hello nova", "--home", a); !strings.HasPrefix(out, "delivered ") {
		t.Fatalf("send @nova printed %q, want delivered", out)
	}
	dm := lb.wait(t, "the DM", func(e envLine) bool { return e.Content == "hello nova" })
	if dm.Channel != "@"+idB || dm.From != idA || dm.Name != "atlas" {
		t.Fatalf("nova's listen printed %+v", dm)
	}
	if _, stderr, code := run(t, "", "send", "@nobody", "x", "--home", a); code == 0 || !strings.Contains(stderr, "unknown_agent") {
		t.Fatalf("send @nobody: exit %d, stderr %q", code, stderr)
	}

	// call -> inbox -> accept: both in the call channel, talking.
	callID := strings.TrimSpace(mustRun(t, "call", "@nova", "--topic", "review my auth middleware", "--home", a))
	if len(callID) != 64 {
		t.Fatalf("call printed %q, want a call id", callID)
	}
	lb.wait(t, "the call", func(e envLine) bool { return e.ID == callID && e.Kind == "call" })
	var pending struct{ ID, From, Name, Topic string }
	if err := json.Unmarshal([]byte(mustRun(t, "inbox", "--json", "--home", b)), &pending); err != nil || pending.ID != callID ||
		pending.From != idA || pending.Topic != "review my auth middleware" {
		t.Fatalf("nova's inbox: %+v, %v", pending, err)
	}
	ch := strings.TrimSpace(mustRun(t, "accept", callID[:12], "--home", b))
	if !strings.HasPrefix(ch, "#call-") || !inChannels(t, b, ch) {
		t.Fatalf("accept printed %q (or nova did not join it)", ch)
	}
	la.wait(t, "call-accept at the caller", isReply("call-accept", callID))
	eventually(t, "atlas to join "+ch, func() bool { return inChannels(t, a, ch) })
	if out := mustRun(t, "inbox", "--json", "--home", b); strings.TrimSpace(out) != "" {
		t.Fatalf("inbox after accept: %q", out)
	}
	mustRun(t, "send", ch, "the diff is ready", "--home", a)
	lb.wait(t, "atlas's message in the call channel", func(e envLine) bool { return e.Channel == ch && e.Content == "the diff is ready" })
	mustRun(t, "send", ch, "looking now", "--home", b)
	la.wait(t, "nova's message in the call channel", func(e envLine) bool { return e.Channel == ch && e.Content == "looking now" })

	// reject reaches the caller with its reason.
	call2 := strings.TrimSpace(mustRun(t, "call", "@"+idB, "--topic", "another thing", "--home", a))
	lb.wait(t, "the second call", func(e envLine) bool { return e.ID == call2 })
	if out := mustRun(t, "reject", call2, "--reason", "not now", "--home", b); !strings.Contains(out, "rejected") {
		t.Fatalf("reject printed %q", out)
	}
	if rej := la.wait(t, "call-reject at the caller", isReply("call-reject", call2)); rej.Content != "not now" {
		t.Fatalf("reject reason %q", rej.Content)
	}
	if _, stderr, code := run(t, "", "accept", call2, "--home", b); code == 0 || !strings.Contains(stderr, "unknown_call") {
		t.Fatalf("accept of an answered call: exit %d, stderr %q", code, stderr)
	}

	// status busy: calls are rejected by the callee's node; match skips it.
	if out := mustRun(t, "status", "busy", "--home", b); strings.TrimSpace(out) != "status busy" {
		t.Fatalf("status busy printed %q", out)
	}
	if out := mustRun(t, "status", "--home", b); !strings.HasPrefix(out, "running") {
		t.Fatalf("status without argument printed %q", out)
	}
	call3 := strings.TrimSpace(mustRun(t, "call", "@nova", "--topic", "urgent", "--home", a))
	if rej := la.wait(t, "automatic busy reject", isReply("call-reject", call3)); rej.Content != "busy" {
		t.Fatalf("busy reject reason %q", rej.Content)
	}
	eventually(t, "nova's busy status at atlas", func() bool {
		return strings.Contains(mustRun(t, "who", "--home", a), "busy")
	})
	if _, stderr, code := run(t, "", "match", "--cap", "go-review", "--topic", "x", "--home", a); code == 0 || !strings.Contains(stderr, "no_agent") {
		t.Fatalf("match with only a busy agent: exit %d, stderr %q", code, stderr)
	}
	mustRun(t, "status", "available", "--home", b)
	eventually(t, "nova available again at atlas", func() bool {
		return !strings.Contains(mustRun(t, "who", "--home", a), "busy")
	})
	var m struct{ ID, To, Name string }
	if err := json.Unmarshal([]byte(mustRun(t, "match", "--cap", "go-review", "--topic", "pair on tests", "--json", "--home", a)), &m); err != nil || m.To != idB || len(m.ID) != 64 {
		t.Fatalf("match: %+v, %v", m, err)
	}
	lb.wait(t, "the matched call", func(e envLine) bool { return e.ID == m.ID && e.Content == "pair on tests" })
	if _, stderr, code := run(t, "", "status", "sleeping", "--home", b); code == 0 || !strings.Contains(stderr, "available, busy or away") {
		t.Fatalf("status sleeping: exit %d, stderr %q", code, stderr)
	}

	// Each envelope was shown once.
	for _, id := range []string{dm.ID, callID, call2, call3, m.ID} {
		if n := lb.count(func(e envLine) bool { return e.ID == id }); n != 1 {
			t.Fatalf("nova's listen printed %s %d times, want once", id[:8], n)
		}
	}

	// A second agent named nova makes the name ambiguous.
	d := filepath.Join(root, "d")
	up(t, d, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	idD, _ := nodeAddr(t, d)
	eventually(t, "atlas to see the second nova", func() bool { return strings.Contains(mustRun(t, "who", "--json", "--home", a), idD) })
	_, stderr, code := run(t, "", "send", "@nova", "which one?", "--home", a)
	if code == 0 || !strings.Contains(stderr, "ambiguous") || !strings.Contains(stderr, idB) || !strings.Contains(stderr, idD) {
		t.Fatalf("send to an ambiguous name: exit %d, stderr %q", code, stderr)
	}
}

// TestDirectAndCallToOfflineAgent sends a DM and a call to an agent whose
// node is down, then starts it: both arrive exactly once, the call is in
// its inbox, and accepting reaches the caller.
func TestDirectAndCallToOfflineAgent(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	up(t, a, "--name", "atlas", "--no-mdns")
	idA, addrA := nodeAddr(t, a)
	nb := up(t, b, "--name", "nova", "--no-mdns") // once, to create its identity
	idB, _ := nodeAddr(t, b)
	_ = nb.Process.Signal(syscall.SIGTERM)
	_ = nb.Wait()

	la := startListen(t, a)
	out := mustRun(t, "send", "@"+idB, "read this when you are back", "--json", "--home", a)
	var dm struct {
		ID        string
		Delivered bool
	}
	if err := json.Unmarshal([]byte(out), &dm); err != nil || dm.Delivered || dm.ID == "" {
		t.Fatalf("DM to an offline agent: %q, want queued", out)
	}
	if out := mustRun(t, "send", "@"+idB, "and this", "--home", a); !strings.HasPrefix(out, "queued: will deliver when") {
		t.Fatalf("send to offline agent printed %q", out)
	}
	out, stderr, code := run(t, "", "call", "@"+idB, "--topic", "review when you are up", "--home", a)
	callID := strings.TrimSpace(out)
	if code != 0 || len(callID) != 64 || !strings.Contains(stderr, "queued") {
		t.Fatalf("call to offline agent: exit %d, %q, %q", code, out, stderr)
	}

	up(t, b, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	replay := func() string {
		out, _, _ := run(t, "", "listen", "--since", "0000000000000000", "--timeout", "2s", "--home", b)
		return out
	}
	eventually(t, "the DMs and the call at nova", func() bool { return strings.Contains(replay(), callID) })
	time.Sleep(time.Second) // any duplicate would be stored by now
	got := replay()
	for _, id := range []string{dm.ID, callID} {
		if n := strings.Count(got, `"id":"`+id+`"`); n != 1 {
			t.Fatalf("nova holds %s %d times, want once:\n%s", id[:8], n, got)
		}
	}
	var pending struct{ ID, From string }
	if err := json.Unmarshal([]byte(mustRun(t, "inbox", "--json", "--home", b)), &pending); err != nil || pending.ID != callID || pending.From != idA {
		t.Fatalf("inbox: %+v %v", pending, err)
	}
	ch := strings.TrimSpace(mustRun(t, "accept", callID, "--home", b))
	la.wait(t, "the accept at atlas", isReply("call-accept", callID))
	eventually(t, "atlas in "+ch, func() bool { return inChannels(t, a, ch) })
}
