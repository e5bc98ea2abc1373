package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/mr-tron/base58"
)

// Sessions hand a live conversation to another agent. The host opens a
// session: a private channel it hosts, whose first message is a context
// snapshot, and a session key. The key is a bearer string that only lets its
// holder knock:
//
//	"cfs1_" + base58(len u8 || host peer id bytes || channel id (16) || knock secret (16) || expiry u64 BE unix s [|| len u8 || front peer id bytes])
//
// It holds no channel key. Joining sends a knock over /confab/private/1: an
// envelope of kind "knock" (channel "@<host>", stored by both sides, so it
// shows in the host's listen) signed by the joiner, whose content carries
// the channel, a fresh nonce, a timestamp and
//
//	proof = HMAC-SHA256(knock secret, knockDomain, host, channel, joiner, nonce, exp, ts)
//
// The host refuses a knock for a channel it does not host as a session, a
// closed session, an expired key, a timestamp outside the live window, a bad
// proof, or a nonce it has seen (nonces are remembered until the key
// expires). Otherwise it answers "pending" and keeps the stream open until
// its owner approves or denies (or knockTimeout passes). On approval it writes
// "approved", the grant (all key epochs, sealed to the joiner), then every
// stored envelope of the channel (ciphertext, as signed by their authors),
// then an empty frame; the joiner stores them, answers one byte, and joins.
// Replies are JSON frames {"status", "code", "error"}.
const (
	// KindKnock is the kind of a session knock.
	KindKnock = "knock"
	// KindContext is the inner kind of a session's context snapshot.
	KindContext = "context"
	// SessionKeyPrefix starts every session key.
	SessionKeyPrefix = "cfs1_"
	// DefaultSessionTTL is how long a session key is valid by default.
	DefaultSessionTTL = 24 * time.Hour
	knockDomain       = "confab/knock/v1"
	knockTimeout      = 15 * time.Minute
	maxBacklog        = 200000
	maxNonces         = 100000
)

// Errors of sessions; a refused knock wraps one of them.
var (
	ErrBadSessionKey  = errors.New("not a session key")
	ErrKeyExpired     = errors.New("session key expired")
	ErrSessionClosed  = errors.New("session closed")
	ErrUnknownSession = errors.New("no such session on this host")
	ErrBadKnock       = errors.New("knock proof invalid (wrong key or forged)")
	ErrKnockReplayed  = errors.New("knock replayed")
	ErrKnockStale     = errors.New("knock timestamp outside the window (check clocks)")
	ErrDenied         = errors.New("the host denied the knock")
	ErrNoKnock        = errors.New("no pending knock from that agent")
	ErrKnockTimeout   = errors.New("the host did not answer the knock in time")
	ErrHostOffline    = errors.New("the session's host (a thin client) is not connected to the node that fronts it")
	ErrHostBusy       = errors.New("the session's host has too many knocks waiting")
)

var knockCodes = map[string]error{
	"expired": ErrKeyExpired, "closed": ErrSessionClosed, "unknown_session": ErrUnknownSession,
	"bad_proof": ErrBadKnock, "replayed": ErrKnockReplayed, "stale": ErrKnockStale,
	"denied": ErrDenied, "timeout": ErrKnockTimeout, "host_offline": ErrHostOffline,
	"busy": ErrHostBusy,
}

func knockCode(err error) string {
	for c, e := range knockCodes {
		if errors.Is(err, e) {
			return c
		}
	}
	return "error"
}

// hostSession is the host's state of a session (kept in the 0600 key file).
type hostSession struct {
	Secret []byte           `json:"secret,omitempty"` // nil once closed
	Expiry int64            `json:"expiry"`           // unix seconds
	Closed bool             `json:"closed,omitempty"`
	Nonces map[string]int64 `json:"nonces,omitempty"` // hex nonce -> unix s until which it is kept
}

// SessionKey is the parsed form of a session key.
type SessionKey struct {
	Host    string
	Channel string
	Secret  []byte
	Expiry  time.Time
	// Front, if set, is the peer id of the node that fronts a host with no
	// libp2p presence (a thin client behind that node's gateway): joiners
	// send their knock there instead of dialling Host.
	Front string
}

