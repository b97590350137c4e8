package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"cove/auth"
)

// The Helm chart, deploy/helm/cove: helm lint and helm template pass for one node (values.yaml)
// and a fleet (values-fleet.yaml), the rendered objects are the ones each mode needs, and the
// configuration the chart gives cove (cove.yaml from its ConfigMap, then its COVE_* variables,
// secrets and downward-API values filled in) passes cove's own loader: a misspelt key fails here.

const chartDir = "../../deploy/helm/cove"

// k8sObject is the part of a rendered Kubernetes object the tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas    *int           `yaml:"replicas"`
		ServiceName string         `yaml:"serviceName"`
		Selector    map[string]any `yaml:"selector"`
		Template    struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		IngressClassName string `yaml:"ingressClassName"`
		TLS              []struct {
			Hosts      []string `yaml:"hosts"`
			SecretName string   `yaml:"secretName"`
		} `yaml:"tls"`
		Rules []struct {
			Host string `yaml:"host"`
		} `yaml:"rules"`
		MaxUnavailable *int `yaml:"maxUnavailable"`
		Endpoints      []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
	EnableServiceLinks           *bool `yaml:"enableServiceLinks"`
	SecurityContext              struct {
		RunAsUser      *int64 `yaml:"runAsUser"`
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
		HostPath *struct {
			Path string `yaml:"path"`
		} `yaml:"hostPath"`
	} `yaml:"volumes"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe    *k8sProbe `yaml:"startupProbe"`
	LivenessProbe   *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe  *k8sProbe `yaml:"readinessProbe"`
	SecurityContext struct {
		RunAsUser                *int64 `yaml:"runAsUser"`
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

// rendered is helm template's output, by kind and name.
type rendered []k8sObject

func (r rendered) kinds() []string {
	var ks []string
	for _, o := range r {
		ks = append(ks, o.Kind+"/"+o.Metadata.Name)
	}
	return ks
}

func (r rendered) find(kind, name string) *k8sObject {
	for i := range r {
		if r[i].Kind == kind && r[i].Metadata.Name == name {
			return &r[i]
		}
	}
	return nil
}

func (r rendered) must(t *testing.T, kind, name string) *k8sObject {
	t.Helper()
	o := r.find(kind, name)
	if o == nil {
		t.Fatalf("no %s %q rendered; got %v", kind, name, r.kinds())
	}
	return o
}

// helmBin is the helm the Makefile builds (test/tools/helm pins it): a missing one fails.
func helmBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("E2E_HELM_BIN")
	if bin == "" {
		t.Fatal("E2E_HELM_BIN is not set: make test builds helm into bin/helm-$(HELM_VERSION) and sets it")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("E2E_HELM_BIN: %v (make bin/helm-v3.22.0 builds it)", err)
	}
	return bin
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	// No user's helm settings or repositories: a HOME of its own.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home, "XDG_DATA_HOME="+home)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.String(), err
	}
	return out.String(), nil
}

// helmTemplate lints (strictly) and renders the chart with these values.
func helmTemplate(t *testing.T, values ...string) rendered {
	t.Helper()
	if out, err := helm(t, append([]string{"lint", "--strict", chartDir}, values...)...); err != nil {
		t.Fatalf("helm lint --strict %v: %v\n%s", values, err, out)
	}
	out, err := helm(t, append([]string{"template", "cove", chartDir, "--namespace", "registry"}, values...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", values, err, out)
	}
	var objs rendered
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template's output is not YAML: %v\n%s", err, out)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
	return objs
}

// coveContainer is the pod's cove container, checked the same way in both modes: probes,
// security context, mounts.
func coveContainer(t *testing.T, pod k8sPodSpec) k8sContainer {
	t.Helper()
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "cove" {
		t.Fatalf("want one container named cove, got %+v", pod.Containers)
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("args = %v, want [serve] (the image's entrypoint is /cove)", c.Args)
	}
	for _, p := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{{"startupProbe", c.StartupProbe, "/healthz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != "http" {
			t.Errorf("%s = %+v, want GET %s on port http", p.name, p.probe, p.path)
		}
	}
	sc := c.SecurityContext
	if sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || sc.SeccompProfile.Type != "RuntimeDefault" {
		got, _ := yaml.Marshal(sc)
		t.Errorf("container securityContext:\n%s\nwant user 65532, non-root, read-only root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault", got)
	}
	if psc := pod.SecurityContext; psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod securityContext = %+v: want user 65532 and seccomp RuntimeDefault", psc)
	}
	// A Service named cove gives pods COVE_SERVICE_HOST, COVE_PORT and the like, which cove
	// refuses as unknown COVE_ variables: the start would fail.
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("the pod has service links: Kubernetes would set COVE_SERVICE_HOST and cove refuse it")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token: cove needs none")
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	// The root file system is read-only: /data must be a volume, and cove.yaml the ConfigMap's.
	if mounts["/data"] != "data" || mounts["/etc/cove"] != "config" {
		t.Errorf("mounts = %v, want data at /data and config at /etc/cove", mounts)
	}
	var cm string
	for _, v := range pod.Volumes {
		if v.Name == "config" && v.ConfigMap != nil {
			cm = v.ConfigMap.Name
		}
	}
	if cm != "cove" {
		t.Errorf("the config volume is ConfigMap %q, want cove", cm)
	}
	return c
}

// podEnv turns a container's environment into what cove would see: secrets read from the
// rendered Secrets or from external, downward-API fields from fields, $(VAR) expanded as the
// kubelet does. It checks that every secret named exists in one or the other.
func podEnv(t *testing.T, objs rendered, c k8sContainer, external map[string]string, fields map[string]string) []string {
	t.Helper()
	vals := map[string]string{}
	var environ []string
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if s := objs.find("Secret", ref.Name); s != nil {
				b, err := base64.StdEncoding.DecodeString(s.Data[ref.Key])
				if err != nil || len(b) == 0 {
					t.Fatalf("%s: Secret %s has no key %s (%v)", e.Name, ref.Name, ref.Key, err)
				}
				v = string(b)
			} else if ext, ok := external[ref.Name+"/"+ref.Key]; ok {
				v = ext
			} else {
				t.Fatalf("%s: Secret %s key %s is neither rendered nor one the user is told to make", e.Name, ref.Name, ref.Key)
			}
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			f, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("%s: unexpected downward-API field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			v = f
		default:
			v = expand.ReplaceAllStringFunc(v, func(m string) string {
				name := expand.FindStringSubmatch(m)[1]
				got, ok := vals[name]
				if !ok {
					t.Errorf("%s: $(%s) names no variable defined before it", e.Name, name)
				}
				return got
			})
		}
		vals[e.Name] = v
		environ = append(environ, e.Name+"="+v)
	}
	return environ
}

// coveConfig loads the configuration as cove serve would: cove.yaml from the ConfigMap (at the
// path COVE_CONFIG names), then the environment, then Validate.
func coveConfig(t *testing.T, objs rendered, environ []string) Config {
	t.Helper()
	if v := envOf(environ, "COVE_CONFIG"); v != "/etc/cove/cove.yaml" {
		t.Fatalf("COVE_CONFIG = %q, want /etc/cove/cove.yaml (the ConfigMap's mount)", v)
	}
	file := objs.must(t, "ConfigMap", "cove").Data["cove.yaml"]
	cfg, err := Parse(strings.NewReader(file))
	if err != nil {
		t.Fatalf("the ConfigMap's cove.yaml: %v\n%s", err, file)
	}
	if err := ApplyEnv(&cfg, environ); err != nil {
		t.Fatalf("the pod's COVE_ variables: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the chart's configuration: %v", err)
	}
	return cfg
}

func envOf(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

var podFields = map[string]string{"metadata.name": "cove-5d8f7c9b6-x2x7q", "status.podIP": "10.244.1.7"}

func TestHelmChartOneNode(t *testing.T) {
	objs := helmTemplate(t)
	if got := objs.find("Deployment", "cove"); got != nil {
		t.Error("one node rendered a Deployment")
	}
	for _, absent := range []string{"Ingress", "ServiceMonitor", "DaemonSet"} {
		for _, o := range objs {
			if o.Kind == absent {
				t.Errorf("one node renders %s/%s by default; it is optional", o.Kind, o.Metadata.Name)
			}
		}
	}
	sts := objs.must(t, "StatefulSet", "cove")
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("StatefulSet replicas = %v, want 1 (badger locks its data directory)", sts.Spec.Replicas)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Metadata.Name != "data" {
		t.Errorf("StatefulSet volumeClaimTemplates = %+v, want one named data", sts.Spec.VolumeClaimTemplates)
	}
	if objs.find("Service", sts.Spec.ServiceName) == nil {
		t.Errorf("the StatefulSet's serviceName %q is no rendered Service", sts.Spec.ServiceName)
	}
	c := coveContainer(t, sts.Spec.Template.Spec)
	svc := objs.must(t, "Service", "cove")
	ports := map[string]int{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
	}
	if ports["http"] != 5000 || ports["metrics"] != 9090 {
		t.Errorf("Service ports = %v, want http 5000 and metrics 9090", ports)
	}
	if pdb := objs.must(t, "PodDisruptionBudget", "cove"); pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1 (one pod: minAvailable 1 would block every drain)", pdb.Spec.MaxUnavailable)
	}
	admin := objs.must(t, "Secret", "cove-admin")
	if admin.Metadata.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("the generated admin Secret is not kept: an upgrade or uninstall would lose the first password")
	}
	environ := podEnv(t, objs, c, nil, podFields)
	cfg := coveConfig(t, objs, environ)
	if cfg.Data != "/data" || cfg.Listen != ":5000" || cfg.MetricsListen != ":9090" || cfg.fleet() ||
		cfg.Mirror.MaxSize != 40<<30 || cfg.PublicURL != "" {
		t.Errorf("config: data %q listen %q metrics_listen %q fleet %v max_size %d public_url %q; want /data, :5000, :9090, one node, 40GiB, none",
			cfg.Data, cfg.Listen, cfg.MetricsListen, cfg.fleet(), cfg.Mirror.MaxSize, cfg.PublicURL)
	}
	if err := auth.CheckPasswordPolicy(cfg.Auth.AdminPassword); err != nil {
		t.Errorf("the generated admin password breaks cove's policy (the start would fail): %v", err)
	}
}

func TestHelmChartOneNodeWithOptions(t *testing.T) {
	objs := helmTemplate(t, "--set", "ingress.enabled=true,ingress.hosts[0]=registry.example.com,ingress.tls.secretName=registry-tls,"+
		"metrics.serviceMonitor.enabled=true,hostsToml.enabled=true,adminPassword.existingSecret=my-admin,trustedProxies[0]=10.244.0.0/16")
	ing := objs.must(t, "Ingress", "cove")
	if ing.Spec.IngressClassName != "nginx" || len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "registry-tls" ||
		!slices.Equal(ing.Spec.TLS[0].Hosts, []string{"registry.example.com"}) || len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "registry.example.com" {
		t.Errorf("Ingress = %+v, want class nginx, TLS from registry-tls for registry.example.com", ing.Spec)
	}
	if ing.Metadata.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"] != "0" ||
		ing.Metadata.Annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] != "off" {
		t.Errorf("Ingress annotations = %v: pushes need no body limit and no request buffering", ing.Metadata.Annotations)
	}
	sm := objs.must(t, "ServiceMonitor", "cove")
	if sm.APIVersion != "monitoring.coreos.com/v1" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Port != "metrics" {
		t.Errorf("ServiceMonitor = %s %+v, want monitoring.coreos.com/v1 scraping /metrics on port metrics", sm.APIVersion, sm.Spec.Endpoints)
	}
	svc := objs.must(t, "Service", "cove")
	sel, _ := sm.Spec.Selector["matchLabels"].(map[string]any)
	for k, v := range sel {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%v; the Service is labelled %v", k, v, svc.Metadata.Labels)
		}
	}
	if len(sel) == 0 {
		t.Error("the ServiceMonitor selects no labels")
	}
	if objs.find("Secret", "cove-admin") != nil {
		t.Error("with adminPassword.existingSecret a Secret is generated still")
	}
	c := coveContainer(t, objs.must(t, "StatefulSet", "cove").Spec.Template.Spec)
	environ := podEnv(t, objs, c, map[string]string{"my-admin/password": "Chosen-Passw0rd"}, podFields)
	cfg := coveConfig(t, objs, environ)
	if cfg.PublicURL != "https://registry.example.com" || !slices.Equal(cfg.TrustedProxies, []string{"10.244.0.0/16"}) || cfg.Auth.AdminPassword != "Chosen-Passw0rd" {
		t.Errorf("config: public_url %q trusted_proxies %v admin_password from my-admin %v; want the ingress's https URL, 10.244.0.0/16, yes",
			cfg.PublicURL, cfg.TrustedProxies, cfg.Auth.AdminPassword == "Chosen-Passw0rd")
	}
	checkHostsToml(t, objs, "https://registry.example.com")

	// On the registry's port, the ServiceMonitor scrapes port http.
	objs = helmTemplate(t, "--set", "metrics.port=0,metrics.serviceMonitor.enabled=true")
	if sm := objs.must(t, "ServiceMonitor", "cove"); len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" {
		t.Errorf("with metrics.port 0 the ServiceMonitor scrapes %+v, want port http", sm.Spec.Endpoints)
	}
	c = coveContainer(t, objs.must(t, "StatefulSet", "cove").Spec.Template.Spec)
	if cfg := coveConfig(t, objs, podEnv(t, objs, c, nil, podFields)); cfg.MetricsListen != "" {
		t.Errorf("with metrics.port 0, metrics_listen = %q, want none", cfg.MetricsListen)
	}
}

// checkHostsToml runs the DaemonSet's script, with its hostPath a temporary directory, and reads
// what it wrote: README's hosts.toml for docker.io, through mirror. The script then waits until
// it is stopped, and exits 0 on SIGTERM.
func checkHostsToml(t *testing.T, objs rendered, mirror string) {
	t.Helper()
	ds := objs.must(t, "DaemonSet", "cove-hosts-toml")
	pod := ds.Spec.Template.Spec
	if ds.Spec.Template.Metadata.Labels["app.kubernetes.io/component"] != "hosts-toml" {
		t.Errorf("the DaemonSet's pods are labelled %v: cove's Service and PodDisruptionBudget would select them", ds.Spec.Template.Metadata.Labels)
	}
	var hostPath string
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPath = v.HostPath.Path
		}
	}
	if hostPath != "/etc/containerd/certs.d" {
		t.Errorf("the DaemonSet's hostPath = %q, want /etc/containerd/certs.d", hostPath)
	}
	if len(pod.Containers) != 1 || !slices.Equal(pod.Containers[0].Command, []string{"sh", "/script/write.sh"}) {
		t.Fatalf("the DaemonSet's container = %+v, want sh /script/write.sh", pod.Containers)
	}
	script := objs.must(t, "ConfigMap", "cove-hosts-toml").Data["write.sh"]
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(script, "/certs.d/", dir+"/"))
	// Output to a file, not a pipe: a child left behind cannot hold Wait. Its own process
	// group, so that the end of the test stops whatever it left.
	logf, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	output := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if !exited {
			<-done
		}
	}()
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	want := "server = \"https://registry-1.docker.io\"\n\n[host.\"" + mirror + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	var got []byte
poll:
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			exited = true
			t.Fatalf("the script exited (%v); it should write the files and wait until stopped:\n%s", err, output())
		default:
		}
		if got, _ = os.ReadFile(path); len(got) > 0 {
			break poll
		}
	}
	if string(got) != want {
		t.Errorf("the script wrote %s:\n%s\nwant:\n%s\n(its output: %s)", path, got, want, output())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal the script: %v", err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("the script exited with %v on SIGTERM, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the script did not stop within 10 s of SIGTERM")
	}
}

func TestHelmChartFleet(t *testing.T) {
	objs := helmTemplate(t, "-f", chartDir+"/values-fleet.yaml")
	if objs.find("StatefulSet", "cove") != nil {
		t.Error("a fleet rendered a StatefulSet")
	}
	d := objs.must(t, "Deployment", "cove")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("Deployment replicas = %v, want 3", d.Spec.Replicas)
	}
	objs.must(t, "Service", "cove")
	objs.must(t, "PodDisruptionBudget", "cove")
	objs.must(t, "Ingress", "cove")
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" && (v.EmptyDir == nil || v.EmptyDir.SizeLimit != "20Gi") {
			got, _ := yaml.Marshal(v)
			t.Errorf("the fleet's data volume:\n%s\nwant an emptyDir of 20Gi (the hot tier)", got)
		}
	}
	c := coveContainer(t, d.Spec.Template.Spec)
	cluster := objs.must(t, "Secret", "cove-cluster")
	if cluster.Metadata.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("the generated cluster Secret is not kept: a new one at an upgrade would split the fleet")
	}
	// The Secrets values-fleet.yaml tells the user to make.
	external := map[string]string{
		"cove-postgres/dsn":  "postgres://cove:secret@db.example:5432/cove?sslmode=verify-full",
		"cove-s3/access-key": "AKIACOVE",
		"cove-s3/secret-key": "s3-secret-key",
	}
	environ := podEnv(t, objs, c, external, podFields)
	cfg := coveConfig(t, objs, environ)
	s3 := cfg.Storage.Blobs.S3
	if !cfg.fleet() || cfg.Storage.Metadata.Postgres.DSN != external["cove-postgres/dsn"] ||
		s3.Endpoint != "https://s3.example.com" || s3.Bucket != "cove" || s3.AccessKey != "AKIACOVE" || s3.SecretKey != "s3-secret-key" || !s3.PathStyle ||
		cfg.Storage.HotTierMaxSize != 16<<30 {
		t.Errorf("config storage = %+v: want postgres from cove-postgres, s3 https://s3.example.com bucket cove with cove-s3's keys, hot tier 16GiB", cfg.Storage)
	}
	if cfg.Cluster.NodeName != podFields["metadata.name"] || cfg.Cluster.Advertise != "http://10.244.1.7:5000" || len(cfg.Cluster.Secret) < 32 {
		t.Errorf("config cluster: node_name %q advertise %q secret of %d bytes; want the pod's name, http://<pod IP>:5000, 32 bytes or more",
			cfg.Cluster.NodeName, cfg.Cluster.Advertise, len(cfg.Cluster.Secret))
	}
	if cfg.PublicURL != "https://registry.example.com" || cfg.Mirror.MaxSize != 500<<30 {
		t.Errorf("config: public_url %q max_size %d, want https://registry.example.com and 500GiB", cfg.PublicURL, cfg.Mirror.MaxSize)
	}
}

// Values a chart cannot work with fail helm template with a message naming the value to set.
func TestHelmChartRefusesIncompleteValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"fleet without PostgreSQL", []string{"--set", "fleet.enabled=true"}, "fleet.postgres.existingSecret"},
		{"fleet without S3 keys", []string{"--set", "fleet.enabled=true,fleet.postgres.existingSecret=pg"}, "fleet.s3.existingSecret"},
		{"fleet with an endpoint without scheme", []string{"-f", chartDir + "/values-fleet.yaml", "--set", "fleet.s3.endpoint=s3.example.com"}, "fleet.s3.endpoint"},
		{"hosts.toml without a URL", []string{"--set", "hostsToml.enabled=true"}, "hostsToml.mirrorURL"},
		{"hosts.toml for a bad registry name", []string{"--set", "hostsToml.enabled=true,hostsToml.mirrorURL=http://10.96.0.50:5000,hostsToml.registries[0].name=a'b,hostsToml.registries[0].server=https://x"}, "hostsToml.registries"},
		{"ingress without hosts", []string{"--set", "ingress.enabled=true"}, "ingress.hosts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, append([]string{"template", "cove", chartDir}, tc.args...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm template %v: err %v, output:\n%s\nwant a failure naming %s", tc.args, err, out, tc.want)
			}
		})
	}
}
