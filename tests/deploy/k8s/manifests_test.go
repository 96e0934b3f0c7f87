package k8s

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const namespace = "iot-telemetry"

// hpaSpec is the seed's autoscaling of one role.
type hpaSpec struct{ min, max, cpu, memory int32 }

// role is what one iotd role needs from its Deployment (the seed's names and ports).
type role struct {
	deployment string
	arg        string // iotd's subcommand
	port       int32
	portEnv    string
	hpa        *hpaSpec // nil: no HPA, exactly one replica
	usesBus    bool     // BUS=kafka
	usesStore  bool     // STORE=mongodb
}

var roles = []role{
	{"ingestion-api", "ingest", 8001, "INGEST_PORT", &hpaSpec{2, 10, 60, 70}, true, false},
	// The dashboard reads new readings from Kafka for its live stream (GET /stream).
	{"dashboard-api", "dashboard", 8002, "DASHBOARD_PORT", &hpaSpec{2, 8, 50, 70}, true, true},
	{"aggregator-worker", "aggregator", 8003, "AGGREGATOR_PORT", &hpaSpec{1, 5, 50, 70}, true, true},
	{"alerts-worker", "alerts", 8004, "ALERTS_PORT", nil, true, true},
}

// set indexes one collection of manifests by kind and name.
type set struct {
	all             []*manifest
	namespaces      map[string]*corev1.Namespace
	configMaps      map[string]*corev1.ConfigMap
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs            map[string]*policyv1.PodDisruptionBudget
	ingresses       map[string]*networkingv1.Ingress
	serviceMonitors map[string]*monitoringv1.ServiceMonitor
}

func index(ms []*manifest) *set {
	s := &set{all: ms,
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		ingresses: map[string]*networkingv1.Ingress{}, serviceMonitors: map[string]*monitoringv1.ServiceMonitor{}}
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.Namespace:
			s.namespaces[m.name] = o
		case *corev1.ConfigMap:
			s.configMaps[m.name] = o
		case *appsv1.Deployment:
			s.deployments[m.name] = o
		case *corev1.Service:
			s.services[m.name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			s.hpas[m.name] = o
		case *policyv1.PodDisruptionBudget:
			s.pdbs[m.name] = o
		case *networkingv1.Ingress:
			s.ingresses[m.name] = o
		case *monitoringv1.ServiceMonitor:
			s.serviceMonitors[m.name] = o
		}
	}
	return s
}

// forEachSet runs check on the manifest files as written and on what kustomize renders from them
// (what `kubectl apply -k` sends).
func forEachSet(t *testing.T, check func(t *testing.T, s *set)) {
	t.Run("files", func(t *testing.T) { check(t, index(loadFiles(t))) })
	t.Run("rendered", func(t *testing.T) { check(t, index(renderBase(t))) })
}

func (s *set) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d, ok := s.deployments[name]
	if !ok {
		t.Fatalf("no Deployment %s", name)
	}
	return d
}

// hpaFor returns the HPAs that scale the Deployment name.
func (s *set) hpaFor(name string) []*autoscalingv2.HorizontalPodAutoscaler {
	var out []*autoscalingv2.HorizontalPodAutoscaler
	for _, h := range s.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion == "apps/v1" && ref.Kind == "Deployment" && ref.Name == name {
			out = append(out, h)
		}
	}
	return out
}

// selectedDeployments returns the Deployments whose pods sel selects.
func (s *set) selectedDeployments(sel labels.Selector) []string {
	var out []string
	for name, d := range s.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestInventory(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		want := map[string][]string{
			"Namespace":               {namespace},
			"ConfigMap":               {"iotd-alerts", "iotd-config", "iotd-kafka", "iotd-mongodb"},
			"Deployment":              {"aggregator-worker", "alerts-worker", "dashboard-api", "ingestion-api"},
			"Service":                 {"aggregator-worker", "alerts-worker", "dashboard-api", "ingestion-api"},
			"HorizontalPodAutoscaler": {"aggregator-worker", "dashboard-api", "ingestion-api"},
			"PodDisruptionBudget":     {"aggregator-worker", "dashboard-api", "ingestion-api"},
			"Ingress":                 {"iotd"},
			"ServiceMonitor":          {"iotd"},
		}
		got := map[string][]string{}
		for _, m := range s.all {
			got[m.kind] = append(got[m.kind], m.name)
		}
		for kind := range got {
			sort.Strings(got[kind])
			if _, ok := want[kind]; !ok {
				t.Errorf("unexpected kind %s: %v", kind, got[kind])
			}
		}
		for kind, names := range want {
			if !slices.Equal(got[kind], names) {
				t.Errorf("%s: got %v, want %v", kind, got[kind], names)
			}
		}
	})
}

