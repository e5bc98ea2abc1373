package bundle

import (
	"errors"
	"os"
	"unsafe"
)

// dioAlign is the alignment direct I/O needs of a write's memory address,
// file offset and length; 4096 satisfies both 512-byte and 4 KiB logical
// blocks.
const dioAlign = 4096

// directIO lets a partWriter try O_DIRECT; benchmarks turn it off to
// compare. setDirectFn is setDirect; tests make it fail like a file system
// that refuses direct I/O.
var (
	directIO    = true
	setDirectFn = setDirect
)

// partWriter appends received chunks to a .part file. Where the file system
// allows it, aligned chunks bypass the page cache (O_DIRECT): the kernel
// neither copies them nor writes them back later, the disk works while the
// stream runs, and the final fsync has only metadata and the device's cache
// left to flush. Anything unaligned (the tail of the last chunk, a resumed
// .part of odd size) goes through the page cache, with writeback started
// every writebackEvery bytes. Durability comes from the fsync in either case.
// A partWriter is used by one goroutine.
type partWriter struct {
	f         *os.File
	off       int64 // bytes in f; the next write goes here
	canDirect bool  // O_DIRECT worked on f, as far as we know
	direct    bool  // O_DIRECT is set on f now
	flushed   int64 // writeback was started for buffered bytes before this
	directN   int64 // bytes written with direct I/O (tests)
}

// newPartWriter writes to f from offset off (f's current offset).
func newPartWriter(f *os.File, off int64) *partWriter {
	return &partWriter{f: f, off: off, canDirect: directIO, flushed: off}
}

// write appends b.
func (w *partWriter) write(b []byte) error {
	if n := w.directLen(b); n > 0 {
		if w.setDirect(true) {
			m, err := w.f.Write(b[:n])
			w.off += int64(m)
			w.directN += int64(m)
			b = b[m:]
			w.flushed = w.off
			if err != nil {
				if !isDirectRefused(err) {
					return err
				}
				w.canDirect = false
			}
		}
	}
	if len(b) == 0 {
		return nil
	}
	if !w.setDirect(false) {
		return errors.New("bundle: cannot turn off direct I/O")
	}
	m, err := w.f.Write(b)
	w.off += int64(m)
	if w.off-w.flushed >= writebackEvery {
		startWriteback(w.f, w.flushed, w.off-w.flushed)
		w.flushed = w.off
	}
	return err
}

// writeBufs appends bufs in order. A run of whole aligned buffers goes to
// the disk in one direct write (writev): each direct write blocks its
// thread until the device has the bytes, and every blocking call costs the
// Go runtime a hand-off of its processor (sysmon wakes every 20 us for a
// while after each), so four 1 MiB buffers in one call cost a quarter of
// that. Anything else goes through write, one buffer at a time.
func (w *partWriter) writeBufs(bufs [][]byte) error {
	bufs = append([][]byte(nil), bufs...) // trimmed below; the caller's stay whole
	for len(bufs) > 0 {
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
			continue
		}
		n := 0
		for n < len(bufs) && len(bufs[n]) > 0 && w.directLen(bufs[n]) == len(bufs[n]) {
			n++
		}
		if n < 2 || !w.setDirect(true) {
			if err := w.write(bufs[0]); err != nil {
				return err
			}
			bufs = bufs[1:]
			continue
		}
		m, err := writev(w.f, bufs[:n])
		w.off += m
		w.directN += m
		w.flushed = w.off
		for m > 0 {
			k := min(m, int64(len(bufs[0])))
			bufs[0] = bufs[0][k:]
			m -= k
			if len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		switch {
		case err == nil:
		case isDirectRefused(err):
			w.canDirect = false
		default:
			return err
		}
	}
	return nil
}

// directLen is how many bytes of b may be written with direct I/O at the
// current offset: the aligned prefix, or 0.
func (w *partWriter) directLen(b []byte) int {
	if !w.canDirect || len(b) < dioAlign || w.off%dioAlign != 0 ||
		uintptr(unsafe.Pointer(unsafe.SliceData(b)))%dioAlign != 0 {
		return 0
	}
	return len(b) &^ (dioAlign - 1)
}

// setDirect switches O_DIRECT on or off and reports whether it is now as
// asked. A file system that refuses it is not asked again.
func (w *partWriter) setDirect(on bool) bool {
	if w.direct == on {
		return true
	}
	if err := setDirectFn(w.f, on); err != nil {
		if on {
			w.canDirect = false
		}
		return false
	}
	w.direct = on
	return true
}
