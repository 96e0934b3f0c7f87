// Lints /work/main/Dockerfile without a Docker engine.
//
// It runs BuildKit's own Dockerfile linter (the code behind `docker build --check`,
// dockerfile2llb.DockerfileLint) with every rule switched on, experimental ones included,
// and a base-image resolver that answers from memory (nothing is pulled, no network). On top
// of that it checks a few things hadolint would and BuildKit does not: the final stage runs
// as a non-root USER; apt-get install uses -y and --no-install-recommends and the same RUN
// removes /var/lib/apt/lists; every FROM image is tagged (ARG defaults resolved) and not
// :latest; no ADD of local files; HEALTHCHECK in JSON form (BuildKit's JSONArgsRecommended
// covers CMD and ENTRYPOINT); and every COPY source exists in the build context and is not
// excluded by .dockerignore (BuildKit skips that check when .dockerignore has `!` lines, and
// `docker build` would then fail with "not found").
//
// Run: cd tests/deploy/dockerfile && GOTOOLCHAIN=local go test ./...
package dockerfile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

const repoDockerfile = "../../../Dockerfile"

// finding is one warning: the rule, the 1-based line in the Dockerfile, and the message.
type finding struct {
	Rule string
	Line int
	Msg  string
}

func (f finding) String() string { return fmt.Sprintf("line %d: %s: %s", f.Line, f.Rule, f.Msg) }

// fakeResolver answers BuildKit's base-image look-ups without a registry: a non-empty image
// for the requested platform (so InvalidBaseImagePlatform stays quiet, as it would for a
// multi-arch image such as debian). It records the refs asked for.
type fakeResolver struct {
	mu   sync.Mutex
	refs []string
}

func (r *fakeResolver) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	r.mu.Lock()
	r.refs = append(r.refs, ref)
	r.mu.Unlock()
	p := ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		p = *opt.ImageOpt.Platform
	}
	cfg, err := json.Marshal(map[string]any{
		"os": p.OS, "architecture": p.Architecture, "variant": p.Variant,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest.FromString(ref).String()}},
		"config": map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	})
	return ref, "", cfg, err
}

// withAllChecks returns the Dockerfile with a `# check=experimental=all` directive (keeping the
// skip list of a check directive it already has), and how many lines were added in front.
func withAllChecks(t *testing.T, dt []byte) ([]byte, int) {
	t.Helper()
	val, _, ranges, ok := parser.ParseDirective("check", dt)
	if !ok {
		return append([]byte("# check=experimental=all\n"), dt...), 1
	}
	cfg, err := linter.ParseLintOptions(val)
	if err != nil {
		t.Fatalf("bad # check= directive %q: %v", val, err)
	}
	directive := "# check=experimental=all"
	if len(cfg.SkipRules) > 0 {
		directive += ";skip=" + strings.Join(cfg.SkipRules, ",")
	}
	lines := strings.Split(string(dt), "\n")
	lines[ranges[0].Start.Line-1] = directive
	return []byte(strings.Join(lines, "\n")), 0
}

// buildkitLint runs every BuildKit lint rule on dt and returns its warnings, the parser's own
// warnings, and a build error (bad syntax, unknown instruction...) as a finding too.
func buildkitLint(t *testing.T, dt []byte) ([]finding, *fakeResolver) {
	t.Helper()
	var out []finding

	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return []finding{{Rule: "ParseError", Msg: err.Error()}}, nil
	}
	for _, w := range res.Warnings {
		if w.URL == linter.RuleNoEmptyContinuation.URL {
			continue // DockerfileLint reports these as NoEmptyContinuation
		}
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		out = append(out, finding{Rule: "ParserWarning", Line: line, Msg: w.Short})
	}

	lintDt, shift := withAllChecks(t, dt)
	resolver := &fakeResolver{}
	sourceMap := llb.NewSourceMap(nil, "Dockerfile", "Dockerfile", lintDt)
	sourceMap.Definition = &llb.Definition{} // DockerfileLint records it; nil would panic
	results, err := dockerfile2llb.DockerfileLint(context.Background(), lintDt, dockerfile2llb.ConvertOpt{
		SourceMap:      sourceMap,
		MetaResolver:   resolver,
		TargetPlatform: &ocispecs.Platform{OS: "linux", Architecture: "amd64"},
	})
	if err != nil {
		t.Fatalf("DockerfileLint: %v", err)
	}
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line) - shift
		}
		out = append(out, finding{Rule: w.RuleName, Line: line, Msg: w.Detail})
	}
	if results.Error != nil {
		line := 0
		if len(results.Error.Location.Ranges) > 0 {
			line = int(results.Error.Location.Ranges[0].Start.Line) - shift
		}
		out = append(out, finding{Rule: "BuildError", Line: line, Msg: results.Error.Message})
	}
	return out, resolver
}

