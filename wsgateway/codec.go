package wsgateway

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/confabhq/confab/mesh"
)

// Error is a protocol error: the content of an error frame, or a local
// check that failed the same way. Match it with errors.As.
type Error struct {
	Code    string // one of the Code* constants
	Message string
	Cursor  string // with CodeResume: resume the subscription with since = Cursor
	Next    uint64 // with CodeSeqGap: the seq the author must use next (0 if unknown)
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "wsgateway: " + e.Code
	}
	return "wsgateway: " + e.Code + ": " + e.Message
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// EncodeFrame returns the JSON form of f with "type" as its first member.
func EncodeFrame(f Frame) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("wsgateway: encode %s: %w", f.Type(), err)
	}
	body := bytes.TrimRight(buf.Bytes(), "\n")
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("wsgateway: encode %s: not an object", f.Type())
	}
	out := make([]byte, 0, len(body)+len(f.Type())+12)
	out = append(out, `{"type":"`...)
	out = append(out, f.Type()...)
	out = append(out, '"')
	if len(body) > 2 {
		out = append(out, ',')
	}
	return append(out, body[1:]...), nil
}

type header struct {
	Type string `json:"type"`
	Req  string `json:"req"`
}

// DecodeFrame decodes and validates one client → server frame, the
// untrusted input of a Server. It applies defaults (send kind "msg",
// history limit DefaultHistory, clamped to MaxHistoryLimit). A failure is an
// *Error with CodeBadFrame, CodeUnknownType, CodeBadChannel or CodeTooLarge.
func DecodeFrame(b []byte) (Frame, error) {
	f, _, err := decodeRequest(b)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// decodeRequest is DecodeFrame that also returns the frame's req, when it
// could be read, so that an error reply can carry it.
func decodeRequest(b []byte) (Frame, string, *Error) {
	h, err := decodeHeader(b)
	if err != nil {
		return nil, h.Req, err
	}
	var f Frame
	switch h.Type {
	case TypeJoin:
		f = &Join{}
	case TypeLeave:
		f = &Leave{}
	case TypeSend:
		f = &Send{}
	case TypePublish:
		f = &Publish{}
	case TypeSubscribe:
		f = &Subscribe{}
	case TypeUnsubscribe:
		f = &Unsubscribe{}
	case TypeHistory:
		f = &HistoryRequest{}
	case TypeWho:
		f = &WhoRequest{}
	case TypeInfo:
		f = &InfoRequest{}
	case TypeAuth:
		f = &Auth{}
	case TypePing:
		f = &Ping{}
	case TypeSeq:
		f = &SeqRequest{}
	case TypeSearch:
		f = &SearchRequest{}
	case TypeHandoff:
		f = &HandoffRequest{}
	case TypeBundles:
		f = &BundlesRequest{}
	case TypeApply:
		f = &ApplyRequest{}
	default:
		if f = newPrivateRequest(h.Type); f == nil { // frames_private.go
			f = newAgentRequest(h.Type) // frames_direct.go
		}
		if f == nil {
			return nil, h.Req, errorf(CodeUnknownType, "unknown frame type %q", trunc(h.Type))
		}
	}
	if err := json.Unmarshal(b, f); err != nil {
		return nil, h.Req, errorf(CodeBadFrame, "%s: %v", h.Type, err)
	}
	if err := validateRequest(f); err != nil {
		return nil, h.Req, err
	}
	return f, h.Req, nil
}

func decodeHeader(b []byte) (header, *Error) {
	var h header
	if len(b) > maxDecodeLen {
		return h, errorf(CodeTooLarge, "frame is %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return header{}, errorf(CodeBadFrame, "not a JSON object with string type and req: %v", err)
	}
	if len(h.Req) > MaxReqLen {
		h.Req = ""
		return h, errorf(CodeBadFrame, "req longer than %d bytes", MaxReqLen)
	}
	if h.Type == "" {
		return h, errorf(CodeBadFrame, "missing type")
	}
	return h, nil
}

func validateRequest(f Frame) *Error {
	switch f := f.(type) {
	case *Join:
		return first(needReq(f.Req), needChannel(f.Channel))
	case *Leave:
		return first(needReq(f.Req), needChannel(f.Channel))
	case *Send:
		if e := checkMessage(&f.Kind, f.Content, f.ReplyTo); e != nil {
			return e
		}
		return first(needReq(f.Req), needChannel(f.Channel))
	case *Publish:
		if f.Envelope == nil {
			return first(needReq(f.Req), errorf(CodeBadFrame, "publish: missing envelope"))
		}
		return needReq(f.Req)
	case *Subscribe:
		if len(f.Channels) > MaxSubChannels {
			return errorf(CodeBadFrame, "subscribe: %d channels, limit %d", len(f.Channels), MaxSubChannels)
		}
		for _, ch := range f.Channels {
			if err := needChannel(ch); err != nil {
				return err
			}
		}
		if len(f.Since) > MaxCursorLen {
			return errorf(CodeBadCursor, "since longer than %d bytes", MaxCursorLen)
		}
		return needReq(f.Req)
	case *Unsubscribe:
		return needReq(f.Req)
	case *HistoryRequest:
		switch {
		case f.Limit < 0:
			return errorf(CodeBadFrame, "history: negative limit")
		case f.Limit == 0:
			f.Limit = DefaultHistory
		case f.Limit > MaxHistoryLimit:
			f.Limit = MaxHistoryLimit
		}
		if len(f.Before) > MaxCursorLen {
			return errorf(CodeBadCursor, "before longer than %d bytes", MaxCursorLen)
		}
		return first(needReq(f.Req), needChannel(f.Channel))
	case *WhoRequest:
		if f.Channel != "" {
			return first(needReq(f.Req), needChannel(f.Channel))
		}
		return needReq(f.Req)
	case *InfoRequest:
		return needReq(f.Req)
	case *Auth:
		if f.Peer == "" || len(f.Peer) > 64 || len(f.Sig) == 0 || len(f.Sig) > maxAuthSigLen || len(f.Secret) > maxSecretLen {
			return errorf(CodeBadFrame, "auth: peer and sig required")
		}
		return needReq(f.Req)
	case *Ping:
		return nil
	case *SeqRequest:
		return validateSeq(f)
	case *SearchRequest:
		return validateSearch(f)
	case *HandoffRequest:
		return validateHandoff(f)
	case *BundlesRequest:
		return validateBundles(f)
	case *ApplyRequest:
		return validateApply(f)
	}
	if err, ok := validatePrivateRequest(f); ok { // frames_private.go
		return err
	}
	if err, ok := validateAgentRequest(f); ok {
		return err
	}
	return errorf(CodeUnknownType, "not a request frame: %s", f.Type())
}

// DecodeReply decodes and validates one server → client frame, what a
// Client reads.
func DecodeReply(b []byte) (Frame, error) {
	h, herr := decodeHeader(b)
	if herr != nil {
		return nil, herr
	}
	var f Frame
	switch h.Type {
	case TypeWelcome:
		f = &Welcome{}
	case TypeOK:
		f = &OK{}
	case TypeAck:
		f = &Ack{}
	case TypeEvent:
		f = &Event{}
	case TypeLive:
		f = &Live{}
	case TypeHistory:
		f = &HistoryReply{}
	case TypeWho:
		f = &WhoReply{}
	case TypeInfo:
		f = &InfoReply{}
	case TypeError:
		f = &ErrorFrame{}
	case TypePong:
		f = &Pong{}
	case TypeSeq:
		f = &SeqReply{}
	case TypeSearch:
		f = &SearchReply{}
	case TypeHandoff:
		f = &HandoffReply{}
	case TypeBundles:
		f = &BundlesReply{}
	case TypeApply:
		f = &ApplyReply{}
	default:
		if f = newPrivateReply(h.Type); f == nil { // frames_private.go
			f = newAgentReply(h.Type) // frames_direct.go
		}
		if f == nil {
			return nil, errorf(CodeUnknownType, "unknown frame type %q", trunc(h.Type))
		}
	}
	if err := json.Unmarshal(b, f); err != nil {
		return nil, errorf(CodeBadFrame, "%s: %v", h.Type, err)
	}
	if err := validateReply(f); err != nil {
		return nil, err
	}
	return f, nil
}

func validateReply(f Frame) *Error {
	switch f := f.(type) {
	case *Welcome:
		switch {
		case f.V <= 0:
			return errorf(CodeBadFrame, "welcome: version %d", f.V)
		case f.Node == "" || len(f.Node) > 64 || len(f.Name) > mesh.MaxNameLen:
			return errorf(CodeBadFrame, "welcome: node or name")
		case f.Mode != ModeLocal && f.Mode != ModeRemote && f.Mode != ModeReadOnly:
			return errorf(CodeBadFrame, "welcome: mode %q", trunc(string(f.Mode)))
		case len(f.Nonce) > maxNonceLen:
			return errorf(CodeBadFrame, "welcome: nonce")
		}
	case *OK:
		return needReq(f.Req)
	case *Live:
		return needReq(f.Req)
	case *Ack:
		if f.ID == "" || len(f.ID) > 64 || len(f.Cursor) > MaxCursorLen {
			return errorf(CodeBadFrame, "ack: id or cursor")
		}
		return needReq(f.Req)
	case *Event:
		return validRecord(f.Record)
	case *HistoryReply:
		if len(f.Records) > maxListItems {
			return errorf(CodeBadFrame, "history: %d records", len(f.Records))
		}
		for _, r := range f.Records {
			if err := validRecord(r); err != nil {
				return err
			}
		}
		return needReq(f.Req)
	case *WhoReply:
		if len(f.Peers) > maxListItems {
			return errorf(CodeBadFrame, "who: %d peers", len(f.Peers))
		}
		return needReq(f.Req)
	case *InfoReply:
		return needReq(f.Req)
	case *ErrorFrame:
		if f.Code == "" || len(f.Code) > 64 || len(f.Cursor) > MaxCursorLen {
			return errorf(CodeBadFrame, "error: code or cursor")
		}
		if len(f.Message) > maxErrMessageLen {
			f.Message = f.Message[:maxErrMessageLen]
		}
	case *Pong:
	case *SeqReply:
		return needReq(f.Req)
	case *SearchReply:
		if len(f.Records) > maxListItems {
			return errorf(CodeBadFrame, "search: %d records", len(f.Records))
		}
		for _, r := range f.Records {
			if err := validRecord(r); err != nil {
				return err
			}
		}
		return needReq(f.Req)
	case *HandoffReply, *BundlesReply, *ApplyReply:
		return validateBundleReply(f)
	}
	if err, ok := validatePrivateReply(f); ok { // frames_private.go
		return err
	}
	if err, ok := validateAgentReply(f); ok {
		return err
	}
	return nil
}

func validRecord(r mesh.Record) *Error {
	if r.Env == nil || r.Cursor == "" || len(r.Cursor) > MaxCursorLen {
		return errorf(CodeBadFrame, "record: missing envelope or cursor")
	}
	if err := r.Env.Validate(); err != nil {
		return errorf(CodeBadFrame, "record: %v", err)
	}
	return nil
}

func needReq(req string) *Error {
	if req == "" {
		return errorf(CodeBadFrame, "missing req")
	}
	return nil
}

func needChannel(ch string) *Error {
	if ch == "" {
		return errorf(CodeBadFrame, "missing channel")
	}
	if !mesh.ValidChannel(ch) {
		return errorf(CodeBadChannel, "channel %q", trunc(ch))
	}
	return nil
}

// checkMessage bounds the fields of a message the node will sign (send and
// direct frames) and defaults its kind to "msg".
func checkMessage(kind *string, content, replyTo string) *Error {
	if *kind == "" {
		*kind = "msg"
	}
	switch {
	case len(content) > mesh.MaxContentLen:
		return errorf(CodeTooLarge, "content is %d bytes, limit %d", len(content), mesh.MaxContentLen)
	case len(*kind) > mesh.MaxKindLen:
		return errorf(CodeBadFrame, "kind longer than %d bytes", mesh.MaxKindLen)
	case len(replyTo) > 64:
		return errorf(CodeBadFrame, "reply_to longer than 64 bytes")
	}
	return nil
}

func first(errs ...*Error) *Error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