// String encodes k.
func (k SessionKey) String() string {
	pid, _ := peer.Decode(k.Host)
	hb := []byte(pid)
	ch, _ := hex.DecodeString(strings.TrimPrefix(k.Channel, "~"))
	b := []byte{byte(len(hb))}
	b = append(b, hb...)
	b = append(b, ch...)
	b = append(b, k.Secret...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Expiry.Unix()))
	if k.Front != "" {
		fid, _ := peer.Decode(k.Front)
		b = append(b, byte(len(fid)))
		b = append(b, fid...)
	}
	return SessionKeyPrefix + base58.Encode(b)
}

// ParseSessionKey decodes a session key. It does not check expiry.
func ParseSessionKey(s string) (SessionKey, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, SessionKeyPrefix) || len(s) > 256 {
		return SessionKey{}, ErrBadSessionKey
	}
	b, err := base58.Decode(s[len(SessionKeyPrefix):])
	if err != nil || len(b) < 1 {
		return SessionKey{}, ErrBadSessionKey
	}
	n := int(b[0])
	if len(b) < 1+n+16+16+8 {
		return SessionKey{}, ErrBadSessionKey
	}
	pid, err := keyPeer(b[1 : 1+n])
	if err != nil {
		return SessionKey{}, err
	}
	r := b[1+n:]
	k := SessionKey{Host: pid.String(), Channel: "~" + hex.EncodeToString(r[:16]), Secret: append([]byte(nil), r[16:32]...),
		Expiry: time.Unix(int64(binary.BigEndian.Uint64(r[32:40])), 0)}
	if r = r[40:]; len(r) > 0 { // the optional front: len u8 ‖ peer id
		if len(r) != 1+int(r[0]) {
			return SessionKey{}, ErrBadSessionKey
		}
		fid, err := keyPeer(r[1:])
		if err != nil || fid.String() == k.Host {
			return SessionKey{}, ErrBadSessionKey
		}
		k.Front = fid.String()
	}
	return k, nil
}

// keyPeer decodes an Ed25519 peer id of a session key.
func keyPeer(b []byte) (peer.ID, error) {
	pid, err := peer.IDFromBytes(b)
	if err != nil {
		return "", ErrBadSessionKey
	}
	if _, err := AuthorKey(pid.String()); err != nil {
		return "", ErrBadSessionKey
	}
	return pid, nil
}

// Session is an opened session.
type Session struct {
	Channel PrivateChannel `json:"channel"`
	Key     string         `json:"key"`
	Expires time.Time      `json:"expires"`
	Context Record         `json:"context"`
}

// OpenSession creates a session hosted by this node about topic: a private
// channel whose first message (inner kind "context") is snapshot, and a
// session key valid for ttl (DefaultSessionTTL if 0).
func (m *Mesh) OpenSession(ctx context.Context, topic, snapshot string, ttl time.Duration) (Session, error) {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if len(topic) > 256 || !validName(topic) {
		return Session{}, fmt.Errorf("mesh: session: %w: topic must be at most 256 bytes without control characters", ErrMalformed)
	}
	exp := time.Now().Add(ttl).Truncate(time.Second)
	hs := &hostSession{Secret: make([]byte, 16), Expiry: exp.Unix(), Nonces: map[string]int64{}}
	rand.Read(hs.Secret)
	pc, err := m.createPrivate(ctx, "", topic, hs)
	if err != nil {
		return Session{}, err
	}
	if snapshot == "" {
		snapshot = topic
	}
	rec, err := m.Send(ctx, pc.ID, KindContext, snapshot, "")
	if err != nil {
		return Session{}, fmt.Errorf("mesh: session: post context: %w", err)
	}
	key := SessionKey{Host: m.self, Channel: pc.ID, Secret: hs.Secret, Expiry: exp}
	return Session{Channel: pc, Key: key.String(), Expires: exp, Context: rec}, nil
}

// CloseSession ends a session this node hosts: its key is revoked (later
// knocks are refused with ErrSessionClosed) and pending knocks are denied.
// Members keep the channel and what they have read.
func (m *Mesh) CloseSession(ctx context.Context, channel string) error {
	pc, err := m.hosted(channel)
	if err != nil {
		return err
	}
	m.priv.mu.Lock()
	if pc.Sess == nil {
		m.priv.mu.Unlock()
		return fmt.Errorf("mesh: close %s: %w", pc.ID, ErrUnknownSession)
	}
	pc.Sess.Closed, pc.Sess.Secret, pc.Sess.Nonces = true, nil, nil
	err = m.priv.save(pc)
	var waits []*knockWait
	for id, w := range m.priv.pending {
		if w.channel == pc.ID {
			waits = append(waits, w)
			delete(m.priv.pending, id)
		}
	}
	m.priv.mu.Unlock()
	for _, w := range waits {
		w.decide(ctx, false)
	}
	return err
}

