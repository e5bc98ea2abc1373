package mesh

import (
	"slices"
	"sync"
)

// DefaultQueue is the subscriber queue length used when Subscribe is given 0.
const DefaultQueue = 4096

// Subscription receives the records a node stores for some channels, live.
// Its queue is bounded; when it is full the subscription ends with
// ErrSlowConsumer rather than slowing the node, and the consumer resumes from
// the cursor of the last record it handled (Mesh.After).
type Subscription struct {
	m        *Mesh
	channels []string // empty: every channel
	ch       chan Record
	once     sync.Once
	mu       sync.Mutex // guards err
	err      error
}

// Subscribe returns a live subscription to channels (every channel if none).
// queue <= 0 means DefaultQueue. The caller must Close it.
func (m *Mesh) Subscribe(channels []string, queue int) *Subscription {
	if queue <= 0 {
		queue = DefaultQueue
	}
	s := &Subscription{m: m, channels: slices.Clone(channels), ch: make(chan Record, queue)}
	for i, c := range s.channels {
		s.channels[i] = m.resolveChannel(c) // a private channel's local name
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		s.end(ErrClosed)
		return s
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

// C delivers records in the order the node stored them. It is closed when the
// subscription ends; Err then says why.
func (s *Subscription) C() <-chan Record { return s.ch }

// Err is nil while the subscription runs, then ErrSlowConsumer, ErrClosed or
// nil after Close.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription. Idempotent.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
	s.end(nil)
}

func (s *Subscription) wants(channel string) bool {
	return len(s.channels) == 0 || slices.Contains(s.channels, channel)
}

// end closes the queue once. Callers must have removed s from m.subs (under
// m.mu) first, so deliver never sends on a closed queue.
func (s *Subscription) end(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.ch)
	})
}
