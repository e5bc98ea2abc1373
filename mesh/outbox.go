package mesh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The outbox file keeps the set of direct messages waiting for their
// recipients across restarts of the sender (WithOutboxFile). The envelopes
// themselves are already in history (channel "@<recipient>"); the file holds
// only their ids, in the order they were queued, as JSON lines:
//
//	{"op":"add","id":"<hex id>","to":"<recipient peer id>"}
//	{"op":"done","id":"<hex id>","to":"<recipient peer id>"}
//
// "add" is fsynced before SendDirect reports a message as queued. "done" is
// written after the recipient acknowledged (or refused) the message, without
// fsync: losing it only means one more delivery attempt after a crash, which
// the recipient acknowledges as a duplicate without storing or showing it
// again. The file is rewritten with only the pending adds when the node
// starts and whenever it holds many more lines than pending messages.
// A line that does not parse (a torn write at a crash, an edit) is skipped
// and logged; so is an add whose envelope is no longer in history.

// outboxLine is one line of the outbox file.
type outboxLine struct {
	Op string `json:"op"`
	ID string `json:"id"`
	To string `json:"to"`
}

const (
	opAdd  = "add"
	opDone = "done"
	// maxOutboxLine bounds one line of the outbox file; real ones are ~150 bytes.
	maxOutboxLine = 4096
	// outboxCompactSlack: rewrite the file when it holds this many lines more
	// than twice the pending messages.
	outboxCompactSlack = 256
)

// outboxEntry is one pending message in the order it was queued.
type outboxEntry struct {
	to peer.ID
	id string
}

// readOutbox parses the outbox file at path and returns the pending entries,
// oldest first. Malformed lines are reported through logf and skipped. A
// missing file is an empty outbox.
func readOutbox(path string, logf func(msg string, args ...any)) ([]outboxEntry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mesh: outbox: %w", err)
	}
	defer f.Close()
	var order []outboxEntry
	pending := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 512), maxOutboxLine)
	for n := 1; ; n++ {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				// A line longer than any we write: nothing after it can be
				// trusted to be aligned, so stop here with what we have.
				logf("outbox file: unreadable from this line on; skipped", "path", path, "line", n, "err", err)
			}
			break
		}
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		var l outboxLine
		if err := json.Unmarshal(b, &l); err != nil || !idRE.MatchString(l.ID) || (l.Op != opAdd && l.Op != opDone) {
			logf("outbox file: malformed line skipped", "path", path, "line", n)
			continue
		}
		to, err := peer.Decode(l.To)
		if err != nil {
			logf("outbox file: bad recipient; line skipped", "path", path, "line", n)
			continue
		}
		switch l.Op {
		case opAdd:
			if !pending[l.ID] {
				pending[l.ID] = true
				order = append(order, outboxEntry{to: to, id: l.ID})
			}
		case opDone:
			delete(pending, l.ID)
		}
	}
	out := order[:0]
	for _, e := range order {
		if pending[e.id] {
			out = append(out, e)
			delete(pending, e.id) // an id added again after done stays once
		}
	}
	return out, nil
}

// outboxFile is the open, append-only outbox file. Guarded by direct.mu.
type outboxFile struct {
	path  string
	f     *os.File
	lines int // lines in the file now
}

// writeOutbox replaces the file at path with adds for entries, durably
// (temporary file, fsync, rename, fsync of the folder), and opens it for
// appending.
func writeOutbox(path string, entries []outboxEntry) (*outboxFile, error) {
	var buf bytes.Buffer
	for _, e := range entries {
		b, _ := json.Marshal(outboxLine{Op: opAdd, ID: e.id, To: e.to.String()})
		buf.Write(append(b, '\n'))
	}
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return nil, fmt.Errorf("mesh: outbox: rewrite: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mesh: outbox: %w", err)
	}
	return &outboxFile{path: path, f: f, lines: len(entries)}, nil
}