// Knock is a pending knock on a session this node hosts.
type Knock struct {
	ID      string    `json:"id"` // the knock envelope's id
	From    string    `json:"from"`
	Name    string    `json:"name"`
	Channel string    `json:"channel"`
	Topic   string    `json:"topic"`
	TS      time.Time `json:"ts"`
}

// knockWait is a knock whose stream waits for the host's decision.
type knockWait struct {
	env     *Envelope
	channel string
	ch      chan decision
}

type decision struct {
	approve bool
	result  chan error
}

// decide hands d to the waiting stream and waits for the transfer result.
func (w *knockWait) decide(ctx context.Context, approve bool) error {
	d := decision{approve: approve, result: make(chan error, 1)}
	select {
	case w.ch <- d:
	default:
		return fmt.Errorf("mesh: the knock of %s is no longer waiting: %w", w.env.From, ErrNoKnock)
	}
	select {
	case err := <-d.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Knocks lists the knocks waiting for this host's decision, oldest first.
func (m *Mesh) Knocks() []Knock {
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	out := make([]Knock, 0, len(m.priv.pending))
	for _, w := range m.priv.pending {
		k := Knock{ID: w.env.ID, From: w.env.From, Name: w.env.Name, Channel: w.channel, TS: time.UnixMilli(w.env.TS)}
		if pc, ok := m.priv.chans[w.channel]; ok {
			k.Topic = pc.Topic
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Knock) int { return a.TS.Compare(b.TS) })
	return out
}

// takeKnock removes and returns the pending knock of agent: a peer id,
// "@peerid", "@name" or a name, or a knock id (prefix of 8 or more).
func (m *Mesh) takeKnock(agent string) (*knockWait, error) {
	a := strings.TrimPrefix(agent, "@")
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	var found []string
	for id, w := range m.priv.pending {
		if id == a || w.env.Name == a || (len(a) >= 8 && strings.HasPrefix(w.env.ID, a)) {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("mesh: %s: %w", trunc(agent), ErrNoKnock)
	case 1:
		w := m.priv.pending[found[0]]
		delete(m.priv.pending, found[0])
		return w, nil
	default:
		slices.Sort(found)
		return nil, fmt.Errorf("mesh: %s is ambiguous, candidates: %s: %w", trunc(agent), strings.Join(found, ", "), ErrUnknownAgent)
	}
}

// Approve lets the pending knock of agent in: the joiner becomes a member
// and receives the keys and the backlog on its knock's stream. It returns
// when the joiner acknowledged storing them. Only the host holds knocks, so
// only the host can approve. Errors: ErrNoKnock and transfer errors.
func (m *Mesh) Approve(ctx context.Context, agent string) (PrivateChannel, error) {
	w, err := m.takeKnock(agent)
	if err != nil {
		return PrivateChannel{}, err
	}
	if err := w.decide(ctx, true); err != nil {
		return PrivateChannel{}, err
	}
	return m.Private(w.channel)
}

// Deny refuses the pending knock of agent.
func (m *Mesh) Deny(ctx context.Context, agent string) error {
	w, err := m.takeKnock(agent)
	if err != nil {
		return err
	}
	return w.decide(ctx, false)
}

type knockContent struct {
	Type    string `json:"type"` // "knock"
	V       int    `json:"v"`    // 1
	Channel string `json:"channel"`
	Exp     int64  `json:"exp"`
	TS      int64  `json:"ts"`    // unix ms
	Nonce   string `json:"nonce"` // 32 hex
	Proof   string `json:"proof"` // 64 hex
}

func knockProof(secret []byte, host, channel, joiner, nonce string, exp, ts int64) []byte {
	mac := hmac.New(sha256.New, secret)
	b := appendField(nil, knockDomain)
	b = appendField(b, host)
	b = appendField(b, channel)
	b = appendField(b, joiner)
	b = appendField(b, nonce)
	b = binary.BigEndian.AppendUint64(b, uint64(exp))
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	mac.Write(b)
	return mac.Sum(nil)
}

type knockReply struct {
	Status string `json:"status"` // pending, approved, refused
	Code   string `json:"code,omitempty"`
	Error  string `json:"error,omitempty"`
}

func writeReply(s network.Stream, r knockReply) error {
	b, _ := json.Marshal(r)
	return writeFrame(s, b)
}

// parseKnock decodes the content of a knock envelope.
func parseKnock(e *Envelope) (knockContent, error) {
	var k knockContent
	if err := json.Unmarshal([]byte(e.Content), &k); err != nil || k.Type != "knock" || k.V != 1 || len(k.Nonce) != 32 || len(k.Proof) != 64 {
		return k, fmt.Errorf("%w: malformed", ErrBadKnock)
	}
	return k, nil
}

// admit checks knock e (content k) on a session hosted by host, at now,
// with ts allowed from past before to future after now, and remembers its
// nonce. The caller persists hs if that matters.
func (hs *hostSession) admit(host string, e *Envelope, k knockContent, now time.Time, past, future time.Duration) error {
	switch {
	case hs.Closed:
		return ErrSessionClosed
	case now.Unix() > hs.Expiry:
		return ErrKeyExpired
	case k.Exp != hs.Expiry:
		return ErrBadKnock
	}
	ts := time.UnixMilli(k.TS)
	if ts.Before(now.Add(-past)) || ts.After(now.Add(future)) {
		return ErrKnockStale
	}
	proof, err := hex.DecodeString(k.Proof)
	want := knockProof(hs.Secret, host, k.Channel, e.From, k.Nonce, k.Exp, k.TS)
	if err != nil || subtle.ConstantTimeCompare(proof, want) != 1 {
		return ErrBadKnock
	}
	if _, seen := hs.Nonces[k.Nonce]; seen {
		return ErrKnockReplayed
	}
	for n, until := range hs.Nonces {
		if until < now.Unix() {
			delete(hs.Nonces, n)
		}
	}
	if len(hs.Nonces) >= maxNonces {
		return fmt.Errorf("%w: too many knocks on this session", ErrKnockReplayed)
	}
	if hs.Nonces == nil {
		hs.Nonces = map[string]int64{}
	}
	hs.Nonces[k.Nonce] = hs.Expiry
	return nil
}

// checkKnock validates a knock for a session we host and remembers its
// nonce. It returns the channel id.
func (m *Mesh) checkKnock(e *Envelope) (string, error) {
	k, err := parseKnock(e)
	if err != nil {
		return "", err
	}
	now := time.Now()
	m.priv.mu.Lock()
	defer m.priv.mu.Unlock()
	pc, ok := m.priv.chans[k.Channel]
	if !ok || pc.Host != m.self || pc.Sess == nil {
		return "", ErrUnknownSession
	}
	if err := pc.Sess.admit(m.self, e, k, now, m.cfg.pastWindow, m.cfg.futureWindow); err != nil {
		return "", err
	}
	if err := m.priv.save(pc); err != nil {
		return "", err
	}
	return pc.ID, nil
}

// serveKnock runs the host's side of a knock on stream s.
func (m *Mesh) serveKnock(s network.Stream, e *Envelope) {
	id, err := m.checkKnock(e)
	if err != nil {
		m.log.Info("session: knock refused", "from", e.From, "err", err)
		_ = writeReply(s, knockReply{Status: "refused", Code: knockCode(err), Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, knockTimeout)
	defer cancel()
	// Store the knock where the host looks: its direct inbox, shown live.
	if curs, err := m.hist.Append(ctx, []*Envelope{e}); err == nil && curs[0] != "" {
		m.deliver(Record{Env: e, Cursor: curs[0]})
	}
	w := &knockWait{env: e, channel: id, ch: make(chan decision, 1)}
	m.priv.mu.Lock()
	old := m.priv.pending[e.From]
	m.priv.pending[e.From] = w
	m.priv.mu.Unlock()
	if old != nil {
		go old.decide(ctx, false) // superseded by the new knock
	}
	defer func() {
		m.priv.mu.Lock()
		if m.priv.pending[e.From] == w {
			delete(m.priv.pending, e.From)
		}
		m.priv.mu.Unlock()
	}()
	_ = s.SetDeadline(time.Now().Add(knockTimeout + privTimeout))
	if err := writeReply(s, knockReply{Status: "pending"}); err != nil {
		_ = s.Reset()
		return
	}
	var d decision
	select {
	case d = <-w.ch:
	case <-ctx.Done():
		_ = writeReply(s, knockReply{Status: "refused", Code: "timeout", Error: ErrKnockTimeout.Error()})
		return
	}
	if !d.approve {
		_ = writeReply(s, knockReply{Status: "refused", Code: "denied", Error: ErrDenied.Error()})
		d.result <- nil
		return
	}
	d.result <- m.admit(ctx, s, id, e.From)
}

// admit makes joiner a member of id and writes the grant and the backlog.
func (m *Mesh) admit(ctx context.Context, s network.Stream, id, joiner string) error {
	if err := m.addMember(id, joiner); err != nil {
		return err
	}
	fail := func(err error) error {
		m.dropMember(id, joiner)
		_ = s.Reset()
		return fmt.Errorf("mesh: admit %s: %w", joiner, err)
	}
	g, err := m.grantFor(id, joiner)
	if err != nil {
		return fail(err)
	}
	if _, err := m.writeAdmission(ctx, streamSink{s}, id, g); err != nil {
		return fail(err)
	}
	m.pushGrants(ctx, id, joiner) // members learn the new member list
	return nil
}

// writeAdmission writes an approved knock's outcome to sink: the grant g,
// then every stored envelope of channel (ciphertext as signed by its
// authors, oldest first, at most maxBacklog), then waits for the joiner to
// confirm. A hosting node (admit) and a node fronting a thin host
// (frontAdmit) both answer through it, so a joiner cannot tell them apart.
func (m *Mesh) writeAdmission(ctx context.Context, sink admissionSink, channel string, g *Envelope) (int, error) {
	if err := sink.approved(g); err != nil {
		return 0, err
	}
	cursor, n := "", 0
	for n < maxBacklog {
		envs, curs, err := m.hist.After(ctx, channel, cursor, relayPageLen)
		if err != nil {
			return n, err
		}
		if len(envs) == 0 {
			break
		}
		page := envs[:0]
		for _, e := range envs {
			if sealedForm(e) { // a private channel's store holds nothing else; belt and braces
				page = append(page, e)
			}
		}
		if err := sink.page(page); err != nil {
			return n, err
		}
		n += len(page)
		cursor = curs[len(curs)-1]
	}
	return n, sink.finish(n)
}

// JoinResult is what JoinSession brought.
type JoinResult struct {
	Channel PrivateChannel `json:"channel"`
	Backlog int            `json:"backlog"` // envelopes received with the keys
}

// JoinSession knocks on the host of session key and waits (until ctx ends)
// for its decision. pending, if not nil, is called once the host holds the
// knock. On approval it stores the keys and the whole backlog, joins the
// channel and returns; messages after that arrive live. A refusal wraps
// ErrKeyExpired, ErrSessionClosed, ErrUnknownSession, ErrBadKnock,
// ErrKnockReplayed, ErrKnockStale, ErrDenied or ErrKnockTimeout.
func (m *Mesh) JoinSession(ctx context.Context, key string, pending func()) (JoinResult, error) {
	k, err := ParseSessionKey(key)
	if err != nil {
		return JoinResult{}, fmt.Errorf("mesh: join session: %w", err)
	}
	if time.Now().After(k.Expiry) {
		return JoinResult{}, fmt.Errorf("mesh: join session: %w (at %s)", ErrKeyExpired, k.Expiry.UTC().Format(time.RFC3339))
	}
	if k.Host == m.self {
		return JoinResult{}, fmt.Errorf("mesh: join session: this agent hosts it")
	}
	host, _ := peer.Decode(k.Host)
	e, _, err := m.storeDirect(ctx, host, KindKnock, knockFor(k, m.self, time.Now()), "")
	if err != nil {
		return JoinResult{}, err
	}
	to := host
	if k.Front != "" { // a thin client's session: knock at the node that fronts it
		to, _ = peer.Decode(k.Front)
	}
	var res JoinResult
	err = m.sendKnock(ctx, to, e, pending, func(s network.Stream) (err error) {
		res, err = m.receiveAdmission(ctx, s, host)
		return err
	})
	return res, err
}

// sendKnock delivers a signed knock envelope to host (or the node fronting
// it) and runs the joiner's side of the exchange.
// approved runs on the stream once the host approved.
func (m *Mesh) sendKnock(ctx context.Context, host peer.ID, e *Envelope, pending func(), approved func(network.Stream) error) error {
	h := m.node.Host()
	if h.Network().Connectedness(host) != network.Connected && len(h.Peerstore().Addrs(host)) == 0 {
		if d := m.dht(); d != nil {
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if ai, err := d.FindPeer(fctx, host); err == nil {
				h.Peerstore().AddAddrs(host, ai.Addrs, peerstore.TempAddrTTL)
			}
			cancel()
		}
	}
	sctx, cancel := context.WithTimeout(ctx, privTimeout)
	s, err := h.NewStream(network.WithAllowLimitedConn(sctx, "confab-knock"), host, privateProtocol)
	cancel()
	if err != nil {
		return fmt.Errorf("mesh: knock: reach host %s: %w", host, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(knockTimeout + 2*privTimeout))
	if err := writeFrame(s, e.Marshal()); err != nil {
		_ = s.Reset()
		return fmt.Errorf("mesh: knock: %w", err)
	}
	// The write side stays open: the joiner confirms the backlog on it.
	for {
		b, err := readFrame(s, 4096)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("mesh: knock: host closed the stream: %w", err)
		}
		var r knockReply
		if json.Unmarshal(b, &r) != nil {
			_ = s.Reset()
			return fmt.Errorf("mesh: knock: %w: bad reply", ErrMalformed)
		}
		switch r.Status {
		case "pending":
			if pending != nil {
				pending()
				pending = nil
			}
			continue
		case "approved":
			return approved(s)
		default:
			if sentinel, ok := knockCodes[r.Code]; ok {
				return fmt.Errorf("mesh: knock refused: %w", sentinel)
			}
			return fmt.Errorf("mesh: knock refused: %s", trunc(r.Error))
		}
	}
}

// receiveAdmission reads the grant and the backlog after approval.
func (m *Mesh) receiveAdmission(ctx context.Context, s network.Stream, host peer.ID) (JoinResult, error) {
	b, err := readFrame(s, MaxEnvelopeLen)
	if err != nil {
		return JoinResult{}, fmt.Errorf("mesh: admission: %w", err)
	}
	g, err := Unmarshal(b)
	if err == nil {
		err = g.Verify()
	}
	if err != nil || g.From != host.String() {
		_ = s.Reset()
		return JoinResult{}, fmt.Errorf("mesh: admission: %w: bad grant", ErrMalformed)
	}
	id, _, err := m.installGrant(g)
	if err != nil {
		_ = s.Reset()
		return JoinResult{}, err
	}
	var batch []*Envelope
	n, size := 0, 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := m.hist.Append(ctx, batch)
		batch, size = batch[:0], 0
		return err
	}
	for {
		b, err := readFrame(s, MaxEnvelopeLen)
		if err != nil {
			return JoinResult{}, fmt.Errorf("mesh: admission: backlog: %w", err)
		}
		if len(b) == 0 {
			break
		}
		e, err := Unmarshal(b)
		if err == nil {
			err = e.Verify()
		}
		if err != nil || e.Channel != id {
			_ = s.Reset()
			return JoinResult{}, fmt.Errorf("mesh: admission: backlog: %w: invalid envelope", ErrMalformed)
		}
		if n++; n > maxBacklog {
			_ = s.Reset()
			return JoinResult{}, fmt.Errorf("mesh: admission: backlog over %d envelopes", maxBacklog)
		}
		batch = append(batch, e)
		if size += len(b); len(batch) >= 256 || size >= maxBatchBytes/2 {
			if err := flush(); err != nil {
				_ = s.Reset()
				return JoinResult{}, fmt.Errorf("mesh: admission: store: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		_ = s.Reset()
		return JoinResult{}, fmt.Errorf("mesh: admission: store: %w", err)
	}
	_, _ = s.Write([]byte{dmOK})
	if err := m.Join(ctx, id); err != nil {
		return JoinResult{}, err
	}
	pc, err := m.Private(id)
	return JoinResult{Channel: pc, Backlog: n}, err
}

// Relay limits: a relayed backlog is handed on in pages of at most
// relayPageLen envelopes and about relayPageBytes.
const (
	relayPageLen   = 256
	relayPageBytes = 512 << 10
)

// RelayKnock delivers knock, signed by a thin client that runs no node
// (see NewKnock), to its host over /confab/private/1 and relays the answer.
// This node only forwards: the host checks the knock's proof and that the
// knock is the joiner's own (its signature), seals the grant to the joiner
// and sends ciphertext. pending, if not nil, is called once the host holds
// the knock. On approval deliver is called with the grant envelope (sealed
// to the joiner; verified here as signed by the host for the joiner) and
// the backlog in pages, oldest first, each envelope verified, of the
// granted channel and sealed (kind "enc", ciphertext); the last call has
// done set (its page may be empty). Nothing is stored. After the last
// deliver returns nil this node confirms to the host, which has then
// admitted the joiner; an error from deliver resets the stream, and the
// host takes the joiner out again. It returns the number of backlog
// envelopes. A refusal wraps the errors of JoinSession.
//
// front is the node that fronts the host (SessionKey.Front), "" to dial
// the host itself; a host fronted by this very node is served here
// (Front).
func (m *Mesh) RelayKnock(ctx context.Context, knock *Envelope, front string, pending func(), deliver func(grant *Envelope, page []*Envelope, done bool) error) (int, error) {
	host, err := KnockHost(knock)
	if err != nil {
		return 0, err
	}
	if knock.From == m.self || host.String() == m.self {
		return 0, fmt.Errorf("mesh: relay knock: %w: the knock is this node's own or for it", ErrMalformed)
	}
	to := host
	if front != "" {
		if to, err = peer.Decode(front); err != nil {
			return 0, fmt.Errorf("mesh: relay knock: %w: front %q", ErrMalformed, trunc(front))
		}
	}
	if f := m.priv.getFront(); f != nil && (to.String() == m.self || f.Fronts(host.String())) {
		sink := &relaySink{onPending: pending, deliver: deliver}
		return m.frontKnock(ctx, f, host.String(), knock, sink)
	}
	n := 0
	err = m.sendKnock(ctx, to, knock, pending, func(s network.Stream) (err error) {
		n, err = relayAdmission(s, host, knock.From, deliver)
		if err != nil {
			_ = s.Reset()
		}
		return err
	})
	return n, err
}

// relayedGrant checks a grant a relay passes on: signed by host (the
// channel id binds it, so no one else can grant it), for joiner. The box
// is sealed to the joiner; a relay cannot open it.
func relayedGrant(g *Envelope, host, joiner string) (wireGrant, error) {
	var wg wireGrant
	if json.Unmarshal([]byte(g.Content), &wg) != nil || g.From != host || g.Kind != KindGrant || g.Channel != "@"+joiner ||
		!isPrivate(wg.Channel) || privID(g.From, wg.Salt) != wg.Channel {
		return wg, fmt.Errorf("%w: bad grant", ErrMalformed)
	}
	return wg, nil
}

// relayAdmission reads the grant and the backlog after approval and hands
// them to deliver, then confirms to the host.
func relayAdmission(s network.Stream, host peer.ID, joiner string, deliver func(*Envelope, []*Envelope, bool) error) (int, error) {
	b, err := readFrame(s, MaxEnvelopeLen)
	if err != nil {
		return 0, fmt.Errorf("mesh: relay admission: %w", err)
	}
	g, err := Unmarshal(b)
	if err == nil {
		err = g.Verify()
	}
	var wg wireGrant
	if err == nil {
		wg, err = relayedGrant(g, host.String(), joiner)
	}
	if err != nil {
		return 0, fmt.Errorf("mesh: relay admission: %w", err)
	}
	var page []*Envelope
	n, size := 0, 0
	for {
		b, err := readFrame(s, MaxEnvelopeLen)
		if err != nil {
			return n, fmt.Errorf("mesh: relay admission: backlog: %w", err)
		}
		if len(b) == 0 {
			break
		}
		e, err := Unmarshal(b)
		if err == nil {
			err = e.Verify()
		}
		if err != nil || e.Channel != wg.Channel || !sealedForm(e) {
			return n, fmt.Errorf("mesh: relay admission: backlog: %w: invalid envelope", ErrMalformed)
		}
		if n++; n > maxBacklog {
			return n, fmt.Errorf("mesh: relay admission: backlog over %d envelopes", maxBacklog)
		}
		page = append(page, e)
		if size += len(b); len(page) >= relayPageLen || size >= relayPageBytes {
			if err := deliver(g, page, false); err != nil {
				return n, fmt.Errorf("mesh: relay admission: %w", err)
			}
			page, size = nil, 0
		}
	}
	if err := deliver(g, page, true); err != nil {
		return n, fmt.Errorf("mesh: relay admission: %w", err)
	}
	if _, err := s.Write([]byte{dmOK}); err != nil {
		return n, fmt.Errorf("mesh: relay admission: confirm: %w", err)
	}
	return n, nil
}
