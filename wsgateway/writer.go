package wsgateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	// eventCacheSize is how many recent live events the server keeps
	// encoded for the other connections they fan out to.
	eventCacheSize = 32
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

// eventCache keeps the last live events encoded once, as prepared messages
// (frame bytes built once too), for every connection they fan out to. The
// backend hands the same *mesh.Envelope to every subscription, so the
// pointer (kept alive by the entry) and the cursor identify a record.
type eventCache struct {
	mu   sync.Mutex // guards the fields below; a leaf lock, held while encoding
	ring [eventCacheSize]cachedEvent
	next int
}

type cachedEvent struct {
	env    *mesh.Envelope
	cursor string
	pm     *websocket.PreparedMessage
}

// get returns the live event frame of rec, encoding it on first use.
func (e *eventCache) get(rec mesh.Record) (*websocket.PreparedMessage, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.ring {
		if ce := &e.ring[i]; ce.env == rec.Env && ce.cursor == rec.Cursor && ce.pm != nil {
			return ce.pm, nil
		}
	}
	data, err := EncodeFrame(&Event{Record: rec})
	if err != nil {
		return nil, err
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, data)
	if err != nil {
		return nil, err
	}
	e.ring[e.next] = cachedEvent{env: rec.Env, cursor: rec.Cursor, pm: pm}
	e.next = (e.next + 1) % len(e.ring)
	return pm, nil
}

// sendEvent queues the live event of rec. A record shown to this
// connection as is (every record but a decrypted private one in local mode)
// shares one encoding with every other connection.
func (c *conn) sendEvent(ctx context.Context, rec mesh.Record) error {
	if r, sealed := c.reveal(rec); sealed != "" || r.Env != rec.Env { // frames_private.go
		return c.send(ctx, &Event{Record: r, Sealed: sealed})
	}
	pm, err := c.s.events.get(rec)
	if err != nil {
		return c.send(ctx, c.event(rec, false))
	}
	return c.enqueue(ctx, outFrame{pm: pm})
}