// The seed: ingestion-api 2-10 (CPU 60%, memory 70%), aggregator-worker 1-5 (50%, 70%),
// dashboard-api 2-8 (50%, 70%), alerts-worker 1 replica without HPA.
func TestAutoscalingMatchesTheSeed(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		for _, h := range s.hpas {
			if _, ok := s.deployments[h.Spec.ScaleTargetRef.Name]; !ok || h.Spec.ScaleTargetRef.Kind != "Deployment" {
				t.Errorf("HPA %s scales %s %s, which is not a Deployment here", h.Name,
					h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			}
		}
		for _, r := range roles {
			d := s.deployment(t, r.deployment)
			hs := s.hpaFor(r.deployment)
			if r.hpa == nil {
				if len(hs) != 0 {
					t.Errorf("%s: has an HPA, the seed has none", r.deployment)
				}
				if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
					t.Errorf("%s: replicas %v, want 1", r.deployment, d.Spec.Replicas)
				}
				continue
			}
			if len(hs) != 1 {
				t.Errorf("%s: %d HPAs, want 1", r.deployment, len(hs))
				continue
			}
			h := hs[0]
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != r.hpa.min || h.Spec.MaxReplicas != r.hpa.max {
				t.Errorf("%s: HPA replicas %v-%d, want %d-%d", r.deployment, h.Spec.MinReplicas, h.Spec.MaxReplicas, r.hpa.min, r.hpa.max)
			}
			got := map[corev1.ResourceName]int32{}
			for _, m := range h.Spec.Metrics {
				if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil ||
					m.Resource.Target.Type != autoscalingv2.UtilizationMetricType || m.Resource.Target.AverageUtilization == nil {
					t.Errorf("%s: metric %+v is not a resource utilisation", r.deployment, m)
					continue
				}
				if _, dup := got[m.Resource.Name]; dup {
					t.Errorf("%s: %s listed twice", r.deployment, m.Resource.Name)
				}
				got[m.Resource.Name] = *m.Resource.Target.AverageUtilization
			}
			want := map[corev1.ResourceName]int32{corev1.ResourceCPU: r.hpa.cpu, corev1.ResourceMemory: r.hpa.memory}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: HPA targets %v, want %v", r.deployment, got, want)
			}
			// A fixed replica count would undo the HPA's choice at every `kubectl apply`.
			if d.Spec.Replicas != nil {
				t.Errorf("%s: sets replicas (%d) though its HPA owns them", r.deployment, *d.Spec.Replicas)
			}
			// Utilisation is relative to the requests: without them the HPA cannot work.
			c := d.Spec.Template.Spec.Containers[0]
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[res]; !ok {
					t.Errorf("%s: no %s request for its HPA", r.deployment, res)
				}
			}
		}
	})
}

// probePort resolves a probe's port against the container's ports.
func probePort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func checkProbe(t *testing.T, what string, c corev1.Container, p *corev1.Probe, path string, port int32) {
	t.Helper()
	if p == nil {
		t.Errorf("%s: missing", what)
		return
	}
	if p.HTTPGet == nil {
		t.Errorf("%s: not an httpGet probe", what)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %q, want %q", what, p.HTTPGet.Path, path)
	}
	if got, ok := probePort(c, p.HTTPGet.Port); !ok || got != port {
		t.Errorf("%s: port %s, want %d (the role's port)", what, p.HTTPGet.Port.String(), port)
	}
	if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Errorf("%s: scheme %s, iotd serves HTTP", what, p.HTTPGet.Scheme)
	}
}

// window is how long a probe may fail before it acts (defaults as the kubelet's).
func window(p *corev1.Probe) time.Duration {
	period, failures := p.PeriodSeconds, p.FailureThreshold
	if period == 0 {
		period = 10
	}
	if failures == 0 {
		failures = 3
	}
	return time.Duration(period*failures) * time.Second
}

