//go:build unix && (!linux || race)

package sockio

import "syscall"

// Under the race detector (and off Linux) the calls are package syscall's, which tell the
// detector what the kernel read and wrote; Wrap still wraps under the race detector, so
// that the tests run Conn's code.
const enabled = true

// Read is read(2) on fd, a non-blocking descriptor. It never fails with EINTR (it tries
// again).
func Read(fd uintptr, p []byte) (int, syscall.Errno) { return call(syscall.Read, fd, p) }

// Write is write(2) on fd, a non-blocking descriptor, as Read.
func Write(fd uintptr, p []byte) (int, syscall.Errno) { return call(syscall.Write, fd, p) }

func call(f func(int, []byte) (int, error), fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := f(int(fd), p)
		if err == nil {
			return n, 0
		}
		errno, _ := err.(syscall.Errno)
		switch errno {
		case syscall.EINTR:
		case 0:
			return 0, syscall.EIO
		default:
			return 0, errno
		}
	}
}
