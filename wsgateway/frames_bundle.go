package wsgateway

import (
	"context"
	"path/filepath"
	"strings"
)

// Frame types of code handoff (docs/handoff.md). Request and reply share
// each name, as search does.
const (
	TypeHandoff = "handoff"
	TypeBundles = "bundles"
	TypeApply   = "apply"
)

// Error codes of the bundle frames.
const (
	CodeBundleNotFound = "bundle_not_found" // no received bundle has that id (or prefix)
	CodeBundleNotReady = "bundle_not_ready" // still fetching, or failed: nothing was imported
	CodeBundleFailed   = "bundle_failed"    // create, offer, import or apply failed; the message says why
	CodeBadRepo        = "bad_repo"         // the path is not a git repository the node can use
)

// States of a received bundle (WireBundle.State).
const (
	BundleQueued   = "queued"   // offer accepted, waiting for a fetch slot
	BundleFetching = "fetching" // bytes moving; Done of Size
	BundleWaiting  = "waiting"  // the last attempt failed (Error); the node retries
	BundleReady    = "ready"    // every byte arrived and matched the signed sha256
	BundleFailed   = "failed"   // refused or gave up (Error); nothing was imported
	BundleApplied  = "applied"  // a branch was made from it (AppliedRepo, Branch)
)

// Limits of the bundle frames. The node applies the bundle package's own,
// stricter limits after these.
const (
	MaxBundlePath   = 4096 // bytes of a repository path
	MaxBundleRevs   = 256  // revisions in one handoff
	MaxBundleRev    = 256  // bytes of one revision
	MaxBundleNote   = 4096 // bytes of a handoff note
	MaxBundleRef    = 200  // bytes of a ref or branch name
	MaxBundleID     = 64   // hex digits of a bundle id (a prefix may be shorter)
	MinBundlePrefix = 4    // shortest id prefix accepted
	maxTargetLen    = 128  // bytes of "@name" or "@peerid"
)

// HandoffRequest asks the node to bundle Revs (default: the current branch)
// of the git repository at Repo, an absolute path on the node's machine,
// and offer the bundle to the agent To ("@name", "@peerid" or a peer id)
// by a signed direct message. Local mode only: the node runs git as the
// socket's owner. Reply: HandoffReply.
type HandoffRequest struct {
	Req  string   `json:"req"`
	To   string   `json:"to"`
	Repo string   `json:"repo"`
	Revs []string `json:"revs,omitempty"`
	Note string   `json:"note,omitempty"`
}

// HandoffReply says what was offered. Delivered is false when the offer
// waits in the node's outbox for the recipient to come online.
type HandoffReply struct {
	Req       string      `json:"req"`
	ID        string      `json:"id"` // the bundle's sha256
	To        string      `json:"to"` // recipient peer id
	Envelope  string      `json:"envelope"`
	Delivered bool        `json:"delivered"`
	Size      int64       `json:"size"`
	Repo      string      `json:"repo"`
	Refs      []BundleRef `json:"refs"`
}

// BundleRef is one ref a bundle carries.
type BundleRef struct {
	Name   string `json:"name"`
	Commit string `json:"commit"`
}

// WireBundle is one received bundle as the bundles reply lists it. From is
// verified (the offer's envelope signature); Name, Repo, Note and the ref
// names are the sender's own words: untrusted data.
type WireBundle struct {
	ID          string      `json:"id"` // sha256; for a refused offer, its envelope id
	From        string      `json:"from"`
	Name        string      `json:"name,omitempty"`
	Repo        string      `json:"repo,omitempty"`
	Note        string      `json:"note,omitempty"`
	Refs        []BundleRef `json:"refs,omitempty"`
	Size        int64       `json:"size"`
	Done        int64       `json:"done"`
	State       string      `json:"state"`
	Error       string      `json:"error,omitempty"`
	Envelope    string      `json:"envelope,omitempty"`
	Offered     int64       `json:"offered,omitempty"`  // sender's clock, unix ms
	Received    int64       `json:"received,omitempty"` // when the bytes were verified, unix ms
	AppliedRepo string      `json:"applied_repo,omitempty"`
	Branch      string      `json:"branch,omitempty"`
}

