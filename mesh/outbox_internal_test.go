package mesh

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	testPeerA = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	testPeerB = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
)

func TestReadOutbox(t *testing.T) {
	id := func(c string) string { return strings.Repeat(c, 64) }
	add := func(i, to string) string { return `{"op":"add","id":"` + i + `","to":"` + to + `"}` + "\n" }
	done := func(i, to string) string { return `{"op":"done","id":"` + i + `","to":"` + to + `"}` + "\n" }
	for _, tc := range []struct {
		name string
		file string
		want []string // ids, in order
		logs int
	}{
		{"empty", "", nil, 0},
		{"adds in order", add(id("1"), testPeerA) + add(id("2"), testPeerB) + add(id("3"), testPeerA), []string{id("1"), id("2"), id("3")}, 0},
		{"done removes", add(id("1"), testPeerA) + add(id("2"), testPeerA) + done(id("1"), testPeerA), []string{id("2")}, 0},
		{"duplicate add once", add(id("1"), testPeerA) + add(id("1"), testPeerA), []string{id("1")}, 0},
		{"blank lines", "\n\n" + add(id("1"), testPeerA) + "\n", []string{id("1")}, 0},
		{"torn last line", add(id("1"), testPeerA) + `{"op":"add","id":"` + id("2"), []string{id("1")}, 1},
		{"garbage between", add(id("1"), testPeerA) + "}}}\n" + add(id("2"), testPeerB), []string{id("1"), id("2")}, 1},
		{"bad recipient", add(id("1"), "nope") + add(id("2"), testPeerB), []string{id("2")}, 1},
		{"uppercase id", add(strings.Repeat("A", 64), testPeerA), nil, 1},
		{"overlong line stops", add(id("1"), testPeerA) + strings.Repeat("x", maxOutboxLine+1) + "\n" + add(id("2"), testPeerA), []string{id("1")}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "outbox.jsonl")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			logs := 0
			entries, err := readOutbox(path, func(string, ...any) { logs++ })
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.id)
			}
			if !slices.Equal(got, tc.want) || logs != tc.logs {
				t.Errorf("readOutbox = %q with %d logs, want %q with %d", got, logs, tc.want, tc.logs)
			}
		})
	}
	if entries, err := readOutbox(filepath.Join(t.TempDir(), "missing"), nil); err != nil || entries != nil {
		t.Errorf("missing file: %v, %v; want empty and no error", entries, err)
	}
}

// TestOutboxFileRoundTrip: what writeOutbox and append write, readOutbox reads.
func TestOutboxFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.jsonl")
	a, _ := peer.Decode(testPeerA)
	b, _ := peer.Decode(testPeerB)
	id := func(c string) string { return strings.Repeat(c, 64) }
	f, err := writeOutbox(path, []outboxEntry{{to: a, id: id("1")}, {to: b, id: id("2")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		op, id string
		to     peer.ID
	}{{opAdd, id("3"), a}, {opDone, id("1"), a}, {opAdd, id("4"), b}} {
		if err := f.append(x.op, x.id, x.to, x.op == opAdd); err != nil {
			t.Fatal(err)
		}
	}
	f.close()
	f.close() // idempotent
	entries, err := readOutbox(path, func(msg string, _ ...any) { t.Errorf("unexpected log %q", msg) })
	if err != nil {
		t.Fatal(err)
	}
	want := []outboxEntry{{b, id("2")}, {a, id("3")}, {b, id("4")}}
	if !slices.Equal(entries, want) {
		t.Fatalf("entries = %v, want %v", entries, want)
	}
	if f.lines != 5 {
		t.Fatalf("line count = %d, want 5", f.lines)
	}
}

// FuzzReadOutbox: any file content yields well-formed entries or skips, never
// a panic.
func FuzzReadOutbox(f *testing.F) {
	f.Add([]byte(`{"op":"add","id":"` + strings.Repeat("a", 64) + `","to":"` + testPeerA + `"}` + "\n"))
	f.Add([]byte(`{"op":"done","id":"` + strings.Repeat("a", 64) + `","to":"` + testPeerA + `"}` + "\n{\"op\":"))
	f.Add([]byte("\x00\n\n{}\n[]\nnull\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "outbox.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		entries, err := readOutbox(path, func(string, ...any) {})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if !idRE.MatchString(e.id) || e.to == "" || seen[e.id] {
				t.Fatalf("bad entry %+v", e)
			}
			seen[e.id] = true
		}
	})
}

// TestOutboxCompactsWhileRunning: a long-running sender's file does not grow
// with every message ever queued; it is rewritten with the pending set.
func TestOutboxCompactsWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.jsonl")
	a, _ := peer.Decode(testPeerA)
	d := newDirect()
	f, err := writeOutbox(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.file = f
	defer d.file.close()
	keep := &Envelope{ID: strings.Repeat("f", 64)}
	if err := d.persistAdd(a, keep); err != nil {
		t.Fatal(err)
	}
	d.outbox[a] = []*Envelope{keep}
	d.outN = 1
	for i := range 1000 {
		e := &Envelope{ID: strings.Repeat("0", 60) + strings.Repeat(string("0123456789abcdef"[i%16]), 4)}
		if err := d.persistAdd(a, e); err != nil {
			t.Fatal(err)
		}
		d.persistDone(a, e, func(msg string, args ...any) { t.Errorf("%s %v", msg, args) })
	}
	if d.file.lines > 2*d.outN+outboxCompactSlack+1 {
		t.Fatalf("file holds %d lines for %d pending", d.file.lines, d.outN)
	}
	entries, err := readOutbox(path, func(msg string, _ ...any) { t.Errorf("unexpected log %q", msg) })
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].id != keep.ID {
		t.Fatalf("entries = %v, want only the pending one", entries)
	}
}