var (
	reAptInstall     = regexp.MustCompile(`\bapt-get\b.*\binstall\b`)
	reAssumeYes      = regexp.MustCompile(`(^|\s)(-[a-zA-Z]*y[a-zA-Z]*|--yes|--assume-yes)(\s|$)`)
	reRmAptLists     = regexp.MustCompile(`\brm\s+(-[a-zA-Z]+\s+)*/var/lib/apt/lists(/\*?)?(\s|$|;|&)`)
	reShellSeparator = regexp.MustCompile(`&&|\|\||;|\||\n`)
	reArchive        = regexp.MustCompile(`\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst)$`)
)

func lineOf(c instructions.Command) int {
	if loc := c.Location(); len(loc) > 0 {
		return loc[0].Start.Line
	}
	return 0
}

// extraChecks are the hadolint-like checks BuildKit has no rule for. contextDir is the build
// context (for COPY sources and .dockerignore); "" skips the context check.
func extraChecks(t *testing.T, dt []byte, contextDir string) []finding {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("instructions.Parse: %v", err)
	}
	if len(stages) == 0 {
		t.Fatal("no stages")
	}
	var out []finding
	add := func(rule string, line int, format string, a ...any) {
		out = append(out, finding{Rule: rule, Line: line, Msg: fmt.Sprintf(format, a...)})
	}

	// FROM: resolve global ARG defaults, then require a tag (or digest) that is not latest.
	var env []string
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				env = append(env, kv.Key+"="+*kv.Value)
			}
		}
	}
	lex := shell.NewLex(res.EscapeToken)
	stageNames := map[string]bool{}
	for _, st := range stages {
		line := 0
		if len(st.Location) > 0 {
			line = st.Location[0].Start.Line
		}
		base, _, err := lex.ProcessWord(st.BaseName, shell.EnvsFromSlice(env))
		if err != nil {
			add("FromImagePinned", line, "cannot expand %q: %v", st.BaseName, err)
		} else if !stageNames[strings.ToLower(base)] && base != "scratch" {
			ref, err := reference.ParseNormalizedNamed(base)
			switch {
			case err != nil:
				add("FromImagePinned", line, "bad image reference %q: %v", base, err)
			default:
				_, digested := ref.(reference.Digested)
				tagged, isTagged := ref.(reference.Tagged)
				if !isTagged && !digested {
					add("FromImagePinned", line, "image %q has no tag: pin one (e.g. debian:bookworm)", base)
				} else if isTagged && tagged.Tag() == "latest" {
					add("FromImagePinned", line, "image %q uses the latest tag: pin a version", base)
				}
			}
		}
		if st.Name != "" {
			stageNames[strings.ToLower(st.Name)] = true
		}

		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.RunCommand:
				script := strings.Join(c.CmdLine, " ")
				for _, f := range c.Files {
					script += "\n" + f.Data
				}
				if !reAptInstall.MatchString(script) {
					continue
				}
				for _, seg := range reShellSeparator.Split(script, -1) {
					if !reAptInstall.MatchString(seg) {
						continue
					}
					if !strings.Contains(seg, "--no-install-recommends") {
						add("AptNoInstallRecommends", lineOf(c), "apt-get install without --no-install-recommends: %s", strings.TrimSpace(seg))
					}
					if !reAssumeYes.MatchString(seg) {
						add("AptAssumeYes", lineOf(c), "apt-get install without -y: %s", strings.TrimSpace(seg))
					}
				}
				if !reRmAptLists.MatchString(script) {
					add("AptListsRemoved", lineOf(c), "RUN with apt-get install does not rm -rf /var/lib/apt/lists/* in the same layer")
				}
			case *instructions.AddCommand:
				for _, src := range c.SourcePaths {
					isURL := strings.Contains(src, "://") || strings.HasPrefix(src, "git@")
					if !isURL && !reArchive.MatchString(src) {
						add("AddLocalFile", lineOf(c), "ADD of local %q: use COPY", src)
					}
				}
			case *instructions.HealthCheckCommand:
				if c.Health != nil && len(c.Health.Test) > 0 && c.Health.Test[0] == "CMD-SHELL" {
					add("HealthcheckJSONForm", lineOf(c), "HEALTHCHECK CMD in shell form: use the JSON form [\"cmd\", \"arg\"]")
				}
			}
		}
	}

	// The final stage runs as a non-root user.
	final := stages[len(stages)-1]
	var lastUser *instructions.UserCommand
	for _, c := range final.Commands {
		if u, ok := c.(*instructions.UserCommand); ok {
			lastUser = u
		}
	}
	finalLine := 0
	if len(final.Location) > 0 {
		finalLine = final.Location[0].Start.Line
	}
	if lastUser == nil {
		add("NonRootUser", finalLine, "final stage has no USER instruction: it runs as root")
	} else {
		name, _, _ := strings.Cut(lastUser.User, ":")
		if name == "root" || name == "0" || name == "" {
			add("NonRootUser", lineOf(lastUser), "final stage's last USER is %q (root)", lastUser.User)
		}
	}

	if contextDir != "" {
		out = append(out, contextChecks(t, stages, contextDir)...)
	}
	return out
}

