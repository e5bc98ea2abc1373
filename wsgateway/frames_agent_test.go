package wsgateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

// goldenAgentFrames is one example of every discovery, direct-message and
// call frame, by golden file name (testdata/frames/<name>.golden).
func goldenAgentFrames(t testing.TB) (requests, replies map[string]Frame) {
	env := goldenEnvelope(t)
	dm := *env
	dm.Channel = "@" + env.From
	rec := mesh.Record{Env: env, Cursor: "00000000000000a1"}
	card := WireCard{ID: env.From, Name: "nova", Caps: []string{"go-review", "tests"}, Desc: "reviews Go",
		Status: mesh.StatusAvailable, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Version: "confab/0.1.0", TS: 1700000000123}
	requests = map[string]Frame{
		"find":   &FindRequest{Req: "20", Cap: "go-review"},
		"card":   &CardRequest{Req: "21", ID: env.From},
		"status": &StatusRequest{Req: "22", Status: mesh.StatusBusy},
		"direct": &DirectRequest{Req: "23", Target: "@nova", Kind: "msg", Content: "hello <nova>", ReplyTo: env.ID},
		"thread": &ThreadRequest{Req: "24", Target: "@" + env.From, Limit: 20},
		"call":   &CallRequest{Req: "25", Target: "@nova", Topic: "review my auth middleware"},
		"inbox":  &InboxRequest{Req: "26"},
		"accept": &AcceptRequest{Req: "27", ID: env.ID[:12]},
		"reject": &RejectRequest{Req: "28", ID: env.ID, Reason: "not now"},
		"match":  &MatchRequest{Req: "29", Cap: "go-review", Topic: "pair on tests"},
	}
	replies = map[string]Frame{
		"find-reply":   &FindReply{Req: "20", Cards: []WireCard{card}},
		"card-reply":   &CardReply{Req: "21", Card: card},
		"direct-reply": &DirectReply{Req: "23", ID: env.ID, Seq: 1, Cursor: "00000000000000a2", Channel: "@" + env.From, Delivered: false},
		"thread-reply": &ThreadReply{Req: "24", Records: []mesh.Record{rec}},
		"call-reply":   &CallReply{Req: "25", ID: env.ID, Cursor: "00000000000000a3", To: env.From, Delivered: true},
		"inbox-reply": &InboxReply{Req: "26", Calls: []WireCall{{ID: env.ID, From: env.From, Name: "atlas",
			Topic: "review my auth middleware", TS: 1700000000123}}},
		"accept-reply":        &AcceptReply{Req: "27", ID: env.ID[:12], Channel: mesh.CallChannel(env.ID)},
		"match-reply":         &MatchReply{Req: "29", Card: card, ID: env.ID, Cursor: "00000000000000a4"},
		"error-unknown-call":  &ErrorFrame{Req: "27", Code: CodeUnknownCall, Message: "no such pending call"},
		"error-unknown-agent": &ErrorFrame{Req: "23", Code: CodeUnknownAgent, Message: "mesh: @nova is ambiguous, candidates: 12D3KooA, 12D3KooB: unknown agent"},
	}
	return requests, replies
}

func TestGoldenAgentFrames(t *testing.T) {
	requests, replies := goldenAgentFrames(t)
	check := func(name string, f Frame, decode func([]byte) (Frame, error)) {
		t.Helper()
		got, err := EncodeFrame(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		path := filepath.Join("testdata", "frames", name+".golden")
		if *update {
			if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run go test -update)", name, err)
		}
		if diff := cmp.Diff(string(bytes.TrimSpace(want)), string(got)); diff != "" {
			t.Errorf("%s wire form changed (-golden +got):\n%s", name, diff)
		}
		back, err := decode(want)
		if err != nil {
			t.Fatalf("%s: decode golden: %v", name, err)
		}
		if diff := cmp.Diff(f, back); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", name, diff)
		}
	}
	for name, f := range requests {
		check(name, f, DecodeFrame)
	}
	for name, f := range replies {
		check(name, f, DecodeReply)
	}
}

