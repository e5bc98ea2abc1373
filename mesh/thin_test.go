package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
)

// relayed is what a relay handed on for one knock.
type relayed struct {
	grant   *mesh.Envelope
	backlog []*mesh.Envelope
	n       int
	err     error
	raw     bytes.Buffer // every byte handed on, marshalled
}

// relayKnock runs RelayKnock in a goroutine; pending is closed once the
// host holds the knock.
func relayKnock(ctx context.Context, relay *mesh.Mesh, knock *mesh.Envelope) (<-chan *relayed, <-chan struct{}) {
	out := make(chan *relayed, 1)
	pending := make(chan struct{})
	go func() {
		r := &relayed{}
		r.n, r.err = relay.RelayKnock(ctx, knock, func() { close(pending) }, func(g *mesh.Envelope, page []*mesh.Envelope, done bool) error {
			r.grant = g
			r.raw.Write(g.Marshal())
			for _, e := range page {
				r.raw.Write(e.Marshal())
			}
			r.backlog = append(r.backlog, page...)
			return nil
		})
		out <- r
	}()
	return out, pending
}

// TestThinKnockThroughRelay: a thin client (a key, no node) builds its own
// knock; another node relays it to the host; the host approves; the relay
// hands on a grant it cannot open and ciphertext it cannot read; the
// client opens the grant and decrypts the whole backlog. A replayed, a
// denied and a forged knock through the relay are refused.
func TestThinKnockThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	host := startAgentWith(t, t.TempDir(), "host", noMDNS)
	relay := startAgentWith(t, t.TempDir(), "relay", noMDNS)
	connect(t, relay.node, host.node)

	const ctxText, secret = "CONTEXT-delta thin plan", "SECRET-echo thin step"
	sess, err := host.mesh.OpenSession(ctx, "thin", ctxText, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.mesh.Send(ctx, sess.Channel.ID, "msg", secret, ""); err != nil {
		t.Fatal(err)
	}
	thinKey, _, _ := crypto.GenerateEd25519Key(nil)
	thinID, _ := peer.IDFromPrivateKey(thinKey)

	knock, err := mesh.NewKnock(thinKey, "thin", sess.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, pending := relayKnock(ctx, relay.mesh, knock)
	<-pending
	if ks := host.mesh.Knocks(); len(ks) != 1 || ks[0].From != thinID.String() {
		t.Fatalf("knocks at the host: %+v, want one from the thin client %s", ks, thinID)
	}
	if _, err := host.mesh.Approve(ctx, thinID.String()); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != 2 || len(r.backlog) != 2 {
		t.Fatalf("backlog: n=%d, %d envelopes, want 2", r.n, len(r.backlog))
	}
	for _, p := range []string{"delta", "echo"} {
		if bytes.Contains(r.raw.Bytes(), []byte(p)) {
			t.Fatalf("the relay handled plaintext %q", p)
		}
	}
	// The relay holds no key: neither its own key nor its store opens anything.
	if _, err := mesh.OpenGrant(relay.node.Key(), r.grant); err == nil {
		t.Fatal("the relay opened the grant")
	}
	if s := storedContents(t, relay); strings.Contains(s, "delta") || strings.Contains(s, "echo") {
		t.Fatal("plaintext in the relay's store")
	}
	keys, err := mesh.OpenGrant(thinKey, r.grant)
	if err != nil {
		t.Fatal(err)
	}
	if keys.ID != sess.Channel.ID || keys.Host != host.mesh.Self() || !keys.Session {
		t.Fatalf("keys %+v", keys)
	}
	var got []string
	for _, e := range r.backlog {
		if err := e.Verify(); err != nil {
			t.Fatal(err)
		}
		kind, text, err := keys.Decrypt(e)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, kind+":"+text)
	}
	if want := []string{"context:" + ctxText, "msg:" + secret}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("decrypted backlog %q, want %q", got, want)
	}
	if p, _ := host.mesh.Private(sess.Channel.ID); !strings.Contains(strings.Join(p.Members, ","), thinID.String()) {
		t.Fatalf("members %v lack the thin client", p.Members)
	}
	// What the thin client writes with its keys, a member reads.
	content, err := keys.Encrypt(thinID.String(), "", "msg", "thin says hi")
	if err != nil {
		t.Fatal(err)
	}
	e := &mesh.Envelope{Channel: keys.ID, Name: "thin", Seq: 1, TS: time.Now().UnixMilli(), Kind: mesh.KindEncrypted, Content: content}
	if err := e.Sign(thinKey); err != nil {
		t.Fatal(err)
	}
	if d, err := host.mesh.Decrypt(e); err != nil || d.Content != "thin says hi" {
		t.Fatalf("host decrypts the thin client's message: %v %v", d, err)
	}

	// Refusals through the relay.
	refused := func(knock *mesh.Envelope, decide func(), want error) {
		t.Helper()
		res, pending := relayKnock(ctx, relay.mesh, knock)
		if decide != nil {
			select {
			case <-pending:
				decide()
			case r := <-res:
				t.Fatalf("refused before pending: %v", r.err)
			}
		}
		if r := <-res; !errors.Is(r.err, want) {
			t.Fatalf("relayed knock: %v, want %v", r.err, want)
		}
	}
	refused(knock, nil, mesh.ErrKnockReplayed)
	k2, _ := mesh.NewKnock(thinKey, "thin", sess.Key, time.Now())
	refused(k2, func() {
		if err := host.mesh.Deny(ctx, thinID.String()); err != nil {
			t.Error(err)
		}
	}, mesh.ErrDenied)
	// A knock by someone else carrying the thin client's proof: the proof
	// binds the joiner's id.
	other, _, _ := crypto.GenerateEd25519Key(nil)
	k3, _ := mesh.NewKnock(thinKey, "thin", sess.Key, time.Now())
	forged := &mesh.Envelope{Channel: k3.Channel, Name: "thin", Seq: 1, TS: k3.TS, Kind: k3.Kind, Content: k3.Content}
	if err := forged.Sign(other); err != nil {
		t.Fatal(err)
	}
	refused(forged, nil, mesh.ErrBadKnock)
	// A knock whose content was changed after signing never leaves the relay.
	k4, _ := mesh.NewKnock(thinKey, "thin", sess.Key, time.Now())
	k4.Content = strings.Replace(k4.Content, `"v":1`, `"v":1 `, 1)
	if _, err := relay.mesh.RelayKnock(ctx, k4, nil, nil); err == nil {
		t.Fatal("relayed a tampered knock")
	}
	if err := host.mesh.CloseSession(ctx, sess.Channel.ID); err != nil {
		t.Fatal(err)
	}
	k5, _ := mesh.NewKnock(thinKey, "thin", sess.Key, time.Now())
	refused(k5, nil, mesh.ErrSessionClosed)
}