// env is a container's environment as iotd sees it: envFrom in order, then env.
type env struct {
	values map[string]string
	from   map[string]string // variable -> where it comes from
}

func environment(t *testing.T, s *set, name string, c corev1.Container) env {
	t.Helper()
	e := env{values: map[string]string{}, from: map[string]string{}}
	for _, src := range c.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, ok := s.configMaps[src.ConfigMapRef.Name]
			if !ok {
				if src.ConfigMapRef.Optional == nil || !*src.ConfigMapRef.Optional {
					t.Errorf("%s: envFrom ConfigMap %s does not exist", name, src.ConfigMapRef.Name)
				}
				continue
			}
			if len(cm.BinaryData) > 0 {
				t.Errorf("ConfigMap %s: binaryData cannot become environment variables", cm.Name)
			}
			for k, v := range cm.Data {
				e.values[src.Prefix+k] = v
				e.from[src.Prefix+k] = "ConfigMap " + cm.Name
			}
		case src.SecretRef != nil:
			// No Secret ships with the manifests: a required one would keep the pods from starting.
			if src.SecretRef.Optional == nil || !*src.SecretRef.Optional {
				t.Errorf("%s: envFrom Secret %s is not optional", name, src.SecretRef.Name)
			}
		default:
			t.Errorf("%s: empty envFrom entry", name)
		}
	}
	seen := map[string]bool{}
	for _, v := range c.Env {
		if seen[v.Name] {
			t.Errorf("%s: env %s set twice", name, v.Name)
		}
		seen[v.Name] = true
		if v.ValueFrom != nil {
			// A key of a ConfigMap of these manifests is checked like a plain value; anything
			// else (Secrets, fields) could not be checked against iotd.
			ref := v.ValueFrom.ConfigMapKeyRef
			if ref == nil {
				t.Errorf("%s: env %s uses valueFrom other than configMapKeyRef; keep values checkable", name, v.Name)
				continue
			}
			value, ok := s.configMaps[ref.Name].Data[ref.Key]
			if !ok {
				t.Errorf("%s: env %s refers to %s/%s, which does not exist", name, v.Name, ref.Name, ref.Key)
				continue
			}
			e.values[v.Name] = value
			e.from[v.Name] = "ConfigMap " + ref.Name + " key " + ref.Key
			continue
		}
		e.values[v.Name] = v.Value
		e.from[v.Name] = "env"
	}
	return e
}

func TestDeployments(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		for _, r := range roles {
			t.Run(r.deployment, func(t *testing.T) {
				d := s.deployment(t, r.deployment)
				checkDeployment(t, s, r, d)
			})
		}
	})
}

