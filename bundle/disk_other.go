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
