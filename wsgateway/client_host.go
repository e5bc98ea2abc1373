package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
)

// The thin host's side of sessions (frames_host.go): the client opens the
// session, checks every knock itself and decides; the gateway's node only
// moves signed and sealed bytes.

// ThinHost is a session hosted by a thin client through a remote-mode
// gateway. It holds every secret of the session (mesh.HostedSession) in
// memory: when the client closes or its connection ends, knocks are
// refused with host_offline, and a new connection cannot take the session
// over. Safe for concurrent use.
type ThinHost struct {
	c    *Client
	key  crypto.PrivKey
	self string
	name string

	mu      sync.Mutex // guards hs and waiting
	hs      *mesh.HostedSession
	waiting map[string]*mesh.Envelope // knocks checked and waiting for Approve/Deny, by id

	knocks chan HostedKnock
}

// HostedKnock is a knock that passed the host's checks (signature, proof,
// expiry, window, fresh nonce) and waits for the owner's decision.
type HostedKnock struct {
	ID   string    // the knock envelope's id: Approve/Deny take it
	From string    // the joiner's peer id (the proof binds it)
	Name string    // the joiner's display name (not verified)
	TS   time.Time // when the joiner knocked
}

// thinHosts is the client's registry of hosted sessions, by channel id.
type thinHosts struct {
	mu    sync.Mutex
	by    map[string]*ThinHost
	order []*ThinHost
}

// HostSession opens a session hosted by this thin client about topic: it
// generates the channel and knock secret (mesh.NewHostedSession, with this
// gateway's node as the key's front), asks the node to archive the channel
// keylessly (private_follow), and posts snapshot (encrypted, signed with
// key: the authenticated identity) as the first message. Knocks arrive on
// Knocks. name is the display name the host signs with.
func (c *Client) HostSession(ctx context.Context, key crypto.PrivKey, name, topic, snapshot string, ttl time.Duration) (*ThinHost, error) {
	if c.welcome.Mode != ModeRemote {
		return nil, &Error{Code: CodeUnsupported, Message: "a thin host needs a remote-mode gateway; use OpenSession"}
	}
	if len(snapshot) > mesh.MaxPrivateText {
		return nil, &Error{Code: CodeTooLarge, Message: fmt.Sprintf("context is %d bytes, limit %d", len(snapshot), mesh.MaxPrivateText)}
	}
	hs, err := mesh.NewHostedSession(key, topic, ttl, time.Now(), c.welcome.Node)
	if err != nil {
		return nil, err
	}
	self, _ := peer.IDFromPrivateKey(key)
	t := &ThinHost{c: c, key: key, self: self.String(), name: name, hs: hs, waiting: map[string]*mesh.Envelope{},
		knocks: make(chan HostedKnock, MaxHostKnocks)}
	if _, err := expect[*OK](c.call(ctx, func(req string) Frame {
		return &PrivateFollowRequest{Req: req, Channel: hs.Keys.ID, Topic: hs.Keys.PrivateTopic()}
	})); err != nil {
		return nil, err
	}
	c.hosts.add(t)
	if _, err := c.PublishPrivate(ctx, key, name, hs.Keys, mesh.KindContext, snapshot); err != nil {
		t.Close(ctx)
		return nil, fmt.Errorf("wsgateway: host session: post context: %w", err)
	}
	return t, nil
}

// Key is the session key to hand to joiners: it only lets them knock.
func (t *ThinHost) Key() string { return t.hs.Key }

// Keys are the session channel's keys (decrypt events of Keys().ID with
// them; post with Client.PublishPrivate).
func (t *ThinHost) Keys() *mesh.ChannelKeys { return t.hs.Keys }

// Knocks delivers the knocks waiting for a decision. Knocks that arrive
// while MaxHostKnocks are undelivered are refused with busy.
func (t *ThinHost) Knocks() <-chan HostedKnock { return t.knocks }

// Approve lets knock id in: it seals a grant to the joiner, signs it, and
// returns the number of backlog envelopes once the joiner confirmed it
// holds the keys and the backlog. The other members are sent the new
// member list.
func (t *ThinHost) Approve(ctx context.Context, id string) (int, error) {
	t.mu.Lock()
	knock, ok := t.waiting[id]
	delete(t.waiting, id)
	var g *mesh.Envelope
	var others []*mesh.Envelope
	var err error
	if ok {
		now := time.Now()
		if g, err = t.hs.Grant(t.key, t.name, knock.From, now); err == nil {
			others, err = t.hs.MemberGrants(t.key, t.name, knock.From, now)
		}
	}
	t.mu.Unlock()
	if !ok {
		return 0, &Error{Code: CodeNoKnock, Message: "no knock " + trunc(id) + " is waiting"}
	}
	if err != nil {
		return 0, err
	}
	r, err := expect[*SessionDecideReply](t.c.call(ctx, func(req string) Frame {
		return &SessionDecideRequest{Req: req, ID: id, Status: "approved", Grant: g, Grants: others}
	}))
	if err != nil {
		return 0, err
	}
	return r.Backlog, nil
}

