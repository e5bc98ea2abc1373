package wsgateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/confabhq/confab/mesh"
)

// closeGrace is how long the writer waits, after sending a close frame, for
// the peer to answer before it drops the connection.
const closeGrace = time.Second

var (
	errFinal     = errors.New("connection closed by the gateway")
	errReadLimit = errors.New("frame over the limit")
)

// outFrame is one item of a connection's send queue. A non-zero closeCode
// makes it the last: the writer sends data (if any), then a close frame. pm,
// if set, is an event shared by every connection it fans out to, encoded
// once (writer.go); data is then nil.
type outFrame struct {
	data      []byte
	pm        *websocket.PreparedMessage
	closeCode int
	closeText string
}

// conn is one gateway connection. The reader goroutine owns bad and sub; the
// writer goroutine is the only one that writes data frames on ws.
type conn struct {
	s   *Server
	ws  *websocket.Conn
	log *slog.Logger

	bc         *batchConn    // the net.Conn under ws (writer.go)
	readerDone chan struct{} // closed when the reader returns
	closeSent  chan struct{} // closed when the writer is done writing
	g          *errgroup.Group

	bad int      // bad frames in a row (reader only)
	sub *pumpRef // the active subscription (reader only)

	// Remote mode (auth.go). kick is written by other goroutines, authed
	// read by the auth timer; the rest is owned by the reader.
	kick    chan kick     // a last frame to send ahead of the queue
	authed  atomic.Bool   // set once auth succeeded
	gateway string        // the node's peer id, bound into AuthBytes
	nonce   []byte        // the welcome nonce; nil once an auth spent it
	peer    string        // authenticated peer id
	joined  []string      // channels this connection joined
	limiter *rate.Limiter // the identity's request rate

	joins atomic.Int32 // session joins in flight (frames_private.go)
	front frontConn    // knocks waiting for this thin host's decision (frames_host.go)

	// The send queue: a slice that grows with use up to cfg.SendQueue and is
	// dropped again once drained, so an idle connection holds no queue.
	qmu    sync.Mutex    // guards q and qroom; a leaf lock
	q      []outFrame    // frames waiting for the writer
	qroom  chan struct{} // closed when the writer takes frames; nil unless someone waits for room
	qready chan struct{} // capacity 1: the writer has frames to take
}

// pumpRef is the reader's handle on a subscription pump goroutine.
type pumpRef struct {
	req    string
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *pumpRef) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func newConn(s *Server, ws *websocket.Conn, bc *batchConn) *conn {
	return &conn{
		s:          s,
		ws:         ws,
		bc:         bc,
		log:        s.log.With("remote", ws.RemoteAddr().String()),
		qready:     make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		closeSent:  make(chan struct{}),
		kick:       make(chan kick, 1),
	}
}

// serve runs the connection until it ends. It returns only after the
// reader, the writer and any subscription pump have exited. The reader runs
// on serve's own goroutine: an idle connection costs two goroutines.
func (c *conn) serve() {
	defer c.ws.Close()
	info := c.s.cfg.Backend.Info()
	nonce := make([]byte, 32)
	rand.Read(nonce)
	c.nonce, c.gateway = nonce, info.ID
	w := &Welcome{V: ProtocolVersion, Node: info.ID, Name: info.Name, Mode: c.s.cfg.Mode, Nonce: nonce}
	data, err := EncodeFrame(w)
	if err != nil {
		c.log.Error("gateway welcome", "err", err)
		return
	}
	c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		c.s.countWriteErr(err)
		c.log.Debug("gateway welcome", "err", err)
		return
	}
	if c.s.cfg.Mode == ModeRemote {
		t := time.AfterFunc(c.s.cfg.Remote.AuthTimeout, func() {
			if !c.authed.Load() {
				c.s.metrics.authTimeouts.Add(1)
				c.kickOut(&ErrorFrame{Code: CodeAuthTimeout, Message: "no auth within the handshake timeout"}, CloseUnauthorized, "auth timeout")
			}
		})
		defer t.Stop()
		defer c.s.unregister(c)
	}
	rctx, cancel := context.WithCancel(c.s.ctx)
	g, ctx := errgroup.WithContext(rctx)
	c.g = g
	g.Go(func() error { return c.writeLoop(ctx) })
	rerr := c.readLoop(ctx)
	cancel() // the writer and any pump stop as they would if the reader were in g
	err = g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		err = rerr
	}
	c.log.Debug("gateway connection ended", "err", err)
}

