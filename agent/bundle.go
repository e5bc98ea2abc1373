package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/confabhq/confab/bundle"
	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/wsgateway"
)

// Code handoff (docs/handoff.md). The agent runs a bundle.Server that serves
// the bundles it offered, and a watcher that reads its direct-message inbox
// for offers and fetches them in the background. Layout under <home>/bundles:
//
//	<sha256>                  bundles created here or fetched and verified
//	incoming/<sha256>.part    fetches in progress (resumed after a restart)
//	received/<sha256>.json    bundle.Record index of received bundles
//	status/<key>.json         per offer: sender's name, envelope, error if it failed
//	sent/<sha256>-<peer>.json offers made, re-allowed on the server after a restart
//	watch.cursor              cursor of the last inbox envelope the watcher read
const (
	BundlesDir = "bundles"

	// DefaultBundleQuota caps the bytes under <home>/bundles that a new
	// fetch may bring it to; an offer that would exceed it is refused.
	DefaultBundleQuota int64 = 8 << 30
	// BundleFetchSlots is how many fetches run at once; more wait.
	BundleFetchSlots = 2
	// MaxBundleJobs caps offers queued or fetching at once, and
	// MaxBundleJobsPerPeer those from one sender.
	MaxBundleJobs        = 64
	MaxBundleJobsPerPeer = 8
	// SentOfferTTL is how long an offer made here stays servable across
	// restarts of this node.
	SentOfferTTL = 7 * 24 * time.Hour
	// BundleRetryFor is how long a fetch that fails for a transient reason
	// (the sender went away, busy) is retried before it counts as failed.
	BundleRetryFor = 30 * time.Minute

	bundleStatusDir   = "status"
	bundleSentDir     = "sent"
	bundleWatchCursor = "watch.cursor"
	bundleWatchQueue  = 256
	maxStatusLen      = 16 << 10
)

// bundles is the agent's handoff service. Close cancels the watcher and the
// fetches (their .part files stay and are resumed at the next start) and
// closes the server.
type bundles struct {
	dir   string
	h     host.Host
	m     *mesh.Mesh
	srv   *bundle.Server
	log   *slog.Logger
	quota int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slots  chan struct{}
	once   sync.Once

	mu   sync.Mutex // guards jobs; never held during I/O
	jobs map[string]*fetchJob
}

// fetchJob is one offer being fetched. Its counters are written by the
// fetch goroutine and read by Bundles.
type fetchJob struct {
	from    string
	done    atomic.Int64
	total   atomic.Int64
	running atomic.Bool
	lastErr atomic.Pointer[string] // the last transient failure, while waiting to retry
}

// bundleStatus is <home>/bundles/status/<key>.json: what the index entry of
// bundle.Record does not hold. key is the bundle hash, or the envelope id of
// an offer that could not be parsed.
type bundleStatus struct {
	ID       string `json:"id,omitempty"` // bundle hash, "" for an unparsable offer
	Envelope string `json:"envelope"`
	From     string `json:"from"`
	Name     string `json:"name,omitempty"`
	Error    string `json:"error,omitempty"`
	Time     int64  `json:"time"` // unix ms of the last change
}

// sentOffer is <home>/bundles/sent/<hash>-<peer>.json.
type sentOffer struct {
	Hash    string `json:"hash"`
	To      string `json:"to"`
	Created int64  `json:"created"`
}

