package mesh

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Catch-up stream protocol. The requester sends one JSON SyncRequest,
// prefixed by its 4-byte big-endian length; the responder answers with
// envelopes in binary form, each prefixed by its 4-byte length, then a zero
// length and one byte: 1 if more remain (ask again with updated marks), 0 if
// not. See docs/protocol.md.
//
// A response holds at most Limit envelopes (syncPage if the request says
// 0; this version serves up to maxSyncLimit, older ones up to syncPage) and
// stops early past syncStreamBytes, so one stream moves many store pages:
// fewer round trips. The requester asks for maxSyncLimit and accepts what it
// asked for; an older responder's smaller answers just take more streams.
const (
	syncProtocol    = "/confab/sync/1"
	maxSyncRequest  = 256 << 10
	maxSyncAuthors  = 4096
	syncPage        = 1000 // the store's page; the limit of older responders
	maxSyncLimit    = 10000
	syncStreamBytes = 8 << 20
	maxSyncPages    = 1000
	syncTimeout     = 30 * time.Second
)

// Catch-up verification pipeline: envelopes are verified in chunks by
// GOMAXPROCS workers while the stream is read, and fed to the channel loop
// in stream order; at most syncChunksAhead chunks wait (back-pressure on the
// stream). Each chunk's signatures are checked as one batch (VerifyBatch),
// and larger batches cost less per signature: ~16.3 µs of CPU per envelope
// in batches of 256, ~15.3 of 512, ~13.8 of 1024 (~37 one by one;
// BenchmarkVerify and the same batches side by side). A catch-up's first
// chunk holds syncChunkMin envelopes and each next one twice as many, up to
// syncChunkMax: a short catch-up still spreads over the workers, a long one
// runs in the cheapest batches.
const (
	syncChunkMin    = 256
	syncChunkMax    = 1024
	syncChunksAhead = 4
)

// SyncRequest asks a peer for a channel's envelopes past the requester's
// per-author high-water marks.
type SyncRequest struct {
	Type    string            `json:"type"` // "sync"
	V       int               `json:"v"`    // 1
	Channel string            `json:"channel"`
	Have    map[string]uint64 `json:"have"`
	Limit   int               `json:"limit"`
}

// DecodeSyncRequest parses and bounds a request read from the network.
func DecodeSyncRequest(b []byte) (*SyncRequest, error) {
	if len(b) > maxSyncRequest {
		return nil, fmt.Errorf("%w: sync request of %d bytes", ErrTooLarge, len(b))
	}
	var r SyncRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: sync request: %v", ErrMalformed, err)
	}
	if r.Type != "sync" || r.V != 1 || !ValidChannel(r.Channel) || len(r.Have) > maxSyncAuthors {
		return nil, fmt.Errorf("%w: sync request fields", ErrMalformed)
	}
	for a := range r.Have {
		if _, err := AuthorKey(a); err != nil {
			return nil, err
		}
	}
	switch {
	case r.Limit <= 0:
		r.Limit = syncPage
	case r.Limit > maxSyncLimit:
		r.Limit = maxSyncLimit
	}
	return &r, nil
}

