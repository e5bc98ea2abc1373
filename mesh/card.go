package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Agent card protocol. The requester opens a stream and writes nothing; the
// responder writes its current card as one envelope in binary form, prefixed
// by its 4-byte big-endian length, and closes. The envelope has kind "card",
// channel "@<author>" and as content the JSON card (type "card", v 1): the
// envelope signature covers the content bytes exactly as sent, so no JSON
// canonical form is needed. See docs/protocol.md.
const (
	cardProtocol = "/confab/card/1"
	cardKind     = "card"
	cardTimeout  = 10 * time.Second
	maxCardLen   = 16 << 10 // binary envelope of one card
	maxCardAddrs = 32
	maxCardCaps  = 64
	// MaxDescLen bounds an agent's description.
	MaxDescLen = 1024
	// CardTTL is how long a fetched card is served from the cache.
	CardTTL = 30 * time.Second
	// maxCardCache bounds the card cache; the oldest entry is evicted first.
	maxCardCache = 4096
)

// DefaultVersion is the software version an agent announces in its card.
const DefaultVersion = "confab/0.1.0"

// ErrBadCard is returned for a card whose envelope or content is invalid.
var ErrBadCard = errors.New("bad agent card")

// Card is an agent's signed self-description. Others fetch it over a direct
// stream and trust only what its author signed; Status is refreshed from the
// author's (also signed) presence beacons where those are newer.
type Card struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Caps    []string `json:"caps,omitempty"`
	Desc    string   `json:"desc,omitempty"`
	Status  string   `json:"status"`
	Addrs   []string `json:"addrs,omitempty"`
	Version string   `json:"version,omitempty"`
	TS      int64    `json:"ts"` // author's clock when signed, unix ms
}

// wireCard is the card's content on the wire, versioned.
type wireCard struct {
	Type    string   `json:"type"` // "card"
	V       int      `json:"v"`    // 1
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Caps    []string `json:"caps,omitempty"`
	Desc    string   `json:"desc,omitempty"`
	Status  string   `json:"status"`
	Addrs   []string `json:"addrs,omitempty"`
	Version string   `json:"version,omitempty"`
	TS      int64    `json:"ts"`
}

// WithDesc sets the description put in the agent's card (at most MaxDescLen
// bytes of UTF-8).
func WithDesc(desc string) Option {
	return func(c *config) error {
		if len(desc) > MaxDescLen || !validName(desc) {
			return fmt.Errorf("mesh: description must be at most %d bytes of UTF-8 without control characters", MaxDescLen)
		}
		c.desc = desc
		return nil
	}
}

// WithVersion sets the software version put in the agent's card. Default
// DefaultVersion.
func WithVersion(v string) Option {
	return func(c *config) error {
		if len(v) > 64 || !validName(v) {
			return errors.New("mesh: version must be at most 64 bytes of UTF-8 without control characters")
		}
		c.version = v
		return nil
	}
}

// DecodeCard checks that env is a card envelope and returns its card. env
// must already have passed Verify; DecodeCard checks kind, channel, that the
// card's id is the envelope's author, and the card's limits.
func DecodeCard(env *Envelope) (Card, error) {
	if env == nil || env.Kind != cardKind || env.Channel != "@"+env.From {
		return Card{}, fmt.Errorf("%w: not a card envelope", ErrBadCard)
	}
	var w wireCard
	if err := json.Unmarshal([]byte(env.Content), &w); err != nil {
		return Card{}, fmt.Errorf("%w: %v", ErrBadCard, err)
	}
	switch {
	case w.Type != "card" || w.V != 1:
		return Card{}, fmt.Errorf("%w: type %q v %d", ErrBadCard, trunc(w.Type), w.V)
	case w.ID != env.From:
		return Card{}, fmt.Errorf("%w: card id is not its signer", ErrBadCard)
	case len(w.Name) > MaxNameLen || !validName(w.Name), len(w.Desc) > MaxDescLen || !validName(w.Desc),
		len(w.Version) > 64 || !validName(w.Version):
		return Card{}, fmt.Errorf("%w: name, desc or version", ErrBadCard)
	case len(w.Caps) > maxCardCaps || len(w.Addrs) > maxCardAddrs:
		return Card{}, fmt.Errorf("%w: too many caps or addrs", ErrBadCard)
	}
	switch w.Status {
	case StatusAvailable, StatusBusy, StatusAway:
	default:
		return Card{}, fmt.Errorf("%w: status %q", ErrBadCard, trunc(w.Status))
	}
	for _, c := range w.Caps {
		if !kindRE.MatchString(c) {
			return Card{}, fmt.Errorf("%w: capability %q", ErrBadCard, trunc(c))
		}
	}
	for _, a := range w.Addrs {
		if len(a) > 256 || !validName(a) {
			return Card{}, fmt.Errorf("%w: addr", ErrBadCard)
		}
	}
	return Card{ID: w.ID, Name: w.Name, Caps: w.Caps, Desc: w.Desc, Status: w.Status, Addrs: w.Addrs, Version: w.Version, TS: w.TS}, nil
}

