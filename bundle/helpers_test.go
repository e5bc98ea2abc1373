package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confabhq/confab/internal/netnstest"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

// withResetAfter makes the server reset the first transfer stream after n
// body bytes, to exercise resume.
func withResetAfter(n int64) ServerOption {
	return func(c *serverConfig) error { c.resetAfter = n; return nil }
}

// withOnServe calls f for every request the server accepts.
func withOnServe(f func(hash string, offset int64)) ServerOption {
	return func(c *serverConfig) error { c.onServe = f; return nil }
}

func needGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
}

// git runs git in dir with a fixed identity and dates, failing the test on error.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com", "GIT_AUTHOR_DATE=2024-01-02T03:04:05Z",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com", "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(string(out))
}

func initRepo(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "config", "commit.gpgsign", "false")
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeRepo builds a repository with merge commits, a binary file, branches
// main, feature and topic/x, and tags v1.0 (annotated) and light.
func makeRepo(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src repo")
	initRepo(t, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	bin := make([]byte, 64<<10)
	for i := range bin {
		bin[i] = byte(rng.UintN(256))
	}
	writeFile(t, filepath.Join(dir, "README.md"), []byte("hello\n"))
	writeFile(t, filepath.Join(dir, "img.bin"), bin)
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "first")
	git(t, dir, "checkout", "-q", "-b", "feature")
	writeFile(t, filepath.Join(dir, "feature.go"), []byte("package f\n"))
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "feature work")
	git(t, dir, "checkout", "-q", "main")
	writeFile(t, filepath.Join(dir, "README.md"), []byte("hello\nworld\n"))
	bin[0] ^= 0xff
	writeFile(t, filepath.Join(dir, "img.bin"), bin)
	git(t, dir, "commit", "-q", "-am", "main work")
	git(t, dir, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
	git(t, dir, "tag", "-a", "-m", "release", "v1.0")
	git(t, dir, "checkout", "-q", "-b", "topic/x")
	writeFile(t, filepath.Join(dir, "x.txt"), []byte("x\n"))
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "topic")
	git(t, dir, "merge", "-q", "--no-ff", "-m", "merge main", "main")
	git(t, dir, "tag", "light")
	git(t, dir, "checkout", "-q", "main")
	writeFile(t, filepath.Join(dir, "later.txt"), []byte("later\n"))
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "later")
	return dir
}

func refsOf(t testing.TB, dir string) string {
	t.Helper()
	return git(t, dir, "for-each-ref", "--format=%(objectname) %(refname)")
}

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// pair returns a sender and a receiver host that know each other's address.
func pair(t testing.TB) (sender, receiver host.Host) {
	t.Helper()
	sender, receiver = newHost(t), newHost(t)
	receiver.Peerstore().AddAddrs(sender.ID(), sender.Addrs(), peerstore.PermanentAddrTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := receiver.Connect(ctx, peer.AddrInfo{ID: sender.ID(), Addrs: sender.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return sender, receiver
}

func newServer(t testing.TB, h host.Host, dir string, opts ...ServerOption) *Server {
	t.Helper()
	s, err := NewServer(h, dir, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storeFile writes data content-addressed into dir and returns an offer for it.
func storeFile(t testing.TB, dir string, data []byte) *Offer {
	t.Helper()
	o := &Offer{Type: OfferType, V: 1, Hash: sha256hex(data), Size: int64(len(data)),
		Refs: []Ref{{Name: "refs/heads/main", Commit: strings.Repeat("a", 40)}}, Created: 1}
	writeFile(t, filepath.Join(dir, o.Hash), data)
	return o
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// fileHash streams path through sha256.
func fileHash(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// processCPU is the user+system CPU time this process has used so far: on a
// shared machine CPU per byte is steadier than wall-clock throughput.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU seconds per GiB moved over b.N transfers of size bytes.
func reportCPU(b *testing.B, cpu time.Duration, size int64) {
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(size)/(1<<30)), "cpu-s/GiB")
}
