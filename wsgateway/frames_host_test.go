package wsgateway

import (
	"strings"
	"testing"
)

// hostFrames returns real thin-host frames, encoded: private_follow,
// host_knock, session_decide (pending, refused, approved) and its reply.
func hostFrames(t testing.TB) [][]byte {
	t.Helper()
	req, _, reply := knockFrames(t)
	kf, err := DecodeFrame(req)
	if err != nil {
		t.Fatal(err)
	}
	knock := kf.(*SessionKnockRequest).Knock
	rf, err := DecodeReply(reply)
	if err != nil {
		t.Fatal(err)
	}
	grant := rf.(*SessionKnockReply).Grant
	must := func(f Frame) []byte {
		b, err := EncodeFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	topic := "/confab/chan/1/" + strings.Repeat("ab", 32)
	return [][]byte{
		must(&PrivateFollowRequest{Req: "1", Channel: "~00112233445566778899aabbccddeeff", Topic: topic}),
		must(&HostKnock{ID: knock.ID, Knock: knock}),
		must(&SessionDecideRequest{Req: "2", ID: knock.ID, Status: "pending"}),
		must(&SessionDecideRequest{Req: "3", ID: knock.ID, Status: "refused", Code: "denied"}),
		must(&SessionDecideRequest{Req: "4", ID: knock.ID, Status: "approved", Grant: grant, Grants: nil}),
		must(&SessionDecideReply{Req: "4", ID: knock.ID, Backlog: 3}),
	}
}

func TestHostFramesDecode(t *testing.T) {
	fs := hostFrames(t)
	for i, b := range fs {
		var err error
		if i == 1 || i == 5 {
			_, err = DecodeReply(b)
		} else {
			_, err = DecodeFrame(b)
		}
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	follow, approved := string(fs[0]), string(fs[4])
	id := approved[strings.Index(approved, `"id":"`)+6:][:64]
	for _, c := range []struct {
		name, in, want string
	}{
		{"follow a public channel", strings.Replace(follow, `"~00112233445566778899aabbccddeeff"`, `"#general"`, 1), CodeBadChannel},
		{"follow a bad topic", strings.Replace(follow, `/confab/chan/1/`, `/confab/chan/2/`, 1), CodeBadChannel},
		{"decide a bad id", strings.Replace(approved, id, "xyz", 1), CodeBadFrame},
		{"decide an unknown status", strings.Replace(approved, `"approved"`, `"maybe"`, 1), CodeBadFrame},
		{"approve without grant", `{"type":"session_decide","req":"1","id":"` + id + `","status":"approved"}`, CodeBadFrame},
		{"refuse without code", `{"type":"session_decide","req":"1","id":"` + id + `","status":"refused"}`, CodeBadFrame},
		{"refuse with a long code", `{"type":"session_decide","req":"1","id":"` + id + `","status":"refused","code":"` + strings.Repeat("x", 33) + `"}`, CodeBadFrame},
		{"too many grants", `{"type":"session_decide","req":"1","id":"` + id + `","status":"approved","grant":{"kind":"grant"},"grants":[` +
			strings.TrimSuffix(strings.Repeat(`{"kind":"grant"},`, MaxDecideGrants+1), ",") + `]}`, CodeBadFrame},
		{"a null grant", `{"type":"session_decide","req":"1","id":"` + id + `","status":"approved","grant":{"kind":"grant"},"grants":[null]}`, CodeBadFrame},
	} {
		_, err := DecodeFrame([]byte(c.in))
		if got := codeOf(err); got != c.want {
			t.Errorf("%s: code %q (%v), want %q", c.name, got, err, c.want)
		}
	}
	knock := string(fs[1])
	if _, err := DecodeReply([]byte(strings.Replace(knock, `"id":"`+id, `"id":"`+strings.Repeat("0", 64), 1))); err == nil {
		t.Error("a host_knock whose id is not its envelope's decoded")
	}
}

func FuzzDecodeHostFrame(f *testing.F) {
	for _, b := range hostFrames(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(checkRoundTrip)
}