func startBundles(home string, h host.Host, m *mesh.Mesh, log *slog.Logger) (*bundles, error) {
	dir := filepath.Join(home, BundlesDir)
	for _, d := range []string{dir, filepath.Join(dir, bundleStatusDir), filepath.Join(dir, bundleSentDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("agent: bundles: %w", err)
		}
	}
	srv, err := bundle.NewServer(h, dir, log)
	if err != nil {
		return nil, fmt.Errorf("agent: bundles: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &bundles{dir: dir, h: h, m: m, srv: srv, log: log.With("part", "bundles"), quota: DefaultBundleQuota,
		ctx: ctx, cancel: cancel, slots: make(chan struct{}, BundleFetchSlots), jobs: make(map[string]*fetchJob)}
	b.restoreSent()
	b.resumeFetches()
	b.wg.Go(b.watch)
	return b, nil
}

func (b *bundles) close() {
	if b == nil {
		return
	}
	b.once.Do(func() {
		b.cancel()
		b.wg.Wait()
		_ = b.srv.Close()
	})
}

// restoreSent puts the offers made before a restart back on the server's
// allowlist, forgetting those older than SentOfferTTL.
func (b *bundles) restoreSent() {
	ents, err := os.ReadDir(filepath.Join(b.dir, bundleSentDir))
	if err != nil {
		b.log.Warn("bundles: read sent offers", "err", err)
		return
	}
	for _, e := range ents {
		p := filepath.Join(b.dir, bundleSentDir, e.Name())
		var s sentOffer
		if err := readJSON(p, &s); err != nil {
			b.log.Warn("bundles: unreadable sent offer; removed", "file", e.Name(), "err", err)
			os.Remove(p)
			continue
		}
		to, err := peer.Decode(s.To)
		if err != nil || !bundle.ValidHash(s.Hash) || time.Since(time.UnixMilli(s.Created)) > SentOfferTTL {
			os.Remove(p)
			continue
		}
		b.srv.Offer(s.Hash, to)
	}
}

// resumeFetches restarts the fetches a previous run left unfinished.
func (b *bundles) resumeFetches() {
	recs, err := bundle.List(b.dir)
	if err != nil {
		b.log.Warn("bundles: index", "err", err)
	}
	for _, r := range recs {
		if !r.Received.IsZero() {
			continue
		}
		if st, _ := b.status(r.ID); st != nil && st.Error != "" {
			continue
		}
		b.enqueue(r)
	}
}

// watch reads the inbox ("@<self>") for bundle offers: first what was
// stored after the saved cursor, then live records. If the live feed
// overflows it starts over from the cursor, so no offer is skipped.
func (b *bundles) watch() {
	inbox := "@" + b.m.Self()
	cursor := b.loadCursor()
	for b.ctx.Err() == nil {
		sub := b.m.Subscribe([]string{inbox}, bundleWatchQueue)
		cursor = b.catchUp(inbox, cursor)
	live:
		for {
			select {
			case <-b.ctx.Done():
				sub.Close()
				return
			case r, ok := <-sub.C():
				if !ok {
					break live
				}
				if r.Cursor <= cursor {
					continue
				}
				b.consider(r)
				cursor = r.Cursor
				b.saveCursor(cursor)
			}
		}
		err := sub.Err()
		sub.Close()
		if errors.Is(err, mesh.ErrClosed) {
			return
		}
		b.log.Warn("bundles: inbox feed ended; catching up", "err", err)
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (b *bundles) catchUp(inbox, cursor string) string {
	for b.ctx.Err() == nil {
		recs, err := b.m.After(b.ctx, inbox, cursor, 256)
		if err != nil {
			if b.ctx.Err() == nil {
				b.log.Warn("bundles: read inbox", "err", err)
			}
			return cursor
		}
		for _, r := range recs {
			b.consider(r)
			cursor = r.Cursor
		}
		if len(recs) > 0 {
			b.saveCursor(cursor)
		}
		if len(recs) < 256 {
			break
		}
	}
	return cursor
}

func (b *bundles) loadCursor() string {
	c, err := os.ReadFile(filepath.Join(b.dir, bundleWatchCursor))
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(c))
	if len(s) > wsgateway.MaxCursorLen {
		return ""
	}
	return s
}

func (b *bundles) saveCursor(c string) {
	if err := writeFileAtomic(filepath.Join(b.dir, bundleWatchCursor), []byte(c+"\n")); err != nil {
		b.log.Warn("bundles: save cursor", "err", err)
	}
}

// consider acts on one inbox record: an offer from another agent is
// parsed, checked against the budgets, recorded and queued for fetching.
func (b *bundles) consider(r mesh.Record) {
	e := r.Env
	if e == nil || e.Kind != bundle.OfferType || e.From == b.m.Self() {
		return
	}
	log := b.log.With("from", e.From, "envelope", e.ID)
	o, err := bundle.ParseOffer([]byte(e.Content))
	if err != nil {
		log.Warn("bundles: refused an invalid offer", "err", err)
		b.setStatus(e.ID, bundleStatus{Envelope: e.ID, From: e.From, Name: e.Name, Error: "invalid offer: " + err.Error()})
		return
	}
	log = log.With("bundle", o.ShortHash())
	fail := func(msg string) {
		log.Warn("bundles: refused an offer", "why", msg)
		b.setStatus(o.Hash, bundleStatus{ID: o.Hash, Envelope: e.ID, From: e.From, Name: e.Name, Error: msg})
		if old, err := bundle.Load(b.dir, o.Hash); err != nil || old.Received.IsZero() {
			_ = bundle.Record(b.dir, bundle.Received{ID: o.Hash, From: e.From, Offer: o, Envelope: e.ID})
		}
	}
	if old, err := bundle.Load(b.dir, o.Hash); err == nil && !old.Received.IsZero() {
		log.Info("bundles: offer of a bundle already here; ignored")
		return
	}
	b.mu.Lock()
	_, running := b.jobs[o.Hash]
	n, fromPeer := len(b.jobs), 0
	for _, j := range b.jobs {
		if j.from == e.From {
			fromPeer++
		}
	}
	b.mu.Unlock()
	switch {
	case running:
		log.Info("bundles: offer of a bundle already being fetched; ignored")
		return
	case n >= MaxBundleJobs:
		fail(fmt.Sprintf("too many bundles in flight on this node (limit %d)", MaxBundleJobs))
		return
	case fromPeer >= MaxBundleJobsPerPeer:
		fail(fmt.Sprintf("too many bundles in flight from this agent (limit %d)", MaxBundleJobsPerPeer))
		return
	}
	if used := dirBytes(b.dir); used+o.Size > b.quota {
		fail(fmt.Sprintf("bundle of %d bytes would exceed this node's bundle quota (%d of %d bytes used)", o.Size, used, b.quota))
		return
	}
	rec := bundle.Received{ID: o.Hash, From: e.From, Offer: o, Envelope: e.ID}
	if err := bundle.Record(b.dir, rec); err != nil {
		log.Warn("bundles: record offer", "err", err)
		return
	}
	b.setStatus(o.Hash, bundleStatus{ID: o.Hash, Envelope: e.ID, From: e.From, Name: e.Name})
	log.Info("bundles: offer accepted; fetching", "size", o.Size, "refs", len(o.Refs))
	b.enqueue(rec)
}

// enqueue starts the goroutine that fetches r once a slot is free.
func (b *bundles) enqueue(r bundle.Received) {
	j := &fetchJob{from: r.From}
	j.total.Store(r.Offer.Size)
	b.mu.Lock()
	if _, ok := b.jobs[r.ID]; ok || b.ctx.Err() != nil {
		b.mu.Unlock()
		return
	}
	b.jobs[r.ID] = j
	b.wg.Add(1)
	b.mu.Unlock()
	go b.fetch(r, j)
}

func (b *bundles) fetch(r bundle.Received, j *fetchJob) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.jobs, r.ID)
		b.mu.Unlock()
	}()
	log := b.log.With("bundle", r.Offer.ShortHash(), "from", r.From)
	from, err := peer.Decode(r.From)
	if err != nil {
		b.fail(r, fmt.Errorf("bad sender id: %w", err))
		return
	}
	deadline := time.Now().Add(BundleRetryFor)
	backoff := 5 * time.Second
	for {
		select {
		case b.slots <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		j.running.Store(true)
		_, err = bundle.Fetch(b.ctx, b.h, from, r.Offer, b.dir, func(done, total int64) {
			j.done.Store(done)
			j.total.Store(total)
		})
		j.running.Store(false)
		<-b.slots
		if err == nil {
			break
		}
		if b.ctx.Err() != nil {
			return // the .part stays; the next start resumes it
		}
		if !transientFetchError(err) || time.Now().After(deadline) {
			b.fail(r, err)
			return
		}
		msg := err.Error()
		j.lastErr.Store(&msg)
		log.Info("bundles: fetch failed; will retry", "err", err, "in", backoff)
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Minute)
	}
	r.Received = time.Now()
	if err := bundle.Record(b.dir, r); err != nil {
		log.Warn("bundles: record", "err", err)
		return
	}
	log.Info("bundles: bundle received and verified", "size", r.Offer.Size)
}

