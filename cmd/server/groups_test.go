package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// groupEnv is a GitHub stand-in whose Default group admits public
// repositories, and a config whose one pool refuses them.
type groupEnv struct {
	fake *ghfake.Server
	dir  string
	base string // the config without the pool's runner_group_policy
}

func newGroupEnv(t *testing.T) *groupEnv {
	t.Helper()
	key := ghfaketest.AppKey()
	fake, err := ghfake.New(ghfake.Options{
		AppID: 77, AppPublicKey: &key.PublicKey, Org: "acme", InstallationID: 9,
		RunnerGroupSettings: map[string]ghfake.RunnerGroupSettings{"Default": {AllowsPublicRepositories: true}},
		Log:                 zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "app.pem")
	secretFile := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(keyFile, ghfaketest.KeyPEM(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf(`
listen: 127.0.0.1:%s
admin_listen: "off"
state_dir: %s
runner_prefix: grp%d-
github: {api_url: %q, app_id: 77, private_key_file: %s, webhook_secret_file: %s}
lxd: {socket: %s}
limits: {max_instances: 1}
`, freePort(t), filepath.Join(dir, "state"), time.Now().UnixNano()%100000, fake.URL(), keyFile, secretFile, lxdtest.SocketPath())
	return &groupEnv{fake: fake, dir: dir, base: base}
}

func (g *groupEnv) config(t *testing.T, policy string) string {
	pool := "pools: [{name: linux, labels: [self-hosted, linux], image: img}]\n"
	if policy != "" {
		pool = "pools: [{name: linux, labels: [self-hosted, linux], image: img, runner_group_policy: " + policy + "}]\n"
	}
	return writeConfig(t, g.base+pool)
}

const publicGroupProblem = `pools[0] (linux): runner group "Default" of org acme admits public repositories, which the pool refuses`

func TestValidateCheckGitHub(t *testing.T) {
	g := newGroupEnv(t)
	path := g.config(t, "")

	// Without the flag, validate does not talk to GitHub.
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"validate", "--config", path}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if n := len(g.fake.Requests()); n != 0 {
		t.Fatalf("validate without --check-github made %d kinds of requests to GitHub", n)
	}

	err := run(context.Background(), []string{"validate", "--check-github", "--config", path}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), publicGroupProblem) || !strings.Contains(err.Error(), "or set runner_group_policy: warn") {
		t.Fatalf("validate --check-github = %v, want the public repositories named", err)
	}
	if strings.Count(err.Error(), publicGroupProblem) != 1 {
		t.Fatalf("the problem is not said once: %v", err)
	}

	// The opt-out: a warning, and exit status 0.
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"validate", "--check-github", "--config", g.config(t, "warn")}, &out, &errOut); err != nil {
		t.Fatalf("with runner_group_policy warn: %v", err)
	}
	if !strings.Contains(errOut.String(), "warning: "+publicGroupProblem) || !strings.Contains(errOut.String(), "(runner_group_policy: warn)") ||
		!strings.HasSuffix(out.String(), ": ok\n") {
		t.Fatalf("stdout %q, stderr %q", out.String(), errOut.String())
	}

	// Once the group is fixed, nothing to say.
	if err := g.fake.SetRunnerGroup("Default", ghfake.RunnerGroupSettings{}); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if err := run(context.Background(), []string{"validate", "--check-github", "--config", path}, &out, &errOut); err != nil || errOut.Len() != 0 {
		t.Fatalf("fixed group: %v, stderr %q", err, errOut.String())
	}
	if g.fake.Requests()["GET /app/installations"] != 3 {
		t.Fatalf("requests %v", g.fake.Requests())
	}
}

// serve refuses to start, before it opens its state or LXD, when a group
// admits what its pool refuses.
func TestServeRefusesARunnerGroupThatAdmitsMore(t *testing.T) {
	g := newGroupEnv(t)
	var logs fleettest.LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, []string{"serve", "--config", g.config(t, "")}, &logs, &logs)
	if err == nil || !strings.Contains(err.Error(), "runner groups at GitHub:\n"+publicGroupProblem) {
		t.Fatalf("serve = %v, want the group refused", err)
	}
	if _, err := os.Stat(filepath.Join(g.dir, "state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the state was opened before the check: %v", err)
	}
}

// With runner_group_policy: warn, serve starts and says why it should not.
func TestServeStartsWithTheWarnOptOut(t *testing.T) {
	lxdtest.Connect(t) // skips without LXD
	g := newGroupEnv(t)
	path := g.config(t, "warn")
	var logs fleettest.LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", path}, &logs, &logs) }()
	c, _ := loadConfig(path)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.Listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned %v:\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy:\n%s", logs.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"level":"warn","check":"runner_groups"`) || !strings.Contains(logs.String(), "admits public repositories") {
		t.Fatalf("no warning logged:\n%s", logs.String())
	}
}

// validate warns, and still passes, when one pool's labels cover another's
// in the same runner group.
func TestValidateWarnsOfLabelSupersets(t *testing.T) {
	key, secret := secrets(t, t.TempDir())
	path := writeConfig(t, `
github: {app_id: 1, private_key_file: `+key+`, webhook_secret_file: `+secret+`}
limits: {max_instances: 2}
pools:
  - {name: linux, labels: [self-hosted, linux, x64], image: img}
  - {name: gpu, labels: [self-hosted, linux, x64, gpu], image: img}
`)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"validate", "--config", path}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	want := "warning: a job labelled [self-hosted, linux, x64] that pool linux serves can also run on an idle runner of pool gpu"
	if !strings.HasPrefix(errOut.String(), want) || strings.Count(errOut.String(), "\n") != 1 || !strings.HasSuffix(out.String(), ": ok\n") {
		t.Fatalf("stdout %q, stderr %q", out.String(), errOut.String())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// While GitHub does not answer, serve starts anyway (a GitHub outage
// during a restart must not leave webhooks unrecorded, and systemd would
// give up after a few restarts), with launches held; the leader asks
// again, and a finding then keeps the launches held.
func TestServeStartsWithLaunchesHeldWhileGitHubDoesNotAnswer(t *testing.T) {
	lxdtest.Connect(t) // serve connects to LXD; skips without it
	g := newGroupEnv(t)
	failures := 4 // one whole check: ghapp tries each read four times
	var mu sync.Mutex
	g.fake.SetFault(func(r *http.Request) (int, http.Header, bool) {
		mu.Lock()
		defer mu.Unlock()
		if failures == 0 || !strings.HasSuffix(r.URL.Path, "/app/installations") {
			return 0, nil, false
		}
		failures--
		return http.StatusBadGateway, nil, true
	})
	var logs fleettest.LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", g.config(t, "")}, &logs, &logs) }()
	for _, want := range []string{
		"starting with launches held until they are checked",
		"serving webhooks",
		"launches stay held until the runner groups admit no more than their pools",
	} {
		for !strings.Contains(logs.String(), want) {
			select {
			case err := <-done:
				t.Fatalf("serve returned before %q: %v\n%s", want, err, logs.String())
			case <-ctx.Done():
				t.Fatalf("no %q in the logs:\n%s", want, logs.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if !strings.Contains(logs.String(), "admits public repositories, which the pool refuses") {
		t.Fatalf("the finding is not in the logs:\n%s", logs.String())
	}
	if n := g.fake.Requests()["GET /app/installations"]; n != 5 {
		t.Fatalf("%d installation list requests, want 4 failed and 1 answered", n)
	}
	if strings.Contains(logs.String(), "launches released") {
		t.Fatal("launches were released despite the finding")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve = %v after shutdown", err)
	}
}
