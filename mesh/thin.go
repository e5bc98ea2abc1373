package mesh

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The joiner's side of a session as pure functions, for thin clients: a
// client that holds its own Ed25519 key but runs no node (behind a
// gateway) builds and signs its knock, opens the grant sealed to it and
// decrypts the backlog itself. The node that relays the knock (RelayKnock)
// sees the signed knock, the sealed grant and ciphertext, never a key or a
// plaintext. A node uses the same constructions (JoinSession,
// installGrant), so the two cannot drift apart.

// NewKnock builds the knock envelope for session key sessionKey, signed by
// priv (the joiner), at now; name is the joiner's display name. The knock
// carries seq 1: it is not part of the joiner's direct-message sequence
// (the host stores it in its inbox only, by id). Errors: ErrBadSessionKey,
// ErrKeyExpired (refused before anything is sent), and a key that is the
// host's own.
func NewKnock(priv crypto.PrivKey, name, sessionKey string, now time.Time) (*Envelope, error) {
	k, err := ParseSessionKey(sessionKey)
	if err != nil {
		return nil, fmt.Errorf("mesh: knock: %w", err)
	}
	if now.After(k.Expiry) {
		return nil, fmt.Errorf("mesh: knock: %w (at %s)", ErrKeyExpired, k.Expiry.UTC().Format(time.RFC3339))
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("mesh: knock: %w", err)
	}
	if pid.String() == k.Host {
		return nil, fmt.Errorf("mesh: knock: this agent hosts the session")
	}
	e := &Envelope{Channel: "@" + k.Host, Name: name, Seq: 1, TS: now.UnixMilli(), Kind: KindKnock, Content: knockFor(k, pid.String(), now)}
	if err := e.Sign(priv); err != nil {
		return nil, fmt.Errorf("mesh: knock: %w", err)
	}
	return e, nil
}

// knockFor is the content of a knock by joiner with session key k at now:
// a fresh nonce and the proof over it.
func knockFor(k SessionKey, joiner string, now time.Time) string {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	kc := knockContent{Type: "knock", V: 1, Channel: k.Channel, Exp: k.Expiry.Unix(), TS: now.UnixMilli(), Nonce: hex.EncodeToString(nonce)}
	kc.Proof = hex.EncodeToString(knockProof(k.Secret, k.Host, k.Channel, joiner, kc.Nonce, kc.Exp, kc.TS))
	content, _ := json.Marshal(kc)
	return string(content)
}

// KnockHost returns the host a knock envelope is addressed to, after
// checking that it is a well-formed, signed knock. A relay uses it; the
// host checks the proof.
func KnockHost(e *Envelope) (peer.ID, error) {
	if e == nil || e.Kind != KindKnock || len(e.Channel) < 2 || e.Channel[0] != '@' {
		return "", fmt.Errorf("mesh: knock: %w: not a knock envelope", ErrMalformed)
	}
	if err := e.Verify(); err != nil {
		return "", fmt.Errorf("mesh: knock: %w", err)
	}
	host, err := peer.Decode(e.Channel[1:])
	if err != nil {
		return "", fmt.Errorf("mesh: knock: %w: host %q", ErrMalformed, trunc(e.Channel))
	}
	if _, err := AuthorKey(host.String()); err != nil {
		return "", fmt.Errorf("mesh: knock: %w", err)
	}
	var kc knockContent
	if err := json.Unmarshal([]byte(e.Content), &kc); err != nil || kc.Type != "knock" || kc.V != 1 || !isPrivate(kc.Channel) {
		return "", fmt.Errorf("mesh: knock: %w: content", ErrMalformed)
	}
	return host, nil
}

// KnockCode returns the refusal code a host sends for err ("replayed",
// "bad_proof", ...; "error" for others).
func KnockCode(err error) string { return knockCode(err) }

// KnockErrorCode returns the sentinel error of a refusal code a host sent
// ("denied", "replayed", ...), and nil for an unknown code.
func KnockErrorCode(code string) error { return knockCodes[code] }

// ChannelKeys are the keys of one private channel as a member holds them,
// opened from a grant sealed to that member (OpenGrant). Safe for
// concurrent reads; Merge must not run concurrently with other methods.
type ChannelKeys struct {
	ID      string   // "~" + 32 hex
	Host    string   // the host's peer id (the grant's signer)
	Session bool     // the channel is a session
	Topic   string   // a session's topic
	Members []string // as of the grant
	epochs  []epochKey
}