// BundlesRequest lists received bundles, or only those whose id starts with
// ID. Reply: BundlesReply.
type BundlesRequest struct {
	Req string `json:"req"`
	ID  string `json:"id,omitempty"`
}

// BundlesReply lists bundles, oldest offer first.
type BundlesReply struct {
	Req     string       `json:"req"`
	Bundles []WireBundle `json:"bundles"`
}

// ApplyRequest imports the received bundle ID (full id or a unique prefix)
// into the quarantine refs of the repository at Repo (absolute) and makes
// Branch (default "confab/<short id>") point at Ref (default: the bundle's
// only branch). Nothing is checked out or merged. Local mode only. Reply:
// ApplyReply.
type ApplyRequest struct {
	Req    string `json:"req"`
	ID     string `json:"id"`
	Repo   string `json:"repo"`
	Ref    string `json:"ref,omitempty"`
	Branch string `json:"branch,omitempty"`
}

// ApplyReply names the branch made and its commit.
type ApplyReply struct {
	Req    string `json:"req"`
	ID     string `json:"id"`
	Repo   string `json:"repo"`
	Ref    string `json:"ref"`
	Branch string `json:"branch"`
	Commit string `json:"commit"`
}

func (*HandoffRequest) Type() string { return TypeHandoff }
func (*HandoffReply) Type() string   { return TypeHandoff }
func (*BundlesRequest) Type() string { return TypeBundles }
func (*BundlesReply) Type() string   { return TypeBundles }
func (*ApplyRequest) Type() string   { return TypeApply }
func (*ApplyReply) Type() string     { return TypeApply }

// BundleBackend is implemented by Backends that hand off git bundles (an
// agent's node). Without it the server answers the bundle frames with
// unsupported. Errors that are *Error reach the client with their code and
// message.
type BundleBackend interface {
	Handoff(ctx context.Context, to, repo string, revs []string, note string) (*HandoffReply, error)
	Bundles(ctx context.Context, id string) ([]WireBundle, error)
	ApplyBundle(ctx context.Context, id, repo, ref, branch string) (*ApplyReply, error)
}

func validateHandoff(f *HandoffRequest) *Error {
	switch {
	case f.To == "" || len(f.To) > maxTargetLen:
		return errorf(CodeBadFrame, "handoff: to must be 1..%d bytes", maxTargetLen)
	case len(f.Revs) > MaxBundleRevs:
		return errorf(CodeBadFrame, "handoff: %d revisions, limit %d", len(f.Revs), MaxBundleRevs)
	case len(f.Note) > MaxBundleNote:
		return errorf(CodeTooLarge, "handoff: note is %d bytes, limit %d", len(f.Note), MaxBundleNote)
	}
	if err := validRepoPath("handoff", f.Repo); err != nil {
		return err
	}
	for _, r := range f.Revs {
		if r == "" || len(r) > MaxBundleRev || r[0] == '-' || strings.ContainsAny(r, "\x00\n\r") {
			return errorf(CodeBadFrame, "handoff: revision %q: empty, too long or starts with '-'", trunc(r))
		}
	}
	return needReq(f.Req)
}

func validateBundles(f *BundlesRequest) *Error {
	if f.ID != "" && !validIDPrefix(f.ID) {
		return errorf(CodeBadFrame, "bundles: id must be %d..%d lowercase hex digits", MinBundlePrefix, MaxBundleID)
	}
	return needReq(f.Req)
}

func validateApply(f *ApplyRequest) *Error {
	switch {
	case !validIDPrefix(f.ID):
		return errorf(CodeBadFrame, "apply: id must be %d..%d lowercase hex digits", MinBundlePrefix, MaxBundleID)
	case len(f.Ref) > MaxBundleRef || len(f.Branch) > MaxBundleRef:
		return errorf(CodeBadFrame, "apply: ref and branch at most %d bytes", MaxBundleRef)
	case strings.HasPrefix(f.Ref, "-") || strings.HasPrefix(f.Branch, "-"):
		return errorf(CodeBadFrame, "apply: ref and branch must not start with '-'")
	}
	if err := validRepoPath("apply", f.Repo); err != nil {
		return err
	}
	return needReq(f.Req)
}

