package bundle

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Limits on what Create accepts from its caller.
const (
	maxRevs   = MaxRefs
	maxRevLen = 256
	// maxHeaderLen bounds a bundle's text header (refs and prerequisites)
	// when Import reads it.
	maxHeaderLen = 4 << 20
)

// bufSize is the copy buffer for every path that moves bundle bytes.
const bufSize = 256 << 10

// gitSafe are the -c settings on every git command this package runs: no
// hooks, and no pager or prompt.
var gitSafe = []string{"-c", "core.hooksPath=/dev/null", "-c", "core.pager=cat"}

// runGit runs git in dir and returns its stdout. Every argument that came
// from outside has been validated by the caller.
func runGit(ctx context.Context, dir string, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := gitCmd(ctx, dir, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &limitedBuffer{buf: &errb, max: 8 << 10}
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func gitCmd(ctx context.Context, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", append(append([]string{}, gitSafe...), args...)...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "GIT_TERMINAL_PROMPT=0", "GIT_OPTIONAL_LOCKS=0", "LC_ALL=C")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// cleanEnv is the process environment without GIT_* variables: an inherited
// GIT_DIR, GIT_OBJECT_DIRECTORY or GIT_CONFIG_* (as inside a git hook) would
// point git at another repository or configuration than the one named.
func cleanEnv() []string {
	env := os.Environ()
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GIT_") {
			out = append(out, kv)
		}
	}
	return out
}

type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

func validRev(r string) error {
	switch {
	case r == "" || len(r) > maxRevLen:
		return fmt.Errorf("%w: %q: empty or too long", ErrBadRev, trunc(r))
	case r[0] == '-':
		return fmt.Errorf("%w: %q: starts with '-'", ErrBadRev, trunc(r))
	}
	for i := 0; i < len(r); i++ {
		if r[i] < 0x20 || r[i] == 0x7f {
			return fmt.Errorf("%w: %q: control character", ErrBadRev, trunc(r))
		}
	}
	return nil
}

// Create bundles revs of the repository at repoDir with `git bundle create`
// and stores the bundle content-addressed as storeDir/<sha256> (mode 0600).
// revs are anything git rev-list takes (branches, tags, ranges such as
// main~3..main); none may start with '-'. With no revs it bundles the
// current branch; a bare "HEAD" means the current branch too. Every head of
// the resulting bundle must be a branch or tag (see ValidRefName).
// The returned offer has Repo set to the repository's directory name and an
// empty Note; the caller sets Note before signing.
func Create(ctx context.Context, repoDir string, revs []string, storeDir string) (*Offer, string, error) {
	if len(revs) > maxRevs {
		return nil, "", fmt.Errorf("bundle: create: %w: %d revisions, limit %d", ErrBadRev, len(revs), maxRevs)
	}
	for _, r := range revs {
		if err := validRev(r); err != nil {
			return nil, "", fmt.Errorf("bundle: create: %w", err)
		}
	}
	top, err := runGit(ctx, repoDir, nil, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	var branch string
	current := func() (string, error) {
		if branch != "" {
			return branch, nil
		}
		out, err := runGit(ctx, repoDir, nil, "symbolic-ref", "-q", "HEAD")
		b := strings.TrimSpace(string(out))
		if err != nil || !strings.HasPrefix(b, "refs/heads/") {
			return "", fmt.Errorf("bundle: create: %w", ErrNoBranch)
		}
		branch = b
		return b, nil
	}
	args := []string{"bundle", "create", "-q", "-"}
	if len(revs) == 0 {
		revs = []string{"HEAD"}
	}
	for _, r := range revs {
		if r == "HEAD" {
			if r, err = current(); err != nil {
				return nil, "", err
			}
		}
		args = append(args, r)
	}
	// "--" makes git read every argument before it as a revision, never a path.
	args = append(args, "--")

	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	tmp, err := os.CreateTemp(storeDir, ".create-*")
	if err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		tmp.Close()
		os.Remove(tmpName)
	}()
	cmd := gitCmd(ctx, repoDir, args...)
	var errb bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &errb, max: 8 << 10}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("bundle: create: git bundle create: %w", err)
	}
	h := sha256.New()
	size, copyErr := io.CopyBuffer(io.MultiWriter(tmp, h), io.LimitReader(stdout, MaxBundleSize+1), make([]byte, bufSize))
	if copyErr != nil || size > MaxBundleSize {
		_ = cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	switch {
	case size > MaxBundleSize:
		return nil, "", fmt.Errorf("bundle: create: %w: more than %d bytes", ErrTooLarge, int64(MaxBundleSize))
	case copyErr != nil:
		return nil, "", fmt.Errorf("bundle: create: %w", copyErr)
	case waitErr != nil:
		return nil, "", fmt.Errorf("bundle: create: git bundle create: %w: %s", waitErr, strings.TrimSpace(errb.String()))
	case size == 0:
		return nil, "", fmt.Errorf("bundle: create: git wrote an empty bundle")
	}
	if err := tmp.Sync(); err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	hash := hex.EncodeToString(h.Sum(nil))
	refs, err := listHeads(ctx, repoDir, tmpName)
	if err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	o := &Offer{
		Type:    OfferType,
		V:       offerVersion,
		Hash:    hash,
		Size:    size,
		Refs:    refs,
		Repo:    repoName(strings.TrimSpace(string(top))),
		Created: time.Now().UnixMilli(),
	}
	if _, err := o.Marshal(); err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	final := filepath.Join(storeDir, hash)
	if err := os.Rename(tmpName, final); err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	if err := syncDir(storeDir); err != nil {
		return nil, "", fmt.Errorf("bundle: create: %w", err)
	}
	return o, final, nil
}