// enqueue queues f for the writer, waiting while the queue is full.
func (c *conn) enqueue(ctx context.Context, f outFrame) error {
	for {
		c.qmu.Lock()
		if len(c.q) < c.s.cfg.SendQueue {
			c.q = append(c.q, f)
			c.qmu.Unlock()
			c.wake()
			return nil
		}
		if c.qroom == nil {
			c.qroom = make(chan struct{})
		}
		room := c.qroom
		c.qmu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take hands the writer every queued frame and gives the queue spare (an
// empty slice, or nil) to fill meanwhile.
func (c *conn) take(spare []outFrame) []outFrame {
	c.qmu.Lock()
	batch := c.q
	c.q = spare
	if c.qroom != nil {
		close(c.qroom)
		c.qroom = nil
	}
	c.qmu.Unlock()
	return batch
}

func (c *conn) send(ctx context.Context, f Frame) error {
	data, err := EncodeFrame(f)
	if err != nil {
		c.log.Error("gateway encode", "type", f.Type(), "err", err)
		data, _ = EncodeFrame(&ErrorFrame{Code: CodeInternal, Message: "encode failed"})
	}
	return c.enqueue(ctx, outFrame{data: data})
}

// final queues a last frame and close code, then waits until the writer has
// sent them (or gave up).
func (c *conn) final(ctx context.Context, f Frame, code int, text string) {
	var data []byte
	if f != nil {
		data, _ = EncodeFrame(f)
	}
	if c.enqueue(ctx, outFrame{data: data, closeCode: code, closeText: text}) != nil {
		return
	}
	select {
	case <-c.closeSent:
	case <-ctx.Done():
	}
}

// wake tells the writer to look at its queue and flags; it never blocks.
func (c *conn) wake() {
	select {
	case c.qready <- struct{}{}:
	default: // the writer has been told already
	}
}

// writeLoop is the connection's only writer of data frames. It blocks on
// qready alone, one channel receive per wake-up: a select over the queue,
// kicks, the ping timer and ctx cost several times as much per frame, and
// the writer wakes once per live event. Whoever else needs the writer sets
// its flag (or kick) first and then wakes it.
func (c *conn) writeLoop(ctx context.Context) error {
	var pingDue atomic.Bool
	ping := time.AfterFunc(c.s.cfg.PingInterval, func() { pingDue.Store(true); c.wake() })
	stopWake := context.AfterFunc(ctx, c.wake)
	defer func() {
		ping.Stop()
		stopWake()
		select {
		case <-c.closeSent:
		default:
			close(c.closeSent)
		}
		// Let the peer answer our close frame, then unblock the reader.
		t := time.NewTimer(closeGrace)
		select {
		case <-c.readerDone:
		case <-t.C:
		}
		t.Stop()
		c.ws.Close()
	}()
	var spare []outFrame
	for {
		<-c.qready
		if ctx.Err() != nil {
			if c.s.ctx.Err() != nil {
				c.writeClose(CloseGoingAway, "server closing")
			}
			return ctx.Err()
		}
		select {
		case k := <-c.kick: // ahead of anything queued
			c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if c.ws.WriteMessage(websocket.TextMessage, k.data) == nil {
				c.writeClose(k.code, k.text)
			}
			return errFinal
		default:
		}
		if pingDue.Load() {
			pingDue.Store(false)
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
				c.s.countWriteErr(err)
				return fmt.Errorf("ping: %w", err)
			}
			ping.Reset(c.s.cfg.PingInterval)
		}
		batch := c.take(spare)
		err := c.writeBatch(batch) // writer.go
		clear(batch)               // drop the frames' bytes now
		spare = nil
		if cap(batch) <= keepQueue {
			spare = batch[:0]
		}
		if err != nil {
			c.s.countWriteErr(err)
			return err
		}
	}
}

func (c *conn) writeClose(code int, text string) {
	msg := websocket.FormatCloseMessage(code, text)
	c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.s.cfg.WriteTimeout))
}