// transientFetchError reports whether a later attempt may succeed.
func transientFetchError(err error) bool {
	for _, e := range []error{bundle.ErrHashMismatch, bundle.ErrSizeMismatch, bundle.ErrBadOffer, bundle.ErrUnavailable, bundle.ErrTooLarge, bundle.ErrInProgress} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

func (b *bundles) fail(r bundle.Received, err error) {
	msg := err.Error()
	switch {
	case errors.Is(err, bundle.ErrHashMismatch):
		msg = "the bytes received do not match the sha256 in the signed offer; refused, nothing was imported (" + msg + ")"
	case errors.Is(err, bundle.ErrSizeMismatch):
		msg = "the bytes received do not match the size in the signed offer; refused, nothing was imported (" + msg + ")"
	case errors.Is(err, bundle.ErrUnavailable):
		msg = "the sender no longer offers this bundle (" + msg + ")"
	}
	b.log.Warn("bundles: fetch failed", "bundle", r.Offer.ShortHash(), "from", r.From, "err", err)
	st, _ := b.status(r.ID)
	if st == nil {
		st = &bundleStatus{ID: r.ID, Envelope: r.Envelope, From: r.From}
	}
	st.Error = msg
	b.setStatus(r.ID, *st)
}

func (b *bundles) status(key string) (*bundleStatus, error) {
	var st bundleStatus
	if err := readJSON(filepath.Join(b.dir, bundleStatusDir, key+".json"), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (b *bundles) setStatus(key string, st bundleStatus) {
	st.Time = time.Now().UnixMilli()
	data, err := json.Marshal(st)
	if err == nil {
		err = writeFileAtomic(filepath.Join(b.dir, bundleStatusDir, key+".json"), data)
	}
	if err != nil {
		b.log.Warn("bundles: write status", "key", key, "err", err)
	}
}

// Handoff bundles revs of repo and offers the bundle to the agent to.
func (b *bundles) Handoff(ctx context.Context, to, repo string, revs []string, note string) (*wsgateway.HandoffReply, error) {
	if err := checkRepo(ctx, repo); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(to, "@") {
		to = "@" + to
	}
	id, err := b.m.Resolve(to)
	if err != nil {
		return nil, err
	}
	if id == b.m.Self() {
		return nil, &wsgateway.Error{Code: wsgateway.CodeUnknownAgent, Message: to + " is this agent"}
	}
	pid, err := peer.Decode(id)
	if err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeUnknownAgent, Message: err.Error()}
	}
	o, _, err := bundle.Create(ctx, repo, revs, b.dir)
	if err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleFailed, Message: err.Error()}
	}
	o.Note = note
	content, err := o.Marshal()
	if err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleFailed, Message: err.Error()}
	}
	// Allow the fetch before the offer can arrive.
	b.srv.Offer(o.Hash, pid)
	sentPath := filepath.Join(b.dir, bundleSentDir, o.Hash+"-"+pid.String()+".json")
	if data, err := json.Marshal(sentOffer{Hash: o.Hash, To: pid.String(), Created: time.Now().UnixMilli()}); err == nil {
		if err := writeFileAtomic(sentPath, data); err != nil {
			b.log.Warn("bundles: save sent offer", "err", err)
		}
	}
	rec, delivered, err := b.m.SendDirect(ctx, "@"+pid.String(), bundle.OfferType, string(content), "")
	if err != nil {
		b.srv.Revoke(o.Hash, pid)
		os.Remove(sentPath)
		return nil, err
	}
	b.log.Info("bundles: offered", "bundle", o.ShortHash(), "to", pid, "delivered", delivered)
	return &wsgateway.HandoffReply{ID: o.Hash, To: pid.String(), Envelope: rec.Env.ID, Delivered: delivered,
		Size: o.Size, Repo: o.Repo, Refs: wireRefs(o.Refs)}, nil
}

