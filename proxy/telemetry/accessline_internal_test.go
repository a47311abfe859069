package telemetry

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/proxy"
)

// zapAccessLine is the line zap's logger wrote for i before Record encoded it itself.
func zapAccessLine(i *proxy.RequestInfo) []byte {
	var out bytes.Buffer
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(accessEncoderConfig()), zapcore.AddSync(&out), zapcore.InfoLevel))
	ce := log.Check(zap.InfoLevel, "request")
	ce.Time = i.Start
	ce.Write(zap.String("request_id", i.ID), zap.String("method", i.Method), zap.String("host", i.Host),
		zap.String("path", i.Path), zap.Int("status", i.Status), zap.Int64("bytes", i.Bytes),
		zap.Int64("bytes_in", i.BytesIn), zap.String("client", i.Client), zap.String("xff", i.XFF),
		zap.String("user_agent", i.UserAgent), zap.String("proto", i.Proto), zap.String("tls", i.TLS),
		zap.Float64("duration_ms", float64(i.Duration.Microseconds())/1000),
		zap.String("site", i.Site), zap.String("backend", i.Backend),
		zap.String("preferred", i.Preferred), zap.String("spill", i.Spill),
		zap.Float64("queued_ms", float64(i.Queued.Microseconds())/1000),
		zap.Int("retries", i.Retries), zap.String("reason", i.Reason))
	return out.Bytes()
}

// TestAccessLineAsZap: appendAccessLine writes the bytes zap's encoder wrote, for plain
// requests and for every kind of string the escaping treats apart (quotes, backslashes,
// control bytes, invalid UTF-8, multi-byte runes, U+2028), zero and odd times, and
// durations from zero to hours and negative.
func TestAccessLineAsZap(t *testing.T) {
	strs := []string{"", "GET", "/x", "bank.example", "a\"b\\c", "tab\tnl\nret\r", "\x00\x01\x1f\x7f",
		"caf\xc3\xa9", "bad\xffutf8\xc3", "\u2028\u2029<>&", "日本語", "127.0.0.1:5555", "1.1.1.1, 2.2.2.2"}
	times := []time.Time{{}, time.Now(), time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", -3*3600-1800))}
	durs := []time.Duration{0, time.Microsecond, 1500 * time.Microsecond, 3 * time.Hour, -time.Millisecond, 1234567 * time.Nanosecond}
	rng := rand.New(rand.NewPCG(1, 2))
	s := func() string { return strs[rng.IntN(len(strs))] }
	for n := range 2000 {
		i := &proxy.RequestInfo{Start: times[rng.IntN(len(times))], Duration: durs[rng.IntN(len(durs))],
			ID: s(), Method: s(), Host: s(), Path: s(), Status: rng.IntN(600) - 1, Bytes: rng.Int64() - rng.Int64(),
			BytesIn: rng.Int64N(1 << 40), Client: s(), XFF: s(), UserAgent: s(), Proto: s(), TLS: s(),
			Site: s(), Backend: s(), Preferred: s(), Spill: s(), Queued: durs[rng.IntN(len(durs))],
			Retries: rng.IntN(4), Reason: s()}
		want := zapAccessLine(i)
		if got := appendAccessLine(nil, i); !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", n, got, want)
		}
	}
}
