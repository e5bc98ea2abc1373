package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Status values an agent announces.
const (
	StatusAvailable = "available"
	StatusBusy      = "busy"
	StatusAway      = "away"
	statusOffline   = "offline"
)

// beacon is the content of a presence envelope (kind "presence", channel
// "@<author>"), published on the presence topic and never stored.
type beacon struct {
	Name     string   `json:"name"`
	Caps     []string `json:"caps,omitempty"`
	Status   string   `json:"status"`
	Channels []string `json:"channels,omitempty"`
}

const maxBeaconChannels = 256

// presence keeps who is online from signed beacons.
type presence struct {
	m      *Mesh
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	kick   chan struct{}
	seq    atomic.Uint64 // beacon seq; the beat loop and goodbye (from Close) both publish
	stopMu sync.Once

	mu     sync.Mutex // guards peers, status
	peers  map[string]*Peer
	lastTS map[string]int64
	status string
}

func startPresence(m *Mesh) (*presence, error) {
	ps := m.node.PubSub()
	if err := ps.RegisterTopicValidator(presenceTopic, m.presenceValidator()); err != nil {
		return nil, fmt.Errorf("mesh: presence: %w", err)
	}
	t, err := ps.Join(presenceTopic)
	if err != nil {
		return nil, fmt.Errorf("mesh: presence: %w", err)
	}
	sub, err := t.Subscribe(pubsub.WithBufferSize(1024))
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("mesh: presence: %w", err)
	}
	ev, err := t.EventHandler()
	if err != nil {
		sub.Cancel()
		_ = t.Close()
		return nil, fmt.Errorf("mesh: presence: %w", err)
	}
	p := &presence{m: m, topic: t, sub: sub, events: ev, kick: make(chan struct{}, 1),
		peers: map[string]*Peer{}, lastTS: map[string]int64{}, status: StatusAvailable}
	m.wg.Add(3)
	go p.read()
	go p.beat()
	go p.greet()
	return p, nil
}

// SetStatus changes the announced status (available, busy, away).
func (m *Mesh) SetStatus(s string) error {
	switch s {
	case StatusAvailable, StatusBusy, StatusAway:
	default:
		return fmt.Errorf("mesh: status %q: want available, busy or away", trunc(s))
	}
	m.presence.mu.Lock()
	m.presence.status = s
	m.presence.mu.Unlock()
	m.presence.changed()
	return nil
}

