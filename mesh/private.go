package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Private channels (docs/private.md). A private channel has one host, the
// agent that created it; its id is "~" + hex(sha256(privDomain, host,
// salt)[:16]), so a grant for it can only come from its host. Each key epoch
// has a 32-byte message key and a 32-byte topic secret; the gossipsub topic
// is topicPrefix + hex(HMAC-SHA256(topic secret, topicDomain || id)), which
// outsiders cannot link to the channel. The host delivers keys in grants:
// envelopes of kind "grant" it signs, whose content holds the epochs and
// the member list sealed to one member (seal.go), over /confab/private/1.
//
// Protocol /confab/private/1: the opener writes one envelope in binary
// form, 4-byte length prefixed, signed by the opener, with channel
// "@<responder>" and one of these kinds:
//
//	grant  host → member: install these keys. Answer: one byte (dmOK, dmRefused).
//	keys   member → host: content is the channel id; send my current grant.
//	       Answer: one frame, the grant envelope, or an empty frame (refused).
//	knock  joiner → host: see session.go.
//
// The responder checks that the envelope verifies, that its author is the
// stream's remote peer and that its ts is within the live time window.
const (
	privateProtocol = "/confab/private/1"
	privTimeout     = 10 * time.Second
	privDomain      = "confab/private/v1"
	topicDomain     = "confab/topic/v1"
	grantDomain     = "confab/grant/v1"
	// KindGrant is the kind of a host's key grant (never stored).
	KindGrant = "grant"
	kindKeys  = "keys"
	// maxPrivEpochs bounds the key epochs of one channel (one per removal).
	maxPrivEpochs   = 4096
	maxPrivMembers  = 4096
	maxPrivChannels = 4096
)

// Errors of private channels.
var (
	ErrNotHost        = errors.New("only the channel's host can do that")
	ErrNotMember      = errors.New("not a member of this private channel")
	ErrSessionGate    = errors.New("a session admits members only through a knock its host approves")
	ErrUnknownPrivate = errors.New("no such private channel")
)

// PrivateChannel describes a private channel this node holds keys for.
type PrivateChannel struct {
	ID      string   `json:"id"`             // "~" + 32 hex: the wire channel
	Name    string   `json:"name,omitempty"` // local display name ("#name"), never sent
	Host    string   `json:"host"`
	Session bool     `json:"session,omitempty"`
	Epoch   uint32   `json:"epoch"`
	Members []string `json:"members"`
	Topic   string   `json:"topic,omitempty"` // a session's topic
}

type epochKey struct {
	N     uint32 `json:"n"`
	Key   []byte `json:"key"`
	Topic []byte `json:"topic"`
}

// privChan is the stored state of one private channel (0600 file).
type privChan struct {
	ID      string       `json:"id"`
	Name    string       `json:"name,omitempty"`
	Host    string       `json:"host"`
	Salt    []byte       `json:"salt"`
	Session bool         `json:"session,omitempty"`
	Topic   string       `json:"topic,omitempty"` // a session's topic
	Epochs  []epochKey   `json:"epochs"`
	Members []string     `json:"members"`
	Sess    *hostSession `json:"host_session,omitempty"` // the host's session state
}

func (pc *privChan) current() epochKey { return pc.Epochs[len(pc.Epochs)-1] }

func (pc *privChan) key(n uint32) []byte {
	for _, e := range pc.Epochs {
		if e.N == n {
			return e.Key
		}
	}
	return nil
}

func (pc *privChan) info() PrivateChannel {
	return PrivateChannel{ID: pc.ID, Name: pc.Name, Host: pc.Host, Session: pc.Session, Topic: pc.Topic, Epoch: pc.current().N, Members: slices.Clone(pc.Members)}
}

// private holds the keys of the private channels of a node. mu is a leaf
// lock: no mesh method is called while it is held.
type private struct {
	dir  string        // where channel files live; "" = memory only
	kick chan struct{} // wakes the key refresher

	mu       sync.Mutex // guards chans, pending, sealed, archives, front
	chans    map[string]*privChan
	pending  map[string]*knockWait // session.go: by joiner id
	sealed   map[string]string     // archive: id -> topic followed without keys
	archives map[string][]string   // archive: id -> archive peers that may pull it
	front    Front                 // front.go: the gateway of thin hosts, if any
}

