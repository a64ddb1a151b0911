// Package e2e runs the real service binary against the real LXD daemon and
// the GitHub stand-in over HTTP. Runners are the stand-in's fake runner in a
// busybox container, reaching the stand-in through an LXD proxy device.
package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store/pgtest"
)

const jitRoute = "POST /orgs/{org}/actions/runners/generate-jitconfig"

// stateEnv names the environment variable that says where the services
// under test keep their state: "sqlite" (the default: a file in the
// test's directory) or "postgres" (a database of each test's own on a
// PostgreSQL cluster shared by the test binary, removed at the end). CI
// runs the core tests on PostgreSQL too:
//
//	E2E_STATE=postgres go test -count=1 -timeout 15m -run '^(TestOneJobThroughItsWholeLife|TestThirtyJobsFourSlots|TestDuplicateDeliveries|TestCancelledQueuedJob|TestCancelledJobsRunnerIsRemoved|TestRestartDoesNotRelaunch|TestKillNineTwice)$' ./internal/e2e
//
// The tests of several replicas (replicas_test.go) run on PostgreSQL
// whatever it says.
const stateEnv = "E2E_STATE"

// storagePoolEnv names the environment variable that puts the instances of
// the services under test (and the bare runs beside them) on another LXD
// storage pool than the default profile's, e.g. a btrfs pool:
//
//	lxc storage create e2ebtrfs btrfs size=8GiB
//	E2E_STORAGE_POOL=e2ebtrfs go test ./internal/e2e -run '^$' -bench Start -benchtime 5x
const storagePoolEnv = "E2E_STORAGE_POOL"

var (
	binPath    string // the service binary, built once
	runnerPath string // the dev binary: the stand-in's fake runner
	imageAlias string // busybox + the runner, init = fake-runner
	onPostgres bool   // E2E_STATE=postgres
	setupErr   error
)

