package wsgateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/mesh"
)

const roToken = "0123456789abcdef0123456789abcdef"

type roHarness struct {
	b   *memBackend
	ro  *ReadOnly
	hs  *httptest.Server
	url string // ws://host/v1
}

func startReadOnly(t *testing.T, hide func(string) bool) *roHarness {
	t.Helper()
	b := newMemBackend(t)
	ro, err := NewReadOnly(Config{Backend: b}, ReadOnlyConfig{Token: roToken, Hide: hide})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(ro.Handler())
	t.Cleanup(func() { ro.Close(); hs.Close() })
	return &roHarness{b: b, ro: ro, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1"}
}

// dialRO opens a raw connection with the given query and Origin and returns
// it after reading the welcome, or the HTTP status of a refused upgrade.
func (h *roHarness) dialRO(t *testing.T, query, origin string) (*websocket.Conn, *Welcome, int) {
	t.Helper()
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx(t), h.url+query, hdr)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return nil, nil, resp.StatusCode
	}
	t.Cleanup(func() { ws.Close() })
	// Raw JSON: the welcome of a read-only server is not one the Go
	// Client accepts (it knows only local and remote).
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var w Welcome
	if err := json.Unmarshal(data, &w); err != nil || !strings.HasPrefix(string(data), `{"type":"welcome"`) {
		t.Fatalf("first frame %s is not a welcome (%v)", data, err)
	}
	return ws, &w, http.StatusSwitchingProtocols
}

// roundTrip writes one raw frame and reads one reply.
func roundTrip(t *testing.T, ws *websocket.Conn, frame string) map[string]any {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read reply to %s: %v", frame, err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReadOnlyAdmission(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	h := startReadOnly(t, nil)
	host := strings.TrimPrefix(h.hs.URL, "http://")
	tests := []struct {
		name, query, origin string
		want                int
	}{
		{"no token", "", "", http.StatusUnauthorized},
		{"wrong token", "?token=" + strings.Repeat("x", len(roToken)), "", http.StatusUnauthorized},
		{"token prefix", "?token=" + roToken[:20], "", http.StatusUnauthorized},
		{"cross origin", "?token=" + roToken, "http://evil.example", http.StatusForbidden},
		{"origin other port", "?token=" + roToken, "http://127.0.0.1:1", http.StatusForbidden},
		{"non-http origin", "?token=" + roToken, "null", http.StatusForbidden},
		{"same origin", "?token=" + roToken, "http://" + host, http.StatusSwitchingProtocols},
		{"no origin (not a browser)", "?token=" + roToken, "", http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, w, got := h.dialRO(t, tt.query, tt.origin)
			if got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
			if w != nil && w.Mode != ModeReadOnly {
				t.Errorf("welcome mode %q, want %q", w.Mode, ModeReadOnly)
			}
		})
	}
	// Bearer header for non-browser clients.
	hdr := http.Header{"Authorization": {"Bearer " + roToken}}
	ws, _, err := websocket.DefaultDialer.DialContext(ctx(t), h.url, hdr)
	if err != nil {
		t.Fatalf("bearer: %v", err)
	}
	ws.Close()
}

func TestReadOnlyFrames(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	h := startReadOnly(t, nil)
	if err := h.b.Join(context.Background(), "#a"); err != nil {
		t.Fatal(err)
	}
	rec, err := h.b.Send(context.Background(), "#a", "msg", "before", "")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(rec.Env)
	ws, _, _ := h.dialRO(t, "?token="+roToken, "")

	tests := []struct {
		frame, wantType, wantCode string
	}{
		{`{"type":"join","req":"1","channel":"#b"}`, "error", CodeReadOnly},
		{`{"type":"leave","req":"2","channel":"#a"}`, "error", CodeReadOnly},
		{`{"type":"publish","req":"3","envelope":` + string(raw) + `}`, "error", CodeReadOnly},
		{`{"type":"send","req":"4","channel":"#a","content":"x"}`, "error", CodeReadOnly},
		{`{"type":"search","req":"4b","query":"before"}`, "error", CodeUnsupported}, // memBackend has no index
		{`{"type":"auth","req":"5","peer":"x","sig":"AA=="}`, "error", CodeUnsupported},
		{`{"type":"info","req":"6"}`, "info", ""},
		{`{"type":"who","req":"7","channel":"#a"}`, "who", ""},
		{`{"type":"history","req":"8","channel":"#a"}`, "history", ""},
		{`{"type":"ping","req":"9"}`, "pong", ""},
	}
	for _, tt := range tests {
		got := roundTrip(t, ws, tt.frame)
		if got["type"] != tt.wantType || (tt.wantCode != "" && got["code"] != tt.wantCode) {
			t.Errorf("%s: got %v, want type %s code %q", tt.frame, got, tt.wantType, tt.wantCode)
		}
	}
	if got := len(h.b.Info().Channels); got != 1 {
		t.Errorf("node channels after refused join/leave: %d, want 1", got)
	}
	if got := len(h.b.all()); got != 1 {
		t.Errorf("records after refused writes: %d, want 1", got)
	}

	// Subscribe works: replay, live, then a live record.
	if got := roundTrip(t, ws, `{"type":"subscribe","req":"10","since":"0000000000000000"}`); got["type"] != "ok" {
		t.Fatalf("subscribe: %v", got)
	}
	if f, ok := readFrame(t, ws).(*Event); !ok || f.Record.Env.Content != "before" || !f.Replay {
		t.Fatalf("want replayed event, got %#v", f)
	}
	if _, ok := readFrame(t, ws).(*Live); !ok {
		t.Fatal("want live")
	}
	if _, err := h.b.Send(context.Background(), "#a", "msg", "after", ""); err != nil {
		t.Fatal(err)
	}
	if f, ok := readFrame(t, ws).(*Event); !ok || f.Record.Env.Content != "after" || f.Replay {
		t.Fatalf("want live event, got %#v", f)
	}
}

