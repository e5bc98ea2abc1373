package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Direct message protocol. The sender opens a stream, writes one envelope in
// binary form prefixed by its 4-byte big-endian length and closes its write
// side; the recipient verifies it, stores it durably and answers one byte:
// dmOK (stored, or already stored), dmRefused (will never be accepted: drop
// it) or dmLater (try again later). See docs/protocol.md.
//
// Addressing: a DM's channel is "@<recipient id>", as signed. Both sides
// store it under that channel, so on each node "@<own id>" holds every DM
// received and "@<peer id>" every DM sent to that peer; Thread merges the two
// into one conversation.
const (
	dmProtocol = "/confab/dm/1"
	dmTimeout  = 10 * time.Second
	dmOK       = 0
	dmRefused  = 1
	dmLater    = 2
	// DefaultOutbox bounds the DMs waiting for unreachable recipients.
	DefaultOutbox = 1024
	outboxRetry   = 15 * time.Second
	eventQueue    = 256
)

// Errors of direct messages.
var (
	ErrOutboxFull = errors.New("outbox full: too many messages wait for offline agents")
	ErrRefused    = errors.New("recipient refused the message")
)

// WithOutbox bounds how many direct messages wait, in memory, for recipients
// that are not reachable. Default DefaultOutbox.
func WithOutbox(n int) Option {
	return func(c *config) error {
		if n <= 0 {
			return errors.New("mesh: outbox size must be positive")
		}
		c.outboxMax = n
		return nil
	}
}

// direct holds the state of direct messages.
//
// Lock order: sendMu before mu (SendDirect never holds both today); mu is a
// leaf: nothing else is locked while it is held. The outbox file is written
// under mu so that its lines and the in-memory queues keep the same order.
type direct struct {
	sendMu sync.Mutex    // serialises seq allocation, signing and storing of our DMs
	kick   chan struct{} // wakes the outbox loop
	events chan *Envelope
	ready  chan struct{} // closed by outboxLoop once the outbox file is loaded

	mu      sync.Mutex // guards outbox, outN, file, fileErr
	outbox  map[peer.ID][]*Envelope
	outN    int
	file    *outboxFile // outbox.go; nil without WithOutboxFile
	fileErr error       // the outbox file could not be rewritten at start
}

func newDirect() *direct {
	return &direct{kick: make(chan struct{}, 1), events: make(chan *Envelope, eventQueue), ready: make(chan struct{}), outbox: map[peer.ID][]*Envelope{}}
}

