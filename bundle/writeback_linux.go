package bundle

import (
	"os"
	"syscall"
)

// startWriteback asks the kernel to begin writing f's bytes [off, off+n) to
// disk now, without waiting for it, so that the fsync at the end of a
// transfer finds little left to do. Errors are ignored: the fsync that
// follows is what guarantees durability.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SyncFileRange(int(fd), off, n, 0x2 /* SYNC_FILE_RANGE_WRITE */)
	})
}
