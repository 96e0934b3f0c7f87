package k8s

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// runDeploy runs deploy.sh with only the given environment (plus PATH and HOME) and a TMPDIR
// of its own, which must be empty again afterwards: the overlay is temporary.
func runDeploy(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	script := filepath.Join(k8sDir(t), "deploy.sh")
	// Read it through testdata/k8s, so that a change of the script invalidates cached results.
	if data, err := os.ReadFile(script); err != nil || !bytes.HasPrefix(data, []byte("#!/usr/bin/env bash\n")) {
		t.Fatalf("deploy.sh: %v", err)
	}
	// Not t.TempDir(): its name comes from the test's, whose characters kustomize may refuse.
	tmp, err := os.MkdirTemp("", "deploysh")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(realK8sDir(t), "deploy.sh")}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + tmp}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("deploy.sh did not finish within 60 s: %s", errOut.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("deploy.sh left %v in TMPDIR", left)
	}
	return out.String(), errOut.String(), err
}

// buildOverlay builds the overlay kustomization deploy.sh wrote (its first line names the
// directory it was in) over deploy/k8s, as `kubectl apply -k` would.
func buildOverlay(t *testing.T, kustomization string) []*manifest {
	t.Helper()
	first, _, _ := strings.Cut(kustomization, "\n")
	dir, ok := strings.CutPrefix(first, "# overlay: ")
	if !ok || !filepath.IsAbs(dir) {
		t.Fatalf("the overlay does not start with '# overlay: DIR':\n%s", kustomization)
	}
	k := loadKustomization(t, []byte(kustomization))
	if len(k.Resources) != 1 || filepath.IsAbs(k.Resources[0]) {
		t.Fatalf("overlay resources %v: want one relative path to deploy/k8s", k.Resources)
	}
	if got := filepath.Join(dir, k.Resources[0]); got != realK8sDir(t) {
		t.Fatalf("overlay base %s resolves to %s, want %s", k.Resources[0], got, realK8sDir(t))
	}
	fSys := filesys.MakeFsInMemory()
	copyBase(t, fSys)
	if err := fSys.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := fSys.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization)); err != nil {
		t.Fatal(err)
	}
	out, err := build(t, fSys, dir)
	if err != nil {
		t.Fatalf("kustomize build of the overlay: %v\n%s", err, kustomization)
	}
	return out
}

func checkImages(t *testing.T, ms []*manifest, want string) {
	t.Helper()
	got := images(ms)
	if len(got) != len(roles) {
		t.Errorf("images of %v, want %d Deployments", got, len(roles))
	}
	for name, img := range got {
		if img != want {
			t.Errorf("%s: image %q, want %q", name, img, want)
		}
	}
}

func hasKind(ms []*manifest, kind string) bool {
	return slices.ContainsFunc(ms, func(m *manifest) bool { return m.kind == kind })
}

func TestDeployScriptDryRunSetsTheImage(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"", "iotd:latest"},
		{"iotd", "iotd:latest"},
		{"iotd:dev", "iotd:dev"},
		{"registry.example.com/iot/iotd:1.0.0", "registry.example.com/iot/iotd:1.0.0"},
		{"registry.example.com:5000/iotd", "registry.example.com:5000/iotd:latest"},
		{"localhost:5000/iot/iotd:2", "localhost:5000/iot/iotd:2"},
		{"registry.example.com/iotd@sha256:" + strings.Repeat("ab", 32), "registry.example.com/iotd@sha256:" + strings.Repeat("ab", 32)},
	} {
		t.Run(tc.want, func(t *testing.T) {
			env := map[string]string{"KUBECTL": "/nonexistent/kubectl"}
			if tc.image != "" {
				env["IMAGE"] = tc.image
			}
			out, stderr, err := runDeploy(t, env, "--dry-run")
			if err != nil {
				t.Fatalf("%v: %s", err, stderr)
			}
			ms := buildOverlay(t, out)
			checkImages(t, ms, tc.want)
			if !hasKind(ms, "ServiceMonitor") || len(ms) != len(loadFiles(t)) {
				t.Errorf("the dry run renders %d resources (ServiceMonitor %v), want all %d", len(ms), hasKind(ms, "ServiceMonitor"), len(loadFiles(t)))
			}
		})
	}
	t.Run("SERVICEMONITOR=0", func(t *testing.T) {
		out, stderr, err := runDeploy(t, map[string]string{"KUBECTL": "/nonexistent/kubectl", "SERVICEMONITOR": "0"}, "--dry-run")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		ms := buildOverlay(t, out)
		if hasKind(ms, "ServiceMonitor") || len(ms) != len(loadFiles(t))-1 {
			t.Errorf("SERVICEMONITOR=0 still renders a ServiceMonitor, or lost something else (%d resources)", len(ms))
		}
	})
}

