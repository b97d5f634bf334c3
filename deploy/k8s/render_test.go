// Package k8s holds laneIM's Kubernetes manifests; its tests render the
// overlays with kustomize and decode every object strictly against the
// Kubernetes API types.
package k8s

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// object is one rendered object, decoded into its API type.
type object struct {
	kind, name string
	obj        runtime.Object
}

// decoder decodes YAML strictly: an unknown or duplicated field, or a
// kind not in the scheme, is an error.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
}

// render runs kustomize on an overlay and decodes what it outputs, in order.
func render(t *testing.T, overlay string) []object {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified // the overlays' sortOptions decide, as with kubectl apply -k
	k := krusty.MakeKustomizer(opts)
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", overlay, err)
	}
	dec := decoder(t)
	var out []object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(y, nil, nil)
		if err != nil {
			t.Fatalf("overlays/%s: %s %s does not decode strictly: %v", overlay, r.GetKind(), r.GetName(), err)
		}
		out = append(out, object{kind: gvk.Kind, name: r.GetName(), obj: obj})
	}
	return out
}

// TestStrictDecoderRefusesUnknownFields shows the decoder the other tests
// rely on is strict: a misspelt field fails.
func TestStrictDecoderRefusesUnknownFields(t *testing.T) {
	dec := decoder(t)
	tests := []struct{ name, yaml string }{
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 1}\n"},
		{"misplaced field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, containerPort: 80}]}\n"},
		{"duplicate field", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, name: y}\n"},
		{"unknown kind", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := dec.Decode([]byte(tt.yaml), nil, nil); err == nil {
				t.Errorf("decoded %q without error", tt.yaml)
			}
		})
	}
	ok := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 1}\n"
	if _, _, err := dec.Decode([]byte(ok), nil, nil); err != nil {
		t.Errorf("a valid Deployment: %v", err)
	}
}

// pod is a rendered workload's pod template.
type pod struct {
	kind, name string
	spec       corev1.PodSpec
}

func pods(objs []object) []pod {
	var out []pod
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, pod{o.kind, o.name, v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, pod{o.kind, o.name, v.Spec.Template.Spec})
		case *batchv1.Job:
			out = append(out, pod{o.kind, o.name, v.Spec.Template.Spec})
		}
	}
	return out
}

func find[T runtime.Object](t *testing.T, objs []object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o.obj.(T)
		}
	}
	var zero T
	t.Fatalf("no %s %s rendered", kind, name)
	return zero
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// configMap returns the rendered ConfigMap name.
func configMap(t *testing.T, objs []object, name string) *corev1.ConfigMap {
	t.Helper()
	return find[*corev1.ConfigMap](t, objs, "ConfigMap", name)
}

