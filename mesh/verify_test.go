package mesh

import (
	"bytes"
	stded25519 "crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pidOf returns the peer id of a raw 32-byte Ed25519 public key, which need
// not be a key anyone holds (small-order points).
func pidOf(t testing.TB, raw []byte) string {
	t.Helper()
	pub, err := crypto.UnmarshalEd25519PublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pid.String()
}

// verdicts is Verify's and VerifyBatch's answer for each envelope: nil
// errors become "", others their text.
func verdicts(envs []*Envelope) (single, batch []string) {
	errs := VerifyBatch(envs)
	for i, e := range envs {
		s, b := "", ""
		if err := e.Verify(); err != nil {
			s = err.Error()
		}
		if errs != nil && errs[i] != nil {
			b = errs[i].Error()
		}
		single, batch = append(single, s), append(batch, b)
	}
	return single, batch
}

// RFC 8032 section 7.1, tests 1-3 and SHA(abc): each secret key signs the
// message to exactly the signature given, and the signature verifies under
// the ZIP-215 rules alone and in a batch; with one bit flipped it fails.
func TestRFC8032Vectors(t *testing.T) {
	abc := sha512Of("abc")
	vectors := []struct{ name, secret, public, msg, sig string }{
		{"test1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
			"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
			"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
		{"test2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
			"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
			"92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
		{"test3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
			"fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
			"6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
		{"sha(abc)", "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
			"ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf", hex.EncodeToString(abc),
			"dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"},
	}
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			priv := ed25519.NewKeyFromSeed(unhex(t, v.secret))
			pub, msg, sig := unhex(t, v.public), unhex(t, v.msg), unhex(t, v.sig)
			if got := priv.Public().(ed25519.PublicKey); !bytes.Equal(got, pub) {
				t.Fatalf("public key = %x, want %s", got, v.public)
			}
			if got := ed25519.Sign(priv, msg); !bytes.Equal(got, sig) {
				t.Fatalf("signature = %x, want %s", got, v.sig)
			}
			exp, err := ed25519.NewExpandedPublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			bad := bytes.Clone(sig)
			bad[5] ^= 0x10
			for _, tc := range []struct {
				sig  []byte
				want bool
			}{{sig, true}, {bad, false}} {
				if got := ed25519.VerifyExpandedWithOptions(exp, msg, tc.sig, verifyOpts); got != tc.want {
					t.Errorf("single verify = %v, want %v", got, tc.want)
				}
				bv := ed25519.NewBatchVerifier()
				for range 3 {
					bv.AddExpandedWithOptions(exp, msg, tc.sig, verifyOpts)
				}
				if got, _ := bv.Verify(nil); got != tc.want {
					t.Errorf("batch verify = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func sha512Of(s string) []byte {
	sum := sha512.Sum512([]byte(s))
	return sum[:]
}

// smallOrder lists the encodings of the eight small-order points of
// Curve25519's Edwards form, canonical and not (ZIP-215's test set): the
// identity, the point of order 2, two of order 4 and four of order 8, with
// their non-canonical twins (sign bit set on an x of 0, y >= p).
var smallOrder = []string{
	"0100000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000080",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0000000000000000000000000000000000000000000000000000000000000080",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
}

// unsigned returns an envelope from `from` with a correct id and sig as its
// signature.
func unsigned(from string, seq uint64, sig []byte) *Envelope {
	e := &Envelope{Channel: "#general", From: from, Name: "x", Seq: seq, TS: 1_760_000_000_000, Kind: "msg", Content: "zip215"}
	e.ID = e.ComputeID()
	e.Sig = sig
	return e
}

// ZIP-215: with a small-order (or non-canonically encoded) A and R and s = 0
// the cofactored equation holds for any message, so all 196 pairs are valid
// envelopes, alone and in a batch with honest ones. The standard library's
// cofactorless check rejects some of them (the reason for one rule).
func TestZIP215SmallOrder(t *testing.T) {
	k := newKey(t)
	var envs []*Envelope
	stdRejects := 0
	for _, a := range smallOrder {
		from := pidOf(t, unhex(t, a))
		for _, r := range smallOrder {
			sig := append(unhex(t, r), make([]byte, 32)...)
			e := unsigned(from, uint64(len(envs)+1), sig)
			if err := e.Verify(); err != nil {
				t.Errorf("A=%s R=%s: Verify() = %v, want nil", a[:8], r[:8], err)
			}
			if !stded25519.Verify(unhex(t, a), e.SigningBytes(), sig) {
				stdRejects++
			}
			envs = append(envs, e, signed(t, k, func(e *Envelope) { e.Seq = uint64(len(envs) + 1) }))
		}
	}
	t.Logf("crypto/ed25519 rejects %d of %d", stdRejects, len(smallOrder)*len(smallOrder))
	for _, n := range []int{2, 7, 64, len(envs)} {
		if errs := VerifyBatch(envs[:n]); errs != nil {
			t.Errorf("VerifyBatch(%d with small-order keys) = %v, want nil", n, errs)
		}
	}
}

// order is L, the order of the prime-order subgroup.
var order, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// addL returns sig with s replaced by s+L (still 32 bytes): the same point
// equation, but not a canonical s, which every rule rejects (malleability).
func addL(sig []byte) []byte {
	le := func(b []byte) []byte { c := bytes.Clone(b); slicesReverse(c); return c }
	s := new(big.Int).SetBytes(le(sig[32:]))
	s.Add(s, order)
	be := s.FillBytes(make([]byte, 32))
	return append(bytes.Clone(sig[:32]), le(be)...)
}

func slicesReverse(b []byte) {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
}

func TestVerifyRejectsNonCanonicalS(t *testing.T) {
	k := newKey(t)
	e := signed(t, k, nil)
	e.Sig = addL(e.Sig)
	if err := e.Verify(); !errors.Is(err, ErrBadSig) {
		t.Fatalf("Verify(s+L) = %v, want ErrBadSig", err)
	}
	// s = 0 with small-order R but a real (large-order) A is no signature.
	z := signed(t, k, nil)
	z.Sig = append(unhex(t, smallOrder[0]), make([]byte, 32)...)
	envs := []*Envelope{signed(t, k, nil), e, signed(t, k, nil), z}
	errs := VerifyBatch(envs)
	want := []error{nil, ErrBadSig, nil, ErrBadSig}
	if len(errs) != len(want) {
		t.Fatalf("VerifyBatch = %v, want %v", errs, want)
	}
	for i := range want {
		if !errors.Is(errs[i], want[i]) || (want[i] == nil) != (errs[i] == nil) {
			t.Errorf("VerifyBatch[%d] = %v, want %v", i, errs[i], want[i])
		}
	}
}

// Nobody but the author can turn a valid signature into another: R moved
// by any small-order point, or R re-encoded with its sign bit flipped,
// changes k = H(R, A, m), so for an honest key the cofactored equation
// fails (docs/protocol.md relies on this); s+L is caught by s < L.
func TestSignatureNotMalleable(t *testing.T) {
	k := newKey(t)
	e := signed(t, k, nil)
	var r curve.EdwardsPoint
	var rc curve.CompressedEdwardsY
	if _, err := rc.SetBytes(e.Sig[:32]); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetCompressedY(&rc); err != nil {
		t.Fatal(err)
	}
	var mauled []*Envelope
	for _, so := range smallOrder {
		var tc curve.CompressedEdwardsY
		var tp, sum curve.EdwardsPoint
		if _, err := tc.SetBytes(unhex(t, so)); err != nil {
			t.Fatal(err)
		}
		if _, err := tp.SetCompressedY(&tc); err != nil {
			t.Fatal(err)
		}
		var enc curve.CompressedEdwardsY
		enc.SetEdwardsPoint(sum.Add(&r, &tp))
		if bytes.Equal(enc[:], e.Sig[:32]) {
			continue // the identity (and its twins): the same signature
		}
		c := *e
		c.Sig = append(bytes.Clone(enc[:]), e.Sig[32:]...)
		mauled = append(mauled, &c)
	}
	flip := *e
	flip.Sig = bytes.Clone(e.Sig)
	flip.Sig[31] ^= 0x80
	mauled = append(mauled, &flip)
	if len(mauled) < 7 {
		t.Fatalf("only %d mauled signatures", len(mauled))
	}
	for i, m := range mauled {
		if err := m.Verify(); !errors.Is(err, ErrBadSig) {
			t.Errorf("mauled %d: Verify() = %v, want ErrBadSig", i, err)
		}
	}
	errs := VerifyBatch(append([]*Envelope{e}, mauled...))
	if errs == nil || errs[0] != nil {
		t.Fatalf("VerifyBatch = %v, want only the mauled ones rejected", errs)
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, ErrBadSig) {
			t.Errorf("batched mauled %d: %v, want ErrBadSig", i, err)
		}
	}
}

func TestVerifyBatch(t *testing.T) {
	keys := []crypto.PrivKey{newKey(t), newKey(t), newKey(t)}
	stranger := newKey(t)
	good := make([]*Envelope, 101)
	for i := range good {
		good[i] = signed(t, keys[i%3], func(e *Envelope) { e.Seq = uint64(i + 1); e.Content = fmt.Sprint("message ", i) })
	}
	other := func(e *Envelope) *Envelope {
		c := *e
		sig, err := stranger.Sign(c.SigningBytes()) // a valid signature, by someone else
		if err != nil {
			t.Fatal(err)
		}
		c.Sig = sig
		return &c
	}
	content := func(e *Envelope) *Envelope { c := *e; c.Content += "!"; c.ID = c.ComputeID(); return &c }
	malformed := func(e *Envelope) *Envelope { c := *e; c.Kind = "Bad"; return &c }
	with := func(envs []*Envelope, i int, bad *Envelope) []*Envelope {
		out := append([]*Envelope(nil), envs...)
		out[i] = bad
		return out
	}
	tests := []struct {
		name string
		envs []*Envelope
		bad  map[int]error
	}{
		{"empty", nil, nil},
		{"one good", good[:1], nil},
		{"one bad", []*Envelope{content(good[0])}, map[int]error{0: ErrBadSig}},
		{"100 good", good[:100], nil},
		{"one forged among 100", with(good[:101], 57, other(good[57])), map[int]error{57: ErrBadSig}},
		{"first forged", with(good[:100], 0, other(good[0])), map[int]error{0: ErrBadSig}},
		{"last forged", with(good[:100], 99, content(good[99])), map[int]error{99: ErrBadSig}},
		{"malformed and forged", with(with(good[:64], 3, malformed(good[3])), 40, other(good[40])), map[int]error{3: ErrMalformed, 40: ErrBadSig}},
		{"all bad", []*Envelope{other(good[0]), content(good[1]), malformed(good[2])}, map[int]error{0: ErrBadSig, 1: ErrBadSig, 2: ErrMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := VerifyBatch(tt.envs)
			if len(tt.bad) == 0 {
				if errs != nil {
					t.Fatalf("VerifyBatch = %v, want nil", errs)
				}
				return
			}
			if len(errs) != len(tt.envs) {
				t.Fatalf("VerifyBatch returned %d errors for %d envelopes", len(errs), len(tt.envs))
			}
			for i, err := range errs {
				want := tt.bad[i]
				if (err == nil) != (want == nil) || !errors.Is(err, want) {
					t.Errorf("envelope %d: got %v, want %v", i, err, want)
				}
				if got := tt.envs[i].Verify(); (got == nil) != (err == nil) {
					t.Errorf("envelope %d: Verify() = %v but VerifyBatch said %v", i, got, err)
				}
			}
		})
	}
}

// A peer id whose 32 bytes are no curve point is malformed: no signature
// could ever verify for it.
func TestAuthorNotOnCurve(t *testing.T) {
	raw := make([]byte, 32)
	for y := byte(2); ; y++ {
		raw[0] = y
		if _, err := ed25519.NewExpandedPublicKey(raw); err != nil {
			break
		}
	}
	e := unsigned(pidOf(t, raw), 1, make([]byte, 64))
	if err := e.Verify(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify() = %v, want ErrMalformed", err)
	}
	if errs := VerifyBatch([]*Envelope{e, signed(t, newKey(t), nil)}); errs == nil || !errors.Is(errs[0], ErrMalformed) || errs[1] != nil {
		t.Fatalf("VerifyBatch = %v, want [ErrMalformed, nil]", errs)
	}
}

// Many goroutines share the author cache and the pool of batch verifiers.
func TestVerifyBatchConcurrent(t *testing.T) {
	keys := []crypto.PrivKey{newKey(t), newKey(t)}
	envs := make([]*Envelope, 32)
	for i := range envs {
		envs[i] = signed(t, keys[i%2], func(e *Envelope) { e.Seq = uint64(i + 1) })
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				if errs := VerifyBatch(envs[g : g+8+i]); errs != nil {
					t.Errorf("VerifyBatch = %v", errs)
				}
			}
		})
	}
	wg.Wait()
}

// The author cache keeps at most two generations of maxAuthorKeys, and an
// author looked up while the generations turn stays cached.
func TestAuthorCacheBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes 2.5 generations of peer ids")
	}
	hot := pidOf(t, unhex(t, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
	first, err := lookupAuthor(hot)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	for i := range maxAuthorKeys * 5 / 2 {
		seed[0], seed[1] = byte(i), byte(i>>8)
		raw := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if _, err := lookupAuthor(pidOf(t, raw)); err != nil {
			t.Fatal(err)
		}
		if i%(maxAuthorKeys/2) == 0 {
			if a, _ := lookupAuthor(hot); a != first {
				t.Fatalf("after %d authors the hot author was decoded again", i)
			}
		}
	}
	n := func(g *authorGen) int {
		c := 0
		g.m.Range(func(any, any) bool { c++; return true })
		return c
	}
	if got := n(authors.cur.Load()) + n(authors.prev.Load()); got > 2*maxAuthorKeys {
		t.Fatalf("cache holds %d authors, want at most %d", got, 2*maxAuthorKeys)
	}
}

// FuzzVerifyBatch: single and batch verification give the same verdict on
// every envelope of a batch made of honest envelopes, the fuzzed one, and
// one honest envelope with a byte flipped.
func FuzzVerifyBatch(f *testing.F) {
	k := newKey(f)
	var honest []*Envelope
	for i := range 5 {
		honest = append(honest, signed(f, k, func(e *Envelope) { e.Seq = uint64(i + 1) }))
	}
	f.Add(honest[0].Marshal(), uint32(0), byte(0))
	f.Add(honest[1].Marshal(), uint32(len(honest[1].Marshal())-1), byte(1))
	f.Add(honest[2].Marshal(), uint32(len(honest[2].Marshal())-40), byte(0x80))
	f.Add(unsigned(pidOf(f, unhex(f, smallOrder[8])), 1, append(unhex(f, smallOrder[3]), make([]byte, 32)...)).Marshal(), uint32(7), byte(4))
	f.Add(signed(f, k, func(e *Envelope) { e.Sig = addL(ed25519.Sign(ed25519.NewKeyFromSeed(make([]byte, 32)), nil)) }).Marshal(), uint32(3), byte(0xff))
	f.Fuzz(func(t *testing.T, b []byte, pos uint32, x byte) {
		envs := append([]*Envelope(nil), honest...)
		if e, err := Unmarshal(b); err == nil {
			envs = append(envs, e)
		}
		m := honest[pos%uint32(len(honest))].Marshal()
		m[pos%uint32(len(m))] ^= x
		if e, err := Unmarshal(m); err == nil {
			envs = append(envs, e)
		}
		single, batch := verdicts(envs)
		for i := range envs {
			if single[i] != batch[i] {
				t.Fatalf("envelope %d: Verify %q, VerifyBatch %q", i, single[i], batch[i])
			}
		}
		for i := range honest {
			if single[i] != "" {
				t.Fatalf("honest envelope %d rejected: %s", i, single[i])
			}
		}
	})
}

// BenchmarkVerify: the CPU cost of verifying one envelope (~430 bytes, as in
// the history benchmark) the way Verify did with crypto/ed25519 before
// ZIP-215, with Verify now, and with VerifyBatch in batches of 64 (sync's
// chunk) and of a few (what concurrent gossip validations gather).
func BenchmarkVerify(b *testing.B) {
	keys := make([]crypto.PrivKey, 16)
	for i := range keys {
		keys[i] = newKey(b)
	}
	envs := make([]*Envelope, 1024)
	for i := range envs {
		envs[i] = signed(b, keys[i%len(keys)], func(e *Envelope) { e.Seq = uint64(i + 1); e.Content = strings.Repeat("x", 200) })
	}
	// The machine is shared: besides wall-clock µs/env, report the process's
	// CPU time (user+sys) per envelope, which other load inflates far less.
	var cpu0 time.Duration
	perEnv := func(b *testing.B, n int) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1e3, "µs/env")
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*n)/1e3, "cpu-µs/env")
	}
	b.Run("stdlib", func(b *testing.B) {
		i := 0
		cpu0 = cpuTime()
		for b.Loop() {
			if err := stdlibVerify(envs[i%len(envs)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		perEnv(b, 1)
	})
	b.Run("single", func(b *testing.B) {
		i := 0
		cpu0 = cpuTime()
		for b.Loop() {
			if err := envs[i%len(envs)].Verify(); err != nil {
				b.Fatal(err)
			}
			i++
		}
		perEnv(b, 1)
	})
	for _, n := range []int{2, 4, 8, 16, 64, 128, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			i := 0
			cpu0 = cpuTime()
			for b.Loop() {
				if errs := VerifyBatch(envs[i : i+n]); errs != nil {
					b.Fatal(errs)
				}
				i = (i + n) % (len(envs) - n)
			}
			perEnv(b, n)
		})
	}
}

