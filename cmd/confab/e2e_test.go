package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/confabhq/confab/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// lockedBuffer collects a child process's output; safe to read while the
// process still writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// binary is the confab binary built once for the end-to-end tests.
var binary string

func buildBinary(t *testing.T) string {
	t.Helper()
	if binary != "" {
		return binary
	}
	dir, err := os.MkdirTemp("", "confab-e2e-bin")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "confab")
	cmd := exec.Command("go", "build", "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	binary = out
	return out
}

// run runs the binary to completion and returns stdout, stderr and the exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// up starts `confab up` for home and waits until its socket answers.
func up(t *testing.T, home string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"up", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0"}, args...)...)
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, code := run(t, "", "id", "--home", home); code == 0 {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("node for %s did not come up: %s", home, errb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSendListenBetweenTwoHomes(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	up(t, a, "--name", "atlas", "--join", "#general")
	up(t, b, "--name", "nova", "--join", "#general")

	// Wait until the two nodes see each other. mDNS usually takes a second;
	// on a loaded machine its queries can back off for much longer.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _, _ := run(t, "", "who", "#general", "--json", "--home", b)
		if strings.Count(out, "\n") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes never saw each other; who: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	listen := exec.Command(buildBinary(t), "listen", "#general", "--max", "1", "--timeout", "30s", "--home", b)
	stdout, err := listen.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(500 * time.Millisecond) // let listen subscribe; a miss is caught by the check below
	out, stderr, code := run(t, "", "send", "#general", "hello from atlas", "--json", "--home", a)
	if code != 0 {
		t.Fatalf("send: exit %d: %s", code, stderr)
	}
	var ack struct{ ID string }
	if err := json.Unmarshal([]byte(out), &ack); err != nil || len(ack.ID) != 64 {
		t.Fatalf("send --json printed %q", out)
	}
	got, ok := <-lines
	if !ok {
		t.Fatal("listen printed nothing")
	}
	if err := listen.Wait(); err != nil {
		t.Fatalf("listen --max 1: %v", err)
	}
	var env struct {
		ID, Channel, From, Name, Content, Cursor string
		Seq                                      uint64
		Sig                                      []byte
	}
	if err := json.Unmarshal([]byte(got), &env); err != nil {
		t.Fatalf("listen line %q: %v", got, err)
	}
	if env.ID != ack.ID || env.Content != "hello from atlas" || env.Name != "atlas" || env.Channel != "#general" || env.Seq != 1 || len(env.Sig) != 64 || env.Cursor == "" {
		t.Fatalf("listen printed %+v, want the sent envelope %s", env, ack.ID)
	}

	// history on the receiver, and replay with --since.
	out, _, code = run(t, "", "history", "#general", "--home", b)
	if code != 0 || !strings.Contains(out, ack.ID) {
		t.Fatalf("history: exit %d: %s", code, out)
	}
	out, _, code = run(t, "", "listen", "#general", "--since", "0000000000000000", "--max", "1", "--timeout", "10s", "--home", b)
	if code != 0 || !strings.Contains(out, `"replay":true`) || !strings.Contains(out, ack.ID) {
		t.Fatalf("listen --since: exit %d: %s", code, out)
	}
}

func TestCLIErrors(t *testing.T) {
	root := t.TempDir()
	a := filepath.Join(root, "a")
	up(t, a, "--no-mdns", "--join", "#general")
	big := strings.Repeat("x", 64<<10+1)
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no node running", "", []string{"id", "--home", filepath.Join(root, "none")}, "no confab node is running"},
		{"bad channel", "", []string{"send", "general", "hi", "--home", a}, "bad channel name"},
		{"too large", big, []string{"send", "#general", "-", "--home", a}, "message too large"},
		{"not joined", "", []string{"send", "#other", "hi", "--home", a}, "not joined"},
		{"second node on one home", "", []string{"up", "--no-mdns", "--home", a}, "already running"},
		{"bad limit", "", []string{"history", "#general", "--limit", "0", "--home", a}, "--limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := run(t, tt.stdin, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0, want failure; stdout %q", out)
			}
			if !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("stderr = %q, want one line containing %q", stderr, tt.want)
			}
		})
	}
}

// An acknowledged message survives kill -9 of the node.
func TestAcknowledgedSurvivesKill9(t *testing.T) {
	home := filepath.Join(t.TempDir(), "a")
	node := up(t, home, "--no-mdns", "--join", "#general")
	var ids []string
	for i := range 20 {
		out, stderr, code := run(t, "", "send", "#general", "m"+string(rune('a'+i)), "--json", "--home", home)
		if code != 0 {
			t.Fatalf("send: %s", stderr)
		}
		var ack struct{ ID string }
		_ = json.Unmarshal([]byte(out), &ack)
		ids = append(ids, ack.ID)
	}
	_ = node.Process.Kill()
	_ = node.Wait()
	up(t, home, "--no-mdns")
	out, _, code := run(t, "", "history", "#general", "--limit", "100", "--home", home)
	if code != 0 {
		t.Fatalf("history exit %d", code)
	}
	for _, id := range ids {
		if strings.Count(out, id) != 1 {
			t.Fatalf("acknowledged %s missing or duplicated after kill -9:\n%s", id, out)
		}
	}
}

func TestSearch(t *testing.T) {
	home := filepath.Join(t.TempDir(), "a")
	up(t, home, "--no-mdns", "--join", "#general,#ops")
	for _, m := range [][2]string{
		{"#general", "the auth middleware needs review"},
		{"#ops", "deploy the auth service at noon"},
		{"#general", "lunch?"},
	} {
		if _, stderr, code := run(t, "", "send", m[0], m[1], "--home", home); code != 0 {
			t.Fatalf("send: %s", stderr)
		}
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"search", "auth"}, []string{"deploy the auth service at noon", "the auth middleware needs review"}},
		{[]string{"search", "AUTH review"}, []string{"the auth middleware needs review"}},
		{[]string{"search", "auth", "--in", "#ops"}, []string{"deploy the auth service at noon"}},
		{[]string{"search", "midd*"}, []string{"the auth middleware needs review"}},
		{[]string{"search", "nothing-like-this"}, nil},
	}
	for _, tt := range tests {
		out, stderr, code := run(t, "", append(tt.args, "--home", home)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, code, stderr)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l == "" {
				continue
			}
			var e struct{ Content string }
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("%v: line %q: %v", tt.args, l, err)
			}
			got = append(got, e.Content)
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%v = %q, want %q (newest first)", tt.args, got, tt.want)
		}
	}
	if _, stderr, code := run(t, "", "search", "", "--home", home); code == 0 || !strings.Contains(stderr, "query") {
		t.Errorf("empty query: exit %d, stderr %q; want a clear error", code, stderr)
	}
}
