package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// verifyOpts selects ZIP-215 verification (docs/protocol.md, "Signature"):
// the cofactored equation, small-order and non-canonical A and R accepted,
// s < L required. Under these rules a signature passes single verification
// exactly when it passes batch verification, so whether an envelope is valid
// never depends on which path or how many neighbours it was checked with.
var verifyOpts = &ed25519.Options{Verify: ed25519.VerifyOptionsZIP_215}

// author is a decoded peer id: its libp2p key and the expanded form of the
// Ed25519 point (~1.5 KiB) that makes every later verification cheaper
// (about 35 instead of 41 µs single, 16 instead of 22 µs per signature in a
// batch of 64; expanding costs ~6 µs once).
type author struct {
	pub crypto.PubKey
	exp *ed25519.ExpandedPublicKey
}

// authors caches decodeAuthor's successes. A peer id always decodes to the
// same key, and decoding and expanding it costs ~10 µs, paid on every hop
// for every envelope otherwise. Two generations bound it: lookups read the
// current one, then the previous one (promoting the hit); when the current
// one holds maxAuthorKeys entries it becomes the previous one and a fresh
// one starts, so authors still in use survive the turn and at most
// 2*maxAuthorKeys are held (~13 MiB).
var authors struct {
	cur, prev atomic.Pointer[authorGen]
	turn      sync.Mutex // serialises turning the generations
}

const maxAuthorKeys = 4096

type authorGen struct {
	m sync.Map // peer id string -> *author
	n atomic.Int64
}

func init() {
	authors.cur.Store(new(authorGen))
	authors.prev.Store(new(authorGen))
}

func lookupAuthor(from string) (*author, error) {
	cur := authors.cur.Load()
	if v, ok := cur.m.Load(from); ok {
		return v.(*author), nil
	}
	a, ok := (*author)(nil), false
	if v, hit := authors.prev.Load().m.Load(from); hit {
		a, ok = v.(*author), true
	}
	if !ok {
		var err error
		if a, err = decodeAuthor(from); err != nil {
			return nil, err
		}
	}
	if _, loaded := cur.m.LoadOrStore(from, a); !loaded && cur.n.Add(1) >= maxAuthorKeys {
		authors.turn.Lock()
		if authors.cur.Load() == cur {
			authors.prev.Store(cur)
			authors.cur.Store(new(authorGen))
		}
		authors.turn.Unlock()
	}
	return a, nil
}

func decodeAuthor(from string) (*author, error) {
	if len(from) > 64 {
		return nil, fmt.Errorf("%w: from", ErrMalformed)
	}
	pid, err := peer.Decode(from)
	if err != nil {
		return nil, fmt.Errorf("%w: from: %v", ErrMalformed, err)
	}
	pub, err := pid.ExtractPublicKey()
	if err != nil || pub.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: from is not an ed25519 peer id", ErrMalformed)
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: from is not an ed25519 peer id", ErrMalformed)
	}
	exp, err := ed25519.NewExpandedPublicKey(raw)
	if err != nil { // not a point on the curve: no signature can verify
		return nil, fmt.Errorf("%w: from: %v", ErrMalformed, err)
	}
	return &author{pub: pub, exp: exp}, nil
}

// prepare runs every check of Verify but the signature equation and returns
// the signed bytes and the author.
func (e *Envelope) prepare() ([]byte, *author, error) {
	if err := e.Validate(); err != nil {
		return nil, nil, err
	}
	a, err := lookupAuthor(e.From)
	if err != nil {
		return nil, nil, err
	}
	if len(e.Sig) != ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%w: length %d", ErrBadSig, len(e.Sig))
	}
	b := e.SigningBytes()
	sum := sha256.Sum256(b)
	var id [2 * sha256.Size]byte
	hex.Encode(id[:], sum[:])
	if e.ID != string(id[:]) {
		return nil, nil, fmt.Errorf("%w: id does not match content", ErrBadSig)
	}
	return b, a, nil
}

// Verify validates the envelope, checks that ID is the hash of its signed
// bytes and that Sig is the author's signature over them (ZIP-215 rules; see
// verifyOpts). Every hop calls it, or VerifyBatch, before it forwards,
// stores or shows an envelope.
func (e *Envelope) Verify() error {
	b, a, err := e.prepare()
	if err != nil {
		return err
	}
	if !ed25519.VerifyExpandedWithOptions(a.exp, b, e.Sig, verifyOpts) {
		return ErrBadSig
	}
	return nil
}

// signer signs the node's own envelopes as Envelope.Sign does, with what Sign
// derives on every call computed once: the author's peer id string (~3 µs
// per call) and the key in curve25519-voi's form, whose Sign uses the public
// half it holds where crypto/ed25519's derives it again with a scalar
// multiplication (~15 instead of ~21 µs of CPU per signature). Ed25519
// signatures are deterministic (RFC 8032), so the bytes are the ones Sign
// would produce. It is on the latency path of every send: the channel loop
// signs before it stores and publishes. Safe for concurrent use.
type signer struct {
	from string
	key  ed25519.PrivateKey
}

func newSigner(k crypto.PrivKey) (*signer, error) {
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("mesh: sign: key type %v is not ed25519", k.Type())
	}
	pid, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("mesh: sign: %w", err)
	}
	raw, err := k.Raw() // seed ‖ public key, the layout both packages use
	if err != nil || len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("mesh: sign: ed25519 key of %d bytes", len(raw))
	}
	return &signer{from: pid.String(), key: ed25519.PrivateKey(raw)}, nil
}

// sign fills From, then ID and Sig, as Envelope.Sign does.
func (s *signer) sign(e *Envelope) error {
	e.From = s.from
	if err := e.Validate(); err != nil {
		return fmt.Errorf("mesh: sign: %w", err)
	}
	b := e.SigningBytes()
	e.Sig = ed25519.Sign(s.key, b)
	sum := sha256.Sum256(b)
	e.ID = hex.EncodeToString(sum[:])
	return nil
}

// batchVerifiers recycles batch verifiers: their entries (~0.5 KiB each) are
// most of a batch's allocation.
var batchVerifiers = sync.Pool{New: func() any { return ed25519.NewBatchVerifier() }}

// VerifyBatch verifies envs as Verify verifies each one, and accepts and
// rejects exactly the envelopes Verify would. The signatures of those that
// pass every other check are verified together (about 16 µs each in a batch
// of 64, against 35 µs alone); when the batch fails, each is verified alone
// to find the bad ones. It returns nil if every envelope is valid, otherwise
// a slice with one entry per envelope: nil for a valid one, Verify's error
// for an invalid one. Safe for concurrent use.
func VerifyBatch(envs []*Envelope) []error {
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(envs))
		}
		errs[i] = err
	}
	if len(envs) == 1 { // a batch of one costs more than a single check
		if err := envs[0].Verify(); err != nil {
			fail(0, err)
		}
		return errs
	}
	bv := batchVerifiers.Get().(*ed25519.BatchVerifier)
	defer batchVerifiers.Put(bv)
	defer bv.Reset()
	idx := make([]int, 0, len(envs))
	for i, e := range envs {
		b, a, err := e.prepare()
		if err != nil {
			fail(i, err)
			continue
		}
		bv.AddExpandedWithOptions(a.exp, b, e.Sig, verifyOpts)
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return errs
	}
	// Verify checks the whole batch, and only if it fails each entry alone
	// (reusing the decoded points and hashes).
	if ok, valid := bv.Verify(nil); !ok {
		for k, i := range idx {
			if !valid[k] {
				fail(i, ErrBadSig)
			}
		}
	}
	return errs
}