func writeFrame(w io.Writer, b []byte) error {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(b)))
	if _, err := w.Write(l[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one length-prefixed frame of at most limit bytes.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	return readFrameInto(r, limit, nil)
}

// readFrameInto is readFrame reading into buf's array when it is large
// enough (the frame then lives only until the next read into buf).
func readFrameInto(r io.Reader, limit int, buf []byte) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if int64(n) > int64(limit) {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrTooLarge, n)
	}
	b := buf[:0]
	if cap(b) < int(n) {
		b = make([]byte, n)
	}
	b = b[:n]
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// serveSync answers one catch-up request for a joined public channel.
func (m *Mesh) serveSync(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	br := bufio.NewReader(s)
	b, err := readFrame(br, maxSyncRequest)
	if err != nil {
		_ = s.Reset()
		return
	}
	req, err := DecodeSyncRequest(b)
	if err != nil {
		m.stats.add(&m.stats.RejectedInvalid, 1)
		_ = s.Reset()
		return
	}
	if _, err := m.channel(req.Channel); err != nil {
		_ = s.Reset() // we do not serve channels we are not in
		return
	}
	if isPrivate(req.Channel) && !m.priv.maySync(req.Channel, s.Conn().RemotePeer().String()) {
		_ = s.Reset() // private.go: only members (and archives they allowed) pull a private channel
		return
	}
	m.stats.add(&m.stats.SyncServed, 1)
	ctx, cancel := context.WithTimeout(m.ctx, syncTimeout)
	defer cancel()
	hw, err := m.hist.HighWater(ctx, req.Channel)
	if err != nil {
		_ = s.Reset()
		return
	}
	bw := bufio.NewWriterSize(s, 64<<10)
	if err := m.writeSync(ctx, bw, req, hw); err != nil {
		_ = s.Reset()
	}
}

// rawHistory is implemented by a History (store.DB) that can hand out an
// author's envelopes in the binary form they were stored in, checked
// against their ids, so that serving catch-up does not decode and re-encode
// each one (~2 µs of the ~9 µs an envelope cost to serve, the rest being
// the store's lookup). bins are mesh.Envelope.Marshal of what Since would
// return; last is the seq of the last one.
type rawHistory interface {
	SinceRaw(ctx context.Context, channel, author string, afterSeq uint64, limit int) (bins [][]byte, last uint64, err error)
}

// sincePage reads one page of author's envelopes past after, binary.
func (m *Mesh) sincePage(ctx context.Context, channel, author string, after uint64, limit int) ([][]byte, uint64, error) {
	if raw, ok := m.hist.(rawHistory); ok {
		return raw.SinceRaw(ctx, channel, author, after, limit)
	}
	envs, err := m.hist.Since(ctx, channel, author, after, limit)
	if err != nil || len(envs) == 0 {
		return nil, 0, err
	}
	bins := make([][]byte, len(envs))
	for i, e := range envs {
		bins[i] = e.Marshal()
	}
	return bins, envs[len(envs)-1].Seq, nil
}

// writeSync writes the response to req (frames, the end frame and the
// "more" flag) to w, given the channel's high-water marks hw, and flushes.
func (m *Mesh) writeSync(ctx context.Context, w *bufio.Writer, req *SyncRequest, hw map[string]uint64) error {
	authors := slices.Sorted(maps.Keys(hw))
	budget, bytes := req.Limit, 0
	more := false
authors:
	for _, a := range authors {
		after := req.Have[a]
		for hw[a] > after {
			if budget == 0 || bytes >= syncStreamBytes {
				more = true
				break authors
			}
			ask := min(budget, syncPage)
			bins, last, err := m.sincePage(ctx, req.Channel, a, after, ask)
			if err != nil {
				return err
			}
			for _, b := range bins {
				if len(b) > MaxEnvelopeLen { // the requester would refuse the stream
					return fmt.Errorf("%w: stored envelope of %d bytes", ErrTooLarge, len(b))
				}
				if err := writeFrame(w, b); err != nil {
					return err
				}
				bytes += len(b) + 4
			}
			budget -= len(bins)
			if len(bins) < ask {
				break // nothing more of a past hw (Since skips gaps)
			}
			after = last
		}
	}
	flag := byte(0)
	if more {
		flag = 1
	}
	if err := writeFrame(w, nil); err != nil {
		return err
	}
	if err := w.WriteByte(flag); err != nil {
		return err
	}
	return w.Flush()
}

