package wsgateway

import (
	"context"
	"time"

	"github.com/confabhq/confab/mesh"
)

// Frames of calls (local mode): call, inbox, accept, reject, match. Each
// request and its reply share the type name; reject is answered with ok.
//
// A call is a direct message of kind "call" whose id is the call id; the
// callee answers with "call-accept" (content: the conversation channel,
// which both nodes join) or "call-reject" (content: the reason). Both ends
// see these envelopes in their subscriptions (see TypeDirect).
const (
	TypeCall   = "call"
	TypeInbox  = "inbox"
	TypeAccept = "accept"
	TypeReject = "reject"
	TypeMatch  = "match"
)

// MaxTopicLen bounds a call's topic and a rejection's reason.
const MaxTopicLen = 1024

// CallRequest rings Target ("@name", "@peerid" or a peer id) about Topic.
// Reply: CallReply (a DirectReply whose ID is the call id).
type CallRequest struct {
	Req    string `json:"req"`
	Target string `json:"target"`
	Topic  string `json:"topic"`
}

// CallReply acknowledges a call; ID is the call id. Delivered false means
// the call waits in the outbox for the callee to be reachable.
type CallReply struct {
	Req       string `json:"req"`
	ID        string `json:"id"`
	Cursor    string `json:"cursor"`
	To        string `json:"to"` // callee peer id
	Delivered bool   `json:"delivered"`
}

// InboxRequest asks for the pending incoming calls. Reply: InboxReply.
type InboxRequest struct {
	Req string `json:"req"`
}

// InboxReply lists pending incoming calls, oldest first.
type InboxReply struct {
	Req   string     `json:"req"`
	Calls []WireCall `json:"calls"`
}

// AcceptRequest answers pending call ID (or a unique prefix of at least 8
// hex digits): the node joins the conversation channel and tells the
// caller. Reply: AcceptReply.
type AcceptRequest struct {
	Req string `json:"req"`
	ID  string `json:"id"`
}

// AcceptReply names the conversation channel of the accepted call.
type AcceptReply struct {
	Req     string `json:"req"`
	ID      string `json:"id"`
	Channel string `json:"channel"`
}

