package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/confabhq/confab/mesh"
)

// Frames of private channels and sessions (docs/private.md), local mode
// only: they act with the node's own key. Each request and its reply share
// the type name, except session_join, which is answered first by a
// session_pending frame (the host holds the knock) and then by its reply.
//
// Decrypted view. In local mode, records of private channels ("~" ids) in
// events and history replies are shown decrypted: the envelope's kind and
// content are the inner kind and text, and the frame carries the original
// ciphertext content in "sealed" (Event.Sealed; HistoryReply.Sealed, by
// envelope id). id, sig, seq and ts are those of the signed envelope, so a
// client verifies it by putting kind "enc" and the sealed content back
// (VerifySealed). A record the node cannot decrypt (no key for its epoch:
// sent after this agent was removed, or before it was admitted) is passed
// as it is stored: kind "enc", ciphertext content, no sealed entry. Remote
// and read-only connections never see a decrypted view.
const (
	TypePrivateCreate  = "private_create"
	TypePrivateInvite  = "private_invite"
	TypePrivateRemove  = "private_remove"
	TypePrivateList    = "private_list"
	TypeSessionOpen    = "session_open"
	TypeSessionJoin    = "session_join"
	TypeSessionPending = "session_pending" // server → client, before the session_join reply
	TypeSessionApprove = "session_approve"
	TypeSessionDeny    = "session_deny"
	TypeSessionClose   = "session_close"
	TypeKnocks         = "knocks"
)

// Error codes of private channels and sessions. A refused knock carries
// the host's reason.
const (
	CodeUnknownPrivate = "unknown_private" // no private channel of that name or id here
	CodeNotHost        = "not_host"        // only the channel's host can do that
	CodeNotMember      = "not_member"      // the agent is not a member
	CodeSessionGate    = "session_gate"    // sessions admit members only by an approved knock
	CodeNoKey          = "no_key"          // the node holds no key for that private channel
	CodeBadSessionKey  = "bad_session_key" // not a session key
	CodeKeyExpired     = "key_expired"     // the session key expired
	CodeSessionClosed  = "session_closed"  // the host closed the session
	CodeUnknownSession = "unknown_session" // the host has no such session
	CodeBadKnock       = "bad_knock"       // the knock's proof is wrong (wrong key or forged)
	CodeKnockReplayed  = "knock_replayed"  // a knock nonce seen before
	CodeKnockStale     = "knock_stale"     // clocks too far apart
	CodeDenied         = "denied"          // the host denied the knock
	CodeKnockTimeout   = "knock_timeout"   // no decision in time
	CodeNoKnock        = "no_knock"        // no pending knock from that agent
	CodeBusy           = "busy"            // too many session joins in flight on this connection, or too many knocks waiting for a thin host
)

// Limits of the private frames.
const (
	MaxSessionTopic    = 256              // bytes of a session topic
	MaxSessionKey      = 256              // bytes of a session key
	MaxSessionTTL      = 30 * 24 * 3600   // seconds a session key may live
	MaxJoinWait        = 15 * 60          // seconds a session_join waits for the host
	maxJoinsPerConn    = 4                // session joins in flight on one connection
	maxAgentArg        = 128              // bytes of an agent argument
	defaultJoinWaitSec = MaxJoinWait      // when the request gives 0
	maxSealedEntries   = maxListItems     // sealed entries in a history reply
	sealedJSONOverhead = 6*64 + 2*64 + 16 // id key and quoting of one sealed entry
)

// PrivateCreateRequest creates a private channel hosted by the node. Name
// ("#name", optional) is a local display name, never sent. Reply:
// PrivateReply.
type PrivateCreateRequest struct {
	Req  string `json:"req"`
	Name string `json:"name,omitempty"`
}

// PrivateInviteRequest adds Agent ("@name", "@peerid" or a peer id) to the
// private channel Channel ("#name" or "~id") the node hosts. Reply:
// PrivateReply.
type PrivateInviteRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Agent   string `json:"agent"`
}

// PrivateRemoveRequest takes Agent out of Channel and rotates its key.
// Reply: PrivateReply.
type PrivateRemoveRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Agent   string `json:"agent"`
}

// PrivateListRequest lists the private channels the node holds keys for.
// Reply: PrivateListReply.
type PrivateListRequest struct {
	Req string `json:"req"`
}