func checkDeployment(t *testing.T, s *set, r role, d *appsv1.Deployment) {
	pod := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels
	if podLabels["app.kubernetes.io/name"] != "iotd" || podLabels["app.kubernetes.io/component"] != r.deployment {
		t.Errorf("pod labels %v: want app.kubernetes.io/name=iotd, app.kubernetes.io/component=%s", podLabels, r.deployment)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
		t.Errorf("selector %v does not select the pod template's labels %v (%v)", d.Spec.Selector, podLabels, err)
	}
	if got := s.selectedDeployments(sel); !slices.Equal(got, []string{r.deployment}) {
		t.Errorf("selector also selects the pods of %v", got)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	imageName := c.Image
	if i := strings.LastIndex(imageName, ":"); i > strings.LastIndex(imageName, "/") {
		imageName = imageName[:i]
	}
	if imageName != "iotd" {
		t.Errorf("image %q: want iotd (kustomize's images: entry sets the real one)", c.Image)
	}
	if len(c.Command) != 0 || !slices.Equal(c.Args, []string{r.arg}) {
		t.Errorf("command %v args %v: want the image's entrypoint with args [%s]", c.Command, c.Args, r.arg)
	}

	// The role's port.
	found := false
	for _, p := range c.Ports {
		if p.ContainerPort == r.port && p.Name == "http" && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			found = true
		}
	}
	if !found || len(c.Ports) != 1 {
		t.Errorf("ports %+v: want exactly %d/TCP named http", c.Ports, r.port)
	}

	// Probes: readiness on /ready, liveness on /health, both on the role's port.
	checkProbe(t, "readinessProbe", c, c.ReadinessProbe, "/ready", r.port)
	checkProbe(t, "livenessProbe", c, c.LivenessProbe, "/health", r.port)
	if c.StartupProbe != nil {
		checkProbe(t, "startupProbe", c, c.StartupProbe, "/health", r.port)
	}
	if c.ReadinessProbe != nil && c.LivenessProbe != nil && window(c.LivenessProbe) <= window(c.ReadinessProbe) {
		t.Errorf("liveness acts after %v, readiness after %v: liveness should be the more forgiving",
			window(c.LivenessProbe), window(c.ReadinessProbe))
	}

	// Requests and limits.
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[res]
		lim, okLim := c.Resources.Limits[res]
		if !okReq || !okLim {
			t.Errorf("%s: request %v / limit %v, want both", res, okReq, okLim)
			continue
		}
		if req.Sign() <= 0 || req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s, limit %s", res, req.String(), lim.String())
		}
	}
	if mem := c.Resources.Requests[corev1.ResourceMemory]; mem.Cmp(resource.MustParse("32Mi")) < 0 {
		t.Errorf("memory request %s: below iotd's idle footprint with room to spare", mem.String())
	}

	// Security: non-root (the image's user 10001), read-only root, no privilege, no capability.
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		t.Fatal("no container securityContext")
	}
	runAsNonRoot := csc.RunAsNonRoot
	if runAsNonRoot == nil {
		runAsNonRoot = psc.RunAsNonRoot
	}
	runAsUser := csc.RunAsUser
	if runAsUser == nil {
		runAsUser = psc.RunAsUser
	}
	seccomp := csc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if runAsNonRoot == nil || !*runAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if runAsUser == nil || *runAsUser != 10001 {
		t.Errorf("runAsUser %v, want 10001 (the image's user)", runAsUser)
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Error("privileged")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v: want drop ALL, add none", csc.Capabilities)
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", seccomp)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("shares a host namespace")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("mounts a service account token iotd does not use")
	}
	// Service links would inject e.g. DASHBOARD_PORT=tcp://... for a Service named dashboard.
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks is not false")
	}

	// Volumes: every mount has its volume; DATA_DIR (created at start) is writable.
	vols := map[string]bool{}
	for _, v := range pod.Volumes {
		vols[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !vols[m.Name] {
			t.Errorf("volumeMount %s: no such volume", m.Name)
		}
	}
	e := environment(t, s, r.deployment, c)
	dataDir, ok := e.values["DATA_DIR"]
	if !ok {
		t.Error("DATA_DIR is not set (iotd's default ./data is on the read-only root)")
	} else {
		writable := false
		for _, m := range c.VolumeMounts {
			if !m.ReadOnly && (dataDir == m.MountPath || strings.HasPrefix(dataDir, strings.TrimSuffix(m.MountPath, "/")+"/")) {
				writable = true
			}
		}
		if !writable {
			t.Errorf("DATA_DIR %s is on no writable volume", dataDir)
		}
	}

	// Graceful shutdown: iotd must finish (preStop pause + SHUTDOWN_TIMEOUT) before the kill.
	shutdown := 10 * time.Second // iotd's default
	if v, ok := e.values["SHUTDOWN_TIMEOUT"]; ok {
		if shutdown, err = time.ParseDuration(v); err != nil {
			t.Errorf("SHUTDOWN_TIMEOUT %q: %v", v, err)
		}
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if c.Lifecycle.PreStop.Sleep == nil {
			t.Error("preStop is not a sleep action (the image may have no shell)")
		} else {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
	}
	grace := 30 * time.Second
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if grace < preStop+shutdown+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v: want at least preStop %v + SHUTDOWN_TIMEOUT %v + 5s", grace, preStop, shutdown)
	}
	if c.StartupProbe != nil && c.StartupProbe.InitialDelaySeconds == 0 && window(c.StartupProbe) < 45*time.Second {
		t.Errorf("startupProbe gives up after %v: start-up may wait KAFKA_TIMEOUT (30s) and MongoDB", window(c.StartupProbe))
	}
}

