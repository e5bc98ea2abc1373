package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// inQueue bounds the items waiting for a channel's loop. Live gossip beyond
// it is dropped (catch-up recovers it); local sends wait for room.
const inQueue = 4096

// maxBatchBytes bounds the content of one batch so that it fits one store
// transaction (badger's limit is a fraction of its memtable).
const maxBatchBytes = 4 << 20

// syncBatch is the batch size once catch-up envelopes are queued: nobody
// waits on them one by one, so fewer, larger appends (one sync each) win.
const syncBatch = 4096

// item is one unit of work for a channel's loop: a local send (local), a
// pre-signed envelope to store and publish (env+publish), or a verified
// envelope from gossip or catch-up (env).
type item struct {
	local   *Envelope
	env     *Envelope
	publish bool
	sync    bool // from catch-up: verified by the sync pipeline
	waiter
}

// waiter is who waits for an item's durable result: a caller blocked in
// submit (reply), a SendAsync callback (done), or nobody (gossip, catch-up).
type waiter struct {
	reply chan result
	done  func(Record, error)
}

func (w waiter) waits() bool { return w.reply != nil || w.done != nil }

// answer hands the result to whoever waits. Called only by the loop (and by
// failPending after it), at most once per item.
func (w waiter) answer(rec Record, err error) {
	switch {
	case w.reply != nil:
		w.reply <- result{rec: rec, err: err}
	case w.done != nil:
		w.done(rec, err)
	}
}

func (it *item) size() int {
	if it.local != nil {
		return len(it.local.Content) + 512
	}
	return len(it.env.Content) + 512
}

type result struct {
	rec Record
	err error
}

// channel is one joined channel. Its author state is owned by run; nothing
// else touches next, held, heldSince or gapAsked.
type channel struct {
	m      *Mesh
	name   string
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	events *pubsub.TopicEventHandler
	in     chan *item
	syncQ  chan peer.ID
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	signer *signer // the node's key, for its own sends

	stopMu  sync.RWMutex // guards stopped; held (read) while enqueueing
	stopped bool

	// Only used by run.
	next      map[string]uint64               // author -> next expected seq
	held      map[string]map[uint64]*Envelope // author -> seq -> envelope waiting for a gap
	heldN     int
	heldSince map[string]time.Time // author -> when its current gap opened
	gapAsked  map[string]bool      // author -> catch-up requested for its current gap
}

func (m *Mesh) openChannel(ctx context.Context, name string) (*channel, error) {
	sg, err := newSigner(m.node.Key())
	if err != nil {
		return nil, fmt.Errorf("mesh: join %s: %w", name, err)
	}
	hw, err := m.hist.HighWater(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("mesh: join %s: %w", name, err)
	}
	ps := m.node.PubSub()
	tn := m.topicName(name)
	if tn == "" {
		return nil, fmt.Errorf("mesh: join %s: %w", name, ErrNoKey)
	}
	if err := ps.RegisterTopicValidator(tn, m.validator(name)); err != nil {
		return nil, fmt.Errorf("mesh: join %s: %w", name, err)
	}
	t, err := ps.Join(tn)
	if err != nil {
		_ = ps.UnregisterTopicValidator(tn)
		return nil, fmt.Errorf("mesh: join %s: %w", name, err)
	}
	sub, err := t.Subscribe(pubsub.WithBufferSize(1024))
	if err != nil {
		_ = t.Close()
		_ = ps.UnregisterTopicValidator(tn)
		return nil, fmt.Errorf("mesh: join %s: %w", name, err)
	}
	ev, err := t.EventHandler()
	if err != nil {
		sub.Cancel()
		_ = t.Close()
		_ = ps.UnregisterTopicValidator(tn)
		return nil, fmt.Errorf("mesh: join %s: %w", name, err)
	}
	cctx, cancel := context.WithCancel(m.ctx)
	c := &channel{
		m: m, name: name, topic: t, sub: sub, events: ev, signer: sg,
		in:        make(chan *item, inQueue),
		syncQ:     make(chan peer.ID, 64),
		ctx:       cctx,
		cancel:    cancel,
		next:      map[string]uint64{},
		held:      map[string]map[uint64]*Envelope{},
		heldSince: map[string]time.Time{},
		gapAsked:  map[string]bool{},
	}
	for a, s := range hw {
		c.next[a] = s + 1
	}
	return c, nil
}

