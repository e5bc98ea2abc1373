package wsgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/confabhq/confab/mesh"
)

// Client limits and defaults.
const (
	clientReadLimit    = maxDecodeLen     // largest server frame a Client accepts
	clientEventQueue   = 256              // buffered events before the reader waits
	defaultCallTimeout = 30 * time.Second // used when ctx has no deadline, for writes
)

// ErrClientClosed is returned by calls on a Client after Close.
var ErrClientClosed = errors.New("wsgateway: client closed")

// Client is a gateway connection. One reader goroutine dispatches replies to
// waiting calls by req id and events to the subscription; writes are
// serialised by a mutex. Safe for concurrent use.
type Client struct {
	ws      *websocket.Conn
	welcome Welcome
	done    chan struct{} // closed when the reader exits
	quit    chan struct{} // closed by Close
	once    sync.Once

	wmu sync.Mutex // serialises writes on ws; never taken while holding mu

	hosts thinHosts // sessions this client hosts (client_host.go)

	mu      sync.Mutex // guards the fields below
	next    uint64
	pending map[string]chan Frame
	sub     *clientSub
	subErr  error // why the last subscription ended
	connErr error // why the connection ended
}

type clientSub struct {
	req      string
	ch       chan Event    // Subscribe's events, closed at the end; nil for SubscribeFunc
	fn       func(Event)   // SubscribeFunc's handler, called by the reader
	done     chan struct{} // SubscribeFunc: closed at the end
	stop     chan struct{} // closed by Unsubscribe: drop further events
	unsubReq string
	ended    bool
}

// Dial connects to a gateway and reads its welcome. target is
// "unix:///abs/path.sock", "ws://host:port/path" or "wss://...". The Client
// must be closed.
func Dial(ctx context.Context, target string) (*Client, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	url := target
	switch {
	case strings.HasPrefix(target, "unix://"):
		path := strings.TrimPrefix(target, "unix://")
		if !filepath.IsAbs(path) {
			return nil, fmt.Errorf("wsgateway: dial %s: socket path must be absolute", target)
		}
		d.NetDialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "unix", path)
		}
		url = "ws://localhost/"
	case strings.HasPrefix(target, "ws://"), strings.HasPrefix(target, "wss://"):
	default:
		return nil, fmt.Errorf("wsgateway: dial %s: target must start with unix://, ws:// or wss://", target)
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("wsgateway: dial %s: %w (HTTP %s)", target, err, resp.Status)
		}
		return nil, fmt.Errorf("wsgateway: dial %s: %w", target, err)
	}
	ws.SetReadLimit(clientReadLimit)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(d.HandshakeTimeout)
	}
	ws.SetReadDeadline(deadline)
	_, data, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("wsgateway: dial %s: read welcome: %w", target, err)
	}
	f, err := DecodeReply(data)
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("wsgateway: dial %s: welcome: %w", target, err)
	}
	w, ok := f.(*Welcome)
	if !ok {
		ws.Close()
		return nil, fmt.Errorf("wsgateway: dial %s: first frame is %q, not welcome", target, f.Type())
	}
	if w.V != ProtocolVersion {
		ws.Close()
		return nil, fmt.Errorf("wsgateway: dial %s: server speaks protocol v%d, client v%d", target, w.V, ProtocolVersion)
	}
	ws.SetReadDeadline(time.Time{})
	c := &Client{ws: ws, welcome: *w, done: make(chan struct{}), quit: make(chan struct{}), pending: make(map[string]chan Frame)}
	go c.readLoop()
	return c, nil
}

// Welcome returns the server's welcome frame.
func (c *Client) Welcome() Welcome { return c.welcome }

// Err says why the last subscription's event channel closed, or else why
// the connection ended; nil while all is well. A slow subscriber gets an
// *Error with CodeResume and the Cursor to resume from.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subErr != nil {
		return c.subErr
	}
	return c.connErr
}

// Close closes the connection and waits for the reader goroutine. Pending
// calls fail with ErrClientClosed; the event channel is closed.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		if c.connErr == nil {
			c.connErr = ErrClientClosed
		}
		c.mu.Unlock()
		close(c.quit)
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(CloseNormal, ""), time.Now().Add(time.Second))
		c.ws.Close()
	})
	<-c.done
	return nil
}

