package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Node is what mesh needs of the local libp2p node; *node.Host satisfies it.
type Node interface {
	Host() host.Host
	PubSub() *pubsub.PubSub
	Key() crypto.PrivKey
}

// History is what mesh needs of durable history; *store.DB satisfies it.
// Append is idempotent by id, returns "" as the cursor of a duplicate, and is
// durable when it returns nil. All envelopes of one call are stored together
// or not at all.
type History interface {
	Append(ctx context.Context, envs []*Envelope) ([]string, error)
	After(ctx context.Context, channel, cursor string, limit int) ([]*Envelope, []string, error)
	Before(ctx context.Context, channel, cursor string, limit int) ([]*Envelope, []string, error)
	HighWater(ctx context.Context, channel string) (map[string]uint64, error)
	Since(ctx context.Context, channel, author string, afterSeq uint64, limit int) ([]*Envelope, error)
	Get(ctx context.Context, id string) (*Envelope, error)
}

// topicPrefix namespaces channel topics; the presence topic is separate.
const (
	topicPrefix   = "/confab/chan/1/"
	presenceTopic = "/confab/presence/1"
)

// Mesh is one agent's membership in confab channels. See doc.go.
type Mesh struct {
	cfg  config
	node Node
	hist History
	self string
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	rate *authorRates

	mu       sync.Mutex // guards channels, subs, closed
	channels map[string]*channel
	subs     map[*Subscription]struct{}
	closed   bool

	presence *presence
	stats    Stats

	cards cards    // card.go
	dx    *direct  // direct.go
	priv  *private // private.go
}

// Stats are counters for metrics. Read them with Mesh.Stats.
type Stats struct {
	Delivered, Duplicates, Published          uint64
	RejectedInvalid, IgnoredWindow, RateDrops uint64
	SubscriberDrops, HeldBack, GapsSkipped    uint64
	SyncRequests, SyncServed, SyncEnvelopesIn uint64
	StoreErrors                               uint64
}

// New starts a mesh on n with history h. It rejoins the channels of the
// state file, if any. The caller must call Close, before closing n and h.
func New(n Node, h History, opts ...Option) (*Mesh, error) {
	cfg := defaults()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if n == nil || h == nil {
		return nil, errors.New("mesh: nil node or history")
	}
	if n.Key().Type() != crypto.Ed25519 {
		return nil, errors.New("mesh: node key is not ed25519")
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mesh{
		cfg:      cfg,
		node:     n,
		hist:     h,
		self:     n.Host().ID().String(),
		log:      cfg.logger,
		ctx:      ctx,
		cancel:   cancel,
		rate:     newAuthorRates(cfg.rate, cfg.burst),
		channels: map[string]*channel{},
		subs:     map[*Subscription]struct{}{},
	}
	n.Host().SetStreamHandler(syncProtocol, m.serveSync)
	m.priv = newPrivate(cfg.stateFile, m.log)
	n.Host().SetStreamHandler(privateProtocol, m.servePrivate)
	m.cards.cache = map[string]cachedCard{}
	m.dx = newDirect()
	n.Host().SetStreamHandler(cardProtocol, m.serveCard)
	n.Host().SetStreamHandler(dmProtocol, m.serveDM)
	p, err := startPresence(m)
	if err != nil {
		m.Close()
		return nil, err
	}
	m.presence = p
	m.wg.Add(3)
	go m.outboxLoop()
	go m.callLoop()
	go m.refreshLoop()
	if d := m.dht(); d != nil && len(m.cfg.caps) > 0 {
		m.wg.Add(1)
		go m.provideLoop(d)
	}
	for _, c := range m.loadState() {
		if err := m.Join(ctx, c); err != nil {
			m.log.Warn("rejoin failed", "channel", c, "err", err)
		}
	}
	return m, nil
}

// Close leaves every channel and stops every goroutine of the mesh. It is
// idempotent. It does not close the node or the history.
func (m *Mesh) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		chans := m.channels
		m.channels = map[string]*channel{}
		subs := m.subs
		m.subs = map[*Subscription]struct{}{}
		m.mu.Unlock()
		if m.presence != nil {
			m.presence.goodbye()
		}
		m.node.Host().RemoveStreamHandler(syncProtocol)
		m.node.Host().RemoveStreamHandler(privateProtocol)
		m.node.Host().RemoveStreamHandler(cardProtocol)
		m.node.Host().RemoveStreamHandler(dmProtocol)
		for _, c := range chans {
			c.stop()
		}
		for s := range subs {
			s.end(ErrClosed)
		}
		m.cancel()
		if m.presence != nil {
			m.presence.stop()
		}
		m.wg.Wait()
	})
	return nil
}

