package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
	// TTLms is how long, in milliseconds, receivers list the author after
	// this beacon: the author beacons again well within it. 0 (absent, from
	// older nodes) means the receiver's own TTL.
	TTLms int64 `json:"ttl_ms,omitempty"`
}

const maxBeaconChannels = 256

// Every member verifies every beacon, so presence costs each agent the
// beacon rate of the whole topic. Up to presenceMembers members a node
// beacons every tick (WithPresence, default 5 s); beyond, every
// tick×members/presenceMembers, so all members together send at most
// presenceMembers beacons per tick (20/s at the default) however many they
// are. The TTL grows with the interval (the same ratio as WithPresence's
// ttl to its tick) and travels in the beacon, so a receiver keeps a sender
// listed for as long as that sender said.
const (
	presenceMembers   = 100
	maxBeaconInterval = 10 * time.Minute // the interval stops growing here (unless the tick is longer)
	maxBeaconTTL      = 6 * time.Hour    // longest ttl_ms a receiver accepts
	minBeaconTTL      = 100 * time.Millisecond
	// Greetings (the beacon a node sends when a neighbour joins the
	// presence topic) wait for joins to be quiet for greetQuiet, at most
	// greetMaxWait, and come no sooner than greetGap after the previous
	// beacon; the last two are for up to presenceMembers members and grow
	// like the interval.
	greetQuiet   = time.Second
	greetMaxWait = 10 * time.Second
	greetGap     = 2 * time.Second
)

// presence keeps who is online from signed beacons.
type presence struct {
	m      *Mesh
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	kick   chan struct{} // own status or channels changed: beacon at once
	joined chan struct{} // a neighbour joined the presence topic: greet
	seq    atomic.Uint64 // beacon seq; the beat loop and goodbye (from Close) both publish
	stopMu sync.Once

	mu     sync.Mutex // guards peers, lastTS, status
	peers  map[string]*listed
	lastTS map[string]int64
	status string
}

// listed is one agent in the presence table, kept until LastSeen+ttl.
type listed struct {
	Peer
	ttl time.Duration
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
	p := &presence{m: m, topic: t, sub: sub, events: ev, kick: make(chan struct{}, 1), joined: make(chan struct{}, 1),
		peers: map[string]*listed{}, lastTS: map[string]int64{}, status: StatusAvailable}
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

// beat sends the beacons: the first at once, then one per interval (which
// grows with the members listed, with ±25% jitter so that agents started
// together do not beacon together), one at once on every change of our own
// status or channels, and greetings when neighbours join the presence topic.
// A greeting goes out at once when our last beacon reached no peer (so the
// first peer a fresh node meets hears it straight away), and once more
// coalesced as below, in case the first was lost. Otherwise, since
// every member verifies every greeting, the greetings of a burst of joins
// are coalesced into one: it goes once joins have been quiet for greetQuiet,
// at most greetMaxWait after the first join of the burst, and never sooner
// than greetGap after the previous beacon (both grow like the interval).
func (p *presence) beat() {
	defer p.m.wg.Done()
	tick := time.NewTimer(0)
	defer tick.Stop()
	greet := time.NewTimer(time.Hour)
	greet.Stop()
	defer greet.Stop()
	var (
		last     time.Time
		heard    bool      // the last beacon had a peer on the topic to go to
		greeting bool      // greet is armed
		deadline time.Time // of the armed greeting
	)
	arm := func() { // schedule the coalesced greeting
		n := p.members()
		now := time.Now()
		if !greeting {
			greeting, deadline = true, now.Add(beaconInterval(greetMaxWait, n))
		}
		at := now.Add(greetQuiet)
		if at.After(deadline) {
			at = deadline
		}
		if earliest := last.Add(beaconInterval(greetGap, n)); at.Before(earliest) {
			at = earliest
		}
		greet.Reset(time.Until(at))
	}
	for {
		first := false // a greeting sent at once: repeat it coalesced
		select {
		case <-p.m.ctx.Done():
			return
		case <-tick.C:
		case <-p.kick:
		case <-greet.C:
			greeting = false
		case <-p.joined:
			if heard {
				arm()
				continue
			}
			first = true
		}
		heard = p.publish(false)
		last = time.Now()
		if greeting {
			greet.Stop()
			greeting = false
		}
		if first {
			// gossipsub may learn a peer's subscription before it can send
			// to that peer, and then drops what we publish to it silently.
			arm()
		}
		iv := p.interval()
		tick.Reset(iv*3/4 + rand.N(iv/2+1))
	}
}

// members counts the agents listed, this node included.
func (p *presence) members() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(1, len(p.peers))
}