func (c *Client) readLoop() {
	var err error
	defer func() {
		c.mu.Lock()
		if c.connErr == nil {
			c.connErr = connError(err)
		}
		for req, ch := range c.pending {
			close(ch)
			delete(c.pending, req)
		}
		c.endSubLocked(nil)
		c.mu.Unlock()
		close(c.done)
	}()
	for {
		var data []byte
		_, data, err = c.ws.ReadMessage()
		if err != nil {
			return
		}
		f, derr := decodeServerFrame(data)
		if derr != nil {
			err = fmt.Errorf("wsgateway: bad frame from server: %w", derr)
			return
		}
		switch f := f.(type) {
		case *Event:
			c.deliver(f)
		case *HostKnock:
			c.hosts.knock(c, f) // client_host.go
		case *Live, *Pong, *Welcome:
		default:
			c.dispatch(f)
		}
	}
}

// eventPrefix starts every event frame the server encodes (EncodeFrame
// writes the type first).
var eventPrefix = []byte(`{"type":"event",`)

// decodeServerFrame is DecodeReply with a fast path for events, most of
// what a subscribed client reads: an event frame is parsed once, header and
// body together, instead of once for its header and again for its body.
// The header fields decode exactly as in decodeHeader (the same names and
// tags), so both paths agree on the type and apply the same checks;
// FuzzDecodeServerFrame holds them to it.
func decodeServerFrame(data []byte) (Frame, error) {
	if !bytes.HasPrefix(data, eventPrefix) || len(data) > maxDecodeLen {
		return DecodeReply(data)
	}
	var x struct {
		Type string `json:"type"` // as in header
		Req  string `json:"req"`
		Event
	}
	if err := json.Unmarshal(data, &x); err != nil || x.Type != TypeEvent || len(x.Req) > MaxReqLen {
		return DecodeReply(data) // the slow path words the error
	}
	if err := validateReply(&x.Event); err != nil {
		return nil, err
	}
	return &x.Event, nil
}

func connError(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case CloseResume:
			return &Error{Code: CodeResume, Message: "subscriber too slow"}
		case CloseTooLarge:
			return &Error{Code: CodeTooLarge, Message: ce.Text}
		case ClosePolicy:
			return &Error{Code: CodePolicy, Message: ce.Text}
		case CloseGoingAway:
			return &Error{Code: CodeClosed, Message: ce.Text}
		case CloseUnauthorized:
			return &Error{Code: CodeUnauthorized, Message: ce.Text}
		case CloseDisplaced:
			return &Error{Code: CodeDisplaced, Message: ce.Text}
		}
	}
	return fmt.Errorf("wsgateway: connection: %w", err)
}

// deliver hands an event to the subscription, waiting while its buffer is
// full: a consumer that stops reading slows the server's queue down until
// the server ends the subscription with CodeResume.
func (c *Client) deliver(f *Event) {
	c.mu.Lock()
	s := c.sub
	c.mu.Unlock()
	if s == nil {
		return
	}
	if s.fn != nil {
		select {
		case <-s.stop: // unsubscribed: drop, as Subscribe does
		default:
			s.fn(*f)
		}
		return
	}
	select {
	case s.ch <- *f:
	case <-s.stop:
	case <-c.quit:
	}
}

func (c *Client) dispatch(f Frame) {
	req := reqOfReply(f)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.sub; s != nil && req != "" {
		if req == s.unsubReq {
			c.endSubLocked(nil)
		} else if req == s.req && c.pending[req] == nil {
			// An error for the subscription after its ok: it ended.
			if ef, ok := f.(*ErrorFrame); ok {
				c.endSubLocked(&Error{Code: ef.Code, Message: ef.Message, Cursor: ef.Cursor})
				return
			}
		}
	}
	if ch, ok := c.pending[req]; ok {
		if interim(f) { // frames_private.go: the call stays registered for its reply
			select {
			case ch <- f:
			default:
			}
			return
		}
		delete(c.pending, req)
		ch <- f
		return
	}
	if ef, ok := f.(*ErrorFrame); ok && req == "" && c.connErr == nil {
		// A connection-level error (too_large, policy); the close follows.
		c.connErr = &Error{Code: ef.Code, Message: ef.Message, Cursor: ef.Cursor}
	}
}

func (c *Client) endSubLocked(err error) {
	s := c.sub
	if s == nil || s.ended {
		return
	}
	s.ended = true
	c.sub = nil
	if err != nil {
		c.subErr = err
	}
	if s.ch != nil {
		close(s.ch)
	}
	if s.done != nil {
		close(s.done)
	}
}