func TestReadOnlyHide(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	priv := "~" + strings.Repeat("ab", 16)
	h := startReadOnly(t, func(ch string) bool { return strings.HasPrefix(ch, "~") })
	for _, ch := range []string{"#a", priv} {
		if err := h.b.Join(context.Background(), ch); err != nil {
			t.Fatal(err)
		}
	}
	h.b.mu.Lock()
	h.b.peers[0].Channels = []string{"#a", priv}
	h.b.mu.Unlock()
	ws, _, _ := h.dialRO(t, "?token="+roToken, "")

	info := roundTrip(t, ws, `{"type":"info","req":"1"}`)
	if got := info["info"].(map[string]any)["channels"]; len(got.([]any)) != 1 {
		t.Errorf("info channels %v, want only #a", got)
	}
	if got := roundTrip(t, ws, `{"type":"history","req":"2","channel":"`+priv+`"}`); got["code"] != CodeNotJoined {
		t.Errorf("history of a hidden channel: %v, want not_joined", got)
	}
	who := roundTrip(t, ws, `{"type":"who","req":"3"}`)
	peers := who["peers"].([]any)
	if chs := peers[0].(map[string]any)["channels"].([]any); len(chs) != 1 || chs[0] != "#a" {
		t.Errorf("who channels %v, want [#a]", chs)
	}
	if got := roundTrip(t, ws, `{"type":"who","req":"4","channel":"`+priv+`"}`); len(got["peers"].([]any)) != 0 {
		t.Errorf("who of a hidden channel: %v, want nobody", got)
	}
	// Subscribing to every channel skips the hidden one.
	if got := roundTrip(t, ws, `{"type":"subscribe","req":"5"}`); got["type"] != "ok" {
		t.Fatalf("subscribe: %v", got)
	}
	if _, ok := readFrame(t, ws).(*Live); !ok {
		t.Fatal("want live")
	}
	for _, ch := range []string{priv, "#a"} {
		if _, err := h.b.Send(context.Background(), ch, "msg", "in "+ch, ""); err != nil {
			t.Fatal(err)
		}
	}
	if f, ok := readFrame(t, ws).(*Event); !ok || f.Record.Env.Channel != "#a" {
		t.Fatalf("first live event %#v, want the #a one", f)
	}
	// Only hidden channels named: an empty subscription, still usable.
	if got := roundTrip(t, ws, `{"type":"unsubscribe","req":"6"}`); got["type"] != "ok" {
		t.Fatalf("unsubscribe: %v", got)
	}
	if got := roundTrip(t, ws, `{"type":"subscribe","req":"7","channels":["`+priv+`"]}`); got["type"] != "ok" {
		t.Fatalf("subscribe hidden: %v", got)
	}
	if _, ok := readFrame(t, ws).(*Live); !ok {
		t.Fatal("want live")
	}
}

func TestReadOnlySearchAndGoClient(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	b := newMemBackend(t)
	priv := "~" + strings.Repeat("cd", 16)
	for _, ch := range []string{"#a", priv} {
		b.Join(context.Background(), ch)
		if _, err := b.Send(context.Background(), ch, "msg", "needle in "+ch, ""); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := NewReadOnly(Config{Backend: searchBackend{seqBackend{b}}}, ReadOnlyConfig{Token: roToken, Hide: func(ch string) bool { return strings.HasPrefix(ch, "~") }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(ro.Handler())
	defer hs.Close()
	defer ro.Close()
	c, err := Dial(ctx(t), "ws"+strings.TrimPrefix(hs.URL, "http")+"/v1?token="+roToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Welcome().Mode != ModeReadOnly {
		t.Errorf("welcome mode %q", c.Welcome().Mode)
	}
	recs, err := c.Search(ctx(t), "needle", "", 10)
	if err != nil || len(recs) != 1 || recs[0].Env.Channel != "#a" {
		t.Errorf("search: %v %v, want only the #a record", recs, err)
	}
	if _, err := c.Search(ctx(t), "needle", priv, 10); code(err) != CodeNotJoined {
		t.Errorf("search in a hidden channel: %v, want not_joined", err)
	}
	if _, err := c.Send(ctx(t), "#a", "", "x", ""); code(err) != CodeReadOnly {
		t.Errorf("send: %v, want read_only", err)
	}
	if err := c.Join(ctx(t), "#b"); code(err) != CodeReadOnly {
		t.Errorf("join: %v, want read_only", err)
	}
}

func TestNewReadOnlyConfig(t *testing.T) {
	b := newMemBackend(t)
	tests := []struct {
		name string
		cfg  Config
		ro   ReadOnlyConfig
		ok   bool
	}{
		{"ok", Config{Backend: b}, ReadOnlyConfig{Token: roToken}, true},
		{"explicit mode", Config{Backend: b, Mode: ModeReadOnly}, ReadOnlyConfig{Token: roToken}, true},
		{"short token", Config{Backend: b}, ReadOnlyConfig{Token: "short"}, false},
		{"no backend", Config{}, ReadOnlyConfig{Token: roToken}, false},
		{"local mode", Config{Backend: b, Mode: ModeLocal}, ReadOnlyConfig{Token: roToken}, false},
	}
	for _, tt := range tests {
		ro, err := NewReadOnly(tt.cfg, tt.ro)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
		if ro != nil {
			ro.Close()
		}
	}
	var _ Backend = (*readOnlyBackend)(nil)
	_ = mesh.Record{}
}