// repoName turns the repository's top-level path into a display name that
// passes the offer's rules.
func repoName(top string) string {
	name := filepath.Base(top)
	var b strings.Builder
	for _, r := range name {
		if cleanText(string(r), false) && b.Len()+len(string(r)) <= MaxRepoLen {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// listHeads returns the refs a bundle file carries, as `git bundle
// list-heads` prints them. path must be absolute.
func listHeads(ctx context.Context, dir, path string) ([]Ref, error) {
	out, err := runGit(ctx, dir, nil, "bundle", "list-heads", path)
	if err != nil {
		return nil, err
	}
	var refs []Ref
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		oid, name, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("%w: list-heads line %q", ErrCorrupt, trunc(sc.Text()))
		}
		if err := ValidRefName(name); err != nil {
			return nil, err
		}
		if !validOID(oid) {
			return nil, fmt.Errorf("%w: list-heads object id %q", ErrCorrupt, trunc(oid))
		}
		if len(refs) == MaxRefs {
			return nil, fmt.Errorf("%w: more than %d refs", ErrTooLarge, MaxRefs)
		}
		refs = append(refs, Ref{Name: name, Commit: oid})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: list-heads: %v", ErrCorrupt, err)
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w: bundle has no refs", ErrCorrupt)
	}
	return refs, nil
}

var peerIDRE = regexp.MustCompile(`^[1-9A-HJ-NP-Za-km-z]{32,64}$`)

// validSender checks that s is a canonical base58 peer id, so that it is
// safe as one component of a ref name.
func validSender(s string) error {
	if !peerIDRE.MatchString(s) {
		return fmt.Errorf("%w: %q", ErrBadSender, trunc(s))
	}
	id, err := peer.Decode(s)
	if err != nil || id.String() != s {
		return fmt.Errorf("%w: %q", ErrBadSender, trunc(s))
	}
	return nil
}

// QuarantineRef returns where Import puts ref name of offer from sender:
// refs/confab/<sender>/<short hash>/<name without "refs/">, for example
// refs/confab/12D3Koo…/0123456789ab/heads/main.
func QuarantineRef(sender string, o *Offer, name string) string {
	return "refs/confab/" + sender + "/" + o.ShortHash() + "/" + strings.TrimPrefix(name, "refs/")
}

// verifyFile checks path's size and sha256 against the offer, streaming.
func verifyFile(path string, o *Offer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file", ErrCorrupt)
	}
	if fi.Size() != o.Size {
		return fmt.Errorf("%w: %d bytes, offer says %d", ErrSizeMismatch, fi.Size(), o.Size)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.LimitReader(f, o.Size+1), make([]byte, bufSize)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != o.Hash {
		return fmt.Errorf("%w: got %s", ErrHashMismatch, got)
	}
	return nil
}

// Import moves the refs of a received bundle into the quarantine namespace
// of the repository at repoDir (see QuarantineRef), in this order, stopping
// at the first failure:
//
//  1. validate the offer and sender (a canonical base58 peer id);
//  2. check the file's size and sha256 against the offer;
//  3. `git bundle verify` (header and prerequisites);
//  4. the bundle's heads must equal the offer's refs exactly;
//  5. `git index-pack --strict` of the bundle's pack into a throwaway object
//     directory (git 2.39's fetch from a bundle skips fsck, so this is where
//     malformed objects are caught);
//  6. one atomic `git fetch` with transfer.fsckObjects into the quarantine
//     refs; on failure every quarantine ref it created is deleted.
//
// Hooks are disabled on every git command. Nothing is checked out or merged;
// no ref outside refs/confab/<sender>/<short hash>/ is written.
// Errors wrap ErrBadOffer, ErrBadSender, ErrSizeMismatch, ErrHashMismatch,
// ErrCorrupt or ErrHeadsDiffer.
func Import(ctx context.Context, repoDir, bundlePath string, offer *Offer, sender string) error {
	if err := offer.Validate(); err != nil {
		return fmt.Errorf("bundle: import: %w", err)
	}
	if err := validSender(sender); err != nil {
		return fmt.Errorf("bundle: import: %w", err)
	}
	path, err := filepath.Abs(bundlePath)
	if err != nil {
		return fmt.Errorf("bundle: import: %w", err)
	}
	if err := verifyFile(path, offer); err != nil {
		return fmt.Errorf("bundle: import %s: %w", offer.ShortHash(), err)
	}
	gitDir, err := runGit(ctx, repoDir, nil, "rev-parse", "--absolute-git-dir")
	if err != nil {
		return fmt.Errorf("bundle: import: %w", err)
	}
	if _, err := runGit(ctx, repoDir, nil, "bundle", "verify", "-q", path); err != nil {
		return fmt.Errorf("bundle: import %s: %w: %v", offer.ShortHash(), ErrCorrupt, err)
	}
	heads, err := listHeads(ctx, repoDir, path)
	if err != nil {
		return fmt.Errorf("bundle: import %s: %w", offer.ShortHash(), err)
	}
	if !sameRefs(heads, offer.Refs) {
		return fmt.Errorf("bundle: import %s: %w", offer.ShortHash(), ErrHeadsDiffer)
	}
	if err := strictCheck(ctx, repoDir, strings.TrimSpace(string(gitDir)), path); err != nil {
		return fmt.Errorf("bundle: import %s: %w", offer.ShortHash(), err)
	}

	prefix := "refs/confab/" + sender + "/" + offer.ShortHash() + "/"
	before, err := runGit(ctx, repoDir, nil, "for-each-ref", "--format=%(refname)", prefix)
	if err != nil {
		return fmt.Errorf("bundle: import: %w", err)
	}
	existed := make(map[string]bool)
	for _, l := range strings.Split(string(before), "\n") {
		existed[l] = true
	}
	args := []string{"-c", "transfer.fsckObjects=true", "-c", "fetch.fsckObjects=true",
		"fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--atomic", "--no-recurse-submodules", "--no-auto-gc", "--", path}
	for _, r := range offer.Refs {
		args = append(args, r.Name+":"+QuarantineRef(sender, offer, r.Name))
	}
	if _, err := runGit(ctx, repoDir, nil, args...); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, r := range offer.Refs {
			q := QuarantineRef(sender, offer, r.Name)
			if !existed[q] {
				_, _ = runGit(cctx, repoDir, nil, "update-ref", "-d", q)
			}
		}
		return fmt.Errorf("bundle: import %s: %w", offer.ShortHash(), err)
	}
	return nil
}

