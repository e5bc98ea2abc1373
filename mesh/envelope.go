package mesh

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// Limits of one envelope. They bound every envelope decoded from the network,
// a file or a client; docs/protocol.md lists them.
const (
	MaxChannelLen = 128
	MaxNameLen    = 64
	MaxKindLen    = 32
	MaxContentLen = 64 << 10
	// MaxEnvelopeLen bounds the binary encoding: header, fields and signature.
	MaxEnvelopeLen = MaxContentLen + 2048
)

// signDomain prefixes the signed bytes so that a signature over an envelope
// can never be replayed as a signature over anything else confab signs.
const signDomain = "confab/envelope/v1"

// Errors returned by Decode, Validate and Verify.
var (
	ErrMalformed = errors.New("malformed envelope")
	ErrTooLarge  = errors.New("envelope too large")
	ErrBadSig    = errors.New("bad signature")
)

// Envelope is one message on every path: pubsub, streams, the store, the
// gateway. Its binary form (Marshal) is the canonical signed bytes followed by
// the signature; its JSON form is for clients and is never what is signed.
type Envelope struct {
	ID      string `json:"id"`                 // hex sha256 of the signed bytes
	Channel string `json:"channel"`            // "#name", "@peerid" or a private id
	From    string `json:"from"`               // author's peer id (base58)
	Name    string `json:"name"`               // author's display name, unverified
	Seq     uint64 `json:"seq"`                // per author and channel, from 1, gap-free
	TS      int64  `json:"ts"`                 // author's clock, unix ms
	Kind    string `json:"kind"`               // "msg" for chat; see docs/protocol.md
	Content string `json:"content"`            // UTF-8 text
	ReplyTo string `json:"reply_to,omitempty"` // id of another envelope
	Sig     []byte `json:"sig"`                // ed25519 over the signed bytes
}

var (
	channelRE = regexp.MustCompile(`^(#[a-z0-9][a-z0-9._-]{0,62}|@[1-9A-HJ-NP-Za-km-z]{32,64}|~[0-9a-f]{32,64})$`)
	kindRE    = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,31}$`)
	idRE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidChannel reports whether s is a well-formed channel name: "#name"
// (lowercase letters, digits, '.', '_', '-'; at most 63 after '#'), "@peerid",
// or "~hex" for private channels and sessions.
func ValidChannel(s string) bool { return len(s) <= MaxChannelLen && channelRE.MatchString(s) }

// SigningBytes is the canonical byte string the author signs: the domain
// string, then every field as a 4-byte big-endian length and its bytes, with
// seq and ts as 8-byte big-endian integers. It never depends on JSON.
func (e *Envelope) SigningBytes() []byte {
	n := len(signDomain) + 4*7 + 16 + len(e.Channel) + len(e.From) + len(e.Name) + len(e.Kind) + len(e.Content) + len(e.ReplyTo)
	b := make([]byte, 0, n+ed25519.SignatureSize) // room for Marshal's signature
	b = appendField(b, signDomain)
	b = appendField(b, e.Channel)
	b = appendField(b, e.From)
	b = appendField(b, e.Name)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.TS))
	b = appendField(b, e.Kind)
	b = appendField(b, e.Content)
	b = appendField(b, e.ReplyTo)
	return b
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// ComputeID returns the envelope's content id: hex sha256 of its signed bytes.
func (e *Envelope) ComputeID() string {
	sum := sha256.Sum256(e.SigningBytes())
	return hex.EncodeToString(sum[:])
}

// Sign fills From from key, then ID and Sig. key must be an Ed25519 key.
// A node signing many envelopes with one key keeps a signer instead.
func (e *Envelope) Sign(key crypto.PrivKey) error {
	s, err := newSigner(key)
	if err != nil {
		return err
	}
	return s.sign(e)
}

// Validate checks the schema and limits of every field except ID and Sig.
func (e *Envelope) Validate() error {
	switch {
	case !ValidChannel(e.Channel):
		return fmt.Errorf("%w: channel %q", ErrMalformed, trunc(e.Channel))
	case len(e.Name) > MaxNameLen || !validName(e.Name):
		return fmt.Errorf("%w: name", ErrMalformed)
	case e.Seq == 0:
		return fmt.Errorf("%w: seq must start at 1", ErrMalformed)
	case e.TS <= 0:
		return fmt.Errorf("%w: ts", ErrMalformed)
	case !kindRE.MatchString(e.Kind):
		return fmt.Errorf("%w: kind %q", ErrMalformed, trunc(e.Kind))
	case len(e.Content) > MaxContentLen:
		return fmt.Errorf("%w: content is %d bytes, limit %d", ErrTooLarge, len(e.Content), MaxContentLen)
	case !utf8.ValidString(e.Content):
		return fmt.Errorf("%w: content is not UTF-8", ErrMalformed)
	case e.ReplyTo != "" && !idRE.MatchString(e.ReplyTo):
		return fmt.Errorf("%w: reply_to", ErrMalformed)
	}
	if _, err := AuthorKey(e.From); err != nil {
		return err
	}
	return nil
}

// AuthorKey returns the Ed25519 public key embedded in a peer id. Decoded
// keys are cached (bounded; see lookupAuthor).
func AuthorKey(from string) (crypto.PubKey, error) {
	a, err := lookupAuthor(from)
	if err != nil {
		return nil, err
	}
	return a.pub, nil
}

// Marshal returns the binary wire form: SigningBytes followed by the 64-byte
// signature. The envelope must be signed.
func (e *Envelope) Marshal() []byte {
	b := e.SigningBytes()
	return append(b, e.Sig...)
}

// Unmarshal decodes the binary wire form and recomputes ID. It checks
// structure and limits only; callers must still call Verify.
func Unmarshal(b []byte) (*Envelope, error) {
	if len(b) > MaxEnvelopeLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	if len(b) < ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: short", ErrMalformed)
	}
	body, sig := b[:len(b)-ed25519.SignatureSize], b[len(b)-ed25519.SignatureSize:]
	r := reader{b: body}
	if d := r.field(len(signDomain)); d != signDomain {
		return nil, fmt.Errorf("%w: domain", ErrMalformed)
	}
	e := &Envelope{}
	e.Channel = r.field(MaxChannelLen)
	e.From = r.field(64)
	e.Name = r.field(MaxNameLen)
	e.Seq = r.u64()
	e.TS = int64(r.u64())
	e.Kind = r.field(MaxKindLen)
	e.Content = r.field(MaxContentLen)
	e.ReplyTo = r.field(64)
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	e.Sig = append([]byte(nil), sig...)
	sum := sha256.Sum256(body)
	e.ID = hex.EncodeToString(sum[:])
	return e, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) field(limit int) string {
	if r.err != nil {
		return ""
	}
	if len(r.b) < 4 {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return ""
	}
	n := binary.BigEndian.Uint32(r.b)
	if int64(n) > int64(limit) || int64(n) > int64(len(r.b)-4) {
		r.err = fmt.Errorf("%w: field length %d", ErrMalformed, n)
		return ""
	}
	s := string(r.b[4 : 4+n])
	r.b = r.b[4+n:]
	return s
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func validName(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
