package wsgateway

import "sync/atomic"

// Stats are the server's counters since New, for metrics. Conns is a
// gauge; everything else only grows.
type Stats struct {
	Conns           int64  // connections open now (including ones authenticating)
	Accepted        uint64 // connections upgraded
	RefusedFull     uint64 // upgrades refused: MaxConns reached (HTTP 503)
	RefusedPerIP    uint64 // upgrades refused: MaxConnsPerIP reached (HTTP 429)
	RefusedOrigin   uint64 // upgrades refused by the origin check (HTTP 403)
	AuthOK          uint64 // successful auths
	AuthFailures    uint64 // auths refused (bad signature, secret, spent nonce)
	AuthTimeouts    uint64 // connections closed for not authenticating in time
	Displaced       uint64 // connections displaced by a newer one of the same identity
	FramesIn        uint64 // frames read from clients
	FramesOut       uint64 // frames written to clients
	Published       uint64 // envelopes published by clients and acknowledged
	BadFrames       uint64 // frames answered with bad_frame, unknown_type, unauthorized, ...
	RateLimited     uint64 // requests refused by the per-identity rate
	SlowSubscribers uint64 // subscriptions ended with resume (close 4008)
}

type metrics struct {
	accepted, refusedFull, refusedPerIP, refusedOrigin atomic.Uint64
	authOK, authFailures, authTimeouts, displaced      atomic.Uint64
	framesIn, framesOut, published, badFrames          atomic.Uint64
	rateLimited, slow                                  atomic.Uint64
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
		SlowSubscribers: m.slow.Load(),
	}
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
