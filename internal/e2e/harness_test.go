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
)

const jitRoute = "POST /orgs/{org}/actions/runners/generate-jitconfig"

var (
	binPath    string // the service binary, built once
	runnerPath string // the dev binary: the stand-in's fake runner
	imageAlias string // busybox + the runner, init = fake-runner
	setupErr   error
)

func TestMain(m *testing.M) {
	code := func() int {
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
	limits       string // YAML lines appended under limits
	top          string // YAML lines at the top level
	image        string // the pool's image; default the busybox one
	// runnerOfflineAfter is how long the stand-in lists a silent runner
	// online; default its own (5s).
	runnerOfflineAfter time.Duration
	// lxdSocket is the LXD the service uses; default the machine's. With
	// another, the test image is imported there.
	lxdSocket string
	// lxdYAML, when set, is the service's lxd: section in place of
	// "socket: lxdSocket" (lines indented by two); the test still sees
	// LXD through lxdSocket.
	lxdYAML string
}

// env is one service process with its own stand-in, profile, state and
// name prefix, so tests do not see each other's instances.
type env struct {
	t       testing.TB
	ctx     context.Context
	lxd     *lxd.Client
	fake    *ghfake.Server
	secret  []byte
	prefix  string
	profile string // holds the proxy device to the stand-in
	dir     string
	cfgPath string
	url     string // the service's base URL
	admin   string // the admin listener's base URL

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *fleettest.LogBuffer // the service's output, all of its runs
	done chan struct{}
}

func newEnv(t testing.TB, o options) *env {
	t.Helper()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	c := lxdtest.Connect(t) // skips without LXD
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	if o.maxInstances == 0 {
		o.maxInstances = 4
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
	e := &env{t: t, ctx: ctx, lxd: c, secret: []byte(randHex(16)), prefix: "e" + randHex(3) + "-", dir: t.TempDir()}
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
	e.profile = lxdtest.Profile(t, c, map[string]map[string]string{
		"ghfake": {"type": "proxy", "bind": "instance", "listen": "tcp:" + u.Host, "connect": "tcp:" + u.Host},
	})

	keyFile := filepath.Join(e.dir, "app.pem")
	secretFile := filepath.Join(e.dir, "webhook-secret")
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write(t, secretFile, append(e.secret, '\n'))
	port := freePort(t)
	e.url = "http://127.0.0.1:" + port
	adminPort := freePort(t)
	e.admin = "http://127.0.0.1:" + adminPort
	poolMax := ""
	if o.poolMax > 0 {
		poolMax = fmt.Sprintf("\n    max_instances: %d", o.poolMax)
	}
	lxdSection := "  socket: " + o.lxdSocket
	if o.lxdYAML != "" {
		lxdSection = o.lxdYAML
	}
	// Extra pools may name the test's profile and image.
	o.extraPool = strings.NewReplacer("{profile}", e.profile, "{image}", o.image).Replace(o.extraPool)
	cfg := fmt.Sprintf(`%s
listen: 127.0.0.1:%s
admin_listen: 127.0.0.1:%s
state_dir: %s
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
%s`, o.top, port, adminPort, filepath.Join(e.dir, "state"), e.prefix, e.fake.URL(), keyFile, secretFile, lxdSection,
		o.maxInstances, o.limits, o.image, e.profile, poolMax, o.extraPool)
	e.cfgPath = filepath.Join(e.dir, "config.yaml")
	write(t, e.cfgPath, []byte(cfg))
	e.fake.SetWebhookURL(e.url + "/webhook")

	e.start()
	t.Cleanup(func() {
		e.stop(syscall.SIGTERM)
		// Leave LXD clean whatever happened; the tests assert on leftovers
		// themselves before this runs.
		for _, in := range e.instances() {
			_ = c.Delete(context.Background(), in.Name)
		}
		if t.Failed() {
			t.Logf("service log:\n%s", e.logText())
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
func (e *env) start() {
	e.t.Helper()
	e.mu.Lock()
	if e.logs == nil {
		e.logs = &fleettest.LogBuffer{}
	}
	cmd := exec.Command(binPath, "serve", "--config", e.cfgPath, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		e.mu.Unlock()
		e.t.Fatal(err)
	}
	e.cmd = cmd
	done := make(chan struct{})
	e.done = done
	e.mu.Unlock()
	go func() { _ = cmd.Wait(); close(done) }()
	e.eventually("service healthy", 30*time.Second, func() bool {
		select {
		case <-done:
			e.t.Fatalf("service exited at start:\n%s", e.logText())
		default:
		}
		resp, err := http.Get(e.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stop signals the service and waits for it to exit.
func (e *env) stop(sig syscall.Signal) {
	e.mu.Lock()
	cmd, done := e.cmd, e.done
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
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
		e.t.Errorf("service did not stop within 30s after %v", sig)
	}
}

func (e *env) logText() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

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

// checkNoSecrets fails if any secret reached the service's logs: the
// webhook secret, the App key, an installation token, or a JIT config
// (base64 of a JSON object, so it starts with "eyJ").
func (e *env) checkNoSecrets() {
	e.t.Helper()
	logs := e.logText()
	for what, s := range map[string]string{
		"webhook secret": string(e.secret), "private key": "PRIVATE KEY", "installation token": "ghs_", "JIT config": "eyJ",
	} {
		if strings.Contains(logs, s) {
			e.t.Errorf("%s in the service's logs", what)
		}
	}
}