// interval is the time between two periodic beacons of this node for the
// number of members it lists (see presenceMembers).
func (p *presence) interval() time.Duration {
	return beaconInterval(p.m.cfg.presenceTick, p.members())
}

func beaconInterval(tick time.Duration, members int) time.Duration {
	if members <= presenceMembers {
		return tick
	}
	iv := time.Duration(float64(tick) * float64(members) / presenceMembers)
	return max(tick, min(iv, maxBeaconInterval))
}

// beaconTTL is the ttl announced with a beacon sent every interval: the
// configured ttl's multiple of the tick, bounded for receivers.
func beaconTTL(tick, ttl, interval time.Duration) time.Duration {
	d := time.Duration(float64(interval) * float64(ttl) / float64(tick))
	return min(max(d, minBeaconTTL), maxBeaconTTL)
}

// greet tells the beat loop when a new peer joins the presence topic, so a
// new neighbour learns about us without waiting for the next interval. A
// peer that joins again within an interval of its last join (gossipsub
// re-adds a connected peer whose stream died, and a loaded or flapping link
// does that often) is not greeted again: every member would verify each
// greeting, and the periodic beacon reaches it within that interval anyway.
func (p *presence) greet() {
	defer p.m.wg.Done()
	greeted := map[peer.ID]time.Time{} // owned by this goroutine
	for {
		ev, err := p.events.NextPeerEvent(p.m.ctx)
		if err != nil {
			return
		}
		if ev.Type != pubsub.PeerJoin {
			continue
		}
		now, iv := time.Now(), p.interval()
		if t, ok := greeted[ev.Peer]; ok && now.Sub(t) < iv {
			continue
		}
		greeted[ev.Peer] = now
		if len(greeted) > maxGreeted {
			for id, t := range greeted {
				if now.Sub(t) >= iv {
					delete(greeted, id)
				}
			}
			if len(greeted) > maxGreeted {
				clear(greeted)
			}
		}
		select {
		case p.joined <- struct{}{}:
		default:
		}
	}
}

// maxGreeted bounds greet's memory of recent joins.
const maxGreeted = 4096

// publish signs and publishes a beacon and reports whether the topic had a
// peer to send it to.
func (p *presence) publish(bye bool) bool {
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
	ttl := beaconTTL(m.cfg.presenceTick, m.cfg.presenceTTL, p.interval())
	b, _ := json.Marshal(beacon{Name: m.cfg.name, Caps: m.cfg.caps, Status: st, Channels: chans, TTLms: ttl.Milliseconds()})
	e := &Envelope{Channel: "@" + m.self, Name: m.cfg.name, Seq: p.seq.Add(1), TS: time.Now().UnixMilli(), Kind: "presence", Content: string(b)}
	if err := e.Sign(m.node.Key()); err != nil {
		m.log.Warn("presence sign", "err", err)
		return false
	}
	p.record(e, nil)
	heard := len(p.topic.ListPeers()) > 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.topic.Publish(ctx, e.Marshal())
	return heard
}

