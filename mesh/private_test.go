package mesh_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
)

// recorder is a raw libp2p node that keeps every byte it receives: gossip on
// a topic it subscribes to and every stream it opens or accepts.
type recorder struct {
	h   *node.Host
	mu  sync.Mutex
	got bytes.Buffer
}

func (r *recorder) add(b []byte) { r.mu.Lock(); r.got.Write(b); r.mu.Unlock() }

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.got.Bytes())
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	key, err := node.LoadIdentity(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := node.New(node.WithIdentity(key), node.WithListen("/ip4/127.0.0.1/tcp/0"), node.WithMDNS(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &recorder{h: h}
}

// listen subscribes to topic and records everything that arrives on it.
func (r *recorder) listen(t *testing.T, topic string) {
	t.Helper()
	tp, err := r.h.PubSub().Join(topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tp.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := sub.Next(ctx)
			if err != nil {
				return
			}
			r.add(msg.Data)
		}
	}()
	t.Cleanup(func() { cancel(); sub.Cancel(); <-done; tp.Close() })
}

// pull asks p for channel's history over the catch-up protocol as if it
// were a member, recording whatever comes back.
func (r *recorder) pull(t *testing.T, p peer.ID, channel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.h.Host().NewStream(ctx, p, "/confab/sync/1")
	if err != nil {
		return
	}
	defer s.Close()
	req, _ := json.Marshal(mesh.SyncRequest{Type: "sync", V: 1, Channel: channel, Have: map[string]uint64{}, Limit: 1000})
	var l [4]byte
	l[3] = byte(len(req))
	l[2] = byte(len(req) >> 8)
	s.Write(append(l[:], req...))
	s.CloseWrite()
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		r.add(buf[:n])
		if err != nil {
			return
		}
	}
}

// storedContents returns every envelope content in a's store, all channels.
func storedContents(t *testing.T, a *agent) string {
	t.Helper()
	ctx := context.Background()
	chans, err := a.db.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, ch := range chans {
		recs, err := a.mesh.After(ctx, ch, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			sb.WriteString(r.Env.Content)
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}

// filesContain reports which of phrases occur in the files under dir. Only
// the first 64 MiB of a file are read: badger preallocates sparse value-log
// and memtable files and writes them from the start.
func filesContain(t *testing.T, dir string, phrases ...string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		b, _ := io.ReadAll(io.LimitReader(f, 64<<20))
		for _, ph := range phrases {
			if bytes.Contains(b, []byte(ph)) {
				found = append(found, ph)
			}
		}
		return nil
	})
	return found
}

func decrypted(t *testing.T, a *agent, ch string) []string {
	t.Helper()
	recs, err := a.mesh.After(context.Background(), ch, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		e, err := a.mesh.Decrypt(r.Env)
		if err != nil {
			t.Fatalf("%s cannot decrypt %s: %v", a.mesh.Info().Name, r.Env.ID, err)
		}
		out = append(out, e.Kind+":"+e.Content)
	}
	return out
}