func TestDecodeAgentFrames(t *testing.T) {
	tests := []struct {
		in   string
		want Frame
		code string
	}{
		{in: `{"type":"direct","req":"1","target":"@nova","content":"x"}`, want: &DirectRequest{Req: "1", Target: "@nova", Kind: "msg", Content: "x"}},
		{in: `{"type":"thread","req":"1","target":"@nova"}`, want: &ThreadRequest{Req: "1", Target: "@nova", Limit: DefaultHistory}},
		{in: `{"type":"thread","req":"1","target":"@nova","limit":99999}`, want: &ThreadRequest{Req: "1", Target: "@nova", Limit: MaxHistoryLimit}},
		{in: `{"type":"direct","req":"1","content":"x"}`, code: CodeBadFrame},
		{in: `{"type":"direct","req":"1","target":"@"}`, code: CodeBadFrame},
		{in: `{"type":"direct","req":"1","target":"@n","content":"` + strings.Repeat("x", mesh.MaxContentLen+1) + `"}`, code: CodeTooLarge},
		{in: `{"type":"find","req":"1"}`, code: CodeBadFrame},
		{in: `{"type":"find","cap":"go"}`, code: CodeBadFrame},
		{in: `{"type":"status","req":"1","status":"sleeping"}`, code: CodeBadFrame},
		{in: `{"type":"accept","req":"1","id":"abc"}`, code: CodeBadFrame},
		{in: `{"type":"reject","req":"1","id":"abcdef0123","reason":"` + strings.Repeat("x", MaxTopicLen+1) + `"}`, code: CodeBadFrame},
		{in: `{"type":"call","req":"1","target":"","topic":"t"}`, code: CodeBadFrame},
		{in: `{"type":"match","req":"1","topic":"t"}`, code: CodeBadFrame},
	}
	for _, tt := range tests {
		got, err := DecodeFrame([]byte(tt.in))
		if tt.code != "" {
			if code(err) != tt.code {
				t.Errorf("%.80s: err %v, want code %s", tt.in, err, tt.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.in, diff)
		}
	}
}

// FuzzDecodeAgentFrame is FuzzDecodeFrame seeded with the agent frames:
// whatever decodes re-encodes to the same frame; seeds are also split in two.
func FuzzDecodeAgentFrame(f *testing.F) {
	requests, replies := goldenAgentFrames(f)
	for _, m := range []map[string]Frame{requests, replies} {
		for _, fr := range m {
			b, err := EncodeFrame(fr)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			f.Add(b[:len(b)/2])
			f.Add(b[len(b)/2:])
		}
	}
	f.Add([]byte(`{"type":"thread","req":"1","target":"@a","limit":-1}`))
	f.Add([]byte(`{"type":"find","req":"1","cards":[{"id":""}]}`))
	f.Add([]byte(`{"type":"accept","req":"1","id":"x","channel":"nope"}`))
	f.Fuzz(checkRoundTrip)
}

// agentMem adds in-memory direct messages and calls to memBackend, to test
// the frames' plumbing and error codes; the real behaviour is tested with
// real nodes in mesh and cmd/confab.
type agentMem struct {
	*memBackend

	mu     sync.Mutex // guards status
	status string
}

func (b *agentMem) SendDirect(ctx context.Context, target, kind, content, replyTo string) (mesh.Record, bool, error) {
	if target != "@nova" {
		return mesh.Record{}, false, fmt.Errorf("mesh: %s: %w", target, mesh.ErrUnknownAgent)
	}
	env := &mesh.Envelope{Channel: "@" + b.id, Name: b.name, Seq: 1, TS: time.Now().UnixMilli(), Kind: kind, Content: content, ReplyTo: replyTo}
	if err := env.Sign(b.key); err != nil {
		return mesh.Record{}, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.storeLocked(env), false, nil
}

func (b *agentMem) Thread(ctx context.Context, target string, limit int) ([]mesh.Record, error) {
	return b.all("@" + b.id), nil
}

func (b *agentMem) Find(ctx context.Context, capability string) ([]mesh.Card, error) {
	if capability != "go" {
		return nil, nil
	}
	return []mesh.Card{{ID: b.id, Name: b.name, Caps: []string{"go"}, Status: b.getStatus(), TS: 1}}, nil
}

func (b *agentMem) Card(ctx context.Context, id string) (mesh.Card, error) {
	if id != "" && id != b.id {
		return mesh.Card{}, errors.New("mesh: card: dial backoff")
	}
	return mesh.Card{ID: b.id, Name: b.name, Status: b.getStatus(), TS: 1}, nil
}

func (b *agentMem) getStatus() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

func (b *agentMem) SetStatus(s string) error {
	b.mu.Lock()
	b.status = s
	b.mu.Unlock()
	return nil
}

func (b *agentMem) Call(ctx context.Context, target, topic string) (mesh.Record, bool, error) {
	return b.SendDirect(ctx, target, mesh.KindCall, topic, "")
}

func (b *agentMem) Inbox(ctx context.Context) ([]mesh.Call, error) {
	var calls []mesh.Call
	for _, r := range b.all("@" + b.id) {
		if r.Env.Kind == mesh.KindCall {
			calls = append(calls, mesh.Call{ID: r.Env.ID, From: r.Env.From, Name: r.Env.Name, Topic: r.Env.Content, TS: time.UnixMilli(r.Env.TS)})
		}
	}
	return calls, nil
}

func (b *agentMem) Accept(ctx context.Context, id string) (string, error) {
	calls, _ := b.Inbox(ctx)
	for _, c := range calls {
		if strings.HasPrefix(c.ID, id) {
			return mesh.CallChannel(c.ID), nil
		}
	}
	return "", fmt.Errorf("mesh: call %s: %w", id, mesh.ErrUnknownCall)
}

func (b *agentMem) Reject(ctx context.Context, id, reason string) error {
	_, err := b.Accept(ctx, id)
	return err
}

func (b *agentMem) Match(ctx context.Context, capability, topic string) (mesh.Card, mesh.Record, error) {
	return mesh.Card{}, mesh.Record{}, fmt.Errorf("mesh: match %s: %w", capability, mesh.ErrNoAgent)
}

var (
	_ DirectBackend    = (*agentMem)(nil)
	_ DiscoveryBackend = (*agentMem)(nil)
	_ CallBackend      = (*agentMem)(nil)
	_ DirectBackend    = meshBackend{}
	_ DiscoveryBackend = meshBackend{}
	_ CallBackend      = meshBackend{}
)

func TestAgentFrames(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var am *agentMem
	h := start(t, func(c *Config) {
		am = &agentMem{memBackend: c.Backend.(*memBackend), status: mesh.StatusAvailable}
		c.Backend = am
	})
	c := h.dial(t)
	cx := ctx(t)

	// Subscribing to every channel replays the inbox channel too.
	events, err := c.Subscribe(cx, nil, "0000000000000000")
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.SendDirect(cx, "@nova", "", "hello", "")
	if err != nil || d.Delivered || d.Channel != "@"+am.id || d.Cursor == "" {
		t.Fatalf("SendDirect = %+v, %v", d, err)
	}
	if ev := collect(t, events, 1)[0]; ev.Record.Env.ID != d.ID {
		t.Fatalf("subscription got %s, want the DM %s", ev.Record.Env.ID, d.ID)
	}
	if _, err := c.SendDirect(cx, "@nobody", "", "x", ""); code(err) != CodeUnknownAgent {
		t.Fatalf("DM to nobody: %v, want unknown_agent", err)
	}
	call, err := c.Call(cx, "@nova", "review")
	if err != nil || call.ID == "" || call.To != am.id {
		t.Fatalf("Call = %+v, %v", call, err)
	}
	inbox, err := c.Inbox(cx)
	if err != nil || len(inbox) != 1 || inbox[0].ID != call.ID || inbox[0].Topic != "review" {
		t.Fatalf("Inbox = %+v, %v", inbox, err)
	}
	ch, err := c.Accept(cx, call.ID[:10])
	if err != nil || ch != mesh.CallChannel(call.ID) {
		t.Fatalf("Accept = %q, %v", ch, err)
	}
	if _, err := c.Accept(cx, "ffffffffff"); code(err) != CodeUnknownCall {
		t.Fatalf("Accept of no call: %v, want unknown_call", err)
	}
	if err := c.Reject(cx, "ffffffffff", "no"); code(err) != CodeUnknownCall {
		t.Fatalf("Reject of no call: %v, want unknown_call", err)
	}
	if _, err := c.Match(cx, "go", "x"); code(err) != CodeNoAgent {
		t.Fatalf("Match: %v, want no_agent", err)
	}
	th, err := c.Thread(cx, "@nova", 10)
	if err != nil || len(th) != 2 {
		t.Fatalf("Thread = %d records, %v; want 2", len(th), err)
	}
	if err := c.SetStatus(cx, mesh.StatusBusy); err != nil {
		t.Fatal(err)
	}
	cards, err := c.Find(cx, "go")
	if err != nil || len(cards) != 1 || cards[0].Status != mesh.StatusBusy || cards[0].ID != am.id {
		t.Fatalf("Find = %+v, %v", cards, err)
	}
	if cards, err := c.Find(cx, "rust"); err != nil || len(cards) != 0 {
		t.Fatalf("Find rust = %+v, %v; want none", cards, err)
	}
	if _, err := c.Card(cx, "12D3KooWother"); code(err) != CodeUnreachable {
		t.Fatalf("Card of an unreachable agent: %v, want unreachable", err)
	}
	if cd, err := c.Card(cx, ""); err != nil || cd.ID != am.id {
		t.Fatalf("own Card = %+v, %v", cd, err)
	}
	c.Close()
	h.stop()
}

func TestAgentFramesUnsupported(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := start(t, nil) // memBackend has no direct messages, discovery or calls
	c := h.dial(t)
	cx := ctx(t)
	calls := map[string]func() error{
		"find":   func() error { _, err := c.Find(cx, "go"); return err },
		"card":   func() error { _, err := c.Card(cx, ""); return err },
		"status": func() error { return c.SetStatus(cx, mesh.StatusAway) },
		"direct": func() error { _, err := c.SendDirect(cx, "@nova", "", "x", ""); return err },
		"thread": func() error { _, err := c.Thread(cx, "@nova", 0); return err },
		"call":   func() error { _, err := c.Call(cx, "@nova", "t"); return err },
		"inbox":  func() error { _, err := c.Inbox(cx); return err },
		"accept": func() error { _, err := c.Accept(cx, "0123456789"); return err },
		"reject": func() error { return c.Reject(cx, "0123456789", "") },
		"match":  func() error { _, err := c.Match(cx, "go", "t"); return err },
	}
	names := make([]string, 0, len(calls))
	for n := range calls {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := calls[n](); code(err) != CodeUnsupported {
			t.Errorf("%s on a backend without it: %v, want unsupported", n, err)
		}
	}
	c.Close()
	h.stop()
}
