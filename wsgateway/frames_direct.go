package wsgateway

import (
	"context"

	"github.com/confabhq/confab/mesh"
)

// Frames of direct messages (local mode): direct and thread. Each request
// and its reply share the type name.
//
// A direct message is stored by the node under channel "@<recipient id>"
// and, on the recipient's node, under "@<its own id>": that inbox channel
// is part of every subscription that names no channels, so listen shows
// incoming direct messages and calls.
const (
	TypeDirect = "direct"
	TypeThread = "thread"
)

// DirectRequest asks the node to sign and send a direct message to Target:
// "@name" (unique among present agents), "@peerid" or a bare peer id.
// Reply: DirectReply once the node stored it durably.
type DirectRequest struct {
	Req     string `json:"req"`
	Target  string `json:"target"`
	Kind    string `json:"kind,omitempty"` // "" means "msg"
	Content string `json:"content"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// DirectReply acknowledges a direct message (or a call). Delivered is true
// when the recipient acknowledged that it stored it; false means it waits
// in the node's outbox and is delivered when the recipient is reachable.
type DirectReply struct {
	Req       string `json:"req"`
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Cursor    string `json:"cursor"`
	Channel   string `json:"channel"` // "@<recipient peer id>"
	Delivered bool   `json:"delivered"`
}

// ThreadRequest asks for the direct conversation with Target, oldest first:
// the Limit newest messages of both directions. Reply: ThreadReply.
type ThreadRequest struct {
	Req    string `json:"req"`
	Target string `json:"target"`
	Limit  int    `json:"limit,omitempty"` // 0 means DefaultHistory; clamped to MaxHistoryLimit
}

// ThreadReply lists the records of a direct conversation, oldest first.
type ThreadReply struct {
	Req     string        `json:"req"`
	Records []mesh.Record `json:"records"`
}

func (*DirectRequest) Type() string { return TypeDirect }
func (*DirectReply) Type() string   { return TypeDirect }
func (*ThreadRequest) Type() string { return TypeThread }
func (*ThreadReply) Type() string   { return TypeThread }

// DirectBackend is implemented by Backends that send direct messages
// (FromMesh's adapter does). Without it the server answers direct and
// thread with unsupported.
type DirectBackend interface {
	SendDirect(ctx context.Context, target, kind, content, replyTo string) (rec mesh.Record, delivered bool, err error)
	Thread(ctx context.Context, target string, limit int) ([]mesh.Record, error)
}

func needTarget(t string) *Error {
	if t == "" || t == "@" || len(t) > maxIDLen {
		return errorf(CodeBadFrame, "target must be @name or @peerid, at most %d bytes", maxIDLen)
	}
	return nil
}

func validateDirect(f *DirectRequest) *Error {
	if e := checkMessage(&f.Kind, f.Content, f.ReplyTo); e != nil {
		return e
	}
	return first(needReq(f.Req), needTarget(f.Target))
}

func validateThread(f *ThreadRequest) *Error {
	switch {
	case f.Limit < 0:
		return errorf(CodeBadFrame, "thread: negative limit")
	case f.Limit == 0:
		f.Limit = DefaultHistory
	case f.Limit > MaxHistoryLimit:
		f.Limit = MaxHistoryLimit
	}
	return first(needReq(f.Req), needTarget(f.Target))
}

func (c *conn) directBackend(write bool) (DirectBackend, error) {
	if err := c.localOnly(write); err != nil {
		return nil, err
	}
	b, ok := c.s.cfg.Backend.(DirectBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no direct messages"}
	}
	return b, nil
}

func directReply(req string, rec mesh.Record, delivered bool) Frame {
	if rec.Env == nil {
		return &ErrorFrame{Req: req, Code: CodeInternal, Message: "backend returned no envelope"}
	}
	return &DirectReply{Req: req, ID: rec.Env.ID, Seq: rec.Env.Seq, Cursor: rec.Cursor, Channel: rec.Env.Channel, Delivered: delivered}
}

func (c *conn) direct(ctx context.Context, f *DirectRequest) (Frame, error) {
	b, err := c.directBackend(true)
	if err != nil {
		return nil, err
	}
	rec, delivered, err := b.SendDirect(ctx, f.Target, f.Kind, f.Content, f.ReplyTo)
	if err != nil {
		return nil, err
	}
	return directReply(f.Req, rec, delivered), nil
}

func (c *conn) thread(ctx context.Context, f *ThreadRequest) (Frame, error) {
	b, err := c.directBackend(false)
	if err != nil {
		return nil, err
	}
	recs, err := b.Thread(ctx, f.Target, f.Limit)
	if err != nil {
		return nil, err
	}
	budget := c.s.cfg.HistoryBytes - 256
	start := len(recs)
	for start > 0 {
		if budget -= recordSize(recs[start-1]); budget < 0 {
			break
		}
		start--
	}
	recs = recs[start:]
	if recs == nil {
		recs = []mesh.Record{}
	}
	return &ThreadReply{Req: f.Req, Records: recs}, nil
}

// inboxChannel is the channel under which the node stores the direct
// messages it receives. A subscription to "every channel" includes it, so
// its replay (since) covers what arrived while the client was away.
func inboxChannel(b Backend) string {
	if _, ok := b.(DirectBackend); !ok {
		return ""
	}
	return "@" + b.Info().ID
}

// SendDirect sends a direct message to target (kind "" means "msg"). It
// returns once the node stored it; Delivered says whether the recipient
// has it already or it waits in the outbox.
func (c *Client) SendDirect(ctx context.Context, target, kind, content, replyTo string) (DirectReply, error) {
	r, err := expect[*DirectReply](c.call(ctx, func(req string) Frame {
		return &DirectRequest{Req: req, Target: target, Kind: kind, Content: content, ReplyTo: replyTo}
	}))
	if err != nil {
		return DirectReply{}, err
	}
	return *r, nil
}

// Thread returns the direct conversation with target, oldest first.
func (c *Client) Thread(ctx context.Context, target string, limit int) ([]mesh.Record, error) {
	r, err := expect[*ThreadReply](c.call(ctx, func(req string) Frame {
		return &ThreadRequest{Req: req, Target: target, Limit: limit}
	}))
	if err != nil {
		return nil, err
	}
	return r.Records, nil
}

// Registration of the agent frames (frames_discovery.go, frames_direct.go,
// frames_calls.go) with the codec and the connection: each hook answers
// nil/false for a frame that is not one of them.

// newAgentRequest returns an empty request frame of type typ.
func newAgentRequest(typ string) Frame {
	switch typ {
	case TypeFind:
		return &FindRequest{}
	case TypeCard:
		return &CardRequest{}
	case TypeStatus:
		return &StatusRequest{}
	case TypeDirect:
		return &DirectRequest{}
	case TypeThread:
		return &ThreadRequest{}
	case TypeCall:
		return &CallRequest{}
	case TypeInbox:
		return &InboxRequest{}
	case TypeAccept:
		return &AcceptRequest{}
	case TypeReject:
		return &RejectRequest{}
	case TypeMatch:
		return &MatchRequest{}
	}
	return nil
}

// newAgentReply returns an empty reply frame of type typ.
func newAgentReply(typ string) Frame {
	switch typ {
	case TypeFind:
		return &FindReply{}
	case TypeCard:
		return &CardReply{}
	case TypeDirect:
		return &DirectReply{}
	case TypeThread:
		return &ThreadReply{}
	case TypeCall:
		return &CallReply{}
	case TypeInbox:
		return &InboxReply{}
	case TypeAccept:
		return &AcceptReply{}
	case TypeMatch:
		return &MatchReply{}
	}
	return nil
}

// validateAgentRequest checks and defaults an agent request frame.
func validateAgentRequest(f Frame) (*Error, bool) {
	switch f := f.(type) {
	case *FindRequest:
		return validateFind(f), true
	case *CardRequest:
		return validateCard(f), true
	case *StatusRequest:
		return validateStatus(f), true
	case *DirectRequest:
		return validateDirect(f), true
	case *ThreadRequest:
		return validateThread(f), true
	case *CallRequest:
		return validateCall(f), true
	case *InboxRequest:
		return needReq(f.Req), true
	case *AcceptRequest:
		return validateAccept(f), true
	case *RejectRequest:
		return validateReject(f), true
	case *MatchRequest:
		return validateMatch(f), true
	}
	return nil, false
}

// validateAgentReply checks an agent reply frame read by a Client.
func validateAgentReply(f Frame) (*Error, bool) {
	switch f := f.(type) {
	case *FindReply:
		if len(f.Cards) > maxListItems {
			return errorf(CodeBadFrame, "find: %d cards", len(f.Cards)), true
		}
		for _, c := range f.Cards {
			if err := validCard(c); err != nil {
				return err, true
			}
		}
		return needReq(f.Req), true
	case *CardReply:
		return first(needReq(f.Req), validCard(f.Card)), true
	case *DirectReply:
		if f.ID == "" || len(f.ID) > 64 || len(f.Cursor) > MaxCursorLen {
			return errorf(CodeBadFrame, "direct: id or cursor"), true
		}
		return needReq(f.Req), true
	case *ThreadReply:
		if len(f.Records) > maxListItems {
			return errorf(CodeBadFrame, "thread: %d records", len(f.Records)), true
		}
		for _, r := range f.Records {
			if err := validRecord(r); err != nil {
				return err, true
			}
		}
		return needReq(f.Req), true
	case *CallReply:
		if f.ID == "" || len(f.ID) > 64 || len(f.Cursor) > MaxCursorLen {
			return errorf(CodeBadFrame, "call: id or cursor"), true
		}
		return needReq(f.Req), true
	case *InboxReply:
		if len(f.Calls) > maxListItems {
			return errorf(CodeBadFrame, "inbox: %d calls", len(f.Calls)), true
		}
		return needReq(f.Req), true
	case *AcceptReply:
		if f.Channel == "" || !mesh.ValidChannel(f.Channel) {
			return errorf(CodeBadFrame, "accept: channel"), true
		}
		return needReq(f.Req), true
	case *MatchReply:
		if f.ID == "" || len(f.ID) > 64 || len(f.Cursor) > MaxCursorLen {
			return errorf(CodeBadFrame, "match: id or cursor"), true
		}
		return first(needReq(f.Req), validCard(f.Card)), true
	}
	return nil, false
}

// agentReq returns the req of an agent request or reply frame, "" if f is
// none.
func agentReq(f Frame) string {
	switch f := f.(type) {
	case *FindRequest:
		return f.Req
	case *FindReply:
		return f.Req
	case *CardRequest:
		return f.Req
	case *CardReply:
		return f.Req
	case *StatusRequest:
		return f.Req
	case *DirectRequest:
		return f.Req
	case *DirectReply:
		return f.Req
	case *ThreadRequest:
		return f.Req
	case *ThreadReply:
		return f.Req
	case *CallRequest:
		return f.Req
	case *CallReply:
		return f.Req
	case *InboxRequest:
		return f.Req
	case *InboxReply:
		return f.Req
	case *AcceptRequest:
		return f.Req
	case *AcceptReply:
		return f.Req
	case *RejectRequest:
		return f.Req
	case *MatchRequest:
		return f.Req
	case *MatchReply:
		return f.Req
	}
	return ""
}

// handleAgent serves an agent request; ok is false if f is none.
func (c *conn) handleAgent(ctx context.Context, f Frame) (reply Frame, ok bool, err error) {
	switch f := f.(type) {
	case *FindRequest:
		reply, err = c.find(ctx, f)
	case *CardRequest:
		reply, err = c.card(ctx, f)
	case *StatusRequest:
		reply, err = c.setStatus(ctx, f)
	case *DirectRequest:
		reply, err = c.direct(ctx, f)
	case *ThreadRequest:
		reply, err = c.thread(ctx, f)
	case *CallRequest:
		reply, err = c.placeCall(ctx, f)
	case *InboxRequest:
		reply, err = c.inbox(ctx, f)
	case *AcceptRequest:
		reply, err = c.accept(ctx, f)
	case *RejectRequest:
		reply, err = c.reject(ctx, f)
	case *MatchRequest:
		reply, err = c.match(ctx, f)
	default:
		return nil, false, nil
	}
	return reply, true, err
}
