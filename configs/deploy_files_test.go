package configs_test

// Tests of the deploy files in configs/deploy: the Kubernetes manifests, the systemd unit
// and the container build file. Nothing here can start a cluster or a container; what is
// checked is that each file is well formed and agrees with Spillway and with the others:
// the config in the ConfigMap is valid, probes name the admin API's paths and port, grace
// periods cover the shutdown, selectors select, and the binary builds as the Containerfile
// builds it and says the version it was given.

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spillway/spillway/configs"
)

// k8sObject is the part of a Kubernetes object these tests read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name      string `yaml:"name"`
						ValueFrom *struct {
							SecretKeyRef *struct {
								Name string `yaml:"name"`
								Key  string `yaml:"key"`
							} `yaml:"secretKeyRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					ReadinessProbe k8sProbe `yaml:"readinessProbe"`
					LivenessProbe  k8sProbe `yaml:"livenessProbe"`
					Lifecycle      struct {
						PreStop struct {
							Sleep struct {
								Seconds int `yaml:"seconds"`
							} `yaml:"sleep"`
						} `yaml:"preStop"`
					} `yaml:"lifecycle"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Name       string `yaml:"name"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas  int `yaml:"minReplicas"`
		MinAvailable int `yaml:"minAvailable"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

func TestKubernetesManifests(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("deploy", "kubernetes", "spillway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o k8sObject
		if err := dec.Decode(&o); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("document %d: %v", len(objs)+1, err)
		}
		if _, dup := objs[o.Kind]; dup || o.Kind == "" {
			t.Fatalf("kind %q twice or missing", o.Kind)
		}
		objs[o.Kind] = o
	}
	for _, k := range []string{"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} {
		if _, ok := objs[k]; !ok {
			t.Fatalf("no %s in the manifests", k)
		}
	}
	cm, dep, svc, hpa, pdb := objs["ConfigMap"], objs["Deployment"], objs["Service"], objs["HorizontalPodAutoscaler"], objs["PodDisruptionBudget"]

	// The config the pods run is valid, as `spillway validate` would find it.
	cfg, err := configs.Parse("ConfigMap spillway.yaml", []byte(cm.Data["spillway.yaml"]))
	if err != nil {
		t.Fatalf("the ConfigMap's config is refused: %v", err)
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	port := func(addr string) int {
		i := strings.LastIndexByte(addr, ':')
		n, err := strconv.Atoi(addr[i+1:])
		if err != nil {
			t.Fatalf("port of %q: %v", addr, err)
		}
		return n
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != port(cfg.Listen.HTTP) || ports["admin"] != port(cfg.Admin.Listen) {
		t.Errorf("container ports %v, config listens on %s and admin on %s", ports, cfg.Listen.HTTP, cfg.Admin.Listen)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe.HTTPGet.Port != "admin" || c.LivenessProbe.HTTPGet.Port != "admin" {
		t.Errorf("probes %+v %+v, want /readyz and /healthz on the admin port", c.ReadinessProbe, c.LivenessProbe)
	}
	token := false
	for _, e := range c.Env {
		token = token || e.Name == "SPILLWAY_ADMIN_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}
	if !token {
		t.Error("the admin API listens off loopback, and SPILLWAY_ADMIN_TOKEN does not come from a Secret")
	}
	// The grace period covers the preStop pause, the drain delay and the shutdown grace,
	// with room.
	pause := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace < pause+cfg.Timeouts.DrainDelay+cfg.Timeouts.Shutdown+5*time.Second || pause <= 0 {
		t.Errorf("terminationGracePeriodSeconds %s, preStop pause %s, timeouts.drain_delay %s, timeouts.shutdown %s: want a pause, and a grace of all three plus 5s",
			grace, pause, cfg.Timeouts.DrainDelay, cfg.Timeouts.Shutdown)
	}
	// The config file is where -config says, from the ConfigMap.
	if len(c.Args) != 3 || c.Args[0] != "run" || c.Args[1] != "-config" {
		t.Fatalf("args %q, want run -config FILE", c.Args)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			mounted = mounted || m.Name == v.Name && v.ConfigMap.Name == cm.Metadata.Name && filepath.Join(m.MountPath, "spillway.yaml") == c.Args[2]
		}
	}
	if !mounted {
		t.Errorf("%s is not the ConfigMap's spillway.yaml mounted", c.Args[2])
	}
	// Selectors select the pods; the Service, HPA and PDB name what exists.
	for what, sel := range map[string]map[string]string{"Deployment": dep.Spec.Selector.MatchLabels, "Service": svc.Spec.Selector.MatchLabels, "PodDisruptionBudget": pdb.Spec.Selector.MatchLabels} {
		if len(sel) == 0 {
			if what == "Service" {
				continue // a Service's selector is a plain map, read below
			}
			t.Errorf("%s has no selector", what)
		}
		for k, v := range sel {
			if pod := dep.Spec.Template.Metadata.Labels; pod[k] != v {
				t.Errorf("%s selects %s=%s, the pods have %v", what, k, v, pod)
			}
		}
	}
	var svcSel struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
		} `yaml:"spec"`
	}
	docs := strings.Split(string(data), "\n---\n")
	for _, d := range docs {
		if strings.Contains(d, "kind: Service\n") {
			if err := yaml.Unmarshal([]byte(d), &svcSel); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(svcSel.Spec.Selector) == 0 {
		t.Error("the Service has no selector")
	}
	for k, v := range svcSel.Spec.Selector {
		if dep.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("the Service selects %s=%s, which the pods do not have", k, v)
		}
	}
	for _, p := range svc.Spec.Ports {
		if _, ok := ports[p.TargetPort]; !ok {
			t.Errorf("the Service's port %s targets %q, not a container port", p.Name, p.TargetPort)
		}
	}
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != dep.Metadata.Name {
		t.Errorf("the HPA scales %+v, not the Deployment %s", hpa.Spec.ScaleTargetRef, dep.Metadata.Name)
	}
	if hpa.Spec.MinReplicas < 2 || pdb.Spec.MinAvailable < 1 || pdb.Spec.MinAvailable >= hpa.Spec.MinReplicas || dep.Spec.Replicas != hpa.Spec.MinReplicas {
		t.Errorf("replicas %d, HPA min %d, PDB minAvailable %d: want min ≥ 2, the PDB below it so that a node can drain",
			dep.Spec.Replicas, hpa.Spec.MinReplicas, pdb.Spec.MinAvailable)
	}
}

// unitFile reads a systemd unit: key → values, by section.
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	path := filepath.Join("deploy", "systemd", "spillway.service")
	u := unitFile(t, path)
	s := u["Service"]
	if s == nil || u["Unit"] == nil || u["Install"] == nil {
		t.Fatalf("sections %v, want Unit, Service, Install", u)
	}
	start := regexp.MustCompile(`^(\S+/spillway) run -config (\S+)$`).FindStringSubmatch(strings.Join(s["ExecStart"], ""))
	pre := regexp.MustCompile(`^(\S+/spillway) validate (\S+)$`).FindStringSubmatch(strings.Join(s["ExecStartPre"], ""))
	if start == nil || pre == nil || start[1] != pre[1] || start[2] != pre[2] {
		t.Errorf("ExecStart %q and ExecStartPre %q: want run -config FILE, validated first", s["ExecStart"], s["ExecStartPre"])
	}
	if r := strings.Join(s["ExecReload"], ""); !strings.Contains(r, "-HUP $MAINPID") {
		t.Errorf("ExecReload %q, want SIGHUP to the main process", r)
	}
	stop, err := time.ParseDuration(strings.Join(s["TimeoutStopSec"], ""))
	if err != nil || stop < configs.DefaultShutdownTimeout+5*time.Second {
		t.Errorf("TimeoutStopSec %q: want at least timeouts.shutdown's default %s plus 5s", s["TimeoutStopSec"], configs.DefaultShutdownTimeout)
	}
	// The state file of the example config's comment is in the unit's StateDirectory.
	example, err := os.ReadFile("spillway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`#\s+file: (/var/lib/([^/]+)/\S+)`).FindSubmatch(example)
	if m == nil || strings.Join(s["StateDirectory"], "") != string(m[2]) {
		t.Errorf("StateDirectory %q, the example config's state file %q", s["StateDirectory"], m)
	}
	if strings.Join(s["KillSignal"], "") != "SIGTERM" || strings.Join(s["NoNewPrivileges"], "") != "yes" {
		t.Errorf("KillSignal %q NoNewPrivileges %q", s["KillSignal"], s["NoNewPrivileges"])
	}
}

// The Containerfile builds the binary as this test does, and the version it passes reaches
// `spillway version`.
func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("deploy", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	build := regexp.MustCompile(`RUN (CGO_ENABLED=0 go build -trimpath -ldflags "([^"]*)" -o (\S+) (\S+))`).FindStringSubmatch(text)
	if build == nil {
		t.Fatal("no static go build line")
	}
	if !strings.Contains(text, "\nUSER 65532:65532\n") || !strings.Contains(text, "EXPOSE 8080 8443 9901") {
		t.Error("want a non-root USER and EXPOSE of the listen, listen.https and admin ports")
	}
	if m := regexp.MustCompile(`CMD \["run", "-config", "([^"]+)"\]`).FindStringSubmatch(text); m == nil || !strings.Contains(text, "COPY configs/spillway.yaml "+m[1]+"\n") {
		t.Errorf("CMD's config %v is not the one copied in", m)
	}
	if testing.Short() {
		t.Skip("building the binary: not with -short")
	}
	out := filepath.Join(t.TempDir(), "spillway")
	ldflags := strings.ReplaceAll(build[2], "${VERSION}", "v9.9.9-test")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "../"+strings.TrimPrefix(build[4], "./"))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	v, err := exec.Command(out, "version").Output()
	if err != nil || !strings.Contains(string(v), "v9.9.9-test") {
		t.Errorf("spillway version: %q, %v; want the version the build passed", v, err)
	}
	if runtime.GOOS == "linux" {
		if f, err := exec.Command("file", out).Output(); err == nil && !strings.Contains(string(f), "statically linked") {
			t.Errorf("not a static binary: %s", f)
		}
	}
}
