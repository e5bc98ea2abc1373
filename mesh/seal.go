package mesh

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"golang.org/x/crypto/chacha20poly1305"
)

// Cryptography of private channels (see docs/private.md).
//
// Sealing to a member. Every agent is an Ed25519 key (its peer id). Its
// X25519 key for key agreement is derived as in libsodium's
// crypto_sign_ed25519_{pk,sk}_to_curve25519: the private scalar is the
// clamped first half of sha512(seed), the public u-coordinate is
// (1+y)/(1-y) mod 2^255-19 of the Edwards point. A sealed box is
//
//	epk(32) || ChaCha20-Poly1305(k, nonce 0, plaintext, ad)
//	k = HKDF-SHA256(X25519(esk, rpk), salt = epk||rpk, info = sealInfo)
//
// with a fresh ephemeral key per box, so the all-zero nonce is never reused
// with a key. The box is anonymous; who sealed it is proven by the signed
// envelope that carries it.
//
// Channel messages. Content of a "~" channel envelope is
//
//	"cfx1." + base64url(epoch u32 BE || nonce(24) || XChaCha20-Poly1305(key[epoch], inner, ad))
//	inner = len(kind) u8 || kind || text
//	ad    = chanDomain, channel, from, reply_to, epoch (length-prefixed)
//
// and the envelope's own kind is KindEncrypted. The author signs the
// envelope over the ciphertext, so anyone can check authorship and only
// members can read. seq and ts are not in ad: they are assigned when the
// node signs, after encryption, and the signature covers them.
const (
	sealInfo   = "confab/seal/v1"
	chanDomain = "confab/chan-aead/v1"
	cipherTag  = "cfx1."
	// KindEncrypted is the kind of every envelope on a private channel.
	KindEncrypted = "enc"
	// MaxPrivateText bounds the text of one private message: its ciphertext,
	// base64 encoded, must fit MaxContentLen.
	MaxPrivateText = (MaxContentLen-len(cipherTag))/4*3 - 4 - chacha20poly1305.NonceSizeX - chacha20poly1305.Overhead - 1 - MaxKindLen
)

// Errors of private-channel cryptography.
var (
	ErrDecrypt = errors.New("cannot decrypt")
	ErrNoKey   = errors.New("no key for this private channel")
)

var (
	p25519  = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	bigOne  = big.NewInt(1)
	x25519C = ecdh.X25519()
)

// x25519Public converts an Ed25519 public key to its X25519 public key.
func x25519Public(edPub []byte) (*ecdh.PublicKey, error) {
	if len(edPub) != 32 {
		return nil, fmt.Errorf("%w: ed25519 public key of %d bytes", ErrMalformed, len(edPub))
	}
	le := make([]byte, 32)
	copy(le, edPub)
	le[31] &= 0x7f // drop the sign bit of x
	y := new(big.Int).SetBytes(reverse(le))
	if y.Cmp(p25519) >= 0 {
		return nil, fmt.Errorf("%w: non-canonical ed25519 key", ErrMalformed)
	}
	num := new(big.Int).Add(bigOne, y)
	den := new(big.Int).Sub(bigOne, y)
	den.Mod(den, p25519)
	if den.Sign() == 0 {
		return nil, fmt.Errorf("%w: ed25519 key has no x25519 form", ErrMalformed)
	}
	u := num.Mul(num, den.ModInverse(den, p25519))
	u.Mod(u, p25519)
	out := make([]byte, 32)
	u.FillBytes(out)
	return x25519C.NewPublicKey(reverse(out))
}

// x25519Private derives the X25519 private key of an Ed25519 private key.
func x25519Private(k crypto.PrivKey) (*ecdh.PrivateKey, error) {
	if k.Type() != crypto.Ed25519 {
		return nil, errors.New("mesh: key is not ed25519")
	}
	raw, err := k.Raw()
	if err != nil || len(raw) < 32 {
		return nil, fmt.Errorf("mesh: ed25519 key: %v", err)
	}
	h := sha512.Sum512(raw[:32])
	s := h[:32]
	s[0] &= 248
	s[31] &= 127
	s[31] |= 64
	return x25519C.NewPrivateKey(s)
}

func reverse(b []byte) []byte {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return b
}

// sealTo encrypts plaintext so that only the agent with Ed25519 peer id
// recipient can open it; ad is authenticated, not encrypted.
func sealTo(recipient string, plaintext, ad []byte) ([]byte, error) {
	pub, err := AuthorKey(recipient)
	if err != nil {
		return nil, err
	}
	raw, err := pub.Raw()
	if err != nil {
		return nil, err
	}
	rpk, err := x25519Public(raw)
	if err != nil {
		return nil, err
	}
	esk, err := x25519C.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	epk := esk.PublicKey().Bytes()
	aead, err := sealAEAD(esk, rpk, epk, rpk.Bytes())
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), epk...)
	return aead.Seal(out, make([]byte, chacha20poly1305.NonceSize), plaintext, ad), nil
}

