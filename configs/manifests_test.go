package configs_test

// Structural tests of the deploy files in configs/deploy: the Kubernetes manifests (kinds,
// selectors that match the pod's labels, ports and probe paths that match the config in the
// ConfigMap, the grace period against drain_delay and shutdown, the security settings), the
// systemd unit (hardening, reload by SIGHUP) and the container build file (static, non-root).
// CI also runs systemd-analyze verify on the unit.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spillway/spillway/configs"
)

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sDeployment struct {
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
			SecurityContext               struct {
				RunAsNonRoot bool `yaml:"runAsNonRoot"`
				RunAsUser    int  `yaml:"runAsUser"`
			} `yaml:"securityContext"`
			Containers []struct {
				Name  string   `yaml:"name"`
				Args  []string `yaml:"args"`
				Ports []struct {
					Name          string `yaml:"name"`
					ContainerPort int    `yaml:"containerPort"`
				} `yaml:"ports"`
				ReadinessProbe k8sProbe `yaml:"readinessProbe"`
				LivenessProbe  k8sProbe `yaml:"livenessProbe"`
				Resources      struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
				SecurityContext struct {
					AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
					ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
					Capabilities             struct {
						Drop []string `yaml:"drop"`
					} `yaml:"capabilities"`
				} `yaml:"securityContext"`
				VolumeMounts []struct {
					Name      string `yaml:"name"`
					MountPath string `yaml:"mountPath"`
				} `yaml:"volumeMounts"`
			} `yaml:"containers"`
			Volumes []struct {
				Name      string `yaml:"name"`
				ConfigMap *struct {
					Name string `yaml:"name"`
				} `yaml:"configMap"`
				Secret *struct {
					SecretName string `yaml:"secretName"`
				} `yaml:"secret"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

func loadManifests(t *testing.T) map[string][]k8sObject {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("deploy", "kubernetes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]k8sObject{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("kubernetes.yaml: %v", err)
		}
		if o.APIVersion == "" || o.Metadata.Name == "" {
			t.Fatalf("kubernetes.yaml: an object without apiVersion or name: %+v", o)
		}
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	return byKind
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var v T
	if err := o.Spec.Decode(&v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
	}
	return v
}

// within reports whether every label of sel is in labels.
func within(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	for _, kind := range []string{"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} {
		if len(objs[kind]) == 0 {
			t.Errorf("kubernetes.yaml has no %s", kind)
		}
	}
	if len(objs["Deployment"]) != 1 || len(objs["ConfigMap"]) != 1 {
		t.Fatalf("want one Deployment and one ConfigMap")
	}
	dep := objs["Deployment"][0]
	d := decodeSpec[k8sDeployment](t, dep)
	pod := d.Template.Metadata.Labels
	if !within(d.Selector.MatchLabels, pod) {
		t.Errorf("the Deployment's selector %v does not match its pods' labels %v", d.Selector.MatchLabels, pod)
	}
	if d.Replicas < 3 {
		t.Errorf("replicas %d: a fleet across three sites wants at least 3", d.Replicas)
	}

	// The config in the ConfigMap: valid, a fleet, and what the pod's ports and probes say.
	cm := objs["ConfigMap"][0]
	dir := t.TempDir()
	path := filepath.Join(dir, "spillway.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["spillway.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatalf("the ConfigMap's spillway.yaml: %v", err)
	}
	if cfg.Cluster == nil || cfg.Cluster.Node != mustHostname(t) {
		t.Errorf("the ConfigMap's config is not a fleet, or sets cluster.node (each pod must default to its own name)")
	}
	if len(d.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container")
	}
	c := d.Template.Spec.Containers[0]
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = strconv.Itoa(p.ContainerPort)
	}
	if ports["http"] != portOf(t, cfg.Listen.HTTP) || ports["admin"] != portOf(t, cfg.Admin.Listen) {
		t.Errorf("container ports %v; the config listens on %s and its admin API on %s", ports, cfg.Listen.HTTP, cfg.Admin.Listen)
	}
	for name, p := range map[string]k8sProbe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		want := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[name]
		if p.HTTPGet.Path != want || p.HTTPGet.Port != "admin" {
			t.Errorf("%s: GET %s on %q, want %s on the admin port", name, p.HTTPGet.Path, p.HTTPGet.Port, want)
		}
	}
	grace := time.Duration(d.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if need := cfg.Timeouts.DrainDelay + cfg.Timeouts.Shutdown; cfg.Timeouts.DrainDelay == 0 || grace <= need {
		t.Errorf("terminationGracePeriodSeconds %s: want drain_delay (%s, > 0) + shutdown (%s) and a margin",
			grace, cfg.Timeouts.DrainDelay, cfg.Timeouts.Shutdown)
	}
	// The files the config names are where the volumes are mounted.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	volumes := map[string]string{}
	for _, v := range d.Template.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			volumes[v.Name] = "ConfigMap/" + v.ConfigMap.Name
		case v.Secret != nil:
			volumes[v.Name] = "Secret/" + v.Secret.SecretName
		}
	}
	mountedAt := func(file string) string { // the volume file is in
		for name, dir := range mounts {
			if filepath.Dir(file) == dir {
				return volumes[name] + "/" + filepath.Base(file)
			}
		}
		return ""
	}
	keys := map[string]bool{}
	for _, kind := range []string{"ConfigMap", "Secret"} {
		for _, o := range objs[kind] {
			for k := range o.Data {
				keys[kind+"/"+o.Metadata.Name+"/"+k] = true
			}
			for k := range o.StringData {
				keys[kind+"/"+o.Metadata.Name+"/"+k] = true
			}
		}
	}
	if len(c.Args) != 3 || c.Args[0] != "run" || c.Args[1] != "-config" || !keys[mountedAt(c.Args[2])] {
		t.Errorf("args %v: want run -config with a file of the ConfigMap", c.Args)
	}
	// Load made them absolute against the temporary directory; the pod sees them as written.
	for _, key := range []string{"admin.token_file", "cluster.etcd.tls.ca_file", "cluster.etcd.tls.cert_file", "cluster.etcd.tls.key_file"} {
		if f := cfg.Written(key); !keys[mountedAt(f)] {
			t.Errorf("%s %s is in no mounted Secret or ConfigMap", key, f)
		}
	}
	sc := c.SecurityContext
	if !d.Template.Spec.SecurityContext.RunAsNonRoot || d.Template.Spec.SecurityContext.RunAsUser == 0 || !sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) == 0 {
		t.Errorf("the pod must run as non-root, read-only root filesystem, no privilege escalation, capabilities dropped")
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		t.Errorf("no resource requests: the HPA scales on CPU utilisation of the requests")
	}

	svc := decodeSpec[struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	}](t, objs["Service"][0])
	if !within(svc.Selector, pod) {
		t.Errorf("the Service's selector %v does not match the pods' labels %v", svc.Selector, pod)
	}
	for _, p := range svc.Ports {
		if _, ok := ports[p.TargetPort]; !ok {
			t.Errorf("the Service targets port %q, which the container does not name", p.TargetPort)
		}
	}
	pdb := decodeSpec[struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	}](t, objs["PodDisruptionBudget"][0])
	if !within(pdb.Selector.MatchLabels, pod) {
		t.Errorf("the PodDisruptionBudget's selector does not match the pods")
	}
	hpa := decodeSpec[struct {
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		Metrics     []struct {
			Resource struct {
				Name string `yaml:"name"`
			} `yaml:"resource"`
		} `yaml:"metrics"`
	}](t, objs["HorizontalPodAutoscaler"][0])
	if hpa.ScaleTargetRef.Kind != "Deployment" || hpa.ScaleTargetRef.Name != dep.Metadata.Name || len(hpa.Metrics) == 0 || hpa.Metrics[0].Resource.Name != "cpu" {
		t.Errorf("the HPA must scale the Deployment %s on CPU: %+v", dep.Metadata.Name, hpa)
	}
}

func mustHostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	return h
}

func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("deploy", "spillway.service"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("spillway.service: %q is not key=value", line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	want := map[string]string{
		"Service.ExecReload":            "/bin/kill -HUP $MAINPID",
		"Service.DynamicUser":           "yes",
		"Service.NoNewPrivileges":       "yes",
		"Service.ProtectSystem":         "strict",
		"Service.CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
		"Service.AmbientCapabilities":   "CAP_NET_BIND_SERVICE",
		"Install.WantedBy":              "multi-user.target",
	}
	for k, v := range want {
		if got := keys[k]; len(got) != 1 || got[0] != v {
			t.Errorf("spillway.service: %s=%v, want %s", k, got, v)
		}
	}
	if got := keys["Service.ExecStart"]; len(got) != 1 || !strings.Contains(got[0], " run -config ") {
		t.Errorf("ExecStart %v: want spillway run -config FILE", got)
	}
	stop, err := time.ParseDuration(keys["Service.TimeoutStopSec"][0])
	if err != nil || stop <= configs.DefaultShutdownTimeout {
		t.Errorf("TimeoutStopSec %v: want more than timeouts.shutdown's default %s", keys["Service.TimeoutStopSec"], configs.DefaultShutdownTimeout)
	}
}

func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("deploy", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{"CGO_ENABLED=0", "FROM gcr.io/distroless/static", "USER 65532:65532", `ENTRYPOINT ["/usr/local/bin/spillway"]`, "EXPOSE 8080 9901"} {
		if !strings.Contains(s, want) {
			t.Errorf("Containerfile has no %q", want)
		}
	}
}