func newPrivate(stateFile string, log interface{ Warn(string, ...any) }) *private {
	p := &private{kick: make(chan struct{}, 1), chans: map[string]*privChan{}, pending: map[string]*knockWait{},
		sealed: map[string]string{}, archives: map[string][]string{}}
	if stateFile == "" {
		return p
	}
	p.dir = filepath.Join(filepath.Dir(stateFile), "private")
	p.loadSealed(log)
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("private: read keys", "err", err)
		}
		return p
	}
	for _, de := range ents {
		if !strings.HasSuffix(de.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.dir, de.Name()))
		var pc privChan
		if err != nil || len(b) > 8<<20 || json.Unmarshal(b, &pc) != nil || !validPriv(&pc) {
			log.Warn("private: unreadable key file; skipped", "file", de.Name())
			continue
		}
		p.chans[pc.ID] = &pc
	}
	return p
}

func validPriv(pc *privChan) bool {
	return isPrivate(pc.ID) && len(pc.Epochs) > 0 && pc.ID == privID(pc.Host, pc.Salt)
}

// save writes pc's file; the caller holds p.mu.
func (p *private) save(pc *privChan) error {
	if p.dir == "" {
		return nil
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("mesh: private: %w", err)
	}
	b, err := json.Marshal(pc)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(p.dir, pc.ID[1:]+".json"), b); err != nil {
		return fmt.Errorf("mesh: private: save %s: %w", pc.ID, err)
	}
	return nil
}

func isPrivate(ch string) bool { return len(ch) == 33 && ch[0] == '~' && ValidChannel(ch) }

// privID binds a private channel id to its host.
func privID(host string, salt []byte) string {
	h := sha256.New()
	h.Write(appendField(nil, privDomain))
	h.Write(appendField(nil, host))
	h.Write(appendField(nil, string(salt)))
	return "~" + hex.EncodeToString(h.Sum(nil)[:16])
}

func topicFor(secret []byte, channel string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(appendField(nil, topicDomain))
	mac.Write([]byte(channel))
	return topicPrefix + hex.EncodeToString(mac.Sum(nil))
}

func newEpoch(n uint32) epochKey {
	k := epochKey{N: n, Key: make([]byte, 32), Topic: make([]byte, 32)}
	rand.Read(k.Key)
	rand.Read(k.Topic)
	return k
}

func (p *private) get(id string) (*privChan, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc, ok := p.chans[id]
	return pc, ok
}