// RejectRequest turns down pending call ID with an optional Reason. Reply:
// OK.
type RejectRequest struct {
	Req    string `json:"req"`
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// MatchRequest finds the agents with Cap and calls the best available one
// about Topic. Reply: MatchReply.
type MatchRequest struct {
	Req   string `json:"req"`
	Cap   string `json:"cap"`
	Topic string `json:"topic"`
}

// MatchReply names the agent called and the call. The agent was reachable
// when its card was confirmed a moment before the call.
type MatchReply struct {
	Req    string   `json:"req"`
	Card   WireCard `json:"card"`
	ID     string   `json:"id"` // the call id
	Cursor string   `json:"cursor"`
}

// WireCall is the wire form of mesh.Call. TS is the caller's clock, unix
// milliseconds; From is the verified caller id, Name its own claim.
type WireCall struct {
	ID    string `json:"id"`
	From  string `json:"from"`
	Name  string `json:"name"`
	Topic string `json:"topic"`
	TS    int64  `json:"ts"`
}

func (*CallRequest) Type() string   { return TypeCall }
func (*CallReply) Type() string     { return TypeCall }
func (*InboxRequest) Type() string  { return TypeInbox }
func (*InboxReply) Type() string    { return TypeInbox }
func (*AcceptRequest) Type() string { return TypeAccept }
func (*AcceptReply) Type() string   { return TypeAccept }
func (*RejectRequest) Type() string { return TypeReject }
func (*MatchRequest) Type() string  { return TypeMatch }
func (*MatchReply) Type() string    { return TypeMatch }

// CallToWire converts a mesh.Call to its wire form.
func CallToWire(c mesh.Call) WireCall {
	return WireCall{ID: c.ID, From: c.From, Name: c.Name, Topic: c.Topic, TS: c.TS.UnixMilli()}
}

// Call converts the wire form back to a mesh.Call.
func (w WireCall) Call() mesh.Call {
	return mesh.Call{ID: w.ID, From: w.From, Name: w.Name, Topic: w.Topic, TS: time.UnixMilli(w.TS)}
}

// CallBackend is implemented by Backends that place and answer calls
// (FromMesh's adapter does). Without it the server answers the call frames
// with unsupported.
type CallBackend interface {
	Call(ctx context.Context, target, topic string) (rec mesh.Record, delivered bool, err error)
	Inbox(ctx context.Context) ([]mesh.Call, error)
	Accept(ctx context.Context, id string) (channel string, err error)
	Reject(ctx context.Context, id, reason string) error
	Match(ctx context.Context, capability, topic string) (mesh.Card, mesh.Record, error)
}

func needTopic(what, t string) *Error {
	if len(t) > MaxTopicLen {
		return errorf(CodeBadFrame, "%s longer than %d bytes", what, MaxTopicLen)
	}
	return nil
}

func needCallID(id string) *Error {
	if len(id) < 8 || len(id) > 64 {
		return errorf(CodeBadFrame, "id must be a call id or a prefix of at least 8 hex digits")
	}
	return nil
}

func validateCall(f *CallRequest) *Error {
	return first(needReq(f.Req), needTarget(f.Target), needTopic("topic", f.Topic))
}

func validateAccept(f *AcceptRequest) *Error { return first(needReq(f.Req), needCallID(f.ID)) }

func validateReject(f *RejectRequest) *Error {
	return first(needReq(f.Req), needCallID(f.ID), needTopic("reason", f.Reason))
}

func validateMatch(f *MatchRequest) *Error {
	if f.Cap == "" || len(f.Cap) > MaxCapLen {
		return first(needReq(f.Req), errorf(CodeBadFrame, "match: cap must be 1..%d bytes", MaxCapLen))
	}
	return first(needReq(f.Req), needTopic("topic", f.Topic))
}

func (c *conn) callBackend(write bool) (CallBackend, error) {
	if err := c.localOnly(write); err != nil {
		return nil, err
	}
	b, ok := c.s.cfg.Backend.(CallBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no calls"}
	}
	return b, nil
}

func (c *conn) placeCall(ctx context.Context, f *CallRequest) (Frame, error) {
	b, err := c.callBackend(true)
	if err != nil {
		return nil, err
	}
	rec, delivered, err := b.Call(ctx, f.Target, f.Topic)
	if err != nil {
		return nil, err
	}
	if rec.Env == nil {
		return nil, &Error{Code: CodeInternal, Message: "backend returned no envelope"}
	}
	return &CallReply{Req: f.Req, ID: rec.Env.ID, Cursor: rec.Cursor, To: calleeOf(rec.Env), Delivered: delivered}, nil
}

// calleeOf is the peer id a direct envelope is addressed to.
func calleeOf(e *mesh.Envelope) string {
	if len(e.Channel) > 1 && e.Channel[0] == '@' {
		return e.Channel[1:]
	}
	return ""
}

func (c *conn) inbox(ctx context.Context, f *InboxRequest) (Frame, error) {
	b, err := c.callBackend(false)
	if err != nil {
		return nil, err
	}
	calls, err := b.Inbox(ctx)
	if err != nil {
		return nil, err
	}
	r := &InboxReply{Req: f.Req, Calls: make([]WireCall, 0, len(calls))}
	for _, cl := range calls {
		r.Calls = append(r.Calls, CallToWire(cl))
	}
	return r, nil
}

func (c *conn) accept(ctx context.Context, f *AcceptRequest) (Frame, error) {
	b, err := c.callBackend(true)
	if err != nil {
		return nil, err
	}
	ch, err := b.Accept(ctx, f.ID)
	if err != nil {
		return nil, err
	}
	return &AcceptReply{Req: f.Req, ID: f.ID, Channel: ch}, nil
}

func (c *conn) reject(ctx context.Context, f *RejectRequest) (Frame, error) {
	b, err := c.callBackend(true)
	if err != nil {
		return nil, err
	}
	if err := b.Reject(ctx, f.ID, f.Reason); err != nil {
		return nil, err
	}
	return &OK{Req: f.Req}, nil
}

func (c *conn) match(ctx context.Context, f *MatchRequest) (Frame, error) {
	b, err := c.callBackend(true)
	if err != nil {
		return nil, err
	}
	card, rec, err := b.Match(ctx, f.Cap, f.Topic)
	if err != nil {
		return nil, err
	}
	if rec.Env == nil {
		return nil, &Error{Code: CodeInternal, Message: "backend returned no envelope"}
	}
	return &MatchReply{Req: f.Req, Card: CardToWire(card), ID: rec.Env.ID, Cursor: rec.Cursor}, nil
}

// Call rings target about topic and returns the call.
func (c *Client) Call(ctx context.Context, target, topic string) (CallReply, error) {
	r, err := expect[*CallReply](c.call(ctx, func(req string) Frame { return &CallRequest{Req: req, Target: target, Topic: topic} }))
	if err != nil {
		return CallReply{}, err
	}
	return *r, nil
}

// Inbox lists the pending incoming calls, oldest first.
func (c *Client) Inbox(ctx context.Context) ([]mesh.Call, error) {
	r, err := expect[*InboxReply](c.call(ctx, func(req string) Frame { return &InboxRequest{Req: req} }))
	if err != nil {
		return nil, err
	}
	out := make([]mesh.Call, len(r.Calls))
	for i, w := range r.Calls {
		out[i] = w.Call()
	}
	return out, nil
}

// Accept answers pending call id and returns the conversation channel,
// which the node has joined.
func (c *Client) Accept(ctx context.Context, id string) (string, error) {
	r, err := expect[*AcceptReply](c.call(ctx, func(req string) Frame { return &AcceptRequest{Req: req, ID: id} }))
	if err != nil {
		return "", err
	}
	return r.Channel, nil
}

// Reject turns down pending call id.
func (c *Client) Reject(ctx context.Context, id, reason string) error {
	_, err := expect[*OK](c.call(ctx, func(req string) Frame { return &RejectRequest{Req: req, ID: id, Reason: reason} }))
	return err
}

// Match calls the best available agent with capability about topic.
func (c *Client) Match(ctx context.Context, capability, topic string) (MatchReply, error) {
	r, err := expect[*MatchReply](c.call(ctx, func(req string) Frame {
		return &MatchRequest{Req: req, Cap: capability, Topic: topic}
	}))
	if err != nil {
		return MatchReply{}, err
	}
	return *r, nil
}