func TestEnvironment(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		var partitions int
		for _, r := range roles {
			d := s.deployment(t, r.deployment)
			c := d.Spec.Template.Spec.Containers[0]
			e := environment(t, s, r.deployment, c)
			want := map[string]string{r.portEnv: strconv.Itoa(int(r.port))}
			if r.usesBus {
				want["BUS"] = "kafka"
			}
			if r.usesStore {
				want["STORE"] = "mongodb"
			}
			for k, v := range want {
				if e.values[k] != v {
					t.Errorf("%s: %s=%q, want %q", r.deployment, k, e.values[k], v)
				}
			}
			// Settings of the other backend do not belong (iotd would refuse to name them).
			if _, ok := e.values["BUS"]; ok && !r.usesBus {
				t.Errorf("%s: BUS is set but %s uses no bus", r.deployment, r.arg)
			}
			if _, ok := e.values["STORE"]; ok && !r.usesStore {
				t.Errorf("%s: STORE is set but %s uses no store", r.deployment, r.arg)
			}
			if r.usesBus && e.values["KAFKA_BOOTSTRAP_SERVERS"] == "" {
				t.Errorf("%s: no KAFKA_BOOTSTRAP_SERVERS", r.deployment)
			}
			if r.usesStore && !strings.HasPrefix(e.values["MONGO_URL"], "mongodb") {
				t.Errorf("%s: MONGO_URL %q", r.deployment, e.values["MONGO_URL"])
			}
			for _, other := range roles {
				if other.portEnv != r.portEnv {
					if _, ok := e.values[other.portEnv]; ok {
						t.Errorf("%s: sets %s, another role's port", r.deployment, other.portEnv)
					}
				}
			}
			if r.deployment == "aggregator-worker" {
				partitions, _ = strconv.Atoi(e.values["KAFKA_PARTITIONS"])
			}
		}
		// Each aggregator replica needs a partition of its own to do any work.
		hs := s.hpaFor("aggregator-worker")
		if len(hs) == 1 && int32(partitions) < hs[0].Spec.MaxReplicas {
			t.Errorf("KAFKA_PARTITIONS %d < the aggregator HPA's maxReplicas %d", partitions, hs[0].Spec.MaxReplicas)
		}
	})
}

func TestServicesSelectTheirPods(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		for name, svc := range s.services {
			if svc.Spec.Type != "" && svc.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("Service %s: type %s, want ClusterIP", name, svc.Spec.Type)
			}
			if len(svc.Spec.Selector) == 0 {
				t.Errorf("Service %s: no selector", name)
				continue
			}
			got := s.selectedDeployments(labels.SelectorFromSet(svc.Spec.Selector))
			if len(got) != 1 {
				t.Errorf("Service %s: selects the pods of %v, want exactly one Deployment", name, got)
				continue
			}
			c := s.deployments[got[0]].Spec.Template.Spec.Containers[0]
			for _, p := range svc.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port)
				}
				if port, ok := probePort(c, target); !ok || !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == port }) {
					t.Errorf("Service %s port %s: targetPort %s is no container port of %s", name, p.Name, target.String(), got[0])
				}
			}
		}
		for _, r := range roles {
			svc, ok := s.services[r.deployment]
			if !ok {
				t.Errorf("no Service %s", r.deployment)
				continue
			}
			if got := s.selectedDeployments(labels.SelectorFromSet(svc.Spec.Selector)); !slices.Equal(got, []string{r.deployment}) {
				t.Errorf("Service %s selects %v", r.deployment, got)
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != r.port || svc.Spec.Ports[0].Name != "http" {
				t.Errorf("Service %s: ports %+v, want %d named http", r.deployment, svc.Spec.Ports, r.port)
			}
		}
	})
}

// route returns the backend an Ingress sends path to, by the Ingress API's matching rules
// (Exact; Prefix by path element; the longest match wins, Exact before Prefix), or nil.
func route(paths []networkingv1.HTTPIngressPath, path string) *networkingv1.IngressServiceBackend {
	var best *networkingv1.HTTPIngressPath
	bestLen, bestExact := -1, false
	for i := range paths {
		p := &paths[i]
		exact := p.PathType != nil && *p.PathType == networkingv1.PathTypeExact
		var ok bool
		if exact {
			ok = path == p.Path
		} else {
			prefix := strings.TrimSuffix(p.Path, "/")
			ok = prefix == "" || path == prefix || strings.HasPrefix(path, prefix+"/")
		}
		if ok && (len(p.Path) > bestLen || (len(p.Path) == bestLen && exact && !bestExact)) {
			best, bestLen, bestExact = p, len(p.Path), exact
		}
	}
	if best == nil {
		return nil
	}
	return best.Backend.Service
}

