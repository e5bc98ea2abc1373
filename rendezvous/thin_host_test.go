package rendezvous_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// nextKnock waits for a knock on the thin host.
func nextKnock(t *testing.T, th *wsgateway.ThinHost) wsgateway.HostedKnock {
	t.Helper()
	select {
	case k := <-th.Knocks():
		return k
	case <-time.After(30 * time.Second):
		t.Fatal("no knock reached the thin host")
	}
	return wsgateway.HostedKnock{}
}

// TestThinClientHostsSession: a thin client (its own key, no node) opens
// a session through the rendezvous's gateway, and approves an agent's
// knock and another thin client's knock. Each joiner gets the whole
// backlog in its one join call; messages flow live among all three; a
// denied knock, a replayed knock, a knock after close and a knock while
// the host is offline are refused with their own errors. Every byte the
// gateway sent the host is recorded: no plaintext in it, nor in the
// rendezvous's store.
func TestThinClientHostsSession(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, nil)
	tp := newTap(t, r.WSAddr())
	hc, hk, hostID := thinVia(t, tp.ln.Addr().String())
	secrets := []string{"narwhal axolotl capybara"}
	th, err := hc.HostSession(ctx(t), hk, "thin-host", "thin hosted", secrets[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	id := th.Keys().ID
	sk, err := mesh.ParseSessionKey(th.Key())
	if err != nil || sk.Host != hostID || sk.Front != r.Mesh().Info().ID || sk.Channel != id {
		t.Fatalf("session key %+v (%v): want host %s front %s", sk, err, hostID, r.Mesh().Info().ID)
	}
	events, err := hc.Subscribe(ctx(t), []string{id}, "")
	if err != nil {
		t.Fatal(err)
	}

	// An agent knocks; the host approves; the agent has the context.
	a := agentAt(t, r, "atlas", t.TempDir())
	type joined struct {
		res mesh.JoinResult
		err error
	}
	joinAsync := func(m *mesh.Mesh) <-chan joined {
		out := make(chan joined, 1)
		go func() {
			res, err := m.JoinSession(ctx(t), th.Key(), nil)
			out <- joined{res, err}
		}()
		return out
	}
	aj := joinAsync(a.Mesh())
	kn := nextKnock(t, th)
	if kn.From != a.Info().ID {
		t.Fatalf("knock from %s, want the agent %s", kn.From, a.Info().ID)
	}
	n, err := th.Approve(ctx(t), kn.ID)
	if err != nil {
		t.Fatal(err)
	}
	j := <-aj
	if j.err != nil {
		t.Fatal(j.err)
	}
	if n != 1 || j.res.Backlog != 1 || j.res.Channel.ID != id {
		t.Fatalf("approve backlog %d, join backlog %d on %s; want 1 on %s", n, j.res.Backlog, j.res.Channel.ID, id)
	}
	if got := plain(t, a.Mesh(), id); !slices.Contains(got, secrets[0]) {
		t.Fatalf("the agent holds %q, want the context", got)
	}

	// Live both ways between the thin host and the agent.
	fromAgent := "ibex pangolin"
	secrets = append(secrets, fromAgent)
	if _, err := a.Mesh().Send(ctx(t), id, "", fromAgent, ""); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, th.Keys(), fromAgent)
	fromHost := "okapi tarsier"
	secrets = append(secrets, fromHost)
	if _, err := hc.PublishPrivate(ctx(t), hk, "thin-host", th.Keys(), "msg", fromHost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent reads the thin host", func() bool { return slices.Contains(plain(t, a.Mesh(), id), fromHost) })

	// A second thin client knocks through the same gateway.
	tc, tk, thinID := thin(t, r, "")
	tres := make(chan knockResult, 1)
	go func() {
		s, err := tc.KnockSession(ctx(t), tk, "thin-joiner", th.Key(), 20*time.Second, nil)
		tres <- knockResult{s, err}
	}()
	kn = nextKnock(t, th)
	if kn.From != thinID {
		t.Fatalf("knock from %s, want the thin joiner %s", kn.From, thinID)
	}
	if _, err := th.Approve(ctx(t), kn.ID); err != nil {
		t.Fatal(err)
	}
	tj := <-tres
	if tj.err != nil {
		t.Fatal(tj.err)
	}
	var got []string
	for _, e := range tj.s.Backlog {
		_, text, err := tj.s.Keys.Decrypt(e)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, text)
	}
	if want := []string{secrets[0], fromAgent, fromHost}; !slices.Equal(got, want) {
		t.Fatalf("thin joiner's backlog %q, want %q", got, want)
	}
	// The agent learns the new member (the host's fresh grant, pushed by
	// the rendezvous), so it accepts the thin joiner's messages.
	waitFor(t, "the agent knows the thin joiner", func() bool {
		p, err := a.Mesh().Private(id)
		return err == nil && slices.Contains(p.Members, thinID)
	})
	fromThin := "jerboa numbat"
	secrets = append(secrets, fromThin)
	if _, err := tc.PublishPrivate(ctx(t), tk, "thin-joiner", tj.s.Keys, "msg", fromThin); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent reads the thin joiner", func() bool { return slices.Contains(plain(t, a.Mesh(), id), fromThin) })
	waitEvent(t, events, th.Keys(), fromThin)

	// Refusals: denied, replayed, after close, host offline.
	b := agentAt(t, r, "bora", t.TempDir())
	bj := joinAsync(b.Mesh())
	kn = nextKnock(t, th)
	if err := th.Deny(ctx(t), kn.ID); err != nil {
		t.Fatal(err)
	}
	if j := <-bj; !errors.Is(j.err, mesh.ErrDenied) {
		t.Fatalf("denied knock: %v, want ErrDenied", j.err)
	}
	replay, err := mesh.NewKnock(tk, "thin-joiner", th.Key(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan knockResult, 1)
	go func() {
		s, err := tc.SendKnock(ctx(t), tk, replay, sk.Front, 20*time.Second, nil)
		first <- knockResult{s, err}
	}()
	kn = nextKnock(t, th)
	if _, err := tc.SendKnock(ctx(t), tk, replay, sk.Front, 20*time.Second, nil); code(err) != wsgateway.CodeKnockReplayed {
		t.Fatalf("replayed knock: %v (code %s), want %s", err, code(err), wsgateway.CodeKnockReplayed)
	}
	th.Close(ctx(t)) // the waiting knock is refused with closed
	if j := <-first; code(j.err) != wsgateway.CodeSessionClosed {
		t.Fatalf("knock waiting at close: %v, want %s", j.err, wsgateway.CodeSessionClosed)
	}
	if j := <-joinAsync(b.Mesh()); !errors.Is(j.err, mesh.ErrSessionClosed) {
		t.Fatalf("knock after close: %v, want ErrSessionClosed", j.err)
	}
	hc.Close() // however far the gateway got in noticing, the knock finds no host
	if j := <-joinAsync(b.Mesh()); !errors.Is(j.err, mesh.ErrHostOffline) {
		t.Fatalf("knock while the host is offline: %v, want ErrHostOffline", j.err)
	}

	// The gateway relayed ciphertext only.
	down := tp.bytes()
	if !bytes.Contains(down, []byte(`"host_knock"`)) || !bytes.Contains(down, []byte("cfx1.")) {
		t.Fatal("the tap did not see the knocks and the ciphertext")
	}
	for _, s := range secrets {
		for _, w := range strings.Fields(s) {
			if bytes.Contains(down, []byte(w)) {
				t.Fatalf("the gateway sent plaintext %q to the thin host", w)
			}
		}
	}
	noPlaintext(t, r, secrets)
}

// waitEvent reads events until one decrypts (with keys) to text.
func waitEvent(t *testing.T, events <-chan wsgateway.Event, keys *mesh.ChannelKeys, text string) {
	t.Helper()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("subscription ended")
			}
			if _, got, err := keys.Decrypt(ev.Record.Env); err == nil && got == text {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the thin host never got %q", text)
		}
	}
}