func (p *presence) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *presence) beat() {
	defer p.m.wg.Done()
	t := time.NewTicker(p.m.cfg.presenceTick)
	defer t.Stop()
	for {
		p.publish(false)
		select {
		case <-p.m.ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// greet beacons as soon as a new peer joins the presence topic, so a new
// neighbour learns about us without waiting for the next tick.
func (p *presence) greet() {
	defer p.m.wg.Done()
	for {
		ev, err := p.events.NextPeerEvent(p.m.ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin {
			p.changed()
		}
	}
}

func (p *presence) publish(bye bool) {
	m := p.m
	p.mu.Lock()
	st := p.status
	p.mu.Unlock()
	if bye {
		st = statusOffline
	}
	var chans []string
	for _, c := range m.Channels() {
		if c[0] == '#' {
			chans = append(chans, c)
		}
	}
	b, _ := json.Marshal(beacon{Name: m.cfg.name, Caps: m.cfg.caps, Status: st, Channels: chans})
	e := &Envelope{Channel: "@" + m.self, Name: m.cfg.name, Seq: p.seq.Add(1), TS: time.Now().UnixMilli(), Kind: "presence", Content: string(b)}
	if err := e.Sign(m.node.Key()); err != nil {
		m.log.Warn("presence sign", "err", err)
		return
	}
	p.record(e, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.topic.Publish(ctx, e.Marshal())
}

func (p *presence) read() {
	defer p.m.wg.Done()
	for {
		msg, err := p.sub.Next(p.m.ctx)
		if err != nil {
			return
		}
		if e, ok := msg.ValidatorData.(*Envelope); ok {
			var b beacon
			if json.Unmarshal([]byte(e.Content), &b) == nil {
				p.record(e, &b)
			}
		}
	}
}

// record stores a beacon if it is newer than the last one of its author; b is
// nil for our own beacon, which is rebuilt from local state.
func (p *presence) record(e *Envelope, b *beacon) {
	m := p.m
	if b == nil {
		p.mu.Lock()
		st := p.status
		p.mu.Unlock()
		b = &beacon{Name: m.cfg.name, Caps: m.cfg.caps, Status: st, Channels: m.Channels()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.TS <= p.lastTS[e.From] {
		return
	}
	p.lastTS[e.From] = e.TS
	if b.Status == statusOffline {
		delete(p.peers, e.From)
		return
	}
	if len(b.Channels) > maxBeaconChannels {
		b.Channels = b.Channels[:maxBeaconChannels]
	}
	if old, ok := p.peers[e.From]; (!ok || time.Since(old.LastSeen) > p.m.cfg.presenceTTL) && e.From != p.m.self {
		p.m.dx.peerSeen(e.From) // non-blocking: flush DMs waiting for it
	}
	p.peers[e.From] = &Peer{ID: e.From, Name: e.Name, Status: b.Status, Caps: b.Caps, Channels: b.Channels, LastSeen: time.Now()}
	if len(p.lastTS) > 4*maxTrackedAuthors {
		p.lastTS = map[string]int64{e.From: e.TS}
	}
}

func (p *presence) list(channel string) []Peer {
	ttl := p.m.cfg.presenceTTL
	p.mu.Lock()
	var out []Peer
	for id, pe := range p.peers {
		if id != p.m.self && time.Since(pe.LastSeen) > ttl {
			delete(p.peers, id)
			continue
		}
		if channel != "" && !slices.Contains(pe.Channels, channel) {
			continue
		}
		c := *pe
		c.Caps = slices.Clone(pe.Caps)
		c.Channels = slices.Clone(pe.Channels)
		out = append(out, c)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Peer) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func (p *presence) resolve(target string) (string, error) {
	if !strings.HasPrefix(target, "@") {
		return "", fmt.Errorf("mesh: %q: %w: want @name or @peerid", trunc(target), ErrUnknownAgent)
	}
	t := target[1:]
	if id, err := peer.Decode(t); err == nil {
		if _, err := AuthorKey(id.String()); err == nil {
			return id.String(), nil
		}
	}
	var ids []string
	for _, pe := range p.list("") {
		if pe.Name == t {
			ids = append(ids, pe.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("mesh: %s: %w", trunc(target), ErrUnknownAgent)
	case 1:
		return ids[0], nil
	default:
		return "", fmt.Errorf("mesh: %s is ambiguous, candidates: %s: %w", trunc(target), strings.Join(ids, ", "), ErrUnknownAgent)
	}
}

// goodbye tells peers we leave, so they drop us at once.
func (p *presence) goodbye() { p.publish(true) }

func (p *presence) stop() {
	p.stopMu.Do(func() {
		p.sub.Cancel()
		p.events.Cancel()
		_ = p.topic.Close()
		_ = p.m.node.PubSub().UnregisterTopicValidator(presenceTopic)
	})
}

func (m *Mesh) presenceValidator() pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		e, err := Unmarshal(msg.Data)
		if err == nil {
			err = e.Verify()
		}
		if err != nil || e.Kind != "presence" || e.Channel != "@"+e.From {
			m.stats.add(&m.stats.RejectedInvalid, 1)
			return pubsub.ValidationReject
		}
		now := time.Now()
		ts := time.UnixMilli(e.TS)
		if ts.Before(now.Add(-m.cfg.pastWindow)) || ts.After(now.Add(m.cfg.futureWindow)) {
			m.stats.add(&m.stats.IgnoredWindow, 1)
			return pubsub.ValidationIgnore
		}
		if e.From != m.self && !m.rate.allow("presence/"+e.From, now) {
			return pubsub.ValidationIgnore
		}
		msg.ValidatorData = e
		return pubsub.ValidationAccept
	}
}