// waitReady waits until the outbox loaded from its file (outboxLoop).
func (m *Mesh) waitReady(ctx context.Context) error {
	select {
	case <-m.dx.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if m.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

func (d *direct) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// peerSeen is called when a peer appears (presence): flush its DMs.
func (d *direct) peerSeen(id string) {
	pid, err := peer.Decode(id)
	if err != nil {
		return
	}
	d.mu.Lock()
	n := len(d.outbox[pid])
	d.mu.Unlock()
	if n > 0 {
		d.wake()
	}
}

// Pending reports how many direct messages wait in the outbox, including
// those reloaded from the outbox file (it waits until that file is read).
func (m *Mesh) Pending() int {
	<-m.dx.ready
	m.dx.mu.Lock()
	defer m.dx.mu.Unlock()
	return m.dx.outN
}

// resolvePeer accepts "@name", "@peerid" or a bare peer id.
func (m *Mesh) resolvePeer(target string) (peer.ID, error) {
	if !strings.HasPrefix(target, "@") {
		target = "@" + target
	}
	id, err := m.Resolve(target)
	if err != nil {
		return "", err
	}
	if id == m.self {
		return "", fmt.Errorf("mesh: %s is this agent: %w", trunc(target), ErrUnknownAgent)
	}
	return peer.Decode(id)
}

// SendDirect signs a direct message to target ("@name" unique among present
// agents, "@peerid", or a bare peer id), stores it durably in channel
// "@<recipient id>", shows it to local subscribers and delivers it over
// /confab/dm/1. delivered reports whether the recipient acknowledged that it
// stored it; if not, the message waits in the outbox and is retried when the
// recipient appears (presence, a new connection) and every 15 s. The
// recipient stores each message once (by id), so retries never duplicate.
// With WithOutboxFile a queued message is on disk before SendDirect returns
// and is retried after a restart of this node too; if that write fails the
// message is not queued and the error says so (the sent copy stays in
// history). Errors: ErrUnknownAgent, ErrOutboxFull, ErrRefused, ErrMalformed,
// ErrClosed.
func (m *Mesh) SendDirect(ctx context.Context, target, kind, content, replyTo string) (rec Record, delivered bool, err error) {
	if err := m.waitReady(ctx); err != nil {
		return Record{}, false, err
	}
	pid, err := m.resolvePeer(target)
	if err != nil {
		return Record{}, false, err
	}
	if kind == "" {
		kind = "msg"
	}
	if kind == cardKind || kind == "presence" {
		return Record{}, false, fmt.Errorf("mesh: dm: kind %q is reserved: %w", kind, ErrMalformed)
	}
	m.dx.mu.Lock()
	full := m.dx.outN >= m.cfg.outboxMax
	queued := len(m.dx.outbox[pid]) > 0
	m.dx.mu.Unlock()
	if full {
		return Record{}, false, fmt.Errorf("mesh: dm to %s: %w", pid, ErrOutboxFull)
	}
	e, rec, err := m.storeDirect(ctx, pid, kind, content, replyTo)
	if err != nil {
		return Record{}, false, err
	}
	m.deliver(rec)
	if !queued {
		switch err := m.push(ctx, pid, e); {
		case err == nil:
			return rec, true, nil
		case errors.Is(err, ErrRefused):
			return rec, false, fmt.Errorf("mesh: dm to %s: %w", pid, err)
		default:
			m.log.Debug("dm not delivered; queued", "to", pid, "err", err)
		}
	}
	m.dx.mu.Lock()
	if err := m.dx.persistAdd(pid, e); err != nil {
		m.dx.mu.Unlock()
		return rec, false, fmt.Errorf("mesh: dm to %s: not delivered and not queued: %w", pid, err)
	}
	m.dx.outbox[pid] = append(m.dx.outbox[pid], e)
	m.dx.outN++
	m.dx.mu.Unlock()
	m.dx.wake()
	return rec, false, nil
}

// storeDirect signs our next DM to pid and stores it durably.
func (m *Mesh) storeDirect(ctx context.Context, pid peer.ID, kind, content, replyTo string) (*Envelope, Record, error) {
	ch := "@" + pid.String()
	m.dx.sendMu.Lock()
	defer m.dx.sendMu.Unlock()
	hw, err := m.hist.HighWater(ctx, ch)
	if err != nil {
		return nil, Record{}, fmt.Errorf("mesh: dm to %s: %w", pid, err)
	}
	e := &Envelope{Channel: ch, Name: m.cfg.name, Seq: hw[m.self] + 1, TS: time.Now().UnixMilli(), Kind: kind, Content: content, ReplyTo: replyTo}
	if err := e.Sign(m.node.Key()); err != nil {
		return nil, Record{}, fmt.Errorf("mesh: dm to %s: %w", pid, err)
	}
	curs, err := m.hist.Append(ctx, []*Envelope{e})
	if err != nil {
		m.stats.add(&m.stats.StoreErrors, 1)
		return nil, Record{}, fmt.Errorf("mesh: dm to %s: store: %w", pid, err)
	}
	return e, Record{Env: e, Cursor: curs[0]}, nil
}

// push delivers e to pid and waits for its acknowledgement.
func (m *Mesh) push(ctx context.Context, pid peer.ID, e *Envelope) error {
	ack, err := m.sendEnvelope(ctx, pid, dmProtocol, "confab-dm", dmTimeout, e)
	if err != nil {
		return err
	}
	switch ack {
	case dmOK:
		return nil
	case dmRefused:
		return ErrRefused
	default:
		return errors.New("recipient asked to retry later")
	}
}

// sendEnvelope opens a stream of proto to pid (relayed links allowed), sends
// e as one frame and returns the one-byte answer. /confab/dm/1 and the
// grants of /confab/private/1 share this exchange.
func (m *Mesh) sendEnvelope(ctx context.Context, pid peer.ID, proto protocol.ID, tag string, timeout time.Duration, e *Envelope) (byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := m.node.Host().NewStream(network.WithAllowLimitedConn(ctx, tag), pid, proto)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(s, e.Marshal()); err != nil {
		_ = s.Reset()
		return 0, err
	}
	_ = s.CloseWrite()
	var ack [1]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		_ = s.Reset()
		return 0, fmt.Errorf("no acknowledgement: %w", err)
	}
	return ack[0], nil
}

// serveDM receives one direct message.
func (m *Mesh) serveDM(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(dmTimeout))
	reply := func(b byte) { _, _ = s.Write([]byte{b}) }
	b, err := readFrame(s, MaxEnvelopeLen)
	if err != nil {
		_ = s.Reset()
		return
	}
	e, err := Unmarshal(b)
	if err == nil {
		err = e.Verify()
	}
	if err != nil || e.Channel != "@"+m.self || e.From == m.self || e.Kind == cardKind || e.Kind == "presence" {
		m.stats.add(&m.stats.RejectedInvalid, 1)
		reply(dmRefused)
		return
	}
	if !m.rate.allow("dm/"+e.From, time.Now()) {
		m.stats.add(&m.stats.RateDrops, 1)
		reply(dmLater)
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, dmTimeout)
	defer cancel()
	curs, err := m.hist.Append(ctx, []*Envelope{e})
	if err != nil {
		m.stats.add(&m.stats.StoreErrors, 1)
		reply(dmLater)
		return
	}
	reply(dmOK)
	if curs[0] == "" {
		m.stats.add(&m.stats.Duplicates, 1)
		return
	}
	m.stats.add(&m.stats.Delivered, 1)
	m.deliver(Record{Env: e, Cursor: curs[0]})
	if strings.HasPrefix(e.Kind, "call") {
		select {
		case m.dx.events <- e:
		default:
			m.log.Warn("call event queue full; the call stays pending in the inbox", "id", e.ID)
		}
	}
}

