package configs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/spillway/spillway/configs"
)

// The Kubernetes replicas are one fleet: the ConfigMap's config has a cluster section that
// leaves cluster.node to default to each pod's name, and the etcd client certificate, key
// and CA it names are files of a Secret mounted where it says, readable by the pod's user.
func TestKubernetesFleet(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("deploy", "kubernetes", "spillway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type pod struct {
		SecurityContext struct {
			RunAsUser int `yaml:"runAsUser"`
			FSGroup   int `yaml:"fsGroup"`
		} `yaml:"securityContext"`
		Containers []struct {
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		} `yaml:"containers"`
		Volumes []struct {
			Name   string `yaml:"name"`
			Secret *struct {
				SecretName string `yaml:"secretName"`
			} `yaml:"secret"`
		} `yaml:"volumes"`
	}
	var cfgText string
	var p pod
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
			Spec struct {
				Template struct {
					Spec pod `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if dec.Decode(&o) != nil {
			break
		}
		switch o.Kind {
		case "ConfigMap":
			cfgText = o.Data["spillway.yaml"]
		case "Deployment":
			p = o.Spec.Template.Spec
		}
	}
	cfg, err := configs.Parse("/etc/spillway/spillway.yaml", []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	cl := cfg.Cluster
	if cl == nil || cfg.Has("cluster.node") || len(cl.Etcd.Endpoints) < 3 || cl.Etcd.TLS == nil {
		t.Fatalf("the ConfigMap's config should be a fleet on a three-member etcd over TLS, with node left to the pod's name: %+v", cl)
	}
	secretDirs := map[string]bool{}
	secretVolumes := map[string]bool{}
	for _, v := range p.Volumes {
		if v.Secret != nil {
			secretVolumes[v.Name] = true
		}
	}
	for _, c := range p.Containers {
		for _, m := range c.VolumeMounts {
			if secretVolumes[m.Name] {
				secretDirs[m.MountPath] = true
			}
		}
	}
	for _, f := range []string{cl.Etcd.TLS.CAFile, cl.Etcd.TLS.CertFile, cl.Etcd.TLS.KeyFile} {
		if !secretDirs[filepath.Dir(f)] {
			t.Errorf("etcd TLS file %s is not in a mounted Secret (%v)", f, secretDirs)
		}
	}
	if p.SecurityContext.FSGroup == 0 {
		t.Error("no fsGroup: the Secret's files are root's, unreadable by the non-root process")
	}
}
