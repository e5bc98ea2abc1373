package wsgateway

import (
	"time"

	"github.com/confabhq/confab/mesh"
)

// ProtocolVersion is the gateway protocol version carried in the welcome
// frame. A server bumps it only for changes an old client cannot ignore;
// new optional fields and new frame types do not bump it.
const ProtocolVersion = 1

// Mode says how a connection is authenticated and which frames it may use.
type Mode string

const (
	// ModeLocal: the connection came through a channel the operating system
	// already authenticated (a 0600 unix socket in the agent's home). It acts
	// as the node: "send" asks the node to sign.
	ModeLocal Mode = "local"
	// ModeRemote: a thin client holding its own Ed25519 key authenticates
	// with an "auth" frame and may only "publish" envelopes it signed itself.
	ModeRemote Mode = "remote"
)

// Frame type names, the "type" field of every frame.
const (
	// client → server
	TypeJoin        = "join"
	TypeLeave       = "leave"
	TypeSend        = "send"
	TypePublish     = "publish"
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypeHistory     = "history" // request and reply share the name
	TypeWho         = "who"     // request and reply share the name
	TypeInfo        = "info"    // request and reply share the name
	TypeAuth        = "auth"
	TypePing        = "ping"

	// server → client
	TypeWelcome = "welcome"
	TypeOK      = "ok"
	TypeAck     = "ack"
	TypeEvent   = "event"
	TypeLive    = "live"
	TypeError   = "error"
	TypePong    = "pong"
)

// Error codes carried in error frames (ErrorFrame.Code, Error.Code).
const (
	CodeBadFrame          = "bad_frame"          // unparseable JSON, missing or out-of-range field, binary message
	CodeUnknownType       = "unknown_type"       // "type" names no frame this server accepts
	CodeTooLarge          = "too_large"          // frame over MaxFrame (then close 1009), or content over the envelope limit
	CodeBadChannel        = "bad_channel"        // channel name malformed
	CodeNotJoined         = "not_joined"         // the node has not joined that channel
	CodeUnknownAgent      = "unknown_agent"      // "@agent" resolves to nobody
	CodeBadSignature      = "bad_signature"      // a published envelope failed Verify
	CodeRateLimited       = "rate_limited"       // the node's per-author rate limit
	CodeBadCursor         = "bad_cursor"         // a cursor the node never issued
	CodeUnauthorized      = "unauthorized"       // remote mode: not authenticated, or envelope not the client's
	CodeUnsupported       = "unsupported"        // frame valid but not in this mode (send in remote, auth in local)
	CodeAlreadySubscribed = "already_subscribed" // one subscription per connection
	CodeResume            = "resume"             // subscription overflowed; reconnect with since=Cursor (then close 4008)
	CodePolicy            = "policy"             // too many bad frames in a row (then close 1008)
	CodeClosed            = "closed"             // the node is shutting down
	CodeStorageFull       = "storage_full"       // the node's disk is full: nothing was stored; retry later
	CodeInternal          = "internal"           // anything else; details are logged on the server
)

// WebSocket close codes the server uses besides the standard 1000/1001.
const (
	CloseResume     = 4008 // slow consumer: resume with since = the error frame's cursor
	ClosePolicy     = 1008 // policy violation: too many bad frames in a row
	CloseTooLarge   = 1009 // message too big: a frame over MaxFrame
	CloseGoingAway  = 1001 // server closing
	CloseNormal     = 1000
	closeTextResume = "resume"
)

// Limits of frames, checked by DecodeFrame and DecodeReply.
const (
	MaxReqLen        = 64   // bytes of a "req" id
	MaxCursorLen     = 64   // bytes of a cursor
	MaxSubChannels   = 64   // channels in one subscribe
	DefaultHistory   = 50   // history limit when the request gives 0
	MaxHistoryLimit  = 1000 // larger history limits are clamped to this
	maxDecodeLen     = 16 << 20
	maxNonceLen      = 64
	maxAuthSigLen    = 128
	maxSecretLen     = 1024
	maxListItems     = 4096 // peers, caps, addrs, records in a reply
	maxErrMessageLen = 1024
)