// catchUp pulls from p everything of c it lacks, stream by stream, and
// feeds it through c's ordering loop. Envelopes are verified by a pool of
// GOMAXPROCS workers while the stream is read (and while the next stream is
// requested and read), and reach the loop in stream order, only verified.
func (m *Mesh) catchUp(c *channel, p peer.ID) error {
	m.stats.add(&m.stats.SyncRequests, 1)
	ctx, cancel := context.WithTimeout(c.ctx, 10*syncTimeout)
	defer cancel()
	have, err := m.hist.HighWater(ctx, c.name)
	if err != nil {
		return err
	}
	v := m.newSyncVerifier(ctx, c)
	for page := 0; page < maxSyncPages; page++ {
		more, perr := m.syncPage(ctx, c, p, have, v)
		if perr != nil || !more {
			err = perr
			break
		}
	}
	if verr := v.finish(); verr != nil {
		err = verr // an invalid envelope explains a failed stream too
	}
	return err
}

// syncVerifier verifies catch-up envelopes in parallel and feeds them to the
// channel loop in order. Owned by one catchUp call; finish waits for its
// goroutines.
type syncVerifier struct {
	m       *Mesh
	c       *channel
	ctx     context.Context
	cancel  context.CancelFunc
	jobs    chan *syncJob // to the workers
	ordered chan *syncJob // to the feeder, in stream order
	cur     *syncJob      // being filled by the reader
	chunk   int           // size of the next chunk
	wg      sync.WaitGroup
	err     error // set by the feeder before it exits
}

// syncJob is a chunk of envelopes from the stream.
type syncJob struct {
	envs []*Envelope
	err  error         // the first invalid envelope's error
	bad  int           // index of the first invalid envelope, or len(envs)
	done chan struct{} // closed by the worker
}

func (m *Mesh) newSyncVerifier(ctx context.Context, c *channel) *syncVerifier {
	ctx, cancel := context.WithCancel(ctx)
	v := &syncVerifier{
		m: m, c: c, ctx: ctx, cancel: cancel,
		jobs:    make(chan *syncJob, syncChunksAhead),
		ordered: make(chan *syncJob, syncChunksAhead),
	}
	workers := runtime.GOMAXPROCS(0)
	v.wg.Add(workers + 1)
	for range workers {
		go v.work()
	}
	go v.feed()
	return v
}

func (v *syncVerifier) work() {
	defer v.wg.Done()
	for j := range v.jobs {
		j.bad = len(j.envs)
		errs := VerifyBatch(j.envs) // one batch; alone only if it fails
		for i, e := range j.envs {
			var err error
			if errs != nil {
				err = errs[i]
			}
			if err == nil && e.Channel != v.c.name {
				err = fmt.Errorf("%w: envelope of %s", ErrBadChannel, e.Channel)
			}
			if err == nil && isPrivate(v.c.name) && !sealedForm(e) {
				err = fmt.Errorf("%w: not a private channel's ciphertext", ErrMalformed)
			}
			if err != nil {
				j.err, j.bad = err, i
				break
			}
		}
		close(j.done)
	}
}

// feed hands verified envelopes to the channel loop in stream order. After
// an invalid envelope it feeds nothing more, cancels the catch-up and
// drains.
func (v *syncVerifier) feed() {
	defer v.wg.Done()
	for j := range v.ordered {
		if v.err != nil {
			continue
		}
		select {
		case <-j.done:
		case <-v.ctx.Done():
			v.err = v.ctx.Err()
			continue
		}
		for _, e := range j.envs[:j.bad] {
			select {
			case v.c.in <- &item{env: e, sync: true}:
				v.m.stats.add(&v.m.stats.SyncEnvelopesIn, 1)
			case <-v.ctx.Done():
				v.err = v.ctx.Err()
			}
			if v.err != nil {
				break
			}
		}
		switch {
		case j.err == nil || v.err != nil:
		case v.ctx.Err() != nil:
			v.err = v.ctx.Err()
		default:
			v.m.stats.add(&v.m.stats.RejectedInvalid, 1)
			v.err = fmt.Errorf("peer sent an invalid envelope: %w", j.err)
			v.cancel() // stops the stream being read
		}
	}
}