// checkCommon checks what every overlay must keep from the base.
func checkCommon(t *testing.T, objs []object, image string) {
	if len(objs) == 0 || objs[0].kind != "Namespace" || objs[0].name != "laneim" {
		t.Fatalf("first object is %s %s, want the Namespace laneim (applied before what lives in it)", objs[0].kind, objs[0].name)
	}
	names := map[string]bool{} // kind/name of every object, to resolve references
	for _, o := range objs {
		names[o.kind+"/"+o.name] = true
		if o.kind == "Namespace" {
			continue
		}
		ns := o.obj.(interface{ GetNamespace() string }).GetNamespace()
		if ns != "laneim" {
			t.Errorf("%s %s in namespace %q, want laneim", o.kind, o.name, ns)
		}
	}

	ps := pods(objs)
	var workloads []string
	for _, p := range ps {
		workloads = append(workloads, p.kind+"/"+p.name)
		if len(p.spec.Containers) != 1 {
			t.Errorf("%s %s has %d containers, want 1", p.kind, p.name, len(p.spec.Containers))
			continue
		}
		c := p.spec.Containers[0]
		if c.Image != image {
			t.Errorf("%s %s runs image %q, want %q (set once, in the kustomization's images)", p.kind, p.name, c.Image, image)
		}
		if p.spec.SecurityContext == nil || p.spec.SecurityContext.RunAsNonRoot == nil || !*p.spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s %s may run as root", p.kind, p.name)
		}
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil && !names["ConfigMap/"+ef.ConfigMapRef.Name]:
				t.Errorf("%s %s reads ConfigMap %s, which is not rendered", p.kind, p.name, ef.ConfigMapRef.Name)
			case ef.SecretRef != nil && !names["Secret/"+ef.SecretRef.Name]:
				t.Errorf("%s %s reads Secret %s, which is not rendered", p.kind, p.name, ef.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && !names["ConfigMap/"+e.ValueFrom.ConfigMapKeyRef.Name] {
				t.Errorf("%s %s env %s reads ConfigMap %s, which is not rendered", p.kind, p.name, e.Name, e.ValueFrom.ConfigMapKeyRef.Name)
			}
		}
		if p.kind == "Job" {
			continue
		}
		// Long-running processes: probes on the admin port.
		admin := intstr.FromString("admin")
		if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port != admin {
			t.Errorf("%s %s: liveness probe %+v, want GET /healthz on port admin", p.kind, p.name, c.LivenessProbe)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port != admin {
			t.Errorf("%s %s: readiness probe %+v, want GET /readyz on port admin", p.kind, p.name, c.ReadinessProbe)
		}
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "admin" && p.ContainerPort == 9100 }) {
			t.Errorf("%s %s has no admin port 9100", p.kind, p.name)
		}
	}
	for _, want := range []string{"Deployment/login", "Deployment/presence", "Deployment/routing", "Deployment/fanout", "Deployment/api", "Deployment/binlogsync", "StatefulSet/comet", "Job/topics", "Job/migrate"} {
		if !slices.Contains(workloads, want) {
			t.Errorf("no %s rendered (have %v)", want, workloads)
		}
	}
	if cm := configMap(t, objs, "laneim"); cm.Data["LANEIM_ADMIN_ADDR"] != "0.0.0.0:9100" {
		t.Errorf("LANEIM_ADMIN_ADDR = %q, want 0.0.0.0:9100 (probes reach it from the node)", cm.Data["LANEIM_ADMIN_ADDR"])
	}

	// Jobs: the commands they run.
	for name, args := range map[string][]string{"topics": {"topics"}, "migrate": {"migrate"}} {
		j := find[*batchv1.Job](t, objs, "Job", name)
		if got := j.Spec.Template.Spec.Containers[0].Args; !slices.Equal(got, args) {
			t.Errorf("Job %s runs %v, want %v", name, got, args)
		}
	}

	// binlogsync: one at a time, never two with one server_id.
	b := find[*appsv1.Deployment](t, objs, "Deployment", "binlogsync")
	if b.Spec.Replicas == nil || *b.Spec.Replicas != 1 || b.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("binlogsync: replicas %v strategy %q, want 1 and Recreate", b.Spec.Replicas, b.Spec.Strategy.Type)
	}

	// api: on every address, so port-forward and the Service reach it.
	api := find[*appsv1.Deployment](t, objs, "Deployment", "api")
	if v, _ := envValue(api.Spec.Template.Spec.Containers[0], "LANEIM_API_ADDR"); !strings.HasPrefix(v, "0.0.0.0:") {
		t.Errorf("api listens on %q, want 0.0.0.0:PORT", v)
	}

	// Comets: a per-pod Service and Ingress host for each replica, and the
	// URL they register matches the Ingress.
	sts := find[*appsv1.StatefulSet](t, objs, "StatefulSet", "comet")
	domain := configMap(t, objs, "laneim-comet").Data["domain"]
	if domain == "" {
		t.Fatal("no ConfigMap laneim-comet with the comets' domain")
	}
	if v, _ := envValue(sts.Spec.Template.Spec.Containers[0], "LANEIM_COMET_URL"); v != "wss://$(POD_NAME).$(COMET_DOMAIN)/ws" {
		t.Errorf("LANEIM_COMET_URL = %q", v)
	}
	ing := find[*networkingv1.Ingress](t, objs, "Ingress", "comet")
	replicas := int(*sts.Spec.Replicas)
	if len(ing.Spec.Rules) != replicas {
		t.Errorf("Ingress has %d rules for %d comets", len(ing.Spec.Rules), replicas)
	}
	for i := 0; i < replicas; i++ {
		pod := fmt.Sprintf("comet-%d", i)
		svc := find[*corev1.Service](t, objs, "Service", pod)
		if svc.Spec.Selector["statefulset.kubernetes.io/pod-name"] != pod {
			t.Errorf("Service %s selects %v, want the pod %s only", pod, svc.Spec.Selector, pod)
		}
		if i >= len(ing.Spec.Rules) {
			continue
		}
		r := ing.Spec.Rules[i]
		if want := pod + "." + domain; r.Host != want {
			t.Errorf("Ingress rule %d is for host %q, want %q (the URL comet %s registers)", i, r.Host, want, pod)
		}
		if be := r.HTTP.Paths[0].Backend.Service; be == nil || be.Name != pod {
			t.Errorf("Ingress host %s goes to %+v, want Service %s", r.Host, be, pod)
		}
	}
	if len(ing.Spec.TLS) == 0 || !slices.Contains(ing.Spec.TLS[0].Hosts, "*."+domain) {
		t.Errorf("Ingress TLS %+v does not cover *.%s", ing.Spec.TLS, domain)
	}

	// The Secret: what the base ships is refused by the binary.
	for _, o := range objs {
		if s, ok := o.obj.(*corev1.Secret); ok {
			if v := string(s.Data["LANEIM_SECRET"]); v != "" && !strings.Contains(v, "change-me") {
				t.Errorf("Secret %s ships a LANEIM_SECRET that is not a refused placeholder", o.name)
			}
		}
	}
}

