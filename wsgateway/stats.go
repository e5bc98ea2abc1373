package wsgateway

import (
	"errors"
	"net"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// Stats are the server's counters since New, for metrics. Conns is a
// gauge; everything else only grows.
type Stats struct {
	Conns          int64  // connections open now (including ones authenticating)
	Accepted       uint64 // connections upgraded
	RefusedFull    uint64 // upgrades refused: MaxConns reached (HTTP 503)
	RefusedPerIP   uint64 // upgrades refused: MaxConnsPerIP reached (HTTP 429)
	RefusedOrigin  uint64 // upgrades refused by the origin check (HTTP 403)
	RefusedUpgrade uint64 // requests that were not a valid WebSocket upgrade (HTTP 400, 405, ...), origin refusals excluded
	// HandshakeTimeouts counts connections whose HTTP upgrade request had
	// not fully arrived within HandshakeTimeout (a client that connects and
	// dribbles or says nothing). Only listeners served by Serve and
	// ServeUnix count them; a Handler mounted elsewhere cannot see them.
	HandshakeTimeouts uint64
	AuthOK            uint64 // successful auths
	AuthFailures      uint64 // auths refused (bad signature, secret, spent nonce)
	AuthTimeouts      uint64 // connections closed for not authenticating in time
	Displaced         uint64 // connections displaced by a newer one of the same identity
	FramesIn          uint64 // frames read from clients
	FramesOut         uint64 // frames written to clients
	Published         uint64 // envelopes published by clients and acknowledged
	BadFrames         uint64 // frames answered with bad_frame, unknown_type, unauthorized, ...
	RateLimited       uint64 // requests refused by the per-identity rate
	SlowSubscribers   uint64 // subscriptions ended with resume (close 4008)
	WriteTimeouts     uint64 // connections dropped because a write missed WriteTimeout (a client reading too slowly, or never)
	ReadTimeouts      uint64 // connections dropped after PongTimeout without a frame or a pong (dead, or never reading our pings)
	TooLarge          uint64 // frames over MaxFrame (answered too_large when possible, then close 1009)
}

type metrics struct {
	accepted, refusedFull, refusedPerIP, refusedOrigin atomic.Uint64
	authOK, authFailures, authTimeouts, displaced      atomic.Uint64
	framesIn, framesOut, published, badFrames          atomic.Uint64
	rateLimited, slow                                  atomic.Uint64
	refusedUpgrade, handshakeTimeouts                  atomic.Uint64
	writeTimeouts, readTimeouts, tooLarge              atomic.Uint64
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	conns := int64(s.active)
	s.mu.Unlock()
	m := &s.metrics
	return Stats{
		Conns: conns, Accepted: m.accepted.Load(), RefusedFull: m.refusedFull.Load(),
		RefusedPerIP: m.refusedPerIP.Load(), RefusedOrigin: m.refusedOrigin.Load(),
		AuthOK: m.authOK.Load(), AuthFailures: m.authFailures.Load(), AuthTimeouts: m.authTimeouts.Load(),
		Displaced: m.displaced.Load(), FramesIn: m.framesIn.Load(), FramesOut: m.framesOut.Load(),
		Published: m.published.Load(), BadFrames: m.badFrames.Load(), RateLimited: m.rateLimited.Load(),
		SlowSubscribers: m.slow.Load(), RefusedUpgrade: m.refusedUpgrade.Load(),
		HandshakeTimeouts: m.handshakeTimeouts.Load(), WriteTimeouts: m.writeTimeouts.Load(),
		ReadTimeouts: m.readTimeouts.Load(), TooLarge: m.tooLarge.Load(),
	}
}

// countWriteErr counts a write that ended a connection because it missed
// its deadline.
func (s *Server) countWriteErr(err error) {
	if isTimeout(err) {
		s.metrics.writeTimeouts.Add(1)
	}
}

// countReadErr counts a read that ended a connection: a missed read
// deadline (PongTimeout) or a frame over the WebSocket read limit.
func (s *Server) countReadErr(err error) {
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		s.metrics.tooLarge.Add(1)
	case isTimeout(err):
		s.metrics.readTimeouts.Add(1)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unregister drops c from the identity table if it is still the current
// connection of its identity.
func (s *Server) unregister(c *conn) {
	if c.peer == "" {
		return
	}
	s.mu.Lock()
	if s.peers[c.peer] == c {
		delete(s.peers, c.peer)
	}
	s.mu.Unlock()
}