func reqOfReply(f Frame) string {
	switch f := f.(type) {
	case *OK:
		return f.Req
	case *Ack:
		return f.Req
	case *HistoryReply:
		return f.Req
	case *WhoReply:
		return f.Req
	case *InfoReply:
		return f.Req
	case *ErrorFrame:
		return f.Req
	case *SeqReply:
		return f.Req
	case *SearchReply:
		return f.Req
	case *HandoffReply:
		return f.Req
	case *BundlesReply:
		return f.Req
	case *ApplyReply:
		return f.Req
	}
	if req := privateReq(f); req != "" { // frames_private.go
		return req
	}
	return agentReq(f)
}

// newReq registers a pending call whose reply channel holds buf frames
// (more than one for calls that get interim frames before their reply) and
// returns its req id.
func (c *Client) newReq(buf int) (string, chan Frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connErr != nil {
		return "", nil, c.connErr
	}
	c.next++
	req := strconv.FormatUint(c.next, 10)
	ch := make(chan Frame, buf)
	c.pending[req] = ch
	return req, ch, nil
}

func (c *Client) forget(req string) {
	c.mu.Lock()
	delete(c.pending, req)
	c.mu.Unlock()
}

func (c *Client) write(ctx context.Context, f Frame) error {
	data, err := EncodeFrame(f)
	if err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultCallTimeout)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(deadline)
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("wsgateway: write %s: %w", f.Type(), err)
	}
	return nil
}

// call sends the request built by mk with a fresh req id and waits for its
// reply. An error frame is returned as *Error.
func (c *Client) call(ctx context.Context, mk func(req string) Frame) (Frame, error) {
	req, ch, err := c.newReq(1)
	if err != nil {
		return nil, err
	}
	return c.await(ctx, req, ch, mk(req))
}

func (c *Client) await(ctx context.Context, req string, ch chan Frame, f Frame) (Frame, error) {
	if err := c.write(ctx, f); err != nil {
		c.forget(req)
		return nil, err
	}
	return c.reply(ctx, req, ch)
}

// reply waits for the reply to req, written already.
func (c *Client) reply(ctx context.Context, req string, ch chan Frame) (Frame, error) {
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.connErr
			c.mu.Unlock()
			return nil, err
		}
		if ef, isErr := r.(*ErrorFrame); isErr {
			return nil, &Error{Code: ef.Code, Message: ef.Message, Cursor: ef.Cursor, Next: ef.Next}
		}
		return r, nil
	case <-ctx.Done():
		c.forget(req)
		return nil, ctx.Err()
	}
}

func expect[T Frame](f Frame, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	t, ok := f.(T)
	if !ok {
		return zero, fmt.Errorf("wsgateway: unexpected %q reply", f.Type())
	}
	return t, nil
}

// Info returns the node's identity, addresses and channels.
func (c *Client) Info(ctx context.Context) (mesh.Info, error) {
	r, err := expect[*InfoReply](c.call(ctx, func(req string) Frame { return &InfoRequest{Req: req} }))
	if err != nil {
		return mesh.Info{}, err
	}
	return r.Info.Info(), nil
}

// Join makes the node join channel.
func (c *Client) Join(ctx context.Context, channel string) error {
	_, err := expect[*OK](c.call(ctx, func(req string) Frame { return &Join{Req: req, Channel: channel} }))
	return err
}

// Leave makes the node leave channel.
func (c *Client) Leave(ctx context.Context, channel string) error {
	_, err := expect[*OK](c.call(ctx, func(req string) Frame { return &Leave{Req: req, Channel: channel} }))
	return err
}

// Send asks the node to sign and store a message (kind "" means "msg"). It
// returns once the node stored it durably.
func (c *Client) Send(ctx context.Context, channel, kind, content, replyTo string) (Ack, error) {
	r, err := expect[*Ack](c.call(ctx, func(req string) Frame {
		return &Send{Req: req, Channel: channel, Kind: kind, Content: content, ReplyTo: replyTo}
	}))
	if err != nil {
		return Ack{}, err
	}
	return *r, nil
}

// Publish hands the node an envelope signed by the caller.
func (c *Client) Publish(ctx context.Context, env *mesh.Envelope) (Ack, error) {
	r, err := expect[*Ack](c.call(ctx, func(req string) Frame { return &Publish{Req: req, Envelope: env} }))
	if err != nil {
		return Ack{}, err
	}
	return *r, nil
}