// SessionOpenRequest opens a session about Topic whose first message is
// Context (Topic if empty); the key lives TTL seconds (0: the node's
// default, 24 h). Reply: SessionOpenReply.
type SessionOpenRequest struct {
	Req     string `json:"req"`
	Topic   string `json:"topic"`
	Context string `json:"context,omitempty"`
	TTL     int64  `json:"ttl,omitempty"`
}

// SessionJoinRequest knocks with a session key and waits up to Wait seconds
// (0: MaxJoinWait) for the host. Replies: SessionPending once the host holds
// the knock, then SessionJoinReply (approved; the backlog is stored) or an
// error (refused, denied, timeout).
type SessionJoinRequest struct {
	Req  string `json:"req"`
	Key  string `json:"key"`
	Wait int    `json:"wait,omitempty"`
}

// SessionApproveRequest approves the pending knock of Agent (peer id,
// "@peerid", "@name", name, or a knock id prefix). Reply: PrivateReply,
// once the joiner stored the keys and the backlog.
type SessionApproveRequest struct {
	Req   string `json:"req"`
	Agent string `json:"agent"`
}

// SessionDenyRequest refuses the pending knock of Agent. Reply: OK.
type SessionDenyRequest struct {
	Req   string `json:"req"`
	Agent string `json:"agent"`
}

// SessionCloseRequest closes a session the node hosts ("~id"); empty means
// the only session it hosts. Reply: SessionCloseReply.
type SessionCloseRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel,omitempty"`
}

// KnocksRequest lists the knocks waiting for the node's decision. Reply:
// KnocksReply.
type KnocksRequest struct {
	Req string `json:"req"`
}

// WirePrivate is the wire form of mesh.PrivateChannel.
type WirePrivate struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Host    string   `json:"host"`
	Session bool     `json:"session,omitempty"`
	Topic   string   `json:"topic,omitempty"`
	Epoch   uint32   `json:"epoch"`
	Members []string `json:"members"`
}

// WireKnock is the wire form of mesh.Knock. TS is unix milliseconds.
type WireKnock struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	Name    string `json:"name"`
	Channel string `json:"channel"`
	Topic   string `json:"topic,omitempty"`
	TS      int64  `json:"ts"`
}

// PrivateReply describes one private channel after a create, invite,
// remove or approve.
type PrivateReply struct {
	Req     string      `json:"req"`
	Channel WirePrivate `json:"channel"`
	Op      string      `json:"-"` // the request type it answers: its frame type
}

// PrivateListReply lists private channels, sorted by id.
type PrivateListReply struct {
	Req      string        `json:"req"`
	Channels []WirePrivate `json:"channels"`
}

// SessionOpenReply is an opened session: the key to hand to a joiner (it
// only knocks), its expiry (unix ms) and the context message.
type SessionOpenReply struct {
	Req       string      `json:"req"`
	Key       string      `json:"key"`
	Channel   WirePrivate `json:"channel"`
	Expires   int64       `json:"expires"`
	ContextID string      `json:"context_id"`
	Cursor    string      `json:"cursor"`
}

// SessionPending says the host holds the knock of session_join Req and
// waits for its owner's decision.
type SessionPending struct {
	Req string `json:"req"`
}

// SessionJoinReply is an approved knock: the node holds the keys and has
// stored Backlog envelopes of Channel.
type SessionJoinReply struct {
	Req     string      `json:"req"`
	Channel WirePrivate `json:"channel"`
	Backlog int         `json:"backlog"`
}

// SessionCloseReply names the closed session.
type SessionCloseReply struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
}

// KnocksReply lists pending knocks, oldest first.
type KnocksReply struct {
	Req    string      `json:"req"`
	Knocks []WireKnock `json:"knocks"`
}

