package wsgateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/confabhq/confab/mesh"
)

// Thin hosts (docs/private.md, "Thin hosts"). A thin client opens a
// session itself (mesh.NewHostedSession, with this node as the key's
// front), asks the node to follow the channel keylessly (private_follow)
// and publishes the encrypted context. Knocks addressed to it reach this
// node (mesh.Front): the server hands each to the client's connection as a
// host_knock frame; the client checks it and answers session_decide
// (pending, refused with a knock code, or approved with the grant it
// sealed to the joiner and signed). The node then writes the grant and the
// archived ciphertext backlog to the joiner and answers the approval with
// the backlog count once the joiner confirmed. Remote mode only.
const (
	TypePrivateFollow = "private_follow"
	TypeHostKnock     = "host_knock" // server → client, unrequested
	TypeSessionDecide = "session_decide"
)

// Error codes of thin hosts.
const (
	CodeHostOffline = "host_offline" // a knock for a thin host with no connection here
)

// Limits of thin hosts.
const (
	// MaxHostKnocks bounds the knocks waiting for one connection's
	// decision; more are refused with "busy".
	MaxHostKnocks = 16
	// MaxDecideGrants bounds session_decide's grants for other members.
	MaxDecideGrants = 256
)

// PrivateFollowRequest asks the node to follow private channel Channel on
// gossip topic Topic without its keys (mesh.Mesh.JoinSealed): it archives
// the members' ciphertext and serves it as the backlog of approved knocks.
// Counted against the connection's joins. Reply: OK.
type PrivateFollowRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Topic   string `json:"topic"`
}

// HostKnock hands a knock addressed to the authenticated client to it. ID
// is the knock envelope's id; the client answers with session_decide.
type HostKnock struct {
	ID    string         `json:"id"`
	Knock *mesh.Envelope `json:"knock"`
}

// SessionDecideRequest answers HostKnock ID: Status "pending" (the owner
// decides later; the joiner is told to wait), "refused" with Code (a knock
// code: denied, replayed, bad_proof, expired, closed, stale,
// unknown_session) or "approved" with Grant (sealed to the joiner, signed
// by the client) and Grants (fresh grants for the other members, pushed
// best effort). Reply: OK for pending and refused; SessionDecideReply
// once the joiner confirmed the grant and backlog, or an error.
type SessionDecideRequest struct {
	Req    string           `json:"req"`
	ID     string           `json:"id"`
	Status string           `json:"status"`
	Code   string           `json:"code,omitempty"`
	Grant  *mesh.Envelope   `json:"grant,omitempty"`
	Grants []*mesh.Envelope `json:"grants,omitempty"`
}

// SessionDecideReply ends an approval: the joiner holds the grant and
// Backlog envelopes.
type SessionDecideReply struct {
	Req     string `json:"req"`
	ID      string `json:"id"`
	Backlog int    `json:"backlog"`
}

func (*PrivateFollowRequest) Type() string { return TypePrivateFollow }
func (*HostKnock) Type() string            { return TypeHostKnock }
func (*SessionDecideRequest) Type() string { return TypeSessionDecide }
func (*SessionDecideReply) Type() string   { return TypeSessionDecide }

// SealedBackend is implemented by Backends that follow private channels
// without keys (FromMesh's adapter: mesh.Mesh.JoinSealed). Without it
// private_follow is answered with unsupported.
type SealedBackend interface {
	JoinSealed(ctx context.Context, id, topic string) error
}

var _ SealedBackend = meshBackend{}

func validHexID(id string) bool {
	b, err := hex.DecodeString(id)
	return err == nil && len(b) == 32
}

