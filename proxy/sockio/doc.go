// Package sockio reads and writes a connected TCP socket with non-blocking system calls
// made inside its syscall.RawConn callbacks, where net's own Read and Write go through
// the runtime's blocking-syscall bookkeeping (entersyscall, exitsyscall).
//
// That bookkeeping is what makes a lightly loaded Go proxy costly: the first system call
// after the process went idle wakes the runtime's monitor thread (sysmon), which then
// polls every 20 µs (a nanosleep and a context switch each time) until it sees every P
// idle again. At a few hundred requests a second on two cores that was four nanosleeps
// and a futex wake per request: a fifth of the proxy's CPU. A socket's descriptor is
// non-blocking (the runtime's poller waits for it), so its read or write never blocks and
// needs none of it; the poller, deadlines and Close work as with net.Conn, as RawConn's
// Read and Write wait on them.
//
// Under the race detector the calls go through package syscall instead, which tells the
// detector about the memory the kernel reads and writes.
package sockio
