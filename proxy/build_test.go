package proxy_test

import (
	"testing"

	"github.com/spillway/spillway/proxy"
)

func TestBuildNeedsRegistry(t *testing.T) {
	cfg := mustConfig(t, configYAML([]site{{"idc1", 1, []string{"http://127.0.0.1:1"}}}, ""))
	if tbl, err := proxy.Build(cfg, proxy.Deps{}); err == nil {
		tbl.Close()
		t.Fatal("Build without a Registry succeeded")
	}
}
