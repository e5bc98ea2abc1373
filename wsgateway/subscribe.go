package wsgateway

import (
	"context"
	"errors"
	"slices"

	"github.com/confabhq/confab/mesh"
)

// subscribe starts the connection's subscription. It joins the live group
// of its channels (subscribing to the backend) before reading any history,
// fetches the first replay page of each channel (so a bad cursor fails the
// request itself), replies ok, and hands the rest to a pump goroutine.
func (c *conn) subscribe(ctx context.Context, f *Subscribe) error {
	if c.sub != nil && c.sub.running() {
		return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeAlreadySubscribed, Message: "unsubscribe first"})
	}
	b := c.s.cfg.Backend
	if c.s.cfg.Mode == ModeRemote && len(f.Channels) == 0 {
		// A remote client's "every channel" is every channel it joined
		// here, not everything the node archives.
		if len(c.joined) == 0 {
			return c.send(ctx, &ErrorFrame{Req: f.Req, Code: CodeNotJoined, Message: "join a channel (or name channels) before subscribing"})
		}
		f.Channels = slices.Clone(c.joined)
	}
	mb := c.s.events.join(c, f.Channels) // writer.go
	var m *merger
	if f.Since != "" {
		channels := f.Channels
		if len(channels) == 0 {
			channels = b.Info().Channels
			if in := inboxChannel(b); in != "" && c.s.cfg.Mode == ModeLocal {
				channels = append(channels, in) // direct messages and calls received (frames_direct.go)
			}
		}
		var err error
		m, err = newMerger(ctx, b, dedupe(channels), f.Since, c.s.cfg.ReplayPage)
		if err != nil {
			c.s.events.leave(mb)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return c.send(ctx, c.errorFrame(f.Req, err))
		}
	}
	if err := c.send(ctx, &OK{Req: f.Req}); err != nil {
		c.s.events.leave(mb)
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &pumpRef{req: f.Req, cancel: cancel, done: make(chan struct{})}
	c.sub = p
	c.g.Go(func() error {
		defer close(p.done)
		defer cancel()
		defer c.s.events.leave(mb)
		c.pump(pctx, f.Req, mb, m)
		return nil
	})
	return nil
}

// pump replays history through m (if any), sends the live marker, sends
// what the live group held for it meanwhile, and then lets the group queue
// live events itself until the subscription ends. A live record already
// replayed is dropped: the group's backend subscription was open before the
// history reads, so records stored meanwhile arrive both ways.
func (c *conn) pump(ctx context.Context, req string, mb *liveMember, m *merger) {
	if m != nil {
		mb.since = m.since
		mb.seen = newCursorSet(c.s.cfg.SubscriptionQueue + c.s.cfg.ReplayPage)
		for {
			rec, ok, err := m.next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					c.send(ctx, c.errorFrame(req, err))
				}
				return
			}
			if !ok {
				break
			}
			if c.send(ctx, c.event(rec, true)) != nil { // frames_private.go: decrypted view
				return
			}
			mb.mu.Lock()
			mb.last = rec.Cursor
			mb.mu.Unlock()
			mb.seen.add(rec.Cursor)
		}
	}
	if c.send(ctx, &Live{Req: req}) != nil {
		return
	}
	mb.mu.Lock()
	if mb.last == "" && m != nil {
		mb.last = m.since
	}
	mb.mu.Unlock()
	// Send what arrived during the replay, then go live. The group adds to
	// held until live is set, so this loop ends with the queue in order.
	for {
		mb.mu.Lock()
		held := mb.held
		mb.held = nil
		if len(held) == 0 && mb.err == nil {
			mb.live = true
		}
		mb.mu.Unlock()
		if len(held) == 0 {
			break
		}
		for _, it := range held {
			if mb.skip(it.rec) {
				continue
			}
			f, ok := c.liveFrame(it)
			if !ok || c.enqueue(ctx, f) != nil {
				return
			}
			mb.mu.Lock()
			if it.rec.Cursor > mb.last {
				mb.last = it.rec.Cursor
			}
			mb.mu.Unlock()
		}
	}
	select {
	case <-ctx.Done():
		return
	case <-mb.ended:
	}
	mb.mu.Lock()
	err, last := mb.err, mb.last
	mb.mu.Unlock()
	if errors.Is(err, mesh.ErrSlowConsumer) {
		c.log.Info("gateway subscriber too slow; asking it to resume", "cursor", last)
		c.s.metrics.slow.Add(1)
		c.final(ctx, &ErrorFrame{Req: req, Code: CodeResume, Cursor: last,
			Message: "subscriber too slow: resubscribe with since=cursor"}, CloseResume, closeTextResume)
		return
	}
	c.send(ctx, c.errorFrame(req, err))
}