func (p *presence) read() {
	defer p.m.wg.Done()
	for {
		msg, err := p.sub.Next(p.m.ctx)
		if err != nil {
			return
		}
		if v, ok := msg.ValidatorData.(validBeacon); ok {
			p.record(v.env, v.b)
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
	ttl := m.cfg.presenceTTL
	if b.TTLms > 0 {
		ttl = time.Duration(b.TTLms) * time.Millisecond
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
	if old, ok := p.peers[e.From]; (!ok || time.Since(old.LastSeen) > old.ttl) && e.From != p.m.self {
		p.m.dx.peerSeen(e.From) // non-blocking: flush DMs waiting for it
	}
	p.peers[e.From] = &listed{Peer: Peer{ID: e.From, Name: e.Name, Status: b.Status, Caps: b.Caps, Channels: b.Channels, LastSeen: time.Now()}, ttl: ttl}
	if len(p.lastTS) > 4*maxTrackedAuthors {
		p.lastTS = map[string]int64{e.From: e.TS}
	}
}

func (p *presence) list(channel string) []Peer {
	p.mu.Lock()
	var out []Peer
	for id, pe := range p.peers {
		if id != p.m.self && time.Since(pe.LastSeen) > pe.ttl {
			delete(p.peers, id)
			continue
		}
		if channel != "" && !slices.Contains(pe.Channels, channel) {
			continue
		}
		c := pe.Peer
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
func (p *presence) goodbye() { _ = p.publish(true) }

func (p *presence) stop() {
	p.stopMu.Do(func() {
		p.sub.Cancel()
		p.events.Cancel()
		_ = p.topic.Close()
		_ = p.m.node.PubSub().UnregisterTopicValidator(presenceTopic)
	})
}

func (m *Mesh) presenceValidator() pubsub.ValidatorEx {
	checked := newVerifyOnce(maxVerifiedBeacons)
	return func(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		e, err := Unmarshal(msg.Data)
		if err == nil {
			err = checked.verify(msg.ID, e)
		}
		var b *beacon
		if err == nil && e.Kind == "presence" && e.Channel == "@"+e.From {
			b, err = parseBeacon(e.Content)
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
		msg.ValidatorData = validBeacon{env: e, b: b}
		return pubsub.ValidationAccept
	}
}

// validBeacon is what the validator hands to the reader.
type validBeacon struct {
	env *Envelope
	b   *beacon
}

// parseBeacon decodes and bounds a beacon's content (already inside a
// verified envelope, so the size is bounded by the envelope's limits).
func parseBeacon(content string) (*beacon, error) {
	var b beacon
	if err := json.Unmarshal([]byte(content), &b); err != nil {
		return nil, fmt.Errorf("mesh: beacon: %w", err)
	}
	if b.TTLms < 0 || b.TTLms > maxBeaconTTL.Milliseconds() || (b.TTLms > 0 && b.TTLms < minBeaconTTL.Milliseconds()) {
		return nil, fmt.Errorf("mesh: beacon: ttl_ms %d outside %d..%d", b.TTLms, minBeaconTTL.Milliseconds(), maxBeaconTTL.Milliseconds())
	}
	if len(b.Channels) > maxBeaconChannels {
		b.Channels = b.Channels[:maxBeaconChannels]
	}
	return &b, nil
}

// maxVerifiedBeacons bounds verifyOnce's memory of good beacons (two
// generations of up to this many message ids each).
const maxVerifiedBeacons = 4096

// verifyOnce verifies each distinct message once. Gossipsub marks a message
// seen only after its validator returns, so the copies of one beacon that
// neighbours forward while the first is being checked would each be
// verified again (several times per beacon per node in a busy mesh). The
// key is gossipsub's message id, the sha256 of the whole message (envelope
// and signature), so a copy with the same id is the same bytes and gets the
// same verdict. Only good verdicts are remembered. Safe for concurrent use.
type verifyOnce struct {
	max int

	mu       sync.Mutex // guards the fields below
	cur, old map[string]struct{}
	inflight map[string]chan struct{} // closed when the first check is done
}

func newVerifyOnce(max int) *verifyOnce {
	return &verifyOnce{max: max, cur: map[string]struct{}{}, old: map[string]struct{}{}, inflight: map[string]chan struct{}{}}
}

func (v *verifyOnce) known(id string) bool {
	_, ok := v.cur[id]
	if !ok {
		_, ok = v.old[id]
	}
	return ok
}

// verify returns e.Verify()'s verdict, checking each id at most once at a
// time and not again once it passed.
func (v *verifyOnce) verify(id string, e *Envelope) error {
	if id == "" {
		return e.Verify()
	}
	for {
		v.mu.Lock()
		if v.known(id) {
			v.mu.Unlock()
			return nil
		}
		wait, busy := v.inflight[id]
		if !busy {
			done := make(chan struct{})
			v.inflight[id] = done
			v.mu.Unlock()
			err := e.Verify()
			v.mu.Lock()
			delete(v.inflight, id)
			if err == nil {
				if len(v.cur) >= v.max {
					v.old, v.cur = v.cur, map[string]struct{}{}
				}
				v.cur[id] = struct{}{}
			}
			v.mu.Unlock()
			close(done)
			return err
		}
		v.mu.Unlock()
		<-wait // then either known, or the first copy failed: check this one
	}
}