// Frame is one JSON object on the wire. Type returns its "type" field.
type Frame interface{ Type() string }

// Client → server frames.

// Join asks the node to join a channel. Reply: OK.
type Join struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
}

// Leave asks the node to leave a channel. Reply: OK.
type Leave struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
}

// Send asks the node to sign and store a message (local mode only). Reply:
// Ack, after the node stored it durably.
type Send struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Kind    string `json:"kind,omitempty"` // "" means "msg"
	Content string `json:"content"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// Publish hands the node an envelope the client signed itself. Reply: Ack.
type Publish struct {
	Req      string         `json:"req"`
	Envelope *mesh.Envelope `json:"envelope"`
}

// Subscribe starts the connection's one subscription. Reply: OK, then Event
// frames with Replay true for stored records after Since (none if Since is
// empty), then Live, then live Event frames.
type Subscribe struct {
	Req      string   `json:"req"`
	Channels []string `json:"channels,omitempty"` // empty: every channel the node has joined
	Since    string   `json:"since,omitempty"`
}

// Unsubscribe ends the connection's subscription. Reply: OK, after which no
// Event frame of it follows.
type Unsubscribe struct {
	Req string `json:"req"`
}

// HistoryRequest asks for the Limit newest records before the cursor Before
// ("" = the newest). Reply: HistoryReply.
type HistoryRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Before  string `json:"before,omitempty"`
	Limit   int    `json:"limit,omitempty"` // 0 means DefaultHistory; clamped to MaxHistoryLimit
}

// WhoRequest asks for the peers present in Channel ("" = every known peer).
// Reply: WhoReply.
type WhoRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel,omitempty"`
}

// InfoRequest asks for the node's identity and addresses. Reply: InfoReply.
type InfoRequest struct {
	Req string `json:"req"`
}

// Auth authenticates a remote-mode connection: Sig is Peer's Ed25519
// signature over AuthBytes(welcome nonce, gateway node id, Peer). Secret is
// the gateway's join secret, if it has one. A local-mode server answers it
// with CodeUnsupported.
type Auth struct {
	Req    string `json:"req"`
	Peer   string `json:"peer"`
	Sig    []byte `json:"sig"`
	Secret string `json:"secret,omitempty"`
}

// Ping asks for a Pong carrying the same req. WebSocket pings already keep
// the connection alive; this is for clients that cannot send those.
type Ping struct {
	Req string `json:"req,omitempty"`
}

// Server → client frames.

// Welcome is the first frame the server sends on every connection.
type Welcome struct {
	V     int    `json:"v"`
	Node  string `json:"node"`
	Name  string `json:"name"`
	Mode  Mode   `json:"mode"`
	Nonce []byte `json:"nonce"` // 32 random bytes (base64 in JSON), signed by Auth in remote mode
}

// OK is the reply to join, leave, subscribe and unsubscribe.
type OK struct {
	Req string `json:"req"`
}

// Ack is the reply to send and publish: the envelope is stored.
type Ack struct {
	Req    string `json:"req"`
	ID     string `json:"id"`
	Seq    uint64 `json:"seq"`
	Cursor string `json:"cursor"`
}

// Event carries one record of the connection's subscription; Replay marks
// stored records sent before the subscription went live. It is also what
// Client.Subscribe delivers.
type Event struct {
	Record mesh.Record `json:"record"`
	Replay bool        `json:"replay"`
	Sealed string      `json:"sealed,omitempty"` // a private record's ciphertext content when Record shows it decrypted (frames_private.go)
}

// Live marks the end of a subscription's replay: events after it are live.
type Live struct {
	Req string `json:"req"`
}

