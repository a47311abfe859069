package runtime

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// A scrape reads the Reloader through Snapshot, which never takes its lock: with the lock
// held (as a reload or an operator's change holds it), the scrape still completes, and says
// what is served.
func TestMetricsScrapeDoesNotWaitOnTheReloader(t *testing.T) {
	idc1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "idc1") }))
	defer idc1.Close()
	path := filepath.Join(t.TempDir(), "spillway.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("sites: [{name: idc1, weight: 3, backends: [%q]}]\n", idc1.URL)), 0o640); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r := NewReloader(ReloaderOptions{Path: path, Metrics: reg})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); r.Close() }()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(r.Handler())
	defer front.Close()
	resp, err := front.Client().Get(front.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	front.Client().CloseIdleConnections()
	// The request is counted when the Handler finishes it, which may be just after the
	// client has read the answer.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mfs, _ := reg.Gather()
		if hasSeries(mfs, "spillway_requests_total", "site", "idc1", "code", "200") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request was not counted within 10 s")
		}
	}

	r.mu.Lock() // as a reload in progress would
	defer r.mu.Unlock()
	gathered := make(chan []*dto.MetricFamily, 1)
	go func() {
		mfs, err := reg.Gather()
		if err != nil {
			t.Errorf("gather: %v", err)
		}
		gathered <- mfs
	}()
	select {
	case mfs := <-gathered:
		wantValue(t, mfs, 3, "spillway_site_weight", "site", "idc1")
		wantValue(t, mfs, 1, "spillway_backend_up", "site", "idc1", "backend", idc1.URL)
		wantValue(t, mfs, 1, "spillway_requests_total", "site", "idc1", "code", "200")
		wantValue(t, mfs, 0, "spillway_config_reloads_total", "result", "success")
	case <-time.After(5 * time.Second):
		t.Fatal("the scrape did not complete in 5 s while the Reloader's lock was held")
	}
}

// wantValue checks that mfs has the series name{labels} with value want.
func wantValue(t *testing.T, mfs []*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	m := series(mfs, name, labels...)
	if m == nil {
		t.Errorf("no series %s%v", name, labels)
		return
	}
	if v := m.GetGauge().GetValue() + m.GetCounter().GetValue(); v != want {
		t.Errorf("%s%v = %v, want %v", name, labels, v, want)
	}
}

func hasSeries(mfs []*dto.MetricFamily, name string, labels ...string) bool {
	return series(mfs, name, labels...) != nil
}

// series is the series name{labels} of mfs, or nil.
func series(mfs []*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return m
		}
	}
	return nil
}