func (*PrivateCreateRequest) Type() string  { return TypePrivateCreate }
func (*PrivateInviteRequest) Type() string  { return TypePrivateInvite }
func (*PrivateRemoveRequest) Type() string  { return TypePrivateRemove }
func (*PrivateListRequest) Type() string    { return TypePrivateList }
func (*SessionOpenRequest) Type() string    { return TypeSessionOpen }
func (*SessionJoinRequest) Type() string    { return TypeSessionJoin }
func (*SessionApproveRequest) Type() string { return TypeSessionApprove }
func (*SessionDenyRequest) Type() string    { return TypeSessionDeny }
func (*SessionCloseRequest) Type() string   { return TypeSessionClose }
func (*KnocksRequest) Type() string         { return TypeKnocks }
func (*PrivateListReply) Type() string      { return TypePrivateList }
func (*SessionOpenReply) Type() string      { return TypeSessionOpen }
func (*SessionPending) Type() string        { return TypeSessionPending }
func (*SessionJoinReply) Type() string      { return TypeSessionJoin }
func (*SessionCloseReply) Type() string     { return TypeSessionClose }
func (*KnocksReply) Type() string           { return TypeKnocks }

// Type of a PrivateReply is the type of the request it answers.
func (r *PrivateReply) Type() string {
	if r.Op == "" {
		return TypePrivateCreate
	}
	return r.Op
}

// PrivateBackend is implemented by Backends with private channels and
// sessions (FromMesh's adapter: *mesh.Mesh has every method). Without it
// the server answers the private frames with unsupported and shows private
// records as stored.
type PrivateBackend interface {
	CreatePrivate(ctx context.Context, name string) (mesh.PrivateChannel, error)
	Invite(ctx context.Context, channel, agent string) error
	Remove(ctx context.Context, channel, agent string) error
	Private(channel string) (mesh.PrivateChannel, error)
	PrivateChannels() []mesh.PrivateChannel
	OpenSession(ctx context.Context, topic, snapshot string, ttl time.Duration) (mesh.Session, error)
	JoinSession(ctx context.Context, key string, pending func()) (mesh.JoinResult, error)
	Approve(ctx context.Context, agent string) (mesh.PrivateChannel, error)
	Deny(ctx context.Context, agent string) error
	CloseSession(ctx context.Context, channel string) error
	Knocks() []mesh.Knock
	DecryptRecord(r mesh.Record) (mesh.Record, error)
}

var _ PrivateBackend = meshBackend{}

// PrivateToWire converts a mesh.PrivateChannel to its wire form.
func PrivateToWire(p mesh.PrivateChannel) WirePrivate {
	m := p.Members
	if m == nil {
		m = []string{}
	}
	return WirePrivate{ID: p.ID, Name: p.Name, Host: p.Host, Session: p.Session, Topic: p.Topic, Epoch: p.Epoch, Members: m}
}

// VerifySealed verifies the signature of a decrypted view: env with kind
// "enc" and content sealed, as its author signed it.
func VerifySealed(env *mesh.Envelope, sealed string) error {
	if env == nil {
		return fmt.Errorf("wsgateway: verify sealed: %w", mesh.ErrMalformed)
	}
	c := *env
	c.Kind, c.Content = mesh.KindEncrypted, sealed
	return c.Verify()
}

// Registration hooks (codec.go, conn.go, client.go): each answers nil/false
// for a frame that is not a private one.

func newPrivateRequest(typ string) Frame {
	switch typ {
	case TypePrivateCreate:
		return &PrivateCreateRequest{}
	case TypePrivateInvite:
		return &PrivateInviteRequest{}
	case TypePrivateRemove:
		return &PrivateRemoveRequest{}
	case TypePrivateList:
		return &PrivateListRequest{}
	case TypeSessionOpen:
		return &SessionOpenRequest{}
	case TypeSessionJoin:
		return &SessionJoinRequest{}
	case TypeSessionApprove:
		return &SessionApproveRequest{}
	case TypeSessionDeny:
		return &SessionDenyRequest{}
	case TypeSessionClose:
		return &SessionCloseRequest{}
	case TypeKnocks:
		return &KnocksRequest{}
	case TypeSessionKnock:
		return &SessionKnockRequest{} // frames_knock.go
	case TypePrivateFollow:
		return &PrivateFollowRequest{} // frames_host.go
	case TypeSessionDecide:
		return &SessionDecideRequest{}
	}
	return nil
}

