package wsgateway

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
)

// memBackend stands in for *mesh.Mesh to test the protocol layer only: an
// in-memory, serialised store whose cursors are 16 hex digits like the real
// one, and subscriptions that end with mesh.ErrSlowConsumer on overflow.
// End-to-end tests with the real mesh live above this package.
type memBackend struct {
	key  crypto.PrivKey
	id   string
	name string

	slowDrops atomic.Int64

	mu     sync.Mutex // guards the fields below
	joined map[string]bool
	recs   []mesh.Record // cursor order
	seq    map[string]uint64
	subs   map[*memSub]struct{}
	peers  []mesh.Peer
}

type memSub struct {
	b        *memBackend
	channels []string
	ch       chan mesh.Record
	once     sync.Once
	err      atomic.Value
}

func (s *memSub) C() <-chan mesh.Record { return s.ch }
func (s *memSub) Err() error {
	if e, ok := s.err.Load().(error); ok {
		return e
	}
	return nil
}
func (s *memSub) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	s.end(nil)
}
func (s *memSub) end(err error) {
	s.once.Do(func() {
		if err != nil {
			s.err.Store(err)
		}
		close(s.ch)
	})
}

func newKey(t testing.TB) (crypto.PrivKey, string) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id.String()
}

func newMemBackend(t testing.TB) *memBackend {
	k, id := newKey(t)
	return &memBackend{
		key: k, id: id, name: "tester",
		joined: map[string]bool{},
		seq:    map[string]uint64{},
		subs:   map[*memSub]struct{}{},
		peers: []mesh.Peer{{ID: id, Name: "tester", Status: "online", Caps: []string{"go"},
			Channels: []string{"#a"}, LastSeen: time.UnixMilli(1700000000000)}},
	}
}

func (b *memBackend) Info() mesh.Info {
	b.mu.Lock()
	defer b.mu.Unlock()
	var chs []string
	for c := range b.joined {
		chs = append(chs, c)
	}
	slices.Sort(chs)
	return mesh.Info{ID: b.id, Name: b.name, Caps: []string{"go"}, Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Channels: chs}
}

func (b *memBackend) Join(ctx context.Context, ch string) error {
	if !mesh.ValidChannel(ch) {
		return fmt.Errorf("join %q: %w", ch, mesh.ErrBadChannel)
	}
	b.mu.Lock()
	b.joined[ch] = true
	b.mu.Unlock()
	return nil
}

func (b *memBackend) Leave(ctx context.Context, ch string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.joined[ch] {
		return fmt.Errorf("leave %s: %w", ch, mesh.ErrNotJoined)
	}
	delete(b.joined, ch)
	return nil
}

func (b *memBackend) Send(ctx context.Context, ch, kind, content, replyTo string) (mesh.Record, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.joined[ch] {
		return mesh.Record{}, fmt.Errorf("send %s: %w", ch, mesh.ErrNotJoined)
	}
	b.seq[ch]++
	env := &mesh.Envelope{Channel: ch, Name: b.name, Seq: b.seq[ch], TS: time.Now().UnixMilli(),
		Kind: kind, Content: content, ReplyTo: replyTo}
	if err := env.Sign(b.key); err != nil {
		return mesh.Record{}, err
	}
	return b.storeLocked(env), nil
}

func (b *memBackend) Publish(ctx context.Context, env *mesh.Envelope) (mesh.Record, error) {
	if err := env.Verify(); err != nil {
		return mesh.Record{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.storeLocked(env), nil
}

func (b *memBackend) storeLocked(env *mesh.Envelope) mesh.Record {
	r := mesh.Record{Env: env, Cursor: fmt.Sprintf("%016x", len(b.recs)+1)}
	b.recs = append(b.recs, r)
	for s := range b.subs {
		if len(s.channels) > 0 && !slices.Contains(s.channels, env.Channel) {
			continue
		}
		select {
		case s.ch <- r:
		default:
			delete(b.subs, s)
			b.slowDrops.Add(1)
			s.end(mesh.ErrSlowConsumer)
		}
	}
	return r
}

func (b *memBackend) Subscribe(channels []string, queue int) Subscription {
	s := &memSub{b: b, channels: slices.Clone(channels), ch: make(chan mesh.Record, queue)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

var cursorRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

func checkCursor(c string) error {
	if c != "" && !cursorRE.MatchString(c) {
		return fmt.Errorf("cursor %q: %w", c, mesh.ErrBadCursor)
	}
	return nil
}

func (b *memBackend) After(ctx context.Context, ch, cursor string, limit int) ([]mesh.Record, error) {
	if err := checkCursor(cursor); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []mesh.Record
	for _, r := range b.recs {
		if r.Env.Channel == ch && r.Cursor > cursor {
			out = append(out, r)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

func (b *memBackend) Before(ctx context.Context, ch, cursor string, limit int) ([]mesh.Record, error) {
	if err := checkCursor(cursor); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []mesh.Record
	for i := len(b.recs) - 1; i >= 0 && len(out) < limit; i-- {
		r := b.recs[i]
		if r.Env.Channel == ch && (cursor == "" || r.Cursor < cursor) {
			out = append(out, r)
		}
	}
	slices.Reverse(out)
	return out, nil
}

func (b *memBackend) Who(ctx context.Context, ch string) []mesh.Peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.peers)
}

// all returns every stored record of the given channels (all if none).
func (b *memBackend) all(channels ...string) []mesh.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []mesh.Record
	for _, r := range b.recs {
		if len(channels) == 0 || slices.Contains(channels, r.Env.Channel) {
			out = append(out, r)
		}
	}
	return out
}
