package telemetry

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
)

// AccessLog writes one JSON line per request (config: access_log). Answers below 400 may be
// sampled; errors and refusals are always written. It is a proxy.Recorder and the
// Reloader's runtime.AccessLog, reconfigured on every reload (Prepare, or Configure): the
// output file is reopened only when it changes. Safe for concurrent use; Record takes no
// lock.
type AccessLog struct {
	state atomic.Pointer[accessState]
	mu    sync.Mutex // serialises Configure
	rand  func() float64
}

type accessState struct {
	log    *zap.Logger // nil: off
	output string
	sample float64
	close  func()
	// users counts the Records writing through this state, so that a state replaced by
	// Configure closes its output only once the last line is written.
	users atomic.Int64
	// shared is set when the state writes to the output of the one it replaces (the same
	// output, another sampling): replacing it must not close that output.
	shared bool
	// file is the output when it is a file (nil for stdout and stderr), which Reopen opens
	// again; buffered is what writes to it.
	file     *logFile
	buffered *zapcore.BufferedWriteSyncer
}

// NewAccessLog returns an access log that is off until Configure turns it on. rand is the
// sampler's source (nil: math/rand/v2).
func NewAccessLog(rand_ func() float64) *AccessLog {
	a := &AccessLog{rand: rand_}
	if a.rand == nil {
		a.rand = rand.Float64
	}
	a.state.Store(&accessState{})
	return a
}

// Configure applies cfg's access_log section: off when absent, else its output ("stdout",
// "stderr" or a file, opened for appending) and sampling. It is prepare then commit.
func (a *AccessLog) Configure(cfg *configs.Config) error {
	next, err := a.prepare(cfg)
	if err != nil {
		return err
	}
	a.commit(next)
	return nil
}

// prepare opens what cfg's access_log needs, without changing what is written now: a
// reload opens the new output before it builds anything, so that an output that cannot be
// opened refuses the config before anything else changed. Pass the result to commit, or to
// discard if the config is refused after all.
func (a *AccessLog) prepare(cfg *configs.Config) (*accessState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.state.Load()
	al := cfg.AccessLog
	if al == nil {
		return &accessState{}, nil
	}
	if al.Output == old.output && old.log != nil {
		return &accessState{log: old.log, output: old.output, sample: al.Sample2xx, close: old.close, shared: true,
			file: old.file, buffered: old.buffered}, nil
	}
	sink, file, closeSink, err := openOutput(al.Output)
	if err != nil {
		return nil, configs.Errors{cfg.Errorf("access_log.output", "cannot open %s: %v", configs.Quote(al.Output), err)}
	}
	// Lines are written in batches (up to 256 KiB, or every second), not one write per
	// request: the log must not cost the request path a system call each.
	buffered := &zapcore.BufferedWriteSyncer{WS: sink, FlushInterval: time.Second}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(accessEncoderConfig()), buffered, zapcore.InfoLevel))
	return &accessState{log: log, output: al.Output, sample: al.Sample2xx,
		close: func() { buffered.Stop(); closeSink() }, file: file, buffered: buffered}, nil
}

// accessEncoderConfig is the format of the access log's lines: zap's JSON, with the time
// in RFC 3339 (nanoseconds), the message under "msg", and no level. Record encodes the
// same bytes itself (appendAccessLine).
func accessEncoderConfig() zapcore.EncoderConfig {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey, enc.MessageKey, enc.LevelKey = "time", "msg", ""
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	return enc
}

// commit makes next, from prepare, what is written, and closes the output it replaces
// (unless next shares it).
func (a *AccessLog) commit(next *accessState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.state.Swap(next)
	if !next.shared || next.log != old.log {
		old.retire()
	}
}

// Prepare is prepare, with its commit and discard (runtime.AccessLog).
func (a *AccessLog) Prepare(cfg *configs.Config) (commit, discard func(), err error) {
	next, err := a.prepare(cfg)
	if err != nil {
		return nil, nil, err
	}
	return func() { a.commit(next) }, func() { a.discard(next) }, nil
}

// discard closes what prepare opened for a config that is not served after all.
func (a *AccessLog) discard(next *accessState) {
	if next != nil && !next.shared {
		next.closeSink()
	}
}

// retire closes the output of a state that has just been replaced, once the Records still
// writing through it are done.
func (s *accessState) retire() {
	for s.users.Load() > 0 {
		time.Sleep(50 * time.Microsecond) // a line being written: microseconds
	}
	s.closeSink()
}

func (s *accessState) closeSink() {
	if s.close != nil {
		s.log.Sync()
		s.close() // stops the buffer's flusher; stdout and stderr themselves stay open
	}
}

// Reopen closes the access log file and opens it again at the same path, for logrotate:
// after the file is renamed, the lines go to a new file under the old name. What was
// buffered is written to the old file first; a line written meanwhile goes to one file or
// the other, none is lost. It returns the path reopened, "" when the output is not a file
// (stdout, stderr, off): then it does nothing. When the path cannot be opened, the lines
// keep going to the old file.
func (a *AccessLog) Reopen() (string, error) {
	a.mu.Lock() // the state cannot be replaced (and closed) meanwhile
	defer a.mu.Unlock()
	s := a.state.Load()
	if s.file == nil {
		return "", nil
	}
	s.buffered.Sync() // (an error writing the old file is not the new one's)
	return s.file.path, s.file.reopen()
}

// Close flushes and closes the output.
func (a *AccessLog) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.state.Swap(&accessState{}).retire()
}

// Record writes the line of one request.
func (a *AccessLog) Record(i *proxy.RequestInfo) {
	var s *accessState
	for {
		s = a.state.Load()
		if s.log == nil {
			return
		}
		s.users.Add(1)
		if a.state.Load() == s {
			break // Configure has not replaced it since: it stays open until users is 0
		}
		s.users.Add(-1)
	}
	defer s.users.Add(-1)
	if i.Status < 400 && i.Reason == "" && s.sample < 1 && a.rand() >= s.sample {
		return
	}
	// The line zap's logger (s.log) would write, encoded here and written to its output.
	bp := accessLines.Get().(*[]byte)
	line := appendAccessLine((*bp)[:0], i)
	if _, err := s.buffered.Write(line); err != nil {
		fmt.Fprintf(os.Stderr, "%v write error: %v\n", i.Start, err) // (as zap reports one)
	}
	if cap(line) <= 64<<10 { // (a line with a huge path is not kept for every other)
		*bp = line
		accessLines.Put(bp)
	}
}

// openOutput opens an access_log.output: "stdout", "stderr", a URL zap knows, or a file
// path, opened for appending (created if need be) as a logFile that can be reopened.
func openOutput(output string) (zapcore.WriteSyncer, *logFile, func(), error) {
	if output == "stdout" || output == "stderr" || strings.Contains(output, "://") {
		sink, closeSink, err := zap.Open(output)
		return sink, nil, closeSink, err
	}
	f, err := openAppend(output)
	if err != nil {
		return nil, nil, nil, err
	}
	lf := &logFile{path: output, f: f}
	return lf, lf, lf.close, nil
}

func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666) // (as zap.Open did)
}

// logFile is an access log file that reopen replaces with a new one at the same path.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *logFile) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
}

// reopen opens path again and closes the file it had. When path cannot be opened the old
// file stays.
func (l *logFile) reopen() error {
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Close()
}