// outboxLoop loads the outbox file, then retries queued DMs when their
// recipient appears and every outboxRetry. Runs until Close; it owns the
// outbox file's lifetime.
func (m *Mesh) outboxLoop() {
	defer m.wg.Done()
	m.dx.mu.Lock()
	m.loadOutbox()
	n := m.dx.outN
	m.dx.mu.Unlock()
	close(m.dx.ready)
	defer func() {
		m.dx.mu.Lock()
		m.dx.file.close()
		m.dx.mu.Unlock()
	}()
	if n > 0 {
		m.dx.wake()
	}
	sub, err := m.node.Host().EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		m.log.Warn("outbox: no connection events; retrying on a timer only", "err", err)
	}
	var conns <-chan any
	if sub != nil {
		defer sub.Close()
		conns = sub.Out()
	}
	t := time.NewTicker(outboxRetry)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.dx.kick:
		case ev := <-conns:
			if c, ok := ev.(event.EvtPeerConnectednessChanged); !ok || c.Connectedness != network.Connected {
				continue
			} else {
				m.dx.mu.Lock()
				n := len(m.dx.outbox[c.Peer])
				m.dx.mu.Unlock()
				if n == 0 {
					continue
				}
			}
		}
		m.flushOutbox()
	}
}

// flushOutbox tries every recipient with queued DMs, oldest first, stopping
// at a recipient's first failure so its messages arrive in order.
func (m *Mesh) flushOutbox() {
	m.dx.mu.Lock()
	targets := make([]peer.ID, 0, len(m.dx.outbox))
	for p := range m.dx.outbox {
		targets = append(targets, p)
	}
	m.dx.mu.Unlock()
	slices.Sort(targets)
	h := m.node.Host()
	for _, p := range targets {
		if h.Network().Connectedness(p) != network.Connected && len(h.Peerstore().Addrs(p)) == 0 {
			if d := m.dht(); d != nil {
				ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
				if ai, err := d.FindPeer(ctx, p); err == nil {
					h.Peerstore().AddAddrs(p, ai.Addrs, peerstore.TempAddrTTL)
				}
				cancel()
			}
		}
		for m.ctx.Err() == nil {
			m.dx.mu.Lock()
			q := m.dx.outbox[p]
			if len(q) == 0 {
				delete(m.dx.outbox, p)
				m.dx.mu.Unlock()
				break
			}
			e := q[0]
			m.dx.mu.Unlock()
			err := m.push(m.ctx, p, e)
			if err != nil && !errors.Is(err, ErrRefused) {
				break
			}
			if err != nil {
				m.log.Warn("dm refused by recipient; dropped", "to", p, "id", e.ID)
			}
			m.dx.mu.Lock()
			if q := m.dx.outbox[p]; len(q) > 0 && q[0] == e {
				m.dx.outbox[p] = q[1:]
				m.dx.outN--
				m.dx.persistDone(p, e, m.log.Warn)
			}
			m.dx.mu.Unlock()
		}
	}
}

// Thread returns the direct conversation with agent target, oldest first:
// the limit newest messages of those we sent it and those it sent us.
func (m *Mesh) Thread(ctx context.Context, target string, limit int) ([]Record, error) {
	pid, err := m.resolvePeer(target)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	sent, err := m.Before(ctx, "@"+pid.String(), "", limit)
	if err != nil {
		return nil, err
	}
	var got []Record
	cursor := ""
	// Our inbox mixes every sender: page back until limit of theirs are found
	// or the inbox is exhausted (bounded by 10 pages).
	for page := 0; page < 10 && len(got) < limit; page++ {
		recs, err := m.Before(ctx, "@"+m.self, cursor, 1000)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			break
		}
		for i := len(recs) - 1; i >= 0 && len(got) < limit; i-- {
			if recs[i].Env.From == pid.String() {
				got = append(got, recs[i])
			}
		}
		cursor = recs[0].Cursor
	}
	all := append(sent, got...)
	slices.SortFunc(all, func(a, b Record) int { return strings.Compare(a.Cursor, b.Cursor) })
	if len(all) > limit {
		all = all[len(all)-limit:]
	}
	return all, nil
}
