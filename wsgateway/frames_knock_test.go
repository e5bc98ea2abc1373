package wsgateway

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/mesh"
)

// knockFrames returns a real session_knock request and its replies, encoded.
func knockFrames(t testing.TB) (req, backlog, reply []byte) {
	t.Helper()
	k, _, _ := crypto.GenerateEd25519Key(nil)
	hk, _, _ := crypto.GenerateEd25519Key(nil)
	host, _ := peer.IDFromPrivateKey(hk)
	sk := mesh.SessionKey{Host: host.String(), Channel: "~00112233445566778899aabbccddeeff", Secret: make([]byte, 16), Expiry: time.Now().Add(time.Hour)}
	knock, err := mesh.NewKnock(k, "thin", sk.String(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	enc := &mesh.Envelope{Channel: sk.Channel, Name: "host", Seq: 1, TS: time.Now().UnixMilli(), Kind: mesh.KindEncrypted, Content: "cfx1.AAAA"}
	if err := enc.Sign(hk); err != nil {
		t.Fatal(err)
	}
	grant := &mesh.Envelope{Channel: "@" + knock.From, Name: "host", Seq: 1, TS: time.Now().UnixMilli(), Kind: mesh.KindGrant, Content: `{"type":"grant","v":1}`}
	if err := grant.Sign(hk); err != nil {
		t.Fatal(err)
	}
	must := func(f Frame) []byte {
		b, err := EncodeFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return must(&SessionKnockRequest{Req: "1", Knock: knock, Wait: 30}),
		must(&SessionBacklog{Req: "1", Envelopes: []*mesh.Envelope{enc}}),
		must(&SessionKnockReply{Req: "1", Grant: grant, Backlog: 1})
}

func TestKnockFramesDecode(t *testing.T) {
	req, backlog, reply := knockFrames(t)
	f, err := DecodeFrame(req)
	if err != nil {
		t.Fatal(err)
	}
	if kr := f.(*SessionKnockRequest); kr.Knock.Verify() != nil || kr.Wait != 30 {
		t.Fatalf("decoded %+v", kr)
	}
	for _, b := range [][]byte{backlog, reply} {
		f, err := DecodeReply(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if interim(f) != (f.Type() == TypeSessionBacklog) {
			t.Fatalf("%s: interim = %v", f.Type(), interim(f))
		}
	}
	noKnock := `{"type":"session_knock","req":"1","knock":null}`
	wrongKind := strings.Replace(string(req), `"kind":"knock"`, `"kind":"msg"`, 1)
	for _, c := range []struct {
		name, in, want string
	}{
		{"no knock", noKnock, CodeBadFrame},
		{"wrong kind", wrongKind, CodeBadFrame},
		{"wait too long", strings.Replace(string(req), `"wait":30`, `"wait":901`, 1), CodeBadFrame},
		{"no req", strings.Replace(string(req), `"req":"1"`, `"req":""`, 1), CodeBadFrame},
	} {
		_, err := DecodeFrame([]byte(c.in))
		if got := codeOf(err); got != c.want {
			t.Errorf("%s: code %q (%v), want %q", c.name, got, err, c.want)
		}
	}
	big := &SessionBacklog{Req: "1", Envelopes: make([]*mesh.Envelope, maxBacklogPage+1)}
	for i := range big.Envelopes {
		big.Envelopes[i] = &mesh.Envelope{}
	}
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		*SessionBacklog
	}{TypeSessionBacklog, big})
	if _, err := DecodeReply(b); err == nil {
		t.Error("a backlog page over the limit decoded")
	}
}

func FuzzDecodeKnockFrame(f *testing.F) {
	req, backlog, reply := knockFrames(f)
	for _, b := range [][]byte{req, backlog, reply} {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(checkRoundTrip)
}