func TestSessionKnockApproveBacklog(t *testing.T) {
	ctx := context.Background()
	host := startAgentWith(t, t.TempDir(), "host", noMDNS)
	joiner := startAgentWith(t, t.TempDir(), "joiner", noMDNS)
	rec := newRecorder(t)
	connect(t, joiner.node, host.node)
	connect(t, rec.h, host.node)
	waitPresence(t, "", 2, host, joiner)
	hostSub := collect(host.mesh.Subscribe(nil, 0))

	const ctxText, secret1, live = "CONTEXT-alpha the migration plan", "SECRET-bravo rotate the db password", "LIVE-charlie after approval"
	sess, err := host.mesh.OpenSession(ctx, "db migration", ctxText, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := sess.Channel.ID
	if !strings.HasPrefix(sess.Key, mesh.SessionKeyPrefix) || strings.Contains(sess.Key, ch[1:]) {
		t.Fatalf("session key %q", sess.Key)
	}
	topic := mesh.TopicOf(host.mesh, ch)
	if strings.Contains(topic, ch[1:]) {
		t.Fatalf("topic %q reveals the channel id", topic)
	}
	// The eavesdropper knows even the topic: it still sees only ciphertext.
	rec.listen(t, topic)
	waitFor(t, 20*time.Second, "recorder in the topic mesh", func() bool {
		return len(host.node.PubSub().ListPeers(topic)) > 0
	})
	if _, err := host.mesh.Send(ctx, ch, "msg", secret1, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "gossip at the recorder", func() bool { return bytes.Contains(rec.bytes(), []byte("cfx1.")) })
	rec.pull(t, host.node.ID(), ch)

	// With the key but no approval: no way in.
	if err := joiner.mesh.Join(ctx, ch); !errors.Is(err, mesh.ErrNoKey) {
		t.Fatalf("join without approval: %v, want ErrNoKey", err)
	}
	if err := host.mesh.Invite(ctx, ch, "@joiner"); !errors.Is(err, mesh.ErrSessionGate) {
		t.Fatalf("invite into a session: %v, want ErrSessionGate", err)
	}
	type joined struct {
		res mesh.JoinResult
		err error
	}
	done := make(chan joined, 1)
	pending := make(chan struct{})
	go func() {
		r, err := joiner.mesh.JoinSession(ctx, sess.Key, func() { close(pending) })
		done <- joined{r, err}
	}()
	<-pending
	knock := waitRecord(t, hostSub, "the knock in the host's listen", func(e *mesh.Envelope) bool { return e.Kind == mesh.KindKnock })
	if knock.From != joiner.mesh.Self() || knock.Channel != "@"+host.mesh.Self() {
		t.Fatalf("knock %+v", knock)
	}
	if ks := host.mesh.Knocks(); len(ks) != 1 || ks[0].From != joiner.mesh.Self() || ks[0].Topic != "db migration" {
		t.Fatalf("knocks = %+v", ks)
	}
	for _, who := range []*agent{host, joiner} {
		if s := storedContents(t, who); strings.Contains(s, "alpha") || strings.Contains(s, "bravo") {
			t.Fatalf("%s's store holds plaintext", who.mesh.Info().Name)
		}
	}
	if b := rec.bytes(); bytes.Contains(b, []byte("alpha")) || bytes.Contains(b, []byte("bravo")) {
		t.Fatal("the recorder saw plaintext")
	}
	if _, err := host.mesh.Approve(ctx, "@nobody"); !errors.Is(err, mesh.ErrNoKnock) {
		t.Fatalf("approve of nobody: %v", err)
	}

	// Approval: keys and the whole backlog in the one call.
	if _, err := host.mesh.Approve(ctx, "@joiner"); err != nil {
		t.Fatal(err)
	}
	j := <-done
	if j.err != nil {
		t.Fatal(j.err)
	}
	if j.res.Backlog != 2 || j.res.Channel.Topic != "db migration" {
		t.Fatalf("join result %+v, want backlog 2", j.res)
	}
	got := decrypted(t, joiner, ch)
	if want := []string{"context:" + ctxText, "msg:" + secret1}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("joiner's history %q, want %q", got, want)
	}
	// Live after that, both ways.
	jSub := collect(joiner.mesh.Subscribe([]string{ch}, 0))
	if _, err := host.mesh.Send(ctx, ch, "msg", live, ""); err != nil {
		t.Fatal(err)
	}
	e := waitRecord(t, jSub, "the live message", func(e *mesh.Envelope) bool { return e.Kind == mesh.KindEncrypted })
	if p, err := joiner.mesh.Decrypt(e); err != nil || p.Content != live {
		t.Fatalf("live message %v %v", p, err)
	}
	reply, err := joiner.mesh.Send(ctx, ch, "msg", "ack from joiner", "")
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, hostSub, "the joiner's reply", func(e *mesh.Envelope) bool { return e.ID == reply.Env.ID })

	// Nothing in clear anywhere: stores (API and files), the recorder.
	for _, who := range []*agent{host, joiner} {
		s := storedContents(t, who)
		for _, p := range []string{"alpha", "bravo", "charlie", "ack from joiner"} {
			if strings.Contains(s, p) {
				t.Fatalf("%s's store holds %q in clear", who.mesh.Info().Name, p)
			}
		}
		if f := filesContain(t, filepath.Join(who.dir, "store"), "alpha", "bravo", "charlie", "ack from joiner"); len(f) > 0 {
			t.Fatalf("%s's store files hold %q in clear", who.mesh.Info().Name, f)
		}
	}
	for _, p := range []string{"alpha", "bravo", "charlie", "ack from joiner"} {
		if bytes.Contains(rec.bytes(), []byte(p)) {
			t.Fatalf("the recorder saw %q", p)
		}
	}

	// Replay of the approved knock, a forged proof, another channel.
	var knockEnv *mesh.Envelope
	sent, _ := joiner.mesh.Before(ctx, "@"+host.mesh.Self(), "", 100)
	for _, r := range sent {
		if r.Env.Kind == mesh.KindKnock {
			knockEnv = r.Env
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, err := mesh.ResendKnock(rctx, joiner.mesh, host.mesh.Self(), knockEnv); !errors.Is(err, mesh.ErrKnockReplayed) {
		t.Fatalf("replayed knock: %v, want ErrKnockReplayed", err)
	}
	k, _ := mesh.ParseSessionKey(sess.Key)
	forged := k
	forged.Secret = bytes.Repeat([]byte{1}, 16)
	if _, err := joiner.mesh.JoinSession(ctx, forged.String(), nil); !errors.Is(err, mesh.ErrBadKnock) {
		t.Fatalf("forged knock: %v, want ErrBadKnock", err)
	}
	other := k
	other.Channel = "~" + strings.Repeat("ab", 16)
	if _, err := joiner.mesh.JoinSession(ctx, other.String(), nil); !errors.Is(err, mesh.ErrUnknownSession) {
		t.Fatalf("knock for another channel: %v, want ErrUnknownSession", err)
	}
	expired := k
	expired.Expiry = time.Now().Add(-time.Second)
	if _, err := joiner.mesh.JoinSession(ctx, expired.String(), nil); !errors.Is(err, mesh.ErrKeyExpired) {
		t.Fatalf("expired key: %v, want ErrKeyExpired", err)
	}

	// Deny, then close: knocks after close are refused.
	go func() {
		_, err := joiner.mesh.JoinSession(ctx, sess.Key, nil)
		done <- joined{err: err}
	}()
	waitFor(t, 10*time.Second, "second knock", func() bool { return len(host.mesh.Knocks()) == 1 })
	if err := host.mesh.Deny(ctx, joiner.mesh.Self()); err != nil {
		t.Fatal(err)
	}
	if j := <-done; !errors.Is(j.err, mesh.ErrDenied) {
		t.Fatalf("denied knock: %v, want ErrDenied", j.err)
	}
	if err := host.mesh.CloseSession(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, err := joiner.mesh.JoinSession(ctx, sess.Key, nil); !errors.Is(err, mesh.ErrSessionClosed) {
		t.Fatalf("knock after close: %v, want ErrSessionClosed", err)
	}
}

func TestPrivateRemoveRotatesKey(t *testing.T) {
	ctx := context.Background()
	host := startAgentWith(t, t.TempDir(), "host", noMDNS)
	a := startAgentWith(t, t.TempDir(), "ana", noMDNS)
	b := startAgentWith(t, t.TempDir(), "bob", noMDNS)
	connect(t, a.node, host.node)
	connect(t, b.node, host.node)
	connect(t, a.node, b.node)
	waitPresence(t, "", 3, host, a, b)
	pc, err := host.mesh.CreatePrivate(ctx, "#team")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.mesh.Send(ctx, "#team", "msg", "before removal", ""); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"@ana", "@bob"} {
		if err := host.mesh.Invite(ctx, "#team", who); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.mesh.Invite(ctx, pc.ID, "@bob"); !errors.Is(err, mesh.ErrNotHost) {
		t.Fatalf("member invites: %v, want ErrNotHost", err)
	}
	for _, m := range []*agent{a, b} {
		waitFor(t, 20*time.Second, "backlog at "+m.mesh.Info().Name, func() bool {
			r, _ := m.mesh.After(ctx, pc.ID, "", 10)
			return len(r) == 1
		})
		if got := decrypted(t, m, pc.ID); len(got) != 1 || got[0] != "msg:before removal" {
			t.Fatalf("%s reads %q", m.mesh.Info().Name, got)
		}
	}
	if err := host.mesh.Remove(ctx, "#team", "@bob"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ana on epoch 2", func() bool {
		p, err := a.mesh.Private(pc.ID)
		return err == nil && p.Epoch == 2
	})
	after, err := host.mesh.Send(ctx, pc.ID, "msg", "AFTER-delta removal", "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the message at ana", func() bool {
		r, _ := a.mesh.After(ctx, pc.ID, "", 10)
		return len(r) == 2
	})
	if got := decrypted(t, a, pc.ID); len(got) != 2 || got[1] != "msg:AFTER-delta removal" {
		t.Fatalf("ana reads %q", got)
	}
	// Bob gets nothing new, and could not read it if he did.
	if _, err := b.mesh.Decrypt(after.Env); !errors.Is(err, mesh.ErrNoKey) {
		t.Fatalf("removed member decrypts: %v, want ErrNoKey", err)
	}
	if s := storedContents(t, b); strings.Contains(s, "delta") {
		t.Fatal("bob's store holds the new message in clear")
	}
	// What bob still posts (on the old topic, with the old key) reaches nobody.
	stale, err := b.mesh.Send(ctx, pc.ID, "msg", "still here?", "")
	if err != nil {
		t.Fatal(err)
	}
	mark, err := host.mesh.Send(ctx, pc.ID, "msg", "mark", "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the mark at ana", func() bool {
		r, _ := a.mesh.After(ctx, pc.ID, "", 10)
		return len(r) >= 3 && r[len(r)-1].Env.ID == mark.Env.ID
	})
	for _, m := range []*agent{host, a} {
		if _, err := m.db.Get(ctx, stale.Env.ID); err == nil {
			t.Fatalf("%s stored a removed member's post", m.mesh.Info().Name)
		}
	}
}

// TestRelayedGrantOnlyAddsMembers: a grant may arrive relayed (a node
// fronting a thin host pushes the host's grants); a replayed older grant
// of the same epoch does not take members out of the member's list.
func TestRelayedGrantOnlyAddsMembers(t *testing.T) {
	ctx := context.Background()
	host := startAgentWith(t, t.TempDir(), "host", noMDNS)
	a := startAgentWith(t, t.TempDir(), "ana", noMDNS)
	b := startAgentWith(t, t.TempDir(), "bob", noMDNS)
	relay := startAgentWith(t, t.TempDir(), "relay", noMDNS)
	connect(t, a.node, host.node)
	connect(t, b.node, host.node)
	connect(t, relay.node, a.node)
	pc, err := host.mesh.CreatePrivate(ctx, "#team")
	if err != nil {
		t.Fatal(err)
	}
	anaID, bobID := a.mesh.Info().ID, b.mesh.Info().ID
	if err := host.mesh.Invite(ctx, "#team", "@"+anaID); err != nil {
		t.Fatal(err)
	}
	old, err := mesh.GrantFor(host.mesh, pc.ID, anaID) // members: host, ana
	if err != nil {
		t.Fatal(err)
	}
	if err := host.mesh.Invite(ctx, "#team", "@"+bobID); err != nil {
		t.Fatal(err)
	}
	members := func() []string {
		p, err := a.mesh.Private(pc.ID)
		if err != nil {
			return nil
		}
		return p.Members
	}
	waitFor(t, 20*time.Second, "ana learns bob", func() bool { return slices.Contains(members(), bobID) })
	ack, err := mesh.RelayGrant(ctx, relay.mesh, anaID, old)
	if err != nil || ack != 0 {
		t.Fatalf("relayed grant: ack %d, %v; want accepted", ack, err)
	}
	if got := members(); !slices.Contains(got, bobID) || !slices.Contains(got, anaID) {
		t.Fatalf("after the replayed older grant ana's members are %v", got)
	}
	// A relayed grant signed by someone who is not the channel's host is refused.
	forged := *old
	forged.Sig = nil
	if err := forged.Sign(relay.node.Key()); err != nil {
		t.Fatal(err)
	}
	if ack, err := mesh.RelayGrant(ctx, relay.mesh, anaID, &forged); err == nil && ack == 0 {
		t.Fatal("a grant re-signed by the relay was accepted")
	}
}

func TestValidSealedTopic(t *testing.T) {
	const topicPrefix = "/confab/chan/1/"
	hex64 := strings.Repeat("0a", 32)
	tests := []struct {
		topic string
		want  bool
	}{
		{topicPrefix + hex64, true},
		{topicPrefix + strings.ToUpper(hex64), false},
		{topicPrefix + hex64[:62], false},
		{topicPrefix + hex64 + "00", false},
		{topicPrefix + "#general", false},
		{"/confab/presence/1", false},
		{"/other/" + hex64, false},
		{"", false},
	}
	for _, tt := range tests {
		if got := mesh.ValidSealedTopic(tt.topic); got != tt.want {
			t.Errorf("ValidSealedTopic(%q) = %v, want %v", tt.topic, got, tt.want)
		}
	}
}