// contextChecks: each COPY source from the build context exists and survives .dockerignore.
func contextChecks(t *testing.T, stages []instructions.Stage, contextDir string) []finding {
	t.Helper()
	var matcher *patternmatcher.PatternMatcher
	if f, err := os.Open(filepath.Join(contextDir, ".dockerignore")); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatalf(".dockerignore: %v", err)
		}
		if matcher, err = patternmatcher.New(patterns); err != nil {
			t.Fatalf(".dockerignore: %v", err)
		}
	}
	var out []finding
	for _, st := range stages {
		for _, c := range st.Commands {
			var srcs []string
			switch c := c.(type) {
			case *instructions.CopyCommand:
				if c.From == "" {
					srcs = c.SourcePaths
				}
			case *instructions.AddCommand:
				for _, s := range c.SourcePaths {
					if !strings.Contains(s, "://") && !strings.HasPrefix(s, "git@") {
						srcs = append(srcs, s)
					}
				}
			}
			for _, src := range srcs {
				rel := filepath.Clean(strings.TrimPrefix(filepath.ToSlash(src), "/"))
				matches, _ := filepath.Glob(filepath.Join(contextDir, rel))
				if len(matches) == 0 {
					out = append(out, finding{"CopySourceInContext", lineOf(c), fmt.Sprintf("%s source %q does not exist in the build context", strings.ToUpper(c.Name()), src)})
					continue
				}
				if matcher == nil || rel == "." {
					continue
				}
				if ignored, err := matcher.MatchesOrParentMatches(rel); err != nil || ignored {
					out = append(out, finding{"CopySourceInContext", lineOf(c), fmt.Sprintf("%s source %q is excluded by .dockerignore", strings.ToUpper(c.Name()), src)})
				}
			}
		}
	}
	return out
}

func lintFile(t *testing.T, path, contextDir string) []finding {
	t.Helper()
	dt, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	bk, _ := buildkitLint(t, dt)
	all := append(bk, extraChecks(t, dt, contextDir)...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Line < all[j].Line })
	return all
}

func TestDockerfileLintClean(t *testing.T) {
	findings := lintFile(t, repoDockerfile, filepath.Dir(repoDockerfile))
	for _, f := range findings {
		t.Errorf("Dockerfile %s", f)
	}
	if len(findings) > 0 {
		t.Logf("%d warning(s) in %s", len(findings), repoDockerfile)
	}
}

