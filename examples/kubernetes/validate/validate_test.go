// Package validate checks the Kubernetes examples against the Kubernetes API
// types (k8s.io/api, strict decoding: an unknown or misspelt field fails)
// and runs the collector's own `validate` on the collector configs they
// carry. A module of its own, so the receiver does not depend on k8s.io.
package validate

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// decodeStrict decodes YAML into a Kubernetes type, refusing unknown fields.
func decodeStrict(t *testing.T, what string, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// objects decodes a multi-document manifest by kind.
func objects(t *testing.T, file string) map[string][]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", file))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]any{}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var obj any
		switch meta.Kind {
		case "Namespace":
			obj = &corev1.Namespace{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Service":
			obj = &corev1.Service{}
		case "DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		default:
			t.Fatalf("%s: no check for kind %q", file, meta.Kind)
		}
		decodeStrict(t, file+" "+meta.Kind, doc, obj)
		out[meta.Kind] = append(out[meta.Kind], obj)
	}
	return out
}

func TestDaemonSet(t *testing.T) {
	objs := objects(t, "daemonset.yaml")
	if len(objs["DaemonSet"]) != 1 {
		t.Fatalf("want one DaemonSet, got %d", len(objs["DaemonSet"]))
	}
	ds := objs["DaemonSet"][0].(*appsv1.DaemonSet)
	c := ds.Spec.Template.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || sc.Privileged == nil || *sc.Privileged {
		t.Fatal("the container must be unprivileged with explicit capabilities")
	}
	if got, want := sc.Capabilities.Add, []corev1.Capability{"BPF", "PERFMON", "DAC_READ_SEARCH"}; !slices.Equal(got, want) {
		t.Errorf("capabilities added: %v, want exactly %v", got, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities dropped: %v, want ALL", sc.Capabilities.Drop)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() {
		t.Error("the container needs memory and CPU limits")
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	for _, path := range []string{"/sys/kernel/btf", "/sys/kernel/tracing", "/etc/otelcol", "/host/sys/fs/cgroup", "/sys/fs/bpf", "/var/lib/otelcol/kmemleak"} {
		if !mounts[path] {
			t.Errorf("nothing mounted at %s", path)
		}
	}
	// The new pod adopts the tables the old one pinned: never both at once.
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
		t.Error("a rollout must stop the old pod before it starts the new one: maxSurge: 0")
	}
	// Attribution: the host's pids, and the k8s_attributes processor's
	// access to the node's pods.
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("attribution names processes by host pid: hostPID must be true")
	}
	if len(objs["ClusterRoleBinding"]) != 1 || len(objs["ServiceAccount"]) != 1 {
		t.Fatal("want the service account k8s_attributes uses, bound to its role")
	}
	binding := objs["ClusterRoleBinding"][0].(*rbacv1.ClusterRoleBinding)
	if spec.ServiceAccountName != binding.Subjects[0].Name || binding.Subjects[0].Name != objs["ServiceAccount"][0].(*corev1.ServiceAccount).Name {
		t.Errorf("the pod runs as %q, the role is bound to %q", spec.ServiceAccountName, binding.Subjects[0].Name)
	}
}

func TestGateway(t *testing.T) {
	objs := objects(t, "gateway.yaml")
	for _, kind := range []string{"ConfigMap", "Deployment", "Service"} {
		if len(objs[kind]) != 1 {
			t.Errorf("want one %s, got %d", kind, len(objs[kind]))
		}
	}
}

// knownChartValues are the top-level values of the opentelemetry-collector
// chart (0.170.x) the example may set.
var knownChartValues = []string{
	"mode", "image", "command", "ports", "alternateConfig", "config", "securityContext",
	"extraVolumes", "extraVolumeMounts", "resources", "presets", "configMap", "podSecurityContext",
}

func TestHelmValues(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	for key := range values {
		if !slices.Contains(knownChartValues, key) {
			t.Errorf("values.yaml: %q is not a value of the chart", key)
		}
	}
	if values["mode"] != "daemonset" {
		t.Errorf("mode = %v, want daemonset", values["mode"])
	}
	// The values that the chart copies into the pod spec must be valid there.
	for key, into := range map[string]any{
		"securityContext":   &corev1.SecurityContext{},
		"extraVolumes":      &[]corev1.Volume{},
		"extraVolumeMounts": &[]corev1.VolumeMount{},
		"resources":         &corev1.ResourceRequirements{},
	} {
		part, err := yaml.Marshal(values[key])
		if err != nil {
			t.Fatal(err)
		}
		decodeStrict(t, "values.yaml "+key, part, into)
	}
	config, err := yaml.Marshal(values["alternateConfig"])
	if err != nil {
		t.Fatal(err)
	}
	validateCollectorConfig(t, "values.yaml alternateConfig", config)
}

func TestCollectorConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "collector-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	validateCollectorConfig(t, "collector-config.yaml", data)
}

// validateCollectorConfig runs `otelcol-kmemleak validate` on a config.
func validateCollectorConfig(t *testing.T, what string, config []byte) {
	t.Helper()
	bin := os.Getenv("KMEMLEAK_COLLECTOR")
	if bin == "" {
		t.Fatal("set KMEMLEAK_COLLECTOR to the built otelcol-kmemleak (make examples-test does)")
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "validate", "--config", path)
	// As the DaemonSet sets it, for k8s_attributes.
	cmd.Env = append(os.Environ(), "K8S_NODE_NAME=node-1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: otelcol-kmemleak validate: %v\n%s", what, err, out)
	}
}