// resolve maps a local display name of a private channel to its id.
func (p *private) resolve(name string) string {
	if name == "" || name[0] != '#' {
		return name
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.chans {
		if pc.Name == name {
			return pc.ID
		}
	}
	return name
}

// topic returns the gossipsub topic of a private channel: from its keys, or
// the topic an archive follows it on (JoinSealed); "" if neither.
func (p *private) topic(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc, ok := p.chans[id]
	if !ok {
		return p.sealed[id]
	}
	return topicFor(pc.current().Topic, id)
}

// mayPost reports whether a live envelope on private channel id is
// acceptable: an encrypted message from a member (when members are known).
func (p *private) mayPost(id string, e *Envelope) bool {
	return sealedForm(e) && p.isMember(id, e.From)
}

// isMember reports whether agent is a member of id; true when this node
// knows no member list (an archive that holds no keys).
func (p *private) isMember(id, agent string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc, ok := p.chans[id]
	return !ok || slices.Contains(pc.Members, agent)
}

func (p *private) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// resolveChannel maps a private channel's local display name to its id.
func (m *Mesh) resolveChannel(name string) string { return m.priv.resolve(name) }

// PrivateChannels lists the private channels this node holds keys for.
func (m *Mesh) PrivateChannels() []PrivateChannel {
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	out := make([]PrivateChannel, 0, len(m.priv.chans))
	for _, pc := range m.priv.chans {
		out = append(out, pc.info())
	}
	slices.SortFunc(out, func(a, b PrivateChannel) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Private returns a private channel by id or local display name.
func (m *Mesh) Private(channel string) (PrivateChannel, error) {
	id := m.priv.resolve(channel)
	pc, ok := m.priv.get(id)
	if !ok {
		return PrivateChannel{}, fmt.Errorf("mesh: %s: %w", trunc(channel), ErrUnknownPrivate)
	}
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	return pc.info(), nil
}

// CreatePrivate creates a private channel hosted by this node, with this
// node as its only member, and joins it. name is an optional local display
// name ("#name"): it is never sent, and Send, After, Before and Subscribe
// accept it in place of the id.
func (m *Mesh) CreatePrivate(ctx context.Context, name string) (PrivateChannel, error) {
	return m.createPrivate(ctx, name, "", nil)
}

func (m *Mesh) createPrivate(ctx context.Context, name, topic string, sess *hostSession) (PrivateChannel, error) {
	if name != "" && (!ValidChannel(name) || name[0] != '#') {
		return PrivateChannel{}, fmt.Errorf("mesh: create %q: %w: want #name", trunc(name), ErrBadChannel)
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	pc := &privChan{ID: privID(m.self, salt), Name: name, Host: m.self, Salt: salt,
		Session: sess != nil, Sess: sess, Topic: topic, Epochs: []epochKey{newEpoch(1)}, Members: []string{m.self}}
	m.priv.mu.Lock()
	if len(m.priv.chans) >= maxPrivChannels {
		m.priv.mu.Unlock()
		return PrivateChannel{}, fmt.Errorf("mesh: create: more than %d private channels", maxPrivChannels)
	}
	for _, o := range m.priv.chans {
		if name != "" && o.Name == name {
			m.priv.mu.Unlock()
			return PrivateChannel{}, fmt.Errorf("mesh: create %s: a private channel of that name exists (%s)", name, o.ID)
		}
	}
	m.priv.chans[pc.ID] = pc
	err := m.priv.save(pc)
	info := pc.info()
	m.priv.mu.Unlock()
	if err != nil {
		return PrivateChannel{}, err
	}
	if err := m.Join(ctx, pc.ID); err != nil {
		return PrivateChannel{}, err
	}
	return info, nil
}

// hosted returns the channel named channel if this node hosts it.
func (m *Mesh) hosted(channel string) (*privChan, error) {
	id := m.priv.resolve(channel)
	pc, ok := m.priv.get(id)
	if !ok {
		return nil, fmt.Errorf("mesh: %s: %w", trunc(channel), ErrUnknownPrivate)
	}
	if pc.Host != m.self {
		return nil, fmt.Errorf("mesh: %s: %w (host %s)", trunc(channel), ErrNotHost, pc.Host)
	}
	return pc, nil
}

// Invite adds agent (see SendDirect for the forms) to a private channel this
// node hosts and delivers the channel's keys to it; the agent joins. Every
// key epoch is granted, so the new member reads the history. A session
// refuses invites with ErrSessionGate: its only way in is an approved knock.
func (m *Mesh) Invite(ctx context.Context, channel, agent string) error {
	pc, err := m.hosted(channel)
	if err != nil {
		return err
	}
	if pc.Session {
		return fmt.Errorf("mesh: invite to %s: %w", pc.ID, ErrSessionGate)
	}
	pid, err := m.resolvePeer(agent)
	if err != nil {
		return err
	}
	if err := m.addMember(pc.ID, pid.String()); err != nil {
		return err
	}
	if err := m.pushGrant(ctx, pc.ID, pid); err != nil {
		m.dropMember(pc.ID, pid.String())
		return fmt.Errorf("mesh: invite %s to %s: %w", pid, pc.ID, err)
	}
	m.pushGrants(ctx, pc.ID, pid.String())
	return nil
}

// Remove takes agent out of a private channel this node hosts: a new key
// epoch (message key and topic) goes to the remaining members, and the host
// moves to the new topic. The removed agent keeps the old keys, so it can
// still read what was sent before, but nothing after.
func (m *Mesh) Remove(ctx context.Context, channel, agent string) error {
	pc, err := m.hosted(channel)
	if err != nil {
		return err
	}
	pid, err := m.resolvePeer(agent)
	if err != nil {
		return err
	}
	m.priv.mu.Lock()
	if !slices.Contains(pc.Members, pid.String()) {
		m.priv.mu.Unlock()
		return fmt.Errorf("mesh: remove %s from %s: %w", pid, pc.ID, ErrNotMember)
	}
	if len(pc.Epochs) >= maxPrivEpochs {
		m.priv.mu.Unlock()
		return fmt.Errorf("mesh: remove from %s: more than %d key epochs", pc.ID, maxPrivEpochs)
	}
	pc.Members = slices.DeleteFunc(pc.Members, func(s string) bool { return s == pid.String() })
	pc.Epochs = append(pc.Epochs, newEpoch(pc.current().N+1))
	err = m.priv.save(pc)
	m.priv.mu.Unlock()
	if err != nil {
		return err
	}
	m.retopic(ctx, pc.ID)
	m.pushGrants(ctx, pc.ID, "")
	return nil
}

func (m *Mesh) addMember(id, member string) error {
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	pc, ok := m.priv.chans[id]
	if !ok {
		return ErrUnknownPrivate
	}
	if slices.Contains(pc.Members, member) {
		return nil
	}
	if len(pc.Members) >= maxPrivMembers {
		return fmt.Errorf("mesh: %s: more than %d members", id, maxPrivMembers)
	}
	pc.Members = append(pc.Members, member)
	return m.priv.save(pc)
}

func (m *Mesh) dropMember(id, member string) {
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	if pc, ok := m.priv.chans[id]; ok {
		pc.Members = slices.DeleteFunc(pc.Members, func(s string) bool { return s == member })
		_ = m.priv.save(pc)
	}
}

// retopic moves a joined private channel to its current topic.
func (m *Mesh) retopic(ctx context.Context, id string) {
	c, err := m.channel(id)
	if err != nil || c.topic.String() == m.priv.topic(id) {
		return
	}
	if err := m.Leave(ctx, id); err != nil {
		return
	}
	if err := m.Join(ctx, id); err != nil {
		m.log.Warn("private: rejoin on the new topic", "channel", id, "err", err)
	}
}

// grantSecret is the sealed part of a grant.
type grantSecret struct {
	Session bool       `json:"session,omitempty"`
	Topic   string     `json:"topic,omitempty"`
	Epochs  []epochKey `json:"epochs"`
	Members []string   `json:"members"`
}

// wireGrant is the content of a grant envelope.
type wireGrant struct {
	Type    string `json:"type"` // "grant"
	V       int    `json:"v"`    // 1
	Channel string `json:"channel"`
	Salt    []byte `json:"salt"`
	Box     []byte `json:"box"` // sealTo(member, grantSecret JSON, grantAD)
}

func grantAD(channel, host, member string) []byte {
	b := appendField(nil, grantDomain)
	b = appendField(b, channel)
	b = appendField(b, host)
	return appendField(b, member)
}

// signedPriv signs an unstored protocol envelope to peer to.
func (m *Mesh) signedPriv(to, kind, content string) (*Envelope, error) {
	e := &Envelope{Channel: "@" + to, Name: m.cfg.name, Seq: 1, TS: time.Now().UnixMilli(), Kind: kind, Content: content}
	if err := e.Sign(m.node.Key()); err != nil {
		return nil, err
	}
	return e, nil
}

// grantFor builds the grant envelope of channel id for member.
func (m *Mesh) grantFor(id, member string) (*Envelope, error) {
	m.priv.mu.Lock()
	pc, ok := m.priv.chans[id]
	if !ok || pc.Host != m.self {
		m.priv.mu.Unlock()
		return nil, ErrNotHost
	}
	if !slices.Contains(pc.Members, member) {
		m.priv.mu.Unlock()
		return nil, ErrNotMember
	}
	secret, _ := json.Marshal(grantSecret{Session: pc.Session, Topic: pc.Topic, Epochs: pc.Epochs, Members: pc.Members})
	salt := pc.Salt
	m.priv.mu.Unlock()
	content, err := grantContent(id, m.self, member, salt, secret)
	if err != nil {
		return nil, err
	}
	return m.signedPriv(member, KindGrant, content)
}

// grantContent seals secret (grantSecret JSON) to member and returns the
// content of the grant envelope of channel id by host.
func grantContent(id, host, member string, salt, secret []byte) (string, error) {
	box, err := sealTo(member, secret, grantAD(id, host, member))
	if err != nil {
		return "", err
	}
	content, _ := json.Marshal(wireGrant{Type: "grant", V: 1, Channel: id, Salt: salt, Box: box})
	return string(content), nil
}

// installGrant verifies a grant envelope from the channel's host and merges
// its keys. It returns the channel id and whether this node newly holds it.
func (m *Mesh) installGrant(e *Envelope) (string, bool, error) {
	g, s, err := openGrant(m.node.Key(), m.self, e)
	if err != nil {
		return "", false, err
	}
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	pc, ok := m.priv.chans[g.Channel]
	if !ok {
		if len(m.priv.chans) >= maxPrivChannels {
			return "", false, fmt.Errorf("mesh: grant: more than %d private channels", maxPrivChannels)
		}
		pc = &privChan{ID: g.Channel, Host: e.From, Salt: g.Salt, Session: s.Session, Topic: s.Topic}
		m.priv.chans[g.Channel] = pc
	}
	// Merge: never drop an epoch we hold. Members only join within an
	// epoch (a removal starts a new one), so a grant of a newer epoch
	// replaces the member list and one of the same epoch adds to it: a
	// replayed older grant cannot take members out.
	var cur uint32
	if len(pc.Epochs) > 0 {
		cur = pc.current().N
	}
	top := s.Epochs[len(s.Epochs)-1].N
	for _, k := range s.Epochs {
		if pc.key(k.N) == nil {
			pc.Epochs = append(pc.Epochs, k)
		}
	}
	slices.SortFunc(pc.Epochs, func(a, b epochKey) int { return int(int64(a.N) - int64(b.N)) })
	switch {
	case top > cur:
		pc.Members = slices.Clone(s.Members)
	case top == cur:
		for _, mb := range s.Members {
			if !slices.Contains(pc.Members, mb) && len(pc.Members) < maxPrivMembers {
				pc.Members = append(pc.Members, mb)
			}
		}
	}
	return pc.ID, !ok, m.priv.save(pc)
}

// pushGrant delivers id's grant to member over /confab/private/1.
func (m *Mesh) pushGrant(ctx context.Context, id string, member peer.ID) error {
	g, err := m.grantFor(id, member.String())
	if err != nil {
		return err
	}
	ack, err := m.sendEnvelope(ctx, member, privateProtocol, "confab-private", privTimeout, g)
	if err != nil {
		return err
	}
	if ack != dmOK {
		return ErrRefused
	}
	return nil
}

// pushGrants sends id's current grant to every member but us and skip, best
// effort: a member that is not reachable asks for its keys when it restarts
// or meets a message of an epoch it lacks.
func (m *Mesh) pushGrants(ctx context.Context, id, skip string) {
	m.priv.mu.Lock()
	pc, ok := m.priv.chans[id]
	var members []string
	if ok {
		members = slices.Clone(pc.Members)
	}
	m.priv.mu.Unlock()
	for _, mb := range members {
		if mb == m.self || mb == skip {
			continue
		}
		pid, err := peer.Decode(mb)
		if err != nil {
			continue
		}
		if err := m.pushGrant(ctx, id, pid); err != nil {
			m.log.Info("private: grant not delivered; the member will ask for it", "channel", id, "member", mb, "err", err)
		}
	}
}

// requestKeys asks the host of id for our current grant and installs it.
func (m *Mesh) requestKeys(ctx context.Context, id string) error {
	pc, ok := m.priv.get(id)
	if !ok {
		return ErrUnknownPrivate
	}
	host, err := peer.Decode(pc.Host)
	if err != nil || pc.Host == m.self {
		return err
	}
	req, err := m.signedPriv(pc.Host, kindKeys, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, privTimeout)
	defer cancel()
	s, err := m.node.Host().NewStream(network.WithAllowLimitedConn(ctx, "confab-private"), host, privateProtocol)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(privTimeout))
	if err := writeFrame(s, req.Marshal()); err != nil {
		_ = s.Reset()
		return err
	}
	_ = s.CloseWrite()
	b, err := readFrame(s, MaxEnvelopeLen)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return fmt.Errorf("mesh: keys for %s: %w", id, ErrNotMember)
	}
	g, err := Unmarshal(b)
	if err == nil {
		err = g.Verify()
	}
	if err != nil || g.From != pc.Host {
		return fmt.Errorf("mesh: keys for %s: %w: bad grant", id, ErrMalformed)
	}
	if _, _, err := m.installGrant(g); err != nil {
		return err
	}
	m.retopic(ctx, id)
	return nil
}

// refreshLoop asks hosts for current keys once at start and whenever a
// message of an unknown epoch shows up. Runs until Close.
func (m *Mesh) refreshLoop() {
	defer m.wg.Done()
	m.priv.wake()
	last := map[string]time.Time{}
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.priv.kick:
		}
		m.priv.mu.Lock()
		var ids []string
		for id, pc := range m.priv.chans {
			if pc.Host != m.self && time.Since(last[id]) > 30*time.Second {
				ids = append(ids, id)
			}
		}
		m.priv.mu.Unlock()
		for _, id := range ids {
			last[id] = time.Now()
			if err := m.requestKeys(m.ctx, id); err != nil && m.ctx.Err() == nil {
				m.log.Debug("private: key refresh", "channel", id, "err", err)
			}
		}
	}
}

