package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake/ghfaketest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// liveConfig is a config file for the live service, one field per thing
// a test may get wrong.
type liveConfig struct {
	top                                   string // raw YAML first
	listen, admin, token, tlsCert, tlsKey string
	stateDir, prefix                      string
	apiURL                                string
	appID                                 int64
	key, secret                           string
	socket, project                       string
	image, source                         string
	profiles                              []string
	poolConfig                            map[string]string
	runnerGroup                           string
}

func (c liveConfig) yaml() string {
	var b strings.Builder
	b.WriteString(c.top)
	fmt.Fprintf(&b, "listen: %s\nadmin_listen: %q\nstate_dir: %s\nrunner_prefix: %s\n", c.listen, c.admin, c.stateDir, c.prefix)
	if c.token != "" {
		fmt.Fprintf(&b, "admin_token_file: %s\n", c.token)
	}
	if c.tlsCert != "" {
		fmt.Fprintf(&b, "admin_tls_cert_file: %s\nadmin_tls_key_file: %s\n", c.tlsCert, c.tlsKey)
	}
	fmt.Fprintf(&b, "github: {api_url: %q, app_id: %d, private_key_file: %s, webhook_secret_file: %s}\n", c.apiURL, c.appID, c.key, c.secret)
	fmt.Fprintf(&b, "lxd: {socket: %s", c.socket)
	if c.project != "" {
		fmt.Fprintf(&b, ", project: %s", c.project)
	}
	b.WriteString("}\nlimits: {max_instances: 2}\npools:\n  - name: linux\n    labels: [self-hosted, linux]\n")
	if c.image != "" {
		fmt.Fprintf(&b, "    image: %s\n", c.image)
	} else {
		fmt.Fprintf(&b, "    source_instance: %s\n", c.source)
	}
	fmt.Fprintf(&b, "    profiles: [%s]\n", strings.Join(c.profiles, ", "))
	if c.runnerGroup != "" {
		fmt.Fprintf(&b, "    runner_group: %s\n", c.runnerGroup)
	}
	if len(c.poolConfig) > 0 {
		b.WriteString("    config:\n")
		keys := make([]string, 0, len(c.poolConfig))
		for k := range c.poolConfig {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "      %s: %q\n", k, c.poolConfig[k])
		}
	}
	return b.String()
}

// liveEnv is the service as an operator runs it: serve, in-process, from a
// config file, against the GitHub stand-in and the real LXD, with its
// admin API on loopback TCP behind a token (and TLS when asked), and a
// busybox image and a profile for its one pool.
type liveEnv struct {
	t    *testing.T
	fake *ghfake.Server
	lxd  *lxd.Client
	dir  string
	cfg  liveConfig // the service's
	path string     // its file
	logs fleettest.LogBuffer
}

const liveAppID = 4321

func newLiveEnv(t *testing.T, withTLS bool) *liveEnv {
	t.Helper()
	c := lxdtest.Connect(t) // skips without LXD
	key := ghfaketest.AppKey()
	fake, err := ghfake.New(ghfake.Options{AppID: liveAppID, AppPublicKey: &key.PublicKey, Org: "acme", InstallationID: 7,
		WebhookSecret: []byte("not-the-service-s"), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	e := &liveEnv{t: t, fake: fake, lxd: c, dir: t.TempDir()}
	write := func(name string, b []byte) string {
		p := filepath.Join(e.dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	image, _ := lxdtest.Image(t, c, devimage.Options{})
	e.cfg = liveConfig{
		listen: "127.0.0.1:" + freePort(t), admin: "127.0.0.1:" + freePort(t),
		token:    write("admin-token", []byte("t0ken-"+lxdtest.Name(t)+"\n")),
		stateDir: filepath.Join(e.dir, "state"), prefix: "d" + strings.TrimPrefix(lxdtest.Name(t), "t-")[:6] + "-",
		apiURL: fake.URL(), appID: liveAppID,
		key: write("app.pem", ghfaketest.KeyPEM(key)), secret: write("webhook-secret", []byte("the-service-secret\n")),
		socket: lxdtest.SocketPath(), image: image,
		profiles: []string{"default", lxdtest.Profile(t, c, nil)},
	}
	if withTLS {
		cert, tkey := admintest.SelfSigned(t, "127.0.0.1")
		e.cfg.tlsCert = filepath.Join(e.dir, "admin.crt")
		if err := os.WriteFile(e.cfg.tlsCert, cert, 0o644); err != nil {
			t.Fatal(err)
		}
		e.cfg.tlsKey = write("admin.key", tkey)
	}
	e.path = e.write(e.cfg)
	return e
}

// write writes a config file and returns its path.
func (e *liveEnv) write(c liveConfig) string {
	e.t.Helper()
	f, err := os.CreateTemp(e.dir, "config-*.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(c.yaml()); err != nil {
		e.t.Fatal(err)
	}
	return f.Name()
}

// start runs serve until the test ends, and waits until it is healthy.
func (e *liveEnv) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", e.path}, &e.logs, &e.logs) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Error("serve did not stop")
		}
		if e.t.Failed() {
			e.t.Logf("service log:\n%s", e.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + e.cfg.listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-done:
			e.t.Fatalf("serve returned %v:\n%s", err, e.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("serve not healthy:\n%s", e.logs.String())
		}
	}
}
