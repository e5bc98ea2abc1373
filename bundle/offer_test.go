package bundle

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func validOffer() *Offer {
	return &Offer{
		Type: OfferType, V: 1,
		Hash: strings.Repeat("ab", 32), Size: 1234,
		Refs: []Ref{
			{Name: "refs/heads/main", Commit: strings.Repeat("1", 40)},
			{Name: "refs/heads/topic/x", Commit: strings.Repeat("2", 40)},
			{Name: "refs/tags/v1.0", Commit: strings.Repeat("3", 40)},
		},
		Repo: "confab", Note: "please review\nthe tests", Created: 1700000000000,
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidRefName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"refs/heads/main", true},
		{"refs/heads/feature/x-1_2", true},
		{"refs/tags/v1.0.0", true},
		{"refs/heads/a.b", true},
		{"refs/heads/../../x", false},
		{"refs/heads/a..b", false},
		{"-upload-pack=touch /tmp/x", false},
		{"refs/heads/-upload-pack=x", false},
		{"refs/heads/x/-y", false},
		{"refs/remotes/origin/main", false},
		{"refs/confab/x/y", false},
		{"HEAD", false},
		{"refs/heads/", false},
		{"refs/heads/a\nb", false},
		{"refs/heads/a\x00b", false},
		{"refs/heads/a\x7fb", false},
		{"refs/heads/tab\tx", false},
		{"refs/heads/sp ace", false},
		{"refs/heads/é", false},
		{"refs/heads/a@{1}", false},
		{"refs/heads/@", false},
		{"refs/heads/a.lock", false},
		{"refs/heads/a.lock/b", false},
		{"refs/heads/a/", false},
		{"refs/heads/a//b", false},
		{"refs/heads/.hidden", false},
		{"refs/heads/a/.b", false},
		{"refs/heads/a.", false},
		{"refs/heads/a~1", false},
		{"refs/heads/a^", false},
		{"refs/heads/a:b", false},
		{"refs/heads/a?", false},
		{"refs/heads/a*", false},
		{"refs/heads/a[", false},
		{`refs/heads/a\b`, false},
		{"refs/heads/" + strings.Repeat("a", MaxRefLen-len("refs/heads/")), true},
		{"refs/heads/" + strings.Repeat("a", MaxRefLen), false},
	}
	for _, tt := range tests {
		err := ValidRefName(tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidRefName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadRef) {
			t.Errorf("ValidRefName(%q) error %v does not wrap ErrBadRef", tt.name, err)
		}
	}
}

