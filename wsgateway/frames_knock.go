package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
)

// Session knocks of remote thin clients (docs/private.md, "Thin clients").
// A thin client holds its own key, so it runs the joiner's side itself: it
// builds and signs the knock (mesh.NewKnock), the gateway's node relays it
// to the host over /confab/private/1 (mesh.Mesh.RelayKnock) and hands back
// what the host answers: session_pending once the host holds the knock,
// then on approval session_backlog pages (ciphertext envelopes, oldest
// first) and the session_knock reply with the grant, sealed to the
// client's key. The client opens the grant (mesh.OpenGrant) and decrypts
// (mesh.ChannelKeys.Decrypt). The gateway holds no key and sees no
// plaintext. Remote mode only; a local-mode client uses session_join.
const (
	TypeSessionKnock   = "session_knock"
	TypeSessionBacklog = "session_backlog" // server → client, before the session_knock reply
)

// maxBacklogPage bounds the envelopes of one session_backlog frame (the
// relay pages at 256 envelopes or about 512 KiB).
const maxBacklogPage = 256

// SessionKnockRequest relays Knock, a knock envelope the authenticated
// client signed itself (mesh.NewKnock), to its host and waits up to Wait
// seconds (0: MaxJoinWait) for the decision. Replies: SessionPending,
// SessionBacklog pages, then SessionKnockReply or an error (the codes of
// session_join).
type SessionKnockRequest struct {
	Req   string         `json:"req"`
	Knock *mesh.Envelope `json:"knock"`
	Wait  int            `json:"wait,omitempty"`
	// Front is the session key's front (mesh.SessionKey.Front): the node
	// that fronts a thin host, where the knock goes instead of the host.
	Front string `json:"front,omitempty"`
}

// SessionBacklog is one page of an approved knock's backlog: envelopes of
// the session's channel as their authors signed them (kind "enc").
type SessionBacklog struct {
	Req       string           `json:"req"`
	Envelopes []*mesh.Envelope `json:"envelopes"`
}

// SessionKnockReply ends an approved knock: Grant is the host's grant
// envelope, sealed to the knocking client; Backlog counts the envelopes of
// the session_backlog pages before it.
type SessionKnockReply struct {
	Req     string         `json:"req"`
	Grant   *mesh.Envelope `json:"grant"`
	Backlog int            `json:"backlog"`
}

func (*SessionKnockRequest) Type() string { return TypeSessionKnock }
func (*SessionBacklog) Type() string      { return TypeSessionBacklog }
func (*SessionKnockReply) Type() string   { return TypeSessionKnock }

// KnockRelayBackend is implemented by Backends that relay the knocks of
// thin clients (FromMesh's adapter: mesh.Mesh.RelayKnock). Without it
// session_knock is answered with unsupported.
type KnockRelayBackend interface {
	RelayKnock(ctx context.Context, knock *mesh.Envelope, front string, pending func(), deliver func(grant *mesh.Envelope, page []*mesh.Envelope, done bool) error) (int, error)
}

var _ KnockRelayBackend = meshBackend{}

// validPeerID reports whether s is an Ed25519 peer id (an author).
func validPeerID(s string) bool {
	_, err := mesh.AuthorKey(s)
	return err == nil
}

func validateKnockRequest(f *SessionKnockRequest) *Error {
	switch {
	case f.Knock == nil:
		return errorf(CodeBadFrame, "session_knock: missing knock envelope")
	case f.Knock.Kind != mesh.KindKnock:
		return errorf(CodeBadFrame, "session_knock: envelope kind %q is not %q", trunc(f.Knock.Kind), mesh.KindKnock)
	case f.Wait < 0 || f.Wait > MaxJoinWait:
		return errorf(CodeBadFrame, "session_knock: wait must be 0..%d seconds", MaxJoinWait)
	case f.Front != "" && (len(f.Front) > maxAgentArg || !validPeerID(f.Front)):
		return errorf(CodeBadFrame, "session_knock: front must be an Ed25519 peer id")
	case f.Wait == 0:
		f.Wait = defaultJoinWaitSec
	}
	return needReq(f.Req)
}

func validateKnockReply(f Frame) (*Error, bool) {
	switch f := f.(type) {
	case *SessionBacklog:
		if len(f.Envelopes) > maxBacklogPage {
			return errorf(CodeBadFrame, "session_backlog: %d envelopes, limit %d", len(f.Envelopes), maxBacklogPage), true
		}
		for _, e := range f.Envelopes {
			if e == nil {
				return errorf(CodeBadFrame, "session_backlog: null envelope"), true
			}
		}
		return needReq(f.Req), true
	case *SessionKnockReply:
		if f.Grant == nil || f.Backlog < 0 {
			return errorf(CodeBadFrame, "session_knock: grant or backlog"), true
		}
		return needReq(f.Req), true
	}
	return nil, false
}

