package deploycheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	psa "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// render is one golden `helm template` output, split into its objects.
type render struct {
	deployment *appsv1.Deployment
	job        *batchv1.Job
	pdb        *policyv1.PodDisruptionBudget
	configMaps map[string]*corev1.ConfigMap
	services   []*corev1.Service
	kinds      map[string]int
}

func loadRender(t *testing.T, file string) render {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := render{configMaps: map[string]*corev1.ConfigMap{}, kinds: map[string]int{}}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var head struct{ Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if head.Kind == "" {
			continue
		}
		r.kinds[head.Kind]++
		var into any
		switch head.Kind {
		case "Deployment":
			r.deployment = &appsv1.Deployment{}
			into = r.deployment
		case "Job":
			r.job = &batchv1.Job{}
			into = r.job
		case "PodDisruptionBudget":
			r.pdb = &policyv1.PodDisruptionBudget{}
			into = r.pdb
		case "ConfigMap":
			into = &corev1.ConfigMap{}
		case "Service":
			svc := &corev1.Service{}
			r.services = append(r.services, svc)
			into = svc
		default:
			continue
		}
		// Strict: a field Kubernetes does not know is a typo in a template.
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("%s: %s: %v", file, head.Kind, err)
		}
		if cm, ok := into.(*corev1.ConfigMap); ok {
			r.configMaps[cm.Name] = cm
		}
	}
	if r.deployment == nil {
		t.Fatalf("%s: no Deployment", file)
	}
	return r
}

// TestChartRenders checks each golden render of the chart against ledgerd
// itself and for consistency between its objects.
func TestChartRenders(t *testing.T) {
	serve := ledgerdFlags(t, "serve")
	migrate := ledgerdFlags(t, "migrate")
	files, err := filepath.Glob(filepath.Join(repoRoot, "deploy/helm/ledgerd/testdata/*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("golden renders: %v %v (make helm-golden writes them)", files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r := loadRender(t, file)
			settings, configFile := checkReplicas(t, r, serve)
			checkStarts(t, serve, settings, configFile)
			checkShutdown(t, r.deployment, settings)
			checkServices(t, r)
			checkMigrationJob(t, r, migrate)
			if r.pdb == nil {
				t.Error("no PodDisruptionBudget")
			} else if !labelsEqual(r.pdb.Spec.Selector.MatchLabels, r.deployment.Spec.Selector.MatchLabels) {
				t.Errorf("PodDisruptionBudget selects %v, the Deployment %v", r.pdb.Spec.Selector.MatchLabels, r.deployment.Spec.Selector.MatchLabels)
			}
		})
	}
}

func labelsEqual(a, b map[string]string) bool { return maps.Equal(a, b) }

// checkReplicas checks the ledgerd container and returns the settings it
// gets, from its config file or its environment, by flag name, and the
// config file's text if it gets one.
func checkReplicas(t *testing.T, r render, serve flagSet) (settings map[string]string, configText string) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("the Deployment has %d containers, want ledgerd alone", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkArgs(t, "Deployment", c.Args, serve)
	checkSecurity(t, "Deployment", pod, c)
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks is not false: a Service named ledger-… would set LEDGER_* variables")
	}

	settings = map[string]string{}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "LEDGER_") {
			continue
		}
		if !serve.knownEnv(e.Name) {
			t.Errorf("Deployment: env %s backs no flag of ledgerd serve", e.Name)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "LEDGER_DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}) {
		t.Error("Deployment: LEDGER_DATABASE_URL does not come from a Secret")
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
			e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}) {
		t.Error("Deployment: GOMEMLIMIT is not the container's memory limit")
	}
	for _, from := range c.EnvFrom {
		cm := r.configMaps[from.ConfigMapRef.Name]
		if cm == nil {
			t.Fatalf("Deployment: envFrom ConfigMap %q is not in the render", from.ConfigMapRef.Name)
		}
		for variable, value := range cm.Data {
			if !serve.knownEnv(variable) {
				t.Errorf("ConfigMap %s: %s backs no flag of ledgerd serve", cm.Name, variable)
			}
			settings[strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(variable, "LEDGER_")), "_", "-")] = value
		}
	}
	for _, arg := range c.Args {
		file, ok := strings.CutPrefix(arg, "--config=")
		if !ok {
			continue
		}
		var fileSettings map[string]string
		configText, fileSettings = configFile(t, r, pod, c, file)
		for name, value := range fileSettings {
			if !serve.known(name) {
				t.Errorf("config file %s: key %q is not a flag of `ledgerd serve --help`", file, name)
			}
			settings[name] = value
		}
	}

	if settings["no-migrate"] != "true" {
		t.Errorf("the replicas run without --no-migrate (%q): they would migrate as the serving role", settings["no-migrate"])
	}
	for setting, portName := range map[string]string{"listen-addr": "grpc", "http-addr": "http", "metrics-listen-addr": "metrics"} {
		_, port, err := net.SplitHostPort(settings[setting])
		if err != nil {
			t.Errorf("%s %q: %v", setting, settings[setting], err)
			continue
		}
		if got := containerPort(c, portName); strconv.Itoa(int(got)) != port {
			t.Errorf("%s is on port %s, the container's %q port is %d", setting, port, portName, got)
		}
	}
	for probe, want := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "http" {
			t.Errorf("probe %+v: want GET %s on the http port", probe, want)
			continue
		}
		tls := settings["tls-cert-file"] != ""
		if (probe.HTTPGet.Scheme == corev1.URISchemeHTTPS) != tls {
			t.Errorf("probe %s uses %s with TLS %v", want, probe.HTTPGet.Scheme, tls)
		}
	}
	for _, setting := range []string{"tls-cert-file", "tls-key-file", "tls-client-ca-file"} {
		if file := settings[setting]; file != "" && mountOf(pod, c, file, "secret") == nil {
			t.Errorf("%s %s is not in a mounted Secret", setting, file)
		}
	}
	return settings, configText
}