func TestParseOffer(t *testing.T) {
	good := mustJSON(t, validOffer())
	if o, err := ParseOffer(good); err != nil {
		t.Fatalf("ParseOffer(valid) = %v", err)
	} else if o.Refs[1].Name != "refs/heads/topic/x" {
		t.Errorf("ParseOffer(valid).Refs[1] = %q", o.Refs[1].Name)
	}
	mod := func(f func(o *Offer)) []byte {
		o := validOffer()
		f(o)
		return mustJSON(t, o)
	}
	ref := func(name string) []byte {
		return mod(func(o *Offer) { o.Refs[0].Name = name })
	}
	manyRefs := make([]Ref, MaxRefs+1)
	for i := range manyRefs {
		manyRefs[i] = Ref{Name: "refs/heads/b" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + strings.Repeat("y", i/26), Commit: strings.Repeat("1", 40)}
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"escape dots", ref("refs/heads/../../x"), ErrBadRef},
		{"option", ref("-upload-pack=touch /tmp/pwned"), ErrBadRef},
		{"option in component", ref("refs/heads/--exec=x"), ErrBadRef},
		{"double dot", ref("refs/heads/a..b"), ErrBadRef},
		{"newline", ref("refs/heads/a\nb"), ErrBadRef},
		{"escape char", ref("refs/heads/a\x1b[31m"), ErrBadRef},
		{"remotes", ref("refs/remotes/x"), ErrBadRef},
		{"bare name", ref("main"), ErrBadRef},
		{"duplicate", mod(func(o *Offer) { o.Refs[1].Name = o.Refs[0].Name }), ErrBadOffer},
		{"wrong type", mod(func(o *Offer) { o.Type = "msg" }), ErrBadOffer},
		{"wrong version", mod(func(o *Offer) { o.V = 2 }), ErrBadOffer},
		{"upper hash", mod(func(o *Offer) { o.Hash = strings.ToUpper(o.Hash) }), ErrBadOffer},
		{"short hash", mod(func(o *Offer) { o.Hash = o.Hash[:63] }), ErrBadOffer},
		{"zero size", mod(func(o *Offer) { o.Size = 0 }), ErrBadOffer},
		{"negative size", mod(func(o *Offer) { o.Size = -1 }), ErrBadOffer},
		{"huge size", mod(func(o *Offer) { o.Size = MaxBundleSize + 1 }), ErrTooLarge},
		{"no refs", mod(func(o *Offer) { o.Refs = nil }), ErrBadOffer},
		{"too many refs", mod(func(o *Offer) { o.Refs = manyRefs }), ErrTooLarge},
		{"short commit", mod(func(o *Offer) { o.Refs[0].Commit = "abc" }), ErrBadOffer},
		{"upper commit", mod(func(o *Offer) { o.Refs[0].Commit = strings.Repeat("A", 40) }), ErrBadOffer},
		{"mixed oid lengths", mod(func(o *Offer) { o.Refs[1].Commit = strings.Repeat("2", 64) }), ErrBadOffer},
		{"repo too long", mod(func(o *Offer) { o.Repo = strings.Repeat("r", MaxRepoLen+1) }), ErrBadOffer},
		{"repo newline", mod(func(o *Offer) { o.Repo = "a\nb" }), ErrBadOffer},
		{"note escape", mod(func(o *Offer) { o.Note = "hi\x1b]0;pwned\x07" }), ErrBadOffer},
		{"note bidi", mod(func(o *Offer) { o.Note = "a\u202eb" }), ErrBadOffer},
		{"note too long", mod(func(o *Offer) { o.Note = strings.Repeat("n", MaxNoteLen+1) }), ErrBadOffer},
		{"no created", mod(func(o *Offer) { o.Created = 0 }), ErrBadOffer},
		{"trailing", append(good, []byte(` {}`)...), ErrBadOffer},
		{"not json", []byte("bundle"), ErrBadOffer},
		{"too large", append(good, make([]byte, MaxOfferLen)...), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseOffer(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseOffer = %+v, %v; want error %v", o, err, tt.want)
			}
		})
	}
	sha256Offer := mod(func(o *Offer) {
		for i := range o.Refs {
			o.Refs[i].Commit = strings.Repeat("c", 64)
		}
	})
	if _, err := ParseOffer(sha256Offer); err != nil {
		t.Errorf("ParseOffer(sha256 object ids) = %v", err)
	}
}

func FuzzParseOffer(f *testing.F) {
	f.Add(mustJSON(f, validOffer()))
	o := validOffer()
	o.Refs = o.Refs[:1]
	o.Note = ""
	f.Add(mustJSON(f, o))
	// A real offer as Create produces it.
	f.Add([]byte(`{"type":"bundle-offer","v":1,"hash":"9f2c0d6c1b1b0f7c4e7d3f1b8a0e2a6f2c1d5e4b3a29180706f5e4d3c2b1a090","size":2211,"refs":[{"name":"refs/heads/main","commit":"5c1f9c8e3a1d2b4c6e8f0a1b2c3d4e5f60718293"},{"name":"refs/tags/v1.0","commit":"0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"}],"repo":"src repo","note":"","created":1732170000000}`))
	f.Add([]byte(`{"type":"bundle-offer","v":1,"hash":"` + strings.Repeat("0", 64) + `","size":1,"refs":[{"name":"refs/heads/../../x","commit":"` + strings.Repeat("0", 40) + `"}],"repo":"","note":"","created":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOffer(b)
		if err != nil {
			return
		}
		// Whatever parses must round-trip and keep every ref in bounds.
		out, err := o.Marshal()
		if err != nil {
			t.Fatalf("Marshal of parsed offer: %v", err)
		}
		if _, err := ParseOffer(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		for _, r := range o.Refs {
			if strings.Contains(r.Name, "..") || strings.HasPrefix(r.Name, "-") || len(r.Name) > MaxRefLen {
				t.Fatalf("escaping ref accepted: %q", r.Name)
			}
		}
	})
}
