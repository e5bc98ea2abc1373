package wsgateway

import (
	"context"
	"encoding/binary"
)

// Frame types of remote mode.
const (
	// TypeSeq asks (and answers) which seq the client must put in its next
	// envelope on a channel.
	TypeSeq = "seq"
)

// Error codes of remote mode (see also the Code* constants in frames.go).
const (
	CodeSeqGap      = "seq_gap"      // publish: seq is not the author's next; Next says which is
	CodeAuthTimeout = "auth_timeout" // no successful auth within AuthTimeout (then close 4001)
	CodeDisplaced   = "displaced"    // another connection authenticated as the same identity (then close 4009)
)

// Close codes of remote mode.
const (
	// CloseUnauthorized: authentication failed or timed out. Fix the key,
	// the secret or the clock before reconnecting.
	CloseUnauthorized = 4001
	// CloseDisplaced: a newer connection authenticated with the same
	// identity. The client must NOT reconnect automatically: that would
	// make two copies of one client displace each other forever.
	CloseDisplaced = 4009
)

// authDomain prefixes the bytes a client signs to authenticate, so an auth
// signature can never be replayed as an envelope signature or vice versa.
const authDomain = "confab/gateway-auth/v1"

// AuthBytes is what a remote client signs with its Ed25519 key to
// authenticate: the domain "confab/gateway-auth/v1", the welcome nonce, the
// gateway's peer id (welcome "node") and the client's peer id, each as a
// 4-byte big-endian length followed by its bytes. Binding the gateway's id
// makes a signature useless on another gateway; the nonce is fresh per
// connection and accepted once.
func AuthBytes(nonce []byte, gateway, client string) []byte {
	b := make([]byte, 0, 16+len(authDomain)+len(nonce)+len(gateway)+len(client))
	for _, f := range [][]byte{[]byte(authDomain), nonce, []byte(gateway), []byte(client)} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// SeqRequest asks for the seq the next envelope of Peer (default: the
// authenticated client) on Channel must carry. Reply: SeqReply.
type SeqRequest struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Peer    string `json:"peer,omitempty"`
}

// SeqReply answers SeqRequest: Next is the seq to use (1 for an author the
// node has never stored on Channel).
type SeqReply struct {
	Req     string `json:"req"`
	Channel string `json:"channel"`
	Peer    string `json:"peer"`
	Next    uint64 `json:"next"`
}

func (*SeqRequest) Type() string { return TypeSeq }
func (*SeqReply) Type() string   { return TypeSeq }

// SeqBackend is implemented by Backends that can tell a thin client the
// next sequence number of an author on a channel. With it the server
// answers "seq" requests and adds Next to seq_gap errors; without it "seq"
// is answered with unsupported.
type SeqBackend interface {
	NextSeq(ctx context.Context, channel, author string) (uint64, error)
}

func validateSeq(f *SeqRequest) *Error {
	if f.Peer != "" && len(f.Peer) > 64 {
		return errorf(CodeBadFrame, "seq: peer too long")
	}
	return first(needReq(f.Req), needChannel(f.Channel))
}
