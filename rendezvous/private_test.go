package rendezvous_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/rendezvous"
)

// agentAt starts an agent on home (which may hold a previous run's state)
// that uses r. The caller may Close it early; Cleanup closes it again.
func agentAt(t *testing.T, r *rendezvous.Rendezvous, name, home string) *agent.Agent {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Home = home
	cfg.Name = name
	cfg.MDNS = false
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Rendezvous = r.Addrs()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// plain returns the decrypted texts of m's records of channel, oldest first.
func plain(t *testing.T, m *mesh.Mesh, channel string) []string {
	t.Helper()
	recs, err := m.After(ctx(t), channel, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		d, err := m.Decrypt(r.Env)
		if err != nil {
			t.Fatalf("decrypt %s: %v", r.Env.ID, err)
		}
		out = append(out, d.Content)
	}
	return out
}

func stored(t *testing.T, m *mesh.Mesh, channel string) []mesh.Record {
	t.Helper()
	recs, err := m.After(ctx(t), channel, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// noPlaintext fails if any envelope stored by the archive, in any channel,
// or any search result contains one of the secrets.
func noPlaintext(t *testing.T, r *rendezvous.Rendezvous, secrets []string) {
	t.Helper()
	m := r.Mesh()
	for _, ch := range m.Channels() {
		for _, rec := range stored(t, m, ch) {
			e := rec.Env
			for _, s := range secrets {
				if strings.Contains(e.Content, s) || strings.Contains(string(e.Marshal()), s) {
					t.Fatalf("the rendezvous stored plaintext %q in %s (kind %s)", s, ch, e.Kind)
				}
			}
			if ch[0] == '~' && e.Kind != mesh.KindEncrypted {
				t.Fatalf("the rendezvous stored a %q envelope in private channel %s", e.Kind, ch)
			}
		}
	}
	for _, s := range secrets {
		for _, w := range strings.Fields(s) {
			recs, err := m.Search(ctx(t), w, "", 100)
			if err != nil && !errors.Is(err, mesh.ErrNoSearch) {
				t.Fatalf("search %q: %v", w, err)
			}
			if len(recs) > 0 {
				t.Fatalf("search %q on the rendezvous found %d envelopes", w, len(recs))
			}
		}
	}
}

// admit has joiner knock with key and host approve it; it returns the
// backlog count.
func admit(t *testing.T, host, joiner *agent.Agent, key string) int {
	t.Helper()
	type res struct {
		n   int
		err error
	}
	joined := make(chan res, 1)
	go func() {
		r, err := joiner.Mesh().JoinSession(ctx(t), key, nil)
		joined <- res{r.Backlog, err}
	}()
	waitFor(t, "the knock", func() bool { return len(host.Mesh().Knocks()) == 1 })
	if _, err := host.Mesh().Approve(ctx(t), joiner.Info().ID); err != nil {
		t.Fatal(err)
	}
	j := <-joined
	if j.err != nil {
		t.Fatal(j.err)
	}
	return j.n
}

// TestPrivateArchiveThroughRendezvous: two agents hold a session (a private
// channel) through a rendezvous; the rendezvous archives it as ciphertext
// only (no plaintext in its store, by scan and by search), both members
// read everything, and a member that was offline catches up from the
// rendezvous alone after the other member stopped.
func TestPrivateArchiveThroughRendezvous(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, nil)
	homeA, homeB := t.TempDir(), t.TempDir()
	a := agentAt(t, r, "atlas", homeA)
	b := agentAt(t, r, "nova", homeB)
	secrets := []string{"quokka context snapshot", "marmoset first step", "pangolin reply", "axolotl second step", "narwhal while away"}

	sess, err := a.Mesh().OpenSession(ctx(t), "archive test", secrets[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	id := sess.Channel.ID
	if _, err := a.Mesh().Send(ctx(t), id, "", secrets[1], ""); err != nil {
		t.Fatal(err)
	}
	// The host's follower asks the rendezvous to archive the session; the
	// archive pulls what was said before it subscribed.
	waitFor(t, "the rendezvous follows the session", func() bool { return slices.Contains(r.Mesh().Channels(), id) })
	waitFor(t, "the archive has the first two messages", func() bool { return len(stored(t, r.Mesh(), id)) == 2 })

	if n := admit(t, a, b, sess.Key); n != 2 {
		t.Fatalf("nova's backlog: %d envelopes, want 2", n)
	}
	if _, err := b.Mesh().Send(ctx(t), id, "", secrets[2], ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Mesh().Send(ctx(t), id, "", secrets[3], ""); err != nil {
		t.Fatal(err)
	}
	want := secrets[:4]
	for _, m := range []*mesh.Mesh{a.Mesh(), b.Mesh()} {
		waitFor(t, "both members read everything", func() bool { return len(stored(t, m, id)) == len(want) })
		got := plain(t, m, id)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Fatalf("member read %q, want %q", got, w)
		}
	}
	waitFor(t, "the archive has all four", func() bool { return len(stored(t, r.Mesh(), id)) == 4 })
	if _, err := r.Mesh().Decrypt(stored(t, r.Mesh(), id)[0].Env); !errors.Is(err, mesh.ErrNoKey) {
		t.Fatalf("the rendezvous decrypted a private message: %v", err)
	}

	// nova goes offline; atlas writes, then stops too.
	b.Close()
	if _, err := a.Mesh().Send(ctx(t), id, "", secrets[4], ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the archive has the message nova missed", func() bool { return len(stored(t, r.Mesh(), id)) == 5 })
	a.Close()
	noPlaintext(t, r, secrets)

	// nova comes back with only the rendezvous up, and catches up from it.
	b2 := agentAt(t, r, "nova", homeB)
	waitFor(t, "nova caught up from the rendezvous", func() bool { return len(stored(t, b2.Mesh(), id)) == 5 })
	if got := plain(t, b2.Mesh(), id); !slices.Contains(got, secrets[4]) {
		t.Fatalf("nova read %q after catching up, want %q among them", got, secrets[4])
	}
	noPlaintext(t, r, secrets)
}

// TestPrivateArchiveFollowsRotation: when a removal rotates the key (a new
// topic), the members send the new topic and the archive moves there.
func TestPrivateArchiveFollowsRotation(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, nil)
	a := agentAt(t, r, "atlas", t.TempDir())
	b := agentAt(t, r, "nova", t.TempDir())
	c := agentAt(t, r, "orion", t.TempDir())
	sess, err := a.Mesh().OpenSession(ctx(t), "ops", "capybara context", 0)
	if err != nil {
		t.Fatal(err)
	}
	pc := sess.Channel
	for _, x := range []*agent.Agent{b, c} {
		admit(t, a, x, sess.Key)
	}
	first := a.Mesh().PrivateTopic(pc.ID)
	waitFor(t, "the archive follows #ops", func() bool { return slices.Contains(r.Mesh().Channels(), pc.ID) })
	if err := a.Mesh().Remove(ctx(t), pc.ID, c.Info().ID); err != nil {
		t.Fatal(err)
	}
	second := a.Mesh().PrivateTopic(pc.ID)
	if second == first || second == "" {
		t.Fatalf("topic after removal %q, before %q", second, first)
	}
	waitFor(t, "nova on the new topic", func() bool { return b.Mesh().PrivateTopic(pc.ID) == second })
	// The archive moves to the new topic and stores what is said there.
	if _, err := a.Mesh().Send(ctx(t), pc.ID, "", "okapi after rotation", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the archive stores the message after rotation", func() bool {
		for _, rec := range stored(t, r.Mesh(), pc.ID) {
			if d, err := a.Mesh().Decrypt(rec.Env); err == nil && d.Content == "okapi after rotation" {
				return true
			}
		}
		return false
	})
	// Its subscription is on the new topic: nova's next message arrives live.
	if _, err := b.Mesh().Send(ctx(t), pc.ID, "", "ibex from nova", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the archive stores nova's message", func() bool { return len(stored(t, r.Mesh(), pc.ID)) == 3 })
	noPlaintext(t, r, []string{"capybara context", "okapi after rotation", "ibex from nova"})
}

// TestFollowPrivateEntries: the follow protocol's private entries are
// checked (a private ~id, a well-formed topic) and joined keylessly.
func TestFollowPrivateEntries(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, func(c *rendezvous.Config) { c.WS, c.Metrics = "", "" })
	k, _, _ := crypto.GenerateEd25519Key(nil)
	h, err := node.New(node.WithIdentity(k), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ai, _ := peer.AddrInfoFromString(r.Addrs()[0])
	if err := h.Host().Connect(ctx(t), *ai); err != nil {
		t.Fatal(err)
	}
	const id, id2 = "~00112233445566778899aabbccddeeff", "~ffeeddccbbaa99887766554433221100"
	good := "/confab/chan/1/" + strings.Repeat("ab", 32)
	entries := []rendezvous.PrivateEntry{
		{Channel: id, Topic: good},
		{Channel: id2, Topic: "/confab/chan/1/" + strings.Repeat("AB", 32)},
		{Channel: "#general", Topic: good},
		{Channel: "~short", Topic: good},
		{Channel: id2, Topic: "/confab/chan/1/#general"},
	}
	rep, err := rendezvous.FollowPrivate(ctx(t), h.Host(), ai.ID, []string{"#dev"}, entries)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"#dev", id}; !slices.Equal(rep.Following, want) {
		t.Errorf("following %v, want %v", rep.Following, want)
	}
	wantRefused := map[string]string{id2: rendezvous.RefusedBadTopic, "#general": rendezvous.RefusedBadChannel, "~short": rendezvous.RefusedBadChannel}
	if len(rep.Refused) != len(wantRefused) {
		t.Errorf("refused %v, want %v", rep.Refused, wantRefused)
	}
	for ch, why := range wantRefused {
		if rep.Refused[ch] != why {
			t.Errorf("refused[%s] = %q, want %q", ch, rep.Refused[ch], why)
		}
	}
	if got := r.Mesh().Channels(); !slices.Equal(got, []string{"#dev", id}) {
		t.Errorf("the archive follows %v", got)
	}
}
