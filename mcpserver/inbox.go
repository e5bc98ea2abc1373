package mcpserver

import (
	"slices"
	"sync"

	"github.com/confabhq/confab/mesh"
)

// inbox is a session's bounded buffer of unread messages, in arrival order.
type inbox struct {
	max int

	mu      sync.Mutex // guards the fields below
	unread  []mesh.Record
	dropped int           // unread messages dropped for space since the last read
	changed chan struct{} // closed and replaced on every push
}

func newInbox(max int) *inbox {
	return &inbox{max: max, changed: make(chan struct{})}
}

// push appends r, dropping the oldest unread message when full.
func (b *inbox) push(r mesh.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.unread) >= b.max {
		b.unread = slices.Delete(b.unread, 0, 1)
		b.dropped++
	}
	b.unread = append(b.unread, r)
	close(b.changed)
	b.changed = make(chan struct{})
}

// take removes and returns up to max unread messages that match, oldest
// first; the others stay for later reads. It also returns how many remain,
// the dropped count (reset), and a channel closed on the next push.
func (b *inbox) take(match func(*mesh.Envelope) bool, max int) (got []mesh.Record, remaining, dropped int, changed <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := b.unread[:0]
	for _, r := range b.unread {
		if len(got) < max && match(r.Env) {
			got = append(got, r)
			continue
		}
		keep = append(keep, r)
	}
	clear(b.unread[len(keep):])
	b.unread = keep
	dropped, b.dropped = b.dropped, 0
	return got, len(b.unread), dropped, b.changed
}