// add queues e (parsed, not yet verified) for verification.
func (v *syncVerifier) add(e *Envelope) error {
	if v.cur == nil {
		v.chunk = min(max(2*v.chunk, syncChunkMin), syncChunkMax)
		v.cur = &syncJob{envs: make([]*Envelope, 0, v.chunk), done: make(chan struct{})}
	}
	v.cur.envs = append(v.cur.envs, e)
	if len(v.cur.envs) == cap(v.cur.envs) {
		return v.flush()
	}
	return nil
}

// flush hands the chunk being filled to the workers and the feeder.
func (v *syncVerifier) flush() error {
	j := v.cur
	if j == nil {
		return nil
	}
	v.cur = nil
	select {
	case v.ordered <- j: // first, so the feeder never waits on a job no worker has
	case <-v.ctx.Done():
		close(j.done)
		return v.ctx.Err()
	}
	select {
	case v.jobs <- j:
		return nil
	case <-v.ctx.Done():
		j.err, j.bad = v.ctx.Err(), 0
		close(j.done)
		return v.ctx.Err()
	}
}

// finish flushes the last chunk, waits until everything queued is verified
// and fed (or refused), stops the goroutines and returns the first error.
func (v *syncVerifier) finish() error {
	_ = v.flush()
	close(v.jobs)
	close(v.ordered)
	v.wg.Wait()
	v.cancel()
	return v.err
}

func (m *Mesh) syncPage(ctx context.Context, c *channel, p peer.ID, have map[string]uint64, v *syncVerifier) (bool, error) {
	if len(have) > maxSyncAuthors {
		return false, errors.New("too many authors to sync")
	}
	ctx = v.ctx // ends early when an envelope fails verification
	s, err := m.node.Host().NewStream(network.WithAllowLimitedConn(ctx, "confab-sync"), p, syncProtocol)
	if err != nil {
		return false, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	req, _ := json.Marshal(SyncRequest{Type: "sync", V: 1, Channel: c.name, Have: have, Limit: maxSyncLimit})
	if err := writeFrame(s, req); err != nil {
		_ = s.Reset()
		return false, err
	}
	_ = s.CloseWrite()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	more, err := readSyncResponse(bufio.NewReaderSize(s, 64<<10), have, v.add)
	if err != nil {
		if errors.Is(err, errSyncEnvelope) {
			m.stats.add(&m.stats.RejectedInvalid, 1)
		}
		_ = s.Reset()
		return false, err
	}
	if err := v.flush(); err != nil {
		return false, err
	}
	return more, nil
}

// errSyncEnvelope marks a catch-up response with an envelope that does not
// decode.
var errSyncEnvelope = errors.New("peer sent an invalid envelope")

// readSyncResponse reads one catch-up response from r: envelope frames up
// to the end frame, then the flag. Each envelope is decoded (not verified),
// raises its author's mark in have (the marks only shape the next request;
// an envelope is stored only once verified) and goes to add. It returns
// whether the responder has more, which only counts if it sent something.
// It refuses frames over MaxEnvelopeLen and more than maxSyncLimit
// envelopes.
func readSyncResponse(r *bufio.Reader, have map[string]uint64, add func(*Envelope) error) (bool, error) {
	n := 0
	var buf []byte // Unmarshal copies what it keeps, so one buffer serves every frame
	for {
		b, err := readFrameInto(r, MaxEnvelopeLen, buf)
		if err != nil {
			return false, err
		}
		buf = b
		if len(b) == 0 {
			break
		}
		if n++; n > maxSyncLimit {
			return false, fmt.Errorf("%w: peer sent more than it was asked", ErrMalformed)
		}
		e, err := Unmarshal(b)
		if err != nil {
			return false, fmt.Errorf("%w: %w", errSyncEnvelope, err)
		}
		if e.Seq > have[e.From] {
			have[e.From] = e.Seq
		}
		if err := add(e); err != nil {
			return false, err
		}
	}
	flag, err := r.ReadByte()
	if err != nil {
		return false, err
	}
	return flag == 1 && n > 0, nil
}