func validRepoPath(op, p string) *Error {
	if p == "" || len(p) > MaxBundlePath || !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return errorf(CodeBadFrame, "%s: repo must be an absolute path of at most %d bytes", op, MaxBundlePath)
	}
	return nil
}

func validIDPrefix(s string) bool {
	if len(s) < MinBundlePrefix || len(s) > MaxBundleID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func validateBundleReply(f Frame) *Error {
	switch f := f.(type) {
	case *HandoffReply:
		if len(f.Refs) > maxListItems {
			return errorf(CodeBadFrame, "handoff: %d refs", len(f.Refs))
		}
		return needReq(f.Req)
	case *BundlesReply:
		if len(f.Bundles) > maxListItems {
			return errorf(CodeBadFrame, "bundles: %d bundles", len(f.Bundles))
		}
		return needReq(f.Req)
	case *ApplyReply:
		return needReq(f.Req)
	}
	return nil
}

// bundleFrame serves the three bundle requests. They run git on the
// node's machine with paths the client names, so only a local-mode
// connection (the owner of the home's 0600 socket) may use them.
func (c *conn) bundleFrame(ctx context.Context, f Frame) (Frame, error) {
	if c.s.cfg.Mode != ModeLocal {
		return nil, &Error{Code: CodeUnsupported, Message: f.Type() + " needs the node's local socket"}
	}
	bb, ok := c.s.cfg.Backend.(BundleBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node does not hand off git bundles"}
	}
	switch f := f.(type) {
	case *HandoffRequest:
		r, err := bb.Handoff(ctx, f.To, f.Repo, f.Revs, f.Note)
		if err != nil {
			return nil, err
		}
		r.Req = f.Req
		if r.Refs == nil {
			r.Refs = []BundleRef{}
		}
		return r, nil
	case *BundlesRequest:
		list, err := bb.Bundles(ctx, f.ID)
		if err != nil {
			return nil, err
		}
		if list == nil {
			list = []WireBundle{}
		}
		if len(list) > maxListItems {
			list = list[len(list)-maxListItems:]
		}
		return &BundlesReply{Req: f.Req, Bundles: list}, nil
	case *ApplyRequest:
		r, err := bb.ApplyBundle(ctx, f.ID, f.Repo, f.Ref, f.Branch)
		if err != nil {
			return nil, err
		}
		r.Req = f.Req
		return r, nil
	}
	return nil, &Error{Code: CodeInternal, Message: "not a bundle frame"}
}

// Handoff asks the node to bundle revs of the repository at repo (absolute)
// and offer it to the agent to (see HandoffRequest).
func (c *Client) Handoff(ctx context.Context, to, repo string, revs []string, note string) (*HandoffReply, error) {
	return expect[*HandoffReply](c.call(ctx, func(req string) Frame {
		return &HandoffRequest{Req: req, To: to, Repo: repo, Revs: revs, Note: note}
	}))
}

// Bundles lists received bundles, or those whose id starts with id.
func (c *Client) Bundles(ctx context.Context, id string) ([]WireBundle, error) {
	r, err := expect[*BundlesReply](c.call(ctx, func(req string) Frame {
		return &BundlesRequest{Req: req, ID: id}
	}))
	if err != nil {
		return nil, err
	}
	return r.Bundles, nil
}

// ApplyBundle imports a received bundle into repo and makes a branch of it
// (see ApplyRequest).
func (c *Client) ApplyBundle(ctx context.Context, id, repo, ref, branch string) (*ApplyReply, error) {
	return expect[*ApplyReply](c.call(ctx, func(req string) Frame {
		return &ApplyRequest{Req: req, ID: id, Repo: repo, Ref: ref, Branch: branch}
	}))
}