func validateHostRequest(f Frame) (*Error, bool) {
	switch f := f.(type) {
	case *PrivateFollowRequest:
		if !mesh.ValidChannel(f.Channel) || f.Channel[0] != '~' || !mesh.ValidSealedTopic(f.Topic) {
			return errorf(CodeBadChannel, "private_follow: channel must be a ~id and topic a private channel's topic"), true
		}
		return needReq(f.Req), true
	case *SessionDecideRequest:
		if !validHexID(f.ID) {
			return errorf(CodeBadFrame, "session_decide: id must be a knock envelope's id"), true
		}
		switch f.Status {
		case "pending":
		case "refused":
			if f.Code == "" || len(f.Code) > 32 {
				return errorf(CodeBadFrame, "session_decide: refused needs a code of at most 32 bytes"), true
			}
		case "approved":
			if f.Grant == nil || f.Grant.Kind != mesh.KindGrant {
				return errorf(CodeBadFrame, "session_decide: approved needs the joiner's grant"), true
			}
			if len(f.Grants) > MaxDecideGrants {
				return errorf(CodeBadFrame, "session_decide: %d grants, limit %d", len(f.Grants), MaxDecideGrants), true
			}
			for _, g := range f.Grants {
				if g == nil || g.Kind != mesh.KindGrant {
					return errorf(CodeBadFrame, "session_decide: grants must be grant envelopes"), true
				}
			}
		default:
			return errorf(CodeBadFrame, "session_decide: status must be pending, refused or approved"), true
		}
		return needReq(f.Req), true
	}
	return nil, false
}

func validateHostReply(f Frame) (*Error, bool) {
	switch f := f.(type) {
	case *HostKnock:
		if !validHexID(f.ID) || f.Knock == nil || f.Knock.ID != f.ID || f.Knock.Kind != mesh.KindKnock {
			return errorf(CodeBadFrame, "host_knock: id or knock envelope"), true
		}
		return nil, true
	case *SessionDecideReply:
		if !validHexID(f.ID) || f.Backlog < 0 {
			return errorf(CodeBadFrame, "session_decide: id or backlog"), true
		}
		return needReq(f.Req), true
	}
	return nil, false
}

func hostReq(f Frame) string {
	switch f := f.(type) {
	case *PrivateFollowRequest:
		return f.Req
	case *SessionDecideRequest:
		return f.Req
	case *SessionDecideReply:
		return f.Req
	}
	return ""
}

// frontConn holds the knocks waiting for one connection's decision.
type frontConn struct {
	mu    sync.Mutex
	waits map[string]*frontWait // by knock id
}

// frontWait is one knock handed to the client.
type frontWait struct {
	ch   chan *SessionDecideRequest // the client's answers: pending, then final
	done chan frontDone             // the admission's outcome after approval
	gone chan struct{}              // closed when the knock no longer waits (not approved)
}

type frontDone struct {
	n   int
	err error
}

func (fc *frontConn) add(id string) (*frontWait, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if _, dup := fc.waits[id]; dup {
		return nil, mesh.ErrKnockReplayed
	}
	if len(fc.waits) >= MaxHostKnocks {
		return nil, fmt.Errorf("%w (%d waiting)", mesh.ErrHostBusy, len(fc.waits))
	}
	if fc.waits == nil {
		fc.waits = map[string]*frontWait{}
	}
	w := &frontWait{ch: make(chan *SessionDecideRequest, 2), done: make(chan frontDone, 1), gone: make(chan struct{})}
	fc.waits[id] = w
	return w, nil
}

func (fc *frontConn) get(id string) *frontWait {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.waits[id]
}

func (fc *frontConn) remove(id string) {
	fc.mu.Lock()
	delete(fc.waits, id)
	fc.mu.Unlock()
}

// peerConn returns the connection of an authenticated identity, or nil.
func (s *Server) peerConn(peer string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[peer]
}

var _ mesh.Front = (*Server)(nil)

// Fronts reports whether host has an authenticated connection here
// (mesh.Front).
func (s *Server) Fronts(host string) bool { return s.peerConn(host) != nil }

