package k8s

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// iotdBinary is the iotd to check the manifests against: $IOTD_BIN, else the one `make build`
// leaves in build/release. (The go command does not notice a rebuilt binary: after rebuilding,
// run with -count=1.)
func iotdBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("IOTD_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), "build", "release", "src", "app", "iotd")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no iotd binary (%v): build it (make build) or set IOTD_BIN to check the manifests' variables against it", err)
	}
	return bin
}

var envOption = regexp.MustCompile(`\(Env:([A-Z0-9_]+)\)`)

// roleOptions lists the environment variables `iotd <role> --help` documents.
func roleOptions(t *testing.T, bin, role string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, role, "--help").Output()
	if err != nil {
		t.Fatalf("iotd %s --help: %v", role, err)
	}
	vars := map[string]bool{}
	for _, m := range envOption.FindAllSubmatch(out, -1) {
		vars[string(m[1])] = true
	}
	if len(vars) < 5 {
		t.Fatalf("iotd %s --help lists only %v", role, vars)
	}
	return vars
}

// Every variable a Deployment sets, itself or through a ConfigMap, is an option of its role:
// iotd ignores unknown variables, so a misspelt or misplaced one would silently do nothing.
func TestEnvironmentMatchesTheBinary(t *testing.T) {
	bin := iotdBinary(t)
	s := index(loadFiles(t))
	for _, r := range roles {
		opts := roleOptions(t, bin, r.arg)
		c := s.deployment(t, r.deployment).Spec.Template.Spec.Containers[0]
		e := environment(t, s, r.deployment, c)
		var unknown []string
		for name := range e.values {
			if !opts[name] {
				unknown = append(unknown, name+" (from "+e.from[name]+")")
			}
		}
		sort.Strings(unknown)
		if len(unknown) > 0 {
			t.Errorf("%s: `iotd %s` has no option for %s", r.deployment, r.arg, strings.Join(unknown, ", "))
		}
	}
}

// iotd accepts every value of every role's environment: it gets past parsing and validation and
// fails only where it reaches for Kafka or MongoDB, which here are closed loopback ports.
func TestEnvironmentValuesAreAccepted(t *testing.T) {
	bin := iotdBinary(t)
	s := index(loadFiles(t))
	for _, r := range roles {
		t.Run(r.deployment, func(t *testing.T) {
			t.Parallel() // each waits a few seconds for its unreachable backend
			c := s.deployment(t, r.deployment).Spec.Template.Spec.Containers[0]
			e := environment(t, s, r.deployment, c)
			overrides := map[string]string{
				"DATA_DIR":                t.TempDir(),
				"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
				"KAFKA_TIMEOUT":           "1s",
				"MONGO_URL":               "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100&connectTimeoutMS=100",
				"MONGO_TIMEOUT":           "100ms",
			}
			var env []string
			for k, v := range e.values {
				if o, ok := overrides[k]; ok {
					v = o
				}
				env = append(env, k+"="+v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, r.arg)
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("iotd %s still runs after 30 s with unreachable backends:\n%s", r.arg, out.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				// 2: invalid configuration; 100+: CLI11 refused an option's value.
				t.Fatalf("iotd %s: %v, want exit status 1 (backend unreachable):\n%s", r.arg, err, out.String())
			}
			want := "cannot open the MongoDB store"
			if !r.usesStore {
				want = "Kafka is not ready"
			}
			if !strings.Contains(out.String(), want) {
				t.Errorf("iotd %s failed, but not on its backend (%q):\n%s", r.arg, want, out.String())
			}
		})
	}
}
