package bundle

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"syscall"
)

// mapWindow is how much of a file the sender maps at once: what it holds
// mapped stays bounded, whatever the bundle's size.
const mapWindow = 32 << 20

// madvPopulateRead is MADV_POPULATE_READ (Linux 5.14): map the pages of a
// range, reading them in if needed, as read faults would. Older kernels
// answer EINVAL and the pages fault in as before.
const madvPopulateRead = 22

// sendMapped writes f's bytes [off, off+n) to w from read-only mappings of
// the file, a window at a time, in ChunkSize writes: the file's pages go
// from the page cache straight into the muxer's frames, never through a
// buffer of ours (one copy less than reading, and no reader goroutine).
// before is called before each write (it sets the write deadline). ok is
// false if the file could not be mapped and nothing was sent: the caller
// then reads the file instead. A fault on the mapping (the file was
// truncated under us) is returned as an error instead of crashing the
// process; the mapping is only touched on this goroutine, inside w.Write
// (the muxer copies the bytes into its frame before Write returns).
func sendMapped(w io.Writer, f *os.File, off, n int64, before func()) (sent int64, ok bool, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			ok, err = true, fmt.Errorf("bundle: send: the file changed while it was sent: %v", r)
		}
	}()
	for sent < n {
		// Map from the page boundary at or below the next byte.
		pos := off + sent
		base := pos &^ int64(os.Getpagesize()-1)
		end := min(base+mapWindow, off+n)
		var m []byte
		var merr error
		if cerr := rc.Control(func(fd uintptr) {
			m, merr = syscall.Mmap(int(fd), base, int(end-base), syscall.PROT_READ, syscall.MAP_SHARED)
		}); cerr != nil || merr != nil {
			if sent == 0 {
				return 0, false, nil
			}
			return sent, true, fmt.Errorf("bundle: send: map: %w", errors.Join(cerr, merr))
		}
		k, err := writeMapped(w, m, pos-base, before)
		sent += k
		if err != nil {
			return sent, true, err
		}
	}
	return sent, true, nil
}

// writeMapped writes m[from:] to w in ChunkSize writes and unmaps m, also
// when a fault on it panics.
func writeMapped(w io.Writer, m []byte, from int64, before func()) (int64, error) {
	defer syscall.Munmap(m)
	_ = syscall.Madvise(m, syscall.MADV_SEQUENTIAL)
	page := int64(os.Getpagesize())
	var sent int64
	for p := from; p < int64(len(m)); {
		k := min(int64(len(m))-p, ChunkSize)
		// Map the chunk's pages in one call: faulting them in one by one
		// (64 KiB per fault with the kernel's fault-around) cost ~2% of
		// a transfer's CPU. Errors are ignored: a page that cannot be
		// mapped faults again in Write, and that fault is what reports it.
		_ = syscall.Madvise(m[p&^(page-1):p+k], madvPopulateRead)
		before()
		if _, err := w.Write(m[p : p+k]); err != nil {
			return sent, err
		}
		p += k
		sent += k
	}
	return sent, nil
}
