package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackgroundStatusDown(t *testing.T) {
	home := filepath.Join(t.TempDir(), "bg")
	out, stderr, code := run(t, "", "up", "--background", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--join", "#general")
	t.Cleanup(func() { run(t, "", "down", "--home", home) })
	id := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(id, "12D3") || strings.Contains(id, "\n") {
		t.Fatalf("up --background: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	out, _, code = run(t, "", "up", "--background", "--home", home)
	if code != 0 || !strings.Contains(out, "already running") {
		t.Fatalf("second up --background: exit %d %q", code, out)
	}
	out, _, code = run(t, "", "status", "--json", "--home", home)
	var st struct {
		Running  bool
		ID       string
		PID      int
		Channels []string
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || !st.Running || st.ID != id || st.PID == 0 || !slices.Equal(st.Channels, []string{"#general"}) {
		t.Fatalf("status: exit %d %s", code, out)
	}
	if out, _, code = run(t, "", "status", "--home", home); code != 0 || !strings.HasPrefix(out, "running") || !strings.Contains(out, id) {
		t.Fatalf("status: exit %d %q", code, out)
	}
	if out, stderr, code = run(t, "", "down", "--home", home); code != 0 || !strings.Contains(out, "stopped "+id) {
		t.Fatalf("down: exit %d %q %q", code, out, stderr)
	}
	if out, _, code = run(t, "", "status", "--json", "--home", home); code != 0 || !strings.Contains(out, `"running":false`) {
		t.Fatalf("status after down: exit %d %q", code, out)
	}
	if _, stderr, code = run(t, "", "down", "--home", home); code == 0 || !strings.Contains(stderr, "no confab node is running") {
		t.Fatalf("down with nothing running: exit %d %q", code, stderr)
	}
	// The home is free again at once, and the log kept the node's output.
	if _, stderr, code = run(t, "", "up", "--background", "--home", home, "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"); code != 0 {
		t.Fatalf("up after down: %s", stderr)
	}
	if out, _, _ := run(t, "", "status", "--home", home); !strings.Contains(out, id) {
		t.Fatalf("restarted node has another id: %q", out)
	}
}

func TestSendRedacts(t *testing.T) {
	home := filepath.Join(t.TempDir(), "r")
	up(t, home, "--no-mdns", "--join", "#general")
	envVal := "s3cr3t-" + strings.Repeat("v", 10)
	aws := "AK" + "IA" + strings.Repeat("Z", 16)
	cmd := exec.Command(buildBinary(t), "send", "#general", "keys: "+aws+" and "+envVal, "--json", "--home", home)
	cmd.Env = append(cmd.Environ(), "DEPLOY_TOKEN="+envVal)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("send: %v %s", err, errb.String())
	}
	if want := "confab: redacted 2 secret(s): aws-access-key-id, env:DEPLOY_TOKEN\n"; errb.String() != want {
		t.Fatalf("stderr %q, want %q", errb.String(), want)
	}
	var ack struct{ Redacted []string }
	if err := json.Unmarshal(out.Bytes(), &ack); err != nil || !slices.Equal(ack.Redacted, []string{"aws-access-key-id", "env:DEPLOY_TOKEN"}) {
		t.Fatalf("send --json %q", out.String())
	}
	hist, _, _ := run(t, "", "history", "#general", "--home", home)
	if strings.Contains(hist, aws) || strings.Contains(hist, envVal) || !strings.Contains(hist, "keys: [REDACTED:aws-access-key-id] and [REDACTED:env:DEPLOY_TOKEN]") {
		t.Fatalf("history: %s", hist)
	}
}

// appendLine appends one line to a file, as a shell's >> would.
func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

type inboxEntry struct {
	ID, Channel, From, Name, Content, Cursor string
}

// waitInbox waits until home's inbox.jsonl holds an envelope with content
// and returns every entry.
func waitInbox(t *testing.T, home, content string) []inboxEntry {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(home, "inbox.jsonl"))
		var out []inboxEntry
		found := false
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l == "" {
				continue
			}
			var e inboxEntry
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("inbox line %q: %v", l, err)
			}
			out = append(out, e)
			found = found || e.Content == content
		}
		if found {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/inbox.jsonl never got %q; has:\n%s", home, content, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFilesBothWays(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	up(t, a, "--name", "atlas", "--join", "#general")
	ida, addrA := nodeAddr(t, a)
	up(t, b, "--name", "nova", "--join", "#general", "--rendezvous", addrA)
	waitPeers(t, b, "#general", 2)

	outA := filepath.Join(a, "outbox.jsonl")
	appendLine(t, outA, `{"to":"#general","text":"from the outbox of atlas"}`)
	appendLine(t, outA, `not json`)
	appendLine(t, outA, `{"to":"#elsewhere","text":"not joined"}`)
	appendLine(t, outA, `{"to":"#general","text":"second line"}`)
	got := waitInbox(t, b, "second line")
	if len(got) != 2 || got[0].Content != "from the outbox of atlas" || got[0].From != ida || got[0].Name != "atlas" || got[0].Channel != "#general" || got[0].Cursor == "" || len(got[0].ID) != 64 {
		t.Fatalf("nova's inbox: %+v", got)
	}
	errs, _ := os.ReadFile(filepath.Join(a, "outbox.errors.jsonl"))
	if n := strings.Count(string(errs), "\n"); n != 2 || !strings.Contains(string(errs), "not joined") {
		t.Fatalf("outbox.errors.jsonl has %d lines:\n%s", n, errs)
	}

	// And back; an agent's own messages stay out of its inbox.
	appendLine(t, filepath.Join(b, "outbox.jsonl"), `{"to":"#general","text":"reply from nova"}`)
	if got := waitInbox(t, a, "reply from nova"); len(got) != 1 {
		t.Fatalf("atlas's inbox: %+v", got)
	}

	// A restart neither resends consumed lines nor drops new ones.
	if _, stderr, code := run(t, "", "down", "--home", a); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	up(t, a, "--name", "atlas")
	appendLine(t, outA, `{"to":"#general","text":"after restart"}`)
	got = waitInbox(t, b, "after restart")
	if len(got) != 3 {
		t.Fatalf("nova's inbox after atlas restarted: %+v", got)
	}
	st, _ := os.Stat(outA)
	off, _ := os.ReadFile(filepath.Join(a, "outbox.offset"))
	var o struct{ Offset int64 }
	if err := json.Unmarshal(off, &o); err != nil || o.Offset != st.Size() {
		t.Fatalf("outbox.offset %s, outbox is %d bytes", off, st.Size())
	}
}

func waitPeers(t *testing.T, home, ch string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, _ := run(t, "", "who", ch, "--json", "--home", home)
		if strings.Count(out, "\n") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes never saw each other; who: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func nodeID(t *testing.T, home string) string {
	t.Helper()
	id, _ := nodeAddr(t, home)
	return id
}

// nodeAddr returns the peer id and first full multiaddr of home's node. The
// tests pass it as --rendezvous to a second node so the two connect without
// waiting for mDNS, which is slow now and then in a namespace.
func nodeAddr(t *testing.T, home string) (id, addr string) {
	t.Helper()
	out, _, code := run(t, "", "id", "--json", "--home", home)
	var info struct {
		ID    string
		Addrs []string
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || code != 0 || len(info.Addrs) == 0 {
		t.Fatalf("id: %q", out)
	}
	return info.ID, info.Addrs[0]
}
