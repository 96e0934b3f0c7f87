package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The kinds deploy/k8s may contain, each decoded into Kubernetes' (or the Prometheus Operator's)
// own Go type. Anything else is an error: a typo in apiVersion or kind must not pass unchecked.
var kinds = map[string]func() any{
	"v1/Namespace":                            func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/Ingress":            func() any { return &networkingv1.Ingress{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
}

// manifest is one decoded YAML document.
type manifest struct {
	source string // file#index, for messages
	kind   string
	name   string
	ns     string
	labels map[string]string
	obj    any // *appsv1.Deployment, ...
}

// decodeStrict decodes one YAML document as the API server's strict field validation would:
// duplicate keys, unknown fields (matched case-sensitively) and values of the wrong type are
// errors, and so are a missing or unknown apiVersion/kind.
func decodeStrict(doc []byte) (*manifest, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return nil, fmt.Errorf("apiVersion/kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, errors.New("apiVersion and kind are required")
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %s %s", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strictErrs, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strictErrs) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strictErrs...))
	}
	meta := objectMeta(obj)
	if meta.Name == "" {
		return nil, fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	return &manifest{kind: tm.Kind, name: meta.Name, ns: meta.Namespace, labels: meta.Labels, obj: obj}, nil
}

func objectMeta(obj any) *metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *corev1.Service:
		return &o.ObjectMeta
	case *appsv1.Deployment:
		return &o.ObjectMeta
	case *autoscalingv2.HorizontalPodAutoscaler:
		return &o.ObjectMeta
	case *networkingv1.Ingress:
		return &o.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return &o.ObjectMeta
	case *monitoringv1.ServiceMonitor:
		return &o.ObjectMeta
	}
	panic(fmt.Sprintf("objectMeta: %T", obj))
}

// splitDocuments returns the non-empty documents of a multi-document YAML stream (a document of
// comments only is empty).
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		docs = append(docs, doc)
	}
}

// decodeStream decodes every document of a stream; source names it in messages.
func decodeStream(source string, data []byte) ([]*manifest, error) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var out []*manifest
	for i, doc := range docs {
		m, err := decodeStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", source, i+1, err)
		}
		m.source = fmt.Sprintf("%s#%d", source, i+1)
		out = append(out, m)
	}
	return out, nil
}

// repoRoot is the iotd checkout this test file belongs to.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// k8sDir is deploy/k8s, read through the symlink testdata/k8s: the go command rechecks only the
// files a test opens inside its module before reusing a cached result, so reading the manifests
// by their own path would let `go test` report a stale pass after they change.
func k8sDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "tests", "deploy", "k8s", "testdata", "k8s")
	if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err != nil {
		t.Fatalf("testdata/k8s should be a symlink to deploy/k8s: %v", err)
	}
	return dir
}

// realK8sDir is deploy/k8s without symlinks (where kustomize and deploy.sh see it).
func realK8sDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(k8sDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// manifestFiles lists deploy/k8s's YAML files but kustomization.yaml, sorted.
func manifestFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(k8sDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == "kustomization.yaml" || n == "kustomization.yml" || n == "Kustomization" {
			continue
		}
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			files = append(files, n)
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	return files
}

// loadFiles decodes every manifest file of deploy/k8s, failing the test on any error.
func loadFiles(t testing.TB) []*manifest {
	t.Helper()
	var all []*manifest
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(filepath.Join(k8sDir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		ms, err := decodeStream(f, data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ms...)
	}
	return all
}

const validDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  replicas: 2
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
        - name: x
          image: iotd:latest
          env:
            - name: INGEST_PORT
              value: "8001"
          ports:
            - containerPort: 8001
`

// The decoder must reject what the API server's strict validation rejects; otherwise the other
// tests would prove nothing about the real manifests.
func TestDecoderRejectsInvalidManifests(t *testing.T) {
	if _, err := decodeStrict([]byte(validDeployment)); err != nil {
		t.Fatalf("the valid deployment is rejected: %v", err)
	}
	bad := map[string]string{
		"misspelled field replica": strings.Replace(validDeployment, "replicas: 2", "replica: 2", 1),
		"field of the wrong case":  strings.Replace(validDeployment, "replicas: 2", "Replicas: 2", 1),
		"string for an int":        strings.Replace(validDeployment, "replicas: 2", `replicas: "2"`, 1),
		"int for a string":         strings.Replace(validDeployment, `value: "8001"`, "value: 8001", 1),
		"string for a port":        strings.Replace(validDeployment, "containerPort: 8001", "containerPort: http", 1),
		"list for a map":           strings.Replace(validDeployment, "matchLabels: {app: x}", "matchLabels: [app]", 1),
		"duplicate key":            strings.Replace(validDeployment, "replicas: 2", "replicas: 2\n  replicas: 3", 1),
		"unknown nested field":     strings.Replace(validDeployment, "image: iotd:latest", "image: iotd:latest\n          imagePullPolicyy: Always", 1),
		"unknown kind":             strings.Replace(validDeployment, "kind: Deployment", "kind: Deploymnet", 1),
		"removed apiVersion":       strings.Replace(validDeployment, "apps/v1", "extensions/v1beta1", 1),
		"no kind":                  strings.Replace(validDeployment, "kind: Deployment", "", 1),
		"no name":                  strings.Replace(validDeployment, "  name: x\nspec", "  labels: {}\nspec", 1),
		"hpa v2 field of v2beta1":  "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\nspec:\n  maxReplicas: 3\n  targetCPUUtilizationPercentage: 50\n  scaleTargetRef: {kind: Deployment, name: x}\n",
		"servicemonitor typo":      "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoint:\n    - port: http\n",
	}
	for name, doc := range bad {
		t.Run(name, func(t *testing.T) {
			if doc == validDeployment {
				t.Fatal("the test's replacement did not apply")
			}
			if m, err := decodeStrict([]byte(doc)); err == nil {
				t.Fatalf("accepted (%s %s):\n%s", m.kind, m.name, doc)
			} else {
				t.Logf("rejected: %v", err)
			}
		})
	}
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	ms := loadFiles(t)
	seen := map[string]string{}
	for _, m := range ms {
		key := m.kind + "/" + m.name
		if prev, ok := seen[key]; ok {
			t.Errorf("%s is defined twice: %s and %s", key, prev, m.source)
		}
		seen[key] = m.source
		// kustomization.yaml sets the namespace; a different one in a file would be overridden
		// silently by kustomize but used as is by `kubectl apply -f`.
		if m.ns != "" && m.ns != namespace {
			t.Errorf("%s: namespace %q, want none or %q", m.source, m.ns, namespace)
		}
		if m.labels["app.kubernetes.io/name"] != "iotd" {
			t.Errorf("%s: label app.kubernetes.io/name is %q, want iotd", m.source, m.labels["app.kubernetes.io/name"])
		}
	}
	t.Logf("%d resources in %d files", len(ms), len(manifestFiles(t)))
}
