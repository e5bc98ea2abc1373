package mesh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/mr-tron/base58"
)

func testKey(t testing.TB) (crypto.PrivKey, string) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id.String()
}

// The X25519 public key converted from the Ed25519 public key must equal the
// public key of the X25519 private key converted from the Ed25519 seed.
func TestX25519ConversionAgrees(t *testing.T) {
	for range 50 {
		k, _ := testKey(t)
		raw, _ := k.GetPublic().Raw()
		pub, err := x25519Public(raw)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := x25519Private(k)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := pub.Bytes(), priv.PublicKey().Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("converted public %x, want %x", got, want)
		}
	}
	// The Ed25519 identity point (y = 1) has no X25519 form.
	id := make([]byte, ed25519.PublicKeySize)
	id[0] = 1
	if _, err := x25519Public(id); err == nil {
		t.Fatal("identity point converted; want an error")
	}
}

func TestSealOpen(t *testing.T) {
	k, id := testKey(t)
	other, _ := testKey(t)
	ad := []byte("ad")
	box, err := sealTo(id, []byte("channel key"), ad)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := openSealed(k, box, ad)
	if err != nil || string(pt) != "channel key" {
		t.Fatalf("open = %q, %v", pt, err)
	}
	flipped := bytes.Clone(box)
	flipped[40] ^= 1
	for _, c := range []struct {
		name string
		key  crypto.PrivKey
		box  []byte
		ad   []byte
	}{
		{"wrong recipient", other, box, ad},
		{"wrong ad", k, box, []byte("other")},
		{"flipped bit", k, flipped, ad},
		{"truncated", k, box[:40], ad},
	} {
		if _, err := openSealed(c.key, c.box, c.ad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", c.name, err)
		}
	}
}

func TestChannelContent(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	_, from := testKey(t)
	const ch = "~0123456789abcdef0123456789abcdef"
	ct, err := encryptContent(key, 3, ch, from, "", "msg", "the plan is secret")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ct, "secret") || !strings.HasPrefix(ct, cipherTag) {
		t.Fatalf("content %q", ct)
	}
	e := &Envelope{Channel: ch, From: from, Kind: KindEncrypted, Content: ct}
	kind, text, err := decryptContent(key, e)
	if err != nil || kind != "msg" || text != "the plan is secret" {
		t.Fatalf("decrypt = %q %q %v", kind, text, err)
	}
	if ep, _, _ := contentEpoch(ct); ep != 3 {
		t.Fatalf("epoch %d, want 3", ep)
	}
	_, other := testKey(t)
	moved := *e
	moved.From = other // another author re-posting the ciphertext
	if _, _, err := decryptContent(key, &moved); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("re-posted ciphertext: %v, want ErrDecrypt", err)
	}
	big := strings.Repeat("x", MaxPrivateText)
	ct, err = encryptContent(key, 1, ch, from, "", "msg", big)
	if err != nil || len(ct) > MaxContentLen {
		t.Fatalf("largest text: %d bytes, %v", len(ct), err)
	}
	if _, err := encryptContent(key, 1, ch, from, "", "msg", big+"x"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
}

func TestSessionKeyRoundTrip(t *testing.T) {
	_, host := testKey(t)
	k := SessionKey{Host: host, Channel: "~0123456789abcdef0123456789abcdef", Secret: bytes.Repeat([]byte{7}, 16), Expiry: time.Unix(1900000000, 0)}
	s := k.String()
	got, err := ParseSessionKey(s)
	if err != nil {
		t.Fatal(err)
	}
	if got.Host != k.Host || got.Channel != k.Channel || !bytes.Equal(got.Secret, k.Secret) || !got.Expiry.Equal(k.Expiry) {
		t.Fatalf("round trip %+v, want %+v", got, k)
	}
	for _, bad := range []string{"", "cfs1_", "cfs1_0OIl", s[:len(s)-2], "xx" + s} {
		if _, err := ParseSessionKey(bad); !errors.Is(err, ErrBadSessionKey) {
			t.Errorf("ParseSessionKey(%q) = %v, want ErrBadSessionKey", bad, err)
		}
	}
	if got.Front != "" {
		t.Fatalf("a key without a front parsed with front %q", got.Front)
	}
}

// TestSessionKeyFront: a thin host's key names the node that fronts it;
// a front equal to the host, or a truncated or padded front, is refused.
func TestSessionKeyFront(t *testing.T) {
	_, host := testKey(t)
	_, front := testKey(t)
	k := SessionKey{Host: host, Channel: "~0123456789abcdef0123456789abcdef", Secret: bytes.Repeat([]byte{7}, 16), Expiry: time.Unix(1900000000, 0), Front: front}
	got, err := ParseSessionKey(k.String())
	if err != nil || got.Front != front || got.Host != host {
		t.Fatalf("round trip %+v (%v), want front %s", got, err, front)
	}
	raw, _ := base58.Decode(strings.TrimPrefix(k.String(), SessionKeyPrefix))
	self := k
	self.Front = host
	for name, b := range map[string][]byte{
		"front is the host": func() []byte { b, _ := base58.Decode(strings.TrimPrefix(self.String(), SessionKeyPrefix)); return b }(),
		"truncated front":   raw[:len(raw)-1],
		"padded front":      append(slices.Clone(raw), 0),
		"length byte only":  raw[:len(raw)-38], // an Ed25519 peer id is 38 bytes
	} {
		if _, err := ParseSessionKey(SessionKeyPrefix + base58.Encode(b)); !errors.Is(err, ErrBadSessionKey) {
			t.Errorf("%s: %v, want ErrBadSessionKey", name, err)
		}
	}
}

func FuzzParseSessionKey(f *testing.F) {
	_, host := testKey(f)
	f.Add(SessionKey{Host: host, Channel: "~0123456789abcdef0123456789abcdef", Secret: make([]byte, 16), Expiry: time.Unix(1, 0)}.String())
	_, front := testKey(f)
	f.Add(SessionKey{Host: host, Channel: "~0123456789abcdef0123456789abcdef", Secret: make([]byte, 16), Expiry: time.Unix(1, 0), Front: front}.String())
	f.Add("cfs1_abc")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseSessionKey(s)
		if err == nil && (!isPrivate(k.Channel) || len(k.Secret) != 16 || k.Front == k.Host) {
			t.Fatalf("accepted %q as %+v", s, k)
		}
		if err == nil {
			if again, err := ParseSessionKey(k.String()); err != nil || again.Front != k.Front || again.Host != k.Host {
				t.Fatalf("%+v does not round-trip: %+v, %v", k, again, err)
			}
		}
	})
}

func FuzzDecryptContent(f *testing.F) {
	key := make([]byte, 32)
	_, from := testKey(f)
	ct, _ := encryptContent(key, 1, "~0123456789abcdef0123456789abcdef", from, "", "msg", "hi")
	f.Add(ct)
	f.Add("cfx1.")
	f.Fuzz(func(t *testing.T, s string) {
		e := &Envelope{Channel: "~0123456789abcdef0123456789abcdef", From: from, Kind: KindEncrypted, Content: s}
		_, _, _ = decryptContent(key, e)
	})
}