// FrontKnock hands knock to host's connection and waits for its decision
// (mesh.Front).
func (s *Server) FrontKnock(ctx context.Context, host string, knock *mesh.Envelope, pending func()) (mesh.FrontAnswer, error) {
	c := s.peerConn(host)
	if c == nil {
		return mesh.FrontAnswer{}, mesh.ErrHostOffline
	}
	w, err := c.front.add(knock.ID)
	if err != nil {
		return mesh.FrontAnswer{}, err
	}
	approved := false
	defer func() {
		c.front.remove(knock.ID)
		if !approved {
			close(w.gone)
		}
	}()
	if err := c.send(ctx, &HostKnock{ID: knock.ID, Knock: knock}); err != nil {
		return mesh.FrontAnswer{}, mesh.ErrHostOffline
	}
	for {
		select {
		case d := <-w.ch:
			switch d.Status {
			case "pending":
				if pending != nil {
					pending()
					pending = nil
				}
			case "refused":
				if err := mesh.KnockErrorCode(d.Code); err != nil {
					return mesh.FrontAnswer{}, err
				}
				return mesh.FrontAnswer{}, fmt.Errorf("%w (%s)", mesh.ErrDenied, trunc(d.Code))
			default: // approved
				approved = true
				return mesh.FrontAnswer{Grant: d.Grant, Grants: d.Grants, Done: func(n int, err error) {
					w.done <- frontDone{n, err}
				}}, nil
			}
		case <-ctx.Done():
			return mesh.FrontAnswer{}, ctx.Err()
		case <-c.readerDone:
			return mesh.FrontAnswer{}, mesh.ErrHostOffline
		}
	}
}

// privateFollow serves private_follow.
func (c *conn) privateFollow(ctx context.Context, f *PrivateFollowRequest) error {
	if c.s.cfg.Mode != ModeRemote {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "private_follow is for thin hosts (remote mode)"})
	}
	b, ok := c.s.cfg.Backend.(SealedBackend)
	if !ok {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "this node does not follow private channels"})
	}
	if err := c.joinBounded(f.Channel, func() error { return b.JoinSealed(ctx, f.Channel, f.Topic) }); err != nil {
		return c.send(ctx, c.errorFrame(f.Req, err))
	}
	return c.send(ctx, &OK{Req: f.Req})
}

// sessionDecide hands the client's answer to the waiting knock; an
// approval is answered once the joiner confirmed, by its own goroutine.
func (c *conn) sessionDecide(ctx context.Context, f *SessionDecideRequest) error {
	if c.s.cfg.Mode != ModeRemote {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "session_decide is for thin hosts (remote mode); use session_approve"})
	}
	w := c.front.get(f.ID)
	if w == nil {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeNoKnock, Message: "no knock " + trunc(f.ID) + " is waiting for this client"})
	}
	select {
	case w.ch <- f:
	default:
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeBadFrame, Message: "knock " + trunc(f.ID) + " is already decided"})
	}
	if f.Status != "approved" {
		return c.send(ctx, &OK{Req: f.Req})
	}
	c.g.Go(func() error {
		select {
		case d := <-w.done:
			if d.err != nil {
				return c.send(ctx, c.errorFrame(f.Req, hostError(d.err)))
			}
			return c.send(ctx, &SessionDecideReply{Req: f.Req, ID: f.ID, Backlog: d.n})
		case <-w.gone:
			return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeNoKnock, Message: "knock " + trunc(f.ID) + " ended before the approval"})
		case <-ctx.Done():
			return nil
		}
	})
	return nil
}

// hostError gives an admission failure a code the client can act on.
func hostError(err error) error {
	if code := privateCode(err); code != "" {
		return &Error{Code: code, Message: err.Error()}
	}
	if errors.Is(err, mesh.ErrMalformed) || errors.Is(err, mesh.ErrBadSig) {
		return &Error{Code: CodeBadFrame, Message: err.Error()}
	}
	return &Error{Code: CodeNoKnock, Message: "the joiner did not complete the admission: " + err.Error()}
}
