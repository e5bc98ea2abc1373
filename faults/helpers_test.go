package faults

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/internal/netnstest"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/store"
	"github.com/confabhq/confab/wsgateway"
)

// long selects the long form of the suite: more iterations, more traffic.
//
//	go test ./faults -run . -long -timeout 30m
var long = flag.Bool("long", false, "run the long form of the fault suite (see docs/reliability.md)")

// iterations overrides the crash loop's iteration count in either form.
var iterations = flag.Int("iterations", 0, "crash iterations (default 5, or 100 with -long)")

func TestMain(m *testing.M) { netnstest.Main(m) }

// pick returns short or, with -long, longv.
func pick[T any](short, longv T) T {
	if *long {
		return longv
	}
	return short
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	binErr    error
)

// confabBinary builds cmd/confab once per test binary run.
func confabBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "confab-faults-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "confab")
		cmd := exec.Command("go", "build", "-o", binPath, "../cmd/confab")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// shortTemp is a temp dir with a short path: homes hold a unix socket, whose
// path is limited to 107 bytes, and t.TempDir names get long.
func shortTemp(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// proc is one agent run as a real `confab up` process on its own home.
type proc struct {
	t      testing.TB
	name   string
	home   string
	prefix []string // command run in front of the binary (ip netns exec ..., unshare ...)
	args   []string // extra `confab up` arguments
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *syncBuffer
	starts int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		s.b.Reset()
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newProc(t testing.TB, home, name string, args ...string) *proc {
	p := &proc{t: t, name: name, home: home, args: args, stderr: &syncBuffer{}}
	t.Cleanup(p.stop)
	return p
}

func (p *proc) socket() string { return "unix://" + filepath.Join(p.home, "confab.sock") }

// start runs `confab up` and waits until its gateway answers.
func (p *proc) start() {
	p.t.Helper()
	if err := p.tryStart(30 * time.Second); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// tryStart is start that reports failure instead of ending the test.
func (p *proc) tryStart(wait time.Duration) error {
	argv := append(slices.Clone(p.prefix), confabBinary(p.t), "up", "--home", p.home, "--name", p.name)
	argv = append(argv, p.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	fmt.Fprintf(p.stderr, "--- start %d: %v\n", p.starts, argv)
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	p.starts++
	p.cmd = cmd
	done := make(chan struct{})
	p.done = done
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(wait)
	for {
		select {
		case <-done:
			return fmt.Errorf("confab up exited: %v\n%s", cmd.ProcessState, p.stderr)
		default:
		}
		if c, err := p.dial(); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not come up within %v:\n%s", wait, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) dial() (*wsgateway.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := wsgateway.Dial(ctx, p.socket())
	if err != nil {
		return nil, err
	}
	if _, err := c.Info(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to die.
func (p *proc) kill() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop ends the process gracefully (SIGTERM), then by force.
func (p *proc) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

// info asks the running node for its identity.
func (p *proc) info(t testing.TB) mesh.Info {
	t.Helper()
	c, err := p.dial()
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	defer c.Close()
	i, err := c.Info(context.Background())
	if err != nil {
		t.Fatalf("%s: info: %v", p.name, err)
	}
	return i
}

// historyPage is the page size the suite reads history with. It is one
// below wsgateway.MaxHistoryLimit on purpose: a history request of exactly
// MaxHistoryLimit never reports more pages (TestHistoryPagingComplete).
const historyPage = wsgateway.MaxHistoryLimit - 1

// historyOf pages a channel's whole history through a gateway client,
// oldest first.
func historyOf(ctx context.Context, c *wsgateway.Client, channel string) ([]mesh.Record, error) {
	return historyPaged(ctx, c, channel, historyPage)
}

func historyPaged(ctx context.Context, c *wsgateway.Client, channel string, limit int) ([]mesh.Record, error) {
	var all []mesh.Record
	before := ""
	for range 100000 {
		page, more, err := c.History(ctx, channel, before, limit)
		if err != nil {
			return nil, err
		}
		all = append(slices.Clone(page), all...)
		if !more || len(page) == 0 {
			return all, nil
		}
		before = page[0].Cursor
	}
	return nil, errors.New("history: too many pages")
}

// procHistory is historyOf over a fresh connection to p.
func procHistory(p *proc, channel string) ([]mesh.Record, error) {
	c, err := p.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return historyOf(ctx, c, channel)
}

// sender sends keyed messages through p's gateway until ctx ends, recording
// every attempt in h. It reconnects whenever the node goes away. It returns
// the number of attempts.
func sender(ctx context.Context, h *History, p *proc, channel, prefix string, pace time.Duration) int {
	var c *wsgateway.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	n := 0
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = p.dial(); err != nil {
				c = nil
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		key := fmt.Sprintf("%s-%06d", prefix, n)
		n++
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		ack, err := c.Send(sctx, channel, "msg", key, "")
		cancel()
		op := Op{Key: key, Via: p.name, Channel: channel}
		if err != nil {
			op.Err = err.Error()
			c.Close()
			c = nil
		} else {
			op.ID, op.Seq, op.Acked = ack.ID, ack.Seq, true
		}
		h.Record(op)
		if pace > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pace):
			}
		}
	}
	return n
}

// ackedKeys lists the keys of the acknowledged attempts on channel.
func ackedKeys(h *History, channel string) map[string]bool {
	out := map[string]bool{}
	for _, op := range h.Ops() {
		if op.Acked && op.Channel == channel {
			out[op.Key] = true
		}
	}
	return out
}

// converged reports whether p's history of channel holds every key in want,
// and how many are missing.
func converged(p *proc, channel string, want map[string]bool) (bool, int, error) {
	recs, err := procHistory(p, channel)
	if err != nil {
		return false, len(want), err
	}
	have := map[string]bool{}
	for _, r := range recs {
		have[r.Env.Content] = true
	}
	missing := 0
	for k := range want {
		if !have[k] {
			missing++
		}
	}
	return missing == 0, missing, nil
}

// waitConverged waits until every proc holds every acknowledged message,
// then observes every proc's history into h.
func waitConverged(t testing.TB, h *History, channel string, d time.Duration, ps ...*proc) time.Duration {
	t.Helper()
	start := time.Now()
	want := ackedKeys(h, channel)
	deadline := start.Add(d)
	for _, p := range ps {
		for {
			ok, missing, err := converged(p, channel, want)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: still missing %d of %d acknowledged messages after %v (err %v)", p.name, missing, len(want), d, err)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	took := time.Since(start)
	for _, p := range ps {
		recs, err := procHistory(p, channel)
		if err != nil {
			t.Fatalf("%s: history: %v", p.name, err)
		}
		h.Observe(p.name, channel, ObsFromRecords(recs))
	}
	return took
}

// noLeaks fails t if goroutines started during the test outlive it. Call it
// first in a test, so it runs after every other cleanup.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// memAgent is a node, store and mesh in this process.
type memAgent struct {
	dir  string
	name string
	node *node.Host
	db   *store.DB
	mesh *mesh.Mesh
	once sync.Once
}

// startMem starts an in-process agent on dir without mDNS; connect peers
// with connect.
func startMem(t testing.TB, dir, name string, opts ...mesh.Option) *memAgent {
	t.Helper()
	key, err := node.LoadIdentity(filepath.Join(dir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := node.New(node.WithIdentity(key), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	cfg := store.DefaultConfig()
	cfg.Dir = filepath.Join(dir, "store")
	db, err := store.New(cfg)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	opts = append([]mesh.Option{mesh.WithName(name), mesh.WithStateFile(filepath.Join(dir, "state.json")),
		mesh.WithSyncInterval(time.Second), mesh.WithPresence(500*time.Millisecond, 3*time.Second)}, opts...)
	m, err := mesh.New(h, db, opts...)
	if err != nil {
		db.Close()
		h.Close()
		t.Fatal(err)
	}
	a := &memAgent{dir: dir, name: name, node: h, db: db, mesh: m}
	t.Cleanup(a.stop)
	return a
}

func (a *memAgent) stop() {
	a.once.Do(func() {
		a.mesh.Close()
		a.node.Close()
		a.db.Close()
	})
}

// connect dials b from a.
func connect(t testing.TB, a, b interface{ Host() *node.Host }) {
	t.Helper()
	bh := b.Host().Host()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Host().Host().Connect(ctx, peer.AddrInfo{ID: bh.ID(), Addrs: bh.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func (a *memAgent) Host() *node.Host { return a.node }

// history is a's whole stored history of channel, paged with After.
func (a *memAgent) history(t testing.TB, channel string) []mesh.Record {
	t.Helper()
	var all []mesh.Record
	cursor := ""
	for {
		recs, err := a.mesh.After(context.Background(), channel, cursor, store.MaxLimit)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
		if len(recs) < store.MaxLimit {
			return all
		}
		cursor = recs[len(recs)-1].Cursor
	}
}

// hasKey reports whether a stored a record whose content is key.
func (a *memAgent) hasKeys(t testing.TB, channel string, keys ...string) bool {
	have := map[string]bool{}
	for _, r := range a.history(t, channel) {
		have[r.Env.Content] = true
	}
	for _, k := range keys {
		if !have[k] {
			return false
		}
	}
	return true
}

// needRoot skips tests that need root outside the netns wrapper (which
// already refuses to run without it).
func needRoot(t testing.TB) {
	if os.Geteuid() != 0 || runtime.GOOS != "linux" {
		t.Skip("needs root on Linux")
	}
}

// summaryDir, if set, receives one file per test with its summary (the
// long form's numbers for docs/reliability.md).
var summaryDir = flag.String("summary-dir", "", "write each fault test's summary to DIR/<test>.txt")

func writeSummary(t testing.TB, name, s string) {
	if *summaryDir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(*summaryDir, name+".txt"), []byte(s), 0o644); err != nil {
		t.Errorf("write summary: %v", err)
	}
}