func TestMain(m *testing.M) {
	if os.Getenv(floodURLEnv) != "" {
		// TestWebhookFlood's flood, run again as a process of its own:
		// it needs no binary and no image.
		os.Exit(m.Run())
	}
	code := func() int {
		defer pgtest.RemoveShared()
		switch v := os.Getenv(stateEnv); v {
		case "", "sqlite":
		case "postgres":
			onPostgres = true
		default:
			setupErr = fmt.Errorf("%s=%q: want sqlite or postgres", stateEnv, v)
			return m.Run()
		}
		defer stopSharedCluster() // cluster_test.go: started by the first test that needs it
		if _, err := os.Stat(lxdtest.SocketPath()); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: no LXD socket at %s: end-to-end tests will skip (CI always has one)\n", lxdtest.SocketPath())
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "e2e-bin-")
		if err != nil {
			setupErr = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		binPath = filepath.Join(dir, "lxd-gha-autoscaler")
		runnerPath = filepath.Join(dir, "lxd-gha-autoscaler-dev")
		for bin, pkg := range map[string]string{binPath: "../../cmd/server", runnerPath: "../../cmd/dev"} {
			build := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, pkg)
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				setupErr = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
				return m.Run()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, err := lxd.Connect(ctx, lxd.Config{Socket: lxdtest.SocketPath()})
		if err != nil {
			setupErr = err
			return m.Run()
		}
		imageAlias = "e2e-" + randHex(5)
		fp, err := devimage.Import(ctx, c, devimage.Options{
			Binary: runnerPath, Init: []string{devimage.DefaultBinaryPath, "fake-runner"},
		}, imageAlias)
		if err != nil {
			setupErr = fmt.Errorf("import image: %w", err)
			return m.Run()
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = c.DeleteImage(ctx, fp)
		}()
		return m.Run()
	}()
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// options shape one test's service.
type options struct {
	maxInstances int
	poolMax      int
	extraPool    string // YAML appended to pools
	pool         string // YAML lines appended to the first pool (indented by four)
	limits       string // YAML lines appended under limits
	top          string // YAML lines at the top level
	image        string // the pool's image; default the busybox one
	// runnerOfflineAfter is how long the stand-in lists a silent runner
	// online; default its own (5s).
	runnerOfflineAfter time.Duration
	// lxdSocket is the LXD the service uses; default the machine's. With
	// another, the test image is imported there.
	lxdSocket string
	// database is the URL of the PostgreSQL state. Empty: SQLite in the
	// test's directory, or with E2E_STATE=postgres a database of the
	// test's own on the shared cluster.
	database string
	// replicas is how many service processes share the state: default 1;
	// more need a database, and the stand-in's webhooks then reach them
	// through a fanout.
	replicas int
	// record puts recording proxies between each replica and the
	// stand-in's REST API, and between each replica and LXD (env.calls).
	record bool
	// lxdYAML, when set, is the service's lxd: section in place of
	// "socket: lxdSocket" (lines indented by two); the test still sees
	// LXD through lxdSocket.
	lxdYAML string
	// timeout bounds the test's context: default 4 minutes.
	timeout time.Duration
}

// env is one test's service with its own stand-in, profile, state and
// name prefix, so tests do not see each other's instances. The service is
// one process or several replicas of it; the first is embedded, so that a
// test of one process says e.url, e.start() or e.logText().
type env struct {
	*replica
	t        testing.TB
	ctx      context.Context
	lxd      *lxd.Client
	fake     *ghfake.Server
	secret   []byte
	prefix   string
	profile  string // holds the proxy device to the stand-in
	dir      string
	database string // the PostgreSQL state's URL; "" with SQLite

	replicas []*replica
	hooks    *fanout  // between the stand-in and several replicas; nil for one
	calls    *callLog // each replica's LXD and GitHub calls; nil unless options.record
}

// replica is one service process. The test starts, stops and signals it;
// its logs span all its runs.
type replica struct {
	e       *env
	n       int    // its index in env.replicas
	url     string // the webhook listener's base URL
	admin   string // the admin listener's base URL
	cfgPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *fleettest.LogBuffer
	done chan struct{}
}

func newEnv(t testing.TB, o options) *env {
	t.Helper()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	c := lxdtest.Connect(t) // skips without LXD
	if o.timeout == 0 {
		o.timeout = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	if o.maxInstances == 0 {
		o.maxInstances = 4
	}
	if o.replicas == 0 {
		o.replicas = 1
	}
	if o.database == "" && onPostgres {
		o.database = pgtest.Shared(t).NewDatabase(t) // skips without PostgreSQL
	}
	if o.replicas > 1 && o.database == "" {
		t.Fatal("several replicas need a shared database: set options.database")
	}
	if o.lxdSocket == "" {
		o.lxdSocket = lxdtest.SocketPath()
	} else {
		var err error
		if c, err = lxd.Connect(ctx, lxd.Config{Socket: o.lxdSocket}); err != nil {
			t.Fatal(err)
		}
		if o.image == "" {
			o.image, _ = lxdtest.Image(t, c, devimage.Options{Binary: runnerPath, Init: []string{devimage.DefaultBinaryPath, "fake-runner"}})
		}
	}
	if o.image == "" {
		o.image = imageAlias
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, lxd: c, secret: []byte(randHex(16)), prefix: "e" + randHex(3) + "-", dir: t.TempDir(),
		database: o.database}
	e.fake, err = ghfake.New(ghfake.Options{
		AppID: 4242, AppPublicKey: &key.PublicKey, WebhookSecret: e.secret, Org: "acme", InstallationID: 7,
		RunnerLostAfter:    5 * time.Second, // a dead runner fails its job soon
		RunnerOfflineAfter: o.runnerOfflineAfter,
		Log:                zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.fake.Close)
	u, _ := url.Parse(e.fake.URL())
	devices := map[string]map[string]string{
		"ghfake": {"type": "proxy", "bind": "instance", "listen": "tcp:" + u.Host, "connect": "tcp:" + u.Host},
	}
	if pool := os.Getenv(storagePoolEnv); pool != "" {
		devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": pool}
	}
	e.profile = lxdtest.Profile(t, c, devices)

	keyFile := filepath.Join(e.dir, "app.pem")
	secretFile := filepath.Join(e.dir, "webhook-secret")
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write(t, secretFile, append(e.secret, '\n'))
	poolMax := ""
	if o.poolMax > 0 {
		poolMax = fmt.Sprintf("\n    max_instances: %d", o.poolMax)
	}
	if o.pool != "" {
		poolMax += "\n" + strings.TrimRight(o.pool, "\n")
	}
	state := "state_dir: " + filepath.Join(e.dir, "state")
	if o.database != "" {
		state = "database: " + o.database
	}
	if o.record {
		e.calls = &callLog{}
	}
	// Extra pools may name the test's profile and image.
	o.extraPool = strings.NewReplacer("{profile}", e.profile, "{image}", o.image).Replace(o.extraPool)
	var hookURLs []string
	for n := 0; n < o.replicas; n++ {
		port, adminPort := freePort(t), freePort(t)
		r := &replica{e: e, n: n, url: "http://127.0.0.1:" + port, admin: "http://127.0.0.1:" + adminPort,
			cfgPath: filepath.Join(e.dir, fmt.Sprintf("config-%d.yaml", n)), logs: &fleettest.LogBuffer{}}
		apiURL, socket := e.fake.URL(), o.lxdSocket
		if o.record {
			apiURL = recordGitHub(t, e.calls, n, e.fake.URL())
			socket = recordLXD(t, e.calls, n, o.lxdSocket)
		}
		lxdSection := "  socket: " + socket
		if o.lxdYAML != "" {
			lxdSection = o.lxdYAML
		}
		cfg := fmt.Sprintf(`%s
listen: 127.0.0.1:%s
admin_listen: 127.0.0.1:%s
%s
runner_prefix: %s
github:
  api_url: %s
  app_id: 4242
  private_key_file: %s
  webhook_secret_file: %s
lxd:
%s
limits:
  max_instances: %d
%s
pools:
  - name: linux
    labels: [self-hosted, linux, x64]
    image: %s
    profiles: [default, %s]%s
%s`, o.top, port, adminPort, state, e.prefix, apiURL, keyFile, secretFile, lxdSection,
			o.maxInstances, o.limits, o.image, e.profile, poolMax, o.extraPool)
		write(t, r.cfgPath, []byte(cfg))
		e.replicas = append(e.replicas, r)
		hookURLs = append(hookURLs, r.url+"/webhook")
	}
	e.replica = e.replicas[0]
	if len(hookURLs) > 1 {
		e.hooks = newFanout(t, hookURLs)
		e.fake.SetWebhookURL(e.hooks.url)
	} else {
		e.fake.SetWebhookURL(hookURLs[0])
	}

	for _, r := range e.replicas {
		r.start()
	}
	t.Cleanup(func() {
		for _, r := range e.replicas {
			r.stop(syscall.SIGTERM)
		}
		// Leave LXD clean whatever happened; the tests assert on leftovers
		// themselves before this runs.
		for _, in := range e.instances() {
			_ = c.Delete(context.Background(), in.Name)
		}
		if t.Failed() && e.calls != nil {
			if f := e.calls.failures(); len(f) > 0 {
				t.Logf("calls the recording proxies could not pass on:\n%s", strings.Join(f, "\n"))
			}
		}
		if t.Failed() {
			for _, r := range e.replicas {
				if len(e.replicas) == 1 {
					t.Logf("service log:\n%s", r.logText())
				} else {
					t.Logf("service log of replica %d:\n%s", r.n, r.logText())
				}
			}
		}
	})
	return e
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// start runs the service binary and waits for /healthz.
func (r *replica) start() {
	e := r.e
	e.t.Helper()
	r.mu.Lock()
	cmd := exec.Command(binPath, "serve", "--config", r.cfgPath, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		e.t.Fatal(err)
	}
	r.cmd = cmd
	done := make(chan struct{})
	r.done = done
	r.mu.Unlock()
	go func() { _ = cmd.Wait(); close(done) }()
	e.eventually("service healthy", 30*time.Second, func() bool {
		select {
		case <-done:
			e.t.Fatalf("service exited at start:\n%s", r.logText())
		default:
		}
		resp, err := http.Get(r.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stop signals the service and waits for it to exit.
func (r *replica) stop(sig syscall.Signal) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	// A stopped process (SIGSTOP) cannot act on sig until it runs again.
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		// Go prints every goroutine's stack on SIGQUIT: the log then shows
		// what held the shutdown.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		r.e.t.Errorf("service did not stop within 30s after %v", sig)
	}
}

func (r *replica) logText() string { return r.logs.String() }

// instances lists LXD instances of this test's service.
func (e *env) instances() []fleet.Instance {
	e.t.Helper()
	all, err := e.lxd.List(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []fleet.Instance
	for _, in := range all {
		if strings.HasPrefix(in.Name, e.prefix) {
			out = append(out, in)
		}
	}
	return out
}

// peakInstances counts this test's instances every 50 ms until the
// returned function is called, which returns the highest count seen.
func (e *env) peakInstances() func() int {
	var (
		wg   sync.WaitGroup
		peak int
	)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			all, err := e.lxd.List(e.ctx)
			if err != nil {
				continue
			}
			n := 0
			for _, in := range all {
				if strings.HasPrefix(in.Name, e.prefix) {
					n++
				}
			}
			peak = max(peak, n)
		}
	}()
	var once sync.Once
	return func() int {
		once.Do(func() { close(stop); wg.Wait() })
		return peak
	}
}

func (e *env) jitCalls() int { return e.fake.Requests()[jitRoute] }

// eventually polls cond until it holds or the deadline passes.
func (e *env) eventually(what string, within time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for: %s", within, what)
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("test context ended waiting for: %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *env) waitCompleted(ids ...int64) {
	e.t.Helper()
	for _, id := range ids {
		_, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusCompleted })
		if err != nil {
			e.t.Fatalf("job %d did not complete: %v", id, err)
		}
	}
}

// idleRunners counts the runners the stand-in lists online and not busy.
func (e *env) idleRunners() int {
	n := 0
	for _, r := range e.fake.Runners() {
		if r.Status == "online" && !r.Busy {
			n++
		}
	}
	return n
}

func (e *env) waitNoInstances() {
	e.t.Helper()
	e.eventually("no instances of ours left", time.Minute, func() bool { return len(e.instances()) == 0 })
}

// waitLog waits for a log line holding want. The service logs a deletion
// after LXD has answered, so a test that saw the instance go may be a
// moment ahead of the line.
func (e *env) waitLog(want string) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("a log line with %q", want), 10*time.Second, func() bool { return strings.Contains(e.logText(), want) })
}

// checkNoSecrets fails if any secret reached the service's logs (every
// replica's): the webhook secret, the App key, an installation token, or
// a JIT config (base64 of a JSON object, so it starts with "eyJ").
func (e *env) checkNoSecrets() {
	e.t.Helper()
	var logs string
	for _, r := range e.replicas {
		logs += r.logText()
	}
	for what, s := range map[string]string{
		"webhook secret": string(e.secret), "private key": "PRIVATE KEY", "installation token": "ghs_", "JIT config": "eyJ",
	} {
		if strings.Contains(logs, s) {
			e.t.Errorf("%s in the service's logs", what)
		}
	}
}
