package mesh_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// waitRecord waits until c holds a record matching pred and returns it.
func waitRecord(t *testing.T, c *collector, what string, pred func(*mesh.Envelope) bool) *mesh.Envelope {
	t.Helper()
	var found *mesh.Envelope
	waitFor(t, 20*time.Second, what, func() bool {
		for _, r := range c.snapshot() {
			if pred(r.Env) {
				found = r.Env
				return true
			}
		}
		return false
	})
	return found
}

func countRecords(c *collector, pred func(*mesh.Envelope) bool) int {
	n := 0
	for _, r := range c.snapshot() {
		if pred(r.Env) {
			n++
		}
	}
	return n
}

func TestDirectMessagesOnline(t *testing.T) {
	ctx := context.Background()
	a := startAgentWith(t, t.TempDir(), "atlas", noMDNS)
	b := startAgentWith(t, t.TempDir(), "nova", noMDNS, mesh.WithCaps("go-review"), mesh.WithDesc("reviews Go"))
	c := startAgentWith(t, t.TempDir(), "orion", noMDNS)
	connect(t, a.node, b.node)
	connect(t, c.node, a.node)
	waitPresence(t, "", 3, a, b, c)
	ca := collect(a.mesh.Subscribe(nil, 0))
	cb := collect(b.mesh.Subscribe(nil, 0))

	rec, delivered, err := a.mesh.SendDirect(ctx, "@nova", "msg", "hello nova", "")
	if err != nil || !delivered {
		t.Fatalf("SendDirect = delivered %v, err %v; want delivered", delivered, err)
	}
	if want := "@" + b.mesh.Self(); rec.Env.Channel != want || rec.Cursor == "" {
		t.Fatalf("record channel %q cursor %q, want %q and a cursor", rec.Env.Channel, rec.Cursor, want)
	}
	got := waitRecord(t, cb, "the DM at nova", func(e *mesh.Envelope) bool { return e.ID == rec.Env.ID })
	if got.Content != "hello nova" || got.From != a.mesh.Self() {
		t.Fatalf("nova got %q from %s", got.Content, got.From)
	}
	reply, _, err := b.mesh.SendDirect(ctx, "@"+a.mesh.Self(), "msg", "hi atlas", rec.Env.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, ca, "the reply at atlas", func(e *mesh.Envelope) bool { return e.ID == reply.Env.ID })
	// Both sides see the same thread, in order.
	for _, x := range []struct {
		who  *agent
		with string
	}{{a, "@nova"}, {b, "@" + a.mesh.Self()}} {
		th, err := x.who.mesh.Thread(ctx, x.with, 50)
		if err != nil {
			t.Fatal(err)
		}
		if len(th) != 2 || th[0].Env.Content != "hello nova" || th[1].Env.Content != "hi atlas" {
			var got []string
			for _, r := range th {
				got = append(got, r.Env.Content)
			}
			t.Fatalf("%s's thread = %q, want [hello nova, hi atlas]", x.who.mesh.Info().Name, got)
		}
	}
	// The card is fetched over its own stream and verified.
	card, err := a.mesh.Card(ctx, b.mesh.Self())
	if err != nil {
		t.Fatal(err)
	}
	if card.Name != "nova" || card.Desc != "reviews Go" || len(card.Caps) != 1 || card.Caps[0] != "go-review" || card.Status != mesh.StatusAvailable {
		t.Fatalf("card = %+v", card)
	}

	// A second "nova" makes the name ambiguous: an error listing both.
	d := startAgentWith(t, t.TempDir(), "nova", noMDNS)
	connect(t, d.node, a.node)
	waitFor(t, 20*time.Second, "two novas in presence", func() bool {
		n := 0
		for _, p := range a.mesh.Who(ctx, "") {
			if p.Name == "nova" {
				n++
			}
		}
		return n == 2
	})
	_, _, err = a.mesh.SendDirect(ctx, "@nova", "msg", "which one?", "")
	if !errors.Is(err, mesh.ErrUnknownAgent) || !strings.Contains(err.Error(), b.mesh.Self()) || !strings.Contains(err.Error(), d.mesh.Self()) {
		t.Fatalf("ambiguous name: err = %v, want ErrUnknownAgent listing both ids", err)
	}
	if _, _, err := a.mesh.SendDirect(ctx, "@nobody", "msg", "x", ""); !errors.Is(err, mesh.ErrUnknownAgent) {
		t.Fatalf("unknown name: err = %v, want ErrUnknownAgent", err)
	}
	if n := countRecords(cb, func(e *mesh.Envelope) bool { return e.Content == "hello nova" }); n != 1 {
		t.Fatalf("nova saw the DM %d times, want 1", n)
	}
}