func sameRefs(a, b []Ref) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]string, len(a))
	for _, r := range a {
		m[r.Name] = r.Commit
	}
	for _, r := range b {
		if c, ok := m[r.Name]; !ok || c != r.Commit {
			return false
		}
		delete(m, r.Name)
	}
	return len(m) == 0
}

// strictCheck runs `git index-pack --strict --fix-thin` over the bundle's
// pack into a temporary object directory whose alternate is the repository's
// own, so thin deltas resolve and nothing lands in the repository.
func strictCheck(ctx context.Context, repoDir, gitDir, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var hdr int
	for {
		line, err := br.ReadSlice('\n')
		hdr += len(line)
		if err != nil {
			return fmt.Errorf("%w: bundle header: %v", ErrCorrupt, err)
		}
		if hdr > maxHeaderLen {
			return fmt.Errorf("%w: bundle header longer than %d bytes", ErrCorrupt, maxHeaderLen)
		}
		if len(line) == 1 {
			break
		}
	}
	// Next to the bundle (the store), not in $TMPDIR, which may be memory.
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	objs := filepath.Join(tmp, "objects")
	if err := os.MkdirAll(filepath.Join(objs, "pack"), 0o700); err != nil {
		return err
	}
	cmd := gitCmd(ctx, repoDir, "index-pack", "--strict", "--fix-thin", "--stdin")
	cmd.Env = append(cmd.Env, "GIT_OBJECT_DIRECTORY="+objs, "GIT_ALTERNATE_OBJECT_DIRECTORIES="+filepath.Join(gitDir, "objects"))
	cmd.Stdin = br
	var errb bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &errb, max: 8 << 10}
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: index-pack --strict: %v: %s", ErrCorrupt, err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// Apply creates branch (default "confab/<short hash>") in the repository at
// repoDir pointing at the commit Import quarantined for ref (default: the
// offer's only branch). It refuses if the branch exists. Nothing is checked
// out. Errors wrap ErrBadRef, ErrNotImported or ErrExists.
func Apply(ctx context.Context, repoDir string, offer *Offer, sender string, ref string, branch string) error {
	if err := offer.Validate(); err != nil {
		return fmt.Errorf("bundle: apply: %w", err)
	}
	if err := validSender(sender); err != nil {
		return fmt.Errorf("bundle: apply: %w", err)
	}
	if ref == "" {
		for _, r := range offer.Refs {
			if strings.HasPrefix(r.Name, "refs/heads/") {
				if ref != "" {
					return fmt.Errorf("bundle: apply: %w: offer has several branches; name one", ErrBadRef)
				}
				ref = r.Name
			}
		}
		if ref == "" {
			return fmt.Errorf("bundle: apply: %w: offer has no branch; name a ref", ErrBadRef)
		}
	}
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	var want string
	for _, r := range offer.Refs {
		if r.Name == ref {
			want = r.Commit
		}
	}
	if want == "" {
		return fmt.Errorf("bundle: apply: %w: %q is not in the offer", ErrBadRef, trunc(ref))
	}
	if branch == "" {
		branch = "confab/" + offer.ShortHash()
	}
	target := "refs/heads/" + branch
	if err := ValidRefName(target); err != nil {
		return fmt.Errorf("bundle: apply: %w", err)
	}
	q := QuarantineRef(sender, offer, ref)
	out, err := runGit(ctx, repoDir, nil, "rev-parse", "-q", "--verify", q)
	if err != nil || strings.TrimSpace(string(out)) != want {
		return fmt.Errorf("bundle: apply %s: %w", q, ErrNotImported)
	}
	out, err = runGit(ctx, repoDir, nil, "rev-parse", "-q", "--verify", q+"^{commit}")
	if err != nil {
		return fmt.Errorf("bundle: apply %s: %w: not a commit", q, ErrBadRef)
	}
	commit := strings.TrimSpace(string(out))
	// An empty old value makes update-ref create the branch only if it does
	// not exist, atomically.
	if _, err := runGit(ctx, repoDir, nil, "update-ref", "-m", "confab apply "+offer.ShortHash(), target, commit, ""); err != nil {
		if _, e := runGit(ctx, repoDir, nil, "rev-parse", "-q", "--verify", target); e == nil {
			return fmt.Errorf("bundle: apply: %w: %s", ErrExists, branch)
		}
		return fmt.Errorf("bundle: apply: %w", err)
	}
	return nil
}