// Bundles lists the received bundles whose id starts with prefix ("" =
// all), oldest offer first.
func (b *bundles) Bundles(_ context.Context, prefix string) ([]wsgateway.WireBundle, error) {
	recs, err := bundle.List(b.dir)
	if err != nil {
		b.log.Warn("bundles: index", "err", err)
	}
	b.mu.Lock()
	jobs := make(map[string]*fetchJob, len(b.jobs))
	for k, v := range b.jobs {
		jobs[k] = v
	}
	b.mu.Unlock()
	var out []wsgateway.WireBundle
	seen := make(map[string]bool)
	for _, r := range recs {
		seen[r.ID] = true
		if !strings.HasPrefix(r.ID, prefix) {
			continue
		}
		out = append(out, b.wire(r, jobs[r.ID]))
	}
	// Offers refused before they had a bundle id.
	ents, _ := os.ReadDir(filepath.Join(b.dir, bundleStatusDir))
	for _, e := range ents {
		key, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || seen[key] || !strings.HasPrefix(key, prefix) {
			continue
		}
		st, err := b.status(key)
		if err != nil || st.Error == "" || st.ID != "" {
			continue
		}
		out = append(out, wsgateway.WireBundle{ID: key, From: st.From, Name: st.Name, State: wsgateway.BundleFailed,
			Error: st.Error, Envelope: st.Envelope, Offered: st.Time})
	}
	slices.SortStableFunc(out, func(x, y wsgateway.WireBundle) int {
		if x.Offered != y.Offered {
			return int(min(max(x.Offered-y.Offered, -1), 1))
		}
		return strings.Compare(x.ID, y.ID)
	})
	return out, nil
}