func newPrivateReply(typ string) Frame {
	switch typ {
	case TypePrivateCreate, TypePrivateInvite, TypePrivateRemove, TypeSessionApprove:
		return &PrivateReply{Op: typ}
	case TypePrivateList:
		return &PrivateListReply{}
	case TypeSessionOpen:
		return &SessionOpenReply{}
	case TypeSessionPending:
		return &SessionPending{}
	case TypeSessionJoin:
		return &SessionJoinReply{}
	case TypeSessionClose:
		return &SessionCloseReply{}
	case TypeKnocks:
		return &KnocksReply{}
	case TypeSessionKnock:
		return &SessionKnockReply{} // frames_knock.go
	case TypeSessionBacklog:
		return &SessionBacklog{}
	case TypeHostKnock:
		return &HostKnock{} // frames_host.go
	case TypeSessionDecide:
		return &SessionDecideReply{}
	}
	return nil
}

func needAgent(a string) *Error {
	if a == "" || a == "@" || len(a) > maxAgentArg {
		return errorf(CodeBadFrame, "agent must be @name, @peerid or a peer id, at most %d bytes", maxAgentArg)
	}
	return nil
}

// needPrivate checks a private channel argument: "#name" (a local display
// name) or "~id".
func needPrivate(ch string) *Error {
	if err := needChannel(ch); err != nil {
		return err
	}
	if ch[0] != '#' && ch[0] != '~' {
		return errorf(CodeBadChannel, "private channel must be #name or ~id, got %q", trunc(ch))
	}
	return nil
}

func validatePrivateRequest(f Frame) (*Error, bool) {
	if err, ok := validateHostRequest(f); ok { // frames_host.go
		return err, true
	}
	switch f := f.(type) {
	case *PrivateCreateRequest:
		if f.Name != "" {
			if err := needChannel(f.Name); err != nil {
				return err, true
			}
			if f.Name[0] != '#' {
				return errorf(CodeBadChannel, "private channel name must be #name"), true
			}
		}
		return needReq(f.Req), true
	case *PrivateInviteRequest:
		return first(needReq(f.Req), needPrivate(f.Channel), needAgent(f.Agent)), true
	case *PrivateRemoveRequest:
		return first(needReq(f.Req), needPrivate(f.Channel), needAgent(f.Agent)), true
	case *PrivateListRequest:
		return needReq(f.Req), true
	case *SessionOpenRequest:
		switch {
		case f.Topic == "" || len(f.Topic) > MaxSessionTopic:
			return errorf(CodeBadFrame, "session_open: topic must be 1..%d bytes", MaxSessionTopic), true
		case len(f.Context) > mesh.MaxPrivateText:
			return errorf(CodeTooLarge, "session_open: context is %d bytes, limit %d", len(f.Context), mesh.MaxPrivateText), true
		case f.TTL < 0 || f.TTL > MaxSessionTTL:
			return errorf(CodeBadFrame, "session_open: ttl must be 0..%d seconds", MaxSessionTTL), true
		}
		return needReq(f.Req), true
	case *SessionJoinRequest:
		switch {
		case f.Key == "" || len(f.Key) > MaxSessionKey:
			return errorf(CodeBadFrame, "session_join: key must be 1..%d bytes", MaxSessionKey), true
		case f.Wait < 0 || f.Wait > MaxJoinWait:
			return errorf(CodeBadFrame, "session_join: wait must be 0..%d seconds", MaxJoinWait), true
		case f.Wait == 0:
			f.Wait = defaultJoinWaitSec
		}
		return needReq(f.Req), true
	case *SessionApproveRequest:
		return first(needReq(f.Req), needAgent(f.Agent)), true
	case *SessionDenyRequest:
		return first(needReq(f.Req), needAgent(f.Agent)), true
	case *SessionCloseRequest:
		if f.Channel != "" {
			return first(needReq(f.Req), needPrivate(f.Channel)), true
		}
		return needReq(f.Req), true
	case *KnocksRequest:
		return needReq(f.Req), true
	case *SessionKnockRequest:
		return validateKnockRequest(f), true // frames_knock.go
	}
	return nil, false
}

