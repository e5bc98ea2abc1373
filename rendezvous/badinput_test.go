package rendezvous_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/rendezvous"
	"github.com/confabhq/confab/wsgateway"
)

// raw opens a bare WebSocket to the rendezvous's gateway and returns it
// with the welcome.
func raw(t *testing.T, r *rendezvous.Rendezvous) (*websocket.Conn, *wsgateway.Welcome) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx(t), "ws://"+r.WSAddr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	w, ok := readFrame(t, ws).(*wsgateway.Welcome)
	if !ok {
		t.Fatal("first frame is not welcome")
	}
	return ws, w
}

func readFrame(t *testing.T, ws *websocket.Conn) wsgateway.Frame {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	f, err := wsgateway.DecodeReply(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return f
}

func write(t *testing.T, ws *websocket.Conn, v any) {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case wsgateway.Frame:
		b, _ = wsgateway.EncodeFrame(v)
	}
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
}

func errCode(t *testing.T, f wsgateway.Frame) string {
	t.Helper()
	if ef, ok := f.(*wsgateway.ErrorFrame); ok {
		return ef.Code
	}
	b, _ := json.Marshal(f)
	return "not an error: " + string(b)
}

// closeCode reads until the connection ends and returns its close code.
func closeCode(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	for {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return -1
		}
	}
}

func rawAuth(t *testing.T, ws *websocket.Conn, w *wsgateway.Welcome, k crypto.PrivKey) {
	t.Helper()
	id, _ := peer.IDFromPrivateKey(k)
	sig, _ := k.Sign(wsgateway.AuthBytes(w.Nonce, w.Node, id.String()))
	write(t, ws, &wsgateway.Auth{Req: "auth", Peer: id.String(), Sig: sig})
	if f := readFrame(t, ws); f.Type() != wsgateway.TypeOK {
		t.Fatalf("auth: %+v", f)
	}
}