// Info describes the local node.
func (m *Mesh) Info() Info {
	h := m.node.Host()
	var addrs []string
	for _, a := range h.Addrs() {
		addrs = append(addrs, a.String()+"/p2p/"+m.self)
	}
	return Info{ID: m.self, Name: m.cfg.name, Caps: m.cfg.caps, Addrs: addrs, Channels: m.Channels()}
}

// Self returns the local peer id.
func (m *Mesh) Self() string { return m.self }

// Stats returns a snapshot of the counters.
func (m *Mesh) Stats() Stats { return m.stats.snapshot() }

// Channels lists the joined channels, sorted.
func (m *Mesh) Channels() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.channels))
	for c := range m.channels {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Join subscribes to channel's topic, loads its history state and starts
// catching up with the peers in it. Joining a joined channel is a no-op.
func (m *Mesh) Join(ctx context.Context, name string) error {
	if !ValidChannel(name) || (name[0] != '#' && !isPrivate(name)) {
		return fmt.Errorf("mesh: join %q: %w", trunc(name), ErrBadChannel)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if _, ok := m.channels[name]; ok {
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	c, err := m.openChannel(ctx, name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.stop()
		return ErrClosed
	}
	if _, dup := m.channels[name]; dup {
		m.mu.Unlock()
		c.stop()
		return nil
	}
	m.channels[name] = c
	m.mu.Unlock()
	c.start()
	m.saveState()
	m.presence.changed()
	return nil
}

// Leave unsubscribes from channel. Its history stays in the store.
func (m *Mesh) Leave(ctx context.Context, name string) error {
	if !ValidChannel(name) {
		return fmt.Errorf("mesh: leave %q: %w", trunc(name), ErrBadChannel)
	}
	m.mu.Lock()
	c, ok := m.channels[name]
	delete(m.channels, name)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("mesh: leave %s: %w", name, ErrNotJoined)
	}
	c.stop()
	m.saveState()
	m.presence.changed()
	return nil
}

func (m *Mesh) channel(name string) (*channel, error) {
	if !ValidChannel(name) {
		return nil, fmt.Errorf("mesh: %q: %w", trunc(name), ErrBadChannel)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	c, ok := m.channels[name]
	if !ok {
		return nil, fmt.Errorf("mesh: %s: %w", name, ErrNotJoined)
	}
	return c, nil
}

// Send signs a new envelope from this node, stores it durably, publishes it
// and returns it with its cursor. The channel must be joined.
func (m *Mesh) Send(ctx context.Context, channel, kind, content, replyTo string) (Record, error) {
	c, it, err := m.newSend(channel, kind, content, replyTo)
	if err != nil {
		return Record{}, err
	}
	return c.submit(ctx, it)
}

// SendAsync is Send for a caller that keeps several messages in flight: it
// returns once the channel's loop has the message queued, and the loop later
// calls done (if not nil) with what Send would have returned, after the
// envelope is durable (or failed). Messages of one caller keep their order.
// The loop's queue is bounded (inQueue): when it is full SendAsync waits for
// room, so the queue is also the caller's window. A nil error from
// SendAsync means only "queued"; the outcome is done's. done runs on the
// channel's loop: it must return quickly and must not call Send, SendAsync
// or Publish (they would wait for that same loop); when the channel stops
// it runs on the goroutine stopping it. If ctx ends or the mesh
// closes while SendAsync waits for room, it returns the error and done is
// not called; once queued, done is called exactly once (with ErrClosed if the
// channel stops first).
func (m *Mesh) SendAsync(ctx context.Context, channel, kind, content, replyTo string, done func(Record, error)) error {
	c, it, err := m.newSend(channel, kind, content, replyTo)
	if err != nil {
		return err
	}
	it.done = done
	return c.enqueue(ctx, it)
}

// newSend checks a local message and wraps it for its channel's loop, which
// assigns seq and ts and signs it.
func (m *Mesh) newSend(channel, kind, content, replyTo string) (*channel, *item, error) {
	if kind == "" {
		kind = "msg"
	}
	channel = m.resolveChannel(channel)
	c, err := m.channel(channel)
	if err != nil {
		return nil, nil, err
	}
	if isPrivate(channel) { // private.go: members see the text, the wire a ciphertext
		if content, err = m.encryptFor(channel, kind, content, replyTo); err != nil {
			return nil, nil, err
		}
		kind = KindEncrypted
	}
	probe := &Envelope{Channel: channel, From: m.self, Name: m.cfg.name, Seq: 1, TS: 1, Kind: kind, Content: content, ReplyTo: replyTo}
	if err := probe.Validate(); err != nil {
		return nil, nil, fmt.Errorf("mesh: send: %w", err)
	}
	return c, &item{local: probe}, nil
}

// Publish takes an envelope signed elsewhere (a thin client), verifies it,
// stores it durably and publishes it. Its seq must be the next one of its
// author in the channel (ErrSeqGap otherwise); an envelope already stored is
// acknowledged again with an empty cursor.
func (m *Mesh) Publish(ctx context.Context, env *Envelope) (Record, error) {
	if env == nil {
		return Record{}, fmt.Errorf("mesh: publish: %w", ErrMalformed)
	}
	if err := env.Verify(); err != nil {
		return Record{}, fmt.Errorf("mesh: publish: %w", err)
	}
	c, err := m.channel(env.Channel)
	if err != nil {
		return Record{}, err
	}
	return c.submit(ctx, &item{env: env, publish: true})
}

// After pages channel's history oldest first, strictly after cursor.
func (m *Mesh) After(ctx context.Context, channel, cursor string, limit int) ([]Record, error) {
	channel = m.resolveChannel(channel)
	if !ValidChannel(channel) {
		return nil, fmt.Errorf("mesh: history %q: %w", trunc(channel), ErrBadChannel)
	}
	envs, curs, err := m.hist.After(ctx, channel, cursor, limit)
	return records(envs, curs), err
}

// Before returns the newest limit records strictly before cursor, oldest first.
func (m *Mesh) Before(ctx context.Context, channel, cursor string, limit int) ([]Record, error) {
	channel = m.resolveChannel(channel)
	if !ValidChannel(channel) {
		return nil, fmt.Errorf("mesh: history %q: %w", trunc(channel), ErrBadChannel)
	}
	envs, curs, err := m.hist.Before(ctx, channel, cursor, limit)
	return records(envs, curs), err
}

func records(envs []*Envelope, curs []string) []Record {
	out := make([]Record, 0, len(envs))
	for i, e := range envs {
		out = append(out, Record{Env: e, Cursor: curs[i]})
	}
	return out
}

// Who lists the agents whose presence is current, those in channel only if
// channel is not empty, sorted by name then id. The local node is included.
func (m *Mesh) Who(ctx context.Context, channel string) []Peer {
	return m.presence.list(channel)
}

// Resolve turns "@name" or "@peerid" into a peer id using presence. An
// ambiguous name is an error that lists the candidates.
func (m *Mesh) Resolve(target string) (string, error) {
	return m.presence.resolve(target)
}

// deliver fans a stored record out to subscribers without blocking: a
// subscriber whose queue is full is ended with ErrSlowConsumer.
func (m *Mesh) deliver(r Record) {
	m.mu.Lock()
	var slow []*Subscription
	for s := range m.subs {
		if !s.wants(r.Env.Channel) {
			continue
		}
		select {
		case s.ch <- r:
		default:
			slow = append(slow, s)
			delete(m.subs, s)
		}
	}
	m.mu.Unlock()
	for _, s := range slow {
		m.stats.add(&m.stats.SubscriberDrops, 1)
		s.end(ErrSlowConsumer)
	}
}

func (m *Mesh) loadState() []string {
	if m.cfg.stateFile == "" {
		return nil
	}
	b, err := os.ReadFile(m.cfg.stateFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("read state", "err", err)
		}
		return nil
	}
	var st struct {
		Channels []string `json:"channels"`
	}
	if len(b) > 1<<20 || json.Unmarshal(b, &st) != nil {
		m.log.Warn("state file unreadable; starting with no channels", "path", m.cfg.stateFile)
		return nil
	}
	var out []string
	for _, c := range st.Channels {
		if ValidChannel(c) && (c[0] == '#' || isPrivate(c)) {
			out = append(out, c)
		}
	}
	return out
}

func (m *Mesh) saveState() {
	if m.cfg.stateFile == "" {
		return
	}
	b, _ := json.Marshal(struct {
		Channels []string `json:"channels"`
	}{m.Channels()})
	if err := writeFileAtomic(m.cfg.stateFile, b); err != nil {
		m.log.Warn("write state", "err", err)
	}
}

// topicName maps a channel to its gossipsub topic. A private channel's topic
// derives from its key (private.go); "" when this node holds no key.
func (m *Mesh) topicName(channel string) string {
	if isPrivate(channel) {
		return m.priv.topic(channel)
	}
	return topicPrefix + channel
}

func peerID(s string) (peer.ID, error) { return peer.Decode(s) }