// flagDef matches a flag's definition in Go source: fs.StringVar(&v,
// "name", ...), fs.Duration("name", ...).
var flagDef = regexp.MustCompile(`\.(?:String|Bool|Int|Int64|Uint|Uint64|Duration|Float64|Func|BoolFunc|TextVar|Var)(?:Var)?\((?:&[^,]+,\s*)?"([a-z][a-z0-9-]*)"`)

// laneimFlags returns the names of the flags defined in the root module's
// sources.
func laneimFlags(t *testing.T) map[string]bool {
	t.Helper()
	root := filepath.Join("..", "..")
	flags := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "deploy" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range flagDef.FindAllSubmatch(src, -1) {
			flags[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"kafka", "secret", "api-addr", "replication-factor"} {
		if !flags[f] {
			t.Fatalf("found no definition of the flag --%s in the sources; the scan is broken", f)
		}
	}
	return flags
}

// checkSettings checks that every LANEIM_* variable the manifests set is
// a flag of laneim (LANEIM_API_ADDR is --api-addr): a misspelt one would
// be ignored.
func checkSettings(t *testing.T, objs []object) {
	t.Helper()
	flags := laneimFlags(t)
	check := func(where, name string) {
		if !strings.HasPrefix(name, "LANEIM_") {
			return
		}
		f := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "LANEIM_"), "_", "-"))
		if !flags[f] {
			t.Errorf("%s sets %s, but laneim has no flag --%s", where, name, f)
		}
	}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.ConfigMap:
			for k := range v.Data {
				check("ConfigMap "+o.name, k)
			}
		case *corev1.Secret:
			for k := range v.Data {
				check("Secret "+o.name, k)
			}
		}
	}
	for _, p := range pods(objs) {
		for _, e := range p.spec.Containers[0].Env {
			check(p.kind+" "+p.name, e.Name)
		}
	}
}

func TestDevOverlay(t *testing.T) {
	objs := render(t, "dev")
	checkSettings(t, objs)
	checkCommon(t, objs, "laneim:dev")
	store := find[*appsv1.StatefulSet](t, objs, "StatefulSet", "store")
	c := store.Spec.Template.Spec.Containers[0]
	if v, _ := envValue(c, "LANEIM_HISTORY"); v == "" || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return strings.HasPrefix(v, m.MountPath+"/") }) {
		t.Errorf("store: --history %q is not on a mounted volume (%+v)", v, c.VolumeMounts)
	}
	if *store.Spec.Replicas != 1 {
		t.Errorf("store has %d replicas; a bbolt file has one writer", *store.Spec.Replicas)
	}
	if v, _ := envValue(find[*batchv1.Job](t, objs, "Job", "topics").Spec.Template.Spec.Containers[0], "LANEIM_REPLICATION_FACTOR"); v != "1" {
		t.Errorf("dev topics replication factor %q, want 1", v)
	}
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			if _, ok := cm.Data["LANEIM_SCYLLA"]; ok {
				t.Errorf("ConfigMap %s sets LANEIM_SCYLLA without the scylla component", o.name)
			}
		}
	}
}

