//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is taken with flock before badger opens the directory, so a second
// confab (another process, or another DB in this one: flock locks belong to
// the open file) gets ErrLocked with a clear message instead of badger's.
const lockFile = "confab.lock"

func lockDir(dir string) (func() error, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: lock: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, lockedErr(dir)
		}
		return nil, fmt.Errorf("store: open %s: lock: %w", dir, err)
	}
	// Closing the file releases the lock; the file itself stays (removing it
	// would race with a new opener that already holds an fd to it).
	return f.Close, nil
}