func TestCallsOnline(t *testing.T) {
	ctx := context.Background()
	a := startAgentWith(t, t.TempDir(), "atlas", noMDNS)
	b := startAgentWith(t, t.TempDir(), "nova", noMDNS, mesh.WithCaps("go-review"))
	connect(t, a.node, b.node)
	waitPresence(t, "", 2, a, b)
	ca := collect(a.mesh.Subscribe(nil, 0))
	cb := collect(b.mesh.Subscribe(nil, 0))
	isReply := func(kind, id string) func(*mesh.Envelope) bool {
		return func(e *mesh.Envelope) bool { return e.Kind == kind && e.ReplyTo == id }
	}

	// Accept: both end up in the conversation channel and talk there.
	call, delivered, err := a.mesh.Call(ctx, "@nova", "review my auth middleware")
	if err != nil || !delivered {
		t.Fatalf("call: delivered %v err %v", delivered, err)
	}
	waitRecord(t, cb, "the call in nova's listen", func(e *mesh.Envelope) bool { return e.ID == call.Env.ID && e.Kind == mesh.KindCall })
	inbox, err := b.mesh.Inbox(ctx)
	if err != nil || len(inbox) != 1 || inbox[0].ID != call.Env.ID || inbox[0].Topic != "review my auth middleware" || inbox[0].Name != "atlas" {
		t.Fatalf("inbox = %+v, %v; want the one call", inbox, err)
	}
	ch, err := b.mesh.Accept(ctx, call.Env.ID[:12])
	if err != nil {
		t.Fatal(err)
	}
	if ch != mesh.CallChannel(call.Env.ID) {
		t.Fatalf("channel %q, want %q", ch, mesh.CallChannel(call.Env.ID))
	}
	waitRecord(t, ca, "call-accept at the caller", isReply(mesh.KindCallAccept, call.Env.ID))
	waitFor(t, 10*time.Second, "caller to join the call channel", func() bool {
		for _, c := range a.mesh.Channels() {
			if c == ch {
				return true
			}
		}
		return false
	})
	if inbox, _ := b.mesh.Inbox(ctx); len(inbox) != 0 {
		t.Fatalf("inbox after accept = %+v, want empty", inbox)
	}
	if _, err := b.mesh.Accept(ctx, call.Env.ID); !errors.Is(err, mesh.ErrUnknownCall) {
		t.Fatalf("second accept: %v, want ErrUnknownCall", err)
	}
	m1, err := a.mesh.Send(ctx, ch, "msg", "the diff is in the bundle", "")
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, cb, "caller's message in the call channel", func(e *mesh.Envelope) bool { return e.ID == m1.Env.ID })
	m2, err := b.mesh.Send(ctx, ch, "msg", "looking now", "")
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, ca, "callee's message in the call channel", func(e *mesh.Envelope) bool { return e.ID == m2.Env.ID })

	// Reject reaches the caller with its reason.
	call2, _, err := a.mesh.Call(ctx, "@nova", "another thing")
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, cb, "second call", func(e *mesh.Envelope) bool { return e.ID == call2.Env.ID })
	if err := b.mesh.Reject(ctx, call2.Env.ID, "not now"); err != nil {
		t.Fatal(err)
	}
	if rej := waitRecord(t, ca, "call-reject at the caller", isReply(mesh.KindCallReject, call2.Env.ID)); rej.Content != "not now" {
		t.Fatalf("reject reason %q", rej.Content)
	}

	// A busy agent rejects by itself; match skips it.
	if err := b.mesh.SetStatus(mesh.StatusBusy); err != nil {
		t.Fatal(err)
	}
	call3, _, err := a.mesh.Call(ctx, "@nova", "urgent")
	if err != nil {
		t.Fatal(err)
	}
	if rej := waitRecord(t, ca, "automatic busy reject", isReply(mesh.KindCallReject, call3.Env.ID)); rej.Content != mesh.StatusBusy {
		t.Fatalf("busy reject reason %q", rej.Content)
	}
	if inbox, _ := b.mesh.Inbox(ctx); len(inbox) != 0 {
		t.Fatalf("busy agent's inbox = %+v, want empty", inbox)
	}
	waitFor(t, 10*time.Second, "busy status in presence", func() bool {
		for _, p := range a.mesh.Who(ctx, "") {
			if p.ID == b.mesh.Self() {
				return p.Status == mesh.StatusBusy
			}
		}
		return false
	})
	if _, _, err := a.mesh.Match(ctx, "go-review", "x"); !errors.Is(err, mesh.ErrNoAgent) {
		t.Fatalf("match with only a busy agent: %v, want ErrNoAgent", err)
	}
	if err := b.mesh.SetStatus(mesh.StatusAvailable); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "available status in presence", func() bool {
		for _, p := range a.mesh.Who(ctx, "") {
			if p.ID == b.mesh.Self() {
				return p.Status == mesh.StatusAvailable
			}
		}
		return false
	})
	card, call4, err := a.mesh.Match(ctx, "go-review", "pair on tests")
	if err != nil || card.ID != b.mesh.Self() {
		t.Fatalf("match = %s, %v; want nova", card.ID, err)
	}
	waitRecord(t, cb, "matched call", func(e *mesh.Envelope) bool { return e.ID == call4.Env.ID && e.Content == "pair on tests" })
}

