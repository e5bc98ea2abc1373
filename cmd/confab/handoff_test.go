package main

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hoGit runs git in dir with a fixed identity and no user configuration.
func hoGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com", "GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v in %s: %v\n%s", args, dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// hoRepo makes a repository with binary files, several branches, a merge
// commit and an annotated tag.
func hoRepo(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		b[0], b[n/2] = 0, 0 // binary for git's heuristics too
		return b
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(msg string) {
		hoGit(t, dir, "add", "-A")
		hoGit(t, dir, "commit", "-q", "-m", msg)
	}
	hoGit(t, dir, "init", "-q", "-b", "main")
	write("README", []byte("hello\n"))
	write("data.bin", blob(200<<10))
	commit("first")
	hoGit(t, dir, "checkout", "-q", "-b", "feature")
	write("data.bin", blob(100<<10))
	write("image.png", blob(30<<10))
	commit("feature: new binary")
	write("feature.txt", []byte("feature\n"))
	commit("feature: text")
	hoGit(t, dir, "checkout", "-q", "main")
	write("main.txt", []byte("main\n"))
	commit("main: text")
	hoGit(t, dir, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
	hoGit(t, dir, "checkout", "-q", "-b", "topic", "main~1")
	write("topic.bin", blob(10<<10))
	commit("topic")
	hoGit(t, dir, "checkout", "-q", "main")
	hoGit(t, dir, "tag", "-a", "-m", "version one", "v1", "main")
}

type hoBundle struct {
	ID, Short, From, Name, Repo, Note, State, Error, Branch string
	AppliedRepo                                             string `json:"applied_repo"`
	Size, Done                                              int64
	Refs                                                    []struct{ Name, Commit string }
}

func hoBundles(t *testing.T, home string) map[string]hoBundle {
	t.Helper()
	out, stderr, code := run(t, "", "bundles", "--json", "--home", home)
	if code != 0 {
		t.Fatalf("bundles: exit %d: %s", code, stderr)
	}
	m := map[string]hoBundle{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var b hoBundle
		if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
			t.Fatalf("bundles line %q: %v", sc.Text(), err)
		}
		m[b.ID] = b
	}
	return m
}

