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
				defer func(was bool, fn func(*os.File, bool) error) { directIO, setDirectFn = was, fn }(directIO, setDirectFn)
				direct := mode == "direct"
				directIO = mode != "buffered"
				if mode == "refused" {
					setDirectFn = func(f *os.File, on bool) error {
						if on {
							return errors.New("test: no direct I/O here")
						}
						return nil
					}
				}
				path := filepath.Join(t.TempDir(), "x.part")
				if err := os.WriteFile(path, data[:tt.start], 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.Seek(int64(tt.start), 0); err != nil {
					t.Fatal(err)
				}
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
				got, err := os.ReadFile(path)
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
				defer func(was bool, fn func(*os.File, bool) error) { directIO, setDirectFn = was, fn }(directIO, setDirectFn)
				directIO = mode != "buffered"
				if mode == "refused" {
					setDirectFn = func(f *os.File, on bool) error {
						if on {
							return errors.New("test: no direct I/O here")
						}
						return nil
					}
				}
				path := filepath.Join(t.TempDir(), "x.part")
				if err := os.WriteFile(path, data[:tt.start], 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.Seek(int64(tt.start), 0); err != nil {
					t.Fatal(err)
				}
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
				got, err := os.ReadFile(path)
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
