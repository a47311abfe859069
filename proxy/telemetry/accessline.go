package telemetry

import (
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spillway/spillway/proxy"
)

// The access log line, encoded by hand: the bytes zap's JSON encoder wrote for it with the
// access log's encoder config (accessEncoderConfig), at a fraction of the cost. zap built a
// Field for each of the twenty values, checked the entry, and encoded through interfaces;
// this appends the fixed fields straight to a pooled buffer. TestAccessLineAsZap holds the
// two to the same bytes.

// accessLines are the buffers lines are encoded into.
var accessLines = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// appendAccessLine appends the line of i, newline included.
func appendAccessLine(b []byte, i *proxy.RequestInfo) []byte {
	b = append(b, '{')
	if !i.Start.IsZero() {
		b = append(b, `"time":"`...)
		b = i.Start.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `",`...)
	}
	b = append(b, `"msg":"request","request_id":"`...)
	b = appendJSONString(b, i.ID)
	b = appendStringField(b, "method", i.Method)
	b = appendStringField(b, "host", i.Host)
	b = appendStringField(b, "path", i.Path)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(i.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, i.Bytes, 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, i.BytesIn, 10)
	b = append(b, `,"client":"`...)
	b = appendJSONString(b, i.Client)
	b = appendStringField(b, "xff", i.XFF)
	b = appendStringField(b, "user_agent", i.UserAgent)
	b = appendStringField(b, "proto", i.Proto)
	b = appendStringField(b, "tls", i.TLS)
	b = append(b, `","duration_ms":`...)
	b = appendJSONFloat(b, float64(i.Duration.Microseconds())/1000)
	b = append(b, `,"site":"`...)
	b = appendJSONString(b, i.Site)
	b = appendStringField(b, "backend", i.Backend)
	b = appendStringField(b, "preferred", i.Preferred)
	b = appendStringField(b, "spill", i.Spill)
	b = append(b, `","queued_ms":`...)
	b = appendJSONFloat(b, float64(i.Queued.Microseconds())/1000)
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(i.Retries), 10)
	b = append(b, `,"reason":"`...)
	b = appendJSONString(b, i.Reason)
	return append(b, "\"}\n"...)
}

// appendStringField closes the string before it and appends `,"key":"` and s escaped
// (without its closing quote).
func appendStringField(b []byte, key, s string) []byte {
	b = append(b, `","`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	return appendJSONString(b, s)
}

// appendJSONFloat appends f as zap does: shortest decimal, no exponent; NaN and the
// infinities as strings.
func appendJSONFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"+Inf"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Inf"`...)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// jsonPlain marks the bytes appendJSONString copies as they are: ASCII from 0x20 up, but
// for '"' and '\\'.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s escaped as zap escapes it (without quotes): '\\' and '"'
// backslashed, \n \r \t, other bytes below 0x20 as \u00XX, invalid UTF-8 as \ufffd, and
// everything else as it is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[last:i]...)
			b = append(b, `\ufffd`...)
			i++
			last = i
			continue
		}
		b = append(b, s[last:i]...)
		switch c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		i++
		last = i
	}
	return append(b, s[last:]...)
}