func TestProductionOverlay(t *testing.T) {
	objs := render(t, "production")
	checkSettings(t, objs)
	checkCommon(t, objs, "registry.example.com/laneim:1.0.0")

	// Scylla: persist and history scale; the bbolt pod is gone; only the
	// store's users read Scylla's settings.
	for _, o := range objs {
		if o.kind == "StatefulSet" && o.name == "store" {
			t.Error("the bbolt StatefulSet store is still rendered with the scylla component")
		}
	}
	readsScylla := func(p pod) bool {
		return slices.ContainsFunc(p.spec.Containers[0].EnvFrom, func(e corev1.EnvFromSource) bool {
			return e.ConfigMapRef != nil && e.ConfigMapRef.Name == "laneim-scylla"
		})
	}
	for _, p := range pods(objs) {
		want := p.kind == "Deployment" && (p.name == "persist" || p.name == "history" || p.name == "api")
		if readsScylla(p) != want {
			t.Errorf("%s %s reads Scylla's settings: %v, want %v", p.kind, p.name, readsScylla(p), want)
		}
	}
	find[*appsv1.Deployment](t, objs, "Deployment", "persist")
	find[*appsv1.Deployment](t, objs, "Deployment", "history")

	// TLS: every pod mounts the certificates the settings name.
	cm := configMap(t, objs, "laneim")
	for _, k := range []string{"LANEIM_KAFKA_CA", "LANEIM_KAFKA_SASL_MECHANISM", "LANEIM_REDIS_CA", "LANEIM_ETCD_CA", "LANEIM_ETCD_CERT", "LANEIM_ETCD_KEY"} {
		if !strings.HasPrefix(cm.Data[k], "/etc/laneim/tls/") && k != "LANEIM_KAFKA_SASL_MECHANISM" {
			t.Errorf("ConfigMap laneim: %s = %q, want a file under /etc/laneim/tls", k, cm.Data[k])
		}
	}
	if cm.Data["LANEIM_KAFKA_SASL_MECHANISM"] == "" {
		t.Error("no Kafka SASL mechanism")
	}
	for _, p := range pods(objs) {
		c := p.spec.Containers[0]
		mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "tls" && m.MountPath == "/etc/laneim/tls" })
		vol := slices.ContainsFunc(p.spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == "tls" && v.Secret != nil && v.Secret.SecretName == "laneim-tls"
		})
		if !mounted || !vol {
			t.Errorf("%s %s does not mount the Secret laneim-tls at /etc/laneim/tls", p.kind, p.name)
		}
	}
	api := find[*appsv1.Deployment](t, objs, "Deployment", "api").Spec.Template.Spec.Containers[0]
	for _, k := range []string{"LANEIM_API_TLS_CERT", "LANEIM_API_TLS_KEY", "LANEIM_API_CLIENT_CA"} {
		if v, _ := envValue(api, k); !strings.HasPrefix(v, "/etc/laneim/tls/") {
			t.Errorf("api: %s = %q", k, v)
		}
	}
	if v, _ := envValue(api, "LANEIM_API_ADDR"); v != "0.0.0.0:9090" {
		t.Errorf("api: the TLS patch lost LANEIM_API_ADDR (%q)", v)
	}
	secret := find[*corev1.Secret](t, objs, "Secret", "laneim")
	for _, k := range []string{"LANEIM_SECRET", "LANEIM_API_TOKEN", "LANEIM_MYSQL", "LANEIM_KAFKA_SASL_PASSWORD", "LANEIM_REDIS_PASSWORD"} {
		if _, ok := secret.Data[k]; !ok {
			t.Errorf("Secret laneim has no %s", k)
		}
	}
	if v, _ := envValue(find[*batchv1.Job](t, objs, "Job", "topics").Spec.Template.Spec.Containers[0], "LANEIM_REPLICATION_FACTOR"); v != "3" {
		t.Errorf("production topics replication factor %q, want 3", v)
	}
}