// sessionKnock relays a thin client's knock in its own goroutine (sharing
// session_join's limit per connection); it ends with the connection, which
// resets the stream to the host.
func (c *conn) sessionKnock(ctx context.Context, f *SessionKnockRequest) error {
	if c.s.cfg.Mode != ModeRemote {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "session_knock relays a thin client's own knock (remote mode); use session_join"})
	}
	if err := c.checkPublish(f.Knock); err != nil {
		return c.send(ctx, c.errorFrame(f.Req, err))
	}
	b, ok := c.s.cfg.Backend.(KnockRelayBackend)
	if !ok {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "this node does not relay session knocks"})
	}
	if c.joins.Add(1) > maxJoinsPerConn {
		c.joins.Add(-1)
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeBusy, Message: fmt.Sprintf("more than %d session joins in flight on this connection", maxJoinsPerConn)})
	}
	c.g.Go(func() error {
		defer c.joins.Add(-1)
		jctx, cancel := context.WithTimeout(ctx, time.Duration(f.Wait)*time.Second)
		defer cancel()
		n := 0
		_, err := b.RelayKnock(jctx, f.Knock, f.Front, func() { _ = c.send(jctx, &SessionPending{Req: f.Req}) },
			func(grant *mesh.Envelope, page []*mesh.Envelope, done bool) error {
				if len(page) > 0 {
					n += len(page)
					if err := c.send(jctx, &SessionBacklog{Req: f.Req, Envelopes: page}); err != nil {
						return err
					}
				}
				if !done {
					return nil
				}
				return c.send(jctx, &SessionKnockReply{Req: f.Req, Grant: grant, Backlog: n})
			})
		if err != nil {
			if ctx.Err() != nil {
				return nil // the connection ended
			}
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("no decision within %d s: %w", f.Wait, mesh.ErrKnockTimeout)
			}
			if code := privateCode(err); code != "" {
				err = &Error{Code: code, Message: err.Error()}
			} else if errors.Is(err, mesh.ErrMalformed) || errors.Is(err, mesh.ErrBadSig) {
				err = &Error{Code: CodeBadFrame, Message: err.Error()}
			}
			_ = c.send(ctx, c.errorFrame(f.Req, err))
		}
		return nil
	})
	return nil
}

// ThinSession is what a thin client holds after an approved knock: the
// channel's keys, opened with its own key, and the backlog, verified, as
// signed ciphertext (decrypt with Keys.Decrypt).
type ThinSession struct {
	Grant   *mesh.Envelope // the host's grant, sealed to the client
	Keys    *mesh.ChannelKeys
	Backlog []*mesh.Envelope
}

// KnockSession joins a session as a thin client on a remote-mode gateway:
// it builds and signs the knock with key (the authenticated identity), has
// the gateway relay it, waits until the host decides, wait passes (0:
// MaxJoinWait seconds) or ctx ends, then opens the grant with key and
// checks the backlog (every envelope verified and of the granted channel;
// all pages present). pending, if not nil, is called once the host holds
// the knock. The gateway never holds the keys. A refusal is an *Error with
// the codes of session_join.
func (c *Client) KnockSession(ctx context.Context, key crypto.PrivKey, name, sessionKey string, wait time.Duration, pending func()) (ThinSession, error) {
	knock, err := mesh.NewKnock(key, name, sessionKey, time.Now())
	if err != nil {
		if code := privateCode(err); code != "" {
			return ThinSession{}, &Error{Code: code, Message: err.Error()}
		}
		return ThinSession{}, err
	}
	k, _ := mesh.ParseSessionKey(sessionKey) // NewKnock parsed it
	return c.SendKnock(ctx, key, knock, k.Front, wait, pending)
}

// SendKnock is KnockSession with a knock already built and signed by key
// (mesh.NewKnock) and the session key's front; sending one twice is a
// replay, which the host refuses.
func (c *Client) SendKnock(ctx context.Context, key crypto.PrivKey, knock *mesh.Envelope, front string, wait time.Duration, pending func()) (ThinSession, error) {
	host, err := mesh.KnockHost(knock)
	if err != nil {
		return ThinSession{}, err
	}
	// The call's channel has room for a burst of interim frames; a page
	// dropped for want of room shows as a short backlog below.
	req, ch, err := c.newReq(64)
	if err != nil {
		return ThinSession{}, err
	}
	f := &SessionKnockRequest{Req: req, Knock: knock, Front: front, Wait: int((wait + time.Second - 1) / time.Second)}
	if err := c.write(ctx, f); err != nil {
		c.forget(req)
		return ThinSession{}, err
	}
	var backlog []*mesh.Envelope
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				c.mu.Lock()
				err := c.connErr
				c.mu.Unlock()
				return ThinSession{}, err
			}
			switch r := r.(type) {
			case *SessionPending:
				if pending != nil {
					pending()
					pending = nil
				}
			case *SessionBacklog:
				backlog = append(backlog, r.Envelopes...)
			case *ErrorFrame:
				return ThinSession{}, &Error{Code: r.Code, Message: r.Message}
			case *SessionKnockReply:
				return thinAdmission(key, host.String(), r, backlog)
			default:
				return ThinSession{}, fmt.Errorf("wsgateway: unexpected %q reply", r.Type())
			}
		case <-ctx.Done():
			c.forget(req)
			return ThinSession{}, ctx.Err()
		}
	}
}

// thinAdmission checks an approved knock's reply on the client.
func thinAdmission(key crypto.PrivKey, host string, r *SessionKnockReply, backlog []*mesh.Envelope) (ThinSession, error) {
	if r.Grant == nil || r.Grant.From != host {
		return ThinSession{}, fmt.Errorf("wsgateway: knock: %w: grant not signed by the session's host", mesh.ErrMalformed)
	}
	keys, err := mesh.OpenGrant(key, r.Grant)
	if err != nil {
		return ThinSession{}, fmt.Errorf("wsgateway: knock: %w", err)
	}
	if len(backlog) != r.Backlog {
		return ThinSession{}, fmt.Errorf("wsgateway: knock: backlog has %d of %d envelopes (pages lost)", len(backlog), r.Backlog)
	}
	for _, e := range backlog {
		if err := e.Verify(); err != nil || e.Channel != keys.ID {
			return ThinSession{}, fmt.Errorf("wsgateway: knock: %w: backlog envelope %s", mesh.ErrMalformed, trunc(e.ID))
		}
	}
	return ThinSession{Grant: r.Grant, Keys: keys, Backlog: backlog}, nil
}
