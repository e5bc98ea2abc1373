package wsgateway

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/confabhq/confab/mesh"
)

// Sizes of the write path.
const (
	// keepQueue: a drained send queue at most this long is kept for reuse;
	// a longer one (a burst, a replay) is dropped so that an idle
	// connection holds no queue memory.
	keepQueue = 16
	// batchBytes caps what the writer collects before one network write
	// when several frames are queued.
	batchBytes = 64 << 10
	// Buffer sizes of each WebSocket connection. Client frames are small, and
	// gorilla reads a larger payload straight into the caller's buffer. The
	// write buffer comes from a pool for the length of one message only.
	readBufferSize  = 1 << 10
	writeBufferSize = 16 << 10
)

// writeBatch writes the frames the writer took from the queue, in order.
// Several frames go out in one network write (batchConn). A frame with a
// close code is the last: the close frame follows it and errFinal is
// returned.
func (c *conn) writeBatch(batch []outFrame) error {
	hold := len(batch) > 1
	if hold {
		c.bc.hold()
	}
	for _, f := range batch {
		if err := c.writeFrame(f); err != nil {
			if hold {
				c.bc.release()
			}
			return err
		}
		c.s.metrics.framesOut.Add(1)
		if f.closeCode != 0 {
			if hold {
				c.bc.release()
			}
			c.writeClose(f.closeCode, f.closeText)
			return errFinal
		}
	}
	if hold {
		if err := c.bc.release(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

func (c *conn) writeFrame(f outFrame) error {
	if f.data == nil && f.pm == nil {
		return nil
	}
	c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	var err error
	if f.pm != nil {
		err = c.ws.WritePreparedMessage(f.pm)
	} else {
		err = c.ws.WriteMessage(websocket.TextMessage, f.data)
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// batchConn is the net.Conn under a gateway connection's websocket.Conn.
// Between hold and release, what gorilla writes collects in a pooled buffer
// and leaves in as few writes as batchBytes allows; otherwise writes pass
// straight through. Its mutex also covers the pongs gorilla writes from the
// reader goroutine.
type batchConn struct {
	net.Conn
	mu  sync.Mutex
	buf *[]byte // from batchPool while holding, else nil
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchBytes); return &b }}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return b.Conn.Write(p)
	}
	if len(*b.buf)+len(p) > batchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= batchBytes {
			return b.Conn.Write(p)
		}
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

func (b *batchConn) hold() {
	b.mu.Lock()
	if b.buf == nil {
		b.buf = batchPool.Get().(*[]byte)
	}
	b.mu.Unlock()
}

// release writes what was collected and ends holding.
func (b *batchConn) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return nil
	}
	err := b.flushLocked()
	batchPool.Put(b.buf)
	b.buf = nil
	return err
}

func (b *batchConn) flushLocked() error {
	if len(*b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(*b.buf)
	*b.buf = (*b.buf)[:0]
	return err
}

// hijackWrap hands gorilla a batchConn instead of the hijacked connection.
type hijackWrap struct {
	http.ResponseWriter
	bc *batchConn
}

func (h hijackWrap) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response does not implement http.Hijacker")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.bc.Conn = nc
	return h.bc, brw, nil
}

// eventCache is the server's live fan-out. Subscriptions to the same
// channel list share a live group: one backend subscription read by one
// goroutine, which encodes each record once (one prepared message: JSON and
// frame bytes built once) and queues it straight into every member's send
// queue, so a record wakes one goroutine per connection, its writer, as in
// gorilla's chat hub. A subscription to "every channel" (an empty list) gets
// a group of its own: what that means can depend on when it was made.
//
// Overflow: the group never waits for a member. A member whose send queue
// already holds SendQueue+SubscriptionQueue frames is ended with
// mesh.ErrSlowConsumer (its pump sends resume with its last cursor and
// closes 4008); a member still replaying holds at most SubscriptionQueue
// records. If the group's own backend subscription overflows or ends, every
// member ends with its error.
//
// Locks, in order: eventCache.mu, liveGroup.mu, liveMember.mu, conn.qmu.
type eventCache struct {
	mu     sync.Mutex            // guards groups
	groups map[string]*liveGroup // shared groups by channel list
}

// liveGroup is one backend subscription and its members.
type liveGroup struct {
	key  string // "" for an unshared group
	sub  Subscription
	stop chan struct{} // closed when the last member leaves
	done chan struct{} // closed when run returns

	mu      sync.Mutex // guards members and ended
	members map[*liveMember]struct{}
	ended   bool
}

// liveMember is one connection's subscription within a group.
type liveMember struct {
	c     *conn
	g     *liveGroup
	ended chan struct{} // closed once err is set

	// Set by the pump before live is set, read-only afterwards.
	since string
	seen  *cursorSet

	mu   sync.Mutex // guards the fields below
	live bool       // the group queues events itself; before, it adds to held
	held []liveItem // records that arrived while the pump replayed
	last string     // cursor of the last event queued
	err  error      // why the subscription ended (mesh.ErrSlowConsumer: resume)
}

// liveItem is a record and its shared encoding (nil if encoding failed).
type liveItem struct {
	rec mesh.Record
	pm  *websocket.PreparedMessage
}