func validatePrivateReply(f Frame) (*Error, bool) {
	if err, ok := validateKnockReply(f); ok { // frames_knock.go
		return err, true
	}
	if err, ok := validateHostReply(f); ok { // frames_host.go
		return err, true
	}
	switch f := f.(type) {
	case *PrivateReply:
		return first(needReq(f.Req), validWirePrivate(f.Channel)), true
	case *PrivateListReply:
		if len(f.Channels) > maxListItems {
			return errorf(CodeBadFrame, "private_list: %d channels", len(f.Channels)), true
		}
		for _, p := range f.Channels {
			if err := validWirePrivate(p); err != nil {
				return err, true
			}
		}
		return needReq(f.Req), true
	case *SessionOpenReply:
		if f.Key == "" || len(f.Key) > MaxSessionKey || len(f.Cursor) > MaxCursorLen {
			return errorf(CodeBadFrame, "session_open: key or cursor"), true
		}
		return first(needReq(f.Req), validWirePrivate(f.Channel)), true
	case *SessionPending:
		return needReq(f.Req), true
	case *SessionJoinReply:
		return first(needReq(f.Req), validWirePrivate(f.Channel)), true
	case *SessionCloseReply:
		return first(needReq(f.Req), needPrivate(f.Channel)), true
	case *KnocksReply:
		if len(f.Knocks) > maxListItems {
			return errorf(CodeBadFrame, "knocks: %d knocks", len(f.Knocks)), true
		}
		return needReq(f.Req), true
	}
	return nil, false
}

func validWirePrivate(p WirePrivate) *Error {
	if !mesh.ValidChannel(p.ID) || p.ID[0] != '~' || len(p.Members) > maxListItems {
		return errorf(CodeBadFrame, "private channel: id or members")
	}
	return nil
}

// privateReq returns the req of a private request or reply, "" if f is none.
func privateReq(f Frame) string {
	switch f := f.(type) {
	case *PrivateCreateRequest:
		return f.Req
	case *PrivateInviteRequest:
		return f.Req
	case *PrivateRemoveRequest:
		return f.Req
	case *PrivateListRequest:
		return f.Req
	case *SessionOpenRequest:
		return f.Req
	case *SessionJoinRequest:
		return f.Req
	case *SessionApproveRequest:
		return f.Req
	case *SessionDenyRequest:
		return f.Req
	case *SessionCloseRequest:
		return f.Req
	case *KnocksRequest:
		return f.Req
	case *PrivateReply:
		return f.Req
	case *PrivateListReply:
		return f.Req
	case *SessionOpenReply:
		return f.Req
	case *SessionPending:
		return f.Req
	case *SessionJoinReply:
		return f.Req
	case *SessionCloseReply:
		return f.Req
	case *KnocksReply:
		return f.Req
	case *SessionKnockRequest:
		return f.Req
	case *SessionBacklog:
		return f.Req
	case *SessionKnockReply:
		return f.Req
	}
	return hostReq(f) // frames_host.go
}

// privateCode maps the errors of private channels and sessions to codes.
func privateCode(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{mesh.ErrUnknownPrivate, CodeUnknownPrivate}, {mesh.ErrNotHost, CodeNotHost},
		{mesh.ErrNotMember, CodeNotMember}, {mesh.ErrSessionGate, CodeSessionGate},
		{mesh.ErrNoKey, CodeNoKey}, {mesh.ErrBadSessionKey, CodeBadSessionKey},
		{mesh.ErrKeyExpired, CodeKeyExpired}, {mesh.ErrSessionClosed, CodeSessionClosed},
		{mesh.ErrUnknownSession, CodeUnknownSession}, {mesh.ErrBadKnock, CodeBadKnock},
		{mesh.ErrKnockReplayed, CodeKnockReplayed}, {mesh.ErrKnockStale, CodeKnockStale},
		{mesh.ErrDenied, CodeDenied}, {mesh.ErrKnockTimeout, CodeKnockTimeout},
		{mesh.ErrNoKnock, CodeNoKnock}, {mesh.ErrHostOffline, CodeHostOffline}, {mesh.ErrHostBusy, CodeBusy},
	} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

func (c *conn) privateBackend() (PrivateBackend, error) {
	if err := c.localOnly(true); err != nil {
		return nil, err
	}
	b, ok := c.s.cfg.Backend.(PrivateBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node has no private channels"}
	}
	return b, nil
}

// privateError turns a mesh error into a protocol error with its code, so
// that the message is kept (codeOf would call it internal).
func privateError(err error) error {
	if code := privateCode(err); code != "" {
		return &Error{Code: code, Message: err.Error()}
	}
	return err
}