func TestDeployScriptArguments(t *testing.T) {
	out, _, err := runDeploy(t, nil, "--help")
	if err != nil || !strings.Contains(out, "IMAGE") || !strings.Contains(out, "--dry-run") {
		t.Errorf("--help: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--bogus"}, "unknown argument"},
		{map[string]string{"IMAGE": "registry.example.com/"}, []string{"--dry-run"}, "not an image reference"},
		{map[string]string{"IMAGE": "iotd@md5:12"}, []string{"--dry-run"}, "not a digest"},
		{map[string]string{"SERVICEMONITOR": "yes"}, []string{"--dry-run"}, "SERVICEMONITOR"},
		{map[string]string{"KUBECTL": "/nonexistent/kubectl", "SKIP_BUILD": "1"}, nil, "not found"},
	} {
		_, stderr, err := runDeploy(t, tc.env, tc.args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v %v: err %v, stderr %q; want a failure saying %q", tc.env, tc.args, err, stderr, tc.want)
		}
	}
}

// fakeCluster writes stand-ins for kubectl and docker that log their arguments, keep the overlay
// that `kubectl apply -k` gets, and answer as a cluster would.
func fakeCluster(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	kubectl := `#!/usr/bin/env bash
echo "kubectl $*" >>"$FAKE_DIR/log"
case "$*" in
  "get crd servicemonitors.monitoring.coreos.com") [[ ${FAKE_CRD:-1} == 1 ]] ;;
  "-n iot-telemetry get deployment "*) [[ ${FAKE_EXISTING:-0} == 1 ]] ;;
  "apply -k "*) cp "$3/kustomization.yaml" "$FAKE_DIR/applied.yaml" ;;
  "-n iot-telemetry rollout status deployment "*) [[ $6 != "${FAKE_FAIL:-none}" ]] ;;
  "-n iot-telemetry rollout restart deployment "*) true ;;
  "-n iot-telemetry get ingress iotd -o jsonpath={.spec.rules[0].host}") echo -n iot.example.com ;;
  "-n iot-telemetry get ingress iotd "*) echo -n 192.0.2.10 ;;
  "-n iot-telemetry get pods "* | "-n iot-telemetry describe pods "*) echo "pod events" ;;
  *) echo "fake kubectl: unexpected: $*" >&2; exit 99 ;;
esac
`
	docker := `#!/usr/bin/env bash
echo "docker $*" >>"$FAKE_DIR/log"
`
	for name, body := range map[string]string{"kubectl": kubectl, "docker": docker} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func fakeRun(t *testing.T, env map[string]string) (log []string, applied []*manifest, stdout, stderr string, err error) {
	t.Helper()
	dir := fakeCluster(t)
	full := map[string]string{"KUBECTL": filepath.Join(dir, "kubectl"), "DOCKER": filepath.Join(dir, "docker"), "FAKE_DIR": dir}
	for k, v := range env {
		full[k] = v
	}
	stdout, stderr, err = runDeploy(t, full)
	data, _ := os.ReadFile(filepath.Join(dir, "log"))
	log = strings.Split(strings.TrimSpace(string(data)), "\n")
	if a, readErr := os.ReadFile(filepath.Join(dir, "applied.yaml")); readErr == nil {
		applied = buildOverlay(t, string(a))
	}
	return log, applied, stdout, stderr, err
}

func TestDeployScriptBuildsPushesAppliesAndWaits(t *testing.T) {
	const image = "registry.example.com/iot/iotd:1.0.0"
	log, applied, stdout, stderr, err := fakeRun(t, map[string]string{"IMAGE": image, "ROLLOUT_TIMEOUT": "42s"})
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout, stderr)
	}
	root := filepath.Dir(filepath.Dir(realK8sDir(t)))
	var want []string
	want = append(want, "kubectl get crd servicemonitors.monitoring.coreos.com",
		"docker build -t "+image+" -f "+root+"/Dockerfile "+root,
		"docker push "+image)
	for _, r := range roles {
		want = append(want, "kubectl -n iot-telemetry get deployment "+r.deployment)
	}
	want = append(want, "APPLY")
	for _, r := range roles {
		want = append(want, "kubectl -n iot-telemetry rollout status deployment "+r.deployment+" --timeout=42s")
	}
	var got []string
	for _, l := range log {
		if strings.HasPrefix(l, "kubectl apply -k ") {
			l = "APPLY"
		}
		if strings.Contains(l, "get ingress") {
			continue
		}
		got = append(got, l)
	}
	if !slices.Equal(got, want) {
		t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	checkImages(t, applied, image)
	if !hasKind(applied, "ServiceMonitor") {
		t.Error("the ServiceMonitor was not applied though the cluster has its CRD")
	}
	if !strings.Contains(stdout, "http://iot.example.com/ingest") || !strings.Contains(stdout, "port-forward service/dashboard-api 8002:8002") {
		t.Errorf("deploy.sh does not say how to reach iotd:\n%s", stdout)
	}
}

