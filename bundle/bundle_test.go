package bundle

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakCheck verifies, after every other cleanup (hosts, servers) has run,
// that the test left no goroutine behind.
func leakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHandoff moves several branches and tags, then a range on top, between
// two real hosts and checks that the receiver ends with the same commits and
// trees.
func TestHandoff(t *testing.T) {
	needGit(t)
	leakCheck(t)
	ctx := ctxT(t)
	src := makeRepo(t)
	sendStore, recvStore := t.TempDir(), t.TempDir()
	dst := filepath.Join(t.TempDir(), "dst")
	initRepo(t, dst)

	sh, rh := pair(t)
	srv := newServer(t, sh, sendStore)

	// A revision that names no ref carries no head: git refuses the bundle.
	if o, _, err := Create(ctx, src, []string{"main~1"}, sendStore); err == nil {
		t.Fatalf("Create(main~1) = %+v; want an error", o)
	}
	offer, path, err := Create(ctx, src, []string{"main", "feature", "topic/x", "v1.0", "light"}, sendStore)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := path, filepath.Join(sendStore, offer.Hash); got != want {
		t.Errorf("Create path = %q, want %q", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bundle file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	if got := fileHash(t, path); got != offer.Hash {
		t.Errorf("file hash %s, offer hash %s", got, offer.Hash)
	}
	var names []string
	for _, r := range offer.Refs {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	if want := []string{"refs/heads/feature", "refs/heads/main", "refs/heads/topic/x", "refs/tags/light", "refs/tags/v1.0"}; !slices.Equal(names, want) {
		t.Errorf("offer refs = %v, want %v", names, want)
	}
	if offer.Repo != "src repo" {
		t.Errorf("offer repo = %q", offer.Repo)
	}
	// The offer survives the wire.
	wire, err := offer.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	offer, err = ParseOffer(wire)
	if err != nil {
		t.Fatal(err)
	}

	srv.Offer(offer.Hash, rh.ID())
	var mu sync.Mutex
	var last, total int64
	got, err := Fetch(ctx, rh, sh.ID(), offer, recvStore, func(done, tot int64) {
		mu.Lock()
		last, total = done, tot
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != offer.Size || total != offer.Size {
		t.Errorf("last progress %d/%d, want %d/%d", last, total, offer.Size, offer.Size)
	}
	if fileHash(t, got) != offer.Hash {
		t.Fatal("fetched bundle differs")
	}
	sender := sh.ID().String()
	if err := Import(ctx, dst, got, offer, sender); err != nil {
		t.Fatal(err)
	}
	if ents, _ := filepath.Glob(filepath.Join(recvStore, ".check-*")); len(ents) != 0 {
		t.Errorf("Import left %v behind", ents)
	}
	// Importing twice is harmless.
	if err := Import(ctx, dst, got, offer, sender); err != nil {
		t.Fatalf("second Import: %v", err)
	}
	for _, r := range offer.Refs {
		q := QuarantineRef(sender, offer, r.Name)
		if got := git(t, dst, "rev-parse", q); got != r.Commit {
			t.Errorf("%s = %s, want %s", q, got, r.Commit)
		}
	}
	if got := git(t, dst, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags"); got != "" {
		t.Errorf("Import wrote outside the quarantine: %q", got)
	}

	if err := Apply(ctx, dst, offer, sender, "", ""); err == nil {
		t.Error("Apply with several branches and no ref: want error")
	}
	for _, tc := range []struct{ ref, branch, srcRef string }{
		{"main", "", "main"},
		{"refs/heads/topic/x", "review/x", "topic/x"},
		{"refs/heads/feature", "feat", "feature"},
		{"refs/tags/v1.0", "rel", "v1.0^{commit}"},
	} {
		if err := Apply(ctx, dst, offer, sender, tc.ref, tc.branch); err != nil {
			t.Fatalf("Apply(%s, %q): %v", tc.ref, tc.branch, err)
		}
		branch := tc.branch
		if branch == "" {
			branch = "confab/" + offer.ShortHash()
		}
		for _, suffix := range []string{"", "^{tree}"} {
			if got, want := git(t, dst, "rev-parse", "refs/heads/"+branch+suffix), git(t, src, "rev-parse", tc.srcRef+suffix); got != want {
				t.Errorf("%s%s = %s on the receiver, %s on the sender", branch, suffix, got, want)
			}
		}
	}
	if got, want := git(t, dst, "rev-list", "--parents", "feat"), git(t, src, "rev-list", "--parents", "feature"); got != want {
		t.Errorf("history differs:\n%s\nvs\n%s", got, want)
	}
	if err := Apply(ctx, dst, offer, sender, "main", ""); !errors.Is(err, ErrExists) {
		t.Errorf("Apply onto an existing branch = %v, want ErrExists", err)
	}
	for _, bad := range []string{"../x", "-f", "a..b", "a b", "x.lock"} {
		if err := Apply(ctx, dst, offer, sender, "main", bad); !errors.Is(err, ErrBadRef) {
			t.Errorf("Apply branch %q = %v, want ErrBadRef", bad, err)
		}
	}
	if err := Apply(ctx, dst, offer, "../../etc", "main", "zz"); !errors.Is(err, ErrBadSender) {
		t.Errorf("Apply with bad sender = %v, want ErrBadSender", err)
	}
	// Nothing was checked out.
	if out := git(t, dst, "status", "--porcelain"); out != "" {
		t.Errorf("worktree changed: %q", out)
	}

	// A range on top, with prerequisites the receiver now has.
	git(t, src, "checkout", "-q", "main")
	writeFile(t, filepath.Join(src, "more.txt"), []byte("more\n"))
	git(t, src, "add", ".")
	git(t, src, "commit", "-q", "-m", "more")
	offer2, _, err := Create(ctx, src, []string{"main~1..main"}, sendStore)
	if err != nil {
		t.Fatal(err)
	}
	srv.Offer(offer2.Hash, rh.ID())
	got2, err := Fetch(ctx, rh, sh.ID(), offer2, recvStore, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Import(ctx, dst, got2, offer2, sender); err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, dst, offer2, sender, "", ""); err != nil {
		t.Fatal(err)
	}
	if got, want := git(t, dst, "rev-parse", "confab/"+offer2.ShortHash()), git(t, src, "rev-parse", "main"); got != want {
		t.Errorf("range handoff: %s, want %s", got, want)
	}

	// Default revs: the current branch.
	offer3, _, err := Create(ctx, src, nil, sendStore)
	if err != nil {
		t.Fatal(err)
	}
	if len(offer3.Refs) != 1 || offer3.Refs[0].Name != "refs/heads/main" {
		t.Errorf("default Create refs = %+v, want only refs/heads/main", offer3.Refs)
	}

	// The index.
	rec := Received{ID: offer.Hash, From: sender, Offer: offer, Received: time.Now(), Repo: dst}
	if err := Record(recvStore, rec); err != nil {
		t.Fatal(err)
	}
	if err := Record(recvStore, Received{ID: offer2.Hash, From: sender, Offer: offer2, Received: time.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	list, err := List(recvStore)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != offer.Hash || list[1].ID != offer2.Hash || list[0].Repo != dst || list[0].Offer.Refs[0] != offer.Refs[0] {
		t.Errorf("List = %+v", list)
	}
	if r, err := Load(recvStore, offer2.Hash); err != nil || r.From != sender {
		t.Errorf("Load = %+v, %v", r, err)
	}
	if _, err := Load(recvStore, strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := Load(recvStore, "../x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load(../x) = %v, want ErrNotFound", err)
	}
	srv.Close()
	srv.Close()
	sh.Close()
	rh.Close()
}

func TestCreateRefusesOptions(t *testing.T) {
	needGit(t)
	src := makeRepo(t)
	store := t.TempDir()
	for _, revs := range [][]string{
		{"--output=/tmp/pwned"},
		{"-upload-pack=touch /tmp/pwned"},
		{"main", "--all"},
		{"ma\nin"},
		{""},
	} {
		if o, _, err := Create(ctxT(t), src, revs, store); !errors.Is(err, ErrBadRev) {
			t.Errorf("Create(%q) = %+v, %v; want ErrBadRev", revs, o, err)
		}
	}
	// An inherited GIT_DIR (as inside a hook) does not redirect git.
	t.Setenv("GIT_DIR", filepath.Join(t.TempDir(), "elsewhere"))
	if _, _, err := Create(ctxT(t), src, []string{"main"}, t.TempDir()); err != nil {
		t.Errorf("Create with GIT_DIR set: %v", err)
	}
	os.Unsetenv("GIT_DIR")
	git(t, src, "checkout", "-q", "--detach")
	if _, _, err := Create(ctxT(t), src, nil, store); !errors.Is(err, ErrNoBranch) {
		t.Errorf("Create on detached HEAD = %v, want ErrNoBranch", err)
	}
	if ents, _ := os.ReadDir(store); len(ents) != 0 {
		t.Errorf("store holds %d files after refused creates", len(ents))
	}
}

// importFixture returns a sender-made bundle, its offer, an empty receiving
// repository and a sender id.
func importFixture(t *testing.T) (src, path string, offer *Offer, dst, sender string) {
	needGit(t)
	src = makeRepo(t)
	offer, path, err := Create(ctxT(t), src, []string{"main", "v1.0"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dst = filepath.Join(t.TempDir(), "dst")
	initRepo(t, dst)
	return src, path, offer, dst, "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
}

func TestImportRefuses(t *testing.T) {
	_, path, offer, dst, sender := importFixture(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, b)
		return p
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)-30] ^= 1
	truncated := data[:len(data)/2]
	truncOffer := *offer
	truncOffer.Hash, truncOffer.Size = sha256hex(truncated), int64(len(truncated))
	lying := *offer
	lying.Refs = []Ref{{Name: "refs/heads/main", Commit: offer.Refs[0].Commit}}
	renamed := *offer
	renamed.Refs = slices.Clone(offer.Refs)
	for i := range renamed.Refs {
		if renamed.Refs[i].Name == "refs/heads/main" {
			renamed.Refs[i].Name = "refs/heads/other"
		}
	}
	escaping := *offer
	escaping.Refs = []Ref{{Name: "refs/heads/../../x", Commit: offer.Refs[0].Commit}}

	tests := []struct {
		name   string
		path   string
		offer  *Offer
		sender string
		want   error
	}{
		{"bit flipped", write("flipped", flipped), offer, sender, ErrHashMismatch},
		{"truncated", write("trunc", truncated), offer, sender, ErrSizeMismatch},
		{"truncated with matching offer", write("trunc2", truncated), &truncOffer, sender, ErrCorrupt},
		{"heads differ (missing)", path, &lying, sender, ErrHeadsDiffer},
		{"heads differ (renamed)", path, &renamed, sender, ErrHeadsDiffer},
		{"escaping ref", path, &escaping, sender, ErrBadRef},
		{"sender path", path, offer, "../../../etc", ErrBadSender},
		{"sender not canonical", path, offer, "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N/x", ErrBadSender},
	}
	before := refsOf(t, dst)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Import(ctxT(t), dst, tt.path, tt.offer, tt.sender)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Import = %v, want %v", err, tt.want)
			}
			if after := refsOf(t, dst); after != before {
				t.Errorf("refs changed after refused import:\n%s", after)
			}
		})
	}
}

// TestImportRefusesBadObject: a bundle whose hash matches its offer but
// carries a malformed commit is stopped by the strict pack check.
func TestImportRefusesBadObject(t *testing.T) {
	needGit(t)
	src := filepath.Join(t.TempDir(), "src")
	initRepo(t, src)
	writeFile(t, filepath.Join(src, "f"), []byte("f\n"))
	git(t, src, "add", ".")
	git(t, src, "commit", "-q", "-m", "ok")
	tree := git(t, src, "rev-parse", "HEAD^{tree}")
	cmd := "printf 'tree " + tree + "\\nauthor A <a@b 1 +0000\\ncommitter A <a@b> 1 +0000\\n\\nbad\\n' | git hash-object -t commit -w --literally --stdin"
	bad := git(t, src, "-c", "alias.x=!"+cmd, "x")
	git(t, src, "update-ref", "refs/heads/bad", bad)
	offer, path, err := Create(ctxT(t), src, []string{"bad"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	initRepo(t, dst)
	before := refsOf(t, dst)
	err = Import(ctxT(t), dst, path, offer, "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Import of malformed commit = %v, want ErrCorrupt", err)
	}
	if after := refsOf(t, dst); after != before {
		t.Errorf("refs changed:\n%s", after)
	}
}

// TestSHA256Repository: 64-hex object ids go through Create, ParseOffer,
// Import and Apply.
func TestSHA256Repository(t *testing.T) {
	needGit(t)
	ctx := ctxT(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, src, "init", "-q", "-b", "main", "--object-format=sha256")
	writeFile(t, filepath.Join(src, "f"), []byte("f\n"))
	git(t, src, "add", ".")
	git(t, src, "commit", "-q", "-m", "one")
	offer, path, err := Create(ctx, src, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wire, err := offer.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if offer, err = ParseOffer(wire); err != nil {
		t.Fatal(err)
	}
	if len(offer.Refs[0].Commit) != 64 {
		t.Fatalf("object id %q, want 64 hex", offer.Refs[0].Commit)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, dst, "init", "-q", "--object-format=sha256")
	sender := "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	if err := Import(ctx, dst, path, offer, sender); err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, dst, offer, sender, "", "got"); err != nil {
		t.Fatal(err)
	}
	if got, want := git(t, dst, "rev-parse", "got"), git(t, src, "rev-parse", "main"); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
