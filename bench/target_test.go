package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// startTargetEnv starts simulated sites and Spillway in front of them with its admin API,
// as a deployment the target mode is pointed at.
func startTargetEnv(t *testing.T) *Env {
	t.Helper()
	env, err := StartEnv(EnvOptions{Sites: standardSites(), Dir: t.TempDir(), Service: service, Seed: 1,
		HealthInterval: 100 * time.Millisecond, QueueSize: 100, Admin: true, Affinity: "{cookie: SESSION}"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

func TestTargetSteadyWithAdmin(t *testing.T) {
	env := startTargetEnv(t)
	var progress strings.Builder
	rep, err := RunTarget(context.Background(), TargetOptions{Target: env.URL, Admin: env.AdminURL,
		Rate: 100, Duration: 2 * time.Second, Sessions: 20, SampleEvery: 200 * time.Millisecond, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(progress.String())
	r := rep.Scenarios[0]
	for _, c := range r.Checks {
		t.Log(c)
	}
	t.Logf("%v note %q", r.Figures, r.Note)
}