// Deny refuses knock id: the joiner gets denied.
func (t *ThinHost) Deny(ctx context.Context, id string) error {
	if !t.take(id) {
		return &Error{Code: CodeNoKnock, Message: "no knock " + trunc(id) + " is waiting"}
	}
	return t.c.decide(ctx, id, "refused", "denied")
}

// Close revokes the session key: waiting knocks are refused with closed,
// and so is every later knock. Members keep the channel.
func (t *ThinHost) Close(ctx context.Context) {
	t.mu.Lock()
	t.hs.Close()
	ids := make([]string, 0, len(t.waiting))
	for id := range t.waiting {
		ids = append(ids, id)
	}
	clear(t.waiting)
	t.mu.Unlock()
	for _, id := range ids {
		_ = t.c.decide(ctx, id, "refused", "closed")
	}
}

// PublishPrivate posts text (inner kind, e.g. "message") to a private
// channel this thin client holds keys for (a hosted session's Keys, or a
// ThinSession's): it encrypts with keys, signs with key (the authenticated
// identity) and publishes the ciphertext envelope with the next seq.
func (c *Client) PublishPrivate(ctx context.Context, key crypto.PrivKey, name string, keys *mesh.ChannelKeys, kind, text string) (Ack, error) {
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return Ack{}, fmt.Errorf("wsgateway: publish private: %w", err)
	}
	seq, err := c.NextSeq(ctx, keys.ID, "")
	if err != nil {
		return Ack{}, err
	}
	content, err := keys.Encrypt(self.String(), "", kind, text)
	if err != nil {
		return Ack{}, err
	}
	e := &mesh.Envelope{Channel: keys.ID, Name: name, Seq: seq, TS: time.Now().UnixMilli(), Kind: mesh.KindEncrypted, Content: content}
	if err := e.Sign(key); err != nil {
		return Ack{}, fmt.Errorf("wsgateway: publish private: %w", err)
	}
	return c.Publish(ctx, e)
}

// decide sends a session_decide that is answered with ok.
func (c *Client) decide(ctx context.Context, id, status, code string) error {
	_, err := expect[*OK](c.call(ctx, func(req string) Frame {
		return &SessionDecideRequest{Req: req, ID: id, Status: status, Code: code}
	}))
	return err
}

func (h *thinHosts) add(t *ThinHost) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.by == nil {
		h.by = map[string]*ThinHost{}
	}
	h.by[t.hs.Keys.ID] = t
	h.order = append(h.order, t)
}

// knock answers a host_knock from the reader: the check and the first
// answer run on their own goroutine so the reader never waits on a write.
func (h *thinHosts) knock(c *Client, f *HostKnock) {
	h.mu.Lock()
	hosts := append([]*ThinHost(nil), h.order...)
	h.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), defaultCallTimeout)
		defer cancel()
		err := mesh.ErrUnknownSession
		var t *ThinHost
		for _, t = range hosts {
			if err = t.check(f.Knock); !errors.Is(err, mesh.ErrUnknownSession) {
				break
			}
		}
		if err != nil {
			_ = c.decide(ctx, f.ID, "refused", mesh.KnockCode(err))
			return
		}
		k := HostedKnock{ID: f.ID, From: f.Knock.From, Name: f.Knock.Name, TS: time.UnixMilli(f.Knock.TS)}
		if c.decide(ctx, f.ID, "pending", "") != nil {
			t.take(f.ID)
			return
		}
		select {
		case t.knocks <- k:
		default: // the owner is not reading: refuse rather than hold it
			if t.take(f.ID) {
				_ = c.decide(ctx, f.ID, "refused", "busy")
			}
		}
	}()
}

// take removes knock id from the waiting ones; false if it was not there.
func (t *ThinHost) take(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.waiting[id]
	delete(t.waiting, id)
	return ok
}

// check runs the host's checks on a knock and keeps it waiting.
func (t *ThinHost) check(knock *mesh.Envelope) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.hs.CheckKnock(knock, time.Now()); err != nil {
		return err
	}
	t.waiting[knock.ID] = knock
	return nil
}