// configFile returns the text and the keys of the config file the
// container is given, after checking that a ConfigMap of the render is
// mounted there.
func configFile(t *testing.T, r render, pod corev1.PodSpec, c corev1.Container, file string) (string, map[string]string) {
	t.Helper()
	vol := mountOf(pod, c, file, "configMap")
	if vol == nil {
		t.Fatalf("--config=%s: no ConfigMap is mounted there", file)
	}
	cm := r.configMaps[vol.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("--config=%s: ConfigMap %q is not in the render", file, vol.ConfigMap.Name)
	}
	text, ok := cm.Data[path.Base(file)]
	if !ok {
		t.Fatalf("--config=%s: ConfigMap %s has no key %s", file, cm.Name, path.Base(file))
	}
	return text, yamlSettings(t, file, []byte(text))
}

// yamlSettings reads a ledgerd config file: one flat mapping of flag names
// to scalars.
func yamlSettings(t *testing.T, file string, text []byte) map[string]string {
	t.Helper()
	// Through JSON with UseNumber: a number keeps its digits (10737418240,
	// not 1.073741824e+10).
	jsonText, err := yaml.YAMLToJSON(text)
	if err != nil {
		t.Fatalf("config file %s: %v", file, err)
	}
	var raw map[string]any
	decoder := json.NewDecoder(bytes.NewReader(jsonText))
	decoder.UseNumber()
	if err := decoder.Decode(&raw); err != nil {
		t.Fatalf("config file %s: %v", file, err)
	}
	settings := map[string]string{}
	for name, value := range raw {
		switch value.(type) {
		case map[string]any, []any:
			t.Errorf("config file %s: key %q holds %T, want a scalar", file, name, value)
		}
		settings[name] = fmt.Sprint(value)
	}
	return settings
}

// mountOf returns the volume of the given source ("secret", "configMap")
// mounted in the container at a directory holding file, or nil.
func mountOf(pod corev1.PodSpec, c corev1.Container, file, source string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		for i, v := range pod.Volumes {
			if v.Name == m.Name && ((source == "secret" && v.Secret != nil) || (source == "configMap" && v.ConfigMap != nil)) {
				return &pod.Volumes[i]
			}
		}
	}
	return nil
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// checkSecurity checks a pod against the Pod Security Standards'
// "restricted" level, as a namespace labelled
// pod-security.kubernetes.io/enforce=restricted admits it, and for what
// the chart promises on top (user 65532, a read-only root, no token).
func checkSecurity(t *testing.T, where string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	level := psa.LevelVersion{Level: psa.LevelRestricted, Version: psa.LatestVersion()}
	for _, result := range evaluator.EvaluatePod(level, &metav1.ObjectMeta{}, &pod) {
		if !result.Allowed {
			t.Errorf("%s: Pod Security Standards, restricted: %s (%s)", where, result.ForbiddenReason, result.ForbiddenDetail)
		}
	}
	sc := c.SecurityContext
	if sc == nil || pod.SecurityContext == nil {
		t.Errorf("%s: no security context", where)
		return
	}
	checks := map[string]bool{
		"runAsNonRoot":                  sc.RunAsNonRoot != nil && *sc.RunAsNonRoot,
		"runAsUser 65532":               sc.RunAsUser != nil && *sc.RunAsUser == 65532,
		"readOnlyRootFilesystem":        sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
		"allowPrivilegeEscalation off":  sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		"capabilities drop ALL":         sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(sc.Capabilities.Add) == 0,
		"seccomp RuntimeDefault":        sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
		"pod runAsNonRoot":              pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot,
		"no service account token":      pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken,
		"pod seccomp RuntimeDefault":    pod.SecurityContext.SeccompProfile != nil && pod.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
		"no privileged container":       sc.Privileged == nil || !*sc.Privileged,
		"no host namespaces or volumes": !pod.HostNetwork && !pod.HostPID && !pod.HostIPC && !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.HostPath != nil }),
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("%s: security context lacks %s", where, what)
		}
	}
}

