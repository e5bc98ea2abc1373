package faults

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/confabhq/confab/mesh"
)

// Op is one send attempt as its client saw it. Key identifies the attempt
// before the node answers (the test puts it in the content), so an attempt
// whose ack was lost can still be recognised in a history.
type Op struct {
	Key     string // unique per attempt; required
	Via     string // the node the client sent through (for the summary)
	Channel string
	ID      string // envelope id from the ack; "" without one
	Author  string // envelope author from the ack
	Seq     uint64 // envelope seq from the ack
	Acked   bool   // the node acknowledged: stored durably, must never be lost
	Err     string // why the attempt was not acknowledged
}

// Obs is one record of a node's history.
type Obs struct {
	ID      string
	Key     string // the attempt key the record carries ("" if none)
	Channel string
	Author  string
	Seq     uint64
}

// ObsFromRecords turns stored records into observations, taking each
// record's content as its attempt key.
func ObsFromRecords(recs []mesh.Record) []Obs {
	out := make([]Obs, 0, len(recs))
	for _, r := range recs {
		if r.Env == nil {
			continue
		}
		out = append(out, ObsFromEnvelope(r.Env))
	}
	return out
}

// ObsFromEnvelope is one observation of e, keyed by its content.
func ObsFromEnvelope(e *mesh.Envelope) Obs {
	return Obs{ID: e.ID, Key: e.Content, Channel: e.Channel, Author: e.From, Seq: e.Seq}
}

// Class is what happened to one message at one node.
type Class int

// The classes of a message at a node. Lost, Duplicated and Unexpected are
// failures; Maybe and Absent are the two allowed outcomes of an attempt that
// was not acknowledged.
const (
	Delivered  Class = iota // acknowledged and present exactly once
	Lost                    // acknowledged and absent
	Duplicated              // present more than once (same id, or one attempt under two ids)
	Unexpected              // present but never attempted, or under another id than acknowledged
	Maybe                   // not acknowledged, present once
	Absent                  // not acknowledged, absent
	numClasses
)

var classNames = [numClasses]string{"delivered", "lost", "duplicated", "unexpected", "maybe", "absent"}

func (c Class) String() string {
	if c >= 0 && c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Failure reports whether c breaks a guarantee.
func (c Class) Failure() bool { return c == Lost || c == Duplicated || c == Unexpected }

// History records what clients sent and what nodes hold, then checks them.
// It is safe for concurrent use: senders call Record while the test runs.
type History struct {
	mu    sync.Mutex // guards ops, views
	ops   []Op
	views map[view][]Obs
	order []view
}

// view is one node's history of one channel.
type view struct{ node, channel string }

// NewHistory returns an empty history.
func NewHistory() *History { return &History{views: map[view][]Obs{}} }

// Record adds one send attempt. Keys must be unique.
func (h *History) Record(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// Ops returns a copy of the attempts recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// Observe sets node's complete history of channel, in its history order. It
// replaces an earlier observation of the same node and channel. Only
// observed (node, channel) pairs are checked, against the attempts on that
// channel.
func (h *History) Observe(node, channel string, obs []Obs) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := view{node, channel}
	if _, ok := h.views[v]; !ok {
		h.order = append(h.order, v)
	}
	h.views[v] = slices.Clone(obs)
}

// Report is the result of Check.
type Report struct {
	Attempts int // send attempts recorded
	Acked    int // of which acknowledged
	Views    []ViewResult
}

// ViewResult classifies every message at one node for one channel.
type ViewResult struct {
	Node, Channel string
	Counts        [numClasses]int
	Records       int // records observed
	// Reordered counts records of an author whose seq is not above the
	// previous record of that author in this history: history must keep
	// each author's order.
	Reordered int
	// Problems describes the first failures (at most maxProblems).
	Problems []string
}

const maxProblems = 10

// Failures is the number of failing messages in v, plus reorderings.
func (v ViewResult) Failures() int {
	return v.Counts[Lost] + v.Counts[Duplicated] + v.Counts[Unexpected] + v.Reordered
}

// OK reports whether no view has a failure.
func (r *Report) OK() bool {
	for _, v := range r.Views {
		if v.Failures() > 0 {
			return false
		}
	}
	return true
}

// Total sums the counts of every view.
func (r *Report) Total() (counts [numClasses]int, reordered int) {
	for _, v := range r.Views {
		for c := range numClasses {
			counts[c] += v.Counts[c]
		}
		reordered += v.Reordered
	}
	return counts, reordered
}

// String is a readable summary: one line of totals, one line per view, and
// the first problems of each failing view.
func (r *Report) String() string {
	var b strings.Builder
	counts, reo := r.Total()
	verdict := "OK"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "%s: %d attempts, %d acknowledged, %d node histories checked", verdict, r.Attempts, r.Acked, len(r.Views))
	for c := range numClasses {
		fmt.Fprintf(&b, ", %s %d", c, counts[c])
	}
	fmt.Fprintf(&b, ", reordered %d\n", reo)
	for _, v := range r.Views {
		fmt.Fprintf(&b, "  %s %s: %d records", v.Node, v.Channel, v.Records)
		for c := range numClasses {
			if v.Counts[c] > 0 {
				fmt.Fprintf(&b, ", %s %d", c, v.Counts[c])
			}
		}
		if v.Reordered > 0 {
			fmt.Fprintf(&b, ", reordered %d", v.Reordered)
		}
		b.WriteByte('\n')
		for _, p := range v.Problems {
			fmt.Fprintf(&b, "    %s\n", p)
		}
	}
	return b.String()
}

