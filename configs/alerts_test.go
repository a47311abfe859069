package configs_test

// Tests of the alerting rules' unit tests (prometheus-alerts.test.yaml, promtool's format):
// that they cover every alert, firing and quiet, and that promtool passes them. Debian's
// prometheus package ships promtool; without it the promtool test skips, unless
// SPILLWAY_REQUIRE_PROMTOOL is set (as CI does), where it fails.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const alertTestsFile = "prometheus-alerts.test.yaml"

// ruleTests is the part of a promtool unit-test file the tests look at.
type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertUnitTestsCoverEveryAlert checks, without promtool, that the unit tests load the
// rule file, name only alerts it has, and have for every alert (each severity) a case where
// it fires and for every alert name one where it stays quiet.
func TestAlertUnitTestsCoverEveryAlert(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&rt); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	if !slices.Equal(rt.RuleFiles, []string{alertsFile}) {
		t.Errorf("%s: rule_files %q; want [%q]", alertTestsFile, rt.RuleFiles, alertsFile)
	}
	// The header says how to load the file: by its own name.
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := `rule_files: ["` + alertsFile + `"]`; !bytes.Contains(rules, []byte(want)) {
		t.Errorf("%s: the header does not say %s", alertsFile, want)
	}

	fires := map[string]bool{} // alert/severity
	quiet := map[string]bool{} // alert
	names := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			names[r.Alert] = true
		}
	}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if !names[a.Alertname] {
				t.Errorf("%s: test %q at %s: no alert %q in %s (a test of a misspelt alert passes for nothing)",
					alertTestsFile, tc.Name, a.EvalTime, a.Alertname, alertsFile)
			}
			if len(a.ExpAlerts) == 0 {
				quiet[a.Alertname] = true
			}
			for _, e := range a.ExpAlerts {
				fires[a.Alertname+"/"+e.ExpLabels["severity"]] = true
			}
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if key := r.Alert + "/" + r.Labels["severity"]; !fires[key] {
				t.Errorf("%s: no case where %s (severity %s) fires", alertTestsFile, r.Alert, r.Labels["severity"])
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no case where %s stays quiet", alertTestsFile, r.Alert)
			}
		}
	}
	// The outage case of issue 14: a site down must not set the others off target.
	if !strings.Contains(string(data), "name: site outage, the others on target") {
		t.Errorf("%s: no site-outage case for SpillwayShareOffTarget", alertTestsFile)
	}
}

// TestAlertRulesPromtool runs promtool check rules on the rule file and promtool test rules
// on its unit tests.
func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SPILLWAY_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool is not installed and SPILLWAY_REQUIRE_PROMTOOL is set (Debian: apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (Debian: apt-get install prometheus); CI runs this test")
	}
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertTestsFile}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