func (c *conn) readLoop(ctx context.Context) error {
	defer close(c.readerDone)
	cfg := &c.s.cfg
	// The WebSocket layer refuses outright (close 1009, no error frame) a
	// message whose frame headers announce more than twice MaxFrame; between
	// MaxFrame and that, the loop below replies too_large first.
	c.ws.SetReadLimit(2 * int64(cfg.MaxFrame))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	})
	for {
		c.ws.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.s.countReadErr(err)
			return fmt.Errorf("read: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(r, int64(cfg.MaxFrame)+1))
		if err != nil {
			c.s.countReadErr(err)
			return fmt.Errorf("read: %w", err)
		}
		if len(data) > cfg.MaxFrame {
			c.s.metrics.tooLarge.Add(1)
			c.final(ctx, &ErrorFrame{Code: CodeTooLarge, Message: fmt.Sprintf("frame over %d bytes", cfg.MaxFrame)},
				CloseTooLarge, "frame too large")
			return errReadLimit
		}
		c.s.metrics.framesIn.Add(1)
		var f Frame
		var req string
		var derr *Error
		if mt != websocket.TextMessage {
			derr = errorf(CodeBadFrame, "binary message; frames are JSON text")
		} else {
			f, req, derr = decodeRequest(data)
		}
		var gate *ErrorFrame
		if derr == nil {
			var bad bool
			if gate, bad = c.remoteGate(f); gate != nil && !bad {
				c.s.metrics.rateLimited.Add(1)
				if err := c.send(ctx, gate); err != nil {
					return err
				}
				continue
			}
		}
		if derr != nil || gate != nil {
			c.bad++
			c.s.metrics.badFrames.Add(1)
			ef := gate
			if derr != nil {
				ef = &ErrorFrame{Req: req, Code: derr.Code, Message: derr.Message}
			}
			if c.bad > cfg.MaxBadFrames {
				ef.Code, ef.Message = CodePolicy, fmt.Sprintf("more than %d bad frames in a row", cfg.MaxBadFrames)
				c.final(ctx, ef, ClosePolicy, "too many bad frames")
				return errFinal
			}
			if err := c.send(ctx, ef); err != nil {
				return err
			}
			continue
		}
		c.bad = 0
		if err := c.handle(ctx, f); err != nil {
			return err
		}
	}
}

// handle serves one request. It returns an error only when the connection
// must end.
func (c *conn) handle(ctx context.Context, f Frame) error {
	b := c.s.cfg.Backend
	var reply Frame
	var err error
	switch f := f.(type) {
	case *Join:
		if c.s.cfg.Mode == ModeRemote {
			err = c.remoteJoin(ctx, f.Channel)
		} else {
			err = b.Join(ctx, f.Channel)
		}
		reply = &OK{Req: f.Req}
	case *Leave:
		if c.s.cfg.Mode == ModeRemote {
			err = c.remoteLeave(f.Channel)
		} else {
			err = b.Leave(ctx, f.Channel)
		}
		reply = &OK{Req: f.Req}
	case *Send:
		if c.s.cfg.Mode == ModeReadOnly {
			return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeReadOnly, Message: "this connection is read-only"})
		}
		if c.s.cfg.Mode != ModeLocal {
			return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "send needs local mode; publish a signed envelope"})
		}
		var rec mesh.Record
		rec, err = b.Send(ctx, f.Channel, f.Kind, f.Content, f.ReplyTo)
		reply = ackOf(f.Req, rec)
	case *Publish:
		// The backend verifies the signature (Backend.Publish); the
		// gateway only checks the author, so each publish is verified once.
		if err = c.checkPublish(f.Envelope); err == nil {
			var rec mesh.Record
			rec, err = b.Publish(ctx, f.Envelope)
			if isSeqGap(err) && ctx.Err() == nil {
				return c.send(ctx, c.seqGap(ctx, f.Req, f.Envelope))
			}
			if err == nil {
				c.s.metrics.published.Add(1)
			}
			reply = ackOf(f.Req, rec)
		}
	case *Subscribe:
		return c.subscribe(ctx, f)
	case *SessionJoinRequest:
		return c.sessionJoin(ctx, f) // frames_private.go: answered by its own goroutine
	case *SessionKnockRequest:
		return c.sessionKnock(ctx, f) // frames_knock.go: relayed by its own goroutine
	case *PrivateFollowRequest:
		return c.privateFollow(ctx, f) // frames_host.go
	case *SessionDecideRequest:
		return c.sessionDecide(ctx, f) // frames_host.go
	case *Unsubscribe:
		if c.sub != nil {
			c.sub.cancel()
			select {
			case <-c.sub.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			c.sub = nil
		}
		reply = &OK{Req: f.Req}
	case *HistoryRequest:
		reply, err = c.history(ctx, f)
	case *WhoRequest:
		peers := b.Who(ctx, f.Channel)
		w := &WhoReply{Req: f.Req, Peers: make([]WirePeer, 0, len(peers))}
		for _, p := range peers {
			w.Peers = append(w.Peers, PeerToWire(p))
		}
		reply = w
	case *InfoRequest:
		reply = &InfoReply{Req: f.Req, Info: InfoToWire(b.Info())}
	case *Auth:
		if c.s.cfg.Mode == ModeRemote {
			return c.authenticate(ctx, f)
		}
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnsupported, Message: "auth is for remote mode; this connection already acts as the node"})
	case *SeqRequest:
		reply, err = c.nextSeq(ctx, f)
	case *SearchRequest:
		reply, err = c.search(ctx, f)
	case *HandoffRequest, *BundlesRequest, *ApplyRequest:
		reply, err = c.bundleFrame(ctx, f)
	case *Ping:
		reply = &Pong{Req: f.Req}
	default:
		var ok bool
		if reply, ok, err = c.handlePrivate(ctx, f); !ok { // frames_private.go
			reply, _, err = c.handleAgent(ctx, f) // frames_direct.go
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.send(ctx, c.errorFrame(reqOf(f), err))
	}
	return c.send(ctx, reply)
}