// handlePrivate serves a private request other than session_join; ok is
// false if f is none.
func (c *conn) handlePrivate(ctx context.Context, f Frame) (reply Frame, ok bool, err error) {
	switch f.(type) {
	case *PrivateCreateRequest, *PrivateInviteRequest, *PrivateRemoveRequest, *PrivateListRequest,
		*SessionOpenRequest, *SessionApproveRequest, *SessionDenyRequest, *SessionCloseRequest, *KnocksRequest:
	default:
		return nil, false, nil
	}
	b, err := c.privateBackend()
	if err != nil {
		return nil, true, err
	}
	reply, err = c.private(ctx, b, f)
	return reply, true, privateError(err)
}

func (c *conn) private(ctx context.Context, b PrivateBackend, f Frame) (Frame, error) {
	switch f := f.(type) {
	case *PrivateCreateRequest:
		p, err := b.CreatePrivate(ctx, f.Name)
		if err != nil {
			return nil, err
		}
		return &PrivateReply{Req: f.Req, Channel: PrivateToWire(p), Op: TypePrivateCreate}, nil
	case *PrivateInviteRequest:
		if err := b.Invite(ctx, f.Channel, f.Agent); err != nil {
			return nil, err
		}
		return c.privateReply(b, f.Req, f.Channel, TypePrivateInvite)
	case *PrivateRemoveRequest:
		if err := b.Remove(ctx, f.Channel, f.Agent); err != nil {
			return nil, err
		}
		return c.privateReply(b, f.Req, f.Channel, TypePrivateRemove)
	case *PrivateListRequest:
		ps := b.PrivateChannels()
		r := &PrivateListReply{Req: f.Req, Channels: make([]WirePrivate, 0, len(ps))}
		for _, p := range ps {
			r.Channels = append(r.Channels, PrivateToWire(p))
		}
		return r, nil
	case *SessionOpenRequest:
		s, err := b.OpenSession(ctx, f.Topic, f.Context, time.Duration(f.TTL)*time.Second)
		if err != nil {
			return nil, err
		}
		r := &SessionOpenReply{Req: f.Req, Key: s.Key, Channel: PrivateToWire(s.Channel), Expires: s.Expires.UnixMilli(), Cursor: s.Context.Cursor}
		if s.Context.Env != nil {
			r.ContextID = s.Context.Env.ID
		}
		return r, nil
	case *SessionApproveRequest:
		p, err := b.Approve(ctx, f.Agent)
		if err != nil {
			return nil, err
		}
		return &PrivateReply{Req: f.Req, Channel: PrivateToWire(p), Op: TypeSessionApprove}, nil
	case *SessionDenyRequest:
		if err := b.Deny(ctx, f.Agent); err != nil {
			return nil, err
		}
		return &OK{Req: f.Req}, nil
	case *SessionCloseRequest:
		ch := f.Channel
		if ch == "" {
			var err error
			if ch, err = onlySession(b); err != nil {
				return nil, err
			}
		}
		p, err := b.Private(ch)
		if err != nil {
			return nil, err
		}
		if err := b.CloseSession(ctx, p.ID); err != nil {
			return nil, err
		}
		return &SessionCloseReply{Req: f.Req, Channel: p.ID}, nil
	case *KnocksRequest:
		ks := b.Knocks()
		r := &KnocksReply{Req: f.Req, Knocks: make([]WireKnock, 0, len(ks))}
		for _, k := range ks {
			r.Knocks = append(r.Knocks, WireKnock{ID: k.ID, From: k.From, Name: k.Name, Channel: k.Channel, Topic: k.Topic, TS: k.TS.UnixMilli()})
		}
		return r, nil
	}
	return nil, errorf(CodeUnknownType, "not a private frame: %s", f.Type())
}

func (c *conn) privateReply(b PrivateBackend, req, channel, typ string) (Frame, error) {
	p, err := b.Private(channel)
	if err != nil {
		return nil, err
	}
	return &PrivateReply{Req: req, Channel: PrivateToWire(p), Op: typ}, nil
}

