package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startCmd runs the binary in the background and returns its stdout lines
// and a function that waits for it and returns its stderr and exit code.
func sessStart(t *testing.T, args ...string) (<-chan string, *lockedBuffer, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errb := &lockedBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines, errb, cmd
}

func sessWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sessRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := run(t, "", args...)
	if code != 0 {
		t.Fatalf("confab %v: exit %d: %s", args, code, errs)
	}
	return out
}

// contents returns the content of every JSON line of history output.
func contents(t *testing.T, out string) []string {
	t.Helper()
	var cs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e struct{ Kind, Content string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		cs = append(cs, e.Kind+":"+e.Content)
	}
	return cs
}

func TestSessionKnockApprove(t *testing.T) {
	root := t.TempDir()
	a, b, c := filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "c")
	up(t, a, "--name", "atlas", "--no-mdns")
	_, addrA := nodeAddr(t, a)
	up(t, b, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	up(t, c, "--name", "orion", "--no-mdns", "--rendezvous", addrA)
	idB, _ := nodeAddr(t, b)

	ctxFile := filepath.Join(root, "context.md")
	const secretCtx = "the migration plan: drop table widgets-7731"
	if err := os.WriteFile(ctxFile, []byte(secretCtx), 0o600); err != nil {
		t.Fatal(err)
	}
	out := sessRun(t, "session", "open", "--topic", "db migration", "--context", ctxFile, "--json", "--home", a)
	var sess struct{ ID, Key string }
	if err := json.Unmarshal([]byte(out), &sess); err != nil || !strings.HasPrefix(sess.Key, "cfs1_") || sess.ID[0] != '~' {
		t.Fatalf("session open printed %q", out)
	}
	sessRun(t, "send", sess.ID, "step one done", "--home", a)

	// The joiner holds the key but is not approved: it reads nothing.
	if out, _, _ := run(t, "", "history", sess.ID, "--home", b); strings.Contains(out, "widgets-7731") || strings.Contains(out, "step one") {
		t.Fatalf("unapproved joiner read the session: %s", out)
	}

	// The host's listen shows the knock.
	knocks, _, _ := sessStart(t, "listen", "--max", "1", "--timeout", "60s", "--home", a)
	time.Sleep(300 * time.Millisecond) // let listen subscribe; the knocks command is checked too

	// Deny path first: orion knocks and is denied.
	_, errC, joinC := sessStart(t, "session", "join", sess.Key, "--home", c)
	sessWait(t, "orion's knock", func() bool {
		return strings.Contains(sessRun(t, "session", "knocks", "--json", "--home", a), `"orion"`)
	})
	sessRun(t, "session", "deny", "@orion", "--home", a)
	if err := joinC.Wait(); err == nil || !strings.Contains(errC.String(), "denied") {
		t.Fatalf("denied join: %v: %s", err, errC.String())
	}
	if l := <-knocks; !strings.Contains(l, `"kind":"knock"`) || !strings.Contains(l, "orion") {
		t.Fatalf("listen on the host printed %q, want the knock", l)
	}

	// nova knocks, waits, is approved and has the whole backlog at once.
	joinOut, errB, joinB := sessStart(t, "session", "join", sess.Key, "--json", "--home", b)
	sessWait(t, "nova's knock", func() bool { return strings.Contains(errB.String(), "knocked; waiting") })
	if ks := sessRun(t, "session", "knocks", "--home", a); !strings.Contains(ks, "nova") || !strings.Contains(ks, "db migration") {
		t.Fatalf("knocks: %s", ks)
	}
	sessRun(t, "session", "approve", "@nova", "--home", a)
	if err := joinB.Wait(); err != nil {
		t.Fatalf("join: %v: %s", err, errB.String())
	}
	var joined struct {
		ID      string
		Backlog int
	}
	if err := json.Unmarshal([]byte(<-joinOut), &joined); err != nil || joined.ID != sess.ID || joined.Backlog != 2 {
		t.Fatalf("join printed %+v (%v)", joined, err)
	}
	got := contents(t, sessRun(t, "history", sess.ID, "--home", b))
	if want := []string{"context:" + secretCtx, "msg:step one done"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("joiner's history = %q, want %q", got, want)
	}

	// Live both ways.
	lb, _, _ := sessStart(t, "listen", sess.ID, "--max", "1", "--timeout", "60s", "--home", b)
	la, _, _ := sessStart(t, "listen", sess.ID, "--max", "1", "--timeout", "60s", "--home", a)
	time.Sleep(500 * time.Millisecond)
	sessRun(t, "send", sess.ID, "host says hi", "--home", a)
	if l := <-lb; !strings.Contains(l, `"content":"host says hi"`) {
		t.Fatalf("joiner's listen printed %q", l)
	}
	sessRun(t, "send", sess.ID, "joiner says hi", "--home", b)
	// The host's listen may see its own message first.
	if l := <-la; !strings.Contains(l, "says hi") {
		t.Fatalf("host's listen printed %q", l)
	}
	sessWait(t, "the joiner's message at the host", func() bool {
		return strings.Contains(sessRun(t, "history", sess.ID, "--home", a), "joiner says hi")
	})
	if members := sessRun(t, "session", "knocks", "--json", "--home", a); strings.TrimSpace(members) != "" {
		t.Fatalf("knocks after the decisions: %q", members)
	}
	_ = idB

	// Close: a knock after close is refused with a clear error.
	sessRun(t, "session", "close", "--home", a)
	_, errs, code := run(t, "", "session", "join", sess.Key, "--home", c)
	if code == 0 || !strings.Contains(errs, "session closed") {
		t.Fatalf("knock after close: exit %d: %s", code, errs)
	}
}

func TestPrivateChannelInviteRemove(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	up(t, a, "--name", "atlas", "--no-mdns")
	_, addrA := nodeAddr(t, a)
	up(t, b, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	idB, _ := nodeAddr(t, b)

	out := sessRun(t, "create", "#ops", "--private", "--json", "--home", a)
	var p struct{ ID, Name string }
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Name != "#ops" || p.ID[0] != '~' {
		t.Fatalf("create printed %q", out)
	}
	if _, errs, code := run(t, "", "create", "#ops2", "--home", a); code == 0 || !strings.Contains(errs, "--private") && !strings.Contains(errs, "private") {
		t.Fatalf("create without --private: exit %d: %s", code, errs)
	}
	sessRun(t, "send", "#ops", "before invite", "--home", a)
	sessWait(t, "atlas to know nova", func() bool {
		_, _, code := run(t, "", "invite", "#ops", "@"+idB, "--home", a)
		return code == 0
	})
	sessWait(t, "nova to read the history", func() bool {
		return strings.Contains(sessRun(t, "history", p.ID, "--home", b), "before invite")
	})
	sessRun(t, "send", "#ops", "while a member", "--home", a)
	sessWait(t, "nova to read live", func() bool {
		return strings.Contains(sessRun(t, "history", p.ID, "--home", b), "while a member")
	})

	sessRun(t, "remove", "#ops", "@"+idB, "--home", a)
	sessRun(t, "send", "#ops", "after removal", "--home", a)
	if h := sessRun(t, "history", "#ops", "--home", a); !strings.Contains(h, "after removal") {
		t.Fatalf("host's history by name: %s", h)
	}
	time.Sleep(2 * time.Second) // give gossip and catch-up a chance to leak
	if h := sessRun(t, "history", p.ID, "--home", b); strings.Contains(h, "after removal") {
		t.Fatalf("removed member read a message sent after removal: %s", h)
	}
}
