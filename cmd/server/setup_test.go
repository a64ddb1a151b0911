package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/browsertest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
)

// hookSink is a webhook URL that keeps what it gets.
type hookSink struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  [][]byte
	sigs []string
}

func newHookSink(t *testing.T) *hookSink {
	s := &hookSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.got = append(s.got, b)
		s.sigs = append(s.sigs, r.Header.Get("X-Hub-Signature-256"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// setupRun runs setup in the background and tells the form's URL.
type setupRun struct {
	out     fleettest.LogBuffer
	done    chan error
	formURL chan string
}

func startSetup(t *testing.T, o setupOptions) *setupRun {
	t.Helper()
	r := &setupRun{done: make(chan error, 1), formURL: make(chan string, 1)}
	o.ready = func(u string) { r.formURL <- u }
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	if o.timeout == 0 {
		o.timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { r.done <- setup(ctx, o, &r.out) }()
	return r
}

func (r *setupRun) form(t *testing.T) string {
	t.Helper()
	select {
	case u := <-r.formURL:
		return u
	case err := <-r.done:
		t.Fatalf("setup returned before serving its form: %v\n%s", err, r.out.String())
	case <-time.After(30 * time.Second):
		t.Fatal("setup did not serve its form")
	}
	return ""
}

func (r *setupRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("setup did not return:\n%s", r.out.String())
	}
	return nil
}

// The whole App-manifest flow, clicked in headless Chromium against the
// GitHub stand-in, as on GitHub Enterprise Server (the API under
// /api/v3/): the form, GitHub's confirmation, the redirect back with the
// code and the state, the conversion, and the files.
func TestSetupCreatesTheAppInABrowser(t *testing.T) {
	fake, err := ghfake.New(ghfake.Options{Org: "acme", InstallationID: 7, PathPrefix: "api/v3", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	sink := newHookSink(t)
	dir := filepath.Join(t.TempDir(), "etc")
	o := setupOptions{org: "acme", webhookURL: sink.srv.URL + "/webhook", githubURL: fake.WebURL(), dir: dir}
	var owner *user.User
	if os.Getuid() == 0 {
		if owner, err = user.Lookup("nobody"); err == nil {
			o.owner = "nobody"
		}
	}
	run := startSetup(t, o)
	form := run.form(t)

	b := browsertest.Start(t)
	b.Open(form)
	page := b.Text()
	for _, want := range []string{"lxd-gha-autoscaler-acme", sink.srv.URL + "/webhook", "organization_self_hosted_runners: write",
		"actions: read", "metadata: read", "workflow_job"} {
		if !strings.Contains(page, want) {
			t.Errorf("the form does not show %q:\n%s", want, page)
		}
	}
	// An answer that does not carry this setup's state is refused, and
	// setup goes on waiting for the right one.
	resp, err := http.Get(strings.TrimSuffix(form, "/") + "/callback?code=abc&state=forged")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a forged state: %d, want 400", resp.StatusCode)
	}

	b.Click("#create")
	b.WaitFor("GitHub's confirmation page", `location.pathname === "/organizations/acme/settings/apps/new" && !!document.getElementById("submit")`)
	if !strings.Contains(b.Text(), "Create GitHub App for acme") {
		t.Fatalf("confirmation page:\n%s", b.Text())
	}
	b.Click("#submit")
	b.WaitFor("the way back to setup", `location.pathname === "/callback" && !!document.getElementById("result")`)
	if err := run.wait(t); err != nil {
		t.Fatalf("setup: %v\n%s", err, run.out.String())
	}
	apps := fake.Apps()
	if len(apps) != 1 {
		t.Fatalf("apps at the stand-in: %+v", apps)
	}
	app := apps[0]
	install := fake.WebURL() + "apps/" + app.Slug + "/installations/new"
	if b.String(`document.getElementById("install").href`) != install || !strings.Contains(b.Text(), "is created") {
		t.Errorf("the last page:\n%s", b.Text())
	}
	if out := run.out.String(); !strings.Contains(out, install) || !strings.Contains(out, "lxd-gha-autoscaler doctor --config "+filepath.Join(dir, "config.yaml")) {
		t.Errorf("setup's output lacks the installation URL or the next step:\n%s", out)
	}

	// The files: the secrets the owner's alone, a config with the App's id.
	for name, mode := range map[string]os.FileMode{"app.pem": 0o600, "webhook-secret": 0o600, "config.yaml": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if owner != nil {
			st := fi.Sys().(*syscall.Stat_t)
			wantUID := owner.Uid
			if name == "config.yaml" {
				mode, wantUID = 0o640, "0"
			}
			if strconv.Itoa(int(st.Uid)) != wantUID || strconv.Itoa(int(st.Gid)) != owner.Gid {
				t.Errorf("%s is %d:%d, want %s:%s", name, st.Uid, st.Gid, wantUID, owner.Gid)
			}
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s is mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	cfg, err := loadConfig(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatalf("the config setup wrote: %v", err)
	}
	if cfg.GitHub.AppID != app.ID || cfg.GitHub.APIURL != fake.URL() {
		t.Errorf("config: app_id %d, api_url %s; want %d, %s", cfg.GitHub.AppID, cfg.GitHub.APIURL, app.ID, fake.URL())
	}
	// GitHub takes the App's key, and its ping is signed with the secret.
	gh, err := ghapp.New(cfg.GitHub, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := gh.App(context.Background()); err != nil || got.ID != app.ID {
		t.Fatalf("the App, with the key setup wrote: %+v, %v", got, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sink.mu.Lock()
		n := len(sink.got)
		sink.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ping at the webhook URL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sink.mu.Lock()
	if err := github.ValidateSignature(sink.sigs[0], sink.got[0], cfg.App.WebhookSecret); err != nil {
		t.Errorf("the ping does not verify with the webhook secret setup wrote: %v", err)
	}
	sink.mu.Unlock()

	// Run again: nothing is overwritten, and nothing is asked of GitHub.
	var out bytes.Buffer
	err = setup(context.Background(), setupOptions{org: "acme", webhookURL: "https://runners.example.com/webhook",
		githubURL: fake.WebURL(), dir: dir, listen: "127.0.0.1:0", timeout: time.Minute}, &out)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "app.pem")+" exists: setup never overwrites a file") ||
		!strings.Contains(err.Error(), "config.yaml exists") {
		t.Fatalf("setup over existing files: %v", err)
	}
	if len(fake.Apps()) != 1 {
		t.Fatal("a second App was made")
	}
}

// setup refuses what GitHub or this host would get wrong, before it
// listens or asks GitHub anything.
func TestSetupRefuses(t *testing.T) {
	dir := t.TempDir()
	good := setupOptions{org: "acme", webhookURL: "https://runners.example.com/webhook", githubURL: "https://github.com",
		dir: dir, listen: "127.0.0.1:0", timeout: time.Minute}
	for name, tc := range map[string]struct {
		edit func(*setupOptions)
		want string
	}{
		"no org":          {func(o *setupOptions) { o.org = "" }, `--org "": want the organization's login`},
		"odd org":         {func(o *setupOptions) { o.org = "a/b" }, `--org "a/b"`},
		"no webhook":      {func(o *setupOptions) { o.webhookURL = "" }, "--webhook-url is required"},
		"http webhook":    {func(o *setupOptions) { o.webhookURL = "http://runners.example.com/webhook" }, "must be https (http only on loopback)"},
		"http github":     {func(o *setupOptions) { o.githubURL = "http://ghe.example.com" }, "--github-url"},
		"long name":       {func(o *setupOptions) { o.org = "a-very-long-organization-name" }, "longer than GitHub's 34 characters: pass --name"},
		"open listener":   {func(o *setupOptions) { o.listen = "0.0.0.0:8976" }, "want a loopback host:port"},
		"unknown owner":   {func(o *setupOptions) { o.owner = "no-such-user-here" }, "--owner"},
		"existing config": {func(o *setupOptions) { os.WriteFile(filepath.Join(dir, "config.yaml"), nil, 0o644) }, "config.yaml exists"},
	} {
		o := good
		tc.edit(&o)
		err := setup(context.Background(), o, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	// The manifest is filled in for the organization and its host.
	p, err := newSetupPlan(setupOptions{org: "acme", webhookURL: "https://ci.acme.com/webhook", githubURL: "https://ghe.acme.com/",
		dir: t.TempDir(), listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.fillManifest(mustRead(t, "../../deployments/github-app/manifest.json"), "http://127.0.0.1:1/callback"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"name": "lxd-gha-autoscaler-acme"`, `"url": "https://ghe.acme.com/acme"`, `"url": "https://ci.acme.com/webhook"`,
		`"redirect_url": "http://127.0.0.1:1/callback"`, `"organization_self_hosted_runners": "write"`, `of acme on a fresh`} {
		if !strings.Contains(string(p.manifest), want) {
			t.Errorf("manifest lacks %s:\n%s", want, p.manifest)
		}
	}
	if p.api != "https://ghe.acme.com/api/v3/" || strings.Contains(string(p.manifest), "ORG") {
		t.Errorf("api %s; manifest:\n%s", p.api, p.manifest)
	}
	// On github.com the API has a host of its own.
	p, err = newSetupPlan(setupOptions{org: "acme", webhookURL: "https://ci.acme.com/webhook", githubURL: "https://github.com",
		dir: t.TempDir(), listen: "127.0.0.1:0"})
	if err != nil || p.api != "https://api.github.com/" || p.web.String() != "https://github.com" {
		t.Errorf("github.com: %v, api %s", err, p.api)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
