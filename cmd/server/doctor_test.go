package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

func runDoctorCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"doctor"}, args...), &out, &errOut)
	if errOut.Len() > 0 {
		t.Errorf("doctor wrote to stderr: %s", errOut.String())
	}
	return out.String(), err
}

var failLine = regexp.MustCompile(`(?m)^FAIL  .*$`)

// webhookProxy stands for the TLS proxy in front of the service: it
// forwards POST /webhook, and answers 404 to anything else.
func webhookProxy(t *testing.T, listen string) *httptest.Server {
	target, _ := url.Parse("http://" + listen)
	rp := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	mux.Handle("POST /webhook", rp)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// doctor on a good setup, then on one broken thing at a time: each is one
// FAIL line that names it and says what to do, and the exit status says
// so. The service runs throughout, from the good config; each broken
// config is doctor's alone.
func TestDoctor(t *testing.T) {
	e := newLiveEnv(t, false)
	e.start()
	proxy := webhookProxy(t, e.cfg.listen)

	out, err := runDoctorCmd(t, "--config", e.path, "--webhook-url", proxy.URL+"/webhook")
	if err != nil || failLine.MatchString(out) {
		t.Fatalf("good setup: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ok    config: " + e.path + ": 1 pools",
		"ok    secret files: github.private_key_file, github.webhook_secret_file, admin_token_file: the owner's alone",
		"ok    lxd: lxd.socket " + e.cfg.socket + " answers",
		"ok    lxd project: default",
		"ok    pool linux: image: " + e.cfg.image + " (container, ",
		"ok    pool linux: profiles: default, " + e.cfg.profiles[1],
		"ok    pool linux: storage pool: ",
		"ok    pool linux: security.devlxd: on",
		"ok    github app: lxd-gha-autoscaler-acme (id 4321, owner acme): GitHub accepts its JWT",
		"ok    github installations: installed on acme (installation 7)",
		`ok    runner group "Default" of acme: found (id 1): every repository, public repositories off`,
		"ok    runner groups: each admits no more than its pools",
		"ok    admin api: " + e.cfg.admin + " answers: the service is ready",
		"warn  last webhook: none received yet.",
		"ok    webhook url: " + proxy.URL + "/webhook answered a signed ping with 204, and the service recorded it",
		"doctor: all checks passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("good setup: no line %q in:\n%s", want, out)
		}
	}
	// The ping is the service's last webhook now, for doctor and status.
	out, err = runDoctorCmd(t, "--config", e.path)
	if err != nil || !regexp.MustCompile(`(?m)^ok    last webhook: received at \S+ \S+ \(ping\)$`).MatchString(out) ||
		!strings.Contains(out, "skip  webhook url: pass --webhook-url ") {
		t.Fatalf("after the ping: %v\n%s", err, out)
	}
	if st, _, err := runAdmin(t, "status", "--config", e.path); err != nil || !strings.Contains(st, "last webhook received at ") {
		t.Fatalf("status after the ping: %v\n%s", err, st)
	}
	// validate --live is doctor.
	var vout bytes.Buffer
	if err := run(context.Background(), []string{"validate", "--live", "--config", e.path}, &vout, &vout); err != nil ||
		!strings.Contains(vout.String(), "ok    github installations:") {
		t.Fatalf("validate --live: %v\n%s", err, vout.String())
	}

	loose := filepath.Join(e.dir, "loose-secret")
	other := filepath.Join(e.dir, "other-secret")
	for p, mode := range map[string]os.FileMode{loose: 0o640, other: 0o600} {
		if err := os.WriteFile(p, []byte("the-service-secret\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(other, []byte("not the service's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notOurs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer notOurs.Close()

	for _, tc := range []struct {
		name   string
		edit   func(c *liveConfig)
		break_ func() (restore func())
		args   []string
		want   string // the FAIL line holds it
	}{
		{name: "config", edit: func(c *liveConfig) { c.top = "colour: blue\n" },
			want: "FAIL  config: " + "%CONFIG%" + " is not valid:"},
		{name: "secret file mode", edit: func(c *liveConfig) { c.secret = loose },
			want: "FAIL  secret files: github.webhook_secret_file: " + loose + " is mode 0640, open to its group: a secret must be its owner's alone; chmod 600 " + loose},
		{name: "lxd", edit: func(c *liveConfig) { c.socket = filepath.Join(e.dir, "no.sock") },
			want: "FAIL  lxd: connect to lxd " + filepath.Join(e.dir, "no.sock")},
		{name: "lxd project", edit: func(c *liveConfig) { c.project = "nope-" + lxdtest.Name(t) },
			want: "FAIL  lxd project: connect to lxd " + lxdtest.SocketPath() + ": project nope-t-"},
		{name: "image", edit: func(c *liveConfig) { c.image = "t-no-such-image" },
			want: "FAIL  pool linux: image: t-no-such-image is not in LXD: build it (lxd-gha-autoscaler image build t-no-such-image --config"},
		{name: "source instance", edit: func(c *liveConfig) { c.image, c.source = "", "t-no-such-instance" },
			want: "FAIL  pool linux: source instance: t-no-such-instance is not in LXD: make it"},
		{name: "profiles", edit: func(c *liveConfig) { c.profiles = []string{"default", "t-no-such-profile"} },
			want: "FAIL  pool linux: profiles: not in LXD: t-no-such-profile: create each"},
		{name: "storage pool", edit: func(c *liveConfig) { c.profiles = c.profiles[1:] },
			want: "FAIL  pool linux: storage pool: no root disk in the profiles " + e.cfg.profiles[1] + ": add one"},
		{name: "security.devlxd", edit: func(c *liveConfig) { c.poolConfig = map[string]string{"security.devlxd": "false"} },
			want: "FAIL  pool linux: security.devlxd: off, in the pool's config: the runner reads its JIT config through /dev/lxd/sock"},
		{name: "the App's JWT", edit: func(c *liveConfig) { c.appID = 999 },
			want: "FAIL  github app: GitHub at " + e.fake.URL() + " refused the JWT of App 999: github.app_id must be the App's id"},
		{name: "installation", break_: func() func() {
			e.fake.SetInstalled(false)
			return func() { e.fake.SetInstalled(true) }
		}, want: "FAIL  github installations: the App is installed on no organization: install it: " + e.fake.WebURL() + "apps/lxd-gha-autoscaler-acme/installations/new"},
		{name: "runner group", edit: func(c *liveConfig) { c.runnerGroup = "gpu-runners" },
			want: `FAIL  runner group "gpu-runners" of acme: does not exist: create it`},
		{name: "public repositories", break_: func() func() {
			e.fake.SetRunnerGroup("Default", ghfake.RunnerGroupSettings{AllowsPublicRepositories: true})
			return func() { e.fake.SetRunnerGroup("Default", ghfake.RunnerGroupSettings{}) }
		}, want: `FAIL  runner groups: pools[0] (linux): runner group "Default" of org acme admits public repositories, which the pool refuses`},
		{name: "admin api", edit: func(c *liveConfig) { c.admin = "127.0.0.1:" + freePort(t) },
			want: "FAIL  admin api: admin API at 127.0.0.1:"},
		{name: "webhook not forwarded", args: []string{"--webhook-url", proxy.URL + "/hook"},
			want: "FAIL  webhook url: " + proxy.URL + "/hook answered 404: the proxy does not forward POST /webhook to the service"},
		{name: "webhook secret", edit: func(c *liveConfig) { c.secret = other }, args: []string{"--webhook-url", proxy.URL + "/webhook"},
			want: "FAIL  webhook url: " + proxy.URL + "/webhook answered 401 to a ping signed with the secret in github.webhook_secret_file"},
		{name: "webhook elsewhere", args: []string{"--webhook-url", notOurs.URL + "/webhook"},
			want: "FAIL  webhook url: " + notOurs.URL + "/webhook answered a signed ping with 204, but this service did not receive it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.cfg
			if tc.edit != nil {
				tc.edit(&c)
			}
			path := e.write(c)
			if tc.break_ != nil {
				defer tc.break_()()
			}
			out, err := runDoctorCmd(t, append([]string{"--config", path}, tc.args...)...)
			want := strings.ReplaceAll(tc.want, "%CONFIG%", path)
			fails := failLine.FindAllString(out, -1)
			if err == nil || err.Error() != "doctor: 1 check(s) failed" || len(fails) != 1 || !strings.HasPrefix(fails[0], want) {
				t.Fatalf("%v; want one FAIL line starting %q:\n%s", err, want, out)
			}
			t.Log(out)
		})
	}
}
