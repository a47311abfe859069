//go:build linux && !race

package sockio

import (
	"syscall"
	"unsafe"
)

const enabled = true

// Read is read(2) on fd, a non-blocking descriptor, without the runtime's syscall
// bookkeeping: for a call that cannot block.
func Read(fd uintptr, p []byte) (int, syscall.Errno) { return call(syscall.SYS_READ, fd, p) }

// Write is write(2) on fd, a non-blocking descriptor, as Read.
func Write(fd uintptr, p []byte) (int, syscall.Errno) { return call(syscall.SYS_WRITE, fd, p) }

// call makes the system call trap(fd, p, len(p)): 0 bytes with the errno when it fails.
func call(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}
