package rendezvous_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// tap is a TCP proxy in front of the gateway that records every byte the
// gateway sends to its client: server frames are not masked and the
// gateway does not compress, so the relayed JSON frames appear as sent.
type tap struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // guards down, conns
	down  bytes.Buffer
	conns []net.Conn
}

func newTap(t *testing.T, target string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tap{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
			go func() { defer p.wg.Done(); io.Copy(io.MultiWriter(c, p), s); c.Close() }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *tap) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.down.Write(b)
	p.mu.Unlock()
	return len(b), nil
}

func (p *tap) bytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.down.Bytes())
}

func (p *tap) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// thinVia authenticates a thin client with a fresh key through addr.
func thinVia(t *testing.T, addr string) (*wsgateway.Client, crypto.PrivKey, string) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	c, err := wsgateway.Dial(ctx(t), "ws://"+addr+"/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(ctx(t), k, ""); err != nil {
		t.Fatal(err)
	}
	return c, k, id.String()
}

type knockResult struct {
	s   wsgateway.ThinSession
	err error
}

// knockAsync sends knock through c; pending is closed once the host holds it.
func knockAsync(t *testing.T, c *wsgateway.Client, k crypto.PrivKey, knock *mesh.Envelope) (<-chan knockResult, <-chan struct{}) {
	out := make(chan knockResult, 1)
	pending := make(chan struct{})
	go func() {
		s, err := c.SendKnock(ctx(t), k, knock, "", 20*time.Second, func() { close(pending) })
		out <- knockResult{s, err}
	}()
	return out, pending
}

