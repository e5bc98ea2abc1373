package bundle

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"
)

// setDirect turns O_DIRECT on or off for f's open file description. It fails
// where the file system does not support direct I/O (tmpfs on older kernels,
// some FUSE and network file systems).
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		fl, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		if e != 0 {
			serr = e
			return
		}
		if on {
			fl |= syscall.O_DIRECT
		} else {
			fl &^= syscall.O_DIRECT
		}
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFL, fl); e != 0 {
			serr = e
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// isDirectRefused reports whether a write failed only because the file
// system would not do it as direct I/O; it is then retried through the page
// cache.
func isDirectRefused(err error) bool {
	var e syscall.Errno
	return errors.As(err, &e) && e == syscall.EINVAL
}

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

// writev writes bufs (none empty) to f at its offset in one system call and
// returns how many bytes it wrote.
func writev(f *os.File, bufs [][]byte) (int64, error) {
	iov := make([]syscall.Iovec, len(bufs))
	for i, b := range bufs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n uintptr
	var errno syscall.Errno
	if err := rc.Write(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			if errno != syscall.EINTR {
				return true
			}
		}
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	if n == 0 {
		return 0, io.ErrShortWrite
	}
	return int64(n), nil
}
