package wsgateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/confabhq/confab/mesh"
)

// privMem adds scripted private channels to memBackend, to test the frames'
// plumbing: the real behaviour (keys, knocks, backlog) is tested with real
// nodes in mesh and with the binary in cmd/confab.
type privMem struct {
	*memBackend
	knocked chan struct{} // JoinSession: closed once it called pending
	decide  chan error    // JoinSession: nil approves
}

const privID = "~0123456789abcdef0123456789abcdef"

func (b *privMem) CreatePrivate(ctx context.Context, name string) (mesh.PrivateChannel, error) {
	return mesh.PrivateChannel{ID: privID, Name: name, Host: b.id, Epoch: 1, Members: []string{b.id}}, nil
}
func (b *privMem) Invite(ctx context.Context, channel, agent string) error {
	return fmt.Errorf("mesh: invite to %s: %w", channel, mesh.ErrSessionGate)
}
func (b *privMem) Remove(ctx context.Context, channel, agent string) error { return nil }
func (b *privMem) Private(channel string) (mesh.PrivateChannel, error) {
	if channel != privID && channel != "#secret" {
		return mesh.PrivateChannel{}, fmt.Errorf("mesh: %s: %w", channel, mesh.ErrUnknownPrivate)
	}
	return mesh.PrivateChannel{ID: privID, Host: b.id, Session: true, Epoch: 1, Members: []string{b.id}}, nil
}
func (b *privMem) PrivateChannels() []mesh.PrivateChannel {
	p, _ := b.Private(privID)
	return []mesh.PrivateChannel{p}
}
func (b *privMem) OpenSession(ctx context.Context, topic, snapshot string, ttl time.Duration) (mesh.Session, error) {
	p, _ := b.Private(privID)
	return mesh.Session{Channel: p, Key: "cfs1_key", Expires: time.UnixMilli(1700000000000)}, nil
}
func (b *privMem) JoinSession(ctx context.Context, key string, pending func()) (mesh.JoinResult, error) {
	if key == "cfs1_closed" {
		return mesh.JoinResult{}, fmt.Errorf("mesh: knock refused: %w", mesh.ErrSessionClosed)
	}
	pending()
	close(b.knocked)
	select {
	case err := <-b.decide:
		if err != nil {
			return mesh.JoinResult{}, err
		}
	case <-ctx.Done():
		return mesh.JoinResult{}, ctx.Err()
	}
	p, _ := b.Private(privID)
	return mesh.JoinResult{Channel: p, Backlog: 3}, nil
}
func (b *privMem) Approve(ctx context.Context, agent string) (mesh.PrivateChannel, error) {
	return b.Private(privID)
}
func (b *privMem) Deny(ctx context.Context, agent string) error {
	return fmt.Errorf("mesh: %s: %w", agent, mesh.ErrNoKnock)
}
func (b *privMem) CloseSession(ctx context.Context, channel string) error { return nil }
func (b *privMem) Knocks() []mesh.Knock {
	return []mesh.Knock{{ID: strings.Repeat("a", 64), From: b.id, Name: "nova", Channel: privID, Topic: "t", TS: time.UnixMilli(1700000000000)}}
}

// DecryptRecord "decrypts" content "cfx1.X" to "plain X" with kind "msg";
// "cfx1.nokey" has no key.
func (b *privMem) DecryptRecord(r mesh.Record) (mesh.Record, error) {
	if r.Env.Content == "cfx1.nokey" {
		return r, mesh.ErrNoKey
	}
	c := *r.Env
	c.Kind, c.Content = "msg", "plain "+strings.TrimPrefix(c.Content, "cfx1.")
	return mesh.Record{Env: &c, Cursor: r.Cursor}, nil
}

func startPriv(t *testing.T, mode Mode) (*harness, *privMem) {
	t.Helper()
	var pb *privMem
	h := start(t, func(c *Config) {
		pb = &privMem{memBackend: c.Backend.(*memBackend), knocked: make(chan struct{}), decide: make(chan error, 1)}
		c.Backend = pb
		if mode != "" {
			c.Mode = mode
		}
	})
	return h, pb
}