// nginxSize parses an nginx size ("16m", "1024k", "1g", "100").
func nginxSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(strings.ToLower(s), "k"):
		mult = 1 << 10
	case strings.HasSuffix(strings.ToLower(s), "m"):
		mult = 1 << 20
	case strings.HasSuffix(strings.ToLower(s), "g"):
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func TestIngress(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		ing, ok := s.ingresses["iotd"]
		if !ok {
			t.Fatal("no Ingress iotd")
		}
		if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
			t.Errorf("ingressClassName %v, want nginx", ing.Spec.IngressClassName)
		}
		if ing.Spec.DefaultBackend != nil {
			t.Error("a default backend would expose every path")
		}
		if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].HTTP == nil || ing.Spec.Rules[0].Host == "" {
			t.Fatalf("want one HTTP rule with a host, got %+v", ing.Spec.Rules)
		}
		paths := ing.Spec.Rules[0].HTTP.Paths
		for _, p := range paths {
			if p.PathType == nil || *p.PathType == networkingv1.PathTypeImplementationSpecific {
				t.Errorf("path %s: pathType Exact or Prefix please (portable matching)", p.Path)
			}
			b := p.Backend.Service
			if b == nil {
				t.Errorf("path %s: no service backend", p.Path)
				continue
			}
			svc, ok := s.services[b.Name]
			if !ok {
				t.Errorf("path %s: no Service %s", p.Path, b.Name)
				continue
			}
			if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
				return (b.Port.Number != 0 && sp.Port == b.Port.Number) || (b.Port.Name != "" && sp.Name == b.Port.Name)
			}) {
				t.Errorf("path %s: Service %s has no port %+v", p.Path, b.Name, b.Port)
			}
		}
		// Requests a client makes, and where they must (or must not) arrive.
		want := map[string]string{
			"/ingest": "ingestion-api", "/ingest/batch": "ingestion-api",
			"/": "dashboard-api", "/telemetry": "dashboard-api", "/aggregated": "dashboard-api",
			"/alerts": "dashboard-api", "/alerts/recent": "dashboard-api", "/devices": "dashboard-api",
			"/devices/dev-1": "dashboard-api", "/devices/dev-1/telemetry": "dashboard-api",
			"/devices/dev-1/aggregates": "dashboard-api", "/stats": "dashboard-api", "/dlq": "dashboard-api",
			// Operations endpoints stay inside the cluster.
			"/metrics": "", "/health": "", "/ready": "", "/ingestx": "",
		}
		ports := map[string]int32{"ingestion-api": 8001, "dashboard-api": 8002}
		for path, svc := range want {
			b := route(paths, path)
			switch {
			case svc == "" && b != nil:
				t.Errorf("%s is routed to %s; it should not be reachable from outside", path, b.Name)
			case svc != "" && b == nil:
				t.Errorf("%s is not routed, want %s", path, svc)
			case svc != "" && (b.Name != svc || b.Port.Number != ports[svc]):
				t.Errorf("%s goes to %s:%d, want %s:%d", path, b.Name, b.Port.Number, svc, ports[svc])
			}
		}
		// The body limit must let MAX_BATCH_BYTES through (nginx's default, 1m, would not).
		ingest := s.deployment(t, "ingestion-api")
		e := environment(t, s, "ingestion-api", ingest.Spec.Template.Spec.Containers[0])
		maxBatch := int64(16 << 20) // iotd's default
		if v, ok := e.values["MAX_BATCH_BYTES"]; ok {
			var err error
			if maxBatch, err = strconv.ParseInt(v, 10, 64); err != nil {
				t.Fatalf("MAX_BATCH_BYTES %q: %v", v, err)
			}
		}
		size, err := nginxSize(ing.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
		if err != nil || size < maxBatch {
			t.Errorf("proxy-body-size %q (%d bytes, %v) is below MAX_BATCH_BYTES %d",
				ing.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"], size, err, maxBatch)
		}
	})
}