// HistoryReply lists records oldest first; More says older ones remain.
type HistoryReply struct {
	Req     string            `json:"req"`
	Records []mesh.Record     `json:"records"`
	More    bool              `json:"more"`
	Sealed  map[string]string `json:"sealed,omitempty"` // envelope id -> ciphertext content of records shown decrypted (frames_private.go)
}

// WhoReply lists peers.
type WhoReply struct {
	Req   string     `json:"req"`
	Peers []WirePeer `json:"peers"`
}

// InfoReply describes the node.
type InfoReply struct {
	Req  string   `json:"req"`
	Info WireInfo `json:"info"`
}

// ErrorFrame reports a failed request (Req set) or a connection-level
// problem (Req empty). Cursor is set with CodeResume.
type ErrorFrame struct {
	Req     string `json:"req,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Cursor  string `json:"cursor,omitempty"`
	Next    uint64 `json:"next,omitempty"` // with CodeSeqGap: the seq the author must use next
}

// Pong answers Ping.
type Pong struct {
	Req string `json:"req,omitempty"`
}

// WirePeer is the wire form of mesh.Peer. LastSeen is unix milliseconds.
type WirePeer struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Status   string   `json:"status,omitempty"`
	Caps     []string `json:"caps,omitempty"`
	Channels []string `json:"channels,omitempty"`
	LastSeen int64    `json:"last_seen,omitempty"`
}

// WireInfo is the wire form of mesh.Info.
type WireInfo struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Caps     []string `json:"caps,omitempty"`
	Addrs    []string `json:"addrs,omitempty"`
	Channels []string `json:"channels,omitempty"`
}

func (*Join) Type() string           { return TypeJoin }
func (*Leave) Type() string          { return TypeLeave }
func (*Send) Type() string           { return TypeSend }
func (*Publish) Type() string        { return TypePublish }
func (*Subscribe) Type() string      { return TypeSubscribe }
func (*Unsubscribe) Type() string    { return TypeUnsubscribe }
func (*HistoryRequest) Type() string { return TypeHistory }
func (*WhoRequest) Type() string     { return TypeWho }
func (*InfoRequest) Type() string    { return TypeInfo }
func (*Auth) Type() string           { return TypeAuth }
func (*Ping) Type() string           { return TypePing }
func (*Welcome) Type() string        { return TypeWelcome }
func (*OK) Type() string             { return TypeOK }
func (*Ack) Type() string            { return TypeAck }
func (*Event) Type() string          { return TypeEvent }
func (*Live) Type() string           { return TypeLive }
func (*HistoryReply) Type() string   { return TypeHistory }
func (*WhoReply) Type() string       { return TypeWho }
func (*InfoReply) Type() string      { return TypeInfo }
func (*ErrorFrame) Type() string     { return TypeError }
func (*Pong) Type() string           { return TypePong }

// PeerToWire converts a mesh.Peer to its wire form.
func PeerToWire(p mesh.Peer) WirePeer {
	w := WirePeer{ID: p.ID, Name: p.Name, Status: p.Status, Caps: p.Caps, Channels: p.Channels}
	if !p.LastSeen.IsZero() {
		w.LastSeen = p.LastSeen.UnixMilli()
	}
	return w
}

// Peer converts the wire form back to a mesh.Peer.
func (w WirePeer) Peer() mesh.Peer {
	p := mesh.Peer{ID: w.ID, Name: w.Name, Status: w.Status, Caps: w.Caps, Channels: w.Channels}
	if w.LastSeen != 0 {
		p.LastSeen = time.UnixMilli(w.LastSeen)
	}
	return p
}

// InfoToWire converts a mesh.Info to its wire form.
func InfoToWire(i mesh.Info) WireInfo {
	return WireInfo{ID: i.ID, Name: i.Name, Caps: i.Caps, Addrs: i.Addrs, Channels: i.Channels}
}

// Info converts the wire form back to a mesh.Info.
func (w WireInfo) Info() mesh.Info {
	return mesh.Info{ID: w.ID, Name: w.Name, Caps: w.Caps, Addrs: w.Addrs, Channels: w.Channels}
}
