package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/confabhq/confab/mesh"
	"github.com/confabhq/confab/redact"
)

// Files of the file interface, for agents that only have a shell
// (Config.Files). docs/daemon.md shows how to use them.
const (
	InboxFile        = "inbox.jsonl"         // incoming envelopes, one JSON line each (as `confab listen` prints)
	OutboxFile       = "outbox.jsonl"        // lines {"to":"#chan","text":"..."} appended by the agent
	OutboxOffsetFile = "outbox.offset"       // bytes of outbox.jsonl consumed
	OutboxErrorsFile = "outbox.errors.jsonl" // outbox lines that could not be sent, and why
	inboxCursorFile  = "inbox.cursor"        // cursor of the last envelope written to the inbox
)

// Limits of the file interface.
const (
	MaxInbox      = 8 << 20   // inbox.jsonl is rotated to inbox.jsonl.1 (one kept) beyond this
	MaxOutboxLine = 256 << 10 // longer outbox lines are reported and skipped
	filesPoll     = 200 * time.Millisecond
	backfillPage  = 256
)

// files runs the inbox writer and the outbox reader of a home. Each loop
// owns its own state; files itself only holds what stops them.
type files struct {
	home   string
	m      *mesh.Mesh
	log    *slog.Logger
	env    []string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func startFiles(home string, m *mesh.Mesh, log *slog.Logger) *files {
	ctx, cancel := context.WithCancel(context.Background())
	f := &files{home: home, m: m, log: log, env: os.Environ(), cancel: cancel}
	f.wg.Go(func() { f.inbox(ctx) })
	f.wg.Go(func() { f.outbox(ctx) })
	return f
}

// close stops both loops and waits for them. Safe on nil; idempotent.
func (f *files) close() {
	if f == nil {
		return
	}
	f.once.Do(func() {
		f.cancel()
		f.wg.Wait()
	})
}

func (f *files) path(name string) string { return filepath.Join(f.home, name) }

// inboxLine is the JSON line of one envelope, the same as `confab listen`'s.
type inboxLine struct {
	*mesh.Envelope
	Cursor string `json:"cursor"`
}

// inbox appends every envelope other agents send to joined channels to
// inbox.jsonl, in cursor order. It remembers the last cursor written, so
// after a restart or an overflowed subscription it catches up from history
// and neither skips nor repeats an envelope.
func (f *files) inbox(ctx context.Context) {
	last, err := f.inboxStart(ctx)
	if err != nil {
		f.log.Error("files: inbox disabled", "err", err)
		return
	}
	for ctx.Err() == nil {
		sub := f.m.Subscribe(nil, 0)
		last = f.backfill(ctx, last)
		for done := false; !done; {
			select {
			case <-ctx.Done():
				done = true
			case r, ok := <-sub.C():
				if !ok {
					done = true
					break
				}
				if r.Cursor > last {
					last = f.deliver([]mesh.Record{r}, last)
				}
			}
		}
		err := sub.Err()
		sub.Close()
		if !errors.Is(err, mesh.ErrSlowConsumer) {
			return // closed
		}
		f.log.Warn("files: inbox fell behind; catching up from history", "cursor", last)
	}
}

// inboxStart returns the cursor after which envelopes go to the inbox: the
// one saved last time, else the newest stored now (a new inbox starts empty).
func (f *files) inboxStart(ctx context.Context) (string, error) {
	if b, err := os.ReadFile(f.path(inboxCursorFile)); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	newest := ""
	for _, ch := range f.m.Channels() {
		recs, err := f.m.Before(ctx, ch, "", 1)
		if err != nil {
			return "", err
		}
		if len(recs) > 0 && recs[0].Cursor > newest {
			newest = recs[0].Cursor
		}
	}
	return newest, f.saveCursor(newest)
}

// backfill delivers what history holds after last, in cursor order.
func (f *files) backfill(ctx context.Context, last string) string {
	var recs []mesh.Record
	for _, ch := range f.m.Channels() {
		after := last
		for {
			page, err := f.m.After(ctx, ch, after, backfillPage)
			if err != nil {
				f.log.Warn("files: inbox catch-up", "channel", ch, "err", err)
				break
			}
			recs = append(recs, page...)
			if len(page) < backfillPage {
				break
			}
			after = page[len(page)-1].Cursor
		}
	}
	slices.SortFunc(recs, func(a, b mesh.Record) int { return strings.Compare(a.Cursor, b.Cursor) })
	return f.deliver(recs, last)
}

// deliver appends the records other agents wrote to the inbox, saves the
// cursor and returns it.
func (f *files) deliver(recs []mesh.Record, last string) string {
	var buf bytes.Buffer
	for _, r := range recs {
		if r.Cursor <= last {
			continue
		}
		last = r.Cursor
		if r.Env == nil || r.Env.From == f.m.Self() {
			continue
		}
		b, err := json.Marshal(inboxLine{Envelope: r.Env, Cursor: r.Cursor})
		if err != nil {
			continue
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if buf.Len() > 0 {
		if err := f.appendInbox(buf.Bytes()); err != nil {
			f.log.Error("files: inbox write", "err", err)
		}
	}
	if err := f.saveCursor(last); err != nil {
		f.log.Error("files: inbox cursor", "err", err)
	}
	return last
}

func (f *files) appendInbox(b []byte) error {
	p := f.path(InboxFile)
	if st, err := os.Stat(p); err == nil && st.Size()+int64(len(b)) > MaxInbox {
		if err := os.Rename(p, p+".1"); err != nil {
			return err
		}
	}
	fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, err = fh.Write(b)
	return errors.Join(err, fh.Close())
}

func (f *files) saveCursor(c string) error {
	return writeAtomic(f.path(inboxCursorFile), []byte(c+"\n"))
}

// outboxState is outbox.offset. Inflight is set while a line is being sent:
// after a crash, the node looks for the line's text among its own stored
// messages to know whether it was sent, so it neither drops nor resends it.
type outboxState struct {
	Offset   int64     `json:"offset"`
	Inflight *inflight `json:"inflight,omitempty"`
}

type inflight struct {
	End     int64  `json:"end"`
	Channel string `json:"channel"`
	SHA256  string `json:"sha256"` // of the text as sent (redacted)
}

// outboxLine is one line of outbox.jsonl.
type outboxLine struct {
	To      string `json:"to"`
	Text    string `json:"text"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// outbox polls outbox.jsonl and sends each complete line appended to it.
func (f *files) outbox(ctx context.Context) {
	st := f.loadOutboxState(ctx)
	t := time.NewTicker(filesPoll)
	defer t.Stop()
	for {
		if err := f.drainOutbox(ctx, &st); err != nil {
			if ctx.Err() == nil && !errors.Is(err, mesh.ErrClosed) && !errors.Is(err, mesh.ErrRateLimited) {
				f.log.Warn("files: outbox", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *files) loadOutboxState(ctx context.Context) outboxState {
	var st outboxState
	b, err := os.ReadFile(f.path(OutboxOffsetFile))
	if err != nil {
		return st
	}
	if err := json.Unmarshal(b, &st); err != nil {
		f.log.Warn("files: bad outbox.offset; starting at 0", "err", err)
		return outboxState{}
	}
	if in := st.Inflight; in != nil {
		st.Inflight = nil
		if f.sentBefore(ctx, in) {
			st.Offset = in.End
		}
		f.saveOutboxState(st)
	}
	return st
}

// sentBefore reports whether this node stored a message of its own with the
// in-flight text among the channel's recent history.
func (f *files) sentBefore(ctx context.Context, in *inflight) bool {
	recs, err := f.m.Before(ctx, in.Channel, "", 200)
	if err != nil {
		return false
	}
	for _, r := range recs {
		if r.Env != nil && r.Env.From == f.m.Self() && sum(r.Env.Content) == in.SHA256 {
			return true
		}
	}
	return false
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (f *files) saveOutboxState(st outboxState) {
	b, _ := json.Marshal(st)
	if err := writeAtomic(f.path(OutboxOffsetFile), append(b, '\n')); err != nil {
		f.log.Error("files: outbox offset", "err", err)
	}
}

// drainOutbox sends the complete lines after st.Offset. A line that fails
// for a reason retrying cannot fix is reported to outbox.errors.jsonl and
// skipped; a rate-limited line is retried on the next poll.
func (f *files) drainOutbox(ctx context.Context, st *outboxState) error {
	fh, err := os.Open(f.path(OutboxFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer fh.Close()
	info, err := fh.Stat()
	if err != nil {
		return err
	}
	if info.Size() < st.Offset {
		f.log.Warn("files: outbox.jsonl shrank; reading it from the start", "size", info.Size(), "offset", st.Offset)
		st.Offset = 0
		f.saveOutboxState(*st)
	}
	buf := make([]byte, MaxOutboxLine+1)
	for ctx.Err() == nil && st.Offset < info.Size() {
		n, err := fh.ReadAt(buf, st.Offset)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		chunk := buf[:n]
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			if n <= MaxOutboxLine {
				return nil // an incomplete last line: wait for the rest
			}
			// Too long: report it and skip up to the next newline.
			f.reportOutbox(st.Offset, chunk[:200], fmt.Errorf("line longer than %d bytes", MaxOutboxLine))
			end, err := skipLine(fh, st.Offset+int64(n))
			if err != nil || end < 0 {
				return err // no newline yet; report again when it comes
			}
			st.Offset = end
			f.saveOutboxState(*st)
			continue
		}
		line, end := chunk[:i], st.Offset+int64(i)+1
		if err := f.sendLine(ctx, st, line, end); err != nil {
			return err
		}
	}
	return nil
}

// skipLine returns the offset just after the next newline at or after off,
// or -1 if there is none yet.
func skipLine(fh *os.File, off int64) (int64, error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := fh.ReadAt(buf, off)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return off + int64(i) + 1, nil
		}
		off += int64(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return -1, nil
			}
			return -1, err
		}
	}
}

// sendLine sends one outbox line ending at end and advances st past it,
// unless the failure is worth retrying (then it returns the error).
func (f *files) sendLine(ctx context.Context, st *outboxState, line []byte, end int64) error {
	advance := func() {
		st.Offset, st.Inflight = end, nil
		f.saveOutboxState(*st)
	}
	if len(bytes.TrimSpace(line)) == 0 {
		advance()
		return nil
	}
	var ol outboxLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	switch err := dec.Decode(&ol); {
	case err != nil:
		f.reportOutbox(st.Offset, line, fmt.Errorf("not a JSON object {\"to\":\"#channel\",\"text\":\"...\"}: %v", err))
		advance()
		return nil
	case !mesh.ValidChannel(ol.To) || ol.To[0] != '#':
		f.reportOutbox(st.Offset, line, fmt.Errorf("\"to\" must be a #channel, got %q", ol.To))
		advance()
		return nil
	case strings.TrimSpace(ol.Text) == "":
		f.reportOutbox(st.Offset, line, errors.New("\"text\" is empty"))
		advance()
		return nil
	}
	text, found := redact.Redact(ol.Text, f.env)
	if len(found) > 0 {
		f.log.Info("files: redacted secrets in an outbox line", "count", len(found), "kinds", redact.Kinds(found))
	}
	st.Inflight = &inflight{End: end, Channel: ol.To, SHA256: sum(text)}
	f.saveOutboxState(*st)
	_, err := f.m.Send(ctx, ol.To, "msg", text, ol.ReplyTo)
	switch {
	case err == nil:
		advance()
		return nil
	case errors.Is(err, mesh.ErrRateLimited), errors.Is(err, mesh.ErrClosed), ctx.Err() != nil:
		st.Inflight = nil
		f.saveOutboxState(*st)
		return err
	default:
		f.reportOutbox(st.Offset, line, err)
		advance()
		return nil
	}
}

// reportOutbox appends one line to outbox.errors.jsonl.
func (f *files) reportOutbox(offset int64, line []byte, cause error) {
	if len(line) > 200 {
		line = line[:200]
	}
	b, _ := json.Marshal(map[string]any{
		"ts": time.Now().UTC().Format(time.RFC3339), "offset": offset,
		"error": cause.Error(), "line": strings.ToValidUTF8(string(line), "?"),
	})
	fh, err := os.OpenFile(f.path(OutboxErrorsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		f.log.Error("files: outbox errors", "err", err)
		return
	}
	fh.Write(append(b, '\n'))
	fh.Close()
	f.log.Warn("files: outbox line skipped", "offset", offset, "err", cause)
}

// writeAtomic replaces path with b through a rename, so a crash leaves the
// old or the new content, never a torn one.
func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
