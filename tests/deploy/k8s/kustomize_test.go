package k8s

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// loadKustomization decodes a kustomization.yaml strictly into kustomize's own type.
func loadKustomization(t *testing.T, data []byte) *types.Kustomization {
	t.Helper()
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatalf("kustomization: %v", err)
	}
	var k types.Kustomization
	strictErrs, err := kjson.UnmarshalStrict(j, &k, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil || len(strictErrs) > 0 {
		t.Fatalf("kustomization: %v %v", err, strictErrs)
	}
	if k.APIVersion != types.KustomizationVersion || k.Kind != types.KustomizationKind {
		t.Fatalf("kustomization: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	return &k
}

// build runs kustomize (krusty, the library behind `kubectl apply -k`) on dir of fSys and
// decodes the result strictly.
func build(t *testing.T, fSys filesys.FileSystem, dir string) ([]*manifest, error) {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fSys, dir)
	if err != nil {
		return nil, err
	}
	out, err := rm.AsYaml()
	if err != nil {
		return nil, err
	}
	return decodeStream("kustomize build "+dir, out)
}

var (
	renderOnce   sync.Once
	rendered     []*manifest
	renderFailed error
)

// renderBase is deploy/k8s as `kubectl apply -k deploy/k8s` would apply it.
func renderBase(t *testing.T) []*manifest {
	t.Helper()
	renderOnce.Do(func() { rendered, renderFailed = build(t, filesys.MakeFsOnDisk(), k8sDir(t)) })
	if renderFailed != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", renderFailed)
	}
	return rendered
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(k8sDir(t), "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	k := loadKustomization(t, data)
	if k.Namespace != namespace {
		t.Errorf("namespace %q, want %q", k.Namespace, namespace)
	}
	listed := slices.Clone(k.Resources)
	sort.Strings(listed)
	if files := manifestFiles(t); !slices.Equal(listed, files) {
		t.Errorf("resources %v, but the directory has %v (every manifest listed once, nothing else)", listed, files)
	}
	if len(k.Images) != 1 || k.Images[0].Name != "iotd" || k.Images[0].NewName == "" {
		t.Errorf("images %+v: want one entry for iotd", k.Images)
	}
	for _, l := range k.Labels {
		// Selectors are immutable: a label added to them would make the next apply fail.
		if l.IncludeSelectors {
			t.Errorf("labels %v: includeSelectors would change the Deployments' immutable selectors", l.Pairs)
		}
	}
	if len(k.CommonLabels) > 0 {
		t.Errorf("commonLabels %v also change selectors; use labels", k.CommonLabels)
	}
}

func TestKustomizeBuild(t *testing.T) {
	out := renderBase(t)
	files := loadFiles(t)
	if len(out) != len(files) {
		t.Errorf("kustomize renders %d resources, the files hold %d", len(out), len(files))
	}
	for _, m := range out {
		if m.kind == "Namespace" {
			continue
		}
		if m.ns != namespace {
			t.Errorf("%s %s: namespace %q, want %q", m.kind, m.name, m.ns, namespace)
		}
		if m.labels["app.kubernetes.io/part-of"] != "iot-telemetry" {
			t.Errorf("%s %s: no part-of label: %v", m.kind, m.name, m.labels)
		}
		if d, ok := m.obj.(*appsv1.Deployment); ok {
			for _, c := range d.Spec.Template.Spec.Containers {
				if c.Image != "iotd:latest" {
					t.Errorf("%s: image %q, want iotd:latest", d.Name, c.Image)
				}
			}
			if d.Spec.Template.Labels["app.kubernetes.io/part-of"] != "iot-telemetry" {
				t.Errorf("%s: pod template without the part-of label", d.Name)
			}
			if _, ok := d.Spec.Selector.MatchLabels["app.kubernetes.io/part-of"]; ok {
				t.Errorf("%s: the part-of label reached the selector", d.Name)
			}
		}
		if s, ok := m.obj.(*corev1.Service); ok {
			if _, ok := s.Spec.Selector["app.kubernetes.io/part-of"]; ok {
				t.Errorf("Service %s: the part-of label reached the selector", s.Name)
			}
		}
	}
}

// copyBase puts deploy/k8s into an in-memory file system at its real path.
func copyBase(t *testing.T, fSys filesys.FileSystem) {
	t.Helper()
	dir := realK8sDir(t)
	if err := fSys.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range append(manifestFiles(t), "kustomization.yaml") {
		data, err := os.ReadFile(filepath.Join(k8sDir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := fSys.WriteFile(filepath.Join(dir, f), data); err != nil {
			t.Fatal(err)
		}
	}
}

// images returns the images of every container of every Deployment.
func images(ms []*manifest) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		if d, ok := m.obj.(*appsv1.Deployment); ok {
			for _, c := range d.Spec.Template.Spec.Containers {
				out[d.Name] = c.Image
			}
		}
	}
	return out
}

// An overlay's `images:` (what deploy.sh writes) replaces the image of every role.
func TestOverlaySetsTheImage(t *testing.T) {
	fSys := filesys.MakeFsInMemory()
	copyBase(t, fSys)
	overlay := filepath.Join(filepath.Dir(realK8sDir(t)), "overlay-test")
	rel, err := filepath.Rel(overlay, realK8sDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := fSys.MkdirAll(overlay); err != nil {
		t.Fatal(err)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel +
		"\nimages:\n  - name: iotd\n    newName: registry.example.com:5000/iot/iotd\n    newTag: \"1.2.3\"\n"
	if err := fSys.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k)); err != nil {
		t.Fatal(err)
	}
	out, err := build(t, fSys, overlay)
	if err != nil {
		t.Fatal(err)
	}
	got := images(out)
	if len(got) != len(roles) {
		t.Fatalf("images of %v, want %d Deployments", got, len(roles))
	}
	for name, img := range got {
		if img != "registry.example.com:5000/iot/iotd:1.2.3" {
			t.Errorf("%s: image %q", name, img)
		}
	}
}