func TestDeployScriptLatestTagRestartsAndSkipsPushWithoutRegistry(t *testing.T) {
	log, applied, _, stderr, err := fakeRun(t, map[string]string{"FAKE_EXISTING": "1", "FAKE_CRD": "0"})
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	joined := strings.Join(log, "\n")
	if !strings.Contains(joined, "docker build -t iotd:latest") || strings.Contains(joined, "docker push") {
		t.Errorf("iotd:latest should be built and not pushed (no registry):\n%s", joined)
	}
	for _, r := range roles {
		if !strings.Contains(joined, "kubectl -n iot-telemetry rollout restart deployment "+r.deployment) {
			t.Errorf("%s not restarted to pull the new :latest", r.deployment)
		}
	}
	if strings.Index(joined, "apply -k") > strings.Index(joined, "rollout restart") {
		t.Error("restarted before applying")
	}
	checkImages(t, applied, "iotd:latest")
	if hasKind(applied, "ServiceMonitor") || len(applied) != len(loadFiles(t))-1 {
		t.Errorf("without the CRD the ServiceMonitor must be left out, the rest applied (%d resources)", len(applied))
	}
	if !strings.Contains(stderr, "no ServiceMonitor CRD") {
		t.Errorf("no notice about the missing CRD: %s", stderr)
	}
}

func TestDeployScriptFailsWhenARolloutFails(t *testing.T) {
	log, _, _, stderr, err := fakeRun(t, map[string]string{"SKIP_BUILD": "1", "SKIP_PUSH": "1", "FAKE_FAIL": "aggregator-worker"})
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("exit %v, want a failure", err)
	}
	joined := strings.Join(log, "\n")
	if strings.Contains(joined, "docker ") {
		t.Errorf("SKIP_BUILD=1 SKIP_PUSH=1 still ran docker:\n%s", joined)
	}
	// It still waits for the others, then names the one that failed.
	if !strings.Contains(joined, "rollout status deployment alerts-worker") ||
		!strings.Contains(stderr, "deployment/aggregator-worker did not become ready") {
		t.Errorf("log:\n%s\nstderr:\n%s", joined, stderr)
	}
}