func TestHandoffBetweenTwoNodes(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	hoRepo(t, src)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	hoGit(t, dst, "init", "-q", "-b", "trunk")

	up(t, a, "--name", "atlas", "--no-mdns")
	idA, addrA := nodeAddr(t, a)
	nodeB := up(t, b, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	idB, _ := nodeAddr(t, b)

	// Wait until atlas knows nova by name.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, _ := run(t, "", "who", "--json", "--home", a)
		if strings.Contains(out, idB) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("atlas never saw nova: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	out, stderr, code := run(t, "", "handoff", "@nova", "main", "feature", "topic", "v1", "--repo", src, "--note", "please review", "--json", "--home", a)
	if code != 0 {
		t.Fatalf("handoff: exit %d: %s", code, stderr)
	}
	var offer struct {
		ID, Short, To, Envelope string
		Delivered               bool
		Refs                    []struct{ Name, Commit string }
	}
	if err := json.Unmarshal([]byte(out), &offer); err != nil || len(offer.ID) != 64 || offer.Short != offer.ID[:12] {
		t.Fatalf("handoff --json printed %q (%v)", out, err)
	}
	if !offer.Delivered || offer.To != idB || len(offer.Refs) != 4 {
		t.Fatalf("handoff: %+v, want delivered to %s with 4 refs", offer, idB)
	}

	// bundles --wait with stdout not a terminal prints JSON progress lines,
	// then the bundle.
	out, stderr, code = run(t, "", "bundles", "--wait", offer.Short, "--timeout", "60s", "--home", b)
	if code != 0 {
		t.Fatalf("bundles --wait: exit %d: %s", code, stderr)
	}
	var sawProgress bool
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var p struct {
			Type, ID    string
			Done, Total int64
		}
		if json.Unmarshal([]byte(l), &p) == nil && p.Type == "progress" {
			if p.ID != offer.ID || p.Total <= 0 || p.Done > p.Total {
				t.Errorf("progress line %q", l)
			}
			sawProgress = true
		}
	}
	if !sawProgress {
		t.Errorf("bundles --wait printed no JSON progress line: %q", out)
	}
	got := hoBundles(t, b)[offer.ID]
	if got.State != "ready" || got.From != idA || got.Name != "atlas" || got.Note != "please review" || got.Repo != "src" || got.Done != got.Size || len(got.Refs) != 4 {
		t.Fatalf("bundles --json: %+v", got)
	}

	// Several branches: apply needs --ref.
	_, stderr, code = run(t, "", "apply", offer.Short, "--repo", dst, "--home", b)
	if code == 0 || !strings.Contains(stderr, "several branches") {
		t.Fatalf("apply without --ref: exit %d: %s", code, stderr)
	}
	for _, br := range []string{"main", "feature", "topic"} {
		out, stderr, code := run(t, "", "apply", offer.Short, "--repo", dst, "--ref", br, "--branch", "got-"+br, "--json", "--home", b)
		if code != 0 {
			t.Fatalf("apply %s: exit %d: %s", br, code, stderr)
		}
		var ap struct{ Branch, Commit, Ref string }
		if err := json.Unmarshal([]byte(out), &ap); err != nil {
			t.Fatalf("apply --json printed %q: %v", out, err)
		}
		if want := hoGit(t, src, "rev-parse", br); ap.Commit != want || ap.Branch != "got-"+br || ap.Ref != "refs/heads/"+br {
			t.Errorf("apply %s: %+v, want commit %s", br, ap, want)
		}
		if g, w := hoGit(t, dst, "rev-parse", "got-"+br+"^{tree}"), hoGit(t, src, "rev-parse", br+"^{tree}"); g != w {
			t.Errorf("%s: tree %s, want %s", br, g, w)
		}
		if g, w := hoGit(t, dst, "log", "--format=%H %T %P", "got-"+br), hoGit(t, src, "log", "--format=%H %T %P", br); g != w {
			t.Errorf("%s: history differs:\n got %s\nwant %s", br, g, w)
		}
	}
	if merges := hoGit(t, dst, "rev-list", "--merges", "got-main"); merges == "" {
		t.Error("the merge commit did not arrive")
	}
	if g, w := hoGit(t, dst, "cat-file", "-p", "got-feature:image.png"), hoGit(t, src, "cat-file", "-p", "feature:image.png"); g != w {
		t.Error("binary file differs")
	}
	if g := hoGit(t, dst, "status", "--porcelain"); g != "" {
		t.Errorf("apply touched the work tree: %q", g)
	}
	if got := hoBundles(t, b)[offer.ID]; got.State != "applied" || got.Branch != "got-topic" || got.AppliedRepo != dst {
		t.Errorf("after apply: %+v", got)
	}

	// A tampered bundle: nova is offline when the offer is made, the
	// sender's stored file is changed, then nova comes back and fetches.
	_ = nodeB.Process.Signal(syscall.SIGTERM)
	_ = nodeB.Wait()
	hoGit(t, src, "checkout", "-q", "-b", "tampered", "main")
	if err := os.WriteFile(filepath.Join(src, "late.txt"), []byte("late\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hoGit(t, src, "add", "late.txt")
	hoGit(t, src, "commit", "-q", "-m", "late")
	out, stderr, code = run(t, "", "handoff", "@"+idB, "tampered", "--repo", src, "--json", "--home", a)
	if code != 0 {
		t.Fatalf("handoff to offline agent: exit %d: %s", code, stderr)
	}
	var bad struct {
		ID        string
		Delivered bool
	}
	if err := json.Unmarshal([]byte(out), &bad); err != nil || bad.Delivered {
		t.Fatalf("handoff to an offline agent printed %q, want delivered false", out)
	}
	stored := filepath.Join(a, "bundles", bad.ID)
	data, err := os.ReadFile(stored)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(stored, data, 0o600); err != nil {
		t.Fatal(err)
	}
	refsBefore := hoGit(t, dst, "for-each-ref")

	up(t, b, "--name", "nova", "--no-mdns", "--rendezvous", addrA)
	deadline = time.Now().Add(90 * time.Second)
	for {
		got := hoBundles(t, b)[bad.ID]
		if got.State == "failed" {
			if !strings.Contains(got.Error, "sha256") {
				t.Errorf("failed bundle's error %q does not name the hash check", got.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tampered bundle never failed: %+v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, stderr, code = run(t, "", "apply", bad.ID[:12], "--repo", dst, "--branch", "evil", "--home", b)
	if code == 0 || !strings.Contains(stderr, "sha256") {
		t.Errorf("apply of the tampered bundle: exit %d: %s", code, stderr)
	}
	if after := hoGit(t, dst, "for-each-ref"); after != refsBefore {
		t.Errorf("refused bundle changed the repository's refs:\nbefore %s\nafter  %s", refsBefore, after)
	}
	for _, p := range []string{filepath.Join(b, "bundles", bad.ID), filepath.Join(b, "bundles", "incoming", bad.ID+".part")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is left behind (%v)", p, err)
		}
	}

	// The same through the MCP tools: atlas hands topic over, nova waits
	// for it and applies it.
	ma, _ := mcpSession(t, a)
	mb, _ := mcpSession(t, b)
	var mh struct {
		ID, Short string
		Delivered bool
	}
	if msg := callTool(t, ma, "handoff", map[string]any{"to": "@" + idB, "repo": src, "revs": []string{"topic"}, "note": "via mcp"}, &mh); msg != "" {
		t.Fatalf("mcp handoff: %s", msg)
	}
	var ml struct {
		Notice  string
		Bundles []struct{ ID, State, Note, From string }
	}
	if msg := callTool(t, mb, "bundles", map[string]any{"id": mh.Short, "wait_seconds": 60}, &ml); msg != "" {
		t.Fatalf("mcp bundles: %s", msg)
	}
	if len(ml.Bundles) != 1 || ml.Bundles[0].State != "ready" || ml.Bundles[0].Note != "via mcp" || ml.Bundles[0].From != idA || ml.Notice == "" {
		t.Fatalf("mcp bundles: %+v", ml)
	}
	var mapp struct{ Branch, Commit string }
	if msg := callTool(t, mb, "apply", map[string]any{"id": mh.Short, "repo": dst}, &mapp); msg != "" {
		t.Fatalf("mcp apply: %s", msg)
	}
	if want := hoGit(t, src, "rev-parse", "topic"); mapp.Commit != want || mapp.Branch != "confab/"+mh.Short {
		t.Errorf("mcp apply: %+v, want commit %s on confab/%s", mapp, want, mh.Short)
	}
}