// servePrivate answers one /confab/private/1 request.
func (m *Mesh) servePrivate(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(privTimeout))
	b, err := readFrame(s, MaxEnvelopeLen)
	if err != nil {
		_ = s.Reset()
		return
	}
	e, err := Unmarshal(b)
	if err == nil {
		err = e.Verify()
	}
	now := time.Now()
	if err != nil {
		m.stats.add(&m.stats.RejectedInvalid, 1)
		_ = s.Reset()
		return
	}
	// A knock may come through a relay (a gateway knocking for a thin
	// client): it is the joiner's signature that counts, and the grant is
	// sealed to the joiner, so the relay learns nothing it could use. A
	// grant may be relayed too (a thin host's, front.go): the channel id
	// binds its host, the box its member. A knock for another peer is for
	// a thin host this node fronts (front.go).
	remote := s.Conn().RemotePeer().String()
	relayed := e.From != remote
	fronted := e.Kind == KindKnock && e.Channel != "@"+m.self
	ts := time.UnixMilli(e.TS)
	if (relayed && e.Kind != KindKnock && e.Kind != KindGrant) || (e.Channel != "@"+m.self && !fronted) ||
		ts.Before(now.Add(-m.cfg.pastWindow)) || ts.After(now.Add(m.cfg.futureWindow)) {
		m.stats.add(&m.stats.RejectedInvalid, 1)
		_ = s.Reset()
		return
	}
	if !m.rate.allow("private/"+e.From, now) || (relayed && !m.rate.allow("private/"+remote, now)) {
		_ = s.Reset()
		return
	}
	switch e.Kind {
	case KindGrant:
		id, fresh, err := m.installGrant(e)
		if err != nil {
			m.log.Info("private: grant refused", "from", e.From, "err", err)
			_, _ = s.Write([]byte{dmRefused})
			return
		}
		_, _ = s.Write([]byte{dmOK})
		ctx, cancel := context.WithTimeout(m.ctx, privTimeout)
		defer cancel()
		if fresh {
			if err := m.Join(ctx, id); err != nil {
				m.log.Warn("private: join granted channel", "channel", id, "err", err)
			}
		} else {
			m.retopic(ctx, id)
		}
	case kindKeys:
		g, err := m.grantFor(e.Content, e.From)
		if err != nil {
			_ = writeFrame(s, nil)
			return
		}
		_ = writeFrame(s, g.Marshal())
	case KindKnock:
		if fronted {
			m.serveFrontKnock(s, e)
			return
		}
		m.serveKnock(s, e)
	default:
		_ = s.Reset()
	}
}