// append writes one line; with sync it is on disk when append returns.
func (o *outboxFile) append(op, id string, to peer.ID, sync bool) error {
	b, _ := json.Marshal(outboxLine{Op: op, ID: id, To: to.String()})
	if _, err := o.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("mesh: outbox: write: %w", err)
	}
	o.lines++
	if sync {
		if err := o.f.Sync(); err != nil {
			return fmt.Errorf("mesh: outbox: sync: %w", err)
		}
	}
	return nil
}

func (o *outboxFile) close() {
	if o != nil && o.f != nil {
		_ = o.f.Close()
		o.f = nil
	}
}

// loadOutbox reads the outbox file, fetches each pending envelope from
// history into the outbox, and rewrites the file with what it loaded. Called
// once, by outboxLoop, before it serves anything; SendDirect and Pending wait
// for it (direct.ready).
func (m *Mesh) loadOutbox() {
	path := m.cfg.outboxFile
	if path == "" {
		return
	}
	entries, err := readOutbox(path, m.log.Warn)
	if err != nil {
		m.log.Error("outbox file unreadable; queued messages from before the restart are not retried", "path", path, "err", err)
	}
	kept := entries[:0]
	for _, e := range entries {
		ctx, cancel := context.WithTimeout(m.ctx, dmTimeout)
		env, err := m.hist.Get(ctx, e.id)
		cancel()
		switch {
		case err != nil:
			m.log.Warn("outbox: queued message not in history; skipped", "id", e.id, "to", e.to, "err", err)
			continue
		case env.Channel != "@"+e.to.String() || env.From != m.self:
			m.log.Warn("outbox: queued id is not our message to that agent; skipped", "id", e.id, "to", e.to)
			continue
		}
		kept = append(kept, e)
		m.dx.outbox[e.to] = append(m.dx.outbox[e.to], env)
		m.dx.outN++
	}
	f, err := writeOutbox(path, kept)
	if err != nil {
		m.log.Error("outbox file not writable; queued messages are kept in memory only", "path", path, "err", err)
		m.dx.fileErr = err
		return
	}
	m.dx.file = f
	if len(kept) > 0 {
		m.log.Info("outbox: retrying messages queued before the restart", "count", len(kept))
	}
}

// persistAdd records e as queued for to. Caller holds dx.mu.
func (d *direct) persistAdd(to peer.ID, e *Envelope) error {
	if d.fileErr != nil {
		return d.fileErr
	}
	switch {
	case d.file == nil:
		return nil // no outbox file configured
	case d.file.f == nil:
		return ErrClosed // outboxLoop closed it
	}
	return d.file.append(opAdd, e.ID, to, true)
}

// persistDone records e as delivered (or dropped), and compacts the file when
// it has grown well past the pending set. Caller holds dx.mu.
func (d *direct) persistDone(to peer.ID, e *Envelope, log func(string, ...any)) {
	if d.file == nil || d.file.f == nil {
		return
	}
	if err := d.file.append(opDone, e.ID, to, false); err != nil {
		log("outbox: mark done", "id", e.ID, "err", err)
	}
	if d.file.lines <= 2*d.outN+outboxCompactSlack {
		return
	}
	entries := make([]outboxEntry, 0, d.outN)
	for p, q := range d.outbox {
		for _, x := range q {
			entries = append(entries, outboxEntry{to: p, id: x.ID})
		}
	}
	d.file.close()
	f, err := writeOutbox(d.file.path, entries)
	if err != nil {
		log("outbox: compact", "err", err)
		// Reopen the old file for appending: its content is still correct.
		of, oerr := os.OpenFile(d.file.path, os.O_APPEND|os.O_WRONLY, 0o600)
		if oerr != nil {
			d.fileErr = fmt.Errorf("mesh: outbox: reopen: %w", oerr)
			return
		}
		d.file.f = of
		return
	}
	d.file = f
}