// PublishAsync writes env's publish frame and returns without waiting for
// the ack; wait returns it (or the error) once the gateway stored env, and
// may be called once. The gateway handles a connection's frames one after
// another in the order they arrive, and successive calls write in call
// order, so a client can pipeline its seqs: publish n+1 need not wait for
// n's ack (if n fails, n+1 gets CodeSeqGap).
func (c *Client) PublishAsync(ctx context.Context, env *mesh.Envelope) (wait func(context.Context) (Ack, error), err error) {
	req, ch, err := c.newReq(1)
	if err != nil {
		return nil, err
	}
	if err := c.write(ctx, &Publish{Req: req, Envelope: env}); err != nil {
		c.forget(req)
		return nil, err
	}
	return func(ctx context.Context) (Ack, error) {
		r, err := expect[*Ack](c.reply(ctx, req, ch))
		if err != nil {
			return Ack{}, err
		}
		return *r, nil
	}, nil
}

// History returns up to limit records of channel before the cursor before
// ("" = the newest), oldest first, and whether older ones remain.
func (c *Client) History(ctx context.Context, channel, before string, limit int) ([]mesh.Record, bool, error) {
	r, err := expect[*HistoryReply](c.call(ctx, func(req string) Frame {
		return &HistoryRequest{Req: req, Channel: channel, Before: before, Limit: limit}
	}))
	if err != nil {
		return nil, false, err
	}
	return r.Records, r.More, nil
}

// Who lists the peers present in channel ("" = every known peer).
func (c *Client) Who(ctx context.Context, channel string) ([]mesh.Peer, error) {
	r, err := expect[*WhoReply](c.call(ctx, func(req string) Frame { return &WhoRequest{Req: req, Channel: channel} }))
	if err != nil {
		return nil, err
	}
	peers := make([]mesh.Peer, len(r.Peers))
	for i, p := range r.Peers {
		peers[i] = p.Peer()
	}
	return peers, nil
}

// Subscribe starts the connection's subscription to channels (every joined
// channel if none). With since set, stored records after it come first
// (Replay true), then live ones. The channel is closed when the
// subscription ends or the connection closes; Err says why. One
// subscription per connection. Read the channel promptly: while its buffer
// is full the reader waits, and so do replies to other calls on this
// connection (and the server eventually ends the subscription with
// CodeResume).
func (c *Client) Subscribe(ctx context.Context, channels []string, since string) (<-chan Event, error) {
	return c.subscribe(ctx, channels, since, nil, nil)
}

// SubscribeFunc is Subscribe with a handler instead of a buffered channel:
// fn is called with each event, in order, on the connection's reader
// goroutine, so an event costs no hand-off to another goroutine. While fn
// runs nothing else is read from the connection: fn must return promptly
// and must not call this Client's methods that wait for a reply (they would
// wait for the reader fn is holding). The returned channel is closed when
// the subscription ends or the connection closes (no more calls of fn
// follow); Err says why.
func (c *Client) SubscribeFunc(ctx context.Context, channels []string, since string, fn func(Event)) (<-chan struct{}, error) {
	if fn == nil {
		return nil, errors.New("wsgateway: subscribe: nil handler")
	}
	done := make(chan struct{})
	if _, err := c.subscribe(ctx, channels, since, fn, done); err != nil {
		return nil, err
	}
	return done, nil
}

// subscribe starts a subscription that hands events to a buffered channel,
// or, with fn, to fn (done is then closed at the end instead).
func (c *Client) subscribe(ctx context.Context, channels []string, since string, fn func(Event), done chan struct{}) (<-chan Event, error) {
	req, ch, err := c.newReq(1)
	if err != nil {
		return nil, err
	}
	s := &clientSub{req: req, fn: fn, done: done, stop: make(chan struct{})}
	if fn == nil {
		s.ch = make(chan Event, clientEventQueue)
	}
	c.mu.Lock()
	if c.sub != nil {
		c.mu.Unlock()
		c.forget(req)
		return nil, &Error{Code: CodeAlreadySubscribed, Message: "unsubscribe first"}
	}
	c.sub, c.subErr = s, nil
	c.mu.Unlock()
	_, err = expect[*OK](c.await(ctx, req, ch, &Subscribe{Req: req, Channels: channels, Since: since}))
	if err != nil {
		c.mu.Lock()
		if c.sub == s {
			c.sub = nil
		}
		c.mu.Unlock()
		return nil, err
	}
	return s.ch, nil
}

// Unsubscribe ends the subscription; its event channel is closed and
// undelivered events are dropped.
func (c *Client) Unsubscribe(ctx context.Context) error {
	req, ch, err := c.newReq(1)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if s := c.sub; s != nil && s.unsubReq == "" {
		s.unsubReq = req
		close(s.stop)
	}
	c.mu.Unlock()
	_, err = expect[*OK](c.await(ctx, req, ch, &Unsubscribe{Req: req}))
	return err
}