// Check classifies every attempt on each observed channel, and every record
// observed, per node.
func (h *History) Check() *Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := &Report{Attempts: len(h.ops)}
	byChan := map[string][]int{} // channel -> op indexes
	for i, op := range h.ops {
		if op.Acked {
			r.Acked++
		}
		byChan[op.Channel] = append(byChan[op.Channel], i)
	}
	order := slices.Clone(h.order)
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].node != order[j].node {
			return order[i].node < order[j].node
		}
		return order[i].channel < order[j].channel
	})
	for _, v := range order {
		r.Views = append(r.Views, h.checkView(v, byChan[v.channel]))
	}
	return r
}

func (h *History) checkView(v view, opIdx []int) ViewResult {
	res := ViewResult{Node: v.node, Channel: v.channel}
	obs := h.views[v]
	res.Records = len(obs)
	problem := func(format string, args ...any) {
		if len(res.Problems) < maxProblems {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	// Index the attempts on this channel by id (acknowledged) and key.
	byID := map[string]int{}
	byKey := map[string]int{}
	for _, i := range opIdx {
		op := h.ops[i]
		if op.ID != "" {
			byID[op.ID] = i
		}
		byKey[op.Key] = i
	}
	ids := map[string]int{}        // id -> times seen
	keyIDs := map[int][]string{}   // op index -> distinct ids seen for it
	lastSeq := map[string]uint64{} // author -> last seq in history order
	for _, o := range obs {
		if o.Seq <= lastSeq[o.Author] && o.Seq != 0 {
			res.Reordered++
			problem("reordered: author %s seq %d after seq %d", short(o.Author), o.Seq, lastSeq[o.Author])
		}
		if o.Seq > lastSeq[o.Author] {
			lastSeq[o.Author] = o.Seq
		}
		ids[o.ID]++
		if ids[o.ID] == 2 {
			res.Counts[Duplicated]++
			problem("duplicated: id %s (key %q) stored more than once", short(o.ID), o.Key)
		}
		if ids[o.ID] > 1 {
			continue
		}
		i, ok := byID[o.ID]
		if !ok {
			i, ok = byKey[o.Key]
			if ok && h.ops[i].ID != "" {
				// The attempt was acknowledged under another id.
				res.Counts[Unexpected]++
				problem("unexpected: key %q stored as id %s, acknowledged as %s", o.Key, short(o.ID), short(h.ops[i].ID))
				continue
			}
		}
		if !ok {
			res.Counts[Unexpected]++
			problem("unexpected: id %s (key %q, author %s seq %d) was never sent", short(o.ID), o.Key, short(o.Author), o.Seq)
			continue
		}
		keyIDs[i] = append(keyIDs[i], o.ID)
	}
	for _, i := range opIdx {
		op := h.ops[i]
		seen := keyIDs[i]
		switch {
		case len(seen) > 1:
			res.Counts[Duplicated]++
			problem("duplicated: key %q stored under %d ids", op.Key, len(seen))
		case len(seen) == 1 && op.Acked:
			res.Counts[Delivered]++
		case len(seen) == 1:
			res.Counts[Maybe]++
		case op.Acked:
			res.Counts[Lost]++
			problem("lost: key %q id %s (author %s seq %d, via %s) acknowledged but absent", op.Key, short(op.ID), short(op.Author), op.Seq, op.Via)
		default:
			res.Counts[Absent]++
		}
	}
	return res
}

// short abbreviates ids and peer ids for messages.
func short(s string) string {
	if len(s) > 12 {
		return s[:6] + "…" + s[len(s)-4:]
	}
	return s
}