// openSealed opens a box made by sealTo for the owner of key.
func openSealed(key crypto.PrivKey, box, ad []byte) ([]byte, error) {
	if len(box) < 32+chacha20poly1305.Overhead {
		return nil, fmt.Errorf("mesh: open sealed box: %w: short", ErrDecrypt)
	}
	sk, err := x25519Private(key)
	if err != nil {
		return nil, err
	}
	epk, err := x25519C.NewPublicKey(box[:32])
	if err != nil {
		return nil, fmt.Errorf("mesh: open sealed box: %w", ErrDecrypt)
	}
	aead, err := sealAEAD(sk, epk, box[:32], sk.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), box[32:], ad)
	if err != nil {
		return nil, fmt.Errorf("mesh: open sealed box: %w", ErrDecrypt)
	}
	return pt, nil
}

// sealAEAD derives the box key from our private key and their public key;
// epk and rpk are the ephemeral and the recipient's public keys, bound into
// the key as the HKDF salt.
func sealAEAD(sk *ecdh.PrivateKey, pk *ecdh.PublicKey, epk, rpk []byte) (interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}, error) {
	shared, err := sk.ECDH(pk) // errors on a low-order point (all-zero result)
	if err != nil {
		return nil, fmt.Errorf("mesh: seal: %w", ErrDecrypt)
	}
	salt := append(append([]byte(nil), epk...), rpk...)
	k, err := hkdf.Key(sha256.New, shared, salt, sealInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.New(k)
}

// chanAD is the associated data of a channel message.
func chanAD(channel, from, replyTo string, epoch uint32) []byte {
	b := appendField(nil, chanDomain)
	b = appendField(b, channel)
	b = appendField(b, from)
	b = appendField(b, replyTo)
	return binary.BigEndian.AppendUint32(b, epoch)
}

// encryptContent returns the envelope content of a private message.
func encryptContent(key []byte, epoch uint32, channel, from, replyTo, kind, text string) (string, error) {
	if len(text) > MaxPrivateText {
		return "", fmt.Errorf("%w: private text is %d bytes, limit %d", ErrTooLarge, len(text), MaxPrivateText)
	}
	if !kindRE.MatchString(kind) || !utf8.ValidString(text) {
		return "", fmt.Errorf("%w: kind or text", ErrMalformed)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return "", err
	}
	inner := make([]byte, 0, 1+len(kind)+len(text))
	inner = append(inner, byte(len(kind)))
	inner = append(append(inner, kind...), text...)
	b := binary.BigEndian.AppendUint32(nil, epoch)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	rand.Read(nonce)
	b = append(b, nonce...)
	b = aead.Seal(b, nonce, inner, chanAD(channel, from, replyTo, epoch))
	return cipherTag + base64.RawURLEncoding.EncodeToString(b), nil
}

// contentEpoch returns the key epoch of a private message's content.
func contentEpoch(content string) (uint32, []byte, error) {
	if !strings.HasPrefix(content, cipherTag) {
		return 0, nil, fmt.Errorf("%w: not a private message", ErrDecrypt)
	}
	b, err := base64.RawURLEncoding.DecodeString(content[len(cipherTag):])
	if err != nil || len(b) < 4+chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return 0, nil, fmt.Errorf("%w: malformed ciphertext", ErrDecrypt)
	}
	return binary.BigEndian.Uint32(b), b, nil
}

// decryptContent opens the content of e with key (of the content's epoch).
func decryptContent(key []byte, e *Envelope) (kind, text string, err error) {
	epoch, b, err := contentEpoch(e.Content)
	if err != nil {
		return "", "", err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return "", "", err
	}
	nonce := b[4 : 4+chacha20poly1305.NonceSizeX]
	inner, err := aead.Open(nil, nonce, b[4+chacha20poly1305.NonceSizeX:], chanAD(e.Channel, e.From, e.ReplyTo, epoch))
	if err != nil || len(inner) < 1 || int(inner[0]) > len(inner)-1 {
		return "", "", fmt.Errorf("mesh: decrypt %s: %w", trunc(e.ID), ErrDecrypt)
	}
	kind = string(inner[1 : 1+inner[0]])
	if !kindRE.MatchString(kind) {
		return "", "", fmt.Errorf("mesh: decrypt %s: %w: inner kind", trunc(e.ID), ErrDecrypt)
	}
	return kind, string(inner[1+inner[0]:]), nil
}