// The linter must see every stage and resolve the ARG in FROM: BuildKit asks the resolver for
// the expanded base images, so a lint that silently skipped the stages would fail here.
func TestDockerfileBaseImagesResolved(t *testing.T) {
	dt, err := os.ReadFile(repoDockerfile)
	if err != nil {
		t.Fatal(err)
	}
	_, resolver := buildkitLint(t, dt)
	if resolver == nil || len(resolver.refs) == 0 {
		t.Fatal("BuildKit resolved no base image: the lint did not reach the FROM instructions")
	}
	for _, ref := range resolver.refs {
		if strings.Contains(ref, "$") || !strings.Contains(ref, ":") {
			t.Errorf("base image %q was not resolved to a tagged name", ref)
		}
	}
	t.Logf("base images: %v", resolver.refs)
}

// The bad Dockerfile in testdata must give exactly these warnings: proof the linter runs
// (BuildKit rules, an experimental one included, and the extra checks).
func TestBadDockerfileWarns(t *testing.T) {
	got := lintFile(t, "testdata/bad.Dockerfile", "testdata")
	want := []struct {
		rule string
		line int
	}{
		{"ConsistentInstructionCasing", 1}, // `from` among upper-case instructions
		{"FromImagePinned", 1},             // untagged debian
		{"AptNoInstallRecommends", 2},
		{"AptListsRemoved", 2},
		{"InvalidDefinitionDescription", 6}, // experimental: proves experimental rules are on
		{"FromAsCasing", 8},                 // FROM ... as
		{"FromImagePinned", 8},              // debian:latest
		{"NonRootUser", 8},                  // final stage without USER
		{"UndefinedVar", 9},
		{"AddLocalFile", 10},
		{"CopySourceInContext", 11}, // missing file
		{"CopySourceInContext", 12}, // excluded by testdata/.dockerignore
		{"HealthcheckJSONForm", 13},
		{"JSONArgsRecommended", 14}, // CMD in shell form
	}
	var gotKeys, wantKeys []string
	for _, f := range got {
		gotKeys = append(gotKeys, fmt.Sprintf("%s@%d", f.Rule, f.Line))
	}
	for _, w := range want {
		wantKeys = append(wantKeys, fmt.Sprintf("%s@%d", w.rule, w.line))
	}
	slices.Sort(gotKeys)
	slices.Sort(wantKeys)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Errorf("warnings differ\n got: %v\nwant: %v", gotKeys, wantKeys)
		for _, f := range got {
			t.Logf("  %s", f)
		}
	}
}

// Breaking the real Dockerfile in the ways the checks look for must be caught: each mutation
// of its text gives (at least) the named warning, so the clean result above is not vacuous.
func TestDockerfileMutationsCaught(t *testing.T) {
	dt, err := os.ReadFile(repoDockerfile)
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Dir(repoDockerfile)
	mutations := []struct{ rule, pattern, repl string }{
		{"NonRootUser", `(?m)^USER\s+\S+`, "USER root"},
		{"FromImagePinned", `(?m)^FROM\s+([^\s:@]+)\S*`, "FROM $1"},
		{"AptNoInstallRecommends", `--no-install-recommends`, ""},
		{"AptListsRemoved", `rm -rf /var/lib/apt/lists/\*`, "true"},
		{"JSONArgsRecommended", `(?m)^(CMD|ENTRYPOINT) \[.*\]$`, "$1 iotd all"},
	}
	for _, m := range mutations {
		t.Run(m.rule, func(t *testing.T) {
			re := regexp.MustCompile(m.pattern)
			if !re.Match(dt) {
				t.Fatalf("mutation %q no longer applies to the Dockerfile: update this test", m.pattern)
			}
			mutated := re.ReplaceAll(dt, []byte(m.repl))
			tmp := filepath.Join(t.TempDir(), "Dockerfile")
			if err := os.WriteFile(tmp, mutated, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, f := range lintFile(t, tmp, ctxDir) {
				if f.Rule == m.rule {
					return
				}
			}
			t.Errorf("mutation %q -> %q gave no %s warning", m.pattern, m.repl, m.rule)
		})
	}
}
