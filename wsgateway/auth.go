package wsgateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/time/rate"

	"github.com/confabhq/confab/mesh"
)

// kick is a last frame and close code that another goroutine (the auth
// timer, a displacing connection) asks the writer to send ahead of anything
// queued, after which the connection ends.
type kick struct {
	data []byte
	code int
	text string
}

// kickOut asks c's writer to send f and close with code. It never blocks;
// only the first kick counts.
func (c *conn) kickOut(f Frame, code int, text string) {
	data, _ := EncodeFrame(f)
	select {
	case c.kick <- kick{data: data, code: code, text: text}:
		c.wake()
	default:
	}
}

// remoteGate runs before every request of a remote-mode connection. It
// returns a non-nil error frame when the request must not run: anything but
// auth before authentication (counted as a bad frame), or a request over
// the identity's rate.
func (c *conn) remoteGate(f Frame) (ef *ErrorFrame, bad bool) {
	if c.s.cfg.Mode != ModeRemote {
		return nil, false
	}
	switch f.(type) {
	case *Auth, *Ping:
		return nil, false
	}
	if c.peer == "" {
		return &ErrorFrame{Req: reqOf(f), Code: CodeUnauthorized, Message: "authenticate first: send an auth frame"}, true
	}
	if !c.limiter.Allow() {
		return &ErrorFrame{Req: reqOf(f), Code: CodeRateLimited,
			Message: fmt.Sprintf("over %g requests/s for this identity", c.s.cfg.Remote.Rate)}, false
	}
	return nil, false
}

// authenticate serves an auth frame in remote mode. A failure ends the
// connection (unauthorized, close 4001): the nonce is spent on the first
// attempt, so there is nothing left to sign.
func (c *conn) authenticate(ctx context.Context, f *Auth) error {
	if c.peer != "" {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnauthorized, Message: "already authenticated"})
	}
	nonce := c.nonce
	c.nonce = nil
	fail := func(msg string) error {
		c.s.metrics.authFailures.Add(1)
		c.log.Info("gateway auth refused", "peer", trunc(f.Peer), "why", msg)
		c.final(ctx, &ErrorFrame{Req: f.Req, Code: CodeUnauthorized, Message: msg}, CloseUnauthorized, "unauthorized")
		return errFinal
	}
	if nonce == nil {
		return fail("nonce already used")
	}
	if secret := c.s.cfg.Remote.JoinSecret; len(secret) > 0 {
		if subtle.ConstantTimeCompare([]byte(f.Secret), secret) != 1 {
			return fail("bad join secret")
		}
	}
	pub, err := mesh.AuthorKey(f.Peer)
	if err != nil {
		return fail("peer is not an ed25519 peer id")
	}
	if ok, err := pub.Verify(AuthBytes(nonce, c.gateway, f.Peer), f.Sig); err != nil || !ok {
		return fail("bad signature over the nonce")
	}
	c.authed.Store(true)
	c.peer = f.Peer
	c.log = c.log.With("peer", f.Peer)
	old := c.s.register(c)
	if old != nil {
		c.limiter = old.limiter
		c.s.metrics.displaced.Add(1)
		old.kickOut(&ErrorFrame{Code: CodeDisplaced, Message: "another connection authenticated as this identity; do not reconnect automatically"},
			CloseDisplaced, "displaced")
	} else {
		c.limiter = rate.NewLimiter(rate.Limit(c.s.cfg.Remote.Rate), c.s.cfg.Remote.Burst)
	}
	c.s.metrics.authOK.Add(1)
	c.log.Debug("gateway client authenticated", "displaced", old != nil)
	return c.send(ctx, &OK{Req: f.Req})
}

// register makes c the connection of its identity and returns the one it
// displaces, if any.
func (s *Server) register(c *conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.peers[c.peer]
	s.peers[c.peer] = c
	return old
}

// checkPublish refuses, in remote mode, an envelope that is not the
// authenticated client's own.
func (c *conn) checkPublish(env *mesh.Envelope) error {
	if c.s.cfg.Mode == ModeRemote && env.From != c.peer {
		return &Error{Code: CodeUnauthorized, Message: "envelope from " + trunc(env.From) + " is not this client's (" + c.peer + ")"}
	}
	return nil
}

// remoteJoin records a join of a remote connection, bounded by MaxJoins.
func (c *conn) remoteJoin(ctx context.Context, channel string) error {
	if slices.Contains(c.joined, channel) {
		return nil
	}
	return c.joinBounded(channel, func() error { return c.s.cfg.Backend.Join(ctx, channel) })
}

// joinBounded runs join for channel and records the channel as joined by
// this connection; a channel not yet joined counts against MaxJoins.
func (c *conn) joinBounded(channel string, join func() error) error {
	known := slices.Contains(c.joined, channel)
	if !known && len(c.joined) >= c.s.cfg.Remote.MaxJoins {
		return &Error{Code: CodePolicy, Message: fmt.Sprintf("joined %d channels on this connection, limit %d", len(c.joined), c.s.cfg.Remote.MaxJoins)}
	}
	if err := join(); err != nil {
		return err
	}
	if !known {
		c.joined = append(c.joined, channel)
	}
	return nil
}

// remoteLeave forgets a channel for this connection only: the node keeps
// following it for everyone else.
func (c *conn) remoteLeave(channel string) error {
	i := slices.Index(c.joined, channel)
	if i < 0 {
		return fmt.Errorf("leave %s: %w", channel, mesh.ErrNotJoined)
	}
	c.joined = slices.Delete(c.joined, i, i+1)
	return nil
}

// seqGap adds the expected seq to a seq_gap error when the backend knows it.
func (c *conn) seqGap(ctx context.Context, req string, env *mesh.Envelope) *ErrorFrame {
	ef := &ErrorFrame{Req: req, Code: CodeSeqGap, Message: fmt.Sprintf("seq %d is not the next of %s on %s", env.Seq, trunc(env.From), env.Channel)}
	if sb, ok := c.s.cfg.Backend.(SeqBackend); ok {
		if n, err := sb.NextSeq(ctx, env.Channel, env.From); err == nil {
			ef.Next = n
			ef.Message = fmt.Sprintf("seq %d is not the next of this author on %s: use %d", env.Seq, env.Channel, n)
		}
	}
	return ef
}

// nextSeq answers a seq request.
func (c *conn) nextSeq(ctx context.Context, f *SeqRequest) (Frame, error) {
	sb, ok := c.s.cfg.Backend.(SeqBackend)
	if !ok {
		return nil, &Error{Code: CodeUnsupported, Message: "this node does not track sequence numbers for clients"}
	}
	p := f.Peer
	if p == "" {
		p = c.peer
	}
	if p == "" {
		return nil, &Error{Code: CodeBadFrame, Message: "seq: peer required"}
	}
	n, err := sb.NextSeq(ctx, f.Channel, p)
	if err != nil {
		return nil, err
	}
	return &SeqReply{Req: f.Req, Channel: f.Channel, Peer: p, Next: n}, nil
}

var errSeqGap = mesh.ErrSeqGap

func isSeqGap(err error) bool { return errors.Is(err, errSeqGap) }