// wire describes one received bundle; j is its fetch, if one runs.
func (b *bundles) wire(r bundle.Received, j *fetchJob) wsgateway.WireBundle {
	w := wsgateway.WireBundle{ID: r.ID, From: r.From, Repo: r.Offer.Repo, Note: r.Offer.Note, Refs: wireRefs(r.Offer.Refs),
		Size: r.Offer.Size, Envelope: r.Envelope, Offered: r.Offer.Created, AppliedRepo: r.Repo, Branch: r.Branch}
	st, _ := b.status(r.ID)
	if st != nil {
		w.Name = st.Name
	}
	switch {
	case !r.Received.IsZero():
		w.Received, w.Done, w.State = r.Received.UnixMilli(), r.Offer.Size, wsgateway.BundleReady
		if r.Branch != "" {
			w.State = wsgateway.BundleApplied
		}
	case j != nil:
		w.Done = j.done.Load()
		switch e := j.lastErr.Load(); {
		case j.running.Load():
			w.State = wsgateway.BundleFetching
		case e != nil:
			w.State, w.Error = wsgateway.BundleWaiting, *e
		default:
			w.State = wsgateway.BundleQueued
		}
	case st != nil && st.Error != "":
		w.State, w.Error = wsgateway.BundleFailed, st.Error
	default:
		// Recorded but not running: this node is shutting down or starting.
		w.State = wsgateway.BundleQueued
		if fi, err := os.Stat(filepath.Join(b.dir, "incoming", r.ID+".part")); err == nil {
			w.Done = fi.Size()
		}
	}
	return w
}

// ApplyBundle imports a received bundle into repo's quarantine refs and
// makes a branch of one of its refs.
func (b *bundles) ApplyBundle(ctx context.Context, id, repo, ref, branch string) (*wsgateway.ApplyReply, error) {
	r, err := b.find(id)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(b.dir, r.ID)
	if r.Received.IsZero() {
		list, _ := b.Bundles(ctx, r.ID)
		state := "not fetched yet"
		if len(list) == 1 {
			state = list[0].State
			if list[0].Error != "" {
				state += ": " + list[0].Error
			}
		}
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleNotReady,
			Message: fmt.Sprintf("bundle %s is not fully fetched and verified (%s)", r.Offer.ShortHash(), state)}
	}
	if _, err := os.Stat(path); err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleNotReady, Message: fmt.Sprintf("bundle %s: file missing from %s", r.Offer.ShortHash(), b.dir)}
	}
	if err := checkRepo(ctx, repo); err != nil {
		return nil, err
	}
	if ref == "" {
		var heads []string
		for _, x := range r.Offer.Refs {
			if strings.HasPrefix(x.Name, "refs/heads/") {
				heads = append(heads, strings.TrimPrefix(x.Name, "refs/heads/"))
			}
		}
		if len(heads) > 1 {
			return nil, &wsgateway.Error{Code: wsgateway.CodeBundleFailed,
				Message: fmt.Sprintf("bundle %s carries several branches (%s); pick one with ref", r.Offer.ShortHash(), strings.Join(heads, ", "))}
		}
	}
	if err := bundle.Import(ctx, repo, path, r.Offer, r.From); err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleFailed, Message: err.Error()}
	}
	if branch == "" {
		branch = "confab/" + r.Offer.ShortHash()
	}
	if err := bundle.Apply(ctx, repo, r.Offer, r.From, ref, branch); err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleFailed, Message: err.Error()}
	}
	commit, err := gitOutput(ctx, repo, "rev-parse", "--verify", "-q", "refs/heads/"+branch+"^{commit}")
	if err != nil {
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleFailed, Message: err.Error()}
	}
	if ref == "" {
		for _, x := range r.Offer.Refs {
			if strings.HasPrefix(x.Name, "refs/heads/") {
				ref = x.Name
			}
		}
	} else if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	r.Repo, r.Branch = repo, branch
	if err := bundle.Record(b.dir, *r); err != nil {
		b.log.Warn("bundles: record apply", "err", err)
	}
	return &wsgateway.ApplyReply{ID: r.ID, Repo: repo, Ref: ref, Branch: branch, Commit: commit}, nil
}