// stdlibVerify is Verify as it was before ZIP-215: crypto/ed25519's
// cofactorless check through the libp2p key.
func stdlibVerify(e *Envelope) error {
	if err := e.Validate(); err != nil {
		return err
	}
	pub, err := AuthorKey(e.From)
	if err != nil {
		return err
	}
	b := e.SigningBytes()
	sum := sha256.Sum256(b)
	if e.ID != hex.EncodeToString(sum[:]) {
		return ErrBadSig
	}
	if ok, err := pub.Verify(b, e.Sig); err != nil || !ok {
		return ErrBadSig
	}
	return nil
}

// cpuTime is the CPU time (user+sys) the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSignerMatchesSign: the signer (Envelope.Sign and the channel loop use
// it) produces exactly the envelope that signing with libp2p's key produces
// (RFC 8032 signatures are deterministic), which Verify accepts, and refuses
// what Validate refuses.
func TestSignerMatchesSign(t *testing.T) {
	k := newKey(t)
	s, err := newSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mod     func(*Envelope)
		wantErr bool
	}{
		{name: "chat", mod: func(e *Envelope) {}},
		{name: "reply, no name", mod: func(e *Envelope) { e.Name = ""; e.ReplyTo = strings.Repeat("ab", 32) }},
		{name: "largest content", mod: func(e *Envelope) { e.Content = strings.Repeat("é", MaxContentLen/2) }},
		{name: "private channel", mod: func(e *Envelope) { e.Channel = "~" + strings.Repeat("0f", 16); e.Kind = KindEncrypted }},
		{name: "bad channel", mod: func(e *Envelope) { e.Channel = "general" }, wantErr: true},
		{name: "seq 0", mod: func(e *Envelope) { e.Seq = 0 }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := &Envelope{Channel: "#general", Name: "atlas", Seq: 7, TS: 1_760_000_000_000, Kind: "msg", Content: "hello, nova"}
			tc.mod(want)
			got := *want
			pid, err := peer.IDFromPrivateKey(k)
			if err != nil {
				t.Fatal(err)
			}
			want.From = pid.String()
			wantErr := want.Validate()
			if wantErr == nil {
				if want.Sig, err = k.Sign(want.SigningBytes()); err != nil {
					t.Fatal(err)
				}
				want.ID = want.ComputeID()
			}
			gotErr := s.sign(&got)
			if (gotErr != nil) != tc.wantErr || (wantErr != nil) != tc.wantErr {
				t.Fatalf("sign errors: signer %v, Sign %v; want error %v", gotErr, wantErr, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got.From != want.From || got.ID != want.ID || !bytes.Equal(got.Sig, want.Sig) {
				t.Errorf("signer gave from %s id %s sig %x, libp2p's key gave %s %s %x", got.From, got.ID, got.Sig, want.From, want.ID, want.Sig)
			}
			if err := got.Verify(); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
	if _, err := newSigner(mustSecp256k1(t)); err == nil {
		t.Error("newSigner accepted a secp256k1 key")
	}
}

func mustSecp256k1(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateSecp256k1Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// BenchmarkSign: CPU per signature of Envelope.Sign (a signer built for each
// call: peer id derived each time) and of one signer kept, as the channel
// loop keeps it.
func BenchmarkSign(b *testing.B) {
	k := newKey(b)
	s, err := newSigner(k)
	if err != nil {
		b.Fatal(err)
	}
	e := &Envelope{Channel: "#bench", Name: "atlas", Seq: 1, TS: 1_760_000_000_000, Kind: "msg", Content: strings.Repeat("x", 200)}
	for _, bc := range []struct {
		name string
		sign func(*Envelope) error
	}{
		{"Envelope.Sign", func(e *Envelope) error { return e.Sign(k) }},
		{"signer", s.sign},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cpu0 := cpuTime()
			for b.Loop() {
				e.Seq++
				if err := bc.sign(e); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
		})
	}
}
