//go:build unix && (!linux || race)

package sockio

import "syscall"

// Under the race detector (and off Linux) the calls are package syscall's, which tell the
// detector what the kernel read and wrote; Wrap still wraps under the race detector, so
// that the tests run Conn's code.
const enabled = true

// Read is read(2) on fd, a non-blocking descriptor.
func Read(fd uintptr, p []byte) (int, syscall.Errno) { return errnoOf(syscall.Read(int(fd), p)) }

// Write is write(2) on fd, a non-blocking descriptor.
func Write(fd uintptr, p []byte) (int, syscall.Errno) { return errnoOf(syscall.Write(int(fd), p)) }

func errnoOf(n int, err error) (int, syscall.Errno) {
	if err != nil {
		errno, _ := err.(syscall.Errno)
		if errno == 0 {
			errno = syscall.EIO
		}
		return 0, errno
	}
	return n, 0
}