// find resolves a full id or a unique prefix to a received bundle.
func (b *bundles) find(prefix string) (*bundle.Received, error) {
	if bundle.ValidHash(prefix) {
		if r, err := bundle.Load(b.dir, prefix); err == nil {
			return r, nil
		}
	}
	recs, _ := bundle.List(b.dir)
	var hits []bundle.Received
	for _, r := range recs {
		if strings.HasPrefix(r.ID, prefix) {
			hits = append(hits, r)
		}
	}
	switch len(hits) {
	case 0:
		if st, err := b.status(prefix); err == nil && st.Error != "" {
			return nil, &wsgateway.Error{Code: wsgateway.CodeBundleNotReady, Message: "offer " + prefix + " was refused: " + st.Error}
		}
		return nil, &wsgateway.Error{Code: wsgateway.CodeBundleNotFound, Message: "no received bundle with id " + prefix + " (see confab bundles)"}
	case 1:
		return &hits[0], nil
	}
	return nil, &wsgateway.Error{Code: wsgateway.CodeBadFrame, Message: fmt.Sprintf("id %s matches %d bundles; give more digits", prefix, len(hits))}
}

// checkRepo makes sure dir is an existing git repository (work tree or
// bare) before git is asked to do more with it.
func checkRepo(ctx context.Context, dir string) error {
	if !filepath.IsAbs(dir) {
		return &wsgateway.Error{Code: wsgateway.CodeBadRepo, Message: "repository path must be absolute"}
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return &wsgateway.Error{Code: wsgateway.CodeBadRepo, Message: fmt.Sprintf("%s is not a directory", dir)}
	}
	if _, err := gitOutput(ctx, dir, "rev-parse", "--git-dir"); err != nil {
		return &wsgateway.Error{Code: wsgateway.CodeBadRepo, Message: fmt.Sprintf("%s is not a git repository", dir)}
	}
	return nil
}

// gitOutput runs a read-only git command in dir without hooks or inherited
// GIT_* variables and returns its trimmed stdout.
func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "core.hooksPath=/dev/null"}, args...)...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", args[0], err)
	}
	return strings.TrimSpace(string(out)), nil
}

func wireRefs(refs []bundle.Ref) []wsgateway.BundleRef {
	out := make([]wsgateway.BundleRef, 0, len(refs))
	for _, r := range refs {
		out = append(out, wsgateway.BundleRef{Name: r.Name, Commit: r.Commit})
	}
	return out
}

// dirBytes sums the sizes of the bundles and partial fetches under dir.
func dirBytes(dir string) int64 {
	var n int64
	for _, d := range []string{dir, filepath.Join(dir, "incoming")} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStatusLen+1))
	if err != nil {
		return err
	}
	if len(data) > maxStatusLen {
		return fmt.Errorf("%s: too large", path)
	}
	return json.Unmarshal(data, v)
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// bundleBackend is the gateway backend of an agent: the mesh (every method
// of *mesh.Mesh stays promoted, as with wsgateway.FromMesh) plus handoff.
type bundleBackend struct {
	*mesh.Mesh
	*bundles
}

func (b bundleBackend) Subscribe(channels []string, queue int) wsgateway.Subscription {
	return b.Mesh.Subscribe(channels, queue)
}

// The agent frames of wsgateway rely on *mesh.Mesh's promoted methods.
var (
	_ wsgateway.Backend          = bundleBackend{}
	_ wsgateway.BundleBackend    = bundleBackend{}
	_ wsgateway.DirectBackend    = bundleBackend{}
	_ wsgateway.DiscoveryBackend = bundleBackend{}
	_ wsgateway.CallBackend      = bundleBackend{}
)