// onlySession returns the one session the node hosts.
func onlySession(b PrivateBackend) (string, error) {
	self := ""
	if ib, ok := b.(interface{ Info() mesh.Info }); ok {
		self = ib.Info().ID
	}
	var ids []string
	for _, p := range b.PrivateChannels() {
		if p.Session && p.Host == self {
			ids = append(ids, p.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("session_close: this agent hosts no session: %w", mesh.ErrUnknownSession)
	case 1:
		return ids[0], nil
	}
	return "", &Error{Code: CodeBadFrame, Message: "this agent hosts several sessions; name one: " + strings.Join(ids, ", ")}
}

// sessionJoin knocks in its own goroutine, so the connection keeps serving
// other requests while the host decides. The knock ends with the
// connection (its stream to the host is reset).
func (c *conn) sessionJoin(ctx context.Context, f *SessionJoinRequest) error {
	b, err := c.privateBackend()
	if err != nil {
		return c.send(ctx, c.errorFrame(f.Req, err))
	}
	if c.joins.Add(1) > maxJoinsPerConn {
		c.joins.Add(-1)
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeBusy, Message: fmt.Sprintf("more than %d session joins in flight on this connection", maxJoinsPerConn)})
	}
	c.g.Go(func() error {
		defer c.joins.Add(-1)
		jctx, cancel := context.WithTimeout(ctx, time.Duration(f.Wait)*time.Second)
		defer cancel()
		res, err := b.JoinSession(jctx, f.Key, func() { _ = c.send(jctx, &SessionPending{Req: f.Req}) })
		if err != nil {
			if ctx.Err() != nil {
				return nil // the connection ended
			}
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("no decision within %d s: %w", f.Wait, mesh.ErrKnockTimeout)
			}
			_ = c.send(ctx, c.errorFrame(f.Req, privateError(err)))
			return nil
		}
		_ = c.send(ctx, &SessionJoinReply{Req: f.Req, Channel: PrivateToWire(res.Channel), Backlog: res.Backlog})
		return nil
	})
	return nil
}

// reveal returns the decrypted view of rec and its sealed content ("" when
// rec is shown as stored): local mode only, private channels only.
func (c *conn) reveal(rec mesh.Record) (mesh.Record, string) {
	if c.s.cfg.Mode != ModeLocal || rec.Env == nil || rec.Env.Channel == "" || rec.Env.Channel[0] != '~' || rec.Env.Kind != mesh.KindEncrypted {
		return rec, ""
	}
	b, ok := c.s.cfg.Backend.(PrivateBackend)
	if !ok {
		return rec, ""
	}
	d, err := b.DecryptRecord(rec)
	if err != nil || d.Env == nil {
		return rec, ""
	}
	return d, rec.Env.Content
}

// event builds the Event frame of rec.
func (c *conn) event(rec mesh.Record, replay bool) *Event {
	r, sealed := c.reveal(rec)
	return &Event{Record: r, Replay: replay, Sealed: sealed}
}

// revealAll decrypts the records of a history reply in place and returns
// their sealed contents by envelope id (nil if none).
func (c *conn) revealAll(recs []mesh.Record) map[string]string {
	var sealed map[string]string
	for i, r := range recs {
		d, s := c.reveal(r)
		if s == "" || len(sealed) >= maxSealedEntries {
			continue
		}
		if sealed == nil {
			sealed = map[string]string{}
		}
		recs[i] = d
		sealed[d.Env.ID] = s
	}
	return sealed
}

// sealedSize bounds the JSON size a record's sealed entry adds.
func sealedSize(sealed map[string]string, r mesh.Record) int {
	if r.Env == nil {
		return 0
	}
	if s, ok := sealed[r.Env.ID]; ok {
		return len(s) + sealedJSONOverhead
	}
	return 0
}

// Client methods.

// CreatePrivate creates a private channel hosted by the node; name
// ("#name") is an optional local display name.
func (c *Client) CreatePrivate(ctx context.Context, name string) (WirePrivate, error) {
	r, err := expect[*PrivateReply](c.call(ctx, func(req string) Frame { return &PrivateCreateRequest{Req: req, Name: name} }))
	if err != nil {
		return WirePrivate{}, err
	}
	return r.Channel, nil
}

// Invite adds agent to a private channel the node hosts.
func (c *Client) Invite(ctx context.Context, channel, agent string) (WirePrivate, error) {
	r, err := expect[*PrivateReply](c.call(ctx, func(req string) Frame {
		return &PrivateInviteRequest{Req: req, Channel: channel, Agent: agent}
	}))
	if err != nil {
		return WirePrivate{}, err
	}
	return r.Channel, nil
}