// cards serves the local card and caches others'.
type cards struct {
	seq atomic.Uint64 // seq of the card envelopes we sign

	mu    sync.Mutex // guards cache
	cache map[string]cachedCard
}

type cachedCard struct {
	card    Card
	fetched time.Time
}

// localCardEnvelope signs the current card.
func (m *Mesh) localCardEnvelope() (*Envelope, Card, error) {
	m.presence.mu.Lock()
	st := m.presence.status
	m.presence.mu.Unlock()
	c := Card{ID: m.self, Name: m.cfg.name, Caps: slices.Clone(m.cfg.caps), Desc: m.cfg.desc, Status: st,
		Version: m.cfg.version, TS: time.Now().UnixMilli()}
	for _, a := range m.node.Host().Addrs() {
		if len(c.Addrs) == maxCardAddrs {
			break
		}
		c.Addrs = append(c.Addrs, a.String())
	}
	b, err := json.Marshal(wireCard{Type: "card", V: 1, ID: c.ID, Name: c.Name, Caps: c.Caps, Desc: c.Desc,
		Status: c.Status, Addrs: c.Addrs, Version: c.Version, TS: c.TS})
	if err != nil {
		return nil, Card{}, err
	}
	e := &Envelope{Channel: "@" + m.self, Name: m.cfg.name, Seq: m.cards.seq.Add(1), TS: c.TS, Kind: cardKind, Content: string(b)}
	if err := e.Sign(m.node.Key()); err != nil {
		return nil, Card{}, err
	}
	return e, c, nil
}

// serveCard answers one card request.
func (m *Mesh) serveCard(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(cardTimeout))
	if !m.rate.allow("card/"+s.Conn().RemotePeer().String(), time.Now()) {
		_ = s.Reset()
		return
	}
	e, _, err := m.localCardEnvelope()
	if err != nil {
		m.log.Warn("card sign", "err", err)
		_ = s.Reset()
		return
	}
	if err := writeFrame(s, e.Marshal()); err != nil {
		_ = s.Reset()
	}
}

// Card returns the signed card of agent id ("" or the local id: our own).
// A remote card is served from the cache for CardTTL, else fetched over
// /confab/card/1 and verified. Errors: ErrUnknownAgent for a bad id,
// ErrBadCard for an invalid card, or the stream's error.
func (m *Mesh) Card(ctx context.Context, id string) (Card, error) {
	if id == "" || id == m.self {
		_, c, err := m.localCardEnvelope()
		return c, err
	}
	pid, err := peer.Decode(id)
	if err != nil {
		return Card{}, fmt.Errorf("mesh: card %s: %w", trunc(id), ErrUnknownAgent)
	}
	return m.fetchCard(ctx, pid, true)
}

// fetchCard returns pid's verified card, from the cache if cached is true
// and the entry is younger than CardTTL.
func (m *Mesh) fetchCard(ctx context.Context, pid peer.ID, cached bool) (Card, error) {
	id := pid.String()
	m.cards.mu.Lock()
	if c, ok := m.cards.cache[id]; ok && cached && time.Since(c.fetched) < CardTTL {
		m.cards.mu.Unlock()
		return c.card, nil
	}
	m.cards.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, cardTimeout)
	defer cancel()
	s, err := m.node.Host().NewStream(network.WithAllowLimitedConn(ctx, "confab-card"), pid, cardProtocol)
	if err != nil {
		return Card{}, fmt.Errorf("mesh: card %s: %w", id, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(cardTimeout))
	_ = s.CloseWrite()
	b, err := readFrame(s, maxCardLen)
	if err != nil {
		_ = s.Reset()
		return Card{}, fmt.Errorf("mesh: card %s: %w", id, err)
	}
	e, err := Unmarshal(b)
	if err == nil {
		err = e.Verify()
	}
	if err != nil {
		return Card{}, fmt.Errorf("mesh: card %s: %w: %w", id, ErrBadCard, err)
	}
	if e.From != id {
		return Card{}, fmt.Errorf("mesh: card %s: %w: signed by %s", id, ErrBadCard, e.From)
	}
	c, err := DecodeCard(e)
	if err != nil {
		return Card{}, fmt.Errorf("mesh: card %s: %w", id, err)
	}
	m.cards.mu.Lock()
	if old, ok := m.cards.cache[id]; !ok || old.card.TS <= c.TS {
		if !ok && len(m.cards.cache) >= maxCardCache {
			m.cards.evictOldest()
		}
		m.cards.cache[id] = cachedCard{card: c, fetched: time.Now()}
	}
	m.cards.mu.Unlock()
	return c, nil
}

// evictOldest drops the least recently fetched card. Called with mu held.
func (cs *cards) evictOldest() {
	var oldest string
	var t time.Time
	for id, c := range cs.cache {
		if oldest == "" || c.fetched.Before(t) {
			oldest, t = id, c.fetched
		}
	}
	delete(cs.cache, oldest)
}