func (c *channel) start() {
	c.wg.Add(4)
	go c.readGossip()
	go c.watchPeers()
	go c.syncLoop()
	go c.run()
	for _, p := range c.topic.ListPeers() {
		c.requestSync(p)
	}
}

// stop ends the channel's goroutines and its topic. Idempotent.
func (c *channel) stop() {
	c.once.Do(func() {
		c.cancel() // first: an enqueue waiting for room gives up
		c.stopMu.Lock()
		c.stopped = true
		c.stopMu.Unlock()
		c.sub.Cancel()
		c.events.Cancel()
		c.wg.Wait()
		c.failPending(ErrClosed) // what was queued after the loop's last look
		_ = c.topic.Close()
		_ = c.m.node.PubSub().UnregisterTopicValidator(c.topic.String())
	})
}

// enqueue hands it to the loop, waiting for room. Once it returns nil, it
// is answered exactly once: by the loop, or with ErrClosed by stop.
func (c *channel) enqueue(ctx context.Context, it *item) error {
	c.stopMu.RLock()
	defer c.stopMu.RUnlock()
	if c.stopped {
		return ErrClosed
	}
	select {
	case c.in <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// submit hands it to the loop and waits for the durable result.
func (c *channel) submit(ctx context.Context, it *item) (Record, error) {
	it.reply = make(chan result, 1)
	if err := c.enqueue(ctx, it); err != nil {
		return Record{}, err
	}
	select {
	case r := <-it.reply:
		return r.rec, r.err
	case <-ctx.Done():
		return Record{}, ctx.Err()
	case <-c.ctx.Done():
		return Record{}, ErrClosed
	}
}

// offer queues a remote envelope without waiting; it reports false when the
// loop is saturated (the envelope is dropped; catch-up will bring it back).
func (c *channel) offer(e *Envelope) bool {
	select {
	case c.in <- &item{env: e}:
		return true
	default:
		return false
	}
}

func (c *channel) readGossip() {
	defer c.wg.Done()
	self := c.m.node.Host().ID()
	for {
		msg, err := c.sub.Next(c.ctx)
		if err != nil {
			return
		}
		if msg.ReceivedFrom == self {
			continue // our own publish; already stored and delivered
		}
		e, ok := msg.ValidatorData.(*Envelope)
		if !ok {
			continue
		}
		if !c.offer(e) {
			c.m.stats.add(&c.m.stats.HeldBack, 1)
			c.requestSync(msg.ReceivedFrom)
		}
	}
}

func (c *channel) watchPeers() {
	defer c.wg.Done()
	for {
		ev, err := c.events.NextPeerEvent(c.ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin {
			c.requestSync(ev.Peer)
		}
	}
}

func (c *channel) requestSync(p peer.ID) {
	select {
	case c.syncQ <- p:
	default:
	}
}

// syncLoop runs catch-up with peers one at a time: on request (a peer joined,
// a gap was seen) and every syncEvery with a random peer of the topic.
func (c *channel) syncLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.m.cfg.syncEvery)
	defer t.Stop()
	last := map[peer.ID]time.Time{}
	for {
		var p peer.ID
		select {
		case <-c.ctx.Done():
			return
		case p = <-c.syncQ:
			if time.Since(last[p]) < time.Second {
				continue
			}
		case <-t.C:
			peers := c.topic.ListPeers()
			if len(peers) == 0 {
				continue
			}
			p = peers[rand.IntN(len(peers))]
		}
		last[p] = time.Now()
		if err := c.m.catchUp(c, p); err != nil && c.ctx.Err() == nil {
			c.m.log.Debug("catch-up failed", "channel", c.name, "peer", p, "err", err)
		}
	}
}

func (c *channel) run() {
	defer c.wg.Done()
	// The gap tick runs only while a gap is open, so an idle channel's loop
	// sleeps until work arrives instead of waking twice a second (2,000
	// wake-ups a second for 1,000 agents in one process). A gap opens only
	// in process (hold), so re-arming after each batch is enough; a gap is
	// checked at most one period after it opened, as with a free-running
	// tick.
	period := min(c.m.cfg.gapTimeout/4, c.gapGrace()/2)
	tick := time.NewTicker(period)
	tick.Stop()
	defer tick.Stop()
	ticking := false
	arm := func() {
		switch open := len(c.heldSince) > 0; {
		case open && !ticking:
			tick.Reset(period)
			ticking = true
		case !open && ticking:
			tick.Stop()
			ticking = false
		}
	}
	batch := make([]*item, 0, max(c.m.cfg.maxBatch, syncBatch))
	var it *item
	for {
		select {
		case <-c.ctx.Done():
			c.failPending(ErrClosed)
			return
		case <-tick.C:
			c.checkGaps()
			arm()
			continue
		case it = <-c.in:
			batch = append(batch[:0], it)
		}
		size := it.size()
		limit := c.m.cfg.maxBatch
		if it.sync {
			limit = max(limit, syncBatch)
		}
	fill:
		for len(batch) < limit && size < maxBatchBytes {
			select {
			case it := <-c.in:
				batch = append(batch, it)
				size += it.size()
				if it.sync {
					limit = max(limit, syncBatch)
				}
			default:
				break fill
			}
		}
		c.process(batch)
		arm()
	}
}

func (c *channel) failPending(err error) {
	for {
		select {
		case it := <-c.in:
			it.answer(Record{}, err)
		default:
			return
		}
	}
}

// pending is an envelope accepted into a batch, with who waits for it.
type pending struct {
	env *Envelope
	waiter
	publish bool
}

// process orders a batch per author, stores what is in order with one
// durable append, then answers, publishes and delivers.
func (c *channel) process(batch []*item) {
	m := c.m
	var acc []pending
	for _, it := range batch {
		switch {
		case it.local != nil:
			e := it.local
			e.Seq = c.nextSeq(m.self)
			e.TS = time.Now().UnixMilli()
			if err := c.signer.sign(e); err != nil {
				it.answer(Record{}, err)
				continue
			}
			c.next[m.self] = e.Seq + 1
			acc = append(acc, pending{env: e, waiter: it.waiter, publish: true})
		default:
			e := it.env
			if e.Channel != c.name {
				it.answer(Record{}, fmt.Errorf("mesh: envelope for %s on %s: %w", e.Channel, c.name, ErrBadChannel))
				continue
			}
			n := c.nextSeq(e.From)
			switch {
			case e.Seq < n:
				m.stats.add(&m.stats.Duplicates, 1)
				if it.waits() {
					// A client re-sending what is stored gets its ack again;
					// a different envelope with a used seq is equivocation.
					if _, err := m.hist.Get(c.ctx, e.ID); err != nil {
						it.answer(Record{}, fmt.Errorf("mesh: publish seq %d of %s: %w: already used by another envelope, expected %d", e.Seq, e.From, ErrSeqGap, n))
					} else {
						it.answer(Record{Env: e}, nil)
					}
				} else {
					// Possibly a late arrival after a skipped gap: let the
					// idempotent store decide.
					acc = append(acc, pending{env: e})
				}
			case e.Seq == n:
				c.next[e.From] = n + 1
				acc = append(acc, pending{env: e, waiter: it.waiter, publish: it.publish})
				acc = c.release(e.From, acc)
			default:
				if it.waits() {
					it.answer(Record{}, fmt.Errorf("mesh: publish seq %d of %s: %w: expected %d", e.Seq, e.From, ErrSeqGap, n))
					continue
				}
				c.hold(e)
			}
		}
	}
	if len(acc) == 0 {
		return
	}
	envs := make([]*Envelope, len(acc))
	for i, p := range acc {
		envs[i] = p.env
	}
	curs, err := m.hist.Append(c.ctx, envs)
	if err != nil && c.ctx.Err() != nil {
		// Stopping: the append was abandoned (it may still land).
		for _, p := range acc {
			p.answer(Record{}, ErrClosed)
		}
		return
	}
	if err != nil {
		m.stats.add(&m.stats.StoreErrors, 1)
		m.log.Warn("store append failed", "channel", c.name, "n", len(envs), "err", err)
		for _, p := range acc {
			p.answer(Record{}, fmt.Errorf("mesh: store: %w", err))
		}
		c.reload()
		return
	}
	for i, p := range acc {
		rec := Record{Env: p.env, Cursor: curs[i]}
		if p.publish && curs[i] != "" {
			if err := c.topic.Publish(c.ctx, p.env.Marshal(), pubsub.WithValidatorData(p.env)); err != nil && c.ctx.Err() == nil {
				m.log.Warn("publish failed; peers will catch up", "channel", c.name, "err", err)
			} else {
				m.stats.add(&m.stats.Published, 1)
			}
		}
		p.answer(rec, nil)
		if curs[i] != "" {
			m.stats.add(&m.stats.Delivered, 1)
			m.deliver(rec)
		}
	}
}

func (c *channel) nextSeq(author string) uint64 {
	if n, ok := c.next[author]; ok {
		return n
	}
	return 1
}

// hold keeps an envelope that arrived ahead of a gap, bounded in total.
func (c *channel) hold(e *Envelope) {
	h := c.held[e.From]
	if h == nil {
		h = map[uint64]*Envelope{}
		c.held[e.From] = h
		c.heldSince[e.From] = time.Now()
	}
	if _, ok := h[e.Seq]; ok {
		return
	}
	if c.heldN >= c.m.cfg.holdback {
		return // catch-up brings it back once the gap is filled
	}
	h[e.Seq] = e
	c.heldN++
	c.m.stats.add(&c.m.stats.HeldBack, 1)
}

// gapGrace is how long a gap may stay open, with no in-order arrival from
// its author, before catch-up is asked to fill it. Over multi-hop gossip an
// envelope often overtakes its predecessor, and a loaded node's queues can
// hold the predecessor for a while; a catch-up round fetches everything past
// the high-water mark (so also what gossip is still delivering) and verifies
// it again. Asking on every hold made catch-up fetch about as many envelopes
// as gossip delivered at 10 agents near saturation.
func (c *channel) gapGrace() time.Duration {
	return min(gapSyncAfter, c.m.cfg.gapTimeout/2)
}

// gapSyncAfter is gapGrace unless the gap timeout is shorter: one gossipsub
// heartbeat, after which gossip's own repair (IHAVE/IWANT) has had a turn.
const gapSyncAfter = time.Second

// release appends the held envelopes of author that are now in order.
func (c *channel) release(author string, acc []pending) []pending {
	h, ok := c.held[author]
	if !ok {
		return acc
	}
	for len(h) > 0 {
		n := c.next[author]
		e, ok := h[n]
		if !ok {
			break
		}
		delete(h, n)
		c.heldN--
		c.next[author] = n + 1
		acc = append(acc, pending{env: e})
	}
	delete(c.gapAsked, author)
	if len(h) == 0 {
		delete(c.held, author)
		delete(c.heldSince, author)
	} else {
		// The gap in front moved (this call follows an in-order arrival):
		// what is missing now has a fresh grace period.
		c.heldSince[author] = time.Now()
	}
	return acc
}

// checkGaps asks for catch-up once a gap has stayed open for gapGrace, and
// gives up waiting for a missing seq after gapTimeout: the held envelopes are
// stored and delivered, and the gap stays visible to catch-up because the
// store's high-water mark counts only a gap-free prefix.
func (c *channel) checkGaps() {
	var batch []*item
	var peers []peer.ID
	for a, since := range c.heldSince {
		open := time.Since(since)
		if open >= c.gapGrace() && !c.gapAsked[a] {
			c.gapAsked[a] = true
			if pid, err := peerID(a); err == nil {
				c.requestSync(pid)
			}
			if peers == nil {
				peers = c.topic.ListPeers()
			}
			if len(peers) > 0 {
				c.requestSync(peers[rand.IntN(len(peers))])
			}
		}
		if open < c.m.cfg.gapTimeout {
			continue
		}
		h := c.held[a]
		lowest := uint64(0)
		for s := range h {
			if lowest == 0 || s < lowest {
				lowest = s
			}
		}
		if lowest == 0 {
			continue
		}
		c.m.stats.add(&c.m.stats.GapsSkipped, 1)
		c.m.log.Info("gap skipped", "channel", c.name, "author", a, "from", c.next[a], "to", lowest-1)
		c.next[a] = lowest
		c.heldSince[a] = time.Now()
		delete(c.gapAsked, a)
		batch = append(batch, &item{env: h[lowest]})
		delete(h, lowest)
		c.heldN--
	}
	if len(batch) > 0 {
		c.process(batch)
	}
}

// reload resets author state from the store after a failed append.
func (c *channel) reload() {
	hw, err := c.m.hist.HighWater(c.ctx, c.name)
	if err != nil {
		return
	}
	c.next = map[string]uint64{}
	for a, s := range hw {
		c.next[a] = s + 1
	}
}
