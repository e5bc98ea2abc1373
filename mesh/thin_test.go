package mesh_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
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
		r.n, r.err = relay.RelayKnock(ctx, knock, "", func() { close(pending) }, func(g *mesh.Envelope, page []*mesh.Envelope, done bool) error {
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
	if _, err := relay.mesh.RelayKnock(ctx, k4, "", nil, nil); err == nil {
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

// TestThinHostServesKnock: the host's side built from the pure functions
// (HostedSession) admits an unmodified node's knock. A plain libp2p host
// with the thin host's key stands in for the routing that is not built
// (a rendezvous fronting the thin host): it only moves bytes; the keys,
// the knock check and the grant are the client's.
func TestThinHostServesKnock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	joiner := startAgentWith(t, t.TempDir(), "joiner", noMDNS)
	hk, _, _ := crypto.GenerateEd25519Key(nil)
	front, err := node.New(node.WithIdentity(hk), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	hostID := front.ID().String()

	hosted, err := mesh.NewHostedSession(hk, "thin hosted", 0, time.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	const ctxText = "CONTEXT-foxtrot hosted by a thin client"
	content, err := hosted.Keys.Encrypt(hostID, "", mesh.KindContext, ctxText)
	if err != nil {
		t.Fatal(err)
	}
	ctxEnv := &mesh.Envelope{Channel: hosted.Keys.ID, Name: "thin-host", Seq: 1, TS: time.Now().UnixMilli(), Kind: mesh.KindEncrypted, Content: content}
	if err := ctxEnv.Sign(hk); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex // guards hosted
	knocks := make(chan *mesh.Envelope, 4)
	decide := make(chan bool)
	acked := make(chan byte, 4)
	frame := func(s network.Stream, b []byte) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		s.Write(l[:])
		s.Write(b)
	}
	reply := func(s network.Stream, status, code string) {
		b, _ := json.Marshal(map[string]string{"status": status, "code": code})
		frame(s, b)
	}
	front.Host().SetStreamHandler("/confab/private/1", func(s network.Stream) {
		defer s.Close()
		var l [4]byte
		if _, err := io.ReadFull(s, l[:]); err != nil {
			return
		}
		b := make([]byte, binary.BigEndian.Uint32(l[:]))
		if _, err := io.ReadFull(s, b); err != nil {
			return
		}
		e, err := mesh.Unmarshal(b)
		if err != nil || e.Kind != mesh.KindKnock {
			s.Reset()
			return
		}
		mu.Lock()
		err = hosted.CheckKnock(e, time.Now())
		mu.Unlock()
		if err != nil {
			reply(s, "refused", mesh.KnockCode(err))
			return
		}
		knocks <- e
		reply(s, "pending", "")
		if !<-decide {
			reply(s, "refused", "denied")
			return
		}
		mu.Lock()
		g, err := hosted.Grant(hk, "thin-host", e.From, time.Now())
		mu.Unlock()
		if err != nil {
			t.Error(err)
			s.Reset()
			return
		}
		reply(s, "approved", "")
		frame(s, g.Marshal())
		frame(s, ctxEnv.Marshal())
		frame(s, nil)
		var ack [1]byte
		if _, err := io.ReadFull(s, ack[:]); err == nil {
			acked <- ack[0]
		}
	})
	connect(t, joiner.node, front)

	type joined struct {
		res mesh.JoinResult
		err error
	}
	done := make(chan joined, 1)
	go func() {
		r, err := joiner.mesh.JoinSession(ctx, hosted.Key, nil)
		done <- joined{r, err}
	}()
	knock := <-knocks
	if knock.From != joiner.mesh.Self() {
		t.Fatalf("knock from %s", knock.From)
	}
	decide <- true
	j := <-done
	if j.err != nil {
		t.Fatal(j.err)
	}
	if <-acked != 0 || j.res.Backlog != 1 || j.res.Channel.ID != hosted.Keys.ID || j.res.Channel.Host != hostID {
		t.Fatalf("join result %+v", j.res)
	}
	recs, err := joiner.mesh.After(ctx, hosted.Keys.ID, "", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("joiner's history: %d records, %v", len(recs), err)
	}
	if d, err := joiner.mesh.Decrypt(recs[0].Env); err != nil || d.Content != ctxText || d.Kind != mesh.KindContext {
		t.Fatalf("joiner decrypts %+v, %v", d, err)
	}
	// What the joiner writes, the thin host reads with its keys.
	rec, err := joiner.mesh.Send(ctx, hosted.Keys.ID, "msg", "golf from the joiner", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, text, err := hosted.Keys.Decrypt(rec.Env); err != nil || text != "golf from the joiner" {
		t.Fatalf("thin host decrypts %q, %v", text, err)
	}
	// The same knock again: the thin host refuses the replay.
	if _, err := mesh.ResendKnock(ctx, joiner.mesh, hostID, knock); !errors.Is(err, mesh.ErrKnockReplayed) {
		t.Fatalf("replayed knock: %v, want ErrKnockReplayed", err)
	}
	// Denied, then closed.
	go func() {
		_, err := joiner.mesh.JoinSession(ctx, hosted.Key, nil)
		done <- joined{err: err}
	}()
	<-knocks
	decide <- false
	if j := <-done; !errors.Is(j.err, mesh.ErrDenied) {
		t.Fatalf("denied knock: %v", j.err)
	}
	mu.Lock()
	hosted.Close()
	mu.Unlock()
	if _, err := joiner.mesh.JoinSession(ctx, hosted.Key, nil); !errors.Is(err, mesh.ErrSessionClosed) {
		t.Fatalf("knock after close: %v", err)
	}
	// A grant can only be made with the host's key.
	if _, err := hosted.Grant(joiner.node.Key(), "x", joiner.mesh.Self(), time.Now()); !errors.Is(err, mesh.ErrNotHost) {
		t.Fatalf("grant with another key: %v", err)
	}
}