// TestNewKnockRefusesLocally: an expired key and a bad key fail before
// anything is signed.
func TestNewKnockRefusesLocally(t *testing.T) {
	k, _, _ := crypto.GenerateEd25519Key(nil)
	hostKey, _, _ := crypto.GenerateEd25519Key(nil)
	hostID, _ := peer.IDFromPrivateKey(hostKey)
	sk := mesh.SessionKey{Host: hostID.String(), Channel: "~00112233445566778899aabbccddeeff", Secret: make([]byte, 16), Expiry: time.Now().Add(-time.Minute).Truncate(time.Second)}
	for _, c := range []struct {
		name string
		key  crypto.PrivKey
		sess string
		want error
	}{
		{"expired", k, sk.String(), mesh.ErrKeyExpired},
		{"garbage", k, "cfs1_xyz", mesh.ErrBadSessionKey},
	} {
		if _, err := mesh.NewKnock(c.key, "x", c.sess, time.Now()); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	sk.Expiry = time.Now().Add(time.Hour)
	e, err := mesh.NewKnock(k, "x", sk.String(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if h, err := mesh.KnockHost(e); err != nil || h != hostID {
		t.Fatalf("KnockHost = %v, %v; want %v", h, err, hostID)
	}
	if _, err := mesh.NewKnock(hostKey, "x", sk.String(), time.Now()); err == nil {
		t.Fatal("the host knocked on its own session")
	}
}