// Remove takes agent out of a private channel the node hosts and rotates
// its key.
func (c *Client) Remove(ctx context.Context, channel, agent string) (WirePrivate, error) {
	r, err := expect[*PrivateReply](c.call(ctx, func(req string) Frame {
		return &PrivateRemoveRequest{Req: req, Channel: channel, Agent: agent}
	}))
	if err != nil {
		return WirePrivate{}, err
	}
	return r.Channel, nil
}

// PrivateChannels lists the private channels the node holds keys for.
func (c *Client) PrivateChannels(ctx context.Context) ([]WirePrivate, error) {
	r, err := expect[*PrivateListReply](c.call(ctx, func(req string) Frame { return &PrivateListRequest{Req: req} }))
	if err != nil {
		return nil, err
	}
	return r.Channels, nil
}

// OpenSession opens a session about topic whose first message is context
// (topic if empty); ttl 0 means the node's default.
func (c *Client) OpenSession(ctx context.Context, topic, context string, ttl time.Duration) (SessionOpenReply, error) {
	r, err := expect[*SessionOpenReply](c.call(ctx, func(req string) Frame {
		return &SessionOpenRequest{Req: req, Topic: topic, Context: context, TTL: int64(ttl / time.Second)}
	}))
	if err != nil {
		return SessionOpenReply{}, err
	}
	return *r, nil
}

// JoinSession knocks with a session key and waits until the host decides,
// wait passes (0: MaxJoinWait seconds) or ctx ends. pending, if not nil, is
// called once the host holds the knock. On approval the node has stored
// the keys and the backlog.
func (c *Client) JoinSession(ctx context.Context, key string, wait time.Duration, pending func()) (SessionJoinReply, error) {
	// A call that gets an interim frame: its reply channel has room for the
	// session_pending frame and the reply (dispatch keeps it registered
	// after an interim frame).
	req, ch, err := c.newReq(2)
	if err != nil {
		return SessionJoinReply{}, err
	}
	f := &SessionJoinRequest{Req: req, Key: key, Wait: int((wait + time.Second - 1) / time.Second)}
	if err := c.write(ctx, f); err != nil {
		c.forget(req)
		return SessionJoinReply{}, err
	}
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				c.mu.Lock()
				err := c.connErr
				c.mu.Unlock()
				return SessionJoinReply{}, err
			}
			switch r := r.(type) {
			case *SessionPending:
				if pending != nil {
					pending()
					pending = nil
				}
				continue
			case *ErrorFrame:
				return SessionJoinReply{}, &Error{Code: r.Code, Message: r.Message}
			case *SessionJoinReply:
				return *r, nil
			default:
				return SessionJoinReply{}, fmt.Errorf("wsgateway: unexpected %q reply", r.Type())
			}
		case <-ctx.Done():
			c.forget(req)
			return SessionJoinReply{}, ctx.Err()
		}
	}
}

// interim reports whether f is a frame that precedes a call's reply.
func interim(f Frame) bool {
	switch f.(type) {
	case *SessionPending, *SessionBacklog:
		return true
	}
	return false
}

// Approve lets the pending knock of agent in; it returns once the joiner
// stored the keys and the backlog.
func (c *Client) Approve(ctx context.Context, agent string) (WirePrivate, error) {
	r, err := expect[*PrivateReply](c.call(ctx, func(req string) Frame { return &SessionApproveRequest{Req: req, Agent: agent} }))
	if err != nil {
		return WirePrivate{}, err
	}
	return r.Channel, nil
}

// Deny refuses the pending knock of agent.
func (c *Client) Deny(ctx context.Context, agent string) error {
	_, err := expect[*OK](c.call(ctx, func(req string) Frame { return &SessionDenyRequest{Req: req, Agent: agent} }))
	return err
}

// CloseSession closes a session the node hosts ("" = its only one) and
// returns its id.
func (c *Client) CloseSession(ctx context.Context, channel string) (string, error) {
	r, err := expect[*SessionCloseReply](c.call(ctx, func(req string) Frame { return &SessionCloseRequest{Req: req, Channel: channel} }))
	if err != nil {
		return "", err
	}
	return r.Channel, nil
}

// Knocks lists the knocks waiting for the node's decision.
func (c *Client) Knocks(ctx context.Context) ([]WireKnock, error) {
	r, err := expect[*KnocksReply](c.call(ctx, func(req string) Frame { return &KnocksRequest{Req: req} }))
	if err != nil {
		return nil, err
	}
	return r.Knocks, nil
}
