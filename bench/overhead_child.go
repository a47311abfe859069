package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// The overhead scenario's child processes: each proxy runs as one, started, waited for and
// stopped here, and its CPU time (its threads and its own children) read from /proc.

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every
// Linux architecture Go supports (it is fixed by the kernel ABI, not by CONFIG_HZ).
const clockTicks = 100

// procCPU is the CPU time (user + system) of process pid and its children, from /proc.
func procCPU(pid int) (time.Duration, error) {
	var ticks int64
	err := eachOfProcess(pid, func(p string) error {
		t, _, err := statTicks(p)
		ticks += t
		return err
	})
	return time.Duration(ticks) * time.Second / clockTicks, err
}

// eachOfProcess calls read with the /proc name of process pid, then of each of its child
// processes (nginx's workers). An error reading pid itself is returned; a child's is
// ignored (it may have exited meanwhile).
func eachOfProcess(pid int, read func(pid string) error) error {
	self := strconv.Itoa(pid)
	if err := read(self); err != nil {
		return err
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == self {
			continue
		}
		if _, ppid, err := statTicks(e.Name()); err == nil && ppid == pid {
			read(e.Name())
		}
	}
	return nil
}

// statTicks reads utime + stime and the parent's pid from /proc/PID/stat.
func statTicks(pid string) (ticks int64, ppid int, err error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%s/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%s/stat: %d fields", pid, len(f))
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%s/stat: %w", pid, err)
	}
	return ut + st, ppid, nil
}

// freePort returns a loopback address that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// child is a proxy running as a child process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

// startChild starts argv with its output in dir/name.log.
func startChild(dir, name string, argv ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	c := &child{name: name, cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { c.done <- cmd.Wait(); f.Close() }()
	return c, nil
}

// stop asks the child to stop (SIGTERM), and kills it after 5 s.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// waitReady polls url until the backend answers through it, for at most 10 s.
func (c *child) waitReady(ctx context.Context, url string) error {
	return c.waitFor(ctx, 10*time.Second, func(cl *http.Client) bool {
		res, err := cl.Get(url)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode == http.StatusOK && res.Header.Get(sim.HeaderSite) != ""
	})
}

// waitFor polls ok every 50 ms until it holds, for at most limit; it fails early when the
// child exits.
func (c *child) waitFor(ctx context.Context, limit time.Duration, ok func(*http.Client) bool) error {
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok(cl) {
			return nil
		}
		select {
		case err := <-c.done:
			c.done <- err
			out, _ := os.ReadFile(c.log)
			return fmt.Errorf("%s exited (%v): %s", c.name, err, strings.TrimSpace(lastLines(string(out), 5)))
		case <-deadline.C:
			return fmt.Errorf("%s not ready within %s (log: %s)", c.name, limit, c.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// lookPathSbin finds a program on PATH, or in /usr/sbin (where Debian puts nginx and
// haproxy, and which a user's PATH often lacks).
func lookPathSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return exec.LookPath(filepath.Join("/usr/sbin", name))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