// encryptFor turns a local message for private channel id into the content
// of its envelope (kind KindEncrypted).
func (m *Mesh) encryptFor(id, kind, text, replyTo string) (string, error) {
	m.priv.mu.Lock()
	pc, ok := m.priv.chans[id]
	var k epochKey
	if ok {
		k = pc.current()
	}
	member := ok && slices.Contains(pc.Members, m.self)
	m.priv.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("mesh: send %s: %w", id, ErrNoKey)
	}
	if !member {
		return "", fmt.Errorf("mesh: send %s: %w", id, ErrNotMember)
	}
	return encryptContent(k.Key, k.N, id, m.self, replyTo, kind, text)
}

// Decrypt returns a copy of a private channel's envelope with its inner kind
// and text in Kind and Content. ID and Sig still belong to the stored,
// encrypted envelope: the copy does not Verify. Envelopes of other channels
// are returned as they are. Errors: ErrNoKey, ErrDecrypt.
func (m *Mesh) Decrypt(e *Envelope) (*Envelope, error) {
	if e == nil || !isPrivate(e.Channel) {
		return e, nil
	}
	if e.Kind != KindEncrypted {
		return nil, fmt.Errorf("mesh: decrypt %s: %w: kind %q", trunc(e.ID), ErrDecrypt, e.Kind)
	}
	epoch, _, err := contentEpoch(e.Content)
	if err != nil {
		return nil, err
	}
	m.priv.mu.Lock()
	pc, ok := m.priv.chans[e.Channel]
	var key []byte
	if ok {
		key = pc.key(epoch)
		if key == nil && epoch > pc.current().N {
			m.priv.wake() // a newer epoch: our grant is stale
		}
	}
	m.priv.mu.Unlock()
	if key == nil {
		return nil, fmt.Errorf("mesh: decrypt %s: %w (epoch %d)", trunc(e.ID), ErrNoKey, epoch)
	}
	kind, text, err := decryptContent(key, e)
	if err != nil {
		return nil, err
	}
	c := *e
	c.Kind, c.Content = kind, text
	return &c, nil
}