func TestPrivateFrames(t *testing.T) {
	h, pb := startPriv(t, "")
	c := h.dial(t)
	cx := ctx(t)

	p, err := c.CreatePrivate(cx, "#secret")
	if err != nil || p.ID != privID || p.Name != "#secret" {
		t.Fatalf("create: %+v, %v", p, err)
	}
	var pe *Error
	if _, err := c.Invite(cx, privID, "@nova"); !errors.As(err, &pe) || pe.Code != CodeSessionGate {
		t.Fatalf("invite to a session: got %v, want %s", err, CodeSessionGate)
	}
	if err := c.Deny(cx, "@nobody"); !errors.As(err, &pe) || pe.Code != CodeNoKnock {
		t.Fatalf("deny: got %v, want %s", err, CodeNoKnock)
	}
	if ks, err := c.Knocks(cx); err != nil || len(ks) != 1 || ks[0].Name != "nova" || ks[0].TS != 1700000000000 {
		t.Fatalf("knocks: %+v, %v", ks, err)
	}
	if id, err := c.CloseSession(cx, ""); err != nil || id != privID {
		t.Fatalf("close the only session: %q, %v", id, err)
	}
	if s, err := c.OpenSession(cx, "topic", "ctx", time.Hour); err != nil || s.Key != "cfs1_key" {
		t.Fatalf("open: %+v, %v", s, err)
	}
	if _, err := c.JoinSession(cx, "cfs1_closed", 0, nil); !errors.As(err, &pe) || pe.Code != CodeSessionClosed {
		t.Fatalf("join a closed session: got %v, want %s", err, CodeSessionClosed)
	}

	// A join waits for the host; the connection serves other calls meanwhile.
	var pendingSeen sync.WaitGroup
	pendingSeen.Add(1)
	type result struct {
		r   SessionJoinReply
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.JoinSession(cx, "cfs1_wait", time.Minute, pendingSeen.Done)
		done <- result{r, err}
	}()
	pendingSeen.Wait()
	if _, err := c.Info(cx); err != nil {
		t.Fatalf("info while a join waits: %v", err)
	}
	pb.decide <- nil
	res := <-done
	if res.err != nil || res.r.Backlog != 3 || res.r.Channel.ID != privID {
		t.Fatalf("join: %+v, %v", res.r, res.err)
	}
}

func TestPrivateDecryptedView(t *testing.T) {
	h, pb := startPriv(t, "")
	c := h.dial(t)
	cx := ctx(t)
	pb.Join(cx, privID)
	ok, err := pb.Send(cx, privID, mesh.KindEncrypted, "cfx1.hello", "")
	if err != nil {
		t.Fatal(err)
	}
	nokey, _ := pb.Send(cx, privID, mesh.KindEncrypted, "cfx1.nokey", "")

	recs, _, err := c.History(cx, privID, "", 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("history: %d records, %v", len(recs), err)
	}
	got := []string{recs[0].Env.Kind + ":" + recs[0].Env.Content, recs[1].Env.Kind + ":" + recs[1].Env.Content}
	want := []string{"msg:plain hello", "enc:cfx1.nokey"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("history view (-want +got):\n%s", diff)
	}
	// The sealed content restores the signed envelope.
	raw := rawHistory(t, h, privID)
	if raw.Sealed[ok.Env.ID] != "cfx1.hello" || raw.Sealed[nokey.Env.ID] != "" {
		t.Fatalf("sealed = %v", raw.Sealed)
	}
	if err := VerifySealed(raw.Records[0].Env, raw.Sealed[ok.Env.ID]); err != nil {
		t.Fatalf("VerifySealed: %v", err)
	}
	if err := raw.Records[0].Env.Verify(); err == nil {
		t.Fatal("the decrypted view verifies as it is; it should not")
	}

	// Replay and live events carry the same view.
	ev, err := c.Subscribe(cx, []string{privID}, "0000000000000000")
	if err != nil {
		t.Fatal(err)
	}
	e := <-ev
	if !e.Replay || e.Record.Env.Content != "plain hello" || e.Sealed != "cfx1.hello" {
		t.Fatalf("replay event %+v", e)
	}
	<-ev
	if _, err := pb.Send(cx, privID, mesh.KindEncrypted, "cfx1.live", ""); err != nil {
		t.Fatal(err)
	}
	if e := <-ev; e.Replay || e.Record.Env.Content != "plain live" || e.Sealed != "cfx1.live" {
		t.Fatalf("live event %+v", e)
	}
}

