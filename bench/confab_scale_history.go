package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/confabhq/confab/mesh"
)

// errMemNotFound is memHistory's answer to Get of an unknown id.
var errMemNotFound = errors.New("bench: memhistory: not found")

// memHistory is a minimal in-memory mesh.History for the scale scenario,
// where a thousand simulated agents share one process: a store.DB each
// (badger memtables, group-commit goroutines) would measure the simulation's
// memory, not propagation. It keeps every envelope in a map, so it is only
// for short runs. Cursors are 16 lowercase hex digits of an arrival offset,
// as store's. Safe for concurrent use (one mutex).
type memHistory struct {
	mu     sync.Mutex
	next   uint64
	byID   map[string]*mesh.Envelope
	chans  map[string][]memRec                             // arrival order
	byAuth map[string]map[string]map[uint64]*mesh.Envelope // channel -> author -> seq -> env
	hw     map[string]map[string]uint64                    // channel -> author -> contiguous high water
}

type memRec struct {
	env *mesh.Envelope
	off uint64
}

func newMemHistory() *memHistory {
	return &memHistory{byID: map[string]*mesh.Envelope{}, chans: map[string][]memRec{},
		byAuth: map[string]map[string]map[uint64]*mesh.Envelope{}, hw: map[string]map[string]uint64{}}
}

func memCursor(off uint64) string { return fmt.Sprintf("%016x", off) }

func (h *memHistory) Append(_ context.Context, envs []*mesh.Envelope) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	curs := make([]string, len(envs))
	for i, e := range envs {
		if _, dup := h.byID[e.ID]; dup {
			continue
		}
		h.next++
		h.byID[e.ID] = e
		h.chans[e.Channel] = append(h.chans[e.Channel], memRec{env: e, off: h.next})
		curs[i] = memCursor(h.next)
		a := h.byAuth[e.Channel]
		if a == nil {
			a = map[string]map[uint64]*mesh.Envelope{}
			h.byAuth[e.Channel] = a
		}
		if a[e.From] == nil {
			a[e.From] = map[uint64]*mesh.Envelope{}
		}
		a[e.From][e.Seq] = e
		w := h.hw[e.Channel]
		if w == nil {
			w = map[string]uint64{}
			h.hw[e.Channel] = w
		}
		for a[e.From][w[e.From]+1] != nil {
			w[e.From]++
		}
	}
	return curs, nil
}

func (h *memHistory) After(_ context.Context, channel, cursor string, limit int) ([]*mesh.Envelope, []string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	recs := h.chans[channel]
	i := sort.Search(len(recs), func(i int) bool { return memCursor(recs[i].off) > cursor })
	var envs []*mesh.Envelope
	var curs []string
	for ; i < len(recs) && (limit <= 0 || len(envs) < limit); i++ {
		envs = append(envs, recs[i].env)
		curs = append(curs, memCursor(recs[i].off))
	}
	return envs, curs, nil
}

func (h *memHistory) Before(_ context.Context, channel, cursor string, limit int) ([]*mesh.Envelope, []string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	recs := h.chans[channel]
	end := len(recs)
	if cursor != "" {
		end = sort.Search(len(recs), func(i int) bool { return memCursor(recs[i].off) >= cursor })
	}
	start := 0
	if limit > 0 {
		start = max(0, end-limit)
	}
	var envs []*mesh.Envelope
	var curs []string
	for _, r := range recs[start:end] {
		envs = append(envs, r.env)
		curs = append(curs, memCursor(r.off))
	}
	return envs, curs, nil
}

func (h *memHistory) HighWater(_ context.Context, channel string) (map[string]uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]uint64{}
	for a, s := range h.hw[channel] {
		if s > 0 {
			out[a] = s
		}
	}
	return out, nil
}

func (h *memHistory) Since(_ context.Context, channel, author string, afterSeq uint64, limit int) ([]*mesh.Envelope, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var seqs []uint64
	for s := range h.byAuth[channel][author] {
		if s > afterSeq {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	if limit > 0 && len(seqs) > limit {
		seqs = seqs[:limit]
	}
	out := make([]*mesh.Envelope, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, h.byAuth[channel][author][s])
	}
	return out, nil
}

func (h *memHistory) Get(_ context.Context, id string) (*mesh.Envelope, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.byID[id]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("bench: memhistory: get %s: %w", id, errMemNotFound)
}