func code(err error) string {
	var e *wsgateway.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return "not an *Error: " + errString(err)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestThinClientKnocksThroughGateway: a thin client (its own key, no node)
// on the rendezvous's remote gateway knocks on a session an agent hosts.
// The host sees the knock as the client's (its signature, not the
// rendezvous's), approves, and the client gets the grant and the whole
// backlog in one call and decrypts it with its own key. Every byte the
// gateway sent to the client is recorded: no plaintext in it, nor in the
// rendezvous's store. A replayed knock, a knock signed by another identity,
// a denied knock and a knock after close are refused with their codes.
func TestThinClientKnocksThroughGateway(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, nil)
	a := agentAt(t, r, "atlas", t.TempDir())
	secrets := []string{"wombat context snapshot", "kakapo first step"}
	sess, err := a.Mesh().OpenSession(ctx(t), "thin session", secrets[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	id := sess.Channel.ID
	if _, err := a.Mesh().Send(ctx(t), id, "", secrets[1], ""); err != nil {
		t.Fatal(err)
	}
	tp := newTap(t, r.WSAddr())
	c, k, self := thinVia(t, tp.ln.Addr().String())

	knock, err := mesh.NewKnock(k, "thin", sess.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, pending := knockAsync(t, c, k, knock)
	select {
	case <-pending:
	case j := <-res:
		t.Fatalf("knock answered before pending: %v", j.err)
	}
	ks := a.Mesh().Knocks()
	if len(ks) != 1 || ks[0].From != self || ks[0].ID != knock.ID {
		t.Fatalf("host's knocks %+v, want the thin client's %s", ks, self)
	}
	if _, err := a.Mesh().Approve(ctx(t), self); err != nil {
		t.Fatal(err)
	}
	j := <-res
	if j.err != nil {
		t.Fatal(j.err)
	}
	if j.s.Keys.ID != id || len(j.s.Backlog) != 2 {
		t.Fatalf("thin session %s with %d envelopes, want %s with 2", j.s.Keys.ID, len(j.s.Backlog), id)
	}
	var got []string
	for _, e := range j.s.Backlog {
		kind, text, err := j.s.Keys.Decrypt(e)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, kind+":"+text)
	}
	if want := "context:" + secrets[0] + "|msg:" + secrets[1]; strings.Join(got, "|") != want {
		t.Fatalf("decrypted %q, want %q", strings.Join(got, "|"), want)
	}
	if p, _ := a.Mesh().Private(id); !strings.Contains(strings.Join(p.Members, " "), self) {
		t.Fatalf("the host's members %v lack the thin client", p.Members)
	}
	// What the gateway relayed: the grant and ciphertext, no plaintext.
	down := tp.bytes()
	if !bytes.Contains(down, []byte(`"session_backlog"`)) || !bytes.Contains(down, []byte("cfx1.")) {
		t.Fatal("the tap did not see the relayed backlog")
	}
	for _, s := range secrets {
		for _, w := range strings.Fields(s) {
			if bytes.Contains(down, []byte(w)) {
				t.Fatalf("the gateway sent plaintext %q to the client", w)
			}
		}
	}
	if j.s.Grant.Channel != "@"+self || j.s.Grant.From != a.Info().ID {
		t.Fatalf("grant from %s to %s", j.s.Grant.From, j.s.Grant.Channel)
	}

	// Afterwards the thin member reads live and writes through the gateway:
	// the rendezvous archives the session (the host's follower asked), so
	// it subscribes to the ~id and publishes its own ciphertext.
	waitFor(t, "the rendezvous follows the session", func() bool { return slices.Contains(r.Mesh().Channels(), id) })
	events, err := c.Subscribe(ctx(t), []string{id}, "")
	if err != nil {
		t.Fatal(err)
	}
	live := "quetzal after approval"
	secrets = append(secrets, live)
	if _, err := a.Mesh().Send(ctx(t), id, "", live, ""); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		select {
		case ev := <-events:
			// Earlier messages may arrive too (the archive catching up).
			_, text, err := j.s.Keys.Decrypt(ev.Record.Env)
			if err != nil {
				t.Fatalf("event %s does not decrypt: %v", ev.Record.Env.ID, err)
			}
			done = text == live
		case <-time.After(30 * time.Second):
			t.Fatal("the thin member never got the live message")
		}
	}
	reply := "toucan from the thin member"
	secrets = append(secrets, reply)
	if _, err := c.PublishPrivate(ctx(t), k, "thin", j.s.Keys, "msg", reply); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the host stores the thin member's message", func() bool {
		for _, rec := range stored(t, a.Mesh(), id) {
			if d, err := a.Mesh().Decrypt(rec.Env); err == nil && d.Content == reply && rec.Env.From == self {
				return true
			}
		}
		return false
	})
	down = tp.bytes()
	for _, w := range []string{"quetzal", "toucan"} {
		if bytes.Contains(down, []byte(w)) {
			t.Fatalf("the gateway sent plaintext %q to the client", w)
		}
	}
	noPlaintext(t, r, secrets)

	// Refusals through the gateway.
	refused := func(what string, knock *mesh.Envelope, key crypto.PrivKey, decide func(), want string) {
		t.Helper()
		res, pending := knockAsync(t, c, key, knock)
		if decide != nil {
			select {
			case <-pending:
				decide()
			case j := <-res:
				t.Fatalf("%s: answered before pending: %v", what, j.err)
			}
		}
		if j := <-res; code(j.err) != want {
			t.Fatalf("%s: %v (code %s), want %s", what, j.err, code(j.err), want)
		}
	}
	refused("replayed knock", knock, k, nil, wsgateway.CodeKnockReplayed)
	other, _, _ := crypto.GenerateEd25519Key(nil)
	foreign, _ := mesh.NewKnock(other, "other", sess.Key, time.Now())
	refused("another identity's knock", foreign, other, nil, wsgateway.CodeUnauthorized)
	k2, _ := mesh.NewKnock(k, "thin", sess.Key, time.Now())
	refused("denied knock", k2, k, func() {
		if err := a.Mesh().Deny(ctx(t), self); err != nil {
			t.Error(err)
		}
	}, wsgateway.CodeDenied)
	if err := a.Mesh().CloseSession(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	k3, _ := mesh.NewKnock(k, "thin", sess.Key, time.Now())
	refused("knock after close", k3, k, nil, wsgateway.CodeSessionClosed)
	noPlaintext(t, r, secrets)
}