// DecryptRecord is Decrypt for a record.
func (m *Mesh) DecryptRecord(r Record) (Record, error) {
	e, err := m.Decrypt(r.Env)
	if err != nil {
		return r, err
	}
	return Record{Env: e, Cursor: r.Cursor}, nil
}

// Archives of private channels (docs/private.md, "Archive"). A node without
// keys (a rendezvous) can follow a private channel on the topic a member
// gives it: it stores and serves the members' ciphertext as it is, never
// decrypts, and learns only who posted when. A member lets the archives it
// asked pull the channel over /confab/sync/1 (AllowArchive); everyone else
// who is not a member is refused, as before.
const (
	maxArchivesPerChannel = 16
	sealedFile            = "sealed.topics" // in the private directory: id -> topic
)

// ValidSealedTopic reports whether topic has the form of a private channel's
// gossip topic: the channel topic prefix and 64 lowercase hex digits.
func ValidSealedTopic(topic string) bool {
	h, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range []byte(h) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// sealedForm reports whether e looks like a member's message on a private
// channel: kind enc with a well-formed ciphertext (not whether it decrypts).
func sealedForm(e *Envelope) bool {
	if e.Kind != KindEncrypted || !strings.HasPrefix(e.Content, cipherTag) {
		return false
	}
	_, _, err := contentEpoch(e.Content)
	return err == nil
}

// maySync reports whether agent may pull private channel id over
// /confab/sync/1: a member, an archive a member allowed, or anyone when this
// node is itself an archive (it holds ciphertext only).
func (p *private) maySync(id, agent string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc, ok := p.chans[id]
	return !ok || slices.Contains(pc.Members, agent) || slices.Contains(p.archives[id], agent)
}

func (p *private) loadSealed(log interface{ Warn(string, ...any) }) {
	b, err := os.ReadFile(filepath.Join(p.dir, sealedFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("private: read archived topics", "err", err)
		}
		return
	}
	var m map[string]string
	if len(b) > 8<<20 || json.Unmarshal(b, &m) != nil {
		log.Warn("private: archived topics unreadable; ignored")
		return
	}
	for id, t := range m {
		if isPrivate(id) && ValidSealedTopic(t) && len(p.sealed) < maxPrivChannels {
			p.sealed[id] = t
		}
	}
}

// saveSealed writes the archived topics; the caller holds p.mu.
func (p *private) saveSealed() error {
	if p.dir == "" {
		return nil
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("mesh: private: %w", err)
	}
	b, _ := json.Marshal(p.sealed)
	if err := writeFileAtomic(filepath.Join(p.dir, sealedFile), b); err != nil {
		return fmt.Errorf("mesh: private: save archived topics: %w", err)
	}
	return nil
}

// PrivateTopic returns the current gossip topic of a private channel this
// node holds keys for (by id or local name), "" otherwise. A member hands it
// to an archive (JoinSealed); it changes when a removal rotates the key.
func (m *Mesh) PrivateTopic(channel string) string {
	id := m.priv.resolve(channel)
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	pc, ok := m.priv.chans[id]
	if !ok {
		return ""
	}
	return topicFor(pc.current().Topic, id)
}

// AllowArchive lets peer archive pull private channel id (which this node
// holds keys for) over /confab/sync/1, so that it archives what was said
// before it subscribed. The archive receives ciphertext only. At most
// maxArchivesPerChannel peers per channel; kept in memory only.
func (m *Mesh) AllowArchive(channel, archive string) error {
	id := m.priv.resolve(channel)
	if _, err := AuthorKey(archive); err != nil {
		return fmt.Errorf("mesh: allow archive %s: %w", trunc(archive), err)
	}
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	if _, ok := m.priv.chans[id]; !ok {
		return fmt.Errorf("mesh: allow archive for %s: %w", trunc(channel), ErrUnknownPrivate)
	}
	as := m.priv.archives[id]
	if slices.Contains(as, archive) {
		return nil
	}
	if len(as) >= maxArchivesPerChannel {
		return fmt.Errorf("mesh: allow archive for %s: more than %d archives", id, maxArchivesPerChannel)
	}
	m.priv.archives[id] = append(as, archive)
	return nil
}

// JoinSealed follows private channel id without its keys, on gossip topic
// topic (as given by a member, see PrivateTopic): the node stores what
// members publish there, as signed by them — well-formed ciphertext for id
// only — and serves it over /confab/sync/1 to whoever asks by id. It never
// decrypts. Joining again with another topic (after a key rotation) moves
// the channel to it. The topic is kept next to the state file and used when
// the channel is rejoined at start. A node that holds id's keys refuses
// (ErrBadChannel): it joins with Join.
func (m *Mesh) JoinSealed(ctx context.Context, id, topic string) error {
	if !isPrivate(id) || !ValidSealedTopic(topic) {
		return fmt.Errorf("mesh: join sealed %q on %q: %w", trunc(id), trunc(topic), ErrBadChannel)
	}
	m.priv.mu.Lock()
	if _, member := m.priv.chans[id]; member {
		m.priv.mu.Unlock()
		return fmt.Errorf("mesh: join sealed %s: %w: this node holds its keys", id, ErrBadChannel)
	}
	old, known := m.priv.sealed[id]
	if !known && len(m.priv.sealed) >= maxPrivChannels {
		m.priv.mu.Unlock()
		return fmt.Errorf("mesh: join sealed %s: more than %d archived private channels", id, maxPrivChannels)
	}
	var err error
	if old != topic {
		m.priv.sealed[id] = topic
		err = m.priv.saveSealed()
	}
	m.priv.mu.Unlock()
	if err != nil {
		return err
	}
	if c, err := m.channel(id); err == nil {
		if c.topic.String() == topic {
			return nil
		}
		if err := m.Leave(ctx, id); err != nil && !errors.Is(err, ErrNotJoined) {
			return err
		}
	}
	return m.Join(ctx, id)
}
