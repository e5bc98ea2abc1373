package rendezvous_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/confabhq/confab/agent"
	"github.com/confabhq/confab/internal/netnstest"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/node"
	"github.com/confabhq/confab/rendezvous"
	"github.com/confabhq/confab/wsgateway"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, opt,
			// libp2p and badger leave these behind after Close.
			goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
			goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).handleSendingMessages"),
			goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).processLoop"),
			goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
			goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems"),
			goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		)
	})
}

func startRendezvous(t *testing.T, tweak func(*rendezvous.Config)) *rendezvous.Rendezvous {
	t.Helper()
	cfg := rendezvous.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.WS = "127.0.0.1:0"
	cfg.Metrics = "127.0.0.1:0"
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := rendezvous.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func startAgent(t *testing.T, r *rendezvous.Rendezvous, name string, join ...string) *agent.Agent {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Home = t.TempDir()
	cfg.Name = name
	cfg.MDNS = false
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Rendezvous = r.Addrs()
	cfg.Join = join
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// thin dials the rendezvous's gateway and authenticates with a fresh key.
func thin(t *testing.T, r *rendezvous.Rendezvous, secret string) (*wsgateway.Client, crypto.PrivKey, string) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	c, err := wsgateway.Dial(ctx(t), "ws://"+r.WSAddr()+"/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(ctx(t), k, secret); err != nil {
		t.Fatal(err)
	}
	return c, k, id.String()
}

func TestAgentsAndThinClientThroughRendezvous(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, nil)
	if !strings.Contains(r.Addrs()[0], "/p2p/"+r.ID()) {
		t.Fatalf("addrs %v lack /p2p/<id>", r.Addrs())
	}
	a := startAgent(t, r, "atlas", "#general")
	// The agent's follower makes the archive join its channel.
	waitFor(t, "rendezvous follows #general", func() bool { return slices.Contains(r.Mesh().Channels(), "#general") })

	c, key, id := thin(t, r, "")
	if err := c.Join(ctx(t), "#general"); err != nil {
		t.Fatal(err)
	}
	events, err := c.Subscribe(ctx(t), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	// Agent → rendezvous → thin client. The first message may go out before
	// gossip meshes; the archive catches up on it anyway.
	if _, err := a.Mesh().Send(ctx(t), "#general", "msg", "hello from atlas", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Record.Env.Content != "hello from atlas" || ev.Record.Env.From != a.Info().ID {
			t.Errorf("thin client got %+v", ev.Record.Env)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("thin client never got the agent's message")
	}

	// Thin client → rendezvous → agent, with the client's own signature.
	sub := a.Mesh().Subscribe([]string{"#general"}, 0)
	defer sub.Close()
	n, err := c.NextSeq(ctx(t), "#general", "")
	if err != nil || n != 1 {
		t.Fatalf("NextSeq = %d, %v", n, err)
	}
	env := &mesh.Envelope{Channel: "#general", Name: "thin", Seq: n, TS: time.Now().UnixMilli(), Kind: "msg", Content: "hello from thin"}
	if err := env.Sign(key); err != nil {
		t.Fatal(err)
	}
	ack, err := c.Publish(ctx(t), env)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Cursor == "" || ack.ID != env.ID {
		t.Errorf("ack %+v", ack)
	}
	deadline := time.After(30 * time.Second)
	for got := false; !got; {
		select {
		case rec := <-sub.C():
			if rec.Env.ID == env.ID {
				got = true
				if rec.Env.From != id {
					t.Errorf("agent got From %s, want the client's %s", rec.Env.From, id)
				}
				if err := rec.Env.Verify(); err != nil {
					t.Errorf("agent's copy does not verify: %v", err)
				}
			}
		case <-deadline:
			t.Fatal("agent never got the thin client's message")
		}
	}

	// Operations endpoints.
	body := get(t, "http://"+r.MetricsAddr()+"/metrics")
	for _, want := range []string{"confab_gateway_connections 1", `confab_gateway_auth_total{result="ok"} 1`,
		"confab_channels_followed 1", "confab_history_lag_seconds_bucket", `confab_drops_total{reason="invalid"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if h := get(t, "http://"+r.MetricsAddr()+"/healthz"); !strings.HasPrefix(h, "ok ") {
		t.Errorf("healthz: %q", h)
	}

	// Clean shutdown closes the thin client's WebSocket with 1001.
	c.Close()
	c2, _, _ := thin(t, r, "")
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	r.Close() // idempotent
	if _, err := c2.Info(ctx(t)); err == nil {
		t.Error("gateway connection still answers after Close")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func TestFollowLimits(t *testing.T) {
	leakCheck(t)
	r := startRendezvous(t, func(c *rendezvous.Config) {
		c.MaxChannels = 3
		c.MaxFollowPerPeer = 2
		c.WS, c.Metrics = "", ""
	})
	newHost := func() *node.Host {
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
		return h
	}
	rid, _ := peer.Decode(r.ID())
	h1, h2 := newHost(), newHost()
	tests := []struct {
		h         *node.Host
		channels  []string
		following []string
		refused   map[string]string
	}{
		{h1, []string{"#a", "#b", "#c", "@bad", "#A"}, []string{"#a", "#b"},
			map[string]string{"#c": rendezvous.RefusedPeerLimit, "@bad": rendezvous.RefusedBadChannel, "#A": rendezvous.RefusedBadChannel}},
		{h1, []string{"#a"}, []string{"#a"}, nil}, // idempotent
		{h2, []string{"#c", "#d"}, []string{"#c"}, map[string]string{"#d": rendezvous.RefusedTotalLimit}},
	}
	for i, tt := range tests {
		rep, err := rendezvous.Follow(ctx(t), tt.h.Host(), rid, tt.channels)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !slices.Equal(rep.Following, tt.following) {
			t.Errorf("%d: following %v, want %v", i, rep.Following, tt.following)
		}
		if len(rep.Refused) != len(tt.refused) {
			t.Errorf("%d: refused %v, want %v", i, rep.Refused, tt.refused)
		}
		for ch, why := range tt.refused {
			if rep.Refused[ch] != why {
				t.Errorf("%d: refused[%s] = %q, want %q", i, ch, rep.Refused[ch], why)
			}
		}
	}
	if got := r.Mesh().Channels(); !slices.Equal(got, []string{"#a", "#b", "#c"}) {
		t.Errorf("followed %v", got)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name  string
		tweak func(*rendezvous.Config)
	}{
		{"relative dir", func(c *rendezvous.Config) { c.Dir = "rel" }},
		{"bad ws", func(c *rendezvous.Config) { c.WS = "nohostport" }},
		{"negative channels", func(c *rendezvous.Config) { c.MaxChannels = -1 }},
	}
	for _, tt := range tests {
		cfg := rendezvous.DefaultConfig()
		cfg.Dir = t.TempDir()
		tt.tweak(&cfg)
		if r, err := rendezvous.New(cfg); err == nil {
			r.Close()
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
}

func FuzzDecodeFollowRequest(f *testing.F) {
	f.Add([]byte(`{"type":"follow","v":1,"channels":["#general","#dev"]}`))
	f.Add([]byte(`{"type":"follow","v":1,"channels":["#dev"],"private":[{"channel":"~00112233445566778899aabbccddeeff","topic":"/confab/chan/1/` + strings.Repeat("ab", 32) + `"}]}`))
	f.Add([]byte(`{"type":"follow","v":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := rendezvous.DecodeFollowRequest(b)
		if err == nil && (r.Type != "follow" || len(r.Channels) > rendezvous.MaxFollowRequest || len(r.Private) > rendezvous.MaxFollowRequest) {
			t.Fatalf("accepted %q", b)
		}
	})
}
