package store

import (
	"fmt"
	"syscall"

	"github.com/confabhq/confab/mesh"
)

// MemTableSize is badger's memtable size here. Its log is a sparse mapped
// file of twice this size, filled as envelopes are written.
const MemTableSize = 8 << 20

// DefaultMinFreeBytes is what one memtable can still take plus room for
// the next flush to start.
const DefaultMinFreeBytes = MemTableSize + 4<<20

// ErrDiskFull: the filesystem has less free space than Config.MinFreeBytes;
// nothing was written. Appends succeed again once space returns.
var ErrDiskFull = fmt.Errorf("store: disk full: %w", mesh.ErrStorageFull)

// checkSpace refuses a batch while the store's filesystem is below its
// reserve. It costs one statfs per group commit.
func (db *DB) checkSpace() error {
	if db.cfg.InMemory || db.cfg.MinFreeBytes == 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(db.cfg.Dir, &st); err != nil {
		return nil // cannot tell; let badger try
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < db.cfg.MinFreeBytes {
		db.diskFull.Add(1)
		return fmt.Errorf("%w (%d bytes free in %s, %d kept in reserve)", ErrDiskFull, free, db.cfg.Dir, db.cfg.MinFreeBytes)
	}
	return nil
}
