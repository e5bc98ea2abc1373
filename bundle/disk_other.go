//go:build !linux

package bundle

import (
	"errors"
	"os"
)

// setDirect always fails where O_DIRECT does not exist: every write goes
// through the page cache.
func setDirect(f *os.File, on bool) error {
	if !on {
		return nil
	}
	return errors.New("bundle: no direct I/O on this platform")
}

// isDirectRefused is never true where direct I/O is never on.
func isDirectRefused(error) bool { return false }

// startWriteback is a no-op where sync_file_range does not exist; the final
// fsync does all the work.
func startWriteback(f *os.File, off, n int64) {}

// writev writes bufs one after the other where there is no writev to call.
func writev(f *os.File, bufs [][]byte) (int64, error) {
	var n int64
	for _, b := range bufs {
		m, err := f.Write(b)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