// join adds c to the group of channels, starting the group (and its
// backend subscription) if there is none.
func (e *eventCache) join(c *conn, channels []string) *liveMember {
	key := ""
	if len(channels) > 0 {
		key = strings.Join(dedupe(channels), " ")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.groups[key]
	if key == "" || g == nil {
		g = &liveGroup{key: key, sub: c.s.cfg.Backend.Subscribe(channels, c.s.cfg.SubscriptionQueue),
			stop: make(chan struct{}), done: make(chan struct{}), members: map[*liveMember]struct{}{}}
		if key != "" {
			if e.groups == nil {
				e.groups = map[string]*liveGroup{}
			}
			e.groups[key] = g
		}
		go g.run(e)
	}
	mb := &liveMember{c: c, g: g, ended: make(chan struct{})}
	g.mu.Lock()
	if g.ended {
		mb.err = mesh.ErrClosed
		close(mb.ended)
	} else {
		g.members[mb] = struct{}{}
	}
	g.mu.Unlock()
	return mb
}

// leave removes mb from its group. The last member to leave stops the
// group and waits for its goroutine. Calling it again does nothing.
func (e *eventCache) leave(mb *liveMember) {
	g := mb.g
	e.mu.Lock()
	g.mu.Lock()
	_, in := g.members[mb]
	delete(g.members, mb)
	last := in && len(g.members) == 0 && !g.ended
	if last {
		g.ended = true
		if e.groups[g.key] == g {
			delete(e.groups, g.key)
		}
	}
	ended := g.ended
	g.mu.Unlock()
	e.mu.Unlock()
	mb.end(mesh.ErrClosed)
	if last {
		close(g.stop)
	}
	if ended {
		// The group is stopping (or its subscription ended): wait, so that
		// no goroutine outlives the connection that saw it end.
		<-g.done
	}
}

// run reads the group's backend subscription until it ends or the last
// member leaves.
func (g *liveGroup) run(e *eventCache) {
	defer close(g.done)
	defer g.sub.Close()
	for {
		select {
		case <-g.stop:
			return
		case rec, ok := <-g.sub.C():
			if !ok {
				g.end(e)
				return
			}
			if rec.Env != nil {
				g.fanOut(rec)
			}
		}
	}
}

// fanOut queues rec for every member, encoded once.
func (g *liveGroup) fanOut(rec mesh.Record) {
	it := liveItem{rec: rec}
	if data, err := EncodeFrame(&Event{Record: rec}); err == nil {
		it.pm, _ = websocket.NewPreparedMessage(websocket.TextMessage, data)
	}
	g.mu.Lock()
	var slow []*liveMember
	for mb := range g.members {
		if !mb.offer(it) {
			slow = append(slow, mb)
			delete(g.members, mb)
		}
	}
	g.mu.Unlock()
	for _, mb := range slow {
		mb.end(mesh.ErrSlowConsumer)
	}
}

// end ends every member with the backend subscription's error.
func (g *liveGroup) end(e *eventCache) {
	err := g.sub.Err()
	if err == nil {
		err = mesh.ErrClosed
	}
	e.mu.Lock()
	if e.groups[g.key] == g {
		delete(e.groups, g.key)
	}
	g.mu.Lock()
	g.ended = true
	members := g.members
	g.members = map[*liveMember]struct{}{}
	g.mu.Unlock()
	e.mu.Unlock()
	for mb := range members {
		mb.end(err)
	}
}

// offer queues it for mb's connection without waiting, or holds it while
// mb replays. It reports false when mb is too slow and must end.
func (mb *liveMember) offer(it liveItem) bool {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.err != nil {
		return true
	}
	c := mb.c
	if !mb.live {
		if len(mb.held) >= c.s.cfg.SubscriptionQueue {
			return false
		}
		mb.held = append(mb.held, it)
		return true
	}
	if mb.skip(it.rec) {
		return true
	}
	f, ok := c.liveFrame(it)
	if !ok {
		return true
	}
	if !c.offer(f, c.s.cfg.SendQueue+c.s.cfg.SubscriptionQueue) {
		return false
	}
	if it.rec.Cursor > mb.last {
		mb.last = it.rec.Cursor
	}
	return true
}

// skip reports whether the client has rec already: it replayed it, or said
// it had it (since). A record below the last replayed cursor that was not
// replayed was stored out of cursor order: late, not a duplicate, so it is
// still delivered.
func (mb *liveMember) skip(rec mesh.Record) bool {
	return mb.seen != nil && (rec.Cursor <= mb.since || mb.seen.has(rec.Cursor))
}

// end records why mb ended and wakes its pump; only the first call counts.
func (mb *liveMember) end(err error) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.err != nil {
		return
	}
	mb.err = err
	mb.held = nil
	close(mb.ended)
}

// liveFrame is the frame of a live event for c: the shared encoding, unless
// c shows the record otherwise (a private record decrypted in local mode).
func (c *conn) liveFrame(it liveItem) (outFrame, bool) {
	if r, sealed := c.reveal(it.rec); sealed != "" || r.Env != it.rec.Env || it.pm == nil { // frames_private.go
		data, err := EncodeFrame(&Event{Record: r, Sealed: sealed})
		if err != nil {
			c.log.Error("gateway encode", "type", TypeEvent, "err", err)
			return outFrame{}, false
		}
		return outFrame{data: data}, true
	}
	return outFrame{pm: it.pm}, true
}

// offer queues f unless the queue already holds limit frames; it never
// waits.
func (c *conn) offer(f outFrame, limit int) bool {
	c.qmu.Lock()
	if len(c.q) >= limit {
		c.qmu.Unlock()
		return false
	}
	c.q = append(c.q, f)
	c.qmu.Unlock()
	c.wake()
	return true
}