// merger pages the history of several channels after a cursor and yields
// their records in one cursor order, up to the high-water mark taken when
// it was made (after the backend subscription was opened): records stored
// later reach the client through the subscription, so the whole stream is
// in cursor order. Cursors are fixed-width and global to the node, so they
// compare as strings across channels.
type merger struct {
	b     Backend
	page  int
	since string
	high  string // newest cursor of any channel when the merger was made
	chans []*chanPage
}

type chanPage struct {
	name string
	buf  []mesh.Record
	done bool // no more stored after buf up to high
}

func newMerger(ctx context.Context, b Backend, channels []string, since string, page int) (*merger, error) {
	m := &merger{b: b, page: page, since: since}
	for _, ch := range channels {
		newest, err := b.Before(ctx, ch, "", 1)
		if err != nil {
			return nil, err
		}
		if len(newest) > 0 && newest[0].Cursor > m.high {
			m.high = newest[0].Cursor
		}
	}
	for _, ch := range channels {
		cp := &chanPage{name: ch}
		if err := m.fill(ctx, cp, since); err != nil {
			return nil, err
		}
		m.chans = append(m.chans, cp)
	}
	return m, nil
}

func (m *merger) fill(ctx context.Context, cp *chanPage, after string) error {
	recs, err := m.b.After(ctx, cp.name, after, m.page)
	if err != nil {
		return err
	}
	cp.done = len(recs) < m.page
	cp.buf = slices.DeleteFunc(recs, func(r mesh.Record) bool {
		if r.Cursor > m.high {
			cp.done = true
		}
		return r.Env == nil || r.Cursor <= after || r.Cursor > m.high
	})
	return nil
}

// next returns the record with the smallest cursor across channels; ok is
// false once every channel is exhausted.
func (m *merger) next(ctx context.Context) (mesh.Record, bool, error) {
	var best *chanPage
	for _, cp := range m.chans {
		if len(cp.buf) > 0 && (best == nil || cp.buf[0].Cursor < best.buf[0].Cursor) {
			best = cp
		}
	}
	if best == nil {
		return mesh.Record{}, false, nil
	}
	rec := best.buf[0]
	best.buf = best.buf[1:]
	if len(best.buf) == 0 && !best.done {
		if err := m.fill(ctx, best, rec.Cursor); err != nil {
			return mesh.Record{}, false, err
		}
	}
	return rec, true, nil
}

func dedupe(chs []string) []string {
	out := slices.Clone(chs)
	slices.Sort(out)
	return slices.Compact(out)
}

// cursorSet remembers the last n cursors added.
type cursorSet struct {
	n    int
	m    map[string]struct{}
	ring []string
}

func newCursorSet(n int) *cursorSet {
	return &cursorSet{n: n, m: make(map[string]struct{})}
}

func (s *cursorSet) add(c string) {
	if len(s.ring) == s.n {
		delete(s.m, s.ring[0])
		s.ring = s.ring[1:]
	}
	s.ring = append(s.ring, c)
	s.m[c] = struct{}{}
}

func (s *cursorSet) has(c string) bool {
	_, ok := s.m[c]
	return ok
}