func TestServiceMonitor(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		sm, ok := s.serviceMonitors["iotd"]
		if !ok {
			t.Fatal("no ServiceMonitor iotd")
		}
		if ns := sm.Spec.NamespaceSelector; ns.Any || (len(ns.MatchNames) > 0 && !slices.Contains(ns.MatchNames, namespace)) {
			t.Errorf("namespaceSelector %+v: want its own namespace", ns)
		}
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Fatalf("selector %+v: %v", sm.Spec.Selector, err)
		}
		var selected []string
		for name, svc := range s.services {
			if sel.Matches(labels.Set(svc.Labels)) {
				selected = append(selected, name)
			}
		}
		sort.Strings(selected)
		if want := keys(s.services); !slices.Equal(selected, want) || len(selected) != len(roles) {
			t.Errorf("selects Services %v, want all of %v", selected, want)
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Fatal("no endpoints")
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" || string(ep.Interval) != "15s" {
				t.Errorf("endpoint %s: path %q interval %q, want /metrics every 15s", ep.Port, ep.Path, ep.Interval)
			}
			if ep.Port == "" {
				t.Errorf("endpoint without a port name")
			}
			if ep.Scheme != nil && *ep.Scheme != "http" {
				t.Errorf("endpoint %s: scheme %v", ep.Port, *ep.Scheme)
			}
		}
		// Every selected Service has a port an endpoint scrapes, and it is the role's port.
		for _, r := range roles {
			svc := s.services[r.deployment]
			if svc == nil {
				continue
			}
			scraped := false
			for _, ep := range sm.Spec.Endpoints {
				for _, p := range svc.Spec.Ports {
					if p.Name == ep.Port && p.Port == r.port {
						scraped = true
					}
				}
			}
			if !scraped {
				t.Errorf("Service %s: no port the ServiceMonitor scrapes (%d)", r.deployment, r.port)
			}
		}
	})
}

func TestDisruptionBudgets(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		want := map[string]string{"ingestion-api": "minAvailable=1", "dashboard-api": "minAvailable=1", "aggregator-worker": "maxUnavailable=1"}
		for name, pdb := range s.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || sel.Empty() {
				t.Errorf("PDB %s: selector %v (%v)", name, pdb.Spec.Selector, err)
				continue
			}
			got := s.selectedDeployments(sel)
			if !slices.Equal(got, []string{name}) {
				t.Errorf("PDB %s selects the pods of %v, want %s", name, got, name)
				continue
			}
			var budget string
			switch {
			case pdb.Spec.MinAvailable != nil && pdb.Spec.MaxUnavailable == nil:
				budget = "minAvailable=" + pdb.Spec.MinAvailable.String()
				// With as many pods as the budget, no node could ever be drained.
				if hs := s.hpaFor(name); len(hs) == 1 && hs[0].Spec.MinReplicas != nil &&
					pdb.Spec.MinAvailable.Type == intstr.Int && pdb.Spec.MinAvailable.IntVal >= *hs[0].Spec.MinReplicas {
					t.Errorf("PDB %s: minAvailable %d >= the HPA's minReplicas %d blocks drains", name, pdb.Spec.MinAvailable.IntVal, *hs[0].Spec.MinReplicas)
				}
				if d := s.deployments[name]; d.Spec.Replicas != nil && pdb.Spec.MinAvailable.Type == intstr.Int && pdb.Spec.MinAvailable.IntVal >= *d.Spec.Replicas {
					t.Errorf("PDB %s: minAvailable %d >= replicas %d blocks drains", name, pdb.Spec.MinAvailable.IntVal, *d.Spec.Replicas)
				}
			case pdb.Spec.MaxUnavailable != nil && pdb.Spec.MinAvailable == nil:
				budget = "maxUnavailable=" + pdb.Spec.MaxUnavailable.String()
			default:
				t.Errorf("PDB %s: exactly one of minAvailable and maxUnavailable", name)
			}
			if budget != want[name] {
				t.Errorf("PDB %s: %s, want %q", name, budget, want[name])
			}
		}
		for name := range want {
			if _, ok := s.pdbs[name]; !ok {
				t.Errorf("no PDB for %s", name)
			}
		}
	})
}

func TestNamespace(t *testing.T) {
	forEachSet(t, func(t *testing.T, s *set) {
		ns, ok := s.namespaces[namespace]
		if !ok {
			t.Fatalf("no Namespace %s", namespace)
		}
		// The pods meet the restricted Pod Security Standard (TestDeployments), so enforce it.
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("Namespace labels %v: want pod-security.kubernetes.io/enforce=restricted", ns.Labels)
		}
	})
}
