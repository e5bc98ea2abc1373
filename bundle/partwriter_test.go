package bundle

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestPartWriter appends chunks of every alignment (start offset, length,
// memory address) with and without direct I/O and checks the file holds
// exactly the bytes written, in order.
func TestPartWriter(t *testing.T) {
	data := randomBytes(3*ChunkSize+5000, 11)
	tests := []struct {
		name   string
		start  int   // bytes already in the file (a resumed .part)
		chunks []int // lengths appended, in order
		skew   int   // bytes the chunks' memory is offset from an aligned buffer
		direct bool  // some of them can go direct
	}{
		{"aligned chunks", 0, []int{ChunkSize, ChunkSize, ChunkSize}, 0, true},
		{"short last chunk", 0, []int{ChunkSize, ChunkSize, 5000}, 0, true},
		{"odd resume", 4097, []int{ChunkSize, ChunkSize}, 0, false},
		{"aligned resume", 8192, []int{ChunkSize, 3}, 0, true},
		{"odd chunk in the middle", 0, []int{ChunkSize, 100, ChunkSize, 4096}, 0, true},
		{"unaligned memory", 0, []int{ChunkSize, ChunkSize}, 1, false},
		{"tiny chunks", 0, []int{1, 2, 3, 4096, 4093, 8192}, 0, false},
	}
	for _, tt := range tests {
		for _, mode := range []string{"direct", "buffered", "refused"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				direct := mode == "direct"
				ioMode(t, mode)
				f := openPart(t, data[:tt.start])
				w := newPartWriter(f, int64(tt.start))
				buf := newRing(1)[0]
				buf = append(buf, make([]byte, 2*dioAlign)...)
				off := tt.start
				for _, n := range tt.chunks {
					b := buf[tt.skew : tt.skew+n]
					copy(b, data[off:off+n])
					if err := w.write(b); err != nil {
						t.Fatalf("write %d bytes at %d: %v", n, off, err)
					}
					off += n
				}
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(f.Name())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data[:off]) {
					t.Errorf("file has %d bytes, want %d; equal prefix: %v", len(got), off, bytes.Equal(got[:min(len(got), off)], data[:min(len(got), off)]))
				}
				if w.off != int64(off) {
					t.Errorf("writer offset %d, want %d", w.off, off)
				}
				if !direct && w.directN != 0 {
					t.Errorf("%d bytes written directly with direct I/O %s", w.directN, mode)
				}
				if !tt.direct && w.directN != 0 {
					t.Errorf("%d bytes written directly from unaligned chunks", w.directN)
				}
				if direct && tt.direct && w.directN == 0 && setDirect(f, true) == nil {
					t.Errorf("no byte written directly though the file system allows it")
				}
			})
		}
	}
}

// TestPartWriterBatched hands writeBufs several chunks at once, each in its
// own buffer, as the receiver does, and checks the file holds exactly the
// bytes in order, with whole aligned runs written directly where allowed.
func TestPartWriterBatched(t *testing.T) {
	data := randomBytes(6*ChunkSize+5000, 12)
	tests := []struct {
		name    string
		start   int     // bytes already in the file
		batches [][]int // lengths per writeBufs call
		skew    int     // memory offset of every chunk from an aligned buffer
		direct  bool    // some bytes can go direct
	}{
		{"four whole chunks", 0, [][]int{{ChunkSize, ChunkSize, ChunkSize, ChunkSize}}, 0, true},
		{"batches then a short tail", 0, [][]int{{ChunkSize, ChunkSize}, {ChunkSize, ChunkSize, 5000}}, 0, true},
		{"odd chunk in a batch", 0, [][]int{{ChunkSize, 100, ChunkSize, 4096}}, 0, true},
		{"odd resume", 4097, [][]int{{ChunkSize, ChunkSize}}, 0, false},
		{"aligned resume", 8192, [][]int{{ChunkSize, ChunkSize, 3}}, 0, true},
		{"unaligned memory", 0, [][]int{{ChunkSize, ChunkSize}}, 1, false},
		{"one chunk", 0, [][]int{{ChunkSize}, {4096}}, 0, true},
	}
	for _, tt := range tests {
		for _, mode := range []string{"direct", "buffered", "refused"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				ioMode(t, mode)
				f := openPart(t, data[:tt.start])
				w := newPartWriter(f, int64(tt.start))
				off := tt.start
				for _, batch := range tt.batches {
					var bufs [][]byte
					for _, n := range batch {
						b := make([]byte, ChunkSize+2*dioAlign)[tt.skew : tt.skew+n]
						copy(b, data[off:off+n])
						bufs = append(bufs, b)
						off += n
					}
					if err := w.writeBufs(bufs); err != nil {
						t.Fatalf("writeBufs %v: %v", batch, err)
					}
					for i, n := range batch {
						if len(bufs[i]) != n {
							t.Fatalf("writeBufs changed the caller's buffer %d to %d bytes", i, len(bufs[i]))
						}
					}
				}
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(f.Name())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data[:off]) {
					t.Errorf("file has %d bytes, want %d", len(got), off)
				}
				if w.off != int64(off) {
					t.Errorf("writer offset %d, want %d", w.off, off)
				}
				if (mode != "direct" || !tt.direct) && w.directN != 0 {
					t.Errorf("%d bytes written directly (mode %s, aligned %v)", w.directN, mode, tt.direct)
				}
				if mode == "direct" && tt.direct && w.directN == 0 && setDirect(f, true) == nil {
					t.Errorf("no byte written directly though the file system allows it")
				}
			})
		}
	}
}

// ioMode sets how part files are written for the rest of t: "direct"
// (O_DIRECT), "buffered", or "refused" (a file system that refuses
// O_DIRECT, so the writer falls back to buffered writes).
func ioMode(t *testing.T, mode string) {
	t.Helper()
	was, fn := directIO, setDirectFn
	t.Cleanup(func() { directIO, setDirectFn = was, fn })
	directIO = mode != "buffered"
	if mode == "refused" {
		setDirectFn = func(f *os.File, on bool) error {
			if on {
				return errors.New("test: no direct I/O here")
			}
			return nil
		}
	}
}

// openPart returns a .part file holding have, open for writing at its end.
func openPart(t *testing.T, have []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.part")
	if err := os.WriteFile(path, have, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Seek(int64(len(have)), 0); err != nil {
		t.Fatal(err)
	}
	return f
}
