//go:build linux && !race

package sockio

import (
	"syscall"
	"unsafe"
)

const enabled = true

// Read is read(2) on fd, a non-blocking descriptor, without the runtime's syscall
// bookkeeping: for a call that cannot block. It never fails with EINTR (it tries again).
func Read(fd uintptr, p []byte) (int, syscall.Errno) { return call(syscall.SYS_READ, fd, p) }

// Write is write(2) on fd, a non-blocking descriptor, as Read.
func Write(fd uintptr, p []byte) (int, syscall.Errno) { return call(syscall.SYS_WRITE, fd, p) }

// call makes the system call trap(fd, p, len(p)), again while it is interrupted: 0 bytes
// with the errno when it fails.
func call(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), 0
		case syscall.EINTR:
		default:
			return 0, errno
		}
	}
}
