package wsgateway

import (
	"errors"
	"testing"
)

func TestDecodeBundleFrames(t *testing.T) {
	tests := []struct {
		name, in, code string
	}{
		{"handoff", `{"type":"handoff","req":"1","to":"@nova","repo":"/src/app","revs":["main","v1"],"note":"hi"}`, ""},
		{"handoff relative repo", `{"type":"handoff","req":"1","to":"@nova","repo":"src/app"}`, CodeBadFrame},
		{"handoff option rev", `{"type":"handoff","req":"1","to":"@nova","repo":"/src","revs":["--upload-pack=x"]}`, CodeBadFrame},
		{"handoff no target", `{"type":"handoff","req":"1","repo":"/src"}`, CodeBadFrame},
		{"handoff nul in repo", `{"type":"handoff","req":"1","to":"@n","repo":"/a\u0000b"}`, CodeBadFrame},
		{"bundles all", `{"type":"bundles","req":"1"}`, ""},
		{"bundles prefix", `{"type":"bundles","req":"1","id":"0123abcd"}`, ""},
		{"bundles short prefix", `{"type":"bundles","req":"1","id":"012"}`, CodeBadFrame},
		{"bundles upper hex", `{"type":"bundles","req":"1","id":"ABCDEF"}`, CodeBadFrame},
		{"apply", `{"type":"apply","req":"1","id":"0123abcd","repo":"/dst","ref":"main","branch":"review/x"}`, ""},
		{"apply option branch", `{"type":"apply","req":"1","id":"0123abcd","repo":"/dst","branch":"-f"}`, CodeBadFrame},
		{"apply no repo", `{"type":"apply","req":"1","id":"0123abcd"}`, CodeBadFrame},
		{"apply no req", `{"type":"apply","id":"0123abcd","repo":"/dst"}`, CodeBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeFrame([]byte(tt.in))
			var pe *Error
			got := ""
			if errors.As(err, &pe) {
				got = pe.Code
			} else if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			if got != tt.code {
				t.Errorf("DecodeFrame(%s) code = %q, want %q (%v)", tt.in, got, tt.code, err)
			}
		})
	}
}

func TestBundleRepliesRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		&HandoffReply{Req: "1", ID: "ab", To: "p", Refs: []BundleRef{{Name: "refs/heads/main", Commit: "c"}}},
		&BundlesReply{Req: "2", Bundles: []WireBundle{{ID: "ab", State: BundleFetching, Size: 10, Done: 5}}},
		&ApplyReply{Req: "3", ID: "ab", Branch: "b", Commit: "c"},
	} {
		b, err := EncodeFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeReply(b)
		if err != nil || got.Type() != f.Type() {
			t.Errorf("DecodeReply(%s) = %v, %v", b, got, err)
		}
	}
	if _, err := DecodeReply([]byte(`{"type":"apply","id":"x"}`)); err == nil {
		t.Error("apply reply without req accepted")
	}
}