// TestOfflineTargetGetsMessagesOnceWhenItStarts sends a DM and a call to an
// agent that has never run, then starts it: both arrive exactly once, the
// call is pending in its inbox, and accept reaches the caller.
func TestOfflineTargetGetsMessagesOnceWhenItStarts(t *testing.T) {
	ctx := context.Background()
	a := startAgentWith(t, t.TempDir(), "atlas", noMDNS)
	bDir := t.TempDir()
	bKey, err := node.LoadIdentity(filepath.Join(bDir, "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	bID, err := peer.IDFromPrivateKey(bKey)
	if err != nil {
		t.Fatal(err)
	}
	ca := collect(a.mesh.Subscribe(nil, 0))
	dm, delivered, err := a.mesh.SendDirect(ctx, "@"+bID.String(), "msg", "read this when you are back", "")
	if err != nil || delivered {
		t.Fatalf("dm to offline agent: delivered %v err %v; want queued", delivered, err)
	}
	call, delivered, err := a.mesh.Call(ctx, bID.String(), "review when you are up")
	if err != nil || delivered {
		t.Fatalf("call to offline agent: delivered %v err %v; want queued", delivered, err)
	}
	if n := a.mesh.Pending(); n != 2 {
		t.Fatalf("pending = %d, want 2", n)
	}

	b := startAgentWith(t, bDir, "nova", noMDNS)
	cb := collect(b.mesh.Subscribe(nil, 0))
	connect(t, b.node, a.node)
	waitFor(t, 30*time.Second, "outbox to drain", func() bool { return a.mesh.Pending() == 0 })
	waitRecord(t, cb, "the call at nova", func(e *mesh.Envelope) bool { return e.ID == call.Env.ID })
	recs, err := b.mesh.After(ctx, "@"+bID.String(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Env.ID != dm.Env.ID || recs[1].Env.ID != call.Env.ID {
		t.Fatalf("nova stored %d DMs, want the dm then the call", len(recs))
	}
	for _, id := range []string{dm.Env.ID, call.Env.ID} {
		if n := countRecords(cb, func(e *mesh.Envelope) bool { return e.ID == id }); n != 1 {
			t.Fatalf("envelope %s delivered %d times, want 1", id[:8], n)
		}
	}
	inbox, err := b.mesh.Inbox(ctx)
	if err != nil || len(inbox) != 1 || inbox[0].ID != call.Env.ID {
		t.Fatalf("inbox = %+v, %v", inbox, err)
	}
	ch, err := b.mesh.Accept(ctx, call.Env.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, ca, "accept at the caller", func(e *mesh.Envelope) bool { return e.Kind == mesh.KindCallAccept && e.ReplyTo == call.Env.ID })
	waitFor(t, 10*time.Second, "caller in the call channel", func() bool {
		for _, c := range a.mesh.Channels() {
			if c == ch {
				return true
			}
		}
		return false
	})
	m, err := b.mesh.Send(ctx, ch, "msg", "here now", "")
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, ca, "message in the call channel", func(e *mesh.Envelope) bool { return e.ID == m.Env.ID })
}