func TestGatewayBadInput(t *testing.T) {
	leakCheck(t)
	const maxBad, perIP = 4, 6
	r := startRendezvous(t, func(c *rendezvous.Config) {
		c.Gateway.MaxBadFrames = maxBad
		c.Gateway.MaxFrame = 8 << 10
		c.Gateway.Remote.MaxConnsPerIP = perIP
		c.Metrics = ""
	})
	// An established client that must keep working throughout.
	good, gk, _ := thin(t, r, "")
	if err := good.Join(ctx(t), "#ops"); err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	goodPublish := func(content string) error {
		seq++
		e := &mesh.Envelope{Channel: "#ops", Name: "good", Seq: seq, TS: time.Now().UnixMilli(), Kind: "msg", Content: content}
		if err := e.Sign(gk); err != nil {
			t.Fatal(err)
		}
		_, err := good.Publish(ctx(t), e)
		return err
	}
	if err := goodPublish("deploy the rendezvous"); err != nil {
		t.Fatal(err)
	}

	t.Run("malformed, unknown and bad frames get errors up to the bound", func(t *testing.T) {
		ws, w := raw(t, r)
		k, _, _ := crypto.GenerateEd25519Key(nil)
		rawAuth(t, ws, w, k)
		bad := []struct{ frame, code string }{
			{`{not json`, wsgateway.CodeBadFrame},
			{`{"type":"teleport","req":"1"}`, wsgateway.CodeUnknownType},
			{`{"type":"join","req":"2","channel":"no-hash"}`, wsgateway.CodeBadChannel},
			{`{"type":"publish","req":"3"}`, wsgateway.CodeBadFrame},
		}
		for _, b := range bad {
			write(t, ws, b.frame)
			if got := errCode(t, readFrame(t, ws)); got != b.code {
				t.Errorf("%s: %s, want %s", b.frame, got, b.code)
			}
		}
		write(t, ws, &wsgateway.Ping{Req: "alive"}) // a good frame resets the count
		if f := readFrame(t, ws); f.Type() != wsgateway.TypePong {
			t.Fatalf("ping after bad frames: %+v", f)
		}
		for i := 0; i < maxBad; i++ {
			write(t, ws, `[]`)
			readFrame(t, ws)
		}
		write(t, ws, `[]`)
		if got := errCode(t, readFrame(t, ws)); got != wsgateway.CodePolicy {
			t.Errorf("bad frame %d: %s, want policy", maxBad+1, got)
		}
		if got := closeCode(t, ws); got != wsgateway.ClosePolicy {
			t.Errorf("close %d, want %d", got, wsgateway.ClosePolicy)
		}
	})

	t.Run("oversized frame", func(t *testing.T) {
		ws, _ := raw(t, r)
		write(t, ws, `{"type":"ping","req":"`+strings.Repeat("x", 9<<10)+`"}`)
		if got := errCode(t, readFrame(t, ws)); got != wsgateway.CodeTooLarge {
			t.Errorf("oversized: %s", got)
		}
		if got := closeCode(t, ws); got != wsgateway.CloseTooLarge {
			t.Errorf("close %d, want %d", got, wsgateway.CloseTooLarge)
		}
	})

	t.Run("bad signature and forged sender refused", func(t *testing.T) {
		ws, w := raw(t, r)
		k, _, _ := crypto.GenerateEd25519Key(nil)
		rawAuth(t, ws, w, k)
		write(t, ws, &wsgateway.Join{Req: "j", Channel: "#ops"})
		readFrame(t, ws)
		e := &mesh.Envelope{Channel: "#ops", Name: "x", Seq: 1, TS: time.Now().UnixMilli(), Kind: "msg", Content: "signed"}
		e.Sign(k)
		e.Content = "tampered"
		write(t, ws, &wsgateway.Publish{Req: "p1", Envelope: e})
		if got := errCode(t, readFrame(t, ws)); got != wsgateway.CodeBadSignature {
			t.Errorf("tampered: %s", got)
		}
		other, _, _ := crypto.GenerateEd25519Key(nil)
		f := &mesh.Envelope{Channel: "#ops", Name: "x", Seq: 1, TS: time.Now().UnixMilli(), Kind: "msg", Content: "forged"}
		f.Sign(other) // valid signature, someone else's identity
		write(t, ws, &wsgateway.Publish{Req: "p2", Envelope: f})
		if got := errCode(t, readFrame(t, ws)); got != wsgateway.CodeUnauthorized {
			t.Errorf("forged sender: %s", got)
		}
	})

	t.Run("replayed and misdirected auth refused", func(t *testing.T) {
		k, _, _ := crypto.GenerateEd25519Key(nil)
		id, _ := peer.IDFromPrivateKey(k)
		ws1, w1 := raw(t, r)
		sig1, _ := k.Sign(wsgateway.AuthBytes(w1.Nonce, w1.Node, id.String()))
		other, _, _ := crypto.GenerateEd25519Key(nil)
		otherID, _ := peer.IDFromPrivateKey(other)
		cases := map[string][]byte{
			"nonce of another connection": sig1,
			"signed for another gateway": func() []byte {
				s, _ := k.Sign(wsgateway.AuthBytes(w1.Nonce, otherID.String(), id.String()))
				return s
			}(),
		}
		for name, sig := range cases {
			ws, _ := raw(t, r)
			write(t, ws, &wsgateway.Auth{Req: "a", Peer: id.String(), Sig: sig})
			if got := errCode(t, readFrame(t, ws)); got != wsgateway.CodeUnauthorized {
				t.Errorf("%s: %s", name, got)
			}
			if got := closeCode(t, ws); got != wsgateway.CloseUnauthorized {
				t.Errorf("%s: close %d", name, got)
			}
		}
		// The legitimate auth on its own connection works once; a replay on
		// the same connection is refused.
		write(t, ws1, &wsgateway.Auth{Req: "a", Peer: id.String(), Sig: sig1})
		if f := readFrame(t, ws1); f.Type() != wsgateway.TypeOK {
			t.Fatalf("auth: %+v", f)
		}
		write(t, ws1, &wsgateway.Auth{Req: "b", Peer: id.String(), Sig: sig1})
		if got := errCode(t, readFrame(t, ws1)); got != wsgateway.CodeUnauthorized {
			t.Errorf("replay on the same connection: %s", got)
		}
	})

	t.Run("connection flood from one address is capped", func(t *testing.T) {
		refused := 0
		for i := 0; i < 3*perIP; i++ {
			ws, resp, err := websocket.DefaultDialer.DialContext(ctx(t), "ws://"+r.WSAddr()+"/", nil)
			if err != nil {
				if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("dial %d: %v", i, err)
				}
				refused++
				continue
			}
			t.Cleanup(func() { ws.Close() })
		}
		if refused < 2*perIP {
			t.Errorf("%d of %d refused, want at least %d", refused, 3*perIP, 2*perIP)
		}
		if err := goodPublish("still here"); err != nil {
			t.Errorf("established client during the flood: %v", err)
		}
	})

	// Full-text search over the real archive.
	recs, err := good.Search(ctx(t), "deploy", "#ops", 0)
	if err != nil || len(recs) != 1 || recs[0].Env.Content != "deploy the rendezvous" {
		t.Errorf("search: %v %+v", err, recs)
	}
}
