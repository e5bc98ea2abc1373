package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
)

// ProtocolID is the libp2p stream protocol that moves bundle bytes.
const ProtocolID protocol.ID = "/confab/bundle/1"

// Transfer limits and timeouts.
const (
	// MaxFrameLen bounds a request or response header frame.
	MaxFrameLen = 1024
	// ChunkSize is the unit each side reads and writes. Each side holds a
	// small ring of these (sendBuffers, recvBuffers; see pipe.go) and no
	// more of a bundle in its own memory.
	ChunkSize = 1 << 20
	// writebackEvery is how many received bytes the receiver lets pile up
	// before it asks the kernel to start writing them to disk.
	writebackEvery = 8 << 20
	// DefaultMaxPerPeer is how many transfers one peer may run at once.
	DefaultMaxPerPeer = 2
	// DefaultMaxPeerBytes caps the bytes still to be sent to one peer over
	// all its concurrent transfers.
	DefaultMaxPeerBytes = 4 << 30
	// IdleTimeout ends a transfer when no chunk moves for this long.
	IdleTimeout = 30 * time.Second
	// deadlineRefresh is how often a moving transfer pushes its idle
	// deadline out again.
	deadlineRefresh = time.Second
	// headerTimeout bounds the request/response exchange.
	headerTimeout = 10 * time.Second
	// fetchAttempts is how many consecutive attempts without progress
	// Fetch makes before it gives up.
	fetchAttempts = 5
)

const (
	reqType  = "bundle-get"
	respType = "bundle-data"
	frameV   = 1
)

// Response error codes on the wire.
const (
	codeUnavailable = "unavailable" // not offered to this peer, or gone
	codeBusy        = "busy"        // per-peer budget exhausted; retry later
	codeBadRequest  = "bad-request"
)

type request struct {
	Type   string `json:"type"`
	V      int    `json:"v"`
	Hash   string `json:"hash"`
	Offset int64  `json:"offset"`
}

