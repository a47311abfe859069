package proxy_test

import (
	"testing"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/proxytest"
)

func TestBuildNeedsRegistry(t *testing.T) {
	cfg := proxytest.MustConfig(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{"http://127.0.0.1:1"}}}, ""))
	if tbl, err := proxy.Build(cfg, proxy.Deps{}); err == nil {
		tbl.Close()
		t.Fatal("Build without a Registry succeeded")
	}
}
