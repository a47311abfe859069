package sim

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackendAnswersAndNamesItself(t *testing.T) {
	b, err := Start("127.0.0.1:0", "idc1", "idc1-1", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get(b.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.Header.Get(HeaderSite) != "idc1" || res.Header.Get(HeaderBackend) != "idc1-1" || string(body) != "hello from idc1/idc1-1\n" {
		t.Fatalf("got %v %q", res.Header, body)
	}
}

func TestStartRefusesNonLoopbackAndTakenPorts(t *testing.T) {
	if _, err := Start("0.0.0.0:0", "s", "n", 0); err == nil || !strings.Contains(err.Error(), "not a loopback") {
		t.Fatalf("Start on 0.0.0.0: %v", err)
	}
	b, err := Start("127.0.0.1:0", "s", "n", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := Start(strings.TrimPrefix(b.URL(), "http://"), "s", "m", 0); err == nil {
		t.Fatal("second backend on a taken port started")
	}
}
