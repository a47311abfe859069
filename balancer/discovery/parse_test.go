package discovery

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseMember(t *testing.T) {
	tests := []struct {
		in, want string // want "" means invalid
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080"},
		{"10.0.3.7:08080", "10.0.3.7:8080"},
		{"[::1]:8080", "[::1]:8080"},
		{"[0:0::1]:8080", "[::1]:8080"},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1:80"},
		{"[fe80::1%eth0]:80", "[fe80::1%eth0]:80"},
		{"App-1.AWS.internal:8080", "app-1.aws.internal:8080"},
		{"app.aws.internal.:8080", "app.aws.internal.:8080"},
		{"http://127.0.0.1:8080", "127.0.0.1:8080"},
		{"http://127.0.0.1:8080/", "127.0.0.1:8080"},
		{"http://127.0.0.1", "127.0.0.1:80"},
		{"https://app.aws.internal", "app.aws.internal:443"},
		{"https://[::1]:8443", "[::1]:8443"},
		{"127.0.0.1", ""},
		{"::1:8080", ""},
		{":8080", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:65536", ""},
		{"127.0.0.1:http", ""},
		{"127.0.0.1:80 extra", ""},
		{"ftp://127.0.0.1:21", ""},
		{"http://127.0.0.1:8080/path", ""},
		{"http://user@127.0.0.1:8080", ""},
		{"http://127.0.0.1:8080?x=1", ""},
		{"http://:8080", ""},
		{"bad_host!:80", ""},
		{"-app.aws:80", ""},
		{"app..aws:80", ""},
		{strings.Repeat("a", 64) + ".aws:80", ""},
	}
	for _, tc := range tests {
		got, err := parseMember(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("parseMember(%q) = %q, want an error", tc.in, got)
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("parseMember(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseTargets(t *testing.T) {
	in := "# comment\n\n  127.0.0.1:80  \r\nbad\n127.0.0.2:80#c\n\t# indented comment\n127.0.0.1:80\nalso bad # with a comment"
	members, bad := parseTargets([]byte(in))
	if want := []string{"127.0.0.1:80", "127.0.0.2:80", "127.0.0.1:80"}; !slices.Equal(members, want) {
		t.Errorf("members %q, want %q", members, want)
	}
	var lines []int
	for _, b := range bad {
		lines = append(lines, b.line)
	}
	if want := []int{4, 8}; !slices.Equal(lines, want) {
		t.Errorf("bad lines %v, want %v", lines, want)
	}
	if bad[1].text != "also bad" {
		t.Errorf("bad line text %q, want it without its comment", bad[1].text)
	}
}

func TestLookupTimeout(t *testing.T) {
	for in, want := range map[string]string{"50ms": "1s", "3s": "3s", "1m0s": "10s"} {
		d, _ := time.ParseDuration(in)
		if got := lookupTimeout(d).String(); got != want {
			t.Errorf("lookupTimeout(%s) = %s, want %s", in, got, want)
		}
	}
}