// checkShutdown checks that SIGKILL never cuts a drain short: the grace
// period covers the preStop sleep, --lame-duck-delay and --shutdown-timeout.
func checkShutdown(t *testing.T, d *appsv1.Deployment, settings map[string]string) {
	t.Helper()
	pod := d.Spec.Template.Spec
	var budget time.Duration
	for _, setting := range []string{"lame-duck-delay", "shutdown-timeout"} {
		v, err := time.ParseDuration(settings[setting])
		if err != nil {
			t.Errorf("%s %q: %v", setting, settings[setting], err)
		}
		budget += v
	}
	if h := pod.Containers[0].Lifecycle; h != nil && h.PreStop != nil {
		if h.PreStop.Sleep == nil {
			t.Error("preStop is not a sleep: the image has no shell")
		} else {
			budget += time.Duration(h.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if settings["lame-duck-delay"] == "0s" {
		t.Error("--lame-duck-delay is 0: kube-proxy and ingresses would route calls to a draining replica")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= budget {
		t.Errorf("terminationGracePeriodSeconds %s does not exceed preStop + lame duck + shutdown timeout %s", grace, budget)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v: want at least 2", d.Spec.Replicas)
	}
}

// checkServices checks that every Service selects the replicas and targets
// a port the container names.
func checkServices(t *testing.T, r render) {
	t.Helper()
	c := r.deployment.Spec.Template.Spec.Containers[0]
	podLabels := labels.Set(r.deployment.Spec.Template.Labels)
	seen := map[string]bool{}
	for _, svc := range r.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service %s selects %v, not the replicas", svc.Name, svc.Spec.Selector)
		}
		for _, p := range svc.Spec.Ports {
			if containerPort(c, p.TargetPort.String()) == 0 {
				t.Errorf("Service %s targets port %q, which the container does not name", svc.Name, p.TargetPort.String())
			}
			seen[p.Name] = true
		}
	}
	for _, name := range []string{"grpc", "http", "metrics"} {
		if !seen[name] {
			t.Errorf("no Service exposes the %s port", name)
		}
	}
	if r.kinds["ServiceMonitor"] > 0 && !seen["metrics"] {
		t.Error("a ServiceMonitor without a metrics Service")
	}
}

// checkMigrationJob checks the hook Job that runs `ledgerd migrate`.
func checkMigrationJob(t *testing.T, r render, migrate flagSet) {
	t.Helper()
	if r.job == nil {
		t.Fatal("no migration Job")
	}
	hooks := strings.Split(r.job.Annotations["helm.sh/hook"], ",")
	if !slices.Contains(hooks, "pre-install") || !slices.Contains(hooks, "pre-upgrade") {
		t.Errorf("migration Job hooks %q: want pre-install and pre-upgrade", hooks)
	}
	pod := r.job.Spec.Template.Spec
	c := pod.Containers[0]
	checkArgs(t, "Job", c.Args, migrate)
	checkSecurity(t, "Job", pod, c)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "LEDGER_") && !migrate.knownEnv(e.Name) {
			t.Errorf("Job: env %s backs no flag of ledgerd migrate", e.Name)
		}
	}
	// A pre-install hook runs before the chart's other objects exist.
	if len(c.EnvFrom) > 0 || len(pod.Volumes) > 0 {
		t.Error("the migration Job reads a ConfigMap or volume, which a pre-install hook does not have yet")
	}
	selector := labels.SelectorFromSet(r.deployment.Spec.Selector.MatchLabels)
	if selector.Matches(labels.Set(r.job.Spec.Template.Labels)) {
		t.Error("the migration pod carries the replicas' labels: Services and the PodDisruptionBudget would count it")
	}
}
