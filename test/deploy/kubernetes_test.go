package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// object is a Kubernetes manifest, read loosely.
type object map[string]any

func (o object) str(path ...string) string {
	v, _ := o.get(path...).(string)
	return v
}

func (o object) get(path ...string) any {
	var cur any = o
	for _, p := range path {
		m := asObject(cur)
		if m == nil {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func (o object) list(path ...string) []any {
	v, _ := o.get(path...).([]any)
	return v
}

// asObject: yaml.v3 decodes maps inside an object as objects.
func asObject(v any) object {
	switch m := v.(type) {
	case object:
		return m
	case map[string]any:
		return object(m)
	}
	return nil
}

// manifests reads every document of deploy/kubernetes, by kind.
func manifests(t *testing.T) map[string][]object {
	t.Helper()
	files, err := filepath.Glob("../../deploy/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string][]object{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind := o.str("kind")
			if kind == "" || o.str("apiVersion") == "" {
				t.Errorf("%s: a document without kind or apiVersion", f)
			}
			if kind != "Kustomization" && o.str("metadata", "name") == "" {
				t.Errorf("%s: %s without a name", f, kind)
			}
			out[kind] = append(out[kind], o)
		}
	}
	return out
}

func TestKubernetesManifests(t *testing.T) {
	m := manifests(t)
	for _, kind := range []string{"Namespace", "ConfigMap", "DaemonSet", "Service", "ServiceMonitor", "Kustomization"} {
		if len(m[kind]) == 0 {
			t.Errorf("no %s", kind)
		}
	}
	ds := m["DaemonSet"][0]
	pod := asObject(ds.get("spec", "template"))
	labels := asObject(pod.get("metadata", "labels"))
	if sel := asObject(ds.get("spec", "selector", "matchLabels")); !subset(sel, labels) {
		t.Errorf("the DaemonSet's selector %v does not select its pods %v", sel, labels)
	}
	if pod.get("spec", "hostNetwork") != true {
		t.Error("the pods need hostNetwork: XDP attaches to the node's interfaces")
	}
	containers := pod.list("spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := asObject(containers[0])
	if c.str("image") == "" {
		t.Error("no image")
	}
	var caps []string
	for _, v := range asObject(c.get("securityContext", "capabilities")).list("add") {
		caps = append(caps, v.(string))
	}
	if !slices.Equal(sorted(caps), sorted(composeCaps(t))) {
		t.Errorf("capabilities %v, want the measured minimum %v", caps, composeCaps(t))
	}
	if c.get("securityContext", "privileged") == true {
		t.Error("the pod is privileged: it needs only its capabilities")
	}

	// Volumes: the bpffs and the state from the node, the config from the ConfigMap.
	mounts := map[string]string{}
	for _, v := range c.list("volumeMounts") {
		mounts[asObject(v).str("name")] = asObject(v).str("mountPath")
	}
	hostPaths, configMaps := map[string]string{}, map[string]string{}
	for _, v := range pod.list("spec", "volumes") {
		vo := asObject(v)
		if p := vo.str("hostPath", "path"); p != "" {
			hostPaths[mounts[vo.str("name")]] = p
		}
		if cm := vo.str("configMap", "name"); cm != "" {
			configMaps[mounts[vo.str("name")]] = cm
		}
	}
	for mount, host := range map[string]string{"/sys/fs/bpf": "/sys/fs/bpf", "/var/lib/hbf": "/var/lib/hbf"} {
		if hostPaths[mount] != host {
			t.Errorf("%s is not the node's %s (hostPath volumes %v)", mount, host, hostPaths)
		}
	}

	// Probes on the metrics port, which the daemon serves.
	var portName string
	for _, p := range c.list("ports") {
		if asObject(p).get("containerPort") == 9717 {
			portName = asObject(p).str("name")
		}
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if got := c.get(probe, "httpGet", "port"); got != portName && got != 9717 {
			t.Errorf("%s on port %v, want the metrics port", probe, got)
		}
	}
	args := strings.Join(toStrings(c.list("args")), " ")
	if !strings.Contains(args, "--metrics-addr=$(HOST_IP):9717") || !strings.Contains(args, "--config=/etc/hbf/hbf.yaml") {
		t.Errorf("args %q: want the config from the ConfigMap and metrics on the node's address", args)
	}

	// The ConfigMap the pods mount exists, and hbf accepts its settings.
	var config object
	for _, cm := range m["ConfigMap"] {
		if cm.str("metadata", "name") == configMaps["/etc/hbf"] {
			config = cm
		}
	}
	if config == nil {
		t.Fatalf("the ConfigMap %q the pods mount is missing", configMaps["/etc/hbf"])
	}
	path := filepath.Join(t.TempDir(), "hbf.yaml")
	if err := os.WriteFile(path, []byte(config.str("data", "hbf.yaml")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(buildHBF(t), "config", "check", path).CombinedOutput(); err != nil {
		t.Errorf("hbf config check of the ConfigMap: %v\n%s", err, out)
	}

	// The Service selects the pods; the ServiceMonitor the Service's port.
	svc := m["Service"][0]
	if !subset(asObject(svc.get("spec", "selector")), labels) {
		t.Errorf("the Service selects %v, not the pods %v", svc.get("spec", "selector"), labels)
	}
	smon := m["ServiceMonitor"][0]
	if !subset(asObject(smon.get("spec", "selector", "matchLabels")), asObject(svc.get("metadata", "labels"))) {
		t.Error("the ServiceMonitor does not select the Service")
	}
	if p := asObject(smon.list("spec", "endpoints")[0]).str("port"); p != asObject(svc.list("spec", "ports")[0]).str("name") {
		t.Errorf("the ServiceMonitor scrapes port %q, the Service names %q", p, asObject(svc.list("spec", "ports")[0]).str("name"))
	}
	for _, kind := range []string{"ConfigMap", "DaemonSet", "Service", "ServiceMonitor"} {
		for _, o := range m[kind] {
			if ns := o.str("metadata", "namespace"); ns != m["Namespace"][0].str("metadata", "name") {
				t.Errorf("%s %s in namespace %q", kind, o.str("metadata", "name"), ns)
			}
		}
	}
	// Every file is in the kustomization.
	files, _ := filepath.Glob("../../deploy/kubernetes/*.yaml")
	listed := toStrings(m["Kustomization"][0].list("resources"))
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(listed, name) {
			t.Errorf("%s is not in kustomization.yaml", name)
		}
	}
}

// The scrape job for a Prometheus without the Operator finds the Service's
// endpoints. (Debian's promtool is built without Kubernetes discovery, so
// the job is read here rather than by promtool.)
func TestKubernetesScrapeConfig(t *testing.T) {
	m := manifests(t)
	var job string
	for _, cm := range m["ConfigMap"] {
		if s := cm.str("data", "hbf-scrape.yaml"); s != "" {
			job = s
		}
	}
	var jobs []object
	if err := yaml.Unmarshal([]byte(job), &jobs); err != nil || len(jobs) != 1 {
		t.Fatalf("hbf-scrape.yaml: %d jobs, %v", len(jobs), err)
	}
	j := jobs[0]
	sd := asObject(j.list("kubernetes_sd_configs")[0])
	svc := m["Service"][0]
	if sd.str("role") != "endpoints" || !slices.Contains(toStrings(sd.list("namespaces", "names")), svc.str("metadata", "namespace")) {
		t.Errorf("the job discovers %v, want the endpoints of namespace %s", sd, svc.str("metadata", "namespace"))
	}
	keep := asObject(j.list("relabel_configs")[0])
	want := svc.str("metadata", "name") + ";" + asObject(svc.list("spec", "ports")[0]).str("name")
	if keep.str("action") != "keep" || keep.str("regex") != want {
		t.Errorf("the job keeps %q, want %q (the Service and its port)", keep.str("regex"), want)
	}
}

func subset(sub, of object) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}

func toStrings(v []any) []string {
	var out []string
	for _, x := range v {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
