package wsgateway

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/confabhq/confab/mesh"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenEnvelope is signed by a fixed key so the golden files are stable.
func goldenEnvelope(t testing.TB) *mesh.Envelope {
	seed := bytes.Repeat([]byte{7}, 32)
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	env := &mesh.Envelope{Channel: "#general", Name: "alice", Seq: 3, TS: 1700000000123, Kind: "msg", Content: "hi <all> & \"you\""}
	if err := env.Sign(k); err != nil {
		t.Fatal(err)
	}
	return env
}

// goldenFrames is one example of every frame, by golden file name. Request
// frames are decoded with DecodeFrame, replies with DecodeReply.
func goldenFrames(t testing.TB) (requests, replies map[string]Frame) {
	env := goldenEnvelope(t)
	rec := mesh.Record{Env: env, Cursor: "00000000000000a1"}
	requests = map[string]Frame{
		"join":        &Join{Req: "1", Channel: "#general"},
		"leave":       &Leave{Req: "2", Channel: "#general"},
		"send":        &Send{Req: "3", Channel: "#general", Kind: "msg", Content: "hi", ReplyTo: env.ID},
		"publish":     &Publish{Req: "4", Envelope: env},
		"subscribe":   &Subscribe{Req: "5", Channels: []string{"#general", "#dev"}, Since: "00000000000000a0"},
		"unsubscribe": &Unsubscribe{Req: "6"},
		"history":     &HistoryRequest{Req: "7", Channel: "#general", Before: "00000000000000a2", Limit: 50},
		"who":         &WhoRequest{Req: "8", Channel: "#general"},
		"info":        &InfoRequest{Req: "9"},
		"auth":        &Auth{Req: "10", Peer: env.From, Sig: bytes.Repeat([]byte{1}, 64)},
		"ping":        &Ping{Req: "11"},
		"seq":         &SeqRequest{Req: "12", Channel: "#general"},
		"search":      &SearchRequest{Req: "13", Query: "deploy go*", Channel: "#general", Limit: 20},
	}
	replies = map[string]Frame{
		"welcome":       &Welcome{V: 1, Node: env.From, Name: "alice", Mode: ModeLocal, Nonce: bytes.Repeat([]byte{9}, 32)},
		"ok":            &OK{Req: "1"},
		"ack":           &Ack{Req: "3", ID: env.ID, Seq: 3, Cursor: "00000000000000a1"},
		"event":         &Event{Record: rec, Replay: true},
		"live":          &Live{Req: "5"},
		"history-reply": &HistoryReply{Req: "7", Records: []mesh.Record{rec}, More: true},
		"who-reply": &WhoReply{Req: "8", Peers: []WirePeer{{ID: env.From, Name: "alice", Status: "online",
			Caps: []string{"go", "review"}, Channels: []string{"#general"}, LastSeen: 1700000000000}}},
		"info-reply": &InfoReply{Req: "9", Info: WireInfo{ID: env.From, Name: "alice", Caps: []string{"go"},
			Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Channels: []string{"#general"}}},
		"error":         &ErrorFrame{Req: "5", Code: CodeResume, Message: "subscriber too slow: resubscribe with since=cursor", Cursor: "00000000000000a1"},
		"pong":          &Pong{Req: "11"},
		"search-reply":  &SearchReply{Req: "13", Records: []mesh.Record{rec}},
		"seq-reply":     &SeqReply{Req: "12", Channel: "#general", Peer: env.From, Next: 4},
		"error-seq-gap": &ErrorFrame{Req: "4", Code: CodeSeqGap, Message: "seq 9 is not the next of this author on #general: use 4", Next: 4},
	}
	return requests, replies
}

func TestGoldenFrames(t *testing.T) {
	requests, replies := goldenFrames(t)
	check := func(name string, f Frame, decode func([]byte) (Frame, error)) {
		t.Helper()
		got, err := EncodeFrame(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		path := filepath.Join("testdata", "frames", name+".golden")
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
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

func TestDecodeDefaults(t *testing.T) {
	tests := []struct {
		in   string
		want Frame
	}{
		{`{"type":"send","req":"1","channel":"#a","content":"x"}`, &Send{Req: "1", Channel: "#a", Kind: "msg", Content: "x"}},
		{`{"type":"history","req":"1","channel":"#a"}`, &HistoryRequest{Req: "1", Channel: "#a", Limit: DefaultHistory}},
		{`{"type":"history","req":"1","channel":"#a","limit":99999}`, &HistoryRequest{Req: "1", Channel: "#a", Limit: MaxHistoryLimit}},
		{`{"type":"join","req":"1","channel":"#a","extra":true}`, &Join{Req: "1", Channel: "#a"}},
	}
	for _, tt := range tests {
		got, err := DecodeFrame([]byte(tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.in, diff)
		}
	}
}

// FuzzDecodeFrame feeds both decoders arbitrary bytes. Whatever decodes must
// re-encode and decode to the same frame. Like nats' FuzzParser, every seed
// is also added split in two, so half-frames and truncations are covered.
func FuzzDecodeFrame(f *testing.F) {
	requests, replies := goldenFrames(f)
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
	f.Add([]byte(`{"type":"history","req":"1","channel":"#a","limit":-5}`))
	f.Add([]byte(`{"type":"event","record":{"envelope":null,"cursor":""}}`))
	f.Add([]byte(`{"type":7}`))
	f.Fuzz(checkRoundTrip)
}

// checkRoundTrip is the property of every frame fuzz target: whatever one of
// the decoders accepts re-encodes, and decodes again to the same frame. An
// empty list and a missing one are the same frame (omitempty drops it).
func checkRoundTrip(t *testing.T, b []byte) {
	for _, decode := range []func([]byte) (Frame, error){DecodeFrame, DecodeReply} {
		fr, err := decode(b)
		if err != nil {
			continue
		}
		enc, err := EncodeFrame(fr)
		if err != nil {
			t.Fatalf("re-encode %T: %v", fr, err)
		}
		again, err := decode(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		if diff := cmp.Diff(fr, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("not stable (-first +second):\n%s", diff)
		}
	}
}