// OpenGrant verifies a grant envelope and opens it with priv, the key of
// the member it is sealed to. The grant must be signed by the channel's
// host (the id binds the host), addressed to priv's peer id and hold at
// least one 32-byte key. Errors wrap ErrMalformed, ErrNotHost or ErrDecrypt.
func OpenGrant(priv crypto.PrivKey, grant *Envelope) (*ChannelKeys, error) {
	if grant == nil {
		return nil, fmt.Errorf("mesh: grant: %w: none", ErrMalformed)
	}
	if err := grant.Verify(); err != nil {
		return nil, fmt.Errorf("mesh: grant: %w", err)
	}
	self, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("mesh: grant: %w", err)
	}
	g, s, err := openGrant(priv, self.String(), grant)
	if err != nil {
		return nil, err
	}
	ks := &ChannelKeys{ID: g.Channel, Host: grant.From, Session: s.Session, Topic: s.Topic, Members: s.Members, epochs: s.Epochs}
	slices.SortFunc(ks.epochs, func(a, b epochKey) int { return int(int64(a.N) - int64(b.N)) })
	return ks, nil
}

// openGrant checks a grant envelope for self and opens its box with key.
// It does not verify the signature.
func openGrant(key crypto.PrivKey, self string, e *Envelope) (wireGrant, grantSecret, error) {
	var g wireGrant
	var s grantSecret
	if e.Kind != KindGrant || e.Channel != "@"+self {
		return g, s, fmt.Errorf("mesh: grant: %w: not a grant for us", ErrMalformed)
	}
	if err := json.Unmarshal([]byte(e.Content), &g); err != nil || g.Type != "grant" || g.V != 1 {
		return g, s, fmt.Errorf("mesh: grant: %w", ErrMalformed)
	}
	if !isPrivate(g.Channel) || privID(e.From, g.Salt) != g.Channel {
		return g, s, fmt.Errorf("mesh: grant for %s: %w: not signed by its host", trunc(g.Channel), ErrNotHost)
	}
	pt, err := openSealed(key, g.Box, grantAD(g.Channel, e.From, self))
	if err != nil {
		return g, s, err
	}
	if err := json.Unmarshal(pt, &s); err != nil || len(s.Epochs) == 0 || len(s.Epochs) > maxPrivEpochs || len(s.Members) > maxPrivMembers {
		return g, s, fmt.Errorf("mesh: grant: %w: secret", ErrMalformed)
	}
	for _, k := range s.Epochs {
		if len(k.Key) != 32 || len(k.Topic) != 32 {
			return g, s, fmt.Errorf("mesh: grant: %w: key size", ErrMalformed)
		}
	}
	return g, s, nil
}

// Epoch is the newest key epoch held.
func (k *ChannelKeys) Epoch() uint32 { return k.epochs[len(k.epochs)-1].N }

// PrivateTopic is the gossipsub topic of the newest epoch.
func (k *ChannelKeys) PrivateTopic() string {
	return topicFor(k.epochs[len(k.epochs)-1].Topic, k.ID)
}

// Decrypt returns the inner kind and text of e, an envelope of this
// channel. It does not verify e's signature (do that first). Errors:
// ErrNoKey (an epoch not held), ErrDecrypt.
func (k *ChannelKeys) Decrypt(e *Envelope) (kind, text string, err error) {
	if e == nil || e.Channel != k.ID || e.Kind != KindEncrypted {
		return "", "", fmt.Errorf("mesh: decrypt: %w: not a message of %s", ErrDecrypt, k.ID)
	}
	epoch, _, err := contentEpoch(e.Content)
	if err != nil {
		return "", "", err
	}
	for _, ek := range k.epochs {
		if ek.N == epoch {
			return decryptContent(ek.Key, e)
		}
	}
	return "", "", fmt.Errorf("mesh: decrypt %s: epoch %d: %w", trunc(e.ID), epoch, ErrNoKey)
}

// Encrypt returns the content of a KindEncrypted envelope by from on this
// channel (newest epoch), for a member that signs and publishes it itself.
func (k *ChannelKeys) Encrypt(from, replyTo, kind, text string) (string, error) {
	ek := k.epochs[len(k.epochs)-1]
	return encryptContent(ek.Key, ek.N, k.ID, from, replyTo, kind, text)
}

// HostedSession is the host's side of a session opened by a thin client
// (a key, no node): the channel keys, the knock secret, the nonces seen and
// the member list, all in the client. The node whose gateway the client
// uses fronts it (Front, front.go): joiners knock there and the client
// decides (wsgateway.Client.OpenSession). Not safe for concurrent use.
// Its state is in memory only: a client that restarts forgets the nonces
// and keys, so its session ends with it (joiners get host_offline).
type HostedSession struct {
	Keys   *ChannelKeys
	Key    string    // the session key to hand to joiners: it only knocks
	Expiry time.Time // of Key
	salt   []byte
	sess   hostSession
}