func ackOf(req string, rec mesh.Record) Frame {
	if rec.Env == nil {
		return &ErrorFrame{Req: req, Code: CodeInternal, Message: "backend returned no envelope"}
	}
	return &Ack{Req: req, ID: rec.Env.ID, Seq: rec.Env.Seq, Cursor: rec.Cursor}
}

func reqOf(f Frame) string {
	switch f := f.(type) {
	case *Join:
		return f.Req
	case *Leave:
		return f.Req
	case *Send:
		return f.Req
	case *Publish:
		return f.Req
	case *Subscribe:
		return f.Req
	case *Unsubscribe:
		return f.Req
	case *HistoryRequest:
		return f.Req
	case *WhoRequest:
		return f.Req
	case *InfoRequest:
		return f.Req
	case *Auth:
		return f.Req
	case *Ping:
		return f.Req
	case *SeqRequest:
		return f.Req
	case *SearchRequest:
		return f.Req
	case *HandoffRequest:
		return f.Req
	case *BundlesRequest:
		return f.Req
	case *ApplyRequest:
		return f.Req
	}
	if req := privateReq(f); req != "" { // frames_private.go
		return req
	}
	return agentReq(f)
}

// errorFrame maps a backend error to an error frame. Internal errors are
// logged here and reported without detail.
func (c *conn) errorFrame(req string, err error) *ErrorFrame {
	code := codeOf(err)
	if code == CodeInternal {
		c.log.Warn("gateway request failed", "req", req, "err", err)
		return &ErrorFrame{Req: req, Code: code, Message: "internal error"}
	}
	return &ErrorFrame{Req: req, Code: code, Message: err.Error()}
}

func codeOf(err error) string {
	var pe *Error
	switch {
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, mesh.ErrBadChannel):
		return CodeBadChannel
	case errors.Is(err, mesh.ErrNotJoined):
		return CodeNotJoined
	case errors.Is(err, mesh.ErrUnknownAgent):
		return CodeUnknownAgent
	case errors.Is(err, mesh.ErrRateLimited):
		return CodeRateLimited
	case errors.Is(err, mesh.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, mesh.ErrBadSig):
		return CodeBadSignature
	case errors.Is(err, mesh.ErrMalformed):
		return CodeBadFrame
	case errors.Is(err, mesh.ErrBadCursor):
		return CodeBadCursor
	case errors.Is(err, mesh.ErrSeqGap):
		return CodeSeqGap
	case errors.Is(err, mesh.ErrStorageFull):
		return CodeStorageFull
	case errors.Is(err, mesh.ErrClosed), errors.Is(err, context.Canceled):
		return CodeClosed
	}
	if code := agentCode(err); code != "" { // frames_discovery.go
		return code
	}
	return CodeInternal
}

// history answers a history request within the HistoryBytes budget,
// dropping the oldest records (and setting More) when it would exceed it.
func (c *conn) history(ctx context.Context, f *HistoryRequest) (Frame, error) {
	recs, err := c.s.cfg.Backend.Before(ctx, f.Channel, f.Before, f.Limit)
	if err != nil {
		return nil, err
	}
	// Ask for one record before the page rather than Limit+1: a backend
	// clamps its page size, and a clamped Limit+1 would hide older records.
	more := false
	if len(recs) > 0 && len(recs) >= f.Limit {
		older, err := c.s.cfg.Backend.Before(ctx, f.Channel, recs[0].Cursor, 1)
		if err != nil {
			return nil, err
		}
		more = len(older) > 0
	}
	sealed := c.revealAll(recs) // frames_private.go: decrypted view of private records
	budget := c.s.cfg.HistoryBytes - 256
	start := len(recs)
	for start > 0 {
		n := recordSize(recs[start-1]) + sealedSize(sealed, recs[start-1])
		if n > budget {
			break
		}
		budget -= n
		start--
	}
	if start > 0 {
		more = true
		for _, r := range recs[:start] {
			delete(sealed, r.Env.ID)
		}
		recs = recs[start:]
	}
	if recs == nil {
		recs = []mesh.Record{}
	}
	return &HistoryReply{Req: f.Req, Records: recs, More: more, Sealed: sealed}, nil
}

// recordSize bounds the JSON size of a record: content may grow six-fold
// when escaped, the rest is small and bounded.
func recordSize(r mesh.Record) int {
	if r.Env == nil {
		return 64
	}
	return 6*(len(r.Env.Content)+len(r.Env.Name)) + 1024
}