type response struct {
	Type   string `json:"type"`
	V      int    `json:"v"`
	Size   int64  `json:"size,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	Error  string `json:"error,omitempty"`
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxFrameLen {
		return fmt.Errorf("%w: frame of %d bytes", ErrProtocol, len(b))
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	l := binary.BigEndian.Uint32(n[:])
	if l == 0 || l > MaxFrameLen {
		return nil, fmt.Errorf("%w: frame length %d", ErrProtocol, l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// decodeRequest reads and validates one request frame.
func decodeRequest(r io.Reader) (*request, error) {
	b, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	var q request
	if err := json.Unmarshal(b, &q); err != nil {
		return nil, fmt.Errorf("%w: request: %v", ErrProtocol, err)
	}
	if q.Type != reqType || q.V != frameV || !ValidHash(q.Hash) || q.Offset < 0 || q.Offset > MaxBundleSize {
		return nil, fmt.Errorf("%w: bad request", ErrProtocol)
	}
	return &q, nil
}

// decodeResponse reads and validates one response frame.
func decodeResponse(r io.Reader) (*response, error) {
	b, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	var p response
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: response: %v", ErrProtocol, err)
	}
	if p.Type != respType || p.V != frameV || len(p.Error) > 64 {
		return nil, fmt.Errorf("%w: bad response", ErrProtocol)
	}
	if p.Error == "" && (p.Size <= 0 || p.Size > MaxBundleSize || p.Offset < 0 || p.Offset > p.Size) {
		return nil, fmt.Errorf("%w: bad response size %d offset %d", ErrProtocol, p.Size, p.Offset)
	}
	return &p, nil
}

// ServerOption configures a Server.
type ServerOption func(*serverConfig) error

type serverConfig struct {
	maxPerPeer   int
	maxPeerBytes int64
	resetAfter   int64                           // tests: reset the first stream after this many body bytes
	onServe      func(hash string, offset int64) // tests: called for every accepted request
}

// WithMaxPerPeer sets how many transfers one peer may run at once
// (default DefaultMaxPerPeer).
func WithMaxPerPeer(n int) ServerOption {
	return func(c *serverConfig) error {
		if n < 1 {
			return fmt.Errorf("bundle: max per peer %d < 1", n)
		}
		c.maxPerPeer = n
		return nil
	}
}

// WithMaxPeerBytes caps the bytes still to be sent to one peer over all its
// concurrent transfers (default DefaultMaxPeerBytes). A request that would
// exceed it is answered "busy" and the receiver retries.
func WithMaxPeerBytes(n int64) ServerOption {
	return func(c *serverConfig) error {
		if n < 1 {
			return fmt.Errorf("bundle: max peer bytes %d < 1", n)
		}
		c.maxPeerBytes = n
		return nil
	}
}

// Server serves offered bundles from a store directory over ProtocolID.
type Server struct {
	h        host.Host
	storeDir string
	log      *slog.Logger
	cfg      serverConfig

	wg        sync.WaitGroup // in-flight handlers
	closeOnce sync.Once

	mu       sync.Mutex
	closed   bool
	allow    map[string]map[peer.ID]struct{} // hash -> peers it was offered to
	active   map[peer.ID]*peerUse
	streams  map[network.Stream]struct{}
	resetOne bool // resetAfter already used
}

type peerUse struct {
	n     int
	bytes int64
}

// NewServer registers the bundle protocol on h and serves files named
// storeDir/<sha256> to the peers they were offered to (see Offer). Defaults:
// DefaultMaxPerPeer concurrent transfers and DefaultMaxPeerBytes outstanding
// bytes per peer; a nil logger discards. The caller must call Close before
// closing h.
func NewServer(h host.Host, storeDir string, logger *slog.Logger, opts ...ServerOption) (*Server, error) {
	cfg := serverConfig{maxPerPeer: DefaultMaxPerPeer, maxPeerBytes: DefaultMaxPeerBytes}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		h: h, storeDir: storeDir, log: logger.With("proto", string(ProtocolID)), cfg: cfg,
		allow:   make(map[string]map[peer.ID]struct{}),
		active:  make(map[peer.ID]*peerUse),
		streams: make(map[network.Stream]struct{}),
	}
	h.SetStreamHandler(ProtocolID, s.handle)
	return s, nil
}

// Offer puts (hash, to) on the allowlist: a bundle is served only to the
// peers it was offered to. An invalid hash is ignored: no request can name it.
func (s *Server) Offer(hash string, to peer.ID) {
	if !ValidHash(hash) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.allow[hash]
	if m == nil {
		m = make(map[peer.ID]struct{})
		s.allow[hash] = m
	}
	m[to] = struct{}{}
}

// Revoke withdraws an Offer. Transfers already running finish.
func (s *Server) Revoke(hash string, to peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.allow[hash]; m != nil {
		delete(m, to)
		if len(m) == 0 {
			delete(s.allow, hash)
		}
	}
}

// Close removes the stream handler, resets in-flight transfers and waits for
// their handlers to return. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.h.RemoveStreamHandler(ProtocolID)
		s.mu.Lock()
		s.closed = true
		for st := range s.streams {
			_ = st.Reset()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return nil
}

func (s *Server) handle(st network.Stream) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = st.Reset()
		return
	}
	s.wg.Add(1)
	s.streams[st] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
		s.wg.Done()
	}()

	remote := st.Conn().RemotePeer()
	log := s.log.With("peer", remote)
	if err := s.serve(st, remote, log); err != nil {
		log.Debug("bundle transfer ended", "err", err)
		var r refusal
		if !errors.As(err, &r) {
			_ = st.Reset()
			return
		}
	}
	_ = st.Close()
}

// refusal is a request answered with an error code: the stream is closed,
// not reset, so that the code reaches the receiver.
type refusal string

func (r refusal) Error() string { return "refused: " + string(r) }

func (s *Server) reply(st network.Stream, code string) error {
	_ = st.SetWriteDeadline(time.Now().Add(headerTimeout))
	if err := writeFrame(st, response{Type: respType, V: frameV, Error: code}); err != nil {
		return err
	}
	return refusal(code)
}

func (s *Server) serve(st network.Stream, remote peer.ID, log *slog.Logger) error {
	_ = st.SetReadDeadline(time.Now().Add(headerTimeout))
	q, err := decodeRequest(st)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			return s.reply(st, codeBadRequest)
		}
		return err
	}
	_ = st.SetReadDeadline(time.Time{})

	s.mu.Lock()
	_, ok := s.allow[q.Hash][remote]
	s.mu.Unlock()
	if !ok {
		log.Debug("bundle request refused: not offered to this peer", "hash", q.Hash)
		return s.reply(st, codeUnavailable)
	}
	f, err := os.Open(filepath.Join(s.storeDir, q.Hash))
	if err != nil {
		log.Warn("offered bundle missing", "hash", q.Hash, "err", err)
		return s.reply(st, codeUnavailable)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() <= 0 || fi.Size() > MaxBundleSize {
		return s.reply(st, codeUnavailable)
	}
	size := fi.Size()
	if q.Offset > size {
		return s.reply(st, codeBadRequest)
	}
	want := size - q.Offset

	s.mu.Lock()
	u := s.active[remote]
	if u == nil {
		u = &peerUse{}
		s.active[remote] = u
	}
	if u.n >= s.cfg.maxPerPeer || u.bytes+want > s.cfg.maxPeerBytes {
		s.mu.Unlock()
		return s.reply(st, codeBusy)
	}
	u.n++
	u.bytes += want
	resetAfter := int64(-1)
	if s.cfg.resetAfter > 0 && !s.resetOne {
		s.resetOne = true
		resetAfter = s.cfg.resetAfter
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		u.n--
		u.bytes -= want
		if u.n == 0 {
			delete(s.active, remote)
		}
		s.mu.Unlock()
	}()

	if s.cfg.onServe != nil {
		s.cfg.onServe(q.Hash, q.Offset)
	}
	_ = st.SetWriteDeadline(time.Now().Add(headerTimeout))
	if err := writeFrame(st, response{Type: respType, V: frameV, Size: size, Offset: q.Offset}); err != nil {
		return err
	}
	if _, err := f.Seek(q.Offset, io.SeekStart); err != nil {
		return err
	}
	// The file goes to the stream from a mapping where it can be mapped;
	// otherwise a second goroutine reads it ahead while this one writes the
	// stream. limit stops either at the end or, in tests, at the injected
	// reset.
	limit := want
	if resetAfter >= 0 && resetAfter < limit {
		limit = resetAfter
	}
	if mapFiles {
		sent, ok, err := sendMapped(st, f, q.Offset, limit, func() { _ = st.SetWriteDeadline(time.Now().Add(IdleTimeout)) })
		if ok {
			if err != nil {
				return err
			}
			if resetAfter >= 0 && sent >= resetAfter {
				return errors.New("test: injected reset")
			}
			log.Debug("bundle sent", "hash", q.Hash, "offset", q.Offset, "bytes", sent, "mapped", true)
			return nil
		}
	}
	var read int64 // producer only
	p := newChunkPipe(newRing(sendBuffers), func(buf []byte) (int, error) {
		n := min(int64(len(buf)), limit-read)
		if n <= 0 {
			return 0, io.EOF
		}
		m, err := io.ReadFull(f, buf[:n])
		read += int64(m)
		if err != nil { // a short file too: never confused with the end
			return m, fmt.Errorf("read %s: %w", q.Hash[:12], err)
		}
		return m, nil
	})
	defer p.close()
	var sent int64
	for {
		c := p.next()
		if len(c.b) > 0 {
			_ = st.SetWriteDeadline(time.Now().Add(IdleTimeout))
			if _, err := st.Write(c.b); err != nil {
				return err
			}
			sent += int64(len(c.b))
		}
		p.put(c.b)
		if c.err == io.EOF {
			break
		}
		if c.err != nil {
			return c.err
		}
	}
	if resetAfter >= 0 && sent >= resetAfter {
		return errors.New("test: injected reset")
	}
	log.Debug("bundle sent", "hash", q.Hash, "offset", q.Offset, "bytes", sent)
	return nil
}

// inflight guards against two Fetch calls of one bundle into one store in
// this process writing the same .part file.
var inflight = struct {
	sync.Mutex
	m map[string]bool
}{m: make(map[string]bool)}

// Fetch downloads the bundle of offer from peer from into
// storeDir/incoming/<hash>.part, then verifies its size and sha256 against
// the offer and renames it to storeDir/<hash>, whose path it returns. A .part
// left by an earlier call is resumed (its bytes are re-read and hashed);
// a broken stream is retried from where it stopped, with backoff, until
// fetchAttempts consecutive attempts make no progress. progress, if not nil,
// is called on Fetch's goroutine after every write to the file (at most
// 4 MiB) with the bytes held and the total; it must return quickly. A canceled Fetch keeps its .part.
// The stream may use a limited (relayed) connection. If storeDir/<hash>
// already holds the right bytes Fetch returns at once.
// Errors wrap ErrBadOffer, ErrUnavailable, ErrBusy, ErrHashMismatch,
// ErrSizeMismatch, ErrProtocol, ErrInProgress or the context's error.
func Fetch(ctx context.Context, h host.Host, from peer.ID, offer *Offer, storeDir string, progress func(done, total int64)) (string, error) {
	if err := offer.Validate(); err != nil {
		return "", fmt.Errorf("bundle: fetch: %w", err)
	}
	short := offer.ShortHash()
	final := filepath.Join(storeDir, offer.Hash)
	if err := verifyFile(final, offer); err == nil {
		if progress != nil {
			progress(offer.Size, offer.Size)
		}
		return final, nil
	}
	key := final
	if abs, err := filepath.Abs(final); err == nil {
		key = abs
	}
	inflight.Lock()
	if inflight.m[key] {
		inflight.Unlock()
		return "", fmt.Errorf("bundle: fetch %s: %w", short, ErrInProgress)
	}
	inflight.m[key] = true
	inflight.Unlock()
	defer func() {
		inflight.Lock()
		delete(inflight.m, key)
		inflight.Unlock()
	}()

	inc := filepath.Join(storeDir, "incoming")
	if err := os.MkdirAll(inc, 0o700); err != nil {
		return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
	}
	partPath := filepath.Join(inc, offer.Hash+".part")
	f, err := os.OpenFile(partPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
	}
	defer f.Close()
	done, hsh, err := resumePart(f, offer.Size)
	if err != nil {
		return "", fmt.Errorf("bundle: fetch %s: resume: %w", short, err)
	}
	if progress != nil {
		progress(done, offer.Size)
	}

	ring := newRing(recvBuffers)
	pw := newPartWriter(f, done)
	failures := 0
	for done < offer.Size {
		before := done
		err := fetchOnce(ctx, h, from, offer, pw, hsh, &done, ring, progress)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("bundle: fetch %s: %w", short, ctx.Err())
		}
		if !retryable(err) {
			return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
		}
		if done > before {
			failures = 0
		}
		failures++
		if failures >= fetchAttempts {
			return "", fmt.Errorf("bundle: fetch %s: %d attempts without progress: %w", short, failures, err)
		}
		backoff := min(200*time.Millisecond<<(failures-1), 5*time.Second)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("bundle: fetch %s: %w", short, ctx.Err())
		case <-t.C:
		}
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
	}
	if got := hex.EncodeToString(hsh.Sum(nil)); got != offer.Hash {
		f.Close()
		os.Remove(partPath)
		return "", fmt.Errorf("bundle: fetch %s: %w: got %s", short, ErrHashMismatch, got)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
	}
	if err := os.Rename(partPath, final); err != nil {
		return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
	}
	// The new name must survive a crash too before Fetch says the bundle
	// has arrived.
	if err := syncDir(storeDir); err != nil {
		return "", fmt.Errorf("bundle: fetch %s: %w", short, err)
	}
	return final, nil
}

// resumePart hashes what f already holds and leaves its offset at the end.
// A .part longer than the offer cannot be ours and starts over; an
// incomplete one is cut back to a multiple of dioAlign, so that the rest can
// be written with direct I/O.
func resumePart(f *os.File, size int64) (int64, hash.Hash, error) {
	hsh := sha256.New()
	fi, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	switch n := fi.Size(); {
	case n > size:
		if err := f.Truncate(0); err != nil {
			return 0, nil, err
		}
	case n < size && n%dioAlign != 0:
		if err := f.Truncate(n &^ (dioAlign - 1)); err != nil {
			return 0, nil, err
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, nil, err
	}
	if fi, err := f.Stat(); err != nil || fi.Size() == 0 {
		return 0, hsh, err // a new .part: nothing to hash
	}
	n, err := io.CopyBuffer(hsh, f, make([]byte, ChunkSize))
	if err != nil {
		return 0, nil, err
	}
	return n, hsh, nil
}

// permanent marks errors that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

func retryable(err error) bool {
	var p permanent
	return !errors.As(err, &p)
}

// errChunkEnd ends the receiver's stream reader once it has every byte of
// the offer.
var errChunkEnd = errors.New("bundle: all bytes read")

// fetchOnce runs one stream: request from *done, then append every chunk to
// pw and hsh and advance *done. One goroutine reads the stream into the
// buffers of ring, a second hashes them and this one writes them and reports
// progress, so the disk and the hash overlap the transfer; *done only counts
// bytes already written and hashed, so a broken stream resumes exactly there.
func fetchOnce(ctx context.Context, h host.Host, from peer.ID, offer *Offer, pw *partWriter, hsh hash.Hash, done *int64, ring [][]byte, progress func(done, total int64)) error {
	sctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "bundle"), headerTimeout)
	st, err := h.NewStream(sctx, from, ProtocolID)
	cancel()
	if err != nil {
		if errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) {
			// The sender runs no bundle server (any more).
			return permanent{fmt.Errorf("%w: %v", ErrUnavailable, err)}
		}
		return err
	}
	// Reset the stream when ctx ends, so blocked reads return at once.
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	ok := false
	defer func() {
		if !ok {
			_ = st.Reset()
		}
	}()

	_ = st.SetDeadline(time.Now().Add(headerTimeout))
	if err := writeFrame(st, request{Type: reqType, V: frameV, Hash: offer.Hash, Offset: *done}); err != nil {
		return err
	}
	if err := st.CloseWrite(); err != nil {
		return err
	}
	resp, err := decodeResponse(st)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			return permanent{err}
		}
		return err
	}
	switch resp.Error {
	case "":
	case codeBusy:
		return ErrBusy
	case codeUnavailable:
		return permanent{ErrUnavailable}
	default:
		return permanent{fmt.Errorf("%w: peer says %q", ErrProtocol, trunc(resp.Error))}
	}
	if resp.Size != offer.Size {
		return permanent{fmt.Errorf("%w: sender has %d bytes, offer says %d", ErrSizeMismatch, resp.Size, offer.Size)}
	}
	if resp.Offset != *done {
		return permanent{fmt.Errorf("%w: asked offset %d, got %d", ErrProtocol, *done, resp.Offset)}
	}

	left := offer.Size - *done // producer only once the pipe runs
	var deadlineSet time.Time  // producer only
	p := newChunkPipe(ring, func(buf []byte) (int, error) {
		buf = buf[:min(int64(len(buf)), left)]
		n := 0
		for n < len(buf) {
			// Setting a deadline resets a timer: push it out once a
			// second while bytes move, not for every frame.
			if now := time.Now(); now.Sub(deadlineSet) >= deadlineRefresh {
				_ = st.SetReadDeadline(now.Add(IdleTimeout))
				deadlineSet = now
			}
			m, err := st.Read(buf[n:])
			n += m
			if err != nil {
				left -= int64(n)
				return n, err
			}
		}
		left -= int64(n)
		if left == 0 {
			return n, errChunkEnd
		}
		return n, nil
	})
	defer func() {
		if !ok {
			_ = st.Reset() // unblocks the reader
		}
		p.close()
	}()
	// Three stages joined by the ring, each on its own goroutine: the reader
	// (above) fills buffers from the stream, the hasher hashes them in order,
	// and this goroutine writes them to the file in order and hands them back
	// to the reader. Each buffer moves on as soon as its stage is done, so
	// the hash of one chunk overlaps the disk write of the one before it.
	// Every chunk the hasher has seen reaches this goroutine, so when
	// fetchOnce returns the hash covers exactly the bytes in the file (unless
	// a write failed, which ends Fetch).
	toWrite := make(chan chunk, len(ring)) // never blocks: at most len(ring) buffers exist
	go func() {
		defer close(toWrite)
		pos := *done
		for {
			c := p.next()
			if c.err != nil && pos+int64(len(c.b)) < offer.Size {
				// The stream broke mid-chunk: keep only whole dioAlign
				// blocks, so that the next attempt resumes at an offset
				// direct I/O can use.
				c.b = c.b[:len(c.b)&^(dioAlign-1)]
			}
			hsh.Write(c.b)
			pos += int64(len(c.b))
			toWrite <- c
			if c.err != nil {
				return
			}
		}
	}()
	// The writer gathers writeBatch chunks (or up to the last one) and
	// writes them in one call: see partWriter.writeBufs.
	var werr, end error
	batch := make([]chunk, 0, writeBatch)
	bufs := make([][]byte, 0, writeBatch)
	for c := range toWrite {
		batch = append(batch, c)
		end = c.err
		if len(batch) < writeBatch && c.err == nil {
			continue
		}
		bufs = bufs[:0]
		var n int64
		for _, b := range batch {
			if len(b.b) > 0 {
				bufs = append(bufs, b.b)
				n += int64(len(b.b))
			}
		}
		if len(bufs) > 0 && werr == nil {
			if werr = pw.writeBufs(bufs); werr != nil {
				_ = st.Reset() // stop the reader; drain what the hasher has
			} else {
				*done += n
				if progress != nil {
					progress(*done, offer.Size)
				}
			}
		}
		for _, b := range batch {
			p.put(b.b)
		}
		batch = batch[:0]
	}
	switch {
	case werr != nil:
		return permanent{werr}
	case *done == offer.Size:
	case end == io.EOF:
		return io.ErrUnexpectedEOF
	default:
		return end
	}
	ok = true
	_ = st.Close()
	return nil
}