// NewHostedSession opens a session hosted by priv's owner about topic,
// with a key valid for ttl (DefaultSessionTTL if 0): a fresh channel id
// bound to the host, epoch 1 and a knock secret, all random. front is the
// peer id of the node whose gateway the host is connected to: joiners
// knock there (the key carries it; "" for a host joiners can dial). The
// host posts the context itself (Keys.Encrypt, sign, publish).
func NewHostedSession(priv crypto.PrivKey, topic string, ttl time.Duration, now time.Time, front string) (*HostedSession, error) {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if len(topic) > 256 || !validName(topic) {
		return nil, fmt.Errorf("mesh: session: %w: topic must be at most 256 bytes without control characters", ErrMalformed)
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil || priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("mesh: session: host key must be ed25519: %v", err)
	}
	host := pid.String()
	if front != "" {
		if _, err := AuthorKey(front); err != nil || front == host {
			return nil, fmt.Errorf("mesh: session: front %q: %w", trunc(front), ErrMalformed)
		}
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	exp := now.Add(ttl).Truncate(time.Second)
	s := &HostedSession{salt: salt, Expiry: exp, sess: hostSession{Secret: make([]byte, 16), Expiry: exp.Unix(), Nonces: map[string]int64{}}}
	rand.Read(s.sess.Secret)
	s.Keys = &ChannelKeys{ID: privID(host, salt), Host: host, Session: true, Topic: topic, Members: []string{host}, epochs: []epochKey{newEpoch(1)}}
	s.Key = SessionKey{Host: host, Channel: s.Keys.ID, Secret: s.sess.Secret, Expiry: exp, Front: front}.String()
	return s, nil
}

// CheckKnock checks a knock envelope on this session at now, as a hosting
// node does: signature, addressed to the host, this channel, not closed or
// expired, ts within the live window (5 min behind, 1 min ahead), proof
// (which binds the knock's author) and a nonce not seen before, which it
// then remembers. Errors: ErrBadKnock, ErrUnknownSession, ErrSessionClosed,
// ErrKeyExpired, ErrKnockStale, ErrKnockReplayed.
func (s *HostedSession) CheckKnock(e *Envelope, now time.Time) error {
	if e == nil || e.Kind != KindKnock || e.Channel != "@"+s.Keys.Host {
		return fmt.Errorf("%w: not a knock for this host", ErrBadKnock)
	}
	if err := e.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadKnock, err)
	}
	k, err := parseKnock(e)
	if err != nil {
		return err
	}
	if k.Channel != s.Keys.ID {
		return ErrUnknownSession
	}
	return s.sess.admit(s.Keys.Host, e, k, now, 5*time.Minute, time.Minute)
}

// Grant adds member and returns its grant envelope: every epoch and the
// member list sealed to member, signed by priv (the host) at now.
func (s *HostedSession) Grant(priv crypto.PrivKey, name, member string, now time.Time) (*Envelope, error) {
	if pid, err := peer.IDFromPrivateKey(priv); err != nil || pid.String() != s.Keys.Host {
		return nil, fmt.Errorf("mesh: grant: %w: not the session's host key", ErrNotHost)
	}
	if _, err := AuthorKey(member); err != nil {
		return nil, fmt.Errorf("mesh: grant: %w", err)
	}
	if !slices.Contains(s.Keys.Members, member) {
		if len(s.Keys.Members) >= maxPrivMembers {
			return nil, fmt.Errorf("mesh: grant: more than %d members", maxPrivMembers)
		}
		s.Keys.Members = append(s.Keys.Members, member)
	}
	secret, _ := json.Marshal(grantSecret{Session: true, Topic: s.Keys.Topic, Epochs: s.Keys.epochs, Members: s.Keys.Members})
	content, err := grantContent(s.Keys.ID, s.Keys.Host, member, s.salt, secret)
	if err != nil {
		return nil, err
	}
	e := &Envelope{Channel: "@" + member, Name: name, Seq: 1, TS: now.UnixMilli(), Kind: KindGrant, Content: content}
	if err := e.Sign(priv); err != nil {
		return nil, fmt.Errorf("mesh: grant: %w", err)
	}
	return e, nil
}

// MemberGrants returns fresh grants for every member but the host and
// except (the member just granted), so they learn the member list; a
// fronting node pushes them (FrontAnswer.Grants). At most maxFrontGrants.
func (s *HostedSession) MemberGrants(priv crypto.PrivKey, name, except string, now time.Time) ([]*Envelope, error) {
	var gs []*Envelope
	for _, mb := range s.Keys.Members {
		if mb == s.Keys.Host || mb == except || len(gs) == maxFrontGrants {
			continue
		}
		g, err := s.Grant(priv, name, mb, now)
		if err != nil {
			return nil, err
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// Close revokes the session key: later knocks get ErrSessionClosed.
func (s *HostedSession) Close() {
	s.sess.Closed, s.sess.Secret, s.sess.Nonces = true, nil, nil
}