// rawHistory reads a history reply as sent, with its sealed map.
func rawHistory(t *testing.T, h *harness, channel string) *HistoryReply {
	t.Helper()
	ws := h.dialRaw(t)
	if err := ws.WriteJSON(map[string]any{"type": "history", "req": "1", "channel": channel}); err != nil {
		t.Fatal(err)
	}
	for {
		if r, ok := readFrame(t, ws).(*HistoryReply); ok {
			return r
		}
	}
}

// TestPrivateRevealModes: only a local-mode connection shows a decrypted
// view; remote and read-only ones hold no keys of the node's.
func TestPrivateRevealModes(t *testing.T) {
	_, pb := startPriv(t, "")
	cx := ctx(t)
	pb.Join(cx, privID)
	rec, err := pb.Send(cx, privID, mesh.KindEncrypted, "cfx1.hello", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mode Mode
		want string
	}{{ModeLocal, "plain hello"}, {ModeRemote, "cfx1.hello"}, {ModeReadOnly, "cfx1.hello"}} {
		c := &conn{s: &Server{cfg: Config{Mode: tt.mode, Backend: pb}}}
		got, _ := c.reveal(rec)
		if got.Env.Content != tt.want {
			t.Errorf("mode %s: content %q, want %q", tt.mode, got.Env.Content, tt.want)
		}
	}
	if rec.Env.Content != "cfx1.hello" {
		t.Fatal("reveal changed the stored record")
	}
}

func TestDecodePrivateFrames(t *testing.T) {
	tests := []struct {
		in   string
		code string // "" = valid
	}{
		{`{"type":"private_create","req":"1","name":"#a"}`, ""},
		{`{"type":"private_create","req":"1","name":"a"}`, CodeBadChannel},
		{`{"type":"private_invite","req":"1","channel":"#a","agent":"@b"}`, ""},
		{`{"type":"private_invite","req":"1","channel":"@x","agent":"@b"}`, CodeBadChannel},
		{`{"type":"private_remove","req":"1","channel":"#a"}`, CodeBadFrame},
		{`{"type":"session_open","req":"1","topic":""}`, CodeBadFrame},
		{`{"type":"session_open","req":"1","topic":"t","ttl":-1}`, CodeBadFrame},
		{`{"type":"session_join","req":"1","key":"cfs1_x","wait":901}`, CodeBadFrame},
		{`{"type":"session_join","req":"1","key":""}`, CodeBadFrame},
		{`{"type":"session_approve","req":"1","agent":"nova"}`, ""},
		{`{"type":"session_close","req":"1"}`, ""},
		{`{"type":"knocks","req":"1"}`, ""},
	}
	for _, tt := range tests {
		_, err := DecodeFrame([]byte(tt.in))
		var pe *Error
		got := ""
		if errors.As(err, &pe) {
			got = pe.Code
		}
		if got != tt.code {
			t.Errorf("DecodeFrame(%s): code %q, want %q (%v)", tt.in, got, tt.code, err)
		}
	}
	if f, err := DecodeFrame([]byte(`{"type":"session_join","req":"1","key":"k"}`)); err != nil || f.(*SessionJoinRequest).Wait != MaxJoinWait {
		t.Fatalf("session_join default wait: %+v, %v", f, err)
	}
}

func FuzzDecodePrivateFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"private_create","req":"1","name":"#a"}`,
		`{"type":"session_join","req":"1","key":"cfs1_abc","wait":10}`,
		`{"type":"session_pending","req":"1"}`,
		`{"type":"session_join","req":"1","channel":{"id":"` + privID + `","host":"h","epoch":1,"members":[]},"backlog":2}`,
		`{"type":"session_approve","req":"1","channel":{"id":"` + privID + `","host":"h","epoch":1,"members":["a"]}}`,
		`{"type":"knocks","req":"1","knocks":[{"id":"x","from":"y","name":"n","channel":"~","ts":1}]}`,
		`{"type":"history","req":"1","records":[],"more":false,"sealed":{"a":"cfx1."}}`,
	} {
		f.Add([]byte(s))
		f.Add([]byte(s[:len(s)/2]))
	}
	f.Fuzz(checkRoundTrip)
}
